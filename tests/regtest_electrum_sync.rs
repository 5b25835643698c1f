//! Electrum's incremental sync skips the scripts whose status (`blockchain.scripthash.subscribe`)
//! has not changed since the last sync (issue 27): what must still be seen is seen, a new
//! payment to an address already used, and a reorg that re-mines our payment at the same
//! height in another block (its status is unchanged: a status names heights, not blocks).
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

use anyhow::{ensure, Result};
use chain::{address, balance, sync};
use cluster::{json_str, Cluster};
use serde_json::json;
use testenv::{TestEnv, BURN_ADDRESS};

#[test]
fn incremental_electrum_syncs_skip_unchanged_scripts_but_miss_nothing() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    let (a, _) = address(&c)?;
    let (b, _) = address(&c)?;
    env.fund(&a, 100_000)?;
    env.fund(&b, 200_000)?;
    sync(&c, &env)?;
    ensure!(balance(&c.coord)? == (300_000, 0));
    // Nothing new: nothing changes.
    sync(&c, &env)?;
    ensure!(balance(&c.coord)? == (300_000, 0));

    // A second payment to an address already used (its status changes, the other's not).
    let second = env.fund(&a, 50_000)?;
    sync(&c, &env)?;
    ensure!(balance(&c.coord)? == (350_000, 0));

    // Its block is replaced by another at the same height holding the same transaction: the
    // script's status is the same, but the wallet's last block is gone from the server's
    // chain, so every script is synced again and the payment is confirmed in the new block
    // (skipped, it would keep its anchor in the stale block and count as unconfirmed).
    let tx = env.rpc("getrawtransaction", json!([second, true]))?;
    let old = json_str(&tx, "blockhash")?.to_string();
    let tip = env.block_count()?;
    ensure!(
        env.block_hash(tip)? == old,
        "the payment is not in the tip block"
    );
    env.rpc("invalidateblock", json!([old]))?;
    let made = env.rpc("generateblock", json!([BURN_ADDRESS, [second]]))?;
    let new = json_str(&made, "hash")?.to_string();
    ensure!(env.block_count()? == tip && new != old);
    // electrs follows on its own schedule, and its tip height does not change: wait for the
    // new block itself.
    let deadline = std::time::Instant::now() + chain::SYNC_TIMEOUT;
    loop {
        let hex = env.electrum_request("blockchain.block.header", json!([tip]))?;
        let bytes = hex::decode(hex.as_str().unwrap_or_default())?;
        let header: bitcoin::block::Header = bitcoin::consensus::deserialize(&bytes)?;
        if header.block_hash().to_string() == new {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "electrs never served {new}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let v = sync(&c, &env)?;
    ensure!(v["height"].as_u64() == Some(tip), "{v}");
    ensure!(
        balance(&c.coord)? == (350_000, 0),
        "after the same-height reorg: {:?}",
        balance(&c.coord)?
    );
    Ok(())
}
