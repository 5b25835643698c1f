//! A key transition on disk: at *prepare* the new public record and share are stored as
//! pending beside the current ones, with the member's signed prepared vote; its ready or
//! abort vote is stored (at most one, never changed) before it leaves; a *commit*
//! certificate makes the pending record and share current (the old share erased) and an
//! *abort* certificate forgets them, each stored in the same transaction as its effect.
//! Session ids are never reused: a decided session keeps its row.

use bdk_wallet::rusqlite::{self, OptionalExtension};
use rand::{CryptoRng, RngCore};

use super::records::parse_info;
use super::{HomeError, SignerHome, WalletInfo};
use crate::frost::shares::KeyShare;
use crate::keys::GroupKey;
use crate::protocol::lifecycle::{DecisionCertificate, SignedVote};
use crate::signer::audit::{self, AuditEvent, AuditKind};

/// A member's stored votes of one transition.
#[derive(Debug, Clone)]
pub struct StoredVotes {
    /// The wallet.
    pub group_key: GroupKey,
    /// Its prepared vote (`None` for an abort vote given without ever preparing).
    pub prepared: Option<SignedVote>,
    /// Its ready or abort vote.
    pub standing: Option<SignedVote>,
    /// The certificate applied, once decided.
    pub certificate: Option<DecisionCertificate>,
    /// The committed record (JSON of the wallet record after the commit), once committed.
    pub record: Option<String>,
}

/// A `transition_votes` row as stored.
struct VoteRow {
    session: String,
    group_key: String,
    prepared: String,
    standing: Option<String>,
    certificate: Option<String>,
    record: Option<String>,
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn parse<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    what: &str,
    text: &str,
) -> Result<T, HomeError> {
    serde_json::from_str(text).map_err(|e| HomeError::Malformed {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
    })
}

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
        prepared: &SignedVote,
        rng: &mut R,
    ) -> Result<(), HomeError> {
        let (info_json, sealed) = self.seal_share(info, share, rng)?;
        self.db.write(|tx| {
            let used: Option<String> = tx
                .query_row(
                    "SELECT session FROM transition_votes WHERE session = ?1",
                    [session],
                    |r| r.get(0),
                )
                .optional()?;
            if used.is_some() {
                return Err(HomeError::Malformed {
                    path: self.db.path().to_path_buf(),
                    reason: format!("transition session {session} was used before; session ids are never reused"),
                });
            }
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
            tx.execute(
                "INSERT INTO transition_votes (session, group_key, prepared) VALUES (?1, ?2, ?3)",
                rusqlite::params![session, info.group_key.to_string(), json(prepared)],
            )?;
            audit::append(
                tx,
                &self.mac,
                AuditEvent::wallet(info.name.clone(), info.group_key, format!(
                        "prepared epoch {} (transition {session}); voted prepared",
                        info.epoch
                    )),
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
        certificate: &DecisionCertificate,
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
            tx.execute(
                "UPDATE transition_votes SET certificate = ?2, record = ?3, decided = ?4 WHERE session = ?1",
                rusqlite::params![
                    session,
                    json(certificate),
                    info_json,
                    i64::try_from(crate::auth::unix_now()).unwrap_or(i64::MAX)
                ],
            )?;
            audit::append(
                tx,
                &self.mac,
                AuditEvent::wallet(info.name.clone(), group_key, format!(
                        "committed epoch {epoch} (transition {session}) on a commit certificate of {} ready votes; the previous share is erased",
                        certificate.votes.len()
                    )),
                crate::auth::unix_now(),
            )?;
            Ok(Some(u64::try_from(epoch).unwrap_or(0)))
        })?;
        if epoch.is_some() {
            self.after_erasure(rng)?;
        }
        Ok(epoch)
    }

    /// After a transaction that overwrote a share (commit, abort, erasure): the overwritten
    /// bytes may still sit in the write-ahead log, so it is truncated; then the checkpoint
    /// records the new state.
    ///
    /// # Errors
    /// Database or checkpoint errors.
    fn after_erasure<R: RngCore + CryptoRng>(&self, rng: &mut R) -> Result<(), HomeError> {
        self.db
            .read(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);"))?;
        self.advance_checkpoint(rng)?;
        Ok(())
    }

    /// Erases a wallet this member was removed from: its share and record (overwritten, and
    /// the journal truncated) and any pending transition, with an audit record saying why,
    /// in one transaction. Returns whether the wallet was held.
    ///
    /// # Errors
    /// Database errors.
    pub fn erase_wallet<R: RngCore + CryptoRng>(
        &self,
        group_key: &GroupKey,
        name: &str,
        detail: String,
        rng: &mut R,
    ) -> Result<bool, HomeError> {
        let erased = self.db.write(|tx| {
            let gone = tx.execute(
                "DELETE FROM wallets WHERE group_key = ?1",
                [group_key.to_string()],
            )?;
            if gone == 0 {
                return Ok::<_, HomeError>(false);
            }
            tx.execute(
                "DELETE FROM pending WHERE group_key = ?1",
                [group_key.to_string()],
            )?;
            audit::append(
                tx,
                &self.mac,
                AuditEvent::wallet(name, group_key, detail),
                crate::auth::unix_now(),
            )?;
            Ok(true)
        })?;
        if erased {
            self.after_erasure(rng)?;
        }
        Ok(erased)
    }

    /// Forgets a pending transition (audited). Returns whether one was pending.
    ///
    /// # Errors
    /// Database errors.
    pub fn abort_transition<R: RngCore + CryptoRng>(
        &self,
        group_key: &GroupKey,
        session: &str,
        certificate: &DecisionCertificate,
        rng: &mut R,
    ) -> Result<bool, HomeError> {
        let removed = self.db.write(|tx| {
            let n = tx.execute(
                "DELETE FROM pending WHERE group_key = ?1 AND session = ?2",
                rusqlite::params![group_key.to_string(), session],
            )?;
            tx.execute(
                "UPDATE transition_votes SET certificate = ?2, decided = ?3 WHERE session = ?1 AND certificate IS NULL",
                rusqlite::params![
                    session,
                    json(certificate),
                    i64::try_from(crate::auth::unix_now()).unwrap_or(i64::MAX)
                ],
            )?;
            if n > 0 {
                audit::append(
                    tx,
                    &self.mac,
                    AuditEvent::signer(
                        AuditKind::Wallet,
                        format!(
                            "aborted transition {session} of wallet {group_key} on an abort certificate of {} votes; the pending share is forgotten",
                            certificate.votes.len()
                        ),
                    ),
                    crate::auth::unix_now(),
                )?;
            }
            Ok::<_, HomeError>(n > 0)
        })?;
        if removed {
            self.after_erasure(rng)?;
        }
        Ok(removed)
    }

    /// The votes this member stored for transition `session`.
    ///
    /// # Errors
    /// Database errors, or a malformed row.
    pub fn transition_votes(&self, session: &str) -> Result<Option<StoredVotes>, HomeError> {
        self.vote_row("session = ?1", session)
            .map(|row| row.map(|(_, votes)| votes))
    }

    /// The last decided transition of a wallet: (session, votes).
    ///
    /// # Errors
    /// Database errors, or a malformed row.
    pub fn last_decided(
        &self,
        group_key: &GroupKey,
    ) -> Result<Option<(String, StoredVotes)>, HomeError> {
        self.vote_row(
            "group_key = ?1 AND decided IS NOT NULL ORDER BY decided DESC, rowid DESC LIMIT 1",
            &group_key.to_string(),
        )
    }

    fn vote_row(
        &self,
        condition: &str,
        param: &str,
    ) -> Result<Option<(String, StoredVotes)>, HomeError> {
        let sql = format!(
            "SELECT session, group_key, prepared, standing, certificate, record FROM transition_votes WHERE {condition}"
        );
        let row: Option<VoteRow> = self.db.read(|c| {
            c.query_row(&sql, [param], |r| {
                Ok(VoteRow {
                    session: r.get(0)?,
                    group_key: r.get(1)?,
                    prepared: r.get(2)?,
                    standing: r.get(3)?,
                    certificate: r.get(4)?,
                    record: r.get(5)?,
                })
            })
            .optional()
        })?;
        let Some(row) = row else {
            return Ok(None);
        };
        let path = self.db.path();
        let votes = StoredVotes {
            group_key: row.group_key.parse().map_err(|_| HomeError::Malformed {
                path: path.to_path_buf(),
                reason: "transition vote row: bad group key".into(),
            })?,
            prepared: parse::<Option<SignedVote>>(path, "prepared vote", &row.prepared)?,
            standing: row
                .standing
                .map(|s| parse(path, "standing vote", &s))
                .transpose()?,
            certificate: row
                .certificate
                .map(|c| parse(path, "decision certificate", &c))
                .transpose()?,
            record: row.record,
        };
        Ok(Some((row.session, votes)))
    }

    /// Stores this member's ready or abort vote for `session` unless it holds one already;
    /// returns the vote it holds (the stored one wins). Audited; durable before it returns.
    ///
    /// # Errors
    /// No such prepared transition, or database errors.
    pub fn record_vote<R: RngCore + CryptoRng>(
        &self,
        session: &str,
        vote: &SignedVote,
        rng: &mut R,
    ) -> Result<SignedVote, HomeError> {
        let (held, fresh) = self.db.write(|tx| {
            let row: Option<(String, Option<String>)> = tx
                .query_row(
                    "SELECT group_key, standing FROM transition_votes WHERE session = ?1",
                    [session],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((group_key, standing)) = row else {
                return Err(HomeError::UnknownWallet(format!("(transition {session})")));
            };
            if let Some(s) = standing {
                return Ok::<_, HomeError>((parse(self.db.path(), "standing vote", &s)?, false));
            }
            tx.execute(
                "UPDATE transition_votes SET standing = ?2 WHERE session = ?1 AND standing IS NULL",
                rusqlite::params![session, json(vote)],
            )?;
            audit::append(
                tx,
                &self.mac,
                AuditEvent::wallet(
                    String::new(),
                    group_key,
                    format!("voted {} on transition {session}", vote.kind),
                ),
                crate::auth::unix_now(),
            )?;
            Ok((vote.clone(), true))
        })?;
        if fresh {
            self.advance_checkpoint(rng)?;
        }
        Ok(held)
    }

    /// The pending transition of a wallet with the record the member will hold after it:
    /// (session, wallet record).
    ///
    /// # Errors
    /// Database errors, or a malformed row.
    pub fn pending_info(
        &self,
        group_key: &GroupKey,
    ) -> Result<Option<(String, WalletInfo)>, HomeError> {
        let row: Option<(String, String)> = self.db.read(|c| {
            c.query_row(
                "SELECT session, info FROM pending WHERE group_key = ?1",
                [group_key.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })?;
        row.map(|(session, info)| parse_info(self.db.path(), &info).map(|i| (session, i)))
            .transpose()
    }

    /// Stores an abort vote of a member that never prepared `session` (it never will: the
    /// session is then used). Returns the vote it holds (a stored one wins). Audited.
    ///
    /// # Errors
    /// Database errors.
    pub fn record_unprepared_abort<R: RngCore + CryptoRng>(
        &self,
        session: &str,
        group_key: &GroupKey,
        vote: &SignedVote,
        rng: &mut R,
    ) -> Result<SignedVote, HomeError> {
        let inserted = self.db.write(|tx| {
            let n = tx.execute(
                "INSERT OR IGNORE INTO transition_votes (session, group_key, prepared, standing) VALUES (?1, ?2, 'null', ?3)",
                rusqlite::params![session, group_key.to_string(), json(vote)],
            )?;
            if n > 0 {
                audit::append(
                    tx,
                    &self.mac,
                    AuditEvent::signer(
                        AuditKind::Wallet,
                        format!("voted abort on transition {session} of wallet {group_key} without preparing it"),
                    ),
                    crate::auth::unix_now(),
                )?;
            }
            Ok::<_, HomeError>(n > 0)
        })?;
        if inserted {
            self.advance_checkpoint(rng)?;
            return Ok(vote.clone());
        }
        self.transition_votes(session)?
            .and_then(|v| v.standing)
            .ok_or_else(|| HomeError::UnknownWallet(format!("(transition {session})")))
    }
}
