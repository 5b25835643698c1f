//! The co-signer ("secret server") logic, independent of the transport: it answers
//! [`CoordinatorToSigner`] messages from an authenticated coordinator with
//! [`SignerToCoordinator`] messages. DKG and signing sessions live only in memory; nonces are
//! consumed once; a restarted signer knows no session and refuses round 2.

pub mod audit;
pub mod home;
pub mod peers;
pub mod policy;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bitcoin::Psbt;
use frost_secp256k1_tr as frost;
use rand::{CryptoRng, RngCore};

use crate::auth::unix_now;
use crate::identity::IdentityPublic;
use crate::keys::GroupKey;
use crate::message::{CoordinatorToSigner, ErrorCode, SessionId, SignerToCoordinator, WalletRef};
use crate::protocol::dkg::{self, Participant1, Participant2, Participant3, ParticipantError};
use crate::psbt::{commit_with, CheckedPsbt, SignerNonces};
use crate::recovery::RecoveryPolicy;
use audit::{AuditEvent, AuditLog};
use home::{SignerHome, WalletInfo};
use policy::Policy;

/// How long an unfinished session is kept.
pub const SESSION_TTL: Duration = Duration::from_secs(300);
/// Most sessions kept at once (older ones are dropped first).
pub const MAX_SESSIONS: usize = 10_000;

enum DkgStage {
    One(Participant1),
    Two(Participant2),
    Three(Box<Participant3>),
}

struct DkgSession {
    coordinator: IdentityPublic,
    stage: DkgStage,
    started: Instant,
}

struct SignSession {
    coordinator: IdentityPublic,
    wallet: WalletInfo,
    psbt: Psbt,
    checked: CheckedPsbt,
    nonces: SignerNonces,
    started: Instant,
}

/// A running co-signer: an unlocked home plus in-memory sessions.
pub struct Signer {
    home: SignerHome,
    dkg: Mutex<HashMap<SessionId, DkgSession>>,
    signing: Mutex<HashMap<SessionId, SignSession>>,
    audit: Mutex<AuditLog>,
    flag_peers: BTreeSet<IdentityPublic>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("identity", &self.home.identity().public())
            .finish_non_exhaustive()
    }
}

/// A refusal, turned into [`SignerToCoordinator::Error`] at the end of [`Signer::handle`].
#[derive(Debug)]
struct Refusal {
    code: ErrorCode,
    message: String,
}

fn refuse(code: ErrorCode, message: impl std::fmt::Display) -> Refusal {
    Refusal {
        code,
        message: message.to_string(),
    }
}

fn prune<V>(map: &mut HashMap<SessionId, V>, started: impl Fn(&V) -> Instant) {
    map.retain(|_, v| started(v).elapsed() < SESSION_TTL);
    if map.len() >= MAX_SESSIONS {
        if let Some(oldest) = map.iter().min_by_key(|(_, v)| started(v)).map(|(k, _)| *k) {
            map.remove(&oldest);
        }
    }
}

impl Signer {
    /// A signer serving the wallets of `home`.
    ///
    /// # Errors
    /// The audit log is unreadable or its chain is broken.
    pub fn new(home: SignerHome) -> Result<Self, audit::AuditError> {
        let audit = AuditLog::open(&home.audit_path())?;
        Ok(Signer {
            home,
            dkg: Mutex::new(HashMap::new()),
            signing: Mutex::new(HashMap::new()),
            audit: Mutex::new(audit),
            flag_peers: BTreeSet::new(),
        })
    }

    /// Also approves these peers for key generations, for the life of this process (what
    /// `ckm signer serve --allow-peer` gives), besides those in the sealed store.
    #[must_use]
    pub fn with_peers(mut self, peers: impl IntoIterator<Item = IdentityPublic>) -> Self {
        self.flag_peers.extend(peers);
        self
    }

    /// The peers approved now: those given at start plus those in the store (re-read, so
    /// `ckm signer peers add` applies without a restart).
    ///
    /// # Errors
    /// The peers file is unreadable.
    pub fn approved_peers(&self) -> Result<BTreeSet<IdentityPublic>, home::HomeError> {
        let stored = self.home.load_peers()?;
        Ok(self
            .flag_peers
            .iter()
            .copied()
            .chain(stored.peers.into_keys())
            .collect())
    }

    /// Judges a spend against the wallet's policy (re-read from disk, so changes apply
    /// without a restart) and the audit log's last 24 hours. Refusals are audited.
    fn enforce_policy(
        &self,
        audit: &mut AuditLog,
        from: &IdentityPublic,
        wallet: &WalletInfo,
        checked: &CheckedPsbt,
    ) -> Result<(), Refusal> {
        let policy = self.wallet_policy(wallet)?;
        if policy.is_empty() {
            return Ok(());
        }
        let now = unix_now();
        let paid = audit
            .paid_since(&wallet.group_key.to_string(), now.saturating_sub(24 * 3600))
            .map_err(|e| refuse(ErrorCode::Internal, e))?;
        if let Err(violation) = policy.check(checked, wallet.network, paid) {
            self.audit_event(
                audit,
                from,
                wallet,
                checked,
                format!("refused: {violation}"),
            );
            return Err(refuse(ErrorCode::Policy, violation));
        }
        Ok(())
    }

    /// The wallet's policy, re-read from the store.
    fn wallet_policy(&self, wallet: &WalletInfo) -> Result<Policy, Refusal> {
        let mut policies = self
            .home
            .load_policies()
            .map_err(|e| refuse(ErrorCode::Internal, e))?;
        Ok(policies
            .wallets
            .remove(&wallet.group_key)
            .unwrap_or_default())
    }

    /// A wallet answers only the coordinator that created it and those its operator added.
    fn check_bound(&self, from: &IdentityPublic, wallet: &WalletInfo) -> Result<(), Refusal> {
        if wallet.coordinator == *from {
            return Ok(());
        }
        let policy = self.wallet_policy(wallet)?;
        if policy.coordinators.contains(from) {
            return Ok(());
        }
        Err(refuse(
            ErrorCode::WrongCoordinator,
            format!(
                "wallet {} is bound to the coordinator that created it ({}); coordinator {from} may use it only after this signer's operator runs `ckm signer wallet allow-coordinator --wallet {} {from}`",
                wallet.name, wallet.coordinator, wallet.name
            ),
        ))
    }

    fn audit_event(
        &self,
        audit: &mut AuditLog,
        from: &IdentityPublic,
        wallet: &WalletInfo,
        checked: &CheckedPsbt,
        outcome: String,
    ) {
        let event = AuditEvent {
            wallet: wallet.name.clone(),
            group_key: wallet.group_key.to_string(),
            coordinator: from.to_string(),
            txid: checked.txid().to_string(),
            amount_sats: checked.payment_total().to_sat(),
            fee_sats: checked.fee().to_sat(),
            outcome,
        };
        if let Err(e) = audit.append(event, unix_now()) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    /// The signer's home.
    pub fn home(&self) -> &SignerHome {
        &self.home
    }

    /// The signer's public identity.
    pub fn identity(&self) -> IdentityPublic {
        self.home.identity().public()
    }

    /// Number of signing sessions waiting for round 2.
    pub fn pending_signing_sessions(&self) -> usize {
        self.signing.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Answers one message from the authenticated coordinator `from`.
    pub fn handle<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        message: CoordinatorToSigner,
        rng: &mut R,
    ) -> SignerToCoordinator {
        let result = match message {
            CoordinatorToSigner::Status => self.status(),
            CoordinatorToSigner::DkgBegin(request) => self.dkg_begin(from, request, rng),
            CoordinatorToSigner::DkgRound1(request) => self.dkg_round1(from, request, rng),
            CoordinatorToSigner::DkgRound2(request) => self.dkg_round2(from, request),
            CoordinatorToSigner::DkgConfirm(request) => self.dkg_confirm(from, request, rng),
            CoordinatorToSigner::SignCommit {
                session,
                wallet,
                psbt,
            } => self.sign_commit(from, session, wallet, psbt, rng),
            CoordinatorToSigner::SignShare { session, packages } => {
                self.sign_share(from, session, packages)
            }
        };
        result.unwrap_or_else(|r| SignerToCoordinator::Error {
            code: r.code,
            message: r.message,
        })
    }

    fn status(&self) -> Result<SignerToCoordinator, Refusal> {
        let wallets = self
            .home
            .wallets()
            .map_err(|e| refuse(ErrorCode::Internal, e))?;
        Ok(SignerToCoordinator::Status {
            identity: self.identity(),
            software: format!("ckm {}", env!("CARGO_PKG_VERSION")),
            wallets: wallets.into_iter().map(|w| w.name).collect(),
        })
    }

    fn dkg_begin<R: RngCore + CryptoRng>(
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
        prune(&mut dkg, |s| s.started);
        if dkg.contains_key(&session) {
            return Err(refuse(ErrorCode::BadRequest, "session id already in use"));
        }
        dkg.insert(
            session,
            DkgSession {
                coordinator: *from,
                stage: DkgStage::One(state),
                started: Instant::now(),
            },
        );
        tracing::info!(%session, index, "key generation started");
        Ok(SignerToCoordinator::DkgRound1(answer))
    }

    fn lock_dkg(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, HashMap<SessionId, DkgSession>>, Refusal> {
        self.dkg
            .lock()
            .map_err(|_| refuse(ErrorCode::Internal, "lock poisoned"))
    }

    /// Takes a session out (so on any error the key generation is over for this signer).
    fn take_dkg(&self, from: &IdentityPublic, session: &SessionId) -> Result<DkgSession, Refusal> {
        let mut dkg = self.lock_dkg()?;
        match dkg.remove(session) {
            Some(s) if s.coordinator == *from => Ok(s),
            Some(s) => {
                dkg.insert(*session, s);
                Err(refuse(ErrorCode::UnknownSession, "unknown DKG session"))
            }
            None => Err(refuse(ErrorCode::UnknownSession, "unknown DKG session")),
        }
    }

    fn put_dkg(&self, session: SessionId, s: DkgSession) -> Result<(), Refusal> {
        self.lock_dkg()?.insert(session, s);
        Ok(())
    }

    fn dkg_round1<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        request: dkg::Round1Request,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        let session = request.session;
        let mut s = self.take_dkg(from, &session)?;
        let DkgStage::One(state) = s.stage else {
            return Err(refuse(
                ErrorCode::UnknownSession,
                "DKG session is not in round 1",
            ));
        };
        let (next, answer) = state
            .receive_round1(request, self.home.identity(), rng)
            .map_err(participant_refusal)?;
        s.stage = DkgStage::Two(next);
        self.put_dkg(session, s)?;
        Ok(SignerToCoordinator::DkgRound2(answer))
    }

    fn dkg_round2(
        &self,
        from: &IdentityPublic,
        request: dkg::Round2Request,
    ) -> Result<SignerToCoordinator, Refusal> {
        let session = request.session;
        let mut s = self.take_dkg(from, &session)?;
        let DkgStage::Two(state) = s.stage else {
            return Err(refuse(
                ErrorCode::UnknownSession,
                "DKG session is not in round 2",
            ));
        };
        let (next, answer) = state
            .receive_round2(request, self.home.identity())
            .map_err(|e| {
                tracing::warn!(%session, error = %e, "key generation aborted");
                participant_refusal(e)
            })?;
        s.stage = DkgStage::Three(Box::new(next));
        self.put_dkg(session, s)?;
        tracing::info!(%session, "key generation finished; share held until every certificate arrives");
        Ok(SignerToCoordinator::DkgCertified(answer))
    }

    fn dkg_confirm<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        request: dkg::ConfirmRequest,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        let session = request.session;
        let s = self.take_dkg(from, &session)?;
        let DkgStage::Three(state) = s.stage else {
            return Err(refuse(
                ErrorCode::UnknownSession,
                "DKG session is not finished",
            ));
        };
        let certified = state.confirm(request).map_err(|e| {
            tracing::warn!(%session, error = %e, "certificates refused; nothing stored");
            participant_refusal(e)
        })?;
        let group = certified.share.group();
        let context = &certified.keygen.context;
        let info = WalletInfo {
            name: context.wallet.clone(),
            network: context.network,
            group_key: GroupKey::of(group),
            coordinator: s.coordinator,
            threshold: group.threshold(),
            signers: group.signers(),
            index: certified.index,
            fingerprint: Some(certified.fingerprint),
            keygen: Some(certified.keygen.clone()),
        };
        self.home
            .save_share(&info, &certified.share, rng)
            .map_err(|e| refuse(ErrorCode::Internal, e))?;
        tracing::info!(%session, wallet = %info.name, group_key = %info.group_key, fingerprint = %certified.fingerprint, "share stored");
        Ok(SignerToCoordinator::DkgStored(dkg::Stored {
            fingerprint: certified.fingerprint,
        }))
    }

    fn sign_commit<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        session: SessionId,
        wallet: WalletRef,
        psbt: String,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        let info = self
            .home
            .wallet(&wallet.group_key.to_string())
            .map_err(|e| refuse(ErrorCode::UnknownWallet, e))?;
        self.check_bound(from, &info)?;
        let psbt: Psbt = psbt
            .parse()
            .map_err(|e| refuse(ErrorCode::BadRequest, format!("malformed PSBT: {e}")))?;
        let share = self
            .home
            .load_share(&info.group_key)
            .map_err(|e| refuse(ErrorCode::Internal, e))?;
        let recovery = certified_recovery(&info, &share)?;
        let (nonces, commitments, checked) = commit_with(&psbt, &share, recovery.as_ref(), rng)
            .map_err(|e| refuse(ErrorCode::Refused, e))?;
        drop(share);
        {
            let mut audit = self
                .audit
                .lock()
                .map_err(|_| refuse(ErrorCode::Internal, "lock poisoned"))?;
            self.enforce_policy(&mut audit, from, &info, &checked)?;
        }
        let mut signing = self
            .signing
            .lock()
            .map_err(|_| refuse(ErrorCode::Internal, "lock poisoned"))?;
        prune(&mut signing, |s| s.started);
        if signing.contains_key(&session) {
            return Err(refuse(ErrorCode::BadRequest, "session id already in use"));
        }
        signing.insert(
            session,
            SignSession {
                coordinator: *from,
                wallet: info.clone(),
                psbt,
                checked: checked.clone(),
                nonces,
                started: Instant::now(),
            },
        );
        tracing::info!(%session, wallet = %info.name, txid = %checked.txid(), inputs = checked.inputs().len(), fee_sats = checked.fee().to_sat(), "committed nonces");
        Ok(SignerToCoordinator::SignCommitments { commitments })
    }

    fn sign_share(
        &self,
        from: &IdentityPublic,
        session: SessionId,
        packages: Vec<frost::SigningPackage>,
    ) -> Result<SignerToCoordinator, Refusal> {
        // Removing the session first guarantees its nonces are used at most once.
        let s =
            {
                let mut signing = self
                    .signing
                    .lock()
                    .map_err(|_| refuse(ErrorCode::Internal, "lock poisoned"))?;
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
        // Policy again, under the audit lock, so concurrent sessions cannot together exceed
        // the daily limit; the signature is recorded before it leaves.
        let mut audit = self
            .audit
            .lock()
            .map_err(|_| refuse(ErrorCode::Internal, "lock poisoned"))?;
        self.enforce_policy(&mut audit, from, &s.wallet, &s.checked)?;
        let share = self
            .home
            .load_share(&s.wallet.group_key)
            .map_err(|e| refuse(ErrorCode::Internal, e))?;
        let shares = match s.nonces.sign(&s.psbt, &share, &packages) {
            Ok(shares) => shares,
            Err(e) => {
                self.audit_event(
                    &mut audit,
                    from,
                    &s.wallet,
                    &s.checked,
                    format!("refused: {e}"),
                );
                return Err(refuse(ErrorCode::Refused, e));
            }
        };
        self.audit_event(&mut audit, from, &s.wallet, &s.checked, "signed".into());
        drop(audit);
        tracing::info!(%session, inputs = shares.len(), "signed");
        Ok(SignerToCoordinator::SignShares { shares })
    }
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
