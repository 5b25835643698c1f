//! Both halves of a transition in one process: [`run_in_memory`] routes every message between
//! the [`TransitionCoordinator`] and each member's [`Participant`], as the signer daemon and
//! the coordinator's network driver do over HTTP. For tests and documentation.

use std::collections::BTreeMap;

use rand::{CryptoRng, RngCore};

use super::{
    malformed, CertifiedTransition, Holding, Participant, Prepared, TransitionContext,
    TransitionCoordinator, TransitionError, TransitionRequest, WalletState,
};
use crate::identity::IdentityKey;
use crate::keys::KeyShare;

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
    if context.kind.newcomer().is_some() {
        // Repair or enrolment (with or without a refresh): the helpers' deltas and sigmas.
        for h in &context.helpers {
            let (key, p) = participants
                .get_mut(h)
                .ok_or_else(|| malformed(context.kind, format!("helper {h} is not a member")))?;
            let answer = p.step(coordinator.repair_deltas(*h), key, rng)?;
            coordinator.add_sigma(*h, answer)?;
        }
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
