//! Both halves of a certified key generation driven in one process, with every message
//! routed in memory: for tests, benchmarks and docs.

use rand::{CryptoRng, RngCore};

use super::{
    CertifiedKeygen, CertifiedShare, CoordinatorError, DkgContext, DkgCoordinator, Participant1,
    ParticipantError, Stored,
};
use crate::identity::{IdentityKey, IdentityPublic};
use crate::keys::GroupPublic;

/// Errors of [`run_in_memory`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InMemoryError {
    /// A participant refused or aborted.
    #[error("participant {index} failed")]
    Participant {
        /// Roster index.
        index: u16,
        /// The cause.
        #[source]
        source: Box<ParticipantError>,
    },
    /// The coordinator aborted.
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    /// `keys` does not match the roster.
    #[error("one identity key per roster member is needed, in roster order")]
    Keys,
}

/// Runs a certified key generation in one process: `keys[i]` is the identity key of roster
/// member `i + 1`, and every member approves every other. For tests, benchmarks and docs.
///
/// # Errors
/// Any participant's or the coordinator's error.
pub fn run_in_memory<R: RngCore + CryptoRng>(
    context: DkgContext,
    keys: &[&IdentityKey],
    rng: &mut R,
) -> Result<(Vec<CertifiedShare>, GroupPublic, CertifiedKeygen), InMemoryError> {
    if keys.len() != usize::from(context.roster.len())
        || keys
            .iter()
            .zip(context.roster.entries())
            .any(|(k, e)| k.public() != e.identity)
    {
        return Err(InMemoryError::Keys);
    }
    let fail = |index: u16| {
        move |source| InMemoryError::Participant {
            index,
            source: Box::new(source),
        }
    };
    let coordinator_id = context.coordinator;
    let mut coordinator = DkgCoordinator::new(context)?;
    let members: Vec<IdentityPublic> = keys.iter().map(|k| k.public()).collect();
    let approve = |id: &IdentityPublic| members.contains(id);
    let mut stage1 = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let index = u16::try_from(i + 1).map_err(|_| InMemoryError::Keys)?;
        let (p, answer) = Participant1::begin(
            coordinator.begin(),
            &key.public(),
            &coordinator_id,
            approve,
            rng,
        )
        .map_err(fail(index))?;
        coordinator.add_round1(index, answer)?;
        stage1.push((index, *key, p));
    }
    let request = coordinator.round1_request()?;
    let mut stage2 = Vec::new();
    for (index, key, p) in stage1 {
        let (p, answer) = p
            .receive_round1(request.clone(), key, rng)
            .map_err(fail(index))?;
        coordinator.add_round2(index, answer)?;
        stage2.push((index, key, p));
    }
    let mut stage3 = Vec::new();
    for (index, key, p) in stage2 {
        let (p, answer) = p
            .receive_round2(coordinator.round2_request(index)?, key)
            .map_err(fail(index))?;
        coordinator.add_certified(index, answer)?;
        stage3.push((index, p));
    }
    let confirm = coordinator.confirm_request()?;
    let mut shares = Vec::new();
    for (index, p) in stage3 {
        let share = p.confirm(confirm.clone()).map_err(fail(index))?;
        coordinator.add_stored(
            index,
            Stored {
                fingerprint: share.fingerprint,
            },
        )?;
        shares.push(share);
    }
    let (group, keygen) = coordinator.finish()?;
    Ok((shares, group, keygen))
}
