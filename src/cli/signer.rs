//! `ckm signer …`: create a signer's encrypted store and run it as a secret server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use ckm::identity::IdentityPublic;
use std::str::FromStr;

use ckm::net::tls::{TlsIdentity, TlsListener};
use ckm::signer::home::{list_wallets, SignerHome};
use ckm::signer::policy::Policy;
use ckm::signer::Signer;
use ckm::store::KdfParams;
use clap::Subcommand;

use super::signer_peers::{self, PeersCommand, WalletBindCommand};
use super::signer_records::{self, AuditCommand, StateCommand};
use super::{read_passphrase, runtime, Context};

#[derive(Debug, Subcommand)]
pub enum SignerCommand {
    /// Create this signer's identity key and encrypted share store
    ///
    /// The store is encrypted with a key derived from the passphrase (Argon2id, 64 MiB) and
    /// holds the identity key and every wallet share (XChaCha20-Poly1305).
    ///
    /// Example:
    ///   ckm --home ~/signer1 signer init --passphrase-file ~/signer1.pass
    #[command(verbatim_doc_comment)]
    Init {
        /// Read the passphrase from this file (first line) instead of CKM_PASSPHRASE or a prompt
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Run the secret server: answer DKG and signing requests of trusted coordinators
    ///
    /// Every request must be signed by one of the --allow-coordinator keys, carry a fresh
    /// timestamp and nonce (replays are refused with 401) and fit the size and time limits.
    /// The signer re-checks every PSBT and computes every sighash itself before it signs.
    /// Stops cleanly on SIGTERM or Ctrl-C. Prints `listening on http://ADDR as IDENTITY` when ready.
    ///
    /// Plain HTTP is served only on loopback addresses; anywhere else use --tls (a
    /// self-signed certificate kept in the signer's home, pinned by coordinators through its
    /// fingerprint: `ckm signer tls`) or --tls-cert/--tls-key.
    ///
    /// A key generation is joined only when every other signer of its roster is an approved
    /// peer: --allow-peer PUBKEY (for the life of the process) or `ckm signer peers add`
    /// (kept in the sealed store, re-read for every key generation).
    ///
    /// Examples:
    ///   ckm --home ~/signer1 signer serve --listen 127.0.0.1:7001 \
    ///       --allow-coordinator $(ckm --home ~/coordinator id) \
    ///       --allow-peer $(ckm --home ~/signer2 id) --allow-peer $(ckm --home ~/signer3 id) \
    ///       --passphrase-file ~/signer1.pass
    ///   ckm --home ~/signer1 signer serve --listen 0.0.0.0:7443 --tls --allow-coordinator <id>
    #[command(verbatim_doc_comment)]
    Serve {
        /// Address to listen on (port 0 picks a free port); plain HTTP only on loopback
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7000")]
        listen: SocketAddr,
        /// Serve HTTPS with the signer's self-signed certificate (created on first use)
        #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
        tls: bool,
        /// Serve HTTPS with this PEM certificate (needs --tls-key)
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Identity key of a coordinator allowed to use this signer (repeatable; see `ckm id`)
        #[arg(long = "allow-coordinator", value_name = "PUBKEY", required = true)]
        allow_coordinator: Vec<IdentityPublic>,
        /// Identity key of another signer this one may generate keys with (repeatable; adds
        /// to those approved with `ckm signer peers add`)
        #[arg(long = "allow-peer", value_name = "PUBKEY")]
        allow_peer: Vec<IdentityPublic>,
        /// Read the passphrase from this file instead of CKM_PASSPHRASE or a prompt
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// List the wallets this signer holds a share of (public information only), with the
    /// fingerprint of each certified key generation: compare it with the coordinator's
    Wallets,
    /// Approve (or withdraw) the other signers this one generates keys with
    #[command(subcommand)]
    Peers(PeersCommand),
    /// Manage which coordinators may use a wallet
    #[command(subcommand)]
    Wallet(WalletBindCommand),
    /// Print the SHA-256 fingerprint of this signer's self-signed TLS certificate (created
    /// on first use); coordinators pin it: --signer https://HOST:PORT#PUBKEY@FINGERPRINT
    Tls,
    /// Set or show this signer's spending policy per wallet
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Check and show this signer's audit records
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Check this signer's records against its sealed checkpoint, or accept them after a
    /// rollback warning
    #[command(subcommand)]
    State(StateCommand),
    #[command(flatten)]
    Backup(super::signer_backup::BackupCommand),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Set limits for one wallet (merged into its current policy; a running server applies
    /// them to the next request, no restart needed)
    ///
    /// Example:
    ///   ckm --home ~/signer1 signer policy set --wallet vault --max-fee-sats 20000 \
    ///       --max-amount-sats 5000000 --daily-limit-sats 10000000
    #[command(verbatim_doc_comment)]
    Set {
        /// Wallet name (as given at creation) or group key
        #[arg(long = "wallet", value_name = "NAME")]
        wallet: String,
        /// Largest fee per spend, in satoshis
        #[arg(long, value_name = "N")]
        max_fee_sats: Option<u64>,
        /// Largest fee rate, in sat/vB
        #[arg(long, value_name = "SAT_PER_VB")]
        max_fee_rate: Option<u64>,
        /// Largest amount paid out by one spend (change excluded), in satoshis
        #[arg(long, value_name = "N")]
        max_amount_sats: Option<u64>,
        /// Largest amount paid out over any 24 hours, in satoshis
        #[arg(long, value_name = "N")]
        daily_limit_sats: Option<u64>,
        /// Allow paying this address (repeatable); once any is set, only these are allowed
        #[arg(long = "allow-address", value_name = "ADDR")]
        allow_address: Vec<String>,
        /// Start from no limits instead of the current policy
        #[arg(long)]
        clear: bool,
        /// Read the passphrase from this file instead of CKM_PASSPHRASE or a prompt
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Show the policy of every wallet (or one)
    Show {
        /// Wallet name or group key
        #[arg(long = "wallet", value_name = "NAME")]
        wallet: Option<String>,
        /// Read the passphrase from this file instead of CKM_PASSPHRASE or a prompt
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
}

pub fn run(ctx: &Context, cmd: SignerCommand) -> Result<()> {
    match cmd {
        SignerCommand::Init { passphrase_file } => init(ctx, passphrase_file),
        SignerCommand::Serve {
            listen,
            tls,
            tls_cert,
            tls_key,
            allow_coordinator,
            allow_peer,
            passphrase_file,
        } => {
            let tls = match (tls, tls_cert, tls_key) {
                (true, _, _) => Some(TlsIdentity::self_signed_in(&SignerHome::dir_of(&ctx.home))?),
                (false, Some(cert), Some(key)) => Some(TlsIdentity::from_pem_files(&cert, &key)?),
                _ => None,
            };
            serve(
                ctx,
                listen,
                tls,
                allow_coordinator,
                allow_peer,
                passphrase_file,
            )
        }
        SignerCommand::Tls => {
            if !SignerHome::exists(&ctx.home) {
                bail!(
                    "{} is not a signer home; run `signer init` first",
                    ctx.home.display()
                );
            }
            let tls = TlsIdentity::self_signed_in(&SignerHome::dir_of(&ctx.home))?;
            let fp = tls.fingerprint();
            ctx.output(serde_json::json!({ "tls_sha256": fp }), || fp.clone())
        }
        SignerCommand::Wallets => wallets(ctx),
        SignerCommand::Peers(cmd) => signer_peers::peers(ctx, cmd),
        SignerCommand::Wallet(cmd) => signer_peers::wallet(ctx, cmd),
        SignerCommand::Policy(cmd) => policy(ctx, cmd),
        SignerCommand::Audit(cmd) => signer_records::audit(ctx, cmd),
        SignerCommand::State(cmd) => signer_records::state(ctx, cmd),
        SignerCommand::Backup(cmd) => super::signer_backup::run(ctx, cmd),
    }
}

fn init(ctx: &Context, passphrase_file: Option<PathBuf>) -> Result<()> {
    if ctx.home.join("identity.key").exists() {
        bail!(
            "{} already holds a coordinator identity; use a separate --home for a signer",
            ctx.home.display()
        );
    }
    if SignerHome::exists(&ctx.home) {
        bail!("{} is already a signer home", ctx.home.display());
    }
    let passphrase = read_passphrase(passphrase_file.as_deref(), true)?;
    std::fs::create_dir_all(&ctx.home)
        .with_context(|| format!("creating {}", ctx.home.display()))?;
    let home = SignerHome::init(
        &ctx.home,
        passphrase.as_bytes(),
        KdfParams::default(),
        &mut rand::rngs::OsRng,
    )?;
    let identity = home.identity().public();
    ctx.output(
        serde_json::json!({ "identity": identity.to_string() }),
        || identity.to_string(),
    )
}

fn serve(
    ctx: &Context,
    listen: SocketAddr,
    tls: Option<TlsIdentity>,
    allowed: Vec<IdentityPublic>,
    peers: Vec<IdentityPublic>,
    passphrase_file: Option<PathBuf>,
) -> Result<()> {
    if tls.is_none() && !listen.ip().is_loopback() {
        bail!(
            "refusing to serve plain HTTP on {listen}: use --tls (or --tls-cert/--tls-key), \
             or listen on a loopback address (127.0.0.1 or ::1)"
        );
    }
    let passphrase = read_passphrase(passphrase_file.as_deref(), false)?;
    let home = SignerHome::open(&ctx.home, passphrase.as_bytes())?;
    drop(passphrase);
    let signer = Arc::new(Signer::new(home)?.with_peers(peers));
    if let Some(problem) = signer.state_error() {
        eprintln!("warning: {problem}");
    }
    let identity = signer.identity();
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let pin = tls.as_ref().map(|t| t.fingerprint());
        ctx.output(
            serde_json::json!({
                "listening": format!("{scheme}://{addr}"),
                "identity": identity.to_string(),
                "tls_sha256": pin,
            }),
            || match &pin {
                Some(fp) => format!("listening on {scheme}://{addr} as {identity} tls-sha256 {fp}"),
                None => format!("listening on {scheme}://{addr} as {identity}"),
            },
        )?;
        tracing::info!(%addr, %identity, coordinators = allowed.len(), tls = tls.is_some(), "signer serving");
        match tls {
            Some(tls) => {
                let listener = TlsListener::new(listener, tls.server_config()?)?;
                ckm::net::server::serve(listener, signer, allowed, shutdown_signal()).await
            }
            None => ckm::net::server::serve(listener, signer, allowed, shutdown_signal()).await,
        }
        .context("serving")?;
        tracing::info!("signer stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn wallets(ctx: &Context) -> Result<()> {
    let list = list_wallets(&SignerHome::dir_of(&ctx.home))?;
    let json: Vec<serde_json::Value> = list
        .iter()
        .map(|w| {
            serde_json::json!({
                "name": w.name,
                "network": w.network.to_string(),
                "group_key": w.group_key.to_string(),
                "threshold": w.threshold,
                "signers": w.signers,
                "index": w.index,
                "coordinator": w.coordinator.to_string(),
                "fingerprint": w.fingerprint.map(|f| f.to_string()),
            })
        })
        .collect();
    ctx.output(serde_json::Value::Array(json), || {
        if list.is_empty() {
            return "no wallets".into();
        }
        list.iter()
            .map(|w| {
                format!(
                    "{}  {}-of-{}  signer #{}  {}  fingerprint {}  {}",
                    w.name,
                    w.threshold,
                    w.signers,
                    w.index,
                    w.network,
                    w.fingerprint
                        .map_or_else(|| "none".to_string(), |f| f.to_string()),
                    w.group_key
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn policy(ctx: &Context, cmd: PolicyCommand) -> Result<()> {
    match cmd {
        PolicyCommand::Set {
            wallet,
            max_fee_sats,
            max_fee_rate,
            max_amount_sats,
            daily_limit_sats,
            allow_address,
            clear,
            passphrase_file,
        } => {
            let info = ckm::signer::home::find_wallet(&SignerHome::dir_of(&ctx.home), &wallet)?;
            for a in &allow_address {
                let parsed = bitcoin::Address::from_str(a)
                    .map_err(|e| anyhow::anyhow!("--allow-address {a}: {e}"))?;
                if !parsed.is_valid_for_network(info.network) {
                    bail!("--allow-address {a} is not a {} address", info.network);
                }
            }
            let passphrase = read_passphrase(passphrase_file.as_deref(), false)?;
            let home = SignerHome::open(&ctx.home, passphrase.as_bytes())?;
            let mut policy = home.policy(&info.group_key)?;
            let entry = &mut policy;
            if clear {
                *entry = Policy::default();
            }
            if max_fee_sats.is_some() {
                entry.max_fee_sats = max_fee_sats;
            }
            if max_fee_rate.is_some() {
                entry.max_fee_rate = max_fee_rate;
            }
            if max_amount_sats.is_some() {
                entry.max_amount_sats = max_amount_sats;
            }
            if daily_limit_sats.is_some() {
                entry.daily_limit_sats = daily_limit_sats;
            }
            for a in allow_address {
                if !entry.allow_addresses.contains(&a) {
                    entry.allow_addresses.push(a);
                }
            }
            let shown = entry.clone();
            home.set_policy(
                &info.group_key,
                &policy,
                &format!("policy of wallet {}: {shown}", info.name),
                &mut rand::rngs::OsRng,
            )?;
            ctx.output(
                serde_json::json!({ "wallet": info.name, "group_key": info.group_key, "policy": shown }),
                || format!("{}: {shown}", info.name),
            )
        }
        PolicyCommand::Show {
            wallet,
            passphrase_file,
        } => {
            let dir = SignerHome::dir_of(&ctx.home);
            let wallets = match wallet {
                Some(w) => vec![ckm::signer::home::find_wallet(&dir, &w)?],
                None => list_wallets(&dir)?,
            };
            let passphrase = read_passphrase(passphrase_file.as_deref(), false)?;
            let home = SignerHome::open(&ctx.home, passphrase.as_bytes())?;
            let policies = home.policies()?;
            let rows: Vec<(String, ckm::keys::GroupKey, Policy, String)> = wallets
                .into_iter()
                .map(|w| {
                    let p = policies.get(&w.group_key).cloned().unwrap_or_default();
                    let scope = limit_scope(&w, &p);
                    (w.name, w.group_key, p, scope)
                })
                .collect();
            let json: Vec<serde_json::Value> = rows
                .iter()
                .map(|(n, k, p, scope)| {
                    serde_json::json!({ "wallet": n, "group_key": k, "policy": p, "scope": scope })
                })
                .collect();
            ctx.output(serde_json::Value::Array(json), || {
                if rows.is_empty() {
                    return "no wallets".into();
                }
                rows.iter()
                    .map(|(n, _, p, scope)| format!("{n}: {p}\n  {scope}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
    }
}

/// How far a wallet's limits reach, in words (`policy show`).
fn limit_scope(w: &ckm::signer::home::WalletInfo, p: &Policy) -> String {
    use ckm::protocol::limits::{per_signer_factor, wallet_wide};
    let counted = "amounts count what leaves the wallet: payments plus the fee";
    if p.daily_limit_sats.is_none() {
        return format!("{counted}; no daily limit");
    }
    if w.roster().is_none() {
        return format!(
            "{counted}; the daily limit is per signer (the wallet predates certified key generation, so signers cannot check each other's statements)"
        );
    }
    if wallet_wide(w.threshold, w.signers) {
        format!(
            "{counted}; the daily limit holds for the whole wallet whichever {} of the {} signers sign (signers exchange signed statements before round 2)",
            w.threshold, w.signers
        )
    } else {
        let k = per_signer_factor(w.threshold, w.signers);
        format!(
            "{counted}; with {}-of-{} two sets of signers need not overlap, so the daily limit is per signer: disjoint sets of {} signers can each spend it, at most {k} x the limit in 24 hours",
            w.threshold, w.signers, w.threshold
        )
    }
}
