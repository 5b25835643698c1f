//! A member's half of a transition: [`Participant::begin`] checks the context and takes the
//! member's first step, [`Participant::step`] routes each later request to its handler (the
//! kind-specific ones live in `refresh.rs` and `repair.rs`), and every path ends in
//! certifying the new state. The result is handed over at prepare (`commit.rs`).

use std::collections::BTreeMap;

use frost::keys::dkg::round1;
use frost_secp256k1_tr as frost;
use rand::{CryptoRng, RngCore};

use super::record::{certify, next_state, transcript};
use super::state::{Done, Holding, Participant, Stage};
use super::{
    malformed, refresh, repair, Digest, TransitionAnswer, TransitionContext, TransitionError,
    TransitionRequest, WalletState,
};
use crate::identity::{IdentityKey, IdentityPublic};
use crate::keys::KeyShare;
use crate::protocol::SessionId;

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
        if context.version != super::TRANSITION_VERSION {
            return Err(TransitionError::Version(context.version));
        }
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
        let helper = kind.newcomer().is_some() && context.helpers.contains(&index);
        let (stage, answer) = if kind.refreshes() {
            let (stage, answer) = refresh::begin(&context, index, t, rng)?;
            match (stage, answer) {
                // A repair or enrolment with a refresh: a helper sends its deltas too.
                (Stage::Refresh1(secret), TransitionAnswer::Begun { package, .. }) if helper => {
                    let (delta, deltas) =
                        repair::begin_helper(&context, &from, index, share.as_ref(), me, rng)?;
                    (
                        Stage::HelperRefresh1 { delta, secret },
                        TransitionAnswer::Begun { package, deltas },
                    )
                }
                other => other,
            }
        } else if newcomer {
            (
                Stage::Newcomer,
                TransitionAnswer::Begun {
                    package: None,
                    deltas: BTreeMap::new(),
                },
            )
        } else if helper {
            let (delta, deltas) =
                repair::begin_helper(&context, &from, index, share.as_ref(), me, rng)?;
            (
                Stage::Helper(delta),
                TransitionAnswer::Begun {
                    package: None,
                    deltas,
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
        let stage = std::mem::replace(&mut self.stage, Stage::Waiting);
        match request {
            TransitionRequest::RefreshRound1 { session, packages } => {
                self.on_refresh_round1(stage, session, packages, me, rng)
            }
            TransitionRequest::RefreshRound2 {
                session,
                sealed,
                transcripts,
                sigmas,
            } => self.on_refresh_round2(stage, session, sealed, transcripts, sigmas, me),
            TransitionRequest::RepairDeltas { session, sealed } => {
                self.on_repair_deltas(stage, session, sealed, me, rng)
            }
            TransitionRequest::RepairSigmas { session, sealed } => {
                self.on_repair_sigmas(stage, session, sealed, me)
            }
            TransitionRequest::Certify { session } => self.on_certify(stage, session, me),
            TransitionRequest::Begin { .. }
            | TransitionRequest::Prepare { .. }
            | TransitionRequest::Vote { .. }
            | TransitionRequest::Decide { .. }
            | TransitionRequest::Cancel { .. }
            | TransitionRequest::Status { .. }
            | TransitionRequest::Farewell { .. } => Err(TransitionError::Session),
        }
    }

    /// [`TransitionRequest::Certify`] (repair, enrolment: a member who keeps its share):
    /// certifies the new state with the same secret share.
    fn on_certify(
        &mut self,
        stage: Stage,
        session: SessionId,
        me: &IdentityKey,
    ) -> Result<TransitionAnswer, TransitionError> {
        let kind = self.context.kind;
        let Stage::Waiting = stage else {
            return Err(TransitionError::Session);
        };
        if session != self.context.session || kind.refreshes() {
            return Err(TransitionError::Session);
        }
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

    /// Certifies `state` and keeps the result until prepare.
    pub(super) fn finish(
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
}
