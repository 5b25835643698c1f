//! A key transition's two phases on disk: at *prepare* the new public record and share are
//! stored as pending beside the current ones; at *commit* they replace them (the old share
//! erased); an *abort* forgets them.

use bdk_wallet::rusqlite::{self, OptionalExtension};
use rand::{CryptoRng, RngCore};

use super::records::parse_info;
use super::{HomeError, SignerHome, WalletInfo};
use crate::frost::shares::KeyShare;
use crate::keys::GroupKey;
use crate::signer::audit::{self, AuditEvent, AuditKind};

impl SignerHome {
    /// Stores a transition's result as pending: the new public record and the new share,
    /// sealed and bound to that record, beside the current ones (audited). Refuses while
    /// another transition of the wallet is pending.
    ///
    /// # Errors
    /// Another pending transition, or the database failed.
    pub fn prepare_transition<R: RngCore + CryptoRng>(
        &self,
        session: &str,
        info: &WalletInfo,
        share: &KeyShare,
        rng: &mut R,
    ) -> Result<(), HomeError> {
        let (info_json, sealed) = self.seal_share(info, share, rng)?;
        self.db.write(|tx| {
            let other: Option<String> = tx
                .query_row(
                    "SELECT session FROM pending WHERE group_key = ?1",
                    [info.group_key.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(other) = other {
                if other != session {
                    return Err(HomeError::Malformed {
                        path: self.db.path().to_path_buf(),
                        reason: format!(
                            "transition {other} of this wallet is pending; its coordinator must commit or abort it first"
                        ),
                    });
                }
            }
            tx.execute(
                "INSERT INTO pending (group_key, session, epoch, info, share) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(group_key) DO UPDATE SET session = excluded.session, epoch = excluded.epoch,
                 info = excluded.info, share = excluded.share",
                rusqlite::params![
                    info.group_key.to_string(),
                    session,
                    i64::try_from(info.epoch).unwrap_or(i64::MAX),
                    info_json,
                    sealed
                ],
            )?;
            audit::append(
                tx,
                &self.mac,
                AuditEvent {
                    kind: AuditKind::Wallet,
                    wallet: info.name.clone(),
                    group_key: info.group_key.to_string(),
                    coordinator: String::new(),
                    txid: String::new(),
                    outflow_sats: 0,
                    fee_sats: 0,
                    detail: format!("prepared epoch {} (transition {session})", info.epoch),
                },
                crate::auth::unix_now(),
            )?;
            Ok::<_, HomeError>(())
        })?;
        self.advance_checkpoint(rng)?;
        Ok(())
    }

    /// The pending transition of a wallet: (session, epoch it leads to).
    ///
    /// # Errors
    /// Database errors.
    pub fn pending_transition(
        &self,
        group_key: &GroupKey,
    ) -> Result<Option<(String, u64)>, HomeError> {
        Ok(self
            .db
            .read(|c| {
                c.query_row(
                    "SELECT session, epoch FROM pending WHERE group_key = ?1",
                    [group_key.to_string()],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()
            })?
            .map(|(s, e)| (s, u64::try_from(e).unwrap_or(0))))
    }

    /// Makes a pending transition current: its record and share replace the wallet's (or
    /// become the wallet, for a newcomer), the old share is erased (overwritten, and the
    /// journal truncated), all in one audited transaction. Returns the new epoch; `None` when
    /// no transition `session` is pending.
    ///
    /// # Errors
    /// Database errors.
    pub fn commit_transition<R: RngCore + CryptoRng>(
        &self,
        group_key: &GroupKey,
        session: &str,
        detail: &str,
        rng: &mut R,
    ) -> Result<Option<u64>, HomeError> {
        let epoch = self.db.write(|tx| {
            let row: Option<(i64, String, Vec<u8>)> = tx
                .query_row(
                    "SELECT epoch, info, share FROM pending WHERE group_key = ?1 AND session = ?2",
                    rusqlite::params![group_key.to_string(), session],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((epoch, info_json, share)) = row else {
                return Ok::<_, HomeError>(None);
            };
            let info = parse_info(self.db.path(), &info_json)?;
            let updated = tx.execute(
                "UPDATE wallets SET name = ?2, info = ?3, share = ?4 WHERE group_key = ?1",
                rusqlite::params![group_key.to_string(), info.name, info_json, share],
            )?;
            if updated == 0 {
                tx.execute(
                    "INSERT INTO wallets (group_key, name, info, share) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![group_key.to_string(), info.name, info_json, share],
                )?;
            }
            tx.execute(
                "DELETE FROM pending WHERE group_key = ?1",
                [group_key.to_string()],
            )?;
            audit::append(
                tx,
                &self.mac,
                AuditEvent {
                    kind: AuditKind::Wallet,
                    wallet: info.name.clone(),
                    group_key: group_key.to_string(),
                    coordinator: String::new(),
                    txid: String::new(),
                    outflow_sats: 0,
                    fee_sats: 0,
                    detail: format!(
                        "committed epoch {epoch}: {detail}; the previous share is erased"
                    ),
                },
                crate::auth::unix_now(),
            )?;
            Ok(Some(u64::try_from(epoch).unwrap_or(0)))
        })?;
        if epoch.is_some() {
            // The overwritten share may still sit in the write-ahead log: truncate it.
            self.db
                .read(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);"))?;
            self.advance_checkpoint(rng)?;
        }
        Ok(epoch)
    }

    /// Forgets a pending transition (audited). Returns whether one was pending.
    ///
    /// # Errors
    /// Database errors.
    pub fn abort_transition<R: RngCore + CryptoRng>(
        &self,
        group_key: &GroupKey,
        session: &str,
        rng: &mut R,
    ) -> Result<bool, HomeError> {
        let removed = self.db.write(|tx| {
            let n = tx.execute(
                "DELETE FROM pending WHERE group_key = ?1 AND session = ?2",
                rusqlite::params![group_key.to_string(), session],
            )?;
            if n > 0 {
                audit::append(
                    tx,
                    &self.mac,
                    AuditEvent::signer(
                        AuditKind::Wallet,
                        format!("aborted transition {session} of wallet {group_key}"),
                    ),
                    crate::auth::unix_now(),
                )?;
            }
            Ok::<_, HomeError>(n > 0)
        })?;
        if removed {
            self.db
                .read(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);"))?;
            self.advance_checkpoint(rng)?;
        }
        Ok(removed)
    }
}
