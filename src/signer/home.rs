//! A signer's home directory: its identity key, and its state in one SQLite database
//! (`signer.db`: wallets, sealed shares, sealed versioned policies and peers, keyed audit
//! records, reservations), with a sealed checkpoint beside it (`checkpoint.db`). Everything
//! secret is encrypted under one passphrase-derived store key (Argon2id +
//! XChaCha20-Poly1305); files are mode 0600. Shares are decrypted only for the moment they
//! are used, and each is bound (as associated data) to its wallet's public record, so an edit
//! of that record makes the share unusable.
//!
//! Layout under `<home>/signer/`: `store.json` (KDF parameters, salt), `identity.sealed`,
//! `identity.pub`, `signer.db`, `checkpoint.db`. A home of the earlier file layout (v1:
//! `wallets/*.share`, `policy.sealed`, `audit.log`) is converted on first open; the old files
//! are kept under `legacy-v1/`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use bdk_wallet::rusqlite::{self, Connection, OptionalExtension};
use bitcoin::hashes::{sha256, Hash};
use bitcoin::Network;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::frost::shares::{KeyError, KeyShare};
use crate::identity::{IdentityKey, IdentityPublic};
use crate::keys::{GroupKey, Roster, WalletFingerprint};
use crate::protocol::dkg::CertifiedKeygen;
use crate::protocol::lifecycle::{CertifiedTransition, History};
use crate::signer::audit::{self, AuditError, AuditEvent, AuditKind};
use crate::signer::checkpoint::{self, Checkpoint, CheckpointError};
use crate::signer::db::{get_kv, put_kv, DbError, SignerDb};
use crate::signer::peers::Peers;
use crate::signer::policy::Policy;
use crate::store::{
    read_limited, write_atomic, KdfParams, MacKey, StoreError, StoreHeader, StoreKey,
};

const MAX_FILE: u64 = 1 << 20;

/// Errors of the signer's home.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HomeError {
    /// `signer init` has not been run.
    #[error("{} is not a signer home; run `ckm --home DIR signer init` first", .0.display())]
    NotInitialized(PathBuf),
    /// `signer init` was already run.
    #[error("a signer store already exists at {}", .0.display())]
    AlreadyInitialized(PathBuf),
    /// File system error.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Wrong passphrase or corrupted store.
    #[error("{}", path.display())]
    Store {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: StoreError,
    },
    /// Malformed contents.
    #[error("{}: malformed contents: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The share inside is inconsistent.
    #[error("{}: invalid key share", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: KeyError,
    },
    /// No wallet with that name or key.
    #[error("this signer holds no wallet {0}")]
    UnknownWallet(String),
    /// The wallet already exists.
    #[error("this signer already holds a wallet with group key {0}")]
    WalletExists(String),
    /// The database failed (a full or read-only disk among the causes).
    #[error(transparent)]
    Db(#[from] DbError),
    /// A query of the signer database failed.
    #[error("signer database query failed")]
    Sql(#[from] rusqlite::Error),
    /// The audit records are broken.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The checkpoint cannot be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The records are older than the checkpoint, or missing.
    #[error(transparent)]
    State(#[from] StateError),
    /// Converting a v1 home failed; nothing was changed.
    #[error("cannot convert the v1 signer home {}: {reason}; nothing was changed", dir.display())]
    Migration {
        /// The signer directory.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Why a signer's records cannot be trusted: they are older than, or do not match, the
/// sealed checkpoint. The signer refuses to sign until the operator runs
/// `ckm signer state reset`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The audit chain itself is broken.
    #[error("the audit records are broken at record {seq}: {reason}")]
    Broken {
        /// The first bad record.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// There are records but no checkpoint.
    #[error("the checkpoint is missing but the database holds {records} audit records (checkpoint.db deleted?)")]
    CheckpointMissing {
        /// Records present.
        records: u64,
    },
    /// Fewer records than the checkpoint counted.
    #[error("the audit records end at {have} but the checkpoint counted {checkpoint} (records deleted, truncated or an older signer.db restored)")]
    Truncated {
        /// Records present.
        have: u64,
        /// Records the checkpoint counted.
        checkpoint: u64,
    },
    /// The record the checkpoint points at is another one.
    #[error("audit record {at} is not the one the checkpoint recorded (signer.db replaced by another copy)")]
    Replaced {
        /// The record.
        at: u64,
    },
    /// The policies are older than the checkpoint (or missing).
    #[error("the policy is at version {have} but the checkpoint recorded version {checkpoint} (policy deleted or an older copy restored)")]
    PolicyOlder {
        /// Version present (0: none).
        have: u64,
        /// Version the checkpoint recorded.
        checkpoint: u64,
    },
    /// A wallet's policy row is not the one the sealed policy summary recorded.
    #[error("the wallet policies do not match their sealed summary (a policy removed, edited or restored from an older copy)")]
    PolicyReplaced,
    /// The peers are older than the checkpoint (or missing).
    #[error("the approved peers are at version {have} but the checkpoint recorded version {checkpoint} (an older copy restored)")]
    PeersOlder {
        /// Version present.
        have: u64,
        /// Version the checkpoint recorded.
        checkpoint: u64,
    },
}

impl StateError {
    /// What the operator should do.
    pub fn advice(&self) -> &'static str {
        "the signer refuses to sign until its operator checks the home and runs `ckm signer state reset --reason TEXT` (recorded in the audit log)"
    }
}

/// Public facts about a wallet a signer holds a share of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletInfo {
    /// The name the coordinator gave the wallet.
    pub name: String,
    /// Network.
    pub network: Network,
    /// The group root key: the wallet's identity on this signer.
    pub group_key: GroupKey,
    /// The coordinator that created it (and may use it; see also the policy's
    /// `coordinators`).
    pub coordinator: IdentityPublic,
    /// Threshold.
    pub threshold: u16,
    /// Group size.
    pub signers: u16,
    /// This signer's roster index.
    pub index: u16,
    /// Fingerprint of the certified key generation (`None` for wallets made before
    /// certification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<WalletFingerprint>,
    /// The certified key generation: roster, round-1 broadcasts, every certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keygen: Option<CertifiedKeygen>,
    /// The epoch this signer's share belongs to (0 until the first transition).
    #[serde(default)]
    pub epoch: u64,
    /// Every committed transition since the key generation (refresh, removal, repair,
    /// enrolment), certified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<CertifiedTransition>,
}

impl WalletInfo {
    /// The current certified roster, when the wallet has one.
    pub fn roster(&self) -> Option<&Roster> {
        match self.transitions.last() {
            Some(t) => Some(&t.state.roster),
            None => self.keygen.as_ref().map(|k| &k.context.roster),
        }
    }

    /// The wallet's certified history, when it has one.
    pub fn history(&self) -> Option<History> {
        self.keygen.as_ref().map(|k| History {
            keygen: k.clone(),
            transitions: self.transitions.clone(),
        })
    }
}

/// An unlocked signer home.
#[derive(Debug)]
pub struct SignerHome {
    dir: PathBuf,
    key: StoreKey,
    mac: MacKey,
    identity: IdentityKey,
    db: SignerDb,
    checkpoint: checkpoint::CheckpointFile,
}

/// What [`SignerHome::restore`] restores.
#[derive(Debug)]
pub struct Restore<'a> {
    /// The signer's identity key.
    pub identity: IdentityKey,
    /// Each wallet: its public record, this signer's share and its policy.
    pub wallets: Vec<(&'a WalletInfo, &'a KeyShare, &'a Policy)>,
    /// The approved peers.
    pub peers: &'a Peers,
    /// Where the state comes from, for the `restored` audit record.
    pub detail: String,
}

/// A store header not yet written (it goes last: its presence makes a signer home).
struct PendingHeader {
    path: PathBuf,
    json: Vec<u8>,
}

impl PendingHeader {
    fn write(self) -> Result<(), HomeError> {
        write_atomic(&self.path, &self.json).map_err(io("write", &self.path))
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> HomeError + 'a {
    move |source| HomeError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A sealed value with a version counter (policies, peers).
#[derive(Serialize, Deserialize)]
struct Versioned<T> {
    version: u64,
    value: T,
}

/// What the records hold now, as a checkpoint would record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateSummary {
    /// The position the records are at.
    pub at: Checkpoint,
    /// The checkpoint stored before this check.
    pub checkpoint: Option<Checkpoint>,
}

impl SignerHome {
    /// The signer directory inside a ckm home.
    pub fn dir_of(home: &Path) -> PathBuf {
        home.join("signer")
    }

    /// Whether `home` holds a signer store.
    pub fn exists(home: &Path) -> bool {
        Self::dir_of(home).join("store.json").exists()
    }

    /// Creates the signer store, identity and database under `home`.
    ///
    /// # Errors
    /// An existing store or a file system error.
    pub fn init<R: RngCore + CryptoRng>(
        home: &Path,
        passphrase: &[u8],
        params: KdfParams,
        rng: &mut R,
    ) -> Result<Self, HomeError> {
        let identity = IdentityKey::generate(rng);
        let (home, header) = Self::create(home, passphrase, params, identity, rng)?;
        home.advance_checkpoint(rng)?;
        header.write()?;
        Ok(home)
    }

    /// Creates a signer home that rejoins its wallets as the signer a backup was taken of:
    /// the same identity key, each wallet's public record and share (sealed and bound to the
    /// record as [`SignerHome::save_shares`] does), its policy and the approved peers, under
    /// a new store passphrase. The records start a fresh audit chain: one `wallet` record per
    /// wallet and a `restored` record saying what was restored (`detail`), then a checkpoint.
    /// The store header is written last; on any failure the directory this call created is
    /// removed again, so nothing is left behind.
    ///
    /// # Errors
    /// An existing signer directory (nothing is touched then), a wallet listed twice, or a
    /// file system or database error.
    pub fn restore<R: RngCore + CryptoRng>(
        home: &Path,
        passphrase: &[u8],
        params: KdfParams,
        restore: Restore<'_>,
        rng: &mut R,
    ) -> Result<Self, HomeError> {
        let dir = Self::dir_of(home);
        if dir.exists() {
            return Err(HomeError::AlreadyInitialized(dir));
        }
        let made_home = !home.exists();
        let Restore {
            identity,
            wallets,
            peers,
            detail,
        } = restore;
        let result: Result<Self, HomeError> = (|| {
            let (signer, header) = Self::create(home, passphrase, params, identity, rng)?;
            signer.import(&wallets, peers, &detail, rng)?;
            header.write()?;
            Ok(signer)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&dir);
            if made_home {
                let _ = fs::remove_dir(home);
            }
        }
        result
    }

    /// The wallets, policies, peers and audit records of a restore, in one transaction.
    fn import<R: RngCore + CryptoRng>(
        &self,
        wallets: &[(&WalletInfo, &KeyShare, &Policy)],
        peers: &Peers,
        detail: &str,
        rng: &mut R,
    ) -> Result<(), HomeError> {
        let mut rows = Vec::with_capacity(wallets.len());
        for (info, share, _) in wallets {
            let (info_json, sealed) = self.seal_share(info, share, rng)?;
            rows.push((info_json, sealed));
        }
        let peers_json = serde_json::to_vec(&Versioned {
            version: 1,
            value: peers,
        })
        .map_err(|e| HomeError::Malformed {
            path: self.db.path().to_path_buf(),
            reason: e.to_string(),
        })?;
        let sealed_peers = self.key.seal(b"peers", &peers_json, rng);
        let now = crate::auth::unix_now();
        self.db.write(|tx| {
            let mut policies = 0;
            for ((info, _, policy), (info_json, sealed)) in wallets.iter().zip(&rows) {
                insert_wallet(tx, info, info_json, sealed)?;
                if **policy != Policy::default() {
                    put_policy(tx, &self.key, &info.group_key, policy, 1, rng)?;
                    policies += 1;
                }
                audit::append(
                    tx,
                    &self.mac,
                    AuditEvent {
                        kind: AuditKind::Wallet,
                        wallet: info.name.clone(),
                        group_key: info.group_key.to_string(),
                        coordinator: info.coordinator.to_string(),
                        txid: String::new(),
                        outflow_sats: 0,
                        fee_sats: 0,
                        detail: format!(
                            "restored share {} of a {}-of-{} wallet at epoch {} (fingerprint {})",
                            info.index,
                            info.threshold,
                            info.signers,
                            info.epoch,
                            info.fingerprint
                                .map_or_else(|| "none".to_string(), |f| f.to_string())
                        ),
                    },
                    now,
                )
                .map_err(|e| HomeError::Db(self.sql(e)))?;
            }
            if policies > 0 {
                put_policy_state(tx, &self.key, 1, rng)?;
            }
            if !peers.peers.is_empty() {
                put_kv(tx, "peers", &sealed_peers).map_err(|e| HomeError::Db(self.sql(e)))?;
            }
            audit::append(
                tx,
                &self.mac,
                AuditEvent::signer(
                    AuditKind::Restored,
                    format!(
                        "{}: {} wallet(s), {policies} wallet policy(ies), {} approved peer(s); the records before the backup are not carried over",
                        detail,
                        wallets.len(),
                        peers.peers.len()
                    ),
                ),
                now,
            )
            .map_err(|e| HomeError::Db(self.sql(e)))?;
            Ok::<_, HomeError>(())
        })?;
        self.advance_checkpoint(rng)?;
        Ok(())
    }

    /// The store, identity files and an empty database under `home` (the header is returned
    /// to be written last: until then the directory is no signer home).
    fn create<R: RngCore + CryptoRng>(
        home: &Path,
        passphrase: &[u8],
        params: KdfParams,
        identity: IdentityKey,
        rng: &mut R,
    ) -> Result<(Self, PendingHeader), HomeError> {
        let dir = Self::dir_of(home);
        let header_path = dir.join("store.json");
        if header_path.exists() {
            return Err(HomeError::AlreadyInitialized(dir));
        }
        fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let (key, header) =
            StoreKey::create(passphrase, params, rng).map_err(|source| HomeError::Store {
                path: header_path.clone(),
                source,
            })?;
        let sealed = key.seal(b"identity", identity.secret_bytes().as_slice(), rng);
        let identity_path = dir.join("identity.sealed");
        write_atomic(&identity_path, &sealed).map_err(io("write", &identity_path))?;
        let pub_path = dir.join("identity.pub");
        write_atomic(&pub_path, format!("{}\n", identity.public()).as_bytes())
            .map_err(io("write", &pub_path))?;
        // A database left by an interrupted init is started afresh.
        for stale in [SignerDb::path_in(&dir), checkpoint::path_in(&dir)] {
            let _ = fs::remove_file(&stale);
        }
        let db = SignerDb::open(&SignerDb::path_in(&dir))?;
        let mac = key.mac_key(audit::MAC_PURPOSE);
        let header_json = serde_json::to_vec_pretty(&header).map_err(|e| HomeError::Malformed {
            path: header_path.clone(),
            reason: e.to_string(),
        })?;
        let home = SignerHome {
            checkpoint: checkpoint::CheckpointFile::new(&dir),
            dir,
            key,
            mac,
            identity,
            db,
        };
        Ok((
            home,
            PendingHeader {
                path: header_path,
                json: header_json,
            },
        ))
    }

    /// The public identity of a signer home without unlocking it.
    ///
    /// # Errors
    /// Not a signer home, or a malformed file.
    pub fn public_identity(home: &Path) -> Result<IdentityPublic, HomeError> {
        let path = Self::dir_of(home).join("identity.pub");
        if !path.exists() {
            return Err(HomeError::NotInitialized(Self::dir_of(home)));
        }
        let text = fs::read_to_string(&path).map_err(io("read", &path))?;
        text.trim()
            .parse()
            .map_err(|e: crate::identity::IdentityError| HomeError::Malformed {
                path,
                reason: e.to_string(),
            })
    }

    /// Unlocks the store with the passphrase (converting a v1 home on first open). The state
    /// is not checked against the checkpoint here: see [`SignerHome::check_state`].
    ///
    /// # Errors
    /// Not initialized, wrong passphrase, corrupted files, or a failed conversion.
    pub fn open(home: &Path, passphrase: &[u8]) -> Result<Self, HomeError> {
        let dir = Self::dir_of(home);
        let header_path = dir.join("store.json");
        if !header_path.exists() {
            return Err(HomeError::NotInitialized(dir));
        }
        let bytes = read_limited(&header_path, MAX_FILE).map_err(io("read", &header_path))?;
        let header: StoreHeader =
            serde_json::from_slice(&bytes).map_err(|e| HomeError::Malformed {
                path: header_path.clone(),
                reason: e.to_string(),
            })?;
        let key = StoreKey::unlock(passphrase, &header).map_err(|source| HomeError::Store {
            path: header_path.clone(),
            source,
        })?;
        let identity_path = dir.join("identity.sealed");
        let sealed = read_limited(&identity_path, MAX_FILE).map_err(io("read", &identity_path))?;
        let secret = key
            .open(b"identity", &sealed)
            .map_err(|source| HomeError::Store {
                path: identity_path.clone(),
                source,
            })?;
        let bytes: zeroize::Zeroizing<[u8; 32]> =
            zeroize::Zeroizing::new(secret.as_slice().try_into().map_err(|_| {
                HomeError::Malformed {
                    path: identity_path.clone(),
                    reason: "identity key is not 32 bytes".into(),
                }
            })?);
        let identity =
            IdentityKey::from_secret_bytes(&bytes).map_err(|e| HomeError::Malformed {
                path: identity_path,
                reason: e.to_string(),
            })?;
        let db_path = SignerDb::path_in(&dir);
        if !db_path.exists() && crate::signer::legacy::is_v1(&dir) {
            crate::signer::legacy::migrate(&dir, &key, &mut rand::rngs::OsRng)?;
        }
        crate::signer::legacy::tidy(&dir);
        let db = SignerDb::open(&db_path)?;
        let mac = key.mac_key(audit::MAC_PURPOSE);
        Ok(SignerHome {
            checkpoint: checkpoint::CheckpointFile::new(&dir),
            dir,
            key,
            mac,
            identity,
            db,
        })
    }

    /// This signer's identity key.
    pub fn identity(&self) -> &IdentityKey {
        &self.identity
    }

    /// The signer directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database.
    pub fn db(&self) -> &SignerDb {
        &self.db
    }

    /// The key of the audit chain.
    pub fn audit_key(&self) -> &MacKey {
        &self.mac
    }

    // -----------------------------------------------------------------------------------
    // State and checkpoint
    // -----------------------------------------------------------------------------------

    /// Where the records are now: audit tail and the versions of policies and peers.
    ///
    /// # Errors
    /// Database errors or corrupted sealed values.
    pub fn position(&self, conn: &Connection) -> Result<Checkpoint, HomeError> {
        let (audit_count, audit_last_mac) = audit::tail(conn).map_err(|e| self.sql(e))?;
        Ok(Checkpoint {
            audit_count,
            audit_last_mac,
            policy_version: policy_state(conn, &self.key)?.0,
            peers_version: self.versioned::<Peers>(conn, "peers")?.0,
        })
    }

    /// Advances the checkpoint to where the records are now.
    ///
    /// # Errors
    /// Database or checkpoint errors (a full or read-only disk).
    pub fn advance_checkpoint<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
    ) -> Result<Checkpoint, HomeError> {
        let at = self.db.read(|c| Ok(self.position(c)))??;
        Ok(self.checkpoint.advance(&self.key, at, rng)?)
    }

    /// Checks the records against the sealed checkpoint: the whole audit chain (keyed
    /// MACs), its length and last MAC, and the policy and peers versions. A fresh home (no
    /// records, no checkpoint) gets its first checkpoint.
    ///
    /// # Errors
    /// [`HomeError::State`] when the records are missing, truncated, replaced or older than
    /// the checkpoint; other errors when they cannot be read.
    pub fn check_state<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
    ) -> Result<StateSummary, HomeError> {
        let (count, last) = self
            .db
            .read(|c| Ok(audit::verify_chain(c, &self.mac, |_| ())))?
            .map_err(|e| match e {
                AuditError::Broken { seq, reason } => {
                    HomeError::State(StateError::Broken { seq, reason })
                }
                other => HomeError::Audit(other),
            })?;
        let at = self.db.read(|c| Ok(self.position(c)))??;
        debug_assert_eq!(at.audit_count, count);
        let stored = checkpoint::load(&self.dir, &self.key)?;
        let Some(cp) = stored else {
            if count == 0 && at.policy_version == 0 && at.peers_version == 0 {
                checkpoint::advance(&self.dir, &self.key, at, rng)?;
                return Ok(StateSummary {
                    at,
                    checkpoint: None,
                });
            }
            return Err(StateError::CheckpointMissing { records: count }.into());
        };
        if count < cp.audit_count {
            return Err(StateError::Truncated {
                have: count,
                checkpoint: cp.audit_count,
            }
            .into());
        }
        if cp.audit_count > 0 {
            let at_cp: Option<Vec<u8>> = self.db.read(|c| {
                c.query_row(
                    "SELECT mac FROM audit WHERE seq = ?1",
                    [i64::try_from(cp.audit_count - 1).unwrap_or(i64::MAX)],
                    |r| r.get(0),
                )
                .optional()
            })?;
            if at_cp.as_deref() != Some(cp.audit_last_mac.as_slice()) {
                return Err(StateError::Replaced {
                    at: cp.audit_count - 1,
                }
                .into());
            }
        } else if count == 0 && last != audit::GENESIS {
            return Err(StateError::Replaced { at: 0 }.into());
        }
        if at.policy_version < cp.policy_version {
            return Err(StateError::PolicyOlder {
                have: at.policy_version,
                checkpoint: cp.policy_version,
            }
            .into());
        }
        let (_, digest) = self.db.read(|c| Ok(policy_state(c, &self.key)))??;
        if self.db.read(|c| Ok(policy_digest(c)))?? != digest {
            return Err(StateError::PolicyReplaced.into());
        }
        if at.peers_version < cp.peers_version {
            return Err(StateError::PeersOlder {
                have: at.peers_version,
                checkpoint: cp.peers_version,
            }
            .into());
        }
        // Records ahead of the checkpoint (a crash between commit and checkpoint) are fine.
        checkpoint::advance(&self.dir, &self.key, at, rng)?;
        Ok(StateSummary {
            at,
            checkpoint: Some(cp),
        })
    }

    /// The operator accepts the current records: an audited reset of the checkpoint to
    /// where the records are. When the keyed chain is broken (a record edited or removed
    /// without the passphrase), the records from the first bad one on are renumbered and
    /// re-sealed as they now stand, and the reset record says so.
    ///
    /// # Errors
    /// Database errors.
    pub fn reset_state<R: RngCore + CryptoRng>(
        &self,
        reason: &str,
        rng: &mut R,
    ) -> Result<Checkpoint, HomeError> {
        let verified = self
            .db
            .read(|c| Ok(audit::verify_chain(c, &self.mac, |_| ())))?;
        let resealed = match verified {
            Ok(_) => None,
            Err(AuditError::Broken { seq, reason: why }) => {
                self.db
                    .write(|tx| audit::reseal_from(tx, &self.mac, seq).map_err(HomeError::Sql))?;
                Some((seq, why))
            }
            Err(other) => return Err(other.into()),
        };
        let count = self.db.read(audit::tail)?.0;
        let before = checkpoint::load(&self.dir, &self.key).ok().flatten();
        let mut detail = match before {
            Some(cp) => format!(
                "state reset by the operator: {reason} (checkpoint had {} records, policy v{}, peers v{}; records now {count})",
                cp.audit_count, cp.policy_version, cp.peers_version
            ),
            None => format!("state reset by the operator: {reason} (no checkpoint; records now {count})"),
        };
        if let Some((seq, why)) = resealed {
            detail.push_str(&format!(
                "; the chain was broken at record {seq} ({why}): records from {seq} on were re-sealed as they stand"
            ));
        }
        self.db.write(|tx| {
            // The policy rows as they stand are accepted too: re-seal their summary.
            let (version, _) = policy_state(tx, &self.key)?;
            put_policy_state(tx, &self.key, version, rng)?;
            audit::append(
                tx,
                &self.mac,
                AuditEvent::signer(AuditKind::Reset, detail),
                crate::auth::unix_now(),
            )
            .map_err(HomeError::Sql)
        })?;
        let at = self.db.read(|c| Ok(self.position(c)))??;
        self.checkpoint.close();
        checkpoint::replace(&self.dir, &self.key, at, rng)?;
        Ok(at)
    }

    /// Appends one audit record in its own transaction and advances the checkpoint.
    ///
    /// # Errors
    /// Database or checkpoint errors.
    pub fn record(&self, event: AuditEvent) -> Result<(), HomeError> {
        self.db.write(|tx| {
            audit::append(tx, &self.mac, event, crate::auth::unix_now())
                .map_err(|e| HomeError::Db(self.sql(e)))
        })?;
        self.advance_checkpoint(&mut rand::rngs::OsRng)?;
        Ok(())
    }

    fn sql(&self, source: rusqlite::Error) -> DbError {
        DbError::Sqlite {
            path: self.db.path().to_path_buf(),
            source,
        }
    }

    // -----------------------------------------------------------------------------------
    // Wallets
    // -----------------------------------------------------------------------------------

    /// Stores a new wallet's share (sealed, bound to its public record) and its public
    /// record, with an audit record, in one transaction.
    ///
    /// # Errors
    /// The wallet exists already, or the database failed.
    pub fn save_share<R: RngCore + CryptoRng>(
        &self,
        info: &WalletInfo,
        share: &KeyShare,
        rng: &mut R,
    ) -> Result<(), HomeError> {
        self.save_shares(&[(info, share)], rng)
    }

    /// A wallet's record as JSON and its share sealed under the store key, bound to that
    /// record (the AAD covers the group key and the JSON).
    fn seal_share<R: RngCore + CryptoRng>(
        &self,
        info: &WalletInfo,
        share: &KeyShare,
        rng: &mut R,
    ) -> Result<(String, Vec<u8>), HomeError> {
        let info_json = serde_json::to_string(info).map_err(|e| HomeError::Malformed {
            path: self.db.path().to_path_buf(),
            reason: e.to_string(),
        })?;
        let secret = share.to_secret_bytes().map_err(|source| HomeError::Key {
            path: self.db.path().to_path_buf(),
            source,
        })?;
        let sealed = self.key.seal(
            share_aad(&info.group_key, &info_json).as_bytes(),
            &secret,
            rng,
        );
        Ok((info_json, sealed))
    }

    /// Stores several wallets at once (one transaction, one audit record each; all or none).
    ///
    /// # Errors
    /// A wallet exists already, or the database failed.
    pub fn save_shares<R: RngCore + CryptoRng>(
        &self,
        wallets: &[(&WalletInfo, &KeyShare)],
        rng: &mut R,
    ) -> Result<(), HomeError> {
        let mut rows = Vec::with_capacity(wallets.len());
        for (info, share) in wallets {
            let (info_json, sealed) = self.seal_share(info, share, rng)?;
            rows.push((*info, info_json, sealed));
        }
        let now = crate::auth::unix_now();
        self.db.write(|tx| {
            for (info, info_json, sealed) in &rows {
                insert_wallet(tx, info, info_json, sealed)?;
                audit::append(
                    tx,
                    &self.mac,
                    AuditEvent {
                        kind: AuditKind::Wallet,
                        wallet: info.name.clone(),
                        group_key: info.group_key.to_string(),
                        coordinator: info.coordinator.to_string(),
                        txid: String::new(),
                        outflow_sats: 0,
                        fee_sats: 0,
                        detail: format!(
                            "stored share {} of a {}-of-{} wallet (fingerprint {})",
                            info.index,
                            info.threshold,
                            info.signers,
                            info.fingerprint
                                .map_or_else(|| "none".to_string(), |f| f.to_string())
                        ),
                    },
                    now,
                )
                .map_err(|e| HomeError::Db(self.sql(e)))?;
            }
            Ok::<_, HomeError>(())
        })?;
        self.advance_checkpoint(rng)?;
        Ok(())
    }

    /// Stores a transition's result as pending: the new public record and the new share,
    /// sealed and bound to that record, beside the current ones (audited). Refuses while
    /// another transition of the wallet is pending.
    ///
    /// # Errors
    /// Another pending transition, or the database failed.
    pub fn prepare_transition<R: RngCore + CryptoRng>(
        &self,
        session: &str,
        info: &WalletInfo,
        share: &KeyShare,
        rng: &mut R,
    ) -> Result<(), HomeError> {
        let (info_json, sealed) = self.seal_share(info, share, rng)?;
        self.db.write(|tx| {
            let other: Option<String> = tx
                .query_row(
                    "SELECT session FROM pending WHERE group_key = ?1",
                    [info.group_key.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(other) = other {
                if other != session {
                    return Err(HomeError::Malformed {
                        path: self.db.path().to_path_buf(),
                        reason: format!(
                            "transition {other} of this wallet is pending; it must be committed or aborted first (`ckm wallet resume` on the coordinator)"
                        ),
                    });
                }
            }
            tx.execute(
                "INSERT INTO pending (group_key, session, epoch, info, share) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(group_key) DO UPDATE SET session = excluded.session, epoch = excluded.epoch,
                 info = excluded.info, share = excluded.share",
                rusqlite::params![
                    info.group_key.to_string(),
                    session,
                    i64::try_from(info.epoch).unwrap_or(i64::MAX),
                    info_json,
                    sealed
                ],
            )?;
            audit::append(
                tx,
                &self.mac,
                AuditEvent {
                    kind: AuditKind::Wallet,
                    wallet: info.name.clone(),
                    group_key: info.group_key.to_string(),
                    coordinator: String::new(),
                    txid: String::new(),
                    outflow_sats: 0,
                    fee_sats: 0,
                    detail: format!("prepared epoch {} (transition {session})", info.epoch),
                },
                crate::auth::unix_now(),
            )?;
            Ok::<_, HomeError>(())
        })?;
        self.advance_checkpoint(rng)?;
        Ok(())
    }

    /// The pending transition of a wallet: (session, epoch it leads to).
    ///
    /// # Errors
    /// Database errors.
    pub fn pending_transition(
        &self,
        group_key: &GroupKey,
    ) -> Result<Option<(String, u64)>, HomeError> {
        Ok(self
            .db
            .read(|c| {
                c.query_row(
                    "SELECT session, epoch FROM pending WHERE group_key = ?1",
                    [group_key.to_string()],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()
            })?
            .map(|(s, e)| (s, u64::try_from(e).unwrap_or(0))))
    }

    /// Makes a pending transition current: its record and share replace the wallet's (or
    /// become the wallet, for a newcomer), the old share is erased (overwritten, and the
    /// journal truncated), all in one audited transaction. Returns the new epoch; `None` when
    /// no transition `session` is pending.
    ///
    /// # Errors
    /// Database errors.
    pub fn commit_transition<R: RngCore + CryptoRng>(
        &self,
        group_key: &GroupKey,
        session: &str,
        detail: &str,
        rng: &mut R,
    ) -> Result<Option<u64>, HomeError> {
        let epoch = self.db.write(|tx| {
            let row: Option<(i64, String, Vec<u8>)> = tx
                .query_row(
                    "SELECT epoch, info, share FROM pending WHERE group_key = ?1 AND session = ?2",
                    rusqlite::params![group_key.to_string(), session],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((epoch, info_json, share)) = row else {
                return Ok::<_, HomeError>(None);
            };
            let info = parse_info(self.db.path(), &info_json)?;
            let updated = tx.execute(
                "UPDATE wallets SET name = ?2, info = ?3, share = ?4 WHERE group_key = ?1",
                rusqlite::params![group_key.to_string(), info.name, info_json, share],
            )?;
            if updated == 0 {
                tx.execute(
                    "INSERT INTO wallets (group_key, name, info, share) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![group_key.to_string(), info.name, info_json, share],
                )?;
            }
            tx.execute(
                "DELETE FROM pending WHERE group_key = ?1",
                [group_key.to_string()],
            )?;
            audit::append(
                tx,
                &self.mac,
                AuditEvent {
                    kind: AuditKind::Wallet,
                    wallet: info.name.clone(),
                    group_key: group_key.to_string(),
                    coordinator: String::new(),
                    txid: String::new(),
                    outflow_sats: 0,
                    fee_sats: 0,
                    detail: format!(
                        "committed epoch {epoch}: {detail}; the previous share is erased"
                    ),
                },
                crate::auth::unix_now(),
            )?;
            Ok(Some(u64::try_from(epoch).unwrap_or(0)))
        })?;
        if epoch.is_some() {
            // The overwritten share may still sit in the write-ahead log: truncate it.
            self.db
                .read(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);"))?;
            self.advance_checkpoint(rng)?;
        }
        Ok(epoch)
    }

    /// Forgets a pending transition (audited). Returns whether one was pending.
    ///
    /// # Errors
    /// Database errors.
    pub fn abort_transition<R: RngCore + CryptoRng>(
        &self,
        group_key: &GroupKey,
        session: &str,
        rng: &mut R,
    ) -> Result<bool, HomeError> {
        let removed = self.db.write(|tx| {
            let n = tx.execute(
                "DELETE FROM pending WHERE group_key = ?1 AND session = ?2",
                rusqlite::params![group_key.to_string(), session],
            )?;
            if n > 0 {
                audit::append(
                    tx,
                    &self.mac,
                    AuditEvent::signer(
                        AuditKind::Wallet,
                        format!("aborted transition {session} of wallet {group_key}"),
                    ),
                    crate::auth::unix_now(),
                )?;
            }
            Ok::<_, HomeError>(n > 0)
        })?;
        if removed {
            self.db
                .read(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);"))?;
            self.advance_checkpoint(rng)?;
        }
        Ok(removed)
    }

    /// Every wallet held, by name.
    ///
    /// # Errors
    /// Database errors or malformed records.
    pub fn wallets(&self) -> Result<Vec<WalletInfo>, HomeError> {
        self.db.read(|c| Ok(list_from(c, self.db.path())))?
    }

    /// Looks a wallet up by name or group key (indexed).
    ///
    /// # Errors
    /// [`HomeError::UnknownWallet`].
    pub fn wallet(&self, name_or_key: &str) -> Result<WalletInfo, HomeError> {
        self.db
            .read(|c| Ok(find_in(c, self.db.path(), name_or_key)))?
    }

    /// Decrypts a wallet's share for immediate use (dropped, and zeroized, by the caller).
    /// The share only opens with the wallet's public record unchanged.
    ///
    /// # Errors
    /// Unknown wallet, an edited record, a corrupted blob or an inconsistent share.
    pub fn load_share(&self, group_key: &GroupKey) -> Result<KeyShare, HomeError> {
        let row: Option<(String, Vec<u8>)> = self.db.read(|c| {
            c.query_row(
                "SELECT info, share FROM wallets WHERE group_key = ?1",
                [group_key.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })?;
        let (info_json, sealed) =
            row.ok_or_else(|| HomeError::UnknownWallet(group_key.to_string()))?;
        let path = self.db.path().to_path_buf();
        let secret = self
            .key
            .open(share_aad(group_key, &info_json).as_bytes(), &sealed)
            .map_err(|source| HomeError::Store {
                path: path.clone(),
                source,
            })?;
        let share = KeyShare::from_secret_bytes(&secret).map_err(|source| HomeError::Key {
            path: path.clone(),
            source,
        })?;
        if GroupKey::of(share.group()) != *group_key {
            return Err(HomeError::Malformed {
                path,
                reason: "the share belongs to another group".into(),
            });
        }
        Ok(share)
    }

    // -----------------------------------------------------------------------------------
    // Policies and peers (sealed, versioned, audited)
    // -----------------------------------------------------------------------------------

    fn versioned<T: serde::de::DeserializeOwned + Default>(
        &self,
        conn: &Connection,
        name: &str,
    ) -> Result<(u64, T), HomeError> {
        let Some(sealed) = get_kv(conn, name).map_err(|e| self.sql(e))? else {
            return Ok((0, T::default()));
        };
        let plain = self
            .key
            .open(name.as_bytes(), &sealed)
            .map_err(|source| HomeError::Store {
                path: self.db.path().to_path_buf(),
                source,
            })?;
        let v: Versioned<T> = serde_json::from_slice(&plain).map_err(|e| HomeError::Malformed {
            path: self.db.path().to_path_buf(),
            reason: format!("{name}: {e}"),
        })?;
        Ok((v.version, v.value))
    }

    fn save_versioned<
        T: Serialize + serde::de::DeserializeOwned + Default,
        R: RngCore + CryptoRng,
    >(
        &self,
        name: &str,
        value: &T,
        kind: AuditKind,
        detail: String,
        rng: &mut R,
    ) -> Result<u64, HomeError> {
        let version = self.db.write(|tx| {
            let (current, _) = self.versioned::<T>(tx, name)?;
            let version = current + 1;
            let plain = serde_json::to_vec(&Versioned { version, value }).map_err(|e| {
                HomeError::Malformed {
                    path: self.db.path().to_path_buf(),
                    reason: e.to_string(),
                }
            })?;
            let sealed = self.key.seal(name.as_bytes(), &plain, rng);
            put_kv(tx, name, &sealed).map_err(|e| HomeError::Db(self.sql(e)))?;
            audit::append(
                tx,
                &self.mac,
                AuditEvent::signer(kind, format!("{detail} (version {version})")),
                crate::auth::unix_now(),
            )
            .map_err(|e| HomeError::Db(self.sql(e)))?;
            Ok::<_, HomeError>(version)
        })?;
        self.advance_checkpoint(rng)?;
        Ok(version)
    }

    /// The policy of one wallet (sealed; none means no limits). Read per request: one
    /// indexed row, whatever the number of wallets.
    ///
    /// # Errors
    /// A corrupted or tampered row.
    pub fn policy(&self, group_key: &GroupKey) -> Result<Policy, HomeError> {
        self.db.read(|c| Ok(read_policy(c, &self.key, group_key)))?
    }

    /// Every wallet's policy.
    ///
    /// # Errors
    /// A corrupted or tampered row.
    pub fn policies(&self) -> Result<BTreeMap<GroupKey, Policy>, HomeError> {
        self.db.read(|c| Ok(read_policies(c, &self.key)))?
    }

    /// Replaces one wallet's policy: a new policy version (the checkpoint records it),
    /// audited with `detail`.
    ///
    /// # Errors
    /// A database failure.
    pub fn set_policy<R: RngCore + CryptoRng>(
        &self,
        group_key: &GroupKey,
        policy: &Policy,
        detail: &str,
        rng: &mut R,
    ) -> Result<u64, HomeError> {
        let version = self.db.write(|tx| {
            let (current, _) = policy_state(tx, &self.key)?;
            let version = current + 1;
            put_policy(tx, &self.key, group_key, policy, version, rng)?;
            put_policy_state(tx, &self.key, version, rng)?;
            audit::append(
                tx,
                &self.mac,
                AuditEvent::signer(AuditKind::Policy, format!("{detail} (version {version})")),
                crate::auth::unix_now(),
            )
            .map_err(|e| HomeError::Db(self.sql(e)))?;
            Ok::<_, HomeError>(version)
        })?;
        self.advance_checkpoint(rng)?;
        Ok(version)
    }

    /// The peers this signer's operator approved for key generations (sealed).
    ///
    /// # Errors
    /// A corrupted or tampered value.
    pub fn load_peers(&self) -> Result<Peers, HomeError> {
        let (version, mut p) = self
            .db
            .read(|c| Ok(self.versioned::<Peers>(c, "peers")))??;
        p.version = version;
        Ok(p)
    }

    /// Replaces the approved peers (a new version, audited with `detail`).
    ///
    /// # Errors
    /// A database failure.
    pub fn save_peers<R: RngCore + CryptoRng>(
        &self,
        peers: &Peers,
        detail: &str,
        rng: &mut R,
    ) -> Result<u64, HomeError> {
        self.save_versioned("peers", peers, AuditKind::Peers, detail.to_string(), rng)
    }
}

/// The sealed summary of the policy rows: a version counter and a digest of every row.
#[derive(Serialize, Deserialize)]
struct PolicyState {
    version: u64,
    #[serde(with = "hex::serde")]
    digest: [u8; 32],
}

fn sql_err(source: rusqlite::Error) -> HomeError {
    HomeError::Sql(source)
}

fn sealed_error(name: &str, source: StoreError) -> HomeError {
    HomeError::Store {
        path: PathBuf::from(format!("signer.db ({name})")),
        source,
    }
}

/// The digest of every policy row: (group key, version, hash of the sealed blob).
fn policy_digest(conn: &Connection) -> Result<[u8; 32], HomeError> {
    use bitcoin::hashes::HashEngine;
    let mut stmt = conn
        .prepare("SELECT group_key, version, sealed FROM policies ORDER BY group_key")
        .map_err(sql_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })
        .map_err(sql_err)?;
    let mut engine = sha256::Hash::engine();
    for row in rows {
        let (gk, version, sealed) = row.map_err(sql_err)?;
        engine.input(&(gk.len() as u64).to_be_bytes());
        engine.input(gk.as_bytes());
        engine.input(&version.to_be_bytes());
        engine.input(sha256::Hash::hash(&sealed).as_byte_array());
    }
    Ok(sha256::Hash::from_engine(engine).to_byte_array())
}

/// The policy version and digest recorded in the sealed summary ((0, digest of no rows) when
/// there is none).
fn policy_state(conn: &Connection, key: &StoreKey) -> Result<(u64, [u8; 32]), HomeError> {
    let Some(sealed) = get_kv(conn, "policy_state").map_err(sql_err)? else {
        return Ok((0, sha256::Hash::hash(&[]).to_byte_array()));
    };
    let plain = key
        .open(b"policy_state", &sealed)
        .map_err(|e| sealed_error("policy_state", e))?;
    let s: PolicyState = serde_json::from_slice(&plain).map_err(|e| HomeError::Malformed {
        path: PathBuf::from("signer.db (policy_state)"),
        reason: e.to_string(),
    })?;
    Ok((s.version, s.digest))
}

/// Writes the sealed summary for the current rows at `version`.
pub(crate) fn put_policy_state<R: RngCore + CryptoRng>(
    conn: &Connection,
    key: &StoreKey,
    version: u64,
    rng: &mut R,
) -> Result<(), HomeError> {
    let digest = policy_digest(conn)?;
    let plain =
        serde_json::to_vec(&PolicyState { version, digest }).map_err(|e| HomeError::Malformed {
            path: PathBuf::from("signer.db (policy_state)"),
            reason: e.to_string(),
        })?;
    put_kv(
        conn,
        "policy_state",
        &key.seal(b"policy_state", &plain, rng),
    )
    .map_err(sql_err)
}

fn policy_aad(group_key: &GroupKey) -> String {
    format!("policy:{group_key}")
}

/// Writes one wallet's policy row at `version` (sealed; the summary must be rewritten after).
pub(crate) fn put_policy<R: RngCore + CryptoRng>(
    conn: &Connection,
    key: &StoreKey,
    group_key: &GroupKey,
    policy: &Policy,
    version: u64,
    rng: &mut R,
) -> Result<(), HomeError> {
    let plain = serde_json::to_vec(&Versioned {
        version,
        value: policy,
    })
    .map_err(|e| HomeError::Malformed {
        path: PathBuf::from("signer.db (policies)"),
        reason: e.to_string(),
    })?;
    let sealed = key.seal(policy_aad(group_key).as_bytes(), &plain, rng);
    conn.execute(
        "INSERT INTO policies (group_key, version, sealed) VALUES (?1, ?2, ?3)
         ON CONFLICT(group_key) DO UPDATE SET version = excluded.version, sealed = excluded.sealed",
        rusqlite::params![
            group_key.to_string(),
            i64::try_from(version).unwrap_or(i64::MAX),
            sealed
        ],
    )
    .map_err(sql_err)?;
    Ok(())
}

fn open_policy(
    key: &StoreKey,
    group_key: &GroupKey,
    version: i64,
    sealed: &[u8],
) -> Result<Policy, HomeError> {
    let plain = key
        .open(policy_aad(group_key).as_bytes(), sealed)
        .map_err(|e| sealed_error("policies", e))?;
    let v: Versioned<Policy> =
        serde_json::from_slice(&plain).map_err(|e| HomeError::Malformed {
            path: PathBuf::from("signer.db (policies)"),
            reason: e.to_string(),
        })?;
    if i64::try_from(v.version).ok() != Some(version) {
        return Err(HomeError::State(StateError::PolicyReplaced));
    }
    Ok(v.value)
}

fn read_policy(
    conn: &Connection,
    key: &StoreKey,
    group_key: &GroupKey,
) -> Result<Policy, HomeError> {
    let row: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT version, sealed FROM policies WHERE group_key = ?1",
            [group_key.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql_err)?;
    match row {
        Some((version, sealed)) => open_policy(key, group_key, version, &sealed),
        None => Ok(Policy::default()),
    }
}

fn read_policies(
    conn: &Connection,
    key: &StoreKey,
) -> Result<BTreeMap<GroupKey, Policy>, HomeError> {
    let mut stmt = conn
        .prepare("SELECT group_key, version, sealed FROM policies ORDER BY group_key")
        .map_err(sql_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })
        .map_err(sql_err)?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (gk, version, sealed) = row.map_err(sql_err)?;
        let gk: GroupKey =
            gk.parse()
                .map_err(|e: crate::keys::ParseKeyError| HomeError::Malformed {
                    path: PathBuf::from("signer.db (policies)"),
                    reason: e.to_string(),
                })?;
        out.insert(gk, open_policy(key, &gk, version, &sealed)?);
    }
    Ok(out)
}

/// Inserts a wallet row.
pub(crate) fn insert_wallet(
    conn: &Connection,
    info: &WalletInfo,
    info_json: &str,
    sealed: &[u8],
) -> Result<(), HomeError> {
    let exists: bool = conn
        .query_row(
            "SELECT 1 FROM wallets WHERE group_key = ?1",
            [info.group_key.to_string()],
            |_| Ok(true),
        )
        .optional()
        .map_err(|source| {
            HomeError::Db(DbError::Sqlite {
                path: PathBuf::from("signer.db"),
                source,
            })
        })?
        .unwrap_or(false);
    if exists {
        return Err(HomeError::WalletExists(info.group_key.to_string()));
    }
    conn.execute(
        "INSERT INTO wallets (group_key, name, info, share) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![info.group_key.to_string(), info.name, info_json, sealed],
    )
    .map_err(|source| {
        HomeError::Db(DbError::Sqlite {
            path: PathBuf::from("signer.db"),
            source,
        })
    })?;
    Ok(())
}

/// Associated data of a sealed share: the group key and a hash of the wallet's public
/// record, so that editing the record (its coordinator, roster, …) makes the share unusable.
pub(crate) fn share_aad(group_key: &GroupKey, info_json: &str) -> String {
    format!(
        "share:{group_key}:{}",
        sha256::Hash::hash(info_json.as_bytes())
    )
}

fn parse_info(path: &Path, text: &str) -> Result<WalletInfo, HomeError> {
    serde_json::from_str(text).map_err(|e| HomeError::Malformed {
        path: path.to_path_buf(),
        reason: format!("wallet record: {e}"),
    })
}

fn list_from(conn: &Connection, path: &Path) -> Result<Vec<WalletInfo>, HomeError> {
    let sql = |source| {
        HomeError::Db(DbError::Sqlite {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut stmt = conn
        .prepare("SELECT info FROM wallets ORDER BY name, group_key")
        .map_err(sql)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(sql)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(parse_info(path, &row.map_err(sql)?)?);
    }
    Ok(out)
}

fn find_in(conn: &Connection, path: &Path, name_or_key: &str) -> Result<WalletInfo, HomeError> {
    let text: Option<String> = conn
        .query_row(
            "SELECT info FROM wallets WHERE group_key = ?1 OR name = ?1 ORDER BY group_key LIMIT 1",
            [name_or_key],
            |r| r.get(0),
        )
        .optional()
        .map_err(|source| {
            HomeError::Db(DbError::Sqlite {
                path: path.to_path_buf(),
                source,
            })
        })?;
    match text {
        Some(t) => parse_info(path, &t),
        None => Err(HomeError::UnknownWallet(name_or_key.to_string())),
    }
}

/// Lists the wallets of a signer directory without unlocking it (public info only).
///
/// # Errors
/// Database errors or malformed records.
pub fn list_wallets(dir: &Path) -> Result<Vec<WalletInfo>, HomeError> {
    let path = SignerDb::path_in(dir);
    if !path.exists() {
        return crate::signer::legacy::list_v1_wallets(dir);
    }
    let conn = SignerDb::open_read_only(&path)?;
    list_from(&conn, &path)
}

/// Finds a wallet by name or group key in a signer directory without unlocking it.
///
/// # Errors
/// [`HomeError::UnknownWallet`].
pub fn find_wallet(dir: &Path, name_or_key: &str) -> Result<WalletInfo, HomeError> {
    let path = SignerDb::path_in(dir);
    if !path.exists() {
        return crate::signer::legacy::list_v1_wallets(dir)?
            .into_iter()
            .find(|w| w.name == name_or_key || w.group_key.to_string() == name_or_key)
            .ok_or_else(|| HomeError::UnknownWallet(name_or_key.to_string()));
    }
    let conn = SignerDb::open_read_only(&path)?;
    find_in(&conn, &path, name_or_key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frost::pedersen::{run_in_memory, DkgParams};

    #[test]
    fn shares_round_trip_and_corruption_is_refused() {
        let mut rng = rand::thread_rng();
        let dir = tempfile::tempdir().unwrap();
        let shares = run_in_memory(DkgParams::new(2, 3).unwrap(), &mut rng).unwrap();
        let home =
            SignerHome::init(dir.path(), b"pw", KdfParams::fast_for_tests(), &mut rng).unwrap();
        let group_key = GroupKey::of(shares[0].group());
        let info = WalletInfo {
            name: "w".into(),
            network: Network::Regtest,
            group_key,
            coordinator: home.identity().public(),
            threshold: 2,
            signers: 3,
            index: 1,
            fingerprint: None,
            keygen: None,
            epoch: 0,
            transitions: Vec::new(),
        };
        home.save_share(&info, &shares[0], &mut rng).unwrap();
        assert!(matches!(
            home.save_share(&info, &shares[0], &mut rng),
            Err(HomeError::WalletExists(_))
        ));
        let loaded = home.load_share(&group_key).unwrap();
        assert_eq!(loaded.identifier(), shares[0].identifier());
        assert_eq!(home.wallet("w").unwrap(), info);
        assert_eq!(home.wallet(&group_key.to_string()).unwrap(), info);
        assert_eq!(list_wallets(home.dir()).unwrap(), vec![info.clone()]);

        // Wrong passphrase.
        assert!(matches!(
            SignerHome::open(dir.path(), b"nope"),
            Err(HomeError::Store {
                source: StoreError::WrongPassphrase,
                ..
            })
        ));
        // An edited public record (another coordinator) makes the share unusable.
        let mut edited = info.clone();
        edited.coordinator = crate::identity::IdentityKey::generate(&mut rng).public();
        let text = serde_json::to_string(&edited).unwrap();
        home.db
            .write(|tx| {
                tx.execute("UPDATE wallets SET info = ?1", [&text])
                    .map_err(|e| HomeError::Db(home.sql(e)))
            })
            .unwrap();
        assert!(matches!(
            home.load_share(&group_key),
            Err(HomeError::Store { .. })
        ));
        // Path-like wallet keys cannot even be expressed.
        assert!("../../etc/passwd".parse::<GroupKey>().is_err());
        // The state checks out (the wallet record is audited).
        let s = home.check_state(&mut rng).unwrap();
        assert_eq!(s.at.audit_count, 1);
    }
}
