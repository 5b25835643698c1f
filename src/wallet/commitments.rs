//! The coordinator's preprocessed commitments (see [`crate::protocol::roast`]) in the wallet
//! database: public values only (a commitment is useless without the signer's nonce, which
//! never leaves the signer), kept per coordinator identity and epoch.

use bdk_wallet::rusqlite::{params, Connection};

use crate::identity::IdentityPublic;
use crate::protocol::roast::{CommitmentStore, PreCommitment};

pub(super) const TABLE: &str = "CREATE TABLE IF NOT EXISTS ckm_commitments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    coordinator TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    signer INTEGER NOT NULL,
    commitment TEXT NOT NULL)";

pub(super) const FLAGS: &str = "CREATE TABLE IF NOT EXISTS ckm_signing_mode (
    coordinator TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    needs_statements INTEGER NOT NULL,
    PRIMARY KEY (coordinator, epoch))";

/// The commitments a coordinator holds for one wallet, in its database. The store is a
/// cache: a database error only costs a refill (it is logged, not returned).
#[derive(Debug)]
pub struct WalletCommitments<'a> {
    pub(super) db: &'a Connection,
    pub(super) coordinator: String,
    pub(super) epoch: i64,
}

impl WalletCommitments<'_> {
    pub(super) fn new<'a>(
        db: &'a Connection,
        coordinator: &IdentityPublic,
        epoch: u64,
    ) -> WalletCommitments<'a> {
        let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
        // Commitments of earlier epochs belong to another roster: drop them.
        if let Err(e) = db.execute("DELETE FROM ckm_commitments WHERE epoch != ?1", [epoch]) {
            tracing::warn!("cannot prune old commitments: {e}");
        }
        WalletCommitments {
            db,
            coordinator: coordinator.to_string(),
            epoch,
        }
    }

    fn try_take(
        &mut self,
        signer: u16,
        count: usize,
    ) -> Result<Option<Vec<PreCommitment>>, String> {
        let tx = self.db.unchecked_transaction().map_err(|e| e.to_string())?;
        let rows: Vec<(i64, String)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT seq, commitment FROM ckm_commitments
                     WHERE coordinator = ?1 AND epoch = ?2 AND signer = ?3 ORDER BY seq LIMIT ?4",
                )
                .map_err(|e| e.to_string())?;
            let rows = stmt
                .query_map(
                    params![
                        self.coordinator,
                        self.epoch,
                        signer,
                        i64::try_from(count).unwrap_or(i64::MAX)
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(|e| e.to_string())?;
            rows.collect::<Result<_, _>>().map_err(|e| e.to_string())?
        };
        if rows.len() < count {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(count);
        for (seq, text) in rows {
            tx.execute("DELETE FROM ckm_commitments WHERE seq = ?1", [seq])
                .map_err(|e| e.to_string())?;
            // A row that does not parse is dropped; the signer refills.
            match serde_json::from_str(&text) {
                Ok(c) => out.push(c),
                Err(e) => {
                    tx.commit().map_err(|e| e.to_string())?;
                    return Err(format!("malformed stored commitment: {e}"));
                }
            }
        }
        tx.commit().map_err(|e| e.to_string())?;
        Ok(Some(out))
    }

    fn try_add(&mut self, signer: u16, commitments: Vec<PreCommitment>) -> Result<(), String> {
        let tx = self.db.unchecked_transaction().map_err(|e| e.to_string())?;
        for c in commitments {
            let text = serde_json::to_string(&c).map_err(|e| e.to_string())?;
            tx.execute(
                "INSERT INTO ckm_commitments (coordinator, epoch, signer, commitment) VALUES (?1, ?2, ?3, ?4)",
                params![self.coordinator, self.epoch, signer, text],
            )
            .map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())
    }
}

impl CommitmentStore for WalletCommitments<'_> {
    fn needs_statements(&self) -> bool {
        self.db
            .query_row(
                "SELECT needs_statements FROM ckm_signing_mode WHERE coordinator = ?1 AND epoch = ?2",
                params![self.coordinator, self.epoch],
                |r| r.get::<_, i64>(0),
            )
            .map(|v| v != 0)
            .unwrap_or(false)
    }

    fn set_needs_statements(&mut self, needs: bool) {
        if let Err(e) = self.db.execute(
            "INSERT INTO ckm_signing_mode (coordinator, epoch, needs_statements) VALUES (?1, ?2, ?3)
             ON CONFLICT (coordinator, epoch) DO UPDATE SET needs_statements = excluded.needs_statements",
            params![self.coordinator, self.epoch, i64::from(needs)],
        ) {
            tracing::warn!("cannot remember the signing mode: {e}");
        }
    }

    fn take(&mut self, signer: u16, count: usize) -> Option<Vec<PreCommitment>> {
        match self.try_take(signer, count) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(signer, "stored commitments unusable: {e}");
                self.clear(signer);
                None
            }
        }
    }

    fn add(&mut self, signer: u16, commitments: Vec<PreCommitment>) {
        if let Err(e) = self.try_add(signer, commitments) {
            tracing::warn!(signer, "cannot store commitments: {e}");
        }
    }

    fn clear(&mut self, signer: u16) {
        if let Err(e) = self.db.execute(
            "DELETE FROM ckm_commitments WHERE coordinator = ?1 AND epoch = ?2 AND signer = ?3",
            params![self.coordinator, self.epoch, signer],
        ) {
            tracing::warn!(signer, "cannot clear commitments: {e}");
        }
    }

    fn count(&self, signer: u16) -> usize {
        self.db
            .query_row(
                "SELECT COUNT(*) FROM ckm_commitments WHERE coordinator = ?1 AND epoch = ?2 AND signer = ?3",
                params![self.coordinator, self.epoch, signer],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| usize::try_from(n).unwrap_or(0))
            .unwrap_or(0)
    }
}
