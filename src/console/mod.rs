//! The web console (`ckm console`): a second face of the library the CLI uses, for whoever
//! proposes payments or operates signers. It runs on the coordinator, which ckm's threat
//! model does not trust: it is a view and a driver. Every action is a library function the
//! CLI also calls (`CkmWallet::build_payments`, `review`, `freeze`, `set_label`,
//! [`crate::net::cosign::cosign_wallet`], [`crate::chain::ChainSource::sync`], …); the
//! console holds no wallet logic of its own, and the signers check every PSBT it brings them.
//!
//! Reading order: [`security`] (login token, session cookie, CSRF, `Host`, headers),
//! [`wallets`] (the loaded wallets and the background signer probe), [`pages`] (one handler
//! and one compile-time checked template per page; templates in `src/console/templates/`),
//! [`psbt`] (a PSBT made elsewhere: pasted or uploaded, inspected, downloaded) and
//! [`signing`] (co-signing as a job whose page shows each signer's progress).
//! Pages work without JavaScript; none syncs the chain on load (sync is a button).
//!
//! May import `net`, `chain`, `wallet` and the lower floors. Never `cli`.

pub mod pages;
pub mod psbt;
pub mod security;
pub mod signing;
mod view;
pub mod wallets;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::chain::{ChainError, ChainSource};
use crate::identity::IdentityKey;
use crate::net::client::Client;
use crate::net::server::accept_next;
use crate::wallet::CkmWallet;

/// Opens the chain source of a wallet (the CLI's choice: flags, environment, saved source).
pub type OpenChain =
    Arc<dyn Fn(&CkmWallet) -> Result<Box<dyn ChainSource>, String> + Send + Sync + 'static>;

/// What went wrong answering a page.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// No wallet of that name in the home.
    #[error("no wallet named '{0}'")]
    NoWallet(String),
    /// A form field is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The wallet refused or failed.
    #[error(transparent)]
    Wallet(#[from] crate::wallet::WalletError),
    /// A recipient is malformed.
    #[error(transparent)]
    Recipient(#[from] crate::wallet::RecipientError),
    /// The fee guard refused the payment.
    #[error(transparent)]
    FeeGuard(#[from] crate::wallet::FeeGuardError),
    /// The PSBT is not one of this wallet.
    #[error(transparent)]
    Coordinate(#[from] crate::psbt::CoordinateError),
    /// The PSBT lacks what the signers need.
    #[error(
        "{0}; fill it with Bitcoin Core's utxoupdatepsbt and the wallet's exported descriptors"
    )]
    NotSignable(#[from] crate::wallet::NotSignable),
    /// The chain source failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// No chain source could be opened.
    #[error("{0}")]
    NoChain(String),
    /// Co-signing failed.
    #[error(transparent)]
    Cosign(#[from] crate::net::cosign::CosignError),
    /// Another `ckm` process holds the wallet.
    #[error(transparent)]
    Lock(#[from] crate::wallet::lock::LockError),
    /// A template failed to render.
    #[error("rendering the page")]
    Render(#[from] askama::Error),
    /// A file system error.
    #[error("reading the home")]
    Io(#[source] std::io::Error),
    /// A blocking task ended abnormally.
    #[error("the request's task failed")]
    Task,
}

/// What `ckm console` serves.
pub struct ConsoleConfig {
    /// The coordinator home's wallets directory.
    pub wallets_dir: PathBuf,
    /// The coordinator's identity key (co-signing requests, signer probes).
    pub identity: IdentityKey,
    /// Opens a wallet's chain source.
    pub open_chain: OpenChain,
    /// The address bound (its text is an allowed `Host`).
    pub listen: SocketAddr,
    /// Other host names the console answers for (`--public-host`).
    pub public_hosts: Vec<String>,
    /// HTTPS (required off loopback).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The login token printed at start.
    pub token: String,
    /// How often the signers are probed in the background.
    pub probe_every: Duration,
    /// How long to wait for each signer (probes and co-signing).
    pub signer_timeout: Duration,
}

/// State shared by every request.
pub struct Shared {
    wallets: wallets::Wallets,
    health: wallets::Health,
    sessions: security::Sessions,
    jobs: signing::Jobs,
    client: Client,
    open_chain: OpenChain,
    listen: SocketAddr,
    public_hosts: Vec<String>,
    secure: bool,
    token: String,
}

/// The console: its router and what it probes in the background.
pub struct Console {
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
    probe_every: Duration,
}

impl Console {
    /// Prepares the console for `config`.
    ///
    /// # Errors
    /// The HTTP client for the signers cannot be built.
    pub fn new(config: ConsoleConfig) -> Result<Self, ConsoleError> {
        let client = Client::new(config.identity, config.signer_timeout)
            .map_err(|e| ConsoleError::BadRequest(format!("building the signers' client: {e}")))?;
        Ok(Console {
            shared: Arc::new(Shared {
                wallets: wallets::Wallets::new(config.wallets_dir),
                health: wallets::Health::default(),
                sessions: security::Sessions::default(),
                jobs: signing::Jobs::default(),
                client,
                open_chain: config.open_chain,
                listen: config.listen,
                public_hosts: config.public_hosts,
                secure: config.tls.is_some(),
                token: config.token,
            }),
            tls: config.tls,
            probe_every: config.probe_every,
        })
    }

    /// The routes, behind the [`security::gate`].
    pub fn router(&self) -> Router {
        pages::routes(self.shared.clone()).layer(axum::middleware::from_fn_with_state(
            self.shared.clone(),
            security::gate,
        ))
    }

    /// Serves on `listener` until `shutdown`, probing the signers every `probe_every` in the
    /// background (the first probe at once).
    ///
    /// # Errors
    /// None today: failed accepts are logged and retried.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let shared = self.shared.clone();
        let every = self.probe_every;
        let prober = tokio::spawn(async move {
            loop {
                let s = shared.clone();
                // The wallet database is read on a blocking thread; the probe itself is async.
                let _ = tokio::task::spawn_blocking(move || {
                    tokio::runtime::Handle::current()
                        .block_on(wallets::probe_all(&s.wallets, &s.client, &s.health))
                })
                .await;
                tokio::time::sleep(every).await;
            }
        });
        let router = self.router();
        let acceptor = self.tls.map(TlsAcceptor::from);
        tokio::pin!(shutdown);
        loop {
            let Some((stream, peer)) = accept_next(&listener, shutdown.as_mut()).await else {
                break;
            };
            let router = router.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    None => connection(stream, router).await,
                    Some(acceptor) => {
                        let handshake =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                        match handshake.await {
                            Ok(Ok(tls)) => connection(tls, router).await,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
            });
        }
        prober.abort();
        Ok(())
    }
}

async fn connection<I>(io: I, router: Router)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "console connection ended");
    }
}

/// Runs blocking wallet work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ConsoleError> + Send + 'static,
) -> Result<T, ConsoleError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ConsoleError::Task)?
}
