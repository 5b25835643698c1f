//! The sealed, versioned values of a home: each wallet's policy (one row per wallet, with a
//! sealed summary of every row that the checkpoint counts) and the approved peers.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bdk_wallet::rusqlite::{self, Connection, OptionalExtension};
use bitcoin::hashes::{sha256, Hash};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use super::{HomeError, SignerHome, StateError, Versioned};
use crate::keys::GroupKey;
use crate::signer::audit::{self, AuditEvent, AuditKind};
use crate::signer::db::{get_kv, put_kv};
use crate::signer::peers::Peers;
use crate::signer::policy::Policy;
use crate::store::{StoreError, StoreKey};

impl SignerHome {
    pub(super) fn versioned<T: serde::de::DeserializeOwned + Default>(
        &self,
        conn: &Connection,
        name: &str,
    ) -> Result<(u64, T), HomeError> {
        let Some(sealed) = get_kv(conn, name).map_err(|e| self.sql(e))? else {
            return Ok((0, T::default()));
        };
        let plain = self
            .key
            .open(name.as_bytes(), &sealed)
            .map_err(|source| HomeError::Store {
                path: self.db.path().to_path_buf(),
                source,
            })?;
        let v: Versioned<T> = serde_json::from_slice(&plain).map_err(|e| HomeError::Malformed {
            path: self.db.path().to_path_buf(),
            reason: format!("{name}: {e}"),
        })?;
        Ok((v.version, v.value))
    }

    fn save_versioned<
        T: Serialize + serde::de::DeserializeOwned + Default,
        R: RngCore + CryptoRng,
    >(
        &self,
        name: &str,
        value: &T,
        kind: AuditKind,
        detail: String,
        rng: &mut R,
    ) -> Result<u64, HomeError> {
        let version = self.db.write(|tx| {
            let (current, _) = self.versioned::<T>(tx, name)?;
            let version = current + 1;
            let plain = serde_json::to_vec(&Versioned { version, value }).map_err(|e| {
                HomeError::Malformed {
                    path: self.db.path().to_path_buf(),
                    reason: e.to_string(),
                }
            })?;
            let sealed = self.key.seal(name.as_bytes(), &plain, rng);
            put_kv(tx, name, &sealed).map_err(|e| HomeError::Db(self.sql(e)))?;
            audit::append(
                tx,
                &self.mac,
                AuditEvent::signer(kind, format!("{detail} (version {version})")),
                crate::auth::unix_now(),
            )
            .map_err(|e| HomeError::Db(self.sql(e)))?;
            Ok::<_, HomeError>(version)
        })?;
        self.advance_checkpoint(rng)?;
        Ok(version)
    }

    /// The policy of one wallet (sealed; none means no limits). Read per request: one
    /// indexed row, whatever the number of wallets.
    ///
    /// # Errors
    /// A corrupted or tampered row.
    pub fn policy(&self, group_key: &GroupKey) -> Result<Policy, HomeError> {
        self.db.read(|c| Ok(read_policy(c, &self.key, group_key)))?
    }

    /// Every wallet's policy.
    ///
    /// # Errors
    /// A corrupted or tampered row.
    pub fn policies(&self) -> Result<BTreeMap<GroupKey, Policy>, HomeError> {
        self.db.read(|c| Ok(read_policies(c, &self.key)))?
    }

    /// Replaces one wallet's policy: a new policy version (the checkpoint records it),
    /// audited with `detail`.
    ///
    /// # Errors
    /// A database failure.
    pub fn set_policy<R: RngCore + CryptoRng>(
        &self,
        group_key: &GroupKey,
        policy: &Policy,
        detail: &str,
        rng: &mut R,
    ) -> Result<u64, HomeError> {
        let version = self.db.write(|tx| {
            let (current, _) = policy_state(tx, &self.key)?;
            let version = current + 1;
            put_policy(tx, &self.key, group_key, policy, version, rng)?;
            put_policy_state(tx, &self.key, version, rng)?;
            audit::append(
                tx,
                &self.mac,
                AuditEvent::signer(AuditKind::Policy, format!("{detail} (version {version})")),
                crate::auth::unix_now(),
            )
            .map_err(|e| HomeError::Db(self.sql(e)))?;
            Ok::<_, HomeError>(version)
        })?;
        self.advance_checkpoint(rng)?;
        Ok(version)
    }

    /// The peers this signer's operator approved for key generations (sealed).
    ///
    /// # Errors
    /// A corrupted or tampered value.
    pub fn load_peers(&self) -> Result<Peers, HomeError> {
        let (version, mut p) = self
            .db
            .read(|c| Ok(self.versioned::<Peers>(c, "peers")))??;
        p.version = version;
        Ok(p)
    }

    /// Replaces the approved peers (a new version, audited with `detail`).
    ///
    /// # Errors
    /// A database failure.
    pub fn save_peers<R: RngCore + CryptoRng>(
        &self,
        peers: &Peers,
        detail: &str,
        rng: &mut R,
    ) -> Result<u64, HomeError> {
        self.save_versioned("peers", peers, AuditKind::Peers, detail.to_string(), rng)
    }
}

/// The sealed summary of the policy rows: a version counter and a digest of every row.
#[derive(Serialize, Deserialize)]
struct PolicyState {
    version: u64,
    #[serde(with = "hex::serde")]
    digest: [u8; 32],
}

fn sql_err(source: rusqlite::Error) -> HomeError {
    HomeError::Sql(source)
}

fn sealed_error(name: &str, source: StoreError) -> HomeError {
    HomeError::Store {
        path: PathBuf::from(format!("signer.db ({name})")),
        source,
    }
}

/// Every policy row, by group key: (group key, version, sealed policy).
fn policy_rows(conn: &Connection) -> Result<Vec<(String, i64, Vec<u8>)>, HomeError> {
    let mut stmt = conn
        .prepare("SELECT group_key, version, sealed FROM policies ORDER BY group_key")
        .map_err(sql_err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(sql_err)?;
    rows.collect::<Result<_, _>>().map_err(sql_err)
}

/// The digest of every policy row: (group key, version, hash of the sealed blob).
pub(super) fn policy_digest(conn: &Connection) -> Result<[u8; 32], HomeError> {
    use bitcoin::hashes::HashEngine;
    let mut engine = sha256::Hash::engine();
    for (gk, version, sealed) in policy_rows(conn)? {
        engine.input(&(gk.len() as u64).to_be_bytes());
        engine.input(gk.as_bytes());
        engine.input(&version.to_be_bytes());
        engine.input(sha256::Hash::hash(&sealed).as_byte_array());
    }
    Ok(sha256::Hash::from_engine(engine).to_byte_array())
}

/// The policy version and digest recorded in the sealed summary ((0, digest of no rows) when
/// there is none).
pub(super) fn policy_state(
    conn: &Connection,
    key: &StoreKey,
) -> Result<(u64, [u8; 32]), HomeError> {
    let Some(sealed) = get_kv(conn, "policy_state").map_err(sql_err)? else {
        return Ok((0, sha256::Hash::hash(&[]).to_byte_array()));
    };
    let plain = key
        .open(b"policy_state", &sealed)
        .map_err(|e| sealed_error("policy_state", e))?;
    let s: PolicyState = serde_json::from_slice(&plain).map_err(|e| HomeError::Malformed {
        path: PathBuf::from("signer.db (policy_state)"),
        reason: e.to_string(),
    })?;
    Ok((s.version, s.digest))
}

/// Writes the sealed summary for the current rows at `version`.
pub(crate) fn put_policy_state<R: RngCore + CryptoRng>(
    conn: &Connection,
    key: &StoreKey,
    version: u64,
    rng: &mut R,
) -> Result<(), HomeError> {
    let digest = policy_digest(conn)?;
    let plain =
        serde_json::to_vec(&PolicyState { version, digest }).map_err(|e| HomeError::Malformed {
            path: PathBuf::from("signer.db (policy_state)"),
            reason: e.to_string(),
        })?;
    put_kv(
        conn,
        "policy_state",
        &key.seal(b"policy_state", &plain, rng),
    )
    .map_err(sql_err)
}

fn policy_aad(group_key: &GroupKey) -> String {
    format!("policy:{group_key}")
}

/// Writes one wallet's policy row at `version` (sealed; the summary must be rewritten after).
pub(crate) fn put_policy<R: RngCore + CryptoRng>(
    conn: &Connection,
    key: &StoreKey,
    group_key: &GroupKey,
    policy: &Policy,
    version: u64,
    rng: &mut R,
) -> Result<(), HomeError> {
    let plain = serde_json::to_vec(&Versioned {
        version,
        value: policy,
    })
    .map_err(|e| HomeError::Malformed {
        path: PathBuf::from("signer.db (policies)"),
        reason: e.to_string(),
    })?;
    let sealed = key.seal(policy_aad(group_key).as_bytes(), &plain, rng);
    conn.execute(
        "INSERT INTO policies (group_key, version, sealed) VALUES (?1, ?2, ?3)
         ON CONFLICT(group_key) DO UPDATE SET version = excluded.version, sealed = excluded.sealed",
        rusqlite::params![
            group_key.to_string(),
            i64::try_from(version).unwrap_or(i64::MAX),
            sealed
        ],
    )
    .map_err(sql_err)?;
    Ok(())
}

fn open_policy(
    key: &StoreKey,
    group_key: &GroupKey,
    version: i64,
    sealed: &[u8],
) -> Result<Policy, HomeError> {
    let plain = key
        .open(policy_aad(group_key).as_bytes(), sealed)
        .map_err(|e| sealed_error("policies", e))?;
    let v: Versioned<Policy> =
        serde_json::from_slice(&plain).map_err(|e| HomeError::Malformed {
            path: PathBuf::from("signer.db (policies)"),
            reason: e.to_string(),
        })?;
    if i64::try_from(v.version).ok() != Some(version) {
        return Err(HomeError::State(StateError::PolicyReplaced));
    }
    Ok(v.value)
}

fn read_policy(
    conn: &Connection,
    key: &StoreKey,
    group_key: &GroupKey,
) -> Result<Policy, HomeError> {
    let row: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT version, sealed FROM policies WHERE group_key = ?1")
        .and_then(|mut st| st.query_row([group_key.to_string()], |r| Ok((r.get(0)?, r.get(1)?))))
        .optional()
        .map_err(sql_err)?;
    match row {
        Some((version, sealed)) => open_policy(key, group_key, version, &sealed),
        None => Ok(Policy::default()),
    }
}

fn read_policies(
    conn: &Connection,
    key: &StoreKey,
) -> Result<BTreeMap<GroupKey, Policy>, HomeError> {
    let mut out = BTreeMap::new();
    for (gk, version, sealed) in policy_rows(conn)? {
        let gk: GroupKey =
            gk.parse()
                .map_err(|e: crate::keys::ParseKeyError| HomeError::Malformed {
                    path: PathBuf::from("signer.db (policies)"),
                    reason: e.to_string(),
                })?;
        out.insert(gk, open_policy(key, &gk, version, &sealed)?);
    }
    Ok(out)
}
