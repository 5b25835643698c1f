//! The everyday wallet end to end (issue 26): batch payments, send-max, BIP-0021, coin control
//! and freezing, the fee guard, replacements — each with a real bitcoind and electrs, three
//! real `ckm signer serve` processes and the `ckm` CLI as coordinator, and each asserting on
//! what bitcoind reports. Needs `--features regtest`.
#![cfg(feature = "regtest")]

#[path = "common/chain.rs"]
mod chain;
#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;
#[path = "common/testenv.rs"]
mod testenv;

use std::collections::BTreeSet;

use anyhow::{anyhow, ensure, Context, Result};
use chain::*;
use cluster::{ckm, ckm_json, foreign_address, json_error, json_str, Cluster};
use serde_json::{json, Value};
use testenv::TestEnv;

const MAINNET: &str = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";

/// `ckm --json wallet send ARGS… --electrum URL` (add `--yes` yourself).
fn send_with(c: &Cluster, env: &TestEnv, args: &[&str]) -> Result<Value> {
    let url = env.electrum_url();
    let mut all = vec!["wallet", "send"];
    all.extend_from_slice(args);
    all.extend(["--electrum", url.as_str()]);
    ckm_json(&c.coord, &all)
}

/// The same, expected to fail: its error message (with the hint).
fn send_refused(c: &Cluster, env: &TestEnv, args: &[&str]) -> Result<String> {
    let url = env.electrum_url();
    let mut all = vec!["--json", "wallet", "send"];
    all.extend_from_slice(args);
    all.extend(["--electrum", url.as_str()]);
    let out = ckm(&c.coord, &all)?;
    ensure!(!out.status.success(), "ckm {all:?} succeeded");
    json_error(&out)
}

/// The outpoints a transaction spends, as bitcoind decodes it.
fn inputs_of(tx: &Value) -> Result<BTreeSet<String>> {
    tx["vin"]
        .as_array()
        .ok_or_else(|| anyhow!("no vin in {tx}"))?
        .iter()
        .map(|i| {
            Ok(format!(
                "{}:{}",
                i["txid"].as_str().ok_or_else(|| anyhow!("{i}"))?,
                i["vout"].as_u64().ok_or_else(|| anyhow!("{i}"))?
            ))
        })
        .collect()
}

/// Funds one fresh address per amount (each confirmed) and syncs; returns the outpoints.
fn fund_coins(c: &Cluster, env: &TestEnv, amounts: &[u64]) -> Result<Vec<String>> {
    let mut outpoints = Vec::new();
    for sats in amounts {
        let (addr, _) = address(c)?;
        let txid = env.fund(&addr, *sats)?;
        outpoints.push(format!("{txid}:0"));
    }
    sync(c, env)?;
    Ok(outpoints)
}

#[test]
fn batch_of_three_outputs_with_bip21_and_recipients_checked_before_any_server() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;

    // No Electrum server is known yet: a bad recipient is named, not the missing server.
    let out = ckm(
        &c.coord,
        &[
            "--json",
            "wallet",
            "send",
            "--to",
            &format!("{MAINNET}:1000"),
            "--yes",
        ],
    )?;
    let e = json_error(&out)?;
    ensure!(
        e.contains(MAINNET) && e.contains("bitcoin") && e.contains("regtest"),
        "{e}"
    );
    let out = ckm(
        &c.coord,
        &[
            "--json",
            "wallet",
            "send",
            "--to",
            "notanaddress:1000",
            "--yes",
        ],
    )?;
    let e = json_error(&out)?;
    ensure!(e.contains("notanaddress"), "{e}");

    fund_coins(&c, &env, &[1_000_000])?;
    let (a, b, u) = (
        foreign_address().to_string(),
        foreign_address().to_string(),
        foreign_address().to_string(),
    );
    let to_a = format!("{a}:100000");
    let to_b = format!("{b}:0.002btc");
    let to_u = format!("bitcoin:{u}?amount=0.003&label=rent%20march");
    let args = [
        "--to",
        &to_a,
        "--to",
        &to_b,
        "--to",
        &to_u,
        "--fee-rate",
        "2",
    ];
    // Without a terminal and without --yes: refused, nothing broadcast.
    let e = send_refused(&c, &env, &args)?;
    ensure!(e.contains("--yes"), "{e}");
    let mempool = env.rpc("getrawmempool", json!([]))?;
    ensure!(mempool.as_array().is_some_and(Vec::is_empty), "{mempool}");

    let mut with_yes = args.to_vec();
    with_yes.push("--yes");
    let sent = send_with(&c, &env, &with_yes)?;
    let review = &sent["review"];
    ensure!(
        review["recipients"].as_array().map(Vec::len) == Some(3),
        "{sent}"
    );
    ensure!(
        review["change"].as_array().map(Vec::len) == Some(1),
        "{sent}"
    );
    let txid = json_str(&sent, "txid")?.to_string();
    // The URI's label is kept for the transaction.
    let h = ckm_json(&c.coord, &["wallet", "history"])?;
    assert_eq!(h["transactions"][0]["txid"], json!(txid), "{h}");
    assert_eq!(h["transactions"][0]["label"], "rent march", "{h}");
    let tx = mine_and_confirm(&env, &txid)?;
    assert_key_path(&tx)?;
    for (addr, want) in [(&a, 100_000), (&b, 200_000), (&u, 300_000)] {
        let (_, out) = output_paying(&tx, addr)?;
        assert_eq!(sats(&out["value"])?, want, "{addr}");
    }
    let outs = tx["vout"].as_array().map(Vec::len);
    assert_eq!(outs, Some(4), "three payments and the change: {tx}");
    // The fee is what the review said.
    let fee = review["fee_sats"]
        .as_u64()
        .ok_or_else(|| anyhow!("{review}"))?;
    let entry = env.rpc("getrawtransaction", json!([txid, true]))?;
    let paid: u64 = entry["vout"]
        .as_array()
        .ok_or_else(|| anyhow!("{entry}"))?
        .iter()
        .map(|o| sats(&o["value"]))
        .sum::<Result<u64>>()?;
    assert_eq!(1_000_000 - paid, fee);

    // The old form still works.
    sync(&c, &env)?;
    let to = foreign_address().to_string();
    let sent = send(&c, &env, &to, 50_000)?;
    let tx = mine_and_confirm(&env, json_str(&sent, "txid")?)?;
    assert_eq!(sats(&output_paying(&tx, &to)?.1["value"])?, 50_000);
    Ok(())
}

#[test]
fn send_max_leaves_a_zero_balance_and_no_change_at_the_fallback_rate() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    let coins = fund_coins(&c, &env, &[300_000, 200_000])?;
    let to = foreign_address().to_string();
    let max = format!("{to}:max");
    // No --fee-rate: a fresh regtest chain has no estimate, so the fallback is used.
    let sent = send_with(&c, &env, &["--to", &max, "--yes"])?;
    let source = sent["review"]["fee_rate_source"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        source.contains("fallback") || source.contains("estimate"),
        "{sent}"
    );
    let txid = json_str(&sent, "txid")?.to_string();
    let tx = mine_and_confirm(&env, &txid)?;
    let outs = tx["vout"].as_array().ok_or_else(|| anyhow!("{tx}"))?;
    assert_eq!(outs.len(), 1, "no change: {tx}");
    assert_eq!(inputs_of(&tx)?, coins.iter().cloned().collect());
    let paid = sats(&output_paying(&tx, &to)?.1["value"])?;
    let fee = 500_000 - paid;
    let vsize = tx["vsize"].as_u64().ok_or_else(|| anyhow!("{tx}"))?;
    ensure!(
        fee >= 2 * vsize && fee <= 3 * vsize,
        "fee {fee} for {vsize} vB"
    );
    sync(&c, &env)?;
    assert_eq!(balance(&c.coord)?, (0, 0));
    Ok(())
}

#[test]
fn from_spends_exactly_that_coin_and_a_frozen_coin_is_never_spent() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    let coins = fund_coins(&c, &env, &[400_000, 200_000, 100_000])?;
    let (big, small) = (&coins[0], &coins[2]);

    let frozen = ckm_json(&c.coord, &["wallet", "freeze", big])?;
    ensure!(frozen[0]["changed"] == json!(true), "{frozen}");
    let listed = ckm_json(&c.coord, &["wallet", "coins"])?;
    let rows = listed.as_array().ok_or_else(|| anyhow!("{listed}"))?;
    assert_eq!(rows.len(), 3);
    for row in rows {
        let is_big = row["outpoint"].as_str() == Some(big.as_str());
        assert_eq!(row["frozen"], json!(is_big), "{row}");
        ensure!(row["confirmations"].as_u64() >= Some(1), "{row}");
        ensure!(
            row["keychain"] == "receive" && row["address"].is_string(),
            "{row}"
        );
    }
    let b = ckm_json(&c.coord, &["wallet", "balance"])?;
    assert_eq!(b["frozen_sats"], json!(400_000), "{b}");
    assert_eq!(b["confirmed_sats"], json!(300_000), "{b}");

    // --from on the frozen coin: refused, naming unfreeze.
    let to = foreign_address().to_string();
    let pay = format!("{to}:50000");
    let e = send_refused(
        &c,
        &env,
        &["--to", &pay, "--from", big, "--fee-rate", "2", "--yes"],
    )?;
    ensure!(
        e.contains(big.as_str()) && e.contains("frozen") && e.contains("unfreeze"),
        "{e}"
    );

    // --from the small coin: exactly that input.
    let sent = send_with(
        &c,
        &env,
        &["--to", &pay, "--from", small, "--fee-rate", "2", "--yes"],
    )?;
    let tx = mine_and_confirm(&env, json_str(&sent, "txid")?)?;
    assert_eq!(inputs_of(&tx)?, BTreeSet::from([small.clone()]));
    sync(&c, &env)?;

    // A payment bigger than any unfrozen coin uses the others, never the frozen one.
    let to = foreign_address().to_string();
    let pay = format!("{to}:220000");
    let sent = send_with(&c, &env, &["--to", &pay, "--fee-rate", "2", "--yes"])?;
    let tx = mine_and_confirm(&env, json_str(&sent, "txid")?)?;
    ensure!(
        !inputs_of(&tx)?.contains(big),
        "the frozen coin was spent: {tx}"
    );
    sync(&c, &env)?;
    // Send-max empties everything but the frozen coin.
    let max = format!("{}:max", foreign_address());
    let sent = send_with(&c, &env, &["--to", &max, "--fee-rate", "2", "--yes"])?;
    let tx = mine_and_confirm(&env, json_str(&sent, "txid")?)?;
    ensure!(
        !inputs_of(&tx)?.contains(big),
        "the frozen coin was spent: {tx}"
    );
    let (txid, vout) = big.split_once(':').ok_or_else(|| anyhow!("{big}"))?;
    ensure!(
        env.get_tx_out(txid, vout.parse()?)?.is_some(),
        "bitcoind no longer has the frozen coin unspent"
    );
    sync(&c, &env)?;
    let b = ckm_json(&c.coord, &["wallet", "balance"])?;
    assert_eq!(b["frozen_sats"], json!(400_000), "{b}");
    assert_eq!(b["confirmed_sats"], json!(0), "{b}");

    // Unfrozen, it is spendable again.
    ckm_json(&c.coord, &["wallet", "unfreeze", big])?;
    let pay = format!("{}:100000", foreign_address());
    let sent = send_with(
        &c,
        &env,
        &["--to", &pay, "--from", big, "--fee-rate", "2", "--yes"],
    )?;
    let tx = mine_and_confirm(&env, json_str(&sent, "txid")?)?;
    assert_eq!(inputs_of(&tx)?, BTreeSet::from([big.clone()]));
    Ok(())
}

#[test]
fn fee_guard_refuses_and_allow_high_fee_passes() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    fund_coins(&c, &env, &[500_000])?;
    let to = foreign_address().to_string();
    let small = format!("{to}:2000");
    // About 150 vB at 5 sat/vB: a fee far above 10% of 2000 sat.
    let e = send_refused(&c, &env, &["--to", &small, "--fee-rate", "5", "--yes"])?;
    ensure!(e.contains("10%") && e.contains("2000 sat"), "{e}");
    ensure!(
        e.contains("--allow-high-fee"),
        "the hint names the override: {e}"
    );
    // The fee-rate ceiling, for any payment.
    let big = format!("{to}:300000");
    let e = send_refused(&c, &env, &["--to", &big, "--fee-rate", "1500", "--yes"])?;
    ensure!(e.contains("1000 sat/vB") && e.contains("fee rate"), "{e}");
    assert_eq!(env.rpc("getrawmempool", json!([]))?, json!([]));

    let sent = send_with(
        &c,
        &env,
        &[
            "--to",
            &small,
            "--fee-rate",
            "5",
            "--allow-high-fee",
            "--yes",
        ],
    )?;
    let txid = json_str(&sent, "txid")?.to_string();
    let entry = env.rpc("getmempoolentry", json!([txid]))?;
    let fee = sats(&entry["fees"]["base"])?;
    ensure!(fee > 200, "fee {fee}");
    let tx = mine_and_confirm(&env, &txid)?;
    assert_eq!(sats(&output_paying(&tx, &to)?.1["value"])?, 2_000);
    Ok(())
}

/// `ckm --json wallet KIND TXID --fee-rate R --yes --electrum URL`.
fn unstick(c: &Cluster, env: &TestEnv, kind: &str, txid: &str, rate: &str) -> Result<Value> {
    let url = env.electrum_url();
    ckm_json(
        &c.coord,
        &[
            "wallet",
            kind,
            txid,
            "--fee-rate",
            rate,
            "--yes",
            "--electrum",
            &url,
        ],
    )
}

fn unstick_refused(
    c: &Cluster,
    env: &TestEnv,
    kind: &str,
    txid: &str,
    rate: &str,
) -> Result<String> {
    let url = env.electrum_url();
    let out = ckm(
        &c.coord,
        &[
            "--json",
            "wallet",
            kind,
            txid,
            "--fee-rate",
            rate,
            "--yes",
            "--electrum",
            &url,
        ],
    )?;
    ensure!(!out.status.success(), "wallet {kind} {txid} succeeded");
    json_error(&out)
}

/// A 500,000 sat coin, then a payment of 100,000 sat from it to a foreign address at 2 sat/vB
/// (unconfirmed): the recipient and the payment's txid.
fn payment_at_2_sat_per_vb(c: &Cluster, env: &TestEnv) -> Result<(String, String)> {
    fund_coins(c, env, &[500_000])?;
    let to = foreign_address().to_string();
    let sent = send_with(
        c,
        env,
        &["--to", &format!("{to}:100000"), "--fee-rate", "2", "--yes"],
    )?;
    Ok((to, json_str(&sent, "txid")?.to_string()))
}

fn mempool(env: &TestEnv) -> Result<BTreeSet<String>> {
    let v = env.rpc("getrawmempool", json!([]))?;
    Ok(v.as_array()
        .ok_or_else(|| anyhow!("{v}"))?
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect())
}

#[test]
fn bump_replaces_the_original_in_the_mempool_and_confirms() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    let (to, original) = payment_at_2_sat_per_vb(&c, &env)?;
    ensure!(mempool(&env)?.contains(&original));

    let e = unstick_refused(&c, &env, "bump", &original, "1")?;
    ensure!(e.contains("not above"), "{e}");
    let unknown = "00".repeat(32);
    let e = unstick_refused(&c, &env, "bump", &unknown, "10")?;
    ensure!(e.contains("not one of this wallet's"), "{e}");

    let bumped = unstick(&c, &env, "bump", &original, "10")?;
    let txid = json_str(&bumped, "txid")?.to_string();
    assert_eq!(bumped["replaces"], json!(original));
    let pool = mempool(&env)?;
    ensure!(
        pool.contains(&txid) && !pool.contains(&original),
        "{pool:?}"
    );
    let entry = env.rpc("getmempoolentry", json!([txid]))?;
    let rate = sats(&entry["fees"]["base"])? as f64 / entry["vsize"].as_f64().unwrap_or(1.0);
    ensure!(rate >= 9.9, "bumped rate {rate}");
    let tx = mine_and_confirm(&env, &txid)?;
    assert_eq!(sats(&output_paying(&tx, &to)?.1["value"])?, 100_000);
    sync(&c, &env)?;
    let e = unstick_refused(&c, &env, "bump", &txid, "20")?;
    ensure!(e.contains("already confirmed"), "{e}");
    Ok(())
}

#[test]
fn under_a_daily_limit_a_payment_is_bumped_twice_and_a_second_payment_refused() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    c.set_daily_limit(150_000_000)?;
    fund_coins(&c, &env, &[200_000_000, 200_000_000])?;
    let to = foreign_address().to_string();
    let sent = send_with(
        &c,
        &env,
        &["--to", &format!("{to}:1btc"), "--fee-rate", "2", "--yes"],
    )?;
    let original = json_str(&sent, "txid")?.to_string();
    // Counted as new spends, each bump would take 2 BTC out of a 1.5 BTC day.
    let first = unstick(&c, &env, "bump", &original, "10")?;
    let first = json_str(&first, "txid")?.to_string();
    let second = unstick(&c, &env, "bump", &first, "20")?;
    let second = json_str(&second, "txid")?.to_string();
    let pool = mempool(&env)?;
    ensure!(
        pool.contains(&second) && !pool.contains(&first) && !pool.contains(&original),
        "{pool:?}"
    );
    let e = send_refused(
        &c,
        &env,
        &[
            "--to",
            &format!("{}:1btc", foreign_address()),
            "--fee-rate",
            "2",
            "--yes",
        ],
    )?;
    ensure!(e.contains("policy daily-limit-sats"), "{e}");
    ensure!(
        mempool(&env)?.len() == 1,
        "the refused payment reached the mempool"
    );
    let tx = mine_and_confirm(&env, &second)?;
    assert_eq!(sats(&output_paying(&tx, &to)?.1["value"])?, 100_000_000);
    Ok(())
}

#[test]
fn cancel_confirms_and_the_original_never_does() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    let (to, original) = payment_at_2_sat_per_vb(&c, &env)?;
    let cancelled = unstick(&c, &env, "cancel", &original, "5")?;
    let txid = json_str(&cancelled, "txid")?.to_string();
    assert_eq!(cancelled["cancels"], json!(original));
    ensure!(
        cancelled["review"]["recipients"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "a cancellation pays nobody: {cancelled}"
    );
    let pool = mempool(&env)?;
    ensure!(
        pool.contains(&txid) && !pool.contains(&original),
        "{pool:?}"
    );
    let tx = mine_and_confirm(&env, &txid)?;
    ensure!(
        output_paying(&tx, &to).is_err(),
        "the cancellation pays the recipient: {tx}"
    );
    env.mine_blocks(1, None)?;
    ensure!(mempool(&env)?.is_empty());
    ensure!(
        env.get_raw_transaction(&original).is_err(),
        "bitcoind knows the cancelled transaction"
    );
    sync(&c, &env)?;
    let back = sats(&env.get_raw_transaction(&txid)?["vout"][0]["value"])?;
    assert_eq!(
        balance(&c.coord)?,
        (back, 0),
        "everything came back but the fee"
    );
    Ok(())
}

#[test]
fn cpfp_brings_the_package_to_the_rate() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    let (_, parent) = payment_at_2_sat_per_vb(&c, &env)?;
    let child = unstick(&c, &env, "cpfp", &parent, "20")?;
    let txid = json_str(&child, "txid")?.to_string();
    assert_eq!(child["parent"], json!(parent));
    let entry = env.rpc("getmempoolentry", json!([txid]))?;
    let ancestor_fee = sats(&entry["fees"]["ancestor"])?;
    let ancestor_size = entry["ancestorsize"]
        .as_u64()
        .ok_or_else(|| anyhow!("{entry}"))?;
    let rate = ancestor_fee as f64 / ancestor_size as f64;
    ensure!(
        (20.0..=21.0).contains(&rate),
        "package rate {rate}: {entry}"
    );
    let tx = env.get_raw_transaction(&txid)?;
    let spent = inputs_of(&tx)?;
    ensure!(spent.iter().all(|op| op.starts_with(&parent)), "{tx}");
    env.mine_blocks(1, None)?;
    for t in [&parent, &txid] {
        let tx = env.get_raw_transaction(t)?;
        ensure!(
            tx["confirmations"].as_u64() == Some(1),
            "{t} not mined: {tx}"
        );
    }
    Ok(())
}

/// `wallet history --json`: txid → the row.
fn history(c: &Cluster) -> Result<Vec<Value>> {
    let v = ckm_json(&c.coord, &["wallet", "history", "--limit", "100"])?;
    Ok(v["transactions"]
        .as_array()
        .ok_or_else(|| anyhow!("{v}"))?
        .clone())
}

fn row<'a>(rows: &'a [Value], txid: &str) -> Result<&'a Value> {
    rows.iter()
        .find(|r| r["txid"].as_str() == Some(txid))
        .ok_or_else(|| anyhow!("{txid} is not in the history: {rows:?}"))
}

#[test]
fn history_shows_pending_confirmed_replaced_and_cancelled_with_labels() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    let coins = fund_coins(&c, &env, &[400_000, 300_000, 200_000])?;
    let funding = coins[0].split(':').next().unwrap_or_default().to_string();
    let pay = |sats: u64| -> Result<String> {
        let to = format!("{}:{sats}", foreign_address());
        let sent = send_with(&c, &env, &["--to", &to, "--fee-rate", "2", "--yes"])?;
        Ok(json_str(&sent, "txid")?.to_string())
    };
    let a = pay(100_000)?;
    let a2 = json_str(&unstick(&c, &env, "bump", &a, "6")?, "txid")?.to_string();
    let b = pay(50_000)?;
    let b2 = json_str(&unstick(&c, &env, "cancel", &b, "8")?, "txid")?.to_string();
    let pending = pay(20_000)?;
    ckm_json(&c.coord, &["wallet", "label", &pending, "coffee"])?;

    let rows = history(&c)?;
    assert_eq!(row(&rows, &a)?["state"], "replaced");
    assert_eq!(row(&rows, &a)?["by"], json!(a2));
    assert_eq!(row(&rows, &b)?["state"], "cancelled");
    assert_eq!(row(&rows, &b)?["by"], json!(b2));
    for t in [&a2, &b2, &pending] {
        assert_eq!(row(&rows, t)?["state"], "pending", "{t}");
    }
    assert_eq!(row(&rows, &pending)?["label"], "coffee");
    let net = row(&rows, &pending)?["net_sats"]
        .as_i64()
        .unwrap_or_default();
    let fee = row(&rows, &pending)?["fee_sats"]
        .as_i64()
        .unwrap_or_default();
    assert_eq!(net, -20_000 - fee);
    assert_eq!(row(&rows, &funding)?["state"], "confirmed");
    // Newest first: every unconfirmed row before the confirmed ones.
    let states: Vec<&str> = rows.iter().filter_map(|r| r["state"].as_str()).collect();
    let first_confirmed = states.iter().position(|s| *s == "confirmed").unwrap_or(0);
    ensure!(
        states[first_confirmed..].iter().all(|s| *s == "confirmed"),
        "{states:?}"
    );

    env.mine_blocks(1, None)?;
    sync(&c, &env)?;
    let rows = history(&c)?;
    let tip = env.block_count()?;
    for t in [&a2, &b2, &pending] {
        let r = row(&rows, t)?;
        assert_eq!(r["state"], "confirmed", "{r}");
        assert_eq!(r["height"], json!(tip), "{r}");
        assert_eq!(r["confirmations"], json!(1), "{r}");
    }
    assert_eq!(row(&rows, &a)?["state"], "replaced");
    assert_eq!(row(&rows, &b)?["state"], "cancelled");
    // Paging.
    let page = ckm_json(
        &c.coord,
        &["wallet", "history", "--limit", "2", "--offset", "1"],
    )?;
    assert_eq!(page["transactions"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["total"], json!(rows.len()));
    assert_eq!(page["transactions"][0], rows[1]);

    // BIP-329: export, then import into a fresh coordinator home holding the same wallet.
    let (addr, _) = address(&c)?;
    ckm_json(&c.coord, &["wallet", "label", &addr, "savings"])?;
    ckm_json(
        &c.coord,
        &["wallet", "label", &coins[1], "from the exchange"],
    )?;
    // Freeze a coin other than the labelled one, so that the export holds four records
    // (the order of `wallet coins` decides nothing).
    let unspent = ckm_json(&c.coord, &["wallet", "coins"])?;
    let coin = unspent
        .as_array()
        .context("coins")?
        .iter()
        .filter_map(|u| u["outpoint"].as_str())
        .find(|o| *o != coins[1])
        .context("no unlabelled coin to freeze")?
        .to_string();
    ckm_json(&c.coord, &["wallet", "freeze", &coin])?;
    let dir = c.dir.path();
    let (labels, envelope) = (dir.join("labels.jsonl"), dir.join("vault.envelope"));
    let out = |p: &std::path::Path| p.to_str().unwrap_or_default().to_string();
    let exported = ckm_json(
        &c.coord,
        &["wallet", "labels", "export", "--out", &out(&labels)],
    )?;
    assert_eq!(exported["records"], json!(4), "{exported}");
    ckm_json(
        &c.coord,
        &[
            "wallet",
            "export",
            "--format",
            "envelope",
            "--out",
            &out(&envelope),
        ],
    )?;
    // A coordinator that lost its database but kept its identity, pinning the signers.
    let fresh = dir.join("coord2");
    std::fs::create_dir_all(&fresh)?;
    for f in ["identity.key", "identity.pub"] {
        std::fs::copy(c.coord.join(f), fresh.join(f))?;
    }
    let mut args = vec![
        "wallet".to_string(),
        "recover".into(),
        "--from".into(),
        out(&envelope),
    ];
    for s in &c.signers {
        args.extend(["--trust".to_string(), s.identity.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ckm_json(&fresh, &args)?;
    let imported = ckm_json(&fresh, &["wallet", "labels", "import", &out(&labels)])?;
    assert_eq!(imported["labels"], json!(3), "{imported}");
    assert_eq!(imported["frozen"], json!(1), "{imported}");
    let again = dir.join("labels2.jsonl");
    ckm_json(
        &fresh,
        &["wallet", "labels", "export", "--out", &out(&again)],
    )?;
    assert_eq!(
        std::fs::read_to_string(&labels)?,
        std::fs::read_to_string(&again)?
    );
    Ok(())
}

#[test]
fn history_shows_an_incoming_payment_dropped_from_the_mempool() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    // A confirmed coin of a key of the test's: it pays us, then pays someone else instead.
    let secp = bitcoin::secp256k1::Secp256k1::new();
    let payer = bitcoin::PrivateKey::new(
        bitcoin::secp256k1::SecretKey::new(&mut rand::thread_rng()),
        bitcoin::Network::Regtest,
    );
    let payer_address = bitcoin::Address::p2wpkh(
        &bitcoin::CompressedPublicKey::from_private_key(&secp, &payer)
            .map_err(|e| anyhow!("{e}"))?,
        bitcoin::Network::Regtest,
    );
    let coin = env.fund(&payer_address.to_string(), 1_000_000)?;
    let prev = env.get_raw_transaction(&coin)?;
    let spk = prev["vout"][0]["scriptPubKey"]["hex"]
        .as_str()
        .context("no scriptPubKey")?
        .to_string();
    let spend_coin_to = |to: &str, sats: u64| -> Result<String> {
        let unsigned = env.rpc(
            "createrawtransaction",
            json!([[{ "txid": coin, "vout": 0, "sequence": 0xffff_fffdu32 }],
                   [{ to: testenv::format_btc(sats) }]]),
        )?;
        let signed = env.rpc(
            "signrawtransactionwithkey",
            json!([unsigned, [payer.to_wif()],
                   [{ "txid": coin, "vout": 0, "scriptPubKey": spk, "amount": testenv::format_btc(1_000_000) }]]),
        )?;
        ensure!(signed["complete"] == json!(true), "{signed}");
        env.send_raw(signed["hex"].as_str().context("no hex")?)
    };
    let (addr, _) = address(&c)?;
    sync(&c, &env)?;
    let incoming = spend_coin_to(&addr, 990_000)?;
    let state_of = |txid: &str| -> Result<String> {
        sync(&c, &env)?;
        Ok(row(&history(&c)?, txid)?["state"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    };
    let wait_for = |txid: &str, state: &str| -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let now = state_of(txid);
            if now.as_deref().ok() == Some(state) {
                return Ok(());
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "{txid} is {now:?}, not {state}"
            );
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    };
    wait_for(&incoming, "pending")?;

    // The payer replaces it with a payment elsewhere (higher fee): bitcoind drops ours.
    let conflict = spend_coin_to(testenv::BURN_ADDRESS, 980_000)?;
    let pool = mempool(&env)?;
    ensure!(
        pool.contains(&conflict) && !pool.contains(&incoming),
        "{pool:?}"
    );
    ensure!(env.rpc("getmempoolentry", json!([incoming])).is_err());
    wait_for(&incoming, "dropped")?;
    let (confirmed, unconfirmed) = balance(&c.coord)?;
    ensure!(
        confirmed == 0 && unconfirmed == 0,
        "the dropped payment still counts: {confirmed} + {unconfirmed}"
    );
    // Once the conflict confirms, it stays dropped.
    let tx = mine_and_confirm(&env, &conflict)?;
    ensure!(inputs_of(&tx)?.contains(&format!("{coin}:0")), "{tx}");
    ensure!(state_of(&incoming)? == "dropped");
    Ok(())
}
