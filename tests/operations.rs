//! Running secret servers in production, with real `ckm signer serve` processes:
//!
//! 1. TLS end to end: a DKG and a co-signed PSBT through pinned HTTPS; a wrong pin, an
//!    `http://` URL to a TLS signer and an `https://` URL to a plain one are refused with
//!    messages that name the pins or the scheme; after `signer tls --rotate` and a restart
//!    the old pin is refused naming both fingerprints, `wallet update-pin` takes the new one
//!    (checked against the signer's signed statement) and signing works again.
//! 2. A signer started with nothing but `--config FILE` (passphrase file, allow-list, JSON
//!    logs from the file) takes part in a DKG and co-signs.
//! 3. Bad configuration files are refused by `signer config check` and by `signer serve`
//!    with the file, line and reason; the example configuration checks.
//! 4. SIGHUP re-reads the allow-list; a broken file on SIGHUP keeps the running settings.
//! 5. `/healthz` answers while a signing load runs.
//! 6. `/metrics` parses as Prometheus text and its counters move by the expected amounts
//!    after signed requests, unauthenticated requests and a refusal by policy; no wallet
//!    name appears in it.
//! 7. `contrib/systemd/ckm-signer.service` passes `systemd-analyze verify` (where the tool
//!    exists) and has the hardening it promises.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ckm::identity::IdentityKey;
use ckm::message::CoordinatorToSigner;
use ckm::net::client::Client;
use cluster::*;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A plain HTTP GET on loopback; returns (status, body).
fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not HTTP: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The error text of a failed `ckm --json …`.
fn failure(out: &std::process::Output) -> Result<String> {
    ensure!(
        !out.status.success(),
        "expected a failure, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    json_error(out)
}

fn coordinator_key(coord: &Path) -> Result<IdentityKey> {
    let text = std::fs::read_to_string(coord.join("identity.key"))?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes)?;
    Ok(IdentityKey::from_secret_bytes(&bytes)?)
}

/// Starts `n` TLS signers trusting the cluster's coordinator in place of its plain ones.
fn tls_cluster(n: usize) -> Result<Cluster> {
    let mut c = Cluster::start(n)?;
    for s in &mut c.signers {
        s.extra = vec!["--tls".into()];
        s.restart()?;
        ensure!(s.url.starts_with("https://"), "{}", s.url);
        ensure!(s.tls_sha256.is_some());
    }
    Ok(c)
}

// ---------------------------------------------------------------------------------------
// 1. TLS end to end
// ---------------------------------------------------------------------------------------

#[test]
fn pinned_https_dkg_signing_rotation_and_clear_refusals() -> Result<()> {
    let mut c = tls_cluster(3)?;
    // DKG through pinned HTTPS.
    let args = c.create_args(WALLET, 2);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.created = ckm_json(&c.coord, &args).with_context(|| c.logs())?;
    let roster = CkmWalletRoster::of(&c)?;
    ensure!(roster
        .iter()
        .all(|(url, pin)| url.starts_with("https://") && pin.is_some()));

    // Co-signing through pinned HTTPS, checked by libbitcoinconsensus.
    let p = fund_and_build(&c)?;
    let input = c.write_psbt("pay.psbt", &p.psbt)?;
    let out = c.dir.path().join("pay.signed.psbt");
    let report = c.sign_ok(&input, &out, &[])?;
    let tx = check_signed(&out, &p)?;
    check_report(&c, &report, &tx)?;

    // A wrong pin is refused, naming the pin expected and the one presented.
    let s1 = &c.signers[0];
    let real = s1.tls_sha256.clone().context("no pin")?;
    let wrong = "ab".repeat(32);
    let mut bad = c.create_args("wrongpin", 2);
    let spec = s1.spec();
    for a in &mut bad {
        if *a == spec {
            *a = format!("{}#{}@{wrong}", s1.url, s1.identity);
        }
    }
    let mut json_args = vec!["--json".to_string()];
    json_args.extend(bad);
    let json_args: Vec<&str> = json_args.iter().map(String::as_str).collect();
    let err = failure(&ckm(&c.coord, &json_args)?)?;
    ensure!(
        err.contains(&wrong) && err.contains(&real),
        "wrong pin: {err}"
    );
    ensure!(err.contains("pins"), "wrong pin: {err}");

    // http:// to a TLS signer, https:// to a plain one: the scheme is named.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = Client::new(coordinator_key(&c.coord)?, Duration::from_secs(10))?;
    let plain_url = s1.url.replacen("https://", "http://", 1);
    let entry: ckm::keys::RosterEntry = serde_json::from_value(serde_json::json!({
        "index": 1, "url": plain_url, "identity": s1.identity.to_string(),
    }))?;
    let e = rt
        .block_on(client.call(&entry, &CoordinatorToSigner::Status))
        .err()
        .context("plain HTTP to a TLS signer succeeded")?
        .to_string();
    ensure!(
        e.contains("speaks HTTPS") && e.contains("https://"),
        "http to TLS: {e}"
    );
    let homes = init_all(&c.dir.path().join("plain"), 1)?;
    let plain = SignerProc::start(&homes[0], &c.coord_id)?;
    let entry: ckm::keys::RosterEntry = serde_json::from_value(serde_json::json!({
        "index": 1,
        "url": plain.url.replacen("http://", "https://", 1),
        "identity": plain.identity.to_string(),
        "tls_sha256": wrong,
    }))?;
    let e = rt
        .block_on(client.call(&entry, &CoordinatorToSigner::Status))
        .err()
        .context("HTTPS to a plain signer succeeded")?
        .to_string();
    ensure!(
        e.contains("plain HTTP") && e.contains("http://"),
        "https to plain: {e}"
    );
    drop(plain);

    // Rotation: signer 1 makes a new certificate and restarts on the same port.
    let rotated = ckm_json(&c.signers[0].home, &["signer", "tls", "--rotate"])?;
    let new_pin = json_str(&rotated, "tls_sha256")?.to_string();
    ensure!(json_str(&rotated, "previous_tls_sha256")? == real);
    ensure!(new_pin != real);
    c.restart_signer(0, Kind::Honest)?;
    ensure!(c.signers[0].tls_sha256.as_deref() == Some(new_pin.as_str()));
    // With signer 3 down, signing needs signer 1, whose new certificate is refused.
    c.signers[2].kill();
    let out2 = c.dir.path().join("pay2.signed.psbt");
    let res = c.sign(&input, &out2, &["--timeout", "10"])?;
    let err = failure(&res)?;
    ensure!(
        err.contains(&real) && err.contains(&new_pin) && err.contains("update-pin"),
        "rotated but not updated: {err}"
    );
    ensure!(!out2.exists());
    // The coordinator takes the new pin on the signer's signed word ...
    let updated = ckm_json(&c.coord, &["wallet", "update-pin", "--wallet", WALLET])?;
    let rows = updated.as_array().context("not an array")?;
    let changed: Vec<&serde_json::Value> = rows.iter().filter(|r| r["updated"] == true).collect();
    ensure!(changed.len() == 1, "{updated}");
    ensure!(
        changed[0]["index"] == 1 && changed[0]["tls_sha256"] == new_pin.as_str(),
        "{updated}"
    );
    ensure!(
        changed[0]["previous_tls_sha256"] == real.as_str(),
        "{updated}"
    );
    // ... and signing works again.
    let report = c.sign_ok(&input, &out2, &["--timeout", "10"])?;
    let tx = check_signed(&out2, &p)?;
    ensure!(check_report(&c, &report, &tx)?.contains(&1));
    Ok(())
}

/// (url, pin) of each roster entry of the cluster's wallet.
struct CkmWalletRoster;
impl CkmWalletRoster {
    fn of(c: &Cluster) -> Result<Vec<(String, Option<String>)>> {
        let w = ckm::wallet::CkmWallet::load(&c.wallet_path())?;
        Ok(w.meta()
            .roster
            .entries()
            .iter()
            .map(|e| (e.url.clone(), e.tls_sha256.map(|p| p.to_string())))
            .collect())
    }
}

#[test]
fn update_pin_refuses_a_statement_from_another_identity() -> Result<()> {
    // Signer 2's home serves signer 1's address after a swap: its statement is signed by
    // another identity than the roster's, so the pin must not change.
    let mut c = tls_cluster(2)?;
    let args = c.create_args(WALLET, 2);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.created = ckm_json(&c.coord, &args)?;
    let before = CkmWalletRoster::of(&c)?;
    // Point the roster's entry 1 at signer 2's address (as a hijacked address would).
    {
        let mut w = ckm::wallet::CkmWallet::load(&c.wallet_path())?;
        let mut meta = w.meta().clone();
        let pin = meta.roster.get(1).context("no signer 1")?.tls_sha256;
        meta.roster.set_endpoint(1, c.signers[1].url.clone(), pin);
        w.set_meta(meta)?;
    }
    let out = ckm(
        &c.coord,
        &["--json", "wallet", "update-pin", "--signer", "1"],
    )?;
    let err = failure(&out)?;
    ensure!(err.contains("refusing to change the pin"), "{err}");
    let after = CkmWalletRoster::of(&c)?;
    ensure!(after[0].1 == before[0].1, "the pin changed");
    c.signers[0].kill();
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. A signer from a configuration file only
// ---------------------------------------------------------------------------------------

fn write(path: &Path, text: &str) -> Result<PathBuf> {
    std::fs::write(path, text)?;
    Ok(path.to_path_buf())
}

#[test]
fn signer_from_config_only_joins_a_dkg_and_cosigns() -> Result<()> {
    let mut c = Cluster::start(3)?;
    // Signer 1 again, from a file: passphrase, allow-list and JSON logs all from it.
    let home = c.signers[0].home.clone();
    c.signers[0].stop()?;
    let dir = c.dir.path().join("etc");
    std::fs::create_dir_all(&dir)?;
    write(&dir.join("passphrase"), &format!("{PASSPHRASE}\n"))?;
    let peers: Vec<String> = c.signers[1..]
        .iter()
        .map(|s| format!("\"{}\"", s.identity))
        .collect();
    let config = write(
        &dir.join("signer.toml"),
        &format!(
            "listen = \"127.0.0.1:0\"\nallow_coordinators = [\"{}\"]\nallow_peers = [{}]\n\
             passphrase_file = \"passphrase\"\nlog_format = \"json\"\n\n[limits]\nmax_connections = 64\n",
            c.coord_id,
            peers.join(", ")
        ),
    )?;
    let checked = ckm_json(&home, &["signer", "config", "check", path_str(&config)?])?;
    ensure!(checked["limits"]["max_connections"] == 64, "{checked}");
    let proc = SignerProc::start_config(&home, &config)?;
    c.signers[0] = proc;
    let args = c.create_args(WALLET, 2);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.created = ckm_json(&c.coord, &args).with_context(|| c.logs())?;
    // Co-sign with signers 1 and 2 (3 is stopped), so signer 1 must take part.
    c.signers[2].stop()?;
    let p = fund_and_build(&c)?;
    let input = c.write_psbt("pay.psbt", &p.psbt)?;
    let out = c.dir.path().join("pay.signed.psbt");
    let report = c.sign_ok(&input, &out, &[])?;
    let tx = check_signed(&out, &p)?;
    ensure!(check_report(&c, &report, &tx)? == vec![1, 2]);
    // Its log is one JSON object per line with the documented fields.
    let log = c.signers[0].log_text();
    let mut events = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        ensure!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        ensure!(
            v["message"].is_string() && v["target"].is_string(),
            "{line}"
        );
        events += 1;
    }
    ensure!(events >= 3, "only {events} log lines:\n{log}");
    // Signed in one round (nonces preprocessed on the first request).
    ensure!(log.contains("\"message\":\"signed in one round\""), "{log}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. Bad configuration files
// ---------------------------------------------------------------------------------------

#[test]
fn bad_config_files_are_refused_with_line_and_reason() -> Result<()> {
    let c = Cluster::start(0)?;
    let dir = c.dir.path();
    let homes = init_all(dir, 1)?;
    let key = c.coord_id.clone();
    let cases: Vec<(&str, String, usize, &str)> = vec![
        ("typo", format!("allow_coordinators = [\"{key}\"]\nlisten_addr = \"127.0.0.1:0\"\n"), 2, "unknown field `listen_addr`"),
        ("badkey", format!("allow_coordinators = [\n  \"{key}\",\n  \"02abc\",\n]\n"), 3, "not an identity key"),
        ("badaddr", format!("listen = \"localhost:7000\"\nallow_coordinators = [\"{key}\"]\n"), 1, "not an address"),
        ("tlsboth", format!("allow_coordinators = [\"{key}\"]\ntls = true\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n"), 3, "not both"),
        ("limits", format!("allow_coordinators = [\"{key}\"]\n\n[limits]\nmax_in_flight = 2\nmax_in_flight_per_coordinator = 3\n"), 5, "cannot be above"),
        ("syntax", format!("allow_coordinators = [\"{key}\"\n"), 1, ""),
    ];
    for (name, text, line, reason) in &cases {
        let file = write(&dir.join(format!("{name}.toml")), text)?;
        let file_s = path_str(&file)?;
        let at = format!("{file_s}:{line}:");
        for args in [
            vec!["--json", "signer", "config", "check", file_s],
            vec!["--json", "signer", "serve", "--config", file_s],
        ] {
            let out = ckm(&homes[0], &args)?;
            let err = failure(&out)?;
            ensure!(err.contains(&at), "{name} {args:?}: expected {at} in {err}");
            ensure!(
                err.contains(reason),
                "{name} {args:?}: expected {reason:?} in {err}"
            );
            ensure!(
                out.stdout.is_empty(),
                "{name} {args:?}: printed {:?}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    // The example checks, and says what it would run with.
    let example = ckm(&homes[0], &["signer", "config", "example"])?;
    ensure!(example.status.success());
    let file = write(
        &dir.join("example.toml"),
        &String::from_utf8(example.stdout)?,
    )?;
    let v = ckm_json(&homes[0], &["signer", "config", "check", path_str(&file)?])?;
    ensure!(
        v["listen"] == "127.0.0.1:7000" && v["limits"]["max_in_flight"] == 16,
        "{v}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 4. SIGHUP
// ---------------------------------------------------------------------------------------

#[test]
fn sighup_reloads_the_allow_list() -> Result<()> {
    let mut c = Cluster::start(1)?;
    let home = c.signers[0].home.clone();
    c.signers[0].stop()?;
    let other = IdentityKey::generate(&mut rand::rngs::OsRng);
    let dir = c.dir.path();
    write(&dir.join("pass"), PASSPHRASE)?;
    let config_text = |allowed: &[&str]| {
        let list: Vec<String> = allowed.iter().map(|k| format!("\"{k}\"")).collect();
        format!(
            "listen = \"127.0.0.1:0\"\npassphrase_file = \"pass\"\nallow_coordinators = [{}]\n",
            list.join(", ")
        )
    };
    let config = write(&dir.join("signer.toml"), &config_text(&[&c.coord_id]))?;
    c.signers[0] = SignerProc::start_config(&home, &config)?;
    let s = &c.signers[0];
    let pid = s.pid().context("not running")?;
    let entry: ckm::keys::RosterEntry = serde_json::from_value(serde_json::json!({
        "index": 1, "url": s.url, "identity": s.identity.to_string(),
    }))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = Client::new(other, Duration::from_secs(10))?;
    let status = || rt.block_on(client.call(&entry, &CoordinatorToSigner::Status));
    ensure!(
        status().is_err(),
        "a coordinator not yet allowed was served"
    );
    let hup = || -> Result<()> {
        ensure!(Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()?
            .success());
        Ok(())
    };
    // Allow the other coordinator and reload.
    let other_id = client.identity().public().to_string();
    write(&config, &config_text(&[&c.coord_id, &other_id]))?;
    hup()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while status().is_err() {
        ensure!(
            Instant::now() < deadline,
            "SIGHUP did not allow the coordinator:\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A broken file on SIGHUP is refused and the running allow-list stays.
    write(&config, "allow_coordinators = [\"nope\"]\n")?;
    hup()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.log_text().contains("configuration refused") {
        ensure!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ensure!(status().is_ok(), "the running allow-list was lost");
    ensure!(c.status(0).is_ok());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 5. /healthz under load
// ---------------------------------------------------------------------------------------

#[test]
fn healthz_answers_during_a_signing_load() -> Result<()> {
    let c = Cluster::with_wallet(2, 2)?;
    let p = fund_and_build(&c)?;
    let input = c.write_psbt("pay.psbt", &p.psbt)?;
    let addr = c.signers[0].addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let signed = Arc::new(AtomicUsize::new(0));
    let c = Arc::new(c);
    let load: Vec<_> = (0..3)
        .map(|i| {
            let (c, stop, signed, input) = (c.clone(), stop.clone(), signed.clone(), input.clone());
            std::thread::spawn(move || -> Result<()> {
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    let out = c.dir.path().join(format!("load{i}-{k}.psbt"));
                    c.sign_ok(&input, &out, &[])?;
                    signed.fetch_add(1, Ordering::Relaxed);
                    k += 1;
                }
                Ok(())
            })
        })
        .collect();
    // Health checks while the load runs: the load must have started before the first and
    // still be running after the last.
    let start = Instant::now();
    while signed.load(Ordering::Relaxed) < 1 {
        ensure!(
            start.elapsed() < Duration::from_secs(120),
            "the load did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut answered = 0;
    let first_count = signed.load(Ordering::Relaxed);
    while answered < 40 {
        let (status, body) = http_get(&addr, "/healthz")?;
        ensure!(status == 200, "healthz: {status} {body}");
        let v: serde_json::Value = serde_json::from_str(&body)?;
        ensure!(
            v == serde_json::json!({"status": "ok", "store": "unlocked"}),
            "{body}"
        );
        answered += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let last_count = signed.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().expect("load thread panicked")?;
    }
    eprintln!(
        "{answered} health checks during {} signings",
        last_count - first_count
    );
    ensure!(
        last_count > first_count,
        "no signing completed during the health checks"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 6. /metrics
// ---------------------------------------------------------------------------------------

/// Samples of a Prometheus text exposition: `name{labels}` → value. Fails on any line that
/// is not a comment (`# HELP`, `# TYPE`, `# UNIT`, `# EOF`) or a well-formed sample, on a
/// sample whose family has no `# TYPE`, and on a missing final `# EOF`.
fn parse_metrics(text: &str) -> Result<BTreeMap<String, f64>> {
    let mut samples = BTreeMap::new();
    let mut typed: Vec<String> = Vec::new();
    let mut eof = false;
    for line in text.lines() {
        ensure!(!eof, "text after # EOF: {line}");
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut w = rest.split(' ');
            let name = w.next().unwrap_or_default();
            let kind = w.next().unwrap_or_default();
            ensure!(
                [
                    "counter",
                    "gauge",
                    "histogram",
                    "summary",
                    "info",
                    "unknown"
                ]
                .contains(&kind),
                "bad TYPE line {line}"
            );
            typed.push(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        ensure!(!line.starts_with('#'), "unknown comment {line}");
        let (series, value) = line
            .rsplit_once(' ')
            .with_context(|| format!("bad sample {line}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().with_context(|| format!("bad value in {line}"))?,
        };
        let name = series.split('{').next().unwrap_or_default();
        ensure!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "bad metric name in {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                ensure!(
                    labels.starts_with('{') && labels.ends_with('}'),
                    "bad labels in {line}"
                );
                for pair in labels[1..labels.len() - 1]
                    .split(',')
                    .filter(|p| !p.is_empty())
                {
                    let (k, v) = pair
                        .split_once('=')
                        .with_context(|| format!("bad label in {line}"))?;
                    ensure!(
                        !k.is_empty() && v.starts_with('"') && v.ends_with('"'),
                        "bad label in {line}"
                    );
                }
            }
        }
        ensure!(
            typed.iter().any(|t| name == t
                || name
                    .strip_prefix(t.as_str())
                    .is_some_and(
                        |s| ["_total", "_bucket", "_sum", "_count", "_created"].contains(&s)
                    )),
            "sample {name} has no # TYPE"
        );
        samples.insert(series.to_string(), value);
    }
    ensure!(eof, "no # EOF");
    Ok(samples)
}

fn scrape(addr: &str) -> Result<(BTreeMap<String, f64>, String)> {
    let (status, body) = http_get(addr, "/metrics")?;
    ensure!(status == 200, "metrics: HTTP {status}");
    Ok((parse_metrics(&body)?, body))
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, series: &str) -> f64 {
    after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
}

#[test]
fn metrics_count_what_happened() -> Result<()> {
    let mut c = Cluster::start(2)?;
    c.signers[0].extra = vec!["--metrics".into(), "127.0.0.1:0".into()];
    c.signers[0].restart()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics_addr = loop {
        let found = c.signers[0].stdout_lines().iter().find_map(|l| {
            l.strip_prefix("metrics on http://")
                .map(|r| r.trim_end_matches("/metrics").to_string())
        });
        if let Some(a) = found {
            break a;
        }
        ensure!(Instant::now() < deadline, "no metrics line");
        std::thread::sleep(Duration::from_millis(50));
    };
    let args = c.create_args(WALLET, 2);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.created = ckm_json(&c.coord, &args)?;
    let (after_dkg, _) = scrape(&metrics_addr)?;
    for round in ["dkg_begin", "dkg_round1", "dkg_round2", "dkg_confirm"] {
        ensure!(
            after_dkg.get(&format!(
                "ckm_requests_total{{message=\"{round}\",outcome=\"ok\"}}"
            )) == Some(&1.0),
            "{round} not counted once"
        );
    }
    let p = fund_and_build(&c)?;
    let input = c.write_psbt("pay.psbt", &p.psbt)?;
    let audit_records = |c: &Cluster| -> Result<usize> {
        let v = ckm_json(&c.signers[0].home, &["signer", "audit", "show"])?;
        Ok(v.as_array().context("audit show")?.len())
    };
    let audit_before = audit_records(&c)?;
    let (before, _) = scrape(&metrics_addr)?;

    // 3 signed Status requests.
    for _ in 0..3 {
        c.status(0)?;
    }
    // 2 unauthenticated requests.
    let addr = c.signers[0].addr()?;
    for _ in 0..2 {
        let mut s = TcpStream::connect(&addr)?;
        s.write_all(b"POST /v1/message HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        ensure!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    // A spend refused by signer 1's policy, then the same spend signed.
    ckm_json(
        &c.signers[0].home,
        &[
            "signer",
            "policy",
            "set",
            "--wallet",
            WALLET,
            "--max-amount-sats",
            "1000",
        ],
    )?;
    let out = c.dir.path().join("pay.signed.psbt");
    failure(&c.sign(&input, &out, &[])?)?;
    ckm_json(
        &c.signers[0].home,
        &["signer", "policy", "set", "--wallet", WALLET, "--clear"],
    )?;
    c.sign_ok(&input, &out, &[])?;

    let (after, text) = scrape(&metrics_addr)?;
    let expect = [
        ("ckm_requests_total{message=\"status\",outcome=\"ok\"}", 3.0),
        ("ckm_auth_failures_total{reason=\"missing\"}", 2.0),
        (
            "ckm_requests_total{message=\"unknown\",outcome=\"unauthorized\"}",
            2.0,
        ),
        // One-round signing: one batch of preprocessed nonces, then the refused request
        // and the signed one.
        (
            "ckm_requests_total{message=\"preprocess\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "ckm_requests_total{message=\"sign_preprocessed\",outcome=\"policy\"}",
            1.0,
        ),
        ("ckm_policy_refusals_total{rule=\"max-amount-sats\"}", 1.0),
        (
            "ckm_requests_total{message=\"sign_preprocessed\",outcome=\"ok\"}",
            1.0,
        ),
        ("ckm_signing_round_seconds_count{round=\"preprocess\"}", 1.0),
        ("ckm_signing_round_seconds_count{round=\"one-round\"}", 2.0),
        ("ckm_signing_round_seconds_count{round=\"commit\"}", 0.0),
    ];
    for (series, want) in expect {
        let got = delta(&before, &after, series);
        ensure!(
            got == want,
            "{series} moved by {got}, expected {want}\n{text}"
        );
    }
    // The refusal, the signature, and the two policy changes.
    let audited = audit_records(&c)? - audit_before;
    ensure!(audited == 4, "{audited} audit records written");
    ensure!(
        delta(&before, &after, "ckm_audit_records_total") == audited as f64,
        "ckm_audit_records_total does not match the audit log\n{text}"
    );
    ensure!(after.get("ckm_sessions_open") == Some(&0.0), "{text}");
    // The pool holds what was preprocessed, less what signed, plus the fresh batch.
    ensure!(
        after
            .get("ckm_preprocessed_nonces")
            .is_some_and(|v| *v > 0.0),
        "{text}"
    );
    ensure!(after.get("ckm_connections_open").is_some_and(|v| *v >= 0.0));
    // No wallet name, coordinator key or txid in the metrics.
    ensure!(!text.contains(WALLET) && !text.contains(&c.coord_id) && !text.contains(&p.txid()));
    // Health on the metrics listener too.
    ensure!(http_get(&metrics_addr, "/healthz")?.0 == 200);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 7. The systemd unit
// ---------------------------------------------------------------------------------------

#[test]
fn systemd_unit_is_hardened_and_verifies() -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd/ckm-signer.service");
    let unit = std::fs::read_to_string(&path)?;
    for line in [
        "User=ckm",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "LoadCredential=passphrase:",
        "Restart=on-failure",
        "--passphrase-file %d/passphrase",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "CapabilityBoundingSet=",
    ] {
        ensure!(unit.contains(line), "the unit lacks {line}");
    }
    // The command line it runs is one ckm accepts.
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .context("no ExecStart")?;
    let mut words: Vec<&str> = exec.split_whitespace().skip(1).collect();
    words.push("--help");
    let out = Command::new(BIN).args(&words).output()?;
    ensure!(
        out.status.success(),
        "ckm rejects the unit's command line: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not found: verification skipped");
        return Ok(());
    };
    ensure!(probe.status.success());
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("ckm-signer.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/ckm", BIN))?;
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    Ok(())
}
