//! The secret server's transport quotas ([`Quotas`]): open connections, requests in flight
//! globally and per coordinator, body sizes and timeouts. This is configuration only (read
//! from the `[limits]` table of the signer's configuration file, see [`super::config`]); the
//! counters that enforce it are the network layer's `net::quota::Gate`. Not to be confused with spending
//! limits ([`crate::protocol::spend_limits`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Shortest header-read timeout a signer accepts: coordinators drop pooled idle connections
/// after `net::client::POOL_IDLE_TIMEOUT` (shorter), so a request is never sent on a
/// connection the signer is closing.
pub const MIN_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a set of limits is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
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
/// `net::server::CONNECTION_BUFFER` bytes plus TLS state, for at most `header_timeout_secs`
/// (or `handshake_timeout_secs`). `max_connections` connections beyond that wait in the
/// kernel's accept queue, costing the signer nothing. Bodies are read only for requests
/// whose signature already verified, at most `max_in_flight` at once (and at most
/// `max_in_flight_per_coordinator` for one coordinator, so one busy or compromised
/// coordinator cannot starve the others), each at most `net::MAX_BODY` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[must_use]
pub struct Quotas {
    /// Open connections (TLS handshakes included); more wait in the accept queue.
    /// Default 256.
    pub max_connections: usize,
    /// Authenticated requests whose body is being read or handled, over all coordinators;
    /// more wait (up to [`Quotas::queue_timeout_secs`]) then get 503. Default 16.
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

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
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

impl Quotas {
    /// Checks every limit's range.
    ///
    /// # Errors
    /// The first limit out of range.
    pub fn validate(&self) -> Result<(), QuotaError> {
        for (name, v) in [
            ("max_connections", self.max_connections),
            ("max_in_flight", self.max_in_flight),
            (
                "max_in_flight_per_coordinator",
                self.max_in_flight_per_coordinator,
            ),
        ] {
            if v == 0 {
                return Err(QuotaError::Zero { name });
            }
        }
        if self.max_in_flight_per_coordinator > self.max_in_flight {
            return Err(QuotaError::PerCoordinatorAboveGlobal {
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
                return Err(QuotaError::Timeout {
                    name,
                    secs,
                    min_secs,
                    max_secs,
                });
            }
        }
        Ok(())
    }

    /// [`Quotas::header_timeout_secs`] as a duration.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }

    /// [`Quotas::handshake_timeout_secs`] as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    /// [`Quotas::request_timeout_secs`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// [`Quotas::queue_timeout_secs`] as a duration.
    pub fn queue_timeout(&self) -> Duration {
        Duration::from_secs(self.queue_timeout_secs)
    }
}
