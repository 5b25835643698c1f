//! `ckm wallet …`: the coordinator's wallets (DKG across signers, descriptors, addresses,
//! Electrum sync, balance, send). The coordinator holds no secret share.

use std::io::IsTerminal;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use bdk_wallet::KeychainKind;
use bitcoin::{Amount, FeeRate, Network};
use ckm::identity::IdentityPublic;
use ckm::net::client::Client;
use ckm::wallet::{CkmWallet, RosterEntry, WalletMeta};
use clap::{Args, Subcommand};

use super::{psbt, runtime, wallet_export, Context};

/// `--wallet NAME`, shared by every wallet-scoped command.
#[derive(Debug, Args, Clone)]
pub struct WalletArg {
    /// Wallet to use [default: the home's only wallet]
    #[arg(long = "wallet", value_name = "NAME")]
    pub name: Option<String>,
}

/// `--electrum URL`, shared by the commands that talk to the chain.
#[derive(Debug, Args, Clone)]
pub struct ElectrumArg {
    /// Electrum server, e.g. tcp://127.0.0.1:60401 [default: CKM_ELECTRUM, else the wallet's saved server]
    #[arg(long, value_name = "URL")]
    pub electrum: Option<String>,
}

/// `--to ADDR --amount SATS [--fee-rate SAT_PER_VB]`, shared by `wallet send` and `psbt create`.
#[derive(Debug, Args, Clone)]
pub struct PaymentArgs {
    /// Destination address (must be on the wallet's network)
    #[arg(long, value_name = "ADDR")]
    pub to: String,
    /// Amount to pay, in satoshis
    #[arg(long, value_name = "SATS", value_parser = parse_amount)]
    pub amount: Amount,
    /// Fee rate in sat/vB
    #[arg(long, value_name = "SAT_PER_VB", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub fee_rate: u64,
}

fn parse_amount(s: &str) -> Result<Amount, String> {
    let sats: u64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number of satoshis"))?;
    if sats == 0 {
        return Err("the amount must be positive".into());
    }
    if sats > 21_000_000 * 100_000_000 {
        return Err("the amount exceeds 21 million BTC".into());
    }
    Ok(Amount::from_sat(sats))
}

/// A signer given as `URL#PUBKEY`.
#[derive(Debug, Clone)]
pub struct SignerSpec {
    url: String,
    identity: IdentityPublic,
    tls_sha256: Option<String>,
}

fn parse_signer(s: &str) -> Result<SignerSpec, String> {
    let (url, key) = s.rsplit_once('#').ok_or_else(|| {
        format!("'{s}' is not URL#PUBKEY or https://…#PUBKEY@TLS_SHA256 (see `ckm id`, `ckm signer tls`)")
    })?;
    let (key, pin) = match key.split_once('@') {
        Some((k, p)) => (k, Some(p.to_ascii_lowercase())),
        None => (key, None),
    };
    let parsed = ckm::net::client::check_url(url).map_err(|e| format!("signer URL {url}: {e}"))?;
    let identity = IdentityPublic::from_str(key).map_err(|e| format!("signer key {key}: {e}"))?;
    match (parsed.scheme(), &pin) {
        ("https", None) => {
            return Err(format!(
                "{url}: an https signer needs its certificate pinned: URL#PUBKEY@TLS_SHA256 \
                 (the fingerprint printed by `ckm signer tls` on the signer)"
            ))
        }
        ("https", Some(p)) => {
            ckm::net::tls::pinned_client_config(p).map_err(|e| e.to_string())?;
        }
        (_, Some(_)) => return Err(format!("{url}: a TLS fingerprint needs an https URL")),
        _ => {}
    }
    Ok(SignerSpec {
        url: url.to_string(),
        identity,
        tls_sha256: pin,
    })
}

#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Create a wallet by running a FROST DKG across the signers
    ///
    /// The signers must be running (`ckm signer serve`) and trust this home's identity
    /// (`ckm id`). Round-2 DKG packages are encrypted end to end between signers; the
    /// coordinator relays them without being able to read them and checks that every signer
    /// ends with the same group key and chain code. Prints the wallet's descriptors.
    ///
    /// Example (2-of-3):
    ///   ckm --home ~/coord wallet create vault --threshold 2 \
    ///       --signer http://127.0.0.1:7001#<id1> \
    ///       --signer http://127.0.0.1:7002#<id2> \
    ///       --signer http://127.0.0.1:7003#<id3>
    #[command(verbatim_doc_comment)]
    Create {
        /// Wallet name (letters, digits, '_', '-', '.')
        name: String,
        /// Signatures need this many signers (2 <= T <= number of signers)
        #[arg(long, short = 't', value_name = "T")]
        threshold: u16,
        /// A signer as URL#PUBKEY, in roster order (repeat for each signer)
        #[arg(long = "signer", value_name = "URL#PUBKEY", value_parser = parse_signer, required = true)]
        signers: Vec<SignerSpec>,
        /// Seconds to wait for each signer
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        timeout: u64,
    },
    /// List the wallets of this home
    List,
    /// Print the wallet's public descriptors (importable into Bitcoin Core as watch-only)
    Descriptor {
        #[command(flatten)]
        wallet: WalletArg,
    },
    /// Export the wallet's public side for other wallets (watch-only; no secret)
    ///
    /// Formats: a BIP-0389 multipath descriptor; Bitcoin Core's `importdescriptors` request;
    /// a BIP-0388 wallet policy; a descriptor file for Sparrow (File > Import Wallet > Output
    /// Descriptor). Each carries its checksum; PSBTs those wallets make are co-signed with
    /// `ckm psbt sign`.
    ///
    /// Examples:
    ///   ckm wallet export --format descriptor
    ///   ckm wallet export --format core --out vault-core.json
    ///   bitcoin-cli -rpcwallet=vault importdescriptors "$(cat vault-core.json)"
    ///   ckm wallet export --format bip388
    ///   ckm wallet export --format sparrow --out vault-sparrow.txt
    #[command(verbatim_doc_comment)]
    Export {
        #[command(flatten)]
        wallet: WalletArg,
        #[command(flatten)]
        args: wallet_export::ExportArgs,
    },
    /// Reveal the next receive address
    Address {
        #[command(flatten)]
        wallet: WalletArg,
    },
    /// Scan the chain through an Electrum server and update the wallet
    Sync {
        #[command(flatten)]
        wallet: WalletArg,
        #[command(flatten)]
        electrum: ElectrumArg,
    },
    /// Show the balance (as of the last sync)
    Balance {
        #[command(flatten)]
        wallet: WalletArg,
    },
    /// Pay an address: build, co-sign with the signers, broadcast
    ///
    /// Shows what will be paid and the fee, asks for confirmation (skip with --yes), then
    /// co-signs with the first T signers that answer and broadcasts through Electrum.
    ///
    /// Example:
    ///   ckm wallet send --to bcrt1p... --amount 150000 --fee-rate 3 --yes
    #[command(verbatim_doc_comment)]
    Send {
        #[command(flatten)]
        wallet: WalletArg,
        #[command(flatten)]
        payment: PaymentArgs,
        #[command(flatten)]
        electrum: ElectrumArg,
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

pub fn run(ctx: &Context, cmd: WalletCommand) -> Result<()> {
    match cmd {
        WalletCommand::Create {
            name,
            threshold,
            signers,
            timeout,
        } => create(ctx, &name, threshold, signers, timeout),
        WalletCommand::List => list(ctx),
        WalletCommand::Descriptor { wallet } => {
            descriptor(ctx, &ctx.open_wallet(wallet.name.as_deref())?)
        }
        WalletCommand::Export { wallet, args } => {
            wallet_export::run(ctx, &ctx.open_wallet(wallet.name.as_deref())?, args)
        }
        WalletCommand::Address { wallet } => address(ctx, wallet),
        WalletCommand::Sync { wallet, electrum } => sync(ctx, wallet, electrum),
        WalletCommand::Balance { wallet } => balance(ctx, wallet),
        WalletCommand::Send {
            wallet,
            payment,
            electrum,
            yes,
        } => send(ctx, wallet, payment, electrum, yes),
    }
}

fn create(
    ctx: &Context,
    name: &str,
    threshold: u16,
    signers: Vec<SignerSpec>,
    timeout: u64,
) -> Result<()> {
    let path = ctx.new_wallet_path(name)?;
    let n = u16::try_from(signers.len()).unwrap_or(u16::MAX);
    ckm::frost::dkg::DkgParams::new(threshold, n)?;
    let network = ctx.network.unwrap_or(Network::Regtest);
    let roster: Vec<RosterEntry> = signers
        .into_iter()
        .enumerate()
        .map(|(i, s)| RosterEntry {
            index: u16::try_from(i + 1).unwrap_or(u16::MAX),
            url: s.url,
            identity: s.identity,
            tls_sha256: s.tls_sha256,
        })
        .collect();
    let key = ctx.coordinator_identity()?;
    let client = Client::new(key, Duration::from_secs(timeout))?;
    ctx.say(format!(
        "running a {threshold}-of-{} DKG across the signers…",
        roster.len()
    ));
    let group = runtime()?
        .block_on(ckm::net::coordinator::create_wallet(
            &client, name, network, threshold, &roster,
        ))
        .context("wallet creation failed; nothing was stored")?;
    let meta = WalletMeta {
        name: name.to_string(),
        network,
        group,
        roster,
        electrum: None,
    };
    // Built under a temporary name (not `*.sqlite`, so never listed) and moved into place
    // only once complete: a crash part-way leaves no half-made wallet that would break
    // `wallet list` and block the name. The hard link refuses to replace an existing wallet.
    let tmp = path.with_file_name(format!(".{name}.sqlite.creating-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    drop(CkmWallet::create(&tmp, meta)?);
    let placed = std::fs::hard_link(&tmp, &path)
        .with_context(|| format!("storing wallet '{name}' at {}", path.display()));
    let _ = std::fs::remove_file(&tmp);
    placed?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all())?;
    }
    let wallet = CkmWallet::load(&path)?;
    descriptor(ctx, &wallet)
}

fn list(ctx: &Context) -> Result<()> {
    let names = ctx.wallet_names()?;
    let mut rows = Vec::new();
    for name in &names {
        let w = ctx.open_wallet(Some(name))?;
        rows.push(serde_json::json!({
            "wallet": name,
            "network": w.meta().network.to_string(),
            "threshold": w.meta().group.threshold(),
            "signers": w.meta().roster.len(),
        }));
    }
    ctx.output(serde_json::Value::Array(rows.clone()), || {
        if rows.is_empty() {
            return "no wallets".into();
        }
        rows.iter()
            .map(|r| {
                format!(
                    "{}  {}-of-{}  {}",
                    r["wallet"].as_str().unwrap_or_default(),
                    r["threshold"],
                    r["signers"],
                    r["network"].as_str().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn descriptor(ctx: &Context, wallet: &CkmWallet) -> Result<()> {
    let meta = wallet.meta();
    let (external, internal) = meta.descriptors()?;
    let signers: Vec<serde_json::Value> = meta
        .roster
        .iter()
        .map(|r| serde_json::json!({ "index": r.index, "url": r.url, "identity": r.identity.to_string() }))
        .collect();
    ctx.output(
        serde_json::json!({
            "wallet": meta.name,
            "network": meta.network.to_string(),
            "external": external,
            "internal": internal,
            "threshold": meta.group.threshold(),
            "signers": signers,
        }),
        || {
            let roster: Vec<String> = meta
                .roster
                .iter()
                .map(|r| format!("  #{} {}  {}", r.index, r.url, r.identity))
                .collect();
            format!(
                "wallet:   {} ({}-of-{}, {})\nexternal: {external}\ninternal: {internal}\nsigners:\n{}",
                meta.name,
                meta.group.threshold(),
                meta.roster.len(),
                meta.network,
                roster.join("\n")
            )
        },
    )
}

fn address(ctx: &Context, wallet: WalletArg) -> Result<()> {
    let mut w = ctx.open_wallet(wallet.name.as_deref())?;
    let info = w.reveal_next_address()?;
    ctx.output(
        serde_json::json!({ "address": info.address.to_string(), "index": info.index }),
        || info.address.to_string(),
    )
}

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

fn sync(ctx: &Context, wallet: WalletArg, electrum: ElectrumArg) -> Result<()> {
    let mut w = ctx.open_wallet(wallet.name.as_deref())?;
    let url = electrum_url(&electrum, &w)?;
    let bar = if !ctx.json && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    } else {
        None
    };
    let progress_bar = bar.clone();
    let height = ckm::net::electrum::sync(&mut w, &url, move |keychain, index| {
        if let Some(bar) = &progress_bar {
            let k = match keychain {
                KeychainKind::External => "receive",
                KeychainKind::Internal => "change",
            };
            bar.set_message(format!("scanning {k} address {index}"));
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if electrum.electrum.is_some() && w.meta().electrum.as_deref() != Some(url.as_str()) {
        let mut meta = w.meta().clone();
        meta.electrum = Some(url.clone());
        w.set_meta(meta)?;
    }
    let balance = w.bdk().balance();
    ctx.output(
        serde_json::json!({
            "height": height,
            "confirmed_sats": balance.confirmed.to_sat(),
            "unconfirmed_sats": (balance.trusted_pending + balance.untrusted_pending + balance.immature).to_sat(),
        }),
        || format!("synced to height {height}; balance {} sat confirmed", balance.confirmed.to_sat()),
    )
}

fn balance(ctx: &Context, wallet: WalletArg) -> Result<()> {
    let w = ctx.open_wallet(wallet.name.as_deref())?;
    let b = w.bdk().balance();
    let unconfirmed = b.trusted_pending + b.untrusted_pending;
    ctx.output(
        serde_json::json!({
            "confirmed_sats": b.confirmed.to_sat(),
            "unconfirmed_sats": unconfirmed.to_sat(),
            "immature_sats": b.immature.to_sat(),
        }),
        || {
            format!(
                "confirmed:   {} sat\nunconfirmed: {} sat\nimmature:    {} sat",
                b.confirmed.to_sat(),
                unconfirmed.to_sat(),
                b.immature.to_sat()
            )
        },
    )
}

fn send(
    ctx: &Context,
    wallet: WalletArg,
    payment: PaymentArgs,
    electrum: ElectrumArg,
    yes: bool,
) -> Result<()> {
    let mut w = ctx.open_wallet(wallet.name.as_deref())?;
    let url = electrum_url(&electrum, &w)?;
    let mut built = psbt::build(&mut w, &payment)?;
    let summary = psbt::summary(&w, &built)?;
    if !ctx.json {
        eprintln!("{summary}");
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("not sending without confirmation: pass --yes");
        }
        eprint!("Send? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("cancelled; nothing was signed");
        }
    }
    let report = psbt::cosign(ctx, &w, &mut built)?;
    let txid = ckm::net::electrum::broadcast(Some(&mut w), &url, &report.transaction)?;
    ctx.output(
        serde_json::json!({ "txid": txid.to_string(), "signers": report.signers, "culprits": report.culprits }),
        || txid.to_string(),
    )
}

/// Fee rate from sat/vB.
pub fn fee_rate(sat_per_vb: u64) -> Result<FeeRate> {
    FeeRate::from_sat_per_vb(sat_per_vb)
        .ok_or_else(|| anyhow!("fee rate {sat_per_vb} sat/vB is too large"))
}
