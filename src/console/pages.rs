//! One handler and one template per page. Each handler reads or changes a wallet through the
//! library functions the CLI calls, on a blocking thread, and renders a compile-time checked
//! template (`src/console/templates/`). GET never changes anything and never syncs.

use std::str::FromStr;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use bitcoin::{FeeRate, OutPoint, Txid};
use serde::Deserialize;

use super::security::{same_secret, session_cookie, Authenticated};
use super::view::{chain, page, parse_recipients, url_segment};
use super::wallets::SignerHealth;
use super::{blocking, psbt, signing, ConsoleError, Shared};
use crate::chain::fee_rate_for;
use crate::wallet::labels::LabelKind;
use crate::wallet::spend::recipient::bip21_uri;
use crate::wallet::{Review, TxState};

/// Rows of a history or coins page.
pub const PAGE_ROWS: usize = 50;

const CSS: &str = include_str!("templates/console.css");

type S = State<Arc<Shared>>;
type Session = Extension<Authenticated>;

/// The console's routes.
pub fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login))
        .route("/static/console.css", get(css))
        .route("/w/{name}/sync", post(sync))
        .route("/w/{name}/receive", get(receive).post(receive_new))
        .route("/w/{name}/send", get(send))
        .route("/w/{name}/send/review", post(send_review))
        .route("/w/{name}/send/sign", post(signing::send_sign))
        .route("/w/{name}/signing/{id}", get(signing::job_page))
        .route("/w/{name}/history", get(history))
        .route("/w/{name}/label", post(label))
        .route("/w/{name}/coins", get(coins))
        .route("/w/{name}/freeze", post(freeze))
        .route("/w/{name}/signers", get(signers))
        .route("/w/{name}/psbt", get(psbt::psbt_form))
        .route("/w/{name}/psbt/inspect", post(psbt::psbt_inspect))
        .route("/w/{name}/psbt/upload", post(psbt::psbt_upload))
        .route("/w/{name}/psbt/sign", post(signing::psbt_sign))
        .route("/w/{name}/psbt/download", post(psbt::psbt_download))
        .with_state(shared)
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/css"))],
        CSS,
    )
        .into_response()
}

#[derive(Deserialize)]
struct LoginQuery {
    token: Option<String>,
}

/// Exchanges the login token for a session cookie.
async fn login(State(shared): S, Query(q): Query<LoginQuery>) -> Response {
    match q.token {
        Some(t) if same_secret(&t, &shared.token) => {
            let cookie = session_cookie(&shared.sessions.open(), shared.secure);
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            "not logged in: open the URL that `ckm console` printed when it started\n",
        )
            .into_response(),
    }
}

struct WalletRow {
    name: String,
    network: String,
    threshold: u16,
    signers: u16,
    epoch: u64,
    fingerprint: String,
    confirmed: u64,
    pending: u64,
    frozen: u64,
    height: u32,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    csrf: String,
    wallet: String,
    rows: Vec<WalletRow>,
}

async fn overview(
    State(shared): S,
    Extension(Authenticated(s)): Session,
) -> Result<Response, ConsoleError> {
    let rows = blocking(move || {
        let mut rows = Vec::new();
        for name in shared.wallets.names()? {
            rows.push(shared.wallets.read(&name, |w, memo| {
                let meta = w.meta();
                let b = memo.balance(w);
                Ok(WalletRow {
                    name: meta.name.clone(),
                    network: meta.network.to_string(),
                    threshold: meta.group.threshold(),
                    signers: meta.roster.len(),
                    epoch: meta.epoch,
                    fingerprint: meta
                        .fingerprint()
                        .map_or_else(|| "none".into(), |f| f.to_string()),
                    confirmed: b.confirmed.to_sat(),
                    pending: (b.unconfirmed + b.immature).to_sat(),
                    frozen: b.frozen.to_sat(),
                    height: w.bdk().latest_checkpoint().height(),
                })
            })?);
        }
        Ok(rows)
    })
    .await?;
    page(&Overview {
        csrf: s.csrf,
        wallet: String::new(),
        rows,
    })
}

/// Syncs a wallet through its chain source (the explicit button; no page load syncs).
async fn sync(State(shared): S, Path(name): Path<String>) -> Result<Response, ConsoleError> {
    blocking(move || {
        shared.wallets.write(&name, "console sync", |w| {
            let source = chain(&shared, w)?;
            source.sync(w, Box::new(|_| {}))?;
            Ok(())
        })
    })
    .await?;
    Ok(Redirect::to("/").into_response())
}

#[derive(Template)]
#[template(path = "receive.html")]
struct Receive {
    csrf: String,
    wallet: String,
    shown: Option<Shown>,
}

struct Shown {
    address: String,
    index: u32,
    uri: String,
    qr_svg: String,
}

async fn receive(
    Path(name): Path<String>,
    Extension(Authenticated(s)): Session,
) -> Result<Response, ConsoleError> {
    page(&Receive {
        csrf: s.csrf,
        wallet: name,
        shown: None,
    })
}

#[derive(Deserialize)]
struct ReceiveForm {
    #[serde(default)]
    amount_sats: String,
    #[serde(default)]
    label: String,
}

/// Reveals the next receive address (as `wallet address`), with its BIP-0021 URI and QR code.
async fn receive_new(
    State(shared): S,
    Path(name): Path<String>,
    Extension(Authenticated(s)): Session,
    Form(f): Form<ReceiveForm>,
) -> Result<Response, ConsoleError> {
    let amount = match f.amount_sats.trim() {
        "" => None,
        t => Some(bitcoin::Amount::from_sat(t.parse().map_err(|_| {
            ConsoleError::BadRequest(format!("amount '{t}' is not a number of satoshis"))
        })?)),
    };
    let label = f.label.trim().to_string();
    let wallet = name.clone();
    let info = blocking(move || {
        shared.wallets.write(&wallet, "console receive", |w| {
            let info = w.reveal_next_address()?;
            if !label.is_empty() {
                w.set_label(LabelKind::Addr, &info.address.to_string(), &label)?;
            }
            Ok((info.address, info.index, label))
        })
    })
    .await?;
    let (address, index, label) = info;
    let uri = bip21_uri(
        &address,
        amount,
        Some(label.as_str()).filter(|l| !l.is_empty()),
    );
    let qr_svg = qrcode::QrCode::new(uri.as_bytes())
        .map(|code| {
            code.render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(220, 220)
                .build()
        })
        .map_err(|e| ConsoleError::BadRequest(format!("QR code: {e}")))?;
    page(&Receive {
        csrf: s.csrf,
        wallet: name,
        shown: Some(Shown {
            address: address.to_string(),
            index,
            uri,
            qr_svg,
        }),
    })
}

#[derive(Template)]
#[template(path = "send.html")]
struct Send {
    csrf: String,
    wallet: String,
}

async fn send(
    Path(name): Path<String>,
    Extension(Authenticated(s)): Session,
) -> Result<Response, ConsoleError> {
    page(&Send {
        csrf: s.csrf,
        wallet: name,
    })
}

#[derive(Deserialize)]
struct SendForm {
    recipients: String,
    #[serde(default)]
    fee_rate: String,
    #[serde(default)]
    target_blocks: String,
    #[serde(default)]
    allow_high_fee: Option<String>,
}

struct Line {
    destination: String,
    sats: u64,
}

#[derive(Template)]
#[template(path = "review.html")]
struct ReviewPage {
    csrf: String,
    wallet: String,
    payments: Vec<Line>,
    change: Vec<Line>,
    inputs: Vec<Line>,
    fee: u64,
    fee_rate: String,
    fee_source: String,
    vsize: u64,
    psbt: String,
    recipients: String,
    allow_high_fee: bool,
}

fn lines(review: &Review) -> (Vec<Line>, Vec<Line>, Vec<Line>) {
    let out = |o: &crate::wallet::ReviewOutput| Line {
        destination: o.destination(),
        sats: o.amount.to_sat(),
    };
    (
        review.payments.iter().map(out).collect(),
        review.change.iter().map(out).collect(),
        review
            .spent
            .iter()
            .map(|i| Line {
                destination: i.outpoint.to_string(),
                sats: i.amount.to_sat(),
            })
            .collect(),
    )
}

/// Builds the payment (as `wallet send`: recipients checked, fee rate given or estimated,
/// bdk's coin selection, the fee guard) and shows its review as the signers will see it.
async fn send_review(
    State(shared): S,
    Path(name): Path<String>,
    Extension(Authenticated(s)): Session,
    Form(f): Form<SendForm>,
) -> Result<Response, ConsoleError> {
    let given = match f.fee_rate.trim() {
        "" => None,
        t => Some(
            t.parse::<u64>()
                .ok()
                .filter(|r| (1..=100_000).contains(r))
                .and_then(FeeRate::from_sat_per_vb)
                .ok_or_else(|| {
                    ConsoleError::BadRequest(format!("fee rate '{t}' is not 1 to 100000 sat/vB"))
                })?,
        ),
    };
    let target = match f.target_blocks.trim() {
        "" => 6,
        t => t
            .parse::<u16>()
            .ok()
            .filter(|b| (1..=1008).contains(b))
            .ok_or_else(|| {
                ConsoleError::BadRequest(format!("target '{t}' is not 1 to 1008 blocks"))
            })?,
    };
    let allow_high_fee = f.allow_high_fee.is_some();
    let recipients_text = f.recipients.clone();
    let wallet = name.clone();
    let (psbt, review, source) = blocking(move || {
        shared.wallets.write(&wallet, "console send", |w| {
            let recipients = parse_recipients(&recipients_text, w)?;
            let chain = match given {
                Some(_) => None,
                None => Some(chain(&shared, w)?),
            };
            let (rate, source) = fee_rate_for(given, chain.as_deref(), target)?;
            let psbt = w.build_payments(&crate::wallet::Payment {
                recipients,
                from: Vec::new(),
                fee_rate: rate,
            })?;
            let review = w.review(&psbt)?;
            if !allow_high_fee {
                review.check_fee()?;
            }
            Ok((psbt, review, source))
        })
    })
    .await?;
    let (payments, change, inputs) = lines(&review);
    page(&ReviewPage {
        csrf: s.csrf,
        wallet: name,
        payments,
        change,
        inputs,
        fee: review.fee.to_sat(),
        fee_rate: format!("{:.1}", review.fee_rate_sat_vb()),
        fee_source: source.describe(),
        vsize: review.vsize,
        psbt: psbt.to_string(),
        recipients: f.recipients,
        allow_high_fee,
    })
}

struct HistoryRow {
    txid: String,
    state: String,
    net: i64,
    fee: String,
    label: String,
}

#[derive(Template)]
#[template(path = "history.html")]
struct History {
    csrf: String,
    wallet: String,
    rows: Vec<HistoryRow>,
    page: usize,
    pages: usize,
    total: usize,
}

#[derive(Deserialize)]
struct PageQuery {
    page: Option<usize>,
}

fn state_text(state: &TxState) -> String {
    match state {
        TxState::Confirmed {
            height,
            confirmations,
        } => format!("confirmed at {height} ({confirmations} conf.)"),
        TxState::Replaced { by } => format!("replaced by {by}"),
        TxState::Cancelled { by } => format!("cancelled by {by}"),
        other => other.name().to_string(),
    }
}

/// The wallet's transactions, newest first, a page at a time (as `wallet history`).
async fn history(
    State(shared): S,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
    Extension(Authenticated(s)): Session,
) -> Result<Response, ConsoleError> {
    let page_no = q.page.unwrap_or(1).max(1);
    let wallet = name.clone();
    let offset = (page_no - 1).saturating_mul(PAGE_ROWS);
    let (entries, total) = blocking(move || {
        shared
            .wallets
            .read(&wallet, |w, memo| memo.history(w, PAGE_ROWS, offset))
    })
    .await?;
    let rows = entries
        .iter()
        .map(|e| HistoryRow {
            txid: e.txid.to_string(),
            state: state_text(&e.state),
            net: e.net.to_sat(),
            fee: e.fee.map_or_else(String::new, |f| f.to_sat().to_string()),
            label: e.label.clone().unwrap_or_default(),
        })
        .collect();
    page(&History {
        csrf: s.csrf,
        wallet: name,
        rows,
        page: page_no,
        pages: total.div_ceil(PAGE_ROWS).max(1),
        total,
    })
}

#[derive(Deserialize)]
struct LabelForm {
    kind: String,
    reference: String,
    #[serde(default)]
    text: String,
}

/// Sets or (empty) removes the label of a transaction or a coin (as `wallet label`).
async fn label(
    State(shared): S,
    Path(name): Path<String>,
    Form(f): Form<LabelForm>,
) -> Result<Response, ConsoleError> {
    let (kind, reference, back) = match f.kind.as_str() {
        "tx" => {
            let txid = Txid::from_str(f.reference.trim())
                .map_err(|_| ConsoleError::BadRequest("not a transaction id".into()))?;
            (LabelKind::Tx, txid.to_string(), "history")
        }
        "output" => {
            let op = OutPoint::from_str(f.reference.trim())
                .map_err(|_| ConsoleError::BadRequest("not a coin TXID:VOUT".into()))?;
            (LabelKind::Output, op.to_string(), "coins")
        }
        _ => {
            return Err(ConsoleError::BadRequest(
                "labels are for a tx or an output".into(),
            ))
        }
    };
    let wallet = name.clone();
    blocking(move || {
        shared.wallets.write(&wallet, "console label", |w| {
            Ok(w.set_label(kind, &reference, &f.text)?)
        })
    })
    .await?;
    Ok(Redirect::to(&format!("/w/{}/{back}", url_segment(&name))).into_response())
}

struct CoinRow {
    outpoint: String,
    sats: u64,
    address: String,
    confirmations: u32,
    frozen: bool,
    label: String,
}

#[derive(Template)]
#[template(path = "coins.html")]
struct Coins {
    csrf: String,
    wallet: String,
    rows: Vec<CoinRow>,
    page: usize,
    pages: usize,
    total: usize,
}

/// The wallet's unspent coins, a page at a time (as `wallet coins`).
async fn coins(
    State(shared): S,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
    Extension(Authenticated(s)): Session,
) -> Result<Response, ConsoleError> {
    let wallet = name.clone();
    let page_no = q.page.unwrap_or(1).max(1);
    let offset = (page_no - 1).saturating_mul(PAGE_ROWS);
    let (coins, total) = blocking(move || {
        shared
            .wallets
            .read(&wallet, |w, memo| memo.coins(w, PAGE_ROWS, offset))
    })
    .await?;
    let rows = coins
        .iter()
        .map(|c| CoinRow {
            outpoint: c.outpoint.to_string(),
            sats: c.amount.to_sat(),
            address: c
                .address
                .as_ref()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            confirmations: c.confirmations,
            frozen: c.frozen,
            label: c.label.clone().unwrap_or_default(),
        })
        .collect();
    page(&Coins {
        csrf: s.csrf,
        wallet: name,
        rows,
        page: page_no,
        pages: total.div_ceil(PAGE_ROWS).max(1),
        total,
    })
}

#[derive(Deserialize)]
struct FreezeForm {
    outpoint: String,
    freeze: String,
}

/// Freezes or unfreezes a coin (as `wallet freeze` / `unfreeze`).
async fn freeze(
    State(shared): S,
    Path(name): Path<String>,
    Form(f): Form<FreezeForm>,
) -> Result<Response, ConsoleError> {
    let op = OutPoint::from_str(f.outpoint.trim())
        .map_err(|_| ConsoleError::BadRequest("not a coin TXID:VOUT".into()))?;
    let on = f.freeze == "1";
    let wallet = name.clone();
    blocking(move || {
        shared.wallets.write(&wallet, "console freeze", |w| {
            if on {
                w.freeze(op)?;
            } else {
                w.unfreeze(op)?;
            }
            Ok(())
        })
    })
    .await?;
    Ok(Redirect::to(&format!("/w/{}/coins", url_segment(&name))).into_response())
}

#[derive(Template)]
#[template(path = "signers.html")]
struct Signers {
    wallet: String,
    rows: Vec<SignerHealth>,
    now: u64,
}

/// The signers as the background probe last saw them (no signer is asked on page load).
async fn signers(State(shared): S, Path(name): Path<String>) -> Result<Response, ConsoleError> {
    let wallet = name.clone();
    let sh = shared.clone();
    blocking(move || sh.wallets.read(&wallet, |_, _| Ok(()))).await?;
    page(&Signers {
        rows: shared.health.of(&name),
        wallet: name,
        now: crate::auth::unix_now(),
    })
}
