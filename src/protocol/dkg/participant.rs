//! The signer's half of a certified key generation, as typestates that each step consumes:
//! [`Participant1`] (accepted, round-1 broadcast sent) → [`Participant2`] (round-2 packages
//! sealed) → [`Participant3`] (rounds finished, share in memory) → [`CertifiedShare`] (every
//! certificate checked, ready to be stored).
//!
//! A signer takes part only when every *other* member of the roster is a peer its operator
//! approved (and the coordinator itself is not one of them); otherwise it refuses before
//! round 1, naming the identity, and keeps nothing. Round-2 packages are sealed end to end to
//! the roster's identity keys with the transcript as associated data, so a roster that differs
//! between signers, or any other difference in what they were shown, makes the packages
//! unopenable and the transcripts unequal. Why a coordinator cannot learn the key: round-2
//! packages are only ever sealed to identity keys an operator approved, bound to one
//! transcript; the coordinator holds none of those keys.

use std::collections::BTreeMap;
use std::fmt;

use frost::keys::dkg::round2;
use frost_secp256k1_tr as frost;
use rand::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use super::record::certify;
use super::{
    by_identifier, round2_aad, Begin, Certified, CertifiedKeygen, ConfirmRequest, ContextError,
    DkgContext, Round1Answer, Round1Request, Round2Answer, Round2Request, Transcript, VerifyError,
};
use crate::frost::pedersen::{DkgError, DkgRound1, DkgRound2, Round1Broadcast};
use crate::frost::{identifier, shares::roster_index};
use crate::identity::{IdentityError, IdentityKey, IdentityPublic, Sealed};
use crate::keys::{GroupPublic, KeyShare, WalletFingerprint};
use crate::protocol::SessionId;

/// Why a signer refuses or aborts a key generation. Participants are named by roster index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParticipantError {
    /// The context is malformed.
    #[error("invalid key generation request")]
    Context(#[from] ContextError),
    /// The authenticated requester is not the coordinator the context names.
    #[error("the request comes from coordinator {from} but the context names {named}")]
    CoordinatorMismatch {
        /// Who sent it.
        from: IdentityPublic,
        /// Who the context names.
        named: Box<IdentityPublic>,
    },
    /// This signer is not in the roster.
    #[error("this signer ({0}) is not in the roster")]
    NotInRoster(IdentityPublic),
    /// A member this signer's operator has not approved.
    #[error("roster member {index} ({identity}) is not an approved peer of this signer")]
    UnapprovedPeer {
        /// Its roster index.
        index: u16,
        /// Its identity key.
        identity: IdentityPublic,
    },
    /// A message for another session.
    #[error("the message belongs to another session")]
    Session,
    /// A round-2 package could not be opened (sealed for another transcript or by another key).
    #[error("cannot open the round-2 package of participant {from}: it was sealed for another transcript or by another key")]
    Open {
        /// The sender's index.
        from: u16,
        /// The cause.
        #[source]
        source: IdentityError,
    },
    /// A round-2 package is missing or extra.
    #[error("expected sealed round-2 packages from participants {expected:?}, got {got:?}")]
    Packages {
        /// Senders expected.
        expected: Vec<u16>,
        /// Senders present.
        got: Vec<u16>,
    },
    /// A round-2 package does not decode.
    #[error("the round-2 package of participant {from} is malformed")]
    MalformedPackage {
        /// The sender.
        from: u16,
    },
    /// The FROST rounds failed (culprits named inside).
    #[error(transparent)]
    Dkg(#[from] DkgError),
    /// The certificates do not check out: nothing is stored.
    #[error("the certificates do not check out")]
    Certificates(#[from] VerifyError),
}

/// A signer that accepted a key generation and sent its round-1 broadcast.
pub struct Participant1 {
    context: DkgContext,
    index: u16,
    inner: DkgRound1,
}

impl fmt::Debug for Participant1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Participant1")
            .field("session", &self.context.session)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Participant1 {
    /// Accepts a key generation: `me` is this signer's identity, `from` the authenticated
    /// coordinator, `approved` tells whether an identity is an approved peer. Refuses (before
    /// any secret is drawn) a malformed context, a context naming another coordinator, a
    /// roster without this signer, or any unapproved member.
    ///
    /// # Errors
    /// [`ParticipantError`].
    pub fn begin<R: RngCore + CryptoRng>(
        request: Begin,
        me: &IdentityPublic,
        from: &IdentityPublic,
        approved: impl Fn(&IdentityPublic) -> bool,
        rng: &mut R,
    ) -> Result<(Self, Round1Answer), ParticipantError> {
        let context = request.context;
        context.check()?;
        if context.coordinator != *from {
            return Err(ParticipantError::CoordinatorMismatch {
                from: *from,
                named: Box::new(context.coordinator),
            });
        }
        let index = context
            .roster
            .index_of(me)
            .ok_or(ParticipantError::NotInRoster(*me))?;
        if let Some(m) = context
            .roster
            .entries()
            .iter()
            .find(|m| m.identity != *me && !approved(&m.identity))
        {
            return Err(ParticipantError::UnapprovedPeer {
                index: m.index,
                identity: m.identity,
            });
        }
        let id = identifier(index).map_err(|_| ParticipantError::NotInRoster(*me))?;
        let (inner, broadcast) = DkgRound1::start(id, context.params, context.hash(), rng)?;
        Ok((
            Participant1 {
                context,
                index,
                inner,
            },
            Round1Answer { broadcast },
        ))
    }

    /// The session.
    pub fn session(&self) -> SessionId {
        self.context.session
    }

    /// This signer's roster index.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Takes every participant's round-1 broadcast and seals this signer's round-2 packages
    /// to the other members' identity keys, bound to the transcript.
    ///
    /// # Errors
    /// Another session, a wrong participant set, an altered own broadcast, or a package frost
    /// rejects (culprit named).
    pub fn receive_round1<R: RngCore + CryptoRng>(
        self,
        request: Round1Request,
        key: &IdentityKey,
        rng: &mut R,
    ) -> Result<(Participant2, Round2Answer), ParticipantError> {
        if request.session != self.context.session {
            return Err(ParticipantError::Session);
        }
        let broadcasts = by_identifier(&request.broadcasts)?;
        let (inner, send) = self.inner.receive_round1(&broadcasts)?;
        let mut sealed = BTreeMap::new();
        for (to, package) in &send.packages {
            let to_index = roster_index(to);
            let recipient =
                self.context
                    .roster
                    .get(to_index)
                    .ok_or(DkgError::WrongParticipants {
                        round: 2,
                        expected: usize::from(self.context.params.signers()),
                        got: usize::from(to_index),
                    })?;
            let bytes = Zeroizing::new(package.serialize().map_err(|source| DkgError::Frost {
                culprit: None,
                source,
            })?);
            let aad = round2_aad(&send.transcript, self.index, to_index);
            sealed.insert(
                to_index,
                Sealed(key.seal(&recipient.identity, &aad, &bytes, rng)),
            );
        }
        let transcript = send.transcript;
        Ok((
            Participant2 {
                context: self.context,
                index: self.index,
                round1: request.broadcasts,
                inner,
            },
            Round2Answer {
                transcript: Transcript(transcript),
                sealed,
            },
        ))
    }
}

/// A signer after round 1 (holds its round-2 secret).
pub struct Participant2 {
    context: DkgContext,
    index: u16,
    round1: BTreeMap<u16, Round1Broadcast>,
    inner: DkgRound2,
}

impl fmt::Debug for Participant2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Participant2")
            .field("session", &self.context.session)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Participant2 {
    /// Opens the packages sealed to this signer, checks every transcript hash, finishes the
    /// FROST rounds and certifies the result. The share stays in memory.
    ///
    /// # Errors
    /// Another session, a transcript mismatch, an unopenable or invalid package (culprit
    /// named).
    pub fn receive_round2(
        self,
        request: Round2Request,
        key: &IdentityKey,
    ) -> Result<(Participant3, Certified), ParticipantError> {
        if request.session != self.context.session {
            return Err(ParticipantError::Session);
        }
        let mine = self.inner.transcript();
        let mut hashes = BTreeMap::new();
        for (i, t) in &request.transcripts {
            let id = identifier(*i).map_err(|_| DkgError::WrongParticipants {
                round: 2,
                expected: usize::from(self.context.params.signers()),
                got: request.transcripts.len(),
            })?;
            hashes.insert(id, t.0);
        }
        let expected: Vec<u16> = (1..=self.context.params.signers())
            .filter(|i| *i != self.index)
            .collect();
        let got: Vec<u16> = request.sealed.keys().copied().collect();
        if got != expected {
            return Err(ParticipantError::Packages { expected, got });
        }
        // Transcript agreement first: it names who saw other round-1 broadcasts.
        let culprits: Vec<u16> = request
            .transcripts
            .iter()
            .filter(|(_, t)| t.0 != mine)
            .map(|(i, _)| *i)
            .collect();
        if !culprits.is_empty() {
            return Err(DkgError::TranscriptMismatch { culprits }.into());
        }
        let mut packages: BTreeMap<frost::Identifier, round2::Package> = BTreeMap::new();
        for (from, blob) in &request.sealed {
            let sender =
                self.context
                    .roster
                    .get(*from)
                    .ok_or_else(|| ParticipantError::Packages {
                        expected: expected.clone(),
                        got: got.clone(),
                    })?;
            let aad = round2_aad(&mine, *from, self.index);
            let plain = key
                .open(&sender.identity, &aad, &blob.0)
                .map_err(|source| ParticipantError::Open {
                    from: *from,
                    source,
                })?;
            let package = round2::Package::deserialize(&plain)
                .map_err(|_| ParticipantError::MalformedPackage { from: *from })?;
            let id = identifier(*from)
                .map_err(|_| ParticipantError::MalformedPackage { from: *from })?;
            packages.insert(id, package);
        }
        let share = self.inner.finish(&packages, &hashes)?;
        let certificate = certify(key, &mine, share.group());
        let group = share.group().clone();
        Ok((
            Participant3 {
                context: self.context,
                index: self.index,
                round1: self.round1,
                share,
            },
            Certified { group, certificate },
        ))
    }
}

/// A signer that finished the rounds and holds its new share in memory, waiting for every
/// certificate.
pub struct Participant3 {
    context: DkgContext,
    index: u16,
    round1: BTreeMap<u16, Round1Broadcast>,
    share: KeyShare,
}

impl fmt::Debug for Participant3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Participant3")
            .field("session", &self.context.session)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// A share whose key generation every member certified: ready to be stored.
pub struct CertifiedShare {
    /// The share.
    pub share: KeyShare,
    /// This signer's roster index.
    pub index: u16,
    /// The record.
    pub keygen: CertifiedKeygen,
    /// The wallet fingerprint.
    pub fingerprint: WalletFingerprint,
}

impl fmt::Debug for CertifiedShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedShare")
            .field("index", &self.index)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Participant3 {
    /// The group this signer computed.
    pub fn group(&self) -> &GroupPublic {
        self.share.group()
    }

    /// Checks every member's certificate against this signer's own roster and transcript;
    /// only then is the share released for storage.
    ///
    /// # Errors
    /// Another session, or a missing, extra or invalid certificate.
    pub fn confirm(self, request: ConfirmRequest) -> Result<CertifiedShare, ParticipantError> {
        if request.session != self.context.session {
            return Err(ParticipantError::Session);
        }
        let keygen = CertifiedKeygen {
            context: self.context,
            round1: self.round1,
            certificates: request.certificates,
        };
        let fingerprint = keygen.verify(self.share.group())?;
        Ok(CertifiedShare {
            share: self.share,
            index: self.index,
            keygen,
            fingerprint,
        })
    }
}
