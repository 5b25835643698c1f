//! Share backups and coordinator recovery on a real chain (bitcoind + electrs):
//!
//! 1. A funded 2-of-3 wallet; signer 1 writes a 2-of-3 SSKR backup (and a second one); its
//!    home is wiped. One file alone, two files of different backups and a corrupted file are
//!    refused with nothing written; two files of the first backup restore it, the restored
//!    signer serves and, with signer 3 (signer 2 is down), co-signs a spend that bitcoind
//!    mines (a key-path spend).
//! 2. The coordinator's home is lost entirely. A new coordinator home, allowed by each
//!    signer's operator, runs `wallet recover --signer …`: the same descriptors and roster as
//!    before; after `wallet sync` the same balance as bitcoind's `scantxoutset` reports for
//!    the descriptor and the same next address as the lost coordinator would have given;
//!    the recovered coordinator co-signs a spend that is mined.
//!
//! Needs `--features regtest`.
#![cfg(feature = "regtest")]

#[path = "common/chain.rs"]
mod chain;
#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;
#[path = "common/testenv.rs"]
mod testenv;

use std::path::Path;

use anyhow::{ensure, Result};
use chain::*;
use ckm::signer::home::SignerHome;
use cluster::*;
use serde_json::json;
use testenv::TestEnv;

/// A 2-of-3 wallet funded with two outputs at its first receive address.
fn funded(env: &TestEnv) -> Result<(Cluster, String)> {
    let c = Cluster::with_wallet(3, 2)?;
    let (first, index) = address(&c)?;
    ensure!(index == 0);
    env.fund(&first, 200_000)?;
    env.fund(&first, 150_000)?;
    sync(&c, env)?;
    Ok((c, first))
}

/// `wallet send` of `amount`, mined; every input a key-path spend. Returns the signers used.
fn spend(c: &Cluster, env: &TestEnv, amount: u64) -> Result<Vec<u16>> {
    let sent = send(c, env, &foreign_address().to_string(), amount)?;
    let txid = json_str(&sent, "txid")?.to_string();
    let tx = mine_and_confirm(env, &txid)?;
    assert_key_path(&tx)?;
    u16_array(&sent["signers"])
}

#[test]
fn restored_signer_cosigns_a_mined_spend() -> Result<()> {
    let env = TestEnv::new()?;
    let (mut c, _) = funded(&env)?;
    let s1 = c.signers[0].home.clone();
    let id1 = c.signers[0].identity.to_string();
    let dir = c.dir.path().to_path_buf();
    let a = backup_2of3(&s1, &dir.join("backup-a"))?;
    let b = backup_2of3(&s1, &dir.join("backup-b"))?;
    ensure!(a.len() == 3 && b.len() == 3);

    c.signers[0].stop()?;
    std::fs::remove_dir_all(&s1)?;
    let mut corrupted = std::fs::read(&a[1])?;
    let at = corrupted.len() / 2;
    corrupted[at] = if corrupted[at] == b'a' { b'o' } else { b'a' };
    let bad = dir.join("corrupted.ur");
    std::fs::write(&bad, corrupted)?;
    for (files, needle) in [
        (vec![a[0].as_path()], "needs 2 shares"),
        (vec![a[0].as_path(), b[1].as_path()], "another backup"),
        (vec![a[0].as_path(), bad.as_path()], "corrupted"),
    ] {
        let out = restore_from(&s1, &files)?;
        ensure!(!out.status.success(), "{files:?} restored");
        let err = json_error(&out)?;
        ensure!(err.contains(needle), "{files:?}: {err}");
        ensure!(!s1.exists(), "{files:?} left {} behind", s1.display());
    }
    let out = restore_from(&s1, &[&a[1], &a[2]])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(SignerHome::public_identity(&s1)?.to_string() == id1);

    c.signers[0].relaunch_same_port(Kind::Honest)?;
    c.sync_roster()?;
    // Signed for again once the other members confirm its epoch.
    let done = ckm_json(&c.coord, &["wallet", "confirm-restored", "--signer", "1"])?;
    ensure!(done["confirmed_by"] == json!([2, 3]), "{done}");
    c.signers[1].stop()?;
    let used = spend(&c, &env, 300_000)?;
    ensure!(used == vec![1, 3], "{used:?}");
    Ok(())
}

fn descriptor(home: &Path) -> Result<serde_json::Value> {
    let mut v = ckm_json(home, &["wallet", "descriptor"])?;
    // URLs are not certified (and change when a signer restarts).
    if let Some(signers) = v["signers"].as_array_mut() {
        for s in signers {
            s["url"] = json!(null);
        }
    }
    Ok(v)
}

#[test]
fn recovered_coordinator_has_the_same_wallet_and_cosigns_a_mined_spend() -> Result<()> {
    let env = TestEnv::new()?;
    let (mut c, first) = funded(&env)?;
    // A payment with change, so the wallet also uses its internal keychain.
    spend(&c, &env, 60_000)?;
    sync(&c, &env)?;
    let before = descriptor(&c.coord)?;
    let (confirmed, _) = balance(&c.coord)?;

    // The coordinator's home is lost: a new one (new identity) in its place.
    let lost = std::mem::replace(&mut c.coord, c.dir.path().join("coord-new"));
    // What the lost coordinator would have given as the next address (index 1).
    let next = ckm_json(&lost, &["wallet", "address"])?;
    ensure!(next["index"] == 1, "{next}");
    std::fs::remove_dir_all(&lost)?;
    let id = json_str(&ckm_json(&c.coord, &["id"])?, "identity")?.to_string();
    c.allow_coordinator(&id)?;
    let args = c.recover_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let v = ckm_json(&c.coord, &args)?;
    ensure!(v["recovered"][0]["wallet"] == WALLET, "{v}");
    ensure!(
        descriptor(&c.coord)? == before,
        "other descriptors or roster"
    );

    // After a rescan: bitcoind's view of the descriptors, the balance, the next address.
    sync(&c, &env)?;
    let (recovered_balance, _) = balance(&c.coord)?;
    ensure!(
        recovered_balance == confirmed,
        "{recovered_balance} != {confirmed}"
    );
    let scan = env.rpc(
        "scantxoutset",
        json!([
            "start",
            [
                { "desc": json_str(&before, "external")?, "range": 20 },
                { "desc": json_str(&before, "internal")?, "range": 20 },
            ]
        ]),
    )?;
    ensure!(
        sats(&scan["total_amount"])? == confirmed,
        "bitcoind counts {} for the descriptors, the wallet {confirmed}",
        scan["total_amount"]
    );
    let again = ckm_json(&c.coord, &["wallet", "address"])?;
    ensure!(again == next, "next address {again} != {next}");
    ensure!(
        json_str(&again, "address")? != first,
        "the used address was given again"
    );

    let used = spend(&c, &env, 50_000)?;
    ensure!(used.len() == 2, "{used:?}");
    Ok(())
}
