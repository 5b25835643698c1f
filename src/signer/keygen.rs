//! The signer's side of a certified key generation: the messages routed here from
//! [`Signer::handle`] drive the participant typestates of [`crate::protocol::dkg`]
//! (`Participant1` → `Participant2` → `Participant3` → a certified share).
//!
//! Between two requests a session waits in the map of its own stage ([`DkgSessions`]): each
//! stage keeps its own type, and no runtime enum wraps the typestates. A request for a session
//! that waits in another stage ends that session (as a request out of order always did).

use std::collections::HashMap;
use std::time::Instant;

use rand::{CryptoRng, RngCore};

use super::home::WalletInfo;
use super::{prune, refuse, Refusal, Signer, MAX_SESSIONS};
use crate::identity::IdentityPublic;
use crate::keys::GroupKey;
use crate::message::{ErrorCode, SessionId, SignerToCoordinator};
use crate::protocol::dkg::{self, Participant1, Participant2, Participant3, ParticipantError};

/// A session waiting in one stage.
struct Held<P> {
    coordinator: IdentityPublic,
    state: P,
    started: Instant,
}

/// The key generations under way, one map per participant stage.
#[derive(Default)]
pub(super) struct DkgSessions {
    one: HashMap<SessionId, Held<Participant1>>,
    two: HashMap<SessionId, Held<Participant2>>,
    three: HashMap<SessionId, Held<Box<Participant3>>>,
}

/// A participant stage that waits in a map of [`DkgSessions`].
trait Stage: Sized {
    /// Said when a request expects this stage but finds the session in another.
    const NOT_HERE: &'static str;
    fn map(sessions: &mut DkgSessions) -> &mut HashMap<SessionId, Held<Self>>;
}

impl Stage for Participant1 {
    const NOT_HERE: &'static str = "DKG session is not in round 1";
    fn map(sessions: &mut DkgSessions) -> &mut HashMap<SessionId, Held<Self>> {
        &mut sessions.one
    }
}

impl Stage for Participant2 {
    const NOT_HERE: &'static str = "DKG session is not in round 2";
    fn map(sessions: &mut DkgSessions) -> &mut HashMap<SessionId, Held<Self>> {
        &mut sessions.two
    }
}

impl Stage for Box<Participant3> {
    const NOT_HERE: &'static str = "DKG session is not finished";
    fn map(sessions: &mut DkgSessions) -> &mut HashMap<SessionId, Held<Self>> {
        &mut sessions.three
    }
}

impl DkgSessions {
    fn len(&self) -> usize {
        self.one.len() + self.two.len() + self.three.len()
    }

    /// Drops expired sessions and, at capacity, the oldest one of any stage.
    fn prune(&mut self) {
        prune(&mut self.one, |s| s.started);
        prune(&mut self.two, |s| s.started);
        prune(&mut self.three, |s| s.started);
        if self.len() >= MAX_SESSIONS {
            let oldest = [
                self.one.iter().map(|(k, v)| (v.started, *k)).min(),
                self.two.iter().map(|(k, v)| (v.started, *k)).min(),
                self.three.iter().map(|(k, v)| (v.started, *k)).min(),
            ]
            .into_iter()
            .flatten()
            .min();
            if let Some((_, session)) = oldest {
                self.forget(&session);
            }
        }
    }

    /// Ends a session, in whichever stage it waits.
    fn forget(&mut self, session: &SessionId) {
        self.one.remove(session);
        self.two.remove(session);
        self.three.remove(session);
    }

    /// The coordinator of a session, in whichever stage it waits (a session id is in one
    /// stage at most: begin refuses an id in use).
    fn owner(&self, session: &SessionId) -> Option<IdentityPublic> {
        (self.one.get(session).map(|s| s.coordinator))
            .or_else(|| self.two.get(session).map(|s| s.coordinator))
            .or_else(|| self.three.get(session).map(|s| s.coordinator))
    }

    /// Takes the session out of stage `S` (so on any error the key generation is over for this
    /// signer). A session of another coordinator is left alone; one of this coordinator in
    /// another stage is ended.
    fn take<S: Stage>(
        &mut self,
        from: &IdentityPublic,
        session: &SessionId,
    ) -> Result<Held<S>, Refusal> {
        if self.owner(session) != Some(*from) {
            return Err(refuse(ErrorCode::UnknownSession, "unknown DKG session"));
        }
        match S::map(self).remove(session) {
            Some(held) => Ok(held),
            None => {
                self.forget(session);
                Err(refuse(ErrorCode::UnknownSession, S::NOT_HERE))
            }
        }
    }

    fn put<S: Stage>(&mut self, session: SessionId, held: Held<S>) {
        S::map(self).insert(session, held);
    }
}

impl Signer {
    fn lock_dkg(&self) -> Result<std::sync::MutexGuard<'_, DkgSessions>, Refusal> {
        self.dkg
            .lock()
            .map_err(|_| refuse(ErrorCode::Internal, "lock poisoned"))
    }

    pub(super) fn dkg_begin<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        request: dkg::Begin,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        let session = request.context.session;
        let approved = self
            .approved_peers()
            .map_err(|e| refuse(ErrorCode::Internal, e))?;
        let (state, answer) = Participant1::begin(
            request,
            &self.identity(),
            from,
            |id| approved.contains(id),
            rng,
        )
        .map_err(|e| {
            tracing::warn!(%session, error = %e, "key generation refused");
            participant_refusal(e)
        })?;
        let index = state.index();
        let mut dkg = self.lock_dkg()?;
        dkg.prune();
        if dkg.owner(&session).is_some() {
            return Err(refuse(ErrorCode::BadRequest, "session id already in use"));
        }
        dkg.put(
            session,
            Held {
                coordinator: *from,
                state,
                started: Instant::now(),
            },
        );
        tracing::info!(%session, index, "key generation started");
        Ok(SignerToCoordinator::DkgRound1(answer))
    }

    pub(super) fn dkg_round1<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        request: dkg::Round1Request,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        let session = request.session;
        let held: Held<Participant1> = self.lock_dkg()?.take(from, &session)?;
        let (next, answer) = held
            .state
            .receive_round1(request, self.home.identity(), rng)
            .map_err(participant_refusal)?;
        self.lock_dkg()?.put(
            session,
            Held {
                coordinator: held.coordinator,
                state: next,
                started: held.started,
            },
        );
        Ok(SignerToCoordinator::DkgRound2(answer))
    }

    pub(super) fn dkg_round2(
        &self,
        from: &IdentityPublic,
        request: dkg::Round2Request,
    ) -> Result<SignerToCoordinator, Refusal> {
        let session = request.session;
        let held: Held<Participant2> = self.lock_dkg()?.take(from, &session)?;
        let (next, answer) = held
            .state
            .receive_round2(request, self.home.identity())
            .map_err(|e| {
                tracing::warn!(%session, error = %e, "key generation aborted");
                participant_refusal(e)
            })?;
        self.lock_dkg()?.put(
            session,
            Held {
                coordinator: held.coordinator,
                state: Box::new(next),
                started: held.started,
            },
        );
        tracing::info!(%session, "key generation finished; share held until every certificate arrives");
        Ok(SignerToCoordinator::DkgCertified(answer))
    }

    pub(super) fn dkg_confirm<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        request: dkg::ConfirmRequest,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        let session = request.session;
        let held: Held<Box<Participant3>> = self.lock_dkg()?.take(from, &session)?;
        let certified = held.state.confirm(request).map_err(|e| {
            tracing::warn!(%session, error = %e, "certificates refused; nothing stored");
            participant_refusal(e)
        })?;
        let group = certified.share.group();
        let context = &certified.keygen.context;
        let info = WalletInfo {
            name: context.wallet.clone(),
            network: context.network,
            group_key: GroupKey::of(group),
            coordinator: held.coordinator,
            threshold: group.threshold(),
            signers: group.signers(),
            index: certified.index,
            fingerprint: Some(certified.fingerprint),
            keygen: Some(certified.keygen.clone()),
            epoch: 0,
            transitions: Vec::new(),
        };
        self.home
            .save_share(&info, &certified.share, rng)
            .map_err(|e| refuse(ErrorCode::Internal, e))?;
        tracing::info!(%session, wallet = %info.name, group_key = %info.group_key, fingerprint = %certified.fingerprint, "share stored");
        Ok(SignerToCoordinator::DkgStored(dkg::Stored {
            fingerprint: certified.fingerprint,
        }))
    }
}

/// The refusal a participant error turns into on the wire.
fn participant_refusal(e: ParticipantError) -> Refusal {
    let code = match &e {
        ParticipantError::UnapprovedPeer { .. } => ErrorCode::UnapprovedPeer,
        ParticipantError::CoordinatorMismatch { .. } => ErrorCode::Unauthorized,
        ParticipantError::Context(_)
        | ParticipantError::NotInRoster(_)
        | ParticipantError::Session => ErrorCode::BadRequest,
        _ => ErrorCode::Refused,
    };
    refuse(code, crate::error_chain(&e))
}
