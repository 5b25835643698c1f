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
