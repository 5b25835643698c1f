//! `ckm wallet update-pin`: take a signer's new TLS certificate into a wallet's roster, on
//! the signer's signed word only.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use ckm::keys::CertPin;
use ckm::net::client::fetch_tls_statement;

use super::{runtime, Context};

/// One signer's outcome.
struct Outcome {
    wallet: String,
    index: u16,
    identity: String,
    previous: Option<String>,
    /// The pin now (None: the signer could not be reached, see `skipped`).
    pinned: Option<String>,
    changed: bool,
    /// Why the signer was skipped.
    skipped: Option<String>,
}

/// For every `https` signer of the chosen wallets (all of the home's when `wallet` is
/// None; only `signer` when given, by roster index or identity key): fetches the statement
/// the signer serves, checks that its identity key signed it and that it names the
/// certificate the signer presented, and pins that certificate.
pub fn update_pin(
    ctx: &Context,
    wallet: Option<String>,
    signer: Option<String>,
    timeout: u64,
) -> Result<()> {
    let names = match wallet {
        Some(w) => vec![w],
        None => ctx.wallet_names()?,
    };
    if names.is_empty() {
        bail!("no wallet in {}", ctx.home.display());
    }
    let rt = runtime()?;
    let timeout = Duration::from_secs(timeout);
    let mut outcomes = Vec::new();
    let mut matched = false;
    for name in &names {
        let (_lock, mut w) = ctx.open_wallet_locked(Some(name), "wallet update-pin")?;
        let mut meta = w.meta().clone();
        let mut changed = false;
        for entry in meta.roster.entries().to_vec() {
            if let Some(sel) = &signer {
                if *sel != entry.index.to_string() && *sel != entry.identity.to_string() {
                    continue;
                }
            }
            matched = true;
            if !entry.url.starts_with("https://") {
                continue;
            }
            let (statement, presented) = match rt.block_on(fetch_tls_statement(&entry.url, timeout))
            {
                Ok(pair) => pair,
                // An unreachable signer keeps its pin; only a chosen one is an error.
                Err(reason) if signer.is_none() => {
                    outcomes.push(Outcome {
                        wallet: name.clone(),
                        index: entry.index,
                        identity: entry.identity.to_string(),
                        previous: entry.tls_sha256.map(|p| p.to_string()),
                        pinned: None,
                        changed: false,
                        skipped: Some(reason),
                    });
                    continue;
                }
                Err(reason) => {
                    bail!("signer {} ({}): {reason}", entry.index, entry.url)
                }
            };
            let stated = statement.verify(&entry.identity).with_context(|| {
                format!(
                    "signer {} ({}): refusing to change the pin",
                    entry.index, entry.url
                )
            })?;
            if !stated.eq_ignore_ascii_case(&presented) {
                bail!(
                    "signer {} ({}) presented a certificate with sha256 {presented}, but its \
                     signed statement names {stated}: refusing to change the pin",
                    entry.index,
                    entry.url
                );
            }
            let new_pin: CertPin = presented
                .parse()
                .map_err(|e| anyhow::anyhow!("fingerprint {presented}: {e}"))?;
            let previous = entry.tls_sha256;
            let is_new = previous != Some(new_pin);
            if is_new {
                meta.roster
                    .set_endpoint(entry.index, entry.url.clone(), Some(new_pin));
                changed = true;
            }
            outcomes.push(Outcome {
                wallet: name.clone(),
                index: entry.index,
                identity: entry.identity.to_string(),
                previous: previous.map(|p| p.to_string()),
                pinned: Some(new_pin.to_string()),
                changed: is_new,
                skipped: None,
            });
        }
        if changed {
            w.set_meta(meta)
                .with_context(|| format!("saving wallet '{name}'"))?;
        }
    }
    if let Some(sel) = &signer {
        if !matched {
            bail!("no signer {sel} in the roster of {}", names.join(", "));
        }
    }
    let json: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            serde_json::json!({
                "wallet": o.wallet,
                "index": o.index,
                "identity": o.identity,
                "previous_tls_sha256": o.previous,
                "tls_sha256": o.pinned,
                "updated": o.changed,
                "skipped": o.skipped,
            })
        })
        .collect();
    ctx.output(serde_json::Value::Array(json), || {
        if outcomes.is_empty() {
            return "no https signer: nothing to pin".into();
        }
        outcomes
            .iter()
            .map(|o| match (&o.skipped, &o.pinned) {
                (Some(reason), _) => format!(
                    "{} signer {}: skipped, pin {} kept ({reason})",
                    o.wallet,
                    o.index,
                    o.previous.as_deref().unwrap_or("none")
                ),
                (None, Some(pin)) if o.changed => format!(
                    "{} signer {}: pin updated to {pin} (was {})",
                    o.wallet,
                    o.index,
                    o.previous.as_deref().unwrap_or("none")
                ),
                (None, pin) => format!(
                    "{} signer {}: pin {} unchanged",
                    o.wallet,
                    o.index,
                    pin.as_deref().unwrap_or("none")
                ),
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}
