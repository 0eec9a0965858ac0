//! Self-fencing of BMC work: an executor may drive a BMC only while it holds a lease it has
//! confirmed, measured on its own monotonic clock.
//!
//! [`Fence`] is a deadline shared between whoever keeps the lease (it moves the deadline
//! forward after each renewal that commits) and the work it permits. [`Fenced`] wraps any
//! [`Bmc`] and bounds every command by the deadline: it is checked on the clock before each
//! step of the command's future (a driver sends its packets, session setup and retransmits
//! included, only while its future is polled), and the command is dropped when the deadline
//! passes. Once it has passed, nothing more is sent and the call fails with
//! [`BmcError::Fenced`], which is never retried. A node that was paused or cut off from the
//! leader therefore stops talking to the BMC before its lease can have been taken over by
//! another node, whether its renewals were refused or never answered — also when the pause
//! fell in the middle of a command (after its session was opened, before its request went
//! out, or while a retransmit was due). What remains is the instant between the clock check
//! and the send inside one poll; the lease margin covers it.
//!
//! Pure policy over the `Bmc` trait: no storage, no replicated state, no sockets of its own.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

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

    fn fenced(&self) -> BmcError {
        BmcError::Fenced {
            address: self.bmc.address(),
        }
    }

    /// Runs one command while the fence is open: the clock is checked before every poll of
    /// `cmd` (so no step of it runs late, however long the process was stopped), and the
    /// fence's own timer wakes the wait when the deadline passes with `cmd` still pending.
    async fn bounded<T>(
        &self,
        cmd: impl Future<Output = Result<T, BmcError>>,
    ) -> Result<T, BmcError> {
        let mut cmd = pin!(cmd);
        let mut closed = pin!(self.fence.closed());
        std::future::poll_fn(|cx| {
            if !self.fence.is_open() || closed.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(self.fenced()));
            }
            cmd.as_mut().poll(cx)
        })
        .await
    }
}

impl<B: Bmc> Bmc for Fenced<'_, B> {
    fn address(&self) -> String {
        self.bmc.address()
    }
    async fn power_status(&self) -> Result<PowerState, BmcError> {
        self.bounded(self.bmc.power_status()).await
    }
    async fn power_on(&self) -> Result<(), BmcError> {
        self.bounded(self.bmc.power_on()).await
    }
    async fn power_off(&self) -> Result<(), BmcError> {
        self.bounded(self.bmc.power_off()).await
    }
    async fn power_cycle(&self) -> Result<(), BmcError> {
        self.bounded(self.bmc.power_cycle()).await
    }
    async fn hard_reset(&self) -> Result<(), BmcError> {
        self.bounded(self.bmc.hard_reset()).await
    }
    async fn set_boot_device(&self, dev: BootDevice, persistent: bool) -> Result<(), BmcError> {
        self.bounded(self.bmc.set_boot_device(dev, persistent))
            .await
    }
    async fn info(&self) -> Result<BmcInfo, BmcError> {
        self.bounded(self.bmc.info()).await
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

    /// A driver whose command is two exchanges (open a session, then send the request): the
    /// second packet goes out only when the answer to the first arrives.
    #[derive(Default)]
    struct TwoExchanges {
        sent: std::sync::atomic::AtomicU32,
        answer: tokio::sync::Notify,
    }

    impl TwoExchanges {
        fn send(&self) {
            self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fn sent(&self) -> u32 {
            self.sent.load(std::sync::atomic::Ordering::Relaxed)
        }
        async fn exchange(&self) -> Result<(), BmcError> {
            self.send();
            self.answer.notified().await;
            self.send();
            Ok(())
        }
    }

    impl Bmc for TwoExchanges {
        fn address(&self) -> String {
            "two-exchanges".into()
        }
        async fn power_status(&self) -> Result<PowerState, BmcError> {
            self.exchange().await.map(|()| PowerState::Off)
        }
        async fn power_on(&self) -> Result<(), BmcError> {
            self.exchange().await
        }
        async fn power_off(&self) -> Result<(), BmcError> {
            self.exchange().await
        }
        async fn power_cycle(&self) -> Result<(), BmcError> {
            self.exchange().await
        }
        async fn hard_reset(&self) -> Result<(), BmcError> {
            self.exchange().await
        }
        async fn set_boot_device(&self, _: BootDevice, _: bool) -> Result<(), BmcError> {
            self.exchange().await
        }
        async fn info(&self) -> Result<BmcInfo, BmcError> {
            self.exchange().await.map(|()| BmcInfo {
                manufacturer_id: 0,
                product_id: 0,
                firmware: String::new(),
                ipmi_version: String::new(),
            })
        }
    }

    /// Polls `f` once, without waiting.
    async fn poll_once<T>(mut f: std::pin::Pin<&mut impl Future<Output = T>>) -> Poll<T> {
        std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_command_stopped_midway_sends_nothing_more_once_the_deadline_passed() {
        // The process stops (SIGSTOP, a long GC-like stall) after the command's first packet
        // went out, and the BMC's answer is waiting when it resumes past the deadline: the
        // command must not take its next step, although the check before it was passed.
        let bmc = TwoExchanges::default();
        let fence = Fence::until(Instant::now() + Duration::from_secs(1));
        let fenced = Fenced::new(&bmc, fence);
        let mut cmd = pin!(fenced.power_on());
        assert!(poll_once(cmd.as_mut()).await.is_pending());
        assert_eq!(bmc.sent(), 1);
        // Stopped for 5 s: nothing polls the command meanwhile; the answer arrives.
        tokio::time::advance(Duration::from_secs(5)).await;
        bmc.answer.notify_one();
        match poll_once(cmd.as_mut()).await {
            Poll::Ready(Err(BmcError::Fenced { .. })) => {}
            other => panic!("expected fenced, got {other:?}"),
        }
        assert_eq!(bmc.sent(), 1, "no packet after the deadline");

        // While the fence is open the same command completes.
        let fresh = Fenced::new(&bmc, Fence::until(Instant::now() + Duration::from_secs(1)));
        bmc.answer.notify_one();
        fresh.power_on().await.unwrap();
        assert_eq!(bmc.sent(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_command_waiting_on_the_bmc_is_dropped_when_the_deadline_passes() {
        // No answer ever comes: the fence's timer ends the wait at the deadline.
        let bmc = TwoExchanges::default();
        let start = Instant::now();
        let fenced = Fenced::new(&bmc, Fence::until(start + Duration::from_secs(2)));
        let e = tokio::time::timeout(Duration::from_secs(60), fenced.power_off())
            .await
            .expect("the wait ended at the deadline")
            .unwrap_err();
        assert!(matches!(e, BmcError::Fenced { .. }), "{e}");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(bmc.sent(), 1);
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
