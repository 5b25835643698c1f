//! The co-signer ("secret server") logic, independent of the transport: it answers
//! [`CoordinatorToSigner`] messages from an authenticated coordinator with
//! [`SignerToCoordinator`] messages. DKG and signing sessions live only in memory; nonces are
//! consumed once; a restarted signer knows no session and refuses round 2.

pub mod audit;
pub mod home;
pub mod policy;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bitcoin::Psbt;
use frost::keys::dkg::round2;
use frost_secp256k1_tr as frost;
use rand::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::auth::unix_now;
use crate::frost::dkg::{DkgParams, DkgRound1, DkgRound2, Round1Broadcast, TranscriptHash};
use crate::frost::identifier;
use crate::frost::keys::KeyShare;
use crate::identity::IdentityPublic;
use crate::message::{
    CoordinatorToSigner, ErrorCode, Sealed, SessionId, SignerToCoordinator, WalletRef,
};
use crate::psbt::{commit, CheckedPsbt, SignerNonces};
use crate::wallet::RosterEntry;
use audit::{AuditEvent, AuditLog};
use home::{group_key_hex, SignerHome, WalletInfo};

/// How long an unfinished session is kept.
pub const SESSION_TTL: Duration = Duration::from_secs(300);
/// Most sessions kept at once (older ones are dropped first).
pub const MAX_SESSIONS: usize = 10_000;

enum DkgStage {
    Round1(DkgRound1),
    Round2(DkgRound2),
    Done(Box<KeyShare>),
    /// Placeholder while a stage is being advanced.
    Spent,
}

struct DkgSession {
    coordinator: IdentityPublic,
    wallet: String,
    network: bitcoin::Network,
    params: DkgParams,
    roster: Vec<RosterEntry>,
    index: u16,
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
        })
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
        let policies = self
            .home
            .load_policies()
            .map_err(|e| refuse(ErrorCode::Internal, e))?;
        let Some(policy) = policies.wallets.get(&wallet.group_key) else {
            return Ok(());
        };
        let now = unix_now();
        let paid = audit
            .paid_since(&wallet.group_key, now.saturating_sub(24 * 3600))
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
            group_key: wallet.group_key.clone(),
            coordinator: from.to_string(),
            txid: checked.txid.to_string(),
            amount_sats: checked.payment_total().to_sat(),
            fee_sats: checked.fee.to_sat(),
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
            CoordinatorToSigner::DkgBegin {
                session,
                wallet,
                network,
                params,
                roster,
                index,
            } => self.dkg_begin(from, session, wallet, network, params, roster, index, rng),
            CoordinatorToSigner::DkgRound1 {
                session,
                broadcasts,
            } => self.dkg_round1(from, session, broadcasts, rng),
            CoordinatorToSigner::DkgRound2 {
                session,
                sealed,
                transcripts,
            } => self.dkg_round2(from, session, sealed, transcripts),
            CoordinatorToSigner::DkgConfirm { session, group_key } => {
                self.dkg_confirm(from, session, group_key, rng)
            }
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

    #[allow(clippy::too_many_arguments)]
    fn dkg_begin<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        session: SessionId,
        wallet: String,
        network: bitcoin::Network,
        params: DkgParams,
        roster: Vec<RosterEntry>,
        index: u16,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        let bad = |m: &str| refuse(ErrorCode::BadRequest, m);
        let params = DkgParams::new(params.threshold(), params.signers())
            .map_err(|e| refuse(ErrorCode::BadRequest, e))?;
        if roster.len() != usize::from(params.signers())
            || roster
                .iter()
                .enumerate()
                .any(|(i, r)| usize::from(r.index) != i + 1)
        {
            return Err(bad("the roster must list signers 1..=n in order"));
        }
        let me = roster
            .get(usize::from(index).wrapping_sub(1))
            .ok_or_else(|| bad("my index is not in the roster"))?;
        if me.identity != self.identity() {
            return Err(bad("the roster lists another identity key at my index"));
        }
        let mut seen = std::collections::BTreeSet::new();
        if !roster.iter().all(|r| seen.insert(r.identity)) {
            return Err(bad("the roster lists an identity key twice"));
        }
        if wallet.is_empty() || wallet.len() > 64 {
            return Err(bad("wallet names have 1 to 64 characters"));
        }
        let id = identifier(index).map_err(|e| refuse(ErrorCode::BadRequest, e))?;
        let (state, broadcast) =
            DkgRound1::start(id, params, rng).map_err(|e| refuse(ErrorCode::Internal, e))?;
        let mut dkg = self
            .dkg
            .lock()
            .map_err(|_| refuse(ErrorCode::Internal, "lock poisoned"))?;
        prune(&mut dkg, |s| s.started);
        if dkg.contains_key(&session) {
            return Err(bad("session id already in use"));
        }
        dkg.insert(
            session,
            DkgSession {
                coordinator: *from,
                wallet,
                network,
                params,
                roster,
                index,
                stage: DkgStage::Round1(state),
                started: Instant::now(),
            },
        );
        tracing::info!(%session, index, "dkg started");
        Ok(SignerToCoordinator::DkgRound1 { broadcast })
    }

    fn take_dkg(&self, from: &IdentityPublic, session: &SessionId) -> Result<DkgSession, Refusal> {
        let mut dkg = self
            .dkg
            .lock()
            .map_err(|_| refuse(ErrorCode::Internal, "lock poisoned"))?;
        match dkg.remove(session) {
            Some(s) if s.coordinator == *from => Ok(s),
            Some(s) => {
                dkg.insert(*session, s);
                Err(refuse(ErrorCode::UnknownSession, "unknown DKG session"))
            }
            None => Err(refuse(ErrorCode::UnknownSession, "unknown DKG session")),
        }
    }

    fn dkg_round1<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        session: SessionId,
        broadcasts: BTreeMap<u16, Round1Broadcast>,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        let mut s = self.take_dkg(from, &session)?;
        let DkgStage::Round1(state) = s.stage else {
            return Err(refuse(
                ErrorCode::UnknownSession,
                "DKG session is not in round 1",
            ));
        };
        let broadcasts = broadcasts
            .into_iter()
            .map(|(i, b)| identifier(i).map(|id| (id, b)))
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map_err(|e| refuse(ErrorCode::BadRequest, e))?;
        let (next, send) = state
            .receive_round1(&broadcasts)
            .map_err(|e| refuse(ErrorCode::Refused, e))?;
        let mut sealed = BTreeMap::new();
        for (to, package) in &send.packages {
            let to_index = crate::frost::keys::roster_index(to);
            let recipient = s
                .roster
                .get(usize::from(to_index).wrapping_sub(1))
                .ok_or_else(|| refuse(ErrorCode::Internal, "recipient not in roster"))?;
            let bytes = Zeroizing::new(
                package
                    .serialize()
                    .map_err(|e| refuse(ErrorCode::Internal, e))?,
            );
            let aad = round2_aad(&session, s.index, to_index, &send.transcript);
            sealed.insert(
                to_index,
                Sealed(
                    self.home
                        .identity()
                        .seal(&recipient.identity, &aad, &bytes, rng),
                ),
            );
        }
        s.stage = DkgStage::Round2(next);
        let transcript = hex::encode(send.transcript);
        self.dkg
            .lock()
            .map_err(|_| refuse(ErrorCode::Internal, "lock poisoned"))?
            .insert(session, s);
        Ok(SignerToCoordinator::DkgRound2 { transcript, sealed })
    }

    fn dkg_round2(
        &self,
        from: &IdentityPublic,
        session: SessionId,
        sealed: BTreeMap<u16, Sealed>,
        transcripts: BTreeMap<u16, String>,
    ) -> Result<SignerToCoordinator, Refusal> {
        // The session is taken out: on any error this DKG is over for this signer.
        let mut s = self.take_dkg(from, &session)?;
        let DkgStage::Round2(state) = std::mem::replace(&mut s.stage, DkgStage::Spent) else {
            return Err(refuse(
                ErrorCode::UnknownSession,
                "DKG session is not in round 2",
            ));
        };
        let mine = state.transcript();
        let mut hashes: BTreeMap<frost::Identifier, TranscriptHash> = BTreeMap::new();
        let mut mismatched: Vec<u16> = Vec::new();
        for (i, text) in &transcripts {
            let mut h = [0u8; 32];
            hex::decode_to_slice(text, &mut h)
                .map_err(|_| refuse(ErrorCode::BadRequest, "malformed transcript hash"))?;
            let id = identifier(*i).map_err(|e| refuse(ErrorCode::BadRequest, e))?;
            if h != mine {
                mismatched.push(*i);
            }
            hashes.insert(id, h);
        }
        if !mismatched.is_empty() {
            return Err(refuse(
                ErrorCode::Refused,
                crate::frost::dkg::DkgError::TranscriptMismatch {
                    culprits: mismatched,
                },
            ));
        }
        let mut packages: BTreeMap<frost::Identifier, round2::Package> = BTreeMap::new();
        for (from_index, blob) in &sealed {
            let sender = s
                .roster
                .get(usize::from(*from_index).wrapping_sub(1))
                .ok_or_else(|| refuse(ErrorCode::BadRequest, "sender not in roster"))?;
            let aad = round2_aad(&session, *from_index, s.index, &mine);
            let plain = self
                .home
                .identity()
                .open(&sender.identity, &aad, &blob.0)
                .map_err(|e| {
                    refuse(
                        ErrorCode::Refused,
                        format!("cannot open the round-2 package of participant {from_index}: {e}"),
                    )
                })?;
            let package = round2::Package::deserialize(&plain).map_err(|e| {
                refuse(
                    ErrorCode::Refused,
                    format!("malformed round-2 package of participant {from_index}: {e}"),
                )
            })?;
            let id = identifier(*from_index).map_err(|e| refuse(ErrorCode::BadRequest, e))?;
            packages.insert(id, package);
        }
        let share = state
            .finish(&packages, &hashes)
            .map_err(|e| refuse(ErrorCode::Refused, e))?;
        let group = share.group().clone();
        if group.threshold() != s.params.threshold() {
            return Err(refuse(ErrorCode::Internal, "threshold mismatch"));
        }
        s.stage = DkgStage::Done(Box::new(share));
        self.dkg
            .lock()
            .map_err(|_| refuse(ErrorCode::Internal, "lock poisoned"))?
            .insert(session, s);
        tracing::info!(%session, "dkg finished; share held until the coordinator confirms");
        Ok(SignerToCoordinator::DkgDone { group })
    }

    fn dkg_confirm<R: RngCore + CryptoRng>(
        &self,
        from: &IdentityPublic,
        session: SessionId,
        group_key: String,
        rng: &mut R,
    ) -> Result<SignerToCoordinator, Refusal> {
        let s = self.take_dkg(from, &session)?;
        let DkgStage::Done(share) = s.stage else {
            return Err(refuse(
                ErrorCode::UnknownSession,
                "DKG session is not finished",
            ));
        };
        let group = share.group();
        if group_key_hex(group) != group_key {
            return Err(refuse(
                ErrorCode::Refused,
                "the confirmed group key is not the one this signer computed",
            ));
        }
        let info = WalletInfo {
            name: s.wallet.clone(),
            network: s.network,
            group_key: group_key_hex(group),
            coordinator: s.coordinator,
            threshold: group.threshold(),
            signers: group.signers(),
            index: s.index,
        };
        self.home
            .save_share(&info, &share, rng)
            .map_err(|e| refuse(ErrorCode::Internal, e))?;
        tracing::info!(%session, wallet = %info.name, group_key = %info.group_key, "share stored");
        Ok(SignerToCoordinator::DkgStored)
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
            .wallet(&wallet.group_key)
            .map_err(|e| refuse(ErrorCode::UnknownWallet, e))?;
        // Version 0 or 2 (BIP-0370), read into the one model every check works on.
        let psbt: Psbt = crate::psbt::version::psbt_from_base64(&psbt).map_err(|e| {
            refuse(
                ErrorCode::BadRequest,
                format!("malformed PSBT: {}", e.with_causes()),
            )
        })?;
        let share = self
            .home
            .load_share(&info.group_key)
            .map_err(|e| refuse(ErrorCode::Internal, e))?;
        let (nonces, commitments, checked) =
            commit(&psbt, &share, rng).map_err(|e| refuse(ErrorCode::Refused, e))?;
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
        tracing::info!(%session, wallet = %info.name, txid = %checked.txid, inputs = checked.inputs.len(), fee_sats = checked.fee.to_sat(), "committed nonces");
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

/// Associated data binding a sealed round-2 package to its session, sender, recipient and
/// the sender's round-1 transcript (so a package only opens for a recipient that saw the
/// same round-1 broadcasts).
pub fn round2_aad(session: &SessionId, from: u16, to: u16, transcript: &TranscriptHash) -> Vec<u8> {
    let mut aad = b"ckm/dkg-round2".to_vec();
    aad.extend_from_slice(&session.0);
    aad.extend_from_slice(&from.to_be_bytes());
    aad.extend_from_slice(&to.to_be_bytes());
    aad.extend_from_slice(transcript);
    aad
}
