//! The coordinator's half of a certified key generation: [`DkgCoordinator`] collects the
//! signers' answers and routes the messages, computes the expected group from the public
//! commitments, checks every certificate as it arrives, and ends with the record. It never
//! holds a key that opens a round-2 package.

use std::collections::{BTreeMap, BTreeSet};

use super::record::check_certificate;
use super::{
    by_identifier, Begin, Certificate, Certified, CertifiedKeygen, ConfirmRequest, ContextError,
    DkgContext, Round1Answer, Round1Request, Round2Answer, Round2Request, Stored, Transcript,
};
use crate::frost::pedersen::{
    group_from_broadcasts, transcript_hash, DkgError, Round1Broadcast, TranscriptHash,
};
use crate::identity::Sealed;
use crate::keys::{GroupPublic, WalletFingerprint};

/// Why the coordinator aborts a key generation. Signers are named by roster index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// The proposed context is not acceptable.
    #[error("invalid key generation")]
    Context(#[source] ContextError),
    /// An answer from an index outside the roster, or a second one.
    #[error("unexpected {stage} answer from participant {index}")]
    Unexpected {
        /// Protocol stage.
        stage: &'static str,
        /// Roster index.
        index: u16,
    },
    /// A signer's answer is malformed.
    #[error("participant {index} sent a malformed {stage} answer: {reason}")]
    Malformed {
        /// Protocol stage.
        stage: &'static str,
        /// Roster index.
        index: u16,
        /// What is wrong.
        reason: &'static str,
    },
    /// The broadcasts cannot make a group.
    #[error("the round-1 broadcasts do not make a group")]
    Dkg(#[from] DkgError),
    /// Signers reported another group than the broadcasts define, or an invalid certificate.
    #[error("participants {culprits:?} reported another group or an invalid certificate")]
    Disagreement {
        /// Who.
        culprits: Vec<u16>,
    },
    /// A stage was asked for before every answer of the previous one arrived.
    #[error("the key generation is not ready for {0}")]
    NotReady(&'static str),
}

/// The coordinator's side: collects and routes messages, computes the expected group from
/// the public commitments, checks every certificate, and ends with the record.
#[derive(Debug)]
pub struct DkgCoordinator {
    context: DkgContext,
    round1: BTreeMap<u16, Round1Broadcast>,
    transcripts: BTreeMap<u16, Transcript>,
    sealed: BTreeMap<u16, BTreeMap<u16, Sealed>>,
    expected: Option<(GroupPublic, TranscriptHash)>,
    certificates: BTreeMap<u16, Certificate>,
    stored: BTreeSet<u16>,
}

impl DkgCoordinator {
    /// A key generation of `context`.
    ///
    /// # Errors
    /// [`CoordinatorError::Context`].
    pub fn new(context: DkgContext) -> Result<Self, CoordinatorError> {
        context.check().map_err(CoordinatorError::Context)?;
        Ok(DkgCoordinator {
            context,
            round1: BTreeMap::new(),
            transcripts: BTreeMap::new(),
            sealed: BTreeMap::new(),
            expected: None,
            certificates: BTreeMap::new(),
            stored: BTreeSet::new(),
        })
    }

    /// The context.
    pub fn context(&self) -> &DkgContext {
        &self.context
    }

    /// The roster indexes.
    pub fn indexes(&self) -> impl Iterator<Item = u16> + '_ {
        self.context.roster.entries().iter().map(|e| e.index)
    }

    fn n(&self) -> usize {
        usize::from(self.context.params.signers())
    }

    fn member(&self, stage: &'static str, index: u16) -> Result<(), CoordinatorError> {
        self.context
            .roster
            .get(index)
            .map(|_| ())
            .ok_or(CoordinatorError::Unexpected { stage, index })
    }

    /// The first message, the same for every signer.
    pub fn begin(&self) -> Begin {
        Begin {
            context: self.context.clone(),
        }
    }

    /// Records a round-1 answer.
    ///
    /// # Errors
    /// An index outside the roster or a second answer.
    pub fn add_round1(&mut self, index: u16, answer: Round1Answer) -> Result<(), CoordinatorError> {
        self.member("round 1", index)?;
        if self.round1.insert(index, answer.broadcast).is_some() {
            return Err(CoordinatorError::Unexpected {
                stage: "round 1",
                index,
            });
        }
        Ok(())
    }

    /// Every broadcast, once all arrived (the same message for every signer).
    ///
    /// # Errors
    /// [`CoordinatorError::NotReady`].
    pub fn round1_request(&mut self) -> Result<Round1Request, CoordinatorError> {
        if self.round1.len() != self.n() {
            return Err(CoordinatorError::NotReady("round 2"));
        }
        if self.expected.is_none() {
            let broadcasts = by_identifier(&self.round1)?;
            let transcript =
                transcript_hash(&self.context.hash(), &self.context.params, &broadcasts)?;
            let group = group_from_broadcasts(&broadcasts)?;
            self.expected = Some((group, transcript));
        }
        Ok(Round1Request {
            session: self.context.session,
            broadcasts: self.round1.clone(),
        })
    }

    /// Records a round-2 answer (sealed packages for every other member).
    ///
    /// # Errors
    /// An unexpected index, or packages not addressed to exactly the other members.
    pub fn add_round2(&mut self, index: u16, answer: Round2Answer) -> Result<(), CoordinatorError> {
        self.member("round 2", index)?;
        let expected: Vec<u16> = self.indexes().filter(|i| *i != index).collect();
        let got: Vec<u16> = answer.sealed.keys().copied().collect();
        if got != expected {
            return Err(CoordinatorError::Malformed {
                stage: "round 2",
                index,
                reason: "its sealed packages are not addressed to exactly the other members",
            });
        }
        if self.transcripts.insert(index, answer.transcript).is_some() {
            return Err(CoordinatorError::Unexpected {
                stage: "round 2",
                index,
            });
        }
        for (to, blob) in answer.sealed {
            self.sealed.entry(to).or_default().insert(index, blob);
        }
        Ok(())
    }

    /// What signer `index` needs to finish, once every round-2 answer arrived.
    ///
    /// # Errors
    /// [`CoordinatorError::NotReady`].
    pub fn round2_request(&self, index: u16) -> Result<Round2Request, CoordinatorError> {
        if self.transcripts.len() != self.n() {
            return Err(CoordinatorError::NotReady("round 3"));
        }
        Ok(Round2Request {
            session: self.context.session,
            sealed: self.sealed.get(&index).cloned().unwrap_or_default(),
            transcripts: self.transcripts.clone(),
        })
    }

    /// Records a signer's result: it must be the group the commitments define, certified
    /// under the transcript by the member's identity key.
    ///
    /// # Errors
    /// [`CoordinatorError::Disagreement`] naming the signer.
    pub fn add_certified(&mut self, index: u16, answer: Certified) -> Result<(), CoordinatorError> {
        self.member("certification", index)?;
        let (group, transcript) = self
            .expected
            .as_ref()
            .ok_or(CoordinatorError::NotReady("certification"))?;
        let identity = self.context.roster.get(index).map(|m| m.identity).ok_or(
            CoordinatorError::Unexpected {
                stage: "certification",
                index,
            },
        )?;
        if &answer.group != group
            || !check_certificate(&identity, &answer.certificate, transcript, group)
        {
            return Err(CoordinatorError::Disagreement {
                culprits: vec![index],
            });
        }
        self.certificates.insert(index, answer.certificate);
        Ok(())
    }

    /// Every certificate, once all arrived (the same message for every signer).
    ///
    /// # Errors
    /// [`CoordinatorError::NotReady`].
    pub fn confirm_request(&self) -> Result<ConfirmRequest, CoordinatorError> {
        if self.certificates.len() != self.n() {
            return Err(CoordinatorError::NotReady("confirmation"));
        }
        Ok(ConfirmRequest {
            session: self.context.session,
            certificates: self.certificates.clone(),
        })
    }

    /// Records that signer `index` stored its share.
    ///
    /// # Errors
    /// A fingerprint other than the transcript's.
    pub fn add_stored(&mut self, index: u16, answer: Stored) -> Result<(), CoordinatorError> {
        self.member("confirmation", index)?;
        let (_, transcript) = self
            .expected
            .as_ref()
            .ok_or(CoordinatorError::NotReady("confirmation"))?;
        if answer.fingerprint != WalletFingerprint::of_transcript(transcript) {
            return Err(CoordinatorError::Disagreement {
                culprits: vec![index],
            });
        }
        self.stored.insert(index);
        Ok(())
    }

    /// The group and the record, once every signer stored its share.
    ///
    /// # Errors
    /// [`CoordinatorError::NotReady`].
    pub fn finish(self) -> Result<(GroupPublic, CertifiedKeygen), CoordinatorError> {
        if self.stored.len() != self.n() {
            return Err(CoordinatorError::NotReady("the end"));
        }
        let (group, _) = self.expected.ok_or(CoordinatorError::NotReady("the end"))?;
        Ok((
            group,
            CertifiedKeygen {
                context: self.context,
                round1: self.round1,
                certificates: self.certificates,
            },
        ))
    }

    /// The record so far (certificates may be incomplete): what a coordinator can keep when
    /// the last confirmations did not arrive.
    pub fn record(&self) -> CertifiedKeygen {
        CertifiedKeygen {
            context: self.context.clone(),
            round1: self.round1.clone(),
            certificates: self.certificates.clone(),
        }
    }
}
