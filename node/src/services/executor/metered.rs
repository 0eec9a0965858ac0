//! A BMC whose every call is counted and timed in the metrics (`rackd_bmc_calls_total`,
//! `rackd_bmc_call_duration_seconds`) by driver, operation and result. It sits inside the
//! fence, so a call the fence stopped never reached the BMC and is not counted.
//!
//! Layer: part of the executor; uses the bottom-layer `metrics` only.

use std::future::Future;
use std::time::Instant;

use rackd_hwctl::{AnyBmc, Bmc, BmcError, BmcInfo, BootDevice, PowerState};

/// `bmc`, metered under its driver's name.
pub struct Metered<'a, B> {
    bmc: &'a B,
    driver: &'static str,
}

impl<'a> Metered<'a, AnyBmc> {
    pub fn new(bmc: &'a AnyBmc) -> Self {
        let driver = match bmc {
            AnyBmc::Ipmi(_) => "ipmi",
            AnyBmc::Sim(_) => "sim",
        };
        Metered { bmc, driver }
    }
}

impl<B: Bmc> Metered<'_, B> {
    async fn timed<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, BmcError>>,
    ) -> Result<T, BmcError> {
        let started = Instant::now();
        let r = call.await;
        crate::metrics::global().bmc_call(
            self.driver,
            op,
            r.is_ok(),
            started.elapsed().as_secs_f64(),
        );
        r
    }
}

impl<B: Bmc> Bmc for Metered<'_, B> {
    fn address(&self) -> String {
        self.bmc.address()
    }
    async fn power_status(&self) -> Result<PowerState, BmcError> {
        self.timed("power_status", self.bmc.power_status()).await
    }
    async fn power_on(&self) -> Result<(), BmcError> {
        self.timed("power_on", self.bmc.power_on()).await
    }
    async fn power_off(&self) -> Result<(), BmcError> {
        self.timed("power_off", self.bmc.power_off()).await
    }
    async fn power_cycle(&self) -> Result<(), BmcError> {
        self.timed("power_cycle", self.bmc.power_cycle()).await
    }
    async fn hard_reset(&self) -> Result<(), BmcError> {
        self.timed("hard_reset", self.bmc.hard_reset()).await
    }
    async fn set_boot_device(&self, dev: BootDevice, persistent: bool) -> Result<(), BmcError> {
        self.timed("set_boot_device", self.bmc.set_boot_device(dev, persistent))
            .await
    }
    async fn info(&self) -> Result<BmcInfo, BmcError> {
        self.timed("info", self.bmc.info()).await
    }
}
