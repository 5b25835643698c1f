//! The checkpoint off the signing's critical path (issue 29): a signing's one durable write
//! is its decision in `signer.db`; `checkpoint.db` follows on a background thread. Real
//! signer processes with that thread slowed down (`CKM_TEST_CHECKPOINT_DELAY_MS`, debug builds
//! only) so that the window between the two is wide:
//!
//! 1. `kill -9` inside the window loses nothing: the decision's audit record is there, the
//!    records are ahead of the checkpoint, which start-up accepts and catches up, and the
//!    signer signs again.
//! 2. A graceful stop (SIGTERM) waits for the checkpoint: an older copy of `signer.db`
//!    restored after the stop is detected and the signer refuses, as before the checkpoint
//!    moved (without the wait, the copy would match the lagging checkpoint and pass).
//!
//! One test in this binary: the delay is set in the environment the signers inherit.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;

use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{ensure, Result};
use cluster::*;

fn db_path(home: &Path) -> PathBuf {
    home.join("signer").join("signer.db")
}

fn copy_db(from: &Path, to: &Path) -> Result<()> {
    for ext in ["", "-wal", "-shm"] {
        let src = PathBuf::from(format!("{}{ext}", from.display()));
        let dst = PathBuf::from(format!("{}{ext}", to.display()));
        let _ = std::fs::remove_file(&dst);
        if src.exists() {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

type Funding = std::collections::HashMap<bitcoin::OutPoint, bitcoin::TxOut>;

fn spend(c: &Cluster, funding: &Funding, sats: u64, name: &str) -> Result<Output> {
    let p = c.pay(funding, &foreign_address(), sats, 2)?;
    let input = c.write_psbt(&format!("{name}.psbt"), &p.psbt)?;
    let out = c.dir.path().join(format!("{name}.signed.psbt"));
    c.sign(&input, &out, &[])
}

fn signed_records(home: &Path) -> Result<usize> {
    let records = ckm_json(home, &["signer", "audit", "show"])?;
    Ok(records
        .as_array()
        .map(|r| r.iter().filter(|x| x["kind"] == "signed").count())
        .unwrap_or(0))
}

#[test]
fn a_crash_between_decision_and_checkpoint_loses_nothing_and_a_stop_waits_for_it() -> Result<()> {
    std::env::set_var("CKM_TEST_CHECKPOINT_DELAY_MS", "3000");
    let mut c = Cluster::with_wallet(3, 2)?;
    let funding = fund(&c, &FUNDS)?;
    // Signer 3 stays down: every spend needs signers 1 and 2.
    c.signers[2].kill();
    let home = c.signers[0].home.clone();
    let before = signed_records(&home)?;

    // 1. The share left; kill -9 before the checkpoint follows.
    let res = spend(&c, &funding, 20_000, "first")?;
    ensure!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    c.signers[0].kill();
    ensure!(
        signed_records(&home)? == before + 1,
        "the decision's record is missing after kill -9"
    );
    let state = ckm_json(&home, &["signer", "state", "check"])?;
    ensure!(
        state["ok"] == true && state["checkpoint_records"].as_u64() < state["records"].as_u64(),
        "the crash did not fall between the decision and its checkpoint: {state}"
    );
    let again = ckm_json(&home, &["signer", "state", "check"])?;
    ensure!(
        again["checkpoint_records"] == again["records"],
        "start-up did not catch the checkpoint up: {again}"
    );
    c.signers[0].relaunch_same_port(Kind::Honest)?;
    c.sync_roster()?;
    let res = spend(&c, &funding, 21_000, "second")?;
    ensure!(
        res.status.success(),
        "no signature after the crash: {}",
        String::from_utf8_lossy(&res.stderr)
    );

    // 2. A copy of signer.db before the third spend, restored after a graceful stop.
    c.signers[0].stop()?;
    let copy = c.dir.path().join("signer1-before-third.db");
    copy_db(&db_path(&home), &copy)?;
    c.signers[0].relaunch_same_port(Kind::Honest)?;
    c.sync_roster()?;
    let res = spend(&c, &funding, 22_000, "third")?;
    ensure!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    c.signers[0].stop()?;
    copy_db(&copy, &db_path(&home))?;
    let out = ckm(&home, &["--json", "signer", "state", "check"])?;
    ensure!(
        !out.status.success(),
        "an older copy of signer.db passed after a graceful stop"
    );
    let err = json_error(&out)?;
    ensure!(err.contains("the audit records end at"), "{err}");
    Ok(())
}
