//! The coordinator's co-signing state machine, without I/O: which signers to ask, which `t`
//! to use, whom to exclude (unreachable, refusing, cheating) and when to start a fresh
//! attempt. The network driver ([`crate::net::coordinator::sign_psbt`]) and the in-memory
//! tests feed it answers and act on what it returns.
//!
//! One attempt: ask every signer not yet excluded for round-1 commitments; the first `t` that
//! answer are chosen; they get the signing packages; their shares are aggregated and every
//! signature verified. A signer that fails or refuses at any point is excluded; one whose
//! share does not verify is excluded and named as a culprit; then a new attempt starts (with
//! a new session) while `t` signers remain.

use std::collections::{BTreeMap, BTreeSet};

use bitcoin::{Psbt, Transaction};
use frost::round1::SigningCommitments;
use frost::round2::SignatureShare;
use frost::SigningPackage;
use frost_secp256k1_tr as frost;
use rand::{CryptoRng, RngCore};

use super::SessionId;
use crate::frost::identifier;
use crate::keys::GroupPublic;
use crate::psbt::{CoordinateError, SigningSession};
use crate::recovery::RecoveryPolicy;

/// Why co-signing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The PSBT is not one this wallet can sign.
    #[error(transparent)]
    Coordinate(#[from] CoordinateError),
    /// Not enough signers answered, or too many refused or cheated.
    #[error("only {available} of the {need} required signers could sign{}", format_failures(.failures))]
    NotEnoughSigners {
        /// Signers that could still take part.
        available: usize,
        /// Threshold.
        need: u16,
        /// Why each excluded signer was excluded.
        failures: Vec<(u16, String)>,
        /// Signers that returned invalid shares.
        culprits: Vec<u16>,
    },
}

fn format_failures(failures: &[(u16, String)]) -> String {
    if failures.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = failures.iter().map(|(_, m)| m.clone()).collect();
    format!(":\n  - {}", parts.join("\n  - "))
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Step {
    /// Send round 1 of session `session` to these signers; feed each answer to
    /// [`SigningCoordinator::commitments`] until it returns [`Step::Round2`].
    Round1 {
        /// The attempt's session.
        session: SessionId,
        /// Roster indexes to ask.
        ask: Vec<u16>,
    },
    /// Keep waiting for round-1 answers.
    Wait,
    /// Round 1 is over: drop the other round-1 requests and send these packages to the
    /// chosen signers; feed each answer to [`SigningCoordinator::shares`].
    Round2 {
        /// The attempt's session.
        session: SessionId,
        /// The chosen signers.
        chosen: Vec<u16>,
        /// One signing package per input (the same for every chosen signer).
        packages: Vec<SigningPackage>,
    },
    /// Every signature verified and the PSBT is finalized.
    Done(Box<SignOutcome>),
}

/// A successful co-signing.
#[derive(Debug, Clone)]
pub struct SignOutcome {
    /// The signers whose shares made the signatures.
    pub signers: Vec<u16>,
    /// Signers that returned invalid shares (excluded).
    pub culprits: Vec<u16>,
    /// Signers skipped and why.
    pub skipped: Vec<(u16, String)>,
    /// The finalized transaction.
    pub transaction: Transaction,
}

#[derive(Debug)]
enum Phase {
    Idle,
    Round1 {
        session: SessionId,
        pending: BTreeSet<u16>,
        commitments: BTreeMap<u16, Vec<SigningCommitments>>,
    },
    Round2 {
        packages: Vec<SigningPackage>,
        pending: BTreeSet<u16>,
        shares: BTreeMap<u16, Vec<SignatureShare>>,
        failed: bool,
    },
}

/// The coordinator's co-signing of one PSBT.
#[derive(Debug)]
pub struct SigningCoordinator {
    core: SigningSession,
    roster: Vec<u16>,
    need: u16,
    failures: BTreeMap<u16, String>,
    culprits: BTreeSet<u16>,
    phase: Phase,
}

impl SigningCoordinator {
    /// Checks `psbt` as a signer would and prepares to co-sign it with the signers `roster`
    /// (roster indexes) of `group`.
    ///
    /// # Errors
    /// The PSBT is not this wallet's.
    pub fn new(psbt: &Psbt, group: &GroupPublic, roster: Vec<u16>) -> Result<Self, SignError> {
        Self::with_recovery(psbt, group, None, roster)
    }

    /// Like [`SigningCoordinator::new`] for a wallet with a certified recovery path: every
    /// input and change output is checked against `recovery`, and each input is signed with
    /// the Taproot tweak of its own merkle root.
    ///
    /// # Errors
    /// The PSBT is not this wallet's.
    pub fn with_recovery(
        psbt: &Psbt,
        group: &GroupPublic,
        recovery: Option<&RecoveryPolicy>,
        roster: Vec<u16>,
    ) -> Result<Self, SignError> {
        Ok(SigningCoordinator {
            core: SigningSession::with_recovery(psbt, group, recovery)?,
            need: group.threshold(),
            roster,
            failures: BTreeMap::new(),
            culprits: BTreeSet::new(),
            phase: Phase::Idle,
        })
    }

    /// The coordinator's own check of the PSBT.
    pub fn session(&self) -> &SigningSession {
        &self.core
    }

    fn not_enough(&self, available: usize) -> SignError {
        SignError::NotEnoughSigners {
            available,
            need: self.need,
            failures: self.failures.iter().map(|(i, m)| (*i, m.clone())).collect(),
            culprits: self.culprits.iter().copied().collect(),
        }
    }

    fn candidates(&self) -> Vec<u16> {
        self.roster
            .iter()
            .copied()
            .filter(|i| !self.failures.contains_key(i))
            .collect()
    }

    /// Starts an attempt with a fresh session.
    ///
    /// # Errors
    /// [`SignError::NotEnoughSigners`] when fewer than `t` signers remain.
    pub fn start<R: RngCore + CryptoRng>(&mut self, rng: &mut R) -> Result<Step, SignError> {
        let ask = self.candidates();
        if ask.len() < usize::from(self.need) {
            return Err(self.not_enough(ask.len()));
        }
        let session = SessionId::random(rng);
        self.phase = Phase::Round1 {
            session,
            pending: ask.iter().copied().collect(),
            commitments: BTreeMap::new(),
        };
        Ok(Step::Round1 { session, ask })
    }

    /// Excludes a signer with a reason.
    pub fn exclude(&mut self, index: u16, reason: String) {
        self.failures.insert(index, reason);
    }

    /// Feeds one round-1 answer (`Err` carries why the signer failed or refused).
    ///
    /// # Errors
    /// [`SignError::NotEnoughSigners`] when, with this failure, `t` signers can no longer
    /// answer in this attempt and none remain for another.
    pub fn commitments<R: RngCore + CryptoRng>(
        &mut self,
        index: u16,
        answer: Result<Vec<SigningCommitments>, String>,
        rng: &mut R,
    ) -> Result<Step, SignError> {
        let Phase::Round1 {
            session,
            pending,
            commitments,
        } = &mut self.phase
        else {
            return Ok(Step::Wait);
        };
        if !pending.remove(&index) {
            return Ok(Step::Wait);
        }
        let inputs = self.core.checked().inputs().len();
        match answer {
            Ok(c) if c.len() == inputs => {
                commitments.insert(index, c);
            }
            Ok(c) => {
                let reason = format!(
                    "signer {index} sent {} commitments for {inputs} inputs",
                    c.len()
                );
                self.failures.insert(index, reason);
            }
            Err(reason) => {
                tracing::info!(signer = index, %reason, "signer skipped in round 1");
                self.failures.insert(index, reason);
            }
        }
        if commitments.len() == usize::from(self.need) {
            let session = *session;
            let chosen: Vec<u16> = commitments.keys().copied().collect();
            let by_id = commitments
                .iter()
                .filter_map(|(i, c)| identifier(*i).ok().map(|id| (id, c.clone())))
                .collect();
            let packages = self.core.signing_packages(&by_id)?;
            self.phase = Phase::Round2 {
                packages: packages.clone(),
                pending: chosen.iter().copied().collect(),
                shares: BTreeMap::new(),
                failed: false,
            };
            return Ok(Step::Round2 {
                session,
                chosen,
                packages,
            });
        }
        if commitments.len() + pending.len() < usize::from(self.need) {
            // This attempt cannot reach t; the next one asks the remaining signers again.
            return self.start(rng);
        }
        Ok(Step::Wait)
    }

    /// Feeds one round-2 answer. When the last chosen signer answered: aggregates, verifies
    /// and finalizes `psbt` ([`Step::Done`]), or starts a new attempt ([`Step::Round1`]).
    ///
    /// # Errors
    /// [`SignError::NotEnoughSigners`] when no attempt can succeed any more, or a PSBT the
    /// coordinator cannot finalize.
    pub fn shares<R: RngCore + CryptoRng>(
        &mut self,
        index: u16,
        answer: Result<Vec<SignatureShare>, String>,
        psbt: &mut Psbt,
        rng: &mut R,
    ) -> Result<Step, SignError> {
        let Phase::Round2 {
            packages,
            pending,
            shares,
            failed,
            ..
        } = &mut self.phase
        else {
            return Ok(Step::Wait);
        };
        if !pending.remove(&index) {
            return Ok(Step::Wait);
        }
        match answer {
            Ok(s) => {
                shares.insert(index, s);
            }
            Err(reason) => {
                tracing::info!(signer = index, %reason, "signer failed in round 2");
                *failed = true;
                self.failures.insert(index, reason);
            }
        }
        if !pending.is_empty() {
            return Ok(Step::Wait);
        }
        if *failed {
            return self.start(rng);
        }
        let by_id = shares
            .iter()
            .filter_map(|(i, s)| identifier(*i).ok().map(|id| (id, s.clone())))
            .collect();
        match self.core.aggregate(packages, &by_id) {
            Ok(signatures) => {
                let signers: Vec<u16> = shares.keys().copied().collect();
                let transaction = self.core.finalize(psbt, &signatures)?;
                self.phase = Phase::Idle;
                Ok(Step::Done(Box::new(SignOutcome {
                    signers,
                    culprits: self.culprits.iter().copied().collect(),
                    skipped: self.failures.iter().map(|(i, m)| (*i, m.clone())).collect(),
                    transaction,
                })))
            }
            Err(CoordinateError::InvalidShares { culprits, .. }) => {
                for c in culprits {
                    tracing::warn!(
                        signer = c,
                        "signer returned an invalid signature share; excluded"
                    );
                    self.culprits.insert(c);
                    self.failures
                        .insert(c, format!("signer {c} returned an invalid signature share"));
                }
                self.start(rng)
            }
            Err(CoordinateError::WrongCount { signer, .. }) => {
                self.failures.insert(
                    signer,
                    format!("signer {signer} sent a wrong number of signature shares"),
                );
                self.start(rng)
            }
            Err(e) => Err(e.into()),
        }
    }
}
