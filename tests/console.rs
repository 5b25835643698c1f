//! `ckm console`'s gate without a wallet or a node (issue 28): the real binary on an empty
//! home, over plain HTTP on loopback and over HTTPS off loopback (its self-signed
//! certificate). A request without the session cookie, a POST without the CSRF token and a
//! foreign `Host` are refused; the token gives an `HttpOnly; SameSite=Strict` cookie
//! (`Secure` over HTTPS); a POST (a form or a file upload) with the session's CSRF token
//! passes the gate.
//! The browser test on a regtest wallet is tests/regtest_console.rs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use anyhow::{anyhow, ensure, Context, Result};

struct Console {
    child: Child,
    url: String,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(home: &std::path::Path, args: &[&str]) -> Result<Console> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ckm"))
        .arg("--home")
        .arg(home)
        .arg("console")
        .args(args)
        .env_remove("CKM_HOME")
        .env_remove("CKM_ELECTRUM")
        .env_remove("CKM_BITCOIND")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting ckm console")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    Ok(Console {
        child,
        url: line.trim().to_string(),
    })
}

fn client() -> Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .build()?)
}

/// The gate, through `url` (the printed login URL); `secure`: served over HTTPS.
fn check_gate(url: &str, secure: bool) -> Result<()> {
    let base = url.split("/login").next().unwrap_or_default().to_string();
    let http = client()?;
    let r = http.get(format!("{base}/")).send()?;
    ensure!(r.status() == 401, "no cookie: {}", r.status());
    for h in [
        "content-security-policy",
        "x-frame-options",
        "referrer-policy",
    ] {
        ensure!(r.headers().contains_key(h), "no {h}");
    }
    let r = http.get(format!("{base}/login?token=nope")).send()?;
    ensure!(r.status() == 401 && !r.headers().contains_key("set-cookie"));
    let r = http.get(url).send()?;
    ensure!(r.status() == 303, "login: {}", r.status());
    let set = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("no cookie"))?
        .to_string();
    ensure!(
        set.contains("; HttpOnly") && set.contains("; SameSite=Strict"),
        "{set}"
    );
    ensure!(set.contains("; Secure") == secure, "{set}");
    let cookie = set.split(';').next().unwrap_or_default().to_string();
    // A form page gives the session's CSRF token.
    let page = http
        .get(format!("{base}/w/none/receive"))
        .header("cookie", &cookie)
        .send()?
        .text()?;
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).ok_or_else(|| anyhow!("no CSRF field"))? + marker.len();
    let csrf = &page[start..start + 64];
    let post = |form: &[(&str, &str)]| -> Result<u16> {
        Ok(http
            .post(format!("{base}/w/none/sync"))
            .header("cookie", &cookie)
            .form(form)
            .send()?
            .status()
            .as_u16())
    };
    ensure!(post(&[])? == 403, "POST without a CSRF token");
    ensure!(
        post(&[("csrf", &"0".repeat(64))])? == 403,
        "POST with another token"
    );
    // Through the gate: the handler answers (no such wallet).
    ensure!(
        post(&[("csrf", csrf)])? == 404,
        "POST with the session's token"
    );
    // A file upload (multipart/form-data) passes the gate only with the session's token.
    let upload = |token: &str| -> Result<(u16, String)> {
        let body = format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{token}\r\n\
             --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.psbt\"\r\n\
             Content-Type: application/octet-stream\r\n\r\nnot a psbt\r\n--XyZ--\r\n"
        );
        let r = http
            .post(format!("{base}/w/none/psbt/upload"))
            .header("cookie", &cookie)
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body(body)
            .send()?;
        Ok((r.status().as_u16(), r.text()?))
    };
    ensure!(
        upload(&"0".repeat(64))?.0 == 403,
        "upload with another token"
    );
    let (status, page) = upload(csrf)?;
    ensure!(
        status == 400 && page.contains("not a PSBT"),
        "upload with the session's token: {status} {page}"
    );
    let r = http
        .get(format!("{base}/"))
        .header("host", "rebound.example")
        .header("cookie", &cookie)
        .send()?;
    ensure!(r.status() == 421, "foreign Host: {}", r.status());
    Ok(())
}

#[test]
fn loopback_http_gate() -> Result<()> {
    let home = tempfile::tempdir()?;
    let c = start(home.path(), &["--listen", "127.0.0.1:0"])?;
    ensure!(c.url.starts_with("http://127.0.0.1:"), "{}", c.url);
    check_gate(&c.url, false)
}

#[test]
fn off_loopback_is_https_only_and_needs_a_public_host() -> Result<()> {
    let home = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_ckm"))
        .arg("--home")
        .arg(home.path())
        .args(["console", "--listen", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .output()?;
    ensure!(!out.status.success());
    ensure!(String::from_utf8_lossy(&out.stderr).contains("--public-host"));
    let c = start(
        home.path(),
        &["--listen", "0.0.0.0:0", "--public-host", "localhost"],
    )?;
    ensure!(c.url.starts_with("https://localhost:"), "{}", c.url);
    ensure!(home.path().join("console-tls/tls-cert.der").exists());
    check_gate(&c.url, true)
}
