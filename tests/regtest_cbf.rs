//! Compact block filters (BIP-0157/0158) as the chain source (issue 27): `wallet sync`,
//! `wallet send` and `wallet chain set|show` through `--cbf`, with two real bitcoind peers
//! (TestEnv's, started with `-blockfilterindex=1 -peerblockfilters=1`, and a second node
//! connected to it); a reorg followed; bad peers refused in time. Needs `--features regtest`.
#![cfg(feature = "regtest")]

#[path = "common/chain.rs"]
mod chain;
#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;
#[path = "common/testenv.rs"]
mod testenv;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use chain::{address, balance, sats};
use cluster::{ckm, ckm_json, foreign_address, json_error, json_str, Cluster};
use serde_json::{json, Value};
use testenv::{TestEnv, BURN_ADDRESS};

/// A throwaway bitcoind listening for P2P on a free loopback port.
struct Node {
    child: Child,
    dir: tempfile::TempDir,
    chain: &'static str,
    rpc_port: u16,
    p2p_port: u16,
}

impl Node {
    fn start(env: &TestEnv, chain: &'static str, extra: &[String]) -> Result<Node> {
        let dir = tempfile::tempdir()?;
        let rpc_port = free_port()?;
        let p2p_port = free_port()?;
        let child = Command::new(&env.binaries().bitcoind)
            .arg(format!("-chain={chain}"))
            .arg(format!("-datadir={}", dir.path().display()))
            .args(["-server=1", "-dnsseed=0", "-daemon=0", "-listen=1"])
            .args(["-discover=0", "-listenonion=0", "-fixedseeds=0"])
            .arg(format!("-bind=127.0.0.1:{p2p_port}"))
            .arg(format!("-port={p2p_port}"))
            .arg(format!("-rpcport={rpc_port}"))
            .arg("-rpcbind=127.0.0.1")
            .arg("-rpcallowip=127.0.0.1")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting another bitcoind")?;
        let node = Node {
            child,
            dir,
            chain,
            rpc_port,
            p2p_port,
        };
        node.cli(env, &["getblockcount"])?;
        Ok(node)
    }

    /// A second regtest peer serving filters, following TestEnv's node.
    fn second_peer(env: &TestEnv) -> Result<Node> {
        Node::start(
            env,
            "regtest",
            &[
                "-blockfilterindex=1".into(),
                "-peerblockfilters=1".into(),
                format!("-connect=127.0.0.1:{}", env.p2p_port()),
            ],
        )
    }

    fn peer(&self) -> String {
        format!("127.0.0.1:{}", self.p2p_port)
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
            let warming = err.contains("-28") || err.contains("connect to the server");
            if !warming || Instant::now() > deadline {
                bail!("bitcoin-cli {args:?}: {err}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until this node's best block is TestEnv's (blocks and reorgs relayed).
    fn wait_for_tip(&self, env: &TestEnv) -> Result<()> {
        let want = env
            .rpc("getbestblockhash", json!([]))?
            .as_str()
            .map(String::from)
            .ok_or_else(|| anyhow!("no best block hash"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.cli(env, &["getbestblockhash"])? != want {
            ensure!(
                Instant::now() < deadline,
                "the second peer did not reach {want}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
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

/// `--cbf` for each peer.
fn cbf_flags(peers: &[String]) -> Vec<String> {
    peers
        .iter()
        .flat_map(|p| ["--cbf".to_string(), p.clone()])
        .collect()
}

fn run_json(c: &Cluster, args: &[&str], extra: &[String]) -> Result<Value> {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(extra.iter().map(String::as_str));
    ckm_json(&c.coord, &all)
}

/// `ckm --json ARGS…`, required to fail: its message and how long it took.
fn refused(c: &Cluster, args: &[String]) -> Result<(String, Duration)> {
    let mut all = vec!["--json"];
    all.extend(args.iter().map(String::as_str));
    let started = Instant::now();
    let out = ckm(&c.coord, &all)?;
    let took = started.elapsed();
    ensure!(!out.status.success(), "ckm {all:?} succeeded");
    Ok((json_error(&out)?, took))
}

/// The wallet's confirmed balance as Bitcoin Core computes it (`scantxoutset`).
fn scantxoutset_sats(c: &Cluster, env: &TestEnv) -> Result<u64> {
    let d = ckm_json(&c.coord, &["wallet", "descriptor"])?;
    let descs: Vec<Value> = ["external", "internal"]
        .iter()
        .map(|k| Ok(json!({ "desc": json_str(&d, k)?, "range": 200 })))
        .collect::<Result<_>>()?;
    let v = env.rpc("scantxoutset", json!(["start", descs]))?;
    sats(&v["total_amount"])
}

fn wait_in_mempool(env: &TestEnv, txid: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pool = env.rpc("getrawmempool", json!([]))?;
        if pool
            .as_array()
            .is_some_and(|a| a.iter().any(|t| t.as_str() == Some(txid)))
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{txid} never reached the mempool"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sync_send_and_a_reorg_through_compact_filters() -> Result<()> {
    let env = TestEnv::new()?;
    let second = Node::second_peer(&env)?;
    let c = Cluster::with_wallet(3, 2)?;
    let peers = vec![format!("127.0.0.1:{}", env.p2p_port()), second.peer()];
    let cbf = cbf_flags(&peers);
    let node = vec![
        "--bitcoind".to_string(),
        env.rpc_url(),
        "--bitcoind-cookie".into(),
        env.cookie_file().display().to_string(),
    ];

    let (addr, _) = address(&c)?;
    env.fund(&addr, 1_000_000)?;
    env.mine_blocks(1, None)?;
    second.wait_for_tip(&env)?;
    let tip = env.block_count()?;
    let v = run_json(&c, &["wallet", "sync"], &cbf)?;
    ensure!(v["height"].as_u64() == Some(tip), "{v} at tip {tip}");
    ensure!(
        json_str(&v, "source")?.contains("compact block filters"),
        "{v}"
    );
    ensure!(v["confirmed_sats"].as_u64() == Some(1_000_000), "{v}");
    ensure!(scantxoutset_sats(&c, &env)? == 1_000_000);
    // The same wallet through bitcoind's RPC agrees.
    let v = run_json(&c, &["wallet", "sync"], &node)?;
    ensure!(v["confirmed_sats"].as_u64() == Some(1_000_000), "{v}");

    // Saved per home and shown; the next commands need no flag.
    let saved = run_json(&c, &["wallet", "chain", "set"], &cbf)?;
    ensure!(saved["saved"]["source"] == json!("cbf"), "{saved}");
    ensure!(saved["checked"]["chain"] == json!("regtest"), "{saved}");
    let shown = ckm_json(&c.coord, &["wallet", "chain", "show"])?;
    ensure!(shown["saved"]["peers"] == json!(peers), "{shown}");

    // A payment broadcast to the peers (no mempool answer over P2P: it is looked for in
    // bitcoind's mempool) and mined.
    let to = foreign_address().to_string();
    let sent = ckm_json(
        &c.coord,
        &["wallet", "send", "--to", &to, "--amount", "100000", "--yes"],
    )?;
    let txid = json_str(&sent, "txid")?.to_string();
    wait_in_mempool(&env, &txid).map_err(|e| {
        let log = std::fs::read_to_string(second.dir.path().join("regtest/debug.log"));
        let log = log.unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        anyhow!(
            "{e}; {sent}; second peer's log (last lines first):\n{}",
            tail.join("\n")
        )
    })?;
    let change = balance(&c.coord)?.1;
    ensure!(change > 800_000 && change < 900_000, "change {change}");
    let mined = env.mine_blocks(1, None)?;
    let block = mined
        .first()
        .ok_or_else(|| anyhow!("no block mined"))?
        .clone();
    let tx = env.rpc("getrawtransaction", json!([txid, true]))?;
    ensure!(tx["blockhash"].as_str() == Some(block.as_str()), "{tx}");
    second.wait_for_tip(&env)?;
    let v = ckm_json(&c.coord, &["wallet", "sync"])?;
    ensure!(v["height"].as_u64() == Some(env.block_count()?), "{v}");
    ensure!(balance(&c.coord)? == (change, 0));
    ensure!(scantxoutset_sats(&c, &env)? == change);

    // The block holding the payment is reorganised out by two empty blocks (both peers
    // follow): after the next sync the payment is unconfirmed (the wallet also recorded it
    // when it broadcast it), and the change with it.
    env.rpc("invalidateblock", json!([block]))?;
    for _ in 0..2 {
        env.rpc("generateblock", json!([BURN_ADDRESS, []]))?;
    }
    second.wait_for_tip(&env)?;
    let v = ckm_json(&c.coord, &["wallet", "sync"])?;
    ensure!(v["height"].as_u64() == Some(env.block_count()?), "{v}");
    ensure!(
        balance(&c.coord)? == (0, change),
        "after the reorg: {:?}",
        balance(&c.coord)?
    );

    // Re-mined (it is back in bitcoind's mempool): confirmed again, the balance with it.
    env.mine_blocks(1, None)?;
    let tx = env.rpc("getrawtransaction", json!([txid, true]))?;
    ensure!(tx["confirmations"].as_u64() == Some(1), "{tx}");
    second.wait_for_tip(&env)?;
    let v = ckm_json(&c.coord, &["wallet", "sync"])?;
    ensure!(v["height"].as_u64() == Some(env.block_count()?), "{v}");
    ensure!(balance(&c.coord)? == (change, 0));
    ensure!(scantxoutset_sats(&c, &env)? == change);

    // A payment to the wallet that it saw only in a block (never in a mempool, which filters
    // do not show): reorganised out, it is unconfirmed after the next sync too (bdk keeps a
    // transaction whose block left the chain as unconfirmed; filters cannot tell whether any
    // mempool still holds it), until it is mined again.
    let (addr2, _) = address(&c)?;
    let incoming = env.fund(&addr2, 200_000)?;
    let tx = env.rpc("getrawtransaction", json!([incoming, true]))?;
    let block = json_str(&tx, "blockhash")?.to_string();
    second.wait_for_tip(&env)?;
    ckm_json(&c.coord, &["wallet", "sync"])?;
    ensure!(balance(&c.coord)? == (change + 200_000, 0));
    env.rpc("invalidateblock", json!([block]))?;
    for _ in 0..2 {
        env.rpc("generateblock", json!([BURN_ADDRESS, []]))?;
    }
    second.wait_for_tip(&env)?;
    ckm_json(&c.coord, &["wallet", "sync"])?;
    ensure!(
        balance(&c.coord)? == (change, 200_000),
        "after the second reorg: {:?}",
        balance(&c.coord)?
    );
    wait_in_mempool(&env, &incoming)?;
    env.mine_blocks(1, None)?;
    second.wait_for_tip(&env)?;
    ckm_json(&c.coord, &["wallet", "sync"])?;
    ensure!(balance(&c.coord)? == (change + 200_000, 0));
    ensure!(scantxoutset_sats(&c, &env)? == change + 200_000);

    // bitcoind's RPC agrees on the same wallet; an incremental sync with nothing new changes
    // nothing.
    let v = run_json(&c, &["wallet", "sync"], &node)?;
    ensure!(
        v["confirmed_sats"].as_u64() == Some(change + 200_000),
        "{v}"
    );
    let v = ckm_json(&c.coord, &["wallet", "sync"])?;
    ensure!(
        v["confirmed_sats"].as_u64() == Some(change + 200_000),
        "{v}"
    );

    // A rescan from a birth height after the wallet's first coin: headers first, filters
    // from there; the coins found before stay.
    let v = ckm_json(
        &c.coord,
        &[
            "wallet",
            "sync",
            "--rescan",
            "--birth-height",
            &(tip + 1).to_string(),
        ],
    )?;
    ensure!(v["height"].as_u64() == Some(env.block_count()?), "{v}");
    ensure!(
        v["confirmed_sats"].as_u64() == Some(change + 200_000),
        "{v}"
    );
    Ok(())
}

#[test]
fn bad_peers_are_refused_in_time() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    let good = format!("127.0.0.1:{}", env.p2p_port());
    let sync = |peers: &[String], extra: &[&str]| -> Result<(String, Duration)> {
        let mut args: Vec<String> = vec!["wallet".into(), "sync".into()];
        args.extend(cbf_flags(peers));
        args.extend(extra.iter().map(|s| s.to_string()));
        refused(&c, &args)
    };

    let before = std::fs::read(c.wallet_path())?;

    // Nothing listens: refused at once, naming the peer and the port to use.
    let closed = format!("127.0.0.1:{}", free_port()?);
    let (e, took) = sync(&[good.clone(), closed.clone()], &[])?;
    ensure!(
        e.contains(&closed) && e.contains("cannot be reached"),
        "{e}"
    );
    ensure!(took < Duration::from_secs(15), "took {took:?}");

    // Something accepts but never answers: a timeout, not a hang.
    let silent = TcpListener::bind("127.0.0.1:0")?;
    let silent_peer = silent.local_addr()?.to_string();
    let (e, took) = sync(
        &[silent_peer.clone(), good.clone()],
        &["--cbf-timeout", "2"],
    )?;
    ensure!(
        e.contains(&silent_peer) && e.contains("did not answer"),
        "{e}"
    );
    ensure!(took < Duration::from_secs(20), "took {took:?}");

    // A node on another network: both networks named.
    let signet = Node::start(&env, "signet", &[])?;
    let (e, took) = sync(&[good.clone(), signet.peer()], &["--cbf-timeout", "5"])?;
    ensure!(
        e.contains("signet") && e.contains("regtest") && e.contains(&signet.peer()),
        "{e}"
    );
    ensure!(took < Duration::from_secs(30), "took {took:?}");

    // A node that serves no filters: the flags to start it with.
    let plain = Node::start(&env, "regtest", &[])?;
    let (e, _) = sync(&[good.clone(), plain.peer()], &[])?;
    ensure!(e.contains("-peerblockfilters=1"), "{e}");

    // A home without wallets: `chain set` finds the peers' network by itself.
    let fresh = tempfile::tempdir()?;
    let started = Instant::now();
    let v = ckm_json(
        fresh.path(),
        &["wallet", "chain", "set", "--cbf", &good, "--cbf", &good],
    )?;
    ensure!(v["checked"]["chain"] == json!("regtest"), "{v}");
    ensure!(v["saved"]["peers"] == json!([good, good]), "{v}");
    ensure!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    // Nothing was written by the refusals.
    ensure!(
        std::fs::read(c.wallet_path())? == before,
        "the wallet database changed"
    );

    // A first sync starts at the birth height: a coin in an earlier block is not looked at;
    // a rescan from before it finds it.
    let (addr, _) = address(&c)?;
    env.fund(&addr, 50_000)?;
    let funded = env.block_count()?;
    env.mine_blocks(1, None)?;
    let two = cbf_flags(&[good.clone(), good.clone()]);
    let after = (funded + 1).to_string();
    let v = run_json(&c, &["wallet", "sync", "--birth-height", &after], &two)?;
    ensure!(v["height"].as_u64() == Some(env.block_count()?), "{v}");
    ensure!(
        v["confirmed_sats"].as_u64() == Some(0),
        "seen before its birth: {v}"
    );
    let at = funded.to_string();
    let v = run_json(
        &c,
        &["wallet", "sync", "--rescan", "--birth-height", &at],
        &two,
    )?;
    ensure!(v["confirmed_sats"].as_u64() == Some(50_000), "{v}");
    // A birth height past the tip: headers only, in time; the coins found stay.
    let future = (env.block_count()? + 5).to_string();
    let started = Instant::now();
    let v = run_json(
        &c,
        &["wallet", "sync", "--rescan", "--birth-height", &future],
        &two,
    )?;
    ensure!(v["height"].as_u64() == Some(env.block_count()?), "{v}");
    ensure!(v["confirmed_sats"].as_u64() == Some(50_000), "{v}");
    ensure!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    // One peer works, with a warning on stderr (also with --json).
    env.mine_blocks(1, None)?;
    let out = ckm(&c.coord, &["--json", "wallet", "sync", "--cbf", &good])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("only one compact-filter peer"), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["height"].as_u64() == Some(env.block_count()?), "{v}");

    // The environment names peers as well as the flag does.
    let out = cluster::ckm_cmd(&c.coord)
        .env("CKM_CBF", format!("{good},{good}"))
        .args(["--json", "wallet", "sync"])
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(json_str(&v, "source")?.contains(&good), "{v}");
    Ok(())
}
