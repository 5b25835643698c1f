//! Restoring an old signer backup against a coordinator that wants it to sign (issue 24),
//! with real `ckm signer serve` processes and the real command line:
//!
//! - a backup taken at epoch 0 and restored after a refresh to epoch 1 never signs again:
//!   `wallet confirm-restored` is refused (a member states the later epoch), the hand-driven
//!   coordinator asking it for epoch 0 is refused, and statements the coordinator gathered
//!   for a challenge of its own, or none at all, confirm nothing;
//! - a restored signer does not reset a spent daily limit: with limit L, a spend signed by
//!   {1, 2}, then signer 2 restored (and confirmed), a spend asked of {2, 3} is refused by
//!   signer 2 for the window after the restore, naming the rule; without the rule both
//!   signers' records and statements would allow it (neither saw the first spend).

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;
#[path = "common/driver.rs"]
mod driver;

use std::path::PathBuf;

use anyhow::{bail, ensure, Result};
use ckm::keys::GroupKey;
use ckm::message::{CoordinatorToSigner, ErrorCode, SessionId, SignerToCoordinator};
use ckm::net::client::CallError;
use ckm::protocol::lifecycle::Challenge;
use cluster::*;
use driver::Driver;

type Funding = std::collections::HashMap<bitcoin::OutPoint, bitcoin::TxOut>;

/// Stops signer `i` (0-based), wipes its home, restores it from two of `files` and starts
/// it again on its port.
fn restore(c: &mut Cluster, i: usize, files: &[PathBuf]) -> Result<()> {
    let home = c.signers[i].home.clone();
    c.signers[i].stop()?;
    std::fs::remove_dir_all(&home)?;
    let out = restore_from(&home, &[&files[0], &files[1]])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["identity"] == c.signers[i].identity.to_string(), "{v}");
    c.signers[i].relaunch_same_port(Kind::Honest)?;
    c.sync_roster()
}

fn refused_with(reply: Result<SignerToCoordinator, CallError>, code: ErrorCode) -> Result<String> {
    match reply {
        Err(CallError::Refused {
            code: got, message, ..
        }) if got == code => Ok(message),
        other => bail!("expected a {code:?} refusal, got {other:?}"),
    }
}

#[test]
fn an_old_backup_restored_after_a_refresh_never_signs_again() -> Result<()> {
    let mut c = Cluster::with_wallet(3, 2)?;
    let funding = fund(&c, &FUNDS)?;
    let files = backup_2of3(&c.signers[0].home, &c.dir.path().join("backup"))?;
    // The coordinator's view at epoch 0, kept to ask the restored signer for that epoch.
    let old = Driver::new(&c, WALLET)?;
    let v = ckm_json(&c.coord, &["wallet", "refresh"])?;
    ensure!(v["epoch"] == 1, "{v}");
    restore(&mut c, 0, &files)?;

    let out = ckm(
        &c.coord,
        &["--json", "wallet", "confirm-restored", "--signer", "1"],
    )?;
    ensure!(!out.status.success(), "a superseded share was confirmed");
    let err = json_error(&out)?;
    ensure!(err.contains("superseded"), "{err}");

    // Asked for its own (old) epoch, it refuses: not confirmed.
    let p = c.pay(&funding, &foreign_address(), 12_345, 2)?;
    let reply = old.commit(SessionId::random(&mut rand::thread_rng()), &p.psbt, 1)?;
    match reply {
        Err(CallError::Refused { code, message, .. }) => ensure!(
            code == ErrorCode::Unconfirmed && message.contains("confirm-restored"),
            "{code:?}: {message}"
        ),
        other => bail!("the restored old share committed: {:?}", other.is_ok()),
    }

    // The coordinator cannot make the confirmation up: no statements, or the members'
    // statements answering a challenge of its own, confirm nothing.
    let mut d = Driver::new(&c, WALLET)?;
    d.reload(&c, WALLET)?;
    let wallet = GroupKey::of(&d.meta.group);
    let own = Challenge([7; 32]);
    let mut statements = Vec::new();
    for i in [2, 3] {
        match d.call(
            i,
            &CoordinatorToSigner::EpochStatement {
                wallet,
                challenge: own,
            },
        )? {
            Ok(SignerToCoordinator::EpochStatement(s)) => {
                ensure!(s.statement.epoch == 1, "{s:?}");
                statements.push(s);
            }
            other => bail!("signer {i} gave no statement: {other:?}"),
        }
    }
    let none = d.call(
        1,
        &CoordinatorToSigner::ConfirmEpoch {
            wallet,
            statements: Vec::new(),
        },
    )?;
    let msg = refused_with(none, ErrorCode::UnknownSession)?;
    ensure!(msg.contains("no open epoch challenge"), "{msg}");
    match d.call(1, &CoordinatorToSigner::EpochChallenge { wallet })? {
        Ok(SignerToCoordinator::EpochChallenge {
            epoch, confirmed, ..
        }) => ensure!(epoch == 0 && !confirmed, "{epoch} {confirmed}"),
        other => bail!("no challenge: {other:?}"),
    }
    let replayed = d.call(
        1,
        &CoordinatorToSigner::ConfirmEpoch {
            wallet,
            statements: statements.clone(),
        },
    )?;
    let msg = refused_with(replayed, ErrorCode::Refused)?;
    ensure!(msg.contains("another challenge"), "{msg}");

    // The honest members still sign in epoch 1.
    let p = c.pay(&funding, &foreign_address(), 23_456, 2)?;
    let input = c.write_psbt("after.psbt", &p.psbt)?;
    let out = c.dir.path().join("after.signed.psbt");
    let v = c.sign_ok(&input, &out, &[])?;
    check_signed(&out, &p)?;
    ensure!(u16_array(&v["signer_indexes"])? == vec![2, 3], "{v}");
    Ok(())
}

/// The daily limit on every signer.
const LIMIT: u64 = 100_000;

#[test]
fn a_restored_signer_does_not_reset_a_spent_daily_limit() -> Result<()> {
    let mut c = Cluster::with_wallet(3, 2)?;
    let funding: Funding = fund(&c, &FUNDS)?;
    c.set_daily_limit(LIMIT)?;
    let files = backup_2of3(&c.signers[1].home, &c.dir.path().join("backup"))?;

    // X: 60 000 sat signed by {1, 2} (signer 3 down).
    c.signers[2].stop()?;
    let x = c.pay(&funding, &foreign_address(), 60_000, 2)?;
    let input = c.write_psbt("x.psbt", &x.psbt)?;
    let out = c.dir.path().join("x.signed.psbt");
    let v = c.sign_ok(&input, &out, &[])?;
    ensure!(u16_array(&v["signer_indexes"])? == vec![1, 2], "{v}");
    c.signers[2].relaunch_same_port(Kind::Honest)?;
    c.sync_roster()?;

    // Signer 2 restored from its backup and confirmed.
    restore(&mut c, 1, &files)?;
    let done = ckm_json(&c.coord, &["wallet", "confirm-restored", "--signer", "2"])?;
    ensure!(done["confirmed_by"] == serde_json::json!([1, 3]), "{done}");

    // Y: 60 000 sat asked of {2, 3} (signer 1 down): refused by signer 2.
    c.signers[0].stop()?;
    let y = c.pay(&funding, &foreign_address(), 60_001, 2)?;
    let input = c.write_psbt("y.psbt", &y.psbt)?;
    let out = c.dir.path().join("y.signed.psbt");
    let res = c.sign(&input, &out, &[])?;
    ensure!(!res.status.success(), "2L signed in one day");
    let err = String::from_utf8_lossy(&res.stderr).to_string() + &c.logs();
    ensure!(
        err.contains("restored from a backup and counts the daily limit"),
        "{err}"
    );
    Ok(())
}

#[test]
fn restore_brings_nothing_back_unconfirmed() -> Result<()> {
    let c = Cluster::with_wallet(3, 2)?;
    let files = backup_2of3(&c.signers[0].home, &c.dir.path().join("backup"))?;
    let fresh = c.dir.path().join("fresh");
    let out = ckm(
        &fresh,
        &[
            "--json",
            "signer",
            "restore",
            path_str(&files[0])?,
            path_str(&files[1])?,
        ],
    )?;
    ensure!(!out.status.success(), "restored without confirmation");
    let err = json_error(&out)?;
    ensure!(err.contains("pass --yes"), "{err}");
    ensure!(!fresh.join("signer").exists(), "something was written");
    let shown = String::from_utf8_lossy(&out.stderr);
    ensure!(!shown.contains("policy:"), "shown despite --json: {shown}");
    let out = ckm(
        &fresh,
        &[
            "signer",
            "restore",
            path_str(&files[0])?,
            path_str(&files[1])?,
        ],
    )?;
    ensure!(!out.status.success());
    let shown = String::from_utf8_lossy(&out.stderr);
    ensure!(
        shown.contains("epoch 0") && shown.contains("coordinators") && shown.contains(&c.coord_id),
        "{shown}"
    );
    Ok(())
}
