//! The counters that enforce the signer's transport quotas ([`Gate`]): open connections, and
//! requests in flight globally and per coordinator. The quotas themselves are configuration
//! ([`crate::ops::quota::Quotas`]).
//!
//! Quotas can change while the server runs (SIGHUP re-reads them): a [`Gate`] keeps its
//! maximums in atomics and wakes every waiter when they change, and a slot is released when
//! its guard is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::identity::IdentityPublic;
pub use crate::ops::quota::{QuotaError, Quotas, MIN_HEADER_TIMEOUT};
#[derive(Debug, Default)]
struct Counts {
    connections: usize,
    in_flight: usize,
    per_coordinator: HashMap<IdentityPublic, usize>,
}

/// Counters of open connections and requests in flight, with maximums that can change at
/// run time. Waiters are woken whenever a slot is released or the maximums change.
#[derive(Debug)]
pub struct Gate {
    counts: Mutex<Counts>,
    max_connections: AtomicUsize,
    max_in_flight: AtomicUsize,
    max_per_coordinator: AtomicUsize,
    changed: Notify,
}

/// A held connection slot; released on drop.
#[derive(Debug)]
pub struct ConnectionSlot {
    gate: Arc<Gate>,
}

/// A held in-flight slot of one coordinator; released on drop.
#[derive(Debug)]
pub struct InFlightSlot {
    gate: Arc<Gate>,
    coordinator: IdentityPublic,
}

impl Gate {
    /// A gate enforcing `limits`.
    pub fn new(limits: &Quotas) -> Arc<Self> {
        let gate = Arc::new(Gate {
            counts: Mutex::default(),
            max_connections: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            max_per_coordinator: AtomicUsize::new(0),
            changed: Notify::new(),
        });
        gate.set_limits(limits);
        gate
    }

    /// Applies new maximums. Slots already held are kept (counts may exceed a lowered
    /// maximum until they are released); waiters re-check at once.
    pub fn set_limits(&self, limits: &Quotas) {
        self.max_connections
            .store(limits.max_connections, Ordering::SeqCst);
        self.max_in_flight
            .store(limits.max_in_flight, Ordering::SeqCst);
        self.max_per_coordinator
            .store(limits.max_in_flight_per_coordinator, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: recover them.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Open connections now.
    pub fn connections(&self) -> usize {
        self.counts().connections
    }

    /// Requests in flight now (all coordinators).
    pub fn in_flight(&self) -> usize {
        self.counts().in_flight
    }

    fn try_connection(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let mut c = self.counts();
        if c.connections >= self.max_connections.load(Ordering::SeqCst) {
            return None;
        }
        c.connections += 1;
        Some(ConnectionSlot { gate: self.clone() })
    }

    fn try_in_flight(self: &Arc<Self>, coordinator: &IdentityPublic) -> Option<InFlightSlot> {
        let mut c = self.counts();
        let mine = c.per_coordinator.get(coordinator).copied().unwrap_or(0);
        if c.in_flight >= self.max_in_flight.load(Ordering::SeqCst)
            || mine >= self.max_per_coordinator.load(Ordering::SeqCst)
        {
            return None;
        }
        c.in_flight += 1;
        c.per_coordinator.insert(*coordinator, mine + 1);
        Some(InFlightSlot {
            gate: self.clone(),
            coordinator: *coordinator,
        })
    }

    /// Waits for a connection slot.
    pub async fn connection(self: &Arc<Self>) -> ConnectionSlot {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(slot) = self.try_connection() {
                return slot;
            }
            changed.await;
        }
    }

    /// Waits for an in-flight slot of `coordinator` (both the global and its own cap).
    pub async fn request(self: &Arc<Self>, coordinator: &IdentityPublic) -> InFlightSlot {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(slot) = self.try_in_flight(coordinator) {
                return slot;
            }
            changed.await;
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut c = self.gate.counts();
        c.connections = c.connections.saturating_sub(1);
        drop(c);
        self.gate.changed.notify_waiters();
    }
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        let mut c = self.gate.counts();
        c.in_flight = c.in_flight.saturating_sub(1);
        if let Some(n) = c.per_coordinator.get_mut(&self.coordinator) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_coordinator.remove(&self.coordinator);
            }
        }
        drop(c);
        self.gate.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::identity::IdentityKey;
    use rand::SeedableRng;

    fn keys(n: usize) -> Vec<IdentityPublic> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        (0..n)
            .map(|_| IdentityKey::generate(&mut rng).public())
            .collect()
    }

    fn limits(conn: usize, global: usize, per: usize) -> Quotas {
        Quotas {
            max_connections: conn,
            max_in_flight: global,
            max_in_flight_per_coordinator: per,
            ..Quotas::default()
        }
    }

    #[test]
    fn defaults_are_valid_and_ranges_are_checked() {
        Quotas::default().validate().unwrap();
        assert_eq!(
            limits(0, 1, 1).validate(),
            Err(QuotaError::Zero {
                name: "max_connections"
            })
        );
        assert!(matches!(
            limits(1, 2, 3).validate(),
            Err(QuotaError::PerCoordinatorAboveGlobal { per: 3, global: 2 })
        ));
        let short = Quotas {
            header_timeout_secs: 4,
            ..Quotas::default()
        };
        assert!(matches!(
            short.validate(),
            Err(QuotaError::Timeout {
                name: "header_timeout_secs",
                secs: 4,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn per_coordinator_and_global_caps() {
        let k = keys(3);
        let gate = Gate::new(&limits(10, 3, 2));
        let a1 = gate.try_in_flight(&k[0]).unwrap();
        let _a2 = gate.try_in_flight(&k[0]).unwrap();
        assert!(gate.try_in_flight(&k[0]).is_none(), "per-coordinator cap");
        let _b1 = gate.try_in_flight(&k[1]).unwrap();
        assert!(gate.try_in_flight(&k[2]).is_none(), "global cap");
        assert_eq!(gate.in_flight(), 3);
        // A waiter is woken when a slot is released.
        let waiter = {
            let gate = gate.clone();
            let who = k[2];
            tokio::spawn(async move { gate.request(&who).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a1);
        let c1 = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(gate.in_flight(), 3);
        drop(c1);
        assert_eq!(gate.in_flight(), 2);
    }

    #[tokio::test]
    async fn connection_cap_follows_reloaded_limits() {
        let gate = Gate::new(&limits(1, 1, 1));
        let first = gate.connection().await;
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.connection().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        // Raising the cap lets the waiter in without any release.
        gate.set_limits(&limits(2, 1, 1));
        let second = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(gate.connections(), 2);
        // Lowering it keeps held slots but admits nobody new.
        gate.set_limits(&limits(1, 1, 1));
        assert!(gate.try_connection().is_none());
        drop(first);
        assert!(gate.try_connection().is_none());
        drop(second);
        assert!(gate.try_connection().is_some());
    }
}
