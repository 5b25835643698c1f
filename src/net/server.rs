//! `ckm signer serve`: an HTTP/1.1 server (hyper, with an axum router) in front of a
//! [`Handler`] ([`Signer`] in production).
//!
//! What a request goes through, cheapest check first, so that nobody who cannot sign as an
//! allowed coordinator makes the signer read a body or hold memory:
//!
//! 1. **Connection**: at most [`Quotas::max_connections`] open at once (a slot is taken
//!    *before* `accept`, so extra connections wait in the kernel's queue); the TLS handshake
//!    must end within [`Quotas::handshake_timeout_secs`]; the request header within
//!    [`Quotas::header_timeout_secs`] of the connection's start or of the previous answer
//!    (which also closes idle keep-alive connections), and must fit a read buffer of
//!    [`CONNECTION_BUFFER`] bytes.
//! 2. **Signed header**, before any byte of the body: the coordinator is allowed, the
//!    timestamp is in the window, the signature over method, path, timestamp, nonce and the
//!    body's SHA-256 (carried in the header) verifies, the nonce is fresh
//!    ([`ReplayGuard::check_header`]). Anything else is answered 401 at once and the
//!    connection is closed without reading the body.
//! 3. **Size**: a `Content-Length` is required and must be at most [`MAX_BODY`].
//! 4. **In-flight slot**: at most [`Quotas::max_in_flight`] requests have their body read or
//!    handled at once, and at most [`Quotas::max_in_flight_per_coordinator`] per coordinator;
//!    a request waits up to [`Quotas::queue_timeout_secs`] for a slot, then gets 503.
//! 5. **Body**: read (within [`Quotas::request_timeout_secs`]), checked against the hash the
//!    header signed, decoded, handled off the async threads, and the answer signed.
//!
//! Memory therefore stays below: the process's base, plus `max_connections` ×
//! ([`CONNECTION_BUFFER`] + TLS buffers, about 40 KiB), plus `max_in_flight` × (a body of at
//! most [`MAX_BODY`] and its decoded message). Only the last term can be driven by requests,
//! and only by allowed coordinators. `tests/transport.rs` measures it from the attacker's
//! side.
//!
//! Besides the protocol endpoint the server answers `GET /healthz` (unauthenticated: only
//! that it is up with its store unlocked) and, over TLS, `GET /v1/tls-statement` (the
//! certificate's fingerprint signed by the identity key, for `ckm wallet update-pin`). A
//! plain-HTTP request reaching a TLS server is answered in plain HTTP with a 400 that says
//! to use `https://`. [`serve_metrics`] serves the Prometheus metrics on their own listener.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::quota::{Gate, Quotas};
use super::tls::TlsStatement;
use super::{
    response_digest, signed_path, AUTH_HEADER, HEALTH_PATH, MAX_BODY, MESSAGE_PATH, METRICS_PATH,
    RESPONSE_HEADER, SCHEME_HEADER, TLS_STATEMENT_PATH,
};
use crate::auth::{unix_now, ReplayGuard, RequestAuth};
use crate::identity::IdentityPublic;
use crate::message::{self, CoordinatorToSigner, ErrorCode, SignerToCoordinator};
use crate::ops::metrics::{self as metrics, Metrics, Snapshot};
use crate::signer::Signer;

/// Largest read buffer of one connection (hyper's `max_buf_size`): a request header must
/// fit in it (the signed header is about 330 bytes), and the body is read through it.
pub const CONNECTION_BUFFER: usize = 64 * 1024;
/// Most header fields accepted in one request.
pub const MAX_HEADERS: usize = 32;
/// How long a stopping server lets requests in flight finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the server serves: something that answers authenticated messages and signs with an
/// identity key. [`Signer`] is the real one; tests wrap it to inject faults.
pub trait Handler: Send + Sync + 'static {
    /// Answers one message from the authenticated coordinator `from`.
    fn handle(&self, from: &IdentityPublic, message: CoordinatorToSigner) -> SignerToCoordinator;
    /// The identity key answers are signed with.
    fn identity_key(&self) -> &crate::identity::IdentityKey;
    /// Signing sessions waiting for round 2 (for the metrics).
    fn open_sessions(&self) -> usize {
        0
    }
    /// Records in the audit log, if there is one (for the metrics).
    fn audit_records(&self) -> Option<u64> {
        None
    }
    /// Nonces held for preprocessed signing (for the metrics).
    fn preprocessed_nonces(&self) -> usize {
        0
    }
}

impl Handler for Signer {
    fn handle(&self, from: &IdentityPublic, message: CoordinatorToSigner) -> SignerToCoordinator {
        Signer::handle(self, from, message, &mut rand::rngs::OsRng)
    }
    fn identity_key(&self) -> &crate::identity::IdentityKey {
        self.home().identity()
    }
    fn open_sessions(&self) -> usize {
        self.pending_signing_sessions()
    }
    fn preprocessed_nonces(&self) -> usize {
        Signer::preprocessed_nonces(self)
    }
    fn audit_records(&self) -> Option<u64> {
        self.home()
            .db()
            .read(|c| c.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get::<_, i64>(0)))
            .ok()
            .and_then(|n| u64::try_from(n).ok())
    }
}

/// What [`Server::serve`] needs for HTTPS: the rustls configuration and the certificate's
/// SHA-256 fingerprint (for the signed statement at `/v1/tls-statement`).
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The rustls server configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate's fingerprint.
    pub fingerprint: String,
}

/// Who may talk to the server and within which limits; replaced as a whole by
/// [`Server::reload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Identity keys of the coordinators allowed to send requests.
    pub allowed_coordinators: Vec<IdentityPublic>,
    /// Connection and request limits.
    pub limits: Quotas,
}

impl Access {
    /// `allowed` coordinators with the default [`Quotas`].
    pub fn new(allowed_coordinators: Vec<IdentityPublic>) -> Self {
        Access {
            allowed_coordinators,
            limits: Quotas::default(),
        }
    }
}

/// Logs at most one line per second for a noisy event, with the number left out.
#[derive(Debug, Default)]
struct Throttle {
    last_second: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    /// Whether to log now, and how many events were left out since the last line.
    fn admit(&self) -> Option<u64> {
        let now = unix_now();
        let last = self.last_second.load(Ordering::Relaxed);
        if now != last
            && self
                .last_second
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

struct Shared {
    signer: Arc<dyn Handler>,
    path: String,
    access: RwLock<Arc<Access>>,
    guard: Mutex<ReplayGuard>,
    gate: Arc<Gate>,
    refusals: Throttle,
    metrics: Arc<Metrics>,
    tls_statement: RwLock<Option<TlsStatement>>,
}

impl Shared {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            sessions_open: self.signer.open_sessions(),
            connections_open: self.gate.connections(),
            requests_in_flight: self.gate.in_flight(),
            audit_records: self.signer.audit_records(),
            preprocessed_nonces: self.signer.preprocessed_nonces(),
        }
    }

    fn access(&self) -> Arc<Access> {
        match self.access.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The secret server: build it with [`Server::new`], run it with [`Server::serve`], change
/// its allow-list and limits while it runs with [`Server::reload`].
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("identity", &self.shared.signer.identity_key().public())
            .field("access", &self.shared.access())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server for `signer` with the given access rules.
    pub fn new(signer: Arc<dyn Handler>, access: Access) -> Self {
        let path = signed_path(&signer.identity_key().public());
        let gate = Gate::new(&access.limits);
        Server {
            shared: Arc::new(Shared {
                signer,
                path,
                access: RwLock::new(Arc::new(access)),
                guard: Mutex::new(ReplayGuard::default()),
                gate,
                refusals: Throttle::default(),
                metrics: Arc::new(Metrics::new()),
                tls_statement: RwLock::new(None),
            }),
        }
    }

    /// The server's metrics (see [`serve_metrics`]).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// The metrics in the OpenMetrics text format, gauges read now.
    pub fn encode_metrics(&self) -> String {
        self.shared.metrics.encode(self.shared.snapshot())
    }

    /// Replaces the allow-list and the limits. Requests already authenticated finish under
    /// the old ones; connection timeouts apply to connections opened from now on.
    pub fn reload(&self, access: Access) {
        self.shared.gate.set_limits(&access.limits);
        match self.shared.access.write() {
            Ok(mut a) => *a = Arc::new(access),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(access),
        }
    }

    /// The access rules in force.
    pub fn access(&self) -> Arc<Access> {
        self.shared.access()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.gate.connections()
    }

    /// Requests in flight now.
    pub fn requests_in_flight(&self) -> usize {
        self.shared.gate.in_flight()
    }

    fn router(&self) -> Router {
        Router::new()
            .route(MESSAGE_PATH, post(message_route))
            .route(HEALTH_PATH, get(health_route))
            .route(TLS_STATEMENT_PATH, get(tls_statement_route))
            .with_state(self.shared.clone())
    }

    /// Serves on `listener` (HTTPS when `tls` is given) until `shutdown` resolves, then lets
    /// requests in flight finish (at most [`SHUTDOWN_GRACE`]).
    ///
    /// # Errors
    /// None today: failed `accept`s are logged and retried.
    pub async fn serve(
        &self,
        listener: TcpListener,
        tls: Option<ServerTls>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let acceptor = match tls {
            Some(tls) => {
                let statement = TlsStatement::sign(
                    self.shared.signer.identity_key(),
                    &tls.fingerprint,
                    unix_now(),
                );
                match self.shared.tls_statement.write() {
                    Ok(mut s) => *s = Some(statement),
                    Err(poisoned) => *poisoned.into_inner() = Some(statement),
                }
                Some(TlsAcceptor::from(tls.config))
            }
            None => None,
        };
        let shared = self.shared.clone();
        accept_loop(
            listener,
            self.router(),
            self.shared.gate.clone(),
            move || shared.access().limits,
            acceptor,
            shutdown,
        )
        .await
    }
}

/// Accepts connections on `listener` until `shutdown`, each within a slot of `gate`, and
/// serves `router` on them with the connection limits `limits()` gives at accept time.
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    gate: Arc<Gate>,
    limits: impl Fn() -> Quotas,
    acceptor: Option<TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // Take a connection slot before accepting: past the cap, clients wait in the
        // kernel's accept queue instead of costing memory here.
        let slot = tokio::select! {
            slot = gate.connection() => slot,
            () = &mut shutdown => break,
        };
        let Some((stream, peer)) = accept_next(&listener, shutdown.as_mut()).await else {
            break;
        };
        let limits = limits();
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => serve_connection(stream, router, &limits, watcher).await,
                Some(acceptor) => {
                    let handshake = async {
                        if !starts_like_tls(&stream).await? {
                            answer_plain_http_on_tls(stream).await;
                            return Ok(None);
                        }
                        acceptor.accept(stream).await.map(Some)
                    };
                    match tokio::time::timeout(limits.handshake_timeout(), handshake).await {
                        Ok(Ok(Some(tls))) => serve_connection(tls, router, &limits, watcher).await,
                        Ok(Ok(None)) => tracing::debug!(%peer, "plain HTTP on the TLS port"),
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; stopping anyway");
        }
    }
    Ok(())
}

/// The next connection on `listener`, with `TCP_NODELAY` set, or `None` once `shutdown`
/// resolves. A failed accept (out of file descriptors, say) is logged and retried after
/// 50 ms. The signer's server and the console both accept through it.
pub async fn accept_next<F: std::future::Future<Output = ()>>(
    listener: &TcpListener,
    mut shutdown: std::pin::Pin<&mut F>,
) -> Option<(TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => return None,
        }
    }
}

/// Whether the first byte a client sent is a TLS handshake record (22).
async fn starts_like_tls(stream: &TcpStream) -> std::io::Result<bool> {
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await?;
    Ok(n == 1 && first[0] == 0x16)
}

/// Answers a plain-HTTP client on the TLS port in plain HTTP: use https.
async fn answer_plain_http_on_tls(mut stream: TcpStream) {
    let body = "this ckm signer speaks HTTPS: use an https:// URL with its certificate \
                fingerprint (URL#PUBKEY@FINGERPRINT; the signer's operator can read it)\n";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\n{SCHEME_HEADER}: https\r\ncontent-type: text/plain\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Serves `GET /metrics` (and `GET /healthz`) of `server` on its own plain-HTTP listener,
/// with at most 16 connections, until `shutdown` resolves.
///
/// # Errors
/// None today: failed `accept`s are logged and retried.
pub async fn serve_metrics(
    listener: TcpListener,
    server: Server,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = Quotas {
        max_connections: 16,
        max_in_flight: 16,
        max_in_flight_per_coordinator: 16,
        ..Quotas::default()
    };
    let router = Router::new()
        .route(METRICS_PATH, get(metrics_route))
        .route(HEALTH_PATH, get(health_route))
        .with_state(server.shared.clone());
    accept_loop(
        listener,
        router,
        Gate::new(&limits),
        move || limits,
        None,
        shutdown,
    )
    .await
}

async fn metrics_route(State(shared): State<Arc<Shared>>) -> Response {
    let mut response = shared.metrics.encode(shared.snapshot()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    response
}

/// `GET /healthz`: up, with the store unlocked (a signer serves only once it is). Nothing
/// else: no identity, no version, no wallet.
async fn health_route() -> Response {
    let mut response = r#"{"status":"ok","store":"unlocked"}"#.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `GET /v1/tls-statement`: the identity-signed statement of this server's certificate.
async fn tls_statement_route(State(shared): State<Arc<Shared>>) -> Response {
    let statement = match shared.tls_statement.read() {
        Ok(s) => s.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    match statement {
        Some(s) => {
            let mut response = serde_json::to_string(&s)
                .unwrap_or_default()
                .into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        None => (StatusCode::NOT_FOUND, "this signer does not serve TLS").into_response(),
    }
}

/// Serves `signer` on `listener` (plain HTTP) with the default [`Quotas`] until `shutdown`
/// resolves: [`Server::new`] then [`Server::serve`].
///
/// # Errors
/// See [`Server::serve`].
pub async fn serve(
    listener: TcpListener,
    signer: Arc<dyn Handler>,
    allowed: Vec<IdentityPublic>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    Server::new(signer, Access::new(allowed))
        .serve(listener, None, shutdown)
        .await
}

async fn serve_connection<I>(io: I, router: Router, limits: &Quotas, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout())
        .max_buf_size(CONNECTION_BUFFER)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(error = %e, "connection ended");
    }
}

fn status_of(reply: &SignerToCoordinator) -> StatusCode {
    match reply {
        SignerToCoordinator::Error { code, .. } => match code {
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::UnknownSession => StatusCode::CONFLICT,
            ErrorCode::UnknownWallet => StatusCode::NOT_FOUND,
            ErrorCode::Refused | ErrorCode::Policy => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        _ => StatusCode::OK,
    }
}

/// An unsigned 401: the request's signature did not check, so the answer is not bound to
/// it. Says only why the request was not allowed.
fn unauthorized(shared: &Shared, reason: &'static str, message: String) -> Response {
    shared.metrics.unauthenticated(reason);
    if let Some(left_out) = shared.refusals.admit() {
        tracing::warn!(
            reason = %message,
            similar_refusals_not_logged = left_out,
            "unauthenticated request refused"
        );
    }
    let body = message::encode(&SignerToCoordinator::Error {
        code: ErrorCode::Unauthorized,
        message,
    });
    let mut response = (StatusCode::UNAUTHORIZED, body).into_response();
    // The body is left unread: the connection cannot be reused.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// An answer to an authenticated request, signed and bound to it.
fn signed(
    shared: &Shared,
    auth: &RequestAuth,
    status: StatusCode,
    reply: &SignerToCoordinator,
) -> Response {
    let body = message::encode(reply);
    let signature = shared
        .signer
        .identity_key()
        .sign("response", &response_digest(&auth.signature, &body));
    let mut response = (status, body).into_response();
    if let Ok(v) = HeaderValue::from_str(&hex::encode(signature)) {
        response.headers_mut().insert(RESPONSE_HEADER, v);
    }
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn refusal(code: ErrorCode, message: String) -> SignerToCoordinator {
    SignerToCoordinator::Error { code, message }
}

async fn message_route(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let timeout = shared.access().limits.request_timeout();
    match tokio::time::timeout(timeout, handle_message(&shared, request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(secs = timeout.as_secs(), "request timed out");
            shared.metrics.transport_refusal("unknown", "timeout");
            let mut response = (StatusCode::REQUEST_TIMEOUT, "request timed out").into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

async fn handle_message(shared: &Arc<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(value) = parts.headers.get(AUTH_HEADER) else {
        return unauthorized(shared, "missing", "missing request signature".into());
    };
    let Ok(value) = value.to_str() else {
        return unauthorized(shared, "malformed", "malformed request signature".into());
    };
    let auth = match RequestAuth::from_header_value(value) {
        Ok(a) => a,
        Err(e) => return unauthorized(shared, metrics::auth_reason(&e), e.to_string()),
    };
    let access = shared.access();
    let checked = {
        let allowed = |k: &IdentityPublic| access.allowed_coordinators.contains(k);
        let mut guard = shared
            .guard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.check_header(&auth, &allowed, "POST", &shared.path, unix_now())
    };
    if let Err(e) = checked {
        return unauthorized(shared, metrics::auth_reason(&e), e.to_string());
    }
    // From here on the header is an allowed coordinator's: answers are signed.
    let coordinator = auth.coordinator;
    let refuse = |status, outcome, code, message: String| {
        tracing::warn!(%coordinator, %status, %message, "request refused");
        shared.metrics.transport_refusal("unknown", outcome);
        signed(shared, &auth, status, &refusal(code, message))
    };
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(length) = length else {
        return refuse(
            StatusCode::LENGTH_REQUIRED,
            "bad_request",
            ErrorCode::BadRequest,
            "a Content-Length header is required".into(),
        );
    };
    if length > MAX_BODY as u64 {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            ErrorCode::BadRequest,
            format!("request body of {length} bytes is larger than the {MAX_BODY} bytes a signer accepts"),
        );
    }
    let queue = access.limits.queue_timeout();
    let Ok(_slot) = tokio::time::timeout(queue, shared.gate.request(&coordinator)).await else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            ErrorCode::Internal,
            format!(
                "signer busy: no request slot freed within {} s ({} in flight at most, {} per coordinator); try again later",
                queue.as_secs(),
                access.limits.max_in_flight,
                access.limits.max_in_flight_per_coordinator
            ),
        );
    };
    let bytes = match axum::body::to_bytes(Body::new(body), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad_request",
                ErrorCode::BadRequest,
                format!("could not read the request body: {e}"),
            )
        }
    };
    if let Err(e) = auth.verify_body(&bytes) {
        return unauthorized(shared, metrics::auth_reason(&e), e.to_string());
    }
    let started = std::time::Instant::now();
    let (kind, reply) = match message::decode::<CoordinatorToSigner>(&bytes) {
        Err(e) => ("unknown", refusal(ErrorCode::BadRequest, e.to_string())),
        Ok(msg) => {
            drop(bytes);
            let kind = metrics::message_kind(&msg);
            let signer = shared.signer.clone();
            let reply =
                match tokio::task::spawn_blocking(move || signer.handle(&coordinator, msg)).await {
                    Ok(reply) => reply,
                    Err(e) => refusal(ErrorCode::Internal, format!("signer task failed: {e}")),
                };
            (kind, reply)
        }
    };
    shared.metrics.handled(kind, &reply, started.elapsed());
    if let SignerToCoordinator::Error { code, message } = &reply {
        tracing::warn!(%coordinator, ?code, %message, "request refused");
    }
    signed(shared, &auth, status_of(&reply), &reply)
}
