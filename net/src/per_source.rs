//! Counting what each client address holds open (TFTP transfers, API connections), so one
//! host cannot take every socket of a node: [`PerSource::take`] hands out a [`Slot`] while the
//! address is under its bound, and the slot gives its place back when dropped.
//!
//! Layer: a leaf (std only).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open things per client address.
#[derive(Debug, Default)]
pub struct PerSource(Mutex<HashMap<IpAddr, usize>>);

/// One open thing of `ip`; dropping it gives the place back.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<PerSource>,
    ip: IpAddr,
}

impl PerSource {
    /// A slot for `ip` if it holds fewer than `max`.
    pub fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            owner: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.owner.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_bound_and_dropping_gives_places_back() {
        let p = Arc::new(PerSource::default());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let held: Vec<Slot> = (0..2).map(|_| p.take(a, 2).unwrap()).collect();
        assert!(p.take(a, 2).is_none());
        assert!(p.take(b, 2).is_some(), "another address is counted apart");
        drop(held);
        assert!(
            p.0.lock().unwrap().is_empty(),
            "no entry outlives its slots"
        );
        assert!(p.take(a, 2).is_some());
    }
}
