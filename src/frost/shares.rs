//! Key material of a FROST group: the public side every party shares ([`GroupPublic`]) and one
//! signer's secret share ([`KeyShare`]), with non-hardened BIP-0032 derivation applied to both.
//!
//! frost has no BIP-0032 API. A child at path `p` of the group xpub differs from the root by
//! an additive tweak `T` (the sum of the per-step `ckd_pub` tweaks), so every share `s_i`
//! becomes `s_i + T`, every verifying share `Y_i + T·G` and the group key `Q + T·G`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Mutex, OnceLock};

use bitcoin::bip32::{ChainCode, ChildNumber, DerivationPath, Fingerprint, Xpub};
use bitcoin::secp256k1::{
    self, All, Parity, PublicKey, Scalar, Secp256k1, SecretKey, XOnlyPublicKey,
};
use bitcoin::taproot::{TapNodeHash, TapTweakHash};
use bitcoin::NetworkKind;
use frost::keys::{EvenY, KeyPackage, PublicKeyPackage, SigningShare, VerifyingShare};
use frost::{Identifier, VerifyingKey};
use frost_secp256k1_tr as frost;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The process-wide secp256k1 context (verification and signing).
pub fn secp() -> &'static Secp256k1<All> {
    static SECP: OnceLock<Secp256k1<All>> = OnceLock::new();
    SECP.get_or_init(Secp256k1::new)
}

/// Errors from building, encoding or deriving key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A FROST group can derive only non-hardened children.
    #[error("derivation path {path} has a hardened step; a FROST group derives only non-hardened children")]
    HardenedPath {
        /// The offending path.
        path: DerivationPath,
    },
    /// BIP-0032 derivation failed (astronomically unlikely invalid child).
    #[error("BIP-0032 derivation failed at {path}")]
    Bip32 {
        /// The path being derived.
        path: DerivationPath,
        /// The cause.
        #[source]
        source: bitcoin::bip32::Error,
    },
    /// Adding the derivation tweak produced an invalid key.
    #[error("the derivation tweak for {path} produced an invalid key")]
    InvalidTweak {
        /// The path being derived.
        path: DerivationPath,
    },
    /// The public key package carries no threshold.
    #[error("the public key package does not record its threshold")]
    MissingThreshold,
    /// A key package does not belong to the group it was paired with.
    #[error(
        "key package of participant {participant} does not match the group public key package"
    )]
    Mismatch {
        /// Roster index of the participant.
        participant: u16,
    },
    /// A participant is not part of the group.
    #[error("participant {participant} is not part of this group")]
    UnknownParticipant {
        /// Roster index of the participant.
        participant: u16,
    },
    /// Malformed FROST key material.
    #[error("malformed FROST key material")]
    Frost(#[from] frost::Error),
    /// Malformed serialized key share.
    #[error("malformed key share encoding: {0}")]
    Encoding(String),
}

/// The 1-based roster index encoded in an identifier made from a small integer (see
/// [`crate::frost::identifier`]), or 0 when the identifier is not such a one.
pub fn roster_index(id: &Identifier) -> u16 {
    let bytes = id.serialize();
    match bytes.split_last_chunk::<2>() {
        Some((head, tail)) if head.iter().all(|b| *b == 0) => u16::from_be_bytes(*tail),
        _ => 0,
    }
}

fn point_of(bytes: &[u8]) -> Result<PublicKey, KeyError> {
    PublicKey::from_slice(bytes).map_err(|e| KeyError::Encoding(e.to_string()))
}

fn verifying_key_point(key: &VerifyingKey) -> Result<PublicKey, KeyError> {
    point_of(&key.serialize()?)
}

/// The public side of a FROST group: the public key package (normalised to an even-Y group
/// key) and the chain code agreed during DKG. This is what the wallet and every signer share.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "GroupPublicRepr", into = "GroupPublicRepr")]
pub struct GroupPublic {
    public_key_package: PublicKeyPackage,
    chain_code: [u8; 32],
    threshold: u16,
    group_key: PublicKey,
    /// The root verifying shares as libsecp256k1 points (decoded once: every spend key of
    /// every input starts from them).
    share_points: BTreeMap<Identifier, PublicKey>,
}

#[derive(Serialize, Deserialize)]
struct GroupPublicRepr {
    public_key_package: PublicKeyPackage,
    #[serde(with = "hex::serde")]
    chain_code: [u8; 32],
}

impl TryFrom<GroupPublicRepr> for GroupPublic {
    type Error = KeyError;
    fn try_from(repr: GroupPublicRepr) -> Result<Self, KeyError> {
        GroupPublic::new(repr.public_key_package, repr.chain_code)
    }
}

impl From<GroupPublic> for GroupPublicRepr {
    fn from(g: GroupPublic) -> Self {
        GroupPublicRepr {
            public_key_package: g.public_key_package,
            chain_code: g.chain_code,
        }
    }
}

impl fmt::Debug for GroupPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupPublic")
            .field("group_key", &self.group_key.to_string())
            .field("threshold", &self.threshold)
            .field("signers", &self.signers())
            .finish()
    }
}

impl GroupPublic {
    /// Wraps a DKG's public key package and chain code, normalising the group key to even Y
    /// (the same normalisation must be applied to every share: see [`KeyShare::new`]).
    ///
    /// # Errors
    /// Fails when the package records no threshold or its keys do not encode.
    pub fn new(
        public_key_package: PublicKeyPackage,
        chain_code: [u8; 32],
    ) -> Result<Self, KeyError> {
        let public_key_package = public_key_package.into_even_y(None);
        let threshold = public_key_package
            .min_signers()
            .ok_or(KeyError::MissingThreshold)?;
        let group_key = verifying_key_point(public_key_package.verifying_key())?;
        let share_points = public_key_package
            .verifying_shares()
            .iter()
            .map(|(id, share)| Ok((*id, point_of(&share.serialize()?)?)))
            .collect::<Result<_, KeyError>>()?;
        Ok(GroupPublic {
            public_key_package,
            chain_code,
            threshold,
            group_key,
            share_points,
        })
    }

    /// The root public key package (even-Y group key).
    pub fn public_key_package(&self) -> &PublicKeyPackage {
        &self.public_key_package
    }

    /// The group's root public key (even Y): the key of the wallet's xpub.
    pub fn group_key(&self) -> PublicKey {
        self.group_key
    }

    /// The chain code agreed during DKG.
    pub fn chain_code(&self) -> [u8; 32] {
        self.chain_code
    }

    /// How many signers must cooperate to sign.
    pub fn threshold(&self) -> u16 {
        self.threshold
    }

    /// How many signers hold a share.
    pub fn signers(&self) -> u16 {
        u16::try_from(self.public_key_package.verifying_shares().len()).unwrap_or(u16::MAX)
    }

    /// The identifiers of all share holders, in roster order.
    pub fn identifiers(&self) -> impl Iterator<Item = &Identifier> {
        self.public_key_package.verifying_shares().keys()
    }

    /// The root extended public key of the group (depth 0).
    pub fn xpub(&self, network: impl Into<NetworkKind>) -> Xpub {
        Xpub {
            network: network.into(),
            depth: 0,
            parent_fingerprint: Fingerprint::default(),
            child_number: ChildNumber::Normal { index: 0 },
            public_key: self.group_key,
            chain_code: ChainCode::from(self.chain_code),
        }
    }

    /// The BIP-0032 fingerprint of the root xpub, as it appears in descriptors and in PSBT
    /// `tap_key_origins`.
    pub fn fingerprint(&self) -> Fingerprint {
        self.xpub(NetworkKind::Test).fingerprint()
    }

    /// The additive tweak and the child public key at `path` (all steps non-hardened).
    ///
    /// # Errors
    /// Fails for hardened steps.
    ///
    /// Derivations are remembered for the process (public values only, at most 16 384 of
    /// them): every round of every signing of an input derives the same public child again,
    /// on the coordinator and on each signer. A path's parent is looked up the same way, so
    /// the addresses of one keychain share its first step.
    pub fn derivation(&self, path: &DerivationPath) -> Result<Derivation, KeyError> {
        let key = DerivationKey {
            group_key: self.group_key,
            chain_code: self.chain_code,
            path: path.clone(),
        };
        if let Some(known) = DerivationCache::get(&key) {
            return Ok(known);
        }
        let steps: &[ChildNumber] = path.as_ref();
        let derived = match steps.split_last() {
            Some((last, parent)) if !parent.is_empty() => self
                .derivation(&DerivationPath::from(parent))?
                .extend(&DerivationPath::from(vec![*last]))?,
            _ => self.derivation_uncached(path)?,
        };
        DerivationCache::put(key, derived.clone());
        Ok(derived)
    }
}

impl GroupPublic {
    /// [`GroupPublic::derivation`] without the process's memory of earlier derivations: what
    /// a derivation costs the first time (benches), and a reference for tests.
    ///
    /// # Errors
    /// Fails for hardened steps.
    pub fn derivation_uncached(&self, path: &DerivationPath) -> Result<Derivation, KeyError> {
        Derivation {
            path: DerivationPath::master(),
            tweak: None,
            public_key: self.group_key,
            chain_code: ChainCode::from(self.chain_code),
        }
        .extend(path)
    }
}

/// What a derivation is remembered by: the group's root key and chain code, and the path.
#[derive(PartialEq, Eq, Hash)]
struct DerivationKey {
    group_key: PublicKey,
    chain_code: [u8; 32],
    path: DerivationPath,
}

/// The process-wide memory of [`GroupPublic::derivation`]: public values only (a child key
/// and its tweak follow from the group's public key and chain code), at most
/// [`DerivationCache::CAPACITY`] of them; when full it starts over.
struct DerivationCache;

impl DerivationCache {
    /// About 3 MiB when full: far more addresses than one signing touches.
    const CAPACITY: usize = 16_384;

    fn map() -> &'static Mutex<HashMap<DerivationKey, Derivation>> {
        static MAP: OnceLock<Mutex<HashMap<DerivationKey, Derivation>>> = OnceLock::new();
        MAP.get_or_init(|| Mutex::new(HashMap::new()))
    }

    fn get(key: &DerivationKey) -> Option<Derivation> {
        Self::map()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn put(key: DerivationKey, derivation: Derivation) {
        let mut map = Self::map()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= Self::CAPACITY {
            map.clear();
        }
        map.insert(key, derivation);
    }
}

impl Derivation {
    /// The derivation of `self`'s path followed by `steps` (all non-hardened): lets callers
    /// derive many children of one parent without repeating the parent's steps.
    ///
    /// # Errors
    /// Fails for hardened steps.
    pub fn extend(&self, steps: &DerivationPath) -> Result<Derivation, KeyError> {
        let path = self.path.extend(steps);
        let mut xpub = Xpub {
            network: NetworkKind::Test,
            depth: 0,
            parent_fingerprint: Fingerprint::default(),
            child_number: ChildNumber::Normal { index: 0 },
            public_key: self.public_key,
            chain_code: self.chain_code,
        };
        let mut tweak: Option<SecretKey> = match &self.tweak {
            None => None,
            Some(t) => Some(
                SecretKey::from_slice(&t.to_be_bytes())
                    .map_err(|_| KeyError::InvalidTweak { path: path.clone() })?,
            ),
        };
        for child in steps {
            if child.is_hardened() {
                return Err(KeyError::HardenedPath { path: path.clone() });
            }
            let (step, chain_code) =
                xpub.ckd_pub_tweak(*child)
                    .map_err(|source| KeyError::Bip32 {
                        path: path.clone(),
                        source,
                    })?;
            let public_key = xpub
                .public_key
                .add_exp_tweak(secp(), &Scalar::from(step))
                .map_err(|_| KeyError::InvalidTweak { path: path.clone() })?;
            tweak = Some(match tweak {
                None => step,
                Some(t) => t
                    .add_tweak(&Scalar::from(step))
                    .map_err(|_| KeyError::InvalidTweak { path: path.clone() })?,
            });
            // Only the key and chain code matter for the next step.
            xpub = Xpub {
                public_key,
                chain_code,
                ..xpub
            };
        }
        Ok(Derivation {
            path,
            tweak: tweak.map(Scalar::from),
            public_key: xpub.public_key,
            chain_code: xpub.chain_code,
        })
    }
}

impl GroupPublic {
    /// The public key package of the child at `path`, restricted to `participants` when given
    /// (aggregation needs only the verifying shares of those who signed).
    ///
    /// # Errors
    /// Fails for hardened steps or unknown participants.
    pub fn derive_public_key_package(
        &self,
        derivation: &Derivation,
        participants: Option<&BTreeSet<Identifier>>,
    ) -> Result<PublicKeyPackage, KeyError> {
        let shares = self.public_key_package.verifying_shares();
        let selected: Vec<(&Identifier, &VerifyingShare)> = match participants {
            None => shares.iter().collect(),
            Some(ids) => ids
                .iter()
                .map(|id| {
                    shares
                        .get_key_value(id)
                        .ok_or(KeyError::UnknownParticipant {
                            participant: roster_index(id),
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let mut child_shares = BTreeMap::new();
        for (id, share) in selected {
            let point = derivation.apply_to_point(&point_of(&share.serialize()?)?)?;
            child_shares.insert(*id, VerifyingShare::deserialize(&point.serialize())?);
        }
        let verifying_key = VerifyingKey::deserialize(&derivation.public_key.serialize())?;
        Ok(PublicKeyPackage::new(
            child_shares,
            verifying_key,
            Some(self.threshold),
        ))
    }

    /// The verifying share of `participant` for `spend`: what frost's
    /// `derive_public_key_package(…)` followed by `Tweak::tweak` gives, in one libsecp256k1
    /// step.
    ///
    /// # Errors
    /// Fails for an unknown participant (or an astronomically unlikely invalid tweak).
    pub fn spend_verifying_share(
        &self,
        spend: &SpendKey,
        participant: &Identifier,
    ) -> Result<VerifyingShare, KeyError> {
        Ok(VerifyingShare::deserialize(
            &self.spend_share_point(spend, participant)?.serialize(),
        )?)
    }

    /// [`GroupPublic::spend_verifying_share`] as a libsecp256k1 point.
    ///
    /// # Errors
    /// As [`GroupPublic::spend_verifying_share`].
    pub fn spend_share_point(
        &self,
        spend: &SpendKey,
        participant: &Identifier,
    ) -> Result<PublicKey, KeyError> {
        let root = self
            .share_points
            .get(participant)
            .ok_or(KeyError::UnknownParticipant {
                participant: roster_index(participant),
            })?;
        spend.apply_to_point(root)
    }

    /// The public key package of `spend` (the child key tweaked for its Taproot output),
    /// restricted to `participants`: equal to [`GroupPublic::derive_public_key_package`]
    /// followed by frost's `Tweak::tweak` with the same merkle root, computed with
    /// libsecp256k1 instead of k256.
    ///
    /// # Errors
    /// Fails for unknown participants.
    pub fn spend_public_key_package(
        &self,
        spend: &SpendKey,
        participants: &BTreeSet<Identifier>,
    ) -> Result<PublicKeyPackage, KeyError> {
        let shares = participants
            .iter()
            .map(|id| Ok((*id, self.spend_verifying_share(spend, id)?)))
            .collect::<Result<BTreeMap<_, _>, KeyError>>()?;
        Ok(PublicKeyPackage::new(
            shares,
            spend.verifying_key()?,
            Some(self.threshold),
        ))
    }
}

/// The key of one Taproot key-path spend: the child `P = Q + T·G` at a derivation, lifted to
/// even Y and tweaked by BIP-0341 into the output key `O = even(P) + t·G` (`t` the TapTweak
/// of `P` and the merkle root). Every root share `s_i`, verifying share `Y_i` and the group
/// key `Q` map to their spend counterparts by `x ↦ ±x + τ` (`−` when `P` has odd Y;
/// `τ = ±T + t`): what frost computes in two steps (derive, then `Tweak::tweak`, a k256
/// multiplication each time) is computed once per input here, with libsecp256k1.
#[derive(Clone, PartialEq, Eq)]
pub struct SpendKey {
    path: DerivationPath,
    negate: bool,
    tweak: Scalar,
    output_key: PublicKey,
}

impl fmt::Debug for SpendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpendKey")
            .field("path", &self.path.to_string())
            .field("output_key", &self.output_key.to_string())
            .finish()
    }
}

impl SpendKey {
    /// The spend key of `derivation`'s child for a Taproot output committing to
    /// `merkle_root` (None: no script tree).
    ///
    /// # Errors
    /// Fails only on an invalid tweak (astronomically unlikely).
    pub fn new(
        derivation: &Derivation,
        merkle_root: Option<TapNodeHash>,
    ) -> Result<Self, KeyError> {
        let invalid = || KeyError::InvalidTweak {
            path: derivation.path.clone(),
        };
        let (internal, parity) = derivation.public_key.x_only_public_key();
        let t = TapTweakHash::from_key_and_tweak(internal, merkle_root).to_scalar();
        let (output, output_parity) = internal.add_tweak(secp(), &t).map_err(|_| invalid())?;
        let negate = parity == Parity::Odd;
        let tweak = match &derivation.tweak {
            None => t,
            Some(child) => {
                let child = SecretKey::from_slice(&child.to_be_bytes()).map_err(|_| invalid())?;
                let child = if negate { child.negate() } else { child };
                Scalar::from(child.add_tweak(&t).map_err(|_| invalid())?)
            }
        };
        Ok(SpendKey {
            path: derivation.path.clone(),
            negate,
            tweak,
            output_key: PublicKey::from_x_only_public_key(output, output_parity),
        })
    }

    /// The derivation path of the child.
    pub fn path(&self) -> &DerivationPath {
        &self.path
    }

    /// The Taproot output key (x-only): what the output's script pays and every signature
    /// must verify under.
    pub fn output_key(&self) -> XOnlyPublicKey {
        self.output_key.x_only_public_key().0
    }

    /// The output key as frost's verifying key (with its Y parity, as frost's `Tweak` leaves
    /// it).
    ///
    /// # Errors
    /// Never in practice (a valid point always encodes).
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        Ok(VerifyingKey::deserialize(&self.output_key.serialize())?)
    }

    /// Whether the output key has odd Y (frost's aggregation then negates the verifying key
    /// and every verifying share).
    pub fn output_key_is_odd(&self) -> bool {
        self.output_key.x_only_public_key().1 == Parity::Odd
    }

    /// The output key lifted to even Y, as BIP-0340 (and frost's aggregation) uses it.
    ///
    /// # Errors
    /// Never in practice.
    pub fn even_verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        let even = PublicKey::from_x_only_public_key(self.output_key(), Parity::Even);
        Ok(VerifyingKey::deserialize(&even.serialize())?)
    }

    fn invalid(&self) -> KeyError {
        KeyError::InvalidTweak {
            path: self.path.clone(),
        }
    }

    /// `±point + τ·G`.
    fn apply_to_point(&self, point: &PublicKey) -> Result<PublicKey, KeyError> {
        let point = if self.negate {
            point.negate(secp())
        } else {
            *point
        };
        point
            .add_exp_tweak(secp(), &self.tweak)
            .map_err(|_| self.invalid())
    }
}

/// A non-hardened derivation from the group root: the path, the additive tweak `T` and the
/// child public key `Q + T·G`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derivation {
    path: DerivationPath,
    tweak: Option<Scalar>,
    public_key: PublicKey,
    chain_code: ChainCode,
}

impl Derivation {
    /// The derivation path.
    pub fn path(&self) -> &DerivationPath {
        &self.path
    }

    /// The child public key (full, with its Y parity).
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// The child's x-only key: the Taproot internal key of addresses at this path.
    pub fn internal_key(&self) -> XOnlyPublicKey {
        self.public_key.x_only_public_key().0
    }

    fn apply_to_point(&self, point: &PublicKey) -> Result<PublicKey, KeyError> {
        match &self.tweak {
            None => Ok(*point),
            Some(t) => point
                .add_exp_tweak(secp(), t)
                .map_err(|_| KeyError::InvalidTweak {
                    path: self.path.clone(),
                }),
        }
    }
}

/// One signer's share of a FROST group: its key package (secret) and the group's public side.
///
/// The secret signing share is zeroized when this value drops (frost's `KeyPackage` does so
/// on drop); `Debug` never prints it.
#[derive(Clone)]
pub struct KeyShare {
    key_package: KeyPackage,
    group: GroupPublic,
}

impl fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyShare")
            .field("participant", &roster_index(self.key_package.identifier()))
            .field("group", &self.group)
            .field("signing_share", &"<redacted>")
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct KeyShareRepr {
    version: u8,
    #[serde(with = "hex::serde")]
    key_package: Vec<u8>,
    group: GroupPublic,
}

impl KeyShare {
    /// Pairs a DKG key package with the group's public side, normalising the key package to
    /// the same even-Y group key.
    ///
    /// # Errors
    /// Fails when the key package is not one of the group's (different group key, verifying
    /// share or threshold).
    pub fn new(key_package: KeyPackage, group: GroupPublic) -> Result<Self, KeyError> {
        let key_package = key_package.into_even_y(None);
        let id = *key_package.identifier();
        let participant = roster_index(&id);
        let expected_share = group
            .public_key_package
            .verifying_shares()
            .get(&id)
            .ok_or(KeyError::UnknownParticipant { participant })?;
        if key_package.verifying_key() != group.public_key_package.verifying_key()
            || key_package.verifying_share() != expected_share
            || *key_package.min_signers() != group.threshold
        {
            return Err(KeyError::Mismatch { participant });
        }
        let derived = PublicKey::from_secret_key(secp(), &secret_of(key_package.signing_share())?);
        if derived.serialize().as_slice() != expected_share.serialize()?.as_slice() {
            return Err(KeyError::Mismatch { participant });
        }
        Ok(KeyShare { key_package, group })
    }

    /// This share's participant identifier.
    pub fn identifier(&self) -> Identifier {
        *self.key_package.identifier()
    }

    /// The group's public side.
    pub fn group(&self) -> &GroupPublic {
        &self.group
    }

    /// The root key package (secret), for the lifecycle protocols (refresh, repair).
    pub fn key_package(&self) -> &KeyPackage {
        &self.key_package
    }

    /// The root signing share, for nonce generation only (frost mixes it into the nonces).
    pub fn root_signing_share(&self) -> &SigningShare {
        self.key_package.signing_share()
    }

    /// The key package of the child at `derivation` (`s_i + T`, `Y_i + T·G`, `Q + T·G`).
    ///
    /// # Errors
    /// Fails only on an invalid tweak (astronomically unlikely).
    pub fn derive(&self, derivation: &Derivation) -> Result<KeyPackage, KeyError> {
        let Some(tweak) = &derivation.tweak else {
            return Ok(self.key_package.clone());
        };
        let invalid = || KeyError::InvalidTweak {
            path: derivation.path.clone(),
        };
        let mut secret = secret_of(self.key_package.signing_share())?;
        let child_secret = secret.add_tweak(tweak).map_err(|_| invalid());
        secret.non_secure_erase();
        let mut child_secret = child_secret?;
        let child_bytes = Zeroizing::new(child_secret.secret_bytes());
        child_secret.non_secure_erase();
        let signing_share = SigningShare::deserialize(child_bytes.as_slice())?;
        let verifying_share = derivation
            .apply_to_point(&point_of(&self.key_package.verifying_share().serialize()?)?)?;
        Ok(KeyPackage::new(
            *self.key_package.identifier(),
            signing_share,
            VerifyingShare::deserialize(&verifying_share.serialize())?,
            VerifyingKey::deserialize(&derivation.public_key.serialize())?,
            *self.key_package.min_signers(),
        ))
    }

    /// The key package that signs `spend` with frost's plain `round2::sign`: equal to
    /// [`KeyShare::derive`] followed by frost's `Tweak::tweak` with the spend's merkle root
    /// (what `round2::sign_with_tweak` would do), computed with libsecp256k1 in one step.
    ///
    /// # Errors
    /// Fails only on an invalid tweak (astronomically unlikely).
    pub fn spend_key_package(&self, spend: &SpendKey) -> Result<KeyPackage, KeyError> {
        let id = *self.key_package.identifier();
        let mut secret = secret_of(self.key_package.signing_share())?;
        if spend.negate {
            secret = secret.negate();
        }
        let child_secret = secret.add_tweak(&spend.tweak).map_err(|_| spend.invalid());
        secret.non_secure_erase();
        let mut child_secret = child_secret?;
        let child_bytes = Zeroizing::new(child_secret.secret_bytes());
        child_secret.non_secure_erase();
        let signing_share = SigningShare::deserialize(child_bytes.as_slice())?;
        Ok(KeyPackage::new(
            id,
            signing_share,
            self.group.spend_verifying_share(spend, &id)?,
            spend.verifying_key()?,
            *self.key_package.min_signers(),
        ))
    }

    /// Encodes the share (secret!) for encrypted storage. The buffer is zeroized on drop.
    ///
    /// # Errors
    /// Fails only if frost cannot serialize its own key package.
    pub fn to_secret_bytes(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let repr = KeyShareRepr {
            version: 1,
            key_package: self.key_package.serialize()?,
            group: self.group.clone(),
        };
        let out = serde_json::to_vec(&repr).map_err(|e| KeyError::Encoding(e.to_string()));
        let KeyShareRepr {
            key_package: mut kp,
            ..
        } = repr;
        zeroize::Zeroize::zeroize(&mut kp);
        out.map(Zeroizing::new)
    }

    /// Decodes a share written by [`KeyShare::to_secret_bytes`], checking it against its group.
    ///
    /// # Errors
    /// Fails on malformed bytes or an inconsistent share.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let repr: KeyShareRepr =
            serde_json::from_slice(bytes).map_err(|e| KeyError::Encoding(e.to_string()))?;
        if repr.version != 1 {
            return Err(KeyError::Encoding(format!(
                "unsupported key share version {}",
                repr.version
            )));
        }
        let key_package = Zeroizing::new(repr.key_package);
        KeyShare::new(KeyPackage::deserialize(&key_package)?, repr.group)
    }
}

fn secret_of(share: &SigningShare) -> Result<SecretKey, KeyError> {
    let bytes = Zeroizing::new(share.serialize());
    SecretKey::from_slice(&bytes).map_err(|e: secp256k1::Error| KeyError::Encoding(e.to_string()))
}
