//! `ckm wallet export --format …`: the wallet's public side for other wallets (library:
//! `ckm::wallet::export`). Formats are one enum, one match arm each, so new ones (e.g. a
//! public wallet backup) slot in.

use std::path::PathBuf;

use anyhow::{bail, Result};
use ckm::wallet::export::{self, CoreTimestamp};
use ckm::wallet::{CkmWallet, WalletMeta};
use clap::{Args, ValueEnum};

use super::{write_file, Context};

/// What `wallet export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One BIP-0389 multipath descriptor, tr([fp]xpub/<0;1>/*)#checksum
    Descriptor,
    /// Bitcoin Core's `importdescriptors` request (JSON): receive and change descriptors,
    /// active, with ranges, next indexes and the rescan timestamp
    Core,
    /// A BIP-0388 wallet policy (JSON): template tr(@0/**) and key information
    Bip388,
    /// A descriptor file Sparrow imports as a watch-only wallet
    Sparrow,
    /// ckm's public wallet record as a Gordian Envelope, binary (tagged CBOR; needs --out):
    /// descriptors, roster, epoch and the certified history, read back by `wallet recover
    /// --from FILE`
    Envelope,
    /// The same record as `ur:envelope/…` text
    Ur,
}

/// `ckm wallet export` (the wallet is chosen by the parent command's --wallet).
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// What to export
    #[arg(long, value_enum, value_name = "FORMAT")]
    format: ExportFormat,
    /// Write to FILE instead of stdout
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// With --format core: when Core starts scanning, "now" or a UNIX time [default: the
    /// block time of the wallet's earliest confirmed transaction, else 0 (the whole chain)]
    #[arg(long, value_name = "now|UNIX_TIME")]
    timestamp: Option<String>,
}

pub fn run(ctx: &Context, wallet: &CkmWallet, args: ExportArgs) -> Result<()> {
    let meta = wallet.meta();
    if args.timestamp.is_some() && args.format != ExportFormat::Core {
        bail!("--timestamp only applies to --format core");
    }
    if args.format == ExportFormat::Envelope {
        return export_envelope(ctx, meta, args.out.as_deref());
    }
    let (text, json) = match args.format {
        ExportFormat::Descriptor => {
            let d = export::multipath_descriptor(meta)?;
            (format!("{d}\n"), serde_json::json!(d))
        }
        ExportFormat::Core => {
            let timestamp = match args.timestamp.as_deref() {
                Some("now") => CoreTimestamp::Now,
                Some(t) => CoreTimestamp::Unix(t.parse().map_err(|_| {
                    anyhow::anyhow!("--timestamp '{t}' is neither 'now' nor a UNIX time")
                })?),
                None => CoreTimestamp::Unix(export::birthday(wallet).unwrap_or(0)),
            };
            let (receive, change) = export::next_indexes(wallet);
            let v = export::core_import(meta, timestamp, receive, change)?;
            (format!("{}\n", serde_json::to_string_pretty(&v)?), v)
        }
        ExportFormat::Bip388 => {
            let v = serde_json::to_value(export::bip388_policy(meta))?;
            (format!("{}\n", serde_json::to_string_pretty(&v)?), v)
        }
        ExportFormat::Sparrow => {
            let t = export::sparrow_file(meta)?;
            (t.clone(), serde_json::json!(t))
        }
        ExportFormat::Envelope | ExportFormat::Ur => {
            let t = ckm::wallet::record::to_ur(meta)?;
            (format!("{t}\n"), serde_json::json!(t))
        }
    };
    let format = args
        .format
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    match &args.out {
        Some(path) => {
            write_file(path, text.as_bytes())?;
            ctx.output(
                serde_json::json!({ "format": format, "file": path.display().to_string() }),
                || format!("wrote {}", path.display()),
            )
        }
        None => ctx.output(
            serde_json::json!({ "format": format, "content": json }),
            || text.trim_end().to_string(),
        ),
    }
}

/// `wallet export --format envelope`: the binary record, to a file only.
fn export_envelope(ctx: &Context, meta: &WalletMeta, out: Option<&std::path::Path>) -> Result<()> {
    let Some(path) = out else {
        bail!("the binary envelope needs --out FILE (or use --format ur for text)");
    };
    write_file(path, &ckm::wallet::record::to_cbor(meta)?)?;
    ctx.output(
        serde_json::json!({ "format": "envelope", "file": path.display().to_string() }),
        || format!("wrote {}", path.display()),
    )
}
