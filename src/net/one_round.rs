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
use std::time::Instant;

use bitcoin::Psbt;
use tokio::task::JoinSet;

use super::client::{CallError, Client};
use super::coordinator::{sign_psbt, SignMode, SignReport};
use crate::keys::{GroupKey, RosterEntry};
use crate::message::{
    CoordinatorToSigner, ErrorCode, MoreSession, SessionId, SignerToCoordinator, WalletRef,
};
use crate::protocol::cosign::SignError;
use crate::protocol::patience::{Held, Patience};
use crate::protocol::roast::{
    CommitmentStore, HedgeError, InputCommitments, PreCommitment, RoastCoordinator, RoastOutcome,
    ShareCheck, SharesOutcome,
};
use crate::wallet::WalletMeta;

/// Commitments asked of a signer when the store runs short (at least one session's worth).
pub const DEFAULT_STOCK: u16 = 16;
/// Hedging: every `t`-subset of the ready signers is started at once when each signer
/// would compute at most this many shares (sessions it is in × inputs) and there are at most
/// [`HEDGE_MAX_SESSIONS`] subsets. A hedged signing completes in one round trip with up to
/// `n − t` faulty signers (the subset of honest ones is among those started) instead of the
/// second round trip ROAST needs to replace a faulty session. It costs each signer one
/// request, decision and share set per session it is in (`C(n−1, t−1)`: 6 in 3-of-5), so
/// only small PSBTs are hedged, and only when asked ([`OneRoundOptions::hedge`]): on a LAN
/// the extra work costs more than the round trip it saves.
pub const HEDGE_MAX_SHARES: usize = 8;
/// Most sessions a hedged start opens.
pub const HEDGE_MAX_SESSIONS: usize = 20;

/// Whether a hedged start of `signers` ready signers with threshold `threshold` fits the
/// bounds for a PSBT of `inputs` inputs: more signers than `t`, at most
/// [`HEDGE_MAX_SESSIONS`] subsets, at most [`HEDGE_MAX_SHARES`] shares per signer.
pub fn hedge_fits(signers: usize, threshold: u16, inputs: usize) -> bool {
    use crate::protocol::roast::binomial;
    let t = usize::from(threshold);
    signers > t
        && t > 0
        && binomial(signers, t) <= HEDGE_MAX_SESSIONS
        && binomial(signers - 1, t - 1).saturating_mul(inputs) <= HEDGE_MAX_SHARES
}
/// From this many inputs on, the spare signers (those outside the first session) are asked to
/// check the PSBT while the first session runs ([`CoordinatorToSigner::PrepareSign`]), so that
/// a spare needed for a second ROAST session only signs. Below it the check costs less than
/// the request.
pub const PREPARE_INPUTS: usize = 16;

/// Most inputs signed in one round (one preprocessing request's worth); larger PSBTs use
/// the interactive rounds.
pub const MAX_ONE_ROUND_INPUTS: usize = crate::signer::nonces::MAX_BATCH as usize;

enum Event {
    Preprocessed {
        index: u16,
        reply: Result<SignerToCoordinator, CallError>,
    },
    /// A signer's answer to one request for one or more sessions (the first is the request's
    /// own, the others its `more`).
    Signed {
        index: u16,
        sessions: Vec<SessionId>,
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
    /// Start every `t`-subset of the ready signers at once when the PSBT is small enough
    /// (see [`HEDGE_MAX_SHARES`]). Off by default: it pays off when signers are far apart.
    pub hedge: bool,
    /// How long a member that answered waits for its session's other members before it may
    /// join another session ([`crate::protocol::patience`]).
    pub patience: Patience,
}

impl Default for OneRoundOptions {
    fn default() -> Self {
        OneRoundOptions {
            stock: DEFAULT_STOCK,
            hedge: false,
            patience: Patience::DEFAULT,
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
    /// Signers with signing requests out (how many).
    signing: BTreeMap<u16, usize>,
    /// Every subset was started at once (a hedged start): no further session is started
    /// while any request is in flight.
    hedged: bool,
    /// Signers whose shares (of the session) are being checked.
    checking: BTreeMap<u16, SessionId>,
    /// Signers that answered a session still waiting for others: their shares are checked
    /// (before they may join another session) only once that could let a session start.
    unchecked: BTreeMap<u16, (SessionId, ShareCheck)>,
    /// Sessions in the order they started.
    started: Vec<SessionId>,
    /// Signers with a preprocessing request out.
    preprocessing: BTreeSet<u16>,
    /// Signers whose store entry was cleared after refusing old commitments.
    refilled: BTreeSet<u16>,
    batch: u16,
    /// Signers asked for commitments because the store held none of theirs: a signing whose
    /// shares came from one of them is reported as [`SignMode::PreprocessedFirst`].
    asked_first: BTreeSet<u16>,
    /// Hedging allowed.
    hedge: bool,
    /// This run started hedged.
    hedge_run: bool,
    /// Tells share checks still running that the run is over.
    stop: Arc<AtomicBool>,
    /// Members that answered a session still able to complete, waiting for its others.
    held: Held,
    /// The spares' preparations, by signer.
    prepared: BTreeMap<u16, Prepared>,
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
            || self.held.is_held(index)
            || self.machine.is_ready(index)
            || self.signing.contains_key(&index)
            || (self.hedged && !self.set.is_empty())
            || self.checking.contains_key(&index)
            || self.unchecked.contains_key(&index)
        {
            return;
        }
        match self.store.take(index, self.machine.inputs()) {
            Some(c) => self.machine.ready(index, c),
            None => {
                self.asked_first.insert(index);
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

    /// The hedged start, when allowed and worth it: every signer of the roster ready, each
    /// would sign at most [`HEDGE_MAX_SHARES`] shares, and the store holds the further
    /// commitment sets. Otherwise nothing happens (plain ROAST follows).
    fn start_hedged(&mut self) -> Result<(), SignError> {
        if !self.hedge || self.machine.sessions_started() > 0 {
            return Ok(());
        }
        let ready = self.machine.ready_signers();
        let usable = self
            .roster
            .keys()
            .filter(|i| self.machine.usable(**i))
            .count();
        let inputs = self.machine.inputs();
        if ready.len() != usable || !hedge_fits(ready.len(), self.machine.threshold(), inputs) {
            return Ok(());
        }
        let store = &mut *self.store;
        let mut more = |i: u16| store.take(i, inputs);
        let starts = match self
            .machine
            .start_hedged(&ready, &mut more, &mut rand::rngs::OsRng)
        {
            Ok(starts) => starts,
            Err(HedgeError::Short { taken, .. }) => {
                for (i, sets) in taken {
                    for c in sets {
                        self.store.add(i, c);
                    }
                }
                return Ok(());
            }
            Err(HedgeError::NotReady(_)) => return Ok(()),
            Err(HedgeError::Sign(e)) => return Err(e),
        };
        self.hedged = true;
        self.hedge_run = true;
        self.send(starts);
        Ok(())
    }

    fn start_sessions(&mut self) -> Result<(), SignError> {
        self.start_hedged()?;
        let starts = self.machine.start(&mut rand::rngs::OsRng)?;
        self.send(starts);
        Ok(())
    }

    /// Sends each chosen signer one request carrying all its sessions of `starts` (several
    /// only after a hedged start).
    fn send(&mut self, starts: Vec<crate::protocol::roast::SessionStart>) {
        let mut per_signer: BTreeMap<u16, Vec<MoreSession>> = BTreeMap::new();
        let precomputations: Vec<_> = starts
            .iter()
            .map(|s| self.machine.precomputation(s))
            .collect();
        let now = Instant::now();
        for start in starts {
            if !self.started.contains(&start.session) {
                self.started.push(start.session);
            }
            self.held.started(start.session, now);
            for index in &start.chosen {
                if let Some(nonces) = start.nonces.get(index) {
                    per_signer.entry(*index).or_default().push(MoreSession {
                        session: start.session,
                        commitments: start.commitments.as_ref().clone(),
                        nonces: nonces.clone(),
                    });
                }
            }
        }
        for (index, parts) in per_signer {
            let Some(entry) = self.roster.get(&index).cloned() else {
                continue;
            };
            let mut parts = parts.into_iter();
            let Some(first) = parts.next() else { continue };
            let more: Vec<MoreSession> = parts.collect();
            let sessions: Vec<SessionId> = std::iter::once(first.session)
                .chain(more.iter().map(|m| m.session))
                .collect();
            *self.signing.entry(index).or_default() += 1;
            let message = CoordinatorToSigner::SignPreprocessed {
                session: first.session,
                wallet: self.wallet.clone(),
                psbt: (*self.psbt_text).clone(),
                commitments: first.commitments,
                nonces: first.nonces,
                more,
            };
            let after = self.prepared.get(&index).cloned();
            spawn_request(&mut self.set, self.client, entry, sessions, message, after);
        }
        for work in precomputations {
            precompute_in_background(work);
        }
    }

    /// Checks the shares of signers waiting for a check once they could complete `t` ready
    /// signers (or when nothing else is in flight): a check on the critical path only when a
    /// session could follow it, not for every answer of a session about to complete.
    fn check_when_useful(&mut self) {
        if self.unchecked.is_empty() || (self.hedged && !self.set.is_empty()) {
            return;
        }
        let ready = self.machine.ready_count();
        let need = usize::from(self.machine.threshold());
        let could = ready + self.unchecked.len() + self.checking.len();
        if !(self.set.is_empty() || (ready < need && could >= need)) {
            return;
        }
        for (index, (session, check)) in std::mem::take(&mut self.unchecked) {
            let stop = Arc::clone(&self.stop);
            self.checking.insert(index, session);
            // Checked off the driver's thread: the session's other answers keep coming in.
            self.set.spawn_blocking(move || Event::Checked {
                index: check.signer,
                valid: check.run(&|| stop.load(Ordering::Relaxed)),
            });
        }
    }

    /// After `done` completed: finishes the share checks of signers outside its signing set
    /// that answered sessions started before it (those sessions failed; checks already
    /// running are awaited) — or any session, after a hedged start of a small PSBT — so that
    /// a signer which sent invalid shares is named even when no later session needed its
    /// check. Answers of later sessions of plain ROAST are not checked: they were not needed.
    async fn name_culprits(&mut self, done: &SessionId, outcome: &mut RoastOutcome) {
        let position = |s: &SessionId| self.started.iter().position(|x| x == s);
        let Some(limit) = position(done) else { return };
        let older: Vec<u16> = self
            .unchecked
            .iter()
            .filter(|(i, (s, _))| {
                !outcome.signers.contains(i)
                    && (self.hedge_run || position(s).is_some_and(|p| p < limit))
            })
            .map(|(i, _)| *i)
            .collect();
        for index in older {
            if let Some((session, check)) = self.unchecked.remove(&index) {
                self.checking.insert(index, session);
                self.set.spawn_blocking(move || Event::Checked {
                    index: check.signer,
                    valid: check.run(&|| false),
                });
            }
        }
        let hedge_run = self.hedge_run;
        let older_running = |c: &BTreeMap<u16, SessionId>| {
            c.values()
                .any(|s| hedge_run || position(s).is_some_and(|p| p < limit))
        };
        while older_running(&self.checking) {
            let Some(joined) = self.set.join_next().await else {
                break;
            };
            if let Ok(Event::Checked { index, valid }) = joined {
                self.checking.remove(&index);
                if valid == Some(false) && !outcome.malicious.contains(&index) {
                    self.machine.checked(index, false);
                    outcome.malicious.push(index);
                    outcome.malicious.sort_unstable();
                }
            }
        }
    }

    /// Makes ready the held members whose session can no longer complete or whose patience
    /// ran out (all of them with `all`: nothing is in flight any more); whether any was.
    fn release_held(&mut self, all: bool) -> bool {
        let due = if all {
            self.held.release_all()
        } else {
            let machine = &self.machine;
            self.held.release(Instant::now(), |s| machine.live(s))
        };
        let any = !due.is_empty();
        for index in due {
            self.ready_or_refill(index);
        }
        any
    }

    /// Gives the commitments no session used back to the store.
    fn give_back(&mut self) {
        for (index, commitments) in self.machine.unused() {
            self.store.add(index, commitments);
        }
    }
}

/// Sends one signing request (for `sessions`) to `entry`; its answer comes back as
/// [`Event::Signed`]. The request is encoded here, before the task starts, so that what the
/// caller starts next (a precomputation) cannot delay it. With `after` (the signer's
/// preparation, [`prepare_spares`]), it leaves once that request is answered: on the same
/// connection, rather than on a new one while the first is busy (a TCP handshake is a round
/// trip, and the preparation's answer is due within one).
fn spawn_request(
    set: &mut JoinSet<Event>,
    client: &Client,
    entry: RosterEntry,
    sessions: Vec<SessionId>,
    message: CoordinatorToSigner,
    after: Option<Prepared>,
) {
    let client = client.clone();
    let index = entry.index;
    let body = Client::encode(index, &message);
    drop(message);
    set.spawn(async move {
        if let Some(mut prepared) = after {
            // An error means the preparation's task is gone: nothing to wait for.
            let _ = prepared.wait_for(|answered| *answered).await;
        }
        let reply = match body {
            Ok(body) => client.call_encoded(&entry, body).await,
            Err(e) => Err(e),
        };
        Event::Signed {
            index,
            sessions,
            reply,
        }
    });
}

/// Runs a session's precomputation ([`RoastCoordinator::precomputation`]) on its own thread
/// of the lowest scheduling class ([`crate::idle`]) while the session's requests travel
/// (they were encoded before): on a machine shared with signers it uses the time the
/// requests and answers spend travelling, not the signers' CPU. What it computes is kept
/// with the session; its share checks and aggregation use it once it is complete and take
/// frost's own path before, so nothing waits for it (nor for a thread that failed to start).
fn precompute_in_background(work: impl FnOnce() + Send + 'static) {
    if let Err(e) = crate::idle::spawn("ckm-precompute", work) {
        tracing::debug!("no precomputation thread: {e}");
    }
}

/// Whether a spare's preparation request was answered (or ended otherwise).
type Prepared = tokio::sync::watch::Receiver<bool>;

/// Asks each of `spares` to check the PSBT in the background ([`PREPARE_INPUTS`]). Nothing
/// waits for the answers but a signing request to the same spare ([`spawn_request`]); an
/// error only means the spare checks the PSBT when it is asked to sign.
fn prepare_spares<'a>(
    client: &Client,
    spares: impl Iterator<Item = &'a RosterEntry>,
    wallet: &WalletRef,
    psbt_text: &Arc<String>,
) -> BTreeMap<u16, Prepared> {
    let mut prepared = BTreeMap::new();
    for entry in spares {
        let client = client.clone();
        let entry = entry.clone();
        let message = CoordinatorToSigner::PrepareSign {
            wallet: wallet.clone(),
            psbt: (**psbt_text).clone(),
        };
        let (answered, receiver) = tokio::sync::watch::channel(false);
        prepared.insert(entry.index, receiver);
        tokio::spawn(async move {
            match client.call(&entry, &message).await {
                Ok(SignerToCoordinator::Prepared) => {}
                Ok(_) => {
                    tracing::debug!(signer = entry.index, "unexpected answer to a preparation")
                }
                Err(e) => tracing::debug!(signer = entry.index, "preparation not taken: {e}"),
            }
            let _ = answered.send(true);
        });
    }
    prepared
}

/// The first session, sent before the coordinator's own check of the PSBT (which then runs
/// while the requests travel): the first `t` signers of the roster whose commitments the
/// store holds. `None` when fewer hold enough, or a hedged start may apply.
fn early_session(
    store: &mut dyn CommitmentStore,
    roster: &BTreeMap<u16, RosterEntry>,
    threshold: u16,
    inputs: usize,
) -> Option<(SessionId, BTreeMap<u16, Vec<PreCommitment>>)> {
    let chosen: Vec<u16> = roster
        .keys()
        .copied()
        .filter(|i| store.count(*i) >= inputs)
        .take(usize::from(threshold))
        .collect();
    if chosen.len() < usize::from(threshold) {
        return None;
    }
    let mut members = BTreeMap::new();
    for i in chosen {
        members.insert(i, store.take(i, inputs)?);
    }
    Some((SessionId::random(&mut rand::rngs::OsRng), members))
}

/// What [`drive`] ended with.
enum Ended {
    Done(Box<RoastOutcome>),
    /// A signer needs the statement rounds.
    NeedsStatements,
    /// A signer could not read the one-round request (another ckm version): the
    /// interactive rounds instead.
    Interactive(u16),
}

async fn drive(d: &mut Driver<'_>, psbt: &mut Psbt) -> Result<Ended, SignError> {
    let roster: Vec<u16> = d.roster.keys().copied().collect();
    for index in roster {
        d.ready_or_refill(index);
    }
    loop {
        if d.hedged && d.set.is_empty() {
            // Nothing of the hedged start is in flight any more: plain ROAST from here.
            d.hedged = false;
            let roster: Vec<u16> = d.roster.keys().copied().collect();
            for index in roster {
                d.ready_or_refill(index);
            }
        }
        d.release_held(false);
        d.start_sessions()?;
        if !d.machine.possible() {
            return Err(d.machine.failure());
        }
        d.check_when_useful();
        let joined = match d.held.next_deadline() {
            Some(due) => tokio::select! {
                joined = d.set.join_next() => joined,
                () = tokio::time::sleep_until(due.into()) => continue,
            },
            None => d.set.join_next().await,
        };
        let Some(joined) = joined else {
            // Nothing in flight: the held members' sessions cannot complete any more.
            if d.release_held(true) {
                continue;
            }
            // No session can start: every usable signer is short.
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
                sessions,
                reply,
            } => {
                if let Some(n) = d.signing.get_mut(&index) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        d.signing.remove(&index);
                    }
                }
                match reply {
                    Ok(SignerToCoordinator::SignedPreprocessed {
                        shares,
                        fresh,
                        more,
                    }) => {
                        let now = Instant::now();
                        for session in &sessions {
                            d.held.answered(session, now);
                        }
                        match d.verify_batch(index, fresh) {
                            Ok(c) => d.store.add(index, c),
                            Err(e) => {
                                tracing::warn!(signer = index, "fresh commitments refused: {e}")
                            }
                        }
                        let mut answers = std::iter::once(shares).chain(more);
                        let mut again = false;
                        for session in &sessions {
                            // A signer that does not know `more` answers only the first.
                            let Some(shares) = answers.next() else {
                                d.machine.failed(session, index);
                                continue;
                            };
                            match d.machine.shares(session, index, shares, psbt)? {
                                SharesOutcome::Done(mut outcome) => {
                                    d.name_culprits(session, &mut outcome).await;
                                    return Ok(Ended::Done(outcome));
                                }
                                SharesOutcome::Check(check) => {
                                    d.unchecked.insert(index, (*session, check));
                                }
                                SharesOutcome::Failed { .. } | SharesOutcome::Ignored => {
                                    again = true;
                                }
                            }
                        }
                        if again {
                            d.ready_or_refill(index);
                        }
                    }
                    Err(CallError::Refused {
                        code: ErrorCode::NeedsStatements,
                        ..
                    }) => return Ok(Ended::NeedsStatements),
                    Err(CallError::Refused {
                        code: ErrorCode::BadRequest,
                        ..
                    }) => return Ok(Ended::Interactive(index)),
                    Err(CallError::Refused {
                        code: ErrorCode::UnknownNonce,
                        message,
                        ..
                    }) => {
                        for session in &sessions {
                            d.machine.failed(session, index);
                        }
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
                let session = d.checking.remove(&index);
                match valid {
                    // Held while the session it answered may still complete (patience).
                    Some(true) => {
                        let held = session.is_some_and(|s| {
                            let live = d.machine.live(&s);
                            d.held.hold(index, s, live, Instant::now())
                        });
                        if !held {
                            d.ready_or_refill(index);
                        }
                    }
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
    let roster = meta.signing_roster();
    let inputs = psbt.unsigned_tx.input.len();
    if inputs == 0 || inputs > MAX_ONE_ROUND_INPUTS || psbt.inputs.len() != inputs {
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
    let wallet = WalletRef {
        name: meta.name.clone(),
        group_key: GroupKey::of(&meta.group),
        epoch: meta.epoch,
    };
    let psbt_text = Arc::new(psbt.to_string());
    let threshold = meta.group.threshold();
    let n = roster.len();
    let may_hedge = options.hedge && hedge_fits(n, threshold, inputs);
    // The first session leaves before the coordinator's own check of the PSBT: the signers
    // check it themselves and the request needs only commitments, so the check runs while
    // the requests travel.
    let mut set = JoinSet::new();
    let mut signing = BTreeMap::new();
    let mut held = Held::new(options.patience);
    let early = if may_hedge {
        None
    } else {
        early_session(store, &roster, threshold, inputs)
    };
    if let Some((session, members)) = &early {
        held.started(*session, Instant::now());
        let commitments: BTreeMap<u16, InputCommitments> = members
            .iter()
            .map(|(i, c)| (*i, InputCommitments::of(c)))
            .collect();
        for (index, c) in members {
            let Some(entry) = roster.get(index).cloned() else {
                continue;
            };
            *signing.entry(*index).or_default() += 1;
            let message = CoordinatorToSigner::SignPreprocessed {
                session: *session,
                wallet: wallet.clone(),
                psbt: (*psbt_text).clone(),
                commitments: commitments.clone(),
                nonces: c.iter().map(|p| p.id).collect(),
                more: Vec::new(),
            };
            spawn_request(&mut set, client, entry, vec![*session], message, None);
        }
    }
    let mut prepared = BTreeMap::new();
    if let Some((_, members)) = &early {
        if inputs >= PREPARE_INPUTS {
            let spares = roster.values().filter(|e| !members.contains_key(&e.index));
            prepared = prepare_spares(client, spares, &wallet, &psbt_text);
        }
    }
    let machine = RoastCoordinator::with_recovery(
        psbt,
        &meta.group,
        meta.recovery(),
        roster.keys().copied().collect(),
    );
    let mut machine = match machine {
        Ok(m) => m,
        Err(e) => {
            // The signers refuse it too; their nonces of the early session are used up.
            set.abort_all();
            return Err(e);
        }
    };
    let mut started = Vec::new();
    if let Some((session, members)) = early {
        let start = machine.adopt(session, members)?;
        precompute_in_background(machine.precomputation(&start));
        started.push(session);
    }
    let mut d = Driver {
        client,
        wallet,
        psbt_text,
        roster,
        store,
        machine,
        set,
        signing,
        hedged: false,
        hedge: options.hedge,
        hedge_run: false,
        checking: BTreeMap::new(),
        unchecked: BTreeMap::new(),
        started,
        preprocessing: BTreeSet::new(),
        refilled: BTreeSet::new(),
        batch,
        asked_first: BTreeSet::new(),
        stop: Arc::new(AtomicBool::new(false)),
        prepared,
        held,
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
        Ended::Interactive(index) => {
            tracing::warn!(
                signer = index,
                "signer refused the one-round request as malformed (another ckm version?); signing in the interactive rounds"
            );
            sign_psbt(client, meta, psbt).await
        }
        Ended::Done(outcome) => Ok(SignReport {
            mode: if outcome.signers.iter().any(|i| d.asked_first.contains(i)) {
                SignMode::PreprocessedFirst
            } else {
                SignMode::OneRound
            },
            signer_identities: outcome
                .signers
                .iter()
                .filter_map(|i| d.roster.get(i).map(|e| e.identity))
                .collect(),
            signers: outcome.signers,
            culprits: outcome.malicious,
            skipped: outcome.excluded,
            transaction: outcome.transaction,
            sessions: outcome.sessions,
        }),
    }
}
