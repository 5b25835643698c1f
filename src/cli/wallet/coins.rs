//! `wallet coins`, `wallet freeze`, `wallet unfreeze`: coin control over the wallet database
//! (no server is contacted; sync first for a fresh view).

use anyhow::Result;
use bdk_wallet::KeychainKind;
use bitcoin::OutPoint;

use crate::cli::args::WalletArg;
use crate::cli::Context;

/// `wallet coins`.
pub fn coins(ctx: &Context, wallet: WalletArg) -> Result<()> {
    let w = ctx.open_wallet(wallet.name.as_deref())?;
    let coins = w.coins()?;
    let keychain = |k: KeychainKind| match k {
        KeychainKind::External => "receive",
        KeychainKind::Internal => "change",
    };
    let rows: Vec<serde_json::Value> = coins
        .iter()
        .map(|c| {
            serde_json::json!({
                "outpoint": c.outpoint.to_string(),
                "amount_sats": c.amount.to_sat(),
                "address": c.address.as_ref().map(ToString::to_string),
                "keychain": keychain(c.keychain),
                "index": c.index,
                "confirmations": c.confirmations,
                "frozen": c.frozen,
                "label": c.label,
            })
        })
        .collect();
    ctx.output(serde_json::Value::Array(rows), || {
        if coins.is_empty() {
            return "no coins (as of the last sync)".into();
        }
        coins
            .iter()
            .map(|c| {
                format!(
                    "{}  {:>14} sat  {}  {}/{}  {} conf{}{}",
                    c.outpoint,
                    c.amount.to_sat(),
                    c.address
                        .as_ref()
                        .map_or_else(|| "-".to_string(), ToString::to_string),
                    keychain(c.keychain),
                    c.index,
                    c.confirmations,
                    if c.frozen { "  FROZEN" } else { "" },
                    c.label
                        .as_ref()
                        .map_or_else(String::new, |l| format!("  \"{l}\"")),
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// `wallet freeze` (`freeze`) and `wallet unfreeze`.
pub fn freeze(
    ctx: &Context,
    wallet: WalletArg,
    outpoints: &[OutPoint],
    freeze: bool,
) -> Result<()> {
    let mut w = ctx.open_wallet(wallet.name.as_deref())?;
    let mut changed = Vec::new();
    for op in outpoints {
        let did = if freeze {
            w.freeze(*op)?
        } else {
            w.unfreeze(*op)?
        };
        changed.push((op, did));
    }
    let word = if freeze { "frozen" } else { "unfrozen" };
    ctx.output(
        serde_json::json!(changed
            .iter()
            .map(|(op, did)| serde_json::json!({ "outpoint": op.to_string(), word: true, "changed": did }))
            .collect::<Vec<_>>()),
        || {
            changed
                .iter()
                .map(|(op, did)| {
                    if *did {
                        format!("{op}: {word}")
                    } else {
                        format!("{op}: already {word}")
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        },
    )
}
