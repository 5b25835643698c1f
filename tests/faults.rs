//! Fault and crash tests of `ckm` with real processes: co-signers that misbehave (the
//! `faulty_signer` example restarted on an honest signer's home), participants that drop out
//! of a DKG, and `kill -9` of the coordinator or of a signer in the middle of an operation.
//!
//! Every signing that succeeds is checked on the final transaction (libbitcoinconsensus,
//! Taproot rules, every input) and on the JSON report of `ckm --json psbt sign`; every one
//! that fails must name the culprit, leave the input untouched and write no output.
//!
//! 1. Corrupted signature share: named in `culprits`, excluded, signed by the other two.
//! 2. A signer dying between round 1 and round 2: signing retried with the remaining two.
//! 3. A signer that never answers: skipped after `--timeout`; with a second signer dead,
//!    the failure names it as not answering in time.
//! 4. A slow signer (1.5 s per round) that must take part: signs, valid.
//! 5. Only one honest signer of a 2-of-3 (corrupt + dying): clear error, nothing written.
//! 6. DKG with a signer down from the start, and with a signer that dies right after
//!    answering round 1: clear error naming it, no wallet on the coordinator, no share on
//!    any signer.
//! 7. Crash safety: `kill -9` of `ckm wallet create` and of `ckm psbt sign` at many points;
//!    `kill -9` of a signer in the middle of a signing session, then its restart.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ckm::message::SignerToCoordinator;
use cluster::*;

/// Runs `ckm --json psbt sign` and requires success; returns the report and the time taken.
fn timed_sign(
    c: &Cluster,
    input: &Path,
    out: &Path,
    extra: &[&str],
) -> Result<(serde_json::Value, Duration)> {
    let started = Instant::now();
    let v = c.sign_ok(input, out, extra)?;
    Ok((v, started.elapsed()))
}

fn sorted(mut v: Vec<u16>) -> Vec<u16> {
    v.sort_unstable();
    v
}

/// Asserts a failed `psbt sign`: non-zero exit, no output, input unchanged; returns the
/// JSON error message.
fn expect_sign_failure(
    c: &Cluster,
    input: &Path,
    input_bytes: &[u8],
    out: &Path,
    extra: &[&str],
) -> Result<(String, Duration)> {
    let started = Instant::now();
    let res = c.sign(input, out, extra)?;
    let elapsed = started.elapsed();
    ensure!(
        !res.status.success(),
        "signing succeeded: {}",
        String::from_utf8_lossy(&res.stdout)
    );
    ensure!(!out.exists(), "the output was written despite the failure");
    ensure!(std::fs::read(input)? == input_bytes, "the input changed");
    Ok((json_error(&res)?, elapsed))
}

// ---------------------------------------------------------------------------------------
// 1. Corrupted share
// ---------------------------------------------------------------------------------------

#[test]
fn corrupted_share_is_named_and_excluded() -> Result<()> {
    let mut c = Cluster::with_wallet(3, 2)?;
    let p = fund_and_build(&c)?;
    // Signer 1 corrupts its share; signer 3 is honest but slow, so signers 1 and 2 answer
    // round 1 first and signer 1 is certainly in the first subset.
    c.restart_faulty(0, "corrupt-share")?;
    c.restart_faulty(2, "slow:1500")?;
    let input = c.write_psbt("pay.psbt", &p.psbt)?;
    let out = c.dir.path().join("pay.signed.psbt");

    let (v, _) = timed_sign(&c, &input, &out, &[])?;
    let tx = check_signed(&out, &p)?;
    let used = check_report(&c, &v, &tx)?;
    ensure!(u16_array(&v["culprits"])? == vec![1], "culprits: {v}");
    ensure!(sorted(used) == vec![2, 3], "signers used: {v}");
    let ids = string_array(&v["signers"])?;
    ensure!(!ids.contains(&c.signers[0].identity.to_string()), "{v}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. A signer dies between round 1 and round 2
// ---------------------------------------------------------------------------------------

#[test]
fn signer_dying_between_rounds_is_replaced() -> Result<()> {
    let mut c = Cluster::with_wallet(3, 2)?;
    let p = fund_and_build(&c)?;
    // As above: signer 3 slow, so the dying signer 1 is in the first subset.
    c.restart_faulty(0, "die-before-round2")?;
    c.restart_faulty(2, "slow:1500")?;
    let input = c.write_psbt("pay.psbt", &p.psbt)?;
    let out = c.dir.path().join("pay.signed.psbt");

    let (v, _) = timed_sign(&c, &input, &out, &[])?;
    let tx = check_signed(&out, &p)?;
    let used = check_report(&c, &v, &tx)?;
    ensure!(sorted(used) == vec![2, 3], "signers used: {v}");
    ensure!(u16_array(&v["culprits"])?.is_empty(), "{v}");
    // It really was asked for round 2 (and died): the retry happened.
    ensure!(
        c.signers[0].has_exited()?,
        "signer 1 is still alive: it was never asked for round 2"
    );
    ensure!(c.signers[0].log_text().contains("dying before round 2"));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. A signer that never answers
// ---------------------------------------------------------------------------------------

#[test]
fn hanging_signer_is_skipped() -> Result<()> {
    let mut c = Cluster::with_wallet(3, 2)?;
    let p = fund_and_build(&c)?;
    c.restart_faulty(0, "hang")?;
    let input = c.write_psbt("pay.psbt", &p.psbt)?;
    let input_bytes = std::fs::read(&input)?;

    let out = c.dir.path().join("pay.signed.psbt");
    let (v, took) = timed_sign(&c, &input, &out, &["--timeout", "3"])?;
    ensure!(took < Duration::from_secs(15), "signing took {took:?}");
    let tx = check_signed(&out, &p)?;
    let used = check_report(&c, &v, &tx)?;
    ensure!(sorted(used) == vec![2, 3], "signers used: {v}");

    // With signer 2 dead as well, the hanging one is given up on after the timeout.
    c.signers[1].kill();
    let out2 = c.dir.path().join("none.psbt");
    let (err, took) = expect_sign_failure(&c, &input, &input_bytes, &out2, &["--timeout", "3"])?;
    ensure!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(15),
        "failing took {took:?}"
    );
    ensure!(err.contains("of the 2 required signers"), "{err}");
    ensure!(
        err.contains("signer 1 (") && err.contains("did not answer within 3 s"),
        "the hanging signer is not named: {err}"
    );
    ensure!(
        err.contains("signer 2 (") && err.contains("unreachable"),
        "{err}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 4. A slow signer
// ---------------------------------------------------------------------------------------

#[test]
fn slow_signer_still_signs() -> Result<()> {
    let mut c = Cluster::with_wallet(3, 2)?;
    let p = fund_and_build(&c)?;
    c.restart_faulty(0, "slow:1500")?;
    // Signer 3 down: the slow one must take part.
    c.signers[2].kill();
    let input = c.write_psbt("pay.psbt", &p.psbt)?;
    let out = c.dir.path().join("pay.signed.psbt");

    let (v, took) = timed_sign(&c, &input, &out, &["--timeout", "10"])?;
    let tx = check_signed(&out, &p)?;
    let used = check_report(&c, &v, &tx)?;
    ensure!(sorted(used) == vec![1, 2], "signers used: {v}");
    // Both rounds waited for the slow signer.
    ensure!(took >= Duration::from_millis(3000), "took only {took:?}");
    ensure!(took < Duration::from_secs(30), "took {took:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 5. Fewer than T honest signers
// ---------------------------------------------------------------------------------------

#[test]
fn corrupt_and_dying_signers_leave_too_few() -> Result<()> {
    let mut c = Cluster::with_wallet(3, 2)?;
    let p = fund_and_build(&c)?;
    c.restart_faulty(0, "corrupt-share")?;
    c.restart_faulty(1, "die-before-round2")?;
    let input = c.write_psbt("pay.psbt", &p.psbt)?;
    let input_bytes = std::fs::read(&input)?;
    let out = c.dir.path().join("pay.signed.psbt");

    // Whatever subset goes first, signer 1 is caught cheating and signer 2 dies.
    let (err, took) = expect_sign_failure(&c, &input, &input_bytes, &out, &["--timeout", "10"])?;
    ensure!(took < Duration::from_secs(30), "failing took {took:?}");
    ensure!(
        err.contains("only 1 of the 2 required signers could sign"),
        "{err}"
    );
    ensure!(
        err.contains("signer 1 returned an invalid signature share"),
        "the culprit is not named: {err}"
    );
    ensure!(
        err.contains("signer 2 ("),
        "the dead signer is not named: {err}"
    );
    // Its connection closes while the process is still exiting: give it a moment.
    let asked = Instant::now();
    while !c.signers[1].has_exited()? && asked.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    ensure!(
        c.signers[1].has_exited()?,
        "signer 2 was never asked to sign (it dies when asked): {err}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 6. DKG dropouts
// ---------------------------------------------------------------------------------------

/// Asserts that no wallet exists anywhere after a failed `wallet create`.
fn assert_no_wallet_anywhere(c: &Cluster) -> Result<()> {
    let list = ckm_json(&c.coord, &["wallet", "list"])?;
    ensure!(
        list.as_array().is_some_and(Vec::is_empty),
        "the coordinator lists {list}"
    );
    ensure!(!c.wallet_path().exists(), "a wallet database was left");
    for s in &c.signers {
        let shares = share_files(&s.home)?;
        ensure!(shares.is_empty(), "{} holds {shares:?}", s.home.display());
        let listed = ckm_json(&s.home, &["signer", "wallets"])?;
        ensure!(listed.as_array().is_some_and(Vec::is_empty), "{listed}");
    }
    Ok(())
}

#[test]
fn dkg_with_unreachable_signer_fails_cleanly() -> Result<()> {
    let mut c = Cluster::start(3)?;
    let args = c.create_args(WALLET, 2);
    let dead_url = c.signers[1].url.clone();
    c.signers[1].kill();
    let mut all = vec!["--json"];
    all.extend(args.iter().map(String::as_str));
    let started = Instant::now();
    let res = ckm(&c.coord, &all)?;
    ensure!(!res.status.success(), "wallet create succeeded");
    ensure!(started.elapsed() < Duration::from_secs(30));
    let err = json_error(&res)?;
    ensure!(
        err.contains("round 1") && err.contains(&format!("signer 2 ({dead_url})")),
        "the unreachable signer is not named: {err}"
    );
    ensure!(err.contains("nothing was stored"), "{err}");
    assert_no_wallet_anywhere(&c)
}

/// A TCP proxy in front of one signer that SIGKILLs the signer once it has answered its
/// first request, and only then relays that answer: the signer certainly finished round 1
/// and is certainly dead before the coordinator can send it round 2.
struct KillingProxy {
    url: String,
    stop: Arc<AtomicBool>,
    killed: Arc<AtomicBool>,
}

impl KillingProxy {
    fn start(upstream: String, victim_pid: u32) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let stop = Arc::new(AtomicBool::new(false));
        let killed = Arc::new(AtomicBool::new(false));
        let (stop2, killed2) = (stop.clone(), killed.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let upstream = upstream.clone();
                        let killed = killed2.clone();
                        std::thread::spawn(move || {
                            let _ = relay(client, &upstream, victim_pid, &killed);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(KillingProxy { url, stop, killed })
    }
}

impl Drop for KillingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn relay(client: TcpStream, upstream: &str, victim_pid: u32, killed: &AtomicBool) -> Result<()> {
    client.set_nonblocking(false)?;
    let upstream = TcpStream::connect(upstream)?;
    let (mut c_read, mut u_write) = (client.try_clone()?, upstream.try_clone()?);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut u_write);
        let _ = u_write.shutdown(Shutdown::Write);
    });
    let (mut u_read, mut c_write) = (upstream, client);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match u_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if killed.load(Ordering::SeqCst) {
            c_write.write_all(&buf[..n])?;
            continue;
        }
        // The first answer: read all of it (until the signer goes quiet), kill, relay.
        let mut answer = buf[..n].to_vec();
        u_read.set_read_timeout(Some(Duration::from_millis(300)))?;
        while let Ok(n) = u_read.read(&mut buf) {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        u_read.set_read_timeout(None)?;
        let _ = Command::new("kill")
            .args(["-KILL", &victim_pid.to_string()])
            .status();
        killed.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(200));
        c_write.write_all(&answer)?;
    }
    let _ = c_write.shutdown(Shutdown::Both);
    Ok(())
}

#[test]
fn dkg_with_signer_dying_after_round_1_fails_cleanly() -> Result<()> {
    let mut c = Cluster::start(3)?;
    let pid = c.signers[2].pid().context("signer 3 not running")?;
    let proxy = KillingProxy::start(c.signers[2].addr()?, pid)?;
    // The roster reaches signer 3 through the proxy.
    let mut args = c.create_args(WALLET, 2);
    let spec3 = c.signers[2].spec();
    let proxied = format!("{}#{}", proxy.url, c.signers[2].identity);
    for a in &mut args {
        if *a == spec3 {
            *a = proxied.clone();
        }
    }
    let mut all = vec!["--json"];
    all.extend(args.iter().map(String::as_str));
    let res = ckm(&c.coord, &all)?;
    ensure!(!res.status.success(), "wallet create succeeded");
    let err = json_error(&res)?;
    ensure!(proxy.killed.load(Ordering::SeqCst), "the proxy never fired");
    ensure!(c.signers[2].has_exited()?, "signer 3 is still alive");
    ensure!(
        c.signers[2].log_text().contains("key generation started"),
        "signer 3 did not take part in round 1"
    );
    ensure!(
        err.contains("round 2") && err.contains(&format!("signer 3 ({})", proxy.url)),
        "the dropped-out signer is not named: {err}"
    );
    assert_no_wallet_anywhere(&c)
}

// ---------------------------------------------------------------------------------------
// 7. Crash safety
// ---------------------------------------------------------------------------------------

/// Spawns `ckm --home HOME ARGS…` with output discarded.
fn spawn_ckm(home: &Path, args: &[&str]) -> Result<Child> {
    ckm_cmd(home)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning ckm")
}

/// When a child is to be killed.
#[derive(Debug, Clone)]
enum KillAt {
    /// After this long.
    After(Duration),
    /// This long after a file whose name, without a leading dot, starts with the prefix
    /// appears in the directory (polled every 0.5 ms): the final file or the temporary one
    /// it is written to first. Gives up waiting (and kills) after 60 s.
    AfterFile(PathBuf, String, Duration),
}

/// Kills `child` with SIGKILL at `at`; returns whether it was still running when killed.
fn kill_at(mut child: Child, at: &KillAt) -> Result<bool> {
    let started = Instant::now();
    let mut seen: Option<Instant> = None;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(false);
        }
        let fire = match at {
            KillAt::After(d) => started.elapsed() >= *d,
            KillAt::AfterFile(dir, prefix, delay) => {
                if seen.is_none()
                    && std::fs::read_dir(dir)?.filter_map(|e| e.ok()).any(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .trim_start_matches('.')
                            .starts_with(prefix.as_str())
                    })
                {
                    seen = Some(Instant::now());
                }
                seen.is_some_and(|t| t.elapsed() >= *delay)
                    || started.elapsed() >= Duration::from_secs(60)
            }
        };
        if fire {
            let running = child.try_wait()?.is_none();
            child.kill()?;
            child.wait()?;
            return Ok(running);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Kill points spread over a run that takes `full`, and points right after the output file
/// `prefix` (or its temporary) appears in `dir`.
fn kill_points(full: Duration, dir: &Path, prefix: &str) -> Vec<KillAt> {
    let timed = [5u32, 15, 30, 45, 60, 75, 90, 100]
        .iter()
        .map(|pct| KillAt::After(full * *pct / 100));
    let on_file = [0u64, 1, 3, 6, 10].iter().map(|ms| {
        KillAt::AfterFile(
            dir.to_path_buf(),
            prefix.to_string(),
            Duration::from_millis(*ms),
        )
    });
    timed.chain(on_file).collect()
}

#[test]
fn coordinator_killed_during_wallet_create() -> Result<()> {
    let c = Cluster::start(3)?;
    let run = |name: &str| -> Result<Vec<String>> { Ok(c.create_args(name, 2)) };

    // A complete run, timed.
    let started = Instant::now();
    let args = run("base")?;
    ckm_json(
        &c.coord,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    let full = started.elapsed();

    let mut killed_names = Vec::new();
    let mut interrupted = 0;
    let wallets_dir = c.coord.join("wallets");
    for k in 0..kill_points(full, &wallets_dir, "").len() {
        let name = format!("k{k}");
        let at = kill_points(full, &wallets_dir, &format!("{name}.sqlite"))[k].clone();
        let args = run(&name)?;
        let child = spawn_ckm(
            &c.coord,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        if kill_at(child, &at)? {
            interrupted += 1;
        }
        killed_names.push(name);

        // The home is usable: every listed wallet opens and has its descriptors.
        let list = ckm_json(&c.coord, &["wallet", "list"]).with_context(|| {
            format!(
                "after kill at {at:?}; files: {:?}",
                files_under(&c.coord.join("wallets")).unwrap_or_default()
            )
        })?;
        let listed: Vec<String> = list
            .as_array()
            .context("wallet list is not an array")?
            .iter()
            .map(|w| json_str(w, "wallet").map(str::to_string))
            .collect::<Result<_>>()?;
        ensure!(listed.contains(&"base".to_string()), "{list}");
        for w in &listed {
            ensure!(
                w == "base" || killed_names.contains(w),
                "unexpected wallet {w}"
            );
            let d = ckm_json(&c.coord, &["wallet", "descriptor", "--wallet", w])
                .with_context(|| format!("descriptor of {w} after kill at {at:?}"))?;
            ensure!(json_str(&d, "external")?.starts_with("tr("), "{d}");
            ensure!(d["signers"].as_array().map(Vec::len) == Some(3), "{d}");
        }
    }
    ensure!(
        interrupted >= 4,
        "only {interrupted} runs were interrupted: the kill points are too late"
    );

    // The name of an interrupted creation that left no wallet can be used again, and a
    // fresh name works.
    let list = ckm_json(&c.coord, &["wallet", "list"])?;
    let listed: Vec<String> = list
        .as_array()
        .context("not an array")?
        .iter()
        .filter_map(|w| w["wallet"].as_str().map(str::to_string))
        .collect();
    eprintln!(
        "{interrupted} of {} creations interrupted; wallets afterwards: {listed:?}; files: {:?}",
        killed_names.len(),
        files_under(&c.coord.join("wallets"))?
    );
    let mut reuse = killed_names
        .iter()
        .filter(|n| !listed.contains(n))
        .take(1)
        .cloned()
        .collect::<Vec<_>>();
    reuse.push("fresh".into());
    for name in reuse {
        let args = run(&name)?;
        let v = ckm_json(
            &c.coord,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .with_context(|| format!("creating {name} after the crashes"))?;
        ensure!(json_str(&v, "wallet")? == name);
        let d = ckm_json(&c.coord, &["wallet", "descriptor", "--wallet", &name])?;
        ensure!(d["external"] == v["external"]);
        ckm_json(&c.coord, &["wallet", "address", "--wallet", &name])?;
    }
    Ok(())
}

#[test]
fn psbt_sign_killed_midway() -> Result<()> {
    let c = Cluster::with_wallet(3, 2)?;
    let p = fund_and_build(&c)?;
    let input = c.write_psbt("pay.psbt", &p.psbt)?;
    let input_bytes = std::fs::read(&input)?;

    let base = c.dir.path().join("base.signed.psbt");
    let (_, full) = timed_sign(&c, &input, &base, &[])?;
    check_signed(&base, &p)?;

    let mut interrupted = 0;
    let mut complete = 0;
    let dir = c.dir.path();
    for k in 0..kill_points(full, dir, "").len() {
        let out = dir.join(format!("k{k}.psbt"));
        let at = kill_points(full, dir, &format!("k{k}.psbt"))[k].clone();
        let child = spawn_ckm(
            &c.coord,
            &[
                "--json",
                "psbt",
                "sign",
                path_str(&input)?,
                "--out",
                path_str(&out)?,
            ],
        )?;
        if kill_at(child, &at)? {
            interrupted += 1;
        }
        ensure!(
            std::fs::read(&input)? == input_bytes,
            "the input changed (kill at {at:?})"
        );
        if out.exists() {
            check_signed(&out, &p)
                .with_context(|| format!("partial output after kill at {at:?}"))?;
            complete += 1;
        }
        // Signing again to the same output works despite whatever the crash left.
        c.sign_ok(&input, &out, &[])
            .with_context(|| format!("signing again after kill at {at:?}"))?;
        check_signed(&out, &p)?;
    }
    eprintln!("{interrupted} signings interrupted, {complete} outputs complete anyway");
    ensure!(
        interrupted >= 4,
        "only {interrupted} runs were interrupted: the kill points are too late"
    );
    Ok(())
}

#[test]
fn signer_killed_during_signing_restarts() -> Result<()> {
    let mut c = Cluster::with_wallet(2, 2)?;
    let p = fund_and_build(&c)?;
    // Signer 2 takes 1.5 s per round: signer 1 sits in an open session meanwhile.
    c.restart_faulty(1, "slow:1500")?;
    let input = c.write_psbt("pay.psbt", &p.psbt)?;
    let input_bytes = std::fs::read(&input)?;
    let out = c.dir.path().join("pay.signed.psbt");

    let sign = spawn_ckm(
        &c.coord,
        &[
            "--json",
            "psbt",
            "sign",
            path_str(&input)?,
            "--out",
            path_str(&out)?,
            "--timeout",
            "10",
            "--two-rounds",
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.signers[0].log_text().contains("committed nonces") {
        ensure!(Instant::now() < deadline, "signer 1 never committed");
        std::thread::sleep(Duration::from_millis(2));
    }
    c.signers[0].kill();
    let res = sign.wait_with_output()?;
    ensure!(!res.status.success(), "signing without signer 1 succeeded");
    ensure!(!out.exists());
    ensure!(std::fs::read(&input)? == input_bytes);

    // Restart with the same home (same port if possible): it serves again.
    if c.signers[0].relaunch_same_port(Kind::Honest)? {
        c.sync_roster()?;
    }
    match c.status(0)? {
        SignerToCoordinator::Status {
            identity, wallets, ..
        } => {
            ensure!(identity == c.signers[0].identity);
            ensure!(wallets == vec![WALLET.to_string()], "{wallets:?}");
        }
        other => bail!("status answered {other:?}"),
    }
    let audit = ckm_json(&c.signers[0].home, &["signer", "audit", "verify"])?;
    ensure!(audit["ok"] == true, "{audit}");

    let v = c.sign_ok(&input, &out, &["--timeout", "10"])?;
    let tx = check_signed(&out, &p)?;
    let used = check_report(&c, &v, &tx)?;
    ensure!(sorted(used) == vec![1, 2], "{v}");
    Ok(())
}
