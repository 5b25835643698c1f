//! `ckm signer …`: create a signer's encrypted store and run it as a secret server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use ckm::identity::IdentityPublic;
use std::str::FromStr;

use ckm::net::server::{Access, Server, ServerTls};
use ckm::net::tls::TlsIdentity;
use ckm::ops::config::{LogFormat, ServeConfig, TlsChoice, EXAMPLE};
use ckm::ops::quota::Quotas;
use ckm::signer::home::SignerHome;
use ckm::signer::legacy::{list_wallets, open_migrating};
use ckm::signer::policy::Policy;
use ckm::signer::Signer;
use ckm::store::KdfParams;
use clap::{Args, Subcommand};

use super::signer_address;
use super::signer_peers::{self, PeersCommand, WalletBindCommand};
use super::signer_records::{self, AuditCommand, StateCommand};
use super::{init_logging, read_passphrase, runtime, Context};

/// Where `signer serve` listens when neither a flag nor the configuration says.
const DEFAULT_LISTEN: &str = "127.0.0.1:7000";

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
    /// Every request must be signed by one of the allowed coordinators (--allow-coordinator
    /// or allow_coordinators in --config), carry a fresh timestamp and nonce (replays are
    /// refused with 401) and fit the size and time limits. The signer re-checks every PSBT
    /// and computes every sighash itself before it signs. Stops cleanly on SIGTERM or
    /// Ctrl-C. Prints `listening on http://ADDR as IDENTITY` when ready (and
    /// `metrics on http://ADDR/metrics` with --metrics).
    ///
    /// Settings come from --config FILE (TOML, see `ckm signer config example`); every flag
    /// given overrides the file (a list flag replaces the file's list). SIGHUP re-reads the
    /// file's allow_coordinators and [limits] without a restart; allow_peers, listen, tls,
    /// tls_cert, tls_key, passphrase_file, metrics and log_format need a restart (peers
    /// approved with `ckm signer peers add` apply at once).
    ///
    /// Plain HTTP is served only on loopback addresses; anywhere else use --tls (a
    /// self-signed certificate kept in the signer's home, pinned by coordinators through its
    /// fingerprint: `ckm signer tls`) or --tls-cert/--tls-key.
    ///
    /// A key generation is joined only when every other signer of its roster is an approved
    /// peer: --allow-peer PUBKEY (for the life of the process) or `ckm signer peers add`
    /// (kept in the sealed store, re-read for every key generation).
    ///
    /// Unauthenticated clients cost little: the signed header is checked before any byte of
    /// the body is read, connections are capped (--max-connections; more wait in the kernel's
    /// queue) and must send their header within --header-timeout, bodies are read only for
    /// allowed coordinators, at most --max-in-flight at once (--max-in-flight-per-coordinator
    /// each), each at most 8 MiB. `GET /healthz` answers unauthenticated (up, store unlocked).
    ///
    /// Examples:
    ///   ckm --home ~/signer1 signer serve --listen 127.0.0.1:7001 \
    ///       --allow-coordinator $(ckm --home ~/coordinator id) \
    ///       --allow-peer $(ckm --home ~/signer2 id) --allow-peer $(ckm --home ~/signer3 id) \
    ///       --passphrase-file ~/signer1.pass
    ///   ckm --home ~/signer1 signer serve --listen 0.0.0.0:7443 --tls --allow-coordinator <id>
    ///   ckm --home /var/lib/ckm/home signer serve --config /etc/ckm/signer.toml
    #[command(verbatim_doc_comment)]
    Serve(Box<ServeArgs>),
    /// List the wallets this signer holds a share of (public information only), with the
    /// fingerprint of each certified key generation: compare it with the coordinator's. A
    /// wallet's recovery path (keys and timelock) is listed too: its owner must recognise
    /// the keys as their own
    Wallets,
    /// Derive one of a wallet's addresses from this signer's own certified record
    ///
    /// The "verify on the device" check: unlocks the store, re-verifies the certified key
    /// generation against the group of this signer's sealed share and derives the address
    /// (committing to the certified recovery path, if any) without the coordinator. Compare
    /// it with `ckm wallet address` before coins are sent there.
    ///
    /// Example:
    ///   ckm --home ~/signer1 signer address --wallet vault --index 0
    #[command(verbatim_doc_comment)]
    Address(signer_address::AddressArgs),
    /// Approve (or withdraw) the other signers this one generates keys with
    #[command(subcommand)]
    Peers(PeersCommand),
    /// Manage which coordinators may use a wallet
    #[command(subcommand)]
    Wallet(WalletBindCommand),
    /// Print the SHA-256 fingerprint of this signer's self-signed TLS certificate (created
    /// on first use); coordinators pin it: --signer https://HOST:PORT#PUBKEY@FINGERPRINT
    ///
    /// With --rotate, replace the certificate and its key by new ones. The running server
    /// keeps the old one until restarted; after the restart coordinators refuse the new
    /// certificate until they run `ckm wallet update-pin`, which checks the statement of the
    /// new fingerprint that the signer serves, signed by its identity key.
    ///
    /// Example:
    ///   ckm --home ~/signer1 signer tls --rotate && systemctl restart ckm-signer
    #[command(verbatim_doc_comment)]
    Tls {
        /// Make a new certificate and key, replacing the current ones
        #[arg(long)]
        rotate: bool,
    },
    /// Check or write a configuration file for `signer serve --config`
    #[command(subcommand)]
    Config(ConfigCommand),
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

/// The flags of `signer serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Read settings from this TOML file (see `ckm signer config example`); flags override it
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port); plain HTTP only on loopback [default: 127.0.0.1:7000]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
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
    #[arg(long = "allow-coordinator", value_name = "PUBKEY")]
    allow_coordinator: Vec<IdentityPublic>,
    /// Identity key of another signer this one may generate keys with (repeatable; adds
    /// to those approved with `ckm signer peers add`)
    #[arg(long = "allow-peer", value_name = "PUBKEY")]
    allow_peer: Vec<IdentityPublic>,
    /// Read the passphrase from this file instead of CKM_PASSPHRASE or a prompt
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Serve Prometheus metrics (GET /metrics) on this separate address; off by default
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Log format on stderr: text or json (one object per line) [default: text]
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    #[command(flatten)]
    limits: LimitArgs,
}

impl ServeArgs {
    /// The configuration file (if any) with every flag given applied over it.
    fn effective(&self) -> Result<ServeConfig> {
        let mut c = match &self.config {
            Some(path) => ServeConfig::load(path)?,
            None => ServeConfig::default(),
        };
        if let Some(l) = self.listen {
            c.listen = Some(l);
        }
        if self.tls {
            c.tls = TlsChoice::SelfSigned;
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            c.tls = TlsChoice::Files {
                cert: cert.clone(),
                key: key.clone(),
            };
        }
        if !self.allow_coordinator.is_empty() {
            c.allow_coordinators = self.allow_coordinator.clone();
        }
        if !self.allow_peer.is_empty() {
            c.allow_peers = self.allow_peer.clone();
        }
        if self.passphrase_file.is_some() {
            c.passphrase_file = self.passphrase_file.clone();
        }
        if self.metrics.is_some() {
            c.metrics = self.metrics;
        }
        if self.log_format.is_some() {
            c.log_format = self.log_format;
        }
        c.limits = self.limits.apply(c.limits)?;
        if c.listen.is_none() {
            c.listen = Some(DEFAULT_LISTEN.parse()?);
        }
        Ok(c)
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file and print what `signer serve --config FILE` would run with
    ///
    /// Errors name the line and column and say what is wrong.
    ///
    /// Example:
    ///   ckm signer config check /etc/ckm/signer.toml
    #[command(verbatim_doc_comment)]
    Check {
        /// The configuration file (TOML)
        file: PathBuf,
    },
    /// Print a commented example configuration
    ///
    /// Example:
    ///   ckm signer config example > /etc/ckm/signer.toml
    #[command(verbatim_doc_comment)]
    Example,
}

/// Connection and request limits of `signer serve` (each overrides the configuration file,
/// then the default).
#[derive(Debug, Default, Clone, Args)]
pub struct LimitArgs {
    /// Most open connections, TLS handshakes included; more wait in the accept queue [default: 256]
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Most authenticated requests being read or handled at once [default: 16]
    #[arg(long, value_name = "N")]
    max_in_flight: Option<usize>,
    /// Most requests of one coordinator being read or handled at once [default: 8]
    #[arg(long, value_name = "N")]
    max_in_flight_per_coordinator: Option<usize>,
    /// Seconds a client has to send a request header; idle connections close after it (5-300) [default: 10]
    #[arg(long, value_name = "SECS")]
    header_timeout: Option<u64>,
    /// Seconds a client has to complete the TLS handshake (1-300) [default: 10]
    #[arg(long, value_name = "SECS")]
    handshake_timeout: Option<u64>,
    /// Seconds from a request's header to its answer (1-3600) [default: 120]
    #[arg(long, value_name = "SECS")]
    request_timeout: Option<u64>,
    /// Seconds an authenticated request waits for a free slot before a 503 (1-3600) [default: 30]
    #[arg(long, value_name = "SECS")]
    queue_timeout: Option<u64>,
}

impl LimitArgs {
    /// `base` with every limit given on the command line replaced, checked.
    fn apply(&self, base: Quotas) -> Result<Quotas> {
        let mut l = base;
        if let Some(v) = self.max_connections {
            l.max_connections = v;
        }
        if let Some(v) = self.max_in_flight {
            l.max_in_flight = v;
        }
        if let Some(v) = self.max_in_flight_per_coordinator {
            l.max_in_flight_per_coordinator = v;
        }
        if let Some(v) = self.header_timeout {
            l.header_timeout_secs = v;
        }
        if let Some(v) = self.handshake_timeout {
            l.handshake_timeout_secs = v;
        }
        if let Some(v) = self.request_timeout {
            l.request_timeout_secs = v;
        }
        if let Some(v) = self.queue_timeout {
            l.queue_timeout_secs = v;
        }
        l.validate().context("invalid limits")?;
        Ok(l)
    }
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
        /// Wallet name (as given at creation), group key or fingerprint (a name several
        /// coordinators gave is refused with the candidates listed)
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
        /// Largest amount paid out over any 24 hours, in satoshis (a fee bump or cancel,
        /// which spends the same coins as what it replaces, counts once with it)
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
        /// Wallet name, group key or fingerprint
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
        SignerCommand::Serve(args) => serve(ctx, &args),
        SignerCommand::Tls { rotate } => {
            if !SignerHome::exists(&ctx.home) {
                bail!(
                    "{} is not a signer home; run `signer init` first",
                    ctx.home.display()
                );
            }
            let dir = SignerHome::dir_of(&ctx.home);
            if !rotate {
                let fp = TlsIdentity::self_signed_in(&dir)?.fingerprint();
                return ctx.output(serde_json::json!({ "tls_sha256": fp }), || fp.clone());
            }
            let old = TlsIdentity::self_signed_in(&dir)?.fingerprint();
            let new = TlsIdentity::rotate_self_signed_in(&dir)?.fingerprint();
            ctx.output(
                serde_json::json!({ "tls_sha256": new, "previous_tls_sha256": old }),
                || {
                    format!(
                        "{new}\nnew TLS certificate (was {old}); restart the signer, then \
                         coordinators run `ckm wallet update-pin`"
                    )
                },
            )
        }
        SignerCommand::Config(ConfigCommand::Example) => {
            print!("{EXAMPLE}");
            Ok(())
        }
        SignerCommand::Config(ConfigCommand::Check { file }) => {
            let c = ServeConfig::load(&file)?;
            check_files(&c)?;
            ctx.output(serde_json::to_value(&c)?, || {
                format!(
                    "{} is valid; signer serve --config would run with:\n{}",
                    file.display(),
                    toml::to_string(&c).unwrap_or_default()
                )
            })
        }
        SignerCommand::Wallets => wallets(ctx),
        SignerCommand::Address(args) => signer_address::run(ctx, args),
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

/// Checks that the files a configuration names exist (without reading the passphrase).
fn check_files(c: &ServeConfig) -> Result<()> {
    if let Some(p) = &c.passphrase_file {
        std::fs::metadata(p)
            .with_context(|| format!("passphrase_file {} is not readable", p.display()))?;
    }
    if let TlsChoice::Files { cert, key } = &c.tls {
        TlsIdentity::from_pem_files(cert, key).context("tls_cert/tls_key")?;
    }
    Ok(())
}

fn serve(ctx: &Context, args: &ServeArgs) -> Result<()> {
    let config = args.effective()?;
    init_logging(ctx.verbose, config.log_format.unwrap_or_default());
    if config.allow_coordinators.is_empty() {
        bail!(
            "no coordinator is allowed: give --allow-coordinator PUBKEY (see `ckm id` on the \
             coordinator) or allow_coordinators in the --config file"
        );
    }
    let listen = config.listen.unwrap_or(DEFAULT_LISTEN.parse()?);
    let tls = match &config.tls {
        TlsChoice::Off => None,
        TlsChoice::SelfSigned => Some(TlsIdentity::self_signed_in(&SignerHome::dir_of(&ctx.home))?),
        TlsChoice::Files { cert, key } => Some(TlsIdentity::from_pem_files(cert, key)?),
    };
    if tls.is_none() && !listen.ip().is_loopback() {
        bail!(
            "refusing to serve plain HTTP on {listen}: use --tls (or --tls-cert/--tls-key), \
             or listen on a loopback address (127.0.0.1 or ::1)"
        );
    }
    if let Some(m) = config.metrics {
        if m == listen && m.port() != 0 {
            bail!("--metrics must be another address than --listen ({listen})");
        }
    }
    let passphrase = read_passphrase(config.passphrase_file.as_deref(), false)?;
    let home = open_migrating(&ctx.home, passphrase.as_bytes(), &mut rand::rngs::OsRng)?;
    drop(passphrase);
    // Peers from --allow-peer or the configuration's allow_peers, besides those approved
    // with `ckm signer peers add`.
    let signer = Arc::new(
        Signer::new(home, os_rng_source())?.with_peers(config.allow_peers.iter().copied()),
    );
    if let Some(problem) = signer.state_error() {
        eprintln!("warning: {problem} (`ckm signer state reset --reason TEXT`)");
    }
    let identity = signer.identity();
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        let metrics_listener = match config.metrics {
            Some(m) => Some(
                tokio::net::TcpListener::bind(m)
                    .await
                    .with_context(|| format!("binding the metrics address {m}"))?,
            ),
            None => None,
        };
        let metrics_addr = match &metrics_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        // Listen for SIGHUP before announcing readiness: its default action ends the process.
        #[cfg(unix)]
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("listening for SIGHUP")?;
        // And for SIGTERM, for the same reason: a stop right after readiness ends cleanly.
        #[cfg(unix)]
        let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let pin = tls.as_ref().map(|t| t.fingerprint());
        ctx.output(
            serde_json::json!({
                "listening": format!("{scheme}://{addr}"),
                "identity": identity.to_string(),
                "tls_sha256": pin,
                "metrics": metrics_addr.map(|m| format!("http://{m}/metrics")),
            }),
            || {
                let mut line = match &pin {
                    Some(fp) => {
                        format!("listening on {scheme}://{addr} as {identity} tls-sha256 {fp}")
                    }
                    None => format!("listening on {scheme}://{addr} as {identity}"),
                };
                if let Some(m) = metrics_addr {
                    line.push_str(&format!("\nmetrics on http://{m}/metrics"));
                }
                line
            },
        )?;
        tracing::info!(
            %addr,
            %identity,
            coordinators = config.allow_coordinators.len(),
            approved_peers = config.allow_peers.len(),
            tls = tls.is_some(),
            metrics = ?metrics_addr,
            limits = ?config.limits,
            "signer serving"
        );
        let tls_serve = match &tls {
            Some(t) => Some(ServerTls {
                config: t.server_config()?,
                fingerprint: t.fingerprint(),
            }),
            None => None,
        };
        let server = Server::new(
            signer.clone(),
            Access {
                allowed_coordinators: config.allow_coordinators.clone(),
                limits: config.limits,
            },
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        tokio::spawn(async move {
            #[cfg(unix)]
            shutdown_signal(terminate).await;
            #[cfg(not(unix))]
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        #[cfg(unix)]
        {
            let reload_server = server.clone();
            let running = config.clone();
            tokio::spawn(reload_on_sighup(
                hangups,
                reload_server,
                args.clone(),
                running,
            ));
        }
        let metrics_task = metrics_listener.map(|l| {
            tokio::spawn(ckm::net::server::serve_metrics(
                l,
                server.clone(),
                stopped(stop_rx.clone()),
            ))
        });
        server
            .serve(listener, tls_serve, stopped(stop_rx))
            .await
            .context("serving")?;
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
        // The last decisions' checkpoint is on disk before the process ends.
        signer.home().flush_checkpoint();
        tracing::info!("signer stopped");
        Ok(())
    })
}

/// On every SIGHUP: re-reads the configuration file, applies the command line over it and
/// gives the server the new allow-list and limits. A file that does not check is logged
/// and ignored (the running settings stay); keys that need a restart are named.
#[cfg(unix)]
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    server: Server,
    args: ServeArgs,
    mut running: ServeConfig,
) {
    while hup.recv().await.is_some() {
        if args.config.is_none() {
            tracing::warn!("SIGHUP: nothing to reload (no --config file)");
            continue;
        }
        let new = match args.effective() {
            Ok(c) if c.allow_coordinators.is_empty() => {
                tracing::error!(
                    "SIGHUP: the new configuration allows no coordinator; keeping the running one"
                );
                continue;
            }
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "SIGHUP: configuration refused; keeping the running one");
                continue;
            }
        };
        let mut needs_restart = Vec::new();
        if new.listen != running.listen {
            needs_restart.push("listen");
        }
        if new.tls != running.tls {
            needs_restart.push("tls");
        }
        if new.passphrase_file != running.passphrase_file {
            needs_restart.push("passphrase_file");
        }
        if new.metrics != running.metrics {
            needs_restart.push("metrics");
        }
        if new.log_format != running.log_format {
            needs_restart.push("log_format");
        }
        if new.allow_peers != running.allow_peers {
            // `ckm signer peers add` approves peers without a restart.
            needs_restart.push("allow_peers");
        }
        if !needs_restart.is_empty() {
            tracing::warn!(keys = ?needs_restart, "SIGHUP: these changes need a restart and are not applied");
        }
        server.reload(Access {
            allowed_coordinators: new.allow_coordinators.clone(),
            limits: new.limits,
        });
        tracing::info!(
            coordinators = new.allow_coordinators.len(),
            limits = ?new.limits,
            "SIGHUP: allowed coordinators and limits reloaded"
        );
        running.allow_coordinators = new.allow_coordinators;
        running.limits = new.limits;
    }
}

/// Resolves on Ctrl-C or SIGTERM (`term`, listened for since before readiness).
#[cfg(unix)]
async fn shutdown_signal(mut term: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
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
                "recovery": w
                    .keygen
                    .as_ref()
                    .and_then(|k| k.context.recovery.as_ref())
                    .map(signer_address::recovery_json),
            })
        })
        .collect();
    ctx.output(serde_json::Value::Array(json), || {
        if list.is_empty() {
            return "no wallets".into();
        }
        list.iter()
            .map(|w| {
                let recovery = w
                    .keygen
                    .as_ref()
                    .and_then(|k| k.context.recovery.as_ref())
                    .map(|p| format!("\n  recovery: {}", signer_address::recovery_text(p)))
                    .unwrap_or_default();
                format!(
                    "{}  {}-of-{}  signer #{}  {}  fingerprint {}  {}{recovery}",
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
            let info = ckm::signer::legacy::find_wallet(&SignerHome::dir_of(&ctx.home), &wallet)?;
            for a in &allow_address {
                let parsed = bitcoin::Address::from_str(a)
                    .map_err(|e| anyhow::anyhow!("--allow-address {a}: {e}"))?;
                if !parsed.is_valid_for_network(info.network) {
                    bail!("--allow-address {a} is not a {} address", info.network);
                }
            }
            let passphrase = read_passphrase(passphrase_file.as_deref(), false)?;
            let home = open_migrating(&ctx.home, passphrase.as_bytes(), &mut rand::rngs::OsRng)?;
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
                Some(w) => vec![ckm::signer::legacy::find_wallet(&dir, &w)?],
                None => list_wallets(&dir)?,
            };
            let passphrase = read_passphrase(passphrase_file.as_deref(), false)?;
            let home = open_migrating(&ctx.home, passphrase.as_bytes(), &mut rand::rngs::OsRng)?;
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
    use ckm::protocol::spend_limits::{per_signer_factor, wallet_wide};
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

/// The signer's randomness for work without a caller's RNG (background refills, records
/// after an answer): the operating system's, as everywhere else in the shell.
fn os_rng_source() -> ckm::signer::RngSource {
    Arc::new(|| -> Box<dyn ckm::signer::SignerRng> { Box::new(rand::rngs::OsRng) })
}
