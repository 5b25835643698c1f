//! `ckm signer serve`: an HTTP server (axum) in front of a [`Signer`]. It authenticates every
//! request (allowed coordinator keys, signature, freshness, replay), limits body size and
//! time, runs the cryptography off the async threads and signs every answer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tower_http::timeout::TimeoutLayer;

use super::{response_digest, signed_path, AUTH_HEADER, MAX_BODY, MESSAGE_PATH, RESPONSE_HEADER};
use crate::auth::{unix_now, ReplayGuard, RequestAuth};
use crate::identity::IdentityPublic;
use crate::message::{self, CoordinatorToSigner, ErrorCode, SignerToCoordinator};
use crate::signer::Signer;

/// Time allowed for one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// What the server serves: something that answers authenticated messages and signs with an
/// identity key. [`Signer`] is the real one; tests wrap it to inject faults.
pub trait Handler: Send + Sync + 'static {
    /// Answers one message from the authenticated coordinator `from`.
    fn handle(&self, from: &IdentityPublic, message: CoordinatorToSigner) -> SignerToCoordinator;
    /// The identity key answers are signed with.
    fn identity_key(&self) -> &crate::identity::IdentityKey;
}

impl Handler for Signer {
    fn handle(&self, from: &IdentityPublic, message: CoordinatorToSigner) -> SignerToCoordinator {
        Signer::handle(self, from, message, &mut rand::rngs::OsRng)
    }
    fn identity_key(&self) -> &crate::identity::IdentityKey {
        self.home().identity()
    }
}

struct AppState {
    signer: Arc<dyn Handler>,
    allowed: Vec<IdentityPublic>,
    guard: Mutex<ReplayGuard>,
    path: String,
}

/// Serves `signer` on `listener` until `shutdown` resolves.
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve<L>(
    listener: L,
    signer: Arc<dyn Handler>,
    allowed: Vec<IdentityPublic>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let path = signed_path(&signer.identity_key().public());
    let state = Arc::new(AppState {
        signer,
        allowed,
        guard: Mutex::new(ReplayGuard::default()),
        path,
    });
    let app = Router::new()
        .route(MESSAGE_PATH, post(handle))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
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

fn unauthorized(message: String) -> Response {
    let body = message::encode(&SignerToCoordinator::Error {
        code: ErrorCode::Unauthorized,
        message,
    });
    (StatusCode::UNAUTHORIZED, body).into_response()
}

async fn handle(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(header) = headers.get(AUTH_HEADER).and_then(|v| v.to_str().ok()) else {
        tracing::warn!("request without authentication refused");
        return unauthorized("missing request signature".into());
    };
    let auth = match RequestAuth::from_header_value(header) {
        Ok(a) => a,
        Err(e) => return unauthorized(e.to_string()),
    };
    let checked = match state.guard.lock() {
        Ok(mut guard) => guard.check(
            &auth,
            &|k: &IdentityPublic| state.allowed.contains(k),
            "POST",
            &state.path,
            &body,
            unix_now(),
        ),
        Err(_) => return (StatusCode::INTERNAL_SERVER_ERROR, "lock poisoned").into_response(),
    };
    if let Err(e) = checked {
        tracing::warn!(coordinator = %auth.coordinator, error = %e, "request refused");
        return unauthorized(e.to_string());
    }
    let reply = match message::decode::<CoordinatorToSigner>(&body) {
        Err(e) => SignerToCoordinator::Error {
            code: ErrorCode::BadRequest,
            message: e.to_string(),
        },
        Ok(msg) => {
            let signer = state.signer.clone();
            let from = auth.coordinator;
            match tokio::task::spawn_blocking(move || signer.handle(&from, msg)).await {
                Ok(reply) => reply,
                Err(e) => SignerToCoordinator::Error {
                    code: ErrorCode::Internal,
                    message: format!("signer task failed: {e}"),
                },
            }
        }
    };
    if let SignerToCoordinator::Error { code, message } = &reply {
        tracing::warn!(?code, %message, "request refused");
    }
    let status = status_of(&reply);
    let body = message::encode(&reply);
    let signature = state
        .signer
        .identity_key()
        .sign("response", &response_digest(&auth.signature, &body));
    let mut response = (status, body).into_response();
    if let Ok(v) = HeaderValue::from_str(&hex::encode(signature)) {
        response.headers_mut().insert(RESPONSE_HEADER, v);
    }
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    response
}
