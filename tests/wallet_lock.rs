//! One writer per wallet operation on a coordinator home, with two real `ckm` processes and
//! real `ckm signer serve` processes (no bitcoind):
//!
//! - A `wallet refresh` is held up by a signer that stopped answering (SIGSTOP). Meanwhile a
//!   second process's `wallet resume` and `psbt sign` on the same wallet are refused, each
//!   with an error naming the running `wallet refresh` and its process id, and they change
//!   nothing; reading (`wallet transition status`) is not blocked.
//! - The first process is killed (`kill -9`, as a crash): the operating system releases the
//!   lock, and `wallet resume` from another process runs at once.
//! - Eight `wallet address` processes started at once on one wallet get eight different
//!   addresses (before they took the lock, two processes could reveal the same index: eight
//!   got two addresses).

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use cluster::*;

/// Sends `signal` (e.g. `-STOP`) to `pid`.
fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()?;
    ensure!(status.success(), "kill {signal} {pid} failed");
    Ok(())
}

/// Kills (SIGKILL) and reaps `child` on drop, so that a failed test leaves no process behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the lock file of wallet [`WALLET`] names process `pid`.
fn wait_for_holder(c: &Cluster, pid: u32) -> Result<serde_json::Value> {
    let path = c.coord.join("wallets").join(format!(".{WALLET}.lock"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                if v["pid"] == pid {
                    return Ok(v);
                }
            }
        }
        if Instant::now() > deadline {
            bail!("process {pid} did not take the wallet's lock");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_running_transition_locks_out_resume_and_signing_until_it_ends() -> Result<()> {
    let c = Cluster::with_wallet(3, 2)?;
    let p = fund_and_build(&c)?;
    let input = c.write_psbt("unsigned.psbt", &p.psbt)?;
    let stopped = c.signers[2].pid().context("signer 3 is not running")?;
    signal(stopped, "-STOP")?;
    let result = (|| -> Result<()> {
        let refresh = Reaped(
            ckm_cmd(&c.coord)
                .args(["wallet", "refresh", "--timeout", "120"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        let holder = wait_for_holder(&c, refresh.0.id())?;
        ensure!(holder["operation"] == "wallet refresh", "{holder}");

        // A second process: refused, naming the operation that holds the wallet.
        for args in [
            vec!["--json", "wallet", "resume"],
            vec![
                "--json",
                "psbt",
                "sign",
                path_str(&input)?,
                "--out",
                path_str(&c.dir.path().join("signed.psbt"))?,
            ],
        ] {
            let started = Instant::now();
            let out = ckm(&c.coord, &args)?;
            ensure!(!out.status.success(), "{args:?} ran beside a refresh");
            let err = json_error(&out)?;
            let pid = refresh.0.id().to_string();
            ensure!(
                err.contains("is busy") && err.contains("wallet refresh") && err.contains(&pid),
                "{args:?}: the error does not name the refresh (process {pid}): {err}"
            );
            // It waited a little for the refresh to end, not for ever.
            ensure!(started.elapsed() < Duration::from_secs(60), "{args:?} hung");
        }
        ensure!(
            !c.dir.path().join("signed.psbt").exists(),
            "a refused psbt sign wrote its output"
        );
        // Reading is not blocked (signer 3 may be reported missing; the lock is not in the way).
        let out = ckm(
            &c.coord,
            &["--json", "wallet", "transition", "status", "--timeout", "2"],
        )?;
        ensure!(
            !String::from_utf8_lossy(&out.stderr).contains("is busy"),
            "transition status waited for the lock"
        );

        // A crash of the first process frees the wallet at once.
        drop(refresh);
        signal(stopped, "-CONT")?;
        let started = Instant::now();
        let out = ckm(&c.coord, &["--json", "wallet", "resume"])?;
        ensure!(
            out.status.success(),
            "resume after the crash: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            started.elapsed() < Duration::from_secs(4),
            "resume waited for a lock its holder's death released ({:?})",
            started.elapsed()
        );
        Ok(())
    })();
    // Never leave the signer stopped (its drop sends SIGTERM).
    let _ = signal(stopped, "-CONT");
    result.map_err(|e| e.context(c.logs()))
}

/// An address is handed out once: `wallet address` processes started together on one wallet
/// each get another one, and a later call goes on after the last of them.
#[test]
fn addresses_asked_for_at_once_are_all_different() -> Result<()> {
    const AT_ONCE: usize = 8;
    let c = Cluster::with_wallet(3, 2)?;
    let children = (0..AT_ONCE)
        .map(|_| {
            ckm_cmd(&c.coord)
                .args(["--json", "wallet", "address"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map(Reaped)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut addresses = std::collections::BTreeSet::new();
    let mut indexes = std::collections::BTreeSet::new();
    for mut child in children {
        let mut stdout = String::new();
        let mut stderr = String::new();
        use std::io::Read as _;
        if let Some(mut s) = child.0.stdout.take() {
            s.read_to_string(&mut stdout)?;
        }
        if let Some(mut s) = child.0.stderr.take() {
            s.read_to_string(&mut stderr)?;
        }
        let status = child.0.wait()?;
        ensure!(
            status.success(),
            "wallet address failed ({status}): {stdout} {stderr}"
        );
        let v: serde_json::Value = serde_json::from_str(&stdout)
            .with_context(|| format!("wallet address printed no JSON: {stdout}"))?;
        addresses.insert(json_str(&v, "address")?.to_string());
        indexes.insert(v["index"].as_u64().context("no index")?);
    }
    ensure!(
        addresses.len() == AT_ONCE && indexes.len() == AT_ONCE,
        "{AT_ONCE} processes got {} different addresses ({} indexes: {indexes:?})",
        addresses.len(),
        indexes.len()
    );
    let next = ckm_json(&c.coord, &["wallet", "address"])?;
    let last = indexes.iter().max().copied().unwrap_or_default();
    ensure!(
        next["index"].as_u64() == Some(last + 1),
        "the next address has index {} after {last}",
        next["index"]
    );
    Ok(())
}
