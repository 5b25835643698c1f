//! The secret server's resource limits ([`Limits`]) and the counters that enforce them
//! ([`Gate`]): open connections, and requests in flight globally and per coordinator.
//!
//! Limits can change while the server runs (SIGHUP re-reads them): a [`Gate`] keeps its
//! maximums in atomics and wakes every waiter when they change, and a slot is released when
//! its guard is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::identity::IdentityPublic;

/// Shortest header-read timeout a signer accepts: coordinators drop pooled idle connections
/// after [`super::client::POOL_IDLE_TIMEOUT`] (shorter), so a request is never sent on a
/// connection the signer is closing.
pub const MIN_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a set of limits is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// A count is zero (nothing could ever be served).
    #[error("{name} must be at least 1")]
    Zero {
        /// The limit's name (as in the config file).
        name: &'static str,
    },
    /// A timeout is out of its range.
    #[error("{name} must be between {min_secs} and {max_secs} seconds, not {secs}")]
    Timeout {
        /// The limit's name (as in the config file).
        name: &'static str,
        /// The value given.
        secs: u64,
        /// Smallest accepted value.
        min_secs: u64,
        /// Largest accepted value.
        max_secs: u64,
    },
    /// The per-coordinator cap is above the global one.
    #[error("max_in_flight_per_coordinator ({per}) cannot be above max_in_flight ({global})")]
    PerCoordinatorAboveGlobal {
        /// Per-coordinator cap.
        per: usize,
        /// Global cap.
        global: usize,
    },
}

/// Connection and request limits of `ckm signer serve` (the `[limits]` table of its config
/// file; the field names are the file's keys).
///
/// What they bound: an unauthenticated client never gets its body read (the signed header
/// is checked first), so it costs at most one connection: a read buffer of at most
/// [`super::server::CONNECTION_BUFFER`] plus TLS state, for at most `header_timeout_secs`
/// (or `handshake_timeout_secs`). `max_connections` connections beyond that wait in the
/// kernel's accept queue, costing the signer nothing. Bodies are read only for requests
/// whose signature already verified, at most `max_in_flight` at once (and at most
/// `max_in_flight_per_coordinator` for one coordinator, so one busy or compromised
/// coordinator cannot starve the others), each at most [`super::MAX_BODY`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[must_use]
pub struct Limits {
    /// Open connections (TLS handshakes included); more wait in the accept queue.
    /// Default 256.
    pub max_connections: usize,
    /// Authenticated requests whose body is being read or handled, over all coordinators;
    /// more wait (up to [`Limits::queue_timeout_secs`]) then get 503. Default 16.
    pub max_in_flight: usize,
    /// The same, for one coordinator. Default 8.
    pub max_in_flight_per_coordinator: usize,
    /// Time a client has to send a complete request header, counted from the connection's
    /// start or the previous answer (idle keep-alive connections are closed after it).
    /// 5 to 300 s, default 10 s.
    pub header_timeout_secs: u64,
    /// Time a client has to complete the TLS handshake. 1 to 300 s, default 10 s.
    pub handshake_timeout_secs: u64,
    /// Time an authenticated request may take from its header to its answer: reading the
    /// body, waiting for a slot, checking and signing. 1 to 3600 s, default 120 s.
    pub request_timeout_secs: u64,
    /// How long an authenticated request waits for an in-flight slot before it is answered
    /// 503 (busy). 1 to 3600 s, default 30 s.
    pub queue_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_in_flight: 16,
            max_in_flight_per_coordinator: 8,
            header_timeout_secs: 10,
            handshake_timeout_secs: 10,
            request_timeout_secs: 120,
            queue_timeout_secs: 30,
        }
    }
}

impl Limits {
    /// Checks every limit's range.
    ///
    /// # Errors
    /// The first limit out of range.
    pub fn validate(&self) -> Result<(), LimitsError> {
        for (name, v) in [
            ("max_connections", self.max_connections),
            ("max_in_flight", self.max_in_flight),
            (
                "max_in_flight_per_coordinator",
                self.max_in_flight_per_coordinator,
            ),
        ] {
            if v == 0 {
                return Err(LimitsError::Zero { name });
            }
        }
        if self.max_in_flight_per_coordinator > self.max_in_flight {
            return Err(LimitsError::PerCoordinatorAboveGlobal {
                per: self.max_in_flight_per_coordinator,
                global: self.max_in_flight,
            });
        }
        for (name, secs, min_secs, max_secs) in [
            (
                "header_timeout_secs",
                self.header_timeout_secs,
                MIN_HEADER_TIMEOUT.as_secs(),
                300,
            ),
            (
                "handshake_timeout_secs",
                self.handshake_timeout_secs,
                1,
                300,
            ),
            ("request_timeout_secs", self.request_timeout_secs, 1, 3600),
            ("queue_timeout_secs", self.queue_timeout_secs, 1, 3600),
        ] {
            if !(min_secs..=max_secs).contains(&secs) {
                return Err(LimitsError::Timeout {
                    name,
                    secs,
                    min_secs,
                    max_secs,
                });
            }
        }
        Ok(())
    }

    /// [`Limits::header_timeout_secs`] as a duration.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }

    /// [`Limits::handshake_timeout_secs`] as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    /// [`Limits::request_timeout_secs`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// [`Limits::queue_timeout_secs`] as a duration.
    pub fn queue_timeout(&self) -> Duration {
        Duration::from_secs(self.queue_timeout_secs)
    }
}

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
    pub fn new(limits: &Limits) -> Arc<Self> {
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
    pub fn set_limits(&self, limits: &Limits) {
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
    use super::*;
    use crate::identity::IdentityKey;
    use rand::SeedableRng;

    fn keys(n: usize) -> Vec<IdentityPublic> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        (0..n)
            .map(|_| IdentityKey::generate(&mut rng).public())
            .collect()
    }

    fn limits(conn: usize, global: usize, per: usize) -> Limits {
        Limits {
            max_connections: conn,
            max_in_flight: global,
            max_in_flight_per_coordinator: per,
            ..Limits::default()
        }
    }

    #[test]
    fn defaults_are_valid_and_ranges_are_checked() {
        Limits::default().validate().unwrap();
        assert_eq!(
            limits(0, 1, 1).validate(),
            Err(LimitsError::Zero {
                name: "max_connections"
            })
        );
        assert!(matches!(
            limits(1, 2, 3).validate(),
            Err(LimitsError::PerCoordinatorAboveGlobal { per: 3, global: 2 })
        ));
        let short = Limits {
            header_timeout_secs: 4,
            ..Limits::default()
        };
        assert!(matches!(
            short.validate(),
            Err(LimitsError::Timeout {
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
