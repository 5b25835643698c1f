//! The signer home of ckm before its SQLite store (file layout v1: `wallets/*.share`,
//! `policy.sealed`, `peers.sealed`, a hash-chained `audit.log` of JSON lines) and its
//! one-time conversion into `signer.db`.
//!
//! A leaf: it imports the home ([`crate::signer::home`]) and nothing imports it but the
//! callers that open a home. [`open_migrating`] opens a home of either layout (converting a
//! v1 home on first open, the old files kept under `legacy-v1/`); [`list_wallets`] and
//! [`find_wallet`] read either layout without unlocking it. In reading order: the v1 audit
//! log, then the conversion, then these entry points.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use bitcoin::hashes::{sha256, Hash};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::keys::GroupKey;
use crate::signer::audit::{self as keyed, AuditEvent, AuditKind};
use crate::signer::db::{put_kv, SignerDb};
use crate::signer::home::{
    insert_wallet, put_policy, put_policy_state, share_aad, HomeError, SignerHome, WalletInfo,
};
use crate::store::StoreKey;

/// Hash of "no previous record".
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audited event of a v1 log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyEvent {
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
pub struct LegacyRecord {
    /// 0-based position in the log.
    pub seq: u64,
    /// Unix time, seconds.
    pub time: u64,
    /// The event.
    #[serde(flatten)]
    pub event: LegacyEvent,
    /// Hash of the previous record (hex), [`GENESIS`] for the first.
    pub prev: String,
    /// Hash of this record without this field (hex).
    pub hash: String,
}

/// Errors reading a v1 audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LegacyAuditError {
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

fn record_hash(record: &LegacyRecord) -> String {
    #[derive(Serialize)]
    struct Unhashed<'a> {
        seq: u64,
        time: u64,
        #[serde(flatten)]
        event: &'a LegacyEvent,
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

/// Reads and checks the whole chain; returns the records.
///
/// # Errors
/// [`LegacyAuditError::Broken`] naming the first bad record.
pub fn verify(path: &Path) -> Result<Vec<LegacyRecord>, LegacyAuditError> {
    let file = File::open(path).map_err(|source| LegacyAuditError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut records: Vec<LegacyRecord> = Vec::new();
    let mut prev = GENESIS.to_string();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let n = n as u64;
        let line = line.map_err(|source| LegacyAuditError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let broken = |reason: String| LegacyAuditError::Broken { line: n, reason };
        let record: LegacyRecord =
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

/// The files of a v1 home (relative to the signer directory).
const V1_FILES: [&str; 3] = ["policy.sealed", "peers.sealed", "audit.log"];

/// Whether the signer directory holds a v1 layout (wallet files, policy, peers or log).
pub fn is_v1(dir: &Path) -> bool {
    V1_FILES.iter().any(|f| dir.join(f).exists())
        || std::fs::read_dir(dir.join("wallets"))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
}

/// The wallets of a v1 home (public records), by name.
///
/// # Errors
/// Unreadable or malformed files.
pub fn list_v1_wallets(dir: &Path) -> Result<Vec<WalletInfo>, HomeError> {
    let wallets = dir.join("wallets");
    if !wallets.exists() {
        return Ok(Vec::new());
    }
    let io = |source| HomeError::Io {
        action: "list",
        path: wallets.clone(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&wallets).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json")
            || !path.with_extension("share").exists()
        {
            continue;
        }
        let bytes = crate::store::read_limited(&path, 1 << 20).map_err(|source| HomeError::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        out.push(
            serde_json::from_slice(&bytes).map_err(|e| HomeError::Malformed {
                path: path.clone(),
                reason: e.to_string(),
            })?,
        );
    }
    out.sort_by(|a: &WalletInfo, b| a.name.cmp(&b.name));
    Ok(out)
}

fn fail(dir: &Path, reason: impl std::fmt::Display) -> HomeError {
    HomeError::Migration {
        dir: dir.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Converts a v1 home into `signer.db`: every wallet (its share re-sealed and bound to its
/// record), the policy and peers (version 1), and every v1 audit record (re-chained under the
/// keyed MAC, outflow = amount + fee), then a `migrated` record. The database is built under
/// a temporary name and moved into place only when complete; the v1 files are then moved to
/// `legacy-v1/`. A v1 log whose hash chain is broken stops the conversion.
///
/// # Errors
/// [`HomeError::Migration`] naming the problem; nothing is changed then.
pub fn migrate<R: RngCore + CryptoRng>(
    dir: &Path,
    key: &StoreKey,
    rng: &mut R,
) -> Result<(), HomeError> {
    let records = if dir.join("audit.log").exists() {
        verify(&dir.join("audit.log")).map_err(|e| fail(dir, format!("its v1 audit log: {e}")))?
    } else {
        Vec::new()
    };
    let wallets = list_v1_wallets(dir)?;
    let open_sealed =
        |name: &str, aad: &[u8]| -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, HomeError> {
            let path = dir.join(name);
            if !path.exists() {
                return Ok(None);
            }
            let sealed = crate::store::read_limited(&path, 1 << 20)
                .map_err(|e| fail(dir, format!("{}: {e}", path.display())))?;
            key.open(aad, &sealed)
                .map(Some)
                .map_err(|e| fail(dir, format!("{}: {e}", path.display())))
        };
    let policy = open_sealed("policy.sealed", b"policy")?;
    let peers = open_sealed("peers.sealed", b"peers")?;

    let tmp = dir.join("signer.db.migrating");
    for p in [
        tmp.clone(),
        tmp.with_extension("migrating-wal"),
        tmp.with_extension("migrating-shm"),
    ] {
        let _ = std::fs::remove_file(p);
    }
    {
        let db = SignerDb::open(&tmp).map_err(|e| fail(dir, e))?;
        let mac = key.mac_key(keyed::MAC_PURPOSE);
        db.write(|tx| {
            for info in &wallets {
                let gk: GroupKey = info.group_key;
                let old = open_sealed(&format!("wallets/{gk}.share"), format!("share:{gk}").as_bytes())?
                    .ok_or_else(|| fail(dir, format!("wallet {gk}: share file missing")))?;
                crate::frost::shares::KeyShare::from_secret_bytes(&old)
                    .map_err(|e| fail(dir, format!("wallet {gk}: {e}")))?;
                let info_json = serde_json::to_string(info).map_err(|e| fail(dir, e))?;
                let sealed = key.seal(share_aad(&gk, &info_json).as_bytes(), &old, rng);
                insert_wallet(tx, info, &info_json, &sealed)?;
            }
            if let Some(plain) = &policy {
                let v1: crate::signer::policy::Policies =
                    serde_json::from_slice(plain).map_err(|e| fail(dir, format!("policy: {e}")))?;
                for (gk, p) in &v1.wallets {
                    put_policy(tx, key, gk, p, 1, rng)?;
                }
                put_policy_state(tx, key, 1, rng)?;
            }
            if let Some(plain) = &peers {
                let value: serde_json::Value =
                    serde_json::from_slice(plain).map_err(|e| fail(dir, format!("peers: {e}")))?;
                let versioned = serde_json::json!({ "version": 1, "value": value });
                let bytes = serde_json::to_vec(&versioned).map_err(|e| fail(dir, e))?;
                put_kv(tx, "peers", &key.seal(b"peers", &bytes, rng)).map_err(|e| fail(dir, e))?;
            }
            for r in &records {
                let (kind, detail) = match r.event.outcome.strip_prefix("refused: ") {
                    Some(reason) => (AuditKind::Refused, reason.to_string()),
                    None if r.event.outcome == "signed" => (AuditKind::Signed, String::new()),
                    None => (AuditKind::Refused, r.event.outcome.clone()),
                };
                keyed::append(
                    tx,
                    &mac,
                    AuditEvent {
                        kind,
                        wallet: r.event.wallet.clone(),
                        group_key: r.event.group_key.clone(),
                        coordinator: r.event.coordinator.clone(),
                        txid: r.event.txid.clone(),
                        outflow_sats: r.event.amount_sats.saturating_add(r.event.fee_sats),
                        fee_sats: r.event.fee_sats,
                        detail: format!("imported v1 record {}{}{detail}", r.seq, if detail.is_empty() { "" } else { ": " }),
                        inputs: Vec::new(),
                    },
                    r.time,
                )
                .map_err(|e| fail(dir, e))?;
            }
            keyed::append(
                tx,
                &mac,
                AuditEvent::signer(
                    AuditKind::Migrated,
                    format!(
                        "converted from the v1 file layout: {} wallet(s), {} audit record(s), policy {}, peers {}",
                        wallets.len(),
                        records.len(),
                        if policy.is_some() { "imported" } else { "none" },
                        if peers.is_some() { "imported" } else { "none" },
                    ),
                ),
                crate::auth::unix_now(),
            )
            .map_err(|e| fail(dir, e))?;
            Ok::<_, HomeError>(())
        })?;
        db.read(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);"))
            .map_err(|e| fail(dir, e))?;
        // The converted records become the checkpoint (written before the database moves
        // into place: a crash in between only repeats the conversion, which replaces it).
        let (audit_count, audit_last_mac) = db.read(keyed::tail).map_err(|e| fail(dir, e))?;
        let at = crate::signer::checkpoint::Checkpoint {
            audit_count,
            audit_last_mac,
            policy_version: u64::from(policy.is_some()),
            peers_version: u64::from(peers.is_some()),
        };
        crate::signer::checkpoint::replace(dir, key, at, rng).map_err(|e| fail(dir, e))?;
    }
    let target = SignerDb::path_in(dir);
    std::fs::rename(&tmp, &target)
        .map_err(|e| fail(dir, format!("moving the new database into place: {e}")))?;
    for side in ["signer.db.migrating-wal", "signer.db.migrating-shm"] {
        let _ = std::fs::remove_file(dir.join(side));
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    tracing::info!(dir = %dir.display(), wallets = wallets.len(), records = records.len(), "converted the v1 signer home into signer.db");
    Ok(())
}

/// Moves the files of a converted v1 home into `legacy-v1/` (idempotent; run after the
/// database exists, so a crash during the move only leaves files to move next time).
pub fn tidy(dir: &Path) {
    if !SignerDb::path_in(dir).exists() || !is_v1(dir) {
        return;
    }
    let legacy = dir.join("legacy-v1");
    if std::fs::create_dir_all(legacy.join("wallets")).is_err() {
        return;
    }
    for f in V1_FILES {
        if dir.join(f).exists() {
            let _ = std::fs::rename(dir.join(f), legacy.join(f));
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("wallets")) {
        for e in entries.flatten() {
            let _ = std::fs::rename(e.path(), legacy.join("wallets").join(e.file_name()));
        }
    }
    let _ = std::fs::remove_dir(dir.join("wallets"));
}

/// Unlocks the signer home under `home` with the passphrase; a v1 home is converted into
/// `signer.db` first ([`migrate`], with randomness from `rng`) and its old files moved to
/// `legacy-v1/` ([`tidy`]). The state is not checked against the checkpoint here: see
/// [`SignerHome::check_state`].
///
/// # Errors
/// Not initialized, wrong passphrase, corrupted files, or a failed conversion.
pub fn open_migrating<R: RngCore + CryptoRng>(
    home: &Path,
    passphrase: &[u8],
    rng: &mut R,
) -> Result<SignerHome, HomeError> {
    SignerHome::open_with(home, passphrase, |dir, key| {
        if !SignerDb::path_in(dir).exists() && is_v1(dir) {
            migrate(dir, key, rng)?;
        }
        tidy(dir);
        Ok(())
    })
}

/// Lists the wallets of a signer directory of either layout without unlocking it (public
/// records only): from `signer.db`, or from the files of a v1 home not converted yet.
///
/// # Errors
/// Database errors, unreadable files or malformed records.
pub fn list_wallets(dir: &Path) -> Result<Vec<WalletInfo>, HomeError> {
    if !SignerDb::path_in(dir).exists() {
        return list_v1_wallets(dir);
    }
    crate::signer::home::list_wallets(dir)
}

/// Finds a wallet by name or group key in a signer directory of either layout without
/// unlocking it.
///
/// # Errors
/// [`HomeError::UnknownWallet`], or the errors of [`list_wallets`].
pub fn find_wallet(dir: &Path, name_or_key: &str) -> Result<WalletInfo, HomeError> {
    if !SignerDb::path_in(dir).exists() {
        return list_v1_wallets(dir)?
            .into_iter()
            .find(|w| w.name == name_or_key || w.group_key.to_string() == name_or_key)
            .ok_or_else(|| HomeError::UnknownWallet(name_or_key.to_string()));
    }
    crate::signer::home::find_wallet(dir, name_or_key)
}
