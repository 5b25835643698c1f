//! Chain helpers shared by the regtest tests: sync through electrs, balances, `wallet send`,
//! mining and checks of what bitcoind reports. Include after `cluster.rs` and `testenv.rs`.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Result};

use crate::cluster::{ckm_json, json_str, Cluster};
use crate::testenv::TestEnv;

pub const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

pub fn sats(v: &serde_json::Value) -> Result<u64> {
    let btc = v.as_f64().ok_or_else(|| anyhow!("{v} is not an amount"))?;
    Ok((btc * 100_000_000.0).round() as u64)
}

pub fn address(c: &Cluster) -> Result<(String, u64)> {
    let v = ckm_json(&c.coord, &["wallet", "address"])?;
    let index = v["index"]
        .as_u64()
        .ok_or_else(|| anyhow!("no index in {v}"))?;
    Ok((json_str(&v, "address")?.to_string(), index))
}

/// Syncs through electrs until the wallet has seen the chain tip.
pub fn sync(c: &Cluster, env: &TestEnv) -> Result<serde_json::Value> {
    let tip = env.block_count()?;
    env.wait_until_electrum_height(tip, SYNC_TIMEOUT)?;
    let deadline = Instant::now() + SYNC_TIMEOUT;
    loop {
        let v = ckm_json(
            &c.coord,
            &["wallet", "sync", "--electrum", &env.electrum_url()],
        )?;
        if v["height"].as_u64() == Some(tip) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("wallet sync stuck at {v}, tip {tip}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub fn balance(home: &Path) -> Result<(u64, u64)> {
    let v = ckm_json(home, &["wallet", "balance"])?;
    let confirmed = v["confirmed_sats"].as_u64().ok_or_else(|| anyhow!("{v}"))?;
    let unconfirmed = v["unconfirmed_sats"]
        .as_u64()
        .ok_or_else(|| anyhow!("{v}"))?;
    Ok((confirmed, unconfirmed))
}

/// `wallet send` (co-signing across the signers, broadcast through electrs).
pub fn send(c: &Cluster, env: &TestEnv, to: &str, amount: u64) -> Result<serde_json::Value> {
    ckm_json(
        &c.coord,
        &[
            "wallet",
            "send",
            "--to",
            to,
            "--amount",
            &amount.to_string(),
            "--fee-rate",
            "2",
            "--yes",
            "--electrum",
            &env.electrum_url(),
        ],
    )
}

/// Mines a block and asserts the transaction is in it (1 confirmation).
pub fn mine_and_confirm(env: &TestEnv, txid: &str) -> Result<serde_json::Value> {
    env.mine_blocks(1, None)?;
    let tx = env.get_raw_transaction(txid)?;
    ensure!(
        tx["confirmations"].as_u64() == Some(1),
        "transaction {txid} not confirmed: {tx}"
    );
    Ok(tx)
}

/// Every input is a Taproot key-path spend: a single 64-byte witness element.
pub fn assert_key_path(tx: &serde_json::Value) -> Result<()> {
    let inputs = tx["vin"]
        .as_array()
        .ok_or_else(|| anyhow!("no vin in {tx}"))?;
    for (i, vin) in inputs.iter().enumerate() {
        let witness = vin["txinwitness"]
            .as_array()
            .ok_or_else(|| anyhow!("input {i} has no witness"))?;
        ensure!(
            witness.len() == 1 && witness[0].as_str().map(str::len) == Some(128),
            "input {i} is not a key-path spend: {witness:?}"
        );
    }
    Ok(())
}

pub fn output_paying<'a>(
    tx: &'a serde_json::Value,
    address: &str,
) -> Result<(u64, &'a serde_json::Value)> {
    tx["vout"]
        .as_array()
        .and_then(|outs| {
            outs.iter()
                .find(|o| o["scriptPubKey"]["address"].as_str() == Some(address))
        })
        .map(|o| (o["n"].as_u64().unwrap_or(u64::MAX), o))
        .ok_or_else(|| anyhow!("no output pays {address} in {tx}"))
}
