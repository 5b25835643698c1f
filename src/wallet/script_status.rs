//! The Electrum status of each script at the last sync that applied its history
//! (`blockchain.scripthash.subscribe`: a hash of the script's history, `None` when it has
//! none), kept in the wallet's SQLite database so that a later sync can skip the scripts
//! whose history has not changed. A cache: forgetting it only makes the next sync look at
//! every script again.

use std::collections::HashMap;

use bdk_wallet::rusqlite::params;
use bitcoin::ScriptBuf;

use super::{CkmWallet, WalletError};

const TABLE: &str = "CREATE TABLE IF NOT EXISTS ckm_electrum_status (
    spk BLOB PRIMARY KEY NOT NULL,
    status BLOB
)";

impl CkmWallet {
    /// The statuses saved by [`CkmWallet::set_script_statuses`] (empty if none were).
    ///
    /// # Errors
    /// Database errors.
    pub fn script_statuses(&self) -> Result<HashMap<ScriptBuf, Option<[u8; 32]>>, WalletError> {
        self.db.execute(TABLE, [])?;
        let mut stmt = self
            .db
            .prepare("SELECT spk, status FROM ckm_electrum_status")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Option<Vec<u8>>>(1)?))
        })?;
        let mut out = HashMap::new();
        for row in rows {
            let (spk, status) = row?;
            // A stored status of another length is treated as unknown: the script is synced.
            let status = match status {
                None => None,
                Some(bytes) => match <[u8; 32]>::try_from(bytes.as_slice()) {
                    Ok(s) => Some(s),
                    Err(_) => continue,
                },
            };
            out.insert(ScriptBuf::from_bytes(spk), status);
        }
        Ok(out)
    }

    /// Replaces the saved statuses with `statuses`, in one transaction.
    ///
    /// # Errors
    /// Database errors.
    pub fn set_script_statuses(
        &mut self,
        statuses: &[(ScriptBuf, Option<[u8; 32]>)],
    ) -> Result<(), WalletError> {
        self.db.execute(TABLE, [])?;
        let tx = self.db.transaction()?;
        tx.execute("DELETE FROM ckm_electrum_status", [])?;
        {
            let mut insert = tx.prepare(
                "INSERT OR REPLACE INTO ckm_electrum_status (spk, status) VALUES (?1, ?2)",
            )?;
            for (spk, status) in statuses {
                insert.execute(params![
                    spk.as_bytes(),
                    status.as_ref().map(|s| s.as_slice())
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
