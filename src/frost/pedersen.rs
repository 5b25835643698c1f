//! The uncertified Pedersen distributed key generation of FROST — the primitive that the
//! certified protocol [`crate::protocol::dkg`] (approved peers, sealed packages, certificates)
//! builds on: each participant as a state machine ([`DkgRound1`] → [`DkgRound2`] →
//! [`KeyShare`]) and the coordinator's relay ([`DkgRelay`]), which routes packages and checks
//! agreement but never sees secret material.
//!
//! Round 1 broadcasts are public; each participant hashes the full set it received (the
//! transcript) and every participant checks everyone else's transcript hash before accepting
//! its share, so a relay that shows different round-1 packages to different participants is
//! caught. Round 2 packages are secret and addressed to one participant each: the transport
//! must encrypt them end to end (see [`crate::identity`]). The wallet's chain code is hashed
//! from a random contribution of every participant.

use std::collections::BTreeMap;
use std::fmt;

use bitcoin::hashes::{sha256t_hash_newtype, Hash, HashEngine};
use frost::keys::dkg::{self as fdkg, round1, round2};
use frost::Identifier;
use frost_secp256k1_tr as frost;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use super::shares::{roster_index, GroupPublic, KeyError, KeyShare};

sha256t_hash_newtype! {
    pub(crate) struct TranscriptTag = hash_str("ckm/dkg-transcript");
    #[hash_newtype(forward)]
    pub(crate) struct TranscriptDigest(_);

    pub(crate) struct ChainCodeTag = hash_str("ckm/chain-code");
    #[hash_newtype(forward)]
    pub(crate) struct ChainCodeDigest(_);
}

/// Group parameters: `threshold`-of-`signers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkgParams {
    threshold: u16,
    signers: u16,
}

impl DkgParams {
    /// Largest group supported.
    pub const MAX_SIGNERS: u16 = 255;

    /// `threshold`-of-`signers` with `2 <= threshold <= signers <= 255`.
    ///
    /// # Errors
    /// [`DkgError::InvalidParams`] otherwise.
    pub fn new(threshold: u16, signers: u16) -> Result<Self, DkgError> {
        if threshold < 2 || threshold > signers || signers > Self::MAX_SIGNERS {
            return Err(DkgError::InvalidParams { threshold, signers });
        }
        Ok(DkgParams { threshold, signers })
    }

    /// Signatures need this many signers.
    pub fn threshold(&self) -> u16 {
        self.threshold
    }

    /// This many signers hold shares.
    pub fn signers(&self) -> u16 {
        self.signers
    }

    /// The identifiers of the roster, `1..=signers`.
    pub fn identifiers(&self) -> Vec<Identifier> {
        (1..=self.signers)
            .filter_map(|i| super::identifier(i).ok())
            .collect()
    }
}

/// Errors of the DKG, on the participant and on the relay side. Participants are named by
/// their 1-based roster index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DkgError {
    /// Threshold and group size do not make a group.
    #[error("invalid group {threshold}-of-{signers}: need 2 <= threshold <= signers <= 255")]
    InvalidParams {
        /// Requested threshold.
        threshold: u16,
        /// Requested group size.
        signers: u16,
    },
    /// A package is missing or extra for the given participant.
    #[error("round {round}: expected a package from each of {expected} participants, got {got}")]
    WrongParticipants {
        /// DKG round (1 or 2).
        round: u8,
        /// Packages expected.
        expected: usize,
        /// Packages received.
        got: usize,
    },
    /// The relay altered this participant's own round-1 broadcast.
    #[error(
        "the round-1 broadcast relayed back for participant {participant} is not the one it sent"
    )]
    OwnBroadcastAltered {
        /// The participant.
        participant: u16,
    },
    /// Participants saw different round-1 broadcasts (broadcast inconsistency).
    #[error("round-1 transcripts differ: participants {culprits:?} saw other round-1 packages")]
    TranscriptMismatch {
        /// Participants whose transcript hash differs from ours.
        culprits: Vec<u16>,
    },
    /// Participants ended with different group keys or chain codes.
    #[error(
        "participants disagree on the group: {culprits:?} reported another group key or chain code"
    )]
    Disagreement {
        /// Participants disagreeing with the majority.
        culprits: Vec<u16>,
    },
    /// frost rejected a package; `culprit` names the sender when frost identified one.
    #[error("frost rejected the DKG packages{}", culprit.map(|c| format!(" of participant {c}")).unwrap_or_default())]
    Frost {
        /// The participant frost blamed, if any.
        culprit: Option<u16>,
        /// The cause.
        #[source]
        source: frost::Error,
    },
    /// The resulting key material is inconsistent.
    #[error("the DKG produced inconsistent key material")]
    Key(#[from] KeyError),
}

fn frost_error(source: frost::Error) -> DkgError {
    let culprit = source.culprits().first().map(roster_index);
    DkgError::Frost { culprit, source }
}

/// A participant's round-1 broadcast: its frost package and its chain-code contribution.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round1Broadcast {
    /// The frost round-1 package (public commitments and proof of knowledge).
    pub package: round1::Package,
    /// 32 random bytes mixed into the wallet's chain code.
    #[serde(with = "hex::serde")]
    pub chain_code_contribution: [u8; 32],
}

impl fmt::Debug for Round1Broadcast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Round1Broadcast").finish_non_exhaustive()
    }
}

/// Hash of the complete set of round-1 broadcasts a participant received.
pub type TranscriptHash = [u8; 32];

/// What a participant sends after round 1: its transcript hash and one SECRET round-2
/// package per other participant (to be encrypted to each recipient).
pub struct Round2Send {
    /// Hash of all round-1 broadcasts, for the consistency check.
    pub transcript: TranscriptHash,
    /// Secret packages by recipient.
    pub packages: BTreeMap<Identifier, round2::Package>,
}

impl fmt::Debug for Round2Send {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Round2Send")
            .field("transcript", &hex::encode(self.transcript))
            .field("packages", &"<redacted>")
            .finish()
    }
}

/// The hash of a complete set of round-1 broadcasts, bound to `context` (the hash of
/// everything the participants agreed on before round 1: see
/// [`crate::protocol::dkg::DkgContext`]; all zeros for an uncertified in-memory run).
pub fn transcript_hash(
    context: &[u8; 32],
    params: &DkgParams,
    broadcasts: &BTreeMap<Identifier, Round1Broadcast>,
) -> Result<TranscriptHash, DkgError> {
    let mut engine = TranscriptDigest::engine();
    engine.input(context);
    engine.input(&params.threshold.to_be_bytes());
    engine.input(&params.signers.to_be_bytes());
    for (id, b) in broadcasts {
        engine.input(&id.serialize());
        let package = b.package.serialize().map_err(frost_error)?;
        engine.input(&(package.len() as u64).to_be_bytes());
        engine.input(&package);
        engine.input(&b.chain_code_contribution);
    }
    Ok(TranscriptDigest::from_engine(engine).to_byte_array())
}

/// The wallet's chain code: a hash of every participant's contribution.
pub fn chain_code(broadcasts: &BTreeMap<Identifier, Round1Broadcast>) -> [u8; 32] {
    let mut engine = ChainCodeDigest::engine();
    for (id, b) in broadcasts {
        engine.input(&id.serialize());
        engine.input(&b.chain_code_contribution);
    }
    ChainCodeDigest::from_engine(engine).to_byte_array()
}

/// The group a complete set of round-1 broadcasts defines, computed from the public
/// commitments alone (as `dkg::part3` computes it, Taproot tweak and even-Y normalisation
/// included): anyone holding the broadcasts can check a DKG's result without a share.
///
/// # Errors
/// frost rejects the commitments, or the result does not make a group.
pub fn group_from_broadcasts(
    broadcasts: &BTreeMap<Identifier, Round1Broadcast>,
) -> Result<GroupPublic, DkgError> {
    use frost::keys::Tweak as _;
    let commitments: BTreeMap<Identifier, &frost::keys::VerifiableSecretSharingCommitment> =
        broadcasts
            .iter()
            .map(|(id, b)| (*id, b.package.commitment()))
            .collect();
    let package =
        frost::keys::PublicKeyPackage::from_dkg_commitments(&commitments).map_err(frost_error)?;
    let package = package.tweak::<&[u8]>(None);
    Ok(GroupPublic::new(package, chain_code(broadcasts))?)
}

/// A participant after round 1 (holds its round-1 secret).
pub struct DkgRound1 {
    identifier: Identifier,
    params: DkgParams,
    context: [u8; 32],
    secret: round1::SecretPackage,
    own: Round1Broadcast,
}

impl fmt::Debug for DkgRound1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DkgRound1")
            .field("participant", &roster_index(&self.identifier))
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl DkgRound1 {
    /// Starts the DKG for participant `identifier`, returning its state and its broadcast.
    /// `context` is bound into the transcript (see [`transcript_hash`]).
    ///
    /// # Errors
    /// Fails when frost rejects the parameters.
    pub fn start<R: RngCore + CryptoRng>(
        identifier: Identifier,
        params: DkgParams,
        context: [u8; 32],
        rng: &mut R,
    ) -> Result<(Self, Round1Broadcast), DkgError> {
        let (secret, package) =
            fdkg::part1(identifier, params.signers, params.threshold, &mut *rng)
                .map_err(frost_error)?;
        let mut chain_code_contribution = [0u8; 32];
        rng.fill_bytes(&mut chain_code_contribution);
        let own = Round1Broadcast {
            package,
            chain_code_contribution,
        };
        Ok((
            DkgRound1 {
                identifier,
                params,
                context,
                secret,
                own: own.clone(),
            },
            own,
        ))
    }

    /// This participant's identifier.
    pub fn identifier(&self) -> Identifier {
        self.identifier
    }

    /// Takes the round-1 broadcasts of ALL participants (including our own, which must come
    /// back unchanged) and produces round 2.
    ///
    /// # Errors
    /// Wrong participant set, altered own broadcast, or a package frost rejects (the culprit
    /// is named).
    pub fn receive_round1(
        self,
        broadcasts: &BTreeMap<Identifier, Round1Broadcast>,
    ) -> Result<(DkgRound2, Round2Send), DkgError> {
        let expected = self.params.identifiers();
        if broadcasts.len() != expected.len()
            || !expected.iter().all(|id| broadcasts.contains_key(id))
        {
            return Err(DkgError::WrongParticipants {
                round: 1,
                expected: expected.len(),
                got: broadcasts.len(),
            });
        }
        if broadcasts.get(&self.identifier) != Some(&self.own) {
            return Err(DkgError::OwnBroadcastAltered {
                participant: roster_index(&self.identifier),
            });
        }
        let transcript = transcript_hash(&self.context, &self.params, broadcasts)?;
        let others: BTreeMap<Identifier, round1::Package> = broadcasts
            .iter()
            .filter(|(id, _)| **id != self.identifier)
            .map(|(id, b)| (*id, b.package.clone()))
            .collect();
        let (secret, packages) = fdkg::part2(self.secret, &others).map_err(frost_error)?;
        Ok((
            DkgRound2 {
                identifier: self.identifier,
                params: self.params,
                secret,
                round1: others,
                transcript,
                chain_code: chain_code(broadcasts),
            },
            Round2Send {
                transcript,
                packages,
            },
        ))
    }
}

/// A participant after round 2 (holds its round-2 secret).
pub struct DkgRound2 {
    identifier: Identifier,
    params: DkgParams,
    secret: round2::SecretPackage,
    round1: BTreeMap<Identifier, round1::Package>,
    transcript: TranscriptHash,
    chain_code: [u8; 32],
}

impl fmt::Debug for DkgRound2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DkgRound2")
            .field("participant", &roster_index(&self.identifier))
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl DkgRound2 {
    /// This participant's transcript hash (hash of every round-1 broadcast it saw).
    pub fn transcript(&self) -> TranscriptHash {
        self.transcript
    }

    /// Finishes the DKG with the round-2 packages addressed to us (one from every other
    /// participant) and every participant's transcript hash (ours included).
    ///
    /// # Errors
    /// Transcript mismatch (broadcast inconsistency), wrong participant set, or an invalid
    /// share (the culprit is named).
    pub fn finish(
        self,
        received: &BTreeMap<Identifier, round2::Package>,
        transcripts: &BTreeMap<Identifier, TranscriptHash>,
    ) -> Result<KeyShare, DkgError> {
        let expected = self.params.identifiers();
        if transcripts.len() != expected.len()
            || !expected.iter().all(|id| transcripts.contains_key(id))
        {
            return Err(DkgError::WrongParticipants {
                round: 2,
                expected: expected.len(),
                got: transcripts.len(),
            });
        }
        let culprits: Vec<u16> = transcripts
            .iter()
            .filter(|(_, t)| **t != self.transcript)
            .map(|(id, _)| roster_index(id))
            .collect();
        if !culprits.is_empty() {
            return Err(DkgError::TranscriptMismatch { culprits });
        }
        if received.len() != self.round1.len()
            || !self.round1.keys().all(|id| received.contains_key(id))
        {
            return Err(DkgError::WrongParticipants {
                round: 2,
                expected: self.round1.len(),
                got: received.len(),
            });
        }
        let (key_package, public_key_package) =
            fdkg::part3(&self.secret, &self.round1, received).map_err(frost_error)?;
        let group = GroupPublic::new(public_key_package, self.chain_code)?;
        Ok(KeyShare::new(key_package, group)?)
    }
}

/// The coordinator's side of the DKG: collects and routes packages without being able to
/// read the secret ones (`S` is whatever sealed form the transport uses), and checks that
/// every participant reports the same group.
#[derive(Debug)]
pub struct DkgRelay<S> {
    params: DkgParams,
    round1: BTreeMap<Identifier, Round1Broadcast>,
    transcripts: BTreeMap<Identifier, TranscriptHash>,
    round2: BTreeMap<Identifier, BTreeMap<Identifier, S>>,
    results: BTreeMap<Identifier, GroupPublic>,
}

impl<S: Clone> DkgRelay<S> {
    /// A relay for a group of `params`.
    pub fn new(params: DkgParams) -> Self {
        DkgRelay {
            params,
            round1: BTreeMap::new(),
            transcripts: BTreeMap::new(),
            round2: BTreeMap::new(),
            results: BTreeMap::new(),
        }
    }

    /// The group parameters.
    pub fn params(&self) -> DkgParams {
        self.params
    }

    /// Records a participant's round-1 broadcast.
    pub fn add_round1(&mut self, from: Identifier, broadcast: Round1Broadcast) {
        self.round1.insert(from, broadcast);
    }

    /// All round-1 broadcasts, once every participant sent one.
    pub fn round1_complete(&self) -> Option<&BTreeMap<Identifier, Round1Broadcast>> {
        (self.round1.len() == usize::from(self.params.signers)).then_some(&self.round1)
    }

    /// Records a participant's transcript hash and its sealed packages by recipient.
    pub fn add_round2(
        &mut self,
        from: Identifier,
        transcript: TranscriptHash,
        sealed: BTreeMap<Identifier, S>,
    ) {
        self.transcripts.insert(from, transcript);
        for (to, package) in sealed {
            self.round2.entry(to).or_default().insert(from, package);
        }
    }

    /// What `recipient` needs to finish: the sealed packages addressed to it and every
    /// transcript hash. `None` until every participant has sent round 2.
    pub fn round2_for(
        &self,
        recipient: &Identifier,
    ) -> Option<(
        BTreeMap<Identifier, S>,
        BTreeMap<Identifier, TranscriptHash>,
    )> {
        if self.transcripts.len() != usize::from(self.params.signers) {
            return None;
        }
        let packages = self.round2.get(recipient).cloned().unwrap_or_default();
        Some((packages, self.transcripts.clone()))
    }

    /// Records the group a participant ended with.
    pub fn add_result(&mut self, from: Identifier, group: GroupPublic) {
        self.results.insert(from, group);
    }

    /// The agreed group, once every participant reported the same one.
    ///
    /// # Errors
    /// [`DkgError::WrongParticipants`] while results are missing, [`DkgError::Disagreement`]
    /// naming who differs from the most common result.
    pub fn finish(&self) -> Result<GroupPublic, DkgError> {
        let expected = usize::from(self.params.signers);
        if self.results.len() != expected {
            return Err(DkgError::WrongParticipants {
                round: 3,
                expected,
                got: self.results.len(),
            });
        }
        let mut counts: Vec<(&GroupPublic, usize)> = Vec::new();
        for g in self.results.values() {
            match counts.iter_mut().find(|(x, _)| *x == g) {
                Some((_, n)) => *n += 1,
                None => counts.push((g, 1)),
            }
        }
        counts.sort_by_key(|c| std::cmp::Reverse(c.1));
        let Some((majority, _)) = counts.first() else {
            return Err(DkgError::WrongParticipants {
                round: 3,
                expected,
                got: 0,
            });
        };
        let culprits: Vec<u16> = self
            .results
            .iter()
            .filter(|(_, g)| g != majority)
            .map(|(id, _)| roster_index(id))
            .collect();
        if !culprits.is_empty() || majority.threshold() != self.params.threshold {
            return Err(DkgError::Disagreement { culprits });
        }
        Ok((*majority).clone())
    }
}

/// Runs a whole DKG in memory, routing packages through a [`DkgRelay`] (tests, benchmarks
/// and documentation; real deployments run each participant in its own process).
///
/// # Errors
/// Any participant's error.
pub fn run_in_memory<R: RngCore + CryptoRng>(
    params: DkgParams,
    rng: &mut R,
) -> Result<Vec<KeyShare>, DkgError> {
    let mut relay: DkgRelay<round2::Package> = DkgRelay::new(params);
    let mut round1 = Vec::new();
    for id in params.identifiers() {
        let (state, broadcast) = DkgRound1::start(id, params, [0u8; 32], rng)?;
        relay.add_round1(id, broadcast);
        round1.push(state);
    }
    let broadcasts = relay
        .round1_complete()
        .cloned()
        .ok_or(DkgError::WrongParticipants {
            round: 1,
            expected: usize::from(params.signers),
            got: 0,
        })?;
    let mut round2 = Vec::new();
    for state in round1 {
        let id = state.identifier();
        let (next, send) = state.receive_round1(&broadcasts)?;
        relay.add_round2(id, send.transcript, send.packages);
        round2.push((id, next));
    }
    let mut shares = Vec::new();
    for (id, state) in round2 {
        let (packages, transcripts) = relay.round2_for(&id).ok_or(DkgError::WrongParticipants {
            round: 2,
            expected: usize::from(params.signers),
            got: 0,
        })?;
        let share = state.finish(&packages, &transcripts)?;
        relay.add_result(id, share.group().clone());
        shares.push(share);
    }
    relay.finish()?;
    Ok(shares)
}
