//! The group a transition leads to, from public values only: the verifying shares of a
//! refresh recomputed from the helpers' round-1 commitments. Used by the record's check of a
//! history and by the members' and coordinator's halves alike, so it imports none of them.

use std::collections::BTreeMap;

use frost::keys::dkg::round1;
use frost::keys::PublicKeyPackage;
use frost_secp256k1_tr as frost;

use super::{element_of, frost_err, scalar_of, share_of, TransitionContext, TransitionError};
use crate::frost::identifier;
use crate::keys::GroupPublic;

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

/// The group the refresh rounds of a transition lead to from `base` (the group before a
/// refresh or removal, the group after the repair or enrolment part of one with a refresh):
/// every refresher's round-1 package must be there.
pub(super) fn next_group(
    base: &GroupPublic,
    context: &TransitionContext,
    round1: &BTreeMap<u16, round1::Package>,
) -> Result<GroupPublic, TransitionError> {
    let got: Vec<u16> = round1.keys().copied().collect();
    let expected = context.refreshers();
    if got != expected {
        return Err(TransitionError::Packages { expected, got });
    }
    refreshed_group(base, round1)
}
