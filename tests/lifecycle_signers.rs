//! Managing a wallet's signers with real `ckm signer serve` processes and the real command
//! line (`wallet refresh | remove-signer | add-signer | repair | show | verify`), each
//! followed by a co-signed spend checked by libbitcoinconsensus:
//!
//! - refresh: a new epoch everywhere; a signer started from a copy of its home taken before
//!   the refresh is refused for its epoch, and when asked for its old epoch its share is named
//!   invalid next to a new-epoch share;
//! - remove-signer: the others sign; the removed signer's copy cannot contribute;
//! - add-signer: a fresh signer, approved both ways, is enrolled and signs;
//! - repair: a signer whose home is gone gets its share back under a new identity and signs;
//!   an unapproved replacement is refused by the helpers and nothing changes;
//! - both are followed by a refresh (one command, one JSON result), so that no share from
//!   before them combines any more.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;
#[path = "common/driver.rs"]
mod driver;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use ckm::message::SessionId;
use ckm::net::client::CallError;
use ckm::signer::home::SignerHome;
use cluster::*;
use driver::Driver;

/// A copy of a stopped signer's home, under `name` in the cluster directory.
fn snapshot(c: &mut Cluster, i: usize, name: &str) -> Result<PathBuf> {
    c.signers[i].stop()?;
    let to = c.dir.path().join(name);
    copy_dir(&c.signers[i].home, &to)?;
    c.signers[i].relaunch_same_port(Kind::Honest)?;
    c.sync_roster()?;
    Ok(to)
}

/// Spends from the wallet with whichever signers run (killing `down` first is the caller's
/// job); returns the signer indexes used.
fn spend(c: &Cluster, funding: &Funding, sats: u64, name: &str) -> Result<Vec<u16>> {
    let p = c.pay(funding, &foreign_address(), sats, 2)?;
    let input = c.write_psbt(&format!("{name}.psbt"), &p.psbt)?;
    let out = c.dir.path().join(format!("{name}.signed.psbt"));
    let v = c.sign_ok(&input, &out, &[])?;
    check_signed(&out, &p)?;
    let used = u16_array(&v["signer_indexes"])?;
    Ok(used)
}

type Funding = std::collections::HashMap<bitcoin::OutPoint, bitcoin::TxOut>;

fn show(c: &Cluster) -> Result<serde_json::Value> {
    ckm_json(&c.coord, &["wallet", "show"])
}

/// Round 1 and 2 through the hand-driven coordinator with exactly the signers of `chosen`,
/// asking each for its epoch there; returns a signer's round-1 refusal or the aggregation's
/// verdict.
fn force_sign(
    c: &Cluster,
    d: &mut Driver,
    funding: &Funding,
    chosen: &[(u16, u64)],
) -> Result<Result<(), String>> {
    let p = c.pay(funding, &foreign_address(), 12_345, 2)?;
    let session = SessionId::random(&mut rand::thread_rng());
    let mut committed = BTreeMap::new();
    for &(i, epoch) in chosen {
        d.meta.epoch = epoch;
        match d.commit(session, &p.psbt, i)? {
            Ok(a) => {
                committed.insert(i, a);
            }
            Err(CallError::Refused { code, message, .. }) => {
                return Ok(Err(format!("signer {i} refused ({code:?}): {message}")))
            }
            Err(e) => bail!("{e}"),
        }
    }
    let packages = d.packages(&p.psbt, &committed)?;
    let mut shares = BTreeMap::new();
    for &(i, _) in chosen {
        let s = d
            .sign(session, &packages, &BTreeMap::new(), i)?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        shares.insert(i, s);
    }
    Ok(d.aggregate(&p.psbt, &packages, &shares)
        .map(|_| ())
        .map_err(|e| format!("{e:#}")))
}

#[test]
fn refresh_and_remove_retire_old_shares() -> Result<()> {
    let mut c = Cluster::with_wallet(3, 2)?;
    let funding = fund(&c, &FUNDS)?;
    let before = snapshot(&mut c, 2, "s3-before-refresh")?;
    let address = ckm_json(&c.coord, &["wallet", "descriptor"])?;

    let v = ckm_json(&c.coord, &["wallet", "refresh"])?;
    ensure!(v["epoch"] == 1, "{v}");
    let s = show(&c)?;
    for r in s["signers"].as_array().context("signers")? {
        ensure!(r["epoch"] == 1 && r["agrees"] == true, "{s}");
    }
    ensure!(ckm_json(&c.coord, &["wallet", "verify"])?["verified"] == true);
    ensure!(
        ckm_json(&c.coord, &["wallet", "descriptor"])?["external"] == address["external"],
        "the descriptor changed"
    );
    spend(&c, &funding, 20_000, "after-refresh")?;

    // Signer 3 restarted from its old home: refused for its epoch; asked for epoch 0 it signs
    // with its old share, which does not combine with signer 1's new one.
    c.signers[2].stop()?;
    let current = c.signers[2].home.clone();
    let moved = c.dir.path().join("s3-current");
    std::fs::rename(&current, &moved)?;
    copy_dir(&before, &current)?;
    c.signers[2].relaunch_same_port(Kind::Honest)?;
    c.sync_roster()?;
    let mut d = Driver::new(&c, WALLET)?;
    match force_sign(&c, &mut d, &funding, &[(1, 1), (3, 1)])? {
        Err(e) => ensure!(e.contains("WrongEpoch") && e.contains("epoch 0"), "{e}"),
        Ok(()) => bail!("an old-epoch signer co-signed at epoch 1"),
    }
    match force_sign(&c, &mut d, &funding, &[(1, 1), (3, 0)])? {
        Err(e) => ensure!(
            e.contains("invalid signature share") && e.contains('3'),
            "{e}"
        ),
        Ok(()) => bail!("an old-epoch share combined with a new one"),
    }
    // Put the current home back.
    c.signers[2].stop()?;
    std::fs::remove_dir_all(&current)?;
    std::fs::rename(&moved, &current)?;
    c.signers[2].relaunch_same_port(Kind::Honest)?;
    c.sync_roster()?;

    // Remove signer 3 (it is even stopped): 1 and 2 sign; its copy cannot contribute.
    let removed = snapshot(&mut c, 2, "s3-removed")?;
    c.signers[2].stop()?;
    let v = ckm_json(&c.coord, &["wallet", "remove-signer", "--signer", "3"])?;
    ensure!(
        v["epoch"] == 2 && v["signers"] == serde_json::json!([1, 2]),
        "{v}"
    );
    let used = spend(&c, &funding, 21_000, "after-remove")?;
    ensure!(used == vec![1, 2], "{used:?}");
    // The removed signer's home, running again, is no longer asked; driven by hand it is
    // refused for its epoch (and its epoch-1 share would not combine).
    std::fs::remove_dir_all(&c.signers[2].home)?;
    copy_dir(&removed, &c.signers[2].home)?;
    c.signers[2].relaunch_same_port(Kind::Honest)?;
    let mut d = Driver::new(&c, WALLET)?;
    let url = c.signers[2].url.clone();
    let identity = c.signers[2].identity;
    d.meta.roster = d.meta.roster.with(ckm::keys::RosterEntry {
        index: 3,
        url,
        identity,
        tls_sha256: None,
    })?;
    match force_sign(&c, &mut d, &funding, &[(1, 2), (3, 2)])? {
        Err(e) => ensure!(e.contains("WrongEpoch"), "{e}"),
        Ok(()) => bail!("the removed signer co-signed"),
    }
    // Against the epoch-1 group, which still has a verifying share for signer 3: its old
    // share and signer 1's current one do not make a signature.
    d.meta.group = d.meta.transitions[0].state.group.clone();
    match force_sign(&c, &mut d, &funding, &[(1, 2), (3, 1)])? {
        Err(e) => ensure!(e.contains("invalid signature share"), "{e}"),
        Ok(()) => bail!("the removed signer's share combined with a current one"),
    }
    ensure!(ckm_json(&c.coord, &["wallet", "verify"])?["verified"] == true);
    Ok(())
}

#[test]
fn add_signer_and_repair_bring_in_new_identities() -> Result<()> {
    let mut c = Cluster::with_wallet(3, 2)?;
    let funding = fund(&c, &FUNDS)?;

    // Enrol signer 4: approved by the others (on the running servers) and approving them.
    let s4 = c.new_peer("s4")?;
    let v = ckm_json(&c.coord, &["wallet", "add-signer", &s4.spec()])?;
    // The enrolment and a refresh of every share, one transition (epoch 1).
    ensure!(
        v["transition"] == "enrolment of signer 4 with a refresh"
            && v["epoch"] == 1
            && v["signers"] == serde_json::json!([1, 2, 3, 4]),
        "{v}"
    );
    c.signers.push(s4);
    // Signers 1 and 2 stop: 3 and the new 4 sign.
    c.signers[0].stop()?;
    c.signers[1].stop()?;
    let used = spend(&c, &funding, 22_000, "after-enrol")?;
    ensure!(used == vec![3, 4], "{used:?}");
    c.signers[0].relaunch_same_port(Kind::Honest)?;
    c.signers[1].relaunch_same_port(Kind::Honest)?;
    c.sync_roster()?;

    // Signer 2 loses its home. An unapproved replacement is refused by the helpers.
    c.signers[1].stop()?;
    std::fs::remove_dir_all(&c.signers[1].home)?;
    let others: Vec<String> = [0usize, 2, 3]
        .iter()
        .map(|i| c.signers[*i].identity.to_string())
        .collect();
    // It approves the others, but no operator approved it.
    let home = c.dir.path().join("s2-stranger");
    let out = SignerProc::spawn_init(&home)?.wait_with_output()?;
    ensure!(out.status.success());
    let stranger = SignerProc::start_with_peers(&home, &c.coord_id, &others, Kind::Honest)?;
    let out = ckm(
        &c.coord,
        &[
            "--json",
            "wallet",
            "repair",
            "--signer",
            "2",
            "--to",
            &stranger.spec(),
        ],
    )?;
    ensure!(
        !out.status.success(),
        "an unapproved replacement was accepted"
    );
    let err = json_error(&out)?;
    ensure!(
        err.contains(&stranger.identity.to_string()) && err.contains("peers add"),
        "{err}"
    );
    ensure!(
        show(&c)?["epoch"] == 1,
        "the refused repair changed the epoch"
    );
    ensure!(
        share_files(&stranger.home)?.is_empty(),
        "the stranger kept a share"
    );

    // An approved replacement gets signer 2's share back.
    let fresh = c.new_peer("s2-new")?;
    let fresh_id = fresh.identity.to_string();
    let v = ckm_json(
        &c.coord,
        &["wallet", "repair", "--signer", "2", "--to", &fresh.spec()],
    )?;
    ensure!(
        v["transition"] == "repair of signer 2 with a refresh" && v["epoch"] == 2,
        "{v}"
    );
    c.signers[1] = fresh;
    ensure!(
        SignerHome::public_identity(&c.signers[1].home)?.to_string() == fresh_id,
        "wrong home"
    );
    // Only the repaired signer 2 and signer 4 run: they sign.
    c.signers[0].stop()?;
    c.signers[2].stop()?;
    let used = spend(&c, &funding, 23_000, "after-repair")?;
    ensure!(used == vec![2, 4], "{used:?}");
    let s = ckm_json(&c.coord, &["wallet", "verify"])?;
    ensure!(s["verified"] == true, "{s}");
    Ok(())
}
