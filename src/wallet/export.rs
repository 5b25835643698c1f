//! The wallet's public side in the formats other wallets read: a BIP-0389 multipath
//! descriptor, Bitcoin Core's `importdescriptors` request, a BIP-0388 wallet policy and the
//! descriptor file Sparrow imports. Each is built from the group's xpub and checked by parsing
//! it back with miniscript; none holds a secret (a watch-only wallet can follow the funds,
//! only the signers can spend them).

use std::str::FromStr;

use bdk_wallet::chain::ChainPosition;
use bdk_wallet::KeychainKind;
use bitcoin::Network;
use miniscript::descriptor::{Descriptor, DescriptorPublicKey};
use serde::{Deserialize, Serialize};

use super::{CkmWallet, WalletError, WalletMeta};
use crate::frost::shares::GroupPublic;

/// Addresses Core derives ahead of the next unused index (its default keypool size).
pub const CORE_LOOKAHEAD: u32 = 1000;

fn parse(text: &str) -> Result<Descriptor<DescriptorPublicKey>, WalletError> {
    Descriptor::<DescriptorPublicKey>::from_str(text.trim())
        .map_err(|e| WalletError::Descriptor(format!("{e}: {}", text.trim())))
}

/// The key expression of the wallet: `[fingerprint]xpub` (the group key is the root of the
/// derivation, so the origin has no path).
pub fn key_info(group: &GroupPublic, network: Network) -> String {
    format!("[{}]{}", group.fingerprint(), group.xpub(network))
}

/// The receive and change descriptors in one (BIP-0389): `tr([fp]xpub/<0;1>/*)#checksum`,
/// with the certified recovery leaf when the wallet has one
/// (`tr([fp]xpub/<0;1>/*,and_v(v:pk([…]REC/<0;1>/*),older(N)))#checksum`).
///
/// # Errors
/// Only if miniscript rejects what it is handed (a bug).
pub fn multipath_descriptor(meta: &WalletMeta) -> Result<String, WalletError> {
    let key = key_info(&meta.group, meta.network);
    let text = match meta.recovery() {
        None => format!("tr({key}/<0;1>/*)"),
        Some(p) => format!("tr({key}/<0;1>/*,{})", p.leaf_multipath()),
    };
    Ok(parse(&text)?.to_string())
}

/// When Core should start scanning the chain for the wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoreTimestamp {
    /// Only new blocks (a wallet known to have no history).
    Now,
    /// Blocks from this UNIX time on (0 scans the whole chain).
    Unix(u64),
}

/// The birthday of the wallet as far as it knows: the block time of its earliest confirmed
/// transaction (None before any).
pub fn birthday(wallet: &CkmWallet) -> Option<u64> {
    wallet
        .bdk()
        .transactions()
        .filter_map(|tx| match tx.chain_position {
            ChainPosition::Confirmed { anchor, .. } => Some(anchor.confirmation_time),
            ChainPosition::Unconfirmed { .. } => None,
        })
        .min()
}

/// The request for Bitcoin Core's `importdescriptors` (a watch-only descriptor wallet):
/// the receive and change descriptors with checksums, active, ranged to `CORE_LOOKAHEAD` past
/// the next index of each keychain, with `next_index` and the rescan `timestamp`.
///
/// # Errors
/// Only if miniscript rejects the descriptors (a bug).
pub fn core_import(
    meta: &WalletMeta,
    timestamp: CoreTimestamp,
    next_receive: u32,
    next_change: u32,
) -> Result<serde_json::Value, WalletError> {
    let (external, internal) = meta.descriptors()?;
    let timestamp = match timestamp {
        CoreTimestamp::Now => serde_json::json!("now"),
        CoreTimestamp::Unix(t) => serde_json::json!(t),
    };
    let entry = |desc: String, internal: bool, next: u32| {
        serde_json::json!({
            "desc": desc,
            "active": true,
            "internal": internal,
            "range": [0, next.saturating_add(CORE_LOOKAHEAD - 1)],
            "next_index": next,
            "timestamp": timestamp,
        })
    };
    Ok(serde_json::json!([
        entry(external, false, next_receive),
        entry(internal, true, next_change),
    ]))
}

/// A BIP-0388 wallet policy: a descriptor template with `@i` placeholders and the key
/// information they stand for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletPolicy {
    /// The wallet's name (for the device's display; not part of the policy itself).
    pub name: String,
    /// The template, `tr(@0/**)` for a ckm wallet.
    pub descriptor_template: String,
    /// `[fingerprint/path]xpub` of each placeholder.
    pub keys_info: Vec<String>,
}

impl WalletPolicy {
    /// The multipath descriptor the policy stands for: each `@i/**` becomes
    /// `KEY/<0;1>/*` and each other `@i` becomes `KEY` (BIP-0388).
    ///
    /// # Errors
    /// A placeholder without key information, or a descriptor miniscript refuses.
    pub fn to_descriptor(&self) -> Result<Descriptor<DescriptorPublicKey>, WalletError> {
        let mut text = String::new();
        let mut rest = self.descriptor_template.as_str();
        while let Some(at) = rest.find('@') {
            text.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let index: usize = rest[..digits]
                .parse()
                .map_err(|_| WalletError::Descriptor("'@' without a key index".into()))?;
            let key = self.keys_info.get(index).ok_or_else(|| {
                WalletError::Descriptor(format!("@{index} has no key information"))
            })?;
            text.push_str(key);
            rest = &rest[digits..];
            if let Some(after) = rest.strip_prefix("/**") {
                text.push_str("/<0;1>/*");
                rest = after;
            }
        }
        text.push_str(rest);
        parse(&text)
    }
}

/// The wallet's BIP-0388 policy: `tr(@0/**)` with the group's key information; with a
/// recovery path `tr(@0/**,and_v(v:pk(@1/**),older(N)))` (or `multi_a(K,@1/**,…)`) and the
/// recovery keys after the group's.
pub fn bip388_policy(meta: &WalletMeta) -> WalletPolicy {
    let mut keys_info = vec![key_info(&meta.group, meta.network)];
    let descriptor_template = match meta.recovery() {
        None => "tr(@0/**)".to_string(),
        Some(p) => {
            keys_info.extend(p.keys().iter().map(ToString::to_string));
            format!("tr(@0/**,{})", p.leaf_bip388(1))
        }
    };
    WalletPolicy {
        name: meta.name.clone(),
        descriptor_template,
        keys_info,
    }
}

/// A descriptor file Sparrow imports as a watch-only wallet (File › Import Wallet › Output
/// Descriptor): comment lines, then the multipath descriptor as the first paragraph (what
/// Sparrow reads), then the single-path descriptors for Bitcoin Core.
///
/// # Errors
/// Only if miniscript rejects the descriptors (a bug).
pub fn sparrow_file(meta: &WalletMeta) -> Result<String, WalletError> {
    let (external, internal) = meta.descriptors()?;
    let multipath = multipath_descriptor(meta)?;
    Ok(format!(
        "# ckm wallet '{name}': {t}-of-{n} FROST Taproot, {network}. Watch-only: no private key.\n\
         # Sparrow: File > Import Wallet > Output Descriptor > Import File, choose this file.\n\
         # Spend with `ckm psbt sign` (Sparrow: Export the unsigned PSBT, sign, then Load it back).\n\
         # Receive and change descriptor (BIP389):\n\
         {multipath}\n\
         \n\
         # Receive descriptor (Bitcoin Core):\n\
         {external}\n\
         \n\
         # Change descriptor (Bitcoin Core):\n\
         {internal}\n",
        name = meta.name,
        t = meta.group.threshold(),
        n = meta.group.signers(),
        network = meta.network,
    ))
}

/// Reads a descriptor file as Sparrow does: the first paragraph of non-comment lines.
///
/// # Errors
/// No descriptor in the file, or one miniscript refuses.
pub fn read_descriptor_file(text: &str) -> Result<Descriptor<DescriptorPublicKey>, WalletError> {
    let mut paragraph = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            if !paragraph.is_empty() {
                break;
            }
        } else if !line.starts_with('#') {
            paragraph.push_str(line);
        }
    }
    if paragraph.is_empty() {
        return Err(WalletError::Descriptor("no descriptor in the file".into()));
    }
    parse(&paragraph)
}

/// The next index to reveal on each keychain (receive, change).
pub fn next_indexes(wallet: &CkmWallet) -> (u32, u32) {
    (
        wallet.bdk().next_derivation_index(KeychainKind::External),
        wallet.bdk().next_derivation_index(KeychainKind::Internal),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frost::pedersen::{run_in_memory, DkgParams};

    fn meta() -> Result<WalletMeta, Box<dyn std::error::Error>> {
        let shares = run_in_memory(DkgParams::new(2, 3)?, &mut rand::thread_rng())?;
        let mut rng = rand::thread_rng();
        let roster = crate::keys::Roster::new(
            (1..=3u16)
                .map(|index| crate::keys::RosterEntry {
                    index,
                    url: format!("http://127.0.0.1:{}", 40_000 + index),
                    identity: crate::identity::IdentityKey::generate(&mut rng).public(),
                    tls_sha256: None,
                })
                .collect(),
        )?;
        Ok(WalletMeta {
            name: "vault".into(),
            network: Network::Regtest,
            group: shares[0].group().clone(),
            roster,
            electrum: None,
            keygen: None,
            epoch: 0,
            transitions: Vec::new(),
            pending: None,
            birth_height: None,
        })
    }

    fn singles(
        d: Descriptor<DescriptorPublicKey>,
    ) -> Result<Vec<String>, Box<dyn std::error::Error>> {
        Ok(d.into_single_descriptors()?
            .iter()
            .map(|d| d.to_string())
            .collect())
    }

    /// A wallet saved before birth heights were recorded loads with none, and a recorded one
    /// survives a save.
    #[test]
    fn birth_height_is_optional_in_saved_metadata() -> Result<(), Box<dyn std::error::Error>> {
        let mut m = meta()?;
        let old = serde_json::to_value(&m)?;
        assert!(old.get("birth_height").is_none(), "{old}");
        let loaded: WalletMeta = serde_json::from_value(old)?;
        assert_eq!(loaded.birth_height, None);
        m.birth_height = Some(840_000);
        let text = serde_json::to_string(&m)?;
        assert_eq!(
            serde_json::from_str::<WalletMeta>(&text)?.birth_height,
            Some(840_000)
        );
        Ok(())
    }

    #[test]
    fn every_format_parses_back_to_the_wallet_descriptors() -> Result<(), Box<dyn std::error::Error>>
    {
        let meta = meta()?;
        let (external, internal) = meta.descriptors()?;
        let expected = vec![external.clone(), internal.clone()];

        let multipath = multipath_descriptor(&meta)?;
        assert!(multipath.contains("/<0;1>/*)#"), "{multipath}");
        assert_eq!(singles(parse(&multipath)?)?, expected);
        // The checksum is checked: one changed character is refused.
        let tampered = multipath.replacen("tr(", "tr( ", 1);
        assert!(parse(&tampered).is_err());

        let policy = bip388_policy(&meta);
        assert_eq!(policy.descriptor_template, "tr(@0/**)");
        let json = serde_json::to_string(&policy)?;
        let back: WalletPolicy = serde_json::from_str(&json)?;
        assert_eq!(singles(back.to_descriptor()?)?, expected);

        let sparrow = sparrow_file(&meta)?;
        assert_eq!(read_descriptor_file(&sparrow)?.to_string(), multipath);
        assert_eq!(singles(read_descriptor_file(&sparrow)?)?, expected);

        let core = core_import(&meta, CoreTimestamp::Unix(1_700_000_000), 3, 0)?;
        assert_eq!(core[0]["desc"], serde_json::json!(external));
        assert_eq!(core[1]["desc"], serde_json::json!(internal));
        assert_eq!(core[0]["internal"], serde_json::json!(false));
        assert_eq!(core[1]["internal"], serde_json::json!(true));
        assert_eq!(core[0]["range"], serde_json::json!([0, 1002]));
        assert_eq!(core[0]["next_index"], serde_json::json!(3));
        assert_eq!(core[1]["timestamp"], serde_json::json!(1_700_000_000u64));
        Ok(())
    }

    #[test]
    fn policies_with_missing_keys_are_refused() {
        let policy = WalletPolicy {
            name: "x".into(),
            descriptor_template: "tr(@1/**)".into(),
            keys_info: vec![],
        };
        assert!(policy.to_descriptor().is_err());
        assert!(read_descriptor_file("# only comments\n\n").is_err());
    }
}
