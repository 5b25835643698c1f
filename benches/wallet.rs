//! The everyday wallet end to end (issue 26), through the real `ckm` command line.
//!
//! - **history / balance**: a 2-of-3 wallet (real signer processes, created by `ckm wallet
//!   create`) whose database holds 10 000 synthesised transactions (100 blocks of 99 made-up
//!   transactions, four in five paying one of 100 revealed addresses, one in five spending an
//!   earlier coin to a foreign address with change, plus 100 unconfirmed ones). Timed:
//!   `ckm --json wallet history` (the first page of 50), `wallet history --limit 10000`
//!   (every row) and `wallet balance`, each a whole process (start, unlock, load of the wallet
//!   from SQLite, the query, JSON out). The **cold start** is the first run of each after the
//!   database was written (the operating system's page cache may still hold the file: this
//!   measures ckm's own first load, not the disk); then one warm-up and the median of the
//!   repetitions. Baseline in the same run: `ckm --json id` (process start only),
//!   plus the library calls alone (`CkmWallet::load`, `history`, `balance`, in this process).
//! - **send**: `ckm --json wallet send --to ADDR:50000 --fee-rate 2 --yes` against a real
//!   bitcoind and electrs (a whole process: start, load, connect, build, review, co-signing by
//!   two of three local signer processes, broadcast, persist), against a single-key
//!   bdk_wallet (`tr(tprv/86'/1'/0'/0/*)`, SQLite) doing the same in this process: load,
//!   connect to the same electrs, build the same shape of transaction (one confirmed
//!   1 000 000 sat coin, one output and change), sign, broadcast, record, persist. Neither
//!   syncs (`wallet send` does not: `wallet sync` does). The two alternate; after each pair a
//!   block is mined and both wallets sync, untimed. Skipped, and said so, when `BITCOIND_EXE` / `ELECTRS_EXE` are
//!   not set (`eval "$(regtest/install --print-env)"`).
//!
//! - **sync** (issue 27): a regtest chain of about 2 000 blocks holding 1 000 transactions
//!   paying the wallet (100 revealed addresses), then `ckm --json wallet sync` of a fresh copy
//!   of the coordinator home (the first sync, from height 0) through `--bitcoind` and through
//!   `--electrum`, each a whole process; baseline in the same run: fetching the same blocks
//!   raw over RPC in this process (`getblockhash` + `getblock HASH 0`, decoded, over one
//!   kept-alive HTTP connection). Then one block with one more payment is mined and the synced
//!   homes sync again (the incremental sync), against their first sync. The same through
//!   `--cbf` (compact block filters from bitcoind's P2P port, given twice: two connections
//!   whose filter headers must agree, as with two peers).
//!
//! - **console** (issue 28, with `history`): `ckm console` on that same wallet, each page
//!   (overview, history first and last page, coins, send, receive, signers) timed over
//!   loopback HTTP with a session cookie, after one warm-up (the console computes balance,
//!   coins and history pages once per wallet state); then the first load of the overview,
//!   history and coins pages after each change of the wallet (a label written through the
//!   console), which computes them again. The budget is 100 ms a page.
//!
//! Output: a table on stdout and `target/bench/wallet.json`.
//!
//! Environment: `CKM_BENCH_WALLET_REPS` (timed repetitions of each row, default 9),
//! `CKM_BENCH_WALLET_ROWS` (`history`, `send`, `sync`, comma-separated; default all).

#[path = "../tests/common/cluster.rs"]
mod cluster;
#[path = "../tests/common/consensus.rs"]
mod consensus;
// Shared with the other benches; not every helper is used here.
#[allow(dead_code)]
mod common;
#[path = "../tests/common/testenv.rs"]
#[allow(unused_imports)]
mod testenv;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use bdk_electrum::electrum_client::ElectrumApi;
use bdk_wallet::chain::BlockId;
use bdk_wallet::rusqlite::Connection;
use bdk_wallet::{KeychainKind, SignOptions, Wallet};
use bitcoin::bip32::Xpriv;
use bitcoin::block::{Header, Version as BlockVersion};
use bitcoin::hashes::Hash;
use bitcoin::{
    Amount, Block, CompactTarget, FeeRate, NetworkKind, OutPoint, Transaction, TxMerkleNode, TxOut,
};
use ckm::wallet::CkmWallet;
use cluster::{ckm_cmd, ckm_json, copy_dir, foreign_address, json_str, Cluster};
use common::{env_number, log, max, median, min, ms, round3, spread};
use consensus::made_up_funding;
use rand::Rng;
use serde_json::json;
use testenv::TestEnv;

const BLOCKS: u32 = 100;
const PER_BLOCK: usize = 99;
const UNCONFIRMED: usize = 100;
const ADDRESSES: u32 = 100;
const SEND_SATS: u64 = 50_000;
const COIN_SATS: u64 = 1_000_000;

/// A row of the report: median, min and max in milliseconds.
fn stats(samples: &[f64]) -> serde_json::Value {
    json!({
        "median_ms": round3(median(samples)),
        "min_ms": round3(min(samples)),
        "max_ms": round3(max(samples)),
        "n": samples.len(),
    })
}

fn show(name: &str, samples: &[f64]) {
    println!("{name:<44} {}", spread(samples));
}

/// Runs `ckm --json ARGS…` in `home` and returns its wall time; fails on a failure.
fn timed_ckm(home: &Path, args: &[&str]) -> Result<f64> {
    let mut cmd: Command = ckm_cmd(home);
    cmd.arg("--json").args(args);
    let start = Instant::now();
    let out = cmd.output().with_context(|| format!("ckm {args:?}"))?;
    let elapsed = ms(start.elapsed());
    ensure!(
        out.status.success(),
        "ckm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(elapsed)
}

// ---------------------------------------------------------------------------------------
// History and balance over 10 000 transactions
// ---------------------------------------------------------------------------------------

/// Fills the cluster's wallet with 10 000 transactions: 100 blocks of 99, then 100
/// unconfirmed. Returns the number of transactions the wallet lists.
fn synthesise(c: &Cluster) -> Result<usize> {
    let mut rng = rand::thread_rng();
    let mut wallet = CkmWallet::load(&c.wallet_path())?;
    let ours: Vec<_> = wallet
        .bdk_mut()
        .reveal_addresses_to(KeychainKind::External, ADDRESSES - 1)
        .map(|a| a.address.script_pubkey())
        .collect();
    let change = wallet
        .bdk_mut()
        .reveal_next_address(KeychainKind::Internal)
        .address
        .script_pubkey();
    let foreign = foreign_address().script_pubkey();
    let mut coins: Vec<(OutPoint, u64)> = Vec::new();
    let next_tx = |rng: &mut rand::rngs::ThreadRng, coins: &mut Vec<(OutPoint, u64)>| {
        let spend = coins.len() > 10 && rng.gen_ratio(1, 5);
        if spend {
            let (prev, value) = coins.swap_remove(rng.gen_range(0..coins.len()));
            let mut tx = made_up_funding(rng, foreign.clone(), value / 2);
            if let Some(input) = tx.input.first_mut() {
                input.previous_output = prev;
            }
            tx.output = vec![
                TxOut {
                    value: Amount::from_sat(value / 2),
                    script_pubkey: foreign.clone(),
                },
                TxOut {
                    value: Amount::from_sat((value / 2).saturating_sub(500)),
                    script_pubkey: change.clone(),
                },
            ];
            coins.push((
                OutPoint::new(tx.compute_txid(), 1),
                (value / 2).saturating_sub(500),
            ));
            tx
        } else {
            let spk = ours[rng.gen_range(0..ours.len())].clone();
            let sats = rng.gen_range(10_000..5_000_000);
            let tx = made_up_funding(rng, spk, sats);
            coins.push((OutPoint::new(tx.compute_txid(), 0), sats));
            tx
        }
    };
    let genesis = wallet.bdk().latest_checkpoint().block_id();
    let mut prev = genesis;
    for height in 1..=BLOCKS {
        let txdata: Vec<Transaction> = (0..PER_BLOCK)
            .map(|_| next_tx(&mut rng, &mut coins))
            .collect();
        let block = Block {
            header: Header {
                version: BlockVersion::TWO,
                prev_blockhash: prev.hash,
                merkle_root: TxMerkleNode::all_zeros(),
                time: 1_700_000_000 + height * 600,
                bits: CompactTarget::from_consensus(0x207f_ffff),
                nonce: height,
            },
            txdata,
        };
        wallet
            .bdk_mut()
            .apply_block_connected_to(&block, height, prev)
            .map_err(|e| anyhow!("block {height}: {e}"))?;
        prev = BlockId {
            height,
            hash: block.block_hash(),
        };
    }
    let unconfirmed: Vec<(Transaction, u64)> = (0..UNCONFIRMED)
        .map(|i| (next_tx(&mut rng, &mut coins), 1_800_000_000 + i as u64))
        .collect();
    wallet.bdk_mut().apply_unconfirmed_txs(unconfirmed);
    wallet.persist()?;
    Ok(wallet.bdk().transactions().count())
}

fn history_rows(
    reps: usize,
    report: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    log("history: starting a 2-of-3 cluster and synthesising 10 000 transactions");
    let c = Cluster::with_wallet(3, 2)?;
    let start = Instant::now();
    let listed = synthesise(&c)?;
    log(format!(
        "history: {listed} transactions written in {:.1} s",
        start.elapsed().as_secs_f64()
    ));
    let db_mb = std::fs::metadata(c.wallet_path())?.len() as f64 / 1_048_576.0;
    let home = c.coord.clone();
    let rows: [(&str, Vec<&str>); 4] = [
        ("process start (ckm --json id)", vec!["id"]),
        ("wallet history (first 50)", vec!["wallet", "history"]),
        (
            "wallet history --limit 10000",
            vec!["wallet", "history", "--limit", "10000"],
        ),
        ("wallet balance", vec!["wallet", "balance"]),
    ];
    // Cold: the first run of each after the database was written.
    let mut cold = serde_json::Map::new();
    for (name, args) in &rows[1..] {
        let t = timed_ckm(&home, args)?;
        println!("{:<44} cold     {t:>9.2} ms", format!("{name}, cold start"));
        cold.insert((*name).to_string(), json!(round3(t)));
    }
    let total = ckm_json(&home, &["wallet", "history", "--limit", "1"])?;
    ensure!(
        total["total"].as_u64() == Some(listed as u64),
        "history lists {} of {listed}",
        total["total"]
    );
    let mut warm = serde_json::Map::new();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for (_, args) in &rows {
        timed_ckm(&home, args)?;
    }
    for _ in 0..reps {
        // Interleaved, so that drift hits every row alike.
        for (k, (_, args)) in rows.iter().enumerate() {
            samples[k].push(timed_ckm(&home, args)?);
        }
    }
    let floor = median(&samples[0]);
    for ((name, _), s) in rows.iter().zip(&samples) {
        show(name, s);
        let mut v = stats(s);
        v["vs_process_start"] = json!(round3(median(s) / floor));
        warm.insert((*name).to_string(), v);
    }
    // The library calls alone.
    let mut load = Vec::new();
    let mut hist = Vec::new();
    let mut bal = Vec::new();
    for _ in 0..=reps {
        let t = Instant::now();
        let w = CkmWallet::load(&c.wallet_path())?;
        load.push(ms(t.elapsed()));
        let t = Instant::now();
        let (page, n) = w.history(10_000, 0)?;
        hist.push(ms(t.elapsed()));
        ensure!(n == listed && page.len() == listed, "{n} / {}", page.len());
        let t = Instant::now();
        std::hint::black_box(w.balance());
        bal.push(ms(t.elapsed()));
    }
    // The first of each is the warm-up.
    for (name, s) in [
        ("library: CkmWallet::load", &load[1..]),
        ("library: history (all rows)", &hist[1..]),
        ("library: balance", &bal[1..]),
    ] {
        show(name, s);
        warm.insert(name.to_string(), stats(s));
    }
    report.insert(
        "history".into(),
        json!({
            "transactions": listed,
            "wallet_db_mb": round3(db_mb),
            "cold_ms": cold,
            "warm": warm,
        }),
    );
    console_rows(reps, &c, listed, report)
}

// ---------------------------------------------------------------------------------------
// The web console's pages on the same wallet
// ---------------------------------------------------------------------------------------

/// A running `ckm console` on the cluster's home.
struct ConsoleProc(std::process::Child);

impl Drop for ConsoleProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Each page of `ckm console` (issue 28) on the 10 000-transaction wallet: the time from
/// request to the last byte of the answer over loopback HTTP (one kept-alive connection),
/// after one warm-up load of each (the console keeps the wallet loaded). Budget: 100 ms.
fn console_rows(
    reps: usize,
    c: &Cluster,
    listed: usize,
    report: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    use std::io::BufRead;
    let mut child = ckm_cmd(&c.coord)
        .args([
            "console",
            "--listen",
            "127.0.0.1:0",
            "--probe-every",
            "3600",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting ckm console")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let _console = ConsoleProc(child);
    let mut url = String::new();
    std::io::BufReader::new(stdout).read_line(&mut url)?;
    let url = url.trim().to_string();
    let base = url
        .split("/login")
        .next()
        .ok_or_else(|| anyhow!("ckm console printed {url:?}"))?
        .to_string();
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()?;
    let login = http.get(&url).send()?;
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow!("no session cookie from {url}"))?
        .to_string();
    let last = listed.div_ceil(ckm::console::pages::PAGE_ROWS);
    let pages = [
        ("console: wallets overview", "/".to_string()),
        (
            "console: history, first page",
            "/w/vault/history".to_string(),
        ),
        (
            "console: history, last page",
            format!("/w/vault/history?page={last}"),
        ),
        ("console: coins", "/w/vault/coins".to_string()),
        ("console: send form", "/w/vault/send".to_string()),
        ("console: receive form", "/w/vault/receive".to_string()),
        ("console: signers", "/w/vault/signers".to_string()),
    ];
    let get = |path: &str| -> Result<f64> {
        let t = Instant::now();
        let r = http
            .get(format!("{base}{path}"))
            .header("cookie", &cookie)
            .send()?;
        let status = r.status();
        let body = r.bytes()?;
        let elapsed = ms(t.elapsed());
        ensure!(status.is_success(), "{path}: {status}");
        ensure!(!body.is_empty(), "{path}: empty");
        Ok(elapsed)
    };
    let t = Instant::now();
    get("/")?;
    let first = ms(t.elapsed());
    println!(
        "{:<44} cold     {first:>9.2} ms",
        "console: first page (loads the wallet)"
    );
    for (_, path) in &pages {
        get(path)?;
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); pages.len()];
    for _ in 0..reps.max(5) {
        for (k, (_, path)) in pages.iter().enumerate() {
            samples[k].push(get(path)?);
        }
    }
    let mut rows = serde_json::Map::new();
    for ((name, _), s) in pages.iter().zip(&samples) {
        show(name, s);
        let mut v = stats(s);
        v["within_100ms"] = json!(median(s) <= 100.0);
        rows.insert((*name).to_string(), v);
    }
    // The first load of each page after the wallet changed (a label written through the
    // console): what the console computes once per wallet state, uncached.
    let history_page = http
        .get(format!("{base}/w/vault/history"))
        .header("cookie", &cookie)
        .send()?
        .text()?;
    let field = |html: &str, marker: &str| -> Result<String> {
        let start = html
            .find(marker)
            .ok_or_else(|| anyhow!("no {marker} in the page"))?
            + marker.len();
        let end = html[start..]
            .find('"')
            .ok_or_else(|| anyhow!("unterminated {marker}"))?;
        Ok(html[start..start + end].to_string())
    };
    let csrf = field(&history_page, "name=\"csrf\" value=\"")?;
    let txid = field(&history_page, "data-txid=\"")?;
    let mut changes = 0u32;
    let mut change = || -> Result<()> {
        changes += 1;
        let r = http
            .post(format!("{base}/w/vault/label"))
            .header("cookie", &cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("kind", "tx"),
                ("reference", txid.as_str()),
                ("text", &format!("bench {changes}")),
            ])
            .send()?;
        ensure!(r.status().is_redirection(), "label: {}", r.status());
        Ok(())
    };
    let changed_pages = &pages[..4];
    let mut after: Vec<Vec<f64>> = vec![Vec::new(); changed_pages.len()];
    for _ in 0..reps.max(5) {
        for (k, (_, path)) in changed_pages.iter().enumerate() {
            change()?;
            after[k].push(get(path)?);
        }
    }
    let mut after_rows = serde_json::Map::new();
    for ((name, _), s) in changed_pages.iter().zip(&after) {
        show(&format!("{name} (after a change)"), s);
        let mut v = stats(s);
        v["within_100ms"] = json!(median(s) <= 100.0);
        after_rows.insert((*name).to_string(), v);
    }
    report.insert(
        "console".into(),
        json!({
            "transactions": listed,
            "first_load_ms": round3(first),
            "pages": rows,
            "pages_after_a_change": after_rows,
        }),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// wallet send against a single-key bdk_wallet send
// ---------------------------------------------------------------------------------------

/// A single-key wallet in SQLite, as an ordinary bdk_wallet application keeps it.
struct SingleKey {
    path: std::path::PathBuf,
    descriptors: (String, String),
}

impl SingleKey {
    fn create(dir: &Path) -> Result<Self> {
        let seed: [u8; 32] = rand::thread_rng().gen();
        let xprv = Xpriv::new_master(NetworkKind::Test, &seed)?;
        let descriptors = (
            format!("tr({xprv}/86'/1'/0'/0/*)"),
            format!("tr({xprv}/86'/1'/0'/1/*)"),
        );
        let path = dir.join("single.sqlite");
        let mut conn = Connection::open(&path)?;
        Wallet::create(descriptors.0.clone(), descriptors.1.clone())
            .network(bitcoin::Network::Regtest)
            .create_wallet(&mut conn)?;
        Ok(SingleKey { path, descriptors })
    }

    // bdk_wallet's own signer (`SignOptions`), as an ordinary application uses it.
    #[allow(deprecated)]
    fn load(&self) -> Result<(Connection, bdk_wallet::PersistedWallet<Connection>)> {
        let mut conn = Connection::open(&self.path)?;
        let wallet = Wallet::load()
            .descriptor(KeychainKind::External, Some(self.descriptors.0.clone()))
            .descriptor(KeychainKind::Internal, Some(self.descriptors.1.clone()))
            .extract_keys()
            .check_network(bitcoin::Network::Regtest)
            .load_wallet(&mut conn)?
            .context("no single-key wallet")?;
        Ok((conn, wallet))
    }

    fn address(&self) -> Result<String> {
        let (mut conn, mut w) = self.load()?;
        let a = w.reveal_next_address(KeychainKind::External).address;
        w.persist(&mut conn)?;
        Ok(a.to_string())
    }

    /// Load, sync (full scan when `full`, else the revealed scripts), and persist.
    fn sync(&self, url: &str, full: bool) -> Result<()> {
        let (mut conn, mut w) = self.load()?;
        let client =
            bdk_electrum::BdkElectrumClient::new(bdk_electrum::electrum_client::Client::new(url)?);
        if full {
            let update = client.full_scan(w.start_full_scan().build(), 20, 10, true)?;
            w.apply_update(update)?;
        } else {
            let update = client.sync(w.start_sync_with_revealed_spks().build(), 10, true)?;
            w.apply_update(update)?;
        }
        w.persist(&mut conn)?;
        Ok(())
    }

    /// What `wallet send` does, with one key: load, connect, build, sign, broadcast, record
    /// the transaction, persist (neither syncs: that is `wallet sync`, untimed here).
    fn send(&self, url: &str, to: &bitcoin::Address) -> Result<bitcoin::Txid> {
        let (mut conn, mut w) = self.load()?;
        let client = bdk_electrum::electrum_client::Client::new(url)?;
        let mut builder = w.build_tx();
        builder.add_recipient(to.script_pubkey(), Amount::from_sat(SEND_SATS));
        builder.fee_rate(FeeRate::from_sat_per_vb_u32(2));
        let mut psbt = builder.finish()?;
        #[allow(deprecated)]
        let finalized = w.sign(&mut psbt, SignOptions::default())?;
        ensure!(finalized, "the single-key wallet did not finalize");
        let tx = psbt.extract_tx()?;
        let txid = client.transaction_broadcast(&tx)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        w.apply_unconfirmed_txs([(tx, now)]);
        w.persist(&mut conn)?;
        Ok(txid)
    }
}

fn send_rows(reps: usize, report: &mut serde_json::Map<String, serde_json::Value>) -> Result<()> {
    let env = match TestEnv::new() {
        Ok(env) => env,
        Err(e) => {
            println!("send: skipped ({e:#}); set BITCOIND_EXE and ELECTRS_EXE");
            report.insert("send".into(), json!({ "skipped": format!("{e:#}") }));
            return Ok(());
        }
    };
    let url = env.electrum_url();
    log("send: starting a 2-of-3 cluster and funding both wallets");
    let c = Cluster::with_wallet(3, 2)?;
    let single = SingleKey::create(c.dir.path())?;
    let coins = reps + 1;
    for _ in 0..coins {
        let a = ckm_json(&c.coord, &["wallet", "address"])?;
        env.fund(json_str(&a, "address")?, COIN_SATS)?;
        env.fund(&single.address()?, COIN_SATS)?;
    }
    let tip = env.block_count()?;
    env.wait_until_electrum_height(tip, Duration::from_secs(60))?;
    ckm_json(&c.coord, &["wallet", "sync", "--electrum", &url])?;
    single.sync(&url, true)?;

    let mut ckm_ms = Vec::new();
    let mut single_ms = Vec::new();
    for rep in 0..coins {
        let to = foreign_address();
        let pay = format!("{to}:{SEND_SATS}");
        let ckm_t = timed_ckm(
            &c.coord,
            &[
                "wallet",
                "send",
                "--to",
                &pay,
                "--fee-rate",
                "2",
                "--yes",
                "--electrum",
                &url,
            ],
        )?;
        let t = Instant::now();
        let txid = single.send(&url, &to)?;
        let single_t = ms(t.elapsed());
        // Both transactions have the same shape: one input, the payment and change.
        let tx = env.get_raw_transaction(&txid.to_string())?;
        ensure!(
            tx["vin"].as_array().map(Vec::len) == Some(1)
                && tx["vout"].as_array().map(Vec::len) == Some(2),
            "single-key transaction of another shape: {tx}"
        );
        env.mine_blocks(1, None)?;
        env.wait_until_electrum_height(env.block_count()?, Duration::from_secs(60))?;
        ckm_json(&c.coord, &["wallet", "sync", "--electrum", &url])?;
        single.sync(&url, false)?;
        if rep > 0 {
            ckm_ms.push(ckm_t);
            single_ms.push(single_t);
        }
    }
    show("ckm wallet send (2-of-3, end to end)", &ckm_ms);
    show("single-key bdk_wallet send", &single_ms);
    let ratio = median(&ckm_ms) / median(&single_ms);
    println!("{:<44} {ratio:.2}x (goal <= 2x)", "ratio");
    report.insert(
        "send".into(),
        json!({
            "ckm_wallet_send": stats(&ckm_ms),
            "single_key_send": stats(&single_ms),
            "ratio": round3(ratio),
        }),
    );
    Ok(())
}

const SYNC_PAYMENTS: usize = 1_000;
const SYNC_SATS: u64 = 10_000;

/// A minimal JSON-RPC client over one kept-alive HTTP/1.1 connection (the baseline's
/// transport: nothing but the bytes bitcoind sends).
struct RawRpc {
    reader: std::io::BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
    head: String,
}

impl RawRpc {
    fn connect(port: u16, user: &str, pass: &str) -> Result<Self> {
        use bitcoin::base64::prelude::{Engine as _, BASE64_STANDARD};
        let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        let auth = BASE64_STANDARD.encode(format!("{user}:{pass}"));
        Ok(RawRpc {
            reader: std::io::BufReader::new(stream.try_clone()?),
            writer: stream,
            head: format!(
                "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\n"
            ),
        })
    }

    fn call(&mut self, method: &str, params: serde_json::Value) -> Result<serde_json::Value> {
        use std::io::{BufRead, Read, Write};
        let body =
            json!({"jsonrpc": "1.0", "id": 1, "method": method, "params": params}).to_string();
        write!(
            self.writer,
            "{}Content-Length: {}\r\n\r\n{body}",
            self.head,
            body.len()
        )?;
        let mut length = None;
        let mut chunked = false;
        let mut line = String::new();
        loop {
            line.clear();
            ensure!(self.reader.read_line(&mut line)? > 0, "connection closed");
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                length = Some(v.trim().parse::<usize>()?);
            }
            if l.starts_with("transfer-encoding:") && l.contains("chunked") {
                chunked = true;
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16)?;
                let mut chunk = vec![0u8; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..size]);
            }
        } else {
            out.resize(length.context("no length")?, 0);
            self.reader.read_exact(&mut out)?;
        }
        let reply: serde_json::Value = serde_json::from_slice(&out)?;
        ensure!(reply["error"].is_null(), "{method}: {}", reply["error"]);
        Ok(reply["result"].clone())
    }
}

fn sync_rows(reps: usize, report: &mut serde_json::Map<String, serde_json::Value>) -> Result<()> {
    let env = match TestEnv::new() {
        Ok(env) => env,
        Err(e) => {
            println!("sync: skipped ({e:#}); set BITCOIND_EXE and ELECTRS_EXE");
            report.insert("sync".into(), json!({ "skipped": format!("{e:#}") }));
            return Ok(());
        }
    };
    log(format!(
        "sync: a 2-of-3 wallet, {SYNC_PAYMENTS} payments to it over about 2 000 blocks"
    ));
    let c = Cluster::with_wallet(3, 2)?;
    let mut addresses = Vec::new();
    for _ in 0..ADDRESSES {
        let a = ckm_json(&c.coord, &["wallet", "address"])?;
        addresses.push(json_str(&a, "address")?.to_string());
    }
    for (i, address) in addresses.iter().cycle().take(SYNC_PAYMENTS).enumerate() {
        env.fund(address, SYNC_SATS)?;
        env.mine_blocks(if i % 2 == 0 { 1 } else { 2 }, None)?;
    }
    let tip = env.block_count()?;
    env.wait_until_electrum_height(tip, Duration::from_secs(120))?;
    let template = c.dir.path().join("coord-template");
    copy_dir(&c.coord, &template)?;
    let cookie = env.cookie_file();
    let cookie = cookie.to_str().context("cookie path")?.to_string();
    let rpc_url = env.rpc_url();
    let electrum = env.electrum_url();
    let bitcoind_args = [
        "--bitcoind",
        rpc_url.as_str(),
        "--bitcoind-cookie",
        cookie.as_str(),
    ];
    let electrum_args = ["--electrum", electrum.as_str()];
    let peer = format!("127.0.0.1:{}", env.p2p_port());
    let cbf_args = ["--cbf", peer.as_str(), "--cbf", peer.as_str()];
    let expected = SYNC_SATS * SYNC_PAYMENTS as u64;

    // The baseline: the same blocks, raw (`getblock HASH 0`, decoded as ckm's sync decodes
    // them), over one kept-alive HTTP connection: the floor of fetching them over RPC.
    let (user, pass) = env.rpc_credentials()?;
    let mut raw = RawRpc::connect(env.rpc_port(), &user, &pass)?;
    let mut raw_ms = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let mut txs = 0usize;
        for h in 0..=tip {
            let hash = raw.call("getblockhash", json!([h]))?;
            let hex = raw.call("getblock", json!([hash, 0]))?;
            let bytes = hex::decode(hex.as_str().context("block hex")?)?;
            let block: Block = bitcoin::consensus::deserialize(&bytes)?;
            txs += block.txdata.len();
        }
        raw_ms.push(ms(t.elapsed()));
        ensure!(txs > SYNC_PAYMENTS, "{txs} transactions in the chain");
    }

    let first = |name: &str, args: &[&str]| -> Result<(Vec<f64>, std::path::PathBuf)> {
        let mut samples = Vec::new();
        let mut last = None;
        for rep in 0..reps {
            let home = c.dir.path().join(format!("coord-{name}-{rep}"));
            copy_dir(&template, &home)?;
            let mut full = vec!["wallet", "sync"];
            full.extend_from_slice(args);
            samples.push(timed_ckm(&home, &full)?);
            let balance = ckm_json(&home, &["wallet", "balance"])?;
            ensure!(
                balance["confirmed_sats"] == expected,
                "{name}: {balance} after the first sync, expected {expected} confirmed"
            );
            last = Some(home);
        }
        Ok((samples, last.context("no repetition")?))
    };
    let (bitcoind_first, bitcoind_home) = first("bitcoind", &bitcoind_args)?;
    let (electrum_first, electrum_home) = first("electrum", &electrum_args)?;
    let (cbf_first, cbf_home) = first("cbf", &cbf_args)?;

    // Incremental: one more block holding one more payment, then both homes sync.
    let mut bitcoind_next = Vec::new();
    let mut electrum_next = Vec::new();
    let mut cbf_next = Vec::new();
    for rep in 0..reps {
        env.fund(&addresses[rep % addresses.len()], SYNC_SATS)?;
        env.mine_blocks(1, None)?;
        env.wait_until_electrum_height(env.block_count()?, Duration::from_secs(60))?;
        let mut args = vec!["wallet", "sync"];
        args.extend_from_slice(&bitcoind_args);
        bitcoind_next.push(timed_ckm(&bitcoind_home, &args)?);
        let mut args = vec!["wallet", "sync"];
        args.extend_from_slice(&electrum_args);
        electrum_next.push(timed_ckm(&electrum_home, &args)?);
        let mut args = vec!["wallet", "sync"];
        args.extend_from_slice(&cbf_args);
        cbf_next.push(timed_ckm(&cbf_home, &args)?);
    }
    let want = expected + SYNC_SATS * reps as u64;
    for home in [&bitcoind_home, &electrum_home, &cbf_home] {
        let balance = ckm_json(home, &["wallet", "balance"])?;
        ensure!(
            balance["confirmed_sats"] == want,
            "{balance}, expected {want}"
        );
    }

    show("raw getblock of every block (baseline)", &raw_ms);
    show("first sync through bitcoind", &bitcoind_first);
    show("first sync through electrum", &electrum_first);
    show("incremental sync through bitcoind", &bitcoind_next);
    show("incremental sync through electrum", &electrum_next);
    show("first sync through compact filters", &cbf_first);
    show("incremental sync through compact filters", &cbf_next);
    let first_ratio = median(&bitcoind_first) / median(&raw_ms);
    let bitcoind_incremental = median(&bitcoind_next) / median(&bitcoind_first);
    let electrum_incremental = median(&electrum_next) / median(&electrum_first);
    let cbf_first_ratio = median(&cbf_first) / median(&raw_ms);
    let cbf_incremental = median(&cbf_next) / median(&cbf_first);
    println!(
        "{:<44} {first_ratio:.2}x (goal <= 1.5x)",
        "bitcoind first sync / raw blocks"
    );
    println!(
        "{:<44} {:.1}% (goal <= 5%)",
        "bitcoind incremental / first",
        bitcoind_incremental * 100.0
    );
    println!(
        "{:<44} {:.1}%",
        "electrum incremental / first",
        electrum_incremental * 100.0
    );
    println!(
        "{:<44} {cbf_first_ratio:.2}x",
        "compact filters first sync / raw blocks"
    );
    println!(
        "{:<44} {:.1}%",
        "compact filters incremental / first",
        cbf_incremental * 100.0
    );
    report.insert(
        "sync".into(),
        json!({
            "blocks": tip + 1,
            "payments": SYNC_PAYMENTS,
            "raw_blocks": stats(&raw_ms),
            "bitcoind_first": stats(&bitcoind_first),
            "electrum_first": stats(&electrum_first),
            "bitcoind_incremental": stats(&bitcoind_next),
            "electrum_incremental": stats(&electrum_next),
            "bitcoind_first_over_raw": round3(first_ratio),
            "bitcoind_incremental_over_first": round3(bitcoind_incremental),
            "electrum_incremental_over_first": round3(electrum_incremental),
            "cbf_first": stats(&cbf_first),
            "cbf_incremental": stats(&cbf_next),
            "cbf_first_over_raw": round3(cbf_first_ratio),
            "cbf_incremental_over_first": round3(cbf_incremental),
        }),
    );
    Ok(())
}

fn main() -> Result<()> {
    let reps: usize = env_number("CKM_BENCH_WALLET_REPS").unwrap_or(9).max(1);
    let rows =
        std::env::var("CKM_BENCH_WALLET_ROWS").unwrap_or_else(|_| "history,send,sync".into());
    let mut report = serde_json::Map::new();
    report.insert(
        "machine".into(),
        json!(format!(
            "{} cores",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        )),
    );
    if rows.split(',').any(|r| r.trim() == "history") {
        history_rows(reps, &mut report)?;
    }
    if rows.split(',').any(|r| r.trim() == "send") {
        send_rows(reps, &mut report)?;
    }
    if rows.split(',').any(|r| r.trim() == "sync") {
        sync_rows(reps, &mut report)?;
    }
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("wallet.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    log(format!("report written to {}", path.display()));
    Ok(())
}
