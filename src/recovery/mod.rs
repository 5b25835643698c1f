//! The timelocked recovery path: when the co-signers are gone for good, one or more recovery
//! keys held by the user can spend every coin of the wallet once it is `N` blocks deep.
//!
//! May import `keys`, `frost` and the crate root only; [`script_path`] signs the recovery
//! path of a PSBT.
//!
//! A wallet with a [`RecoveryPolicy`] has the descriptors
//! `tr([fp]FROST_XPUB/0/*,and_v(v:pk([…]REC/0/*),older(N)))` (with several keys:
//! `and_v(v:multi_a(K,[…]REC1/0/*,…),older(N))`) and `…/1/*` for change: the FROST group key
//! is the internal key (everyday spends stay single-signature key-path spends), and the
//! only script leaf is the recovery condition. Everything here is built and checked with
//! `miniscript`.
//!
//! The policy is part of the certified key generation ([`crate::protocol::dkg::DkgContext`]),
//! so every signer knows it and refuses to co-sign for an input, or accept a change output,
//! whose script tree is not the certified one at its own derivation index
//! ([`WalletScripts`], used by [`crate::psbt::check`]). [`script_path`] signs the script path of a
//! recovery PSBT with the recovery key. See `docs/recovery.md`.
//!
//! ```
//! use ckm::recovery::{RecoveryKey, RecoveryPolicy};
//!
//! let key: RecoveryKey = "[73c5da0a/86'/1'/0']tpubDDfvzhdVV4unsoKt5aE6dcsNsfeWbTgmLZPi8LQDYU2xixrYemMfWJ3BaVneH3u7DBQePdTwhpybaKRU95pi6PMUtLPBJLVQRpzEnjfjZzX".parse()?;
//! let policy = RecoveryPolicy::new(vec![key], 1, 144)?;
//! assert!(policy.leaf_template(ckm::keys::Keychain::External).ends_with("/0/*),older(144))"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod script_path;

use std::fmt;
use std::str::FromStr;

use bitcoin::bip32::{DerivationPath, Fingerprint, Xpub};
use bitcoin::hashes::{sha256t_hash_newtype, Hash, HashEngine};
use bitcoin::key::TapTweak;
use bitcoin::taproot::TapNodeHash;
use bitcoin::{Address, Network, NetworkKind, ScriptBuf, Sequence, XOnlyPublicKey};
use miniscript::descriptor::{Descriptor, DescriptorPublicKey, DescriptorXKey, Wildcard};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::frost::shares::{secp, GroupPublic};
use crate::keys::{Keychain, WalletPath};

/// Most recovery keys in one policy.
pub const MAX_RECOVERY_KEYS: usize = 20;

sha256t_hash_newtype! {
    struct PolicyTag = hash_str("ckm/recovery-policy/v1");
    #[hash_newtype(forward)]
    struct PolicyDigest(_);
}

/// Why a recovery key, a recovery policy or a wallet script is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// The text is not `[fingerprint/path]xpub`.
    #[error("recovery key {key:?}: {reason}")]
    KeyFormat {
        /// The key as given (shortened).
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// No key, or too many.
    #[error("a recovery policy has 1 to {MAX_RECOVERY_KEYS} keys, got {0}")]
    KeyCount(usize),
    /// The same extended key twice.
    #[error("recovery key {0} is listed twice")]
    DuplicateKey(String),
    /// Threshold outside `1..=keys`.
    #[error("the recovery threshold must be between 1 and the number of recovery keys ({keys}), got {threshold}")]
    Threshold {
        /// The threshold.
        threshold: u16,
        /// Number of keys.
        keys: usize,
    },
    /// The timelock is zero.
    #[error("the recovery timelock must be 1 to 65535 blocks")]
    Blocks,
    /// Keys of mainnet and test networks mixed, or keys of another network than the wallet's.
    #[error("recovery key {key} is for another network than the wallet's ({network})")]
    Network {
        /// The key.
        key: String,
        /// The wallet's network.
        network: Network,
    },
    /// miniscript refused the descriptor.
    #[error("miniscript refuses the recovery descriptor: {0}")]
    Descriptor(String),
    /// A derivation failed.
    #[error("cannot derive the wallet's script at {path}: {reason}")]
    Derive {
        /// The wallet path.
        path: WalletPath,
        /// miniscript's reason.
        reason: String,
    },
}

/// An extended public key with its origin, `[fingerprint/path]xpub`, as wallets export it
/// (e.g. `[73c5da0a/86'/1'/0']tpub…`). The wallet derives `…/0/i` and `…/1/i` below it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RecoveryKey {
    fingerprint: Fingerprint,
    path: DerivationPath,
    xpub: Xpub,
}

impl RecoveryKey {
    /// The master key fingerprint of the origin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The origin path from the master key to `xpub`.
    pub fn path(&self) -> &DerivationPath {
        &self.path
    }

    /// The extended public key.
    pub fn xpub(&self) -> &Xpub {
        &self.xpub
    }

    /// The key expression for a keychain, `[fp/path]xpub/k/*`.
    fn ranged(&self, keychain: Keychain) -> String {
        format!("{self}/{}/*", keychain.step())
    }
}

impl fmt::Display for RecoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = DescriptorPublicKey::XPub(DescriptorXKey {
            origin: Some((self.fingerprint, self.path.clone())),
            xkey: self.xpub,
            derivation_path: DerivationPath::master(),
            wildcard: Wildcard::None,
        });
        write!(f, "{key}")
    }
}

impl fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecoveryKey({self})")
    }
}

impl FromStr for RecoveryKey {
    type Err = RecoveryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| RecoveryError::KeyFormat {
            key: s.chars().take(140).collect(),
            reason,
        };
        let s = s.trim();
        if s.contains("prv") {
            return Err(bad(
                "this is a private key; give the extended public key ([fp/path]tpub… or xpub…)",
            ));
        }
        let key = DescriptorPublicKey::from_str(s)
            .map_err(|_| bad("not an extended public key with origin, [fingerprint/path]xpub"))?;
        let DescriptorPublicKey::XPub(x) = key else {
            return Err(bad(
                "not an extended public key; give [fingerprint/path]xpub (or tpub)",
            ));
        };
        let Some((fingerprint, path)) = x.origin else {
            return Err(bad("its origin is missing: give it as [fingerprint/path]xpub, e.g. [73c5da0a/86'/1'/0']tpub…"));
        };
        if !x.derivation_path.is_empty() || x.wildcard != Wildcard::None {
            return Err(bad(
                "give the key without derivation steps after it (ckm appends /0/* and /1/*)",
            ));
        }
        if usize::from(x.xkey.depth) != path.len() {
            return Err(bad(
                "its origin path does not have as many steps as the key's depth",
            ));
        }
        if path.is_empty() && x.xkey.fingerprint() != fingerprint {
            return Err(bad(
                "a master key's origin fingerprint must be its own fingerprint",
            ));
        }
        Ok(RecoveryKey {
            fingerprint,
            path,
            xpub: x.xkey,
        })
    }
}

impl Serialize for RecoveryKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RecoveryKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The recovery path of a wallet: `threshold` of `keys` may spend a coin once it is `blocks`
/// blocks deep (a BIP-0068 relative timelock, `older(blocks)`). Only [`RecoveryPolicy::new`]
/// (and deserialization, which runs the same checks) makes one.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPolicy")]
pub struct RecoveryPolicy {
    keys: Vec<RecoveryKey>,
    threshold: u16,
    blocks: u16,
}

#[derive(Deserialize)]
struct RawPolicy {
    keys: Vec<RecoveryKey>,
    threshold: u16,
    blocks: u16,
}

impl TryFrom<RawPolicy> for RecoveryPolicy {
    type Error = RecoveryError;
    fn try_from(raw: RawPolicy) -> Result<Self, RecoveryError> {
        RecoveryPolicy::new(raw.keys, raw.threshold, raw.blocks)
    }
}

impl fmt::Debug for RecoveryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecoveryPolicy({self})")
    }
}

impl fmt::Display for RecoveryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} recovery key(s) after {} blocks",
            self.threshold,
            self.keys.len(),
            self.blocks
        )
    }
}

impl RecoveryPolicy {
    /// A policy: `threshold` of `keys` (in this order: it is the order of `multi_a`) after
    /// `blocks` blocks.
    ///
    /// # Errors
    /// No key or more than [`MAX_RECOVERY_KEYS`], a key twice, keys of mainnet and test
    /// networks mixed, a threshold outside `1..=keys`, or `blocks` = 0.
    pub fn new(keys: Vec<RecoveryKey>, threshold: u16, blocks: u16) -> Result<Self, RecoveryError> {
        if keys.is_empty() || keys.len() > MAX_RECOVERY_KEYS {
            return Err(RecoveryError::KeyCount(keys.len()));
        }
        if threshold == 0 || usize::from(threshold) > keys.len() {
            return Err(RecoveryError::Threshold {
                threshold,
                keys: keys.len(),
            });
        }
        if blocks == 0 {
            return Err(RecoveryError::Blocks);
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| {
                o.xpub.public_key == k.xpub.public_key && o.xpub.chain_code == k.xpub.chain_code
            }) {
                return Err(RecoveryError::DuplicateKey(k.to_string()));
            }
            if k.xpub.network != keys[0].xpub.network {
                return Err(RecoveryError::Network {
                    key: k.to_string(),
                    network: match keys[0].xpub.network {
                        NetworkKind::Main => Network::Bitcoin,
                        NetworkKind::Test => Network::Testnet,
                    },
                });
            }
        }
        Ok(RecoveryPolicy {
            keys,
            threshold,
            blocks,
        })
    }

    /// The recovery keys, in `multi_a` order.
    pub fn keys(&self) -> &[RecoveryKey] {
        &self.keys
    }

    /// How many recovery keys must sign.
    pub fn threshold(&self) -> u16 {
        self.threshold
    }

    /// The relative timelock in blocks.
    pub fn blocks(&self) -> u16 {
        self.blocks
    }

    /// The `nSequence` of a recovery spend's inputs (BIP-0068, height-based).
    pub fn sequence(&self) -> Sequence {
        Sequence::from_height(self.blocks)
    }

    /// Mainnet or test networks (all keys share it).
    pub fn network_kind(&self) -> NetworkKind {
        self.keys
            .first()
            .map_or(NetworkKind::Test, |k| k.xpub.network)
    }

    /// Checks the keys belong to `network` (xpub on mainnet, tpub elsewhere).
    ///
    /// # Errors
    /// [`RecoveryError::Network`] naming the first key of another network.
    pub fn check_network(&self, network: Network) -> Result<(), RecoveryError> {
        let kind = NetworkKind::from(network);
        match self.keys.iter().find(|k| k.xpub.network != kind) {
            Some(k) => Err(RecoveryError::Network {
                key: k.to_string(),
                network,
            }),
            None => Ok(()),
        }
    }

    /// The miniscript of the recovery leaf for a keychain, e.g.
    /// `and_v(v:pk([fp/86'/1'/0']tpub…/0/*),older(144))`.
    pub fn leaf_template(&self, keychain: Keychain) -> String {
        self.leaf_with(|k| k.ranged(keychain))
    }

    /// The recovery leaf for both keychains in one (BIP-0389), e.g.
    /// `and_v(v:pk([fp/86'/1'/0']tpub…/<0;1>/*),older(144))`.
    pub fn leaf_multipath(&self) -> String {
        self.leaf_with(|k| format!("{k}/<0;1>/*"))
    }

    /// The recovery leaf as a BIP-0388 template whose keys are `@first`, `@first+1`, …, e.g.
    /// `and_v(v:pk(@1/**),older(144))`.
    pub fn leaf_bip388(&self, first: usize) -> String {
        let mut next = first;
        self.leaf_with(|_| {
            let text = format!("@{next}/**");
            next += 1;
            text
        })
    }

    fn leaf_with(&self, mut key: impl FnMut(&RecoveryKey) -> String) -> String {
        let older = self.blocks;
        match self.keys.as_slice() {
            [one] if self.threshold == 1 => {
                format!("and_v(v:pk({}),older({older}))", key(one))
            }
            keys => {
                let list: Vec<String> = keys.iter().map(key).collect();
                format!(
                    "and_v(v:multi_a({},{}),older({older}))",
                    self.threshold,
                    list.join(",")
                )
            }
        }
    }

    /// A canonical hash of the policy (keys in order with their origins, threshold,
    /// timelock): what the certified key-generation context commits to.
    pub fn digest(&self) -> [u8; 32] {
        let mut e = PolicyDigest::engine();
        e.input(&self.threshold.to_be_bytes());
        e.input(&self.blocks.to_be_bytes());
        e.input(&(self.keys.len() as u16).to_be_bytes());
        for k in &self.keys {
            e.input(k.fingerprint.as_bytes());
            e.input(&[u8::try_from(k.path.len()).unwrap_or(u8::MAX)]);
            for step in k.path.as_ref() {
                e.input(&u32::from(*step).to_be_bytes());
            }
            e.input(&k.xpub.encode());
        }
        PolicyDigest::from_engine(e).to_byte_array()
    }
}

/// What the wallet's address at one path commits to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletScript {
    /// The FROST key at the path: the Taproot internal key.
    pub internal_key: XOnlyPublicKey,
    /// The script tree's merkle root (`None` without a recovery policy).
    pub merkle_root: Option<TapNodeHash>,
    /// The tweaked output key.
    pub output_key: XOnlyPublicKey,
    /// The output script.
    pub script_pubkey: ScriptBuf,
}

impl WalletScript {
    /// The address on `network`.
    ///
    /// # Errors
    /// Never for a Taproot script (kept fallible for the address API).
    pub fn address(&self, network: Network) -> Result<Address, bitcoin::address::FromScriptError> {
        Address::from_script(&self.script_pubkey, network)
    }
}

/// The wallet's two descriptors, parsed once, to derive the script of any wallet path.
#[derive(Debug, Clone)]
pub struct WalletScripts {
    external: Descriptor<DescriptorPublicKey>,
    internal: Descriptor<DescriptorPublicKey>,
    recovery: bool,
}

impl WalletScripts {
    /// The descriptors of a group's wallet, with the recovery leaf when there is a policy
    /// (the FROST xpub is written for `network`; derivations do not depend on it).
    ///
    /// # Errors
    /// [`RecoveryError::Descriptor`] if miniscript refuses the descriptor.
    pub fn new(
        group: &GroupPublic,
        network: impl Into<NetworkKind>,
        recovery: Option<&RecoveryPolicy>,
    ) -> Result<Self, RecoveryError> {
        let xpub = group.xpub(network);
        let fp = group.fingerprint();
        let make = |keychain: Keychain| -> Result<Descriptor<DescriptorPublicKey>, RecoveryError> {
            let internal = format!("[{fp}]{xpub}/{}/*", keychain.step());
            let text = match recovery {
                None => format!("tr({internal})"),
                Some(p) => format!("tr({internal},{})", p.leaf_template(keychain)),
            };
            let descriptor = Descriptor::<DescriptorPublicKey>::from_str(&text)
                .map_err(|e| RecoveryError::Descriptor(e.to_string()))?;
            descriptor
                .sanity_check()
                .map_err(|e| RecoveryError::Descriptor(e.to_string()))?;
            Ok(descriptor)
        };
        Ok(WalletScripts {
            external: make(Keychain::External)?,
            internal: make(Keychain::Internal)?,
            recovery: recovery.is_some(),
        })
    }

    /// The descriptor of a keychain.
    pub fn descriptor(&self, keychain: Keychain) -> &Descriptor<DescriptorPublicKey> {
        match keychain {
            Keychain::External => &self.external,
            Keychain::Internal => &self.internal,
        }
    }

    /// Whether the descriptors carry a recovery leaf.
    pub fn has_recovery(&self) -> bool {
        self.recovery
    }

    /// The script of the address at `path`: internal key, merkle root, output key.
    ///
    /// # Errors
    /// [`RecoveryError::Derive`] (e.g. a hardened index).
    pub fn at(&self, path: &WalletPath) -> Result<WalletScript, RecoveryError> {
        let derive = |reason: String| RecoveryError::Derive {
            path: *path,
            reason,
        };
        let definite = self
            .descriptor(path.keychain)
            .at_derivation_index(path.index)
            .map_err(|e| derive(e.to_string()))?;
        let Descriptor::Tr(tr) = &definite else {
            return Err(derive("not a Taproot descriptor".into()));
        };
        let info = tr.spend_info();
        let internal_key = info.internal_key();
        let merkle_root = info.merkle_root();
        let (output_key, _) = internal_key.tap_tweak(secp(), merkle_root);
        let script_pubkey = definite.script_pubkey();
        if script_pubkey != ScriptBuf::new_p2tr_tweaked(output_key) {
            return Err(derive(
                "miniscript's output script is not the tweaked key".into(),
            ));
        }
        Ok(WalletScript {
            internal_key,
            merkle_root,
            output_key: output_key.to_x_only_public_key(),
            script_pubkey,
        })
    }
}
