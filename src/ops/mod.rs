//! Running a signer in production: its configuration file ([`config`]), its transport quotas
//! ([`quota`]) and its Prometheus metrics ([`metrics`]).
//!
//! May import: the lower floors (`signer`, `protocol`, `identity`, …). Never `net` or `cli`:
//! the network layer reads its configuration from here, not the other way round.

pub mod config;
pub mod metrics;
pub mod quota;
