//! Checks the regtest test environment itself (bitcoind + electrs), independent of the ckm
//! library. Needs the binaries from `regtest/install`; run with
//! `cargo test --features regtest --test regtest_env`.
#![cfg(feature = "regtest")]

#[path = "common/testenv.rs"]
mod testenv;

use std::time::Duration;

use testenv::{btc_to_sats, TestEnv, BURN_ADDRESS};

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn bitcoind_and_electrs_follow_the_chain() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    assert_eq!(env.block_count()?, 0);
    assert!(env.electrum_url().starts_with("tcp://127.0.0.1:"));
    assert!(env.rpc_url().starts_with("http://127.0.0.1:"));

    let hashes = env.mine_blocks(101, Some(BURN_ADDRESS))?;
    assert_eq!(hashes.len(), 101);
    assert_eq!(env.block_count()?, 101);
    env.wait_until_electrum_height(101, TIMEOUT)?;

    // The coinbase of block 1 is mature now; bitcoind and electrs both know it.
    let coinbase = env.coinbase_txid(&hashes[0])?;
    env.wait_until_electrum_sees(&coinbase, TIMEOUT)?;
    let out = env
        .get_tx_out(&coinbase, 0)?
        .ok_or_else(|| anyhow::anyhow!("gettxout found no output 0 of {coinbase}"))?;
    assert_eq!(btc_to_sats(&out["value"])?, 50 * 100_000_000);
    assert_eq!(out["confirmations"], 101);
    assert_eq!(out["coinbase"], true);
    assert_eq!(out["scriptPubKey"]["address"], BURN_ADDRESS);

    // Electrum reports the same transaction bytes as bitcoind.
    let raw = env.get_raw_transaction(&coinbase)?;
    let served = env.electrum_request(
        "blockchain.transaction.get",
        serde_json::json!([coinbase, false]),
    )?;
    assert_eq!(served, raw["hex"]);
    Ok(())
}

#[test]
fn fund_pays_exact_amounts_and_coinbases() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    // Any address nobody else uses: a key-path-less P2WSH is enough for bitcoind.
    let target = env.derive_addresses(
        "wsh(pk(0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798))",
        None,
    )?;
    let target = target[0].clone();

    let txid = env.fund(&target, 123_456)?;
    env.wait_until_electrum_sees(&txid, TIMEOUT)?;
    let out = env
        .get_tx_out(&txid, 0)?
        .ok_or_else(|| anyhow::anyhow!("fund output missing"))?;
    assert_eq!(btc_to_sats(&out["value"])?, 123_456);
    assert_eq!(out["confirmations"], 1);
    assert_eq!(out["scriptPubKey"]["address"], target.as_str());

    // A second payment reuses the faucet's change, larger than one coinbase needs more.
    let txid2 = env.fund(&target, 60 * 100_000_000)?;
    let out2 = env
        .get_tx_out(&txid2, 0)?
        .ok_or_else(|| anyhow::anyhow!("fund output missing"))?;
    assert_eq!(btc_to_sats(&out2["value"])?, 60 * 100_000_000);

    let before = env.block_count()?;
    let cb = env.fund_coinbase(&target)?;
    assert_eq!(env.block_count()?, before + 101);
    let out3 = env
        .get_tx_out(&cb, 0)?
        .ok_or_else(|| anyhow::anyhow!("coinbase output missing"))?;
    assert_eq!(out3["coinbase"], true);
    assert_eq!(out3["confirmations"], 101);

    // bitcoind's mempool checks and bitcoin-cli work against this node.
    let confirmed_hex = env.get_raw_transaction(&txid)?["hex"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let accept = env.test_mempool_accept(&confirmed_hex)?;
    assert_eq!(accept["allowed"], false, "{accept}");
    env.wait_until_electrum_synced(TIMEOUT)?;
    if env.binaries().bitcoin_cli.is_some() {
        let output = env.bitcoin_cli()?.arg("getblockcount").output()?;
        assert!(
            output.status.success(),
            "bitcoin-cli: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let count: u64 = String::from_utf8_lossy(&output.stdout).trim().parse()?;
        assert_eq!(count, env.block_count()?);
    }
    Ok(())
}
