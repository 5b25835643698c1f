//! A signer's tamper-evident audit log: an append-only file of JSON lines, each record
//! carrying the hash of the previous one, so editing, removing or reordering a record breaks
//! the chain at that record ([`verify`]).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use bitcoin::hashes::{sha256, Hash};
use serde::{Deserialize, Serialize};

/// Hash of "no previous record".
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audited event (what the caller supplies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Wallet name.
    pub wallet: String,
    /// Wallet group key.
    pub group_key: String,
    /// Coordinator identity key.
    pub coordinator: String,
    /// Txid of the unsigned transaction.
    pub txid: String,
    /// Amount paid out (excluding change and fee), in satoshis.
    pub amount_sats: u64,
    /// Fee, in satoshis.
    pub fee_sats: u64,
    /// `signed`, or `refused: <reason>`.
    pub outcome: String,
}

/// A record as stored: the event plus sequence number, time and the hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// 0-based position in the log.
    pub seq: u64,
    /// Unix time, seconds.
    pub time: u64,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Hash of the previous record (hex), [`GENESIS`] for the first.
    pub prev: String,
    /// Hash of this record without this field (hex).
    pub hash: String,
}

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// File system error.
    #[error("audit log {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The chain is broken at this record.
    #[error("audit log broken at record {line} (line {line_number}): {reason}", line_number = line + 1)]
    Broken {
        /// 0-based record number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
}

fn record_hash(record: &AuditRecord) -> String {
    #[derive(Serialize)]
    struct Unhashed<'a> {
        seq: u64,
        time: u64,
        #[serde(flatten)]
        event: &'a AuditEvent,
        prev: &'a str,
    }
    let bytes = serde_json::to_vec(&Unhashed {
        seq: record.seq,
        time: record.time,
        event: &record.event,
        prev: &record.prev,
    })
    .unwrap_or_default();
    sha256::Hash::hash(&bytes).to_string()
}

/// The append side of an audit log (keep one per file, behind a lock).
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    next_seq: u64,
    last_hash: String,
}

impl AuditLog {
    /// Opens (or starts) the log at `path`, verifying the existing chain.
    ///
    /// # Errors
    /// I/O errors or a broken chain (the signer refuses to append to a tampered log).
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let records = if path.exists() {
            verify(path)?
        } else {
            Vec::new()
        };
        let (next_seq, last_hash) = match records.last() {
            Some(r) => (r.seq + 1, r.hash.clone()),
            None => (0, GENESIS.to_string()),
        };
        Ok(AuditLog {
            path: path.to_path_buf(),
            next_seq,
            last_hash,
        })
    }

    /// Appends one record and syncs it to disk.
    ///
    /// # Errors
    /// I/O errors.
    pub fn append(&mut self, event: AuditEvent, time: u64) -> Result<AuditRecord, AuditError> {
        let mut record = AuditRecord {
            seq: self.next_seq,
            time,
            event,
            prev: self.last_hash.clone(),
            hash: String::new(),
        };
        record.hash = record_hash(&record);
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(&record).unwrap_or_default();
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        file.write_all(&line).map_err(io)?;
        file.sync_data().map_err(io)?;
        self.next_seq += 1;
        self.last_hash = record.hash.clone();
        Ok(record)
    }

    /// Amount paid out by `group_key` in records with outcome `signed` since `since` (unix).
    ///
    /// # Errors
    /// I/O errors or a broken chain.
    pub fn paid_since(&self, group_key: &str, since: u64) -> Result<u64, AuditError> {
        if !self.path.exists() {
            return Ok(0);
        }
        Ok(verify(&self.path)?
            .iter()
            .filter(|r| {
                r.time >= since && r.event.group_key == group_key && r.event.outcome == "signed"
            })
            .map(|r| r.event.amount_sats)
            .fold(0u64, u64::saturating_add))
    }
}

/// Reads and checks the whole chain; returns the records.
///
/// # Errors
/// [`AuditError::Broken`] naming the first bad record.
pub fn verify(path: &Path) -> Result<Vec<AuditRecord>, AuditError> {
    let file = File::open(path).map_err(|source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut records: Vec<AuditRecord> = Vec::new();
    let mut prev = GENESIS.to_string();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let n = n as u64;
        let line = line.map_err(|source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let broken = |reason: String| AuditError::Broken { line: n, reason };
        let record: AuditRecord =
            serde_json::from_str(&line).map_err(|e| broken(format!("not a record: {e}")))?;
        if record.seq != n {
            return Err(broken(format!(
                "sequence number {} where {n} was expected",
                record.seq
            )));
        }
        if record.prev != prev {
            return Err(broken(
                "its previous-hash does not match the record before it".into(),
            ));
        }
        if record_hash(&record) != record.hash {
            return Err(broken("its contents do not match its hash (edited)".into()));
        }
        prev = record.hash.clone();
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(txid: &str, amount: u64) -> AuditEvent {
        AuditEvent {
            wallet: "w".into(),
            group_key: "02aa".into(),
            coordinator: "c".into(),
            txid: txid.into(),
            amount_sats: amount,
            fee_sats: 10,
            outcome: "signed".into(),
        }
    }

    #[test]
    fn chain_verifies_and_detects_edits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditLog::open(&path).unwrap();
        for i in 0..4 {
            log.append(event(&format!("t{i}"), 100 * (i + 1)), 1000 + i)
                .unwrap();
        }
        assert_eq!(verify(&path).unwrap().len(), 4);
        assert_eq!(log.paid_since("02aa", 1002).unwrap(), 300 + 400);
        // Reopening continues the chain.
        let mut log = AuditLog::open(&path).unwrap();
        log.append(event("t4", 1), 2000).unwrap();
        assert_eq!(verify(&path).unwrap().len(), 5);

        let text = std::fs::read_to_string(&path).unwrap();
        let edited = text.replacen("\"amount_sats\":300", "\"amount_sats\":3", 1);
        assert_ne!(edited, text);
        std::fs::write(&path, edited).unwrap();
        match verify(&path) {
            Err(AuditError::Broken { line, .. }) => assert_eq!(line, 2),
            other => panic!("expected a broken chain at record 2, got {other:?}"),
        }
        assert!(AuditLog::open(&path).is_err());

        // Removing a record breaks the chain at the next one.
        let lines: Vec<&str> = text.lines().collect();
        let removed = [lines[0], lines[2], lines[3], lines[4]].join("\n") + "\n";
        std::fs::write(&path, removed).unwrap();
        assert!(matches!(
            verify(&path),
            Err(AuditError::Broken { line: 1, .. })
        ));
    }
}
