//! The signer's side of co-signing: round 1 checks the PSBT, applies the per-spend rules and
//! reserves the spend; the statement round (wallets with a daily limit) checks every chosen
//! signer's receipt and states what this signer counts; round 2 checks the statements,
//! signs, and records the decision — keyed audit record and spend accounting in one
//! transaction — before any share leaves.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use bdk_wallet::rusqlite::{self, Connection, OptionalExtension};
use bitcoin::Psbt;
use frost_secp256k1_tr as frost;
use rand::{CryptoRng, RngCore};

use super::audit::{self, AuditEvent, AuditKind};
use super::home::{HomeError, WalletInfo};
use super::policy::{Policy, PolicyViolation};
use super::{
    check_cache, prune, refuse, Refusal, Signer, MAX_SESSIONS_PER_COORDINATOR,
    MAX_SESSION_BYTES_PER_COORDINATOR, SESSION_TTL, WINDOW_SECS,
};
use crate::auth::unix_now;
use crate::frost::shares::roster_index;
use crate::identity::IdentityPublic;
use crate::message::{ErrorCode, SessionId, SignerToCoordinator, WalletRef};
use crate::protocol::roast::{CommitmentBatch, NonceId};
use crate::protocol::spend_limits::{
    check_receipts, check_statements, counted_total, Receipt, SpendEntry, SpendState, Statement,
};
use crate::psbt::{commit_with, CheckedPsbt, SignerNonces};
use crate::recovery::RecoveryPolicy;

/// A signing session between the rounds.
pub(super) struct SignSession {
    coordinator: IdentityPublic,
    wallet: WalletInfo,
    psbt: Psbt,
    checked: CheckedPsbt,
    nonces: SignerNonces,
    receipt: Receipt,
    /// The chosen signers, once this signer gave its statement.
    chosen: Option<BTreeSet<u16>>,
    started: Instant,
    /// Size of the PSBT as received (for the per-coordinator cap).
    bytes: usize,
}

/// Refuses a PSBT that alone is more than a coordinator may hold in open sessions.
fn check_session_bytes(bytes: usize) -> Result<(), Refusal> {
    if bytes > MAX_SESSION_BYTES_PER_COORDINATOR {
        return Err(refuse(
            ErrorCode::BadRequest,
            format!(
                "a PSBT of {bytes} bytes is more than the {MAX_SESSION_BYTES_PER_COORDINATOR} bytes a coordinator's open signing sessions may hold here"
            ),
        ));
    }
    Ok(())
}

/// Makes room for a new session of `from` holding `bytes` of PSBT within its caps (at most
/// [`MAX_SESSIONS_PER_COORDINATOR`] sessions and [`MAX_SESSION_BYTES_PER_COORDINATOR`] bytes):
/// its own oldest open sessions are forgotten first, as a full nonce pool forgets its oldest
/// nonces. A coordinator that asks more signers for round 1 than it needs leaves a session
/// open at each signer it did not choose, so refusing here would shut out a busy coordinator
/// for [`SESSION_TTL`] because of its own leftovers. A forgotten session answers later rounds
/// as unknown; its reservation stays in the database until it expires and counts towards the
/// daily limit until then (the safe side). Returns how many sessions were forgotten.
fn make_room(
    signing: &mut std::collections::HashMap<SessionId, SignSession>,
    from: &IdentityPublic,
    bytes: usize,
) -> Result<usize, Refusal> {
    check_session_bytes(bytes)?;
    let mut forgotten = 0;
    loop {
        let (count, held, oldest) = signing.iter().filter(|(_, s)| s.coordinator == *from).fold(
            (0usize, 0usize, None::<(SessionId, Instant)>),
            |(n, b, oldest), (id, s)| {
                let oldest = match oldest {
                    Some((_, at)) if at <= s.started => oldest,
                    _ => Some((*id, s.started)),
                };
                (n + 1, b.saturating_add(s.bytes), oldest)
            },
        );
        if count < MAX_SESSIONS_PER_COORDINATOR
            && held.saturating_add(bytes) <= MAX_SESSION_BYTES_PER_COORDINATOR
        {
            return Ok(forgotten);
        }
        let Some((id, _)) = oldest else {
            return Ok(forgotten);
        };
        signing.remove(&id);
        forgotten += 1;
    }
}

/// A one-round signing request's contents.
pub(super) struct OneRoundRequest {
    pub session: SessionId,
    pub wallet: WalletRef,
    pub psbt: String,
    pub commitments: BTreeMap<u16, crate::protocol::roast::InputCommitments>,
    pub nonces: Vec<NonceId>,
    pub more: Vec<crate::message::MoreSession>,
}

/// Most sessions in one one-round request (a hedged start's sessions for one signer).
pub const MAX_SESSIONS_PER_REQUEST: usize = 20;

/// What the window check counts besides this signer's own records.
enum Window<'a> {
    /// The chosen signers' statements too (wallet-wide limits).
    WithStatements(&'a BTreeMap<u16, Statement>),
    /// Only this signer's records.
    Own,
}

/// Why a decision transaction did not record a signature.
enum Decision {
    /// The daily limit.
    Policy(PolicyViolation),
    /// The reservation expired or vanished.
    Expired,
    /// The database failed: nothing recorded, nothing released.
    Store(String),
}

impl From<crate::signer::db::DbError> for Decision {
    fn from(e: crate::signer::db::DbError) -> Self {
        Decision::Store(e.to_string())
    }
}

impl From<rusqlite::Error> for Decision {
    fn from(e: rusqlite::Error) -> Self {
        Decision::Store(e.to_string())
    }
}

/// What this signer counts for a wallet now: spends signed in the window (one per txid) and
/// reservations that have not expired, each with the outpoints it spends.
fn own_records(conn: &Connection, group_key: &str, now: u64) -> rusqlite::Result<Vec<SpendEntry>> {
    let mut out = audit::signed_since(conn, group_key, now.saturating_sub(WINDOW_SECS))?;
    let mut stmt = conn.prepare_cached(
        "SELECT txid, outflow, inputs FROM reservations WHERE group_key = ?1 AND expires > ?2",
    )?;
    let rows = stmt.query_map(
        rusqlite::params![group_key, i64::try_from(now).unwrap_or(i64::MAX)],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        },
    )?;
    for row in rows {
        let (txid, outflow, inputs) = row?;
        if let Ok(txid) = txid.parse() {
            out.push(SpendEntry {
                txid,
                outflow_sats: u64::try_from(outflow).unwrap_or(0),
                state: SpendState::Reserved,
                // Unreadable inputs conflict with nothing: the spend counts in full.
                inputs: audit::parse_inputs(&inputs).unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

/// The entry of the spend being decided.
fn this_spend(checked: &CheckedPsbt) -> SpendEntry {
    SpendEntry {
        txid: checked.txid(),
        outflow_sats: checked.outflow().to_sat(),
        state: SpendState::Reserved,
        inputs: checked.spent_outpoints().to_vec(),
    }
}

fn event(
    kind: AuditKind,
    from: &IdentityPublic,
    wallet: &WalletInfo,
    checked: &CheckedPsbt,
    detail: String,
) -> AuditEvent {
    AuditEvent {
        kind,
        wallet: wallet.name.clone(),
        group_key: wallet.group_key.to_string(),
        coordinator: from.to_string(),
        txid: checked.txid().to_string(),
        outflow_sats: checked.outflow().to_sat(),
        fee_sats: checked.fee().to_sat(),
        detail,
        inputs: match kind {
            AuditKind::Signed => checked.spent_outpoints().to_vec(),
            _ => Vec::new(),
        },
    }
}

impl Signer {
    fn lock_signing(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, std::collections::HashMap<SessionId, SignSession>>, Refusal>
    {
        self.signing
            .lock()
            .map_err(|_| refuse(ErrorCode::Internal, "lock poisoned"))
    }

    /// Records a refusal (its own transaction) and returns it; a failure to record is logged.
    fn refused(
        &self,
        code: ErrorCode,
        from: &IdentityPublic,
        wallet: &WalletInfo,
        checked: &CheckedPsbt,
        reason: impl std::fmt::Display,
    ) -> Refusal {
        let reason = reason.to_string();
        if let Err(e) = self.home.record(
            event(AuditKind::Refused, from, wallet, checked, reason.clone()),
            &mut self.rng(),
        ) {
            tracing::error!(error = %e, "cannot record a refusal in the audit records");
        }
        refuse(code, reason)
    }

    pub(super) fn sign_commit<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        session: SessionId,
        wallet: WalletRef,
        psbt: String,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        self.require_state()?;
        let info = self.wallet_for(from, &wallet)?;
        let bytes = psbt.len();
        {
            let mut signing = self.lock_signing()?;
            prune(&mut signing, |s| s.started);
            check_session_bytes(bytes)?;
        }
        let (psbt, share) = self.psbt_and_share(&info, &psbt)?;
        let recovery = certified_recovery(&info, &share)?;
        let (nonces, commitments, checked) = commit_with(&psbt, &share, recovery.as_ref(), rng)
            .map_err(|e| refuse(ErrorCode::Refused, e))?;
        drop(share);
        let policy = self.wallet_policy(&info)?;
        if let Err(v) = self.judge(&policy, &checked, info.network) {
            return Err(self.refused(ErrorCode::Policy, from, &info, &checked, v));
        }

        // Reserve the spend (and judge the window by this signer's own records first).
        let now = unix_now();
        let outflow = checked.outflow().to_sat();
        let txid = checked.txid();
        let gk = info.group_key.to_string();
        // Not synced: a reservation is worth nothing without this session's nonces, which
        // live in memory and die with the process (the decision in round 2 is the signing's
        // one synced commit; docs/wallet-wide-limits.md).
        let reserved = self.home.db().write_unsynced(|tx| {
            // The window is read only when there is a limit to check it against.
            if policy.daily_limit_sats.is_some() {
                let mut own = own_records(tx, &gk, now)?;
                own.push(this_spend(&checked));
                if let Err(v) = policy.check_window(outflow, counted_total(&own, [])) {
                    return Ok(Err(v));
                }
            }
            tx.prepare_cached(
                "INSERT INTO reservations (session, group_key, txid, outflow, expires, inputs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut st| {
                st.execute(rusqlite::params![
                    session.to_string(),
                    gk,
                    txid.to_string(),
                    i64::try_from(outflow).unwrap_or(i64::MAX),
                    i64::try_from(now + SESSION_TTL.as_secs()).unwrap_or(i64::MAX),
                    audit::inputs_text(checked.spent_outpoints()),
                ])
            })?;
            tx.prepare_cached("DELETE FROM reservations WHERE expires <= ?1")
                .and_then(|mut st| st.execute([i64::try_from(now).unwrap_or(i64::MAX)]))?;
            Ok::<_, HomeError>(Ok(()))
        });
        match reserved {
            Ok(Ok(())) => {}
            Ok(Err(v)) => return Err(self.refused(ErrorCode::Policy, from, &info, &checked, v)),
            Err(e) => {
                return Err(refuse(
                    ErrorCode::Internal,
                    format!("cannot record the reservation ({e}); nothing was signed"),
                ))
            }
        }
        let receipt = Receipt::sign(
            self.home.identity(),
            info.group_key,
            session,
            info.index,
            txid,
            outflow,
        );
        let statements_required = policy.daily_limit_sats.is_some() && info.roster().is_some();
        let mut signing = self.lock_signing()?;
        prune(&mut signing, |s| s.started);
        if signing.contains_key(&session) {
            return Err(refuse(ErrorCode::BadRequest, "session id already in use"));
        }
        let forgotten = make_room(&mut signing, from, bytes)?;
        if forgotten > 0 {
            tracing::info!(
                coordinator = %from,
                forgotten,
                "forgot this coordinator's oldest open signing sessions to keep within its caps"
            );
        }
        tracing::info!(%session, wallet = %info.name, %txid, inputs = checked.inputs().len(), outflow_sats = outflow, fee_sats = checked.fee().to_sat(), "committed nonces and reserved the spend");
        signing.insert(
            session,
            SignSession {
                coordinator: *from,
                wallet: info,
                psbt,
                checked,
                nonces,
                receipt: receipt.clone(),
                chosen: None,
                started: Instant::now(),
                bytes,
            },
        );
        Ok(SignerToCoordinator::SignCommitments {
            commitments,
            receipt,
            statements_required,
        })
    }

    pub(super) fn sign_statement(
        &self,
        from: &IdentityPublic,
        session: SessionId,
        receipts: BTreeMap<u16, Receipt>,
    ) -> Result<SignerToCoordinator, Refusal> {
        self.require_state()?;
        let mut signing = self.lock_signing()?;
        let s = match signing.get_mut(&session) {
            Some(s) if s.coordinator == *from => s,
            _ => {
                return Err(refuse(
                    ErrorCode::UnknownSession,
                    "unknown signing session (expired, used, or the signer restarted)",
                ))
            }
        };
        if s.chosen.is_some() {
            return Err(refuse(
                ErrorCode::BadRequest,
                "a statement was already given for this session",
            ));
        }
        let roster = s.wallet.roster().ok_or_else(|| {
            refuse(
                ErrorCode::Refused,
                "this wallet has no certified roster (made by an older ckm): its limits are per signer and no statement can be given",
            )
        })?;
        let chosen = check_receipts(
            &receipts,
            roster,
            s.wallet.threshold,
            &s.wallet.group_key,
            &session,
            &s.checked.txid(),
            s.checked.outflow().to_sat(),
            &s.receipt,
        )
        .map_err(|e| refuse(ErrorCode::Refused, e))?;
        let now = unix_now();
        let gk = s.wallet.group_key.to_string();
        let spends = self
            .home
            .db()
            .read(|c| own_records(c, &gk, now))
            .map_err(|e| refuse(ErrorCode::Internal, e))?;
        if !spends.iter().any(|e| e.txid == s.checked.txid()) {
            return Err(refuse(
                ErrorCode::Refused,
                "this session's reservation has expired",
            ));
        }
        let statement = Statement::sign(
            self.home.identity(),
            s.wallet.group_key,
            session,
            s.wallet.index,
            now,
            now.saturating_sub(WINDOW_SECS),
            spends,
        );
        s.chosen = Some(chosen);
        Ok(SignerToCoordinator::SignStatement(statement))
    }

    pub(super) fn sign_share(
        &self,
        from: &IdentityPublic,
        session: SessionId,
        packages: Vec<frost::SigningPackage>,
        statements: BTreeMap<u16, Statement>,
    ) -> Result<SignerToCoordinator, Refusal> {
        // Removing the session first guarantees its nonces are used at most once.
        let s =
            {
                let mut signing = self.lock_signing()?;
                match signing.remove(&session) {
                    Some(s) if s.coordinator == *from => s,
                    Some(s) => {
                        signing.insert(session, s);
                        return Err(refuse(ErrorCode::UnknownSession, "unknown signing session"));
                    }
                    None => return Err(refuse(
                        ErrorCode::UnknownSession,
                        "unknown signing session (already used, expired, or the signer restarted)",
                    )),
                }
            };
        self.require_state()?;
        // Round 2 re-runs round 1's checks against the signer's state now: between the rounds
        // a transition may have moved the wallet's epoch, the operator may have revoked the
        // coordinator or tightened the policy. (The session is already gone: its nonces are
        // never used, whatever the answer.)
        let now = self
            .home
            .wallet(&s.wallet.group_key.to_string())
            .map_err(|e| refuse(ErrorCode::UnknownWallet, e))?;
        if now.epoch != s.wallet.epoch {
            return Err(refuse(
                ErrorCode::WrongEpoch,
                format!(
                    "wallet {} moved from epoch {} to epoch {} between the rounds; sign again",
                    now.name, s.wallet.epoch, now.epoch
                ),
            ));
        }
        self.check_bound(from, &now)?;
        let policy = self.wallet_policy(&s.wallet)?;
        if let Err(v) = self.judge(&policy, &s.checked, now.network) {
            return Err(self.refused(ErrorCode::Policy, from, &now, &s.checked, v));
        }
        let chosen_now: BTreeSet<u16> = packages
            .iter()
            .flat_map(|p| p.signing_commitments().keys().map(roster_index))
            .collect();
        self.check_not_removing(&now, &chosen_now)?;
        let roster = s.wallet.roster();
        let wallet_wide = policy.daily_limit_sats.is_some() && roster.is_some();
        if let (true, Some(roster)) = (wallet_wide, roster) {
            let Some(chosen) = &s.chosen else {
                return Err(self.refused(
                    ErrorCode::Refused,
                    from,
                    &s.wallet,
                    &s.checked,
                    "the wallet has a daily limit but no statement was taken for this session (the coordinator skipped the statement round)",
                ));
            };
            let signers: BTreeSet<u16> = packages
                .first()
                .map(|p| p.signing_commitments().keys().map(roster_index).collect())
                .unwrap_or_default();
            if &signers != chosen {
                return Err(self.refused(
                    ErrorCode::Refused,
                    from,
                    &s.wallet,
                    &s.checked,
                    crate::protocol::spend_limits::LimitError::SignerSetChanged {
                        got: signers.into_iter().collect(),
                        chosen: chosen.iter().copied().collect(),
                    },
                ));
            }
            if let Err(e) =
                check_statements(&statements, chosen, roster, &s.wallet.group_key, &session)
            {
                return Err(self.refused(ErrorCode::Refused, from, &s.wallet, &s.checked, e));
            }
        }
        let share = self.share(&s.wallet.group_key)?;
        let shares = match s.nonces.sign(&s.psbt, &share, &packages) {
            Ok(shares) => shares,
            Err(e) => return Err(self.refused(ErrorCode::Refused, from, &s.wallet, &s.checked, e)),
        };
        drop(share);

        let outflow = s.checked.outflow().to_sat();
        let window = if wallet_wide {
            Window::WithStatements(&statements)
        } else {
            Window::Own
        };
        self.decide(
            from,
            &s.wallet,
            &s.checked,
            &policy,
            &session,
            Some(&session),
            window,
        )?;
        tracing::info!(%session, inputs = shares.len(), outflow_sats = outflow, "signed");
        Ok(SignerToCoordinator::SignShares { shares })
    }

    /// The decision, in one transaction: (when `reservation` is given) the reservation must
    /// still be live; the window check over this signer's records (and the statements); the
    /// keyed audit record of the signature; the reservation released. That commit is the
    /// signing's one durable write; the checkpoint then advances on a background thread
    /// (synchronously, and refusing on failure, when the last background advance failed).
    /// No share may leave unless this returns `Ok`.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        from: &IdentityPublic,
        wallet: &WalletInfo,
        checked: &CheckedPsbt,
        policy: &Policy,
        session: &SessionId,
        reservation: Option<&SessionId>,
        window: Window<'_>,
    ) -> Result<(), Refusal> {
        let now = unix_now();
        let outflow = checked.outflow().to_sat();
        let gk = wallet.group_key.to_string();
        let mac = self.home.audit_key();
        let decided = self.home.db().write(|tx| {
            if let Some(r) = reservation {
                let live: Option<i64> = tx
                    .prepare_cached("SELECT expires FROM reservations WHERE session = ?1")
                    .and_then(|mut st| st.query_row([r.to_string()], |row| row.get(0)))
                    .optional()?;
                if !matches!(live, Some(e) if e > i64::try_from(now).unwrap_or(i64::MAX)) {
                    return Err(Decision::Expired);
                }
            }
            // The window is read only when there is a limit to check it against.
            if policy.daily_limit_sats.is_some() {
                let mut own = own_records(tx, &gk, now)?;
                if reservation.is_none() {
                    own.push(this_spend(checked));
                }
                let total = match window {
                    Window::WithStatements(statements) => counted_total(&own, statements.values()),
                    Window::Own => counted_total(&own, []),
                };
                policy
                    .check_window(outflow, total)
                    .map_err(Decision::Policy)?;
            }
            audit::append(
                tx,
                mac,
                event(
                    AuditKind::Signed,
                    from,
                    wallet,
                    checked,
                    format!("session {session}"),
                ),
                now,
            )?;
            if let Some(r) = reservation {
                tx.prepare_cached("DELETE FROM reservations WHERE session = ?1")
                    .and_then(|mut st| st.execute([r.to_string()]))?;
            }
            Ok(())
        });
        match decided {
            Ok(()) => {}
            Err(Decision::Policy(v)) => {
                return Err(self.refused(ErrorCode::Policy, from, wallet, checked, v))
            }
            Err(Decision::Expired) => {
                return Err(self.refused(
                    ErrorCode::Refused,
                    from,
                    wallet,
                    checked,
                    "the spend's reservation expired before round 2",
                ))
            }
            Err(Decision::Store(e)) => {
                tracing::error!(%session, error = %e, "cannot record the decision; no share released");
                return Err(refuse(
                    ErrorCode::Internal,
                    format!("cannot record the decision in the signer's store ({e}); no share was released"),
                ));
            }
        }
        // The checkpoint follows off the critical path: the decision is durable already.
        if let Err(e) = self.home.advance_checkpoint_soon(self.rng()) {
            tracing::error!(%session, error = %e, "cannot advance the checkpoint; no share released");
            return Err(refuse(
                ErrorCode::Internal,
                format!("cannot write the signer's checkpoint ({e}); no share was released"),
            ));
        }
        Ok(())
    }

    /// The request's PSBT, parsed, and this signer's share of the wallet.
    fn psbt_and_share(
        &self,
        info: &WalletInfo,
        psbt: &str,
    ) -> Result<(Psbt, crate::keys::KeyShare), Refusal> {
        let psbt = parse_psbt(psbt)?;
        let share = self.share(&info.group_key)?;
        Ok((psbt, share))
    }

    /// The PSBT of a one-round request, parsed and checked against the wallet's certified
    /// recovery policy — or the same PSBT's check kept from an earlier request of this
    /// coordinator for this wallet and epoch — and the wallet's share.
    fn checked_psbt(
        &self,
        from: &IdentityPublic,
        info: &WalletInfo,
        psbt_text: &str,
    ) -> Result<(check_cache::Checked, crate::keys::KeyShare), Refusal> {
        let key = check_cache::CheckKey::new(from, &info.group_key, info.epoch, psbt_text);
        let share = self.share(&info.group_key)?;
        if let Some(cached) = self.checks.get(&key) {
            return Ok((cached, share));
        }
        let psbt = parse_psbt(psbt_text)?;
        let recovery = certified_recovery(info, &share)?;
        let entry = std::sync::Arc::new(check_parsed(psbt, share.group(), recovery.as_ref())?);
        self.checks.put(key, std::sync::Arc::clone(&entry));
        Ok((entry, share))
    }

    /// A spare signer's preparation: the PSBT checked in the background, at the lowest
    /// priority, and kept for a one-round request that may follow
    /// ([`CoordinatorToSigner::PrepareSign`]). Answered at once.
    pub(super) fn prepare_sign(
        &self,
        from: &IdentityPublic,
        wallet: WalletRef,
        psbt_text: String,
    ) -> Result<SignerToCoordinator, Refusal> {
        self.require_state()?;
        let info = self.wallet_for(from, &wallet)?;
        let share = self.share(&info.group_key)?;
        let recovery = certified_recovery(&info, &share)?;
        let group = share.group().clone();
        drop(share);
        let key = check_cache::CheckKey::new(from, &info.group_key, info.epoch, &psbt_text);
        let started = self.checks.prepare(key, move || {
            check_parsed(parse_psbt(&psbt_text).ok()?, &group, recovery.as_ref()).ok()
        });
        tracing::debug!(wallet = %info.name, started, "preparing a PSBT check");
        Ok(SignerToCoordinator::Prepared)
    }

    /// The wallet a request names, checked: held, bound to the requester, same epoch.
    fn wallet_for(&self, from: &IdentityPublic, wallet: &WalletRef) -> Result<WalletInfo, Refusal> {
        let info = self.bound_wallet(from, &wallet.group_key)?;
        if wallet.epoch != info.epoch {
            return Err(refuse(
                ErrorCode::WrongEpoch,
                format!(
                    "this signer's share of wallet {} is at epoch {}, the request is for epoch {} (a refresh or repair was interrupted, or the coordinator's record of the wallet is out of date)",
                    info.name, info.epoch, wallet.epoch
                ),
            ));
        }
        self.require_confirmed(&info)?;
        Ok(info)
    }

    pub(super) fn preprocess<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        wallet: WalletRef,
        count: u16,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        self.require_state()?;
        let info = self.wallet_for(from, &wallet)?;
        let share = self.share(&info.group_key)?;
        let commitments = self
            .nonces
            .generate(from, &info.group_key, info.epoch, &share, count, rng)
            .map_err(|e| refuse(ErrorCode::BadRequest, e))?;
        let policy = self.wallet_policy(&info)?;
        tracing::info!(wallet = %info.name, count, "preprocessed nonces");
        let batch = CommitmentBatch::sign(self.home.identity(), from, &info.group_key, commitments);
        Ok(SignerToCoordinator::Preprocessed {
            batch,
            statements_required: policy.daily_limit_sats.is_some() && info.roster().is_some(),
        })
    }

    pub(super) fn sign_preprocessed<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        request: OneRoundRequest,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        let OneRoundRequest {
            session,
            wallet,
            psbt,
            commitments,
            nonces: ids,
            more,
        } = request;
        self.require_state()?;
        if more.len() >= MAX_SESSIONS_PER_REQUEST {
            return Err(refuse(
                ErrorCode::BadRequest,
                format!("at most {MAX_SESSIONS_PER_REQUEST} sessions in one request"),
            ));
        }
        let info = self.wallet_for(from, &wallet)?;
        let policy = self.wallet_policy(&info)?;
        if policy.daily_limit_sats.is_some() && info.roster().is_some() {
            return Err(refuse(
                ErrorCode::NeedsStatements,
                format!("wallet {} has a daily limit that holds wallet-wide: it is signed in rounds with statements, not in one round", info.name),
            ));
        }
        let sessions: Vec<(SessionId, _, Vec<NonceId>)> =
            std::iter::once((session, commitments, ids))
                .chain(
                    more.into_iter()
                        .map(|m| (m.session, m.commitments, m.nonces)),
                )
                .collect();
        // Every session's nonces leave the pool first: whatever happens next, they never
        // sign again.
        let all_ids: Vec<NonceId> = sessions.iter().flat_map(|s| s.2.iter().copied()).collect();
        let mut taken = self
            .nonces
            .take(from, &info.group_key, info.epoch, &all_ids)
            .map_err(|e| refuse(ErrorCode::UnknownNonce, e))?
            .into_iter();
        let (cached, share) = self.checked_psbt(from, &info, &psbt)?;
        let (psbt, checked) = (&cached.0, &cached.1);
        if let Err(v) = self.judge(&policy, checked, info.network) {
            return Err(self.refused(ErrorCode::Policy, from, &info, checked, v));
        }
        let chosen: BTreeSet<u16> = sessions.iter().flat_map(|s| s.1.keys().copied()).collect();
        self.check_not_removing(&info, &chosen)?;
        let mut signed = Vec::with_capacity(sessions.len());
        for (_, commitments, ids) in &sessions {
            let nonces: Vec<_> = taken.by_ref().take(ids.len()).collect();
            let packages = packages_from(checked, commitments)?;
            let signer_nonces = SignerNonces::preprocessed_checked(checked, &share, nonces)
                .map_err(|e| refuse(ErrorCode::Refused, e))?;
            match signer_nonces.sign(psbt, &share, &packages) {
                Ok(shares) => signed.push(shares),
                Err(e) => return Err(self.refused(ErrorCode::Refused, from, &info, checked, e)),
            }
        }
        // One decision for every session of the request (the same transaction).
        self.decide(from, &info, checked, &policy, &session, None, Window::Own)?;
        let count = u16::try_from(all_ids.len()).unwrap_or(u16::MAX);
        // Fresh commitments for the next session (none if the pool is full: the coordinator
        // still holds enough).
        let fresh = self
            .nonces
            .generate(from, &info.group_key, info.epoch, &share, count, rng)
            .unwrap_or_default();
        // The next answer's fresh commitments are made after this one leaves.
        self.nonces
            .refill(from, &info.group_key, info.epoch, &share, count, self.rng());
        let fresh = CommitmentBatch::sign(self.home.identity(), from, &info.group_key, fresh);
        let mut signed = signed.into_iter();
        let shares = signed.next().unwrap_or_default();
        let more: Vec<_> = signed.collect();
        tracing::info!(%session, wallet = %info.name, txid = %checked.txid(), inputs = shares.len(), further_sessions = more.len(), "signed in one round");
        Ok(SignerToCoordinator::SignedPreprocessed {
            shares,
            fresh,
            more,
        })
    }
}

/// The signing packages of a one-round session: the chosen signers' commitments (one per
/// input each) with the sighashes this signer computed.
fn packages_from(
    checked: &CheckedPsbt,
    commitments: &BTreeMap<u16, crate::protocol::roast::InputCommitments>,
) -> Result<Vec<frost::SigningPackage>, Refusal> {
    let inputs = checked.inputs().len();
    let mut by_id = BTreeMap::new();
    for (index, list) in commitments {
        if list.0.len() != inputs {
            return Err(refuse(
                ErrorCode::BadRequest,
                format!(
                    "signer {index}'s commitments are for {} inputs, the PSBT has {inputs}",
                    list.0.len()
                ),
            ));
        }
        let id = crate::frost::identifier(*index).map_err(|e| refuse(ErrorCode::BadRequest, e))?;
        by_id.insert(id, list.0.clone());
    }
    Ok(crate::psbt::rounds::signing_packages(checked, &by_id))
}

/// A one-round request's PSBT checked against the wallet's group and certified recovery
/// policy, with the PSBT: what [`check_cache`] keeps (for signing requests and spares'
/// preparations alike).
fn check_parsed(
    psbt: Psbt,
    group: &crate::frost::shares::GroupPublic,
    recovery: Option<&RecoveryPolicy>,
) -> Result<(Psbt, CheckedPsbt), Refusal> {
    let checked = crate::psbt::check_psbt_with(&psbt, group, recovery)
        .map_err(|e| refuse(ErrorCode::Refused, e))?;
    Ok((psbt, checked))
}

/// A PSBT of version 0 or 2 (BIP-0370), read into the one model every check works on.
fn parse_psbt(psbt: &str) -> Result<Psbt, Refusal> {
    crate::psbt::version::psbt_from_base64(psbt).map_err(|e| {
        refuse(
            ErrorCode::BadRequest,
            format!("malformed PSBT: {}", e.with_causes()),
        )
    })
}

/// The wallet's recovery policy from the signer's own certified record, re-verified against
/// the group of its sealed share (so an edited public record changes nothing it enforces).
/// `None` for a wallet without a recovery path, or one made before certification.
fn certified_recovery(
    info: &WalletInfo,
    share: &crate::keys::KeyShare,
) -> Result<Option<RecoveryPolicy>, Refusal> {
    match &info.keygen {
        // Nothing to enforce beyond "no script tree anywhere" (a record stripped of its
        // policy makes this signer refuse every input of the wallet: it fails closed).
        None => Ok(None),
        Some(keygen) if keygen.context.recovery.is_none() => Ok(None),
        Some(keygen) => keygen
            .verified_recovery(share.group())
            .map(Option::<&RecoveryPolicy>::cloned)
            .map_err(|e| {
                refuse(
                    ErrorCode::Internal,
                    format!(
                        "this signer's record of wallet {} does not verify: {}",
                        info.name,
                        crate::error_chain(&e)
                    ),
                )
            }),
    }
}
