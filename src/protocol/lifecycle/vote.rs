//! How a transition is decided: by signed votes of the new roster's members, never by the
//! coordinator's word. The argument is in `docs/managing-signers.md`; in short:
//!
//! - after durably storing its pending share a member signs **prepared**;
//! - a member signs **ready** only after checking every member's prepared vote, or
//!   **abort**; it signs at most one of the two per transition, and stores it before it
//!   answers (a repeated request is answered with the vote it already holds);
//! - a [`DecisionCertificate`] is `Qc` ready votes (commit) or `Qa` abort votes (abort), with
//!   `Qc + Qa > n′ + f` ([`Quorums`]): honest members sign one of the two only, so the two
//!   certificates can never both exist while at most `f` members sign both.
//!
//! A member erases its old share only on a commit certificate and forgets its pending share
//! only on an abort certificate; until then it keeps both and signs in the old epoch.
//! Certificates are self-proving: any coordinator the signers allow may carry one.
//!
//! Every vote signs, under its own domain, the transition's context hash and the hash of the
//! state it leads to: a vote of one transition (or one epoch) never counts for another, and
//! the `Certify` certificates of the computation never count as votes.

use std::collections::BTreeMap;
use std::fmt;

use bitcoin::hashes::{sha256t_hash_newtype, Hash, HashEngine};
use serde::{Deserialize, Serialize};

use super::{Digest, TransitionContext, WalletState};
use crate::identity::IdentityKey;
use crate::keys::Roster;

sha256t_hash_newtype! {
    struct VoteTag = hash_str("ckm/transition-vote/v1");
    #[hash_newtype(forward)]
    struct VoteDigest(_);
}

const VOTE_DOMAIN: &str = "transition-vote";

#[cfg(test)]
#[path = "vote_tests.rs"]
mod tests;

/// What a member says of a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteKind {
    /// "My pending share and the record are on disk."
    Prepared,
    /// "I saw every member's prepared vote; I will never vote abort."
    Ready,
    /// "I will never vote ready."
    Abort,
}

impl VoteKind {
    fn byte(self) -> u8 {
        match self {
            VoteKind::Prepared => 1,
            VoteKind::Ready => 2,
            VoteKind::Abort => 3,
        }
    }
}

impl fmt::Display for VoteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VoteKind::Prepared => "prepared",
            VoteKind::Ready => "ready",
            VoteKind::Abort => "abort",
        })
    }
}

/// One member's signed vote.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedVote {
    /// What it says.
    pub kind: VoteKind,
    /// The voter's roster index (in the new roster).
    pub voter: u16,
    /// BIP-340 signature of the voter's identity key.
    #[serde(with = "hex::serde")]
    pub signature: [u8; 64],
}

impl fmt::Debug for SignedVote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignedVote({} by {})", self.kind, self.voter)
    }
}

/// What a transition ends in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The new epoch becomes current; the old share is erased.
    Commit,
    /// The pending share is forgotten; the old epoch stays.
    Abort,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decision::Commit => "commit",
            Decision::Abort => "abort",
        })
    }
}

/// A decision and the votes that prove it: `Qc` ready votes or `Qa` abort votes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionCertificate {
    /// The decision.
    pub decision: Decision,
    /// The votes (all of the decision's kind), by voter.
    pub votes: BTreeMap<u16, SignedVote>,
}

/// The vote counts of a transition: `n′` members of the new roster, of whom up to `f` may
/// collude with the coordinator and sign both ready and abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorums {
    /// `n′`, the members of the new roster.
    pub members: u16,
    /// `f`, the members that may sign both ready and abort.
    pub colluders: u16,
    /// `Qc`, ready votes in a commit certificate.
    pub commit: u16,
    /// `Qa`, abort votes in an abort certificate.
    pub abort: u16,
}

impl Quorums {
    /// The quorums of a transition to `members` signers at threshold `threshold`:
    /// `f = max(1, min(t − 1, n′ − t))` (more colluders than `n′ − t` leave fewer than `t`
    /// honest members, and `t` or more could sign on their own anyway), capped at `n′ − 1`;
    /// `Qc = n′` (every member ready: each honest ready vote proves every member prepared)
    /// and `Qa = f + 1` (at least one honest abort vote), so `Qc + Qa = n′ + f + 1`.
    pub fn new(threshold: u16, members: u16) -> Self {
        let colluders = threshold
            .saturating_sub(1)
            .min(members.saturating_sub(threshold))
            .max(1)
            .min(members.saturating_sub(1));
        Quorums {
            members,
            colluders,
            commit: members,
            abort: colluders + 1,
        }
    }
}

/// Why a vote or certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VoteError {
    /// The voter is not a member of the new roster.
    #[error("signer {voter} is not a member of the new roster")]
    NotMember {
        /// The index given.
        voter: u16,
    },
    /// The signature does not verify (another transition, another state, forged).
    #[error("the {kind} vote of signer {voter} does not verify for this transition")]
    BadSignature {
        /// Its kind.
        kind: VoteKind,
        /// The voter.
        voter: u16,
    },
    /// A vote of the wrong kind where another was needed.
    #[error("signer {voter}'s vote is {got}, not {expected}")]
    WrongKind {
        /// The voter.
        voter: u16,
        /// Needed.
        expected: VoteKind,
        /// Given.
        got: VoteKind,
    },
    /// Keyed under one index, signed by another.
    #[error("a vote keyed under signer {key} is signed as signer {voter}")]
    Mislabelled {
        /// The map key.
        key: u16,
        /// The voter field.
        voter: u16,
    },
    /// Prepared votes missing: no member may vote ready yet.
    #[error("prepared votes of signers {missing:?} are missing")]
    NotAllPrepared {
        /// Who has not prepared.
        missing: Vec<u16>,
    },
    /// Too few votes for the decision.
    #[error("a {decision} certificate needs {needed} votes; this one has {got} valid")]
    TooFew {
        /// The decision claimed.
        decision: Decision,
        /// Votes needed.
        needed: u16,
        /// Valid votes given.
        got: usize,
    },
}

/// What a transition's votes are about: its context hash, the hash of the state it leads to,
/// and the new roster (who votes) with its threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ballot {
    context: Digest,
    state: Digest,
    roster: Roster,
    quorums: Quorums,
}

impl Ballot {
    /// The ballot of `context` leading to `state`.
    pub fn new(context: &TransitionContext, state: &WalletState) -> Self {
        Ballot {
            context: context.hash(),
            state: state.hash(),
            roster: state.roster.clone(),
            quorums: Quorums::new(state.group.threshold(), state.roster.len()),
        }
    }

    /// The quorums.
    pub fn quorums(&self) -> Quorums {
        self.quorums
    }

    /// The members who vote, by index.
    pub fn voters(&self) -> Vec<u16> {
        self.roster.indexes()
    }

    fn message(&self, kind: VoteKind, voter: u16) -> [u8; 32] {
        let mut e = VoteDigest::engine();
        e.input(&[kind.byte()]);
        e.input(&voter.to_be_bytes());
        e.input(&self.context.0);
        e.input(&self.state.0);
        VoteDigest::from_engine(e).to_byte_array()
    }

    /// Signs a vote as member `voter`.
    pub fn sign(&self, key: &IdentityKey, kind: VoteKind, voter: u16) -> SignedVote {
        SignedVote {
            kind,
            voter,
            signature: key.sign(VOTE_DOMAIN, &self.message(kind, voter)),
        }
    }

    /// Checks one vote: a member's, of this ballot, of `kind`.
    ///
    /// # Errors
    /// [`VoteError`] naming the voter.
    pub fn check(&self, vote: &SignedVote, kind: VoteKind) -> Result<(), VoteError> {
        if vote.kind != kind {
            return Err(VoteError::WrongKind {
                voter: vote.voter,
                expected: kind,
                got: vote.kind,
            });
        }
        let member = self
            .roster
            .get(vote.voter)
            .ok_or(VoteError::NotMember { voter: vote.voter })?;
        member
            .identity
            .verify(
                VOTE_DOMAIN,
                &self.message(vote.kind, vote.voter),
                &vote.signature,
            )
            .map_err(|_| VoteError::BadSignature {
                kind: vote.kind,
                voter: vote.voter,
            })
    }

    fn check_keyed(&self, key: u16, vote: &SignedVote, kind: VoteKind) -> Result<(), VoteError> {
        if key != vote.voter {
            return Err(VoteError::Mislabelled {
                key,
                voter: vote.voter,
            });
        }
        self.check(vote, kind)
    }

    /// Checks that every member's prepared vote is here and valid.
    ///
    /// # Errors
    /// The first bad vote, or [`VoteError::NotAllPrepared`].
    pub fn check_all_prepared(
        &self,
        prepared: &BTreeMap<u16, SignedVote>,
    ) -> Result<(), VoteError> {
        for (key, vote) in prepared {
            self.check_keyed(*key, vote, VoteKind::Prepared)?;
        }
        let missing: Vec<u16> = self
            .voters()
            .into_iter()
            .filter(|i| !prepared.contains_key(i))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(VoteError::NotAllPrepared { missing })
        }
    }

    /// Checks a decision certificate; returns its decision.
    ///
    /// # Errors
    /// A bad vote in it, or too few.
    pub fn check_certificate(
        &self,
        certificate: &DecisionCertificate,
    ) -> Result<Decision, VoteError> {
        let (kind, needed) = match certificate.decision {
            Decision::Commit => (VoteKind::Ready, self.quorums.commit),
            Decision::Abort => (VoteKind::Abort, self.quorums.abort),
        };
        for (key, vote) in &certificate.votes {
            self.check_keyed(*key, vote, kind)?;
        }
        if certificate.votes.len() < usize::from(needed) {
            return Err(VoteError::TooFew {
                decision: certificate.decision,
                needed,
                got: certificate.votes.len(),
            });
        }
        Ok(certificate.decision)
    }

    /// A certificate from the votes gathered, when they make one (commit preferred: it is
    /// only possible when every member is ready). Invalid votes are skipped.
    pub fn certificate<'a>(
        &self,
        votes: impl IntoIterator<Item = &'a SignedVote>,
    ) -> Option<DecisionCertificate> {
        let mut ready = BTreeMap::new();
        let mut abort = BTreeMap::new();
        for v in votes {
            match v.kind {
                VoteKind::Ready if self.check(v, VoteKind::Ready).is_ok() => {
                    ready.insert(v.voter, v.clone());
                }
                VoteKind::Abort if self.check(v, VoteKind::Abort).is_ok() => {
                    abort.insert(v.voter, v.clone());
                }
                _ => {}
            }
        }
        if ready.len() >= usize::from(self.quorums.commit) {
            Some(DecisionCertificate {
                decision: Decision::Commit,
                votes: ready,
            })
        } else if abort.len() >= usize::from(self.quorums.abort) {
            Some(DecisionCertificate {
                decision: Decision::Abort,
                votes: abort,
            })
        } else {
            None
        }
    }
}

/// A member's rule for ready and abort: it holds at most one of the two (`standing`, stored
/// durably by the caller). Asked for `want`, it returns the vote to answer with and whether it
/// is new (to be stored before the answer leaves). A member already holding the other vote
/// answers with that one.
///
/// # Errors
/// Asked for ready without every member's valid prepared vote.
pub fn decide_vote(
    ballot: &Ballot,
    key: &IdentityKey,
    voter: u16,
    standing: Option<&SignedVote>,
    want: VoteKind,
    prepared: &BTreeMap<u16, SignedVote>,
) -> Result<(SignedVote, bool), VoteError> {
    if let Some(s) = standing {
        return Ok((s.clone(), false));
    }
    match want {
        VoteKind::Ready => {
            ballot.check_all_prepared(prepared)?;
            Ok((ballot.sign(key, VoteKind::Ready, voter), true))
        }
        VoteKind::Abort => Ok((ballot.sign(key, VoteKind::Abort, voter), true)),
        VoteKind::Prepared => Err(VoteError::WrongKind {
            voter,
            expected: VoteKind::Ready,
            got: VoteKind::Prepared,
        }),
    }
}
