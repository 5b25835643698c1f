//! Refresh: every member's share changes; the group key and addresses stay. Each member
//! adds a zero polynomial (frost's `keys::refresh`): round 1 broadcasts its commitments,
//! round 2 seals one package to every other member, and the new share is checked against the
//! verifying shares recomputed from the public commitments ([`refreshed_group`]). A removal
//! (`remove.rs`) runs these same rounds among the remaining members.

use std::collections::BTreeMap;

use frost::keys::dkg::{round1, round2};
use frost_secp256k1_tr as frost;
use rand::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use super::record::{base_group, next_state, transcript};
use super::state::{open_sealed, sealed_aad, Participant, Stage};
use super::{
    frost_err, malformed, same_members, Digest, TransitionAnswer, TransitionContext,
    TransitionCoordinator, TransitionError, TransitionRequest, WalletState,
};
use crate::frost::{identifier, shares::roster_index};
use crate::identity::{IdentityKey, Sealed};
use crate::keys::{GroupPublic, KeyShare};
use crate::protocol::SessionId;

/// The context of a refresh: the roster stays the same and every member takes part.
pub(super) fn check(
    context: &TransitionContext,
    from: &WalletState,
    new_indexes: &[u16],
) -> Result<(), TransitionError> {
    let kind = context.kind;
    if !same_members(&context.new_roster, &from.roster) {
        return Err(malformed(kind, "the roster must stay the same"));
    }
    if context.helpers != new_indexes {
        return Err(malformed(kind, "every member takes part"));
    }
    Ok(())
}

/// A member's first step (refresh, removal): its zero polynomial's round-1 package.
pub(super) fn begin<R: RngCore + CryptoRng>(
    context: &TransitionContext,
    index: u16,
    t: u16,
    rng: &mut R,
) -> Result<(Stage, TransitionAnswer), TransitionError> {
    let id = identifier(index).map_err(frost_err)?;
    let n = u16::try_from(context.refreshers().len()).unwrap_or(u16::MAX);
    let (secret, package) =
        frost::keys::refresh::refresh_dkg_part1(id, n, t, &mut *rng).map_err(frost_err)?;
    Ok((
        Stage::Refresh1(secret),
        TransitionAnswer::Begun {
            package: Some(package),
            deltas: BTreeMap::new(),
        },
    ))
}

impl Participant {
    /// [`TransitionRequest::RefreshRound1`]: checks every member's round-1 package and seals
    /// a round-2 package to each of the others.
    pub(super) fn on_refresh_round1<R: RngCore + CryptoRng>(
        &mut self,
        stage: Stage,
        session: SessionId,
        packages: BTreeMap<u16, round1::Package>,
        me: &IdentityKey,
        rng: &mut R,
    ) -> Result<TransitionAnswer, TransitionError> {
        let Stage::Refresh1(secret) = stage else {
            return Err(TransitionError::Session);
        };
        if session != self.context.session {
            return Err(TransitionError::Session);
        }
        let kind = self.context.kind;
        let got: Vec<u16> = packages.keys().copied().collect();
        let expected = self.context.refreshers();
        if got != expected {
            return Err(TransitionError::Packages { expected, got });
        }
        let transcript = transcript(&self.context, &packages)?;
        let others = packages
            .iter()
            .filter(|(i, _)| **i != self.index)
            .map(|(i, p)| identifier(*i).map(|id| (id, p.clone())))
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map_err(frost_err)?;
        let (secret2, out) =
            frost::keys::refresh::refresh_dkg_part2(secret, &others).map_err(frost_err)?;
        let mut sealed = BTreeMap::new();
        for (to_id, package) in out {
            let to = roster_index(&to_id);
            let recipient = self
                .context
                .new_roster
                .get(to)
                .ok_or_else(|| malformed(kind, format!("{to} is not a member")))?;
            let bytes = Zeroizing::new(package.serialize().map_err(frost_err)?);
            sealed.insert(
                to,
                Sealed(me.seal(
                    &recipient.identity,
                    &sealed_aad(&transcript, "refresh", self.index, to),
                    &bytes,
                    rng,
                )),
            );
        }
        self.stage = Stage::Refresh2 {
            secret: secret2,
            packages,
            transcript,
        };
        Ok(TransitionAnswer::RefreshSealed { transcript, sealed })
    }

    /// [`TransitionRequest::RefreshRound2`]: checks every transcript, opens the packages
    /// sealed to this member, computes the new share and certifies the new state. The
    /// newcomer of a repair or enrolment with a refresh first recovers its share from the
    /// helpers' `sigmas`, then refreshes it like every other member.
    pub(super) fn on_refresh_round2(
        &mut self,
        stage: Stage,
        session: SessionId,
        sealed: BTreeMap<u16, Sealed>,
        transcripts: BTreeMap<u16, Digest>,
        sigmas: BTreeMap<u16, Sealed>,
        me: &IdentityKey,
    ) -> Result<TransitionAnswer, TransitionError> {
        let Stage::Refresh2 {
            secret,
            packages,
            transcript,
        } = stage
        else {
            return Err(TransitionError::Session);
        };
        if session != self.context.session {
            return Err(TransitionError::Session);
        }
        let kind = self.context.kind;
        let mismatched: Vec<u16> = transcripts
            .iter()
            .filter(|(_, t)| **t != transcript)
            .map(|(i, _)| *i)
            .collect();
        let members: Vec<u16> = transcripts.keys().copied().collect();
        let refreshers = self.context.refreshers();
        if members != refreshers {
            return Err(TransitionError::Packages {
                expected: refreshers,
                got: members,
            });
        }
        if !mismatched.is_empty() {
            return Err(TransitionError::TranscriptMismatch(mismatched));
        }
        self.expect_every_other(&refreshers, sealed.keys().copied())?;
        let mut round2_packages = BTreeMap::new();
        for (from, blob) in &sealed {
            let plain = open_sealed(
                me,
                &self.context.new_roster,
                kind,
                &sealed_aad(&transcript, "refresh", *from, self.index),
                *from,
                &blob.0,
            )?;
            let package = round2::Package::deserialize(&plain).map_err(frost_err)?;
            round2_packages.insert(identifier(*from).map_err(frost_err)?, package);
        }
        let others = packages
            .iter()
            .filter(|(i, _)| **i != self.index)
            .map(|(i, p)| identifier(*i).map(|id| (id, p.clone())))
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map_err(frost_err)?;
        // The group the refresh starts from (after the repair or enrolment part, if any) and
        // this member's share of it: the one it holds, or for the newcomer the one the
        // helpers' sigmas give (checked against that group's verifying share).
        let base = base_group(&self.from, &self.context)?;
        let old = match (&self.share, kind.newcomer()) {
            (Some(share), _) if sigmas.is_empty() => share.clone(),
            (None, Some(i)) if i == self.index => self.recover_share(&sigmas, &base, me)?,
            (Some(_), _) => {
                return Err(malformed(
                    kind,
                    "sigmas sent to a member that keeps its share",
                ))
            }
            (None, _) => return Err(malformed(kind, "this member holds no share")),
        };
        let (key_package, pkp) = frost::keys::refresh::refresh_dkg_shares(
            &secret,
            &others,
            &round2_packages,
            base.public_key_package().clone(),
            old.key_package().clone(),
        )
        .map_err(frost_err)?;
        let state = next_state(&self.from, &self.context, &packages)?;
        // frost's own result and the public recomputation must agree.
        let group = GroupPublic::new(pkp, self.from.group.chain_code())
            .map_err(|e| TransitionError::Inconsistent(e.to_string()))?;
        if group != state.group {
            return Err(TransitionError::Inconsistent(
                "frost's refreshed verifying shares differ from the commitments'".into(),
            ));
        }
        let share = KeyShare::new(key_package, state.group.clone())
            .map_err(|e| TransitionError::Inconsistent(e.to_string()))?;
        self.finish(share, state, transcript, packages, me)
    }
}

impl TransitionCoordinator {
    /// Refresh: the round-1 request (the same for every member), once all packages arrived.
    ///
    /// # Errors
    /// Packages missing.
    pub fn refresh_round1(&mut self) -> Result<TransitionRequest, TransitionError> {
        let got: Vec<u16> = self.round1.keys().copied().collect();
        let expected = self.context.refreshers();
        if got != expected {
            return Err(TransitionError::Packages { expected, got });
        }
        let state = next_state(&self.from, &self.context, &self.round1)?;
        let transcript = transcript(&self.context, &self.round1)?;
        self.state = Some((state, transcript));
        Ok(TransitionRequest::RefreshRound1 {
            session: self.context.session,
            packages: self.round1.clone(),
        })
    }

    /// Refresh: records a member's sealed round-2 packages.
    ///
    /// # Errors
    /// Out of protocol.
    pub fn add_refresh_sealed(
        &mut self,
        index: u16,
        answer: TransitionAnswer,
    ) -> Result<(), TransitionError> {
        let TransitionAnswer::RefreshSealed { transcript, sealed } = answer else {
            return Err(malformed(
                self.context.kind,
                format!("member {index} answered out of protocol"),
            ));
        };
        self.transcripts.insert(index, transcript);
        for (to, blob) in sealed {
            self.sealed.entry(to).or_default().insert(index, blob);
        }
        Ok(())
    }

    /// Refresh: what member `index` needs for round 2 (the newcomer of a repair or
    /// enrolment with a refresh also gets the helpers' sigmas: call after
    /// [`TransitionCoordinator::add_sigma`] for every helper).
    pub fn refresh_round2(&self, index: u16) -> TransitionRequest {
        let sigmas = if self.context.kind.newcomer() == Some(index) {
            self.sigmas.clone()
        } else {
            BTreeMap::new()
        };
        TransitionRequest::RefreshRound2 {
            session: self.context.session,
            sealed: self.sealed.get(&index).cloned().unwrap_or_default(),
            transcripts: self.transcripts.clone(),
            sigmas,
        }
    }
}
