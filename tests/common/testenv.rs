//! Regtest test environment for ckm's integration tests: a real `bitcoind` plus a real
//! `electrs` 0.12, both private to one test, both bound to 127.0.0.1 only.
//!
//! Include it from a test file with
//!
//! ```ignore
//! #[path = "common/testenv.rs"]
//! mod testenv;
//! use testenv::TestEnv;
//! ```
//!
//! and gate the test file with `#![cfg(feature = "regtest")]`.
//!
//! # Binaries
//!
//! Each binary is looked up, in order, from an environment variable (`BITCOIND_EXE`,
//! `BITCOIN_CLI_EXE`, `ELECTRS_EXE`), then `PATH`, then the cache that `regtest/install`
//! fills (`${CKM_REGTEST_CACHE:-$HOME/.cache/ckm/regtest}/bin/`). `bitcoin-cli` defaults
//! to the one next to `bitcoind`. If one is missing, [`TestEnv::new`] fails with a message
//! telling you to run `regtest/install`.
//!
//! # What [`TestEnv::new`] starts
//!
//! * `bitcoind -regtest` in a fresh temporary datadir, with cookie auth, `-txindex=1`,
//!   `-blockfilterindex=1 -peerblockfilters=1` (compact filters for P2P peers),
//!   `-rest=1` (electrs needs REST), P2P and RPC bound to 127.0.0.1 on free ports. This
//!   bitcoind is built **without a wallet**: there is no `getnewaddress` or `sendtoaddress`.
//!   Coins come from mining ([`TestEnv::mine_to`], [`TestEnv::fund_coinbase`]) or from the
//!   environment's own faucet key ([`TestEnv::fund`]).
//! * `electrs` with its own database directory, Electrum RPC and monitoring ports on free
//!   loopback ports, and `--wait-duration-secs 1`, so it notices new blocks within ~1 s.
//!
//! Both processes' stdout/stderr go to files in the temporary directory; start-up errors
//! include the tails of those files. [`Drop`] stops electrs, then bitcoind (`stop` RPC,
//! then kill after a timeout), waits on both, and deletes the temporary directory — unless
//! `CKM_TESTENV_KEEP=1` is set, in which case the directory is kept and its path printed.
//!
//! The chain starts at height 0; `TestEnv::new` mines nothing.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

/// A regtest address that belongs to nobody's wallet: the P2WSH of the script `OP_TRUE`
/// (anyone can spend it, so it is a "burn" address only in the sense that no test wallet
/// ever sees it). Blocks are mined here when no address is given.
pub const BURN_ADDRESS: &str = "bcrt1qft5p2uhsdcdc3l2ua4ap5qqfg4pjaqlp250x7us7a8qqhrxrxfsqseac85";

/// The environment's faucet private key (regtest WIF, compressed). Its P2WPKH address
/// receives coinbases that [`TestEnv::fund`] spends with `signrawtransactionwithkey`.
/// The key is sha256("ckm testenv faucet"): public knowledge, regtest only.
pub const FAUCET_WIF: &str = "cQQzpM72egSMroWjeqCw1XSG4fVpgVw3AnoPKpa6M3S1TeJDfSbJ";

/// Fee paid by a faucet transaction: this much per input plus [`FAUCET_FEE_BASE_SATS`].
/// A 1-input, 2-output P2WPKH spend is ~141 vB, so this is ~7 sat/vB.
const FAUCET_FEE_PER_INPUT_SATS: u64 = 700;
const FAUCET_FEE_BASE_SATS: u64 = 300;
/// Coinbase outputs need 100 confirmations before they can be spent.
const COINBASE_MATURITY: u64 = 100;

const START_TIMEOUT: Duration = Duration::from_secs(60);
const RPC_IO_TIMEOUT: Duration = Duration::from_secs(120);
const ELECTRUM_IO_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const LOG_TAIL_LINES: usize = 40;

/// Paths of the three binaries a [`TestEnv`] runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub bitcoind: PathBuf,
    /// `None` if no bitcoin-cli was found; only [`TestEnv::bitcoin_cli`] needs it.
    pub bitcoin_cli: Option<PathBuf>,
    pub electrs: PathBuf,
}

impl Binaries {
    /// Finds the binaries (see the module documentation for the search order).
    pub fn locate() -> Result<Binaries> {
        let cache_bin = regtest_cache_dir().map(|dir| dir.join("bin"));
        let bitcoind = find_exe("BITCOIND_EXE", "bitcoind", cache_bin.as_deref())?;
        let bitcoin_cli = match std::env::var_os("BITCOIN_CLI_EXE").filter(|v| !v.is_empty()) {
            Some(_) => Some(find_exe("BITCOIN_CLI_EXE", "bitcoin-cli", None)?),
            None => {
                let beside = bitcoind
                    .parent()
                    .map(|dir| dir.join(exe_name("bitcoin-cli")));
                match beside.filter(|p| is_executable(p)) {
                    Some(path) => Some(path),
                    None => find_exe("BITCOIN_CLI_EXE", "bitcoin-cli", cache_bin.as_deref()).ok(),
                }
            }
        };
        let electrs = find_exe("ELECTRS_EXE", "electrs", cache_bin.as_deref())?;
        Ok(Binaries {
            bitcoind,
            bitcoin_cli,
            electrs,
        })
    }
}

/// A running bitcoind + electrs pair on regtest. See the module documentation.
pub struct TestEnv {
    bins: Binaries,
    /// `None` once kept (`CKM_TESTENV_KEEP=1`) or after drop.
    tempdir: Option<tempfile::TempDir>,
    root: PathBuf,
    datadir: PathBuf,
    rpc_port: u16,
    p2p_port: u16,
    electrum_port: u16,
    monitoring_port: u16,
    bitcoind: Option<Child>,
    electrs: Option<Child>,
    rpc_id: AtomicU64,
    electrum_id: AtomicU64,
    faucet: Mutex<Faucet>,
}

/// One unspent faucet output.
#[derive(Debug, Clone)]
struct FaucetUtxo {
    txid: String,
    vout: u32,
    amount_sats: u64,
    script_pubkey: String,
    /// Height at which this output is spendable (coinbase maturity), 0 if at once.
    spendable_at: u64,
}

#[derive(Debug, Default)]
struct Faucet {
    /// The faucet's address, derived from [`FAUCET_WIF`] on first use.
    address: Option<String>,
    utxos: Vec<FaucetUtxo>,
}

impl TestEnv {
    /// Starts bitcoind and electrs (binaries from [`Binaries::locate`]) and waits until
    /// bitcoind's RPC and electrs' Electrum port both answer.
    pub fn new() -> Result<TestEnv> {
        let bins = Binaries::locate()?;
        TestEnv::with_binaries(bins)
    }

    /// Like [`TestEnv::new`] with explicit binaries. Retries start-up twice if a process
    /// could not bind its port (a free port can be taken between picking and binding it).
    pub fn with_binaries(bins: Binaries) -> Result<TestEnv> {
        let mut last_err = None;
        for attempt in 1..=3 {
            match TestEnv::start_once(bins.clone()) {
                Ok(env) => return Ok(env),
                Err(err) => {
                    let text = format!("{err:#}").to_ascii_lowercase();
                    let port_clash = text.contains("in use") || text.contains("unable to bind");
                    if !port_clash {
                        return Err(err);
                    }
                    eprintln!("testenv: start-up attempt {attempt} failed (port clash): {err:#}");
                    last_err = Some(err);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("testenv: start-up failed")))
    }

    fn start_once(bins: Binaries) -> Result<TestEnv> {
        let tempdir = tempfile::Builder::new()
            .prefix("ckm-regtest-")
            .tempdir()
            .context("creating the test environment's temporary directory")?;
        let root = tempdir.path().to_path_buf();
        let datadir = root.join("bitcoind");
        fs::create_dir_all(&datadir).with_context(|| format!("creating {}", datadir.display()))?;
        let [rpc_port, p2p_port, electrum_port, monitoring_port] = free_ports::<4>()?;

        let mut env = TestEnv {
            bins,
            tempdir: Some(tempdir),
            root,
            datadir,
            rpc_port,
            p2p_port,
            electrum_port,
            monitoring_port,
            bitcoind: None,
            electrs: None,
            rpc_id: AtomicU64::new(0),
            electrum_id: AtomicU64::new(0),
            faucet: Mutex::new(Faucet::default()),
        };
        // On error `env` is dropped, which stops whatever was started.
        env.start_bitcoind()?;
        env.start_electrs()?;
        Ok(env)
    }

    fn start_bitcoind(&mut self) -> Result<()> {
        let (stdout, stderr) = self.log_files("bitcoind")?;
        let child = Command::new(&self.bins.bitcoind)
            .arg("-regtest")
            .arg(format!("-datadir={}", self.datadir.display()))
            .arg("-server=1")
            .arg("-daemon=0")
            .arg("-printtoconsole=1")
            .arg("-listen=1")
            .arg(format!("-bind=127.0.0.1:{}", self.p2p_port))
            .arg(format!("-port={}", self.p2p_port))
            .arg("-discover=0")
            .arg("-dnsseed=0")
            .arg("-listenonion=0")
            .arg(format!("-rpcport={}", self.rpc_port))
            .arg("-rpcbind=127.0.0.1")
            .arg("-rpcallowip=127.0.0.1")
            .arg("-txindex=1")
            // Compact block filters served to P2P peers (tests/regtest_cbf.rs).
            .arg("-blockfilterindex=1")
            .arg("-peerblockfilters=1")
            .arg("-rest=1")
            .arg("-fallbackfee=0.0001")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", self.bins.bitcoind.display()))?;
        self.bitcoind = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_alive("bitcoind")?;
            if self.cookie_file().exists() {
                match self.rpc("getblockchaininfo", json!([])) {
                    Ok(_) => return Ok(()),
                    Err(err) if Instant::now() >= deadline => {
                        bail!(
                            "bitcoind's RPC did not answer within {:?}: {err:#}\n{}",
                            START_TIMEOUT,
                            self.log_tails("bitcoind")
                        );
                    }
                    Err(_) => {} // warming up (-28) or not listening yet
                }
            } else if Instant::now() >= deadline {
                bail!(
                    "bitcoind wrote no cookie file within {:?}\n{}",
                    START_TIMEOUT,
                    self.log_tails("bitcoind")
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn start_electrs(&mut self) -> Result<()> {
        let (stdout, stderr) = self.log_files("electrs")?;
        let db_dir = self.root.join("electrs-db");
        fs::create_dir_all(&db_dir).with_context(|| format!("creating {}", db_dir.display()))?;
        let child = Command::new(&self.bins.electrs)
            // No electrs.toml from /etc, ~ or the working directory changes anything.
            .current_dir(&self.root)
            .env("HOME", &self.root)
            .arg("--skip-default-conf-files")
            .arg("--network")
            .arg("regtest")
            .arg("--daemon-dir")
            .arg(&self.datadir)
            .arg("--cookie-file")
            .arg(self.cookie_file())
            .arg("--daemon-rpc-addr")
            .arg(format!("127.0.0.1:{}", self.rpc_port))
            .arg("--electrum-rpc-addr")
            .arg(format!("127.0.0.1:{}", self.electrum_port))
            .arg("--db-dir")
            .arg(&db_dir)
            .arg("--monitoring-addr")
            .arg(format!("127.0.0.1:{}", self.monitoring_port))
            .arg("--wait-duration-secs")
            .arg("1")
            // A fresh regtest chain counts as "in initial block download" until a block is
            // mined; without this electrs would not serve anything until then.
            .arg("--skip-block-download-wait")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", self.bins.electrs.display()))?;
        self.electrs = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_alive("electrs")?;
            match self.electrum_request("server.version", json!(["ckm-testenv", "1.4"])) {
                Ok(_) => return Ok(()),
                Err(err) if Instant::now() >= deadline => {
                    bail!(
                        "electrs did not answer on {} within {:?}: {err:#}\n{}",
                        self.electrum_url(),
                        START_TIMEOUT,
                        self.log_tails("electrs")
                    );
                }
                Err(_) => sleep(Duration::from_millis(200)),
            }
        }
    }

    fn log_files(&self, name: &str) -> Result<(File, File)> {
        let out = self.root.join(format!("{name}.stdout"));
        let err = self.root.join(format!("{name}.stderr"));
        Ok((
            File::create(&out).with_context(|| format!("creating {}", out.display()))?,
            File::create(&err).with_context(|| format!("creating {}", err.display()))?,
        ))
    }

    /// Fails (with log tails) if the named process has exited.
    fn check_alive(&mut self, name: &str) -> Result<()> {
        let child = match name {
            "bitcoind" => self.bitcoind.as_mut(),
            _ => self.electrs.as_mut(),
        };
        let Some(child) = child else {
            bail!("{name} is not running")
        };
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting on {name}"))?
        {
            bail!(
                "{name} exited early with {status}\n{}",
                self.log_tails(name)
            );
        }
        Ok(())
    }

    /// The last lines of a process's stdout and stderr files, for error messages.
    pub fn log_tails(&self, name: &str) -> String {
        let mut out = String::new();
        for stream in ["stdout", "stderr"] {
            let path = self.root.join(format!("{name}.{stream}"));
            let text = fs::read(&path).map(|b| String::from_utf8_lossy(&b).into_owned());
            let text = text.unwrap_or_else(|e| format!("(cannot read: {e})"));
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            let _ = writeln!(
                out,
                "--- last {} lines of {} ---",
                tail.len(),
                path.display()
            );
            for line in tail {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }

    // ---------------------------------------------------------------- accessors

    /// `tcp://127.0.0.1:PORT`, electrs' Electrum RPC endpoint.
    pub fn electrum_url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.electrum_port)
    }

    /// The Electrum endpoint as a socket address.
    pub fn electrum_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.electrum_port))
    }

    /// `http://127.0.0.1:PORT`, bitcoind's JSON-RPC endpoint (auth: [`TestEnv::cookie_file`]).
    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rpc_port)
    }

    pub fn rpc_port(&self) -> u16 {
        self.rpc_port
    }

    pub fn p2p_port(&self) -> u16 {
        self.p2p_port
    }

    /// bitcoind's `-datadir` (the chain lives in `datadir()/regtest`).
    pub fn datadir(&self) -> &Path {
        &self.datadir
    }

    /// The temporary directory holding the datadir, electrs' database and the log files.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// bitcoind's RPC cookie file (`user:password`).
    pub fn cookie_file(&self) -> PathBuf {
        self.datadir.join("regtest").join(".cookie")
    }

    /// The `(user, password)` from the cookie file.
    pub fn rpc_credentials(&self) -> Result<(String, String)> {
        let path = self.cookie_file();
        let text = fs::read_to_string(&path)
            .with_context(|| format!("reading bitcoind's cookie file {}", path.display()))?;
        let (user, pass) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| anyhow!("malformed cookie file {}", path.display()))?;
        Ok((user.to_string(), pass.to_string()))
    }

    pub fn binaries(&self) -> &Binaries {
        &self.bins
    }

    /// A `bitcoin-cli -regtest -datadir=… -rpcport=…` command for this node; add the RPC
    /// method and its arguments and run it.
    pub fn bitcoin_cli(&self) -> Result<Command> {
        let cli = self.bins.bitcoin_cli.as_ref().ok_or_else(|| {
            anyhow!("bitcoin-cli not found: set BITCOIN_CLI_EXE or run regtest/install")
        })?;
        let mut cmd = Command::new(cli);
        cmd.arg("-regtest")
            .arg(format!("-datadir={}", self.datadir.display()))
            .arg(format!("-rpcport={}", self.rpc_port));
        Ok(cmd)
    }

    // ---------------------------------------------------------------- bitcoind RPC

    /// Calls a bitcoind JSON-RPC method. `params` is a JSON array (positional) or object
    /// (named). The error carries bitcoind's error code and message.
    pub fn rpc(&self, method: &str, params: Value) -> Result<Value> {
        let id = self.rpc_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({ "jsonrpc": "1.0", "id": id, "method": method, "params": params });
        let body = serde_json::to_vec(&body).context("encoding an RPC request")?;
        let (user, pass) = self.rpc_credentials()?;
        let auth = base64(format!("{user}:{pass}").as_bytes());

        let addr = SocketAddr::from(([127, 0, 0, 1], self.rpc_port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("RPC {method}: connecting to {addr}"))?;
        stream.set_read_timeout(Some(RPC_IO_TIMEOUT))?;
        stream.set_write_timeout(Some(RPC_IO_TIMEOUT))?;
        let head = format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Basic {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.rpc_port,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|_| stream.write_all(&body))
            .and_then(|_| stream.flush())
            .with_context(|| format!("RPC {method}: sending the request"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .with_context(|| format!("RPC {method}: reading the response"))?;
        let (status, body) = parse_http_response(&raw).with_context(|| format!("RPC {method}"))?;

        let reply: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => bail!(
                "RPC {method}: HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ),
        };
        match reply.get("error") {
            Some(err) if !err.is_null() => {
                let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
                let msg = err.get("message").and_then(Value::as_str).unwrap_or("");
                bail!("RPC {method} failed: {msg} (code {code})");
            }
            _ => {}
        }
        if !(200..300).contains(&status) {
            bail!("RPC {method}: HTTP {status}: {reply}");
        }
        Ok(reply.get("result").cloned().unwrap_or(Value::Null))
    }

    /// Current block height.
    pub fn block_count(&self) -> Result<u64> {
        let v = self.rpc("getblockcount", json!([]))?;
        v.as_u64()
            .ok_or_else(|| anyhow!("getblockcount returned {v}"))
    }

    /// Mines `n` blocks to `address`, or to [`BURN_ADDRESS`] when `None`. Returns the block
    /// hashes. bitcoind has no wallet here; this uses `generatetoaddress`.
    pub fn mine_blocks(&self, n: u64, address: Option<&str>) -> Result<Vec<String>> {
        let address = address.unwrap_or(BURN_ADDRESS);
        let v = self.rpc("generatetoaddress", json!([n, address]))?;
        let hashes = v
            .as_array()
            .ok_or_else(|| anyhow!("generatetoaddress returned {v}"))?
            .iter()
            .map(|h| {
                h.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("bad block hash {h}"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(hashes)
    }

    /// Mines `blocks` blocks whose coinbases pay `address`. Returns the block hashes.
    pub fn mine_to(&self, address: &str, blocks: u64) -> Result<Vec<String>> {
        self.mine_blocks(blocks, Some(address))
    }

    /// The txid of the coinbase transaction of the block with this hash.
    pub fn coinbase_txid(&self, block_hash: &str) -> Result<String> {
        let block = self.rpc("getblock", json!([block_hash, 1]))?;
        block["tx"][0]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("block {block_hash} has no transactions: {block}"))
    }

    /// The hash of the block at `height`.
    pub fn block_hash(&self, height: u64) -> Result<String> {
        let v = self.rpc("getblockhash", json!([height]))?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("getblockhash returned {v}"))
    }

    /// Gives `address` one coinbase: mines one block paying `address` the whole block reward
    /// (the regtest subsidy: 50 BTC below height 150, halving every 150 blocks), then 100
    /// blocks to [`BURN_ADDRESS`] so it matures. Returns the coinbase txid; the output is
    /// vout 0. The chain grows by 101 blocks.
    pub fn fund_coinbase(&self, address: &str) -> Result<String> {
        let hashes = self.mine_blocks(1, Some(address))?;
        let hash = hashes
            .first()
            .ok_or_else(|| anyhow!("generatetoaddress mined no block"))?;
        let txid = self.coinbase_txid(hash)?;
        self.mine_blocks(COINBASE_MATURITY, None)?;
        Ok(txid)
    }

    /// Sends exactly `amount_sats` to `address` from the environment's faucet and mines one
    /// block (to [`BURN_ADDRESS`]) to confirm it. Returns the txid; the payment is vout 0.
    ///
    /// The faucet is a fixed key ([`FAUCET_WIF`]) whose coins come from coinbases: when it
    /// runs short it mines coinbases to itself and then 100 blocks to mature them, so the
    /// chain height may jump by 100+ blocks. The payment is confirmed (1 confirmation) and
    /// not a coinbase, so it is spendable at once.
    pub fn fund(&self, address: &str, amount_sats: u64) -> Result<String> {
        if amount_sats == 0 {
            bail!("fund: amount must be positive");
        }
        let mut faucet = self
            .faucet
            .lock()
            .map_err(|_| anyhow!("faucet lock poisoned"))?;
        let faucet_address = self.faucet_address_locked(&mut faucet)?;

        // Pick inputs (largest first) until they cover amount + fee; mine more if short.
        let height = self.block_count()?;
        faucet
            .utxos
            .sort_by_key(|u| std::cmp::Reverse(u.amount_sats));
        let mut inputs: Vec<FaucetUtxo> = Vec::new();
        let mut total = 0u64;
        let fee = |n: usize| FAUCET_FEE_BASE_SATS + FAUCET_FEE_PER_INPUT_SATS * n as u64;
        for utxo in faucet.utxos.iter().filter(|u| u.spendable_at <= height) {
            if total >= amount_sats + fee(inputs.len()) {
                break;
            }
            total += utxo.amount_sats;
            inputs.push(utxo.clone());
        }
        if total < amount_sats + fee(inputs.len()) {
            let mut mined = 0;
            while total < amount_sats + fee(inputs.len()) {
                if mined >= 200 {
                    bail!("fund: {amount_sats} sats is more than the faucet can mine");
                }
                let utxo = self.mine_faucet_coinbase(&faucet_address)?;
                if utxo.amount_sats == 0 {
                    bail!("fund: block subsidy is 0 at this height; the faucet cannot mine more");
                }
                total += utxo.amount_sats;
                faucet.utxos.push(utxo.clone());
                inputs.push(utxo);
                mined += 1;
            }
            self.mine_blocks(COINBASE_MATURITY, None)?;
        }
        let fee = fee(inputs.len());
        let change = total - amount_sats - fee;

        let tx_inputs: Vec<Value> = inputs
            .iter()
            .map(|u| json!({ "txid": u.txid, "vout": u.vout }))
            .collect();
        let mut outputs = vec![json!({ address: format_btc(amount_sats) })];
        // Keep change above the dust limit; otherwise leave it to the fee.
        if change >= 1_000 {
            outputs.push(json!({ faucet_address.as_str(): format_btc(change) }));
        }
        let unsigned = self.rpc("createrawtransaction", json!([tx_inputs, outputs]))?;
        let prevtxs: Vec<Value> = inputs
            .iter()
            .map(|u| {
                json!({ "txid": u.txid, "vout": u.vout, "scriptPubKey": u.script_pubkey,
                        "amount": format_btc(u.amount_sats) })
            })
            .collect();
        let signed = self.rpc(
            "signrawtransactionwithkey",
            json!([unsigned, [FAUCET_WIF], prevtxs]),
        )?;
        if signed["complete"] != json!(true) {
            bail!("fund: signrawtransactionwithkey did not complete: {signed}");
        }
        let hex = signed["hex"]
            .as_str()
            .ok_or_else(|| anyhow!("fund: no hex in {signed}"))?;
        let txid = self.send_raw(hex)?;

        let spent: Vec<(String, u32)> = inputs.iter().map(|u| (u.txid.clone(), u.vout)).collect();
        faucet
            .utxos
            .retain(|u| !spent.contains(&(u.txid.clone(), u.vout)));
        if change >= 1_000 {
            // Every faucet output pays the same script.
            faucet.utxos.push(FaucetUtxo {
                txid: txid.clone(),
                vout: 1,
                amount_sats: change,
                script_pubkey: inputs[0].script_pubkey.clone(),
                spendable_at: 0,
            });
        }
        self.mine_blocks(1, None)?;
        Ok(txid)
    }

    /// The faucet's address (P2WPKH of [`FAUCET_WIF`]), derived through bitcoind.
    pub fn faucet_address(&self) -> Result<String> {
        let mut faucet = self
            .faucet
            .lock()
            .map_err(|_| anyhow!("faucet lock poisoned"))?;
        self.faucet_address_locked(&mut faucet)
    }

    fn faucet_address_locked(&self, faucet: &mut Faucet) -> Result<String> {
        if let Some(addr) = &faucet.address {
            return Ok(addr.clone());
        }
        let addrs = self.derive_addresses(&format!("wpkh({FAUCET_WIF})"), None)?;
        let addr = addrs
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no faucet address derived"))?;
        faucet.address = Some(addr.clone());
        Ok(addr)
    }

    fn mine_faucet_coinbase(&self, faucet_address: &str) -> Result<FaucetUtxo> {
        let hashes = self.mine_blocks(1, Some(faucet_address))?;
        let hash = hashes
            .first()
            .ok_or_else(|| anyhow!("generatetoaddress mined no block"))?;
        let block = self.rpc("getblock", json!([hash, 2]))?;
        let height = block["height"]
            .as_u64()
            .ok_or_else(|| anyhow!("no height in block"))?;
        let coinbase = &block["tx"][0];
        let txid = coinbase["txid"]
            .as_str()
            .ok_or_else(|| anyhow!("no coinbase txid"))?;
        let out = &coinbase["vout"][0];
        let amount_sats = btc_to_sats(&out["value"])?;
        let script_pubkey = out["scriptPubKey"]["hex"]
            .as_str()
            .ok_or_else(|| anyhow!("no scriptPubKey in coinbase output {out}"))?;
        Ok(FaucetUtxo {
            txid: txid.to_string(),
            vout: 0,
            amount_sats,
            script_pubkey: script_pubkey.to_string(),
            spendable_at: height + COINBASE_MATURITY,
        })
    }

    /// `gettxout txid vout true`: the unspent output (mempool included), or `None` if it
    /// does not exist or is spent. Its `value` is in BTC.
    pub fn get_tx_out(&self, txid: &str, vout: u32) -> Result<Option<Value>> {
        let v = self.rpc("gettxout", json!([txid, vout, true]))?;
        Ok(if v.is_null() { None } else { Some(v) })
    }

    /// `getrawtransaction txid true` (works for any transaction: `-txindex=1`).
    pub fn get_raw_transaction(&self, txid: &str) -> Result<Value> {
        self.rpc("getrawtransaction", json!([txid, true]))
    }

    /// `sendrawtransaction hex`; returns the txid.
    pub fn send_raw(&self, hex: &str) -> Result<String> {
        let v = self.rpc("sendrawtransaction", json!([hex]))?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("sendrawtransaction returned {v}"))
    }

    /// `testmempoolaccept [hex]`; returns the one result object (`allowed`,
    /// `reject-reason`, `vsize`, `fees`, …).
    pub fn test_mempool_accept(&self, hex: &str) -> Result<Value> {
        let v = self.rpc("testmempoolaccept", json!([[hex]]))?;
        v.get(0)
            .cloned()
            .ok_or_else(|| anyhow!("testmempoolaccept returned {v}"))
    }

    /// `deriveaddresses`. A missing `#checksum` is added with `getdescriptorinfo`. `range`
    /// is `Some((begin, end))` (inclusive) for ranged descriptors.
    pub fn derive_addresses(
        &self,
        descriptor: &str,
        range: Option<(u32, u32)>,
    ) -> Result<Vec<String>> {
        let descriptor = if descriptor.contains('#') {
            descriptor.to_string()
        } else {
            let info = self.rpc("getdescriptorinfo", json!([descriptor]))?;
            let checksum = info["checksum"]
                .as_str()
                .ok_or_else(|| anyhow!("getdescriptorinfo returned {info}"))?;
            format!("{descriptor}#{checksum}")
        };
        let params = match range {
            Some((begin, end)) => json!([descriptor, [begin, end]]),
            None => json!([descriptor]),
        };
        let v = self.rpc("deriveaddresses", params)?;
        v.as_array()
            .ok_or_else(|| anyhow!("deriveaddresses returned {v}"))?
            .iter()
            .map(|a| {
                a.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("bad address {a}"))
            })
            .collect()
    }

    // ---------------------------------------------------------------- electrs

    /// Sends one Electrum JSON-RPC request on a fresh TCP connection and returns its
    /// `result` (the error message is in the error).
    pub fn electrum_request(&self, method: &str, params: Value) -> Result<Value> {
        let id = self.electrum_id.fetch_add(1, Ordering::Relaxed);
        let addr = self.electrum_addr();
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("electrum {method}: connecting to {addr}"))?;
        stream.set_read_timeout(Some(ELECTRUM_IO_TIMEOUT))?;
        stream.set_write_timeout(Some(ELECTRUM_IO_TIMEOUT))?;
        let mut line = serde_json::to_string(
            &json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }),
        )?;
        line.push('\n');
        (&stream)
            .write_all(line.as_bytes())
            .with_context(|| format!("electrum {method}: sending the request"))?;
        let mut reader = BufReader::new(&stream);
        loop {
            let mut reply = String::new();
            let n = reader
                .read_line(&mut reply)
                .with_context(|| format!("electrum {method}: reading the reply"))?;
            if n == 0 {
                bail!("electrum {method}: connection closed without a reply");
            }
            let reply: Value = serde_json::from_str(reply.trim())
                .with_context(|| format!("electrum {method}: bad reply {reply:?}"))?;
            // Skip notifications (no id) and anything that isn't ours.
            if reply.get("id") != Some(&json!(id)) {
                continue;
            }
            if let Some(err) = reply.get("error").filter(|e| !e.is_null()) {
                let msg = err
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                bail!(
                    "electrum {method} failed: {}",
                    msg.unwrap_or_else(|| err.to_string())
                );
            }
            return Ok(reply.get("result").cloned().unwrap_or(Value::Null));
        }
    }

    /// The chain tip height electrs reports (`blockchain.headers.subscribe`).
    pub fn electrum_height(&self) -> Result<u64> {
        let v = self.electrum_request("blockchain.headers.subscribe", json!([]))?;
        v["height"]
            .as_u64()
            .ok_or_else(|| anyhow!("blockchain.headers.subscribe returned {v}"))
    }

    /// Waits until electrs' tip is at least `height`.
    pub fn wait_until_electrum_height(&self, height: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.electrum_height();
            if let Ok(h) = last {
                if h >= height {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                let seen = match last {
                    Ok(h) => format!("its tip is {h}"),
                    Err(e) => format!("{e:#}"),
                };
                bail!(
                    "electrs did not reach height {height} within {timeout:?} ({seen})\n{}",
                    self.log_tails("electrs")
                );
            }
            sleep(Duration::from_millis(200));
        }
    }

    /// Waits until electrs has caught up with bitcoind's current tip.
    pub fn wait_until_electrum_synced(&self, timeout: Duration) -> Result<()> {
        let height = self.block_count()?;
        self.wait_until_electrum_height(height, timeout)
    }

    /// Waits until electrs serves transaction `txid` (`blockchain.transaction.get`), in the
    /// mempool or in a block.
    pub fn wait_until_electrum_sees(&self, txid: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.electrum_request("blockchain.transaction.get", json!([txid, false]));
            if let Ok(Value::String(hex)) = &last {
                if !hex.is_empty() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                let seen = match last {
                    Ok(v) => format!("last reply {v}"),
                    Err(e) => format!("{e:#}"),
                };
                bail!("electrs did not serve tx {txid} within {timeout:?} ({seen})");
            }
            sleep(Duration::from_millis(200));
        }
    }

    // ---------------------------------------------------------------- shutdown

    fn stop_processes(&mut self) {
        if let Some(mut electrs) = self.electrs.take() {
            let _ = electrs.kill();
            let _ = electrs.wait();
        }
        if let Some(mut bitcoind) = self.bitcoind.take() {
            if matches!(bitcoind.try_wait(), Ok(None)) {
                let _ = self.rpc("stop", json!([]));
                let deadline = Instant::now() + STOP_TIMEOUT;
                while matches!(bitcoind.try_wait(), Ok(None)) && Instant::now() < deadline {
                    sleep(Duration::from_millis(100));
                }
                if matches!(bitcoind.try_wait(), Ok(None)) {
                    let _ = bitcoind.kill();
                }
            }
            let _ = bitcoind.wait();
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.stop_processes();
        if let Some(dir) = self.tempdir.take() {
            if std::env::var("CKM_TESTENV_KEEP").is_ok_and(|v| v == "1") {
                let kept = dir.keep();
                eprintln!("testenv: kept {}", kept.display());
            }
            // Otherwise `dir` is dropped here, deleting it.
        }
    }
}

// -------------------------------------------------------------------- helpers

fn regtest_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CKM_REGTEST_CACHE").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join(".cache/ckm/regtest"))
}

fn exe_name(name: &str) -> String {
    format!("{name}{}", std::env::consts::EXE_SUFFIX)
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// `$var` if set, else `name` on PATH, else `cache_bin/name`.
fn find_exe(var: &str, name: &str, cache_bin: Option<&Path>) -> Result<PathBuf> {
    if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(&value);
        if is_executable(&path) {
            return Ok(path);
        }
        bail!("{var}={} is not an executable file", path.display());
    }
    let file = exe_name(name);
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(&file);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    if let Some(dir) = cache_bin {
        let candidate = dir.join(&file);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    let cache = cache_bin
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "$HOME/.cache/ckm/regtest/bin".to_string());
    bail!(
        "{name} not found (looked at ${var}, PATH and {cache}): run regtest/install, or set {var}"
    )
}

/// `N` distinct free loopback ports (all bound at once so they differ, then released).
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in ports.iter_mut() {
        let listener = TcpListener::bind("127.0.0.1:0").context("picking a free port")?;
        *port = listener.local_addr()?.port();
        listeners.push(listener);
    }
    Ok(ports)
}

/// Splits an HTTP/1.1 response into status code and (de-chunked) body.
fn parse_http_response(raw: &[u8]) -> Result<(u16, Vec<u8>)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("truncated HTTP response ({} bytes)", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            } else if name == "content-length" {
                length = value.parse::<usize>().ok();
            }
        }
    }
    if chunked {
        return Ok((status, dechunk(body)?));
    }
    let body = match length {
        Some(n) if n <= body.len() => &body[..n],
        Some(n) => bail!("HTTP body truncated: {} of {n} bytes", body.len()),
        None => body,
    };
    Ok((status, body.to_vec()))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunked HTTP body"))?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad HTTP chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            bail!("truncated HTTP chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or(&[]);
    }
}

fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Formats satoshis as a decimal BTC string ("0.00100000"), which bitcoind accepts for
/// amounts without float rounding.
pub fn format_btc(sats: u64) -> String {
    format!("{}.{:08}", sats / 100_000_000, sats % 100_000_000)
}

/// Converts a JSON BTC amount (as bitcoind prints it) to satoshis.
pub fn btc_to_sats(value: &Value) -> Result<u64> {
    let btc = value
        .as_f64()
        .ok_or_else(|| anyhow!("not a BTC amount: {value}"))?;
    if !(0.0..=21_000_000.0).contains(&btc) {
        bail!("BTC amount out of range: {value}");
    }
    Ok((btc * 100_000_000.0).round() as u64)
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"__cookie__:ab12"), "X19jb29raWVfXzphYjEy");
    }

    #[test]
    fn http_parsing() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse_http_response(raw).unwrap(), (200, b"hello".to_vec()));
        let raw = b"HTTP/1.1 500 Internal\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_http_response(raw).unwrap(), (500, b"abcde".to_vec()));
    }

    #[test]
    fn btc_amounts() {
        assert_eq!(format_btc(5_000_000_000), "50.00000000");
        assert_eq!(format_btc(1), "0.00000001");
        assert_eq!(btc_to_sats(&json!(0.1)).unwrap(), 10_000_000);
        assert_eq!(btc_to_sats(&json!(49.99999)).unwrap(), 4_999_999_000);
    }
}
