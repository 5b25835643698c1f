//! The sealed shares: each wallet's share sealed under the store key and bound to the
//! wallet's public record, stored with that record, and opened only for the moment it is
//! used; and a restore, which seals a backup's shares into a new home.

use std::fs;
use std::path::{Path, PathBuf};

use bdk_wallet::rusqlite::{self, Connection, OptionalExtension};
use bitcoin::hashes::{sha256, Hash};
use rand::{CryptoRng, RngCore};

use super::{put_policy, put_policy_state, HomeError, SignerHome, Versioned, WalletInfo};
use crate::frost::shares::KeyShare;
use crate::identity::IdentityKey;
use crate::keys::GroupKey;
use crate::signer::audit::{self, AuditEvent, AuditKind};
use crate::signer::db::{put_kv, DbError};
use crate::signer::peers::Peers;
use crate::signer::policy::Policy;
use crate::store::KdfParams;

/// What [`SignerHome::restore`] restores.
#[derive(Debug)]
pub struct Restore<'a> {
    /// The signer's identity key.
    pub identity: IdentityKey,
    /// Each wallet: its public record, this signer's share and its policy.
    pub wallets: Vec<(&'a WalletInfo, &'a KeyShare, &'a Policy)>,
    /// The approved peers.
    pub peers: &'a Peers,
    /// Where the state comes from, for the `restored` audit record.
    pub detail: String,
}

impl SignerHome {
    /// Creates a signer home that rejoins its wallets as the signer a backup was taken of:
    /// the same identity key, each wallet's public record and share (sealed and bound to the
    /// record as [`SignerHome::save_shares`] does), its policy and the approved peers, under
    /// a new store passphrase. The records start a fresh audit chain: one `wallet` record per
    /// wallet and a `restored` record saying what was restored (`detail`), then a checkpoint.
    /// The store header is written last; on any failure the directory this call created is
    /// removed again, so nothing is left behind.
    ///
    /// # Errors
    /// An existing signer directory (nothing is touched then), a wallet listed twice, or a
    /// file system or database error.
    pub fn restore<R: RngCore + CryptoRng>(
        home: &Path,
        passphrase: &[u8],
        params: KdfParams,
        restore: Restore<'_>,
        rng: &mut R,
    ) -> Result<Self, HomeError> {
        let dir = Self::dir_of(home);
        if dir.exists() {
            return Err(HomeError::AlreadyInitialized(dir));
        }
        let made_home = !home.exists();
        let Restore {
            identity,
            wallets,
            peers,
            detail,
        } = restore;
        let result: Result<Self, HomeError> = (|| {
            let (signer, header) = Self::create(home, passphrase, params, identity, rng)?;
            signer.import(&wallets, peers, &detail, rng)?;
            header.write()?;
            Ok(signer)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&dir);
            if made_home {
                let _ = fs::remove_dir(home);
            }
        }
        result
    }

    /// The wallets, policies, peers and audit records of a restore, in one transaction.
    fn import<R: RngCore + CryptoRng>(
        &self,
        wallets: &[(&WalletInfo, &KeyShare, &Policy)],
        peers: &Peers,
        detail: &str,
        rng: &mut R,
    ) -> Result<(), HomeError> {
        let mut rows = Vec::with_capacity(wallets.len());
        for (info, share, _) in wallets {
            let (info_json, sealed) = self.seal_share(info, share, rng)?;
            rows.push((info_json, sealed));
        }
        let peers_json = serde_json::to_vec(&Versioned {
            version: 1,
            value: peers,
        })
        .map_err(|e| HomeError::Malformed {
            path: self.db.path().to_path_buf(),
            reason: e.to_string(),
        })?;
        let sealed_peers = self.key.seal(b"peers", &peers_json, rng);
        let now = crate::auth::unix_now();
        self.db.write(|tx| {
            let mut policies = 0;
            for ((info, _, policy), (info_json, sealed)) in wallets.iter().zip(&rows) {
                insert_wallet(tx, info, info_json, sealed)?;
                if **policy != Policy::default() {
                    put_policy(tx, &self.key, &info.group_key, policy, 1, rng)?;
                    policies += 1;
                }
                audit::append(
                    tx,
                    &self.mac,
                    AuditEvent::wallet(info.name.clone(), info.group_key, format!(
                            "restored share {} of a {}-of-{} wallet at epoch {} (fingerprint {})",
                            info.index,
                            info.threshold,
                            info.signers,
                            info.epoch,
                            info.fingerprint
                                .map_or_else(|| "none".to_string(), |f| f.to_string())
                        )).by(info.coordinator),
                    now,
                )
                .map_err(|e| HomeError::Db(self.sql(e)))?;
            }
            if policies > 0 {
                put_policy_state(tx, &self.key, 1, rng)?;
            }
            if !peers.peers.is_empty() {
                put_kv(tx, "peers", &sealed_peers).map_err(|e| HomeError::Db(self.sql(e)))?;
            }
            audit::append(
                tx,
                &self.mac,
                AuditEvent::signer(
                    AuditKind::Restored,
                    format!(
                        "{}: {} wallet(s), {policies} wallet policy(ies), {} approved peer(s); the records before the backup are not carried over",
                        detail,
                        wallets.len(),
                        peers.peers.len()
                    ),
                ),
                now,
            )
            .map_err(|e| HomeError::Db(self.sql(e)))?;
            Ok::<_, HomeError>(())
        })?;
        self.advance_checkpoint(rng)?;
        Ok(())
    }

    /// Stores a new wallet's share (sealed, bound to its public record) and its public
    /// record, with an audit record, in one transaction.
    ///
    /// # Errors
    /// The wallet exists already, or the database failed.
    pub fn save_share<R: RngCore + CryptoRng>(
        &self,
        info: &WalletInfo,
        share: &KeyShare,
        rng: &mut R,
    ) -> Result<(), HomeError> {
        self.save_shares(&[(info, share)], rng)
    }

    /// A wallet's record as JSON and its share sealed under the store key, bound to that
    /// record (the AAD covers the group key and the JSON).
    pub(super) fn seal_share<R: RngCore + CryptoRng>(
        &self,
        info: &WalletInfo,
        share: &KeyShare,
        rng: &mut R,
    ) -> Result<(String, Vec<u8>), HomeError> {
        let info_json = serde_json::to_string(info).map_err(|e| HomeError::Malformed {
            path: self.db.path().to_path_buf(),
            reason: e.to_string(),
        })?;
        let secret = share.to_secret_bytes().map_err(|source| HomeError::Key {
            path: self.db.path().to_path_buf(),
            source,
        })?;
        let sealed = self.key.seal(
            share_aad(&info.group_key, &info_json).as_bytes(),
            &secret,
            rng,
        );
        Ok((info_json, sealed))
    }

    /// Stores several wallets at once (one transaction, one audit record each; all or none).
    ///
    /// # Errors
    /// A wallet exists already, or the database failed.
    pub fn save_shares<R: RngCore + CryptoRng>(
        &self,
        wallets: &[(&WalletInfo, &KeyShare)],
        rng: &mut R,
    ) -> Result<(), HomeError> {
        let mut rows = Vec::with_capacity(wallets.len());
        for (info, share) in wallets {
            let (info_json, sealed) = self.seal_share(info, share, rng)?;
            rows.push((*info, info_json, sealed));
        }
        let now = crate::auth::unix_now();
        self.db.write(|tx| {
            for (info, info_json, sealed) in &rows {
                insert_wallet(tx, info, info_json, sealed)?;
                audit::append(
                    tx,
                    &self.mac,
                    AuditEvent::wallet(
                        info.name.clone(),
                        info.group_key,
                        format!(
                            "stored share {} of a {}-of-{} wallet (fingerprint {})",
                            info.index,
                            info.threshold,
                            info.signers,
                            info.fingerprint
                                .map_or_else(|| "none".to_string(), |f| f.to_string())
                        ),
                    )
                    .by(info.coordinator),
                    now,
                )
                .map_err(|e| HomeError::Db(self.sql(e)))?;
            }
            Ok::<_, HomeError>(())
        })?;
        self.advance_checkpoint(rng)?;
        Ok(())
    }

    /// Decrypts a wallet's share for immediate use (dropped, and zeroized, by the caller).
    /// The share only opens with the wallet's public record unchanged.
    ///
    /// # Errors
    /// Unknown wallet, an edited record, a corrupted blob or an inconsistent share.
    pub fn load_share(&self, group_key: &GroupKey) -> Result<KeyShare, HomeError> {
        let row: Option<(String, Vec<u8>)> = self.db.read(|c| {
            c.prepare_cached("SELECT info, share FROM wallets WHERE group_key = ?1")
                .and_then(|mut st| {
                    st.query_row([group_key.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
                })
                .optional()
        })?;
        let (info_json, sealed) =
            row.ok_or_else(|| HomeError::UnknownWallet(group_key.to_string()))?;
        if let Some(share) = self.parsed.share(group_key, &info_json, &sealed) {
            return Ok(share);
        }
        let path = self.db.path().to_path_buf();
        let secret = self
            .key
            .open(share_aad(group_key, &info_json).as_bytes(), &sealed)
            .map_err(|source| HomeError::Store {
                path: path.clone(),
                source,
            })?;
        let share = KeyShare::from_secret_bytes(&secret).map_err(|source| HomeError::Key {
            path: path.clone(),
            source,
        })?;
        if GroupKey::of(share.group()) != *group_key {
            return Err(HomeError::Malformed {
                path,
                reason: "the share belongs to another group".into(),
            });
        }
        self.parsed.keep_share(
            *group_key,
            super::records::ParsedShare {
                info_json,
                sealed,
                share: share.clone(),
            },
        );
        Ok(share)
    }
}

/// Inserts a wallet row.
pub(crate) fn insert_wallet(
    conn: &Connection,
    info: &WalletInfo,
    info_json: &str,
    sealed: &[u8],
) -> Result<(), HomeError> {
    let exists: bool = conn
        .query_row(
            "SELECT 1 FROM wallets WHERE group_key = ?1",
            [info.group_key.to_string()],
            |_| Ok(true),
        )
        .optional()
        .map_err(|source| {
            HomeError::Db(DbError::Sqlite {
                path: PathBuf::from("signer.db"),
                source,
            })
        })?
        .unwrap_or(false);
    if exists {
        return Err(HomeError::WalletExists(info.group_key.to_string()));
    }
    // Names are scoped per coordinator: the same coordinator cannot name two wallets alike;
    // another coordinator's names neither block nor show (no probing).
    let mut stmt = conn
        .prepare_cached("SELECT group_key, info FROM wallets WHERE name = ?1")
        .map_err(|source| {
            HomeError::Db(DbError::Sqlite {
                path: PathBuf::from("signer.db"),
                source,
            })
        })?;
    let same_name: Vec<(String, String)> = stmt
        .query_map([&info.name], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect())
        .map_err(|source| {
            HomeError::Db(DbError::Sqlite {
                path: PathBuf::from("signer.db"),
                source,
            })
        })?;
    for (group_key, text) in same_name {
        let other: WalletInfo = serde_json::from_str(&text).map_err(|e| HomeError::Malformed {
            path: PathBuf::from("signer.db"),
            reason: e.to_string(),
        })?;
        if other.coordinator == info.coordinator {
            return Err(HomeError::NameTaken {
                name: info.name.clone(),
                coordinator: info.coordinator.to_string(),
                group_key,
            });
        }
    }
    conn.execute(
        "INSERT INTO wallets (group_key, name, info, share) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![info.group_key.to_string(), info.name, info_json, sealed],
    )
    .map_err(|source| {
        HomeError::Db(DbError::Sqlite {
            path: PathBuf::from("signer.db"),
            source,
        })
    })?;
    Ok(())
}

/// Associated data of a sealed share: the group key and a hash of the wallet's public
/// record, so that editing the record (its coordinator, roster, …) makes the share unusable.
pub(crate) fn share_aad(group_key: &GroupKey, info_json: &str) -> String {
    format!(
        "share:{group_key}:{}",
        sha256::Hash::hash(info_json.as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frost::pedersen::{run_in_memory, DkgParams};
    use crate::signer::home::list_wallets;
    use crate::store::StoreError;
    use bitcoin::Network;
    use rand::SeedableRng;

    #[test]
    fn shares_round_trip_and_corruption_is_refused() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let dir = tempfile::tempdir().unwrap();
        let shares = run_in_memory(DkgParams::new(2, 3).unwrap(), &mut rng).unwrap();
        let home =
            SignerHome::init(dir.path(), b"pw", KdfParams::fast_for_tests(), &mut rng).unwrap();
        let group_key = GroupKey::of(shares[0].group());
        let info = WalletInfo {
            name: "w".into(),
            network: Network::Regtest,
            group_key,
            coordinator: home.identity().public(),
            threshold: 2,
            signers: 3,
            index: 1,
            fingerprint: None,
            keygen: None,
            epoch: 0,
            transitions: Vec::new(),
        };
        home.save_share(&info, &shares[0], &mut rng).unwrap();
        assert!(matches!(
            home.save_share(&info, &shares[0], &mut rng),
            Err(HomeError::WalletExists(_))
        ));
        let loaded = home.load_share(&group_key).unwrap();
        assert_eq!(loaded.identifier(), shares[0].identifier());
        assert_eq!(home.wallet("w").unwrap(), info);
        assert_eq!(home.wallet(&group_key.to_string()).unwrap(), info);
        assert_eq!(list_wallets(home.dir()).unwrap(), vec![info.clone()]);

        // Wrong passphrase.
        assert!(matches!(
            SignerHome::open_with(dir.path(), b"nope", |_, _| Ok(())),
            Err(HomeError::Store {
                source: StoreError::WrongPassphrase,
                ..
            })
        ));
        // An edited public record (another coordinator) makes the share unusable.
        let mut edited = info.clone();
        edited.coordinator = crate::identity::IdentityKey::generate(&mut rng).public();
        let text = serde_json::to_string(&edited).unwrap();
        home.db
            .write(|tx| {
                tx.execute("UPDATE wallets SET info = ?1", [&text])
                    .map_err(|e| HomeError::Db(home.sql(e)))
            })
            .unwrap();
        assert!(matches!(
            home.load_share(&group_key),
            Err(HomeError::Store { .. })
        ));
        // Path-like wallet keys cannot even be expressed.
        assert!("../../etc/passwd".parse::<GroupKey>().is_err());
        // The state checks out (the wallet record is audited).
        let s = home.check_state(&mut rng).unwrap();
        assert_eq!(s.at.audit_count, 1);
    }

    #[test]
    fn names_are_scoped_per_coordinator_and_never_resolved_ambiguously() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let dir = tempfile::tempdir().unwrap();
        let home =
            SignerHome::init(dir.path(), b"pw", KdfParams::fast_for_tests(), &mut rng).unwrap();
        let a = crate::identity::IdentityKey::generate(&mut rng).public();
        let b = crate::identity::IdentityKey::generate(&mut rng).public();
        let wallet = |coordinator, rng: &mut rand::rngs::StdRng| {
            let shares = run_in_memory(DkgParams::new(2, 3).unwrap(), rng).unwrap();
            let info = WalletInfo {
                name: "vault".into(),
                network: Network::Regtest,
                group_key: GroupKey::of(shares[0].group()),
                coordinator,
                threshold: 2,
                signers: 3,
                index: 1,
                fingerprint: None,
                keygen: None,
                epoch: 0,
                transitions: Vec::new(),
            };
            (info, shares[0].clone())
        };
        let (first, s1) = wallet(a, &mut rng);
        home.save_share(&first, &s1, &mut rng).unwrap();
        assert_eq!(home.wallet("vault").unwrap(), first);
        // Coordinator A cannot name a second wallet alike.
        let (again, s2) = wallet(a, &mut rng);
        assert!(matches!(
            home.save_share(&again, &s2, &mut rng),
            Err(HomeError::NameTaken { .. })
        ));
        // Coordinator B can (it neither learns nor takes A's name) ...
        let (other, s3) = wallet(b, &mut rng);
        home.save_share(&other, &s3, &mut rng).unwrap();
        // ... and the name alone no longer picks either wallet: the operator names one.
        match home.wallet("vault") {
            Err(HomeError::AmbiguousWallet {
                count, candidates, ..
            }) => {
                assert_eq!(count, 2);
                assert!(candidates.contains(&first.group_key.to_string()));
                assert!(candidates.contains(&other.group_key.to_string()));
            }
            other => panic!("resolved an ambiguous name: {other:?}"),
        }
        assert_eq!(home.wallet(&first.group_key.to_string()).unwrap(), first);
        assert_eq!(home.wallet(&other.group_key.to_string()).unwrap(), other);
    }
}
