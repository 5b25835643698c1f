//! Keys that outlive their servers: epoch transitions of a wallet's shares without moving
//! funds — refresh (every share changes), remove a signer (a refresh among the others),
//! repair a lost share and enrol a new signer (the repairable threshold scheme) — each a
//! certified, two-phase transition from one [`WalletState`] to the next.
//!
//! Every transition starts from a state all members agree on (its hash is in the
//! [`TransitionContext`]), runs the FROST primitives of frost-secp256k1-tr 3.0
//! (`keys::refresh`, `keys::repairable`) with every secret package sealed end to end to the
//! recipient's identity key (bound to the context), and ends with every member of the new
//! roster certifying (identity key) the new state. Signers then *prepare* (store the new share
//! beside the old one, sealed, pending) and, once the coordinator has every preparation, it
//! *commits*: the new epoch becomes current and the old share is erased. Until the commit the
//! old epoch is whole; after it the new one is, on every member.
//!
//! The Taproot tweak: the group key is the one `dkg::part3` produced (tweaked, even Y);
//! refresh and repair never change it (checked), and the verifying shares stay on the same
//! even-Y normalisation because every secret input is the normalised share ckm signs with.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bitcoin::hashes::{sha256t_hash_newtype, Hash, HashEngine};
use frost::keys::dkg::{round1, round2};
use frost::keys::repairable::{Delta, Sigma};
use frost::keys::{PublicKeyPackage, VerifyingShare};
use frost::{Field, Group, Identifier, Secp256K1Group, Secp256K1ScalarField, Secp256K1Sha256TR};
use frost_secp256k1_tr as frost;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::dkg::{Certificate, CertifiedKeygen};
use super::SessionId;
use crate::frost::pedersen::group_from_broadcasts;
use crate::frost::{identifier, shares::roster_index};
use crate::identity::{IdentityError, IdentityKey, IdentityPublic, Sealed};
use crate::keys::{GroupKey, GroupPublic, KeyShare, Roster, RosterEntry};

/// The version of [`TransitionContext`] this build writes and accepts.
pub const TRANSITION_VERSION: u16 = 1;

sha256t_hash_newtype! {
    struct StateTag = hash_str("ckm/wallet-state/v1");
    #[hash_newtype(forward)]
    struct StateDigest(_);

    struct ContextTag = hash_str("ckm/transition-context/v1");
    #[hash_newtype(forward)]
    struct ContextDigest(_);

    struct TranscriptTag = hash_str("ckm/transition-transcript/v1");
    #[hash_newtype(forward)]
    struct TranscriptDigest(_);

    struct CertificateTag = hash_str("ckm/transition-certificate/v1");
    #[hash_newtype(forward)]
    struct CertificateDigest(_);
}

const CERTIFICATE_DOMAIN: &str = "transition-certificate";

type Scalar = <Secp256K1ScalarField as Field>::Scalar;
type Element = <Secp256K1Group as Group>::Element;

/// A 32-byte hash (hex in JSON).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Digest(#[serde(with = "hex::serde")] pub [u8; 32]);

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({}…)", hex::encode(&self.0[..8]))
    }
}

// ---------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------

/// A wallet's public state at one epoch: who holds the shares (roster) and their verifying
/// shares (in the group's public key package). Epoch 0 is the certified key generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletState {
    /// The epoch (0 at key generation; each committed transition adds one).
    pub epoch: u64,
    /// The members (indexes are FROST identifiers; a removed signer's index stays free).
    pub roster: Roster,
    /// The group's public side (verifying shares of exactly the roster's indexes).
    pub group: GroupPublic,
}

impl WalletState {
    /// The state a certified key generation starts the wallet in.
    pub fn genesis(keygen: &CertifiedKeygen, group: &GroupPublic) -> Self {
        WalletState {
            epoch: 0,
            roster: keygen.context.roster.clone(),
            group: group.clone(),
        }
    }

    /// The hash members agree on.
    pub fn hash(&self) -> Digest {
        let mut e = StateDigest::engine();
        e.input(&self.epoch.to_be_bytes());
        e.input(&GroupKey::of(&self.group).to_bytes());
        e.input(&self.group.chain_code());
        e.input(&self.group.threshold().to_be_bytes());
        // Members by index and identity key; URLs and TLS pins are transport details that
        // may change (pin rotation) without a transition.
        for m in self.roster.entries() {
            e.input(&m.index.to_be_bytes());
            e.input(&m.identity.to_bytes());
        }
        for (id, share) in self.group.public_key_package().verifying_shares() {
            e.input(&roster_index(id).to_be_bytes());
            e.input(&share.serialize().unwrap_or_default());
        }
        Digest(StateDigest::from_engine(e).to_byte_array())
    }

    /// The roster indexes and the public key package's identifiers are the same set.
    pub fn is_consistent(&self) -> bool {
        let ids: BTreeSet<u16> = self.group.identifiers().map(roster_index).collect();
        let roster: BTreeSet<u16> = self.roster.indexes().into_iter().collect();
        ids == roster && self.roster.len() >= self.group.threshold()
    }
}

// ---------------------------------------------------------------------------------------
// Context
// ---------------------------------------------------------------------------------------

/// What a transition does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    /// Every member's share changes; the group key and addresses stay.
    Refresh,
    /// A refresh among the other members: the removed one's share no longer combines.
    Remove(u16),
    /// The member at this index gets its share back under a new identity key.
    Repair(u16),
    /// A new member is enrolled at this index.
    Enrol(u16),
}

impl TransitionKind {
    /// The index of the member who joins (repair, enrol).
    pub fn newcomer(self) -> Option<u16> {
        match self {
            TransitionKind::Repair(i) | TransitionKind::Enrol(i) => Some(i),
            _ => None,
        }
    }

    /// Whether the members run the refresh rounds (refresh, remove).
    pub fn refreshes(self) -> bool {
        matches!(self, TransitionKind::Refresh | TransitionKind::Remove(_))
    }
}

impl fmt::Display for TransitionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransitionKind::Refresh => f.write_str("refresh"),
            TransitionKind::Remove(i) => write!(f, "removal of signer {i}"),
            TransitionKind::Repair(i) => write!(f, "repair of signer {i}"),
            TransitionKind::Enrol(i) => write!(f, "enrolment of signer {i}"),
        }
    }
}

/// Everything the members of a transition agree on before it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionContext {
    /// [`TRANSITION_VERSION`].
    pub version: u16,
    /// The session.
    pub session: SessionId,
    /// What it does.
    pub kind: TransitionKind,
    /// The wallet.
    pub wallet: GroupKey,
    /// The coordinator running it.
    pub coordinator: IdentityPublic,
    /// The epoch it starts from.
    pub from_epoch: u64,
    /// The hash of the state it starts from.
    pub from_state: Digest,
    /// The roster after it.
    pub new_roster: Roster,
    /// Who runs the secret part: every member of the new roster for a refresh or removal,
    /// `t` (or more) current members for a repair or enrolment.
    pub helpers: Vec<u16>,
}

/// Why a transition is refused or fails. Members are named by roster index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransitionError {
    /// Another context version.
    #[error("unsupported transition version {0} (this build speaks {TRANSITION_VERSION})")]
    Version(u16),
    /// The context does not start from this member's state.
    #[error("the transition starts from epoch {claimed} (state {claimed_hash:?}) but this signer's wallet is at epoch {epoch} (state {hash:?})")]
    WrongState {
        /// Epoch claimed.
        claimed: u64,
        /// State claimed.
        claimed_hash: Digest,
        /// Our epoch.
        epoch: u64,
        /// Our state.
        hash: Digest,
    },
    /// The context is not a well-formed transition of its kind.
    #[error("invalid {kind}: {reason}")]
    Malformed {
        /// The kind.
        kind: TransitionKind,
        /// What is wrong.
        reason: String,
    },
    /// A newcomer the operator did not approve.
    #[error("the new member {index} ({identity}) is not an approved peer of this signer; if you trust its operator, approve it with `ckm signer peers add {identity}`")]
    UnapprovedPeer {
        /// Its index.
        index: u16,
        /// Its identity.
        identity: IdentityPublic,
    },
    /// A message for another session or in the wrong order.
    #[error("the message does not belong to this transition or comes out of order")]
    Session,
    /// A sealed package did not open.
    #[error("cannot open the sealed package of member {from}")]
    Open {
        /// The sender.
        from: u16,
        /// The cause.
        #[source]
        source: IdentityError,
    },
    /// Packages missing or extra.
    #[error("expected packages from {expected:?}, got {got:?}")]
    Packages {
        /// Expected senders.
        expected: Vec<u16>,
        /// Actual senders.
        got: Vec<u16>,
    },
    /// Transcript hashes differ.
    #[error("members {0:?} saw other round-1 packages")]
    TranscriptMismatch(Vec<u16>),
    /// frost rejected a package or a computation (culprit named when frost names one).
    #[error("frost rejected the transition{}", culprit.map(|c| format!(" (member {c})")).unwrap_or_default())]
    Frost {
        /// The member blamed.
        culprit: Option<u16>,
        /// The cause.
        #[source]
        source: frost::Error,
    },
    /// The result is not consistent (group key changed, share not matching its verifying
    /// share, …).
    #[error("the transition's result is inconsistent: {0}")]
    Inconsistent(String),
    /// A certificate is missing or does not verify.
    #[error("the certificate of member {index} ({identity}) is missing or does not verify")]
    Certificate {
        /// The member.
        index: u16,
        /// Its identity.
        identity: IdentityPublic,
    },
    /// The record of the wallet's history does not check out.
    #[error("the wallet's history does not check out: {0}")]
    History(String),
}

fn frost_err(source: frost::Error) -> TransitionError {
    let culprit = source.culprits().first().map(roster_index);
    TransitionError::Frost { culprit, source }
}

fn malformed(kind: TransitionKind, reason: impl Into<String>) -> TransitionError {
    TransitionError::Malformed {
        kind,
        reason: reason.into(),
    }
}

fn same_members(a: &Roster, b: &Roster) -> bool {
    a.entries().len() == b.entries().len()
        && a.entries()
            .iter()
            .zip(b.entries())
            .all(|(x, y)| x.index == y.index && x.identity == y.identity)
}

impl TransitionContext {
    /// The hash bound into every sealed package and certificate.
    pub fn hash(&self) -> Digest {
        let mut e = ContextDigest::engine();
        e.input(&self.version.to_be_bytes());
        e.input(&self.session.0);
        let (tag, index) = match self.kind {
            TransitionKind::Refresh => (0u8, 0u16),
            TransitionKind::Remove(i) => (1, i),
            TransitionKind::Repair(i) => (2, i),
            TransitionKind::Enrol(i) => (3, i),
        };
        e.input(&[tag]);
        e.input(&index.to_be_bytes());
        e.input(&self.wallet.to_bytes());
        e.input(&self.coordinator.to_bytes());
        e.input(&self.from_epoch.to_be_bytes());
        e.input(&self.from_state.0);
        for m in self.new_roster.entries() {
            e.input(&m.index.to_be_bytes());
            e.input(&m.identity.to_bytes());
        }
        e.input(&(self.helpers.len() as u64).to_be_bytes());
        for h in &self.helpers {
            e.input(&h.to_be_bytes());
        }
        Digest(ContextDigest::from_engine(e).to_byte_array())
    }

    /// The members of the new roster who were not members before.
    pub fn newcomers<'a>(&'a self, from: &'a WalletState) -> impl Iterator<Item = &'a RosterEntry> {
        self.new_roster
            .entries()
            .iter()
            .filter(move |e| from.roster.index_of(&e.identity) != Some(e.index))
    }

    /// Checks that this is a well-formed transition of its kind from `from`.
    ///
    /// # Errors
    /// [`TransitionError`] naming the problem.
    pub fn check(&self, from: &WalletState) -> Result<(), TransitionError> {
        let kind = self.kind;
        if self.version != TRANSITION_VERSION {
            return Err(TransitionError::Version(self.version));
        }
        if self.wallet != GroupKey::of(&from.group) {
            return Err(malformed(kind, "it is for another wallet"));
        }
        if self.from_epoch != from.epoch || self.from_state != from.hash() {
            return Err(TransitionError::WrongState {
                claimed: self.from_epoch,
                claimed_hash: self.from_state,
                epoch: from.epoch,
                hash: from.hash(),
            });
        }
        if self.new_roster.index_of(&self.coordinator).is_some() {
            return Err(malformed(kind, "the coordinator is listed as a member"));
        }
        let t = usize::from(from.group.threshold());
        let helpers: BTreeSet<u16> = self.helpers.iter().copied().collect();
        if helpers.len() != self.helpers.len() {
            return Err(malformed(kind, "a helper is listed twice"));
        }
        let new_indexes = self.new_roster.indexes();
        match kind {
            TransitionKind::Refresh => {
                if !same_members(&self.new_roster, &from.roster) {
                    return Err(malformed(kind, "the roster must stay the same"));
                }
                if self.helpers != new_indexes {
                    return Err(malformed(kind, "every member takes part"));
                }
            }
            TransitionKind::Remove(i) => {
                let expected = from
                    .roster
                    .without(i)
                    .map_err(|e| malformed(kind, e.to_string()))?;
                if from.roster.get(i).is_none() || !same_members(&self.new_roster, &expected) {
                    return Err(malformed(
                        kind,
                        format!("the roster must be the current one without {i}"),
                    ));
                }
                if self.new_roster.entries().len() < t {
                    return Err(malformed(
                        kind,
                        format!("fewer than the threshold ({t}) would remain"),
                    ));
                }
                if self.helpers != new_indexes {
                    return Err(malformed(kind, "every remaining member takes part"));
                }
            }
            TransitionKind::Repair(i) | TransitionKind::Enrol(i) => {
                let repair = matches!(kind, TransitionKind::Repair(_));
                if repair != from.roster.get(i).is_some() || i == 0 {
                    return Err(malformed(
                        kind,
                        if repair {
                            format!("{i} is not a member")
                        } else {
                            format!("{i} is already a member or not a valid index")
                        },
                    ));
                }
                let newcomer = self
                    .new_roster
                    .get(i)
                    .ok_or_else(|| malformed(kind, format!("the new roster lacks {i}")))?;
                if from.roster.index_of(&newcomer.identity).is_some() {
                    return Err(malformed(
                        kind,
                        "the newcomer's identity is already a member's",
                    ));
                }
                let expected = from
                    .roster
                    .with(newcomer.clone())
                    .map_err(|e| malformed(kind, e.to_string()))?;
                if !same_members(&self.new_roster, &expected) {
                    return Err(malformed(kind, "only the newcomer may change"));
                }
                if helpers.len() < t
                    || helpers.contains(&i)
                    || helpers.iter().any(|h| from.roster.get(*h).is_none())
                {
                    return Err(malformed(
                        kind,
                        format!("it needs at least {t} helpers among the current members, not the newcomer"),
                    ));
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Arithmetic on the public side
// ---------------------------------------------------------------------------------------

fn scalar_of(x: u64) -> Scalar {
    let mut b = [0u8; 32];
    b[24..].copy_from_slice(&x.to_be_bytes());
    // Small integers are always valid scalars.
    <Secp256K1ScalarField as Field>::deserialize(&b)
        .unwrap_or_else(|_| <Secp256K1ScalarField as Field>::zero())
}

fn element_of(bytes: &[u8]) -> Result<Element, TransitionError> {
    let arr: [u8; 33] = bytes
        .try_into()
        .map_err(|_| TransitionError::Inconsistent("a point is not 33 bytes".into()))?;
    <Secp256K1Group as Group>::deserialize(&arr)
        .map_err(|_| TransitionError::Inconsistent("a point does not decode".into()))
}

fn share_of(element: Element) -> Result<VerifyingShare, TransitionError> {
    let bytes = <Secp256K1Group as Group>::serialize(&element)
        .map_err(|_| TransitionError::Inconsistent("the identity as a verifying share".into()))?;
    VerifyingShare::deserialize(&bytes).map_err(frost_err)
}

/// The group after a refresh among `round1`'s senders: every participant's verifying share
/// plus the zero polynomials' evaluations at its identifier (their constant terms are the
/// identity); non-participants are dropped. What `refresh_dkg_shares` computes, from public
/// values only.
///
/// # Errors
/// Malformed commitments, or a participant the old group does not know.
pub fn refreshed_group(
    old: &GroupPublic,
    round1: &BTreeMap<u16, round1::Package>,
) -> Result<GroupPublic, TransitionError> {
    let old_pkp = old.public_key_package();
    let mut shares = BTreeMap::new();
    for index in round1.keys() {
        let id = identifier(*index).map_err(frost_err)?;
        let old_share = old_pkp
            .verifying_shares()
            .get(&id)
            .ok_or_else(|| TransitionError::Inconsistent(format!("member {index} has no share")))?;
        let x = scalar_of(u64::from(*index));
        let mut acc = element_of(&old_share.serialize().map_err(frost_err)?)?;
        for package in round1.values() {
            // Coefficients 1..t-1 of a zero polynomial (the constant term is the identity).
            let mut power = x;
            for c in package.commitment().serialize().map_err(frost_err)? {
                acc += element_of(&c)? * power;
                power *= x;
            }
        }
        shares.insert(id, share_of(acc)?);
    }
    let pkp = PublicKeyPackage::new(shares, *old_pkp.verifying_key(), Some(old.threshold()));
    GroupPublic::new(pkp, old.chain_code())
        .map_err(|e| TransitionError::Inconsistent(e.to_string()))
}

/// The verifying share a member enrolled at `index` must have: the Lagrange interpolation at
/// `index` of the verifying shares of `helpers`.
///
/// # Errors
/// Unknown helpers or malformed shares.
pub fn enrolled_share(
    group: &GroupPublic,
    helpers: &[u16],
    index: u16,
) -> Result<VerifyingShare, TransitionError> {
    let x = scalar_of(u64::from(index));
    let mut acc = <Secp256K1Group as Group>::identity();
    for &i in helpers {
        let xi = scalar_of(u64::from(i));
        let mut num = <Secp256K1ScalarField as Field>::one();
        let mut den = <Secp256K1ScalarField as Field>::one();
        for &j in helpers {
            if j == i {
                continue;
            }
            let xj = scalar_of(u64::from(j));
            num *= x - xj;
            den *= xi - xj;
        }
        let inv = <Secp256K1ScalarField as Field>::invert(&den)
            .map_err(|_| TransitionError::Inconsistent("two helpers share an index".into()))?;
        let id = identifier(i).map_err(frost_err)?;
        let share = group
            .public_key_package()
            .verifying_shares()
            .get(&id)
            .ok_or_else(|| TransitionError::Inconsistent(format!("helper {i} has no share")))?;
        acc += element_of(&share.serialize().map_err(frost_err)?)? * (num * inv);
    }
    share_of(acc)
}

/// The state after a transition, from the state before and what the transition's public
/// record determines (the refresh commitments; for a repair nothing else).
///
/// # Errors
/// The inputs do not fit together.
pub fn next_state(
    from: &WalletState,
    context: &TransitionContext,
    round1: &BTreeMap<u16, round1::Package>,
) -> Result<WalletState, TransitionError> {
    let group = match context.kind {
        TransitionKind::Refresh | TransitionKind::Remove(_) => {
            let got: Vec<u16> = round1.keys().copied().collect();
            if got != context.helpers {
                return Err(TransitionError::Packages {
                    expected: context.helpers.clone(),
                    got,
                });
            }
            refreshed_group(&from.group, round1)?
        }
        TransitionKind::Repair(_) => from.group.clone(),
        TransitionKind::Enrol(i) => {
            let share = enrolled_share(&from.group, &context.helpers, i)?;
            let old = from.group.public_key_package();
            let mut shares = old.verifying_shares().clone();
            shares.insert(identifier(i).map_err(frost_err)?, share);
            let pkp =
                PublicKeyPackage::new(shares, *old.verifying_key(), Some(from.group.threshold()));
            GroupPublic::new(pkp, from.group.chain_code())
                .map_err(|e| TransitionError::Inconsistent(e.to_string()))?
        }
    };
    if GroupKey::of(&group) != GroupKey::of(&from.group) {
        return Err(TransitionError::Inconsistent(
            "the group key changed".into(),
        ));
    }
    let state = WalletState {
        epoch: from.epoch + 1,
        roster: context.new_roster.clone(),
        group,
    };
    if !state.is_consistent() {
        return Err(TransitionError::Inconsistent(
            "the roster and the verifying shares differ".into(),
        ));
    }
    Ok(state)
}

// ---------------------------------------------------------------------------------------
// Transcript, certificates, record
// ---------------------------------------------------------------------------------------

/// The transcript: the context and every refresh round-1 package (none for a repair).
pub fn transcript(
    context: &TransitionContext,
    round1: &BTreeMap<u16, round1::Package>,
) -> Result<Digest, TransitionError> {
    let mut e = TranscriptDigest::engine();
    e.input(&context.hash().0);
    for (i, p) in round1 {
        e.input(&i.to_be_bytes());
        let bytes = p.serialize().map_err(frost_err)?;
        e.input(&(bytes.len() as u64).to_be_bytes());
        e.input(&bytes);
    }
    Ok(Digest(TranscriptDigest::from_engine(e).to_byte_array()))
}

fn certificate_message(transcript: &Digest, state: &Digest) -> [u8; 32] {
    let mut e = CertificateDigest::engine();
    e.input(&transcript.0);
    e.input(&state.0);
    CertificateDigest::from_engine(e).to_byte_array()
}

/// A member's certificate of a transition's result.
pub fn certify(key: &IdentityKey, transcript: &Digest, state: &Digest) -> Certificate {
    Certificate(key.sign(CERTIFICATE_DOMAIN, &certificate_message(transcript, state)))
}

fn check_certificate(
    identity: &IdentityPublic,
    certificate: &Certificate,
    transcript: &Digest,
    state: &Digest,
) -> bool {
    identity
        .verify(
            CERTIFICATE_DOMAIN,
            &certificate_message(transcript, state),
            &certificate.0,
        )
        .is_ok()
}

/// Checks that every member of `state.roster` certified `state` under `transcript`.
///
/// # Errors
/// [`TransitionError::Certificate`] naming the first missing or bad one.
pub fn check_certificates(
    certificates: &BTreeMap<u16, Certificate>,
    transcript: &Digest,
    state: &WalletState,
) -> Result<(), TransitionError> {
    let hash = state.hash();
    for m in state.roster.entries() {
        let ok = certificates
            .get(&m.index)
            .is_some_and(|c| check_certificate(&m.identity, c, transcript, &hash));
        if !ok {
            return Err(TransitionError::Certificate {
                index: m.index,
                identity: m.identity,
            });
        }
    }
    if certificates.len() != state.roster.entries().len() {
        return Err(TransitionError::Inconsistent(
            "certificates from non-members".into(),
        ));
    }
    Ok(())
}

/// A committed transition: its context, its public round-1 packages, the state it leads to
/// and every new member's certificate. Public; kept by the coordinator and by every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedTransition {
    /// The context.
    pub context: TransitionContext,
    /// The refresh round-1 packages (empty for a repair or enrolment).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub round1: BTreeMap<u16, round1::Package>,
    /// The resulting state.
    pub state: WalletState,
    /// Every new member's certificate.
    pub certificates: BTreeMap<u16, Certificate>,
}

impl CertifiedTransition {
    /// Re-checks the transition from `from`: the context, the resulting state recomputed from
    /// the public record, and every certificate. Returns the resulting state.
    ///
    /// # Errors
    /// [`TransitionError`] naming the problem.
    pub fn verify(&self, from: &WalletState) -> Result<WalletState, TransitionError> {
        self.context.check(from)?;
        let state = next_state(from, &self.context, &self.round1)?;
        if state.hash() != self.state.hash() || state.group != self.state.group {
            return Err(TransitionError::History(format!(
                "the recorded state of epoch {} is not the one its record determines",
                self.state.epoch
            )));
        }
        let transcript = transcript(&self.context, &self.round1)?;
        check_certificates(&self.certificates, &transcript, &state)?;
        Ok(state)
    }
}

/// A wallet's whole certified history: its key generation and every transition since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The key generation.
    pub keygen: CertifiedKeygen,
    /// Every committed transition, in order.
    #[serde(default)]
    pub transitions: Vec<CertifiedTransition>,
}

impl History {
    /// Re-checks everything from the key generation's round-1 commitments to the last
    /// transition; returns the current state.
    ///
    /// # Errors
    /// [`TransitionError::History`] or the failing step's error.
    pub fn verify(&self) -> Result<WalletState, TransitionError> {
        let broadcasts = self
            .keygen
            .round1
            .iter()
            .map(|(i, b)| identifier(*i).map(|id| (id, b.clone())))
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map_err(frost_err)?;
        let group = group_from_broadcasts(&broadcasts)
            .map_err(|e| TransitionError::History(e.to_string()))?;
        self.keygen
            .verify(&group)
            .map_err(|e| TransitionError::History(e.to_string()))?;
        let mut state = WalletState::genesis(&self.keygen, &group);
        for t in &self.transitions {
            t.verify(&state)?;
            state = t.state.clone();
        }
        Ok(state)
    }
}

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

/// What a newcomer (repair, enrolment) is told about the wallet it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joining {
    /// The wallet's name.
    pub name: String,
    /// Its network.
    pub network: bitcoin::Network,
    /// The coordinator that created it.
    pub creator: IdentityPublic,
    /// Its certified history, ending at the state the transition starts from.
    pub history: History,
}

/// Coordinator → signer messages of a transition.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)]
pub enum TransitionRequest {
    /// Take part (a newcomer also gets what it joins).
    Begin {
        /// The context.
        context: TransitionContext,
        /// For the newcomer only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        joining: Option<Joining>,
    },
    /// Refresh: every participant's round-1 package.
    RefreshRound1 {
        /// Session.
        session: SessionId,
        /// Packages by index.
        packages: BTreeMap<u16, round1::Package>,
    },
    /// Refresh: the sealed packages for the recipient and every transcript hash.
    RefreshRound2 {
        /// Session.
        session: SessionId,
        /// Sealed packages by sender.
        sealed: BTreeMap<u16, Sealed>,
        /// Transcripts by member.
        transcripts: BTreeMap<u16, Digest>,
    },
    /// Repair: the deltas the other helpers sealed to the recipient.
    RepairDeltas {
        /// Session.
        session: SessionId,
        /// Sealed deltas by sender.
        sealed: BTreeMap<u16, Sealed>,
    },
    /// Repair: the sigmas the helpers sealed to the newcomer.
    RepairSigmas {
        /// Session.
        session: SessionId,
        /// Sealed sigmas by helper.
        sealed: BTreeMap<u16, Sealed>,
    },
    /// Certify the new state (members who kept their share).
    Certify {
        /// Session.
        session: SessionId,
    },
    /// Check every certificate and store the new share as pending.
    Prepare {
        /// Session.
        session: SessionId,
        /// Certificates by member.
        certificates: BTreeMap<u16, Certificate>,
    },
    /// Make the pending epoch current and erase the old share.
    Commit {
        /// Session.
        session: SessionId,
    },
    /// Forget the transition (and its pending share).
    Abort {
        /// Session.
        session: SessionId,
    },
    /// Where is this signer's wallet?
    Status {
        /// The wallet.
        wallet: GroupKey,
    },
}

/// Signer → coordinator answers of a transition.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionAnswer {
    /// Joined; for a refresh, the round-1 package.
    Begun {
        /// The refresh round-1 package (refresh, removal).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        package: Option<round1::Package>,
        /// Sealed deltas for the other helpers (repair, enrolment helpers).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        deltas: BTreeMap<u16, Sealed>,
    },
    /// Refresh round 2: transcript and sealed packages by recipient.
    RefreshSealed {
        /// The sender's transcript.
        transcript: Digest,
        /// Sealed packages by recipient.
        sealed: BTreeMap<u16, Sealed>,
    },
    /// Repair: the sigma sealed to the newcomer.
    Sigma {
        /// The sealed sigma.
        sealed: Sealed,
    },
    /// The member's certificate of the new state.
    Certified {
        /// The new state's hash as this member computed it.
        state: Digest,
        /// The certificate.
        certificate: Certificate,
    },
    /// The new share is stored, pending.
    Prepared,
    /// The new epoch is current.
    Committed {
        /// The epoch now current.
        epoch: u64,
    },
    /// Forgotten.
    Aborted,
    /// Where the wallet is.
    Status {
        /// Current epoch.
        epoch: u64,
        /// Current state hash.
        state: Digest,
        /// A pending transition (session, epoch it leads to).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pending: Option<(SessionId, u64)>,
    },
}

// ---------------------------------------------------------------------------------------
// Participant half
// ---------------------------------------------------------------------------------------

/// Opens a package that roster member `from` sealed to this member under `aad`.
fn open_sealed(
    me: &IdentityKey,
    roster: &Roster,
    kind: TransitionKind,
    aad: &[u8],
    from: u16,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, TransitionError> {
    let sender = roster
        .get(from)
        .ok_or_else(|| malformed(kind, format!("{from} is not a member")))?;
    me.open(&sender.identity, aad, sealed)
        .map_err(|source| TransitionError::Open { from, source })
}

fn sealed_aad(context: &Digest, what: &str, from: u16, to: u16) -> Vec<u8> {
    let mut aad = format!("ckm/transition/{what}/v1").into_bytes();
    aad.extend_from_slice(&context.0);
    aad.extend_from_slice(&from.to_be_bytes());
    aad.extend_from_slice(&to.to_be_bytes());
    aad
}

/// What a member needs to take part: its current state and share (none for a newcomer).
pub struct Holding<'a> {
    /// The state it is at.
    pub state: &'a WalletState,
    /// Its share of it.
    pub share: Option<&'a KeyShare>,
}

enum Stage {
    /// Refresh: round-1 secret.
    Refresh1(round1::SecretPackage),
    /// Refresh: round-2 secret and every round-1 package.
    Refresh2 {
        secret: round2::SecretPackage,
        packages: BTreeMap<u16, round1::Package>,
        transcript: Digest,
    },
    /// Repair helper: its own delta, waiting for the others'.
    Helper(Box<Delta>),
    /// Repair helper after sending its sigma, or a member who keeps its share: waits to
    /// certify.
    Waiting,
    /// Newcomer: waiting for the sigmas.
    Newcomer,
    /// Done: the new share and state, certified.
    Done(Box<Done>),
}

struct Done {
    share: KeyShare,
    state: WalletState,
    transcript: Digest,
    round1: BTreeMap<u16, round1::Package>,
}

/// One member's side of a transition (held in memory until it is prepared).
pub struct Participant {
    context: TransitionContext,
    from: WalletState,
    index: u16,
    share: Option<KeyShare>,
    stage: Stage,
}

impl fmt::Debug for Participant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Participant")
            .field("session", &self.context.session)
            .field("kind", &self.context.kind)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// A member's prepared result: the new share, the state and the record.
pub struct Prepared {
    /// The new share (for a repair or enrolment of others: the same secret, the new group).
    pub share: KeyShare,
    /// The record.
    pub record: CertifiedTransition,
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("epoch", &self.record.state.epoch)
            .finish_non_exhaustive()
    }
}

impl Participant {
    /// Joins a transition. `me` is this signer's identity; `holding` its current state and
    /// share (for a newcomer: the state it verified from the wallet's history, no share);
    /// `approved` says whether an identity is an approved peer. Refuses a context that does
    /// not start from `holding.state`, is malformed, or brings in an unapproved newcomer.
    ///
    /// # Errors
    /// [`TransitionError`].
    pub fn begin<R: RngCore + CryptoRng>(
        context: TransitionContext,
        me: &IdentityKey,
        holding: Holding<'_>,
        approved: impl Fn(&IdentityPublic) -> bool,
        rng: &mut R,
    ) -> Result<(Self, TransitionAnswer), TransitionError> {
        let from = holding.state.clone();
        context.check(&from)?;
        let kind = context.kind;
        let index = context
            .new_roster
            .index_of(&me.public())
            .or_else(|| from.roster.index_of(&me.public()))
            .ok_or_else(|| malformed(kind, "this signer is not a member"))?;
        for m in context.new_roster.entries() {
            if m.identity != me.public()
                && !approved(&m.identity)
                && from.roster.index_of(&m.identity).is_none()
            {
                return Err(TransitionError::UnapprovedPeer {
                    index: m.index,
                    identity: m.identity,
                });
            }
        }
        let newcomer =
            kind.newcomer() == Some(index) && from.roster.index_of(&me.public()) != Some(index);
        if newcomer {
            // The newcomer also approves every member it will co-sign with.
            for m in context.new_roster.entries() {
                if m.identity != me.public() && !approved(&m.identity) {
                    return Err(TransitionError::UnapprovedPeer {
                        index: m.index,
                        identity: m.identity,
                    });
                }
            }
        }
        let share = holding.share.cloned();
        if !newcomer && share.is_none() {
            return Err(malformed(kind, "this member holds no share"));
        }
        if context.new_roster.get(index).is_none() {
            return Err(malformed(kind, "this signer is removed by the transition"));
        }
        let t = from.group.threshold();
        let (stage, answer) = if kind.refreshes() {
            let id = identifier(index).map_err(frost_err)?;
            let n = u16::try_from(context.helpers.len()).unwrap_or(u16::MAX);
            let (secret, package) =
                frost::keys::refresh::refresh_dkg_part1(id, n, t, &mut *rng).map_err(frost_err)?;
            (
                Stage::Refresh1(secret),
                TransitionAnswer::Begun {
                    package: Some(package),
                    deltas: BTreeMap::new(),
                },
            )
        } else if newcomer {
            (
                Stage::Newcomer,
                TransitionAnswer::Begun {
                    package: None,
                    deltas: BTreeMap::new(),
                },
            )
        } else if context.helpers.contains(&index) {
            let target = kind
                .newcomer()
                .ok_or_else(|| malformed(kind, "no newcomer"))?;
            let helpers = context
                .helpers
                .iter()
                .map(|h| identifier(*h))
                .collect::<Result<Vec<Identifier>, _>>()
                .map_err(frost_err)?;
            let key_package = share
                .as_ref()
                .map(KeyShare::key_package)
                .ok_or_else(|| malformed(kind, "this member holds no share"))?;
            let deltas = frost::keys::repairable::repair_share_part1::<Secp256K1Sha256TR, _>(
                &helpers,
                key_package,
                rng,
                identifier(target).map_err(frost_err)?,
            )
            .map_err(frost_err)?;
            let ctx = context.hash();
            let mut sealed = BTreeMap::new();
            let mut own = None;
            for (to_id, delta) in deltas {
                let to = roster_index(&to_id);
                if to == index {
                    own = Some(delta);
                    continue;
                }
                let recipient = from
                    .roster
                    .get(to)
                    .ok_or_else(|| malformed(kind, format!("helper {to} is not a member")))?;
                let bytes = Zeroizing::new(delta.serialize());
                sealed.insert(
                    to,
                    Sealed(me.seal(
                        &recipient.identity,
                        &sealed_aad(&ctx, "delta", index, to),
                        &bytes,
                        rng,
                    )),
                );
            }
            let own = own.ok_or_else(|| malformed(kind, "no delta for this helper"))?;
            (
                Stage::Helper(Box::new(own)),
                TransitionAnswer::Begun {
                    package: None,
                    deltas: sealed,
                },
            )
        } else {
            (
                Stage::Waiting,
                TransitionAnswer::Begun {
                    package: None,
                    deltas: BTreeMap::new(),
                },
            )
        };
        Ok((
            Participant {
                context,
                from,
                index,
                share,
                stage,
            },
            answer,
        ))
    }

    /// The session.
    pub fn session(&self) -> SessionId {
        self.context.session
    }

    /// The context.
    pub fn context(&self) -> &TransitionContext {
        &self.context
    }

    /// This member's index.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Answers one request of the transition (except begin, prepare, commit, abort, status,
    /// which the signer handles with its store).
    ///
    /// # Errors
    /// [`TransitionError`]; the transition is then over for this member.
    pub fn step<R: RngCore + CryptoRng>(
        &mut self,
        request: TransitionRequest,
        me: &IdentityKey,
        rng: &mut R,
    ) -> Result<TransitionAnswer, TransitionError> {
        let ctx = self.context.hash();
        let kind = self.context.kind;
        match (std::mem::replace(&mut self.stage, Stage::Waiting), request) {
            (Stage::Refresh1(secret), TransitionRequest::RefreshRound1 { session, packages })
                if session == self.context.session =>
            {
                let got: Vec<u16> = packages.keys().copied().collect();
                if got != self.context.helpers {
                    return Err(TransitionError::Packages {
                        expected: self.context.helpers.clone(),
                        got,
                    });
                }
                let transcript = transcript(&self.context, &packages)?;
                let others = packages
                    .iter()
                    .filter(|(i, _)| **i != self.index)
                    .map(|(i, p)| identifier(*i).map(|id| (id, p.clone())))
                    .collect::<Result<BTreeMap<_, _>, _>>()
                    .map_err(frost_err)?;
                let (secret2, out) =
                    frost::keys::refresh::refresh_dkg_part2(secret, &others).map_err(frost_err)?;
                let mut sealed = BTreeMap::new();
                for (to_id, package) in out {
                    let to = roster_index(&to_id);
                    let recipient = self
                        .context
                        .new_roster
                        .get(to)
                        .ok_or_else(|| malformed(kind, format!("{to} is not a member")))?;
                    let bytes = Zeroizing::new(package.serialize().map_err(frost_err)?);
                    sealed.insert(
                        to,
                        Sealed(me.seal(
                            &recipient.identity,
                            &sealed_aad(&transcript, "refresh", self.index, to),
                            &bytes,
                            rng,
                        )),
                    );
                }
                self.stage = Stage::Refresh2 {
                    secret: secret2,
                    packages,
                    transcript,
                };
                Ok(TransitionAnswer::RefreshSealed { transcript, sealed })
            }
            (
                Stage::Refresh2 {
                    secret,
                    packages,
                    transcript,
                },
                TransitionRequest::RefreshRound2 {
                    session,
                    sealed,
                    transcripts,
                },
            ) if session == self.context.session => {
                let mismatched: Vec<u16> = transcripts
                    .iter()
                    .filter(|(_, t)| **t != transcript)
                    .map(|(i, _)| *i)
                    .collect();
                let members: Vec<u16> = transcripts.keys().copied().collect();
                if members != self.context.helpers {
                    return Err(TransitionError::Packages {
                        expected: self.context.helpers.clone(),
                        got: members,
                    });
                }
                if !mismatched.is_empty() {
                    return Err(TransitionError::TranscriptMismatch(mismatched));
                }
                let expected: Vec<u16> = self
                    .context
                    .helpers
                    .iter()
                    .copied()
                    .filter(|i| *i != self.index)
                    .collect();
                let got: Vec<u16> = sealed.keys().copied().collect();
                if got != expected {
                    return Err(TransitionError::Packages { expected, got });
                }
                let mut round2_packages = BTreeMap::new();
                for (from, blob) in &sealed {
                    let plain = open_sealed(
                        me,
                        &self.context.new_roster,
                        kind,
                        &sealed_aad(&transcript, "refresh", *from, self.index),
                        *from,
                        &blob.0,
                    )?;
                    let package = round2::Package::deserialize(&plain).map_err(frost_err)?;
                    round2_packages.insert(identifier(*from).map_err(frost_err)?, package);
                }
                let others = packages
                    .iter()
                    .filter(|(i, _)| **i != self.index)
                    .map(|(i, p)| identifier(*i).map(|id| (id, p.clone())))
                    .collect::<Result<BTreeMap<_, _>, _>>()
                    .map_err(frost_err)?;
                let old = self
                    .share
                    .as_ref()
                    .ok_or_else(|| malformed(kind, "this member holds no share"))?;
                let (key_package, pkp) = frost::keys::refresh::refresh_dkg_shares(
                    &secret,
                    &others,
                    &round2_packages,
                    self.from.group.public_key_package().clone(),
                    old.key_package().clone(),
                )
                .map_err(frost_err)?;
                let state = next_state(&self.from, &self.context, &packages)?;
                // frost's own result and the public recomputation must agree.
                let group = GroupPublic::new(pkp, self.from.group.chain_code())
                    .map_err(|e| TransitionError::Inconsistent(e.to_string()))?;
                if group != state.group {
                    return Err(TransitionError::Inconsistent(
                        "frost's refreshed verifying shares differ from the commitments'".into(),
                    ));
                }
                let share = KeyShare::new(key_package, state.group.clone())
                    .map_err(|e| TransitionError::Inconsistent(e.to_string()))?;
                self.finish(share, state, transcript, packages, me)
            }
            (Stage::Helper(own), TransitionRequest::RepairDeltas { session, sealed })
                if session == self.context.session =>
            {
                let expected: Vec<u16> = self
                    .context
                    .helpers
                    .iter()
                    .copied()
                    .filter(|i| *i != self.index)
                    .collect();
                let got: Vec<u16> = sealed.keys().copied().collect();
                if got != expected {
                    return Err(TransitionError::Packages { expected, got });
                }
                let mut deltas = vec![*own];
                for (from, blob) in &sealed {
                    let plain = open_sealed(
                        me,
                        &self.from.roster,
                        kind,
                        &sealed_aad(&ctx, "delta", *from, self.index),
                        *from,
                        &blob.0,
                    )?;
                    deltas.push(Delta::deserialize(&plain).map_err(frost_err)?);
                }
                let sigma = frost::keys::repairable::repair_share_part2(&deltas);
                let target = kind
                    .newcomer()
                    .ok_or_else(|| malformed(kind, "no newcomer"))?;
                let recipient = self
                    .context
                    .new_roster
                    .get(target)
                    .ok_or_else(|| malformed(kind, "the newcomer is not in the new roster"))?;
                let bytes = Zeroizing::new(sigma.serialize());
                let sealed = Sealed(me.seal(
                    &recipient.identity,
                    &sealed_aad(&ctx, "sigma", self.index, target),
                    &bytes,
                    rng,
                ));
                self.stage = Stage::Waiting;
                Ok(TransitionAnswer::Sigma { sealed })
            }
            (Stage::Newcomer, TransitionRequest::RepairSigmas { session, sealed })
                if session == self.context.session =>
            {
                let got: Vec<u16> = sealed.keys().copied().collect();
                if got != self.context.helpers {
                    return Err(TransitionError::Packages {
                        expected: self.context.helpers.clone(),
                        got,
                    });
                }
                let mut sigmas = Vec::new();
                for (from, blob) in &sealed {
                    let plain = open_sealed(
                        me,
                        &self.from.roster,
                        kind,
                        &sealed_aad(&ctx, "sigma", *from, self.index),
                        *from,
                        &blob.0,
                    )?;
                    sigmas.push(Sigma::deserialize(&plain).map_err(frost_err)?);
                }
                let state = next_state(&self.from, &self.context, &BTreeMap::new())?;
                let key_package = frost::keys::repairable::repair_share_part3(
                    &sigmas,
                    identifier(self.index).map_err(frost_err)?,
                    state.group.public_key_package(),
                )
                .map_err(frost_err)?;
                // The recovered share must match the verifying share the group expects.
                let share = KeyShare::new(key_package, state.group.clone()).map_err(|e| {
                    TransitionError::Inconsistent(format!(
                        "the repaired share does not match the group's verifying share: {e}"
                    ))
                })?;
                let transcript = transcript(&self.context, &BTreeMap::new())?;
                self.finish(share, state, transcript, BTreeMap::new(), me)
            }
            (Stage::Waiting, TransitionRequest::Certify { session })
                if session == self.context.session && !kind.refreshes() =>
            {
                let state = next_state(&self.from, &self.context, &BTreeMap::new())?;
                let old = self
                    .share
                    .as_ref()
                    .ok_or_else(|| malformed(kind, "this member holds no share"))?;
                let share = KeyShare::new(old.key_package().clone(), state.group.clone())
                    .map_err(|e| TransitionError::Inconsistent(e.to_string()))?;
                let transcript = transcript(&self.context, &BTreeMap::new())?;
                self.finish(share, state, transcript, BTreeMap::new(), me)
            }
            _ => Err(TransitionError::Session),
        }
    }

    fn finish(
        &mut self,
        share: KeyShare,
        state: WalletState,
        transcript: Digest,
        round1: BTreeMap<u16, round1::Package>,
        me: &IdentityKey,
    ) -> Result<TransitionAnswer, TransitionError> {
        let hash = state.hash();
        let certificate = certify(me, &transcript, &hash);
        self.stage = Stage::Done(Box::new(Done {
            share,
            state,
            transcript,
            round1,
        }));
        Ok(TransitionAnswer::Certified {
            state: hash,
            certificate,
        })
    }

    /// Checks every new member's certificate and hands over the new share and the record,
    /// for the signer to store as pending.
    ///
    /// # Errors
    /// Another session, not finished, or a missing or bad certificate.
    pub fn prepare(
        self,
        session: SessionId,
        certificates: BTreeMap<u16, Certificate>,
    ) -> Result<Prepared, TransitionError> {
        if session != self.context.session {
            return Err(TransitionError::Session);
        }
        let Stage::Done(done) = self.stage else {
            return Err(TransitionError::Session);
        };
        let Done {
            share,
            state,
            transcript,
            round1,
        } = *done;
        check_certificates(&certificates, &transcript, &state)?;
        Ok(Prepared {
            share,
            record: CertifiedTransition {
                context: self.context,
                round1,
                state,
                certificates,
            },
        })
    }
}

// ---------------------------------------------------------------------------------------
// Coordinator half
// ---------------------------------------------------------------------------------------

/// The coordinator's side: who is asked what, and the record it ends with.
#[derive(Debug)]
pub struct TransitionCoordinator {
    context: TransitionContext,
    from: WalletState,
    round1: BTreeMap<u16, round1::Package>,
    transcripts: BTreeMap<u16, Digest>,
    sealed: BTreeMap<u16, BTreeMap<u16, Sealed>>,
    sigmas: BTreeMap<u16, Sealed>,
    state: Option<(WalletState, Digest)>,
    certificates: BTreeMap<u16, Certificate>,
}

impl TransitionCoordinator {
    /// A transition of `context` from `from`.
    ///
    /// # Errors
    /// A context that is not a well-formed transition from `from`.
    pub fn new(context: TransitionContext, from: WalletState) -> Result<Self, TransitionError> {
        context.check(&from)?;
        Ok(TransitionCoordinator {
            context,
            from,
            round1: BTreeMap::new(),
            transcripts: BTreeMap::new(),
            sealed: BTreeMap::new(),
            sigmas: BTreeMap::new(),
            state: None,
            certificates: BTreeMap::new(),
        })
    }

    /// The context.
    pub fn context(&self) -> &TransitionContext {
        &self.context
    }

    /// Every member of the new roster (who must certify and prepare).
    pub fn members(&self) -> Vec<u16> {
        self.context.new_roster.indexes()
    }

    /// The state the transition leads to, once known.
    pub fn new_state(&self) -> Option<&WalletState> {
        self.state.as_ref().map(|(s, _)| s)
    }

    /// Records a member's answer to [`TransitionRequest::Begin`].
    ///
    /// # Errors
    /// An answer that does not fit the member's role.
    pub fn add_begun(
        &mut self,
        index: u16,
        answer: TransitionAnswer,
    ) -> Result<(), TransitionError> {
        let kind = self.context.kind;
        let TransitionAnswer::Begun { package, deltas } = answer else {
            return Err(malformed(
                kind,
                format!("member {index} answered out of protocol"),
            ));
        };
        if kind.refreshes() {
            let package = package
                .ok_or_else(|| malformed(kind, format!("member {index} sent no package")))?;
            self.round1.insert(index, package);
        } else if self.context.helpers.contains(&index) {
            for (to, blob) in deltas {
                self.sealed.entry(to).or_default().insert(index, blob);
            }
        }
        Ok(())
    }

    /// Refresh: the round-1 request (the same for every member), once all packages arrived.
    ///
    /// # Errors
    /// Packages missing.
    pub fn refresh_round1(&mut self) -> Result<TransitionRequest, TransitionError> {
        let got: Vec<u16> = self.round1.keys().copied().collect();
        if got != self.context.helpers {
            return Err(TransitionError::Packages {
                expected: self.context.helpers.clone(),
                got,
            });
        }
        let state = next_state(&self.from, &self.context, &self.round1)?;
        let transcript = transcript(&self.context, &self.round1)?;
        self.state = Some((state, transcript));
        Ok(TransitionRequest::RefreshRound1 {
            session: self.context.session,
            packages: self.round1.clone(),
        })
    }

    /// Refresh: records a member's sealed round-2 packages.
    ///
    /// # Errors
    /// Out of protocol.
    pub fn add_refresh_sealed(
        &mut self,
        index: u16,
        answer: TransitionAnswer,
    ) -> Result<(), TransitionError> {
        let TransitionAnswer::RefreshSealed { transcript, sealed } = answer else {
            return Err(malformed(
                self.context.kind,
                format!("member {index} answered out of protocol"),
            ));
        };
        self.transcripts.insert(index, transcript);
        for (to, blob) in sealed {
            self.sealed.entry(to).or_default().insert(index, blob);
        }
        Ok(())
    }

    /// Refresh: what member `index` needs for round 2.
    pub fn refresh_round2(&self, index: u16) -> TransitionRequest {
        TransitionRequest::RefreshRound2 {
            session: self.context.session,
            sealed: self.sealed.get(&index).cloned().unwrap_or_default(),
            transcripts: self.transcripts.clone(),
        }
    }

    /// Repair: what helper `index` needs (the deltas sealed to it).
    pub fn repair_deltas(&self, index: u16) -> TransitionRequest {
        TransitionRequest::RepairDeltas {
            session: self.context.session,
            sealed: self.sealed.get(&index).cloned().unwrap_or_default(),
        }
    }

    /// Repair: records a helper's sealed sigma.
    ///
    /// # Errors
    /// Out of protocol.
    pub fn add_sigma(
        &mut self,
        index: u16,
        answer: TransitionAnswer,
    ) -> Result<(), TransitionError> {
        let TransitionAnswer::Sigma { sealed } = answer else {
            return Err(malformed(
                self.context.kind,
                format!("member {index} answered out of protocol"),
            ));
        };
        self.sigmas.insert(index, sealed);
        Ok(())
    }

    /// Repair: the request for the newcomer, once every helper's sigma arrived.
    ///
    /// # Errors
    /// Sigmas missing.
    pub fn repair_sigmas(&mut self) -> Result<TransitionRequest, TransitionError> {
        let got: Vec<u16> = self.sigmas.keys().copied().collect();
        if got != self.context.helpers {
            return Err(TransitionError::Packages {
                expected: self.context.helpers.clone(),
                got,
            });
        }
        let state = next_state(&self.from, &self.context, &BTreeMap::new())?;
        let transcript = transcript(&self.context, &BTreeMap::new())?;
        self.state = Some((state, transcript));
        Ok(TransitionRequest::RepairSigmas {
            session: self.context.session,
            sealed: self.sigmas.clone(),
        })
    }

    /// The request for a member that certifies without a secret step.
    pub fn certify_request(&self) -> TransitionRequest {
        TransitionRequest::Certify {
            session: self.context.session,
        }
    }

    /// Records a member's certificate (it must certify the state the coordinator computed).
    ///
    /// # Errors
    /// Another state, or a certificate that does not verify.
    pub fn add_certified(
        &mut self,
        index: u16,
        answer: TransitionAnswer,
    ) -> Result<(), TransitionError> {
        let (state, transcript) = match &self.state {
            Some((s, t)) => (s, *t),
            None => {
                let state = next_state(&self.from, &self.context, &self.round1)?;
                let transcript = transcript(&self.context, &self.round1)?;
                self.state = Some((state, transcript));
                match &self.state {
                    Some((s, t)) => (s, *t),
                    None => return Err(TransitionError::Session),
                }
            }
        };
        let TransitionAnswer::Certified {
            state: hash,
            certificate,
        } = answer
        else {
            return Err(malformed(
                self.context.kind,
                format!("member {index} answered out of protocol"),
            ));
        };
        let member = state
            .roster
            .get(index)
            .ok_or_else(|| malformed(self.context.kind, format!("{index} is not a member")))?;
        if hash != state.hash()
            || !check_certificate(&member.identity, &certificate, &transcript, &hash)
        {
            return Err(TransitionError::Certificate {
                index,
                identity: member.identity,
            });
        }
        self.certificates.insert(index, certificate);
        Ok(())
    }

    /// The prepare request, once every new member certified.
    ///
    /// # Errors
    /// Certificates missing.
    pub fn prepare_request(&self) -> Result<TransitionRequest, TransitionError> {
        let (state, transcript) = self.state.as_ref().ok_or(TransitionError::Session)?;
        check_certificates(&self.certificates, transcript, state)?;
        Ok(TransitionRequest::Prepare {
            session: self.context.session,
            certificates: self.certificates.clone(),
        })
    }

    /// The record, once every certificate is in.
    ///
    /// # Errors
    /// Not finished.
    pub fn record(&self) -> Result<CertifiedTransition, TransitionError> {
        let (state, transcript) = self.state.as_ref().ok_or(TransitionError::Session)?;
        check_certificates(&self.certificates, transcript, state)?;
        Ok(CertifiedTransition {
            context: self.context.clone(),
            round1: self.round1.clone(),
            state: state.clone(),
            certificates: self.certificates.clone(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// In memory
// ---------------------------------------------------------------------------------------

/// A member for [`run_in_memory`]: its identity and (unless it is the newcomer) its share.
pub struct Member<'a> {
    /// Its identity key.
    pub key: &'a IdentityKey,
    /// Its current share.
    pub share: Option<&'a KeyShare>,
}

/// Runs a transition in one process through the coordinator half and every member's
/// participant half, every member approving every other. Returns each member's prepared
/// result (by index) and the record. For tests and documentation.
///
/// # Errors
/// Any member's or the coordinator's error.
pub fn run_in_memory<R: RngCore + CryptoRng>(
    context: TransitionContext,
    from: &WalletState,
    members: &[Member<'_>],
    rng: &mut R,
) -> Result<(BTreeMap<u16, Prepared>, CertifiedTransition), TransitionError> {
    let mut coordinator = TransitionCoordinator::new(context.clone(), from.clone())?;
    let mut participants: BTreeMap<u16, (&IdentityKey, Participant)> = BTreeMap::new();
    for m in members {
        let (p, answer) = Participant::begin(
            context.clone(),
            m.key,
            Holding {
                state: from,
                share: m.share,
            },
            |_| true,
            rng,
        )?;
        let index = p.index();
        coordinator.add_begun(index, answer)?;
        participants.insert(index, (m.key, p));
    }
    if context.kind.refreshes() {
        let request = coordinator.refresh_round1()?;
        for (index, (key, p)) in participants.iter_mut() {
            let answer = p.step(request.clone(), key, rng)?;
            coordinator.add_refresh_sealed(*index, answer)?;
        }
        for (index, (key, p)) in participants.iter_mut() {
            let answer = p.step(coordinator.refresh_round2(*index), key, rng)?;
            coordinator.add_certified(*index, answer)?;
        }
    } else {
        for h in &context.helpers {
            let (key, p) = participants
                .get_mut(h)
                .ok_or_else(|| malformed(context.kind, format!("helper {h} is not a member")))?;
            let answer = p.step(coordinator.repair_deltas(*h), key, rng)?;
            coordinator.add_sigma(*h, answer)?;
        }
        let request = coordinator.repair_sigmas()?;
        let target = context
            .kind
            .newcomer()
            .ok_or_else(|| malformed(context.kind, "no newcomer"))?;
        for (index, (key, p)) in participants.iter_mut() {
            let answer = if *index == target {
                p.step(request.clone(), key, rng)?
            } else {
                p.step(coordinator.certify_request(), key, rng)?
            };
            coordinator.add_certified(*index, answer)?;
        }
    }
    let TransitionRequest::Prepare {
        session,
        certificates,
    } = coordinator.prepare_request()?
    else {
        return Err(TransitionError::Session);
    };
    let mut prepared = BTreeMap::new();
    for (index, (_, p)) in participants {
        prepared.insert(index, p.prepare(session, certificates.clone())?);
    }
    Ok((prepared, coordinator.record()?))
}
