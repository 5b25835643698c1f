//! The signer's side of epoch transitions (refresh, removal, repair, enrolment): routes each
//! request to the transport-free [`Participant`] of [`crate::protocol::lifecycle`], and stores
//! its result in two phases — pending at *prepare* (the old share untouched), current at
//! *commit* (the old share erased).

use std::collections::HashMap;
use std::time::Instant;

use rand::{CryptoRng, RngCore};

use super::home::{HomeError, WalletInfo};
use super::{prune, refuse, Refusal, Signer};
use crate::identity::IdentityPublic;
use crate::keys::GroupKey;
use crate::message::{ErrorCode, SessionId, SignerToCoordinator};
use crate::protocol::lifecycle::{
    Holding, Joining, Participant, TransitionAnswer, TransitionContext, TransitionError,
    TransitionRequest, WalletState,
};

/// A transition between its requests (in memory only).
pub(super) struct TransitionSession {
    coordinator: IdentityPublic,
    participant: Participant,
    /// The wallet record this member will hold after the transition.
    base: WalletInfo,
    started: Instant,
}

fn transition_refusal(e: TransitionError) -> Refusal {
    let code = match &e {
        TransitionError::UnapprovedPeer { .. } => ErrorCode::UnapprovedPeer,
        TransitionError::WrongState { .. } => ErrorCode::WrongEpoch,
        TransitionError::Session => ErrorCode::UnknownSession,
        _ => ErrorCode::Refused,
    };
    refuse(code, crate::error_chain(&e))
}

fn answer(a: TransitionAnswer) -> SignerToCoordinator {
    SignerToCoordinator::Transition(a)
}

impl Signer {
    fn lock_transitions(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, HashMap<SessionId, TransitionSession>>, Refusal> {
        self.transitions
            .lock()
            .map_err(|_| refuse(ErrorCode::Internal, "lock poisoned"))
    }

    /// This signer's current state of a wallet and its share.
    fn current(&self, info: &WalletInfo) -> Result<(WalletState, crate::keys::KeyShare), Refusal> {
        let share = self.share(&info.group_key)?;
        let roster = info.roster().cloned().ok_or_else(|| {
            refuse(
                ErrorCode::Refused,
                "this wallet predates certified key generation: its shares cannot be refreshed or repaired (migrate it to a new wallet)",
            )
        })?;
        Ok((
            WalletState {
                epoch: info.epoch,
                roster,
                group: share.group().clone(),
            },
            share,
        ))
    }

    pub(super) fn transition<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        request: TransitionRequest,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        match request {
            TransitionRequest::Begin { context, joining } => {
                self.transition_begin(from, context, joining, rng)
            }
            TransitionRequest::Prepare {
                session,
                certificates,
            } => {
                let s = self.take_transition(from, &session)?;
                let prepared = s
                    .participant
                    .prepare(session, certificates)
                    .map_err(transition_refusal)?;
                let record = prepared.record;
                let mut info = s.base;
                info.epoch = record.state.epoch;
                info.signers = record.state.roster.len();
                info.index = record
                    .state
                    .roster
                    .index_of(&self.identity())
                    .unwrap_or(info.index);
                info.transitions.push(record);
                self.home
                    .prepare_transition(&session.to_string(), &info, &prepared.share, rng)
                    .map_err(|e| refuse(ErrorCode::Internal, e))?;
                tracing::info!(%session, wallet = %info.name, epoch = info.epoch, "transition prepared; the new share is pending");
                Ok(answer(TransitionAnswer::Prepared))
            }
            TransitionRequest::Commit { session } => self.transition_commit(from, session, rng),
            TransitionRequest::Abort { session } => {
                if let Ok(mut m) = self.lock_transitions() {
                    m.remove(&session);
                }
                let mut removed = false;
                for w in self
                    .home
                    .wallets()
                    .map_err(|e| refuse(ErrorCode::Internal, e))?
                {
                    removed |= self
                        .home
                        .abort_transition(&w.group_key, &session.to_string(), rng)
                        .map_err(|e| refuse(ErrorCode::Internal, e))?;
                }
                removed |= self.abort_newcomer(&session, rng)?;
                tracing::info!(%session, removed, "transition aborted");
                Ok(answer(TransitionAnswer::Aborted))
            }
            TransitionRequest::Status { wallet } => {
                let info = self
                    .home
                    .wallet(&wallet.to_string())
                    .map_err(|e| refuse(ErrorCode::UnknownWallet, e))?;
                self.check_bound(from, &info)?;
                let (state, _) = self.current(&info)?;
                let pending = self
                    .home
                    .pending_transition(&wallet)
                    .map_err(|e| refuse(ErrorCode::Internal, e))?
                    .and_then(|(s, e)| parse_session(&s).map(|s| (s, e)));
                Ok(answer(TransitionAnswer::Status {
                    epoch: info.epoch,
                    state: state.hash(),
                    pending,
                }))
            }
            step => {
                let session = match &step {
                    TransitionRequest::RefreshRound1 { session, .. }
                    | TransitionRequest::RefreshRound2 { session, .. }
                    | TransitionRequest::RepairDeltas { session, .. }
                    | TransitionRequest::RepairSigmas { session, .. }
                    | TransitionRequest::Certify { session } => *session,
                    _ => {
                        return Err(refuse(
                            ErrorCode::BadRequest,
                            "unexpected transition request",
                        ))
                    }
                };
                // Taken out: on an error the transition is over for this member.
                let mut s = self.take_transition(from, &session)?;
                let reply = s
                    .participant
                    .step(step, self.home.identity(), rng)
                    .map_err(|e| {
                        tracing::warn!(%session, error = %e, "transition aborted");
                        transition_refusal(e)
                    })?;
                self.lock_transitions()?.insert(session, s);
                Ok(answer(reply))
            }
        }
    }

    fn take_transition(
        &self,
        from: &IdentityPublic,
        session: &SessionId,
    ) -> Result<TransitionSession, Refusal> {
        let mut m = self.lock_transitions()?;
        match m.remove(session) {
            Some(s) if s.coordinator == *from => Ok(s),
            Some(s) => {
                m.insert(*session, s);
                Err(refuse(
                    ErrorCode::UnknownSession,
                    "unknown transition session",
                ))
            }
            None => Err(refuse(
                ErrorCode::UnknownSession,
                "unknown transition session (expired, finished, or the signer restarted)",
            )),
        }
    }

    fn transition_begin<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        context: TransitionContext,
        joining: Option<Joining>,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        let session = context.session;
        let approved = self
            .approved_peers()
            .map_err(|e| refuse(ErrorCode::Internal, e))?;
        let held = self.home.wallet(&context.wallet.to_string()).ok();
        let (participant, answer_, base) = match (held, joining) {
            (Some(info), _) => {
                self.check_bound(from, &info)?;
                if let Some((other, _)) = self
                    .home
                    .pending_transition(&info.group_key)
                    .map_err(|e| refuse(ErrorCode::Internal, e))?
                {
                    return Err(refuse(
                        ErrorCode::Refused,
                        format!("transition {other} of this wallet is pending; the coordinator must commit or abort it first"),
                    ));
                }
                let (state, share) = self.current(&info)?;
                let (p, a) = Participant::begin(
                    context,
                    self.home.identity(),
                    Holding {
                        state: &state,
                        share: Some(&share),
                    },
                    |id| approved.contains(id),
                    rng,
                )
                .map_err(|e| {
                    tracing::warn!(%session, error = %e, "transition refused");
                    transition_refusal(e)
                })?;
                (p, a, info)
            }
            (None, Some(joining)) => {
                if *from != joining.creator {
                    return Err(refuse(
                        ErrorCode::WrongCoordinator,
                        "a new member joins a wallet only at the request of the coordinator that created it",
                    ));
                }
                let state = joining.history.verify().map_err(|e| {
                    refuse(
                        ErrorCode::Refused,
                        format!("the wallet's history does not check out: {e}"),
                    )
                })?;
                if GroupKey::of(&state.group) != context.wallet {
                    return Err(refuse(
                        ErrorCode::Refused,
                        "the history is another wallet's",
                    ));
                }
                let (p, a) = Participant::begin(
                    context,
                    self.home.identity(),
                    Holding {
                        state: &state,
                        share: None,
                    },
                    |id| approved.contains(id),
                    rng,
                )
                .map_err(|e| {
                    tracing::warn!(%session, error = %e, "joining refused");
                    transition_refusal(e)
                })?;
                let keygen = &joining.history.keygen;
                let base = WalletInfo {
                    name: joining.name.clone(),
                    network: joining.network,
                    group_key: GroupKey::of(&state.group),
                    coordinator: joining.creator,
                    threshold: state.group.threshold(),
                    signers: state.roster.len(),
                    index: p.index(),
                    fingerprint: keygen.fingerprint().ok(),
                    keygen: Some(keygen.clone()),
                    epoch: state.epoch,
                    transitions: joining.history.transitions.clone(),
                };
                (p, a, base)
            }
            (None, None) => {
                return Err(refuse(
                    ErrorCode::UnknownWallet,
                    format!("this signer holds no wallet {}", context_wallet(&session)),
                ))
            }
        };
        let mut m = self.lock_transitions()?;
        prune(&mut m, |s| s.started);
        if m.contains_key(&session) {
            return Err(refuse(ErrorCode::BadRequest, "session id already in use"));
        }
        tracing::info!(%session, kind = %participant.context().kind, index = participant.index(), "transition started");
        m.insert(
            session,
            TransitionSession {
                coordinator: *from,
                participant,
                base,
                started: Instant::now(),
            },
        );
        Ok(answer(answer_))
    }

    fn transition_commit<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        session: SessionId,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        let text = session.to_string();
        for info in self
            .home
            .wallets()
            .map_err(|e| refuse(ErrorCode::Internal, e))?
        {
            // Already committed (a repeated commit after a lost answer).
            if info
                .transitions
                .last()
                .is_some_and(|t| t.context.session == session)
            {
                return Ok(answer(TransitionAnswer::Committed { epoch: info.epoch }));
            }
            if let Some((pending, _)) = self
                .home
                .pending_transition(&info.group_key)
                .map_err(|e| refuse(ErrorCode::Internal, e))?
            {
                if pending == text {
                    self.check_bound(from, &info)?;
                    return self.commit_pending(&info.group_key, &text, rng);
                }
            }
        }
        // A newcomer: its pending wallet is not listed yet.
        if let Some(gk) = self.newcomer_pending(&text)? {
            return self.commit_pending(&gk, &text, rng);
        }
        Err(refuse(
            ErrorCode::UnknownSession,
            format!("no transition {session} is pending on this signer"),
        ))
    }

    fn commit_pending<R: RngCore + CryptoRng>(
        &self,
        group_key: &GroupKey,
        session: &str,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        match self
            .home
            .commit_transition(
                group_key,
                session,
                "transition committed by the coordinator",
                rng,
            )
            .map_err(|e| refuse(ErrorCode::Internal, e))?
        {
            Some(epoch) => {
                tracing::info!(%session, %group_key, epoch, "transition committed; the previous share is erased");
                Ok(answer(TransitionAnswer::Committed { epoch }))
            }
            None => Err(refuse(
                ErrorCode::UnknownSession,
                "no such pending transition",
            )),
        }
    }

    fn newcomer_pending(&self, session: &str) -> Result<Option<GroupKey>, Refusal> {
        let row: Option<String> = self
            .home
            .db()
            .read(|c| {
                use bdk_wallet::rusqlite::OptionalExtension;
                c.query_row(
                    "SELECT group_key FROM pending WHERE session = ?1",
                    [session],
                    |r| r.get(0),
                )
                .optional()
            })
            .map_err(|e| refuse(ErrorCode::Internal, e))?;
        Ok(row.and_then(|g| g.parse().ok()))
    }

    fn abort_newcomer<R: RngCore + CryptoRng>(
        &self,
        session: &SessionId,
        rng: &mut R,
    ) -> Result<bool, Refusal> {
        let text = session.to_string();
        match self.newcomer_pending(&text)? {
            Some(gk) => self
                .home
                .abort_transition(&gk, &text, rng)
                .map_err(|e| refuse(ErrorCode::Internal, e)),
            None => Ok(false),
        }
    }
}

fn parse_session(text: &str) -> Option<SessionId> {
    let mut b = [0u8; 16];
    hex::decode_to_slice(text, &mut b).ok()?;
    Some(SessionId(b))
}

fn context_wallet(session: &SessionId) -> String {
    format!("(transition {session})")
}

impl From<HomeError> for Refusal {
    fn from(e: HomeError) -> Self {
        refuse(ErrorCode::Internal, e)
    }
}
