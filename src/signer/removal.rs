//! Removed members stay removed (issue 24):
//!
//! - a member never comes back under an identity it left with (removed, or replaced by a
//!   repair): every member refuses a transition whose new roster names one
//!   ([`crate::protocol::lifecycle::History::former_members`]); a signer that should return
//!   comes back as a fresh home with a new identity, which every operator approves as a
//!   peer anew;
//! - once a member holds a prepared removal of member `i`, it signs with no set that
//!   includes `i` (the removal may commit at any moment, and `i`'s share is meant to be
//!   dead from then on);
//! - a removal's commit certificate shown to the removed member (`Farewell`) makes it erase
//!   its share, after checking the record against its own state and the certificate against
//!   the new roster's votes (best effort: a removed member never reached keeps a share that
//!   combines with no current one).

use std::collections::BTreeSet;

use rand::{CryptoRng, RngCore};

use super::home::WalletInfo;
use super::{refuse, Refusal, Signer};
use crate::identity::IdentityPublic;
use crate::message::{ErrorCode, SignerToCoordinator};
use crate::protocol::lifecycle::{
    Ballot, CertifiedTransition, Decision, DecisionCertificate, TransitionAnswer,
    TransitionContext, TransitionKind,
};

impl Signer {
    /// Refuses a transition whose new roster names a former member of the wallet.
    pub(super) fn check_no_former(
        &self,
        info: &WalletInfo,
        context: &TransitionContext,
    ) -> Result<(), Refusal> {
        let Some(history) = info.history() else {
            return Ok(());
        };
        let former = history.former_members();
        if let Some((identity, epoch)) = context
            .new_roster
            .entries()
            .iter()
            .find_map(|e| former.get(&e.identity).map(|epoch| (e.identity, *epoch)))
        {
            return Err(refuse(
                ErrorCode::Refused,
                format!(
                    "signer {identity} left wallet {} at epoch {epoch} (removed or repaired away): a member never comes back under an identity it left with; enrol a fresh signer home (a new identity) instead",
                    info.name
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a signing set that includes a member this signer voted to remove.
    pub(super) fn check_not_removing(
        &self,
        info: &WalletInfo,
        signers: &BTreeSet<u16>,
    ) -> Result<(), Refusal> {
        let Some((session, pending)) = self
            .home
            .pending_info(&info.group_key)
            .map_err(|e| refuse(ErrorCode::Internal, e))?
        else {
            return Ok(());
        };
        if let Some(TransitionKind::Remove(i)) = pending.transitions.last().map(|t| t.context.kind)
        {
            if signers.contains(&i) {
                return Err(refuse(
                    ErrorCode::Refused,
                    format!(
                        "signer {i} is being removed from wallet {} (transition {session} is prepared here): this signer signs with no set that includes it; choose other signers",
                        info.name
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn transition_farewell<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        record: &CertifiedTransition,
        certificate: &DecisionCertificate,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        let info = self.bound_wallet(from, &record.context.wallet)?;
        if record.context.kind != TransitionKind::Remove(info.index) {
            return Err(refuse(
                ErrorCode::BadRequest,
                format!(
                    "a farewell carries the removal of this member (signer {}), not a {}",
                    info.index, record.context.kind
                ),
            ));
        }
        let (state, share) = self.current(&info)?;
        drop(share);
        let next = record.verify(&state).map_err(|e| {
            refuse(
                ErrorCode::Refused,
                format!(
                    "the removal does not follow from this member's epoch {}: {e}",
                    info.epoch
                ),
            )
        })?;
        let decision = Ballot::new(&record.context, &next)
            .check_certificate(certificate)
            .map_err(|e| refuse(ErrorCode::Refused, format!("the certificate: {e}")))?;
        if decision != Decision::Commit {
            return Err(refuse(
                ErrorCode::Refused,
                "an abort certificate: the removal did not happen, nothing is erased",
            ));
        }
        let erased = self
            .home
            .erase_wallet(
                &info.group_key,
                &info.name,
                format!(
                    "removed from the wallet at epoch {} (transition {}, commit certificate of {} ready votes, carried by coordinator {from}): share and record erased",
                    next.epoch,
                    record.context.session,
                    certificate.votes.len()
                ),
                rng,
            )
            .map_err(|e| refuse(ErrorCode::Internal, e))?;
        tracing::warn!(wallet = %info.name, epoch = next.epoch, erased, "removed from the wallet: share erased");
        Ok(SignerToCoordinator::Transition(TransitionAnswer::Erased {
            epoch: next.epoch,
        }))
    }
}
