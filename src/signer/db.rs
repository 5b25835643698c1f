//! The signer's state in one SQLite database (`signer.db` in the signer directory): wallets
//! indexed by group key and name (public info plus the sealed share), one sealed policy row
//! per wallet under a sealed versioned summary, sealed versioned peers, the keyed audit
//! chain, and spend reservations. WAL journal, full
//! synchronous commits, short `BEGIN IMMEDIATE` write transactions; connections are pooled so
//! that readers and the cryptography of different requests run in parallel.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bdk_wallet::rusqlite::{self, Connection, OpenFlags, OptionalExtension, Transaction};

/// The schema version this build writes (2: signed records and reservations keep the
/// outpoints a spend consumes; a version-1 database gains the columns when opened).
pub const SCHEMA_VERSION: u32 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS wallets (
    group_key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    info TEXT NOT NULL,
    share BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS wallets_by_name ON wallets(name);
CREATE TABLE IF NOT EXISTS policies (
    group_key TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    sealed BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    group_key TEXT NOT NULL,
    wallet TEXT NOT NULL,
    kind TEXT NOT NULL,
    coordinator TEXT NOT NULL,
    txid TEXT NOT NULL,
    outflow INTEGER NOT NULL,
    fee INTEGER NOT NULL,
    detail TEXT NOT NULL,
    mac BLOB NOT NULL,
    inputs TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_by_wallet ON audit(group_key, kind, time);
CREATE TABLE IF NOT EXISTS pending (
    group_key TEXT PRIMARY KEY,
    session TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    info TEXT NOT NULL,
    share BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS transition_votes (
    session TEXT PRIMARY KEY,
    group_key TEXT NOT NULL,
    prepared TEXT NOT NULL,
    standing TEXT,
    certificate TEXT,
    record TEXT,
    decided INTEGER
);
CREATE INDEX IF NOT EXISTS transition_votes_by_wallet ON transition_votes(group_key, decided);
CREATE TABLE IF NOT EXISTS reservations (
    session TEXT PRIMARY KEY,
    group_key TEXT NOT NULL,
    txid TEXT NOT NULL,
    outflow INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    inputs TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS reservations_by_wallet ON reservations(group_key, expires);
";

/// Whether `table` has a column named `column`.
fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = stmt.query_map([], |r| r.get::<_, String>(1))?;
    for name in names {
        if name? == column {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Errors of the signer database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// SQLite failed (including a full or read-only disk).
    #[error("signer database {}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// Written by a newer ckm.
    #[error("signer database {} has schema version {found}; this ckm reads up to {SCHEMA_VERSION}", path.display())]
    Schema {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
}

/// The database: its path and a pool of open connections.
#[derive(Debug)]
pub struct SignerDb {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
}

/// How many idle connections are kept.
const POOL: usize = 8;

impl SignerDb {
    /// The database file of a signer directory.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join("signer.db")
    }

    /// Opens (creating if needed) the database at `path` and applies the schema.
    ///
    /// # Errors
    /// SQLite errors, or a database written by a newer ckm.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let db = SignerDb {
            path: path.to_path_buf(),
            pool: Mutex::new(Vec::new()),
        };
        let conn = db.connect(true)?;
        let sql = |source| DbError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        conn.execute_batch(SCHEMA).map_err(sql)?;
        let version: Option<u32> = conn
            .query_row(
                "SELECT CAST(value AS INTEGER) FROM kv WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        match version {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(DbError::Schema {
                    path: path.to_path_buf(),
                    found: v,
                })
            }
            Some(v) if v == SCHEMA_VERSION => {}
            _ => {
                // Version 1 (or none): add the columns of version 2 where missing.
                for table in ["audit", "reservations"] {
                    if !has_column(&conn, table, "inputs").map_err(sql)? {
                        conn.execute_batch(&format!(
                            "ALTER TABLE {table} ADD COLUMN inputs TEXT NOT NULL DEFAULT ''"
                        ))
                        .map_err(sql)?;
                    }
                }
                conn.execute(
                    "INSERT INTO kv (key, value) VALUES ('schema_version', ?1)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [SCHEMA_VERSION.to_string()],
                )
                .map_err(sql)?;
            }
        }
        db.put_back(conn);
        Ok(db)
    }

    /// Opens an existing database read-only (public listings without the passphrase).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn open_read_only(path: &Path) -> Result<Connection, DbError> {
        Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| DbError::Sqlite {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, source: rusqlite::Error) -> DbError {
        DbError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn connect(&self, create: bool) -> Result<Connection, DbError> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(&self.path, flags).map_err(|e| self.error(e))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| self.error(e))?;
        // WAL for concurrent readers; FULL so that a committed decision survives a crash;
        // secure_delete so that an erased share's bytes are overwritten, not left in free pages.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=ON;",
        )
        .map_err(|e| self.error(e))?;
        if create {
            set_private(&self.path);
        }
        Ok(conn)
    }

    fn take(&self) -> Result<Connection, DbError> {
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        match pooled {
            Some(c) => Ok(c),
            None => self.connect(false),
        }
    }

    fn put_back(&self, conn: Connection) {
        if let Ok(mut p) = self.pool.lock() {
            if p.len() < POOL {
                p.push(conn);
            }
        }
    }

    /// Runs `f` on a pooled connection (reads; no transaction).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, DbError> {
        let conn = self.take()?;
        let out = f(&conn).map_err(|e| self.error(e));
        self.put_back(conn);
        out
    }

    /// Runs `f` inside a `BEGIN IMMEDIATE` transaction and commits it when `f` succeeds;
    /// any error (from `f` or the commit, e.g. a full or read-only disk) rolls it back. The
    /// commit is synced (`synchronous=FULL`): it survives a power loss.
    ///
    /// # Errors
    /// `f`'s error or the database's.
    pub fn write<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.write_as(true, f)
    }

    /// Like [`SignerDb::write`], but the commit is not synced (`synchronous=NORMAL` for this
    /// transaction): it survives a crash of the process, not of the machine, and the next
    /// synced commit makes it durable too (WAL order). For state that dies with the process
    /// anyway — a round-1 reservation is worth nothing without the round-1 nonces, which
    /// live in memory (`docs/wallet-wide-limits.md`).
    ///
    /// # Errors
    /// `f`'s error or the database's.
    pub fn write_unsynced<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.write_as(false, f)
    }

    fn write_as<T, E: From<DbError>>(
        &self,
        synced: bool,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.take()?;
        if !synced {
            conn.execute_batch("PRAGMA synchronous=NORMAL;")
                .map_err(|e| E::from(self.error(e)))?;
        }
        let result = (|| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| E::from(self.error(e)))?;
            let out = f(&tx)?;
            tx.commit().map_err(|e| E::from(self.error(e)))?;
            Ok(out)
        })();
        // Back to synced commits before the connection is pooled again.
        let restored = synced || conn.execute_batch("PRAGMA synchronous=FULL;").is_ok();
        // A connection whose transaction failed half-way is dropped, not pooled.
        if result.is_ok() && restored {
            self.put_back(conn);
        }
        result
    }
}

fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for p in [
        path.to_path_buf(),
        path.with_extension("db-wal"),
        path.with_extension("db-shm"),
    ] {
        if p.exists() {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
        }
    }
}

/// Reads a value of the key-value table.
///
/// # Errors
/// SQLite errors.
pub fn get_kv(conn: &Connection, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT value FROM kv WHERE key = ?1")
        .and_then(|mut st| st.query_row([key], |r| r.get(0)))
        .optional()
}

/// Writes a value of the key-value table.
///
/// # Errors
/// SQLite errors.
pub fn put_kv(conn: &Connection, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO kv (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut st| st.execute(rusqlite::params![key, value]))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::audit::{self, AuditEvent, AuditKind};
    use crate::store::{KdfParams, StoreKey};

    /// The audit and reservation tables of schema version 1, and its marker.
    const SCHEMA_V1: &str = "
        CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
        CREATE TABLE audit (seq INTEGER PRIMARY KEY, time INTEGER NOT NULL,
            group_key TEXT NOT NULL, wallet TEXT NOT NULL, kind TEXT NOT NULL,
            coordinator TEXT NOT NULL, txid TEXT NOT NULL, outflow INTEGER NOT NULL,
            fee INTEGER NOT NULL, detail TEXT NOT NULL, mac BLOB NOT NULL);
        CREATE TABLE reservations (session TEXT PRIMARY KEY, group_key TEXT NOT NULL,
            txid TEXT NOT NULL, outflow INTEGER NOT NULL, expires INTEGER NOT NULL);
        INSERT INTO kv (key, value) VALUES ('schema_version', '1');";

    #[test]
    fn a_version_1_database_gains_the_inputs_and_keeps_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = SignerDb::path_in(dir.path());
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
        let (key, _) = StoreKey::create(b"pw", KdfParams::fast_for_tests(), &mut rng).unwrap();
        let mac = key.mac_key(audit::MAC_PURPOSE);
        let signed = AuditEvent {
            kind: AuditKind::Signed,
            wallet: "w".into(),
            group_key: "gk".into(),
            coordinator: "c".into(),
            txid: "00".repeat(32),
            outflow_sats: 5,
            fee_sats: 1,
            detail: "session 1".into(),
            inputs: Vec::new(),
        };
        {
            // A record written by schema version 1: its MAC has no inputs part.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA_V1).unwrap();
            let tag = mac.mac(&[
                &audit::GENESIS,
                &0u64.to_be_bytes(),
                &10u64.to_be_bytes(),
                b"signed",
                b"w",
                b"gk",
                b"c",
                signed.txid.as_bytes(),
                &5u64.to_be_bytes(),
                &1u64.to_be_bytes(),
                b"session 1",
            ]);
            conn.execute(
                "INSERT INTO audit VALUES (0, 10, 'gk', 'w', 'signed', 'c', ?1, 5, 1, 'session 1', ?2)",
                rusqlite::params![signed.txid, tag.as_slice()],
            )
            .unwrap();
        }
        let db = SignerDb::open(&path).unwrap();
        let outpoint: bitcoin::OutPoint = format!("{}:3", "11".repeat(32)).parse().unwrap();
        db.write(|tx| {
            audit::append(
                tx,
                &mac,
                AuditEvent {
                    inputs: vec![outpoint],
                    ..signed.clone()
                },
                20,
            )
            .map_err(|e| DbError::Sqlite {
                path: path.clone(),
                source: e,
            })
        })
        .unwrap();
        let (count, _) = db
            .read(|c| Ok(audit::verify_chain(c, &mac, |_| ())))
            .unwrap()
            .unwrap();
        assert_eq!(count, 2);
        let version: String = db
            .read(|c| {
                c.query_row(
                    "SELECT value FROM kv WHERE key = 'schema_version'",
                    [],
                    |r| r.get(0),
                )
            })
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION.to_string());
        let spends = db.read(|c| audit::signed_since(c, "gk", 0)).unwrap();
        assert!(spends.iter().any(|s| s.inputs.is_empty()));
        assert!(spends.iter().any(|s| s.inputs == vec![outpoint]));
        // Stripping the inputs of the new record breaks the chain.
        db.write(|tx| {
            tx.execute("UPDATE audit SET inputs = '' WHERE seq = 1", [])
                .map_err(|e| DbError::Sqlite {
                    path: path.clone(),
                    source: e,
                })
        })
        .unwrap();
        assert!(db
            .read(|c| Ok(audit::verify_chain(c, &mac, |_| ())))
            .unwrap()
            .is_err());
    }
}
