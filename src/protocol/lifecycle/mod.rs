//! Keys that outlive their servers: epoch transitions of a wallet's shares without moving
//! funds — refresh (every share changes), remove a signer (a refresh among the others),
//! repair a lost share and enrol a new signer (the repairable threshold scheme), alone or in
//! one transition with a refresh of every share — each a certified transition from one
//! [`WalletState`] to the next. The design, and what
//! each kind does to shares and roster, is in `docs/managing-signers.md`.
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
//!
//! # Files, in reading order
//!
//! - `mod.rs` (this file): the [`WalletState`] of an epoch, the [`TransitionKind`]s, the
//!   [`TransitionContext`] every member checks before it takes part, [`TransitionError`], and
//!   the point arithmetic the kinds share.
//! - `message.rs`: what flows — [`TransitionRequest`] (coordinator → signer),
//!   [`TransitionAnswer`] (signer → coordinator), [`Joining`] (what a newcomer is told).
//! - `state.rs`: what a member holds between requests — [`Participant`], its stage, its
//!   certified result, the sealing of packages between members (data only).
//! - `participant.rs`: a member's half — [`Participant::begin`], the [`Participant::step`]
//!   dispatcher with one handler per request, certification.
//! - `coordinator.rs`: the coordinator's half — [`TransitionCoordinator`]: collecting the
//!   begin answers and the certificates.
//! - `refresh.rs`: refresh — the context's check and the refresh rounds on both halves.
//! - `remove.rs`: removal — the context's check; the rounds are the refresh's.
//! - `repair.rs`: repair — the context's check for a newcomer, and the repairable-scheme
//!   rounds (deltas, sigmas) an enrolment runs too. With a refresh
//!   ([`TransitionKind::RepairRefresh`], [`TransitionKind::EnrolRefresh`]) the deltas go
//!   first, then the refresh rounds among the whole new roster (`refresh.rs`), where the
//!   newcomer gets its sigmas with round 2 and refreshes the share they give.
//! - `enrol.rs`: enrolment — the newcomer's verifying share ([`enrolled_share`]) and group.
//! - `group.rs`: the group a refresh leads to, recomputed from public commitments
//!   ([`refreshed_group`]).
//! - `record.rs`: the transcript, the state a transition leads to ([`next_state`]), the
//!   certificates, [`CertifiedTransition`] and a wallet's whole [`History`].
//! - `confirm.rs`: a restored share's epoch confirmed by fresh statements of `n − t + 1`
//!   other members before it signs again ([`confirm`]).
//! - `commit.rs`: prepare, commit and abort — the participant's preparation (checking every
//!   certificate), the coordinator's prepare request and final record. Storing, committing
//!   and aborting the pending share is the signer's (`signer::transition`).
//! - `in_memory.rs`: [`run_in_memory`], both halves in one process (tests, documentation).
//!
//! Within the folder the arrows point one way too: `participant.rs` (the dispatcher) builds
//! on the kinds' files, which build on `state.rs`, `record.rs` and `group.rs`; none of those
//! imports back (`contrib/layers.py` checks for circles between files).
//!
//! # Imports
//!
//! Lower floors only: `protocol::dkg`'s record types, `psbt`, `recovery`, `keys`, `identity`,
//! `auth`, `store`, `frost` (and the frost-secp256k1-tr crate). Nothing here imports
//! `signer`, `wallet`, `net`, `ops` or `cli`; randomness is passed in.

use std::collections::BTreeSet;
use std::fmt;

use bitcoin::hashes::{sha256t_hash_newtype, Hash, HashEngine};
use frost::keys::VerifyingShare;
use frost::{Field, Group, Secp256K1Group, Secp256K1ScalarField};
use frost_secp256k1_tr as frost;
use serde::{Deserialize, Serialize};

use crate::frost::shares::roster_index;
use crate::identity::{IdentityError, IdentityPublic};
use crate::keys::{GroupKey, GroupPublic, Roster, RosterEntry};
use crate::protocol::dkg::CertifiedKeygen;
use crate::protocol::SessionId;

mod commit;
mod confirm;
mod coordinator;
mod enrol;
mod group;
mod in_memory;
mod message;
mod participant;
mod record;
mod refresh;
mod remove;
mod repair;
mod state;
mod vote;

pub use confirm::{
    confirm, needed as confirmations_needed, Challenge, ConfirmError, ConfirmedEpoch,
    EpochStatement, SignedStatement,
};
pub use coordinator::TransitionCoordinator;
pub use enrol::enrolled_share;
pub use group::refreshed_group;
pub use in_memory::{run_in_memory, Member};
pub use message::{
    DecidedStatus, Joining, MemberStatus, PendingStatus, TransitionAnswer, TransitionRequest,
};
pub use record::{
    certify, check_certificates, next_state, transcript, CertifiedTransition, History,
};
pub use state::{Holding, Participant, Prepared};
pub use vote::{
    decide_vote, Ballot, Decision, DecisionCertificate, Quorums, SignedVote, VoteError, VoteKind,
};

/// The version of [`TransitionContext`] this build writes and runs: 2, decided by signed
/// votes (`vote.rs`). Version 1 (decided by the coordinator's word) is still read in a
/// wallet's certified history, never run.
pub const TRANSITION_VERSION: u16 = 2;

/// The oldest context version a history may hold.
pub const OLDEST_TRANSITION_VERSION: u16 = 1;

sha256t_hash_newtype! {
    struct StateTag = hash_str("ckm/wallet-state/v1");
    #[hash_newtype(forward)]
    struct StateDigest(_);

    struct ContextTag = hash_str("ckm/transition-context/v1");
    #[hash_newtype(forward)]
    struct ContextDigest(_);
}

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
    /// A repair and a refresh in one transition: the member at this index gets a share under
    /// a new identity key and every share changes with it, so the lost share (and a stolen
    /// copy of it) no longer combines once the transition commits.
    RepairRefresh(u16),
    /// An enrolment and a refresh in one transition: a new member at this index, and every
    /// share changes.
    EnrolRefresh(u16),
}

impl TransitionKind {
    /// The index of the member who joins (repair, enrol, with or without a refresh).
    pub fn newcomer(self) -> Option<u16> {
        match self {
            TransitionKind::Repair(i)
            | TransitionKind::Enrol(i)
            | TransitionKind::RepairRefresh(i)
            | TransitionKind::EnrolRefresh(i) => Some(i),
            TransitionKind::Refresh | TransitionKind::Remove(_) => None,
        }
    }

    /// Whether the members run the refresh rounds (refresh, remove, and a repair or
    /// enrolment with a refresh).
    pub fn refreshes(self) -> bool {
        !matches!(self, TransitionKind::Repair(_) | TransitionKind::Enrol(_))
    }

    /// Whether the newcomer's index is a member already (a repair, with or without a
    /// refresh) rather than a new one (an enrolment).
    pub fn repairs(self) -> bool {
        matches!(
            self,
            TransitionKind::Repair(_) | TransitionKind::RepairRefresh(_)
        )
    }
}

impl fmt::Display for TransitionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransitionKind::Refresh => f.write_str("refresh"),
            TransitionKind::Remove(i) => write!(f, "removal of signer {i}"),
            TransitionKind::Repair(i) => write!(f, "repair of signer {i}"),
            TransitionKind::Enrol(i) => write!(f, "enrolment of signer {i}"),
            TransitionKind::RepairRefresh(i) => write!(f, "repair of signer {i} with a refresh"),
            TransitionKind::EnrolRefresh(i) => {
                write!(f, "enrolment of signer {i} with a refresh")
            }
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
    /// `t` (or more) current members for a repair or enrolment (with or without a refresh:
    /// the refresh rounds of those run among every member of the new roster, see
    /// [`TransitionContext::refreshers`]).
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
    #[error("the new member {index} ({identity}) is not an approved peer of this signer")]
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
            TransitionKind::RepairRefresh(i) => (4, i),
            TransitionKind::EnrolRefresh(i) => (5, i),
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

    /// Who runs the refresh rounds: the helpers of a refresh or removal, every member of the
    /// new roster (the newcomer among them) for a repair or enrolment with a refresh, nobody
    /// for a repair or enrolment alone. In roster order.
    pub fn refreshers(&self) -> Vec<u16> {
        match self.kind {
            TransitionKind::Refresh | TransitionKind::Remove(_) => self.helpers.clone(),
            TransitionKind::RepairRefresh(_) | TransitionKind::EnrolRefresh(_) => {
                self.new_roster.indexes()
            }
            TransitionKind::Repair(_) | TransitionKind::Enrol(_) => Vec::new(),
        }
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
        if !(OLDEST_TRANSITION_VERSION..=TRANSITION_VERSION).contains(&self.version) {
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
            TransitionKind::Refresh => refresh::check(self, from, &new_indexes),
            TransitionKind::Remove(i) => remove::check(self, from, i, t, &new_indexes),
            TransitionKind::Repair(i)
            | TransitionKind::Enrol(i)
            | TransitionKind::RepairRefresh(i)
            | TransitionKind::EnrolRefresh(i) => repair::check_newcomer(self, from, i, t, &helpers),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Arithmetic on the public side (refresh and enrolment)
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
