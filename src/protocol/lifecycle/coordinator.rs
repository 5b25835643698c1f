//! The coordinator's half of a transition: [`TransitionCoordinator`] collects the members'
//! answers to begin, relays what each member needs next (the kind-specific rounds live in
//! `refresh.rs` and `repair.rs`), and checks every certificate of the new state. Its prepare
//! request and final record are in `commit.rs`.

use std::collections::BTreeMap;

use frost::keys::dkg::round1;
use frost_secp256k1_tr as frost;

use super::record::{check_certificate, next_state, transcript};
use super::{
    malformed, Digest, TransitionAnswer, TransitionContext, TransitionError, TransitionRequest,
    WalletState,
};
use crate::identity::Sealed;
use crate::protocol::dkg::Certificate;

/// The coordinator's side: who is asked what, and the record it ends with.
#[derive(Debug)]
pub struct TransitionCoordinator {
    pub(super) context: TransitionContext,
    pub(super) from: WalletState,
    pub(super) round1: BTreeMap<u16, round1::Package>,
    pub(super) transcripts: BTreeMap<u16, Digest>,
    /// Refresh round-2 packages, by recipient then sender.
    pub(super) sealed: BTreeMap<u16, BTreeMap<u16, Sealed>>,
    /// Repair deltas, by recipient (a helper) then sender.
    pub(super) deltas: BTreeMap<u16, BTreeMap<u16, Sealed>>,
    pub(super) sigmas: BTreeMap<u16, Sealed>,
    pub(super) state: Option<(WalletState, Digest)>,
    pub(super) certificates: BTreeMap<u16, Certificate>,
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
            deltas: BTreeMap::new(),
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
        }
        if kind.newcomer().is_some() && self.context.helpers.contains(&index) {
            for (to, blob) in deltas {
                self.deltas.entry(to).or_default().insert(index, blob);
            }
        }
        Ok(())
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
}
