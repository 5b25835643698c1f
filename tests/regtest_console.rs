//! The web console (issue 28) in a real browser: Debian's chromium driven through
//! chromium-driver (WebDriver, with fantoccini) against `ckm console` on a regtest wallet with
//! three real `ckm signer serve` processes, bitcoind and electrs. Logs in with the printed
//! token, reads the balance, pays from the send page (review, co-sign, broadcast) and checks
//! that bitcoind mines the payment, labels it in the history, freezes a coin, co-signs a PSBT
//! made elsewhere on the PSBT page (pasted, then uploaded as a binary file; its progress shown
//! per signer while two signers are held stopped; broadcast afterwards), shows the signers'
//! refusal of a
//! payment over their daily limit with the rule they name; and checks over
//! plain HTTP that a request without the session cookie, a POST without the CSRF token and a
//! wrong `Host` header are refused. Takes the screenshots of `docs/console.md`.
//!
//! Needs `--features regtest`, and `chromium` + `chromium-driver` (`CHROMIUM`,
//! `CHROMEDRIVER` override their paths).
#![cfg(feature = "regtest")]

#[path = "common/chain.rs"]
mod chain;
#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;
#[path = "common/testenv.rs"]
mod testenv;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use chain::{address, sync};
use cluster::{ckm_cmd, ckm_json, foreign_address, Cluster};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use testenv::TestEnv;

const WAIT: Duration = Duration::from_secs(60);

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ckm console` on a free loopback port: the process and the login URL it printed.
fn start_console(c: &Cluster, env: &TestEnv) -> Result<(Proc, String)> {
    let log = std::fs::File::create(c.dir.path().join("console.log"))?;
    let mut child = ckm_cmd(&c.coord)
        .args(["console", "--listen", "127.0.0.1:0", "--probe-every", "1"])
        .args(["--electrum", &env.electrum_url()])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting ckm console")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let proc = Proc(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line.trim().to_string();
    ensure!(
        url.starts_with("http://127.0.0.1:") && url.contains("/login?token="),
        "ckm console printed {line:?}"
    );
    Ok((proc, url))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// chromedriver on a free port, ready for sessions.
fn start_chromedriver() -> Result<(Proc, u16)> {
    let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    let port = free_port()?;
    let child = Command::new(&bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {bin} (apt-get install chromium-driver)"))?;
    let proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            Instant::now() < deadline,
            "chromedriver did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((proc, port))
}

async fn browser(port: u16, profile: &Path) -> Result<Client> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--window-size=1400,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .context("opening a chromium session")
}

async fn text(b: &Client, css: &str) -> Result<String> {
    match b.find(Locator::Css(css)).await {
        Ok(e) => Ok(e.text().await?),
        Err(e) => {
            // Say what the page showed instead (an error page names the error).
            let shown = match b.find(Locator::Css("main")).await {
                Ok(main) => main.text().await.unwrap_or_default(),
                Err(_) => b.source().await.unwrap_or_default(),
            };
            Err(anyhow!("finding {css}: {e}; the page shows: {shown}"))
        }
    }
}

/// Clicks a submit button and waits until the browser has left the page.
async fn submit(b: &Client, button: fantoccini::elements::Element) -> Result<()> {
    let old = b.find(Locator::Css("html")).await?;
    button.click().await?;
    let deadline = Instant::now() + WAIT;
    while old.tag_name().await.is_ok() {
        ensure!(Instant::now() < deadline, "the page did not change");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Takes a screenshot: into `docs/console/` (the pictures of `docs/console.md`) when
/// `CKM_UPDATE_SCREENSHOTS=1`, else under `target/console-screenshots/` so that a test run
/// leaves the work tree as it was.
async fn screenshot(b: &Client, name: &str) -> Result<()> {
    let png = b.screenshot().await?;
    ensure!(png.starts_with(b"\x89PNG"), "not a PNG");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = if std::env::var_os("CKM_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        root.join("docs/console")
    } else {
        root.join("target/console-screenshots")
    };
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), png)?;
    Ok(())
}

/// Waits until the page (which may reload itself, as a signing's progress page does) shows
/// `css`, and returns its text; an error page ends the wait early with its message.
async fn wait_for(b: &Client, css: &str) -> Result<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(e) = b.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                return Ok(t);
            }
        }
        if css != "#error" {
            if let Ok(e) = b.find(Locator::Css("#error")).await {
                bail!("waiting for {css}, the page shows: {}", e.text().await?);
            }
        }
        ensure!(Instant::now() < deadline, "{css} never showed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops (`SIGSTOP`) or continues (`SIGCONT`) a signer process: a stopped signer accepts
/// connections (the kernel does) but answers nothing.
fn signal(pid: Option<u32>, sig: &str) -> Result<()> {
    let pid = pid.ok_or_else(|| anyhow!("signer not running"))?;
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()?
        .success();
    ensure!(ok, "kill {sig} {pid} failed");
    Ok(())
}

/// The refusals, over plain HTTP: no cookie, no CSRF token, a foreign `Host`.
async fn refusals(base: &str, url: &str, coin: &str) -> Result<()> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    // No cookie: 401 on every page, no wallet data.
    for path in ["/", "/w/vault/history", "/w/vault/coins", "/w/vault/send"] {
        let r = http.get(format!("{base}{path}")).send().await?;
        ensure!(r.status() == 401, "{path} without a cookie: {}", r.status());
        for h in [
            "content-security-policy",
            "x-frame-options",
            "referrer-policy",
        ] {
            ensure!(r.headers().contains_key(h), "{path}: no {h}");
        }
        let body = r.text().await?;
        ensure!(!body.contains("vault") && !body.contains(coin), "{body}");
    }
    // A wrong token gets no session.
    let r = http.get(format!("{base}/login?token=00")).send().await?;
    ensure!(r.status() == 401 && !r.headers().contains_key("set-cookie"));
    // The token gets one: HttpOnly, SameSite=Strict.
    let r = http.get(url).send().await?;
    ensure!(r.status() == 303, "login: {}", r.status());
    let set = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("no session cookie"))?
        .to_string();
    ensure!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap_or_default().to_string();
    let page = http
        .get(format!("{base}/w/vault/coins"))
        .header("cookie", &cookie)
        .send()
        .await?;
    ensure!(page.status() == 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()?
        .to_string();
    ensure!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    ensure!(page.headers()["x-frame-options"] == "DENY");
    ensure!(page.headers()["referrer-policy"] == "no-referrer");
    ensure!(
        page.text().await?.contains(coin),
        "the coins page lists {coin}"
    );
    // A POST without the CSRF token, then with a wrong one: refused, the coin stays unfrozen.
    for form in [
        vec![("outpoint", coin), ("freeze", "1")],
        vec![("outpoint", coin), ("freeze", "1"), ("csrf", "00")],
    ] {
        let r = http
            .post(format!("{base}/w/vault/freeze"))
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await?;
        ensure!(r.status() == 403, "freeze without CSRF: {}", r.status());
    }
    // Another Host (DNS rebinding): refused before anything else, even with the cookie.
    let r = http
        .get(format!("{base}/"))
        .header("host", "attacker.example:80")
        .header("cookie", &cookie)
        .send()
        .await?;
    ensure!(r.status() == 421, "foreign Host: {}", r.status());
    ensure!(!r.text().await?.contains("vault"));
    Ok(())
}

fn coins(c: &Cluster) -> Result<Vec<Value>> {
    let v = ckm_json(&c.coord, &["wallet", "coins"])?;
    v.as_array().cloned().ok_or_else(|| anyhow!("{v}"))
}

fn is_frozen(c: &Cluster, outpoint: &str) -> Result<bool> {
    let coin = coins(c)?
        .into_iter()
        .find(|x| x["outpoint"].as_str() == Some(outpoint))
        .ok_or_else(|| anyhow!("no coin {outpoint}"))?;
    Ok(coin["frozen"].as_bool() == Some(true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_chromium_pays_labels_freezes_and_refuses_strangers() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    for sats in [1_000_000u64, 700_000] {
        let (addr, _) = address(&c)?;
        env.fund(&addr, sats)?;
    }
    sync(&c, &env)?;
    let before = coins(&c)?;
    ensure!(before.len() == 2, "{before:?}");
    let first_coin = before[0]["outpoint"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let (_console, url) = start_console(&c, &env)?;
    let base = url.split("/login").next().unwrap_or_default().to_string();
    refusals(&base, &url, &first_coin).await?;
    ensure!(!is_frozen(&c, &first_coin)?, "a refused POST froze a coin");

    let (_driver, port) = start_chromedriver()?;
    let profile = tempfile::tempdir()?;
    let b = browser(port, profile.path()).await?;
    let outcome = drive(&b, &c, &env, &base, &url).await;
    let _ = b.close().await;
    outcome
}

async fn drive(b: &Client, c: &Cluster, env: &TestEnv, base: &str, url: &str) -> Result<()> {
    // Log in with the token: the overview shows the balance.
    b.goto(url).await?;
    ensure!(
        b.current_url().await?.path() == "/",
        "login did not land on the overview"
    );
    let row = "tr[data-wallet='vault']";
    ensure!(text(b, &format!("{row} td.confirmed")).await? == "1700000");
    ensure!(text(b, &format!("{row} td.pending")).await? == "0");
    ensure!(text(b, &format!("{row} td.epoch")).await? == "0");
    screenshot(b, "overview.png").await?;

    // Pay from the send page: review, then co-sign and broadcast.
    let to = foreign_address().to_string();
    b.goto(&format!("{base}/w/vault/send")).await?;
    b.find(Locator::Id("recipients"))
        .await?
        .send_keys(&format!("{to}:150000"))
        .await?;
    b.find(Locator::Id("fee_rate"))
        .await?
        .send_keys("2")
        .await?;
    submit(b, b.find(Locator::Id("review")).await?).await?;
    let pay = text(b, "#review tr.pay").await?;
    ensure!(pay.contains(&to) && pay.contains("150000"), "review: {pay}");
    let fee: u64 = text(b, "#fee").await?.parse()?;
    ensure!(fee > 0 && fee < 2_000, "fee {fee}");
    ensure!(
        !text(b, "#review tr.change").await?.is_empty(),
        "no change line"
    );
    screenshot(b, "send-review.png").await?;
    submit(b, b.find(Locator::Id("sign")).await?).await?;
    let txid = wait_for(b, "#txid")
        .await
        .context("the send did not complete")?;
    let signed = b.find_all(Locator::Css("#cosigners tr.signed")).await?;
    ensure!(signed.len() == 2, "{} signers signed", signed.len());

    // bitcoind has it, mines it, and the console sees it confirmed after a sync (a button).
    let mempool = env.rpc("getrawmempool", json!([]))?;
    ensure!(
        mempool
            .as_array()
            .is_some_and(|m| m.iter().any(|t| t == &json!(txid))),
        "{txid} not in the mempool: {mempool}"
    );
    let tx = env.get_raw_transaction(&txid)?;
    ensure!(
        tx["vout"].as_array().is_some_and(|outs| outs
            .iter()
            .any(|o| { o["scriptPubKey"]["address"] == json!(to) && o["value"] == json!(0.0015) })),
        "{tx}"
    );
    env.mine_blocks(1, None)?;
    let tip = env.block_count()?;
    env.wait_until_electrum_height(tip, WAIT)?;
    let tx = env.get_raw_transaction(&txid)?;
    ensure!(tx["confirmations"].as_u64() >= Some(1), "not mined: {tx}");
    let deadline = Instant::now() + WAIT;
    let trow = format!("#history tr[data-txid='{txid}']");
    loop {
        b.goto(base).await?;
        submit(b, b.find(Locator::Css("button.sync")).await?).await?;
        b.goto(&format!("{base}/w/vault/history")).await?;
        if text(b, &format!("{trow} td.state"))
            .await?
            .starts_with("confirmed")
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the payment never showed confirmed");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Label it in the history.
    let field = b.find(Locator::Css(&format!("{trow} input.label"))).await?;
    field.send_keys("rent, March").await?;
    submit(b, b.find(Locator::Css(&format!("{trow} button"))).await?).await?;
    let shown = b
        .find(Locator::Css(&format!("{trow} input.label")))
        .await?
        .prop("value")
        .await?;
    ensure!(shown.as_deref() == Some("rent, March"), "{shown:?}");
    let history = ckm_json(&c.coord, &["wallet", "history"])?;
    let entry = history
        .as_array()
        .or_else(|| history["transactions"].as_array())
        .and_then(|rows| rows.iter().find(|r| r["txid"] == json!(txid)).cloned())
        .ok_or_else(|| anyhow!("{txid} not in {history}"))?;
    ensure!(entry["label"] == json!("rent, March"), "{entry}");

    // Freeze a coin.
    b.goto(&format!("{base}/w/vault/coins")).await?;
    let button = b
        .find(Locator::Css("#coins button.freeze"))
        .await
        .context("no coin to freeze")?;
    let coin_row = b
        .find(Locator::Css("#coins tr:has(button.freeze)"))
        .await?
        .attr("data-outpoint")
        .await?
        .ok_or_else(|| anyhow!("no outpoint"))?;
    ensure!(!is_frozen(c, &coin_row)?);
    submit(b, button).await?;
    let state = text(b, &format!("#coins tr[data-outpoint='{coin_row}'] .frozen")).await?;
    ensure!(state == "frozen", "{state}");
    ensure!(
        is_frozen(c, &coin_row)?,
        "the CLI does not see {coin_row} frozen"
    );

    // The PSBT page: a PSBT made elsewhere (here by the CLI) is inspected, co-signed, and
    // the signed PSBT it gives back broadcasts.
    let to2 = foreign_address().to_string();
    let unsigned = c.dir.path().join("elsewhere.psbt");
    ckm_json(
        &c.coord,
        &[
            "psbt",
            "create",
            "--to",
            &format!("{to2}:60000"),
            "--fee-rate",
            "2",
            "--out",
            unsigned.to_str().ok_or_else(|| anyhow!("path"))?,
        ],
    )?;
    let text64 = std::fs::read_to_string(&unsigned)?;
    b.goto(&format!("{base}/w/vault/psbt")).await?;
    b.find(Locator::Id("psbt"))
        .await?
        .send_keys(text64.trim())
        .await?;
    submit(b, b.find(Locator::Id("inspect")).await?).await?;
    let view = text(b, "#inspection").await?;
    ensure!(
        view.contains(&to2) && view.contains("60000") && view.contains("unsigned"),
        "{view}"
    );

    // The same PSBT uploaded as a binary file: the same view.
    let binary = c.dir.path().join("elsewhere-binary.psbt");
    {
        use bitcoin::base64::prelude::{Engine as _, BASE64_STANDARD};
        std::fs::write(&binary, BASE64_STANDARD.decode(text64.trim())?)?;
    }
    b.goto(&format!("{base}/w/vault/psbt")).await?;
    b.find(Locator::Id("psbt-file"))
        .await?
        .send_keys(binary.to_str().ok_or_else(|| anyhow!("path"))?)
        .await?;
    submit(b, b.find(Locator::Id("upload")).await?).await?;
    ensure!(
        text(b, "#inspection").await? == view,
        "the uploaded file shows otherwise"
    );

    // Co-signing shows each signer's progress: with signers 2 and 3 stopped, the page shows
    // them asked and unanswered (reloading itself), then the result once they continue.
    signal(c.signers[1].pid(), "-STOP")?;
    signal(c.signers[2].pid(), "-STOP")?;
    let held = async {
        submit(b, b.find(Locator::Id("psbt-sign")).await?).await?;
        let waiting = wait_for(b, "#progress tr[data-signer='2'].asked td.state").await?;
        ensure!(waiting.contains("no answer yet"), "{waiting}");
        ensure!(
            b.find_all(Locator::Css("#progress tbody tr")).await?.len() == 3,
            "not every signer shown"
        );
        screenshot(b, "signing-progress.png").await?;
        // Meanwhile the wallet's lock is held shared, as `ckm psbt sign` holds it: another
        // signing may take it too, a spend or a transition may not.
        use ckm::wallet::lock::{Access, WalletLock};
        let lock = WalletLock::path_for(&c.coord.join("wallets/vault.sqlite"));
        let quick = Duration::from_millis(50);
        let busy = WalletLock::acquire(&lock, "vault", "test", Access::Exclusive, quick, |_| {})
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        ensure!(
            busy.contains("console psbt sign"),
            "exclusive lock: {busy:?}"
        );
        let shared = WalletLock::acquire(&lock, "vault", "test", Access::Shared, quick, |_| {});
        ensure!(shared.is_ok(), "a second signing was kept out: {shared:?}");
        Ok(())
    }
    .await;
    signal(c.signers[1].pid(), "-CONT")?;
    signal(c.signers[2].pid(), "-CONT")?;
    held?;
    wait_for(b, "#signed-txid").await?;
    let signed_by = b.find_all(Locator::Css("#cosigners tr.signed")).await?;
    ensure!(
        signed_by.len() == 2,
        "{} signers signed the PSBT",
        signed_by.len()
    );
    let signed64 = b
        .find(Locator::Css(
            "form[action$='/psbt/download'] input[name='psbt']",
        ))
        .await?
        .attr("value")
        .await?
        .ok_or_else(|| anyhow!("no signed PSBT"))?;
    let signed = c.dir.path().join("signed.psbt");
    std::fs::write(&signed, &signed64)?;
    let signed_path = signed.to_str().ok_or_else(|| anyhow!("path"))?;
    let inspected = ckm_json(&c.coord, &["psbt", "inspect", signed_path])?;
    ensure!(inspected["state"] == json!("finalized"), "{inspected}");
    let sent = ckm_json(
        &c.coord,
        &[
            "psbt",
            "broadcast",
            signed_path,
            "--electrum",
            &env.electrum_url(),
        ],
    )?;
    let txid2 = sent["txid"].as_str().unwrap_or_default().to_string();
    ensure!(text(b, "#signed-txid").await? == txid2, "{sent}");
    let mempool = env.rpc("getrawmempool", json!([]))?;
    ensure!(
        mempool
            .as_array()
            .is_some_and(|m| m.iter().any(|t| t == &json!(txid2))),
        "{txid2} not in the mempool"
    );

    // Receive: a new address with its BIP-0021 URI and QR code.
    b.goto(&format!("{base}/w/vault/receive")).await?;
    b.find(Locator::Css("input[name='amount_sats']"))
        .await?
        .send_keys("25000")
        .await?;
    b.find(Locator::Css("input[name='label']"))
        .await?
        .send_keys("invoice 7")
        .await?;
    submit(b, b.find(Locator::Id("reveal")).await?).await?;
    let uri = text(b, "#uri").await?;
    let address = text(b, "#address").await?;
    ensure!(
        uri == format!("bitcoin:{address}?amount=0.00025&label=invoice%207"),
        "{uri}"
    );
    ensure!(b.find(Locator::Css(".qr svg")).await.is_ok(), "no QR code");

    // Signers: probed in the background; each answers in epoch 0.
    let deadline = Instant::now() + WAIT;
    loop {
        b.goto(&format!("{base}/w/vault/signers")).await?;
        let ok = b.find_all(Locator::Css("#signers span.ok")).await?.len();
        if ok == 3 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "only {ok} signers shown reachable"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let page = b.source().await?;
    ensure!(page.contains("s ago"), "no time of last answer");

    // A payment the signers refuse: the page names the rule they invoke, nothing is sent.
    c.set_daily_limit(100_000)?;
    let before = env.rpc("getrawmempool", json!([]))?;
    b.goto(&format!("{base}/w/vault/send")).await?;
    b.find(Locator::Id("recipients"))
        .await?
        .send_keys(&format!("{}:50000", foreign_address()))
        .await?;
    b.find(Locator::Id("fee_rate"))
        .await?
        .send_keys("2")
        .await?;
    submit(b, b.find(Locator::Id("review")).await?).await?;
    submit(b, b.find(Locator::Id("sign")).await?).await?;
    let refusal = wait_for(b, "#error").await?;
    ensure!(
        refusal.contains("co-signing failed") && refusal.contains("daily-limit-sats"),
        "{refusal}"
    );
    ensure!(
        env.rpc("getrawmempool", json!([]))? == before,
        "a refused payment reached the mempool"
    );
    Ok(())
}
