//! Self-fencing of BMC work: an executor may drive a BMC only while it holds a lease it has
//! confirmed, measured on its own monotonic clock.
//!
//! [`Fence`] is a deadline shared between whoever keeps the lease (it moves the deadline
//! forward after each renewal that commits) and the work it permits. [`Fenced`] wraps any
//! [`Bmc`] and checks the deadline before every command: once it has passed, nothing more is
//! sent and the call fails with [`BmcError::Fenced`], which is never retried. A node that was
//! paused or cut off from the leader therefore stops talking to the BMC before its lease can
//! have been taken over by another node, whether its renewals were refused or never answered.
//!
//! Pure policy over the `Bmc` trait: no storage, no replicated state, no sockets of its own.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::bmc::{Bmc, BmcError, BmcInfo, BootDevice, PowerState};

/// A deadline that only moves forward.
#[derive(Debug, Clone)]
pub struct Fence(Arc<Mutex<Instant>>);

impl Fence {
    /// Open until `deadline`.
    pub fn until(deadline: Instant) -> Self {
        Fence(Arc::new(Mutex::new(deadline)))
    }

    /// Move the deadline to `deadline` if that is later (renewals may finish out of order).
    pub fn extend(&self, deadline: Instant) {
        let mut d = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if deadline > *d {
            *d = deadline;
        }
    }

    pub fn deadline(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_open(&self) -> bool {
        Instant::now() < self.deadline()
    }

    /// Resolves once the deadline has passed without being extended.
    pub async fn closed(&self) {
        loop {
            let d = self.deadline();
            if Instant::now() >= d {
                return;
            }
            tokio::time::sleep_until(d).await;
        }
    }
}

/// A [`Bmc`] that sends nothing once its [`Fence`] has closed.
pub struct Fenced<'a, B> {
    bmc: &'a B,
    fence: Fence,
}

impl<'a, B: Bmc> Fenced<'a, B> {
    pub fn new(bmc: &'a B, fence: Fence) -> Self {
        Self { bmc, fence }
    }

    fn check(&self) -> Result<(), BmcError> {
        if self.fence.is_open() {
            Ok(())
        } else {
            Err(BmcError::Fenced {
                address: self.bmc.address(),
            })
        }
    }
}

impl<B: Bmc> Bmc for Fenced<'_, B> {
    fn address(&self) -> String {
        self.bmc.address()
    }
    async fn power_status(&self) -> Result<PowerState, BmcError> {
        self.check()?;
        self.bmc.power_status().await
    }
    async fn power_on(&self) -> Result<(), BmcError> {
        self.check()?;
        self.bmc.power_on().await
    }
    async fn power_off(&self) -> Result<(), BmcError> {
        self.check()?;
        self.bmc.power_off().await
    }
    async fn power_cycle(&self) -> Result<(), BmcError> {
        self.check()?;
        self.bmc.power_cycle().await
    }
    async fn hard_reset(&self) -> Result<(), BmcError> {
        self.check()?;
        self.bmc.hard_reset().await
    }
    async fn set_boot_device(&self, dev: BootDevice, persistent: bool) -> Result<(), BmcError> {
        self.check()?;
        self.bmc.set_boot_device(dev, persistent).await
    }
    async fn info(&self) -> Result<BmcInfo, BmcError> {
        self.check()?;
        self.bmc.info().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::power::{PowerAction, PowerController, PowerError, VerifyPolicy};
    use crate::sim::SimBmc;

    /// Every command the simulated BMC has received.
    fn commands(sim: &SimBmc) -> u32 {
        use std::sync::atomic::Ordering::Relaxed;
        [
            &sim.on_calls,
            &sim.off_calls,
            &sim.cycle_calls,
            &sim.reset_calls,
            &sim.status_calls,
        ]
        .iter()
        .map(|c| c.load(Relaxed))
        .sum()
    }

    fn policy() -> VerifyPolicy {
        VerifyPolicy {
            timeout: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            retries: 3,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn commands_pass_while_open_and_nothing_is_sent_once_closed() {
        let sim = SimBmc::new("sim-1", false);
        let fence = Fence::until(Instant::now() + Duration::from_secs(10));
        let bmc = Fenced::new(&sim, fence.clone());
        let pc = PowerController::new(4);
        let o = pc.execute(&bmc, PowerAction::On, &policy()).await.unwrap();
        assert_eq!(o.after, PowerState::On);
        let sent = commands(&sim);
        assert!(sent > 0);

        // Past the deadline: the action fails at once as fenced, and the BMC hears nothing.
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(!fence.is_open());
        let e = pc
            .execute(&bmc, PowerAction::Off, &policy())
            .await
            .unwrap_err();
        assert!(matches!(e, PowerError::Bmc(BmcError::Fenced { .. })), "{e}");
        assert_eq!(commands(&sim), sent, "no command after the fence closed");
        assert!(sim.is_on());
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_moves_the_deadline_forward_only() {
        let t0 = Instant::now();
        let fence = Fence::until(t0 + Duration::from_secs(3));
        fence.extend(t0 + Duration::from_secs(1)); // an older renewal answered late
        assert_eq!(fence.deadline(), t0 + Duration::from_secs(3));
        fence.extend(t0 + Duration::from_secs(6));
        assert_eq!(fence.deadline(), t0 + Duration::from_secs(6));

        // `closed` follows extensions made while it waits.
        let f = fence.clone();
        let keeper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            f.extend(Instant::now() + Duration::from_secs(4));
        });
        fence.closed().await;
        assert!(Instant::now() >= t0 + Duration::from_secs(9));
        keeper.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn verification_stops_when_the_fence_closes_mid_action() {
        // The BMC takes the command but never reaches the state: verification polls until the
        // fence closes, then stops at once instead of polling to its own timeout.
        let sim = SimBmc::new("sim-2", false);
        sim.transition_ms
            .store(3_600_000, std::sync::atomic::Ordering::Relaxed);
        let start = Instant::now();
        let fence = Fence::until(start + Duration::from_secs(2));
        let bmc = Fenced::new(&sim, fence);
        let e = PowerController::new(4)
            .execute(&bmc, PowerAction::On, &policy())
            .await
            .unwrap_err();
        assert!(matches!(e, PowerError::Bmc(BmcError::Fenced { .. })), "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }
}
