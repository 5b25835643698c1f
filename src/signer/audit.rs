//! A signer's audit records in its database, chained with a key only the passphrase holder
//! has: each record's MAC (HMAC-SHA256 under a key derived from the store key) covers the
//! previous record's MAC and every field, so editing, removing, reordering or rewriting
//! records is detected ([`verify_chain`]) and cannot be repaired without the passphrase.
//! Together with the sealed checkpoint (`crate::signer::checkpoint`), truncation and
//! replacement by an older copy are detected as well.
//!
//! The records of kind [`AuditKind::Signed`] are also the signer's spending history: the
//! window sums of the limits are indexed queries over them ([`signed_since`]).

use std::fmt;
use std::str::FromStr;

use bdk_wallet::rusqlite::{self, Connection, OptionalExtension};
use bitcoin::{OutPoint, Txid};
use serde::{Deserialize, Serialize};

use crate::protocol::spend_limits::{SpendEntry, SpendState};
use crate::store::MacKey;

/// The MAC purpose of the audit chain (see [`crate::store::StoreKey::mac_key`]).
pub const MAC_PURPOSE: &str = "audit-chain";

/// The MAC before the first record.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditKind {
    /// Signature shares were released for a spend.
    Signed,
    /// A spend was refused (the detail names the rule).
    Refused,
    /// A wallet's share was stored (key generation).
    Wallet,
    /// The policy changed.
    Policy,
    /// The approved peers changed.
    Peers,
    /// The operator accepted the current state after a rollback warning.
    Reset,
    /// The home was converted from the v1 file layout (and imported v1 records).
    Migrated,
    /// The home was restored from a share backup (`ckm signer restore`).
    Restored,
    /// A restored wallet's epoch was confirmed by fresh statements of the other members.
    Confirmed,
}

impl AuditKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Signed => "signed",
            AuditKind::Refused => "refused",
            AuditKind::Wallet => "wallet",
            AuditKind::Policy => "policy",
            AuditKind::Peers => "peers",
            AuditKind::Reset => "reset",
            AuditKind::Migrated => "migrated",
            AuditKind::Restored => "restored",
            AuditKind::Confirmed => "confirmed",
        }
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "signed" => AuditKind::Signed,
            "refused" => AuditKind::Refused,
            "wallet" => AuditKind::Wallet,
            "policy" => AuditKind::Policy,
            "peers" => AuditKind::Peers,
            "reset" => AuditKind::Reset,
            "migrated" => AuditKind::Migrated,
            "restored" => AuditKind::Restored,
            "confirmed" => AuditKind::Confirmed,
            other => return Err(format!("unknown audit kind {other:?}")),
        })
    }
}

/// One audited event (what the caller supplies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// What happened.
    pub kind: AuditKind,
    /// Wallet name (empty for signer-wide events).
    pub wallet: String,
    /// Wallet group key (empty for signer-wide events).
    pub group_key: String,
    /// Coordinator identity key (empty when none).
    pub coordinator: String,
    /// Txid of the unsigned transaction (empty when none).
    pub txid: String,
    /// What left (or would leave) the wallet: inputs − change, in satoshis.
    pub outflow_sats: u64,
    /// Fee, in satoshis.
    pub fee_sats: u64,
    /// Free text: the refused rule, the policy set, the reset's reason…
    pub detail: String,
    /// The outpoints the spend consumes (signed spends from schema version 2 on; empty
    /// otherwise). The window counts spends that share one as one (a replacement).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<OutPoint>,
}

impl AuditEvent {
    /// A signer-wide event.
    pub fn signer(kind: AuditKind, detail: impl Into<String>) -> Self {
        AuditEvent {
            kind,
            wallet: String::new(),
            group_key: String::new(),
            coordinator: String::new(),
            txid: String::new(),
            outflow_sats: 0,
            fee_sats: 0,
            detail: detail.into(),
            inputs: Vec::new(),
        }
    }

    /// A [`AuditKind::Wallet`] event of one wallet (a share stored, a transition's steps).
    pub fn wallet(
        name: impl Into<String>,
        group_key: impl fmt::Display,
        detail: impl Into<String>,
    ) -> Self {
        AuditEvent {
            wallet: name.into(),
            group_key: group_key.to_string(),
            ..AuditEvent::signer(AuditKind::Wallet, detail)
        }
    }

    /// The same event, naming the coordinator concerned.
    pub fn by(self, coordinator: impl fmt::Display) -> Self {
        AuditEvent {
            coordinator: coordinator.to_string(),
            ..self
        }
    }
}

/// A record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// 0-based position in the chain.
    pub seq: u64,
    /// Unix time, seconds.
    pub time: u64,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// The chained MAC (hex in JSON).
    #[serde(with = "hex::serde")]
    pub mac: [u8; 32],
}

/// Errors of the audit chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// SQLite failed.
    #[error("cannot read or write the audit records")]
    Sqlite(#[from] rusqlite::Error),
    /// The chain is broken at this record.
    #[error("audit records broken at record {seq}: {reason}")]
    Broken {
        /// 0-based record number.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
}

/// The stored form of a record's inputs: `txid:vout` joined by commas (empty for none).
pub fn inputs_text(inputs: &[OutPoint]) -> String {
    inputs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads [`inputs_text`]'s form back.
///
/// # Errors
/// A part that is not an outpoint.
pub fn parse_inputs(text: &str) -> Result<Vec<OutPoint>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|p| {
            p.parse::<OutPoint>()
                .map_err(|e| format!("input {p:?} is not an outpoint: {e}"))
        })
        .collect()
}

fn mac_of(key: &MacKey, prev: &[u8; 32], seq: u64, time: u64, e: &AuditEvent) -> [u8; 32] {
    // Records without inputs keep the MAC of schema version 1; with inputs, a marker and the
    // inputs follow (every part is length-prefixed, so neither can pass for the other).
    let inputs = inputs_text(&e.inputs);
    let (seq, time) = (seq.to_be_bytes(), time.to_be_bytes());
    let (outflow, fee) = (e.outflow_sats.to_be_bytes(), e.fee_sats.to_be_bytes());
    let mut parts: Vec<&[u8]> = vec![
        prev,
        &seq,
        &time,
        e.kind.as_str().as_bytes(),
        e.wallet.as_bytes(),
        e.group_key.as_bytes(),
        e.coordinator.as_bytes(),
        e.txid.as_bytes(),
        &outflow,
        &fee,
        e.detail.as_bytes(),
    ];
    if !e.inputs.is_empty() {
        parts.push(b"inputs");
        parts.push(inputs.as_bytes());
    }
    key.mac(&parts)
}

/// The number of records and the last MAC ([`GENESIS`] when empty), read from the tail.
///
/// # Errors
/// SQLite errors.
pub fn tail(conn: &Connection) -> rusqlite::Result<(u64, [u8; 32])> {
    let last: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1")
        .and_then(|mut st| st.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
        .optional()?;
    Ok(match last {
        Some((seq, mac)) => {
            let mut m = [0u8; 32];
            if mac.len() == 32 {
                m.copy_from_slice(&mac);
            }
            (u64::try_from(seq).unwrap_or(0).saturating_add(1), m)
        }
        None => (0, GENESIS),
    })
}

fn insert(
    conn: &Connection,
    seq: u64,
    time: u64,
    e: &AuditEvent,
    mac: &[u8; 32],
) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO audit (seq, time, group_key, wallet, kind, coordinator, txid, outflow, fee, detail, mac, inputs)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)").and_then(|mut st| st.execute(rusqlite::params![
            i64::try_from(seq).unwrap_or(i64::MAX),
            i64::try_from(time).unwrap_or(i64::MAX),
            e.group_key,
            e.wallet,
            e.kind.as_str(),
            e.coordinator,
            e.txid,
            i64::try_from(e.outflow_sats).unwrap_or(i64::MAX),
            i64::try_from(e.fee_sats).unwrap_or(i64::MAX),
            e.detail,
            mac.as_slice(),
            inputs_text(&e.inputs),
        ]))?;
    Ok(())
}

/// Appends one record inside the caller's transaction; returns it.
///
/// # Errors
/// SQLite errors (a full or read-only store among them).
pub fn append(
    conn: &Connection,
    key: &MacKey,
    event: AuditEvent,
    time: u64,
) -> rusqlite::Result<AuditRecord> {
    let (seq, prev) = tail(conn)?;
    let mac = mac_of(key, &prev, seq, time, &event);
    insert(conn, seq, time, &event, &mac)?;
    Ok(AuditRecord {
        seq,
        time,
        event,
        mac,
    })
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(AuditRecord, Option<String>)> {
    let seq: i64 = r.get(0)?;
    let time: i64 = r.get(1)?;
    let kind: String = r.get(4)?;
    let outflow: i64 = r.get(7)?;
    let fee: i64 = r.get(8)?;
    let mac: Vec<u8> = r.get(10)?;
    let mut m = [0u8; 32];
    let mut problem = None;
    if mac.len() == 32 {
        m.copy_from_slice(&mac);
    } else {
        problem = Some("its MAC is not 32 bytes".to_string());
    }
    let kind = kind.parse::<AuditKind>().unwrap_or_else(|e| {
        problem = Some(e);
        AuditKind::Refused
    });
    let inputs: String = r.get(11)?;
    let inputs = parse_inputs(&inputs).unwrap_or_else(|e| {
        problem = Some(e);
        Vec::new()
    });
    Ok((
        AuditRecord {
            seq: u64::try_from(seq).unwrap_or(u64::MAX),
            time: u64::try_from(time).unwrap_or(0),
            event: AuditEvent {
                kind,
                group_key: r.get(2)?,
                wallet: r.get(3)?,
                coordinator: r.get(5)?,
                txid: r.get(6)?,
                outflow_sats: u64::try_from(outflow).unwrap_or(0),
                fee_sats: u64::try_from(fee).unwrap_or(0),
                detail: r.get(9)?,
                inputs,
            },
            mac: m,
        },
        problem,
    ))
}

const SELECT: &str =
    "SELECT seq, time, group_key, wallet, kind, coordinator, txid, outflow, fee, detail, mac, inputs FROM audit";

/// Checks the whole chain (sequence and MACs); returns the number of records and the last
/// MAC. `each` sees every verified record (pass `|_| ()` to only check).
///
/// # Errors
/// [`AuditError::Broken`] at the first bad record.
pub fn verify_chain(
    conn: &Connection,
    key: &MacKey,
    mut each: impl FnMut(&AuditRecord),
) -> Result<(u64, [u8; 32]), AuditError> {
    let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY seq"))?;
    let mut rows = stmt.query([])?;
    let mut expected = 0u64;
    let mut prev = GENESIS;
    while let Some(row) = rows.next()? {
        let (record, problem) = read_row(row)?;
        let broken = |reason: String| AuditError::Broken {
            seq: expected,
            reason,
        };
        if let Some(p) = problem {
            return Err(broken(p));
        }
        if record.seq != expected {
            return Err(broken(format!(
                "record {} where {expected} was expected (records removed)",
                record.seq
            )));
        }
        if mac_of(key, &prev, record.seq, record.time, &record.event) != record.mac {
            return Err(broken(
                "its MAC does not match (edited, reordered, or written without the passphrase)"
                    .into(),
            ));
        }
        each(&record);
        prev = record.mac;
        expected += 1;
    }
    Ok((expected, prev))
}

/// Renumbers and re-seals the records from `from` on, as they now stand (the operator's
/// reset of a broken chain). Records before `from` are kept.
///
/// # Errors
/// SQLite errors.
pub fn reseal_from(conn: &Connection, key: &MacKey, from: u64) -> rusqlite::Result<()> {
    let from_i = i64::try_from(from).unwrap_or(i64::MAX);
    let prev = if from == 0 {
        GENESIS
    } else {
        let mac: Vec<u8> =
            conn.query_row("SELECT mac FROM audit WHERE seq = ?1", [from_i - 1], |r| {
                r.get(0)
            })?;
        let mut m = [0u8; 32];
        if mac.len() == 32 {
            m.copy_from_slice(&mac);
        }
        m
    };
    let rest: Vec<AuditRecord> = {
        let mut stmt = conn.prepare(&format!("{SELECT} WHERE seq >= ?1 ORDER BY seq"))?;
        let rows = stmt.query_map([from_i], |r| read_row(r).map(|(rec, _)| rec))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    conn.execute("DELETE FROM audit WHERE seq >= ?1", [from_i])?;
    let mut prev = prev;
    for (k, r) in rest.into_iter().enumerate() {
        let seq = from + k as u64;
        let mac = mac_of(key, &prev, seq, r.time, &r.event);
        insert(conn, seq, r.time, &r.event, &mac)?;
        prev = mac;
    }
    Ok(())
}

/// Every record, in order (unverified: see [`verify_chain`]).
///
/// # Errors
/// SQLite errors.
pub fn records(conn: &Connection) -> rusqlite::Result<Vec<AuditRecord>> {
    let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY seq"))?;
    let rows = stmt.query_map([], |r| read_row(r).map(|(rec, _)| rec))?;
    rows.collect()
}

/// The spends of a wallet signed since `since` (Unix seconds), one entry per txid (a txid
/// signed again in a retry counts once), with the outpoints it spends (see
/// [`crate::protocol::spend_limits::counted_total`]). An indexed query, not a scan of the
/// history.
///
/// # Errors
/// SQLite errors.
pub fn signed_since(
    conn: &Connection,
    group_key: &str,
    since: u64,
) -> rusqlite::Result<Vec<SpendEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT txid, MAX(outflow), inputs FROM audit
         WHERE group_key = ?1 AND kind = 'signed' AND time >= ?2 GROUP BY txid, inputs",
    )?;
    let rows = stmt.query_map(
        rusqlite::params![group_key, i64::try_from(since).unwrap_or(i64::MAX)],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        },
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (txid, outflow, inputs) = row?;
        if let Ok(txid) = txid.parse::<Txid>() {
            out.push(SpendEntry {
                txid,
                outflow_sats: u64::try_from(outflow).unwrap_or(0),
                state: SpendState::Signed,
                // Unreadable inputs (the chain check reports them) conflict with nothing:
                // the spend counts in full.
                inputs: parse_inputs(&inputs).unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

/// The `restored` record of a home restored from a backup: its sequence number and time
/// (`None` for a home that was never restored; a restore only makes new homes, so there is
/// at most one).
pub fn restored_at(conn: &Connection) -> rusqlite::Result<Option<(i64, u64)>> {
    conn.query_row(
        "SELECT seq, time FROM audit WHERE group_key = '' AND kind = 'restored'
         ORDER BY seq DESC LIMIT 1",
        [],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
    )
    .optional()
    .map(|o| o.map(|(seq, time)| (seq, u64::try_from(time).unwrap_or(0))))
}

/// Whether wallet `group_key` came from the backup restored at record `restored` and its
/// epoch has not been confirmed since (see `protocol::lifecycle::confirm`).
pub fn unconfirmed_since(
    conn: &Connection,
    group_key: &str,
    restored: i64,
) -> rusqlite::Result<bool> {
    let from_backup: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM audit WHERE group_key = ?1 AND kind = 'wallet' AND seq < ?2 LIMIT 1",
            rusqlite::params![group_key, restored],
            |r| r.get(0),
        )
        .optional()?;
    if from_backup.is_none() {
        return Ok(false);
    }
    let confirmed: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM audit WHERE group_key = ?1 AND kind = 'confirmed' AND seq > ?2 LIMIT 1",
            rusqlite::params![group_key, restored],
            |r| r.get(0),
        )
        .optional()?;
    Ok(confirmed.is_none())
}
