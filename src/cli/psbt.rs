//! `ckm psbt …`: the file workflow — create an unsigned PSBT, co-sign it with the signers,
//! broadcast it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use bitcoin::Psbt;
use clap::Subcommand;

use super::args::{ElectrumArg, PaymentArgs, WalletArg};
use super::spend::{build, cosign_with_timeout, electrum_url, summary};
use super::{write_file, Context};

/// Largest PSBT file read.
const MAX_PSBT_FILE: u64 = 16 * 1024 * 1024;

#[derive(Debug, Subcommand)]
pub enum PsbtCommand {
    /// Build an unsigned PSBT paying an address, with change back to the wallet
    ///
    /// Example:
    ///   ckm psbt create --to bcrt1p... --amount 150000 --fee-rate 2 --out pay.psbt
    #[command(verbatim_doc_comment)]
    Create {
        #[command(flatten)]
        wallet: WalletArg,
        #[command(flatten)]
        payment: PaymentArgs,
        /// Where to write the PSBT (base64)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Co-sign a PSBT with the wallet's signers and write it finalized
    ///
    /// One round trip: the wallet database keeps commitments to nonces the signers
    /// preprocessed, so each chosen signer gets one request (PSBT + signing packages) and
    /// answers with its shares and fresh commitments. Signers short of commitments are asked
    /// for a batch first; a restarted signer is refilled. Sessions start as soon as any T
    /// signers are ready and run concurrently (ROAST): a signer that hangs or is slow is
    /// never waited for while T others answer; one that returns an invalid share is named
    /// and excluded. Wallets whose signers enforce a wallet-wide daily limit are signed in
    /// three rounds (reserve, statements, shares). Each signer checks the PSBT and computes
    /// the sighashes itself; every aggregated signature is verified before it is written.
    /// On failure the output file is not written.
    ///
    /// Examples:
    ///   ckm psbt sign pay.psbt --out pay.signed.psbt
    ///   ckm psbt sign pay.psbt --out pay.signed.psbt --two-rounds   # no preprocessing
    #[command(verbatim_doc_comment)]
    Sign {
        /// The PSBT to sign (base64 or binary)
        input: PathBuf,
        /// Where to write the finalized PSBT (base64)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        wallet: WalletArg,
        /// Seconds to wait for each signer
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        timeout: u64,
        /// Sign in two interactive rounds (commit, then share) without preprocessed nonces
        #[arg(long)]
        two_rounds: bool,
    },
    /// Broadcast a finalized PSBT through Electrum
    ///
    /// Example:
    ///   ckm psbt broadcast pay.signed.psbt
    #[command(verbatim_doc_comment)]
    Broadcast {
        /// The finalized PSBT
        input: PathBuf,
        #[command(flatten)]
        wallet: WalletArg,
        #[command(flatten)]
        electrum: ElectrumArg,
    },
}

pub fn run(ctx: &Context, cmd: PsbtCommand) -> Result<()> {
    match cmd {
        PsbtCommand::Create {
            wallet,
            payment,
            out,
        } => {
            let mut w = ctx.open_wallet(wallet.name.as_deref())?;
            let psbt = build(&mut w, &payment)?;
            let fee = psbt.fee().context("computing the fee")?;
            if !ctx.json {
                eprintln!("{}", summary(&w, &psbt)?);
            }
            write_file(&out, psbt.to_string().as_bytes())?;
            ctx.output(
                serde_json::json!({ "psbt": out.display().to_string(), "fee_sats": fee.to_sat() }),
                || format!("wrote {}", out.display()),
            )
        }
        PsbtCommand::Sign {
            input,
            out,
            wallet,
            timeout,
            two_rounds,
        } => {
            let w = ctx.open_wallet(wallet.name.as_deref())?;
            let mut psbt = read_psbt(&input)?;
            let report = cosign_with_timeout(ctx, &w, &mut psbt, timeout, !two_rounds)?;
            write_file(&out, psbt.to_string().as_bytes())?;
            let identities: Vec<String> = report
                .signer_identities
                .iter()
                .map(|i| i.to_string())
                .collect();
            ctx.output(
                serde_json::json!({
                    "psbt": out.display().to_string(),
                    "complete": true,
                    "signers": identities,
                    "signer_indexes": report.signers,
                    "culprits": report.culprits,
                    "skipped": report.skipped.iter().map(|(i, why)| serde_json::json!({"signer": i, "reason": why})).collect::<Vec<_>>(),
                    "mode": report.mode,
                    "sessions": report.sessions,
                    "txid": report.transaction.compute_txid().to_string(),
                }),
                || {
                    let mut text = format!(
                        "signed by signers {:?} ({}); wrote {}",
                        report.signers,
                        report.mode,
                        out.display()
                    );
                    if !report.culprits.is_empty() {
                        text.push_str(&format!(
                            "\nexcluded for invalid shares: {:?}",
                            report.culprits
                        ));
                    }
                    text
                },
            )
        }
        PsbtCommand::Broadcast {
            input,
            wallet,
            electrum,
        } => {
            let mut w = ctx.open_wallet(wallet.name.as_deref())?;
            let url = electrum_url(&electrum, &w)?;
            let psbt = read_psbt(&input)?;
            let tx = psbt
                .extract_tx()
                .context("the PSBT is not finalized (run `ckm psbt sign` first)")?;
            if tx.input.iter().any(|i| i.witness.is_empty()) {
                bail!("the PSBT is not finalized (run `ckm psbt sign` first)");
            }
            let txid = ckm::net::electrum::broadcast(Some(&mut w), &url, &tx)?;
            ctx.output(serde_json::json!({ "txid": txid.to_string() }), || {
                txid.to_string()
            })
        }
    }
}

/// Reads a PSBT file, base64 or binary.
pub fn read_psbt(path: &Path) -> Result<Psbt> {
    let bytes = ckm::store::read_limited(path, MAX_PSBT_FILE)
        .with_context(|| format!("reading {}", path.display()))?;
    if let Ok(psbt) = Psbt::deserialize(&bytes) {
        return Ok(psbt);
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a PSBT", path.display()))?;
    text.trim()
        .parse::<Psbt>()
        .map_err(|e| anyhow::anyhow!("{} is not a valid PSBT: {e}", path.display()))
}
