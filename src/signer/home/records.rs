//! The wallets' public records: what a signer knows about each wallet it holds a share of,
//! listed and looked up (also without unlocking the home).

use std::path::Path;

use bdk_wallet::rusqlite::{Connection, OptionalExtension};
use bitcoin::Network;
use serde::{Deserialize, Serialize};

use super::{HomeError, SignerHome};
use crate::identity::IdentityPublic;
use crate::keys::{GroupKey, Roster, WalletFingerprint};
use crate::protocol::dkg::CertifiedKeygen;
use crate::protocol::lifecycle::{CertifiedTransition, History};
use crate::signer::db::{DbError, SignerDb};

/// Public facts about a wallet a signer holds a share of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletInfo {
    /// The name the coordinator gave the wallet.
    pub name: String,
    /// Network.
    pub network: Network,
    /// The group root key: the wallet's identity on this signer.
    pub group_key: GroupKey,
    /// The coordinator that created it (and may use it; see also the policy's
    /// `coordinators`).
    pub coordinator: IdentityPublic,
    /// Threshold.
    pub threshold: u16,
    /// Group size.
    pub signers: u16,
    /// This signer's roster index.
    pub index: u16,
    /// Fingerprint of the certified key generation (`None` for wallets made before
    /// certification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<WalletFingerprint>,
    /// The certified key generation: roster, round-1 broadcasts, every certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keygen: Option<CertifiedKeygen>,
    /// The epoch this signer's share belongs to (0 until the first transition).
    #[serde(default)]
    pub epoch: u64,
    /// Every committed transition since the key generation (refresh, removal, repair,
    /// enrolment), certified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<CertifiedTransition>,
}

impl WalletInfo {
    /// The current certified roster, when the wallet has one.
    pub fn roster(&self) -> Option<&Roster> {
        match self.transitions.last() {
            Some(t) => Some(&t.state.roster),
            None => self.keygen.as_ref().map(|k| &k.context.roster),
        }
    }

    /// The wallet's certified history, when it has one.
    pub fn history(&self) -> Option<History> {
        self.keygen.as_ref().map(|k| History {
            keygen: k.clone(),
            transitions: self.transitions.clone(),
        })
    }
}

impl SignerHome {
    /// Every wallet held, by name.
    ///
    /// # Errors
    /// Database errors or malformed records.
    pub fn wallets(&self) -> Result<Vec<WalletInfo>, HomeError> {
        self.db.read(|c| Ok(list_from(c, self.db.path())))?
    }

    /// Looks a wallet up by name or group key (indexed).
    ///
    /// # Errors
    /// [`HomeError::UnknownWallet`].
    pub fn wallet(&self, name_or_key: &str) -> Result<WalletInfo, HomeError> {
        self.db
            .read(|c| Ok(find_in(c, self.db.path(), name_or_key, Some(&self.parsed))))?
    }
}

/// Records a long-running signer parsed before, by their exact bytes on disk: a wallet's
/// record (its certified key generation and history carry many points, which cost field
/// inversions to decode) and its share (opened and checked against its verifying share).
/// Every lookup still reads the row; only an identical row is served from here, so a
/// changed record (a transition, a policy) is parsed afresh. Bounded; the shares drop (and
/// zeroize) with the home.
#[derive(Default)]
pub(super) struct Parsed {
    infos: std::sync::Mutex<std::collections::HashMap<String, WalletInfo>>,
    shares: std::sync::Mutex<std::collections::HashMap<GroupKey, ParsedShare>>,
}

/// A share and the row it came from.
pub(super) struct ParsedShare {
    pub(super) info_json: String,
    pub(super) sealed: Vec<u8>,
    pub(super) share: crate::keys::KeyShare,
}

/// Most records of each kind kept.
const PARSED_MAX: usize = 256;

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parsed").finish_non_exhaustive()
    }
}

impl Parsed {
    fn info(&self, path: &Path, text: &str) -> Result<WalletInfo, HomeError> {
        let mut infos = self.infos.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(info) = infos.get(text) {
            return Ok(info.clone());
        }
        let info = parse_info(path, text)?;
        if infos.len() >= PARSED_MAX {
            infos.clear();
        }
        infos.insert(text.to_string(), info.clone());
        Ok(info)
    }

    /// The share parsed from exactly this row before, if any.
    pub(super) fn share(
        &self,
        group_key: &GroupKey,
        info_json: &str,
        sealed: &[u8],
    ) -> Option<crate::keys::KeyShare> {
        let shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        shares
            .get(group_key)
            .filter(|p| p.info_json == info_json && p.sealed == sealed)
            .map(|p| p.share.clone())
    }

    /// Keeps a share parsed from a row.
    pub(super) fn keep_share(&self, group_key: GroupKey, parsed: ParsedShare) {
        let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        if shares.len() >= PARSED_MAX && !shares.contains_key(&group_key) {
            shares.clear();
        }
        shares.insert(group_key, parsed);
    }
}

pub(super) fn parse_info(path: &Path, text: &str) -> Result<WalletInfo, HomeError> {
    serde_json::from_str(text).map_err(|e| HomeError::Malformed {
        path: path.to_path_buf(),
        reason: format!("wallet record: {e}"),
    })
}

fn list_from(conn: &Connection, path: &Path) -> Result<Vec<WalletInfo>, HomeError> {
    let sql = |source| {
        HomeError::Db(DbError::Sqlite {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut stmt = conn
        .prepare("SELECT info FROM wallets ORDER BY name, group_key")
        .map_err(sql)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(sql)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(parse_info(path, &row.map_err(sql)?)?);
    }
    Ok(out)
}

/// A wallet by group key, fingerprint or name. A group key (which the coordinator's
/// requests carry) is an exact match; a name matches only when one wallet has it: names are
/// chosen by each coordinator, and a name shared by wallets of different coordinators is
/// refused with the candidates listed rather than resolved to one of them.
fn find_in(
    conn: &Connection,
    path: &Path,
    name_or_key: &str,
    parsed: Option<&Parsed>,
) -> Result<WalletInfo, HomeError> {
    let sql = |source| {
        HomeError::Db(DbError::Sqlite {
            path: path.to_path_buf(),
            source,
        })
    };
    let by_key: Option<String> = conn
        .prepare_cached("SELECT info FROM wallets WHERE group_key = ?1")
        .and_then(|mut st| st.query_row([name_or_key], |r| r.get(0)))
        .optional()
        .map_err(sql)?;
    if let Some(t) = by_key {
        return match parsed {
            Some(p) => p.info(path, &t),
            None => parse_info(path, &t),
        };
    }
    let mut stmt = conn
        .prepare_cached("SELECT info FROM wallets WHERE name = ?1 ORDER BY group_key")
        .map_err(sql)?;
    let named: Vec<String> = stmt
        .query_map([name_or_key], |r| r.get::<_, String>(0))
        .map_err(sql)?
        .collect::<Result<_, _>>()
        .map_err(sql)?;
    let mut matches: Vec<WalletInfo> = named
        .iter()
        .map(|t| parse_info(path, t))
        .collect::<Result<_, _>>()?;
    if matches.is_empty() {
        matches = list_from(conn, path)?
            .into_iter()
            .filter(|w| {
                w.fingerprint
                    .is_some_and(|f| f.to_string().eq_ignore_ascii_case(name_or_key.trim()))
            })
            .collect();
    }
    match matches.len() {
        0 => Err(HomeError::UnknownWallet(name_or_key.to_string())),
        1 => Ok(matches.remove(0)),
        count => Err(HomeError::AmbiguousWallet {
            name: name_or_key.to_string(),
            count,
            candidates: matches
                .iter()
                .map(|w| {
                    format!(
                        "{} (fingerprint {}, coordinator {})",
                        w.group_key,
                        w.fingerprint
                            .map_or_else(|| "none".to_string(), |f| f.to_string()),
                        w.coordinator
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        }),
    }
}

/// Lists the wallets of a signer directory without unlocking it (public info only); none
/// when it holds no database yet. A directory of an earlier layout holds none either: its
/// conversion reads its files.
///
/// # Errors
/// Database errors or malformed records.
pub fn list_wallets(dir: &Path) -> Result<Vec<WalletInfo>, HomeError> {
    let path = SignerDb::path_in(dir);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let conn = SignerDb::open_read_only(&path)?;
    list_from(&conn, &path)
}

/// Finds a wallet by name or group key in a signer directory without unlocking it.
///
/// # Errors
/// [`HomeError::UnknownWallet`] (also when the directory holds no database yet).
pub fn find_wallet(dir: &Path, name_or_key: &str) -> Result<WalletInfo, HomeError> {
    let path = SignerDb::path_in(dir);
    if !path.exists() {
        return Err(HomeError::UnknownWallet(name_or_key.to_string()));
    }
    let conn = SignerDb::open_read_only(&path)?;
    find_in(&conn, &path, name_or_key, None)
}
