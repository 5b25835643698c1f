//! Running a signer in production: its configuration file ([`config`]) and its Prometheus
//! metrics ([`metrics`]).

pub mod config;
pub mod metrics;
