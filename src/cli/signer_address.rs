//! `ckm signer address`: a signer operator derives one of a wallet's addresses from this
//! signer's own certified record (the "verify on the device" check), independently of the
//! coordinator.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use ckm::keys::{Keychain, WalletPath};
use ckm::recovery::{RecoveryPolicy, WalletScripts};
use ckm::signer::legacy::open_migrating;
use clap::Args;

use super::{read_passphrase, Context};

/// Arguments of `ckm signer address`.
#[derive(Debug, Args)]
pub struct AddressArgs {
    /// Wallet name (as given at creation), group key or fingerprint (a name several
    /// coordinators gave is refused with the candidates listed)
    #[arg(long = "wallet", value_name = "NAME")]
    wallet: String,
    /// Address index
    #[arg(long, value_name = "I", value_parser = clap::value_parser!(u32).range(0..0x8000_0000))]
    index: u32,
    /// A change address (m/1/I) instead of a receive address (m/0/I)
    #[arg(long)]
    change: bool,
    /// Read the passphrase from this file instead of CKM_PASSPHRASE or a prompt
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

/// A recovery policy as `--json` shows it (`wallet descriptor`, `signer wallets`).
pub fn recovery_json(p: &RecoveryPolicy) -> serde_json::Value {
    serde_json::json!({
        "keys": p.keys().iter().map(|k| k.to_string()).collect::<Vec<_>>(),
        "threshold": p.threshold(),
        "after_blocks": p.blocks(),
    })
}

/// A recovery policy for humans: the summary, then one key per line.
pub fn recovery_text(p: &RecoveryPolicy) -> String {
    let keys: Vec<String> = p.keys().iter().map(|k| format!("\n  key {k}")).collect();
    format!("{p}{}", keys.concat())
}

pub fn run(ctx: &Context, args: AddressArgs) -> Result<()> {
    let passphrase = read_passphrase(args.passphrase_file.as_deref(), false)?;
    let home = open_migrating(&ctx.home, passphrase.as_bytes(), &mut rand::rngs::OsRng)?;
    drop(passphrase);
    let info = home.wallet(&args.wallet)?;
    // The group of the sealed share, not the public record, anchors everything shown.
    let share = home.load_share(&info.group_key)?;
    let group = share.group().clone();
    drop(share);
    let path = WalletPath {
        keychain: if args.change {
            Keychain::Internal
        } else {
            Keychain::External
        },
        index: args.index,
    };
    let (address, recovery) = match &info.keygen {
        Some(keygen) => {
            let address = keygen.address(&group, &path).with_context(|| {
                format!(
                    "this signer's certified record of wallet '{}' does not check out",
                    info.name
                )
            })?;
            (address, keygen.context.recovery.clone())
        }
        // Made before certification: no recovery path, only the key.
        None => {
            let script = WalletScripts::new(&group, info.network, None)?.at(&path)?;
            (script.address(info.network)?, None)
        }
    };
    ctx.output(
        serde_json::json!({
            "wallet": info.name,
            "path": path.to_string(),
            "index": args.index,
            "change": args.change,
            "address": address.to_string(),
            "fingerprint": info.fingerprint.map(|f| f.to_string()),
            "recovery": recovery.as_ref().map(|p| p.to_string()),
        }),
        || address.to_string(),
    )
}
