//! `wallet bump`, `wallet cancel`, `wallet cpfp`: unsticking a payment that sits in the
//! mempool, over the library's replacements ([`ckm::wallet::Replacement`]), under the same
//! fee guard, review and confirmation as `wallet send`.

use anyhow::Result;
use bitcoin::Txid;
use ckm::chain::broadcast_and_record;

use crate::cli::args::{ElectrumArg, WalletArg};
use crate::cli::spend::{self, confirm, cosign, review_json, summary_of};
use crate::cli::Context;

/// Which kind of unsticking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bump,
    Cancel,
    Cpfp,
}

/// The flags of `wallet bump|cancel|cpfp`.
#[derive(Debug, clap::Args)]
pub struct ReplaceArgs {
    #[command(flatten)]
    pub wallet: WalletArg,
    /// The unconfirmed transaction
    #[arg(value_name = "TXID")]
    pub txid: Txid,
    /// The new fee rate in sat/vB (for CPFP: of parent and child together)
    #[arg(long, value_name = "SAT_PER_VB", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub fee_rate: u64,
    /// Sign even a fee the fee guard refuses (above 1000 sat/vB or 1,000,000 sat)
    #[arg(long)]
    pub allow_high_fee: bool,
    #[command(flatten)]
    pub electrum: ElectrumArg,
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
}

pub fn run(ctx: &Context, kind: Kind, args: ReplaceArgs) -> Result<()> {
    let operation = match kind {
        Kind::Bump => "wallet bump",
        Kind::Cancel => "wallet cancel",
        Kind::Cpfp => "wallet cpfp",
    };
    let (_lock, mut w) = ctx.open_wallet_locked(args.wallet.name.as_deref(), operation)?;
    let rate = spend::fee_rate(args.fee_rate)?;
    let source = crate::cli::chain::open(ctx, &args.electrum, &w)?;
    let built = match kind {
        Kind::Bump => w.build_bump(args.txid, rate)?,
        Kind::Cancel => w.build_cancel(args.txid, rate)?,
        Kind::Cpfp => w.build_cpfp(args.txid, rate)?,
    };
    spend::guard(&w, &built.psbt, args.allow_high_fee)?;
    let review = w.review(&built.psbt)?;
    let (verb, question, doing) = match kind {
        Kind::Bump => ("replaces", "Replace?", "replacing"),
        Kind::Cancel => ("cancels", "Cancel it?", "cancelling"),
        Kind::Cpfp => ("accelerates", "Send the child?", "sending"),
    };
    if !ctx.json {
        eprintln!(
            "{verb} {} (fee {} sat, {:.1} sat/vB)\n{}",
            built.original,
            built.old_fee.to_sat(),
            built.old_rate.to_sat_per_kwu() as f64 * 4.0 / 1000.0,
            summary_of(&review, None)
        );
    }
    confirm(args.yes, question, doing)?;
    let mut psbt = built.psbt;
    let report = cosign(ctx, &w, &mut psbt)?;
    let txid = broadcast_and_record(source.as_ref(), Some(&mut w), &report.transaction)?;
    let now = ckm::auth::unix_now();
    match kind {
        Kind::Bump => w.record_replacement(built.original, now)?,
        Kind::Cancel => w.record_cancellation(built.original, txid, now)?,
        Kind::Cpfp => {}
    }
    let key = match kind {
        Kind::Bump => "replaces",
        Kind::Cancel => "cancels",
        Kind::Cpfp => "parent",
    };
    ctx.output(
        serde_json::json!({
            "txid": txid.to_string(),
            key: built.original.to_string(),
            "old_fee_sats": built.old_fee.to_sat(),
            "signers": report.signers,
            "mode": report.mode,
            "review": review_json(&review, None),
        }),
        || format!("{txid} ({verb} {})", built.original),
    )
}
