//! The sealed checkpoint: how far the signer's records had got (number of audit records, the
//! last record's MAC, the policy and peers versions), kept in its own small database
//! (`checkpoint.db`) beside `signer.db` and advanced with every decision. A `signer.db` whose
//! audit records or policy are missing, truncated or older than the checkpoint — a restored
//! backup, a deleted file — is detected at start-up and the signer refuses to sign until the
//! operator runs `ckm signer state reset` (audited).
//!
//! Not covered: replacing the whole home (both databases) with an older copy. Detecting that
//! needs a monotonic counter outside the machine's disk (a TPM or secure element).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bdk_wallet::rusqlite::{self, Connection, OptionalExtension, TransactionBehavior};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::store::{StoreError, StoreKey};

const AAD: &[u8] = b"ckm/signer/checkpoint";

/// How far the records had got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Number of audit records.
    pub audit_count: u64,
    /// MAC of the last audit record.
    #[serde(with = "hex::serde")]
    pub audit_last_mac: [u8; 32],
    /// Version of the sealed policies.
    pub policy_version: u64,
    /// Version of the sealed peers.
    pub peers_version: u64,
}

impl Checkpoint {
    /// The later of two checkpoints, component by component (the audit position by count).
    pub fn max(self, other: Checkpoint) -> Checkpoint {
        let (audit_count, audit_last_mac) = if other.audit_count > self.audit_count {
            (other.audit_count, other.audit_last_mac)
        } else {
            (self.audit_count, self.audit_last_mac)
        };
        Checkpoint {
            audit_count,
            audit_last_mac,
            policy_version: self.policy_version.max(other.policy_version),
            peers_version: self.peers_version.max(other.peers_version),
        }
    }
}

/// Errors of the checkpoint store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// SQLite failed.
    #[error("checkpoint {}", path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The sealed value does not open or decode.
    #[error("checkpoint {} is corrupted or sealed under another passphrase", path.display())]
    Sealed {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: StoreError,
    },
}

/// The checkpoint database of a signer directory.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join("checkpoint.db")
}

fn open(path: &Path) -> Result<Connection, CheckpointError> {
    let sql = |source| CheckpointError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(sql)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(sql)?;
    // Write-ahead log, synced on every commit: one fsync per advance (a rollback journal
    // takes three), and the server keeps its connection open (see `CheckpointFile`).
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=FULL;
         CREATE TABLE IF NOT EXISTS checkpoint (id INTEGER PRIMARY KEY CHECK (id = 0), sealed BLOB NOT NULL);",
    )
    .map_err(sql)?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(conn)
}

fn read(
    conn: &Connection,
    path: &Path,
    key: &StoreKey,
) -> Result<Option<Checkpoint>, CheckpointError> {
    let sealed: Option<Vec<u8>> = conn
        .query_row("SELECT sealed FROM checkpoint WHERE id = 0", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|source| CheckpointError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    let plain = key
        .open(AAD, &sealed)
        .map_err(|source| CheckpointError::Sealed {
            path: path.to_path_buf(),
            source,
        })?;
    serde_json::from_slice(&plain)
        .map(Some)
        .map_err(|e| CheckpointError::Sealed {
            path: path.to_path_buf(),
            source: StoreError::Corrupted {
                reason: e.to_string(),
            },
        })
}

/// Reads the checkpoint of `dir` (`None` when there is none).
///
/// # Errors
/// SQLite errors or a corrupted value.
pub fn load(dir: &Path, key: &StoreKey) -> Result<Option<Checkpoint>, CheckpointError> {
    let path = path_in(dir);
    if !path.exists() {
        return Ok(None);
    }
    let conn = open(&path)?;
    read(&conn, &path, key)
}

/// Advances the checkpoint of `dir` to the later of what it holds and `to` (atomic across
/// processes: a CLI command and the running server may both advance it). Returns the result.
///
/// # Errors
/// SQLite errors (a full or read-only disk) or a corrupted value.
pub fn advance<R: RngCore + CryptoRng>(
    dir: &Path,
    key: &StoreKey,
    to: Checkpoint,
    rng: &mut R,
) -> Result<Checkpoint, CheckpointError> {
    let path = path_in(dir);
    let mut conn = open(&path)?;
    advance_on(&mut conn, &path, key, to, rng)
}

fn advance_on<R: RngCore + CryptoRng>(
    conn: &mut Connection,
    path: &Path,
    key: &StoreKey,
    to: Checkpoint,
    rng: &mut R,
) -> Result<Checkpoint, CheckpointError> {
    let sql = |source| CheckpointError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql)?;
    let current = read(&tx, path, key)?.unwrap_or_default();
    let next = current.max(to);
    let plain = serde_json::to_vec(&next).unwrap_or_default();
    let sealed = key.seal(AAD, &plain, rng);
    tx.execute(
        "INSERT INTO checkpoint (id, sealed) VALUES (0, ?1)
         ON CONFLICT(id) DO UPDATE SET sealed = excluded.sealed",
        [sealed],
    )
    .map_err(sql)?;
    tx.commit().map_err(sql)?;
    Ok(next)
}

/// The checkpoint of a long-running signer: one connection kept open (reopened after an
/// error), so an advance costs one synced commit.
#[derive(Debug)]
pub struct CheckpointFile {
    path: PathBuf,
    conn: Mutex<Option<Connection>>,
}

impl CheckpointFile {
    /// The checkpoint of signer directory `dir` (nothing is opened yet).
    pub fn new(dir: &Path) -> Self {
        CheckpointFile {
            path: path_in(dir),
            conn: Mutex::new(None),
        }
    }

    /// Like [`advance`], on the kept connection.
    ///
    /// # Errors
    /// SQLite errors (a full or read-only disk) or a corrupted value.
    pub fn advance<R: RngCore + CryptoRng>(
        &self,
        key: &StoreKey,
        to: Checkpoint,
        rng: &mut R,
    ) -> Result<Checkpoint, CheckpointError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(open(&self.path)?);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(CheckpointError::Sqlite {
                path: self.path.clone(),
                source: rusqlite::Error::InvalidQuery,
            });
        };
        let result = advance_on(conn, &self.path, key, to, rng);
        if result.is_err() {
            // Start from a fresh connection next time.
            *guard = None;
        }
        result
    }

    /// Drops the kept connection (before the file is replaced or removed).
    pub fn close(&self) {
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Replaces the checkpoint with exactly `to` (the audited reset).
///
/// # Errors
/// SQLite errors.
pub fn replace<R: RngCore + CryptoRng>(
    dir: &Path,
    key: &StoreKey,
    to: Checkpoint,
    rng: &mut R,
) -> Result<(), CheckpointError> {
    let path = path_in(dir);
    let conn = open(&path)?;
    let plain = serde_json::to_vec(&to).unwrap_or_default();
    let sealed = key.seal(AAD, &plain, rng);
    conn.execute(
        "INSERT INTO checkpoint (id, sealed) VALUES (0, ?1)
         ON CONFLICT(id) DO UPDATE SET sealed = excluded.sealed",
        [sealed],
    )
    .map_err(|source| CheckpointError::Sqlite { path, source })?;
    Ok(())
}
