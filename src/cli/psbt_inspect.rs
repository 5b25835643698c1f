//! `ckm psbt inspect FILE`: what a PSBT does for this wallet (library: `ckm::psbt::inspect`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use bdk_wallet::KeychainKind;
use ckm::psbt::inspect::{inspect, InputState, Inspection, Keychain, Owner, SigningState};
use ckm::psbt::VersionedPsbt;
use ckm::wallet::CkmWallet;
use clap::Args;

use super::psbt_io;
use super::Context;

/// `ckm psbt inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The PSBT (base64, binary or UR; version 0 or 2)
    input: PathBuf,
    /// Wallet to inspect it for [default: the home's only wallet]
    #[arg(long = "wallet", value_name = "NAME")]
    wallet: Option<String>,
}

/// The wallet's view of `psbt` (scripts recognised through bdk's index too).
fn view(w: &CkmWallet, psbt: &VersionedPsbt) -> Inspection {
    let meta = w.meta();
    inspect(
        psbt.psbt(),
        psbt.version(),
        &meta.group,
        meta.network,
        |script| {
            w.bdk()
                .derivation_of_spk(script.to_owned())
                .map(|(k, i)| match k {
                    KeychainKind::External => (0, i),
                    KeychainKind::Internal => (1, i),
                })
        },
    )
}

/// Before contacting the signers: refuses, with the fix, a PSBT whose inputs lack what the
/// signers need (the UTXO, or the key origin of an input that is the wallet's), as PSBTs made
/// by other tools often do before an updater has filled them.
pub fn require_signable(w: &CkmWallet, psbt: &VersionedPsbt) -> Result<()> {
    const FIX: &str = "fill it with Bitcoin Core's `utxoupdatepsbt` and the descriptors of \
                       `ckm wallet export --format core`, or make the PSBT with `ckm psbt create`";
    for input in view(w, psbt).inputs {
        if input.amount_sats.is_none() {
            bail!(
                "input {} ({}) carries no UTXO (witness_utxo) for the signers to check; {FIX}",
                input.index,
                input.previous_output
            );
        }
        if let Owner::Ours {
            keychain,
            index,
            key_origin: false,
        } = input.owner
        {
            bail!(
                "input {} is the wallet's ({keychain:?} #{index}) but carries no Taproot key \
                 origin (tap_internal_key, tap_key_origins); {FIX}",
                input.index
            );
        }
    }
    Ok(())
}

pub fn run(ctx: &Context, args: InspectArgs) -> Result<()> {
    let w = ctx.open_wallet(args.wallet.as_deref())?;
    let file = psbt_io::read(&args.input)?;
    let meta = w.meta();
    let report = view(&w, &file.psbt);
    let mut json = serde_json::to_value(&report)?;
    if let Some(obj) = json.as_object_mut() {
        obj.insert("wallet".into(), meta.name.clone().into());
        obj.insert("format".into(), psbt_io::format_name(file.format).into());
    }
    ctx.output(json, || human(&report, &meta.name))
}

fn owner_text(owner: &Owner) -> String {
    match owner {
        Owner::Ours {
            keychain,
            index,
            key_origin,
        } => {
            let k = match keychain {
                Keychain::Receive => "receive",
                Keychain::Change => "change",
            };
            let note = if *key_origin {
                ""
            } else {
                " (no key origin in the PSBT: the signers will refuse it; add it with Core's utxoupdatepsbt and `ckm wallet export` descriptors)"
            };
            format!("ours, {k} #{index}{note}")
        }
        Owner::Foreign => "not ours".into(),
        Owner::FalseClaim { reason } => format!("CLAIMS TO BE OURS BUT IS NOT: {reason}"),
    }
}

fn sats(v: Option<u64>) -> String {
    v.map_or_else(|| "?".into(), |s| s.to_string())
}

fn human(r: &Inspection, wallet: &str) -> String {
    let mut lines = vec![
        format!("txid        {}", r.txid),
        format!(
            "PSBT        version {}, for wallet '{wallet}'",
            r.psbt_version
        ),
        format!(
            "state       {}",
            match r.state {
                SigningState::Unsigned => "unsigned",
                SigningState::PartlySigned => "partly signed",
                SigningState::Signed => "signed, not finalized",
                SigningState::Finalized => "finalized (ready to broadcast)",
            }
        ),
        format!("inputs      {}", r.inputs.len()),
    ];
    for i in &r.inputs {
        let state = match i.state {
            InputState::Unsigned => "unsigned",
            InputState::Signed => "signed",
            InputState::Finalized => "finalized",
        };
        lines.push(format!(
            "  #{:<3} {:>14} sat  {}  {}  [{state}]",
            i.index,
            sats(i.amount_sats),
            i.previous_output,
            owner_text(&i.owner)
        ));
    }
    lines.push(format!("outputs     {}", r.outputs.len()));
    for o in &r.outputs {
        let role = match &o.owner {
            Owner::Ours {
                keychain: Keychain::Change,
                ..
            } => "change ",
            Owner::Ours { .. } => "to self",
            Owner::Foreign => "payment",
            Owner::FalseClaim { .. } => "payment",
        };
        lines.push(format!(
            "  #{:<3} {:>14} sat  {role}  {}  {}",
            o.index,
            o.amount_sats,
            o.address.as_deref().unwrap_or(&o.script_pubkey),
            owner_text(&o.owner)
        ));
    }
    lines.push(format!("paid out    {} sat", r.payment_total_sats));
    let rate = r
        .fee_rate_sat_per_vb
        .map_or_else(|| "?".into(), |f| format!("{f:.2}"));
    lines.push(format!(
        "fee         {} sat, {rate} sat/vB ({}{} vB)",
        sats(r.fee_sats),
        if r.vsize_exact { "" } else { "~" },
        r.vsize
    ));
    lines.join("\n")
}
