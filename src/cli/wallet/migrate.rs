//! `wallet migrate`: every coin moved to a new wallet (a new key generation, any t-of-n) in
//! one co-signed sweep. Moved here unchanged from `cli/wallet.rs`.

use std::io::IsTerminal;

use anyhow::{bail, Result};
use ckm::chain::broadcast_and_record;

use super::create_wallet;
use crate::cli::args::{parse_signer, ElectrumArg, SignerSpec, WalletArg};
use crate::cli::spend;
use crate::cli::Context;

/// `wallet migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The wallet to move the coins out of
    #[command(flatten)]
    pub wallet: WalletArg,
    /// Name of the new wallet (created unless it exists)
    #[arg(long, value_name = "NAME")]
    pub to: String,
    /// The new wallet's threshold
    #[arg(long, short = 't', value_name = "T")]
    pub threshold: Option<u16>,
    /// The new wallet's signers, URL#PUBKEY, in roster order (repeat)
    #[arg(long = "signer", value_name = "URL#PUBKEY", value_parser = parse_signer)]
    pub signers: Vec<SignerSpec>,
    #[command(flatten)]
    pub electrum: ElectrumArg,
    /// Fee rate of the sweep, sat/vB
    #[arg(long, value_name = "SAT_PER_VB", default_value_t = 2)]
    pub fee_rate: u64,
    /// Sign the sweep even if the fee guard refuses its fee (see `ckm wallet send --help`)
    #[arg(long)]
    pub allow_high_fee: bool,
    /// Seconds to wait for each signer
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub timeout: u64,
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `wallet migrate`: a new wallet (new key generation) and one co-signed sweep of every coin.
pub fn migrate(ctx: &Context, args: MigrateArgs) -> Result<()> {
    let (_lock, mut old) = ctx.open_wallet_locked(args.wallet.name.as_deref(), "wallet migrate")?;
    if old.meta().pending.is_some() {
        bail!(
            "wallet '{}' has an unfinished transition: run `ckm wallet resume` first",
            old.meta().name
        );
    }
    if args.to == old.meta().name {
        bail!("the new wallet needs another name than '{}'", args.to);
    }
    let source = crate::cli::chain::open(ctx, &args.electrum, &old)?;
    // A full scan: the sweep must find every coin of the old wallet, also on addresses
    // another copy of it handed out.
    source.full_scan(&mut old, Box::new(|_| {}))?;
    let new = if ctx.wallet_names()?.contains(&args.to) {
        ctx.say(format!("wallet '{}' exists: sweeping into it", args.to));
        ctx.open_wallet(Some(&args.to))?
    } else {
        if args.signers.is_empty() {
            bail!("give the new wallet's signers with --signer URL#PUBKEY (and --threshold)");
        }
        let t = args
            .threshold
            .ok_or_else(|| anyhow::anyhow!("give the new wallet's threshold with --threshold T"))?;
        // Asked before the key generation (an earlier height is as safe).
        let birth = match source.tip() {
            Ok(tip) => Some(tip),
            Err(e) => {
                ctx.say(format!(
                    "no birth height recorded for '{}' ({e:#}); its first sync from bitcoind \
                     starts at the network's default unless given --birth-height",
                    args.to
                ));
                None
            }
        };
        // The new wallet keeps the old one's recovery path (same keys, same timelock).
        let recovery = old.meta().recovery().cloned();
        if let Some(policy) = &recovery {
            ctx.say(format!("the new wallet keeps the recovery path: {policy}"));
        }
        create_wallet(
            ctx,
            &args.to,
            t,
            args.signers,
            args.timeout,
            Some(old.meta().network),
            recovery,
            birth,
        )?
    };
    if new.meta().network != old.meta().network {
        bail!(
            "'{}' is on {}, not {}",
            args.to,
            new.meta().network,
            old.meta().network
        );
    }
    let mut new = new;
    let to = new.reveal_next_address()?.address;
    let total = old.bdk().balance().total();
    if total.to_sat() == 0 {
        return ctx.output(
            serde_json::json!({ "from": old.meta().name, "to": args.to, "swept_sats": 0 }),
            || {
                format!(
                    "'{}' holds no coins; '{}' is ready",
                    old.meta().name,
                    args.to
                )
            },
        );
    }
    let mut psbt = old.build_sweep(&to, spend::fee_rate(args.fee_rate)?)?;
    spend::guard(&old, &psbt, args.allow_high_fee)?;
    let summary = spend::summary(&old, &psbt)?;
    ctx.say(format!(
        "sweeping every coin of '{}' to '{}' ({to}):\n{summary}",
        old.meta().name,
        args.to
    ));
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!("not sweeping without confirmation: pass --yes");
        }
        eprint!("Sweep? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("cancelled; nothing was signed");
        }
    }
    let report = spend::cosign(ctx, &old, &mut psbt)?;
    let swept: u64 = report
        .transaction
        .output
        .iter()
        .filter(|o| o.script_pubkey == to.script_pubkey())
        .map(|o| o.value.to_sat())
        .sum();
    let txid = broadcast_and_record(source.as_ref(), Some(&mut old), &report.transaction)?;
    ctx.output(
        serde_json::json!({
            "from": old.meta().name,
            "to": args.to,
            "txid": txid.to_string(),
            "swept_sats": swept,
            "address": to.to_string(),
        }),
        || {
            format!(
                "swept {swept} sat from '{}' to '{}' ({to}) in {txid}",
                old.meta().name,
                args.to
            )
        },
    )
}
