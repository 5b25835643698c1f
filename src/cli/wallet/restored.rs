//! `wallet confirm-restored`: a signer restored from a backup signs again once the other
//! members' fresh statements confirm its epoch (the check is the restored signer's own:
//! `ckm::protocol::lifecycle::confirm`).

use anyhow::Result;
use ckm::keys::GroupKey;
use ckm::net::restored::confirm_restored;
use clap::Args;

use crate::cli::args::WalletArg;
use crate::cli::wallet_lifecycle::{client, TimeoutArg};
use crate::cli::{runtime, Context};

/// `wallet confirm-restored`.
#[derive(Debug, Args)]
pub struct ConfirmRestoredArgs {
    /// Roster index of the restored signer
    #[arg(long = "signer", value_name = "INDEX")]
    pub index: u16,
    #[command(flatten)]
    pub wallet: WalletArg,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

/// `wallet confirm-restored`.
pub fn confirm(ctx: &Context, args: ConfirmRestoredArgs) -> Result<()> {
    let w = ctx.open_wallet(args.wallet.name.as_deref())?;
    let meta = w.meta().clone();
    let client = client(ctx, &args.timeout)?;
    ctx.say(format!(
        "asking signer {} for a challenge and the other members for their epoch…",
        args.index
    ));
    let done = runtime()?.block_on(confirm_restored(
        &client,
        meta.roster.entries(),
        GroupKey::of(&meta.group),
        args.index,
    ))?;
    let missing: Vec<serde_json::Value> = done
        .missing
        .iter()
        .map(|(i, e)| serde_json::json!({"index": i, "error": e}))
        .collect();
    ctx.output(
        serde_json::json!({
            "wallet": meta.name,
            "signer": args.index,
            "epoch": done.epoch,
            "already_confirmed": done.already,
            "confirmed_by": done.members,
            "missing": missing,
        }),
        || {
            if done.already {
                format!(
                    "signer {} signs for wallet '{}' already (epoch {}): nothing to confirm",
                    args.index, meta.name, done.epoch
                )
            } else {
                format!(
                    "signer {} confirmed epoch {} of wallet '{}' with the statements of signers {:?}: it signs again",
                    args.index, done.epoch, meta.name, done.members
                )
            }
        },
    )
}
