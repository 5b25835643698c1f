//! A signer's home directory: its identity key and its wallets' shares, all encrypted at rest
//! under one passphrase-derived store key (Argon2id + XChaCha20-Poly1305), written atomically
//! with mode 0600. Shares are decrypted only for the moment they are used.
//!
//! Layout under `<home>/signer/`: `store.json` (KDF parameters and salt), `identity.sealed`,
//! `wallets/<group key>.share` (sealed) and `wallets/<group key>.json` (public: name, network).

use std::fs;
use std::path::{Path, PathBuf};

use bitcoin::Network;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::frost::keys::{KeyError, KeyShare};
use crate::identity::{IdentityKey, IdentityPublic};
use crate::keys::{GroupKey, Roster, WalletFingerprint};
use crate::protocol::dkg::CertifiedKeygen;
use crate::signer::peers::Peers;
use crate::signer::policy::Policies;
use crate::store::{read_limited, write_atomic, KdfParams, StoreError, StoreHeader, StoreKey};

const MAX_FILE: u64 = 1 << 20;

/// Errors of the signer's home.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HomeError {
    /// `signer init` has not been run.
    #[error("{} is not a signer home; run `ckm --home DIR signer init` first", .0.display())]
    NotInitialized(PathBuf),
    /// `signer init` was already run.
    #[error("a signer store already exists at {}", .0.display())]
    AlreadyInitialized(PathBuf),
    /// File system error.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Wrong passphrase or corrupted store.
    #[error("{}", path.display())]
    Store {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: StoreError,
    },
    /// Malformed contents.
    #[error("{}: malformed contents: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The share inside is inconsistent.
    #[error("{}: invalid key share", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: KeyError,
    },
    /// No wallet with that name or key.
    #[error("this signer holds no wallet {0}")]
    UnknownWallet(String),
    /// The wallet already exists.
    #[error("this signer already holds a wallet with group key {0}")]
    WalletExists(String),
}

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
}

impl WalletInfo {
    /// The certified roster, when the wallet has one.
    pub fn roster(&self) -> Option<&Roster> {
        self.keygen.as_ref().map(|k| &k.context.roster)
    }
}

/// An unlocked signer home.
#[derive(Debug)]
pub struct SignerHome {
    dir: PathBuf,
    key: StoreKey,
    identity: IdentityKey,
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> HomeError + 'a {
    move |source| HomeError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl SignerHome {
    /// The signer directory inside a ckm home.
    pub fn dir_of(home: &Path) -> PathBuf {
        home.join("signer")
    }

    /// Whether `home` holds a signer store.
    pub fn exists(home: &Path) -> bool {
        Self::dir_of(home).join("store.json").exists()
    }

    /// Creates the signer store and identity under `home`.
    ///
    /// # Errors
    /// An existing store or a file system error.
    pub fn init<R: RngCore + CryptoRng>(
        home: &Path,
        passphrase: &[u8],
        params: KdfParams,
        rng: &mut R,
    ) -> Result<Self, HomeError> {
        let dir = Self::dir_of(home);
        let header_path = dir.join("store.json");
        if header_path.exists() {
            return Err(HomeError::AlreadyInitialized(dir));
        }
        fs::create_dir_all(dir.join("wallets")).map_err(io("create", &dir))?;
        let (key, header) =
            StoreKey::create(passphrase, params, rng).map_err(|source| HomeError::Store {
                path: header_path.clone(),
                source,
            })?;
        let identity = IdentityKey::generate(rng);
        let sealed = key.seal(b"identity", identity.secret_bytes().as_slice(), rng);
        let identity_path = dir.join("identity.sealed");
        write_atomic(&identity_path, &sealed).map_err(io("write", &identity_path))?;
        let pub_path = dir.join("identity.pub");
        write_atomic(&pub_path, format!("{}\n", identity.public()).as_bytes())
            .map_err(io("write", &pub_path))?;
        let header_json = serde_json::to_vec_pretty(&header).map_err(|e| HomeError::Malformed {
            path: header_path.clone(),
            reason: e.to_string(),
        })?;
        // The header goes last: a crash before this leaves no half-initialized store.
        write_atomic(&header_path, &header_json).map_err(io("write", &header_path))?;
        Ok(SignerHome { dir, key, identity })
    }

    /// The public identity of a signer home without unlocking it.
    ///
    /// # Errors
    /// Not a signer home, or a malformed file.
    pub fn public_identity(home: &Path) -> Result<IdentityPublic, HomeError> {
        let path = Self::dir_of(home).join("identity.pub");
        if !path.exists() {
            return Err(HomeError::NotInitialized(Self::dir_of(home)));
        }
        let text = fs::read_to_string(&path).map_err(io("read", &path))?;
        text.trim()
            .parse()
            .map_err(|e: crate::identity::IdentityError| HomeError::Malformed {
                path,
                reason: e.to_string(),
            })
    }

    /// Unlocks the store with the passphrase.
    ///
    /// # Errors
    /// Not initialized, wrong passphrase or corrupted files.
    pub fn open(home: &Path, passphrase: &[u8]) -> Result<Self, HomeError> {
        let dir = Self::dir_of(home);
        let header_path = dir.join("store.json");
        if !header_path.exists() {
            return Err(HomeError::NotInitialized(dir));
        }
        let bytes = read_limited(&header_path, MAX_FILE).map_err(io("read", &header_path))?;
        let header: StoreHeader =
            serde_json::from_slice(&bytes).map_err(|e| HomeError::Malformed {
                path: header_path.clone(),
                reason: e.to_string(),
            })?;
        let key = StoreKey::unlock(passphrase, &header).map_err(|source| HomeError::Store {
            path: header_path.clone(),
            source,
        })?;
        let identity_path = dir.join("identity.sealed");
        let sealed = read_limited(&identity_path, MAX_FILE).map_err(io("read", &identity_path))?;
        let secret = key
            .open(b"identity", &sealed)
            .map_err(|source| HomeError::Store {
                path: identity_path.clone(),
                source,
            })?;
        let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(secret.as_slice().try_into().map_err(
            |_| HomeError::Malformed {
                path: identity_path.clone(),
                reason: "identity key is not 32 bytes".into(),
            },
        )?);
        let identity =
            IdentityKey::from_secret_bytes(&bytes).map_err(|e| HomeError::Malformed {
                path: identity_path,
                reason: e.to_string(),
            })?;
        Ok(SignerHome { dir, key, identity })
    }

    /// This signer's identity key.
    pub fn identity(&self) -> &IdentityKey {
        &self.identity
    }

    fn share_path(&self, group_key: &GroupKey) -> PathBuf {
        self.dir.join("wallets").join(format!("{group_key}.share"))
    }

    fn info_path(&self, group_key: &GroupKey) -> PathBuf {
        self.dir.join("wallets").join(format!("{group_key}.json"))
    }

    /// Stores a new wallet's share (sealed) and its public facts.
    ///
    /// # Errors
    /// The wallet exists already, or a write failed.
    pub fn save_share<R: RngCore + CryptoRng>(
        &self,
        info: &WalletInfo,
        share: &KeyShare,
        rng: &mut R,
    ) -> Result<(), HomeError> {
        let share_path = self.share_path(&info.group_key);
        if share_path.exists() {
            return Err(HomeError::WalletExists(info.group_key.to_string()));
        }
        let secret = share.to_secret_bytes().map_err(|source| HomeError::Key {
            path: share_path.clone(),
            source,
        })?;
        let sealed = self
            .key
            .seal(share_aad(&info.group_key).as_bytes(), &secret, rng);
        let info_path = self.info_path(&info.group_key);
        let info_json = serde_json::to_vec_pretty(info).map_err(|e| HomeError::Malformed {
            path: info_path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&info_path, &info_json).map_err(io("write", &info_path))?;
        // The share is written last: a wallet is listed only once its share is durable.
        write_atomic(&share_path, &sealed).map_err(io("write", &share_path))?;
        Ok(())
    }

    /// Every wallet held (those whose share file exists).
    ///
    /// # Errors
    /// File system errors or malformed info files.
    pub fn wallets(&self) -> Result<Vec<WalletInfo>, HomeError> {
        list_wallets(&self.dir)
    }

    /// Looks a wallet up by name or group key.
    ///
    /// # Errors
    /// [`HomeError::UnknownWallet`].
    pub fn wallet(&self, name_or_key: &str) -> Result<WalletInfo, HomeError> {
        find_wallet(&self.dir, name_or_key)
    }

    /// Decrypts a wallet's share for immediate use (dropped, and zeroized, by the caller).
    ///
    /// # Errors
    /// Unknown wallet, corrupted file or inconsistent share.
    pub fn load_share(&self, group_key: &GroupKey) -> Result<KeyShare, HomeError> {
        let path = self.share_path(group_key);
        if !path.exists() {
            return Err(HomeError::UnknownWallet(group_key.to_string()));
        }
        let sealed = read_limited(&path, MAX_FILE).map_err(io("read", &path))?;
        let secret = self
            .key
            .open(share_aad(group_key).as_bytes(), &sealed)
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
        Ok(share)
    }
}

impl SignerHome {
    /// Path of the audit log.
    pub fn audit_path(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// The signer's policies (sealed: only the passphrase holder can change them).
    ///
    /// # Errors
    /// A corrupted or tampered policy file.
    pub fn load_policies(&self) -> Result<Policies, HomeError> {
        let path = self.dir.join("policy.sealed");
        if !path.exists() {
            return Ok(Policies::default());
        }
        let sealed = read_limited(&path, MAX_FILE).map_err(io("read", &path))?;
        let plain = self
            .key
            .open(b"policy", &sealed)
            .map_err(|source| HomeError::Store {
                path: path.clone(),
                source,
            })?;
        serde_json::from_slice(&plain).map_err(|e| HomeError::Malformed {
            path,
            reason: e.to_string(),
        })
    }

    /// Replaces the signer's policies (atomic write).
    ///
    /// # Errors
    /// A write failure.
    pub fn save_policies<R: RngCore + CryptoRng>(
        &self,
        policies: &Policies,
        rng: &mut R,
    ) -> Result<(), HomeError> {
        let path = self.dir.join("policy.sealed");
        let plain = serde_json::to_vec(policies).map_err(|e| HomeError::Malformed {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let sealed = self.key.seal(b"policy", &plain, rng);
        write_atomic(&path, &sealed).map_err(io("write", &path))
    }
}

impl SignerHome {
    /// The peers this signer's operator approved for key generations (sealed).
    ///
    /// # Errors
    /// A corrupted or tampered peers file.
    pub fn load_peers(&self) -> Result<Peers, HomeError> {
        let path = self.dir.join("peers.sealed");
        if !path.exists() {
            return Ok(Peers::default());
        }
        let sealed = read_limited(&path, MAX_FILE).map_err(io("read", &path))?;
        let plain = self
            .key
            .open(b"peers", &sealed)
            .map_err(|source| HomeError::Store {
                path: path.clone(),
                source,
            })?;
        serde_json::from_slice(&plain).map_err(|e| HomeError::Malformed {
            path,
            reason: e.to_string(),
        })
    }

    /// Replaces the approved peers (atomic write).
    ///
    /// # Errors
    /// A write failure.
    pub fn save_peers<R: RngCore + CryptoRng>(
        &self,
        peers: &Peers,
        rng: &mut R,
    ) -> Result<(), HomeError> {
        let path = self.dir.join("peers.sealed");
        let plain = serde_json::to_vec(peers).map_err(|e| HomeError::Malformed {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let sealed = self.key.seal(b"peers", &plain, rng);
        write_atomic(&path, &sealed).map_err(io("write", &path))
    }
}

fn share_aad(group_key: &GroupKey) -> String {
    format!("share:{group_key}")
}

/// Lists the wallets of a signer directory without unlocking it (public info only).
///
/// # Errors
/// File system errors or malformed info files.
pub fn list_wallets(dir: &Path) -> Result<Vec<WalletInfo>, HomeError> {
    let wallets = dir.join("wallets");
    if !wallets.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(&wallets).map_err(io("list", &wallets))? {
        let path = entry.map_err(io("list", &wallets))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        if !path.with_extension("share").exists() {
            continue;
        }
        let bytes = read_limited(&path, MAX_FILE).map_err(io("read", &path))?;
        let info: WalletInfo =
            serde_json::from_slice(&bytes).map_err(|e| HomeError::Malformed {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        out.push(info);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Finds a wallet by name or group key in a signer directory.
///
/// # Errors
/// [`HomeError::UnknownWallet`].
pub fn find_wallet(dir: &Path, name_or_key: &str) -> Result<WalletInfo, HomeError> {
    list_wallets(dir)?
        .into_iter()
        .find(|w| w.name == name_or_key || w.group_key.to_string() == name_or_key)
        .ok_or_else(|| HomeError::UnknownWallet(name_or_key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frost::dkg::{run_in_memory, DkgParams};

    #[test]
    fn shares_round_trip_and_corruption_is_refused() {
        let mut rng = rand::thread_rng();
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
        };
        home.save_share(&info, &shares[0], &mut rng).unwrap();
        assert!(matches!(
            home.save_share(&info, &shares[0], &mut rng),
            Err(HomeError::WalletExists(_))
        ));
        let loaded = home.load_share(&group_key).unwrap();
        assert_eq!(loaded.identifier(), shares[0].identifier());
        assert_eq!(home.wallet("w").unwrap(), info);

        // Wrong passphrase.
        assert!(matches!(
            SignerHome::open(dir.path(), b"nope"),
            Err(HomeError::Store {
                source: StoreError::WrongPassphrase,
                ..
            })
        ));
        // One flipped byte in the sealed share: refused, never a panic.
        let path = home.share_path(&group_key);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            home.load_share(&group_key),
            Err(HomeError::Store { .. })
        ));
        // Truncated.
        fs::write(&path, &bytes[..10]).unwrap();
        assert!(home.load_share(&group_key).is_err());
        // Path-like wallet keys cannot even be expressed.
        assert!("../../etc/passwd".parse::<GroupKey>().is_err());
    }
}
