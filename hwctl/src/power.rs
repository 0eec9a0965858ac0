//! Safe power actions on any [`Bmc`].
//!
//! Rules (the classic field failures they avoid):
//! - `on` sends a power-on, `off` a power-off; neither ever becomes a cycle. Asking for the
//!   state the machine is already in sends nothing.
//! - `cycle` and `reset` only when asked; a cycle of a machine that is off is refused by the
//!   BMC and reported, never turned into a power-on.
//! - every action is verified by polling the status with backoff until the wanted state or a
//!   timeout; `Unknown` is never taken for `Off` (or `On`).
//! - one command at a time per BMC; a global bound on concurrent BMC sessions.
//! - BMC error text is kept verbatim; transient errors are retried, credential errors are not.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::bmc::{Bmc, BmcError, PowerState};

/// The workspace's one definition of a power action (`rackd-types`).
pub use rackd_types::PowerAction;

#[derive(Debug, Clone)]
pub struct VerifyPolicy {
    /// Give up verifying after this long.
    pub timeout: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Retries of one BMC call on transient errors (timeouts, BMC busy).
    pub retries: u32,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
            retries: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerOutcome {
    pub action: PowerAction,
    pub before: PowerState,
    pub after: PowerState,
    /// Whether a power command was sent (false when the machine already was in that state).
    pub command_sent: bool,
    pub polls: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PowerError {
    #[error("BMC call failed")]
    Bmc(#[source] BmcError),
    #[error("BMC {address}: power did not reach {wanted:?} within {waited_ms} ms (last status {last:?})")]
    NotReached {
        address: String,
        wanted: PowerState,
        last: PowerState,
        waited_ms: u64,
    },
}

/// Serializes commands per BMC and bounds concurrent BMC sessions.
pub struct PowerController {
    global: Arc<Semaphore>,
    per_bmc: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    sessions: AtomicU32,
    max_sessions_seen: AtomicU32,
}

impl PowerController {
    pub fn new(max_concurrent_sessions: usize) -> Self {
        Self {
            global: Arc::new(Semaphore::new(max_concurrent_sessions.max(1))),
            per_bmc: Mutex::new(HashMap::new()),
            sessions: AtomicU32::new(0),
            max_sessions_seen: AtomicU32::new(0),
        }
    }

    /// Highest number of BMC sessions that were open at once.
    pub fn max_sessions_seen(&self) -> u32 {
        self.max_sessions_seen.load(Ordering::SeqCst)
    }

    fn lock_for(&self, address: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.per_bmc.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(address.to_string()).or_default().clone()
    }

    /// One BMC call under the global bound, retried on transient errors.
    async fn call<T, F, Fut>(&self, policy: &VerifyPolicy, mut f: F) -> Result<T, BmcError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, BmcError>>,
    {
        let mut backoff = policy.initial_backoff;
        let mut attempt = 0;
        loop {
            let r = {
                let _permit = self.global.acquire().await.expect("semaphore never closed");
                let n = self.sessions.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_sessions_seen.fetch_max(n, Ordering::SeqCst);
                let r = f().await;
                self.sessions.fetch_sub(1, Ordering::SeqCst);
                r
            };
            match r {
                Err(e @ (BmcError::Timeout { .. } | BmcError::Bmc { .. }))
                    if attempt < policy.retries =>
                {
                    tracing::debug!(error = %e, attempt, "transient BMC error; retrying");
                    attempt += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(policy.max_backoff);
                }
                other => return other,
            }
        }
    }

    /// Run one power action to completion (verified), one at a time per BMC.
    pub async fn execute<B: Bmc>(
        &self,
        bmc: &B,
        action: PowerAction,
        policy: &VerifyPolicy,
    ) -> Result<PowerOutcome, PowerError> {
        let lock = self.lock_for(&bmc.address());
        let _one_at_a_time = lock.lock().await;
        let before = self
            .call(policy, || bmc.power_status())
            .await
            .map_err(PowerError::Bmc)?;
        let done = |after, command_sent, polls| PowerOutcome {
            action,
            before,
            after,
            command_sent,
            polls,
        };
        let wanted = match action {
            PowerAction::Status => return Ok(done(before, false, 0)),
            PowerAction::On if before == PowerState::On => return Ok(done(before, false, 0)),
            PowerAction::Off if before == PowerState::Off => return Ok(done(before, false, 0)),
            PowerAction::On => {
                // An unacknowledged on/off is settled by the verification below.
                match self.call(policy, || bmc.power_on()).await {
                    Ok(()) | Err(BmcError::Unconfirmed { .. }) => {}
                    Err(e) => return Err(PowerError::Bmc(e)),
                }
                PowerState::On
            }
            PowerAction::Off => {
                // An unacknowledged on/off is settled by the verification below.
                match self.call(policy, || bmc.power_off()).await {
                    Ok(()) | Err(BmcError::Unconfirmed { .. }) => {}
                    Err(e) => return Err(PowerError::Bmc(e)),
                }
                PowerState::Off
            }
            PowerAction::Cycle => {
                self.call(policy, || bmc.power_cycle())
                    .await
                    .map_err(PowerError::Bmc)?;
                PowerState::On
            }
            PowerAction::Reset => {
                self.call(policy, || bmc.hard_reset())
                    .await
                    .map_err(PowerError::Bmc)?;
                PowerState::On
            }
        };
        let (after, polls) = self.verify(bmc, wanted, policy).await?;
        Ok(done(after, true, polls))
    }

    /// Sets the boot device, one command at a time per BMC (retried on transient errors; the
    /// command is idempotent).
    pub async fn set_boot_device<B: Bmc>(
        &self,
        bmc: &B,
        dev: crate::bmc::BootDevice,
        persistent: bool,
        policy: &VerifyPolicy,
    ) -> Result<(), PowerError> {
        let lock = self.lock_for(&bmc.address());
        let _one_at_a_time = lock.lock().await;
        self.call(policy, || bmc.set_boot_device(dev, persistent))
            .await
            .map_err(PowerError::Bmc)
    }

    async fn verify<B: Bmc>(
        &self,
        bmc: &B,
        wanted: PowerState,
        policy: &VerifyPolicy,
    ) -> Result<(PowerState, u32), PowerError> {
        let start = tokio::time::Instant::now();
        let mut backoff = policy.initial_backoff;
        let mut polls = 0;
        let mut last = PowerState::Unknown;
        loop {
            tokio::time::sleep(backoff).await;
            polls += 1;
            match self.call(policy, || bmc.power_status()).await {
                Ok(s) if s == wanted => return Ok((s, polls)),
                Ok(s) => last = s,
                Err(e @ BmcError::Fenced { .. }) => return Err(PowerError::Bmc(e)),
                Err(e) => tracing::debug!(error = %e, "status poll failed while verifying"),
            }
            if start.elapsed() >= policy.timeout {
                return Err(PowerError::NotReached {
                    address: bmc.address(),
                    wanted,
                    last,
                    waited_ms: start.elapsed().as_millis() as u64,
                });
            }
            backoff = (backoff * 2).min(policy.max_backoff);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;
    use crate::sim::SimBmc;

    fn fast() -> VerifyPolicy {
        VerifyPolicy {
            timeout: Duration::from_millis(800),
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(50),
            retries: 3,
        }
    }

    #[tokio::test]
    async fn on_powers_on_and_is_verified_never_a_cycle() {
        let pc = PowerController::new(8);
        let b = SimBmc::new("10.0.0.1", false);
        let o = pc.execute(&b, PowerAction::On, &fast()).await.unwrap();
        assert_eq!(
            (o.before, o.after, o.command_sent),
            (PowerState::Off, PowerState::On, true)
        );
        assert!(b.is_on());
        assert_eq!(
            (b.on_calls.load(Relaxed), b.cycle_calls.load(Relaxed)),
            (1, 0)
        );
        // Already on: nothing is sent.
        let o = pc.execute(&b, PowerAction::On, &fast()).await.unwrap();
        assert!(!o.command_sent);
        assert_eq!(b.on_calls.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn unknown_is_never_taken_for_off() {
        let pc = PowerController::new(8);
        let b = SimBmc::new("10.0.0.2", true);
        b.status_unknown.store(true, Relaxed);
        let o = pc.execute(&b, PowerAction::Status, &fast()).await.unwrap();
        assert_eq!(o.after, PowerState::Unknown);
        // Asking for `on` sends a power-on (idempotent), never a cycle; the result cannot be
        // verified, so it is reported as not reached — and the machine stayed on.
        let e = pc.execute(&b, PowerAction::On, &fast()).await.unwrap_err();
        assert!(
            matches!(
                e,
                PowerError::NotReached {
                    last: PowerState::Unknown,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(b.cycle_calls.load(Relaxed), 0);
        assert_eq!(b.off_calls.load(Relaxed), 0);
        assert!(b.is_on());
    }

    #[tokio::test]
    async fn cycle_of_an_off_machine_is_refused_verbatim_not_turned_into_on() {
        let pc = PowerController::new(8);
        let b = SimBmc::new("10.0.0.3", false);
        let e = pc
            .execute(&b, PowerAction::Cycle, &fast())
            .await
            .unwrap_err();
        assert!(format!("{:?}", e).contains("0xD5"), "{e:?}");
        assert!(!b.is_on());
        assert_eq!(b.on_calls.load(Relaxed), 0);
        // A running machine cycles and comes back on.
        let b = SimBmc::new("10.0.0.4", true);
        let o = pc.execute(&b, PowerAction::Cycle, &fast()).await.unwrap();
        assert_eq!(o.after, PowerState::On);
    }

    #[tokio::test]
    async fn flaky_bmc_is_retried_and_dead_bmc_times_out_instead_of_hanging() {
        let pc = PowerController::new(8);
        let b = SimBmc::new("10.0.0.5", false);
        b.fail_next.store(2, Relaxed);
        let o = pc.execute(&b, PowerAction::On, &fast()).await.unwrap();
        assert_eq!(o.after, PowerState::On);

        let dead = SimBmc::new("10.0.0.6", false);
        dead.dead.store(true, Relaxed);
        dead.latency_ms.store(20, Relaxed);
        let t0 = std::time::Instant::now();
        let e = pc
            .execute(&dead, PowerAction::Off, &fast())
            .await
            .unwrap_err();
        assert!(
            matches!(e, PowerError::Bmc(BmcError::Timeout { .. })),
            "{e:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn one_command_at_a_time_per_bmc_and_a_global_session_bound() {
        let pc = Arc::new(PowerController::new(4));
        let shared = Arc::new(SimBmc::new("10.0.0.7", false));
        shared.latency_ms.store(5, Relaxed);
        let mut tasks = Vec::new();
        for i in 0..6 {
            let (pc, b) = (pc.clone(), shared.clone());
            let action = if i % 2 == 0 {
                PowerAction::On
            } else {
                PowerAction::Off
            };
            tasks.push(tokio::spawn(async move {
                pc.execute(&*b, action, &fast()).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(
            shared.max_in_flight.load(Relaxed),
            1,
            "two commands reached one BMC at once"
        );

        let sims: Vec<Arc<SimBmc>> = (0..20)
            .map(|i| Arc::new(SimBmc::new(&format!("10.0.1.{i}"), true)))
            .collect();
        for s in &sims {
            s.latency_ms.store(10, Relaxed);
        }
        let mut tasks = Vec::new();
        for s in &sims {
            let (pc, b) = (pc.clone(), s.clone());
            tasks.push(tokio::spawn(async move {
                pc.execute(&*b, PowerAction::Status, &fast()).await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().after, PowerState::On);
        }
        assert!(
            pc.max_sessions_seen() <= 4,
            "bound exceeded: {}",
            pc.max_sessions_seen()
        );
        assert!(pc.max_sessions_seen() >= 2, "no concurrency at all");
    }
}
