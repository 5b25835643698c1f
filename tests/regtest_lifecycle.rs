//! Managing signers on a real chain (bitcoind + electrs). Each wallet is funded BEFORE the
//! operation at its first receive address; after `refresh`, `repair` (the repaired signer in
//! the signing subset), `add-signer` (the new signer in the subset) and `remove-signer`
//! (without it; shown the commit certificate, it erased its share) a spend from that address
//! is mined — every input of the mined transaction spends an output paying the first receive
//! address. `migrate` from 2-of-3 to 3-of-5 sweeps every coin, and the new wallet spends.
//! And `kill -9` of the coordinator or of one signer at each step of `refresh` and of `add-signer`, then `ckm wallet resume`: the signers agree on
//! one epoch and the wallet still spends; and `kill -9` of the coordinator at each step of
//! `refresh`, then a second coordinator with an empty home recovers the wallet from the
//! signers and resumes, and its spend is mined. Needs `--features regtest`.
#![cfg(feature = "regtest")]

#[path = "common/chain.rs"]
mod chain;
#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;
#[path = "common/killproxy.rs"]
mod killproxy;
#[path = "common/testenv.rs"]
mod testenv;

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use chain::*;
use ckm::wallet::CkmWallet;
use cluster::*;
use killproxy::{StepProxy, Victim};
use serde_json::json;
use testenv::TestEnv;

/// A `t`-of-`n` wallet funded with two outputs at its first receive address.
fn funded(env: &TestEnv, n: usize, t: u16) -> Result<(Cluster, String)> {
    let c = Cluster::with_wallet(n, t)?;
    let (first, index) = address(&c)?;
    ensure!(index == 0);
    env.fund(&first, 200_000)?;
    env.fund(&first, 150_000)?;
    sync(&c, env)?;
    Ok((c, first))
}

/// Spends `amount` (needing both funding outputs) with the running signers, mines it, and
/// checks on bitcoind that every input spends the first receive address and is a key-path
/// spend. Returns the signer indexes used.
fn spend_from_first(c: &Cluster, env: &TestEnv, first: &str, amount: u64) -> Result<Vec<u16>> {
    let sent = send(c, env, &foreign_address().to_string(), amount)?;
    let txid = json_str(&sent, "txid")?.to_string();
    let tx = mine_and_confirm(env, &txid)?;
    assert_key_path(&tx)?;
    for vin in tx["vin"].as_array().context("vin")? {
        let prev = env.get_raw_transaction(json_str(vin, "txid")?)?;
        let n = vin["vout"].as_u64().context("vout")?;
        let out = prev["vout"]
            .as_array()
            .and_then(|o| o.iter().find(|x| x["n"].as_u64() == Some(n)))
            .ok_or_else(|| anyhow!("no output {n} in {prev}"))?;
        ensure!(
            out["scriptPubKey"]["address"] == first,
            "an input spends {} not the first address {first}",
            out["scriptPubKey"]["address"]
        );
    }
    u16_array(&sent["signers"])
}

#[test]
fn refresh_then_spend_from_the_first_address() -> Result<()> {
    let env = TestEnv::new()?;
    let (c, first) = funded(&env, 3, 2)?;
    let v = ckm_json(&c.coord, &["wallet", "refresh"])?;
    ensure!(v["epoch"] == 1, "{v}");
    spend_from_first(&c, &env, &first, 300_000)?;
    Ok(())
}

#[test]
fn repair_then_spend_with_the_repaired_signer() -> Result<()> {
    let env = TestEnv::new()?;
    let (mut c, first) = funded(&env, 3, 2)?;
    // Signer 2's home is lost; a fresh home, approved both ways, takes its place.
    c.signers[1].stop()?;
    std::fs::remove_dir_all(&c.signers[1].home)?;
    let fresh = c.new_peer("s2-new")?;
    let v = ckm_json(
        &c.coord,
        &["wallet", "repair", "--signer", "2", "--to", &fresh.spec()],
    )?;
    // The repair and the refresh that revokes the lost share: one transition (epoch 1).
    ensure!(
        v["transition"] == "repair of signer 2 with a refresh" && v["epoch"] == 1,
        "{v}"
    );
    c.signers[1] = fresh;
    c.signers[0].stop()?;
    let used = spend_from_first(&c, &env, &first, 300_000)?;
    ensure!(
        used.contains(&2),
        "the repaired signer did not sign: {used:?}"
    );
    Ok(())
}

#[test]
fn add_signer_then_spend_with_the_new_signer() -> Result<()> {
    let env = TestEnv::new()?;
    let (mut c, first) = funded(&env, 3, 2)?;
    let s4 = c.new_peer("s4")?;
    let v = ckm_json(&c.coord, &["wallet", "add-signer", &s4.spec()])?;
    ensure!(v["signers"] == json!([1, 2, 3, 4]), "{v}");
    c.signers.push(s4);
    c.signers[0].stop()?;
    c.signers[1].stop()?;
    let used = spend_from_first(&c, &env, &first, 300_000)?;
    ensure!(used == vec![3, 4], "{used:?}");
    Ok(())
}

#[test]
fn remove_signer_then_spend_without_it() -> Result<()> {
    let env = TestEnv::new()?;
    let (c, first) = funded(&env, 3, 2)?;
    let v = ckm_json(&c.coord, &["wallet", "remove-signer", "--signer", "3"])?;
    ensure!(v["signers"] == json!([1, 2]), "{v}");
    // Shown the removal's commit certificate, signer 3 erased its share.
    let held = ckm_json(&c.signers[2].home, &["signer", "wallets"])?;
    ensure!(held == json!([]), "{held}");
    let used = spend_from_first(&c, &env, &first, 300_000)?;
    ensure!(used == vec![1, 2], "{used:?}");
    Ok(())
}

#[test]
fn migrate_2_of_3_to_3_of_5_sweeps_every_coin() -> Result<()> {
    let env = TestEnv::new()?;
    // Five signers; the old wallet uses the first three.
    let mut c = Cluster::start(5)?;
    let mut args = vec![
        "wallet".to_string(),
        "create".into(),
        WALLET.into(),
        "-t".into(),
        "2".into(),
    ];
    for s in &c.signers[..3] {
        args.push("--signer".into());
        args.push(s.spec());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.created = ckm_json(&c.coord, &args)?;
    let (first, _) = address(&c)?;
    env.fund(&first, 200_000)?;
    env.fund(&first, 150_000)?;
    sync(&c, &env)?;
    let mut migrate = vec![
        "wallet".to_string(),
        "migrate".into(),
        "--wallet".into(),
        WALLET.into(),
        "--to".into(),
        "vault5".into(),
        "--threshold".into(),
        "3".into(),
        "--yes".into(),
        "--electrum".into(),
        env.electrum_url(),
    ];
    for s in &c.signers {
        migrate.push("--signer".into());
        migrate.push(s.spec());
    }
    let migrate: Vec<&str> = migrate.iter().map(String::as_str).collect();
    let before = env.block_count()?;
    env.wait_until_electrum_height(before, SYNC_TIMEOUT)?;
    let v = ckm_json(&c.coord, &migrate)?;
    let txid = json_str(&v, "txid")?.to_string();
    // The new wallet's birth height is the tip when migrate made it (from the Electrum server).
    let shown = ckm_json(&c.coord, &["wallet", "show", "--wallet", "vault5"])?;
    ensure!(shown["birth_height"] == before, "{shown}, tip {before}");
    let swept = v["swept_sats"].as_u64().context("swept")?;
    let tx = mine_and_confirm(&env, &txid)?;
    ensure!(
        tx["vin"].as_array().map(Vec::len) == Some(2),
        "not every coin was swept: {tx}"
    );
    ensure!(swept > 349_000 && swept < 350_000, "swept {swept}");
    let tip = env.block_count()?;
    env.wait_until_electrum_height(tip, SYNC_TIMEOUT)?;
    let old = ckm_json(
        &c.coord,
        &[
            "wallet",
            "sync",
            "--wallet",
            WALLET,
            "--electrum",
            &env.electrum_url(),
        ],
    )?;
    ensure!(
        old["confirmed_sats"] == 0 && old["unconfirmed_sats"] == 0,
        "the old wallet still holds coins: {old}"
    );
    // The new 3-of-5 wallet sees the coins and spends with three signers.
    let tip = env.block_count()?;
    env.wait_until_electrum_height(tip, SYNC_TIMEOUT)?;
    let synced = ckm_json(
        &c.coord,
        &[
            "wallet",
            "sync",
            "--wallet",
            "vault5",
            "--electrum",
            &env.electrum_url(),
        ],
    )?;
    ensure!(synced["confirmed_sats"] == swept, "{synced}");
    c.signers[0].stop()?;
    c.signers[1].stop()?;
    let sent = ckm_json(
        &c.coord,
        &[
            "wallet",
            "send",
            "--wallet",
            "vault5",
            "--to",
            &foreign_address().to_string(),
            "--amount",
            "100000",
            "--fee-rate",
            "2",
            "--yes",
            "--electrum",
            &env.electrum_url(),
        ],
    )?;
    let tx = mine_and_confirm(&env, json_str(&sent, "txid")?)?;
    assert_key_path(&tx)?;
    ensure!(u16_array(&sent["signers"])?.len() == 3);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Kill points
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Refresh,
    /// An enrolment alone (`--no-refresh`).
    AddSigner,
    /// An enrolment and a refresh, one transition (the default).
    AddSignerRefresh,
}

/// Points the coordinator's roster entry of the signer with `identity` at `url`.
fn route(c: &Cluster, identity: &ckm::identity::IdentityPublic, url: &str) -> Result<()> {
    let mut w = CkmWallet::load(&c.wallet_path())?;
    let mut meta = w.meta().clone();
    let entry = meta
        .roster
        .entries()
        .iter()
        .find(|e| e.identity == *identity)
        .cloned()
        .context("not in the roster")?;
    meta.roster
        .set_endpoint(entry.index, url.to_string(), entry.tls_sha256);
    w.set_meta(meta)?;
    Ok(())
}

/// One kill point: `op` runs with signer `proxied` behind a proxy that kills `victim` at
/// `step`; then the victim is brought back, `wallet resume` runs, every signer reports the
/// coordinator's epoch, and a spend from the wallet is mined.
fn kill_point(env: &TestEnv, op: Op, step: &str, victim: Victim) -> Result<()> {
    let what = format!("{op:?} / {step} / {victim:?}");
    let (mut c, first) = funded(env, 3, 2)?;
    let newcomer = match op {
        Op::AddSigner | Op::AddSignerRefresh => Some(c.new_peer("s4")?),
        Op::Refresh => None,
    };
    let enrol = if op == Op::AddSigner {
        ["wallet", "add-signer", "--no-refresh"].as_slice()
    } else {
        ["wallet", "add-signer"].as_slice()
    };
    // The proxied signer: signer 2 for a refresh, the newcomer for an enrolment (or signer 2
    // for the steps only the members see).
    let member_step = matches!(step, "repair_deltas" | "certify");
    let (upstream, pid) = match (&newcomer, member_step) {
        (Some(n), false) => (n.addr()?, n.pid()),
        _ => (c.signers[1].addr()?, c.signers[1].pid()),
    };
    let proxy = StepProxy::start(upstream, step, victim)?;
    let mut cmd = ckm_cmd(&c.coord);
    cmd.arg("--json");
    match (&newcomer, member_step) {
        (Some(n), false) => {
            cmd.args(enrol).arg(format!("{}#{}", proxy.url, n.identity));
        }
        (Some(n), true) => {
            route(&c, &c.signers[1].identity, &proxy.url)?;
            cmd.args(enrol).arg(n.spec());
        }
        (None, _) => {
            route(&c, &c.signers[1].identity, &proxy.url)?;
            cmd.args(["wallet", "refresh"]);
        }
    }
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    match victim {
        Victim::Coordinator => proxy
            .pid
            .store(child.id(), std::sync::atomic::Ordering::SeqCst),
        Victim::Signer => proxy
            .pid
            .store(pid.context("no pid")?, std::sync::atomic::Ordering::SeqCst),
    }
    let out = child.wait_with_output()?;
    ensure!(
        proxy.fired.load(std::sync::atomic::Ordering::SeqCst),
        "{what}: the step never passed the proxy ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Bring the victim back (a signer restarts on its own home and port).
    if victim == Victim::Signer {
        match (&mut c, &newcomer, member_step) {
            (_, Some(_), false) => {}
            (c, _, _) => {
                c.signers[1].kill();
                c.signers[1].relaunch_same_port(Kind::Honest)?;
            }
        }
    }
    let mut newcomer = newcomer;
    if let (Some(n), false, Victim::Signer) = (&mut newcomer, member_step, victim) {
        n.kill();
        n.relaunch_same_port(Kind::Honest)?;
    }
    resume(&c, &what)?;
    if let Some(n) = newcomer.take() {
        c.signers.push(n);
    }
    c.sync_roster()?;
    let epoch = agreed_epoch(&c, &what)?;
    spend_from_first(&c, env, &first, 300_000)
        .with_context(|| format!("{what}: spending after resume"))?;
    eprintln!("{what}: resumed at epoch {epoch}, spent");
    Ok(())
}

/// `wallet resume` until the coordinator has no transition left (at most a few tries).
fn resume(c: &Cluster, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = ckm(&c.coord, &["--json", "wallet", "resume"])?;
        if out.status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: resume keeps failing: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every signer reports the coordinator's epoch and nothing is pending; returns the epoch.
fn agreed_epoch(c: &Cluster, what: &str) -> Result<serde_json::Value> {
    let shown = ckm_json(&c.coord, &["wallet", "show"])?;
    let epoch = shown["epoch"].clone();
    for r in shown["signers"].as_array().context("signers")? {
        ensure!(
            r["epoch"] == epoch && r["agrees"] == true,
            "{what}: a signer disagrees after resume: {shown}"
        );
    }
    ensure!(shown["pending"].is_null(), "{what}: {shown}");
    Ok(epoch)
}

/// Every step of a refresh a kill can hit.
const REFRESH_STEPS: [&str; 6] = [
    "begin",
    "refresh_round1",
    "refresh_round2",
    "prepare",
    "vote",
    "decide",
];

#[test]
fn kill_points_of_refresh() -> Result<()> {
    let env = TestEnv::new()?;
    for step in REFRESH_STEPS {
        for victim in [Victim::Coordinator, Victim::Signer] {
            kill_point(&env, Op::Refresh, step, victim)?;
        }
    }
    Ok(())
}

#[test]
fn kill_points_of_add_signer() -> Result<()> {
    let env = TestEnv::new()?;
    for step in [
        "begin",
        "repair_deltas",
        "certify",
        "repair_sigmas",
        "prepare",
        "vote",
        "decide",
    ] {
        for victim in [Victim::Coordinator, Victim::Signer] {
            kill_point(&env, Op::AddSigner, step, victim)?;
        }
    }
    Ok(())
}

/// The enrolment with a refresh is one transition: killed at any step, resume leaves every
/// signer in one epoch, before it or after it (never a repaired-but-unrefreshed one).
#[test]
fn kill_points_of_add_signer_with_refresh() -> Result<()> {
    let env = TestEnv::new()?;
    for step in [
        "begin",
        "repair_deltas",
        "refresh_round1",
        "refresh_round2",
        "prepare",
        "vote",
        "decide",
    ] {
        for victim in [Victim::Coordinator, Victim::Signer] {
            kill_point(&env, Op::AddSignerRefresh, step, victim)?;
        }
    }
    Ok(())
}

/// A second coordinator, allowed by every signer's operator for the wallet: its home (empty
/// until it recovers the wallet from the signers).
fn second_coordinator(c: &mut Cluster) -> Result<std::path::PathBuf> {
    let home = c.dir.path().join("coord-b");
    let id = json_str(&ckm_json(&home, &["id"])?, "identity")?.to_string();
    c.allow_coordinator(&id)?;
    c.sync_roster()?;
    Ok(home)
}

/// `kill -9` of coordinator A at `step` of a refresh; then coordinator B, whose home holds no
/// wallet, recovers the wallet from the signers, resumes (it decides nothing itself: it
/// spreads the members' certificate or gathers their votes), every signer agrees on B's
/// epoch, and B's spend is mined.
fn resumed_by_another(env: &TestEnv, step: &str) -> Result<()> {
    let what = format!("refresh / {step} / resumed by a second coordinator");
    let (mut c, first) = funded(env, 3, 2)?;
    let b = second_coordinator(&mut c)?;
    let upstream = c.signers[1].addr()?;
    let proxy = StepProxy::start(upstream, step, Victim::Coordinator)?;
    route(&c, &c.signers[1].identity, &proxy.url)?;
    let mut cmd = ckm_cmd(&c.coord);
    cmd.args(["--json", "wallet", "refresh"]);
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    proxy
        .pid
        .store(child.id(), std::sync::atomic::Ordering::SeqCst);
    let out = child.wait_with_output()?;
    ensure!(
        proxy.fired.load(std::sync::atomic::Ordering::SeqCst),
        "{what}: the step never passed the proxy ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lost = std::mem::replace(&mut c.coord, b);
    let args = c.recover_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let v =
        ckm_json(&c.coord, &args).with_context(|| format!("{what}: recovering the wallet at B"))?;
    ensure!(v["recovered"][0]["wallet"] == WALLET, "{what}: {v}");
    resume(&c, &what)?;
    let epoch = agreed_epoch(&c, &what)?;
    sync(&c, env)?;
    spend_from_first(&c, env, &first, 300_000)
        .with_context(|| format!("{what}: spending after resume"))?;
    drop(lost);
    eprintln!("{what}: resumed at epoch {epoch}, spent");
    Ok(())
}

#[test]
fn kill_points_of_refresh_resumed_by_a_second_coordinator() -> Result<()> {
    let env = TestEnv::new()?;
    for step in REFRESH_STEPS {
        resumed_by_another(&env, step)?;
    }
    Ok(())
}
