//! Prometheus metrics of a running signer (`prometheus-client`, OpenMetrics text format),
//! served on their own listener by `ckm signer serve --metrics ADDR`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `ckm_requests_total` | counter | `message` (`status`, `dkg_begin`, `dkg_round1`, `dkg_round2`, `dkg_confirm`, `sign_commit`, `preprocess`, `sign_preprocessed`, `sign_statement`, `sign_share`, `other`, or `unknown` when the body was not read), `outcome` (`ok`, `unauthorized`, `bad_request`, `too_large`, `busy`, `timeout`, `unknown_session`, `unknown_wallet`, `refused`, `policy`, `internal`) |
//! | `ckm_auth_failures_total` | counter | `reason` (`missing`, `malformed`, `unknown_coordinator`, `bad_signature`, `expired`, `replayed`, `replay_cache_full`, `body_mismatch`) |
//! | `ckm_policy_refusals_total` | counter | `rule` (`max-fee-sats`, `max-fee-rate`, `max-amount-sats`, `daily-limit-sats`, …, as named in the refusal) |
//! | `ckm_audit_records_total` | counter | |
//! | `ckm_signing_round_seconds` | histogram | `round` (`commit`, `statement`, `share`, `one-round`, `preprocess`) |
//! | `ckm_dkg_round_seconds` | histogram | `round` (`begin`, `round1`, `round2`, `confirm`) |
//! | `ckm_sessions_open` | gauge | signing sessions waiting for round 2 |
//! | `ckm_preprocessed_nonces` | gauge | nonces held for preprocessed (one-round) signing |
//! | `ckm_connections_open`, `ckm_requests_in_flight` | gauge | |
//!
//! No metric carries a secret, a wallet name, a coordinator key or a transaction id.
//! `ckm_audit_records_total` counts the records of the signer's audit log (signatures,
//! refusals, stored shares, policy and peer changes), read when scraped.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::auth::AuthError;
use crate::message::{CoordinatorToSigner, ErrorCode, SignerToCoordinator};

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    message: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoundLabels {
    round: &'static str,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// What the server knows only when scraped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Signing sessions waiting for round 2.
    pub sessions_open: usize,
    /// Connections open.
    pub connections_open: usize,
    /// Requests in flight.
    pub requests_in_flight: usize,
    /// Records in the signer's audit log, if it can tell.
    pub audit_records: Option<u64>,
    /// Nonces held for preprocessed signing.
    pub preprocessed_nonces: usize,
}

/// The signer's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    policy_refusals: Family<RuleLabels, Counter>,
    audit_records: Counter,
    audit_seen: Mutex<u64>,
    signing_seconds: Family<RoundLabels, Histogram, fn() -> Histogram>,
    dkg_seconds: Family<RoundLabels, Histogram, fn() -> Histogram>,
    sessions_open: Gauge,
    preprocessed_nonces: Gauge,
    connections_open: Gauge,
    requests_in_flight: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The `message` label of a request.
pub fn message_kind(message: &CoordinatorToSigner) -> &'static str {
    #[allow(unreachable_patterns)]
    match message {
        CoordinatorToSigner::Status => "status",
        CoordinatorToSigner::DkgBegin { .. } => "dkg_begin",
        CoordinatorToSigner::DkgRound1 { .. } => "dkg_round1",
        CoordinatorToSigner::DkgRound2 { .. } => "dkg_round2",
        CoordinatorToSigner::DkgConfirm { .. } => "dkg_confirm",
        CoordinatorToSigner::SignCommit { .. } => "sign_commit",
        CoordinatorToSigner::Preprocess { .. } => "preprocess",
        CoordinatorToSigner::SignPreprocessed { .. } => "sign_preprocessed",
        CoordinatorToSigner::PrepareSign { .. } => "prepare_sign",
        CoordinatorToSigner::SignStatement { .. } => "sign_statement",
        CoordinatorToSigner::SignShare { .. } => "sign_share",
        _ => "other",
    }
}

/// The `outcome` label of an answer.
pub fn outcome_of(reply: &SignerToCoordinator) -> &'static str {
    match reply {
        SignerToCoordinator::Error { code, .. } => match code {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownSession => "unknown_session",
            ErrorCode::UnknownWallet => "unknown_wallet",
            ErrorCode::Refused => "refused",
            ErrorCode::Policy => "policy",
            _ => "internal",
        },
        _ => "ok",
    }
}

/// The `reason` label of an authentication failure.
pub fn auth_reason(error: &AuthError) -> &'static str {
    match error {
        AuthError::MalformedHeader { .. } => "malformed",
        AuthError::UnknownCoordinator { .. } => "unknown_coordinator",
        AuthError::BadSignature { .. } => "bad_signature",
        AuthError::BodyMismatch { .. } => "body_mismatch",
        AuthError::Expired { .. } => "expired",
        AuthError::Replayed { .. } => "replayed",
        AuthError::ReplayCacheFull { .. } => "replay_cache_full",
    }
}

/// The policy rule a refusal names (`policy RULE: …`), if it is one.
pub fn policy_rule(message: &str) -> String {
    message
        .strip_prefix("policy ")
        .and_then(|rest| rest.split(':').next())
        .filter(|r| {
            !r.is_empty() && r.len() <= 40 && r.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
        })
        .unwrap_or("other")
        .to_string()
}

impl Metrics {
    /// Fresh metrics, all at zero.
    pub fn new() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            requests: Family::default(),
            auth_failures: Family::default(),
            policy_refusals: Family::default(),
            audit_records: Counter::default(),
            audit_seen: Mutex::new(0),
            signing_seconds: Family::new_with_constructor(latency_histogram),
            dkg_seconds: Family::new_with_constructor(latency_histogram),
            sessions_open: Gauge::default(),
            preprocessed_nonces: Gauge::default(),
            connections_open: Gauge::default(),
            requests_in_flight: Gauge::default(),
        };
        {
            let mut r = m
                .registry
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let r = r.sub_registry_with_prefix("ckm");
            r.register(
                "requests",
                "Requests by message and outcome",
                m.requests.clone(),
            );
            r.register(
                "auth_failures",
                "Requests refused before their body was read, by reason",
                m.auth_failures.clone(),
            );
            r.register(
                "policy_refusals",
                "Spends refused by the wallet's policy, by rule",
                m.policy_refusals.clone(),
            );
            r.register(
                "audit_records",
                "Records in the signer's audit log",
                m.audit_records.clone(),
            );
            r.register(
                "signing_round_seconds",
                "Time to answer a signing round",
                m.signing_seconds.clone(),
            );
            r.register(
                "dkg_round_seconds",
                "Time to answer a key-generation step",
                m.dkg_seconds.clone(),
            );
            r.register(
                "sessions_open",
                "Signing sessions waiting for round 2",
                m.sessions_open.clone(),
            );
            r.register(
                "preprocessed_nonces",
                "Nonces held for preprocessed (one-round) signing",
                m.preprocessed_nonces.clone(),
            );
            r.register(
                "connections_open",
                "Open connections",
                m.connections_open.clone(),
            );
            r.register(
                "requests_in_flight",
                "Authenticated requests being read or handled",
                m.requests_in_flight.clone(),
            );
        }
        m
    }

    /// A request refused before its body was read.
    pub fn unauthenticated(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
        self.requests
            .get_or_create(&RequestLabels {
                message: "unknown",
                outcome: "unauthorized",
            })
            .inc();
    }

    /// An authenticated request answered by the transport itself (too large, busy, …).
    pub fn transport_refusal(&self, message: &'static str, outcome: &'static str) {
        self.requests
            .get_or_create(&RequestLabels { message, outcome })
            .inc();
    }

    /// A message handled by the signer: its answer and how long the signer took.
    pub fn handled(&self, message: &'static str, reply: &SignerToCoordinator, took: Duration) {
        let outcome = outcome_of(reply);
        self.requests
            .get_or_create(&RequestLabels { message, outcome })
            .inc();
        let seconds = took.as_secs_f64();
        match message {
            "sign_commit" => self
                .signing_seconds
                .get_or_create(&RoundLabels { round: "commit" })
                .observe(seconds),
            "sign_statement" => self
                .signing_seconds
                .get_or_create(&RoundLabels { round: "statement" })
                .observe(seconds),
            "sign_share" => self
                .signing_seconds
                .get_or_create(&RoundLabels { round: "share" })
                .observe(seconds),
            "sign_preprocessed" => self
                .signing_seconds
                .get_or_create(&RoundLabels { round: "one-round" })
                .observe(seconds),
            "preprocess" => self
                .signing_seconds
                .get_or_create(&RoundLabels {
                    round: "preprocess",
                })
                .observe(seconds),
            "dkg_begin" => self
                .dkg_seconds
                .get_or_create(&RoundLabels { round: "begin" })
                .observe(seconds),
            "dkg_round1" => self
                .dkg_seconds
                .get_or_create(&RoundLabels { round: "round1" })
                .observe(seconds),
            "dkg_round2" => self
                .dkg_seconds
                .get_or_create(&RoundLabels { round: "round2" })
                .observe(seconds),
            "dkg_confirm" => self
                .dkg_seconds
                .get_or_create(&RoundLabels { round: "confirm" })
                .observe(seconds),
            _ => {}
        }
        if let SignerToCoordinator::Error {
            code: ErrorCode::Policy,
            message,
        } = reply
        {
            self.policy_refusals
                .get_or_create(&RuleLabels {
                    rule: policy_rule(message),
                })
                .inc();
        }
    }

    /// The metrics in the OpenMetrics text format, gauges set from `now`.
    pub fn encode(&self, now: Snapshot) -> String {
        let gauge = |g: &Gauge, v: usize| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        gauge(&self.sessions_open, now.sessions_open);
        gauge(&self.connections_open, now.connections_open);
        gauge(&self.requests_in_flight, now.requests_in_flight);
        if let Some(total) = now.audit_records {
            // The log only grows: count what was appended since the last scrape.
            let mut seen = self
                .audit_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if total > *seen {
                self.audit_records.inc_by(total - *seen);
                *seen = total;
            }
        }
        gauge(&self.preprocessed_nonces, now.preprocessed_nonces);
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_rules_are_named() {
        assert_eq!(
            policy_rule("policy max-fee-sats: the fee of 3 sat exceeds 2 sat"),
            "max-fee-sats"
        );
        assert_eq!(policy_rule("something else"), "other");
        assert_eq!(policy_rule("policy ../../etc: x"), "other");
    }

    #[test]
    fn counters_move_and_encode() {
        let m = Metrics::new();
        m.unauthenticated("missing");
        m.handled(
            "sign_commit",
            &SignerToCoordinator::Error {
                code: ErrorCode::Policy,
                message: "policy max-amount-sats: paying 5 sat exceeds 1 sat per spend".into(),
            },
            Duration::from_millis(3),
        );
        let text = m.encode(Snapshot {
            sessions_open: 2,
            audit_records: Some(5),
            ..Snapshot::default()
        });
        for line in [
            "ckm_auth_failures_total{reason=\"missing\"} 1",
            "ckm_requests_total{message=\"unknown\",outcome=\"unauthorized\"} 1",
            "ckm_requests_total{message=\"sign_commit\",outcome=\"policy\"} 1",
            "ckm_policy_refusals_total{rule=\"max-amount-sats\"} 1",
            "ckm_audit_records_total 5",
            "ckm_sessions_open 2",
            "ckm_preprocessed_nonces 0",
            "ckm_signing_round_seconds_count{round=\"commit\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        // The counter follows the log without counting a record twice.
        let text = m.encode(Snapshot {
            audit_records: Some(7),
            ..Snapshot::default()
        });
        assert!(
            text.lines().any(|l| l == "ckm_audit_records_total 7"),
            "{text}"
        );
    }
}
