//! What a member holds between requests: its [`Participant`] (context, state, share and
//! [`Stage`]), the certified result it keeps until prepare, and the sealing of the packages
//! members send each other. The data only: the handlers are in `participant.rs` (the
//! dispatcher and certification) and in the file of each kind (`refresh.rs`, `repair.rs`),
//! which all build on this file and never on each other.

use std::collections::BTreeMap;
use std::fmt;

use frost::keys::dkg::{round1, round2};
use frost::keys::repairable::Delta;
use frost_secp256k1_tr as frost;
use zeroize::Zeroizing;

use super::{
    malformed, CertifiedTransition, Digest, TransitionContext, TransitionError, TransitionKind,
    WalletState,
};
use crate::identity::IdentityKey;
use crate::keys::{KeyShare, Roster};

/// Opens a package that roster member `from` sealed to this member under `aad`.
pub(super) fn open_sealed(
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

pub(super) fn sealed_aad(context: &Digest, what: &str, from: u16, to: u16) -> Vec<u8> {
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

/// Where a member is between requests.
pub(super) enum Stage {
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
    /// Repair or enrolment helper in a transition with a refresh: its own delta and its
    /// refresh round-1 secret (the deltas go first, then the refresh rounds).
    HelperRefresh1 {
        delta: Box<Delta>,
        secret: round1::SecretPackage,
    },
    /// Repair helper after sending its sigma, or a member who keeps its share: waits to
    /// certify.
    Waiting,
    /// Newcomer (repair or enrolment alone): waiting for the sigmas. With a refresh, the
    /// newcomer runs the refresh rounds and gets the sigmas with round 2.
    Newcomer,
    /// Done: the new share and state, certified.
    Done(Box<Done>),
}

/// A member's certified result, kept until prepare.
pub(super) struct Done {
    pub(super) share: KeyShare,
    pub(super) state: WalletState,
    pub(super) transcript: Digest,
    pub(super) round1: BTreeMap<u16, round1::Package>,
}

/// One member's side of a transition (held in memory until it is prepared).
pub struct Participant {
    pub(super) context: TransitionContext,
    pub(super) from: WalletState,
    pub(super) index: u16,
    pub(super) share: Option<KeyShare>,
    pub(super) stage: Stage,
}

impl Participant {
    /// Checks that packages came `from` every other one of `members` (the helpers of a
    /// repair, the refreshers of a refresh), each once (in roster order, as a map's keys are).
    pub(super) fn expect_every_other(
        &self,
        members: &[u16],
        from: impl Iterator<Item = u16>,
    ) -> Result<(), TransitionError> {
        let expected: Vec<u16> = members
            .iter()
            .copied()
            .filter(|i| *i != self.index)
            .collect();
        let got: Vec<u16> = from.collect();
        if got != expected {
            return Err(TransitionError::Packages { expected, got });
        }
        Ok(())
    }
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
