//! A signer's home directory: its identity key, and its state in one SQLite database
//! (`signer.db`: wallets, sealed shares, sealed versioned policies and peers, keyed audit
//! records, reservations), with a sealed checkpoint beside it (`checkpoint.db`). Everything
//! secret is encrypted under one passphrase-derived store key (Argon2id +
//! XChaCha20-Poly1305); files are mode 0600. Shares are decrypted only for the moment they
//! are used, and each is bound (as associated data) to its wallet's public record, so an edit
//! of that record makes the share unusable.
//!
//! Layout under `<home>/signer/`: `store.json` (KDF parameters, salt), `identity.sealed`,
//! `identity.pub`, `signer.db`, `checkpoint.db`. The home knows only this layout: a home of
//! an earlier one is converted by the caller of [`SignerHome::open_with`], before the
//! database opens.
//!
//! In reading order:
//! - this file: [`SignerHome`] and its errors, creating and opening a home, and its state
//!   (the records checked against the sealed checkpoint, the checkpoint advanced, the
//!   operator's reset);
//! - `records`: the wallets' public records ([`WalletInfo`]), listing and lookups;
//! - `shares`: the sealed shares (sealed, stored, loaded) and a restore from a backup;
//! - `transitions`: a transition's pending record and share (prepared, committed,
//!   aborted);
//! - `policy`: the sealed, versioned wallet policies and approved peers.
//!
//! May import the lower floors (`keys`, `frost`, `identity`, `store`, the certified records
//! of `protocol`) and the signer's own storage pieces (`db`, `audit`, `checkpoint`, `peers`,
//! `policy`); nothing else of `signer/`, and nothing of `net`, `wallet`, `ops` or `cli`.

mod policy;
mod records;
mod shares;
mod transitions;

use std::fs;
use std::path::{Path, PathBuf};

use bdk_wallet::rusqlite::{self, Connection, OptionalExtension};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::frost::shares::KeyError;
use crate::identity::{IdentityKey, IdentityPublic};
use crate::signer::audit::{self, AuditError, AuditEvent, AuditKind};
use crate::signer::checkpoint::{self, Checkpoint, CheckpointError};
use crate::signer::db::{DbError, SignerDb};
use crate::signer::peers::Peers;
use crate::store::{
    read_limited, write_atomic, KdfParams, MacKey, StoreError, StoreHeader, StoreKey,
};

use policy::{policy_digest, policy_state};
pub(crate) use policy::{put_policy, put_policy_state};
pub use records::{find_wallet, list_wallets, WalletInfo};
pub use shares::Restore;
pub(crate) use shares::{insert_wallet, share_aad};
pub use transitions::StoredVotes;

const MAX_FILE: u64 = 1 << 20;

/// Errors of the signer's home.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HomeError {
    /// `signer init` has not been run.
    #[error("{} is not a signer home (no signer store was created there)", .0.display())]
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
    /// A name several wallets share (names are scoped per coordinator).
    #[error("{count} wallets on this signer are named {name:?} (names are chosen by each coordinator): name one by its group key or fingerprint: {candidates}")]
    AmbiguousWallet {
        /// The name given.
        name: String,
        /// How many wallets have it.
        count: usize,
        /// Group key, fingerprint and coordinator of each.
        candidates: String,
    },
    /// The same coordinator already named another wallet so.
    #[error("coordinator {coordinator} already has a wallet named {name:?} on this signer (group key {group_key})")]
    NameTaken {
        /// The name.
        name: String,
        /// The coordinator.
        coordinator: String,
        /// The existing wallet's group key.
        group_key: String,
    },
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
/// sealed checkpoint. The signer refuses to sign until its operator resets the state
/// ([`SignerHome::reset_state`]).
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
        "the signer refuses to sign until its operator checks the home and orders a state reset, giving a reason (recorded in the audit log)"
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
    parsed: records::Parsed,
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
            parsed: records::Parsed::default(),
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

    /// Unlocks the store with the passphrase, then runs `convert` with the signer directory
    /// and the store key before the database is opened (created when missing): the place
    /// where a home of an earlier layout is converted, so the home itself knows only the
    /// current one. The state is not checked against the checkpoint here: see
    /// [`SignerHome::check_state`].
    ///
    /// # Errors
    /// Not initialized, wrong passphrase, corrupted files, or what `convert` returns.
    pub fn open_with(
        home: &Path,
        passphrase: &[u8],
        convert: impl FnOnce(&Path, &StoreKey) -> Result<(), HomeError>,
    ) -> Result<Self, HomeError> {
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
        convert(&dir, &key)?;
        let db = SignerDb::open(&db_path)?;
        let mac = key.mac_key(audit::MAC_PURPOSE);
        Ok(SignerHome {
            checkpoint: checkpoint::CheckpointFile::new(&dir),
            parsed: records::Parsed::default(),
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

    // State and checkpoint.

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

    /// Advances the checkpoint to where the records are now, on a background thread that
    /// seals it with `rng` (after a signing decision: see
    /// [`checkpoint::CheckpointFile::advance_soon`]).
    ///
    /// # Errors
    /// Database errors; the checkpoint's error when the last background advance failed and
    /// the synchronous retry fails too.
    pub fn advance_checkpoint_soon<R: RngCore + CryptoRng + Send + 'static>(
        &self,
        rng: R,
    ) -> Result<(), HomeError> {
        let at = self.db.read(|c| Ok(self.position(c)))??;
        Ok(self.checkpoint.advance_soon(&self.key, at, rng)?)
    }

    /// Waits for a background checkpoint advance in flight (a graceful stop).
    pub fn flush_checkpoint(&self) {
        if let Some(e) = self.checkpoint.flush() {
            tracing::error!(error = %e, "the last checkpoint advance failed");
        }
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
    pub fn record<R: RngCore + CryptoRng>(
        &self,
        event: AuditEvent,
        rng: &mut R,
    ) -> Result<(), HomeError> {
        self.db.write(|tx| {
            audit::append(tx, &self.mac, event, crate::auth::unix_now())
                .map_err(|e| HomeError::Db(self.sql(e)))
        })?;
        self.advance_checkpoint(rng)?;
        Ok(())
    }

    fn sql(&self, source: rusqlite::Error) -> DbError {
        DbError::Sqlite {
            path: self.db.path().to_path_buf(),
            source,
        }
    }
}
