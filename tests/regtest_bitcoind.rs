//! The user's own Bitcoin Core node as the chain source (issue 27): `wallet sync`, `wallet send`
//! and `wallet chain set|show` through `--bitcoind`, a reorg followed, and each bad input
//! refused with its message and nothing written. A real bitcoind (TestEnv's, plus throwaway
//! nodes for another network, initial block download and pruning), three real signers and the
//! `ckm` CLI. Needs `--features regtest`.
#![cfg(feature = "regtest")]

#[path = "common/chain.rs"]
mod chain;
#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;
#[path = "common/testenv.rs"]
mod testenv;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use chain::{address, balance, sats};
use cluster::{ckm, ckm_json, foreign_address, json_error, json_str, Cluster};
use serde_json::{json, Value};
use testenv::{TestEnv, BURN_ADDRESS};

/// `--bitcoind URL --bitcoind-cookie FILE` for TestEnv's node.
fn flags(env: &TestEnv) -> Result<Vec<String>> {
    Ok(vec![
        "--bitcoind".into(),
        env.rpc_url(),
        "--bitcoind-cookie".into(),
        path(&env.cookie_file())?.into(),
    ])
}

fn path(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", p.display()))
}

/// `ckm --json ARGS… EXTRA…`, required to succeed.
fn run_json(c: &Cluster, args: &[&str], extra: &[String]) -> Result<Value> {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(extra.iter().map(String::as_str));
    ckm_json(&c.coord, &all)
}

/// `ckm --json ARGS…`, required to fail: its message and how long it took.
fn refused(c: &Cluster, args: &[&str]) -> Result<(String, Duration)> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let started = Instant::now();
    let out = ckm(&c.coord, &all)?;
    let took = started.elapsed();
    ensure!(!out.status.success(), "ckm {all:?} succeeded");
    Ok((json_error(&out)?, took))
}

/// The wallet's confirmed balance as Bitcoin Core computes it (`scantxoutset` over both
/// descriptors).
fn scantxoutset_sats(c: &Cluster, env: &TestEnv) -> Result<u64> {
    let d = ckm_json(&c.coord, &["wallet", "descriptor"])?;
    let descs: Vec<Value> = ["external", "internal"]
        .iter()
        .map(|k| Ok(json!({ "desc": json_str(&d, k)?, "range": 200 })))
        .collect::<Result<_>>()?;
    let v = env.rpc("scantxoutset", json!(["start", descs]))?;
    sats(&v["total_amount"])
}

fn in_mempool(env: &TestEnv, txid: &str) -> Result<bool> {
    let pool = env.rpc("getrawmempool", json!([]))?;
    Ok(pool
        .as_array()
        .is_some_and(|a| a.iter().any(|t| t.as_str() == Some(txid))))
}

#[test]
fn sync_send_and_a_reorg_through_bitcoind() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    let node = flags(&env)?;

    let (addr, _) = address(&c)?;
    env.fund(&addr, 1_000_000)?;
    env.mine_blocks(1, None)?;
    let tip = env.block_count()?;
    let v = run_json(&c, &["wallet", "sync"], &node)?;
    ensure!(v["height"].as_u64() == Some(tip), "{v} at tip {tip}");
    ensure!(json_str(&v, "source")?.contains("bitcoind"), "{v}");
    ensure!(v["confirmed_sats"].as_u64() == Some(1_000_000), "{v}");
    ensure!(scantxoutset_sats(&c, &env)? == 1_000_000);

    // The environment names the node as well as the flags do.
    let out = cluster::ckm_cmd(&c.coord)
        .env("CKM_BITCOIND", env.rpc_url())
        .env("CKM_BITCOIND_COOKIE", env.cookie_file())
        .args(["--json", "wallet", "sync"])
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(json_str(&v, "source")?.contains("bitcoind"), "{v}");
    ensure!(v["confirmed_sats"].as_u64() == Some(1_000_000), "{v}");

    // A home without wallets: `chain set` checks the node and reports its chain; an Electrum
    // server is checked too, and one that does not answer is not saved.
    let fresh = tempfile::tempdir()?;
    let mut args = vec!["wallet", "chain", "set"];
    args.extend(node.iter().map(String::as_str));
    let v = ckm_json(fresh.path(), &args)?;
    ensure!(v["checked"]["chain"] == json!("regtest"), "{v}");
    // electrs indexes the blocks mined above on its own schedule: wait for it first.
    let tip = env.block_count()?;
    env.wait_until_electrum_height(tip, Duration::from_secs(60))?;
    let v = ckm_json(
        fresh.path(),
        &["wallet", "chain", "set", "--electrum", &env.electrum_url()],
    )?;
    ensure!(v["checked"]["tip"].as_u64() == Some(tip), "{v}");
    let dead = format!("tcp://127.0.0.1:{}", free_port()?);
    let out = ckm(
        fresh.path(),
        &["--json", "wallet", "chain", "set", "--electrum", &dead],
    )?;
    ensure!(
        !out.status.success(),
        "an unreachable Electrum server was saved"
    );
    let shown = ckm_json(fresh.path(), &["wallet", "chain", "show"])?;
    ensure!(shown["saved"]["source"] == json!("electrum"), "{shown}");
    ensure!(
        shown["saved"]["url"].as_str() == Some(env.electrum_url().as_str()),
        "{shown}"
    );

    // Saved per home: daily commands need no flag from now on.
    let saved = run_json(&c, &["wallet", "chain", "set"], &node)?;
    ensure!(saved["saved"]["source"] == json!("bitcoind"), "{saved}");
    let shown = ckm_json(&c.coord, &["wallet", "chain", "show"])?;
    ensure!(
        shown["saved"]["url"].as_str() == Some(env.rpc_url().as_str()),
        "{shown}"
    );
    ensure!(
        shown["saved"]["cookie"].as_str() == Some(path(&env.cookie_file())?),
        "{shown}"
    );
    // The password itself is never saved.
    let (user, pass) = env.rpc_credentials()?;
    let file = std::fs::read_to_string(c.coord.join("chain.json"))?;
    ensure!(!file.contains(&pass) && !file.contains(&user), "{file}");

    // A payment broadcast through bitcoind (its fee estimate or the fallback) and mined.
    let to = foreign_address().to_string();
    let sent = ckm_json(
        &c.coord,
        &["wallet", "send", "--to", &to, "--amount", "100000", "--yes"],
    )?;
    let txid = json_str(&sent, "txid")?.to_string();
    ensure!(in_mempool(&env, &txid)?, "{txid} not in bitcoind's mempool");
    let v = ckm_json(&c.coord, &["wallet", "sync"])?;
    ensure!(v["confirmed_sats"].as_u64() == Some(0), "{v}");
    let change = v["unconfirmed_sats"]
        .as_u64()
        .ok_or_else(|| anyhow!("{v}"))?;
    ensure!(change > 800_000 && change < 900_000, "{v}");
    let mined = env.mine_blocks(1, None)?;
    let block = mined.first().ok_or_else(|| anyhow!("no block mined"))?;
    let tx = env.rpc("getrawtransaction", json!([txid, true]))?;
    ensure!(tx["blockhash"].as_str() == Some(block.as_str()), "{tx}");
    let v = ckm_json(&c.coord, &["wallet", "sync"])?;
    ensure!(v["height"].as_u64() == Some(env.block_count()?), "{v}");
    ensure!(balance(&c.coord)? == (change, 0));
    ensure!(scantxoutset_sats(&c, &env)? == change);

    // The block holding the payment is reorganised out by two blocks without it: after the
    // next sync the payment is unconfirmed again (bitcoind put it back in its mempool).
    env.rpc("invalidateblock", json!([block]))?;
    for _ in 0..2 {
        env.rpc("generateblock", json!([BURN_ADDRESS, []]))?;
    }
    ensure!(in_mempool(&env, &txid)?, "{txid} not back in the mempool");
    let v = ckm_json(&c.coord, &["wallet", "sync"])?;
    ensure!(v["height"].as_u64() == Some(env.block_count()?), "{v}");
    ensure!(
        balance(&c.coord)? == (0, change),
        "after the reorg: {:?}",
        balance(&c.coord)?
    );

    // Re-mined: confirmed again, and the balance with it.
    env.mine_blocks(1, None)?;
    let tx = env.rpc("getrawtransaction", json!([txid, true]))?;
    ensure!(tx["confirmations"].as_u64() == Some(1), "{tx}");
    ckm_json(&c.coord, &["wallet", "sync"])?;
    ensure!(balance(&c.coord)? == (change, 0));
    ensure!(scantxoutset_sats(&c, &env)? == change);

    // An incremental sync with nothing new changes nothing.
    let v = ckm_json(&c.coord, &["wallet", "sync"])?;
    ensure!(v["confirmed_sats"].as_u64() == Some(change), "{v}");

    // The same wallet through Electrum (the flag wins over the saved source) agrees; the next
    // command without a flag is back on the home's saved bitcoind.
    let tip = env.block_count()?;
    env.wait_until_electrum_height(tip, chain::SYNC_TIMEOUT)?;
    let v = ckm_json(
        &c.coord,
        &["wallet", "sync", "--electrum", &env.electrum_url()],
    )?;
    ensure!(json_str(&v, "source")?.contains("electrum"), "{v}");
    ensure!(v["confirmed_sats"].as_u64() == Some(change), "{v}");
    env.mine_blocks(1, None)?;
    let v = ckm_json(&c.coord, &["wallet", "sync"])?;
    ensure!(json_str(&v, "source")?.contains("bitcoind"), "{v}");
    ensure!(v["height"].as_u64() == Some(tip + 1), "{v}");
    ensure!(v["confirmed_sats"].as_u64() == Some(change), "{v}");
    Ok(())
}

/// `wallet sync --rescan` through bitcoind reads every block again: a payment to an address
/// beyond the wallet's lookahead when its block was synced is found once the wallet has
/// revealed addresses up to near it (another copy of the wallet handed it out).
#[test]
fn rescan_through_bitcoind_finds_coins_on_addresses_revealed_later() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    let node = flags(&env)?;
    env.mine_blocks(1, None)?;
    run_json(&c, &["wallet", "sync"], &node)?;
    // Index 28 of the receive keychain: past the 25 addresses bdk looks ahead of none revealed.
    let d = ckm_json(&c.coord, &["wallet", "descriptor"])?;
    let derived = env.rpc(
        "deriveaddresses",
        json!([json_str(&d, "external")?, [28, 28]]),
    )?;
    let far = derived[0]
        .as_str()
        .ok_or_else(|| anyhow!("deriveaddresses: {derived}"))?
        .to_string();
    env.fund(&far, 300_000)?;
    env.mine_blocks(1, None)?;
    let v = run_json(&c, &["wallet", "sync"], &node)?;
    ensure!(
        v["confirmed_sats"].as_u64() == Some(0),
        "seen too early: {v}"
    );
    for _ in 0..6 {
        address(&c)?;
    }
    // Its block is behind the wallet's checkpoint: a sync does not go back...
    let v = run_json(&c, &["wallet", "sync"], &node)?;
    ensure!(v["confirmed_sats"].as_u64() == Some(0), "{v}");
    // ...a rescan does.
    let v = run_json(&c, &["wallet", "sync", "--rescan"], &node)?;
    ensure!(v["confirmed_sats"].as_u64() == Some(300_000), "{v}");
    ensure!(v["height"].as_u64() == Some(env.block_count()?), "{v}");
    ensure!(scantxoutset_sats(&c, &env)? == 300_000);
    Ok(())
}

/// A throwaway bitcoind on `chain` (no peers), for the network, download and prune cases.
struct Node {
    child: Child,
    dir: tempfile::TempDir,
    chain: &'static str,
    rpc_port: u16,
}

impl Node {
    fn start(env: &TestEnv, chain: &'static str, extra: &[&str]) -> Result<Node> {
        let dir = tempfile::tempdir()?;
        let rpc_port = free_port()?;
        let child = Command::new(&env.binaries().bitcoind)
            .arg(format!("-chain={chain}"))
            .arg(format!("-datadir={}", dir.path().display()))
            .args([
                "-server=1",
                "-listen=0",
                "-connect=0",
                "-dnsseed=0",
                "-daemon=0",
            ])
            .arg(format!("-rpcport={rpc_port}"))
            .arg("-rpcbind=127.0.0.1")
            .arg("-rpcallowip=127.0.0.1")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting a second bitcoind")?;
        let node = Node {
            child,
            dir,
            chain,
            rpc_port,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !node.cookie().exists() {
            if Instant::now() > deadline {
                bail!("the {chain} bitcoind wrote no cookie");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(node)
    }

    fn cookie(&self) -> PathBuf {
        let sub = if self.chain == "main" { "" } else { self.chain };
        self.dir.path().join(sub).join(".cookie")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rpc_port)
    }

    /// bitcoin-cli against this node, retried while it is warming up.
    fn cli(&self, env: &TestEnv, args: &[&str]) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let cli = env.binaries().bitcoin_cli.clone();
            let cli = cli.ok_or_else(|| anyhow!("no bitcoin-cli (see regtest/install)"))?;
            let out = Command::new(cli)
                .arg(format!("-chain={}", self.chain))
                .arg(format!("-datadir={}", self.dir.path().display()))
                .arg(format!("-rpcport={}", self.rpc_port))
                .args(args)
                .output()?;
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
            }
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            if !err.contains("-28") || Instant::now() > deadline {
                bail!("bitcoin-cli {args:?}: {err}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[test]
fn bad_bitcoind_inputs_are_refused_and_nothing_is_written() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    let (addr, _) = address(&c)?;
    env.fund(&addr, 500_000)?;
    env.mine_blocks(1, None)?;
    run_json(&c, &["wallet", "sync"], &flags(&env)?)?;
    let needed = format!("from {}", env.block_count()? + 1);
    let db = std::fs::read(c.wallet_path())?;
    let saved = c.coord.join("chain.json");
    let unchanged = |what: &str| -> Result<()> {
        ensure!(
            std::fs::read(c.wallet_path())? == db,
            "{what}: the wallet database changed"
        );
        ensure!(!saved.exists(), "{what}: a chain source was saved");
        Ok(())
    };
    let url = env.rpc_url();
    let sync_with = |url: &str, cookie: &str, more: &[&str]| -> Result<(String, Duration)> {
        let mut args = vec![
            "wallet",
            "sync",
            "--bitcoind",
            url,
            "--bitcoind-cookie",
            cookie,
        ];
        args.extend_from_slice(more);
        refused(&c, &args)
    };

    // A wrong cookie: named, and the node's refusal said.
    let dir = tempfile::tempdir()?;
    let wrong = dir.path().join("wrong.cookie");
    std::fs::write(&wrong, "__cookie__:not-the-password\n")?;
    let (e, _) = sync_with(&url, path(&wrong)?, &[])?;
    ensure!(
        e.contains("refused the credentials") && e.contains(path(&wrong)?),
        "{e}"
    );
    ensure!(
        !e.contains("not-the-password"),
        "the password is shown: {e}"
    );
    unchanged("wrong cookie")?;
    // `chain set` checks before it saves.
    let (e, _) = refused(
        &c,
        &[
            "wallet",
            "chain",
            "set",
            "--bitcoind",
            &url,
            "--bitcoind-cookie",
            path(&wrong)?,
        ],
    )?;
    ensure!(e.contains("refused the credentials"), "{e}");
    unchanged("chain set with a wrong cookie")?;
    // A wrong password file, and a missing one.
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "nope\n")?;
    let (e, _) = refused(
        &c,
        &[
            "wallet",
            "sync",
            "--bitcoind",
            &url,
            "--bitcoind-user",
            "__cookie__",
            "--bitcoind-pass-file",
            path(&pass)?,
        ],
    )?;
    ensure!(
        e.contains("refused the credentials") && e.contains(path(&pass)?),
        "{e}"
    );
    let absent = dir.path().join("absent.cookie");
    let (e, _) = sync_with(&url, path(&absent)?, &[])?;
    ensure!(e.contains(path(&absent)?), "{e}");
    unchanged("bad password files")?;

    // Nothing listens: refused at once. A port that accepts and never answers: a timeout,
    // not a hang.
    let cookie = env.cookie_file();
    let cookie = path(&cookie)?;
    let closed = format!("http://127.0.0.1:{}", free_port()?);
    let (e, _) = sync_with(&closed, cookie, &[])?;
    ensure!(
        e.contains("cannot be reached") && e.contains(&closed),
        "{e}"
    );
    let silent = TcpListener::bind("127.0.0.1:0")?;
    let silent_url = format!("http://{}", silent.local_addr()?);
    let (e, took) = sync_with(&silent_url, cookie, &["--bitcoind-timeout", "2"])?;
    ensure!(e.contains(&silent_url) && e.contains("no answer"), "{e}");
    ensure!(took < Duration::from_secs(20), "took {took:?}: {e}");
    drop(silent);
    unchanged("unreachable nodes")?;

    // Whatever answers at the address announces an answer above the bound (more than a full
    // block in hex): refused before it is read. (No real node does this, hence a listener.)
    let huge = TcpListener::bind("127.0.0.1:0")?;
    let huge_url = format!("http://{}", huge.local_addr()?);
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = huge.accept()?;
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf)?;
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")?;
        Ok(())
    });
    let (e, _) = sync_with(&huge_url, cookie, &[])?;
    ensure!(e.contains("over the bound") && e.contains(&huge_url), "{e}");
    server
        .join()
        .map_err(|_| anyhow!("the listener thread panicked"))??;
    unchanged("an answer over the bound")?;

    // Credentials to a host off this machine over plain http: refused before any contact.
    let (e, _) = sync_with("http://192.0.2.1:18443", cookie, &[])?;
    ensure!(
        e.contains("plain http") && e.contains("--bitcoind-allow-insecure"),
        "{e}"
    );
    unchanged("plain http off loopback")?;

    // A node on another network than the wallet: both named.
    let signet = Node::start(&env, "signet", &[])?;
    signet.cli(&env, &["getblockcount"])?;
    let (e, _) = sync_with(&signet.url(), path(&signet.cookie())?, &[])?;
    ensure!(
        e.contains("signet") && e.contains("regtest") && e.contains("vault"),
        "{e}"
    );
    drop(signet);
    unchanged("another network")?;

    // A node in initial block download (a fresh regtest node has only the genesis block).
    let fresh = Node::start(&env, "regtest", &[])?;
    fresh.cli(&env, &["getblockcount"])?;
    let (e, _) = sync_with(&fresh.url(), path(&fresh.cookie())?, &[])?;
    ensure!(e.contains("initial block download"), "{e}");
    drop(fresh);
    unchanged("initial block download")?;

    // A pruned node missing blocks a first sync needs: what to do is said. (A second wallet
    // that never synced; -fastprune keeps block files small enough to prune on regtest.)
    let pruned = Node::start(&env, "regtest", &["-prune=1", "-fastprune"])?;
    pruned.cli(&env, &["generatetoaddress", "1000", BURN_ADDRESS])?;
    let height = pruned.cli(&env, &["pruneblockchain", "700"])?;
    ensure!(
        height.parse::<u64>().is_ok_and(|h| h > 0),
        "pruned to {height}"
    );
    let (e, _) = sync_with(
        &pruned.url(),
        path(&pruned.cookie())?,
        &["--birth-height", "0"],
    )?;
    ensure!(
        e.contains("pruned") && e.contains(&needed) && e.contains("--birth-height"),
        "{e}"
    );
    drop(pruned);
    unchanged("a pruned node")?;

    // Still usable afterwards.
    let v = run_json(&c, &["wallet", "sync"], &flags(&env)?)?;
    ensure!(v["confirmed_sats"].as_u64() == Some(500_000), "{v}");
    Ok(())
}

#[test]
fn the_library_source_relays_estimates_and_reads_the_tip() -> Result<()> {
    use bitcoin::hashes::Hash;
    use bitcoin::{absolute, transaction, Amount, OutPoint, ScriptBuf, Sequence, Transaction};
    use bitcoin::{TxIn, TxOut, Witness};
    use ckm::chain::bitcoind::{Bitcoind, BitcoindConfig, RpcAuth};
    use ckm::chain::{ChainError, ChainSource};

    let env = TestEnv::new()?;
    env.mine_blocks(3, None)?;
    let config = BitcoindConfig::new(env.rpc_url(), RpcAuth::Cookie(env.cookie_file()));
    let node = Bitcoind::connect(&config, "w", bitcoin::Network::Regtest)?;
    ensure!(u64::from(node.tip()?) == env.block_count()?);
    // A fresh regtest chain has no fee history: no estimate (the caller's fallback applies).
    ensure!(node.fee_estimate(6)?.is_none());
    // A transaction spending a coin that does not exist: refused, in the node's words.
    let tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(bitcoin::Txid::from_byte_array([7; 32]), 0),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(10_000),
            script_pubkey: ScriptBuf::new_op_return([1u8; 4]),
        }],
    };
    match node.broadcast(&tx) {
        Err(ChainError::Refused { reason, .. }) => {
            ensure!(reason.contains("code -25"), "{reason}")
        }
        other => bail!("broadcast of a spend of nothing: {other:?}"),
    }
    Ok(())
}

/// `ckm ARGS… EXTRA…` without `--json`, required to succeed: its stderr.
fn run_text(c: &Cluster, args: &[String], extra: &[String]) -> Result<String> {
    let all: Vec<&str> = args.iter().chain(extra).map(String::as_str).collect();
    let out = ckm(&c.coord, &all)?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(out.status.success(), "ckm {all:?} failed: {stderr}");
    Ok(stderr)
}

fn birth_of(c: &Cluster, wallet: &str) -> Result<Value> {
    Ok(ckm_json(&c.coord, &["wallet", "show", "--wallet", wallet])?["birth_height"].clone())
}

/// `wallet create` records the chain's tip as the wallet's birth height (from bitcoind and from
/// Electrum), `wallet show` reports it, and the wallet's first sync from bitcoind starts at that
/// block; `--birth-height` overrides it; a create whose node does not answer still creates the
/// wallet, records nothing and says so, and its first sync starts at regtest's default.
#[test]
fn create_records_the_birth_height_and_the_first_sync_starts_there() -> Result<()> {
    let env = TestEnv::new()?;
    env.mine_blocks(7, None)?;
    let born = env.block_count()?;
    env.wait_until_electrum_height(born, Duration::from_secs(60))?;
    let c = Cluster::start(3)?;
    let node = flags(&env)?;

    let stderr = run_text(&c, &c.create_args("viacore", 2), &node)?;
    ensure!(!stderr.contains("no birth height"), "{stderr}");
    ensure!(
        birth_of(&c, "viacore")?.as_u64() == Some(born),
        "born at {born}"
    );
    let electrum = vec!["--electrum".to_string(), env.electrum_url()];
    run_text(&c, &c.create_args("viaelectrum", 2), &electrum)?;
    ensure!(birth_of(&c, "viaelectrum")?.as_u64() == Some(born));
    let dead = vec![
        "--bitcoind".to_string(),
        format!("http://127.0.0.1:{}", free_port()?),
        "--bitcoind-cookie".into(),
        path(&env.cookie_file())?.into(),
    ];
    let stderr = run_text(&c, &c.create_args("offline", 2), &dead)?;
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("no birth height recorded"))
        .collect();
    ensure!(
        said.len() == 1 && said[0].contains("--birth-height"),
        "{stderr}"
    );
    ensure!(birth_of(&c, "offline")?.is_null(), "{stderr}");
    // A node that accepts the connection and never answers holds the create up for 10 s at
    // most (not the 30 s of a sync's default timeout).
    let silent = TcpListener::bind("127.0.0.1:0")?;
    let mute = vec![
        "--bitcoind".to_string(),
        format!("http://{}", silent.local_addr()?),
        "--bitcoind-cookie".into(),
        path(&env.cookie_file())?.into(),
    ];
    let started = Instant::now();
    let stderr = run_text(&c, &c.create_args("silent", 2), &mute)?;
    let took = started.elapsed();
    ensure!(stderr.contains("no birth height recorded"), "{stderr}");
    ensure!(took < Duration::from_secs(25), "the create took {took:?}");
    ensure!(birth_of(&c, "silent")?.is_null());
    drop(silent);
    // --birth-height at create is recorded as given, without asking any source.
    let given = vec!["--birth-height".to_string(), "3".into()];
    let stderr = run_text(&c, &c.create_args("given", 2), &given)?;
    ensure!(!stderr.contains("no birth height"), "{stderr}");
    ensure!(birth_of(&c, "given")?.as_u64() == Some(3));

    // A payment after the birth; the first sync applies the blocks from the birth on only.
    let to = ckm_json(&c.coord, &["wallet", "address", "--wallet", "viacore"])?;
    env.fund(json_str(&to, "address")?, 300_000)?;
    env.mine_blocks(2, None)?;
    let tip = env.block_count()?;
    let v = run_json(&c, &["wallet", "sync", "--wallet", "viacore"], &node)?;
    let expected = json!({ "first": born, "last": tip, "count": tip - born + 1 });
    ensure!(v["blocks"] == expected, "{v}, expected {expected}");
    ensure!(v["confirmed_sats"].as_u64() == Some(300_000), "{v}");
    // A later sync applies no block again.
    let v = run_json(&c, &["wallet", "sync", "--wallet", "viacore"], &node)?;
    ensure!(v["blocks"].is_null(), "{v}");

    // --birth-height beats the recorded height; no recorded height: regtest's default (0).
    let mut earlier = node.clone();
    earlier.extend(["--birth-height".to_string(), (born - 3).to_string()]);
    let v = run_json(&c, &["wallet", "sync", "--wallet", "viaelectrum"], &earlier)?;
    ensure!(v["blocks"]["first"].as_u64() == Some(born - 3), "{v}");
    let v = run_json(&c, &["wallet", "sync", "--wallet", "offline"], &node)?;
    ensure!(v["blocks"]["first"].as_u64() <= Some(1), "{v}");
    ensure!(v["blocks"]["last"].as_u64() == Some(tip), "{v}");
    Ok(())
}
