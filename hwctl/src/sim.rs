//! A simulated BMC with fault knobs (slow, flaky, dead, unknown status) and counters, for
//! tests that need many or faulty machines. Power changes take `transition` to show, like a
//! real chassis.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::bmc::{Bmc, BmcError, BmcInfo, BootDevice, PowerState};

#[derive(Debug)]
struct Chassis {
    on: bool,
    /// A pending power change becomes visible at this instant.
    pending: Option<(bool, Instant)>,
    boot: Option<(BootDevice, bool)>,
}

/// A fake BMC. All knobs can be changed while it is in use.
#[derive(Debug)]
pub struct SimBmc {
    address: String,
    chassis: Mutex<Chassis>,
    /// Delay of every call.
    pub latency_ms: AtomicU64,
    /// How long a power change takes to show in the status.
    pub transition_ms: AtomicU64,
    /// The next N calls fail with a BMC error.
    pub fail_next: AtomicU32,
    /// Never answers (every call times out after `latency_ms`).
    pub dead: AtomicBool,
    /// Status reads answer `Unknown`.
    pub status_unknown: AtomicBool,
    pub on_calls: AtomicU32,
    pub off_calls: AtomicU32,
    pub cycle_calls: AtomicU32,
    pub reset_calls: AtomicU32,
    pub status_calls: AtomicU32,
    in_flight: AtomicU32,
    /// Highest number of calls in flight at once (checks the one-command-per-BMC rule).
    pub max_in_flight: AtomicU32,
}

impl SimBmc {
    pub fn new(address: &str, on: bool) -> Self {
        Self {
            address: address.to_string(),
            chassis: Mutex::new(Chassis {
                on,
                pending: None,
                boot: None,
            }),
            latency_ms: AtomicU64::new(1),
            transition_ms: AtomicU64::new(20),
            fail_next: AtomicU32::new(0),
            dead: AtomicBool::new(false),
            status_unknown: AtomicBool::new(false),
            on_calls: AtomicU32::new(0),
            off_calls: AtomicU32::new(0),
            cycle_calls: AtomicU32::new(0),
            reset_calls: AtomicU32::new(0),
            status_calls: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            max_in_flight: AtomicU32::new(0),
        }
    }

    /// The chassis power as the simulated hardware sees it (ignoring knobs).
    pub fn is_on(&self) -> bool {
        let mut c = self.chassis.lock().unwrap_or_else(|p| p.into_inner());
        Self::settle(&mut c);
        c.on
    }

    pub fn boot_device(&self) -> Option<(BootDevice, bool)> {
        self.chassis.lock().unwrap_or_else(|p| p.into_inner()).boot
    }

    fn settle(c: &mut Chassis) {
        if let Some((to, at)) = c.pending {
            if Instant::now() >= at {
                c.on = to;
                c.pending = None;
            }
        }
    }

    async fn call<T>(&self, f: impl FnOnce(&mut Chassis) -> T) -> Result<T, BmcError> {
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(n, Ordering::SeqCst);
        let latency = Duration::from_millis(self.latency_ms.load(Ordering::Relaxed));
        tokio::time::sleep(latency).await;
        let r = if self.dead.load(Ordering::Relaxed) {
            Err(BmcError::Timeout {
                address: self.address.clone(),
                timeout_ms: latency.as_millis() as u64,
            })
        } else if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
            .is_ok()
        {
            Err(BmcError::Bmc {
                address: self.address.clone(),
                message: "Node busy (completion code 0xC0)".into(),
            })
        } else {
            let mut c = self.chassis.lock().unwrap_or_else(|p| p.into_inner());
            Self::settle(&mut c);
            Ok(f(&mut c))
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        r
    }

    fn change(&self, c: &mut Chassis, to: bool) {
        let at = Instant::now() + Duration::from_millis(self.transition_ms.load(Ordering::Relaxed));
        c.pending = Some((to, at));
    }
}

impl Bmc for SimBmc {
    fn address(&self) -> String {
        self.address.clone()
    }

    async fn power_status(&self) -> Result<PowerState, BmcError> {
        self.status_calls.fetch_add(1, Ordering::Relaxed);
        let unknown = self.status_unknown.load(Ordering::Relaxed);
        self.call(|c| {
            if unknown {
                PowerState::Unknown
            } else if c.on {
                PowerState::On
            } else {
                PowerState::Off
            }
        })
        .await
    }

    async fn power_on(&self) -> Result<(), BmcError> {
        self.on_calls.fetch_add(1, Ordering::Relaxed);
        self.call(|c| {
            if !c.on {
                self.change(c, true)
            }
        })
        .await
    }

    async fn power_off(&self) -> Result<(), BmcError> {
        self.off_calls.fetch_add(1, Ordering::Relaxed);
        self.call(|c| {
            if c.on {
                self.change(c, false)
            }
        })
        .await
    }

    async fn power_cycle(&self) -> Result<(), BmcError> {
        self.cycle_calls.fetch_add(1, Ordering::Relaxed);
        let addr = self.address.clone();
        self.call(|c| {
            if c.on {
                // Off now, back on after the transition.
                c.on = false;
                self.change(c, true);
                Ok(())
            } else {
                // Like IPMI: a cycle of a chassis that is off is refused.
                Err(BmcError::Bmc {
                    address: addr,
                    message: "Command not supported in present state (completion code 0xD5)".into(),
                })
            }
        })
        .await?
    }

    async fn hard_reset(&self) -> Result<(), BmcError> {
        self.reset_calls.fetch_add(1, Ordering::Relaxed);
        self.call(|_| ()).await
    }

    async fn set_boot_device(&self, dev: BootDevice, persistent: bool) -> Result<(), BmcError> {
        self.call(|c| c.boot = Some((dev, persistent))).await
    }

    async fn info(&self) -> Result<BmcInfo, BmcError> {
        self.call(|_| BmcInfo {
            manufacturer_id: 4753,
            product_id: 1,
            firmware: "rackd-sim 1.0".into(),
            ipmi_version: "2.0".into(),
        })
        .await
    }
}
