//! The coordinator's co-signing state machine, without I/O: which signers to ask, which `t`
//! to use, whom to exclude (unreachable, refusing, cheating) and when to start a fresh
//! attempt. The network driver ([`crate::net::coordinator::sign_psbt`]) and the in-memory
//! tests feed it answers and act on what it returns.
//!
//! One attempt: ask every signer not yet excluded for round-1 commitments (each reserves the
//! spend and returns a receipt); the first `t` that answer are chosen; when any of them has a
//! wallet-wide limit, each chosen signer is asked for a statement given all the receipts (see
//! [`crate::protocol::spend_limits`]); they get the signing packages (and the statements); their
//! shares are aggregated and every signature verified. A signer that fails or refuses at any point is excluded; one whose
//! share does not verify is excluded and named as a culprit; then a new attempt starts (with
//! a new session) while `t` signers remain.

use std::collections::{BTreeMap, BTreeSet};

use bitcoin::{Psbt, Transaction};
use frost::round1::SigningCommitments;
use frost::round2::SignatureShare;
use frost::SigningPackage;
use frost_secp256k1_tr as frost;
use rand::{CryptoRng, RngCore};

use super::spend_limits::{Receipt, Statement};
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
    /// Keep waiting for answers.
    Wait,
    /// Round 1 is over and a chosen signer has a wallet-wide limit: drop the other round-1
    /// requests and ask every chosen signer for its statement, giving it every receipt; feed
    /// each answer to [`SigningCoordinator::statement`].
    Statements {
        /// The attempt's session.
        session: SessionId,
        /// The chosen signers.
        chosen: Vec<u16>,
        /// Their receipts.
        receipts: BTreeMap<u16, Receipt>,
    },
    /// Send these packages (and statements) to the chosen signers; feed each answer to
    /// [`SigningCoordinator::shares`].
    Round2 {
        /// The attempt's session.
        session: SessionId,
        /// The chosen signers.
        chosen: Vec<u16>,
        /// One signing package per input (the same for every chosen signer).
        packages: Vec<SigningPackage>,
        /// The chosen signers' statements (empty without a statement round).
        statements: BTreeMap<u16, Statement>,
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
    /// Whether the statement round ran (a chosen signer has a wallet-wide limit).
    pub with_statements: bool,
    /// Attempts (sessions) started.
    pub attempts: usize,
}

/// A signer's answer to round 1.
#[derive(Debug, Clone)]
pub struct Round1Answer {
    /// One nonce commitment per input.
    pub commitments: Vec<SigningCommitments>,
    /// The receipt of its reservation.
    pub receipt: Receipt,
    /// Whether it needs the statement round.
    pub statements_required: bool,
}

#[derive(Debug)]
enum Phase {
    Idle,
    Round1 {
        session: SessionId,
        pending: BTreeSet<u16>,
        answers: BTreeMap<u16, Round1Answer>,
    },
    Statements {
        session: SessionId,
        packages: Vec<SigningPackage>,
        pending: BTreeSet<u16>,
        statements: BTreeMap<u16, Statement>,
    },
    Round2 {
        packages: Vec<SigningPackage>,
        pending: BTreeSet<u16>,
        shares: BTreeMap<u16, Vec<SignatureShare>>,
        failed: bool,
        with_statements: bool,
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
    attempts: usize,
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
            attempts: 0,
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
        self.attempts += 1;
        self.phase = Phase::Round1 {
            session,
            pending: ask.iter().copied().collect(),
            answers: BTreeMap::new(),
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
        answer: Result<Round1Answer, String>,
        rng: &mut R,
    ) -> Result<Step, SignError> {
        let Phase::Round1 {
            session,
            pending,
            answers,
        } = &mut self.phase
        else {
            return Ok(Step::Wait);
        };
        if !pending.remove(&index) {
            return Ok(Step::Wait);
        }
        let inputs = self.core.checked().inputs().len();
        match answer {
            Ok(a) if a.commitments.len() == inputs => {
                answers.insert(index, a);
            }
            Ok(a) => {
                let reason = format!(
                    "signer {index} sent {} commitments for {inputs} inputs",
                    a.commitments.len()
                );
                self.failures.insert(index, reason);
            }
            Err(reason) => {
                tracing::info!(signer = index, %reason, "signer skipped in round 1");
                self.failures.insert(index, reason);
            }
        }
        if answers.len() == usize::from(self.need) {
            let session = *session;
            let chosen: Vec<u16> = answers.keys().copied().collect();
            let by_id = answers
                .iter()
                .filter_map(|(i, a)| identifier(*i).ok().map(|id| (id, a.commitments.clone())))
                .collect();
            let packages = self.core.signing_packages(&by_id)?;
            if answers.values().any(|a| a.statements_required) {
                let receipts: BTreeMap<u16, Receipt> = answers
                    .iter()
                    .map(|(i, a)| (*i, a.receipt.clone()))
                    .collect();
                self.phase = Phase::Statements {
                    session,
                    packages,
                    pending: chosen.iter().copied().collect(),
                    statements: BTreeMap::new(),
                };
                return Ok(Step::Statements {
                    session,
                    chosen,
                    receipts,
                });
            }
            return Ok(self.round2(session, packages, BTreeMap::new()));
        }
        if answers.len() + pending.len() < usize::from(self.need) {
            // This attempt cannot reach t; the next one asks the remaining signers again.
            return self.start(rng);
        }
        Ok(Step::Wait)
    }

    fn round2(
        &mut self,
        session: SessionId,
        packages: Vec<SigningPackage>,
        statements: BTreeMap<u16, Statement>,
    ) -> Step {
        let chosen: Vec<u16> = packages
            .first()
            .map(|p| {
                p.signing_commitments()
                    .keys()
                    .map(crate::frost::shares::roster_index)
                    .collect()
            })
            .unwrap_or_default();
        self.phase = Phase::Round2 {
            packages: packages.clone(),
            pending: chosen.iter().copied().collect(),
            shares: BTreeMap::new(),
            failed: false,
            with_statements: !statements.is_empty(),
        };
        Step::Round2 {
            session,
            chosen,
            packages,
            statements,
        }
    }

    /// Feeds one statement (`Err` carries why the signer failed or refused). A failure
    /// excludes the signer and starts a new attempt.
    ///
    /// # Errors
    /// [`SignError::NotEnoughSigners`] when no attempt can succeed any more.
    pub fn statement<R: RngCore + CryptoRng>(
        &mut self,
        index: u16,
        answer: Result<Statement, String>,
        rng: &mut R,
    ) -> Result<Step, SignError> {
        let Phase::Statements {
            session,
            packages,
            pending,
            statements,
        } = &mut self.phase
        else {
            return Ok(Step::Wait);
        };
        if !pending.remove(&index) {
            return Ok(Step::Wait);
        }
        match answer {
            Ok(s) => {
                statements.insert(index, s);
            }
            Err(reason) => {
                tracing::info!(signer = index, %reason, "signer failed in the statement round");
                self.failures.insert(index, reason);
                return self.start(rng);
            }
        }
        if !pending.is_empty() {
            return Ok(Step::Wait);
        }
        let session = *session;
        let packages = std::mem::take(packages);
        let statements = std::mem::take(statements);
        Ok(self.round2(session, packages, statements))
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
            with_statements,
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
                let with_statements = *with_statements;
                let transaction = self.core.finalize(psbt, &signatures)?;
                self.phase = Phase::Idle;
                Ok(Step::Done(Box::new(SignOutcome {
                    signers,
                    culprits: self.culprits.iter().copied().collect(),
                    skipped: self.failures.iter().map(|(i, m)| (*i, m.clone())).collect(),
                    transaction,
                    with_statements,
                    attempts: self.attempts,
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
