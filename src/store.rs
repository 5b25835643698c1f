//! Encryption at rest for a signer's shares, keyed by a passphrase.
//!
//! Owns the Argon2id key derivation and its JSON header (with a passphrase check),
//! the versioned XChaCha20-Poly1305 file format, and atomic, size-limited file I/O.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Version of the [`StoreHeader`] format written by this build.
pub const STORE_HEADER_VERSION: u32 = 1;
/// Name of the only supported key derivation function.
pub const KDF_ARGON2ID: &str = "argon2id";
/// Magic prefix of every sealed store blob: `CKMS` followed by the format version 1.
pub const SEALED_MAGIC: &[u8; 5] = b"CKMS\x01";
/// Length of the random XChaCha20 nonce in a sealed blob.
pub const SEALED_NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag at the end of a sealed blob.
pub const SEALED_TAG_LEN: usize = 16;
/// Smallest possible sealed blob (empty plaintext): magic, nonce and tag.
pub const SEALED_OVERHEAD: usize = SEALED_MAGIC.len() + SEALED_NONCE_LEN + SEALED_TAG_LEN;
/// Largest accepted Argon2 memory cost: 4 GiB, in KiB.
pub const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
/// Largest accepted Argon2 time cost (iterations).
pub const MAX_T_COST: u32 = 64;
/// Largest accepted Argon2 parallelism.
pub const MAX_P_COST: u32 = 64;
/// Length of the random Argon2 salt.
pub const SALT_LEN: usize = 16;

/// Associated data of the passphrase check blob in the header.
const CHECK_AAD: &[u8] = b"ckm/store/passphrase-check";
/// Known plaintext of the passphrase check blob.
const CHECK_PLAINTEXT: &[u8] = b"ckm share store passphrase check v1";

/// Errors of creating or unlocking a store key and of opening sealed blobs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The passphrase does not match the one the store was created with.
    #[error("wrong passphrase for the share store")]
    WrongPassphrase,
    /// A sealed blob or the header's check value is truncated, malformed or tampered with.
    #[error("share store data is corrupted: {reason}")]
    Corrupted {
        /// What was wrong with the data.
        reason: String,
    },
    /// The header or blob was written by an unknown (probably newer) format version.
    #[error("unsupported share store format version {found} (this build supports {supported})")]
    UnsupportedVersion {
        /// Version found in the data.
        found: u32,
        /// Version this build supports.
        supported: u32,
    },
    /// The header names a key derivation function other than argon2id.
    #[error("unsupported key derivation function {kdf:?} (only \"argon2id\" is supported)")]
    UnsupportedKdf {
        /// KDF name found in the header.
        kdf: String,
    },
    /// The Argon2 parameters are out of the accepted range.
    #[error(
        "refusing argon2id parameters m_cost={m_cost_kib} KiB, t_cost={t_cost}, \
         p_cost={p_cost}: {reason}"
    )]
    UnsafeKdfParams {
        /// Requested memory cost in KiB.
        m_cost_kib: u32,
        /// Requested number of iterations.
        t_cost: u32,
        /// Requested parallelism.
        p_cost: u32,
        /// Which limit was violated.
        reason: String,
    },
    /// Argon2 itself failed.
    #[error("argon2id key derivation failed: {reason}")]
    Kdf {
        /// Error reported by the argon2 crate.
        reason: String,
    },
}

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub m_cost_kib: u32,
    /// Number of iterations.
    pub t_cost: u32,
    /// Degree of parallelism.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// Argon2id with 64 MiB of memory, 3 iterations and 1 lane.
    fn default() -> Self {
        Self {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    /// Cheap parameters (1 MiB, 1 iteration) for tests only: never use for real stores.
    pub fn fast_for_tests() -> Self {
        Self {
            m_cost_kib: 1024,
            t_cost: 1,
            p_cost: 1,
        }
    }

    fn to_argon2(self) -> Result<Argon2<'static>, StoreError> {
        let refuse = |reason: String| StoreError::UnsafeKdfParams {
            m_cost_kib: self.m_cost_kib,
            t_cost: self.t_cost,
            p_cost: self.p_cost,
            reason,
        };
        if self.m_cost_kib > MAX_M_COST_KIB {
            return Err(refuse(format!(
                "memory cost above the {MAX_M_COST_KIB} KiB (4 GiB) limit"
            )));
        }
        if self.t_cost == 0 || self.t_cost > MAX_T_COST {
            return Err(refuse(format!("time cost must be in 1..={MAX_T_COST}")));
        }
        if self.p_cost == 0 || self.p_cost > MAX_P_COST {
            return Err(refuse(format!("parallelism must be in 1..={MAX_P_COST}")));
        }
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| refuse(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Public, non-secret description of how a store key is derived from its passphrase.
///
/// Serialized as JSON next to the sealed shares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreHeader {
    /// Header format version ([`STORE_HEADER_VERSION`]).
    pub version: u32,
    /// Key derivation function name, always [`KDF_ARGON2ID`].
    pub kdf: String,
    /// Argon2 memory cost in KiB.
    pub m_cost_kib: u32,
    /// Argon2 iterations.
    pub t_cost: u32,
    /// Argon2 parallelism.
    pub p_cost: u32,
    /// Random Argon2 salt, hex in JSON.
    #[serde(with = "hex_array")]
    pub salt: [u8; SALT_LEN],
    /// A known string sealed with the derived key, hex in JSON; detects a wrong passphrase.
    #[serde(with = "hex_vec")]
    pub check: Vec<u8>,
}

impl StoreHeader {
    /// The KDF parameters recorded in this header.
    pub fn kdf_params(&self) -> KdfParams {
        KdfParams {
            m_cost_kib: self.m_cost_kib,
            t_cost: self.t_cost,
            p_cost: self.p_cost,
        }
    }
}

/// A 32-byte symmetric key protecting a signer's share files.
///
/// Zeroized on drop and never printed by `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct StoreKey {
    key: [u8; 32],
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey(<redacted>)")
    }
}

/// A MAC key derived from a [`StoreKey`] for one purpose (see [`StoreKey::mac_key`]): only
/// the passphrase holder can compute or forge its tags. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MacKey {
    key: [u8; 32],
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}

impl MacKey {
    /// HMAC-SHA256 over the concatenation of `parts`, each prefixed by its length.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        use bitcoin::hashes::{hmac, sha256, Hash, HashEngine};
        let mut engine = hmac::HmacEngine::<sha256::Hash>::new(&self.key);
        for p in parts {
            engine.input(&(p.len() as u64).to_be_bytes());
            engine.input(p);
        }
        hmac::Hmac::<sha256::Hash>::from_engine(engine).to_byte_array()
    }
}

impl StoreKey {
    fn derive(passphrase: &[u8], params: KdfParams, salt: &[u8]) -> Result<Self, StoreError> {
        let argon2 = params.to_argon2()?;
        let mut key = Self { key: [0u8; 32] };
        argon2
            .hash_password_into(passphrase, salt, &mut key.key)
            .map_err(|e| StoreError::Kdf {
                reason: e.to_string(),
            })?;
        Ok(key)
    }

    /// Derives a new store key from `passphrase` with a fresh random salt and returns it
    /// with the header needed to unlock it again.
    pub fn create(
        passphrase: &[u8],
        params: KdfParams,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(StoreKey, StoreHeader), StoreError> {
        let mut salt = [0u8; SALT_LEN];
        rng.fill_bytes(&mut salt);
        let key = Self::derive(passphrase, params, &salt)?;
        let check = key.seal(CHECK_AAD, CHECK_PLAINTEXT, rng);
        let header = StoreHeader {
            version: STORE_HEADER_VERSION,
            kdf: KDF_ARGON2ID.to_owned(),
            m_cost_kib: params.m_cost_kib,
            t_cost: params.t_cost,
            p_cost: params.p_cost,
            salt,
            check,
        };
        Ok((key, header))
    }

    /// Re-derives the store key from `passphrase` with the parameters in `header`.
    ///
    /// Fails with [`StoreError::WrongPassphrase`] if the header's check value does not
    /// open, and refuses out-of-range parameters before allocating any memory.
    pub fn unlock(passphrase: &[u8], header: &StoreHeader) -> Result<StoreKey, StoreError> {
        if header.version != STORE_HEADER_VERSION {
            return Err(StoreError::UnsupportedVersion {
                found: header.version,
                supported: STORE_HEADER_VERSION,
            });
        }
        if header.kdf != KDF_ARGON2ID {
            return Err(StoreError::UnsupportedKdf {
                kdf: header.kdf.clone(),
            });
        }
        // Structural problems with the check blob are corruption, not a wrong passphrase.
        let (nonce, ciphertext) = split_sealed(&header.check).map_err(|e| match e {
            StoreError::Corrupted { reason } => StoreError::Corrupted {
                reason: format!("header check value: {reason}"),
            },
            other => other,
        })?;
        let key = Self::derive(passphrase, header.kdf_params(), &header.salt)?;
        let plaintext = key
            .decrypt(CHECK_AAD, nonce, ciphertext)
            .ok_or(StoreError::WrongPassphrase)?;
        if plaintext.as_slice() != CHECK_PLAINTEXT {
            return Err(StoreError::Corrupted {
                reason: "header check value has unexpected content".to_owned(),
            });
        }
        Ok(key)
    }

    /// A MAC key for `purpose`, derived from this store key (HMAC-SHA256 with a
    /// purpose-specific label), so that keyed records can be checked and written only with
    /// the passphrase.
    pub fn mac_key(&self, purpose: &str) -> MacKey {
        use bitcoin::hashes::{hmac, sha256, Hash, HashEngine};
        let mut engine = hmac::HmacEngine::<sha256::Hash>::new(&self.key);
        engine.input(b"ckm/store/mac-key/");
        engine.input(purpose.as_bytes());
        MacKey {
            key: hmac::Hmac::<sha256::Hash>::from_engine(engine).to_byte_array(),
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(<&chacha20poly1305::Key>::from(&self.key))
    }

    /// Encrypts `plaintext`, binding it to `aad` (pass the file's logical name).
    ///
    /// Format: [`SEALED_MAGIC`], a random 24-byte nonce, then the XChaCha20-Poly1305
    /// ciphertext and tag. The magic is authenticated together with `aad`.
    ///
    /// Plaintexts of 256 GiB or more exceed the cipher's limit; for them the result is
    /// an empty vector, which [`StoreKey::open`] rejects.
    pub fn seal(
        &self,
        aad: &[u8],
        plaintext: &[u8],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Vec<u8> {
        let mut nonce = [0u8; SEALED_NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let full_aad = sealed_aad(aad);
        let ciphertext = match self.cipher().encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &full_aad,
            },
        ) {
            Ok(ct) => ct,
            Err(_) => {
                tracing::error!(len = plaintext.len(), "plaintext too large to seal");
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(SEALED_MAGIC.len() + SEALED_NONCE_LEN + ciphertext.len());
        out.extend_from_slice(SEALED_MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Decrypts a blob made by [`StoreKey::seal`] with the same `aad`.
    ///
    /// Truncated, foreign, tampered or swapped (different `aad`) blobs, and blobs sealed
    /// under another key, fail with [`StoreError::Corrupted`].
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let (nonce, ciphertext) = split_sealed(sealed)?;
        self.decrypt(aad, nonce, ciphertext)
            .ok_or_else(|| StoreError::Corrupted {
                reason: "authentication failed (modified data, wrong file name, or sealed under \
                     another store key)"
                    .to_owned(),
            })
    }

    fn decrypt(
        &self,
        aad: &[u8],
        nonce: &[u8; SEALED_NONCE_LEN],
        ciphertext: &[u8],
    ) -> Option<Zeroizing<Vec<u8>>> {
        let full_aad = sealed_aad(aad);
        self.cipher()
            .decrypt(
                &XNonce::from(*nonce),
                Payload {
                    msg: ciphertext,
                    aad: &full_aad,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

/// Associated data fed to the AEAD: the magic (with version), then the caller's aad.
fn sealed_aad(aad: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(SEALED_MAGIC.len() + aad.len());
    full.extend_from_slice(SEALED_MAGIC);
    full.extend_from_slice(aad);
    full
}

/// Splits a sealed blob into nonce and ciphertext, checking magic and length.
fn split_sealed(sealed: &[u8]) -> Result<(&[u8; SEALED_NONCE_LEN], &[u8]), StoreError> {
    let truncated = || StoreError::Corrupted {
        reason: format!(
            "truncated: {} bytes, at least {SEALED_OVERHEAD} expected",
            sealed.len()
        ),
    };
    let Some((magic, rest)) = sealed.split_first_chunk::<5>() else {
        return Err(truncated());
    };
    if magic.first_chunk::<4>() != SEALED_MAGIC.first_chunk::<4>() {
        return Err(StoreError::Corrupted {
            reason: "not a ckm sealed blob (bad magic)".to_owned(),
        });
    }
    if magic != SEALED_MAGIC {
        return Err(StoreError::UnsupportedVersion {
            found: magic.last().copied().map_or(0, u32::from),
            supported: SEALED_MAGIC.last().copied().map_or(0, u32::from),
        });
    }
    let Some((nonce, ciphertext)) = rest.split_first_chunk::<SEALED_NONCE_LEN>() else {
        return Err(truncated());
    };
    if ciphertext.len() < SEALED_TAG_LEN {
        return Err(truncated());
    }
    Ok((nonce, ciphertext))
}

/// Atomically replaces `path` with `bytes`.
///
/// Writes a temporary file (mode 0o600) in the same directory, syncs it, renames it over
/// `path`, then syncs the directory so the rename itself is durable. On failure the
/// temporary file is removed and the old content of `path` is left untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot write {}: path has no file name", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(
        ".tmp-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let tmp_path = dir.join(tmp_name);

    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_path)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp_path, path)
    })();
    if let Err(err) = result {
        // Best effort: the temporary file may not even exist.
        let _ = fs::remove_file(&tmp_path);
        return Err(err);
    }
    File::open(&dir)?.sync_all()
}

/// Reads a whole file, refusing (with `InvalidData`) files longer than `max_len` bytes.
pub fn read_limited(path: &Path, max_len: u64) -> io::Result<Vec<u8>> {
    let too_large = |len: u64| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {len} bytes, more than the {max_len} byte limit",
                path.display()
            ),
        )
    };
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len > max_len {
        return Err(too_large(len));
    }
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // The file may grow between the size check and the read: read at most one extra byte.
    file.take(max_len.saturating_add(1)).read_to_end(&mut buf)?;
    let read = u64::try_from(buf.len()).unwrap_or(u64::MAX);
    if read > max_len {
        return Err(too_large(read));
    }
    Ok(buf)
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

/// Serde helper: byte vectors as lowercase hex strings.
mod hex_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(deserializer)?;
        hex::decode(&s).map_err(|e| serde::de::Error::custom(format!("bad hex: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::os::unix::fs::PermissionsExt;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(0x5354_4f52)
    }

    fn fast_store(passphrase: &[u8]) -> (StoreKey, StoreHeader) {
        StoreKey::create(passphrase, KdfParams::fast_for_tests(), &mut rng()).unwrap()
    }

    #[test]
    fn default_params_match_documentation() {
        let p = KdfParams::default();
        assert_eq!((p.m_cost_kib, p.t_cost, p.p_cost), (65536, 3, 1));
        assert!(p.to_argon2().is_ok());
    }

    #[test]
    fn create_then_unlock_gives_same_key() {
        let (key, header) = fast_store(b"correct horse");
        let json = serde_json::to_string(&header).unwrap();
        let header2: StoreHeader = serde_json::from_str(&json).unwrap();
        assert_eq!(header, header2);
        assert_eq!(header2.kdf, "argon2id");
        assert_eq!(header2.kdf_params(), KdfParams::fast_for_tests());
        let unlocked = StoreKey::unlock(b"correct horse", &header2).unwrap();
        assert_eq!(key.key, unlocked.key);
        assert_eq!(format!("{unlocked:?}"), "StoreKey(<redacted>)");

        let sealed = key.seal(b"share-1.json", b"secret share", &mut rng());
        assert_eq!(
            unlocked.open(b"share-1.json", &sealed).unwrap().as_slice(),
            b"secret share"
        );
    }

    #[test]
    fn header_json_uses_hex_fields() {
        let (_, header) = fast_store(b"pw");
        let value: serde_json::Value = serde_json::to_value(&header).unwrap();
        let salt = value["salt"].as_str().unwrap();
        assert_eq!(salt.len(), 32);
        assert_eq!(hex::decode(salt).unwrap(), header.salt);
        assert!(value["check"].as_str().unwrap().len() >= 2 * SEALED_OVERHEAD);
        let mut bad = value.clone();
        bad["salt"] = serde_json::Value::String("abcd".into());
        assert!(serde_json::from_value::<StoreHeader>(bad).is_err());
    }

    #[test]
    fn wrong_passphrase_is_detected() {
        let (_, header) = fast_store(b"correct horse");
        let err = StoreKey::unlock(b"correct horsE", &header).unwrap_err();
        assert!(matches!(err, StoreError::WrongPassphrase));
        assert_eq!(err.to_string(), "wrong passphrase for the share store");
        assert!(matches!(
            StoreKey::unlock(b"", &header),
            Err(StoreError::WrongPassphrase)
        ));
    }

    #[test]
    fn salts_differ_between_stores() {
        let mut rng = rng();
        let (a, ha) = StoreKey::create(b"pw", KdfParams::fast_for_tests(), &mut rng).unwrap();
        let (b, hb) = StoreKey::create(b"pw", KdfParams::fast_for_tests(), &mut rng).unwrap();
        assert_ne!(ha.salt, hb.salt);
        assert_ne!(a.key, b.key);
        let sealed = a.seal(b"f", b"x", &mut rng);
        assert!(matches!(
            b.open(b"f", &sealed),
            Err(StoreError::Corrupted { .. })
        ));
    }

    #[test]
    fn tampered_header_is_rejected() {
        let (_, header) = fast_store(b"pw");

        let mut changed_params = header.clone();
        changed_params.t_cost = 2;
        assert!(matches!(
            StoreKey::unlock(b"pw", &changed_params),
            Err(StoreError::WrongPassphrase)
        ));

        let mut changed_salt = header.clone();
        changed_salt.salt[0] ^= 1;
        assert!(matches!(
            StoreKey::unlock(b"pw", &changed_salt),
            Err(StoreError::WrongPassphrase)
        ));

        let mut truncated_check = header.clone();
        truncated_check.check.truncate(10);
        assert!(matches!(
            StoreKey::unlock(b"pw", &truncated_check),
            Err(StoreError::Corrupted { .. })
        ));

        let mut other_kdf = header.clone();
        other_kdf.kdf = "scrypt".into();
        assert!(matches!(
            StoreKey::unlock(b"pw", &other_kdf),
            Err(StoreError::UnsupportedKdf { .. })
        ));

        let mut newer = header;
        newer.version = 2;
        assert!(matches!(
            StoreKey::unlock(b"pw", &newer),
            Err(StoreError::UnsupportedVersion { found: 2, .. })
        ));
    }

    #[test]
    fn absurd_params_are_refused_without_allocating() {
        let (_, mut header) = fast_store(b"pw");
        header.m_cost_kib = u32::MAX;
        assert!(matches!(
            StoreKey::unlock(b"pw", &header),
            Err(StoreError::UnsafeKdfParams { .. })
        ));
        header.m_cost_kib = MAX_M_COST_KIB + 1;
        assert!(matches!(
            StoreKey::unlock(b"pw", &header),
            Err(StoreError::UnsafeKdfParams { .. })
        ));
        for params in [
            KdfParams {
                m_cost_kib: 1024,
                t_cost: 0,
                p_cost: 1,
            },
            KdfParams {
                m_cost_kib: 1024,
                t_cost: 1_000_000,
                p_cost: 1,
            },
            KdfParams {
                m_cost_kib: 1024,
                t_cost: 1,
                p_cost: 0,
            },
            KdfParams {
                m_cost_kib: 1024,
                t_cost: 1,
                p_cost: 1000,
            },
            // Below argon2's own minimum of 8 KiB per lane.
            KdfParams {
                m_cost_kib: 8,
                t_cost: 1,
                p_cost: 4,
            },
        ] {
            assert!(
                matches!(
                    StoreKey::create(b"pw", params, &mut rng()),
                    Err(StoreError::UnsafeKdfParams { .. })
                ),
                "{params:?}"
            );
        }
    }

    #[test]
    fn open_detects_swapped_truncated_and_tampered_blobs() {
        let (key, _) = fast_store(b"pw");
        let mut rng = rng();
        let sealed = key.seal(b"share-1", b"first share", &mut rng);
        assert!(sealed.starts_with(SEALED_MAGIC));
        assert_eq!(sealed.len(), SEALED_OVERHEAD + b"first share".len());

        // Swapping two files is detected through the aad.
        assert!(matches!(
            key.open(b"share-2", &sealed),
            Err(StoreError::Corrupted { .. })
        ));
        for len in 0..sealed.len() {
            assert!(
                matches!(
                    key.open(b"share-1", &sealed[..len]),
                    Err(StoreError::Corrupted { .. })
                ),
                "length {len}"
            );
        }
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x80;
            assert!(key.open(b"share-1", &tampered).is_err(), "byte {i}");
        }
        let mut bad_magic = sealed.clone();
        bad_magic[0] = b'X';
        assert!(matches!(
            key.open(b"share-1", &bad_magic),
            Err(StoreError::Corrupted { .. })
        ));
        let mut newer = sealed.clone();
        newer[4] = 2;
        assert!(matches!(
            key.open(b"share-1", &newer),
            Err(StoreError::UnsupportedVersion {
                found: 2,
                supported: 1
            })
        ));
        let mut extended = sealed.clone();
        extended.push(0);
        assert!(key.open(b"share-1", &extended).is_err());
        // Empty plaintext round-trips.
        let empty = key.seal(b"e", b"", &mut rng);
        assert!(key.open(b"e", &empty).unwrap().is_empty());
    }

    #[test]
    fn write_atomic_replaces_with_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("share.sealed");
        write_atomic(&path, b"one").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write_atomic(&path, b"two, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two, longer");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("share.sealed")]);
    }

    #[test]
    fn write_atomic_failure_leaves_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("f");
        assert!(write_atomic(&path, b"x").is_err());
        assert!(write_atomic(Path::new("/"), b"x").is_err());
        // Renaming onto a non-empty directory fails; no temporary file is left behind.
        let target = dir.path().join("occupied");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inner"), b"keep").unwrap();
        assert!(write_atomic(&target, b"x").is_err());
        assert_eq!(fs::read(target.join("inner")).unwrap(), b"keep");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn read_limited_enforces_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, &[7u8; 100]).unwrap();
        assert_eq!(read_limited(&path, 100).unwrap(), vec![7u8; 100]);
        assert_eq!(read_limited(&path, 1000).unwrap().len(), 100);
        let err = read_limited(&path, 99).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            read_limited(&dir.path().join("absent"), 10)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }
}
