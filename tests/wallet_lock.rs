//! One writer per wallet operation on a coordinator home, with two real `ckm` processes and
//! real `ckm signer serve` processes (no bitcoind):
//!
//! - A `wallet refresh` is held up by a signer that stopped answering (SIGSTOP). Meanwhile a
//!   second process's `wallet resume` and `psbt sign` on the same wallet are refused, each
//!   with an error naming the running `wallet refresh` and its process id, and they change
//!   nothing; reading (`wallet transition status`) is not blocked.
//! - The first process is killed (`kill -9`, as a crash): the operating system releases the
//!   lock, and `wallet resume` from another process runs at once.

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
