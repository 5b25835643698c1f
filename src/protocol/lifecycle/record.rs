//! The certified record of a transition: the transcript every member computes, the state the
//! transition leads to (recomputed from public values only), every new member's certificate
//! of it, the [`CertifiedTransition`] that results, and a wallet's whole [`History`] from its
//! key generation on, which anyone can re-check offline.

use std::collections::BTreeMap;

use bitcoin::hashes::{sha256t_hash_newtype, Hash, HashEngine};
use frost::keys::dkg::round1;
use frost_secp256k1_tr as frost;
use serde::{Deserialize, Serialize};

use super::{
    enrol, frost_err, group, Digest, TransitionContext, TransitionError, TransitionKind,
    WalletState,
};
use crate::frost::identifier;
use crate::frost::pedersen::group_from_broadcasts;
use crate::identity::{IdentityKey, IdentityPublic};
use crate::keys::{GroupKey, GroupPublic};
use crate::protocol::dkg::{Certificate, CertifiedKeygen};

sha256t_hash_newtype! {
    struct TranscriptTag = hash_str("ckm/transition-transcript/v1");
    #[hash_newtype(forward)]
    struct TranscriptDigest(_);

    struct CertificateTag = hash_str("ckm/transition-certificate/v1");
    #[hash_newtype(forward)]
    struct CertificateDigest(_);
}

const CERTIFICATE_DOMAIN: &str = "transition-certificate";

/// The transcript: the context and every refresh round-1 package (none for a repair or an
/// enrolment without a refresh).
pub fn transcript(
    context: &TransitionContext,
    round1: &BTreeMap<u16, round1::Package>,
) -> Result<Digest, TransitionError> {
    let mut e = TranscriptDigest::engine();
    e.input(&context.hash().0);
    for (i, p) in round1 {
        e.input(&i.to_be_bytes());
        let bytes = p.serialize().map_err(frost_err)?;
        e.input(&(bytes.len() as u64).to_be_bytes());
        e.input(&bytes);
    }
    Ok(Digest(TranscriptDigest::from_engine(e).to_byte_array()))
}

/// The state after a transition, from the state before and what the transition's public
/// record determines (the refresh commitments; for a repair or enrolment alone nothing else).
///
/// # Errors
/// The inputs do not fit together.
pub fn next_state(
    from: &WalletState,
    context: &TransitionContext,
    round1: &BTreeMap<u16, round1::Package>,
) -> Result<WalletState, TransitionError> {
    let base = base_group(from, context)?;
    let group = if context.kind.refreshes() {
        group::next_group(&base, context, round1)?
    } else {
        base
    };
    if GroupKey::of(&group) != GroupKey::of(&from.group) {
        return Err(TransitionError::Inconsistent(
            "the group key changed".into(),
        ));
    }
    let state = WalletState {
        epoch: from.epoch + 1,
        roster: context.new_roster.clone(),
        group,
    };
    if !state.is_consistent() {
        return Err(TransitionError::Inconsistent(
            "the roster and the verifying shares differ".into(),
        ));
    }
    Ok(state)
}

/// The group the refresh rounds start from: the group before a refresh or removal; after a
/// repair (the same verifying shares) or an enrolment (one more), with or without a refresh.
pub(super) fn base_group(
    from: &WalletState,
    context: &TransitionContext,
) -> Result<GroupPublic, TransitionError> {
    match context.kind {
        TransitionKind::Refresh
        | TransitionKind::Remove(_)
        | TransitionKind::Repair(_)
        | TransitionKind::RepairRefresh(_) => Ok(from.group.clone()),
        TransitionKind::Enrol(i) | TransitionKind::EnrolRefresh(i) => {
            enrol::enrolled_group(from, &context.helpers, i)
        }
    }
}

fn certificate_message(transcript: &Digest, state: &Digest) -> [u8; 32] {
    let mut e = CertificateDigest::engine();
    e.input(&transcript.0);
    e.input(&state.0);
    CertificateDigest::from_engine(e).to_byte_array()
}

/// A member's certificate of a transition's result.
pub fn certify(key: &IdentityKey, transcript: &Digest, state: &Digest) -> Certificate {
    Certificate(key.sign(CERTIFICATE_DOMAIN, &certificate_message(transcript, state)))
}

pub(super) fn check_certificate(
    identity: &IdentityPublic,
    certificate: &Certificate,
    transcript: &Digest,
    state: &Digest,
) -> bool {
    identity
        .verify(
            CERTIFICATE_DOMAIN,
            &certificate_message(transcript, state),
            &certificate.0,
        )
        .is_ok()
}

/// Checks that every member of `state.roster` certified `state` under `transcript`.
///
/// # Errors
/// [`TransitionError::Certificate`] naming the first missing or bad one.
pub fn check_certificates(
    certificates: &BTreeMap<u16, Certificate>,
    transcript: &Digest,
    state: &WalletState,
) -> Result<(), TransitionError> {
    let hash = state.hash();
    for m in state.roster.entries() {
        let ok = certificates
            .get(&m.index)
            .is_some_and(|c| check_certificate(&m.identity, c, transcript, &hash));
        if !ok {
            return Err(TransitionError::Certificate {
                index: m.index,
                identity: m.identity,
            });
        }
    }
    if certificates.len() != state.roster.entries().len() {
        return Err(TransitionError::Inconsistent(
            "certificates from non-members".into(),
        ));
    }
    Ok(())
}

/// A committed transition: its context, its public round-1 packages, the state it leads to
/// and every new member's certificate. Public; kept by the coordinator and by every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedTransition {
    /// The context.
    pub context: TransitionContext,
    /// The refresh round-1 packages (empty for a repair or enrolment without a refresh).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub round1: BTreeMap<u16, round1::Package>,
    /// The resulting state.
    pub state: WalletState,
    /// Every new member's certificate.
    pub certificates: BTreeMap<u16, Certificate>,
}

impl CertifiedTransition {
    /// Re-checks the transition from `from`: the context, the resulting state recomputed from
    /// the public record, and every certificate. Returns the resulting state.
    ///
    /// # Errors
    /// [`TransitionError`] naming the problem.
    pub fn verify(&self, from: &WalletState) -> Result<WalletState, TransitionError> {
        self.context.check(from)?;
        let state = next_state(from, &self.context, &self.round1)?;
        if state.hash() != self.state.hash() || state.group != self.state.group {
            return Err(TransitionError::History(format!(
                "the recorded state of epoch {} is not the one its record determines",
                self.state.epoch
            )));
        }
        let transcript = transcript(&self.context, &self.round1)?;
        check_certificates(&self.certificates, &transcript, &state)?;
        Ok(state)
    }
}

/// A wallet's whole certified history: its key generation and every transition since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The key generation.
    pub keygen: CertifiedKeygen,
    /// Every committed transition, in order.
    #[serde(default)]
    pub transitions: Vec<CertifiedTransition>,
}

impl History {
    /// Re-checks everything from the key generation's round-1 commitments to the last
    /// transition; returns the current state.
    ///
    /// # Errors
    /// [`TransitionError::History`] or the failing step's error.
    pub fn verify(&self) -> Result<WalletState, TransitionError> {
        let broadcasts = self
            .keygen
            .round1
            .iter()
            .map(|(i, b)| identifier(*i).map(|id| (id, b.clone())))
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map_err(frost_err)?;
        let group = group_from_broadcasts(&broadcasts)
            .map_err(|e| TransitionError::History(e.to_string()))?;
        self.keygen
            .verify(&group)
            .map_err(|e| TransitionError::History(e.to_string()))?;
        let mut state = WalletState::genesis(&self.keygen, &group);
        for t in &self.transitions {
            t.verify(&state)?;
            state = t.state.clone();
        }
        Ok(state)
    }

    /// Identities that were members once and are not any more (removed, or replaced by a
    /// repair), with the epoch at which each left. A member never comes back under an
    /// identity it left with.
    pub fn former_members(&self) -> BTreeMap<IdentityPublic, u64> {
        let mut former = BTreeMap::new();
        let mut roster = &self.keygen.context.roster;
        for t in &self.transitions {
            for e in roster.entries() {
                if t.state.roster.index_of(&e.identity).is_none() {
                    former.entry(e.identity).or_insert(t.state.epoch);
                }
            }
            roster = &t.state.roster;
        }
        former
    }
}
