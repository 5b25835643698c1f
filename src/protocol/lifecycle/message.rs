//! What flows in a transition: [`TransitionRequest`] (coordinator → signer, carried in
//! `message::CoordinatorToSigner::Transition`), [`TransitionAnswer`] (signer → coordinator)
//! and [`Joining`], what a newcomer is told about the wallet it joins. Wire format: serde,
//! variant names in snake_case.

use std::collections::BTreeMap;

use frost::keys::dkg::round1;
use frost_secp256k1_tr as frost;
use serde::{Deserialize, Serialize};

use super::{Digest, History, TransitionContext};
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
