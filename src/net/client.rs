//! The coordinator's HTTP client for signers: signs each request with the coordinator's
//! identity (bound to the target signer), checks the signer's signature on the answer, and
//! reuses pooled connections.
//!
//! It never follows a redirect (a signer is reached at the URL in the roster or not at
//! all), refuses to send a request larger than a signer accepts ([`MAX_BODY`]) and stops
//! reading an answer at the same size.

use std::sync::Arc;
use std::time::Duration;

use super::tls::{SeenCertificate, TlsStatement};
use super::{
    response_digest, signed_path, AUTH_HEADER, MAX_BODY, MESSAGE_PATH, RESPONSE_HEADER,
    SCHEME_HEADER, TLS_STATEMENT_PATH,
};
use crate::auth::{unix_now, RequestAuth};
use crate::identity::IdentityKey;
use crate::keys::RosterEntry;
use crate::message::{self, CoordinatorToSigner, ErrorCode, SignerToCoordinator};

/// Why a call to a signer failed. Signers are named by roster index and URL.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No connection, or the connection broke.
    #[error("signer {index} ({url}) is unreachable: {reason}")]
    Unreachable {
        /// Roster index.
        index: u16,
        /// URL.
        url: String,
        /// Cause.
        reason: String,
    },
    /// The signer did not answer in time.
    #[error("signer {index} ({url}) did not answer within {secs} s")]
    Timeout {
        /// Roster index.
        index: u16,
        /// URL.
        url: String,
        /// The timeout.
        secs: u64,
    },
    /// The signer refused the request.
    #[error("signer {index} refused: {message}")]
    Refused {
        /// Roster index.
        index: u16,
        /// Reason code.
        code: ErrorCode,
        /// Reason.
        message: String,
    },
    /// The answer is malformed or not signed by the expected identity.
    #[error("signer {index} ({url}) sent an invalid answer: {reason}")]
    BadResponse {
        /// Roster index.
        index: u16,
        /// URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The request is larger than a signer accepts; nothing was sent.
    #[error(
        "the request to signer {index} would be {bytes} bytes, more than the {limit} bytes a \
         signer accepts: {hint}"
    )]
    RequestTooLarge {
        /// Roster index.
        index: u16,
        /// Size of the encoded request.
        bytes: usize,
        /// The limit ([`MAX_BODY`]).
        limit: usize,
        /// What to do about it.
        hint: String,
    },
    /// The answer is larger than any legitimate one; reading stopped at the limit.
    #[error("signer {index} ({url}) sent an answer larger than {limit} bytes; refused")]
    ResponseTooLarge {
        /// Roster index.
        index: u16,
        /// URL.
        url: String,
        /// The limit ([`MAX_BODY`]).
        limit: usize,
    },
    /// The server answered with a redirect, which is never followed.
    #[error(
        "signer {index} ({url}) answered with a redirect (HTTP {status}{}); ckm does not follow \
         redirects: give the signer's own address",
        location.as_deref().map(|l| format!(" to {l}")).unwrap_or_default()
    )]
    Redirected {
        /// Roster index.
        index: u16,
        /// URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Where it pointed, if it said.
        location: Option<String>,
    },
    /// The signer's TLS certificate is not the pinned one.
    #[error(
        "signer {index} ({url}) presented a TLS certificate with sha256 {got}, but the wallet \
         pins {expected}; if the signer's operator rotated its certificate, the pin can be \
         updated from the signer's signed statement of the new fingerprint"
    )]
    PinMismatch {
        /// Roster index.
        index: u16,
        /// URL.
        url: String,
        /// The pinned fingerprint.
        expected: String,
        /// The fingerprint presented.
        got: String,
    },
    /// The URL's scheme is not the one the signer speaks.
    #[error("signer {index} ({url}) speaks {speaks}: {hint}")]
    WrongScheme {
        /// Roster index.
        index: u16,
        /// URL.
        url: String,
        /// What the signer speaks (`HTTPS` or `plain HTTP`).
        speaks: String,
        /// What to do.
        hint: String,
    },
    /// The URL is not usable.
    #[error("signer {index}: invalid URL {url}: {reason}")]
    BadUrl {
        /// Roster index.
        index: u16,
        /// URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

impl CallError {
    /// The signer's roster index.
    pub fn index(&self) -> u16 {
        match self {
            CallError::Unreachable { index, .. }
            | CallError::Timeout { index, .. }
            | CallError::Refused { index, .. }
            | CallError::BadResponse { index, .. }
            | CallError::RequestTooLarge { index, .. }
            | CallError::ResponseTooLarge { index, .. }
            | CallError::Redirected { index, .. }
            | CallError::PinMismatch { index, .. }
            | CallError::WrongScheme { index, .. }
            | CallError::BadUrl { index, .. } => *index,
        }
    }
}

/// How long an idle pooled connection is kept: shorter than the shortest header timeout a
/// signer accepts ([`super::quota::MIN_HEADER_TIMEOUT`]), so the client never sends on a
/// connection the signer is about to close.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// The reqwest builder every signer connection uses: no redirects, bounded pool.
fn builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5).min(timeout))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(8)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_nodelay(true)
}

/// The coordinator's client: its identity key and a pooled HTTP client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    pinned: Arc<
        std::sync::Mutex<std::collections::HashMap<String, (reqwest::Client, SeenCertificate)>>,
    >,
    key: Arc<IdentityKey>,
    timeout: Duration,
    observer: Option<Arc<dyn CallObserver>>,
}

/// What a [`Client`] made with [`Client::observed`] reports of each call: a progress display
/// (the console's co-signing page) learns which signer was asked and how it answered. Called
/// on the async task that makes the call: keep it short and never block.
pub trait CallObserver: Send + Sync {
    /// A request to signer `index` is about to leave.
    fn asked(&self, index: u16);
    /// Signer `index` answered (a refusal or a transport failure is an `Err`).
    fn answered(&self, index: u16, answer: Result<&SignerToCoordinator, &CallError>);
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("identity", &self.key.public())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Checks a signer URL: `http://` is accepted only for loopback hosts.
///
/// # Errors
/// A message saying what is wrong.
pub fn check_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    match parsed.scheme() {
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if !loopback {
                return Err(
                    "plain http is allowed only for loopback addresses (127.0.0.1, ::1, localhost)"
                        .into(),
                );
            }
        }
        "https" => {}
        other => return Err(format!("unsupported scheme {other}")),
    }
    Ok(parsed)
}

impl Client {
    /// A client signing with `key`; each call gives up after `timeout`.
    ///
    /// # Errors
    /// Only if the HTTP stack cannot be initialised.
    pub fn new(key: IdentityKey, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = builder(timeout).build()?;
        Ok(Client {
            http,
            pinned: Arc::default(),
            key: Arc::new(key),
            timeout,
            observer: None,
        })
    }

    /// This client (same connections and identity) reporting each call to `observer`.
    #[must_use]
    pub fn observed(&self, observer: Arc<dyn CallObserver>) -> Client {
        Client {
            observer: Some(observer),
            ..self.clone()
        }
    }

    /// The HTTP client for a signer: the shared plain one for loopback `http`, or a pooled
    /// client that trusts only the signer's pinned certificate for `https` (with where the
    /// certificate it was shown is recorded).
    fn http_for(
        &self,
        signer: &RosterEntry,
        scheme: &str,
    ) -> Result<(reqwest::Client, Option<SeenCertificate>), String> {
        if scheme != "https" {
            return Ok((self.http.clone(), None));
        }
        let pin = signer
            .tls_sha256
            .map(|p| p.to_string())
            .ok_or("https signer without a pinned certificate fingerprint")?;
        let mut cache = self.pinned.lock().map_err(|_| "lock poisoned")?;
        if let Some((c, seen)) = cache.get(&pin) {
            return Ok((c.clone(), Some(seen.clone())));
        }
        let (tls, seen) =
            crate::net::tls::pinned_client_config_seen(&pin).map_err(|e| e.to_string())?;
        let client = builder(self.timeout)
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| e.to_string())?;
        cache.insert(pin, (client.clone(), seen.clone()));
        Ok((client, Some(seen)))
    }

    /// The coordinator's identity key.
    pub fn identity(&self) -> &IdentityKey {
        &self.key
    }

    /// Sends one message to `signer` and returns its (verified) answer. A refusal from the
    /// signer is returned as [`CallError::Refused`].
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn call(
        &self,
        signer: &RosterEntry,
        message: &CoordinatorToSigner,
    ) -> Result<SignerToCoordinator, CallError> {
        let body = Self::encode(signer.index, message)?;
        self.call_encoded(signer, body).await
    }

    /// The body of `message` to signer `index`, as [`Client::call_encoded`] sends it: a
    /// caller that must not let the encoding wait (for other work it starts next) encodes
    /// first.
    ///
    /// # Errors
    /// [`CallError::RequestTooLarge`].
    pub fn encode(index: u16, message: &CoordinatorToSigner) -> Result<Vec<u8>, CallError> {
        let body = message::encode(message);
        if body.len() > MAX_BODY {
            return Err(CallError::RequestTooLarge {
                index,
                bytes: body.len(),
                limit: MAX_BODY,
                hint: too_large_hint(message),
            });
        }
        Ok(body)
    }

    /// [`Client::call`] with a body from [`Client::encode`].
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn call_encoded(
        &self,
        signer: &RosterEntry,
        body: Vec<u8>,
    ) -> Result<SignerToCoordinator, CallError> {
        let Some(observer) = &self.observer else {
            return self.exchange(signer, body).await;
        };
        observer.asked(signer.index);
        let answer = self.exchange(signer, body).await;
        observer.answered(signer.index, answer.as_ref());
        answer
    }

    async fn exchange(
        &self,
        signer: &RosterEntry,
        body: Vec<u8>,
    ) -> Result<SignerToCoordinator, CallError> {
        let index = signer.index;
        let url = signer.url.clone();
        let base = check_url(&signer.url).map_err(|reason| CallError::BadUrl {
            index,
            url: url.clone(),
            reason,
        })?;
        let endpoint = base.join(MESSAGE_PATH).map_err(|e| CallError::BadUrl {
            index,
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let (http, seen) =
            self.http_for(signer, base.scheme())
                .map_err(|reason| CallError::BadUrl {
                    index,
                    url: url.clone(),
                    reason,
                })?;
        let auth = RequestAuth::sign(
            &self.key,
            "POST",
            &signed_path(&signer.identity),
            &body,
            unix_now(),
            &mut rand::rngs::OsRng,
        );
        // A timeout is reported as such; any other transport error as `other`.
        let transport = |e: reqwest::Error, other: fn(u16, String, String) -> CallError| {
            if e.is_timeout() {
                CallError::Timeout {
                    index,
                    url: url.clone(),
                    secs: self.timeout.as_secs(),
                }
            } else {
                other(index, url.clone(), error_chain(&e))
            }
        };
        let mut response = match http
            .post(endpoint)
            .header(AUTH_HEADER, auth.to_header_value())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let pin = signer.tls_sha256.map(|p| p.to_string()).unwrap_or_default();
                let got = seen
                    .as_ref()
                    .and_then(|s| s.lock().ok().and_then(|g| g.clone()));
                if let Some(got) = got.filter(|g| !g.eq_ignore_ascii_case(&pin)) {
                    return Err(CallError::PinMismatch {
                        index,
                        url: url.clone(),
                        expected: pin.to_ascii_lowercase(),
                        got,
                    });
                }
                let chain = error_chain(&e);
                if base.scheme() == "https" && chain.contains("InvalidContentType") {
                    return Err(CallError::WrongScheme {
                        index,
                        url: url.clone(),
                        speaks: "plain HTTP, not HTTPS".into(),
                        hint: "use an http:// URL (plain HTTP is served on loopback only), or \
                               serve the signer over TLS"
                            .into(),
                    });
                }
                return Err(transport(e, |index, url, reason| CallError::Unreachable {
                    index,
                    url,
                    reason,
                }));
            }
        };
        if response
            .headers()
            .get(SCHEME_HEADER)
            .is_some_and(|v| v.as_bytes() == b"https")
        {
            return Err(CallError::WrongScheme {
                index,
                url: url.clone(),
                speaks: "HTTPS, not plain HTTP".into(),
                hint: "use https://HOST:PORT#PUBKEY@FINGERPRINT (the signer's operator can \
                       read the fingerprint from the signer's home)"
                    .into(),
            });
        }
        let bad = |reason: String| CallError::BadResponse {
            index,
            url: url.clone(),
            reason,
        };
        if response.status().is_redirection() {
            return Err(CallError::Redirected {
                index,
                url: url.clone(),
                status: response.status().as_u16(),
                location: response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(|l| l.chars().take(200).collect()),
            });
        }
        let signature = response
            .headers()
            .get(RESPONSE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| hex::decode(v).ok());
        let too_large = || CallError::ResponseTooLarge {
            index,
            url: url.clone(),
            limit: MAX_BODY,
        };
        if response
            .content_length()
            .is_some_and(|l| l > MAX_BODY as u64)
        {
            return Err(too_large());
        }
        // Read chunk by chunk so that a body without (or with a false) length cannot grow
        // past the limit.
        let mut bytes = Vec::new();
        loop {
            let chunk = response.chunk().await.map_err(|e| {
                transport(e, |index, url, reason| CallError::BadResponse {
                    index,
                    url,
                    reason,
                })
            })?;
            let Some(chunk) = chunk else { break };
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        let Some(signature) = signature else {
            // Unauthenticated refusals (401) carry no signature: report them as refusals.
            if let Ok(SignerToCoordinator::Error { code, message }) = message::decode(&bytes) {
                return Err(CallError::Refused {
                    index,
                    code,
                    message,
                });
            }
            return Err(bad("answer is not signed".into()));
        };
        signer
            .identity
            .verify(
                "response",
                &response_digest(&auth.signature, &bytes),
                &signature,
            )
            .map_err(|_| bad("answer is not signed by the signer's identity key".into()))?;
        let reply: SignerToCoordinator = message::decode(&bytes).map_err(|e| bad(e.to_string()))?;
        match reply {
            SignerToCoordinator::Error { code, message } => Err(CallError::Refused {
                index,
                code,
                message,
            }),
            other => Ok(other),
        }
    }
}

/// Fetches a signer's [`TlsStatement`] from `url` (`https://HOST:PORT`), accepting whatever
/// certificate it presents, and returns the statement with the fingerprint of that
/// certificate. The caller must check the statement against the signer's identity key and
/// the fingerprint against the statement before trusting either.
///
/// # Errors
/// A message saying what failed.
pub async fn fetch_tls_statement(
    url: &str,
    timeout: Duration,
) -> Result<(TlsStatement, String), String> {
    let base = check_url(url)?;
    if base.scheme() != "https" {
        return Err(format!("{url} is not an https:// URL"));
    }
    let endpoint = base.join(TLS_STATEMENT_PATH).map_err(|e| e.to_string())?;
    let (tls, seen) = crate::net::tls::recording_client_config().map_err(|e| e.to_string())?;
    let http = builder(timeout)
        .use_preconfigured_tls(tls)
        .build()
        .map_err(|e| e.to_string())?;
    let mut response = http
        .get(endpoint)
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {}", error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered HTTP {}", response.status()));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
        if bytes.len() + chunk.len() > 64 * 1024 {
            return Err(format!("{url} sent an oversized statement"));
        }
        bytes.extend_from_slice(&chunk);
    }
    let statement: TlsStatement =
        serde_json::from_slice(&bytes).map_err(|e| format!("malformed statement: {e}"))?;
    let presented = seen
        .lock()
        .ok()
        .and_then(|s| s.clone())
        .ok_or_else(|| format!("{url} presented no certificate"))?;
    Ok((statement, presented))
}

/// What to do when a request is too large, in terms of the message.
fn too_large_hint(message: &CoordinatorToSigner) -> String {
    match message {
        CoordinatorToSigner::SignCommit { .. } | CoordinatorToSigner::SignShare { .. } => format!(
            "split the spend into transactions of fewer inputs (a signer accepts at least {} \
             inputs at any threshold up to {}; see ckm::net::MAX_BODY)",
            super::MAX_INPUTS,
            super::MAX_THRESHOLD
        ),
        _ => "the group is larger than this protocol carries (see ckm::net::MAX_BODY)".into(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
