//! `ckm console`: serves the web console ([`ckm::console`]) of this coordinator home.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use ckm::console::{Console, ConsoleConfig, OpenChain};
use ckm::net::tls::TlsIdentity;
use clap::Args;

use super::args::ElectrumArg;
use super::{runtime, Context};

/// `ckm console` flags.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Address to listen on; off loopback, HTTPS is required (--tls-cert/--tls-key, else a
    /// self-signed certificate kept in the home)
    #[arg(long, default_value = "127.0.0.1:8035", value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// Another host name browsers reach the console by (the `Host` header must be the listen
    /// address or one of these names; repeat for several)
    #[arg(long = "public-host", value_name = "NAME")]
    public_hosts: Vec<String>,
    /// PEM certificate for HTTPS
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds between two background probes of the signers
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    probe_every: u64,
    /// Seconds to wait for each signer (probes and co-signing)
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=600))]
    timeout: u64,
    /// The chain source for sync, fee estimates and broadcast
    #[command(flatten)]
    chain: ElectrumArg,
}

/// Runs the console until Ctrl-C.
pub fn run(ctx: &Context, args: ConsoleArgs) -> Result<()> {
    if args.listen.ip().is_unspecified() && args.public_hosts.is_empty() {
        bail!(
            "listening on every interface ({}): name the host browsers will use with \
             --public-host NAME (the Host header must match it)",
            args.listen
        );
    }
    let identity = ctx.coordinator_identity()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsIdentity::from_pem_files(cert, key)?),
        _ if !args.listen.ip().is_loopback() => {
            let dir = ctx.home.join("console-tls");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            Some(TlsIdentity::self_signed_in(&dir)?)
        }
        _ => None,
    };
    if !args.listen.ip().is_loopback() && tls.is_none() {
        bail!("off loopback the console serves HTTPS only");
    }
    let chain_home = ctx.home.clone();
    let chain_arg = args.chain.clone();
    let network = ctx.network;
    let open_chain: OpenChain = Arc::new(move |w| {
        let ctx = Context::for_home(chain_home.clone(), network);
        super::chain::open(&ctx, &chain_arg, w).map_err(|e| format!("{e:#}"))
    });
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let listen = listener.local_addr()?;
        let token = ckm::console::security::fresh_token();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let host = args
            .public_hosts
            .first()
            .map_or_else(|| listen.to_string(), |h| format!("{h}:{}", listen.port()));
        if let Some(t) = &tls {
            eprintln!("TLS certificate SHA-256: {}", t.fingerprint());
        }
        let console = Console::new(ConsoleConfig {
            wallets_dir: ctx.home.join("wallets"),
            identity,
            open_chain,
            listen,
            public_hosts: args.public_hosts,
            tls: tls.as_ref().map(TlsIdentity::server_config).transpose()?,
            token: token.clone(),
            probe_every: Duration::from_secs(args.probe_every),
            signer_timeout: Duration::from_secs(args.timeout),
        })?;
        // The one place the login token is shown: the URL to open.
        println!("{scheme}://{host}/login?token={token}");
        use std::io::Write as _;
        std::io::stdout().flush()?;
        console
            .serve(listener, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    })
}
