//! Repair of a lost share, and the repairable threshold scheme (frost's `keys::repairable`)
//! that an enrolment (`enrol.rs`) runs too: `t` or more current members help a newcomer at
//! an index to a share of the same polynomial. Each helper splits a delta for every helper
//! (sealed to it), each helper sums the deltas it got into a sigma (sealed to the newcomer),
//! and the newcomer sums the sigmas into its share, which must match the group's verifying
//! share at its index. The other members keep their share and certify the new state.

use std::collections::{BTreeMap, BTreeSet};

use frost::keys::repairable::{Delta, Sigma};
use frost::{Identifier, Secp256K1Sha256TR};
use frost_secp256k1_tr as frost;
use rand::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use super::record::{next_state, transcript};
use super::state::{open_sealed, sealed_aad, Participant, Stage};
use super::{
    frost_err, malformed, same_members, TransitionAnswer, TransitionContext, TransitionCoordinator,
    TransitionError, TransitionRequest, WalletState,
};
use crate::frost::{identifier, shares::roster_index};
use crate::identity::{IdentityKey, Sealed};
use crate::keys::{GroupPublic, KeyShare};
use crate::protocol::SessionId;

/// The context of a repair or an enrolment of member `i` (the newcomer): `i` is a member for
/// a repair and is not for an enrolment, the newcomer's identity is new, only the newcomer
/// changes in the roster, and at least `t` current members other than the newcomer help.
pub(super) fn check_newcomer(
    context: &TransitionContext,
    from: &WalletState,
    i: u16,
    t: usize,
    helpers: &BTreeSet<u16>,
) -> Result<(), TransitionError> {
    let kind = context.kind;
    let repair = kind.repairs();
    if repair != from.roster.get(i).is_some() || i == 0 {
        return Err(malformed(
            kind,
            if repair {
                format!("{i} is not a member")
            } else {
                format!("{i} is already a member or not a valid index")
            },
        ));
    }
    let newcomer = context
        .new_roster
        .get(i)
        .ok_or_else(|| malformed(kind, format!("the new roster lacks {i}")))?;
    if from.roster.index_of(&newcomer.identity).is_some() {
        return Err(malformed(
            kind,
            "the newcomer's identity is already a member's",
        ));
    }
    let expected = from
        .roster
        .with(newcomer.clone())
        .map_err(|e| malformed(kind, e.to_string()))?;
    if !same_members(&context.new_roster, &expected) {
        return Err(malformed(kind, "only the newcomer may change"));
    }
    if helpers.len() < t
        || helpers.contains(&i)
        || helpers.iter().any(|h| from.roster.get(*h).is_none())
    {
        return Err(malformed(
            kind,
            format!("it needs at least {t} helpers among the current members, not the newcomer"),
        ));
    }
    Ok(())
}

/// A helper's first step (repair, enrolment): its deltas, one sealed to each other helper,
/// its own kept for [`TransitionRequest::RepairDeltas`].
pub(super) fn begin_helper<R: RngCore + CryptoRng>(
    context: &TransitionContext,
    from: &WalletState,
    index: u16,
    share: Option<&KeyShare>,
    me: &IdentityKey,
    rng: &mut R,
) -> Result<(Box<Delta>, BTreeMap<u16, Sealed>), TransitionError> {
    let kind = context.kind;
    let target = kind
        .newcomer()
        .ok_or_else(|| malformed(kind, "no newcomer"))?;
    let helpers = context
        .helpers
        .iter()
        .map(|h| identifier(*h))
        .collect::<Result<Vec<Identifier>, _>>()
        .map_err(frost_err)?;
    let key_package = share
        .map(KeyShare::key_package)
        .ok_or_else(|| malformed(kind, "this member holds no share"))?;
    let deltas = frost::keys::repairable::repair_share_part1::<Secp256K1Sha256TR, _>(
        &helpers,
        key_package,
        rng,
        identifier(target).map_err(frost_err)?,
    )
    .map_err(frost_err)?;
    let ctx = context.hash();
    let mut sealed = BTreeMap::new();
    let mut own = None;
    for (to_id, delta) in deltas {
        let to = roster_index(&to_id);
        if to == index {
            own = Some(delta);
            continue;
        }
        let recipient = from
            .roster
            .get(to)
            .ok_or_else(|| malformed(kind, format!("helper {to} is not a member")))?;
        let bytes = Zeroizing::new(delta.serialize());
        sealed.insert(
            to,
            Sealed(me.seal(
                &recipient.identity,
                &sealed_aad(&ctx, "delta", index, to),
                &bytes,
                rng,
            )),
        );
    }
    let own = own.ok_or_else(|| malformed(kind, "no delta for this helper"))?;
    Ok((Box::new(own), sealed))
}

impl Participant {
    /// [`TransitionRequest::RepairDeltas`] (helper): opens the other helpers' deltas and
    /// seals its sigma to the newcomer.
    pub(super) fn on_repair_deltas<R: RngCore + CryptoRng>(
        &mut self,
        stage: Stage,
        session: SessionId,
        sealed: BTreeMap<u16, Sealed>,
        me: &IdentityKey,
        rng: &mut R,
    ) -> Result<TransitionAnswer, TransitionError> {
        let (own, next) = match stage {
            Stage::Helper(own) => (own, Stage::Waiting),
            Stage::HelperRefresh1 { delta, secret } => (delta, Stage::Refresh1(secret)),
            _ => return Err(TransitionError::Session),
        };
        if session != self.context.session {
            return Err(TransitionError::Session);
        }
        let ctx = self.context.hash();
        let kind = self.context.kind;
        self.expect_every_other(&self.context.helpers, sealed.keys().copied())?;
        let mut deltas = vec![*own];
        for (from, blob) in &sealed {
            let plain = open_sealed(
                me,
                &self.from.roster,
                kind,
                &sealed_aad(&ctx, "delta", *from, self.index),
                *from,
                &blob.0,
            )?;
            deltas.push(Delta::deserialize(&plain).map_err(frost_err)?);
        }
        let sigma = frost::keys::repairable::repair_share_part2(&deltas);
        let target = kind
            .newcomer()
            .ok_or_else(|| malformed(kind, "no newcomer"))?;
        let recipient = self
            .context
            .new_roster
            .get(target)
            .ok_or_else(|| malformed(kind, "the newcomer is not in the new roster"))?;
        let bytes = Zeroizing::new(sigma.serialize());
        let sealed = Sealed(me.seal(
            &recipient.identity,
            &sealed_aad(&ctx, "sigma", self.index, target),
            &bytes,
            rng,
        ));
        self.stage = next;
        Ok(TransitionAnswer::Sigma { sealed })
    }

    /// [`TransitionRequest::RepairSigmas`] (newcomer): opens every helper's sigma, recovers
    /// its share, checks it against the group's verifying share and certifies the new state.
    pub(super) fn on_repair_sigmas(
        &mut self,
        stage: Stage,
        session: SessionId,
        sealed: BTreeMap<u16, Sealed>,
        me: &IdentityKey,
    ) -> Result<TransitionAnswer, TransitionError> {
        let Stage::Newcomer = stage else {
            return Err(TransitionError::Session);
        };
        if session != self.context.session {
            return Err(TransitionError::Session);
        }
        let state = next_state(&self.from, &self.context, &BTreeMap::new())?;
        let share = self.recover_share(&sealed, &state.group, me)?;
        let transcript = transcript(&self.context, &BTreeMap::new())?;
        self.finish(share, state, transcript, BTreeMap::new(), me)
    }
}

impl Participant {
    /// The newcomer's share from every helper's sealed sigma: the point of the group's
    /// polynomial at its index, checked against `group`'s verifying share there (the group
    /// after the repair or enrolment; a refresh, if any, comes after).
    pub(super) fn recover_share(
        &self,
        sealed: &BTreeMap<u16, Sealed>,
        group: &GroupPublic,
        me: &IdentityKey,
    ) -> Result<KeyShare, TransitionError> {
        let ctx = self.context.hash();
        let kind = self.context.kind;
        let got: Vec<u16> = sealed.keys().copied().collect();
        if got != self.context.helpers {
            return Err(TransitionError::Packages {
                expected: self.context.helpers.clone(),
                got,
            });
        }
        let mut sigmas = Vec::new();
        for (from, blob) in sealed {
            let plain = open_sealed(
                me,
                &self.from.roster,
                kind,
                &sealed_aad(&ctx, "sigma", *from, self.index),
                *from,
                &blob.0,
            )?;
            sigmas.push(Sigma::deserialize(&plain).map_err(frost_err)?);
        }
        let key_package = frost::keys::repairable::repair_share_part3(
            &sigmas,
            identifier(self.index).map_err(frost_err)?,
            group.public_key_package(),
        )
        .map_err(frost_err)?;
        KeyShare::new(key_package, group.clone()).map_err(|e| {
            TransitionError::Inconsistent(format!(
                "the repaired share does not match the group's verifying share: {e}"
            ))
        })
    }
}

impl TransitionCoordinator {
    /// Repair: what helper `index` needs (the deltas sealed to it).
    pub fn repair_deltas(&self, index: u16) -> TransitionRequest {
        TransitionRequest::RepairDeltas {
            session: self.context.session,
            sealed: self.deltas.get(&index).cloned().unwrap_or_default(),
        }
    }

    /// Repair: records a helper's sealed sigma.
    ///
    /// # Errors
    /// Out of protocol.
    pub fn add_sigma(
        &mut self,
        index: u16,
        answer: TransitionAnswer,
    ) -> Result<(), TransitionError> {
        let TransitionAnswer::Sigma { sealed } = answer else {
            return Err(malformed(
                self.context.kind,
                format!("member {index} answered out of protocol"),
            ));
        };
        self.sigmas.insert(index, sealed);
        Ok(())
    }

    /// Repair: the request for the newcomer, once every helper's sigma arrived.
    ///
    /// # Errors
    /// Sigmas missing.
    pub fn repair_sigmas(&mut self) -> Result<TransitionRequest, TransitionError> {
        let got: Vec<u16> = self.sigmas.keys().copied().collect();
        if got != self.context.helpers {
            return Err(TransitionError::Packages {
                expected: self.context.helpers.clone(),
                got,
            });
        }
        let state = next_state(&self.from, &self.context, &BTreeMap::new())?;
        let transcript = transcript(&self.context, &BTreeMap::new())?;
        self.state = Some((state, transcript));
        Ok(TransitionRequest::RepairSigmas {
            session: self.context.session,
            sealed: self.sigmas.clone(),
        })
    }
}
