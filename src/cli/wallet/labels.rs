//! `wallet label`, `wallet labels export|import`: labels in BIP-0329 JSON Lines.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context as _, Result};
use bitcoin::{OutPoint, Txid};
use ckm::store::write_atomic;
use ckm::wallet::labels::{LabelKind, MAX_IMPORT_BYTES};
use ckm::wallet::spend::recipient::parse_address;
use clap::Subcommand;

use crate::cli::args::WalletArg;
use crate::cli::Context;

#[derive(Debug, Subcommand)]
pub enum LabelsCommand {
    /// Write every label (and every frozen coin) as BIP-329 JSON Lines
    ///
    /// Example:
    ///   ckm wallet labels export --out vault-labels.jsonl
    #[command(verbatim_doc_comment)]
    Export {
        #[command(flatten)]
        wallet: WalletArg,
        /// Where to write them
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Import BIP-329 JSON Lines (from ckm, Sparrow, …): all or nothing
    ///
    /// A malformed line refuses the whole file, naming the line, and nothing changes.
    /// Records of unknown types, and records whose origin names another wallet, are skipped
    /// and counted. `"spendable": false` on an output freezes it. Labels longer than 255
    /// characters are cut. Files over 64 MiB and lines over 64 KiB are refused.
    ///
    /// Example:
    ///   ckm wallet labels import vault-labels.jsonl
    #[command(verbatim_doc_comment)]
    Import {
        #[command(flatten)]
        wallet: WalletArg,
        /// The file
        file: PathBuf,
    },
}

/// `wallet label REF TEXT`: REF is a txid, an outpoint TXID:VOUT or an address.
pub fn label(ctx: &Context, wallet: WalletArg, reference: &str, text: &str) -> Result<()> {
    let mut w = ctx.open_wallet(wallet.name.as_deref())?;
    let (kind, reference) = if let Ok(txid) = Txid::from_str(reference) {
        (LabelKind::Tx, txid.to_string())
    } else if let Ok(op) = OutPoint::from_str(reference) {
        (LabelKind::Output, op.to_string())
    } else {
        let address = parse_address(reference, w.meta().network)
            .context("a label is for a txid, an outpoint TXID:VOUT or an address")?;
        (LabelKind::Addr, address.to_string())
    };
    w.set_label(kind, &reference, text)?;
    let stored = w.label(kind, &reference)?;
    ctx.output(
        serde_json::json!({ "type": kind.as_str(), "ref": reference, "label": stored }),
        || match &stored {
            Some(l) => format!("{kind} {reference}: \"{l}\""),
            None => format!("{kind} {reference}: label removed"),
        },
    )
}

pub fn run(ctx: &Context, cmd: LabelsCommand) -> Result<()> {
    match cmd {
        LabelsCommand::Export { wallet, out } => {
            let w = ctx.open_wallet(wallet.name.as_deref())?;
            let lines = w.export_labels()?;
            let mut text = lines.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            write_atomic(&out, text.as_bytes())
                .with_context(|| format!("writing {}", out.display()))?;
            ctx.output(
                serde_json::json!({ "file": out.display().to_string(), "records": lines.len() }),
                || format!("wrote {} record(s) to {}", lines.len(), out.display()),
            )
        }
        LabelsCommand::Import { wallet, file } => {
            let mut w = ctx.open_wallet(wallet.name.as_deref())?;
            let f = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            if f.metadata().map(|m| m.len()).unwrap_or(0) > MAX_IMPORT_BYTES {
                anyhow::bail!(
                    "{} is larger than {MAX_IMPORT_BYTES} bytes: not a labels file",
                    file.display()
                );
            }
            let report = w
                .import_labels(std::io::BufReader::new(f))
                .with_context(|| format!("importing {}: nothing was changed", file.display()))?;
            ctx.output(
                serde_json::json!({
                    "labels": report.labels,
                    "frozen": report.frozen,
                    "unfrozen": report.unfrozen,
                    "skipped_unknown_types": report.unknown_types,
                    "skipped_other_wallet": report.other_wallet,
                    "truncated": report.truncated,
                }),
                || {
                    format!(
                        "{} label(s) set, {} coin(s) frozen, {} unfrozen; skipped {} record(s) of unknown types and {} of other wallets; {} label(s) cut to 255 characters",
                        report.labels,
                        report.frozen,
                        report.unfrozen,
                        report.unknown_types,
                        report.other_wallet,
                        report.truncated
                    )
                },
            )
        }
    }
}
