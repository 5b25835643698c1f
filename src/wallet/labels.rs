//! Labels on transactions, addresses and coins, kept in the wallet database in the shape of
//! BIP-0329 records (`type`, `ref`, `label`): one label per (type, ref).

use std::fmt;
use std::str::FromStr;

use bdk_wallet::rusqlite::{params, OptionalExtension};

use super::{CkmWallet, WalletError};

pub(super) const TABLE: &str = "CREATE TABLE IF NOT EXISTS ckm_labels (kind TEXT NOT NULL, reference TEXT NOT NULL, label TEXT NOT NULL, PRIMARY KEY (kind, reference))";

/// The longest label kept, in characters (BIP-0329 suggests importers may truncate at 255).
pub const MAX_LABEL_CHARS: usize = 255;

/// What a label is attached to (BIP-0329 `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LabelKind {
    /// A transaction (`ref`: txid).
    Tx,
    /// An address.
    Addr,
    /// A public key (hex).
    Pubkey,
    /// A transaction input (`txid:vin`).
    Input,
    /// A transaction output (`txid:vout`).
    Output,
    /// An extended public key.
    Xpub,
}

impl LabelKind {
    /// The BIP-0329 type name.
    pub fn as_str(&self) -> &'static str {
        match self {
            LabelKind::Tx => "tx",
            LabelKind::Addr => "addr",
            LabelKind::Pubkey => "pubkey",
            LabelKind::Input => "input",
            LabelKind::Output => "output",
            LabelKind::Xpub => "xpub",
        }
    }
}

impl fmt::Display for LabelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LabelKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "tx" => LabelKind::Tx,
            "addr" => LabelKind::Addr,
            "pubkey" => LabelKind::Pubkey,
            "input" => LabelKind::Input,
            "output" => LabelKind::Output,
            "xpub" => LabelKind::Xpub,
            _ => return Err(()),
        })
    }
}

/// Cuts a label to [`MAX_LABEL_CHARS`] characters.
pub fn truncate_label(text: &str) -> &str {
    match text.char_indices().nth(MAX_LABEL_CHARS) {
        Some((at, _)) => text.get(..at).unwrap_or(text),
        None => text,
    }
}

impl CkmWallet {
    /// Sets (or, with an empty text, removes) the label of `reference`.
    ///
    /// # Errors
    /// Database errors.
    pub fn set_label(
        &mut self,
        kind: LabelKind,
        reference: &str,
        text: &str,
    ) -> Result<(), WalletError> {
        let text = truncate_label(text);
        if text.is_empty() {
            self.db.execute(
                "DELETE FROM ckm_labels WHERE kind = ?1 AND reference = ?2",
                params![kind.as_str(), reference],
            )?;
        } else {
            self.db.execute(
                "INSERT INTO ckm_labels (kind, reference, label) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (kind, reference) DO UPDATE SET label = excluded.label",
                params![kind.as_str(), reference, text],
            )?;
        }
        Ok(())
    }

    /// Keeps the labels given with the recipients of a payment (BIP-0021 `label`) as address
    /// labels, and as the label of its transaction `txid` (a segwit txid does not change when
    /// it is signed) unless that has one.
    ///
    /// # Errors
    /// The database failed.
    pub fn keep_recipient_labels(
        &mut self,
        recipients: &[super::Recipient],
        txid: bitcoin::Txid,
    ) -> Result<(), WalletError> {
        let mut given = Vec::new();
        for r in recipients {
            if let Some(label) = &r.label {
                self.set_label(LabelKind::Addr, &r.address.to_string(), label)?;
                given.push(label.as_str());
            }
        }
        let txid = txid.to_string();
        if !given.is_empty() && self.label(LabelKind::Tx, &txid)?.is_none() {
            self.set_label(LabelKind::Tx, &txid, &given.join(", "))?;
        }
        Ok(())
    }

    /// The label of `reference`, if any.
    ///
    /// # Errors
    /// Database errors.
    pub fn label(&self, kind: LabelKind, reference: &str) -> Result<Option<String>, WalletError> {
        Ok(self
            .db
            .query_row(
                "SELECT label FROM ckm_labels WHERE kind = ?1 AND reference = ?2",
                params![kind.as_str(), reference],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Every label, ordered by type then reference.
    ///
    /// # Errors
    /// Database errors.
    pub fn labels(&self) -> Result<Vec<(LabelKind, String, String)>, WalletError> {
        let mut stmt = self
            .db
            .prepare("SELECT kind, reference, label FROM ckm_labels ORDER BY kind, reference")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, reference, label) = row?;
            if let Ok(kind) = kind.parse() {
                out.push((kind, reference, label));
            }
        }
        Ok(out)
    }
}

/// The largest BIP-0329 file imported, in bytes (read line by line, never whole).
pub const MAX_IMPORT_BYTES: u64 = 64 * 1024 * 1024;

/// The longest line of a BIP-0329 file imported, in bytes (a label is at most 255
/// characters; the additional fields of the BIP add a few hundred bytes at most).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Why a BIP-0329 import was refused (nothing was changed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabelImportError {
    /// Reading failed.
    #[error("reading the labels: {0}")]
    Read(#[from] std::io::Error),
    /// The file is too large.
    #[error("the labels file is larger than {MAX_IMPORT_BYTES} bytes")]
    TooLarge,
    /// A line is too long.
    #[error("line {line} is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong {
        /// 1-based line number.
        line: usize,
    },
    /// A line is not a BIP-0329 record.
    #[error("line {line}: {reason}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Saving failed.
    #[error(transparent)]
    Wallet(#[from] WalletError),
}

/// What a BIP-0329 import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportReport {
    /// Labels set.
    pub labels: usize,
    /// Outputs frozen (`spendable: false`).
    pub frozen: usize,
    /// Outputs unfrozen (`spendable: true`).
    pub unfrozen: usize,
    /// Records of types ckm does not know, skipped (BIP-0329 lets importers ignore them).
    pub unknown_types: usize,
    /// Records whose `origin` names another wallet, skipped.
    pub other_wallet: usize,
    /// Labels cut to [`MAX_LABEL_CHARS`].
    pub truncated: usize,
}

/// One BIP-0329 record as read.
#[derive(Debug, serde::Deserialize)]
struct RawRecord {
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "ref")]
    reference: String,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    spendable: Option<bool>,
}

/// A checked record, to apply.
struct Record {
    kind: LabelKind,
    reference: String,
    label: Option<String>,
    spendable: Option<bitcoin::OutPoint>,
    freeze: bool,
}

/// Checks that `reference` is well formed for `kind`.
fn check_reference(kind: LabelKind, reference: &str) -> Result<(), String> {
    let ok = match kind {
        LabelKind::Tx => bitcoin::Txid::from_str(reference).is_ok(),
        LabelKind::Addr => {
            bitcoin::Address::<bitcoin::address::NetworkUnchecked>::from_str(reference).is_ok()
        }
        LabelKind::Pubkey => hex::decode(reference).is_ok_and(|b| matches!(b.len(), 32 | 33 | 65)),
        LabelKind::Input | LabelKind::Output => bitcoin::OutPoint::from_str(reference).is_ok(),
        LabelKind::Xpub => bitcoin::bip32::Xpub::from_str(reference).is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("'{reference}' is not a valid {kind} reference"))
    }
}

/// `tr([fingerprint])`: this wallet's abbreviated descriptor (BIP-0329 `origin`).
fn origin_of(descriptor: &str) -> Option<String> {
    let start = descriptor.find('[')?;
    let end = start + descriptor.get(start..)?.find(']')?;
    Some(format!("tr({})", descriptor.get(start..=end)?))
}

fn normalise_origin(origin: &str) -> String {
    origin
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| if c == 'h' || c == 'H' { '\'' } else { c })
        .collect::<String>()
        .to_ascii_lowercase()
}

impl CkmWallet {
    /// This wallet's BIP-0329 `origin`: `tr([fingerprint])`.
    ///
    /// # Errors
    /// The descriptor cannot be built.
    pub fn label_origin(&self) -> Result<String, WalletError> {
        let (external, _) = self.meta.descriptors()?;
        origin_of(&external).ok_or_else(|| WalletError::Descriptor("no key origin".into()))
    }

    /// Every label as BIP-0329 JSON Lines (tx records carry this wallet's `origin`), and
    /// every frozen coin as an `output` record with `spendable: false`. Returns the lines.
    ///
    /// # Errors
    /// Database errors.
    pub fn export_labels(&self) -> Result<Vec<String>, WalletError> {
        let origin = self.label_origin()?;
        let frozen: std::collections::BTreeSet<String> = self
            .wallet
            .list_locked_outpoints()
            .map(|op| op.to_string())
            .collect();
        let mut lines = Vec::new();
        for (kind, reference, label) in self.labels()? {
            let mut record = serde_json::json!({
                "type": kind.as_str(),
                "ref": reference,
                "label": label,
            });
            if kind == LabelKind::Tx {
                record["origin"] = origin.clone().into();
            }
            if kind == LabelKind::Output && frozen.contains(&reference) {
                record["spendable"] = false.into();
            }
            lines.push(record.to_string());
        }
        for op in &frozen {
            if self.label(LabelKind::Output, op)?.is_none() {
                lines.push(
                    serde_json::json!({ "type": "output", "ref": op, "spendable": false })
                        .to_string(),
                );
            }
        }
        Ok(lines)
    }

    /// Imports BIP-0329 JSON Lines from `reader`: all or nothing. Every line is read and
    /// checked first (at most [`MAX_LINE_BYTES`] each and [`MAX_IMPORT_BYTES`] in all, never
    /// read whole); a malformed line refuses the file, naming the line, and nothing changes.
    /// Records of unknown types and records whose `origin` names another wallet are skipped
    /// and counted; `spendable: false` on an output freezes it, `true` unfreezes it; an absent
    /// `label` or `spendable` leaves the stored value alone. Then the labels are written in one
    /// database transaction.
    ///
    /// # Errors
    /// [`LabelImportError`].
    pub fn import_labels(
        &mut self,
        reader: impl std::io::BufRead,
    ) -> Result<ImportReport, LabelImportError> {
        use std::io::BufRead as _;
        use std::io::Read as _;
        let ours = normalise_origin(&self.label_origin()?);
        let mut report = ImportReport::default();
        let mut records = Vec::new();
        let mut limited = reader.take(MAX_IMPORT_BYTES + 1);
        let mut total: u64 = 0;
        let mut buf = Vec::new();
        for line_no in 1.. {
            buf.clear();
            let n = (&mut limited)
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > MAX_IMPORT_BYTES {
                return Err(LabelImportError::TooLarge);
            }
            if buf.len() > MAX_LINE_BYTES {
                return Err(LabelImportError::LineTooLong { line: line_no });
            }
            let bad = |reason: String| LabelImportError::Malformed {
                line: line_no,
                reason,
            };
            let text = std::str::from_utf8(&buf).map_err(|_| bad("not UTF-8".into()))?;
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let raw: RawRecord =
                serde_json::from_str(text).map_err(|e| bad(format!("not a record: {e}")))?;
            let Ok(kind) = raw.kind.parse::<LabelKind>() else {
                report.unknown_types += 1;
                continue;
            };
            check_reference(kind, &raw.reference).map_err(bad)?;
            if raw.spendable.is_some() && kind != LabelKind::Output {
                return Err(bad("'spendable' is only for outputs".into()));
            }
            if let Some(origin) = &raw.origin {
                if normalise_origin(origin) != ours {
                    report.other_wallet += 1;
                    continue;
                }
            }
            let label = raw.label.map(|l| {
                let cut = truncate_label(&l);
                if cut.len() < l.len() {
                    report.truncated += 1;
                }
                cut.to_string()
            });
            let spendable = match raw.spendable {
                Some(_) => Some(
                    bitcoin::OutPoint::from_str(&raw.reference).map_err(|e| bad(e.to_string()))?,
                ),
                None => None,
            };
            records.push(Record {
                kind,
                reference: raw.reference,
                label,
                spendable,
                freeze: raw.spendable == Some(false),
            });
        }
        let tx = self.db.transaction().map_err(WalletError::from)?;
        for r in &records {
            match &r.label {
                Some(label) if label.is_empty() => {
                    tx.execute(
                        "DELETE FROM ckm_labels WHERE kind = ?1 AND reference = ?2",
                        params![r.kind.as_str(), r.reference],
                    )
                    .map_err(WalletError::from)?;
                }
                Some(label) => {
                    tx.execute(
                        "INSERT INTO ckm_labels (kind, reference, label) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (kind, reference) DO UPDATE SET label = excluded.label",
                        params![r.kind.as_str(), r.reference, label],
                    )
                    .map_err(WalletError::from)?;
                    report.labels += 1;
                }
                None => {}
            }
        }
        tx.commit().map_err(WalletError::from)?;
        for r in &records {
            if let Some(op) = r.spendable {
                if r.freeze {
                    self.wallet.lock_outpoint(op);
                    report.frozen += 1;
                } else {
                    self.wallet.unlock_outpoint(op);
                    report.unfrozen += 1;
                }
            }
        }
        self.persist()?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::frost::pedersen::{run_in_memory, DkgParams};
    use crate::identity::IdentityKey;
    use crate::keys::{Roster, RosterEntry};
    use crate::wallet::WalletMeta;

    /// The sample export of BIP-0329's "Test Vectors" section (see tests/data/SOURCES.md).
    const BIP_EXAMPLE: &str = include_str!("../../tests/data/bip329_example.jsonl");

    fn wallet(dir: &std::path::Path, name: &str) -> CkmWallet {
        let mut rng = rand::rngs::StdRng::seed_from_u64(329);
        let params = DkgParams::new(2, 3).unwrap_or_else(|e| panic!("{e}"));
        let shares = run_in_memory(params, &mut rng).unwrap_or_else(|e| panic!("{e}"));
        let roster = Roster::new(
            (1..=3u16)
                .map(|index| RosterEntry {
                    index,
                    url: format!("http://127.0.0.1:{}", 40_000 + index),
                    identity: IdentityKey::generate(&mut rng).public(),
                    tls_sha256: None,
                })
                .collect(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let meta = WalletMeta {
            name: "vault".into(),
            network: bitcoin::Network::Regtest,
            group: shares[0].group().clone(),
            roster,
            electrum: None,
            keygen: None,
            epoch: 0,
            transitions: Vec::new(),
            pending: None,
            birth_height: None,
        };
        CkmWallet::create(&dir.join(name), meta).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_bip_example_imports_skipping_spscan_and_other_wallets() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut w = wallet(dir.path(), "a.sqlite");
        let report = w
            .import_labels(BIP_EXAMPLE.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        // Two tx records name another wallet's origin; spscan is not a type ckm stores.
        assert_eq!(report.other_wallet, 2);
        assert_eq!(report.unknown_types, 1);
        assert_eq!(report.labels, 5);
        assert_eq!(report.frozen, 1);
        let op = "f91d0a8a78462bc59398f2c5d7a84fcff491c26ba54c4833478b202796c8aafd:1";
        assert_eq!(
            w.label(LabelKind::Output, op).ok().flatten().as_deref(),
            Some("Output")
        );
        assert!(w.is_frozen(op.parse().unwrap_or_else(|e| panic!("{e}"))));
        assert_eq!(
            w.label(
                LabelKind::Addr,
                "bc1q34aq5drpuwy3wgl9lhup9892qp6svr8ldzyy7c"
            )
            .ok()
            .flatten()
            .as_deref(),
            Some("Address")
        );
    }

    #[test]
    fn export_then_import_into_a_fresh_wallet_gives_identical_labels() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut a = wallet(dir.path(), "a.sqlite");
        let txid = "f546156d9044844e02b181026a1a407abfca62e7ea1159f87bbeaa77b4286c74";
        let long = "é".repeat(300);
        a.set_label(LabelKind::Tx, txid, "rent, \"March\"\nsecond line")
            .unwrap_or_else(|e| panic!("{e}"));
        a.set_label(LabelKind::Output, &format!("{txid}:0"), &long)
            .unwrap_or_else(|e| panic!("{e}"));
        a.bdk_mut().lock_outpoint(
            format!("{txid}:3")
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
        );
        a.persist().unwrap_or_else(|e| panic!("{e}"));
        let lines = a.export_labels().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| !l.contains('\n')));
        let text = lines.join("\n");
        let mut b = wallet(dir.path(), "b.sqlite");
        let report = b
            .import_labels(text.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (report.labels, report.frozen, report.other_wallet),
            (2, 1, 0)
        );
        assert_eq!(a.labels().ok(), b.labels().ok());
        assert_eq!(
            a.bdk().list_locked_outpoints().collect::<Vec<_>>(),
            b.bdk().list_locked_outpoints().collect::<Vec<_>>()
        );
        assert_eq!(
            b.label(LabelKind::Output, &format!("{txid}:0"))
                .ok()
                .flatten()
                .map(|l| l.chars().count()),
            Some(MAX_LABEL_CHARS)
        );
    }

    #[test]
    fn a_malformed_line_refuses_the_whole_file_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut w = wallet(dir.path(), "a.sqlite");
        let good = r#"{"type":"tx","ref":"f546156d9044844e02b181026a1a407abfca62e7ea1159f87bbeaa77b4286c74","label":"x"}"#;
        for (bad, line) in [
            ("{not json", 2),
            (r#"{"type":"output","ref":"nope:1","label":"x"}"#, 2),
            (
                r#"{"type":"tx","ref":"f546156d9044844e02b181026a1a407abfca62e7ea1159f87bbeaa77b4286c74","spendable":false}"#,
                2,
            ),
            (r#"{"ref":"abc"}"#, 2),
        ] {
            let text = format!("{good}\n{bad}\n{good}\n");
            match w.import_labels(text.as_bytes()) {
                Err(LabelImportError::Malformed { line: l, .. }) => assert_eq!(l, line, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
            assert_eq!(w.labels().ok().map(|l| l.len()), Some(0));
        }
        let long_line = format!("{}\n", "x".repeat(MAX_LINE_BYTES + 10));
        assert!(matches!(
            w.import_labels(long_line.as_bytes()),
            Err(LabelImportError::LineTooLong { line: 1 })
        ));
    }
}
