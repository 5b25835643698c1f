//! One writer per wallet operation on a coordinator home.
//!
//! A transition, a `resume` or a spend reads the wallet, talks to the signers for seconds to
//! minutes, and writes the outcome back. Two such operations on one wallet at once (two
//! `ckm wallet` processes, or a console and the command line) would each act on what the
//! other is changing: a `resume` could ask for abort votes on the transition another process
//! is still driving. [`WalletLock`] is an advisory lock (`flock` on Unix, `LockFileEx` on
//! Windows) on a file beside the wallet's database, held for one operation: taken before the
//! wallet is read, released when the guard is dropped, and by the operating system when the
//! process dies (even by `kill -9`), so a crash never leaves a stale lock behind.
//!
//! Most operations take the lock exclusively ([`Access::Exclusive`]): transitions, `resume`,
//! `migrate`, spends that choose coins, and revealing a receive address (`wallet address`,
//! the console's receive page: reading the last index and writing the next must not
//! interleave, or two callers get the same address). Co-signing a PSBT made beforehand changes no coin
//! choice and may run many at once (a ROAST load, several payments signed in parallel), so it
//! takes the lock shared ([`Access::Shared`]): any number of signings together, none beside a
//! transition.
//!
//! The holder writes what it is doing (operation, process id, start time) into the lock file;
//! a process that finds the wallet busy reads it back to say who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fs4::fs_std::FileExt;
use serde::{Deserialize, Serialize};

/// Longest holder description read back from a lock file.
const MAX_HOLDER: u64 = 4096;
/// How often a waiting process tries again.
const POLL: Duration = Duration::from_millis(100);

/// How an operation holds a wallet's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Alone: no other operation on the wallet meanwhile.
    Exclusive,
    /// Beside other shared holders, never beside an exclusive one.
    Shared,
}

/// Who holds a wallet's lock, as it wrote it (of shared holders, the last one to write).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The operation, e.g. `wallet refresh`.
    pub operation: String,
    /// Its process id.
    pub pid: u32,
    /// When it took the lock (seconds since the Unix epoch).
    pub since: u64,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ago = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|now| now.as_secs().saturating_sub(self.since))
            .unwrap_or(0);
        write!(
            f,
            "`ckm {}` (process {}, for {ago} s)",
            self.operation, self.pid
        )
    }
}

/// Why a wallet's lock was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another operation holds it.
    #[error("wallet '{wallet}' is busy: {} holds it; nothing was done (try again once it ends)", match .holder { Some(h) => h.to_string(), None => "another ckm process".to_string() })]
    Busy {
        /// The wallet.
        wallet: String,
        /// Who holds the lock, when it could be read.
        holder: Option<Holder>,
    },
    /// The lock file cannot be opened, locked or written.
    #[error("locking wallet '{wallet}' ({})", path.display())]
    Io {
        /// The wallet.
        wallet: String,
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A wallet's lock, held until dropped.
#[derive(Debug)]
#[must_use = "the lock is released when this is dropped"]
pub struct WalletLock {
    // Closing the file releases the lock.
    _file: File,
}

impl WalletLock {
    /// The lock file of the wallet database at `db`: `.NAME.lock` beside it.
    pub fn path_for(db: &Path) -> PathBuf {
        let name = db
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        db.with_file_name(format!(".{name}.lock"))
    }

    /// Takes the lock of `wallet` at `path` for `operation` with `access`, trying again for
    /// up to `wait`; `waiting` is called once, with the holder, when the lock is busy at first.
    ///
    /// # Errors
    /// [`LockError::Busy`] naming the holder when `wait` passed; [`LockError::Io`].
    pub fn acquire(
        path: &Path,
        wallet: &str,
        operation: &str,
        access: Access,
        wait: Duration,
        mut waiting: impl FnMut(Option<&Holder>),
    ) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            wallet: wallet.to_string(),
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let deadline = Instant::now() + wait;
        let mut told = false;
        loop {
            let taken = match access {
                Access::Exclusive => FileExt::try_lock_exclusive(&file),
                Access::Shared => FileExt::try_lock_shared(&file),
            };
            if taken.map_err(io)? {
                break;
            }
            let holder = read_holder(&mut file);
            if Instant::now() >= deadline {
                return Err(LockError::Busy {
                    wallet: wallet.to_string(),
                    holder,
                });
            }
            if !told {
                waiting(holder.as_ref());
                told = true;
            }
            std::thread::sleep(POLL);
        }
        let holder = Holder {
            operation: operation.to_string(),
            pid: std::process::id(),
            since: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let text = serde_json::to_vec(&holder).map_err(|e| io(e.into()))?;
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&text).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(WalletLock { _file: file })
    }
}

/// The holder a lock file names, if it names one (it may be mid-write, or from an older ckm).
fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = Vec::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(MAX_HOLDER).read_to_end(&mut text).ok()?;
    serde_json::from_slice(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_first_and_a_dropped_one_frees_the_wallet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = WalletLock::path_for(&dir.path().join("vault.sqlite"));
        assert_eq!(path, dir.path().join(".vault.lock"));
        let first = WalletLock::acquire(
            &path,
            "vault",
            "wallet refresh",
            Access::Exclusive,
            Duration::ZERO,
            |_| {},
        )
        .expect("first lock");
        let mut seen = None;
        let busy = WalletLock::acquire(
            &path,
            "vault",
            "psbt sign",
            Access::Shared,
            Duration::from_millis(250),
            |h| seen = h.cloned(),
        );
        match busy {
            Err(LockError::Busy {
                holder: Some(h), ..
            }) => {
                assert_eq!(h.operation, "wallet refresh");
                assert_eq!(h.pid, std::process::id());
                assert_eq!(seen, Some(h));
            }
            other => panic!("expected busy, got {other:?}"),
        }
        drop(first);
        let lock = |operation, access| {
            WalletLock::acquire(&path, "vault", operation, access, Duration::ZERO, |_| {})
        };
        // Shared holders together; an exclusive one only once they are gone.
        let one = lock("psbt sign", Access::Shared).expect("shared");
        let two = lock("psbt sign", Access::Shared).expect("a second shared");
        assert!(matches!(
            lock("wallet resume", Access::Exclusive),
            Err(LockError::Busy { .. })
        ));
        drop((one, two));
        let again = lock("wallet resume", Access::Exclusive);
        assert!(again.is_ok(), "{again:?}");
    }
}
