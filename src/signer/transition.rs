//! The signer's side of epoch transitions (refresh, removal, repair, enrolment): routes each
//! request to the transport-free [`Participant`] of [`crate::protocol::lifecycle`], stores its
//! result pending at *prepare* (the old share untouched) with a signed prepared vote, signs
//! at most one of ready and abort (stored before it leaves), and applies only a decision
//! certificate of the other members' votes: commit (the old share erased) or abort (the
//! pending share forgotten). The coordinator's word decides nothing. One open transition per
//! wallet, in memory or pending; every message is bound to its session, whose context binds
//! wallet and epoch; session ids are never reused.

use std::collections::HashMap;
use std::time::Instant;

use rand::{CryptoRng, RngCore};

use super::home::{HomeError, StoredVotes, WalletInfo};
use super::{prune, refuse, Refusal, Signer};
use crate::identity::IdentityPublic;
use crate::keys::GroupKey;
use crate::message::{ErrorCode, SessionId, SignerToCoordinator};
use crate::protocol::lifecycle::{
    decide_vote, Ballot, CertifiedTransition, DecidedStatus, Decision, DecisionCertificate,
    Holding, Joining, MemberStatus, Participant, PendingStatus, SignedVote, TransitionAnswer,
    TransitionContext, TransitionError, TransitionRequest, VoteKind, WalletState,
};

/// A transition between its requests (in memory only).
pub(super) struct TransitionSession {
    coordinator: IdentityPublic,
    wallet: GroupKey,
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
    pub(super) fn current(
        &self,
        info: &WalletInfo,
    ) -> Result<(WalletState, crate::keys::KeyShare), Refusal> {
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
            } => self.transition_prepare(from, session, certificates, rng),
            TransitionRequest::Vote {
                session,
                want,
                prepared,
                record,
            } => self.transition_vote(from, session, want, &prepared, record.as_deref(), rng),
            TransitionRequest::Decide {
                session,
                certificate,
            } => self.transition_decide(from, session, &certificate, rng),
            TransitionRequest::Cancel { session } => {
                let mut m = self.lock_transitions()?;
                match m.get(&session) {
                    Some(s) if s.coordinator == *from => {
                        m.remove(&session);
                        tracing::info!(%session, "transition cancelled before prepare");
                        Ok(answer(TransitionAnswer::Cancelled))
                    }
                    _ => Err(refuse(
                        ErrorCode::UnknownSession,
                        "no transition of this coordinator to cancel here (a prepared transition ends only with a decision certificate)",
                    )),
                }
            }
            TransitionRequest::Status { wallet } => self.transition_status(from, wallet),
            TransitionRequest::Farewell {
                record,
                certificate,
            } => self.transition_farewell(from, &record, &certificate, rng),
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

    /// Whether this member holds an undecided transition of `wallet` (pending on disk, or
    /// open in memory and not expired).
    pub(super) fn has_open_transition(&self, wallet: &GroupKey) -> Result<bool, Refusal> {
        if self.home.pending_transition(wallet)?.is_some() {
            return Ok(true);
        }
        let mut m = self.lock_transitions()?;
        prune(&mut m, |s| s.started);
        Ok(m.values().any(|s| s.wallet == *wallet))
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
        let wallet = context.wallet;
        if *from != context.coordinator {
            return Err(refuse(
                ErrorCode::WrongCoordinator,
                "a transition begins only at the request of the coordinator its context names",
            ));
        }
        if let Some((other, _)) = self.home.pending_transition(&context.wallet)? {
            return Err(refuse(
                ErrorCode::Refused,
                format!("transition {other} of this wallet is pending here; it ends only with a decision certificate of the members' votes"),
            ));
        }
        if self.home.transition_votes(&session.to_string())?.is_some() {
            return Err(refuse(
                ErrorCode::BadRequest,
                "this transition session was used before; session ids are never reused",
            ));
        }
        let approved = self
            .approved_peers()
            .map_err(|e| refuse(ErrorCode::Internal, e))?;
        let held = self.home.wallet(&context.wallet.to_string()).ok();
        let (participant, answer_, base) = match (held, joining) {
            (Some(info), _) => {
                self.check_bound(from, &info)?;
                self.check_no_former(&info, &context)?;
                if info
                    .transitions
                    .iter()
                    .any(|t| t.context.session == session)
                {
                    return Err(refuse(
                        ErrorCode::BadRequest,
                        "this transition session was used before; session ids are never reused",
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
                // The name and the creating coordinator come from the certified key
                // generation, not from the (uncertified) `Joining` fields.
                let certified = &joining.history.keygen.context;
                if *from != certified.coordinator || joining.creator != certified.coordinator {
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
                    name: joining.history.keygen.context.wallet.clone(),
                    network: joining.network,
                    group_key: GroupKey::of(&state.group),
                    coordinator: joining.history.keygen.context.coordinator,
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
        if m.values().any(|s| s.wallet == wallet) {
            return Err(refuse(
                ErrorCode::Refused,
                "another transition of this wallet is open on this signer; one at a time (it expires, or its coordinator cancels it)",
            ));
        }
        tracing::info!(%session, kind = %participant.context().kind, index = participant.index(), "transition started");
        m.insert(
            session,
            TransitionSession {
                coordinator: *from,
                wallet,
                participant,
                base,
                started: Instant::now(),
            },
        );
        Ok(answer(answer_))
    }

    fn transition_prepare<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        session: SessionId,
        certificates: std::collections::BTreeMap<u16, crate::protocol::dkg::Certificate>,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        let text = session.to_string();
        let s = match self.take_transition(from, &session) {
            Ok(s) => s,
            Err(refusal) => {
                // A repeated prepare after a lost answer: the stored vote again.
                return match self.home.transition_votes(&text)? {
                    Some(StoredVotes {
                        prepared: Some(vote),
                        certificate: None,
                        ..
                    }) => Ok(answer(TransitionAnswer::Prepared { vote })),
                    _ => Err(refusal),
                };
            }
        };
        let prepared = s
            .participant
            .prepare(session, certificates)
            .map_err(transition_refusal)?;
        let record = prepared.record;
        // The wallet may have moved since Begin (another transition decided meanwhile).
        if let Ok(now) = self.home.wallet(&record.context.wallet.to_string()) {
            let (state, _) = self.current(&now)?;
            if state.epoch != record.context.from_epoch || state.hash() != record.context.from_state
            {
                return Err(refuse(
                    ErrorCode::WrongEpoch,
                    format!(
                        "the transition starts from epoch {} but this signer's wallet is now at epoch {}",
                        record.context.from_epoch, state.epoch
                    ),
                ));
            }
        }
        let me = self.home.identity();
        let voter = self.new_index(&record)?;
        let vote = Ballot::new(&record.context, &record.state).sign(me, VoteKind::Prepared, voter);
        let mut info = s.base;
        info.epoch = record.state.epoch;
        info.signers = record.state.roster.len();
        info.index = voter;
        info.transitions.push(record);
        self.home
            .prepare_transition(&text, &info, &prepared.share, &vote, rng)
            .map_err(|e| refuse(ErrorCode::Refused, e))?;
        tracing::info!(%session, wallet = %info.name, epoch = info.epoch, "transition prepared; the new share is pending");
        Ok(answer(TransitionAnswer::Prepared { vote }))
    }

    /// This signer's index in the roster a transition leads to.
    fn new_index(&self, record: &CertifiedTransition) -> Result<u16, Refusal> {
        record
            .state
            .roster
            .index_of(&self.identity())
            .ok_or_else(|| refuse(ErrorCode::Refused, "this signer is not in the new roster"))
    }

    /// The pending record of transition `session`, whose votes `stored` this member read,
    /// checking that `from` may speak for the wallet (any coordinator this signer allows for
    /// it; the creator for a newcomer) and that it is undecided.
    fn pending_of(
        &self,
        from: &IdentityPublic,
        session: &SessionId,
        stored: Option<&StoredVotes>,
    ) -> Result<CertifiedTransition, Refusal> {
        let votes = stored.ok_or_else(|| {
            refuse(
                ErrorCode::UnknownSession,
                format!("no transition {session} was prepared on this signer"),
            )
        })?;
        self.check_allowed(from, &votes.group_key)?;
        if votes.certificate.is_some() {
            return Err(refuse(
                ErrorCode::UnknownSession,
                format!("transition {session} is already decided on this signer"),
            ));
        }
        let (pending, info) = self
            .home
            .pending_info(&votes.group_key)?
            .ok_or_else(|| refuse(ErrorCode::UnknownSession, "no pending transition here"))?;
        info.transitions
            .last()
            .cloned()
            .filter(|_| pending == session.to_string())
            .ok_or_else(|| {
                refuse(
                    ErrorCode::UnknownSession,
                    format!("transition {pending} is pending here, not {session}"),
                )
            })
    }

    /// `from` may act on the wallet: any coordinator the signer allows for a wallet it holds;
    /// for a newcomer's pending wallet, the coordinator that created it.
    fn check_allowed(&self, from: &IdentityPublic, group_key: &GroupKey) -> Result<(), Refusal> {
        if let Ok(info) = self.home.wallet(&group_key.to_string()) {
            return self.check_bound(from, &info);
        }
        match self.home.pending_info(group_key)? {
            Some((_, info)) if info.coordinator == *from => Ok(()),
            _ => Err(refuse(
                ErrorCode::WrongCoordinator,
                "this coordinator is not allowed for the wallet",
            )),
        }
    }

    fn transition_vote<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        session: SessionId,
        want: VoteKind,
        prepared: &std::collections::BTreeMap<u16, SignedVote>,
        given: Option<&CertifiedTransition>,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        let text = session.to_string();
        let stored = self.home.transition_votes(&text)?;
        if let Some(v) = &stored {
            if let Some(standing) = &v.standing {
                self.check_allowed(from, &v.group_key)?;
                return Ok(answer(TransitionAnswer::Voted {
                    vote: standing.clone(),
                }));
            }
        }
        let me = self.home.identity();
        if stored.is_none() && want == VoteKind::Abort {
            // Never prepared here: an abort vote on the record given, checked against this
            // member's own state; the session can then never be prepared here.
            let record = given.ok_or_else(|| {
                refuse(
                    ErrorCode::UnknownSession,
                    format!("no transition {session} was prepared on this signer (an abort vote needs its record)"),
                )
            })?;
            if record.context.session != session {
                return Err(refuse(
                    ErrorCode::BadRequest,
                    "the record is of another session",
                ));
            }
            let info = self.bound_wallet(from, &record.context.wallet)?;
            let (state, _) = self.current(&info)?;
            record.verify(&state).map_err(|e| {
                refuse(
                    ErrorCode::Refused,
                    format!("the transition's record does not check out: {e}"),
                )
            })?;
            let voter = self.new_index(record)?;
            let vote = Ballot::new(&record.context, &record.state).sign(me, VoteKind::Abort, voter);
            let held = self
                .home
                .record_unprepared_abort(&text, &record.context.wallet, &vote, rng)
                .map_err(|e| refuse(ErrorCode::Internal, e))?;
            if let Ok(mut m) = self.lock_transitions() {
                m.remove(&session);
            }
            tracing::info!(%session, "transition vote: abort, never prepared");
            return Ok(answer(TransitionAnswer::Voted { vote: held }));
        }
        let record = self.pending_of(from, &session, stored.as_ref())?;
        let ballot = Ballot::new(&record.context, &record.state);
        let voter = self.new_index(&record)?;
        let (vote, fresh) = decide_vote(&ballot, me, voter, None, want, prepared)
            .map_err(|e| refuse(ErrorCode::Refused, e))?;
        let held = if fresh {
            self.home
                .record_vote(&text, &vote, rng)
                .map_err(|e| refuse(ErrorCode::Internal, e))?
        } else {
            vote
        };
        tracing::info!(%session, vote = %held.kind, "transition vote");
        Ok(answer(TransitionAnswer::Voted { vote: held }))
    }

    fn transition_decide<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        session: SessionId,
        certificate: &DecisionCertificate,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        let text = session.to_string();
        let stored = self.home.transition_votes(&text)?.ok_or_else(|| {
            refuse(
                ErrorCode::UnknownSession,
                format!("no transition {session} was prepared on this signer"),
            )
        })?;
        if let Some(applied) = &stored.certificate {
            // A repeated decision: answered again, with the one applied.
            self.check_allowed(from, &stored.group_key)?;
            if applied.decision != certificate.decision {
                return Err(refuse(
                    ErrorCode::Refused,
                    format!(
                        "transition {session} was decided {} here; a {} certificate cannot exist beside it",
                        applied.decision, certificate.decision
                    ),
                ));
            }
            let epoch = self
                .home
                .wallet(&stored.group_key.to_string())
                .map(|w| w.epoch)
                .unwrap_or(0);
            return Ok(answer(TransitionAnswer::Decided {
                decision: applied.decision,
                epoch,
            }));
        }
        let record = self.pending_of(from, &session, Some(&stored))?;
        let ballot = Ballot::new(&record.context, &record.state);
        let decision = ballot.check_certificate(certificate).map_err(|e| {
            refuse(
                ErrorCode::Refused,
                format!("the decision certificate is refused: {e}"),
            )
        })?;
        let group_key = record.context.wallet;
        let epoch = match decision {
            Decision::Commit => {
                if let Ok(now) = self.home.wallet(&group_key.to_string()) {
                    if now.epoch != record.context.from_epoch {
                        return Err(refuse(
                            ErrorCode::WrongEpoch,
                            format!(
                                "the transition leads from epoch {} but this signer is at epoch {}",
                                record.context.from_epoch, now.epoch
                            ),
                        ));
                    }
                }
                let epoch = self
                    .home
                    .commit_transition(&group_key, &text, certificate, rng)?
                    .ok_or_else(|| {
                        refuse(ErrorCode::UnknownSession, "no such pending transition")
                    })?;
                tracing::info!(%session, %group_key, epoch, "transition committed on a commit certificate; the previous share is erased");
                epoch
            }
            Decision::Abort => {
                self.home
                    .abort_transition(&group_key, &text, certificate, rng)?;
                tracing::info!(%session, %group_key, "transition aborted on an abort certificate; the pending share is forgotten");
                record.context.from_epoch
            }
        };
        Ok(answer(TransitionAnswer::Decided { decision, epoch }))
    }

    fn transition_status(
        &self,
        from: &IdentityPublic,
        wallet: GroupKey,
    ) -> Result<SignerToCoordinator, Refusal> {
        let held = self.home.wallet(&wallet.to_string()).ok();
        let pending = self.home.pending_info(&wallet)?;
        if held.is_none() && pending.is_none() {
            return Err(refuse(
                ErrorCode::UnknownWallet,
                format!("this signer holds no wallet {wallet}"),
            ));
        }
        self.check_allowed(from, &wallet)?;
        let (epoch, state) = match &held {
            Some(info) => {
                let (state, _) = self.current(info)?;
                (Some(info.epoch), Some(state.hash()))
            }
            None => (None, None),
        };
        let pending = match pending {
            Some((session, info)) => {
                let votes = self.home.transition_votes(&session)?;
                match (info.transitions.last().cloned(), votes) {
                    (
                        Some(record),
                        Some(StoredVotes {
                            prepared: Some(prepared),
                            standing,
                            ..
                        }),
                    ) => Some(PendingStatus {
                        record,
                        prepared,
                        standing,
                    }),
                    _ => None,
                }
            }
            None => None,
        };
        let last = match self.home.last_decided(&wallet)? {
            Some((session, v)) => match (parse_session(&session), v.certificate) {
                (Some(session), Some(certificate)) => {
                    let transitions = v
                        .record
                        .as_deref()
                        .and_then(|r| serde_json::from_str::<WalletInfo>(r).ok())
                        .map(|i| i.transitions)
                        .unwrap_or_default();
                    Some(DecidedStatus {
                        session,
                        certificate,
                        transitions,
                    })
                }
                _ => None,
            },
            None => None,
        };
        Ok(answer(TransitionAnswer::Status(Box::new(MemberStatus {
            epoch,
            state,
            pending,
            last,
        }))))
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
