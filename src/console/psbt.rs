//! The PSBT page: a PSBT made elsewhere, pasted as base64 or uploaded as a file (binary,
//! base64 or URs, version 0 or 2, as the CLI reads them), shown as `psbt inspect` shows it,
//! co-signed (`signing.rs`) and downloaded as a binary file.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Multipart, Path, State};
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::security::{Authenticated, MAX_BODY};
use super::view::{page, Sent};
use super::{blocking, ConsoleError, Shared};
use crate::psbt::VersionedPsbt;

type S = State<Arc<Shared>>;
type Session = Extension<Authenticated>;

/// The upload form's file field.
pub const FILE_FIELD: &str = "file";

#[derive(Template)]
#[template(path = "psbt.html")]
pub(super) struct PsbtPage {
    pub(super) csrf: String,
    pub(super) wallet: String,
    pub(super) psbt: String,
    pub(super) inspection: Option<String>,
    pub(super) signed: Option<Sent>,
}

pub(super) async fn psbt_form(
    Path(name): Path<String>,
    Extension(Authenticated(s)): Session,
) -> Result<Response, ConsoleError> {
    page(&PsbtPage {
        csrf: s.csrf,
        wallet: name,
        psbt: String::new(),
        inspection: None,
        signed: None,
    })
}

#[derive(Deserialize)]
pub(super) struct PsbtForm {
    pub(super) psbt: String,
}

pub(super) fn decode_psbt(text: &str) -> Result<VersionedPsbt, ConsoleError> {
    let compact: String = text.split_whitespace().collect();
    VersionedPsbt::from_base64(&compact)
        .map_err(|e| ConsoleError::BadRequest(format!("the PSBT does not decode: {e}")))
}

/// Shows `psbt` as `psbt inspect` shows it for wallet `name`.
async fn inspect_page(
    shared: Arc<Shared>,
    name: String,
    csrf: String,
    psbt: VersionedPsbt,
) -> Result<Response, ConsoleError> {
    let base64 = psbt
        .to_base64()
        .map_err(|e| ConsoleError::BadRequest(format!("encoding the PSBT: {e}")))?;
    let wallet = name.clone();
    let text = blocking(move || {
        shared
            .wallets
            .read(&wallet, |w, _| Ok(w.inspect_psbt(&psbt).to_text(&wallet)))
    })
    .await?;
    page(&PsbtPage {
        csrf,
        wallet: name,
        psbt: base64,
        inspection: Some(text),
        signed: None,
    })
}

/// A PSBT made elsewhere, pasted, as `psbt inspect` shows it for this wallet.
pub(super) async fn psbt_inspect(
    State(shared): S,
    Path(name): Path<String>,
    Extension(Authenticated(s)): Session,
    Form(f): Form<PsbtForm>,
) -> Result<Response, ConsoleError> {
    let psbt = decode_psbt(&f.psbt)?;
    inspect_page(shared, name, s.csrf, psbt).await
}

/// A PSBT file made elsewhere (binary, base64 or URs), uploaded, as `psbt inspect` shows it.
pub(super) async fn psbt_upload(
    State(shared): S,
    Path(name): Path<String>,
    Extension(Authenticated(s)): Session,
    mut form: Multipart,
) -> Result<Response, ConsoleError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ConsoleError::BadRequest(format!("reading the upload: {}", e.body_text()))
    };
    let mut file = None;
    while let Some(field) = form.next_field().await.map_err(bad)? {
        if field.name() == Some(FILE_FIELD) {
            let bytes = field.bytes().await.map_err(bad)?;
            if bytes.len() > MAX_BODY {
                return Err(ConsoleError::BadRequest("the file is too large".into()));
            }
            file = Some(bytes);
        }
    }
    let bytes = file
        .filter(|b| !b.is_empty())
        .ok_or_else(|| ConsoleError::BadRequest("no file chosen".into()))?;
    let (psbt, _) = VersionedPsbt::from_file_bytes(&bytes).map_err(|e| {
        ConsoleError::BadRequest(format!(
            "the file is not a PSBT: {}",
            crate::error_chain(&e)
        ))
    })?;
    inspect_page(shared, name, s.csrf, psbt).await
}

/// The PSBT as a binary file.
pub(super) async fn psbt_download(Form(f): Form<PsbtForm>) -> Result<Response, ConsoleError> {
    let psbt = decode_psbt(&f.psbt)?;
    let bytes = psbt
        .serialize()
        .map_err(|e| ConsoleError::BadRequest(format!("encoding the PSBT: {e}")))?;
    let name = format!("{}.psbt", psbt.psbt().unsigned_tx.compute_txid());
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
                    .map_err(|_| ConsoleError::Task)?,
            ),
        ],
        bytes,
    )
        .into_response())
}
