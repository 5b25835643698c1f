//! Co-signing from the console, with progress per signer: the send page's "sign and
//! broadcast" and the PSBT page's "co-sign" start a [`Job`] and redirect to its page, which
//! shows each signer as the coordinator's [`crate::net::client::Client`] reports it (asked,
//! answered, refused, no answer) and reloads itself (a `<meta http-equiv="refresh">`, no
//! script) until the job ends; then the same address shows the result. The co-signing itself is
//! [`crate::net::cosign::cosign_wallet`], as in `wallet send` and `psbt sign`.
//!
//! Jobs live in memory only (at most [`MAX_JOBS`], the oldest finished one dropped first):
//! the wallet database and the signers hold what matters, a job only its progress display.

use std::collections::{BTreeMap, VecDeque};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use bitcoin::Psbt;
use serde::Deserialize;
use tokio::sync::watch;

use super::psbt::{decode_psbt, PsbtForm, PsbtPage};
use super::security::{fresh_token, Authenticated};
use super::view::{chain, error_page, page, parse_recipients, url_segment, Sent};
use super::{blocking, ConsoleError, Shared};
use crate::chain::broadcast_and_record;
use crate::message::SignerToCoordinator;
use crate::net::client::{CallError, CallObserver};
use crate::net::coordinator::SignReport;
use crate::net::cosign::{cosign_wallet, CosignOptions};
use crate::wallet::CkmWallet;

/// Most jobs kept (running or finished).
pub const MAX_JOBS: usize = 32;
/// How long a job's page waits for the job to end before it shows the progress instead (a
/// fast signing goes straight to its result).
pub const FIRST_WAIT: Duration = Duration::from_millis(700);

type S = State<Arc<Shared>>;

/// The console's co-signing jobs.
#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<VecDeque<Arc<Job>>>,
}

impl Jobs {
    /// A new job of wallet `wallet`, kept until [`MAX_JOBS`] newer ones push it out (finished
    /// jobs go first; a running one is never dropped while more than half are finished).
    fn start(&self, wallet: &str, what: &'static str) -> Arc<Job> {
        let (done, _) = watch::channel(None);
        let job = Arc::new(Job {
            id: fresh_token(),
            wallet: wallet.to_string(),
            what,
            started: Instant::now(),
            lines: Mutex::default(),
            done,
        });
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        while jobs.len() >= MAX_JOBS {
            let finished = jobs.iter().position(|j| j.done.borrow().is_some());
            match finished {
                Some(at) => {
                    jobs.remove(at);
                }
                None => {
                    jobs.pop_front();
                }
            }
        }
        jobs.push_back(job.clone());
        job
    }

    fn get(&self, wallet: &str, id: &str) -> Option<Arc<Job>> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.iter()
            .find(|j| j.wallet == wallet && super::security::same_secret(&j.id, id))
            .cloned()
    }
}

/// What one signer did so far in a job.
#[derive(Debug, Clone, Default)]
enum Step {
    /// Not asked yet (or not needed).
    #[default]
    Waiting,
    /// A request is out (the how-manieth).
    Asked(u32),
    /// It answered the last request.
    Answered(&'static str),
    /// It refused, with its reason.
    Refused(String),
    /// No answer: unreachable, timed out, or an answer that failed its checks.
    Failed(String),
}

#[derive(Debug, Clone, Default)]
struct Line {
    step: Step,
    requests: u32,
    at: Option<Duration>,
}

/// One co-signing started from the console: its progress per signer and, once ended, the
/// page of its result.
pub struct Job {
    id: String,
    wallet: String,
    what: &'static str,
    started: Instant,
    lines: Mutex<BTreeMap<u16, Line>>,
    done: watch::Sender<Option<Arc<(StatusCode, String)>>>,
}

impl Job {
    fn members(&self, indexes: impl IntoIterator<Item = u16>) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        for i in indexes {
            lines.entry(i).or_default();
        }
    }

    fn update(&self, index: u16, f: impl FnOnce(&mut Line)) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let line = lines.entry(index).or_default();
        f(line);
        line.at = Some(self.started.elapsed());
    }

    fn finish(&self, status: StatusCode, html: String) {
        self.done.send_replace(Some(Arc::new((status, html))));
    }
}

/// What a signer's answer means for the person watching.
fn answered_what(answer: &SignerToCoordinator) -> &'static str {
    match answer {
        SignerToCoordinator::SignCommitments { .. } => "checked the PSBT and committed",
        SignerToCoordinator::SignStatement(_) => "sent its spending statement",
        SignerToCoordinator::Preprocessed { .. } => "sent fresh nonce commitments",
        SignerToCoordinator::Prepared => "checked the PSBT (standing by)",
        SignerToCoordinator::SignedPreprocessed { .. } | SignerToCoordinator::SignShares { .. } => {
            "signed"
        }
        _ => "answered",
    }
}

impl CallObserver for Job {
    fn asked(&self, index: u16) {
        self.update(index, |l| {
            l.requests += 1;
            l.step = Step::Asked(l.requests);
        });
    }

    fn answered(&self, index: u16, answer: Result<&SignerToCoordinator, &CallError>) {
        self.update(index, |l| {
            l.step = match answer {
                Ok(SignerToCoordinator::Error { message, .. }) => Step::Refused(message.clone()),
                Ok(a) => Step::Answered(answered_what(a)),
                Err(CallError::Refused { message, .. }) => Step::Refused(message.clone()),
                Err(e) => Step::Failed(e.to_string()),
            };
        });
    }
}

struct ProgressRow {
    index: u16,
    class: &'static str,
    text: String,
    at_ms: String,
}

#[derive(Template)]
#[template(path = "signing.html")]
struct SigningPage {
    wallet: String,
    what: &'static str,
    elapsed_s: String,
    rows: Vec<ProgressRow>,
}

fn rows(job: &Job) -> Vec<ProgressRow> {
    let lines = job.lines.lock().unwrap_or_else(|p| p.into_inner());
    lines
        .iter()
        .map(|(&index, l)| {
            let (class, text) = match &l.step {
                Step::Waiting => ("waiting", "not asked yet".to_string()),
                Step::Asked(1) => ("asked", "asked, no answer yet".to_string()),
                Step::Asked(n) => ("asked", format!("asked again ({n}), no answer yet")),
                Step::Answered(what) => ("answered", (*what).to_string()),
                Step::Refused(why) => ("refused", format!("refused: {why}")),
                Step::Failed(why) => ("failed", why.clone()),
            };
            ProgressRow {
                index,
                class,
                text,
                at_ms: l
                    .at
                    .map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// A job's page: its result once it ended, else each signer's progress (reloading itself).
pub(super) async fn job_page(
    State(shared): S,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    let job = shared.jobs.get(&name, &id).ok_or_else(|| {
        ConsoleError::BadRequest(
            "no such signing here (the console keeps the last 32 and forgets them when it \
             restarts); the wallet's history shows what was sent"
                .into(),
        )
    })?;
    let mut done = job.done.subscribe();
    let _ = tokio::time::timeout(FIRST_WAIT, done.wait_for(Option::is_some)).await;
    let ended = done.borrow().clone();
    if let Some(ended) = ended {
        let (status, html) = ended.as_ref();
        return Ok((*status, Html(html.clone())).into_response());
    }
    page(&SigningPage {
        wallet: name,
        what: job.what,
        elapsed_s: format!("{:.1}", job.started.elapsed().as_secs_f64()),
        rows: rows(&job),
    })
}

/// Runs `work` on a blocking thread for `job`, stores the page it ends with, and answers
/// with a redirect to the job's page.
fn run(
    job: Arc<Job>,
    name: &str,
    work: impl FnOnce() -> Result<String, ConsoleError> + Send + 'static,
) -> Response {
    let to = format!("/w/{}/signing/{}", url_segment(name), job.id);
    tokio::spawn(async move {
        let ended = blocking(work).await;
        match ended {
            Ok(html) => job.finish(StatusCode::OK, html),
            Err(e) => {
                let (status, html) = error_page(&e);
                job.finish(status, html);
            }
        }
    });
    Redirect::to(&to).into_response()
}

/// Co-signs `psbt` with the signers of `w`, reporting each call to `job`.
fn cosign(
    shared: &Shared,
    job: &Arc<Job>,
    w: &CkmWallet,
    psbt: &mut Psbt,
) -> Result<SignReport, ConsoleError> {
    job.members(w.meta().roster.entries().iter().map(|e| e.index));
    let client = shared.client.observed(job.clone());
    Ok(tokio::runtime::Handle::current().block_on(cosign_wallet(
        &client,
        w,
        psbt,
        CosignOptions::default(),
    ))?)
}

#[derive(Deserialize)]
pub(super) struct SignForm {
    psbt: String,
    #[serde(default)]
    recipients: String,
    #[serde(default)]
    allow_high_fee: Option<String>,
}

/// Reviews the PSBT again, co-signs it with the wallet's signers and broadcasts it (as
/// `wallet send` after its confirmation), showing each signer's progress; the signers'
/// refusals come back with their reasons.
pub(super) async fn send_sign(
    State(shared): S,
    Path(name): Path<String>,
    Form(f): Form<SignForm>,
) -> Result<Response, ConsoleError> {
    let mut psbt = Psbt::from_str(f.psbt.trim())
        .map_err(|e| ConsoleError::BadRequest(format!("the PSBT does not decode: {e}")))?;
    let allow_high_fee = f.allow_high_fee.is_some();
    let job = shared.jobs.start(&name, "payment");
    let wallet = name.clone();
    let handle = job.clone();
    Ok(run(job, &name, move || {
        let sent = shared.wallets.write(&wallet, "console send", |w| {
            let recipients = parse_recipients(&f.recipients, w).unwrap_or_default();
            let review = w.review(&psbt)?;
            if !allow_high_fee {
                review.check_fee()?;
            }
            let source = chain(&shared, w)?;
            let report = cosign(&shared, &handle, w, &mut psbt)?;
            let txid = broadcast_and_record(source.as_ref(), Some(w), &report.transaction)?;
            w.keep_recipient_labels(&recipients, txid)?;
            Ok(Sent::of(wallet.clone(), txid.to_string(), report))
        })?;
        Ok(sent.render()?)
    }))
}

/// Co-signs a PSBT made elsewhere (as `psbt sign`: checked for what the signers need first),
/// showing each signer's progress, then offers it for download.
pub(super) async fn psbt_sign(
    State(shared): S,
    Path(name): Path<String>,
    Extension(Authenticated(s)): Extension<Authenticated>,
    Form(f): Form<PsbtForm>,
) -> Result<Response, ConsoleError> {
    let mut psbt = decode_psbt(&f.psbt)?;
    let job = shared.jobs.start(&name, "PSBT");
    let wallet = name.clone();
    let handle = job.clone();
    Ok(run(job, &name, move || {
        let page = shared.wallets.cosign(&wallet, "console psbt sign", |w| {
            w.check_signable(&psbt)?;
            let report = cosign(&shared, &handle, w, psbt.psbt_mut())?;
            // Signed with SIGHASH_DEFAULT/ALL: a version-2 PSBT is no longer modifiable.
            psbt.mark_signed();
            let text = w.inspect_psbt(&psbt).to_text(&wallet);
            let signed = psbt
                .to_base64()
                .map_err(|e| ConsoleError::BadRequest(format!("encoding the PSBT: {e}")))?;
            let txid = report.transaction.compute_txid().to_string();
            Ok(PsbtPage {
                csrf: s.csrf,
                wallet: wallet.clone(),
                psbt: signed,
                inspection: Some(text),
                signed: Some(Sent::of(String::new(), txid, report)),
            })
        })?;
        Ok(page.render()?)
    }))
}
