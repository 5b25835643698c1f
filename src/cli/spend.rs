//! What `wallet send` and the `psbt` commands share: the Electrum server to use, building a
//! payment, its summary as the signers will see it, and co-signing with the wallet's signers.

use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use bitcoin::{FeeRate, Psbt};
use ckm::net::client::Client;
use ckm::net::coordinator::SignReport;
use ckm::net::one_round::{sign_psbt_one_round, OneRoundOptions};
use ckm::wallet::CkmWallet;

use super::args::{ElectrumArg, PaymentArgs};
use super::{runtime, Context};

/// The Electrum server: flag, then CKM_ELECTRUM, then the wallet's saved server.
pub fn electrum_url(arg: &ElectrumArg, wallet: &CkmWallet) -> Result<String> {
    if let Some(url) = &arg.electrum {
        return Ok(url.clone());
    }
    if let Ok(url) = std::env::var("CKM_ELECTRUM") {
        if !url.is_empty() {
            return Ok(url);
        }
    }
    wallet.meta().electrum.clone().ok_or_else(|| {
        anyhow!("no Electrum server: pass --electrum URL (saved for next time) or set CKM_ELECTRUM")
    })
}

/// Fee rate from sat/vB.
pub fn fee_rate(sat_per_vb: u64) -> Result<FeeRate> {
    FeeRate::from_sat_per_vb(sat_per_vb)
        .ok_or_else(|| anyhow!("fee rate {sat_per_vb} sat/vB is too large"))
}

/// Builds the payment PSBT.
pub fn build(w: &mut CkmWallet, payment: &PaymentArgs) -> Result<Psbt> {
    let to = w.parse_address(&payment.to)?;
    Ok(w.build_payment(&to, payment.amount, fee_rate(payment.fee_rate)?)?)
}

/// Builds a recovery-path PSBT (see [`CkmWallet::build_recovery`]).
pub fn build_recovery(
    w: &mut CkmWallet,
    payment: &PaymentArgs,
    allow_immature: bool,
) -> Result<Psbt> {
    let to = w.parse_address(&payment.to)?;
    Ok(w.build_recovery(
        &to,
        payment.amount,
        fee_rate(payment.fee_rate)?,
        allow_immature,
    )?)
}

/// A human summary of what a PSBT pays, as the signers will see it.
pub fn summary(w: &CkmWallet, psbt: &Psbt) -> Result<String> {
    let review = w.review(psbt)?;
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
            "change  {:>14} sat back to the wallet",
            out.amount.to_sat()
        ));
    }
    lines.push(format!(
        "fee     {:>14} sat ({:.1} sat/vB, {} input(s))",
        review.fee.to_sat(),
        review.fee_rate_sat_vb(),
        review.inputs
    ));
    Ok(lines.join("\n"))
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
    let report = if one_round {
        let (meta, mut store) = w.commitments(&client.identity().public());
        runtime()?.block_on(sign_psbt_one_round(
            &client,
            meta,
            psbt,
            &mut store,
            OneRoundOptions {
                hedge,
                ..OneRoundOptions::default()
            },
        ))
    } else {
        runtime()?.block_on(ckm::net::coordinator::sign_psbt(&client, w.meta(), psbt))
    }
    .context("co-signing failed; the PSBT was not changed")?;
    for (index, reason) in &report.skipped {
        ctx.say(format!("skipped signer {index}: {reason}"));
    }
    Ok(report)
}
