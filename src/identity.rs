//! Long-term identity key of a ckm home (coordinator or signer).
//!
//! Owns the secp256k1 identity secret, its x-only public form, BIP-340 signatures
//! under `ckm/<domain>` tagged hashes, and static-static ECDH sealing of messages
//! between two identities (XChaCha20-Poly1305, direction-bound keys).

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::secp256k1::{self, ecdh, schnorr, All, Keypair, Parity, Secp256k1, XOnlyPublicKey};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{ZeroizeOnDrop, Zeroizing};

/// Version byte at the start of every sealed message.
pub const SEAL_VERSION: u8 = 1;
/// Length of the random XChaCha20 nonce that follows the version byte.
pub const SEAL_NONCE_LEN: usize = 24;
/// Length of the Poly1305 authentication tag at the end of a sealed message.
pub const SEAL_TAG_LEN: usize = 16;
/// Smallest possible sealed message (empty plaintext): version, nonce, tag.
pub const SEAL_OVERHEAD: usize = 1 + SEAL_NONCE_LEN + SEAL_TAG_LEN;

/// Tag of the hash that turns an ECDH shared point into a sealing key.
const SEAL_KEY_TAG: &[u8] = b"ckm-internal/seal-key/v1";

/// Errors of identity key parsing, signature verification and unsealing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The 32 bytes are not a valid secp256k1 secret key (zero or not below the group order).
    #[error("invalid identity secret key: not a valid secp256k1 scalar")]
    InvalidSecretKey,
    /// The text or bytes are not a valid x-only public key.
    #[error("invalid identity public key: {reason}")]
    InvalidPublicKey {
        /// Why the key was rejected.
        reason: String,
    },
    /// The signature is not 64 bytes long or is not a well-formed BIP-340 signature.
    #[error("malformed identity signature ({len} bytes, expected 64)")]
    MalformedSignature {
        /// Length of the rejected signature.
        len: usize,
    },
    /// The signature does not verify for this key, domain and message.
    #[error("identity signature does not verify for key {signer} in domain {domain:?}")]
    BadSignature {
        /// The public key the signature was checked against.
        signer: IdentityPublic,
        /// The signing domain that was used.
        domain: String,
    },
    /// The sealed message is shorter than the fixed overhead.
    #[error("sealed message too short: {len} bytes, at least {min} expected")]
    SealedTooShort {
        /// Length of the sealed message.
        len: usize,
        /// Minimum length of a sealed message.
        min: usize,
    },
    /// The sealed message carries a version this build does not understand.
    #[error("unsupported sealed message version {version} (expected {expected})")]
    UnsupportedSealVersion {
        /// Version byte found.
        version: u8,
        /// Version this build writes and reads.
        expected: u8,
    },
    /// Authenticated decryption failed.
    #[error(
        "cannot open sealed message from {sender}: wrong sender, wrong recipient, \
         wrong associated data or modified ciphertext"
    )]
    OpenFailed {
        /// The sender the message was expected to come from.
        sender: IdentityPublic,
    },
}

fn secp() -> &'static Secp256k1<All> {
    static CTX: OnceLock<Secp256k1<All>> = OnceLock::new();
    CTX.get_or_init(Secp256k1::new)
}

/// BIP-340 style tagged hash: `sha256(sha256(tag) || sha256(tag) || parts...)`.
fn tagged_hash(tag: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let tag_hash = sha256::Hash::hash(tag);
    let mut engine = sha256::Hash::engine();
    engine.input(tag_hash.as_byte_array());
    engine.input(tag_hash.as_byte_array());
    for part in parts {
        engine.input(part);
    }
    sha256::Hash::from_engine(engine).to_byte_array()
}

fn signing_digest(domain: &str, msg: &[u8]) -> secp256k1::Message {
    let tag = format!("ckm/{domain}");
    secp256k1::Message::from_digest(tagged_hash(tag.as_bytes(), &[msg]))
}

/// The long-term secret identity key of a ckm home.
///
/// The secret is erased (volatile overwrite) on drop and never printed by `Debug`.
#[derive(Clone)]
pub struct IdentityKey {
    keypair: Keypair,
    public: IdentityPublic,
}

impl Drop for IdentityKey {
    fn drop(&mut self) {
        self.keypair.non_secure_erase();
    }
}

impl ZeroizeOnDrop for IdentityKey {}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentityKey(<redacted>)")
    }
}

impl IdentityKey {
    /// Generates a fresh identity key from a cryptographically secure RNG.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut candidate = Zeroizing::new([0u8; 32]);
        loop {
            rng.fill_bytes(candidate.as_mut());
            // Fails only for zero or values >= the group order (probability ~2^-128).
            if let Ok(key) = Self::from_secret_bytes(&candidate) {
                return key;
            }
        }
    }

    /// Rebuilds an identity key from its 32-byte secret scalar.
    pub fn from_secret_bytes(bytes: &[u8; 32]) -> Result<Self, IdentityError> {
        let keypair = Keypair::from_seckey_slice(secp(), bytes)
            .map_err(|_| IdentityError::InvalidSecretKey)?;
        let (xonly, _parity) = keypair.x_only_public_key();
        Ok(Self {
            keypair,
            public: IdentityPublic::from_xonly(xonly),
        })
    }

    /// Returns a copy of the 32-byte secret scalar, zeroized when dropped.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.keypair.secret_bytes())
    }

    /// Returns the public half of this identity.
    pub fn public(&self) -> IdentityPublic {
        self.public
    }

    /// Signs `msg` in `domain` with BIP-340 Schnorr over the tagged hash `ckm/<domain>`.
    pub fn sign(&self, domain: &str, msg: &[u8]) -> [u8; 64] {
        let digest = signing_digest(domain, msg);
        secp().sign_schnorr(&digest, &self.keypair).serialize()
    }

    /// Derives the direction-bound symmetric key for messages `sender` → `recipient`,
    /// where one of the two is `self`.
    fn seal_key(
        &self,
        peer: &IdentityPublic,
        sender: &IdentityPublic,
        recipient: &IdentityPublic,
    ) -> Zeroizing<[u8; 32]> {
        // The peer's x-only key is lifted to even Y. Our scalar may belong to the odd-Y
        // lift of our own x-only key; that only flips the sign of the shared point, and
        // just its (sign-independent) x coordinate is used, so both sides agree.
        let mut scalar = secp256k1::SecretKey::from_keypair(&self.keypair);
        let point = Zeroizing::new(ecdh::shared_secret_point(&peer.even_point(), &scalar));
        scalar.non_secure_erase();
        let mut shared_x = Zeroizing::new([0u8; 32]);
        if let Some(x) = point.first_chunk::<32>() {
            shared_x.copy_from_slice(x);
        }
        Zeroizing::new(tagged_hash(
            SEAL_KEY_TAG,
            &[shared_x.as_ref(), &sender.bytes, &recipient.bytes],
        ))
    }

    /// Encrypts `plaintext` so that only `recipient` (or this sender) can read it.
    ///
    /// Wire format: one version byte, a random 24-byte nonce, then the XChaCha20-Poly1305
    /// ciphertext with its tag. `aad` is authenticated but not encrypted and must be
    /// passed unchanged to [`IdentityKey::open`].
    ///
    /// Plaintexts of 256 GiB or more exceed the cipher's limit; for them the result is
    /// an empty vector, which [`IdentityKey::open`] rejects.
    pub fn seal(
        &self,
        recipient: &IdentityPublic,
        aad: &[u8],
        plaintext: &[u8],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Vec<u8> {
        let key = self.seal_key(recipient, &self.public, recipient);
        let cipher = XChaCha20Poly1305::new(<&chacha20poly1305::Key>::from(&*key));
        let mut nonce = [0u8; SEAL_NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let full_aad = seal_aad(aad);
        let ciphertext = match cipher.encrypt(
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
        let mut out = Vec::with_capacity(1 + SEAL_NONCE_LEN + ciphertext.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Decrypts a message sealed by `sender` for this identity with the same `aad`.
    pub fn open(
        &self,
        sender: &IdentityPublic,
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, IdentityError> {
        let too_short = || IdentityError::SealedTooShort {
            len: sealed.len(),
            min: SEAL_OVERHEAD,
        };
        if sealed.len() < SEAL_OVERHEAD {
            return Err(too_short());
        }
        let (&version, rest) = sealed.split_first().ok_or_else(too_short)?;
        if version != SEAL_VERSION {
            return Err(IdentityError::UnsupportedSealVersion {
                version,
                expected: SEAL_VERSION,
            });
        }
        let (nonce, ciphertext) = rest
            .split_first_chunk::<SEAL_NONCE_LEN>()
            .ok_or_else(too_short)?;
        let key = self.seal_key(sender, sender, &self.public);
        let cipher = XChaCha20Poly1305::new(<&chacha20poly1305::Key>::from(&*key));
        let full_aad = seal_aad(aad);
        cipher
            .decrypt(
                &XNonce::from(*nonce),
                Payload {
                    msg: ciphertext,
                    aad: &full_aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| IdentityError::OpenFailed { sender: *sender })
    }
}

/// A message sealed by [`IdentityKey::seal`] (hex in JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed(#[serde(with = "hex::serde")] pub Vec<u8>);

/// Associated data actually fed to the AEAD: the version byte, then the caller's aad.
fn seal_aad(aad: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(1 + aad.len());
    full.push(SEAL_VERSION);
    full.extend_from_slice(aad);
    full
}

/// The public half of an identity: a BIP-340 x-only public key.
///
/// Displays and serializes as 64 lowercase hex characters.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Ord, PartialOrd)]
pub struct IdentityPublic {
    /// Serialized x coordinate; the ordering and hashing key.
    bytes: [u8; 32],
    /// Parsed form of `bytes` (always consistent with it).
    key: XOnlyPublicKey,
}

impl IdentityPublic {
    fn from_xonly(key: XOnlyPublicKey) -> Self {
        Self {
            bytes: key.serialize(),
            key,
        }
    }

    /// Parses a public key from its 32-byte x coordinate.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, IdentityError> {
        let key =
            XOnlyPublicKey::from_slice(bytes).map_err(|_| IdentityError::InvalidPublicKey {
                reason: "not the x coordinate of a secp256k1 point".to_owned(),
            })?;
        Ok(Self::from_xonly(key))
    }

    /// Returns the 32-byte x coordinate.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }

    /// Returns the underlying secp256k1 x-only public key.
    pub fn x_only(&self) -> XOnlyPublicKey {
        self.key
    }

    fn even_point(&self) -> secp256k1::PublicKey {
        self.key.public_key(Parity::Even)
    }

    /// Verifies a signature made by [`IdentityKey::sign`] with the same domain and message.
    pub fn verify(&self, domain: &str, msg: &[u8], sig: &[u8]) -> Result<(), IdentityError> {
        let sig = schnorr::Signature::from_slice(sig)
            .map_err(|_| IdentityError::MalformedSignature { len: sig.len() })?;
        let digest = signing_digest(domain, msg);
        secp()
            .verify_schnorr(&sig, &digest, &self.key)
            .map_err(|_| IdentityError::BadSignature {
                signer: *self,
                domain: domain.to_owned(),
            })
    }
}

impl fmt::Display for IdentityPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.bytes))
    }
}

impl fmt::Debug for IdentityPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityPublic({self})")
    }
}

impl FromStr for IdentityPublic {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(IdentityError::InvalidPublicKey {
                reason: format!("expected 64 hex characters, got {}", s.len()),
            });
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(IdentityError::InvalidPublicKey {
                reason: "expected lowercase hex characters only".to_owned(),
            });
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|e| IdentityError::InvalidPublicKey {
            reason: format!("bad hex: {e}"),
        })?;
        Self::from_bytes(&bytes)
    }
}

impl Serialize for IdentityPublic {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IdentityPublic {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(0x0063_6b6d)
    }

    #[test]
    fn secret_round_trip_and_redacted_debug() {
        let mut rng = rng();
        let key = IdentityKey::generate(&mut rng);
        let again = IdentityKey::from_secret_bytes(&key.secret_bytes()).unwrap();
        assert_eq!(key.public(), again.public());
        assert_eq!(format!("{key:?}"), "IdentityKey(<redacted>)");
        let hex_secret = hex::encode(*key.secret_bytes());
        assert!(!format!("{key:?}").contains(&hex_secret));
    }

    #[test]
    fn invalid_secrets_are_rejected() {
        assert!(matches!(
            IdentityKey::from_secret_bytes(&[0u8; 32]),
            Err(IdentityError::InvalidSecretKey)
        ));
        assert!(matches!(
            IdentityKey::from_secret_bytes(&[0xffu8; 32]),
            Err(IdentityError::InvalidSecretKey)
        ));
    }

    #[test]
    fn public_text_and_serde_round_trip() {
        let key = IdentityKey::generate(&mut rng());
        let public = key.public();
        let text = public.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.parse::<IdentityPublic>().unwrap(), public);
        let json = serde_json::to_string(&public).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(
            serde_json::from_str::<IdentityPublic>(&json).unwrap(),
            public
        );
        assert_eq!(
            IdentityPublic::from_bytes(&public.to_bytes()).unwrap(),
            public
        );
    }

    #[test]
    fn public_parse_rejects_bad_text() {
        let public = IdentityKey::generate(&mut rng()).public().to_string();
        assert!(public[..62].parse::<IdentityPublic>().is_err());
        assert!(public.to_uppercase().parse::<IdentityPublic>().is_err());
        assert!("zz".repeat(32).parse::<IdentityPublic>().is_err());
        // x = 5 is not on the curve (5^3 + 7 = 132 is a non-residue mod p).
        let not_on_curve = format!("{}05", "00".repeat(31));
        assert!(matches!(
            not_on_curve.parse::<IdentityPublic>(),
            Err(IdentityError::InvalidPublicKey { .. })
        ));
        assert!(serde_json::from_str::<IdentityPublic>("\"00\"").is_err());
    }

    #[test]
    fn sign_verify_and_domain_separation() {
        let mut rng = rng();
        let key = IdentityKey::generate(&mut rng);
        let other = IdentityKey::generate(&mut rng);
        let sig = key.sign("request", b"hello");
        key.public().verify("request", b"hello", &sig).unwrap();
        assert!(matches!(
            key.public().verify("dkg", b"hello", &sig),
            Err(IdentityError::BadSignature { .. })
        ));
        assert!(key.public().verify("request", b"hellO", &sig).is_err());
        assert!(other.public().verify("request", b"hello", &sig).is_err());
        let mut flipped = sig;
        flipped[10] ^= 1;
        assert!(key.public().verify("request", b"hello", &flipped).is_err());
        assert!(matches!(
            key.public().verify("request", b"hello", &sig[..63]),
            Err(IdentityError::MalformedSignature { len: 63 })
        ));
    }

    #[test]
    fn signature_is_plain_bip340_over_tagged_hash() {
        let key = IdentityKey::generate(&mut rng());
        let sig = key.sign("x", b"msg");
        let expected_digest = {
            let tag = sha256::Hash::hash(b"ckm/x");
            let mut data = Vec::new();
            data.extend_from_slice(tag.as_byte_array());
            data.extend_from_slice(tag.as_byte_array());
            data.extend_from_slice(b"msg");
            sha256::Hash::hash(&data).to_byte_array()
        };
        let msg = secp256k1::Message::from_digest(expected_digest);
        let sig = schnorr::Signature::from_slice(&sig).unwrap();
        secp()
            .verify_schnorr(&sig, &msg, &key.public().x_only())
            .unwrap();
    }

    #[test]
    fn seal_open_round_trip_for_both_parities() {
        let mut rng = rng();
        let mut seen_odd = false;
        let mut seen_even = false;
        for _ in 0..16 {
            let alice = IdentityKey::generate(&mut rng);
            let bob = IdentityKey::generate(&mut rng);
            for key in [&alice, &bob] {
                match key.keypair.x_only_public_key().1 {
                    Parity::Odd => seen_odd = true,
                    Parity::Even => seen_even = true,
                }
            }
            let sealed = alice.seal(&bob.public(), b"dkg round 2", b"share bytes", &mut rng);
            assert_eq!(sealed.len(), SEAL_OVERHEAD + b"share bytes".len());
            assert_eq!(sealed[0], SEAL_VERSION);
            let opened = bob.open(&alice.public(), b"dkg round 2", &sealed).unwrap();
            assert_eq!(opened.as_slice(), b"share bytes");
        }
        assert!(seen_odd && seen_even);
    }

    #[test]
    fn sealed_format_matches_the_documented_construction() {
        let mut rng = rng();
        let alice = IdentityKey::generate(&mut rng);
        let bob = IdentityKey::generate(&mut rng);
        let sealed = alice.seal(&bob.public(), b"aad", b"payload", &mut rng);

        // Independently: x(b' * A_even) with b' the even-Y scalar of Bob's identity.
        let ctx = Secp256k1::new();
        let mut b = secp256k1::SecretKey::from_keypair(&bob.keypair);
        if bob.keypair.x_only_public_key().1 == Parity::Odd {
            b = b.negate();
        }
        let a_even = alice.public().x_only().public_key(Parity::Even);
        let shared = a_even.mul_tweak(&ctx, &b.into()).unwrap().serialize();
        let key = tagged_hash(
            b"ckm-internal/seal-key/v1",
            &[
                &shared[1..33],
                &alice.public().to_bytes(),
                &bob.public().to_bytes(),
            ],
        );
        let cipher = XChaCha20Poly1305::new(&key.into());
        let plaintext = cipher
            .decrypt(
                XNonce::from_slice(&sealed[1..25]),
                Payload {
                    msg: &sealed[25..],
                    aad: b"\x01aad",
                },
            )
            .unwrap();
        assert_eq!(plaintext, b"payload");
    }

    #[test]
    fn seal_is_direction_bound_and_randomized() {
        let mut rng = rng();
        let alice = IdentityKey::generate(&mut rng);
        let bob = IdentityKey::generate(&mut rng);
        assert_ne!(
            *alice.seal_key(&bob.public(), &alice.public(), &bob.public()),
            *bob.seal_key(&alice.public(), &bob.public(), &alice.public())
        );
        let a_to_b = alice.seal(&bob.public(), b"", b"x", &mut rng);
        let a_to_b_again = alice.seal(&bob.public(), b"", b"x", &mut rng);
        assert_ne!(a_to_b, a_to_b_again);
        // Alice cannot open her own message as if Bob had sent it to her.
        assert!(alice.open(&bob.public(), b"", &a_to_b).is_err());
        // Sealing to oneself works.
        let to_self = alice.seal(&alice.public(), b"", b"note", &mut rng);
        assert_eq!(
            alice
                .open(&alice.public(), b"", &to_self)
                .unwrap()
                .as_slice(),
            b"note"
        );
    }

    #[test]
    fn open_rejects_wrong_aad_sender_recipient_and_tampering() {
        let mut rng = rng();
        let alice = IdentityKey::generate(&mut rng);
        let bob = IdentityKey::generate(&mut rng);
        let eve = IdentityKey::generate(&mut rng);
        let sealed = alice.seal(&bob.public(), b"aad", b"secret", &mut rng);

        assert!(matches!(
            bob.open(&alice.public(), b"aad2", &sealed),
            Err(IdentityError::OpenFailed { .. })
        ));
        assert!(matches!(
            bob.open(&eve.public(), b"aad", &sealed),
            Err(IdentityError::OpenFailed { .. })
        ));
        assert!(eve.open(&alice.public(), b"aad", &sealed).is_err());
        for i in 1..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert!(
                bob.open(&alice.public(), b"aad", &tampered).is_err(),
                "byte {i}"
            );
        }
        let mut wrong_version = sealed.clone();
        wrong_version[0] = 2;
        assert!(matches!(
            bob.open(&alice.public(), b"aad", &wrong_version),
            Err(IdentityError::UnsupportedSealVersion { version: 2, .. })
        ));
        for len in 0..SEAL_OVERHEAD {
            assert!(matches!(
                bob.open(&alice.public(), b"aad", &sealed[..len]),
                Err(IdentityError::SealedTooShort { .. })
            ));
        }
        let mut extended = sealed.clone();
        extended.push(0);
        assert!(bob.open(&alice.public(), b"aad", &extended).is_err());
    }
}
