//! Enrolment of a new signer: the repairable rounds (`repair.rs`) run for an index no one
//! holds, so the newcomer's share is a new point of the same polynomial. Its verifying share
//! is known in advance, from public values only: the Lagrange interpolation of the helpers'
//! ([`enrolled_share`]); the group after the enrolment is the old one plus that share.

use frost::keys::{PublicKeyPackage, VerifyingShare};
use frost::{Field, Group, Secp256K1Group, Secp256K1ScalarField};
use frost_secp256k1_tr as frost;

use super::{element_of, frost_err, scalar_of, share_of, TransitionError, WalletState};
use crate::frost::identifier;
use crate::keys::GroupPublic;

/// The verifying share a member enrolled at `index` must have: the Lagrange interpolation at
/// `index` of the verifying shares of `helpers`.
///
/// # Errors
/// Unknown helpers or malformed shares.
pub fn enrolled_share(
    group: &GroupPublic,
    helpers: &[u16],
    index: u16,
) -> Result<VerifyingShare, TransitionError> {
    let x = scalar_of(u64::from(index));
    let mut acc = <Secp256K1Group as Group>::identity();
    for &i in helpers {
        let xi = scalar_of(u64::from(i));
        let mut num = <Secp256K1ScalarField as Field>::one();
        let mut den = <Secp256K1ScalarField as Field>::one();
        for &j in helpers {
            if j == i {
                continue;
            }
            let xj = scalar_of(u64::from(j));
            num *= x - xj;
            den *= xi - xj;
        }
        let inv = <Secp256K1ScalarField as Field>::invert(&den)
            .map_err(|_| TransitionError::Inconsistent("two helpers share an index".into()))?;
        let id = identifier(i).map_err(frost_err)?;
        let share = group
            .public_key_package()
            .verifying_shares()
            .get(&id)
            .ok_or_else(|| TransitionError::Inconsistent(format!("helper {i} has no share")))?;
        acc += element_of(&share.serialize().map_err(frost_err)?)? * (num * inv);
    }
    share_of(acc)
}

/// The group after enrolling a member at index `i` with `helpers`: the old verifying shares
/// plus the enrolled one.
pub(super) fn enrolled_group(
    from: &WalletState,
    helpers: &[u16],
    i: u16,
) -> Result<GroupPublic, TransitionError> {
    let share = enrolled_share(&from.group, helpers, i)?;
    let old = from.group.public_key_package();
    let mut shares = old.verifying_shares().clone();
    shares.insert(identifier(i).map_err(frost_err)?, share);
    let pkp = PublicKeyPackage::new(shares, *old.verifying_key(), Some(from.group.threshold()));
    GroupPublic::new(pkp, from.group.chain_code())
        .map_err(|e| TransitionError::Inconsistent(e.to_string()))
}
