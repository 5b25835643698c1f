//! One-round co-signing with preprocessed nonces, driven with ROAST over the network: runs
//! the transport-free [`RoastCoordinator`] by sending what it returns to the signers and
//! feeding their answers back (see [`crate::protocol::roast`]).
//!
//! When the coordinator's [`CommitmentStore`] holds `inputs` commitments of `t` signers, the
//! PSBT is signed in one round trip. Signers short of commitments are asked for a batch
//! first (one more round trip for them). A signer that restarted refuses its old
//! commitments; its store entry is cleared and refilled once. A wallet with a wallet-wide
//! limit needs the statement rounds: the driver falls back to [`sign_psbt`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bitcoin::Psbt;
use tokio::task::JoinSet;

use super::client::{CallError, Client};
use super::coordinator::{sign_psbt, SignMode, SignReport};
use crate::keys::{GroupKey, RosterEntry};
use crate::message::{CoordinatorToSigner, ErrorCode, SessionId, SignerToCoordinator, WalletRef};
use crate::protocol::roast::{
    CommitmentStore, PreCommitment, RoastCoordinator, RoastOutcome, SharesOutcome,
};
use crate::protocol::sign::SignError;
use crate::wallet::WalletMeta;

/// Commitments asked of a signer when the store runs short (at least one session's worth).
pub const DEFAULT_STOCK: u16 = 16;
/// Most inputs signed in one round (one preprocessing request's worth); larger PSBTs use
/// the interactive rounds.
pub const MAX_ONE_ROUND_INPUTS: usize = crate::signer::nonces::MAX_BATCH as usize;

enum Event {
    Preprocessed {
        index: u16,
        reply: Result<SignerToCoordinator, CallError>,
    },
    Signed {
        index: u16,
        session: SessionId,
        reply: Result<SignerToCoordinator, CallError>,
    },
    /// A signer's shares checked on their own (`None`: stopped).
    Checked { index: u16, valid: Option<bool> },
}

/// Options of [`sign_psbt_one_round`].
#[derive(Debug, Clone, Copy)]
pub struct OneRoundOptions {
    /// Commitments to ask a signer for when the store holds too few (raised to the number of
    /// inputs when smaller).
    pub stock: u16,
}

impl Default for OneRoundOptions {
    fn default() -> Self {
        OneRoundOptions {
            stock: DEFAULT_STOCK,
        }
    }
}

struct Driver<'a> {
    client: &'a Client,
    roster: BTreeMap<u16, RosterEntry>,
    wallet: WalletRef,
    psbt_text: Arc<String>,
    store: &'a mut dyn CommitmentStore,
    machine: RoastCoordinator,
    set: JoinSet<Event>,
    /// Signers with a signing request out.
    signing: BTreeSet<u16>,
    /// Signers whose shares are being checked.
    checking: BTreeSet<u16>,
    /// Signers with a preprocessing request out.
    preprocessing: BTreeSet<u16>,
    /// Signers whose store entry was cleared after refusing old commitments.
    refilled: BTreeSet<u16>,
    batch: u16,
    asked_first: bool,
    /// Tells share checks still running that the run is over.
    stop: Arc<AtomicBool>,
}

impl Driver<'_> {
    fn preprocess(&mut self, index: u16) {
        let Some(entry) = self.roster.get(&index).cloned() else {
            return;
        };
        if !self.preprocessing.insert(index) {
            return;
        }
        let client = self.client.clone();
        let message = CoordinatorToSigner::Preprocess {
            wallet: self.wallet.clone(),
            count: self.batch,
        };
        self.set.spawn(async move {
            Event::Preprocessed {
                index,
                reply: client.call(&entry, &message).await,
            }
        });
    }

    /// Makes `index` ready from the store, or asks it for commitments.
    fn ready_or_refill(&mut self, index: u16) {
        if !self.machine.usable(index)
            || self.signing.contains(&index)
            || self.checking.contains(&index)
        {
            return;
        }
        match self.store.take(index, self.machine.inputs()) {
            Some(c) => self.machine.ready(index, c),
            None => {
                self.asked_first = true;
                self.preprocess(index);
            }
        }
    }

    fn verify_batch(
        &self,
        index: u16,
        batch: crate::protocol::roast::CommitmentBatch,
    ) -> Result<Vec<PreCommitment>, String> {
        let entry = self
            .roster
            .get(&index)
            .ok_or_else(|| format!("signer {index} is not in the roster"))?;
        batch
            .verify(
                index,
                &entry.identity,
                &self.client.identity().public(),
                &self.wallet.group_key,
            )
            .map_err(|e| e.to_string())
    }

    fn start_sessions(&mut self) -> Result<(), SignError> {
        let mut rng = rand::rngs::OsRng;
        for start in self.machine.start(&mut rng)? {
            let packages = start.packages;
            for index in start.chosen {
                let (Some(entry), Some(nonces)) = (
                    self.roster.get(&index).cloned(),
                    start.nonces.get(&index).cloned(),
                ) else {
                    continue;
                };
                self.signing.insert(index);
                let client = self.client.clone();
                let message = CoordinatorToSigner::SignPreprocessed {
                    session: start.session,
                    wallet: self.wallet.clone(),
                    psbt: (*self.psbt_text).clone(),
                    packages: packages.as_ref().clone(),
                    nonces,
                };
                let session = start.session;
                self.set.spawn(async move {
                    Event::Signed {
                        index,
                        session,
                        reply: client.call(&entry, &message).await,
                    }
                });
            }
        }
        Ok(())
    }

    /// Gives the commitments no session used back to the store.
    fn give_back(&mut self) {
        for (index, commitments) in self.machine.unused() {
            self.store.add(index, commitments);
        }
    }
}

/// What [`drive`] ended with.
enum Ended {
    Done(Box<RoastOutcome>),
    /// A signer needs the statement rounds.
    NeedsStatements,
}

async fn drive(d: &mut Driver<'_>, psbt: &mut Psbt) -> Result<Ended, SignError> {
    let roster: Vec<u16> = d.roster.keys().copied().collect();
    for index in roster {
        d.ready_or_refill(index);
    }
    loop {
        d.start_sessions()?;
        if !d.machine.possible() {
            return Err(d.machine.failure());
        }
        let Some(joined) = d.set.join_next().await else {
            // Nothing in flight and no session can start: every usable signer is short.
            return Err(d.machine.failure());
        };
        let Ok(event) = joined else { continue };
        match event {
            Event::Preprocessed { index, reply } => {
                d.preprocessing.remove(&index);
                match reply {
                    Ok(SignerToCoordinator::Preprocessed {
                        batch,
                        statements_required,
                    }) => {
                        if statements_required {
                            return Ok(Ended::NeedsStatements);
                        }
                        match d.verify_batch(index, batch) {
                            Ok(c) if c.len() >= d.machine.inputs() => {
                                d.store.add(index, c);
                                d.ready_or_refill(index);
                            }
                            Ok(c) => d.machine.exclude(
                                index,
                                format!(
                                    "signer {index} gave {} commitments, {} needed",
                                    c.len(),
                                    d.machine.inputs()
                                ),
                            ),
                            Err(e) => d.machine.exclude(index, e),
                        }
                    }
                    Ok(_) => d
                        .machine
                        .exclude(index, format!("signer {index} answered out of protocol")),
                    Err(e) => d.machine.exclude(index, e.to_string()),
                }
            }
            Event::Signed {
                index,
                session,
                reply,
            } => {
                d.signing.remove(&index);
                match reply {
                    Ok(SignerToCoordinator::SignedPreprocessed { shares, fresh }) => {
                        match d.verify_batch(index, fresh) {
                            Ok(c) => d.store.add(index, c),
                            Err(e) => {
                                tracing::warn!(signer = index, "fresh commitments refused: {e}")
                            }
                        }
                        match d.machine.shares(&session, index, shares, psbt)? {
                            SharesOutcome::Done(outcome) => return Ok(Ended::Done(outcome)),
                            SharesOutcome::Check(check) => {
                                // Checked off the driver's thread: the session's other
                                // answers keep coming in meanwhile.
                                let stop = Arc::clone(&d.stop);
                                d.checking.insert(index);
                                d.set.spawn_blocking(move || Event::Checked {
                                    index: check.signer,
                                    valid: check.run(&|| stop.load(Ordering::Relaxed)),
                                });
                            }
                            SharesOutcome::Failed { .. } | SharesOutcome::Ignored => {
                                d.ready_or_refill(index)
                            }
                        }
                    }
                    Err(CallError::Refused {
                        code: ErrorCode::NeedsStatements,
                        ..
                    }) => return Ok(Ended::NeedsStatements),
                    Err(CallError::Refused {
                        code: ErrorCode::UnknownNonce,
                        message,
                        ..
                    }) => {
                        d.machine.failed(&session, index);
                        d.store.clear(index);
                        if d.refilled.insert(index) {
                            tracing::info!(
                                signer = index,
                                "signer lost its preprocessed nonces (restarted?); refilling"
                            );
                            d.ready_or_refill(index);
                        } else {
                            d.machine
                                .exclude(index, format!("signer {index}: {message}"));
                        }
                    }
                    Ok(_) => d
                        .machine
                        .exclude(index, format!("signer {index} answered out of protocol")),
                    Err(e) => d.machine.exclude(index, e.to_string()),
                }
            }
            Event::Checked { index, valid } => {
                d.checking.remove(&index);
                match valid {
                    Some(true) => d.ready_or_refill(index),
                    Some(false) => d.machine.checked(index, false),
                    None => {}
                }
            }
        }
    }
}

/// Co-signs `psbt` in one round with preprocessed commitments from `store`, robust with
/// ROAST, and finalizes it in place. Falls back to the interactive rounds ([`sign_psbt`])
/// for a wallet with a wallet-wide limit or a PSBT of more than
/// [`MAX_ONE_ROUND_INPUTS`] inputs. Commitments the run did not use go back to the store;
/// signers' fresh commitments are added to it.
///
/// # Errors
/// The PSBT is not the wallet's, or fewer than `t` signers could sign; `psbt` is then
/// untouched.
pub async fn sign_psbt_one_round(
    client: &Client,
    meta: &WalletMeta,
    psbt: &mut Psbt,
    store: &mut dyn CommitmentStore,
    options: OneRoundOptions,
) -> Result<SignReport, SignError> {
    let roster = meta.roster.by_index();
    let machine = RoastCoordinator::with_recovery(
        psbt,
        &meta.group,
        meta.recovery(),
        roster.keys().copied().collect(),
    )?;
    let inputs = machine.inputs();
    if inputs == 0 || inputs > MAX_ONE_ROUND_INPUTS {
        return sign_psbt(client, meta, psbt).await;
    }
    if store.needs_statements() {
        // Last time a signer enforced a wallet-wide limit: go straight to the rounds that
        // need, and find out whether it still does.
        let report = sign_psbt(client, meta, psbt).await?;
        if report.mode != SignMode::WithStatements {
            store.set_needs_statements(false);
        }
        return Ok(report);
    }
    let batch = options
        .stock
        .max(u16::try_from(inputs).unwrap_or(u16::MAX))
        .min(crate::signer::nonces::MAX_BATCH);
    let mut d = Driver {
        client,
        wallet: WalletRef {
            name: meta.name.clone(),
            group_key: GroupKey::of(&meta.group),
            epoch: meta.epoch,
        },
        psbt_text: Arc::new(psbt.to_string()),
        roster,
        store,
        machine,
        set: JoinSet::new(),
        signing: BTreeSet::new(),
        checking: BTreeSet::new(),
        preprocessing: BTreeSet::new(),
        refilled: BTreeSet::new(),
        batch,
        asked_first: false,
        stop: Arc::new(AtomicBool::new(false)),
    };
    let ended = drive(&mut d, psbt).await;
    d.stop.store(true, Ordering::Relaxed);
    // Requests still out are not needed: their nonces stay unused at the signers (a full
    // pool forgets its oldest).
    d.set.abort_all();
    d.give_back();
    match ended? {
        Ended::NeedsStatements => {
            d.store.set_needs_statements(true);
            sign_psbt(client, meta, psbt).await
        }
        Ended::Done(outcome) => Ok(SignReport {
            signer_identities: outcome
                .signers
                .iter()
                .filter_map(|i| d.roster.get(i).map(|e| e.identity))
                .collect(),
            signers: outcome.signers,
            culprits: outcome.malicious,
            skipped: outcome.excluded,
            transaction: outcome.transaction,
            mode: if d.asked_first {
                SignMode::PreprocessedFirst
            } else {
                SignMode::OneRound
            },
            sessions: outcome.sessions,
        }),
    }
}
