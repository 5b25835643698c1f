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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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
    // Cached per connection: the server's kept connection reads and writes on every decision.
    let sealed: Option<Vec<u8>> = conn
        .prepare_cached("SELECT sealed FROM checkpoint WHERE id = 0")
        .and_then(|mut st| st.query_row([], |r| r.get(0)))
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
    tx.prepare_cached(
        "INSERT INTO checkpoint (id, sealed) VALUES (0, ?1)
         ON CONFLICT(id) DO UPDATE SET sealed = excluded.sealed",
    )
    .and_then(|mut st| st.execute([sealed]))
    .map_err(sql)?;
    tx.commit().map_err(sql)?;
    Ok(next)
}

/// The checkpoint of a long-running signer: one connection kept open (reopened after an
/// error), so an advance costs one synced commit; and the advance that follows a signing
/// decision made off the signing's critical path ([`CheckpointFile::advance_soon`]).
#[derive(Debug)]
pub struct CheckpointFile {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    conn: Mutex<Option<Connection>>,
    later: Mutex<Later>,
    /// Writes made, and those of them synced (for tests and the argument in the docs).
    writes: AtomicU64,
    synced_writes: AtomicU64,
    /// Signalled when a write ends (for [`CheckpointFile::flush`]).
    settled: Condvar,
    /// Signalled when an advance is wanted (for the waiting background thread).
    wake: Condvar,
}

/// How long the background thread waits for the next decision before it ends: a busy signer
/// keeps one thread instead of starting one per signing.
const IDLE: Duration = Duration::from_secs(5);

/// How long the background thread waits after a decision before it writes the checkpoint:
/// the decisions of those milliseconds are folded into one write (one fsync instead of one per
/// signing under load), and the write stays out of the way of the coordinator's aggregation
/// of the signing that asked for it. It widens the window described in
/// `docs/wallet-wide-limits.md` ("The checkpoint off the critical path") by as much.
const FOLD: Duration = Duration::from_millis(5);

/// The background thread commits without an fsync (`synchronous=NORMAL`: on disk if the signer
/// crashes, in the page cache if the machine does) unless no synced write was made in the last
/// `SYNC_EVERY`; and a write left unsynced is written again, synced, once `SYNC_EVERY` has
/// passed since the last synced one (or at once for a graceful stop). So a signer signing
/// back to back pays one fsync per second for its checkpoint instead of one per decision, a
/// signer crash loses nothing more than before, and a machine crash (power loss) loses at most
/// the last `SYNC_EVERY` of the checkpoint's advance, which start-up then sees as records ahead
/// of the checkpoint (accepted; `docs/wallet-wide-limits.md`, "The checkpoint off the critical
/// path"). Writes on the caller's thread ([`CheckpointFile::advance`]) are always synced.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The background advance: the checkpoint wanted next (the latest position asked for), whether
/// the thread exists and whether it is writing, and the error of its last write.
#[derive(Debug, Default)]
struct Later {
    wanted: Option<(StoreKey, Checkpoint)>,
    /// The background thread exists (writing or waiting for work).
    alive: bool,
    /// The background thread is about to write the wanted checkpoint (its [`FOLD`] wait) or
    /// is writing it.
    writing: bool,
    failed: Option<String>,
    /// The last background write, made without an fsync: written again, synced, within
    /// [`SYNC_EVERY`].
    unsynced: Option<(StoreKey, Checkpoint)>,
    /// When the last synced write was made.
    synced_at: Option<Instant>,
    /// A graceful stop waits: sync the unsynced write now.
    hurry: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn advance<R: RngCore + CryptoRng>(
        &self,
        key: &StoreKey,
        to: Checkpoint,
        rng: &mut R,
    ) -> Result<Checkpoint, CheckpointError> {
        self.write(key, to, rng, true)
    }

    /// One write on the kept connection, synced (`synchronous=FULL`) or not (`NORMAL`).
    fn write<R: RngCore + CryptoRng>(
        &self,
        key: &StoreKey,
        to: Checkpoint,
        rng: &mut R,
        synced: bool,
    ) -> Result<Checkpoint, CheckpointError> {
        let mut guard = lock(&self.conn);
        if guard.is_none() {
            *guard = Some(open(&self.path)?);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(CheckpointError::Sqlite {
                path: self.path.clone(),
                source: rusqlite::Error::InvalidQuery,
            });
        };
        let mode = if synced {
            "PRAGMA synchronous=FULL"
        } else {
            "PRAGMA synchronous=NORMAL"
        };
        let result = conn
            .execute_batch(mode)
            .map_err(|source| CheckpointError::Sqlite {
                path: self.path.clone(),
                source,
            })
            .and_then(|()| advance_on(conn, &self.path, key, to, rng));
        if result.is_err() {
            // Start from a fresh connection next time.
            *guard = None;
        } else {
            self.writes.fetch_add(1, Ordering::Relaxed);
            if synced {
                self.synced_writes.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// The background thread: writes the wanted checkpoint whenever there is one (decisions
    /// that arrive during a write are folded into the next), synced as [`SYNC_EVERY`] says,
    /// and ends after [`IDLE`] without one once its last write is synced.
    fn run_later<R: RngCore + CryptoRng>(&self, mut rng: R) {
        loop {
            let (job, synced) = {
                let mut later = lock(&self.later);
                later.writing = false;
                self.settled.notify_all();
                loop {
                    if later.wanted.is_some() {
                        // Wait FOLD first (a stop waits for it too): decisions made
                        // meanwhile go into this one write, and the write does not compete for
                        // the CPU with the signing whose share just left.
                        later.writing = true;
                        drop(later);
                        std::thread::sleep(FOLD);
                        later = lock(&self.later);
                        if let Some(job) = later.wanted.take() {
                            let synced = later.hurry
                                || later.synced_at.is_none_or(|at| at.elapsed() >= SYNC_EVERY);
                            break (job, synced);
                        }
                        later.writing = false;
                        continue;
                    }
                    let wait = match (&later.unsynced, later.synced_at) {
                        (None, _) => IDLE,
                        (Some(_), _) if later.hurry => Duration::ZERO,
                        (Some(_), Some(at)) => SYNC_EVERY.saturating_sub(at.elapsed()),
                        (Some(_), None) => Duration::ZERO,
                    };
                    if wait.is_zero() {
                        if let Some(job) = later.unsynced.take() {
                            // Written again, synced: everything before it is on disk then.
                            later.writing = true;
                            break (job, true);
                        }
                    }
                    let (next, waited) = self
                        .wake
                        .wait_timeout(later, wait)
                        .unwrap_or_else(|p| p.into_inner());
                    later = next;
                    if waited.timed_out() && later.wanted.is_none() && later.unsynced.is_none() {
                        later.alive = false;
                        self.settled.notify_all();
                        return;
                    }
                }
            };
            let (key, at) = job;
            // Tests widen the window between a decision and its checkpoint (debug builds
            // only) to crash a signer inside it.
            #[cfg(debug_assertions)]
            if let Some(ms) = std::env::var("CKM_TEST_CHECKPOINT_DELAY_MS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
            {
                std::thread::sleep(Duration::from_millis(ms));
            }
            let written = self.write(&key, at, &mut rng, synced);
            let mut later = lock(&self.later);
            match written {
                Ok(_) if synced => {
                    later.synced_at = Some(Instant::now());
                    later.unsynced = None;
                    later.hurry = false;
                }
                Ok(_) => later.unsynced = Some((key, at)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot advance the checkpoint; the next signing retries before its share leaves");
                    later.failed = Some(e.to_string());
                    // The next decision writes (synced) on its own thread.
                    later.unsynced = None;
                    later.hurry = false;
                }
            }
        }
    }
}

impl CheckpointFile {
    /// The checkpoint of signer directory `dir` (nothing is opened yet).
    pub fn new(dir: &Path) -> Self {
        CheckpointFile {
            inner: Arc::new(Inner {
                path: path_in(dir),
                conn: Mutex::new(None),
                later: Mutex::new(Later::default()),
                writes: AtomicU64::new(0),
                synced_writes: AtomicU64::new(0),
                settled: Condvar::new(),
                wake: Condvar::new(),
            }),
        }
    }

    /// Like [`advance`], on the kept connection (after any background advance in flight).
    ///
    /// # Errors
    /// SQLite errors (a full or read-only disk) or a corrupted value.
    pub fn advance<R: RngCore + CryptoRng>(
        &self,
        key: &StoreKey,
        to: Checkpoint,
        rng: &mut R,
    ) -> Result<Checkpoint, CheckpointError> {
        self.inner.advance(key, to, rng)
    }

    /// Advances to `to` on a background thread and returns at once: the signing decision
    /// that called it is durable in `signer.db` already, so its share may leave while the
    /// checkpoint follows (`docs/BENCHMARKS.md` and `docs/operations.md` say why rollback
    /// detection still holds: start-up accepts records ahead of the checkpoint, and a
    /// graceful stop waits for it, [`CheckpointFile::flush`]). Advances asked for while one
    /// is being written are folded into the next write.
    ///
    /// # Errors
    /// When the last background advance failed, this one is written synchronously first;
    /// its error (a full or read-only disk) is returned, and the caller must then refuse to
    /// release its share, as before the checkpoint moved off the critical path.
    /// `rng` seals the checkpoint (on the background thread, or here).
    pub fn advance_soon<R: RngCore + CryptoRng + Send + 'static>(
        &self,
        key: &StoreKey,
        to: Checkpoint,
        mut rng: R,
    ) -> Result<(), CheckpointError> {
        let mut later = lock(&self.inner.later);
        if later.failed.take().is_some() {
            drop(later);
            return self.inner.advance(key, to, &mut rng).map(|_| ());
        }
        later.wanted = Some(match later.wanted.take() {
            Some((k, at)) => (k, at.max(to)),
            None => (key.clone(), to),
        });
        if later.alive {
            self.inner.wake.notify_one();
            return Ok(());
        }
        later.alive = true;
        drop(later);
        let inner = Arc::clone(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("ckm-checkpoint".into())
            .spawn(move || inner.run_later(rng));
        if let Err(e) = spawned {
            // No thread (and the generator went with it): as when a background write fails,
            // the next decision writes the checkpoint synchronously before its share leaves.
            let mut later = lock(&self.inner.later);
            later.alive = false;
            later.failed = Some(format!("cannot start the checkpoint thread: {e}"));
            self.inner.settled.notify_all();
        }
        Ok(())
    }

    /// Waits until no background advance is in flight and the last one is synced (a
    /// graceful stop, before the file is replaced). Returns the error of the last background
    /// write, if it failed.
    pub fn flush(&self) -> Option<String> {
        let mut later = lock(&self.inner.later);
        // A write still to come is synced at once too.
        later.hurry = later.alive;
        self.inner.wake.notify_one();
        while later.alive && (later.writing || later.wanted.is_some() || later.unsynced.is_some()) {
            later = self
                .inner
                .settled
                .wait(later)
                .unwrap_or_else(|p| p.into_inner());
        }
        later.failed.clone()
    }

    /// Drops the kept connection (before the file is replaced or removed), after any
    /// background advance.
    pub fn close(&self) {
        let _ = self.flush();
        *lock(&self.inner.conn) = None;
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

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::store::KdfParams;

    fn at(count: u64) -> Checkpoint {
        Checkpoint {
            audit_count: count,
            ..Checkpoint::default()
        }
    }

    /// A signer directory's checkpoint file and a store key (sealing its value).
    fn fixture(seed: u64) -> (tempfile::TempDir, StoreKey, CheckpointFile) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut rng = StdRng::seed_from_u64(seed);
        let (key, _) =
            StoreKey::create(b"test", KdfParams::fast_for_tests(), &mut rng).expect("store key");
        let file = CheckpointFile::new(dir.path());
        (dir, key, file)
    }

    /// Decisions in quick succession go to one kept thread, which folds them into the latest;
    /// a flush returns once it is on disk; a later decision is written by the same thread.
    #[test]
    fn background_advances_fold_into_the_latest_and_flush_waits_for_them() {
        let (dir, key, file) = fixture(29);
        for count in [3, 1, 7, 5] {
            file.advance_soon(&key, at(count), StdRng::seed_from_u64(count))
                .expect("advance");
        }
        assert_eq!(file.flush(), None, "no background write failed");
        let written = load(dir.path(), &key).expect("load").expect("a checkpoint");
        assert_eq!(
            written.audit_count, 7,
            "the latest position asked for is on disk"
        );
        assert!(
            lock(&file.inner.later).alive,
            "the thread waits for the next decision"
        );
        file.advance_soon(&key, at(9), StdRng::seed_from_u64(9))
            .expect("advance");
        assert_eq!(file.flush(), None);
        let written = load(dir.path(), &key).expect("load").expect("a checkpoint");
        assert_eq!(written.audit_count, 9);
        file.close();
    }

    /// Waits (at most 10 s) until the background thread is neither waiting to write nor
    /// writing.
    fn settle(file: &CheckpointFile) {
        for _ in 0..1000 {
            {
                let later = lock(&file.inner.later);
                if !later.writing && later.wanted.is_none() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the checkpoint thread did not settle");
    }

    /// Back to back, only the first background write of a burst is synced; the last one is
    /// written again, synced, once SYNC_EVERY has passed, or at once by a graceful stop.
    #[test]
    fn a_burst_syncs_once_and_its_last_write_is_synced_later_or_at_a_stop() {
        let (dir, key, file) = fixture(30);
        let counts = |f: &CheckpointFile| {
            (
                f.inner.writes.load(Ordering::Relaxed),
                f.inner.synced_writes.load(Ordering::Relaxed),
            )
        };
        let burst = |from: u64| {
            for count in from..from + 8 {
                file.advance_soon(&key, at(count), StdRng::seed_from_u64(count))
                    .expect("advance");
                std::thread::sleep(FOLD + Duration::from_millis(3));
            }
            settle(&file);
        };
        burst(1);
        let (writes, synced) = counts(&file);
        assert!(
            writes >= 2 && synced < writes,
            "a burst syncs its first write only: {synced} of {writes} synced"
        );
        assert!(lock(&file.inner.later).unsynced.is_some());
        // Left alone, the thread syncs the last write once SYNC_EVERY has passed.
        std::thread::sleep(SYNC_EVERY + Duration::from_millis(300));
        settle(&file);
        assert!(lock(&file.inner.later).unsynced.is_none());
        assert_eq!(counts(&file), (writes + 1, synced + 1));
        let written = load(dir.path(), &key).expect("load").expect("a checkpoint");
        assert_eq!(written.audit_count, 8);

        // A second burst soon after: its first write is not synced; a stop syncs the last.
        burst(20);
        let (writes, synced) = counts(&file);
        assert!(
            lock(&file.inner.later).unsynced.is_some(),
            "{synced} of {writes}"
        );
        assert_eq!(file.flush(), None);
        assert!(lock(&file.inner.later).unsynced.is_none());
        assert_eq!(counts(&file).1, synced + 1, "the stop synced once");
        let written = load(dir.path(), &key).expect("load").expect("a checkpoint");
        assert_eq!(written.audit_count, 27);
        file.close();
    }
}
