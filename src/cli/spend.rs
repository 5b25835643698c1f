//! `wallet send`, and what it shares with the `psbt` commands and the replacements: checking
//! recipients and coins offline, the fee rate (given or estimated by the chain source that
//! [`super::chain`] picks), building a payment under the fee guard, its review as the signers
//! will see it, the confirmation, and co-signing with the wallet's signers.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use bitcoin::{FeeRate, OutPoint, Psbt, Txid};
use ckm::chain::{broadcast_and_record, ChainSource};
use ckm::net::client::Client;
use ckm::net::coordinator::SignReport;
use ckm::net::cosign::{cosign_wallet, CosignOptions};
use ckm::wallet::{CkmWallet, FeeRateSource, PayAmount, Payment, Recipient, Review, ReviewOutput};

use super::args::{ElectrumArg, PaymentArgs, WalletArg};
use super::{runtime, Context};

/// Fee rate from sat/vB.
pub fn fee_rate(sat_per_vb: u64) -> Result<FeeRate> {
    FeeRate::from_sat_per_vb(sat_per_vb)
        .ok_or_else(|| anyhow!("fee rate {sat_per_vb} sat/vB is too large"))
}

/// A payment whose recipients and coins were checked offline; the fee rate comes next.
pub struct Checked {
    pub recipients: Vec<Recipient>,
    pub from: Vec<OutPoint>,
}

/// Checks every recipient (network, amount) and every `--from` coin (ours, not frozen)
/// before any server is contacted.
pub fn check(w: &CkmWallet, payment: &PaymentArgs) -> Result<Checked> {
    let recipients = payment.recipients(w.meta().network)?;
    w.check_spendable(&payment.from)?;
    Ok(Checked {
        recipients,
        from: payment.from.clone(),
    })
}

/// The fee rate: `--fee-rate`, else `source`'s estimate for `--target-blocks`, else the
/// fallback ([`ckm::wallet::spend::fees::FALLBACK_FEE_RATE_SAT_VB`]).
pub fn choose_rate(
    payment: &PaymentArgs,
    source: Option<&dyn ChainSource>,
) -> Result<(FeeRate, FeeRateSource)> {
    let given = payment.fee_rate.map(fee_rate).transpose()?;
    Ok(ckm::chain::fee_rate_for(
        given,
        source,
        payment.target_blocks,
    )?)
}

/// Builds the payment PSBT and checks its fee against the guard (unless `--allow-high-fee`).
pub fn build(
    w: &mut CkmWallet,
    checked: Checked,
    rate: FeeRate,
    allow_high_fee: bool,
) -> Result<Psbt> {
    let psbt = w.build_payments(&Payment {
        recipients: checked.recipients,
        from: checked.from,
        fee_rate: rate,
    })?;
    guard(w, &psbt, allow_high_fee)?;
    Ok(psbt)
}

/// The fee guard on a built PSBT, unless `allow_high_fee`.
pub fn guard(w: &CkmWallet, psbt: &Psbt, allow_high_fee: bool) -> Result<()> {
    if !allow_high_fee {
        w.review(psbt)?
            .check_fee()
            .map_err(ckm::wallet::WalletError::from)?;
    }
    Ok(())
}

/// Builds a recovery-path PSBT (see [`CkmWallet::build_recovery`]): one recipient, one amount.
pub fn build_recovery(
    w: &mut CkmWallet,
    payment: &PaymentArgs,
    allow_immature: bool,
) -> Result<Psbt> {
    let checked = check(w, payment)?;
    let [recipient] = checked.recipients.as_slice() else {
        bail!("a recovery-path spend pays a single --to");
    };
    let PayAmount::Exact(amount) = recipient.amount else {
        bail!("a recovery-path spend pays an exact amount, not max");
    };
    if !checked.from.is_empty() {
        bail!("--from is not supported with --recovery");
    }
    let to = recipient.address.clone();
    let (rate, _) = choose_rate(payment, None)?;
    let psbt = w.build_recovery(&to, amount, rate, allow_immature)?;
    guard(w, &psbt, payment.allow_high_fee)?;
    Ok(psbt)
}

/// Keeps the labels given with the recipients (BIP-21 `label`) as address labels, and as the
/// label of the transaction `txid` (a segwit txid does not change when it is signed) unless it
/// has one.
pub fn keep_labels(w: &mut CkmWallet, recipients: &[Recipient], txid: Txid) -> Result<()> {
    Ok(w.keep_recipient_labels(recipients, txid)?)
}

/// The review as JSON: recipients, change, fee (sats and sat/vB), inputs.
pub fn review_json(review: &Review, source: Option<FeeRateSource>) -> serde_json::Value {
    let out = |o: &ReviewOutput| serde_json::json!({ "address": o.destination(), "amount_sats": o.amount.to_sat() });
    serde_json::json!({
        "recipients": review.payments.iter().map(out).collect::<Vec<_>>(),
        "change": review.change.iter().map(out).collect::<Vec<_>>(),
        "fee_sats": review.fee.to_sat(),
        "fee_rate_sat_vb": (review.fee_rate_sat_vb() * 10.0).round() / 10.0,
        "fee_rate_source": source.map(|s| s.describe()),
        "vsize": review.vsize,
        "inputs": review.spent.iter().map(|i| serde_json::json!({
            "outpoint": i.outpoint.to_string(),
            "amount_sats": i.amount.to_sat(),
        })).collect::<Vec<_>>(),
    })
}

/// A human summary of what a PSBT pays, as the signers will see it.
pub fn summary(w: &CkmWallet, psbt: &Psbt) -> Result<String> {
    Ok(summary_of(&w.review(psbt)?, None))
}

/// The review as text: one line per recipient, change, the fee and each input.
pub fn summary_of(review: &Review, source: Option<FeeRateSource>) -> String {
    let mut lines = Vec::new();
    for out in &review.payments {
        lines.push(format!(
            "pay     {:>14} sat to {}",
            out.amount.to_sat(),
            out.destination()
        ));
    }
    for out in &review.change {
        lines.push(format!(
            "change  {:>14} sat back to the wallet ({})",
            out.amount.to_sat(),
            out.destination()
        ));
    }
    let source = source.map_or_else(String::new, |s| format!("; {}", s.describe()));
    lines.push(format!(
        "fee     {:>14} sat ({:.1} sat/vB{source}, {} input(s))",
        review.fee.to_sat(),
        review.fee_rate_sat_vb(),
        review.inputs
    ));
    for input in &review.spent {
        lines.push(format!(
            "input   {:>14} sat from {}",
            input.amount.to_sat(),
            input.outpoint
        ));
    }
    lines.join("\n")
}

/// Asks "`question` [y/N]" on the terminal; refuses without one (unless `yes`).
pub fn confirm(yes: bool, question: &str, what: &str) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("not {what} without confirmation: pass --yes");
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        bail!("cancelled: nothing was done");
    }
    Ok(())
}

/// `wallet send`: check the recipients and coins offline, build at the chosen fee rate,
/// guard the fee, review, confirm, co-sign, broadcast.
pub fn send(
    ctx: &Context,
    wallet: WalletArg,
    payment: PaymentArgs,
    electrum: ElectrumArg,
    yes: bool,
) -> Result<()> {
    let (_lock, mut w) = ctx.open_wallet_locked(wallet.name.as_deref(), "wallet send")?;
    let checked = check(&w, &payment)?;
    let labelled = checked.recipients.clone();
    let source = super::chain::open(ctx, &electrum, &w)?;
    let (rate, rate_source) = choose_rate(&payment, Some(source.as_ref()))?;
    let mut built = build(&mut w, checked, rate, payment.allow_high_fee)?;
    let review = w.review(&built)?;
    if !ctx.json {
        eprintln!("{}", summary_of(&review, Some(rate_source)));
    }
    confirm(yes, "Send?", "sending")?;
    let report = cosign(ctx, &w, &mut built)?;
    let txid = broadcast_and_record(source.as_ref(), Some(&mut w), &report.transaction)?;
    keep_labels(&mut w, &labelled, txid)?;
    ctx.output(
        serde_json::json!({
            "txid": txid.to_string(),
            "signers": report.signers,
            "culprits": report.culprits,
            "mode": report.mode,
            "sessions": report.sessions,
            "review": review_json(&review, Some(rate_source)),
        }),
        || txid.to_string(),
    )
}

/// Co-signs with the wallet's signers (default timeout, one round when possible).
pub fn cosign(ctx: &Context, w: &CkmWallet, psbt: &mut Psbt) -> Result<SignReport> {
    cosign_with_timeout(ctx, w, psbt, 30, true, false)
}

/// Co-signs with the wallet's signers: in one round with preprocessed commitments kept in
/// the wallet database (`one_round`; `hedge`: a hedged start for small PSBTs), or in the
/// interactive rounds.
pub fn cosign_with_timeout(
    ctx: &Context,
    w: &CkmWallet,
    psbt: &mut Psbt,
    timeout: u64,
    one_round: bool,
    hedge: bool,
) -> Result<SignReport> {
    if let Some(p) = &w.meta().pending {
        anyhow::bail!(
            "wallet '{}' has an unfinished {} (the signers may be between epochs): run `ckm wallet resume` first",
            w.meta().name,
            p.record.context.kind
        );
    }
    let key = ctx.coordinator_identity()?;
    let client = Client::new(key, Duration::from_secs(timeout))?;
    ctx.say(format!(
        "co-signing with {} of the {} signers…",
        w.meta().group.threshold(),
        w.meta().roster.len()
    ));
    let report = runtime()?.block_on(cosign_wallet(
        &client,
        w,
        psbt,
        CosignOptions { one_round, hedge },
    ))?;
    for (index, reason) in &report.skipped {
        ctx.say(format!("skipped signer {index}: {reason}"));
    }
    Ok(report)
}
