//! `ckm psbt inspect FILE`: what a PSBT does for this wallet (library: `ckm::psbt::inspect`).

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use ckm::psbt::VersionedPsbt;
use ckm::wallet::CkmWallet;
use clap::Args;

use super::psbt_io;
use super::Context;

/// `ckm psbt inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The PSBT (base64, binary or UR; version 0 or 2)
    input: PathBuf,
    /// Wallet to inspect it for [default: the home's only wallet]
    #[arg(long = "wallet", value_name = "NAME")]
    wallet: Option<String>,
}

/// Before contacting the signers: refuses, with the fix, a PSBT whose inputs lack what the
/// signers need (see [`CkmWallet::check_signable`]).
pub fn require_signable(w: &CkmWallet, psbt: &VersionedPsbt) -> Result<()> {
    w.check_signable(psbt).map_err(|e| {
        anyhow!(
            "{e}; fill it with Bitcoin Core's `utxoupdatepsbt` and the descriptors of \
             `ckm wallet export --format core`, or make the PSBT with `ckm psbt create`"
        )
    })
}

pub fn run(ctx: &Context, args: InspectArgs) -> Result<()> {
    let w = ctx.open_wallet(args.wallet.as_deref())?;
    let file = psbt_io::read(&args.input)?;
    let meta = w.meta();
    let report = w.inspect_psbt(&file.psbt);
    let mut json = serde_json::to_value(&report)?;
    if let Some(obj) = json.as_object_mut() {
        obj.insert("wallet".into(), meta.name.clone().into());
        obj.insert("format".into(), psbt_io::format_name(file.format).into());
    }
    ctx.output(json, || report.to_text(&meta.name))
}
