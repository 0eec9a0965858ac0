//! [`AnyBmc`]: one type over every driver, chosen at run time from a machine's BMC settings.

use crate::bmc::{Bmc, BmcError, BmcInfo, BootDevice, PowerState};
use crate::ipmi::IpmiBmc;
use crate::sim::SimBmc;

pub enum AnyBmc {
    Ipmi(IpmiBmc),
    Sim(SimBmc),
}

macro_rules! each {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            AnyBmc::Ipmi($b) => $e,
            AnyBmc::Sim($b) => $e,
        }
    };
}

impl Bmc for AnyBmc {
    fn address(&self) -> String {
        each!(self, b => b.address())
    }
    async fn power_status(&self) -> Result<PowerState, BmcError> {
        each!(self, b => b.power_status().await)
    }
    async fn power_on(&self) -> Result<(), BmcError> {
        each!(self, b => b.power_on().await)
    }
    async fn power_off(&self) -> Result<(), BmcError> {
        each!(self, b => b.power_off().await)
    }
    async fn power_cycle(&self) -> Result<(), BmcError> {
        each!(self, b => b.power_cycle().await)
    }
    async fn hard_reset(&self) -> Result<(), BmcError> {
        each!(self, b => b.hard_reset().await)
    }
    async fn set_boot_device(&self, dev: BootDevice, persistent: bool) -> Result<(), BmcError> {
        each!(self, b => b.set_boot_device(dev, persistent).await)
    }
    async fn info(&self) -> Result<BmcInfo, BmcError> {
        each!(self, b => b.info().await)
    }
}
