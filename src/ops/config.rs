//! The configuration file of `ckm signer serve --config FILE` (TOML).
//!
//! Top-level keys: `listen`, `allow_coordinators`, `allow_peers`, `passphrase_file`,
//! `metrics`, `tls`, `tls_cert`, `tls_key`, `log_format`, and a `[limits]` table whose keys
//! are the fields of [`Quotas`]. Every key is optional; unknown keys are refused. Relative
//! paths are taken from the file's directory. Errors name the file, line and column and say
//! what is wrong. [`EXAMPLE`] is a commented example (what `ckm signer config example`
//! prints).

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::quota::Quotas;
use crate::identity::IdentityPublic;

/// Largest configuration file read.
pub const MAX_CONFIG_FILE: u64 = 1 << 20;

/// A commented example configuration (valid as it stands, once the keys are replaced).
pub const EXAMPLE: &str = r#"# ckm signer configuration: ckm --home DIR signer serve --config THIS_FILE
# Flags given on the command line override these values.
# SIGHUP re-reads allow_coordinators and [limits]; the other keys need a restart
# (`ckm signer peers add` approves a peer without one).

# Address to listen on. Plain HTTP is allowed only on loopback addresses; anywhere else set
# `tls = true` (or tls_cert and tls_key).
listen = "127.0.0.1:7000"

# Identity keys of the coordinators allowed to send requests (`ckm id` on the coordinator).
allow_coordinators = [
  "0000000000000000000000000000000000000000000000000000000000000001",
]

# Identity keys of the other signers this signer may generate keys with (`ckm signer init`
# printed each one), besides those approved with `ckm signer peers add`.
allow_peers = []

# File holding the store's passphrase (first line). With systemd, use LoadCredential= and
# "/run/credentials/ckm-signer.service/passphrase".
# passphrase_file = "/etc/ckm/passphrase"

# Prometheus metrics on a separate listener (off when absent). No secret and no wallet name
# is ever exported; bind it to loopback or a private network.
# metrics = "127.0.0.1:9464"

# HTTPS with the self-signed certificate kept in the signer's home (`ckm signer tls` prints
# its fingerprint for coordinators to pin) ...
tls = false
# ... or with your own PEM certificate and key (instead of `tls = true`).
# tls_cert = "/etc/ckm/cert.pem"
# tls_key = "/etc/ckm/key.pem"

# "text" (default) or "json" (one object per line: timestamp, level, message, target and the
# event's fields).
log_format = "text"

[limits]
# Open connections, TLS handshakes included; more wait in the kernel's accept queue.
max_connections = 256
# Authenticated requests being read or handled at once, in all and per coordinator.
max_in_flight = 16
max_in_flight_per_coordinator = 8
# Seconds a client has to send a request header (idle connections close after it), 5-300.
header_timeout_secs = 10
# Seconds a client has to complete the TLS handshake, 1-300.
handshake_timeout_secs = 10
# Seconds from a request's header to its answer, 1-3600.
request_timeout_secs = 120
# Seconds an authenticated request waits for a free slot before it is answered busy, 1-3600.
queue_timeout_secs = 30
"#;

/// Why a configuration file is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the configuration file {path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("{path}:{line}:{column}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column of the offending value.
        column: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format '{other}' (use text or json)")),
        }
    }
}

/// How the server speaks TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum TlsChoice {
    /// Plain HTTP (loopback only).
    #[default]
    Off,
    /// The self-signed certificate kept in the signer's home.
    SelfSigned,
    /// The operator's PEM certificate and key.
    Files {
        /// Certificate (PEM).
        cert: PathBuf,
        /// Private key (PEM).
        key: PathBuf,
    },
}

/// A checked configuration: what the file says (absent keys are `None` or empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServeConfig {
    /// `listen`.
    pub listen: Option<SocketAddr>,
    /// `allow_coordinators`.
    pub allow_coordinators: Vec<IdentityPublic>,
    /// `allow_peers`: the signers this one may run a key generation with.
    pub allow_peers: Vec<IdentityPublic>,
    /// `passphrase_file`, resolved against the file's directory.
    pub passphrase_file: Option<PathBuf>,
    /// `metrics`.
    pub metrics: Option<SocketAddr>,
    /// `tls`, or `tls_cert` and `tls_key`.
    pub tls: TlsChoice,
    /// `log_format`.
    pub log_format: Option<LogFormat>,
    /// `[limits]`, defaults filled in.
    pub limits: Quotas,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    allow_coordinators: Option<Vec<Spanned<String>>>,
    allow_peers: Option<Vec<Spanned<String>>>,
    passphrase_file: Option<Spanned<PathBuf>>,
    metrics: Option<Spanned<String>>,
    tls: Option<Spanned<bool>>,
    tls_cert: Option<Spanned<PathBuf>>,
    tls_key: Option<Spanned<PathBuf>>,
    log_format: Option<Spanned<String>>,
    limits: Option<Spanned<RawLimits>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<Spanned<usize>>,
    max_in_flight: Option<Spanned<usize>>,
    max_in_flight_per_coordinator: Option<Spanned<usize>>,
    header_timeout_secs: Option<Spanned<u64>>,
    handshake_timeout_secs: Option<Spanned<u64>>,
    request_timeout_secs: Option<Spanned<u64>>,
    queue_timeout_secs: Option<Spanned<u64>>,
}

/// 1-based line and column of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn error(&self, span: Option<Range<usize>>, reason: impl Into<String>) -> ConfigError {
        let (line, column) = span.map_or((1, 1), |s| position(self.text, s.start));
        ConfigError::Invalid {
            path: self.path.display().to_string(),
            line,
            column,
            reason: reason.into(),
        }
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or_else(|| Path::new(".")).join(p)
        }
    }

    fn keys(
        &self,
        key: &str,
        values: Option<Vec<Spanned<String>>>,
    ) -> Result<Vec<IdentityPublic>, ConfigError> {
        let mut out: Vec<IdentityPublic> = Vec::new();
        for (i, v) in values.unwrap_or_default().into_iter().enumerate() {
            let parsed: IdentityPublic = v.get_ref().parse().map_err(|e| {
                self.error(
                    Some(v.span()),
                    format!("{key}[{i}]: '{}' is not an identity key: {e}", v.get_ref()),
                )
            })?;
            if out.contains(&parsed) {
                return Err(self.error(
                    Some(v.span()),
                    format!("{key}[{i}]: {parsed} is listed twice"),
                ));
            }
            out.push(parsed);
        }
        Ok(out)
    }

    fn address(
        &self,
        key: &str,
        v: Option<Spanned<String>>,
    ) -> Result<Option<SocketAddr>, ConfigError> {
        v.map(|v| {
            v.get_ref().parse().map_err(|e| {
                self.error(
                    Some(v.span()),
                    format!(
                        "{key}: '{}' is not an address like 127.0.0.1:7000: {e}",
                        v.get_ref()
                    ),
                )
            })
        })
        .transpose()
    }
}

impl ServeConfig {
    /// Reads and checks a configuration file.
    ///
    /// # Errors
    /// The file is unreadable, or not a valid configuration (with line and reason).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = crate::store::read_limited(path, MAX_CONFIG_FILE).map_err(|source| {
            ConfigError::Io {
                path: path.display().to_string(),
                source,
            }
        })?;
        let text = String::from_utf8(bytes).map_err(|e| ConfigError::Invalid {
            path: path.display().to_string(),
            line: 1,
            column: 1,
            reason: format!("not UTF-8 text: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Checks configuration text; `path` names it in errors and anchors relative paths.
    ///
    /// # Errors
    /// Not a valid configuration (with line and reason).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let src = Source { path, text };
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| src.error(e.span(), e.message().trim().to_string()))?;
        let tls = match (raw.tls, raw.tls_cert, raw.tls_key) {
            (Some(on), Some(cert), _) if *on.get_ref() => {
                return Err(src.error(
                    Some(cert.span()),
                    "tls_cert: give either `tls = true` (the self-signed certificate) or \
                     tls_cert and tls_key, not both",
                ))
            }
            (_, Some(cert), Some(key)) => TlsChoice::Files {
                cert: src.resolve(cert.get_ref()),
                key: src.resolve(key.get_ref()),
            },
            (_, Some(cert), None) => {
                return Err(src.error(Some(cert.span()), "tls_cert needs tls_key"))
            }
            (_, None, Some(key)) => {
                return Err(src.error(Some(key.span()), "tls_key needs tls_cert"))
            }
            (Some(on), None, None) if *on.get_ref() => TlsChoice::SelfSigned,
            _ => TlsChoice::Off,
        };
        let log_format = raw
            .log_format
            .map(|v| {
                v.get_ref()
                    .parse::<LogFormat>()
                    .map_err(|e| src.error(Some(v.span()), format!("log_format: {e}")))
            })
            .transpose()?;
        let listen = src.address("listen", raw.listen)?;
        let metrics = src.address("metrics", raw.metrics)?;
        if let (Some(l), Some(m)) = (listen, metrics) {
            if l == m && l.port() != 0 {
                return Err(src.error(None, "metrics must listen on another address than listen"));
            }
        }
        let limits = match raw.limits {
            None => Quotas::default(),
            Some(l) => {
                let span = l.span();
                let l = l.into_inner();
                let mut out = Quotas::default();
                let mut spans: Vec<(&'static str, Range<usize>)> = Vec::new();
                macro_rules! take {
                    ($field:ident) => {
                        if let Some(v) = l.$field {
                            spans.push((stringify!($field), v.span()));
                            out.$field = v.into_inner();
                        }
                    };
                }
                take!(max_connections);
                take!(max_in_flight);
                take!(max_in_flight_per_coordinator);
                take!(header_timeout_secs);
                take!(handshake_timeout_secs);
                take!(request_timeout_secs);
                take!(queue_timeout_secs);
                if let Err(e) = out.validate() {
                    let name = match &e {
                        super::quota::QuotaError::Zero { name }
                        | super::quota::QuotaError::Timeout { name, .. } => *name,
                        super::quota::QuotaError::PerCoordinatorAboveGlobal { .. } => {
                            "max_in_flight_per_coordinator"
                        }
                    };
                    let at = spans
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map_or(span, |(_, s)| s.clone());
                    return Err(src.error(Some(at), format!("limits: {e}")));
                }
                out
            }
        };
        Ok(ServeConfig {
            listen,
            allow_coordinators: src.keys("allow_coordinators", raw.allow_coordinators)?,
            allow_peers: src.keys("allow_peers", raw.allow_peers)?,
            passphrase_file: raw.passphrase_file.map(|p| src.resolve(p.get_ref())),
            metrics,
            tls,
            log_format,
            limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServeConfig, ConfigError> {
        ServeConfig::parse(Path::new("/etc/ckm/signer.toml"), text)
    }

    fn error_at(text: &str) -> (usize, String) {
        match parse(text) {
            Err(ConfigError::Invalid { line, reason, .. }) => (line, reason),
            other => panic!("expected an error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn the_example_is_valid() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:7000".parse().unwrap()));
        assert_eq!(c.allow_coordinators.len(), 1);
        assert_eq!(c.tls, TlsChoice::Off);
        assert_eq!(c.log_format, Some(LogFormat::Text));
        assert_eq!(c.limits, Quotas::default());
    }

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(parse("").unwrap(), ServeConfig::default());
    }

    #[test]
    fn paths_are_relative_to_the_file() {
        let c =
            parse("passphrase_file = \"pass\"\ntls_cert = \"/abs/c.pem\"\ntls_key = \"k.pem\"\n")
                .unwrap();
        assert_eq!(c.passphrase_file, Some(PathBuf::from("/etc/ckm/pass")));
        assert_eq!(
            c.tls,
            TlsChoice::Files {
                cert: "/abs/c.pem".into(),
                key: "/etc/ckm/k.pem".into()
            }
        );
    }

    #[test]
    fn errors_name_the_line_and_reason() {
        let key = "0000000000000000000000000000000000000000000000000000000000000001";
        let cases: Vec<(String, usize, &str)> = vec![
            (
                "listen = \"127.0.0.1:7000\"\nlisen = 3\n".into(),
                2,
                "unknown field `lisen`",
            ),
            ("listen = \"localhost\"\n".into(), 1, "not an address"),
            (
                format!("allow_coordinators = [\n  \"{key}\",\n  \"nope\",\n]\n"),
                3,
                "allow_coordinators[1]",
            ),
            (
                format!("allow_peers = [\"{key}\", \"{key}\"]\n"),
                1,
                "listed twice",
            ),
            (
                "tls = true\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n".into(),
                2,
                "not both",
            ),
            ("tls_key = \"k.pem\"\n".into(), 1, "tls_key needs tls_cert"),
            ("log_format = \"xml\"\n".into(), 1, "unknown log format"),
            ("tls = \"yes\"\n".into(), 1, "bool"),
            (
                "[limits]\nmax_connections = 0\n".into(),
                2,
                "max_connections must be at least 1",
            ),
            (
                "[limits]\nmax_in_flight = 4\nmax_in_flight_per_coordinator = 8\n".into(),
                3,
                "cannot be above",
            ),
            (
                "[limits]\nheader_timeout_secs = 1\n".into(),
                2,
                "between 5 and 300",
            ),
            (
                "[limits]\nmax_conections = 5\n".into(),
                2,
                "unknown field `max_conections`",
            ),
            ("[limits]\nmax_in_flight = -1\n".into(), 2, "invalid value"),
            ("listen = \"127.0.0.1:7000\"\n[[broken\n".into(), 2, ""),
        ];
        for (text, line, reason) in cases {
            let (got_line, got_reason) = error_at(&text);
            assert_eq!(got_line, line, "{text:?}: {got_reason}");
            assert!(got_reason.contains(reason), "{text:?}: {got_reason}");
        }
    }

    #[test]
    fn position_counts_lines_and_columns() {
        assert_eq!(position("a\nbc\nd", 0), (1, 1));
        assert_eq!(position("a\nbc\nd", 3), (2, 2));
        assert_eq!(position("a\nbc\nd", 5), (3, 1));
        assert_eq!(position("a", 99), (1, 2));
    }
}
