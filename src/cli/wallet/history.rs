//! `wallet history`: the wallet's transactions with their states, newest first, paged.

use anyhow::Result;
use ckm::wallet::TxState;

use crate::cli::args::WalletArg;
use crate::cli::Context;

/// The flags of `wallet history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub wallet: WalletArg,
    /// Show at most this many transactions
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub limit: usize,
    /// Skip this many of the newest first
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub offset: usize,
}

pub fn run(ctx: &Context, args: HistoryArgs) -> Result<()> {
    let w = ctx.open_wallet(args.wallet.name.as_deref())?;
    let (entries, total) = w.history(args.limit, args.offset)?;
    let detail = |s: &TxState| match s {
        TxState::Confirmed {
            height,
            confirmations,
        } => serde_json::json!({ "height": height, "confirmations": confirmations }),
        TxState::Replaced { by } | TxState::Cancelled { by } => {
            serde_json::json!({ "by": by.to_string() })
        }
        TxState::Pending | TxState::Dropped => serde_json::json!({}),
    };
    let rows: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            let mut row = serde_json::json!({
                "txid": e.txid.to_string(),
                "state": e.state.name(),
                "net_sats": e.net.to_sat(),
                "fee_sats": e.fee.map(|f| f.to_sat()),
                "label": e.label,
                "time": e.time,
            });
            if let (Some(row), serde_json::Value::Object(more)) =
                (row.as_object_mut(), detail(&e.state))
            {
                row.extend(more);
            }
            row
        })
        .collect();
    ctx.output(
        serde_json::json!({ "total": total, "offset": args.offset, "transactions": rows }),
        || {
            if entries.is_empty() {
                return format!("no transactions (of {total})");
            }
            let mut lines: Vec<String> = entries
                .iter()
                .map(|e| {
                    let state = match e.state {
                        TxState::Confirmed {
                            height,
                            confirmations,
                        } => format!("confirmed at {height} ({confirmations} conf)"),
                        TxState::Replaced { by } => format!("replaced by {by}"),
                        TxState::Cancelled { by } => format!("cancelled by {by}"),
                        TxState::Pending => "pending".into(),
                        TxState::Dropped => "dropped".into(),
                    };
                    format!(
                        "{}  {:>+14} sat  fee {:>8}  {state}{}",
                        e.txid,
                        e.net.to_sat(),
                        e.fee.map_or_else(|| "?".into(), |f| f.to_sat().to_string()),
                        e.label
                            .as_ref()
                            .map_or_else(String::new, |l| format!("  \"{l}\"")),
                    )
                })
                .collect();
            lines.push(format!(
                "({} to {} of {total}, newest first)",
                args.offset + 1,
                args.offset + entries.len()
            ));
            lines.join("\n")
        },
    )
}
