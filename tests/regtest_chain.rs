//! The chain-source trait (`ckm::chain`) against a real bitcoind and electrs: the Electrum
//! source reads the tip bitcoind reports, syncs a wallet to the balance bitcoind confirms,
//! relays a co-signed payment that bitcoind then holds in its mempool and mines, refuses a
//! double spend with the server's reason, and answers a fee estimate. Needs `--features
//! regtest` (`just test` enables it).
#![cfg(feature = "regtest")]

#[path = "common/testenv.rs"]
mod testenv;

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use bitcoin::{Address, Amount, FeeRate, Network};
use ckm::chain::electrum::Electrum;
use ckm::chain::{broadcast_and_record, ChainError, ChainSource};
use ckm::frost::pedersen::{run_in_memory, DkgParams};
use ckm::identity::IdentityKey;
use ckm::keys::{Roster, RosterEntry};
use ckm::wallet::{CkmWallet, WalletMeta};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use testenv::{TestEnv, BURN_ADDRESS};

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn electrum_source_syncs_relays_and_reads_the_tip() -> Result<()> {
    let env = TestEnv::new()?;
    let mut rng = StdRng::seed_from_u64(27);
    let shares = run_in_memory(DkgParams::new(2, 3)?, &mut rng)?;
    let group = shares[0].group().clone();
    let roster = Roster::new(
        (1..=3u16)
            .map(|index| RosterEntry {
                index,
                url: format!("http://127.0.0.1:{}", 41_000 + index),
                identity: IdentityKey::generate(&mut rng).public(),
                tls_sha256: None,
            })
            .collect(),
    )?;
    let dir = tempfile::tempdir()?;
    let mut wallet = CkmWallet::create(
        &dir.path().join("wallet.sqlite"),
        WalletMeta {
            name: "chain".into(),
            network: Network::Regtest,
            group,
            roster,
            electrum: None,
            keygen: None,
            epoch: 0,
            transitions: Vec::new(),
            pending: None,
            birth_height: None,
        },
    )?;

    // An unreachable server is an error of the source, not a hang.
    match Electrum::connect("tcp://127.0.0.1:1") {
        Err(ChainError::Source { source_name, .. }) => {
            ensure!(source_name.contains("127.0.0.1:1"), "{source_name}")
        }
        other => return Err(anyhow!("connect to a closed port: {other:?}")),
    }

    let address = wallet.reveal_next_address()?.address.to_string();
    env.fund(&address, 1_000_000)?;
    let height = env.block_count()?;
    env.wait_until_electrum_height(height, TIMEOUT)?;
    let source = Electrum::connect(&env.electrum_url())?;
    ensure!(
        u64::from(source.tip()?) == height,
        "tip != bitcoind's {height}"
    );

    let scripts = Arc::new(AtomicUsize::new(0));
    let seen = scripts.clone();
    let synced = source.sync(
        &mut wallet,
        Box::new(move |_| {
            seen.fetch_add(1, Ordering::Relaxed);
        }),
    )?;
    ensure!(
        u64::from(synced) == height,
        "synced to {synced}, tip {height}"
    );
    ensure!(scripts.load(Ordering::Relaxed) > 0, "no progress reported");
    let balance = wallet.balance();
    ensure!(
        balance.confirmed == Amount::from_sat(1_000_000),
        "{balance:?}"
    );
    ensure!(balance.unconfirmed == Amount::ZERO, "{balance:?}");

    // A payment co-signed in memory, relayed through the source, recorded in the wallet.
    let to = Address::from_str(BURN_ADDRESS)?.require_network(Network::Regtest)?;
    let rate = FeeRate::from_sat_per_vb(2).ok_or_else(|| anyhow!("fee rate"))?;
    let mut psbt = wallet.build_payment(&to, Amount::from_sat(300_000), rate)?;
    let review = wallet.review(&psbt)?;
    ensure!(
        review.payments.len() == 1 && review.change.len() == 1,
        "{review:?}"
    );
    let mut double = psbt.clone();
    let refs: Vec<_> = shares.iter().take(2).collect();
    let tx = ckm::psbt::sign_in_memory(&mut psbt, &refs, &mut rng)?;
    let txid = broadcast_and_record(&source, Some(&mut wallet), &tx)?;
    ensure!(txid == tx.compute_txid());
    let entry = env.rpc("getmempoolentry", json!([txid.to_string()]))?;
    ensure!(
        entry["vsize"].as_u64().is_some(),
        "not in the mempool: {entry}"
    );
    let after = wallet.balance();
    let change = review.change[0].amount;
    ensure!(
        after.confirmed == Amount::ZERO && after.unconfirmed == change,
        "recorded as unconfirmed: {after:?}, change {change}"
    );

    // The same coin spent again at a lower fee (no valid replacement): the server refuses
    // and says why.
    let paid = double
        .unsigned_tx
        .output
        .iter_mut()
        .find(|o| o.script_pubkey == to.script_pubkey())
        .ok_or_else(|| anyhow!("no output pays {to}"))?;
    paid.value += Amount::from_sat(100);
    let other = ckm::psbt::sign_in_memory(&mut double, &refs, &mut rng)?;
    ensure!(other.compute_txid() != txid);
    match source.broadcast(&other) {
        Err(ChainError::Refused { reason, .. }) => ensure!(!reason.is_empty()),
        other => return Err(anyhow!("a double spend was relayed: {other:?}")),
    }

    env.mine_blocks(1, None)?;
    env.wait_until_electrum_height(height + 1, TIMEOUT)?;
    source.sync(&mut wallet, Box::new(|_| {}))?;
    let mined = wallet.balance();
    ensure!(
        mined.confirmed == change && mined.unconfirmed == Amount::ZERO,
        "{mined:?}"
    );
    let raw = env.get_raw_transaction(&txid.to_string())?;
    ensure!(raw["confirmations"] == 1, "{raw}");

    // A fresh regtest chain has no fee data (bitcoind's estimatesmartfee finds none, electrs
    // answers -1): the source says so rather than inventing a rate.
    let estimate = source.fee_estimate(6)?;
    ensure!(
        estimate.is_none(),
        "an estimate on a fresh chain: {estimate:?}"
    );
    Ok(())
}
