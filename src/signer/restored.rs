//! A signer restored from a backup (`ckm signer restore`): what it refuses until the
//! wallet's current epoch is confirmed, and the limit window it counts as spent.
//!
//! - **Epoch**: a restored wallet signs nothing until fresh, challenge-answered statements
//!   of `n − t + 1` other members confirm its epoch
//!   ([`crate::protocol::lifecycle::confirm`]); the confirmation is an audit record
//!   (`confirmed`), so a restart keeps it. A statement of a later epoch refuses for good:
//!   the restored share is superseded and must be repaired.
//! - **Limit window**: a restored signer does not know what it signed between the backup
//!   and the restore, so for one window (24 hours) after the restore it counts a wallet's
//!   daily limit as spent: a wallet with a daily limit signs no spend on this signer until
//!   the window ends. Wallets without a daily limit are not held back by this rule.
//!
//! The restore's time and the confirmations are read from the keyed audit chain, which the
//! sealed checkpoint protects from deletion and rollback.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::{CryptoRng, RngCore};

use super::audit::{self, AuditEvent, AuditKind};
use super::home::WalletInfo;
use super::policy::{Policy, PolicyViolation};
use super::{refuse, Refusal, Signer, WINDOW_SECS};
use crate::auth::unix_now;
use crate::identity::IdentityPublic;
use crate::keys::GroupKey;
use crate::message::{ErrorCode, SignerToCoordinator, MAX_EPOCH_STATEMENTS};
use crate::protocol::lifecycle::{confirm, Challenge, EpochStatement, SignedStatement};

/// How long a restored signer keeps a challenge.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);
/// Most challenges kept at once (one per wallet).
const MAX_CHALLENGES: usize = 1_000;

/// What a restored signer keeps in memory: the restore record, the wallets confirmed since
/// (a cache of the audit chain) and the open challenges.
#[derive(Debug, Default)]
pub(super) struct RestoreState {
    /// Sequence number and time of the `restored` record, if the home was restored.
    at: Option<(i64, u64)>,
    confirmed: BTreeSet<GroupKey>,
    challenges: std::collections::HashMap<GroupKey, (Challenge, Instant)>,
}

impl RestoreState {
    pub(super) fn new(at: Option<(i64, u64)>) -> Self {
        RestoreState {
            at,
            ..RestoreState::default()
        }
    }
}

impl Signer {
    fn restore_state(&self) -> Result<std::sync::MutexGuard<'_, RestoreState>, Refusal> {
        self.restored
            .lock()
            .map_err(|_| refuse(ErrorCode::Internal, "lock poisoned"))
    }

    /// Refuses to sign for a wallet restored from a backup whose epoch is not confirmed yet.
    pub(super) fn require_confirmed(&self, info: &WalletInfo) -> Result<(), Refusal> {
        let restored = {
            let state = self.restore_state()?;
            match state.at {
                None => return Ok(()),
                Some(_) if state.confirmed.contains(&info.group_key) => return Ok(()),
                Some((seq, _)) => seq,
            }
        };
        let gk = info.group_key.to_string();
        let unconfirmed = self
            .home
            .db()
            .read(|c| audit::unconfirmed_since(c, &gk, restored))
            .map_err(|e| refuse(ErrorCode::Internal, e))?;
        if unconfirmed {
            return Err(refuse(
                ErrorCode::Unconfirmed,
                format!(
                    "this signer was restored from a backup and signs for wallet {} only once the other members confirm its epoch {}: run `ckm wallet confirm-restored --signer {}` on the coordinator",
                    info.name, info.epoch, info.index
                ),
            ));
        }
        self.restore_state()?.confirmed.insert(info.group_key);
        Ok(())
    }

    /// The restore's rule for the daily limit: counted as spent for one window after the
    /// restore.
    pub(super) fn check_restored_window(&self, policy: &Policy) -> Result<(), PolicyViolation> {
        let Some(limit) = policy.daily_limit_sats else {
            return Ok(());
        };
        let at = self.restored.lock().ok().and_then(|s| s.at);
        match at {
            Some((_, time)) if unix_now() < time.saturating_add(WINDOW_SECS) => {
                Err(PolicyViolation::Restored {
                    until: time.saturating_add(WINDOW_SECS),
                    limit,
                })
            }
            _ => Ok(()),
        }
    }

    /// Checks a spend against the policy and the restore's window rule.
    pub(super) fn judge(
        &self,
        policy: &Policy,
        checked: &crate::psbt::CheckedPsbt,
        network: bitcoin::Network,
    ) -> Result<(), PolicyViolation> {
        policy.check_spend(checked, network)?;
        self.check_restored_window(policy)
    }

    pub(super) fn epoch_challenge<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        wallet: &GroupKey,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        let info = self.bound_wallet(from, wallet)?;
        let confirmed = self.require_confirmed(&info).is_ok();
        let challenge = Challenge::random(rng);
        let mut state = self.restore_state()?;
        state
            .challenges
            .retain(|_, (_, at)| at.elapsed() < CHALLENGE_TTL);
        if state.challenges.len() >= MAX_CHALLENGES && !state.challenges.contains_key(wallet) {
            return Err(refuse(
                ErrorCode::BadRequest,
                "too many open epoch challenges; try again in a few minutes",
            ));
        }
        state
            .challenges
            .insert(*wallet, (challenge, Instant::now()));
        Ok(SignerToCoordinator::EpochChallenge {
            challenge,
            epoch: info.epoch,
            confirmed,
        })
    }

    pub(super) fn epoch_statement(
        &self,
        from: &IdentityPublic,
        wallet: &GroupKey,
        challenge: Challenge,
    ) -> Result<SignerToCoordinator, Refusal> {
        let info = self.bound_wallet(from, wallet)?;
        let (state, share) = self.current(&info)?;
        drop(share);
        let pending = self.has_open_transition(wallet)?;
        let statement = EpochStatement {
            group_key: *wallet,
            member: info.index,
            epoch: state.epoch,
            state: state.hash(),
            pending,
            challenge,
        };
        tracing::info!(wallet = %info.name, epoch = state.epoch, pending, "stated the epoch for a restored member");
        Ok(SignerToCoordinator::EpochStatement(
            statement.sign(self.home.identity()),
        ))
    }

    pub(super) fn confirm_epoch<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        wallet: &GroupKey,
        statements: &[SignedStatement],
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        if statements.len() > MAX_EPOCH_STATEMENTS {
            return Err(refuse(
                ErrorCode::BadRequest,
                format!(
                    "{} statements, at most {MAX_EPOCH_STATEMENTS}",
                    statements.len()
                ),
            ));
        }
        let info = self.bound_wallet(from, wallet)?;
        let challenge = match self.restore_state()?.challenges.remove(wallet) {
            Some((c, at)) if at.elapsed() < CHALLENGE_TTL => c,
            _ => {
                return Err(refuse(
                    ErrorCode::UnknownSession,
                    "no open epoch challenge for this wallet (it expired after 5 minutes or was used): ask for a new one",
                ))
            }
        };
        let (state, share) = self.current(&info)?;
        drop(share);
        let confirmed = match confirm(&state, info.index, &challenge, statements) {
            Ok(c) => c,
            Err(e) => {
                let event = AuditEvent {
                    kind: AuditKind::Refused,
                    ..AuditEvent::wallet(
                        info.name.clone(),
                        info.group_key,
                        format!("epoch confirmation refused: {e}"),
                    )
                    .by(from)
                };
                if let Err(err) = self.home.record(event, rng) {
                    tracing::error!(error = %err, "cannot record a refusal in the audit records");
                }
                return Err(refuse(ErrorCode::Refused, e));
            }
        };
        let event = AuditEvent {
            kind: AuditKind::Confirmed,
            ..AuditEvent::wallet(
                info.name.clone(),
                info.group_key,
                format!(
                    "epoch {} confirmed by the statements of members {:?}",
                    confirmed.epoch(),
                    confirmed.members()
                ),
            )
            .by(from)
        };
        self.home
            .record(event, rng)
            .map_err(|e| refuse(ErrorCode::Internal, e))?;
        self.restore_state()?.confirmed.insert(info.group_key);
        tracing::info!(wallet = %info.name, epoch = confirmed.epoch(), "restored epoch confirmed");
        Ok(SignerToCoordinator::EpochConfirmed {
            epoch: confirmed.epoch(),
            members: confirmed.members().to_vec(),
        })
    }
}
