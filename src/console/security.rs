//! Who may use the console: the login token printed at start, exchanged for a session cookie
//! (`HttpOnly; SameSite=Strict`); a CSRF token bound to each session, required on every POST;
//! the `Host` header checked against the listen address and `--public-host` names (no DNS
//! rebinding); and the security headers of every response.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bitcoin::hashes::{sha256, Hash};
use rand::RngCore;
use subtle::ConstantTimeEq;

use super::Shared;

/// The session cookie's name.
pub const COOKIE: &str = "ckm_console";
/// The form field (or header `x-csrf-token`) carrying the CSRF token of a POST.
pub const CSRF_FIELD: &str = "csrf";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// At most this many sessions at once (the oldest is dropped).
pub const MAX_SESSIONS: usize = 32;
/// The largest POST body read (a pasted PSBT fits).
pub const MAX_BODY: usize = 2 << 20;

/// The Content-Security-Policy of every page: nothing but this origin's style sheet, inline
/// SVG, and forms posting back here; no script, no frame.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A fresh random token: 32 bytes, hex.
pub fn fresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A logged-in browser.
#[derive(Clone)]
pub struct Session {
    /// The CSRF token of its forms.
    pub csrf: String,
    created: Instant,
}

/// The sessions, keyed by the SHA-256 of their cookie (a lookup leaks nothing of a cookie).
#[derive(Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
}

fn key_of(cookie: &str) -> [u8; 32] {
    sha256::Hash::hash(cookie.as_bytes()).to_byte_array()
}

impl Sessions {
    /// Opens a session; returns its cookie value.
    pub fn open(&self) -> String {
        let cookie = fresh_token();
        let session = Session {
            csrf: fresh_token(),
            created: Instant::now(),
        };
        let mut map = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.created.elapsed() < SESSION_TTL);
        while map.len() >= MAX_SESSIONS {
            let oldest = map.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k);
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(key_of(&cookie), session);
        cookie
    }

    /// The live session of `cookie`.
    pub fn get(&self, cookie: &str) -> Option<Session> {
        let map = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key_of(cookie))
            .filter(|s| s.created.elapsed() < SESSION_TTL)
            .cloned()
    }
}

/// The value of cookie `name` in `headers`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether `host` (a `Host` header) names the console listening on `listen`: that address,
/// or a public name (alone or with the port).
pub fn host_allowed(listen: std::net::SocketAddr, public_hosts: &[String], host: &str) -> bool {
    let port = listen.port();
    host == listen.to_string()
        || public_hosts
            .iter()
            .any(|name| host == name || host == format!("{name}:{port}"))
}

fn refusal(status: StatusCode, text: &'static str) -> Response {
    let mut r = (status, text).into_response();
    with_headers(r.headers_mut());
    r
}

/// Adds the security headers to a response.
pub fn with_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The session of a request, put there by [`gate`].
#[derive(Clone)]
pub struct Authenticated(pub Session);

/// Every request: the `Host` check, then (except `/login` and the style sheet) the session
/// cookie, then on a POST its CSRF token; every answer gets the security headers.
pub async fn gate(
    State(shared): State<std::sync::Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !host_allowed(shared.listen, &shared.public_hosts, host) {
        return refusal(
            StatusCode::MISDIRECTED_REQUEST,
            "this console does not answer for that host name (see --public-host)\n",
        );
    }
    let path = req.uri().path();
    if path == "/login" || path == "/static/console.css" {
        let mut r = next.run(req).await;
        with_headers(r.headers_mut());
        return r;
    }
    let Some(session) = cookie(req.headers(), COOKIE).and_then(|c| shared.sessions.get(c)) else {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "not logged in: open the URL that `ckm console` printed when it started\n",
        );
    };
    let mut req = req;
    if req.method() == Method::POST {
        let (parts, body) = req.into_parts();
        let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
            return refusal(StatusCode::PAYLOAD_TOO_LARGE, "request too large\n");
        };
        let from_header = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let given = match from_header {
            Some(token) => Some(token),
            None if is_multipart(&parts.headers) => {
                multipart_csrf(&parts.headers, bytes.clone()).await
            }
            None => url::form_urlencoded::parse(&bytes)
                .find(|(k, _)| k == CSRF_FIELD)
                .map(|(_, v)| v.into_owned()),
        };
        if !given.is_some_and(|g| same_secret(&g, &session.csrf)) {
            return refusal(
                StatusCode::FORBIDDEN,
                "refused: this form has no valid CSRF token (reload the page)\n",
            );
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(Authenticated(session));
    let mut r = next.run(req).await;
    with_headers(r.headers_mut());
    r
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("multipart/form-data"))
}

/// The CSRF field of a `multipart/form-data` body (a file upload), read with the same parser
/// as the handler's (axum's, on `multer`); `None` if the body does not parse or lacks it.
async fn multipart_csrf(headers: &HeaderMap, body: axum::body::Bytes) -> Option<String> {
    use axum::extract::FromRequest as _;
    let mut req = Request::new(Body::from(body));
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        req.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    let mut form = axum::extract::Multipart::from_request(req, &())
        .await
        .ok()?;
    while let Ok(Some(field)) = form.next_field().await {
        if field.name() == Some(CSRF_FIELD) {
            return field.text().await.ok();
        }
    }
    None
}

/// The `Set-Cookie` value of a new session.
pub fn session_cookie(value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abcd", "abcd"));
        assert!(!same_secret("abcd", "abce"));
        assert!(!same_secret("abcd", "abc"));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn sessions_open_and_expire_by_count() {
        let s = Sessions::default();
        let first = s.open();
        assert!(s.get(&first).is_some());
        assert!(s.get("nope").is_none());
        for _ in 0..MAX_SESSIONS {
            s.open();
        }
        assert!(s.get(&first).is_none(), "the oldest session is dropped");
    }

    #[test]
    fn host_must_name_the_console() {
        let listen: std::net::SocketAddr = "127.0.0.1:8035".parse().expect("addr");
        let public = vec!["ckm.lan".to_string()];
        assert!(host_allowed(listen, &[], "127.0.0.1:8035"));
        assert!(!host_allowed(listen, &[], "localhost:8035"));
        assert!(!host_allowed(listen, &[], "127.0.0.1:8036"));
        assert!(!host_allowed(listen, &[], "attacker.example"));
        assert!(!host_allowed(listen, &[], ""));
        assert!(host_allowed(listen, &public, "ckm.lan"));
        assert!(host_allowed(listen, &public, "ckm.lan:8035"));
        assert!(!host_allowed(listen, &public, "ckm.lan:80"));
        assert!(!host_allowed(listen, &public, "x.ckm.lan"));
    }

    #[test]
    fn session_cookie_is_http_only_and_strict() {
        let c = session_cookie("abc", false);
        assert_eq!(c, "ckm_console=abc; HttpOnly; SameSite=Strict; Path=/");
        assert!(session_cookie("abc", true).ends_with("; Secure"));
    }

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; ckm_console=xyz; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
