//! `ckm psbt …`: the file workflow — create an unsigned PSBT, co-sign it with the signers,
//! broadcast it; and the recovery path — create a script-path PSBT, sign it with a recovery
//! key, finalize it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use ckm::psbt::VersionedPsbt;
use ckm::recovery::script_path::RecoverySecret;
use clap::Subcommand;

use super::args::{ElectrumArg, PaymentArgs, WalletArg};
use super::psbt_io::{self, PsbtFormat, PsbtOutArgs};
use super::spend::{
    build, build_recovery, check, choose_rate, cosign_with_timeout, keep_labels, summary,
};
use super::{psbt_inspect, psbt_qr, Context};

#[derive(Debug, Subcommand)]
pub enum PsbtCommand {
    /// Build an unsigned PSBT paying one or several recipients, with change back to the wallet
    ///
    /// Recipients, --from, --fee-rate (default: the estimate of the wallet's Electrum server
    /// when one is configured, else 2 sat/vB) and the fee guard as for `ckm wallet send`.
    ///
    /// With --recovery the PSBT spends through the wallet's timelocked recovery path instead
    /// of the signers: its inputs carry nSequence = the recovery timelock and the BIP-371
    /// fields (tap_scripts, tap_key_origins of the recovery keys), so any BIP-371 signer
    /// holding a recovery key can sign it, or `ckm psbt sign-recovery`. Only coins at least
    /// that many blocks deep are spent (unless --allow-immature).
    ///
    /// Examples:
    ///   ckm psbt create --to bcrt1p... --amount 150000 --fee-rate 2 --out pay.psbt
    ///   ckm psbt create --to bcrt1p...:150000 --to bcrt1q...:max --out pay.psbt
    ///   ckm psbt create --recovery --to bcrt1p... --amount 150000 --out rescue.psbt
    #[command(verbatim_doc_comment)]
    Create {
        #[command(flatten)]
        wallet: WalletArg,
        #[command(flatten)]
        payment: PaymentArgs,
        /// Where to write the PSBT
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Spend through the recovery path (signed by the recovery keys, not the signers)
        #[arg(long)]
        recovery: bool,
        /// With --recovery, also spend coins not yet deep enough: the transaction is then
        /// valid only once each of them is (bitcoind refuses it before: non-BIP68-final)
        #[arg(long, requires = "recovery")]
        allow_immature: bool,
        #[command(flatten)]
        output: PsbtOutArgs,
    },
    /// Sign the recovery path of a PSBT with a recovery key, locally
    ///
    /// For users without another BIP-371 wallet. KEY_FILE holds the recovery key's extended
    /// private key: the master key (tprv…/xprv…) or the account key with its origin
    /// ([fp/86'/1'/0']tprv…). Every input whose tap_key_origins name a key it derives under
    /// the recovery leaf is signed (BIP-341 script-path sighash computed here; the leaf must
    /// be committed to by the output spent). Writes the signed, not yet finalized, PSBT;
    /// finish with `ckm psbt finalize` and `ckm psbt broadcast`.
    ///
    /// Example:
    ///   ckm psbt sign-recovery rescue.psbt --key-file ~/recovery.xprv --out rescue.signed.psbt
    #[command(verbatim_doc_comment)]
    SignRecovery {
        /// The PSBT (from `ckm psbt create --recovery`)
        input: PathBuf,
        /// File holding the recovery extended private key
        #[arg(long, value_name = "XPRV_FILE")]
        key_file: PathBuf,
        /// Where to write the signed PSBT (same version and form as the input by default)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        output: PsbtOutArgs,
    },
    /// Finalize a signed PSBT (key path or recovery path) with miniscript's finalizer
    ///
    /// Builds each input's witness from its signatures (key path when a key-path signature
    /// is present, else the recovery leaf) and checks it with miniscript's interpreter.
    /// Fails, naming the inputs, while signatures are missing.
    ///
    /// Example:
    ///   ckm psbt finalize rescue.signed.psbt --out rescue.final.psbt
    #[command(verbatim_doc_comment)]
    Finalize {
        /// The signed PSBT
        input: PathBuf,
        /// Where to write the finalized PSBT (same version and form as the input by default)
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
    ///   ckm psbt sign pay.psbt --out pay.signed.psbt --hedge   # WAN: every T-subset at once
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
        /// Start a session for every T-subset of the signers at once when the PSBT is small
        /// (each signer computes at most 8 shares): up to N−T faulty signers then cost no
        /// second round trip, at the price of more work per signer (one share set per
        /// session it is in) — for signers far apart (tens of ms or more), not on a LAN
        #[arg(long, conflicts_with = "two_rounds")]
        hedge: bool,
    },
    /// Broadcast a finalized PSBT through the chain source (Electrum or your bitcoind)
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
            recovery,
            allow_immature,
            output,
        } => {
            let (_lock, mut w) = ctx.open_wallet_locked(wallet.name.as_deref(), "psbt create")?;
            let psbt = if recovery {
                build_recovery(&mut w, &payment, allow_immature)?
            } else {
                let checked = check(&w, &payment)?;
                let labelled = checked.recipients.clone();
                // The estimate only when a server is configured, and the fallback rate when it
                // cannot be reached: `psbt create` works offline.
                let estimated = match super::chain::resolve(ctx, &ElectrumArg::default(), &w) {
                    Ok(Some(choice)) if payment.fee_rate.is_none() => choice
                        .open(&w.meta().name, w.meta().network)
                        .and_then(|source| choose_rate(&payment, Some(source.as_ref()))),
                    _ => choose_rate(&payment, None),
                };
                let (rate, _) = match estimated {
                    Ok(chosen) => chosen,
                    Err(e) => {
                        ctx.say(format!("no fee estimate ({e:#}): using the fallback rate"));
                        choose_rate(&payment, None)?
                    }
                };
                let psbt = build(&mut w, checked, rate, payment.allow_high_fee)?;
                keep_labels(&mut w, &labelled, psbt.unsigned_tx.compute_txid())?;
                psbt
            };
            let fee = psbt.fee().context("computing the fee")?;
            if !ctx.json {
                eprintln!("{}", summary(&w, &psbt)?);
                if let (true, Some(p)) = (recovery, w.meta().recovery()) {
                    eprintln!(
                        "through the recovery path: sign with {} of the recovery key(s); valid once every input is {} blocks deep",
                        p.threshold(),
                        p.blocks()
                    );
                }
            }
            let mut psbt = VersionedPsbt::from(psbt);
            let (format, version) = psbt_io::write(&out, &mut psbt, &output, PsbtFormat::Base64)?;
            ctx.output(
                serde_json::json!({
                    "psbt": out.display().to_string(),
                    "fee_sats": fee.to_sat(),
                    "format": psbt_io::format_name(format),
                    "psbt_version": version.number(),
                    "recovery": recovery,
                    "inputs": psbt.psbt().inputs.len(),
                }),
                || format!("wrote {}", out.display()),
            )
        }
        PsbtCommand::SignRecovery {
            input,
            key_file,
            out,
            output,
        } => sign_recovery(ctx, &input, &key_file, &out, &output),
        PsbtCommand::Finalize { input, out, output } => finalize(ctx, &input, &out, &output),
        PsbtCommand::Sign {
            input,
            out,
            output,
            wallet,
            timeout,
            two_rounds,
            hedge,
        } => {
            let (_lock, w) = ctx.open_wallet_shared(wallet.name.as_deref(), "psbt sign")?;
            let file = psbt_io::read(&input)?;
            let mut psbt = file.psbt;
            psbt_inspect::require_signable(&w, &psbt)?;
            let report =
                cosign_with_timeout(ctx, &w, psbt.psbt_mut(), timeout, !two_rounds, hedge)?;
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
            let (_lock, mut w) =
                ctx.open_wallet_shared(wallet.name.as_deref(), "psbt broadcast")?;
            let psbt = psbt_io::read(&input)?.psbt.into_psbt();
            let tx = psbt
                .extract_tx()
                .context("the PSBT is not finalized (run `ckm psbt sign` first)")?;
            if tx.input.iter().any(|i| i.witness.is_empty()) {
                bail!("the PSBT is not finalized (run `ckm psbt sign` first)");
            }
            let source = super::chain::open(ctx, &electrum, &w)?;
            let txid = ckm::chain::broadcast_and_record(source.as_ref(), Some(&mut w), &tx)?;
            ctx.output(serde_json::json!({ "txid": txid.to_string() }), || {
                txid.to_string()
            })
        }
        PsbtCommand::Inspect(args) => psbt_inspect::run(ctx, args),
        PsbtCommand::Qr(args) => psbt_qr::run(ctx, args),
    }
}

/// Largest recovery key file read.
const MAX_KEY_FILE: u64 = 4096;

fn sign_recovery(
    ctx: &Context,
    input: &Path,
    key_file: &Path,
    out: &Path,
    output: &PsbtOutArgs,
) -> Result<()> {
    let text = zeroize::Zeroizing::new(
        ckm::store::read_limited(key_file, MAX_KEY_FILE)
            .with_context(|| format!("reading {}", key_file.display()))?,
    );
    warn_if_readable_by_others(ctx, key_file);
    let text = std::str::from_utf8(&text)
        .map_err(|_| anyhow::anyhow!("{} is not a text key file", key_file.display()))?;
    let secret: RecoverySecret = text
        .parse()
        .with_context(|| format!("reading the recovery key in {}", key_file.display()))?;
    let file = psbt_io::read(input)?;
    let mut versioned = file.psbt;
    let psbt = versioned.psbt_mut();
    let signed = ckm::recovery::script_path::sign_recovery(psbt, &secret, &mut rand::rngs::OsRng)
        .context("signing the recovery path; nothing was written")?;
    // Addresses need the network: --network, or bitcoin for a mainnet key.
    let network = ctx.network.or(match secret.network_kind() {
        bitcoin::NetworkKind::Main => Some(bitcoin::Network::Bitcoin),
        bitcoin::NetworkKind::Test => None,
    });
    drop(secret);
    let complete = ckm::recovery::script_path::finalize(&mut psbt.clone()).is_ok();
    if !ctx.json {
        for (i, o) in psbt.unsigned_tx.output.iter().enumerate() {
            let to = network
                .and_then(|n| bitcoin::Address::from_script(&o.script_pubkey, n).ok())
                .map_or_else(
                    || format!("script {}", o.script_pubkey.to_hex_string()),
                    |a| a.to_string(),
                );
            eprintln!("output {i}: {} sat to {to}", o.value.to_sat());
        }
        if let Ok(fee) = psbt.fee() {
            eprintln!("fee: {} sat", fee.to_sat());
        }
    }
    psbt_io::write(out, &mut versioned, output, file.format)?;
    ctx.output(
        serde_json::json!({
            "psbt": out.display().to_string(),
            "inputs_signed": signed.inputs,
            "signatures": signed.signatures,
            "complete": complete,
        }),
        || {
            format!(
                "signed input(s) {:?} through the recovery path; wrote {}{}",
                signed.inputs,
                out.display(),
                if complete {
                    "; complete: run `ckm psbt finalize`"
                } else {
                    "; more recovery signatures are needed"
                }
            )
        },
    )
}

fn finalize(ctx: &Context, input: &Path, out: &Path, output: &PsbtOutArgs) -> Result<()> {
    let file = psbt_io::read(input)?;
    let mut versioned = file.psbt;
    let tx = ckm::recovery::script_path::finalize(versioned.psbt_mut())
        .context("the PSBT was not finalized; nothing was written")?;
    let spends: Vec<&str> = tx
        .input
        .iter()
        .map(|i| {
            if i.witness.len() == 1 {
                "key-path"
            } else {
                "script-path"
            }
        })
        .collect();
    versioned.mark_signed();
    psbt_io::write(out, &mut versioned, output, file.format)?;
    ctx.output(
        serde_json::json!({
            "psbt": out.display().to_string(),
            "complete": true,
            "txid": tx.compute_txid().to_string(),
            "spends": spends,
        }),
        || {
            format!(
                "finalized {} ({:?}); wrote {}",
                tx.compute_txid(),
                spends,
                out.display()
            )
        },
    )
}

/// A key file others can read is worth a warning (not a refusal: it may be on a removable
/// medium without permissions).
fn warn_if_readable_by_others(ctx: &Context, path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                ctx.say(format!(
                    "warning: {} is readable by other users (chmod 600 it)",
                    path.display()
                ));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (ctx, path);
}
