//! `ckm signer …`: create a signer's encrypted store and run it as a secret server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use ckm::identity::IdentityPublic;
use ckm::signer::home::{list_wallets, SignerHome};
use ckm::signer::Signer;
use ckm::store::KdfParams;
use clap::Subcommand;

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
    /// Stops cleanly on SIGTERM or Ctrl-C. Prints `listening on http://ADDR` when ready.
    ///
    /// Example:
    ///   ckm --home ~/signer1 signer serve --listen 127.0.0.1:7001 \
    ///       --allow-coordinator $(ckm --home ~/coordinator id) --passphrase-file ~/signer1.pass
    #[command(verbatim_doc_comment)]
    Serve {
        /// Address to listen on (port 0 picks a free port); plain HTTP only on loopback
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7000")]
        listen: SocketAddr,
        /// Identity key of a coordinator allowed to use this signer (repeatable; see `ckm id`)
        #[arg(long = "allow-coordinator", value_name = "PUBKEY", required = true)]
        allow_coordinator: Vec<IdentityPublic>,
        /// Read the passphrase from this file instead of CKM_PASSPHRASE or a prompt
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// List the wallets this signer holds a share of (public information only)
    Wallets,
}

pub fn run(ctx: &Context, cmd: SignerCommand) -> Result<()> {
    match cmd {
        SignerCommand::Init { passphrase_file } => init(ctx, passphrase_file),
        SignerCommand::Serve {
            listen,
            allow_coordinator,
            passphrase_file,
        } => serve(ctx, listen, allow_coordinator, passphrase_file),
        SignerCommand::Wallets => wallets(ctx),
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
    allowed: Vec<IdentityPublic>,
    passphrase_file: Option<PathBuf>,
) -> Result<()> {
    if !listen.ip().is_loopback() {
        bail!(
            "refusing to serve plain HTTP on {listen}: without TLS, listen on a loopback address \
             (127.0.0.1 or ::1) and put a TLS-terminating tunnel in front"
        );
    }
    let passphrase = read_passphrase(passphrase_file.as_deref(), false)?;
    let home = SignerHome::open(&ctx.home, passphrase.as_bytes())?;
    drop(passphrase);
    let signer = Arc::new(Signer::new(home));
    let identity = signer.identity();
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        ctx.output(
            serde_json::json!({ "listening": format!("http://{addr}"), "identity": identity.to_string() }),
            || format!("listening on http://{addr} as {identity}"),
        )?;
        tracing::info!(%addr, %identity, coordinators = allowed.len(), "signer serving");
        ckm::net::server::serve(listener, signer, allowed, shutdown_signal())
            .await
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
    ctx.output(serde_json::to_value(&list)?, || {
        if list.is_empty() {
            return "no wallets".into();
        }
        list.iter()
            .map(|w| {
                format!(
                    "{}  {}-of-{}  signer #{}  {}  {}",
                    w.name, w.threshold, w.signers, w.index, w.network, w.group_key
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}
