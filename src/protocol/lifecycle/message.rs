//! What flows in a transition: [`TransitionRequest`] (coordinator → signer, carried in
//! `message::CoordinatorToSigner::Transition`), [`TransitionAnswer`] (signer → coordinator)
//! and [`Joining`], what a newcomer is told about the wallet it joins. Wire format: serde,
//! variant names in snake_case.

use std::collections::BTreeMap;

use frost::keys::dkg::round1;
use frost_secp256k1_tr as frost;
use serde::{Deserialize, Serialize};

use super::{
    CertifiedTransition, Decision, DecisionCertificate, Digest, History, SignedVote,
    TransitionContext, VoteKind,
};
use crate::identity::{IdentityPublic, Sealed};
use crate::keys::GroupKey;
use crate::protocol::dkg::Certificate;
use crate::protocol::SessionId;

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
        /// For the newcomer of a repair or enrolment with a refresh: the sigmas the helpers
        /// sealed to it (empty for everyone else).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        sigmas: BTreeMap<u16, Sealed>,
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
    /// Sign ready (given every member's prepared vote) or abort. A member signs at most one
    /// of the two per transition; asked again, it answers with the vote it holds.
    Vote {
        /// Session.
        session: SessionId,
        /// [`VoteKind::Ready`] or [`VoteKind::Abort`].
        want: VoteKind,
        /// Every member's prepared vote (for ready).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        prepared: BTreeMap<u16, SignedVote>,
        /// The transition's record, for an abort vote from a member that never prepared
        /// (it checks the record against its own state; the vote then stops it from ever
        /// preparing this session).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        record: Option<Box<CertifiedTransition>>,
    },
    /// Apply a decision certificate: commit (the pending epoch becomes current, the old share
    /// is erased) or abort (the pending share is forgotten). Accepted from any coordinator
    /// the signer allows for the wallet: the certificate proves itself.
    Decide {
        /// Session.
        session: SessionId,
        /// The certificate.
        certificate: DecisionCertificate,
    },
    /// Forget a transition that holds nothing on disk yet (before prepare); from its own
    /// coordinator only. A prepared transition ends only with a certificate.
    Cancel {
        /// Session.
        session: SessionId,
    },
    /// Where is this signer's wallet?
    Status {
        /// The wallet.
        wallet: GroupKey,
    },
    /// To a member a removal took out: the committed removal and its commit certificate. The
    /// member checks both against its own state and erases its share (best effort: a
    /// removed member that is never reached keeps a share that no longer combines).
    Farewell {
        /// The removal's certified record.
        record: Box<CertifiedTransition>,
        /// Its commit certificate.
        certificate: DecisionCertificate,
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
    /// The new share is stored, pending: the member's signed prepared vote.
    Prepared {
        /// The vote.
        vote: SignedVote,
    },
    /// The member's ready or abort vote (the one it holds, whatever was asked).
    Voted {
        /// The vote.
        vote: SignedVote,
    },
    /// The decision is applied (or was already).
    Decided {
        /// The decision.
        decision: Decision,
        /// The member's current epoch.
        epoch: u64,
    },
    /// Forgotten (nothing was stored).
    Cancelled,
    /// Where the wallet is.
    Status(Box<MemberStatus>),
    /// The removed member erased its share of the wallet.
    Erased {
        /// The epoch the removal led to.
        epoch: u64,
    },
}

/// What a member holds of a wallet's transitions ([`TransitionAnswer::Status`]): enough for
/// any coordinator the member allows to finish or roll back a transition from the members'
/// answers alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    /// The member's current epoch (`None` for a newcomer whose transition is undecided).
    pub epoch: Option<u64>,
    /// Its current state hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Digest>,
    /// The pending transition, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingStatus>,
    /// The last decided transition of the wallet this member took part in, with its
    /// certificate (and, for a commit, its record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<DecidedStatus>,
}

/// A member's pending transition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingStatus {
    /// The record the member stored (context and new state: the ballot).
    pub record: CertifiedTransition,
    /// The member's prepared vote.
    pub prepared: SignedVote,
    /// Its ready or abort vote, if it signed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standing: Option<SignedVote>,
}

/// A member's last decided transition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecidedStatus {
    /// The session.
    pub session: SessionId,
    /// The certificate it applied.
    pub certificate: DecisionCertificate,
    /// After a commit, the member's whole certified history of transitions (so that a
    /// coordinator that missed some can catch up, checking each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<CertifiedTransition>,
}
