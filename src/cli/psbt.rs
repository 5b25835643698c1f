//! `ckm psbt …`: the file workflow — create an unsigned PSBT, co-sign it with the signers,
//! broadcast it — plus `inspect` and `qr`. PSBT files are base64, binary or UR, version 0 or
//! 2 (see `psbt_io`).

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use ckm::psbt::VersionedPsbt;
use clap::Subcommand;

use super::args::{ElectrumArg, PaymentArgs, WalletArg};
use super::psbt_io::{self, PsbtFormat, PsbtOutArgs};
use super::spend::{build, cosign_with_timeout, electrum_url, summary};
use super::{psbt_inspect, psbt_qr, Context};

#[derive(Debug, Subcommand)]
pub enum PsbtCommand {
    /// Build an unsigned PSBT paying an address, with change back to the wallet
    ///
    /// Examples:
    ///   ckm psbt create --to bcrt1p... --amount 150000 --fee-rate 2 --out pay.psbt
    ///   ckm psbt create --to bcrt1p... --amount 150000 --psbt-version 2 --out pay.psbt
    ///   ckm psbt create --to bcrt1p... --amount 150000 --format ur --out pay.ur
    #[command(verbatim_doc_comment)]
    Create {
        #[command(flatten)]
        wallet: WalletArg,
        #[command(flatten)]
        payment: PaymentArgs,
        /// Where to write the PSBT
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        output: PsbtOutArgs,
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
    /// The PSBT may be version 0 or 2 (BIP-0370, e.g. from Bitcoin Core's `createpsbt` and
    /// `utxoupdatepsbt` with the descriptors of `ckm wallet export`), base64, binary or UR;
    /// it is written back in the same version and form unless --psbt-version / --format say
    /// otherwise.
    ///
    /// Examples:
    ///   ckm psbt sign pay.psbt --out pay.signed.psbt
    ///   ckm psbt sign pay.psbt --out pay.signed.psbt --two-rounds   # no preprocessing
    ///   ckm psbt sign from-core.psbt --out signed.psbt   # Core's v2 PSBT, written back as v2
    ///   ckm psbt sign pay.ur --out signed.ur             # URs in, URs out
    #[command(verbatim_doc_comment)]
    Sign {
        /// The PSBT to sign (base64, binary or UR; version 0 or 2)
        input: PathBuf,
        /// Where to write the finalized PSBT
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        output: PsbtOutArgs,
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
        /// The finalized PSBT (base64, binary or UR; version 0 or 2)
        input: PathBuf,
        #[command(flatten)]
        wallet: WalletArg,
        #[command(flatten)]
        electrum: ElectrumArg,
    },
    /// Show what a PSBT does for this wallet
    ///
    /// Lists the inputs (the wallet's or not, keychain and index, re-derived from the group
    /// key rather than taken on the PSBT's word), the outputs (payment, change, with address),
    /// the fee and fee rate, how far signing has gone and the PSBT version. Reads base64,
    /// binary or UR, version 0 or 2; changes nothing.
    ///
    /// Examples:
    ///   ckm psbt inspect pay.psbt
    ///   ckm --json psbt inspect pay.psbt | jq .fee_sats
    #[command(verbatim_doc_comment)]
    Inspect(psbt_inspect::InspectArgs),
    /// Show a PSBT as QR codes (animated UR frames) or write them as PNG files
    ///
    /// The PSBT is encoded as UR (`ur:psbt/…`); one that does not fit one QR code is split
    /// into fountain-coded fragments, shown one after the other (a camera may start at any
    /// frame and miss some). In a terminal the frames loop until Ctrl-C; otherwise each frame
    /// is printed once. With --png DIR each frame is written as DIR/frame-NNN.png.
    ///
    /// Examples:
    ///   ckm psbt qr pay.psbt
    ///   ckm psbt qr pay.psbt --png qr/ --fragment-len 300
    #[command(verbatim_doc_comment)]
    Qr(psbt_qr::QrArgs),
}

pub fn run(ctx: &Context, cmd: PsbtCommand) -> Result<()> {
    match cmd {
        PsbtCommand::Create {
            wallet,
            payment,
            out,
            output,
        } => {
            let mut w = ctx.open_wallet(wallet.name.as_deref())?;
            let psbt = build(&mut w, &payment)?;
            let fee = psbt.fee().context("computing the fee")?;
            if !ctx.json {
                eprintln!("{}", summary(&w, &psbt)?);
            }
            let mut psbt = VersionedPsbt::from(psbt);
            let (format, version) = psbt_io::write(&out, &mut psbt, &output, PsbtFormat::Base64)?;
            ctx.output(
                serde_json::json!({
                    "psbt": out.display().to_string(),
                    "fee_sats": fee.to_sat(),
                    "format": psbt_io::format_name(format),
                    "psbt_version": version.number(),
                }),
                || format!("wrote {}", out.display()),
            )
        }
        PsbtCommand::Sign {
            input,
            out,
            output,
            wallet,
            timeout,
            two_rounds,
        } => {
            let w = ctx.open_wallet(wallet.name.as_deref())?;
            let file = psbt_io::read(&input)?;
            let mut psbt = file.psbt;
            psbt_inspect::require_signable(&w, &psbt)?;
            let report = cosign_with_timeout(ctx, &w, psbt.psbt_mut(), timeout, !two_rounds)?;
            // Signed with SIGHASH_DEFAULT/ALL: a version-2 PSBT is no longer modifiable.
            psbt.mark_signed();
            let (format, version) = psbt_io::write(&out, &mut psbt, &output, file.format)?;
            let identities: Vec<String> = report
                .signer_identities
                .iter()
                .map(|i| i.to_string())
                .collect();
            ctx.output(
                serde_json::json!({
                    "psbt": out.display().to_string(),
                    "format": psbt_io::format_name(format),
                    "psbt_version": version.number(),
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
            let psbt = psbt_io::read(&input)?.psbt.into_psbt();
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
        PsbtCommand::Inspect(args) => psbt_inspect::run(ctx, args),
        PsbtCommand::Qr(args) => psbt_qr::run(ctx, args),
    }
}
