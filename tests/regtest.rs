//! End to end on a real chain: a real bitcoind and electrs (see `tests/common/testenv.rs`),
//! three real `ckm signer serve` processes and the `ckm` CLI as coordinator. Every test
//! asserts on what bitcoind reports. Needs `--features regtest` (`just test` enables it).
#![cfg(feature = "regtest")]

#[path = "common/chain.rs"]
mod chain;
#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;
#[path = "common/testenv.rs"]
mod testenv;

use anyhow::{anyhow, ensure, Context, Result};
use chain::*;
use cluster::{ckm, ckm_json, foreign_address, json_str, u16_array, Cluster, Kind};
use serde_json::json;
use testenv::TestEnv;

#[test]
fn key_path_spend_is_accepted_to_the_mempool_and_mined() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    let (addr, _) = address(&c)?;
    env.fund(&addr, 1_000_000)?;
    sync(&c, &env)?;
    assert_eq!(balance(&c.coord)?, (1_000_000, 0));

    let to = foreign_address().to_string();
    let sent = send(&c, &env, &to, 300_000)?;
    let txid = json_str(&sent, "txid")?.to_string();
    let entry = env.rpc("getmempoolentry", json!([txid]))?;
    ensure!(
        entry["vsize"].as_u64().is_some(),
        "not in the mempool: {entry}"
    );
    let signers = u16_array(&sent["signers"])?;
    assert_eq!(signers.len(), 2, "two signers co-signed: {sent}");
    // The first spend fetched the signers' preprocessed commitments.
    assert_eq!(sent["mode"], "preprocessed-first", "{sent}");

    let tx = mine_and_confirm(&env, &txid)?;
    assert_key_path(&tx)?;
    let (vout, out) = output_paying(&tx, &to)?;
    assert_eq!(sats(&out["value"])?, 300_000);
    let utxo = env
        .get_tx_out(&txid, vout as u32)?
        .ok_or_else(|| anyhow!("gettxout found no unspent output"))?;
    assert_eq!(sats(&utxo["value"])?, 300_000);

    // The next spend is signed in one round trip, and accepted and mined just the same.
    sync(&c, &env)?;
    let to = foreign_address().to_string();
    let sent = send(&c, &env, &to, 200_000)?;
    assert_eq!(sent["mode"], "one-round", "{sent}");
    let txid = json_str(&sent, "txid")?.to_string();
    let tx = mine_and_confirm(&env, &txid)?;
    assert_key_path(&tx)?;
    let (_, out) = output_paying(&tx, &to)?;
    assert_eq!(sats(&out["value"])?, 200_000);
    Ok(())
}

#[test]
fn payment_from_several_utxos_leaves_the_change_as_balance() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    for _ in 0..3 {
        let (addr, _) = address(&c)?;
        env.fund(&addr, 200_000)?;
    }
    sync(&c, &env)?;
    assert_eq!(balance(&c.coord)?.0, 600_000);

    let to = foreign_address().to_string();
    let sent = send(&c, &env, &to, 450_000)?;
    let txid = json_str(&sent, "txid")?.to_string();
    let tx = mine_and_confirm(&env, &txid)?;
    assert_key_path(&tx)?;
    let inputs = tx["vin"].as_array().map(Vec::len).unwrap_or(0);
    ensure!(inputs >= 3, "expected at least 3 inputs, got {inputs}");

    let (vout, _) = output_paying(&tx, &to)?;
    let utxo = env
        .get_tx_out(&txid, vout as u32)?
        .ok_or_else(|| anyhow!("recipient output missing from the UTXO set"))?;
    assert_eq!(sats(&utxo["value"])?, 450_000);

    let outs = tx["vout"].as_array().ok_or_else(|| anyhow!("no vout"))?;
    ensure!(outs.len() == 2, "expected payment + change: {tx}");
    let change: u64 = outs
        .iter()
        .filter(|o| o["scriptPubKey"]["address"].as_str() != Some(to.as_str()))
        .map(|o| sats(&o["value"]))
        .sum::<Result<u64>>()?;
    let fee = 600_000 - 450_000 - change;
    ensure!(fee > 0 && fee < 2_000, "fee {fee} sat");
    sync(&c, &env)?;
    assert_eq!(balance(&c.coord)?, (change, 0), "balance equals the change");
    Ok(())
}

#[test]
fn every_two_of_three_subset_spends_with_the_third_signer_stopped() -> Result<()> {
    let env = TestEnv::new()?;
    let mut c = Cluster::with_wallet(3, 2)?;
    for _ in 0..3 {
        let (addr, _) = address(&c)?;
        env.fund(&addr, 300_000)?;
    }
    sync(&c, &env)?;
    for stopped in 0..3usize {
        c.signers[stopped].stop()?;
        let to = foreign_address().to_string();
        let sent = send(&c, &env, &to, 100_000)
            .with_context(|| format!("spending with signer {} stopped", stopped + 1))?;
        let txid = json_str(&sent, "txid")?.to_string();
        let signers = u16_array(&sent["signers"])?;
        let mut expected: Vec<u16> = (1..=3).filter(|i| usize::from(*i) != stopped + 1).collect();
        expected.sort_unstable();
        let mut got = signers.clone();
        got.sort_unstable();
        assert_eq!(got, expected, "signed by the two running signers");
        let tx = mine_and_confirm(&env, &txid)?;
        assert_key_path(&tx)?;
        sync(&c, &env)?;
        if c.signers[stopped].relaunch_same_port(Kind::Honest)? {
            c.sync_roster()?;
        }
    }
    Ok(())
}

#[test]
fn restarted_coordinator_shows_the_same_balance_and_next_address() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    let (addr, index) = address(&c)?;
    env.fund(&addr, 500_000)?;
    sync(&c, &env)?;
    let to = foreign_address().to_string();
    let sent = send(&c, &env, &to, 120_000)?;
    let txid = json_str(&sent, "txid")?.to_string();
    env.wait_until_electrum_sees(&txid, SYNC_TIMEOUT)?;
    let before = balance(&c.coord)?;
    ensure!(
        before.1 > 0,
        "the change is pending before mining: {before:?}"
    );

    // Each CLI run is a fresh process that reloads the wallet from SQLite; check the
    // library's reload too.
    let wallet = ckm::wallet::CkmWallet::load(&c.wallet_path())?;
    let b = wallet.bdk().balance();
    assert_eq!(
        (
            b.confirmed.to_sat(),
            (b.trusted_pending + b.untrusted_pending).to_sat()
        ),
        before
    );
    drop(wallet);
    assert_eq!(balance(&c.coord)?, before);
    let (_, next) = address(&c)?;
    assert_eq!(
        next,
        index + 1,
        "the next receive address continues after a restart"
    );

    mine_and_confirm(&env, &txid)?;
    sync(&c, &env)?;
    let after = balance(&c.coord)?;
    assert_eq!(after, (before.0 + before.1, 0));
    assert_eq!(balance(&c.coord)?, after);
    Ok(())
}

#[test]
fn file_workflow_create_sign_broadcast_confirms() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    let (addr, _) = address(&c)?;
    env.fund(&addr, 800_000)?;
    sync(&c, &env)?;
    let unsigned = c.dir.path().join("pay.psbt");
    let signed = c.dir.path().join("pay.signed.psbt");
    let to = foreign_address().to_string();
    let created = ckm_json(
        &c.coord,
        &[
            "psbt",
            "create",
            "--to",
            &to,
            "--amount",
            "250000",
            "--fee-rate",
            "3",
            "--out",
            unsigned.to_str().unwrap_or_default(),
        ],
    )?;
    let fee = created["fee_sats"]
        .as_u64()
        .ok_or_else(|| anyhow!("{created}"))?;
    ensure!(fee > 0, "fee {fee}");
    let report = ckm_json(
        &c.coord,
        &[
            "psbt",
            "sign",
            unsigned.to_str().unwrap_or_default(),
            "--out",
            signed.to_str().unwrap_or_default(),
        ],
    )?;
    ensure!(report["complete"] == json!(true), "{report}");
    // A non-finalized PSBT is refused by broadcast.
    let refused = ckm(
        &c.coord,
        &[
            "psbt",
            "broadcast",
            unsigned.to_str().unwrap_or_default(),
            "--electrum",
            &env.electrum_url(),
        ],
    )?;
    ensure!(!refused.status.success(), "an unsigned PSBT was broadcast");
    let sent = ckm_json(
        &c.coord,
        &[
            "psbt",
            "broadcast",
            signed.to_str().unwrap_or_default(),
            "--electrum",
            &env.electrum_url(),
        ],
    )?;
    let txid = json_str(&sent, "txid")?.to_string();
    assert_eq!(Some(txid.as_str()), report["txid"].as_str());
    let tx = mine_and_confirm(&env, &txid)?;
    assert_key_path(&tx)?;
    let (_, out) = output_paying(&tx, &to)?;
    assert_eq!(sats(&out["value"])?, 250_000);
    Ok(())
}

#[test]
fn exported_descriptor_derives_the_same_addresses_in_bitcoind() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    let desc = ckm_json(&c.coord, &["wallet", "descriptor"])?;
    let external = json_str(&desc, "external")?;
    let from_core = env.derive_addresses(external, Some((0, 9)))?;
    let mut from_ckm = Vec::new();
    for i in 0..10u64 {
        let (addr, index) = address(&c)?;
        assert_eq!(index, i);
        from_ckm.push(addr);
    }
    assert_eq!(from_core, from_ckm);
    // Bitcoin Core accepts both descriptors as valid and ranged.
    for key in ["external", "internal"] {
        let info = env.rpc("getdescriptorinfo", json!([json_str(&desc, key)?]))?;
        ensure!(info["isrange"] == json!(true), "{key}: {info}");
        ensure!(info["hasprivatekeys"] == json!(false), "{key}: {info}");
    }
    Ok(())
}
