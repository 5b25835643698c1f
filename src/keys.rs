//! Typed keys shared by every part of ckm: the wallet's group key ([`GroupKey`]), the roster
//! of signers ([`RosterEntry`], [`Roster`]) and the short, human-comparable wallet
//! fingerprint ([`WalletFingerprint`]). The FROST key material itself (shares, the public key
//! package, HD derivation) lives in [`crate::frost::shares`] and is re-exported here.
//!
//! Nothing here does I/O; the protocol, signer, coordinator and CLI layers all build on it.
//! It imports only [`crate::frost`] and [`crate::identity`].

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use bitcoin::secp256k1::PublicKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::identity::IdentityPublic;

pub use crate::frost::shares::{Derivation, GroupPublic, KeyError, KeyShare};

/// A wallet's root group public key (the even-Y FROST group key, 33-byte compressed).
///
/// It names a wallet on every signer. Displays and serializes as 66 lowercase hex characters;
/// parsing accepts only that form, so a `GroupKey` is always safe to use in a file name.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey(PublicKey);

impl GroupKey {
    /// The group key of a FROST group.
    pub fn of(group: &GroupPublic) -> Self {
        GroupKey(group.group_key())
    }

    /// The secp256k1 public key.
    pub fn public_key(&self) -> PublicKey {
        self.0
    }

    /// The 33-byte compressed encoding.
    pub fn to_bytes(&self) -> [u8; 33] {
        self.0.serialize()
    }
}

impl From<PublicKey> for GroupKey {
    fn from(key: PublicKey) -> Self {
        GroupKey(key)
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0.serialize()))
    }
}

impl fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupKey({self})")
    }
}

/// Why a string is not a key of the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseKeyError {
    /// Not 66 lowercase hex characters.
    #[error("a group key is 66 lowercase hex characters (33 bytes), got {0:?}")]
    GroupKeyFormat(String),
    /// Not a point on the curve.
    #[error("{0} is not a valid secp256k1 public key")]
    NotAPoint(String),
    /// Not a SHA-256 fingerprint.
    #[error("a certificate pin is 64 hex characters (SHA-256), got {0:?}")]
    PinFormat(String),
}

impl FromStr for GroupKey {
    type Err = ParseKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 66
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ParseKeyError::GroupKeyFormat(s.chars().take(80).collect()));
        }
        let mut bytes = [0u8; 33];
        hex::decode_to_slice(s, &mut bytes)
            .map_err(|_| ParseKeyError::GroupKeyFormat(s.to_string()))?;
        PublicKey::from_slice(&bytes)
            .map(GroupKey)
            .map_err(|_| ParseKeyError::NotAPoint(s.to_string()))
    }
}

impl Serialize for GroupKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GroupKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The two keychains of a wallet: `m/0/*` receives, `m/1/*` takes change.
#[derive(Debug, Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keychain {
    /// `m/0/*`: receive addresses.
    External,
    /// `m/1/*`: change addresses.
    Internal,
}

impl Keychain {
    /// The derivation step of the keychain (0 or 1).
    pub fn step(self) -> u32 {
        match self {
            Keychain::External => 0,
            Keychain::Internal => 1,
        }
    }
}

/// The only derivation paths a wallet uses below its group key: `m/0/i` or `m/1/i` with `i`
/// non-hardened. Anything else is not the wallet's.
#[derive(Debug, Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WalletPath {
    /// Receive or change.
    pub keychain: Keychain,
    /// The address index (non-hardened, below 2^31).
    pub index: u32,
}

/// Why a derivation path is not one of the wallet's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the derivation path {0} is not the wallet's (expected m/0/i or m/1/i with i non-hardened)"
)]
pub struct NotWalletPath(pub String);

impl WalletPath {
    /// Classifies a BIP-32 path relative to the group key.
    ///
    /// # Errors
    /// [`NotWalletPath`] for any other shape.
    pub fn from_derivation(path: &bitcoin::bip32::DerivationPath) -> Result<Self, NotWalletPath> {
        use bitcoin::bip32::ChildNumber::Normal;
        let steps: &[bitcoin::bip32::ChildNumber] = path.as_ref();
        match steps {
            [Normal { index: k }, Normal { index }] if *k <= 1 => Ok(WalletPath {
                keychain: if *k == 0 {
                    Keychain::External
                } else {
                    Keychain::Internal
                },
                index: *index,
            }),
            _ => Err(NotWalletPath(path.to_string())),
        }
    }

    /// The BIP-32 path `m/k/i`.
    pub fn to_derivation(&self) -> bitcoin::bip32::DerivationPath {
        use bitcoin::bip32::ChildNumber::Normal;
        bitcoin::bip32::DerivationPath::from(vec![
            Normal {
                index: self.keychain.step(),
            },
            Normal { index: self.index },
        ])
    }
}

impl fmt::Display for WalletPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m/{}/{}", self.keychain.step(), self.index)
    }
}

/// The SHA-256 fingerprint of a signer's TLS certificate (DER), pinned by the coordinator.
/// Serializes as 64 lowercase hex characters.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertPin(pub [u8; 32]);

impl fmt::Display for CertPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for CertPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertPin({self})")
    }
}

impl FromStr for CertPin {
    type Err = ParseKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&lower, &mut bytes)
            .map_err(|_| ParseKeyError::PinFormat(s.chars().take(80).collect()))?;
        Ok(CertPin(bytes))
    }
}

impl Serialize for CertPin {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CertPin {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A signer in a wallet's roster: its position (FROST identifier), where to reach it and its
/// identity key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    /// 1-based roster index (the FROST identifier).
    pub index: u16,
    /// Base URL of the signer's server (not certified: it may differ between vantage points).
    pub url: String,
    /// The signer's identity public key.
    pub identity: IdentityPublic,
    /// SHA-256 fingerprint of the signer's TLS certificate, pinned for `https` URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_sha256: Option<CertPin>,
}

/// Why a roster is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RosterError {
    /// Fewer than two signers, or more than the largest group.
    #[error("a roster has 2 to {max} signers, got {got}")]
    Size {
        /// Signers listed.
        got: usize,
        /// Largest group supported.
        max: u16,
    },
    /// Indexes are not increasing from 1.
    #[error("roster entry {position} has index {index}; indexes must increase from 1")]
    Index {
        /// 1-based position in the list.
        position: usize,
        /// The index found there.
        index: u16,
    },
    /// The same identity key twice.
    #[error("identity {0} appears twice in the roster")]
    Duplicate(IdentityPublic),
}

/// A checked roster: indexes increasing from 1 (exactly `1..=n` after key generation; a
/// removed signer's index stays free), no identity key twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<RosterEntry>", into = "Vec<RosterEntry>")]
pub struct Roster(Vec<RosterEntry>);

impl Roster {
    /// Largest roster supported.
    pub const MAX: u16 = 255;

    /// The entries by roster index.
    pub fn by_index(&self) -> std::collections::BTreeMap<u16, RosterEntry> {
        self.entries()
            .iter()
            .map(|e| (e.index, e.clone()))
            .collect()
    }

    /// Checks and wraps a list of entries.
    ///
    /// # Errors
    /// [`RosterError`] naming the first problem.
    pub fn new(entries: Vec<RosterEntry>) -> Result<Self, RosterError> {
        if entries.len() < 2 || entries.len() > usize::from(Self::MAX) {
            return Err(RosterError::Size {
                got: entries.len(),
                max: Self::MAX,
            });
        }
        let mut seen = BTreeSet::new();
        let mut previous = 0u16;
        for (i, e) in entries.iter().enumerate() {
            if e.index <= previous {
                return Err(RosterError::Index {
                    position: i + 1,
                    index: e.index,
                });
            }
            previous = e.index;
            if !seen.insert(e.identity) {
                return Err(RosterError::Duplicate(e.identity));
            }
        }
        Ok(Roster(entries))
    }

    /// Whether the indexes are exactly `1..=n` (a roster fresh from key generation; after a
    /// signer is removed its index stays free).
    pub fn is_contiguous(&self) -> bool {
        self.0
            .iter()
            .enumerate()
            .all(|(i, e)| usize::from(e.index) == i + 1)
    }

    /// The roster indexes, in order.
    pub fn indexes(&self) -> Vec<u16> {
        self.0.iter().map(|e| e.index).collect()
    }

    /// A roster without the member at `index`.
    ///
    /// # Errors
    /// Fewer than two members would remain.
    pub fn without(&self, index: u16) -> Result<Roster, RosterError> {
        Roster::new(
            self.0
                .iter()
                .filter(|e| e.index != index)
                .cloned()
                .collect(),
        )
    }

    /// A roster with `entry` added, or replacing the member at its index.
    ///
    /// # Errors
    /// The identity is already another member's.
    pub fn with(&self, entry: RosterEntry) -> Result<Roster, RosterError> {
        let mut entries: Vec<RosterEntry> = self
            .0
            .iter()
            .filter(|e| e.index != entry.index)
            .cloned()
            .collect();
        entries.push(entry);
        entries.sort_by_key(|e| e.index);
        Roster::new(entries)
    }

    /// The entries in index order.
    pub fn entries(&self) -> &[RosterEntry] {
        &self.0
    }

    /// Number of signers.
    pub fn len(&self) -> u16 {
        // `new` bounds the length by `MAX`.
        u16::try_from(self.0.len()).unwrap_or(Self::MAX)
    }

    /// Never true: a roster has at least two signers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entry at a 1-based index.
    pub fn get(&self, index: u16) -> Option<&RosterEntry> {
        self.0.iter().find(|e| e.index == index)
    }

    /// The index of an identity key.
    pub fn index_of(&self, identity: &IdentityPublic) -> Option<u16> {
        self.0
            .iter()
            .find(|e| e.identity == *identity)
            .map(|e| e.index)
    }

    /// Mutable access to the URLs and pins (the certified identity keys and indexes stay).
    pub fn set_endpoint(&mut self, index: u16, url: String, tls_sha256: Option<CertPin>) -> bool {
        match self.0.iter_mut().find(|e| e.index == index) {
            Some(e) => {
                e.url = url;
                e.tls_sha256 = tls_sha256;
                true
            }
            None => false,
        }
    }
}

impl TryFrom<Vec<RosterEntry>> for Roster {
    type Error = RosterError;
    fn try_from(entries: Vec<RosterEntry>) -> Result<Self, RosterError> {
        Roster::new(entries)
    }
}

impl From<Roster> for Vec<RosterEntry> {
    fn from(r: Roster) -> Self {
        r.0
    }
}

/// A short fingerprint of a certified key generation (the first 8 bytes of its transcript
/// hash), shown by the coordinator and by every signer so that people can compare it out of
/// band. Displays as four dash-separated groups of four hex digits, e.g. `3f2a-91c0-77de-0b14`.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WalletFingerprint(pub [u8; 8]);

impl WalletFingerprint {
    /// The fingerprint of a transcript hash.
    pub fn of_transcript(transcript: &[u8; 32]) -> Self {
        let mut b = [0u8; 8];
        b.copy_from_slice(&transcript[..8]);
        WalletFingerprint(b)
    }
}

impl fmt::Display for WalletFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = hex::encode(self.0);
        write!(f, "{}-{}-{}-{}", &h[0..4], &h[4..8], &h[8..12], &h[12..16])
    }
}

impl fmt::Debug for WalletFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalletFingerprint({self})")
    }
}

impl FromStr for WalletFingerprint {
    type Err = ParseKeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let compact: String = s.chars().filter(|c| *c != '-').collect();
        let mut b = [0u8; 8];
        hex::decode_to_slice(compact.to_ascii_lowercase(), &mut b)
            .map_err(|_| ParseKeyError::PinFormat(s.to_string()))?;
        Ok(WalletFingerprint(b))
    }
}

impl Serialize for WalletFingerprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WalletFingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(b: u8) -> IdentityPublic {
        let key = crate::identity::IdentityKey::from_secret_bytes(&[b; 32]).unwrap();
        key.public()
    }

    #[test]
    fn group_key_parses_only_its_canonical_form() {
        let g = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
        let k: GroupKey = g.parse().unwrap();
        assert_eq!(k.to_string(), g);
        assert!(g.to_uppercase().parse::<GroupKey>().is_err());
        assert!("../../etc/passwd".parse::<GroupKey>().is_err());
        assert!(format!("02{}", "00".repeat(32))
            .parse::<GroupKey>()
            .is_err());
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, format!("\"{g}\""));
    }

    #[test]
    fn roster_checks_indexes_and_duplicates() {
        let e = |index, b| RosterEntry {
            index,
            url: "http://127.0.0.1:1".into(),
            identity: ident(b),
            tls_sha256: None,
        };
        assert!(Roster::new(vec![e(1, 1), e(2, 2)]).is_ok());
        assert!(Roster::new(vec![e(1, 1), e(3, 2)])
            .unwrap()
            .get(3)
            .is_some());
        assert!(!Roster::new(vec![e(1, 1), e(3, 2)]).unwrap().is_contiguous());
        assert_eq!(
            Roster::new(vec![e(2, 1), e(1, 2)]),
            Err(RosterError::Index {
                position: 2,
                index: 1
            })
        );
        assert_eq!(
            Roster::new(vec![e(1, 1), e(2, 1)]),
            Err(RosterError::Duplicate(ident(1)))
        );
        assert!(Roster::new(vec![e(1, 1)]).is_err());
        let r = Roster::new(vec![e(1, 1), e(2, 2), e(3, 3)]).unwrap();
        assert_eq!(r.index_of(&ident(3)), Some(3));
        assert_eq!(r.get(0), None);
        assert_eq!(r.get(2).map(|x| x.index), Some(2));
        let json = serde_json::to_string(&r).unwrap();
        let back: Roster = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn only_wallet_paths_are_accepted() {
        use bitcoin::bip32::DerivationPath;
        let ok: DerivationPath = "m/1/7".parse().unwrap();
        let p = WalletPath::from_derivation(&ok).unwrap();
        assert_eq!(p.keychain, Keychain::Internal);
        assert_eq!(p.index, 7);
        assert_eq!(p.to_derivation(), ok);
        for bad in ["m/0", "m/2/1", "m/0/1h", "m/0'/1", "m/0/1/2", "m"] {
            let path: DerivationPath = bad.parse().unwrap();
            assert!(WalletPath::from_derivation(&path).is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprint_round_trips() {
        let f = WalletFingerprint::of_transcript(&[0xab; 32]);
        assert_eq!(f.to_string(), "abab-abab-abab-abab");
        assert_eq!(
            "abab-abab-abab-abab".parse::<WalletFingerprint>().unwrap(),
            f
        );
    }
}
