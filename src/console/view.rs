//! What the pages share: rendering a template or an error, the co-signing result, the
//! wallet's chain source, recipients from a form, a wallet name in a URL.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::{ConsoleError, Shared};
use crate::chain::ChainSource;
use crate::net::coordinator::SignReport;
use crate::wallet::{CkmWallet, Recipient};

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, body) = error_page(&self);
        (status, Html(body)).into_response()
    }
}

/// The status and page of an error (the page names the error and its causes).
pub(super) fn error_page(e: &ConsoleError) -> (StatusCode, String) {
    let status = match e {
        ConsoleError::NoWallet(_) => StatusCode::NOT_FOUND,
        ConsoleError::BadRequest(_)
        | ConsoleError::Recipient(_)
        | ConsoleError::FeeGuard(_)
        | ConsoleError::NotSignable(_)
        | ConsoleError::Coordinate(_) => StatusCode::BAD_REQUEST,
        ConsoleError::Lock(_) => StatusCode::CONFLICT,
        ConsoleError::Cosign(_) | ConsoleError::Chain(_) | ConsoleError::NoChain(_) => {
            StatusCode::BAD_GATEWAY
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let page = ErrorPage {
        message: crate::error_chain(e),
    };
    let body = page
        .render()
        .unwrap_or_else(|_| "the page could not be rendered".into());
    (status, body)
}

/// A rendered page.
pub(super) fn page(t: &impl Template) -> Result<Response, ConsoleError> {
    Ok(Html(t.render()?).into_response())
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    message: String,
}

/// Opens the wallet's chain source.
pub(super) fn chain(shared: &Shared, w: &CkmWallet) -> Result<Box<dyn ChainSource>, ConsoleError> {
    (shared.open_chain)(w).map_err(ConsoleError::NoChain)
}

/// The recipients of a send form, one per line.
pub(super) fn parse_recipients(text: &str, w: &CkmWallet) -> Result<Vec<Recipient>, ConsoleError> {
    let recipients = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| Recipient::parse(l, None, w.meta().network))
        .collect::<Result<Vec<_>, _>>()?;
    if recipients.is_empty() {
        return Err(ConsoleError::BadRequest("no recipient given".into()));
    }
    Ok(recipients)
}

/// A wallet name (letters, digits, `_-.`) as a path segment; anything else is dropped.
pub(super) fn url_segment(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .collect()
}

/// The result of a co-signing, as the send page and the PSBT page show it.
#[derive(Template)]
#[template(path = "sent.html")]
pub(super) struct Sent {
    pub(super) wallet: String,
    pub(super) txid: String,
    pub(super) signers: Vec<u16>,
    pub(super) skipped: Vec<(u16, String)>,
    pub(super) culprits: Vec<u16>,
    pub(super) mode: String,
}

impl Sent {
    pub(super) fn of(wallet: String, txid: String, report: SignReport) -> Self {
        Sent {
            wallet,
            txid,
            signers: report.signers,
            skipped: report.skipped,
            culprits: report.culprits,
            mode: serde_json::to_value(report.mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        }
    }
}
