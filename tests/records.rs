//! The signer's records against disk access and a failing disk, with real processes:
//!
//! 1. Rolling back a *stopped* signer's records — an older copy of `signer.db`, removed or
//!    truncated audit records, a removed or older policy, a deleted checkpoint — makes it
//!    refuse to sign with the reason (its `state check` names it), while the others sign; the
//!    operator's `signer state reset` (audited) brings it back.
//! 2. A store that turns read-only (`chattr +i` on the database files: writes through the open
//!    files fail with EPERM), or full (the file-size limit of the running process, so writes
//!    fail with EFBIG as on a full disk), between round 1 and round 2: the signer cannot
//!    record its decision and releases no share; once the store is writable again, it signs.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;
#[path = "common/driver.rs"]
mod driver;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, ensure, Context, Result};
use bdk_wallet::rusqlite::Connection;
use ckm::message::{ErrorCode, SessionId};
use ckm::net::client::CallError;
use cluster::*;
use driver::Driver;

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

/// `psbt sign` of a payment of `sats` with whichever signers are running (not required to
/// succeed).
fn spend(c: &Cluster, funding: &Funding, sats: u64, name: &str) -> Result<Output> {
    let p = c.pay(funding, &foreign_address(), sats, 2)?;
    let input = c.write_psbt(&format!("{name}.psbt"), &p.psbt)?;
    let out = c.dir.path().join(format!("{name}.signed.psbt"));
    c.sign(&input, &out, &[])
}

/// Runs `scenario` (which edits the stopped signer 1's home), restarts signer 1 and checks
/// that it refuses to sign naming `reason`, that `state check` names it too, and that the
/// reset brings it back.
fn expect_rollback(
    c: &mut Cluster,
    funding: &Funding,
    what: &str,
    reason: &str,
    scenario: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let home = c.signers[0].home.clone();
    c.signers[0].stop()?;
    scenario(&home).with_context(|| format!("{what}: editing the home"))?;
    c.signers[0].relaunch_same_port(Kind::Honest)?;
    c.sync_roster()?;
    let out = ckm(&home, &["--json", "signer", "state", "check"])?;
    ensure!(!out.status.success(), "{what}: state check passed");
    let err = json_error(&out)?;
    ensure!(err.contains(reason), "{what}: state check says {err}");
    ensure!(
        err.contains("signer state reset"),
        "{what}: no advice: {err}"
    );
    // Signers 1 and 3 are the only ones up: signer 1 refuses, so the spend fails.
    let res = spend(c, funding, 10_000, &format!("{what}-refused"))?;
    ensure!(!res.status.success(), "{what}: a rolled-back signer signed");
    let err = json_error(&res)?;
    ensure!(
        err.contains(reason),
        "{what}: the refusal does not say why: {err}"
    );
    // The audited reset, on the running signer.
    let v = ckm_json(&home, &["signer", "state", "reset", "--reason", what])?;
    ensure!(v["ok"] == true, "{v}");
    let res = spend(c, funding, 10_000, &format!("{what}-after-reset"))?;
    ensure!(
        res.status.success(),
        "{what}: no signature after the reset: {}\n{}",
        String::from_utf8_lossy(&res.stderr),
        c.logs()
    );
    let records = ckm_json(&home, &["signer", "audit", "show"])?;
    ensure!(
        records.as_array().is_some_and(|r| r.iter().any(
            |x| x["kind"] == "reset" && x["detail"].as_str().is_some_and(|d| d.contains(what))
        )),
        "{what}: the reset is not in the audit records"
    );
    Ok(())
}

#[test]
fn rolled_back_records_or_policy_stop_signing_until_reset() -> Result<()> {
    let mut c = Cluster::with_wallet(3, 2)?;
    let funding = fund(&c, &FUNDS)?;
    // Signer 2 stays down: every spend needs signer 1.
    c.signers[1].kill();
    let home = c.signers[0].home.clone();
    let v = ckm_json(
        &home,
        &[
            "signer",
            "policy",
            "set",
            "--wallet",
            WALLET,
            "--max-fee-sats",
            "50000",
        ],
    )?;
    ensure!(v["policy"]["max_fee_sats"] == 50_000);

    // A copy of signer 1's database before any spend.
    c.signers[0].stop()?;
    let before = c.dir.path().join("signer1-before.db");
    copy_db(&db_path(&home), &before)?;
    c.signers[0].relaunch_same_port(Kind::Honest)?;
    c.sync_roster()?;
    let res = spend(&c, &funding, 20_000, "first")?;
    ensure!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );

    expect_rollback(
        &mut c,
        &funding,
        "older-copy",
        "the audit records end at",
        |h| copy_db(&before, &db_path(h)),
    )?;
    expect_rollback(
        &mut c,
        &funding,
        "records-removed",
        "the audit records end at",
        |h| {
            let db = Connection::open(db_path(h))?;
            let n = db.execute(
                "DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)",
                [],
            )?;
            ensure!(n == 1);
            Ok(())
        },
    )?;
    expect_rollback(
        &mut c,
        &funding,
        "records-truncated",
        "the audit records end at",
        |h| {
            let db = Connection::open(db_path(h))?;
            let n = db.execute("DELETE FROM audit WHERE seq >= 2", [])?;
            ensure!(n >= 2, "only {n} records removed");
            Ok(())
        },
    )?;
    // An older policy row: keep version N of the wallet's row, set N+1, then restore N.
    let older: (i64, Vec<u8>) = Connection::open(db_path(&home))?.query_row(
        "SELECT version, sealed FROM policies",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    ckm_json(
        &home,
        &[
            "signer",
            "policy",
            "set",
            "--wallet",
            WALLET,
            "--max-fee-sats",
            "40000",
        ],
    )?;
    expect_rollback(
        &mut c,
        &funding,
        "policy-older",
        "do not match their sealed summary",
        |h| {
            let db = Connection::open(db_path(h))?;
            db.execute(
                "UPDATE policies SET version = ?1, sealed = ?2",
                bdk_wallet::rusqlite::params![older.0, older.1],
            )?;
            Ok(())
        },
    )?;
    expect_rollback(
        &mut c,
        &funding,
        "policy-removed",
        "do not match their sealed summary",
        |h| {
            let db = Connection::open(db_path(h))?;
            ensure!(db.execute("DELETE FROM policies", [])? == 1);
            Ok(())
        },
    )?;
    ckm_json(
        &home,
        &[
            "signer",
            "policy",
            "set",
            "--wallet",
            WALLET,
            "--max-fee-sats",
            "30000",
        ],
    )?;
    expect_rollback(
        &mut c,
        &funding,
        "policy-summary-removed",
        "the policy is at version 0",
        |h| {
            let db = Connection::open(db_path(h))?;
            ensure!(db.execute("DELETE FROM kv WHERE key = 'policy_state'", [])? == 1);
            Ok(())
        },
    )?;
    expect_rollback(
        &mut c,
        &funding,
        "checkpoint-deleted",
        "the checkpoint is missing",
        |h| {
            std::fs::remove_file(h.join("signer").join("checkpoint.db"))?;
            Ok(())
        },
    )?;
    Ok(())
}

/// How the store of signer 1 fails.
#[derive(Clone, Copy, Debug)]
enum Failure {
    ReadOnly,
    Full,
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The database files whose writes must fail.
fn db_files(dir: &Path) -> Vec<PathBuf> {
    ["signer.db", "signer.db-wal"]
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.exists())
        .collect()
}

fn break_store(failure: Failure, pid: u32, dir: &Path) -> Result<()> {
    match failure {
        Failure::ReadOnly => run(Command::new("chattr").arg("+i").args(db_files(dir))),
        Failure::Full => {
            run(Command::new("prlimit").args(["--pid", &pid.to_string(), "--fsize=1:"]))
        }
    }
}

fn mend_store(failure: Failure, pid: u32, dir: &Path) -> Result<()> {
    match failure {
        Failure::ReadOnly => run(Command::new("chattr").arg("-i").args(db_files(dir))),
        Failure::Full => {
            run(Command::new("prlimit").args(["--pid", &pid.to_string(), "--fsize=unlimited:"]))
        }
    }
}

#[test]
fn a_read_only_or_full_store_releases_no_share() -> Result<()> {
    // The read-only case needs `chattr +i` (root, on a file system with the immutable flag).
    let probe_dir = tempfile::tempdir()?;
    let probe_file = probe_dir.path().join("probe");
    std::fs::write(&probe_file, b"x")?;
    let probe = Command::new("chattr").arg("+i").arg(&probe_file).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: `chattr +i` is not permitted here (needs root and ext4 or similar)");
        return Ok(());
    }
    run(Command::new("chattr").arg("-i").arg(&probe_file))?;
    for failure in [Failure::ReadOnly, Failure::Full] {
        let mut c = Cluster::with_wallet(3, 2)?;
        let funding = fund(&c, &FUNDS)?;
        let signer_dir = c.signers[0].home.join("signer");
        // Signer 1 ignores SIGXFSZ (so a write past the file-size limit fails with EFBIG, as
        // on a full disk, instead of killing it).
        c.signers[0].stop()?;
        c.signers[0].wrapper = vec![
            "sh".into(),
            "-c".into(),
            "trap '' XFSZ; exec \"$@\"".into(),
            "sh".into(),
        ];
        c.signers[0].relaunch_same_port(Kind::Honest)?;
        c.sync_roster()?;
        let pid = c.signers[0].pid().context("signer 1 not running")?;
        let mut d = Driver::new(&c, WALLET)?;
        d.reload(&c, WALLET)?;

        let p = c.pay(&funding, &foreign_address(), 30_000, 2)?;
        let session = SessionId::random(&mut rand::thread_rng());
        let mut committed = BTreeMap::new();
        for index in [1u16, 3] {
            let a = d
                .commit(session, &p.psbt, index)?
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            committed.insert(index, a);
        }
        let packages = d.packages(&p.psbt, &committed)?;
        break_store(failure, pid, &signer_dir)?;
        let reply = d.sign(session, &packages, &BTreeMap::new(), 1)?;
        match reply {
            Err(CallError::Refused {
                code: ErrorCode::Internal,
                message,
                ..
            }) => {
                ensure!(
                    message.contains("no share was released"),
                    "{failure:?}: {message}"
                );
            }
            other => bail!(
                "{failure:?}: signer 1 answered {other:?} (exited: {:?}); log:\n{}",
                c.signers[0].has_exited(),
                c.signers[0].log_text()
            ),
        }
        // Signer 3 signs; with signer 1's refusal the coordinator has one share, not two.
        let shares3 = d
            .sign(session, &packages, &BTreeMap::new(), 3)?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let only_one = BTreeMap::from([(3u16, shares3)]);
        ensure!(d.aggregate(&p.psbt, &packages, &only_one).is_err());

        // Mended, signer 1 records and signs again; nothing was recorded as signed before.
        mend_store(failure, pid, &signer_dir)?;
        let records = ckm_json(&c.signers[0].home, &["signer", "audit", "show"])?;
        ensure!(
            !records.as_array().is_some_and(|r| r
                .iter()
                .any(|x| x["kind"] == "signed" && x["txid"] == p.txid())),
            "{failure:?}: a signature was recorded"
        );
        let input = c.write_psbt("mended.psbt", &p.psbt)?;
        let out = c.dir.path().join("mended.signed.psbt");
        c.signers[1].kill();
        c.sign_ok(&input, &out, &[])?;
        check_signed(&out, &p)?;
    }
    Ok(())
}
