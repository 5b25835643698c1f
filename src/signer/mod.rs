//! The co-signer ("secret server") logic, independent of the transport: it answers
//! [`CoordinatorToSigner`] messages from an authenticated coordinator with
//! [`SignerToCoordinator`] messages. Key generation and signing sessions live only in
//! memory; nonces are consumed once; a restarted signer knows no session and refuses round 2.
//! Every signing decision is recorded (keyed audit record, spend accounting) in one database
//! transaction before any share leaves; the wallet-wide limit protocol of
//! [`crate::protocol::spend_limits`] is enforced here.
//!
//! In reading order:
//! - [`db`]: the SQLite database of a signer (schema, one writer, read connections);
//! - [`home`]: the signer's home: state and checkpoint checks, sealed shares, pending
//!   transitions, policies and peers, wallet records ([`legacy`] converts a home of the v1
//!   file layout; it imports the home, never the reverse);
//! - [`audit`]: the keyed, hash-chained audit records; [`backup`]: the signer's backup and
//!   restore; [`nonces`]: the preprocessed nonce pools; [`check_cache`]: checked PSBTs kept
//!   between a preparation and its signing; [`checkpoint`]: the sealed checkpoint;
//!   [`policy`] and [`peers`]: what the operator allows;
//! - this file: [`Signer`], the handler routing each message to its protocol machine
//!   (key generation in `keygen.rs`, signing in `signing.rs`, transitions in
//!   `transition.rs`).
//!
//! Randomness is passed in: [`Signer::handle`] takes the caller's RNG, and work after an
//! answer or on a background thread (the nonce reserve's refill, the audit record of a
//! refusal, the checkpoint after a decision, the state re-check) draws from the
//! [`RngSource`] the shell gives [`Signer::new`] — a factory rather than one shared
//! generator, so that the shell hands each such task the operating system's randomness
//! (as before) while a test hands it a seeded, replayable one.
//!
//! May import `protocol`, `psbt`, `message` and the floors below them (`recovery`, `keys`,
//! `auth`, `store`, `frost`, `identity`); never `net`, `wallet`, `ops` or `cli`.

pub mod audit;
pub mod backup;
pub mod check_cache;
pub mod checkpoint;
pub mod db;
pub mod home;
mod keygen;
pub mod legacy;
pub mod nonces;
pub mod peers;
pub mod policy;
mod removal;
mod restored;
mod signing;
mod transition;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{CryptoRng, RngCore};

use crate::identity::IdentityPublic;
use crate::keys::GroupKey;
use crate::message::{CoordinatorToSigner, ErrorCode, SessionId, SignerToCoordinator};
use home::{HomeError, SignerHome, WalletInfo};
use policy::Policy;
use signing::SignSession;
use transition::TransitionSession;

/// A cryptographic random number generator that may move to another thread.
pub trait SignerRng: RngCore + CryptoRng + Send {}

impl<T: RngCore + CryptoRng + Send> SignerRng for T {}

/// Where a [`Signer`] draws randomness for work that has no caller's RNG at hand (after an
/// answer, on a background thread): each call gives a generator for one task. The shell
/// gives one handing out the operating system's randomness; a test may give
/// [`seeded_rng_source`].
pub type RngSource = Arc<dyn Fn() -> Box<dyn SignerRng> + Send + Sync>;

/// A deterministic [`RngSource`] for tests and replays: each generator it hands out is
/// seeded from one generator seeded with `seed`, in the order they are asked for.
pub fn seeded_rng_source(seed: u64) -> RngSource {
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    let parent = Mutex::new(StdRng::seed_from_u64(seed));
    Arc::new(move || {
        let mut child = [0u8; 32];
        parent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fill_bytes(&mut child);
        Box::new(StdRng::from_seed(child))
    })
}

/// How long an unfinished session (and a spend reservation) is kept.
pub const SESSION_TTL: Duration = Duration::from_secs(300);
/// Most sessions kept at once (older ones are dropped first).
pub const MAX_SESSIONS: usize = 10_000;
/// Most open signing sessions (waiting for round 2) of one coordinator; its oldest are
/// forgotten first.
pub const MAX_SESSIONS_PER_COORDINATOR: usize = 64;
/// Most PSBT bytes held by the open signing sessions of one coordinator (its oldest sessions
/// are forgotten first).
pub const MAX_SESSION_BYTES_PER_COORDINATOR: usize = 32 << 20;
/// The window of the daily limit.
pub const WINDOW_SECS: u64 = 24 * 3600;

/// A running co-signer: an unlocked home plus in-memory sessions.
pub struct Signer {
    home: SignerHome,
    dkg: Mutex<keygen::DkgSessions>,
    signing: Mutex<HashMap<SessionId, SignSession>>,
    transitions: Mutex<HashMap<SessionId, TransitionSession>>,
    /// A restored home's restore record, confirmations and challenges (`restored.rs`).
    restored: Mutex<restored::RestoreState>,
    nonces: nonces::NoncePools,
    checks: check_cache::CheckCache,
    flag_peers: BTreeSet<IdentityPublic>,
    /// Why the records cannot be trusted (rolled back); signing is refused while set.
    state_error: Mutex<Option<String>>,
    /// Randomness for work without a caller's RNG (see the module doc).
    rngs: RngSource,
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
    /// A signer serving the wallets of `home`. Its records are checked against the sealed
    /// checkpoint first: when they are missing, truncated or older, the signer still
    /// starts, but refuses to sign until the operator resets the state (see
    /// [`Signer::state_error`]). `rngs` gives the randomness of that check and of the work
    /// done without a caller's RNG (background refills, records after an answer).
    ///
    /// # Errors
    /// The records cannot be read at all.
    pub fn new(home: SignerHome, rngs: RngSource) -> Result<Self, HomeError> {
        let state_error = match home.check_state(&mut rngs()) {
            Ok(_) => None,
            Err(HomeError::State(e)) => {
                tracing::error!(error = %e, "{}", e.advice());
                Some(format!("{e}; {}", e.advice()))
            }
            Err(other) => return Err(other),
        };
        let restored_at = home.db().read(audit::restored_at).map_err(HomeError::Db)?;
        Ok(Signer {
            home,
            restored: Mutex::new(restored::RestoreState::new(restored_at)),
            dkg: Mutex::new(keygen::DkgSessions::default()),
            signing: Mutex::new(HashMap::new()),
            transitions: Mutex::new(HashMap::new()),
            nonces: nonces::NoncePools::default(),
            checks: check_cache::CheckCache::default(),
            flag_peers: BTreeSet::new(),
            state_error: Mutex::new(state_error),
            rngs,
        })
    }

    /// Also approves these peers for key generations, for the life of this process (what
    /// `ckm signer serve --allow-peer` gives), besides those in the sealed store.
    #[must_use]
    pub fn with_peers(mut self, peers: impl IntoIterator<Item = IdentityPublic>) -> Self {
        self.flag_peers.extend(peers);
        self
    }

    /// Why the signer refuses to sign (its records are older than its checkpoint), if it
    /// does.
    pub fn state_error(&self) -> Option<String> {
        self.state_error.lock().ok().and_then(|g| g.clone())
    }

    /// A generator for one task without a caller's RNG.
    fn rng(&self) -> Box<dyn SignerRng> {
        (self.rngs)()
    }

    /// This signer's share of wallet `group_key` (a failure to read it is this signer's
    /// fault: refused as internal).
    fn share(&self, group_key: &GroupKey) -> Result<crate::keys::KeyShare, Refusal> {
        self.home
            .load_share(group_key)
            .map_err(|e| refuse(ErrorCode::Internal, e))
    }

    /// Refuses while the records cannot be trusted; re-checks them first, so that an
    /// operator's state reset applies without a restart.
    fn require_state(&self) -> Result<(), Refusal> {
        let mut guard = self
            .state_error
            .lock()
            .map_err(|_| refuse(ErrorCode::Internal, "lock poisoned"))?;
        if guard.is_none() {
            return Ok(());
        }
        match self.home.check_state(&mut self.rng()) {
            Ok(_) => {
                tracing::info!("the signer's records check out again; signing resumes");
                *guard = None;
                Ok(())
            }
            Err(HomeError::State(e)) => {
                let text = format!("{e}; {}", e.advice());
                *guard = Some(text.clone());
                Err(refuse(ErrorCode::State, text))
            }
            Err(other) => Err(refuse(ErrorCode::Internal, other)),
        }
    }

    /// The peers approved now: those given at start plus those in the store (re-read, so
    /// `ckm signer peers add` applies without a restart).
    ///
    /// # Errors
    /// The peers record is unreadable.
    pub fn approved_peers(&self) -> Result<BTreeSet<IdentityPublic>, HomeError> {
        let stored = self.home.load_peers()?;
        Ok(self
            .flag_peers
            .iter()
            .copied()
            .chain(stored.peers.into_keys())
            .collect())
    }

    /// The wallet's policy, re-read from the store (one indexed row).
    fn wallet_policy(&self, wallet: &WalletInfo) -> Result<Policy, Refusal> {
        self.home
            .policy(&wallet.group_key)
            .map_err(|e| refuse(ErrorCode::Internal, e))
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
                "wallet {} is bound to the coordinator that created it ({}); coordinator {from} may use it only once this signer's operator allows that coordinator for the wallet",
                wallet.name, wallet.coordinator
            ),
        ))
    }

    /// The wallet `group_key`, held by this signer and bound to coordinator `from`.
    fn bound_wallet(
        &self,
        from: &IdentityPublic,
        group_key: &GroupKey,
    ) -> Result<WalletInfo, Refusal> {
        let info = self
            .home
            .wallet(&group_key.to_string())
            .map_err(|e| refuse(ErrorCode::UnknownWallet, e))?;
        self.check_bound(from, &info)?;
        Ok(info)
    }

    /// The signer's home.
    pub fn home(&self) -> &SignerHome {
        &self.home
    }

    /// The signer's public identity.
    pub fn identity(&self) -> IdentityPublic {
        self.home.identity().public()
    }

    /// Preprocessed nonces held (all pools).
    pub fn preprocessed_nonces(&self) -> usize {
        self.nonces.held()
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
            CoordinatorToSigner::Transition(request) => self.transition(from, request, rng),
            CoordinatorToSigner::WalletRecords => self.wallet_records(from),
            CoordinatorToSigner::EpochChallenge { wallet } => {
                self.epoch_challenge(from, &wallet, rng)
            }
            CoordinatorToSigner::EpochStatement { wallet, challenge } => {
                self.epoch_statement(from, &wallet, challenge)
            }
            CoordinatorToSigner::ConfirmEpoch { wallet, statements } => {
                self.confirm_epoch(from, &wallet, &statements, rng)
            }
            CoordinatorToSigner::SignCommit {
                session,
                wallet,
                psbt,
            } => self.sign_commit(from, session, wallet, psbt, rng),
            CoordinatorToSigner::Preprocess { wallet, count } => {
                self.preprocess(from, wallet, count, rng)
            }
            CoordinatorToSigner::SignPreprocessed {
                session,
                wallet,
                psbt,
                commitments,
                nonces,
                more,
            } => self.sign_preprocessed(
                from,
                signing::OneRoundRequest {
                    session,
                    wallet,
                    psbt,
                    commitments,
                    nonces,
                    more,
                },
                rng,
            ),
            CoordinatorToSigner::PrepareSign { wallet, psbt } => {
                self.prepare_sign(from, wallet, psbt)
            }
            CoordinatorToSigner::SignStatement { session, receipts } => {
                self.sign_statement(from, session, receipts)
            }
            CoordinatorToSigner::SignShare {
                session,
                packages,
                statements,
            } => self.sign_share(from, session, packages, statements),
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
}
