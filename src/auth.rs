//! Authentication of coordinator→signer HTTP requests, independent of any HTTP library.
//!
//! Owns the signed [`RequestAuth`] token (its canonical message and compact header form)
//! and the signer-side [`ReplayGuard`] that checks allow-list, signature, freshness and replay.

use std::collections::{BTreeSet, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::hashes::{sha256, Hash, HashEngine};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::identity::{IdentityKey, IdentityPublic};

/// Signing domain of request signatures (tag `ckm/request`).
pub const REQUEST_DOMAIN: &str = "request";
/// Version prefix of the compact header form. `v2` carries the body's SHA-256, so that a
/// signer can check the whole signature before it reads the body.
pub const HEADER_VERSION: &str = "v2";
/// Longest header value [`RequestAuth::from_header_value`] will parse (a `v2` header is 305
/// characters with a 10-digit timestamp, at most 315).
pub const MAX_HEADER_LEN: usize = 384;
/// Default accepted clock difference between coordinator and signer, in seconds.
pub const DEFAULT_WINDOW_SECS: u64 = 120;
/// Default maximum number of remembered nonces.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// Prefix of the canonical request message, versioning its layout.
const CANONICAL_PREFIX: &[u8] = b"ckm/request/v1";

/// Errors of parsing and checking request authentication.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The header value is not in the `v2.<pubkey>.<ts>.<nonce>.<body sha256>.<sig>` form.
    #[error("malformed request authentication header: {reason}")]
    MalformedHeader {
        /// What was wrong with it.
        reason: String,
    },
    /// The request is signed by a key that is not an allowed coordinator.
    #[error("request signed by unknown coordinator {coordinator}")]
    UnknownCoordinator {
        /// The claimed coordinator key.
        coordinator: IdentityPublic,
    },
    /// The signature does not match the request (method, path, body hash, time or nonce).
    #[error("bad request signature from coordinator {coordinator}")]
    BadSignature {
        /// The claimed coordinator key.
        coordinator: IdentityPublic,
    },
    /// The body is not the one whose hash the (signed) header names.
    #[error("request body does not match the signed body hash (coordinator {coordinator})")]
    BodyMismatch {
        /// The claimed coordinator key.
        coordinator: IdentityPublic,
    },
    /// The request timestamp is too far from the signer's clock.
    #[error(
        "request expired or clock skew too large: timestamp {timestamp_unix}, \
         now {now_unix}, allowed window {window_secs}s"
    )]
    Expired {
        /// Timestamp in the request.
        timestamp_unix: u64,
        /// The signer's current time.
        now_unix: u64,
        /// Allowed difference in seconds.
        window_secs: u64,
    },
    /// The nonce was already used by this coordinator within the window.
    #[error("replayed request from coordinator {coordinator}")]
    Replayed {
        /// The coordinator whose nonce was reused.
        coordinator: IdentityPublic,
    },
    /// Too many recent requests are remembered; the request is refused to bound memory.
    #[error("replay cache is full ({capacity} recent requests); try again later")]
    ReplayCacheFull {
        /// The configured capacity.
        capacity: usize,
    },
}

/// Signed authentication attached to one coordinator→signer request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestAuth {
    /// Identity of the coordinator that signed the request.
    pub coordinator: IdentityPublic,
    /// Coordinator's clock when signing, in seconds since the Unix epoch.
    pub timestamp_unix: u64,
    /// Random per-request nonce (hex in serde).
    #[serde(with = "hex_array")]
    pub nonce: [u8; 16],
    /// SHA-256 of the request body (hex in serde): covered by the signature and sent in the
    /// header, so the signature can be checked before the body is read.
    #[serde(with = "hex_array")]
    pub body_sha256: [u8; 32],
    /// BIP-340 signature over the canonical request digest (hex in serde).
    #[serde(with = "hex_array")]
    pub signature: [u8; 64],
}

/// Digest of the canonical message that a request signature covers.
///
/// Binds the coordinator key, the upper-cased method, the exact path (with query),
/// sha256 of the body, the timestamp and the nonce; variable-length fields are
/// length-prefixed so no two distinct requests share an encoding.
fn request_digest(
    coordinator: &IdentityPublic,
    method: &str,
    path: &str,
    body_sha256: &[u8; 32],
    timestamp_unix: u64,
    nonce: &[u8; 16],
) -> [u8; 32] {
    let method = method.to_ascii_uppercase();
    let mut engine = sha256::Hash::engine();
    engine.input(CANONICAL_PREFIX);
    engine.input(&coordinator.to_bytes());
    engine.input(&(method.len() as u64).to_be_bytes());
    engine.input(method.as_bytes());
    engine.input(&(path.len() as u64).to_be_bytes());
    engine.input(path.as_bytes());
    engine.input(body_sha256);
    engine.input(&timestamp_unix.to_be_bytes());
    engine.input(nonce);
    sha256::Hash::from_engine(engine).to_byte_array()
}

impl RequestAuth {
    /// Signs a request with the coordinator's identity key and a fresh random nonce.
    ///
    /// `method` is compared case-insensitively; `path` must be exactly what the signer
    /// will see (path plus query string, if any).
    pub fn sign(
        key: &IdentityKey,
        method: &str,
        path: &str,
        body: &[u8],
        now_unix: u64,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> RequestAuth {
        let coordinator = key.public();
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        let body_sha256 = body_hash(body);
        let digest = request_digest(&coordinator, method, path, &body_sha256, now_unix, &nonce);
        RequestAuth {
            coordinator,
            timestamp_unix: now_unix,
            nonce,
            body_sha256,
            signature: key.sign(REQUEST_DOMAIN, &digest),
        }
    }

    /// Checks the signature over the header's own fields (method, path, the body hash it
    /// names, time, nonce), without the body: what a server can check before reading it.
    /// No allow-list, time window or replay check.
    ///
    /// # Errors
    /// [`AuthError::BadSignature`].
    pub fn verify_header(&self, method: &str, path: &str) -> Result<(), AuthError> {
        let digest = request_digest(
            &self.coordinator,
            method,
            path,
            &self.body_sha256,
            self.timestamp_unix,
            &self.nonce,
        );
        self.coordinator
            .verify(REQUEST_DOMAIN, &digest, &self.signature)
            .map_err(|_| AuthError::BadSignature {
                coordinator: self.coordinator,
            })
    }

    /// Checks that `body` is the one the header names.
    ///
    /// # Errors
    /// [`AuthError::BodyMismatch`].
    pub fn verify_body(&self, body: &[u8]) -> Result<(), AuthError> {
        if body_hash(body) == self.body_sha256 {
            Ok(())
        } else {
            Err(AuthError::BodyMismatch {
                coordinator: self.coordinator,
            })
        }
    }

    /// Checks the signature against the given request, body included (no allow-list, time
    /// or replay).
    ///
    /// # Errors
    /// [`AuthError::BadSignature`] or [`AuthError::BodyMismatch`].
    pub fn verify_signature(&self, method: &str, path: &str, body: &[u8]) -> Result<(), AuthError> {
        self.verify_header(method, path)?;
        self.verify_body(body)
    }

    /// Compact single-line form:
    /// `v2.<pubkey hex>.<timestamp>.<nonce hex>.<body sha256 hex>.<signature hex>`.
    pub fn to_header_value(&self) -> String {
        format!(
            "{HEADER_VERSION}.{}.{}.{}.{}.{}",
            self.coordinator,
            self.timestamp_unix,
            hex::encode(self.nonce),
            hex::encode(self.body_sha256),
            hex::encode(self.signature)
        )
    }

    /// Parses the form produced by [`RequestAuth::to_header_value`].
    pub fn from_header_value(value: &str) -> Result<Self, AuthError> {
        let malformed = |reason: String| AuthError::MalformedHeader { reason };
        if value.len() > MAX_HEADER_LEN {
            return Err(malformed(format!(
                "{} bytes, longer than {MAX_HEADER_LEN}",
                value.len()
            )));
        }
        let mut parts = value.trim().split('.');
        let mut next = |what: &str| {
            parts
                .next()
                .ok_or_else(|| malformed(format!("missing {what}")))
        };
        let version = next("version")?;
        if version != HEADER_VERSION {
            return Err(malformed(format!(
                "unsupported version {version:?}, expected {HEADER_VERSION:?}"
            )));
        }
        let coordinator: IdentityPublic = next("coordinator key")?
            .parse()
            .map_err(|e| malformed(format!("coordinator key: {e}")))?;
        let ts_text = next("timestamp")?;
        if ts_text.is_empty() || ts_text.len() > 20 || !ts_text.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(malformed("timestamp is not a decimal number".to_owned()));
        }
        let timestamp_unix: u64 = ts_text
            .parse()
            .map_err(|e| malformed(format!("timestamp: {e}")))?;
        let nonce = decode_hex_field::<16>(next("nonce")?, "nonce")?;
        let body_sha256 = decode_hex_field::<32>(next("body hash")?, "body hash")?;
        let signature = decode_hex_field::<64>(next("signature")?, "signature")?;
        if parts.next().is_some() {
            return Err(malformed("trailing fields".to_owned()));
        }
        Ok(RequestAuth {
            coordinator,
            timestamp_unix,
            nonce,
            body_sha256,
            signature,
        })
    }
}

fn body_hash(body: &[u8]) -> [u8; 32] {
    sha256::Hash::hash(body).to_byte_array()
}

fn decode_hex_field<const N: usize>(text: &str, what: &str) -> Result<[u8; N], AuthError> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|e| AuthError::MalformedHeader {
        reason: format!("{what}: expected {} hex characters: {e}", 2 * N),
    })?;
    Ok(out)
}

/// Current time in seconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

type SeenKey = (IdentityPublic, [u8; 16]);

/// Signer-side verifier of [`RequestAuth`] with bounded replay protection.
///
/// Remembers each accepted (coordinator, nonce) pair until its timestamp leaves the
/// window; expired entries are evicted on every check, and once `capacity` live entries
/// are held new requests are refused rather than growing memory. State is in memory only:
/// a restarted signer forgets nonces seen in the last window.
#[derive(Debug)]
pub struct ReplayGuard {
    window_secs: u64,
    capacity: usize,
    /// Seen pairs and the time after which they can be forgotten.
    seen: HashMap<SeenKey, u64>,
    /// The same entries ordered by expiry, for cheap eviction.
    by_expiry: BTreeSet<(u64, IdentityPublic, [u8; 16])>,
}

impl Default for ReplayGuard {
    /// A guard with a 120 s window and room for 100 000 recent requests.
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW_SECS, DEFAULT_REPLAY_CAPACITY)
    }
}

impl ReplayGuard {
    /// Creates a guard accepting timestamps within `window_secs` of the signer's clock and
    /// remembering at most `capacity` recent requests.
    pub fn new(window_secs: u64, capacity: usize) -> Self {
        Self {
            window_secs,
            capacity,
            seen: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    /// The accepted clock difference in seconds.
    pub fn window_secs(&self) -> u64 {
        self.window_secs
    }

    /// Number of remembered (coordinator, nonce) pairs, including not yet evicted ones.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no request is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn evict_expired(&mut self, now_unix: u64) {
        while let Some(&(expiry, coordinator, nonce)) = self.by_expiry.first() {
            if expiry >= now_unix {
                break;
            }
            self.by_expiry.pop_first();
            self.seen.remove(&(coordinator, nonce));
        }
    }

    /// Accepts a request only if its coordinator is `allowed`, the signature matches
    /// `method`, `path` and `body`, the timestamp is within the window of `now_unix`, and
    /// the nonce was not seen before. The nonce is recorded only after all other checks.
    ///
    /// # Errors
    /// The first check that fails.
    pub fn check(
        &mut self,
        auth: &RequestAuth,
        allowed: &impl Fn(&IdentityPublic) -> bool,
        method: &str,
        path: &str,
        body: &[u8],
        now_unix: u64,
    ) -> Result<(), AuthError> {
        if !allowed(&auth.coordinator) {
            return Err(AuthError::UnknownCoordinator {
                coordinator: auth.coordinator,
            });
        }
        auth.verify_body(body)?;
        self.check_header(auth, allowed, method, path, now_unix)
    }

    /// [`ReplayGuard::check`] without the body: allow-list, time window, the signature over
    /// the header's fields (which include the body's hash) and the nonce, in that order
    /// (cheapest first). A server calls this before it reads the body, then
    /// [`RequestAuth::verify_body`] on the body. The nonce is recorded when this succeeds,
    /// so a valid header sent with another body burns its nonce.
    ///
    /// # Errors
    /// The first check that fails.
    pub fn check_header(
        &mut self,
        auth: &RequestAuth,
        allowed: &impl Fn(&IdentityPublic) -> bool,
        method: &str,
        path: &str,
        now_unix: u64,
    ) -> Result<(), AuthError> {
        if !allowed(&auth.coordinator) {
            return Err(AuthError::UnknownCoordinator {
                coordinator: auth.coordinator,
            });
        }
        if now_unix.abs_diff(auth.timestamp_unix) > self.window_secs {
            return Err(AuthError::Expired {
                timestamp_unix: auth.timestamp_unix,
                now_unix,
                window_secs: self.window_secs,
            });
        }
        auth.verify_header(method, path)?;
        self.evict_expired(now_unix);
        let key = (auth.coordinator, auth.nonce);
        if self.seen.contains_key(&key) {
            return Err(AuthError::Replayed {
                coordinator: auth.coordinator,
            });
        }
        if self.seen.len() >= self.capacity {
            tracing::warn!(
                capacity = self.capacity,
                "replay cache full, refusing request"
            );
            return Err(AuthError::ReplayCacheFull {
                capacity: self.capacity,
            });
        }
        // Replays are possible while now <= timestamp + window; keep the entry until then.
        let expiry = auth.timestamp_unix.saturating_add(self.window_secs);
        self.seen.insert(key, expiry);
        self.by_expiry
            .insert((expiry, auth.coordinator, auth.nonce));
        Ok(())
    }
}

/// Serde helper: fixed-size byte arrays as lowercase hex strings.
mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        let s = String::deserialize(deserializer)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(&s, &mut out).map_err(|e| {
            serde::de::Error::custom(format!("expected {} hex characters: {e}", 2 * N))
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const NOW: u64 = 1_700_000_000;

    struct Setup {
        rng: StdRng,
        coordinator: IdentityKey,
        stranger: IdentityKey,
    }

    fn setup() -> Setup {
        let mut rng = StdRng::seed_from_u64(0x4155_5448);
        let coordinator = IdentityKey::generate(&mut rng);
        let stranger = IdentityKey::generate(&mut rng);
        Setup {
            rng,
            coordinator,
            stranger,
        }
    }

    fn allow(key: IdentityPublic) -> impl Fn(&IdentityPublic) -> bool {
        move |k| *k == key
    }

    #[test]
    fn header_and_serde_round_trip() {
        let mut s = setup();
        let auth = RequestAuth::sign(&s.coordinator, "POST", "/v1/sign", b"{}", NOW, &mut s.rng);
        let header = auth.to_header_value();
        assert!(header.starts_with("v2."));
        assert!(header.len() <= MAX_HEADER_LEN);
        assert!(!header.contains(char::is_whitespace));
        assert_eq!(RequestAuth::from_header_value(&header).unwrap(), auth);

        let json = serde_json::to_value(&auth).unwrap();
        assert_eq!(json["nonce"].as_str().unwrap(), hex::encode(auth.nonce));
        assert_eq!(json["signature"].as_str().unwrap().len(), 128);
        assert_eq!(
            json["body_sha256"].as_str().unwrap(),
            sha256::Hash::hash(b"{}").to_string()
        );
        assert_eq!(
            json["coordinator"].as_str().unwrap(),
            auth.coordinator.to_string()
        );
        assert_eq!(serde_json::from_value::<RequestAuth>(json).unwrap(), auth);
    }

    #[test]
    fn malformed_headers_are_rejected() {
        let mut s = setup();
        let auth = RequestAuth::sign(&s.coordinator, "GET", "/", b"", NOW, &mut s.rng);
        let good = auth.to_header_value();
        let parts: Vec<&str> = good.split('.').collect();
        let variants = [
            String::new(),
            "v2".to_owned(),
            good.replacen("v2.", "v1.", 1),
            good.replacen("v2.", "v3.", 1),
            format!("{good}.extra"),
            parts[..5].join("."),
            // The v1 layout (no body hash) is not accepted any more.
            [parts[0], parts[1], parts[2], parts[3], parts[5]].join("."),
            [parts[0], parts[1], "-5", parts[3], parts[4], parts[5]].join("."),
            [parts[0], parts[1], "+5", parts[3], parts[4], parts[5]].join("."),
            [
                parts[0],
                parts[1],
                "99999999999999999999999",
                parts[3],
                parts[4],
                parts[5],
            ]
            .join("."),
            [
                parts[0],
                &parts[1][..62],
                parts[2],
                parts[3],
                parts[4],
                parts[5],
            ]
            .join("."),
            [
                parts[0],
                parts[1],
                parts[2],
                &parts[3][..30],
                parts[4],
                parts[5],
            ]
            .join("."),
            [
                parts[0],
                parts[1],
                parts[2],
                parts[3],
                &parts[4][..62],
                parts[5],
            ]
            .join("."),
            [
                parts[0],
                parts[1],
                parts[2],
                parts[3],
                parts[4],
                &"zz".repeat(64),
            ]
            .join("."),
            "x".repeat(10_000),
        ];
        for v in &variants {
            assert!(
                matches!(
                    RequestAuth::from_header_value(v),
                    Err(AuthError::MalformedHeader { .. })
                ),
                "{v:?}"
            );
        }
    }

    #[test]
    fn valid_request_is_accepted_once() {
        let mut s = setup();
        let mut guard = ReplayGuard::default();
        let allowed = allow(s.coordinator.public());
        let auth = RequestAuth::sign(
            &s.coordinator,
            "post",
            "/v1/round1",
            b"body",
            NOW,
            &mut s.rng,
        );
        guard
            .check(&auth, &allowed, "POST", "/v1/round1", b"body", NOW + 5)
            .unwrap();
        assert_eq!(guard.len(), 1);
        assert!(matches!(
            guard.check(&auth, &allowed, "POST", "/v1/round1", b"body", NOW + 6),
            Err(AuthError::Replayed { .. })
        ));
        // The same replay after the window is refused as expired, even once evicted.
        assert!(matches!(
            guard.check(&auth, &allowed, "POST", "/v1/round1", b"body", NOW + 121),
            Err(AuthError::Expired { .. })
        ));
        let fresh = RequestAuth::sign(
            &s.coordinator,
            "POST",
            "/v1/round1",
            b"body",
            NOW + 200,
            &mut s.rng,
        );
        guard
            .check(&fresh, &allowed, "POST", "/v1/round1", b"body", NOW + 200)
            .unwrap();
        assert_eq!(guard.len(), 1, "old entry evicted");
    }

    #[test]
    fn unknown_coordinator_is_rejected() {
        let mut s = setup();
        let mut guard = ReplayGuard::default();
        let auth = RequestAuth::sign(&s.stranger, "POST", "/p", b"", NOW, &mut s.rng);
        assert!(matches!(
            guard.check(
                &auth,
                &allow(s.coordinator.public()),
                "POST",
                "/p",
                b"",
                NOW
            ),
            Err(AuthError::UnknownCoordinator { .. })
        ));
        assert!(guard.is_empty());
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let mut s = setup();
        let mut guard = ReplayGuard::default();
        let allowed = allow(s.coordinator.public());
        let auth = RequestAuth::sign(&s.coordinator, "POST", "/p?x=1", b"body", NOW, &mut s.rng);
        let bad = |guard: &mut ReplayGuard, a: &RequestAuth, m: &str, p: &str, b: &[u8]| {
            matches!(
                guard.check(a, &allowed, m, p, b, NOW),
                Err(AuthError::BadSignature { .. } | AuthError::BodyMismatch { .. })
            )
        };
        assert!(bad(&mut guard, &auth, "PUT", "/p?x=1", b"body"));
        assert!(bad(&mut guard, &auth, "POST", "/p?x=2", b"body"));
        assert!(bad(&mut guard, &auth, "POST", "/p?x=1", b"bodY"));
        let mut other_ts = auth.clone();
        other_ts.timestamp_unix += 1;
        assert!(bad(&mut guard, &other_ts, "POST", "/p?x=1", b"body"));
        let mut other_nonce = auth.clone();
        other_nonce.nonce[0] ^= 1;
        assert!(bad(&mut guard, &other_nonce, "POST", "/p?x=1", b"body"));
        let mut other_sig = auth.clone();
        other_sig.signature[5] ^= 1;
        assert!(bad(&mut guard, &other_sig, "POST", "/p?x=1", b"body"));
        // A stranger's signature under the coordinator's name does not verify either.
        let mut forged = RequestAuth::sign(&s.stranger, "POST", "/p?x=1", b"body", NOW, &mut s.rng);
        forged.coordinator = s.coordinator.public();
        assert!(bad(&mut guard, &forged, "POST", "/p?x=1", b"body"));
        assert!(guard.is_empty(), "nothing recorded for bad signatures");
    }

    #[test]
    fn forged_request_does_not_burn_the_nonce() {
        let mut s = setup();
        let mut guard = ReplayGuard::default();
        let allowed = allow(s.coordinator.public());
        let auth = RequestAuth::sign(&s.coordinator, "POST", "/p", b"", NOW, &mut s.rng);
        let mut forged = auth.clone();
        forged.signature = [0u8; 64];
        assert!(guard
            .check(&forged, &allowed, "POST", "/p", b"", NOW)
            .is_err());
        guard
            .check(&auth, &allowed, "POST", "/p", b"", NOW)
            .unwrap();
    }

    #[test]
    fn timestamps_outside_the_window_are_rejected() {
        let mut s = setup();
        let mut guard = ReplayGuard::new(120, 10);
        let allowed = allow(s.coordinator.public());
        let old = RequestAuth::sign(&s.coordinator, "GET", "/", b"", NOW - 121, &mut s.rng);
        assert!(matches!(
            guard.check(&old, &allowed, "GET", "/", b"", NOW),
            Err(AuthError::Expired { timestamp_unix, now_unix: NOW, window_secs: 120 })
                if timestamp_unix == NOW - 121
        ));
        let future = RequestAuth::sign(&s.coordinator, "GET", "/", b"", NOW + 121, &mut s.rng);
        assert!(matches!(
            guard.check(&future, &allowed, "GET", "/", b"", NOW),
            Err(AuthError::Expired { .. })
        ));
        let edge = RequestAuth::sign(&s.coordinator, "GET", "/", b"", NOW + 120, &mut s.rng);
        guard.check(&edge, &allowed, "GET", "/", b"", NOW).unwrap();
        let huge = RequestAuth::sign(&s.coordinator, "GET", "/", b"", u64::MAX, &mut s.rng);
        assert!(matches!(
            guard.check(&huge, &allowed, "GET", "/", b"", NOW),
            Err(AuthError::Expired { .. })
        ));
    }

    #[test]
    fn capacity_bounds_memory_and_recovers_after_expiry() {
        let mut s = setup();
        let mut guard = ReplayGuard::new(60, 3);
        let allowed = allow(s.coordinator.public());
        for i in 0..3 {
            let a = RequestAuth::sign(&s.coordinator, "GET", "/", b"", NOW + i, &mut s.rng);
            guard.check(&a, &allowed, "GET", "/", b"", NOW + i).unwrap();
        }
        let a = RequestAuth::sign(&s.coordinator, "GET", "/", b"", NOW + 3, &mut s.rng);
        assert!(matches!(
            guard.check(&a, &allowed, "GET", "/", b"", NOW + 3),
            Err(AuthError::ReplayCacheFull { capacity: 3 })
        ));
        assert_eq!(guard.len(), 3);
        // Once the first entry's timestamp leaves the window, there is room again.
        let later = RequestAuth::sign(&s.coordinator, "GET", "/", b"", NOW + 61, &mut s.rng);
        guard
            .check(&later, &allowed, "GET", "/", b"", NOW + 61)
            .unwrap();
        assert_eq!(guard.len(), 3);
    }

    #[test]
    fn nonces_are_per_coordinator() {
        let mut s = setup();
        let mut guard = ReplayGuard::default();
        let both = {
            let a = s.coordinator.public();
            let b = s.stranger.public();
            move |k: &IdentityPublic| *k == a || *k == b
        };
        let first = RequestAuth::sign(&s.coordinator, "GET", "/", b"", NOW, &mut s.rng);
        guard.check(&first, &both, "GET", "/", b"", NOW).unwrap();
        // Another coordinator may (by chance) use the same nonce.
        let empty = body_hash(b"");
        let digest = request_digest(&s.stranger.public(), "GET", "/", &empty, NOW, &first.nonce);
        let second = RequestAuth {
            coordinator: s.stranger.public(),
            timestamp_unix: NOW,
            nonce: first.nonce,
            body_sha256: empty,
            signature: s.stranger.sign(REQUEST_DOMAIN, &digest),
        };
        guard.check(&second, &both, "GET", "/", b"", NOW).unwrap();
        assert_eq!(guard.len(), 2);
    }

    #[test]
    fn header_is_checked_without_the_body() {
        let mut s = setup();
        let mut guard = ReplayGuard::default();
        let allowed = allow(s.coordinator.public());
        let auth = RequestAuth::sign(&s.coordinator, "POST", "/p", b"body", NOW, &mut s.rng);
        // The header alone verifies (it names the body's hash) ...
        guard
            .check_header(&auth, &allowed, "POST", "/p", NOW)
            .unwrap();
        auth.verify_body(b"body").unwrap();
        // ... and another body is caught afterwards.
        assert!(matches!(
            auth.verify_body(b"bodY"),
            Err(AuthError::BodyMismatch { .. })
        ));
        // A header whose body hash was swapped no longer verifies.
        let mut swapped = RequestAuth::sign(&s.coordinator, "POST", "/p", b"x", NOW, &mut s.rng);
        swapped.body_sha256 = body_hash(b"y");
        assert!(matches!(
            guard.check_header(&swapped, &allowed, "POST", "/p", NOW),
            Err(AuthError::BadSignature { .. })
        ));
        // A forged header under an allowed key (the key is public) fails before any body.
        let mut forged = RequestAuth::sign(&s.stranger, "POST", "/p", b"", NOW, &mut s.rng);
        forged.coordinator = s.coordinator.public();
        assert!(matches!(
            guard.check_header(&forged, &allowed, "POST", "/p", NOW),
            Err(AuthError::BadSignature { .. })
        ));
        assert_eq!(guard.len(), 1);
    }

    #[test]
    fn mismatched_body_does_not_burn_the_nonce_in_full_check() {
        let mut s = setup();
        let mut guard = ReplayGuard::default();
        let allowed = allow(s.coordinator.public());
        let auth = RequestAuth::sign(&s.coordinator, "POST", "/p", b"a", NOW, &mut s.rng);
        assert!(matches!(
            guard.check(&auth, &allowed, "POST", "/p", b"b", NOW),
            Err(AuthError::BodyMismatch { .. })
        ));
        assert!(guard.is_empty());
        guard
            .check(&auth, &allowed, "POST", "/p", b"a", NOW)
            .unwrap();
    }
}
