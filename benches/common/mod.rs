//! Helpers for the benchmarks: statistics, the machine, real signer processes (honest
//! `ckm signer serve` or the faulty signer example on the same home), wallet PSBTs of N
//! inputs with made-up funding, the bare-FROST floor and the libbitcoinconsensus check.
//!
//! Include it from a bench target with `mod common;` (it expects the target to include
//! `tests/common/consensus.rs` as `crate::consensus`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use bdk_wallet::{KeychainKind, Wallet};
use bitcoin::secp256k1::{Keypair, SecretKey};
use bitcoin::{Address, Amount, FeeRate, Network, Psbt, ScriptBuf, Transaction, TxOut};
use ckm::frost::shares::{secp, GroupPublic};
use ckm::identity::IdentityPublic;
use ckm::keys::{Roster, RosterEntry};
use ckm::message::{CoordinatorToSigner, SignerToCoordinator, WalletRef};
use ckm::net::client::Client;
use ckm::protocol::roast::PreCommitment;
use ckm::signer::home::SignerHome;
use ckm::wallet::{CkmWallet, WalletMeta};
use frost_secp256k1_tr as frost;
use rand::rngs::ThreadRng;
use rand::Rng;

use crate::consensus;

pub const NETWORK: Network = Network::Regtest;
pub const SATS_PER_INPUT: u64 = 100_000;
pub const PASSPHRASE: &str = "ckm-bench-passphrase";

// ---------------------------------------------------------------------------------------
// Statistics and the machine
// ---------------------------------------------------------------------------------------

pub fn log(text: impl AsRef<str>) {
    eprintln!("[bench] {}", text.as_ref());
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn median(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn min(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(f64::INFINITY, f64::min)
}

pub fn max(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One warm-up call, then `reps` timed calls; each call returns the time of its timed part.
pub fn sample(reps: usize, mut f: impl FnMut() -> Result<Duration>) -> Result<Vec<f64>> {
    f()?;
    (0..reps).map(|_| f().map(ms)).collect()
}

pub fn spread(samples: &[f64]) -> String {
    format!(
        "median {:.2} ms (min {:.2}, max {:.2}, n={})",
        median(samples),
        min(samples),
        max(samples),
        samples.len()
    )
}

pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{model}, {cores} cores")
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn existing(var: &str, default: PathBuf, build: &str) -> Result<PathBuf> {
    let bin = std::env::var_os(var).map(PathBuf::from).unwrap_or(default);
    let bin = if bin.is_relative() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(bin)
    } else {
        bin
    };
    ensure!(
        bin.exists(),
        "{} not found: build it first with `{build}` (or set {var})",
        bin.display()
    );
    Ok(bin)
}

/// The number in environment variable `var`, if it is set and parses (the benches' numeric
/// settings; anything else leaves the default).
pub fn env_number<T: std::str::FromStr>(var: &str) -> Option<T> {
    std::env::var(var).ok().and_then(|v| v.parse().ok())
}

/// The one-round options of the benches: ckm's defaults, or with `CKM_BENCH_PATIENCE=none`
/// plain ROAST (a member that answered is ready again at once) for an A/B of the patience
/// (`ckm::protocol::patience`).
pub fn one_round_options(hedge: bool) -> ckm::net::one_round::OneRoundOptions {
    use ckm::protocol::patience::Patience;
    let plain = std::env::var("CKM_BENCH_PATIENCE").is_ok_and(|v| v == "none");
    ckm::net::one_round::OneRoundOptions {
        hedge,
        patience: if plain {
            Patience::NONE
        } else {
            Patience::DEFAULT
        },
        ..ckm::net::one_round::OneRoundOptions::default()
    }
}

/// The `ckm` binary: `CKM_BIN`, else the one cargo built with this bench.
pub fn ckm_bin() -> Result<PathBuf> {
    existing(
        "CKM_BIN",
        PathBuf::from(env!("CARGO_BIN_EXE_ckm")),
        "cargo build --release --locked",
    )
}

/// The faulty signer example: `CKM_FAULTY_BIN`, else `examples/faulty_signer` next to `ckm`.
pub fn faulty_bin(ckm: &Path) -> Result<PathBuf> {
    let default = ckm
        .parent()
        .unwrap_or(Path::new("."))
        .join("examples")
        .join(format!("faulty_signer{}", std::env::consts::EXE_SUFFIX));
    existing(
        "CKM_FAULTY_BIN",
        default,
        "cargo build --release --locked --examples",
    )
}

// ---------------------------------------------------------------------------------------
// PSBTs of N inputs
// ---------------------------------------------------------------------------------------

pub fn foreign_address(rng: &mut ThreadRng) -> Address {
    let sk = SecretKey::new(rng);
    let (xonly, _) = Keypair::from_secret_key(secp(), &sk).x_only_public_key();
    Address::p2tr(secp(), xonly, None, NETWORK)
}

/// Funds `inputs` fresh receive addresses of `wallet` with made-up unconfirmed transactions
/// and builds a PSBT spending all of them: one payment (half the funds) and change.
pub fn fund_and_build(wallet: &mut Wallet, inputs: usize, rng: &mut ThreadRng) -> Result<Psbt> {
    let scripts: Vec<ScriptBuf> = (0..inputs)
        .map(|_| {
            wallet
                .reveal_next_address(KeychainKind::External)
                .address
                .script_pubkey()
        })
        .collect();
    let txs: Vec<(Transaction, u64)> = scripts
        .into_iter()
        .map(|spk| {
            (
                consensus::made_up_funding(rng, spk, SATS_PER_INPUT),
                1_700_000_000,
            )
        })
        .collect();
    wallet.apply_unconfirmed_txs(txs);
    let to = foreign_address(rng);
    let mut builder = wallet.build_tx();
    builder.add_recipient(
        to.script_pubkey(),
        Amount::from_sat(inputs as u64 * SATS_PER_INPUT / 2),
    );
    builder.drain_wallet();
    builder.fee_rate(FeeRate::from_sat_per_vb_u32(2));
    let psbt = builder.finish().context("building the PSBT")?;
    ensure!(
        psbt.inputs.len() == inputs && psbt.outputs.len() == 2,
        "expected {inputs} inputs and 2 outputs, got {} and {}",
        psbt.inputs.len(),
        psbt.outputs.len()
    );
    Ok(psbt)
}

/// The coordinator's view of a wallet of `group` with `roster`.
pub fn wallet_meta(name: &str, group: &GroupPublic, roster: Roster) -> WalletMeta {
    WalletMeta {
        name: name.to_string(),
        network: NETWORK,
        group: group.clone(),
        roster,
        electrum: None,
        keygen: None,
        epoch: 0,
        transitions: Vec::new(),
        pending: None,
        birth_height: None,
    }
}

/// A PSBT of `inputs` inputs of the wallet `meta` (its own SQLite file in `dir`).
pub fn wallet_psbt(
    dir: &Path,
    meta: &WalletMeta,
    inputs: usize,
    rng: &mut ThreadRng,
) -> Result<Psbt> {
    let file = dir.join(format!(
        "{}-{inputs}-{}.sqlite",
        meta.name,
        rng.gen::<u32>()
    ));
    let mut wallet = CkmWallet::create(&file, meta.clone())?;
    fund_and_build(wallet.bdk_mut(), inputs, rng)
}

/// Checks every input of `tx` with libbitcoinconsensus (Taproot rules) against the outputs
/// the unsigned PSBT says it spends.
pub fn consensus_verify(unsigned: &Psbt, tx: &Transaction) -> Result<()> {
    let spent: Vec<TxOut> = unsigned
        .inputs
        .iter()
        .map(|i| i.witness_utxo.clone())
        .collect::<Option<_>>()
        .context("an input has no witness_utxo")?;
    ensure!(spent.len() == tx.input.len(), "input count changed");
    consensus::consensus_verify_against(tx, &spent)
}

// ---------------------------------------------------------------------------------------
// Signer processes
// ---------------------------------------------------------------------------------------

/// How a signer home is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serve {
    /// `ckm signer serve`.
    Honest,
    /// `faulty_signer --fault MODE` (examples/faulty_signer.rs).
    Faulty(String),
}

/// A signer home and the process serving it (killed when dropped).
pub struct SignerProc {
    pub home: PathBuf,
    pub identity: IdentityPublic,
    pub url: String,
    pub serve: Serve,
    /// `http://ADDR/metrics` of an honest signer (its `--metrics` listener), once printed.
    pub metrics: Arc<Mutex<Option<String>>>,
    child: Option<Child>,
    allowed: Vec<IdentityPublic>,
    peers: Vec<IdentityPublic>,
}

/// The CPU time (ns) each live thread of process `pid` (or `self`) has run so far, by
/// thread id, from `/proc/PID/task/*/schedstat` (nanoseconds, unlike the ticks of
/// [`cpu_ms`]).
pub fn thread_cpu_ns(pid: &str) -> Option<BTreeMap<u32, u64>> {
    let mut out = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        // A thread that ends between the listing and the read is skipped.
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = stat.split_whitespace().next().and_then(|v| v.parse().ok()) {
            out.insert(tid, ns);
        }
    }
    Some(out)
}

/// CPU time (ms) the threads of this process and of each of `pids` ran while `f` ran (this
/// process first, then `pids` in order): the sum of each thread's growth, a thread that
/// started meanwhile counted whole. A lower bound: a thread that ended before the second
/// reading is missed (with its whole time, not only the part it ran during `f`). Reads are
/// ordered so that reading the other processes' `/proc` is not charged to this process's
/// time. `None` when a process cannot be read.
pub fn cpu_during<T>(
    pids: &[String],
    f: impl FnOnce() -> Result<T>,
) -> Result<(T, Option<Vec<f64>>)> {
    let read = |pid: &str| thread_cpu_ns(pid);
    let others_before: Option<Vec<_>> = pids.iter().map(|p| read(p)).collect();
    let self_before = read("self");
    let out = f()?;
    let self_after = read("self");
    let others_after: Option<Vec<_>> = pids.iter().map(|p| read(p)).collect();
    let grown = |before: &BTreeMap<u32, u64>, after: &BTreeMap<u32, u64>| -> f64 {
        let ns: u64 = after
            .iter()
            .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
            .sum();
        ns as f64 / 1e6
    };
    let cpu = (|| {
        let mut each = vec![grown(&self_before?, &self_after?)];
        for (b, a) in others_before?.iter().zip(others_after?.iter()) {
            each.push(grown(b, a));
        }
        Some(each)
    })();
    Ok((out, cpu))
}

/// CPU time (user + system, ms) used so far by process `pid` over all its threads, from
/// `/proc/PID/stat` (clock ticks of 10 ms: meaningful over many signings, not one).
pub fn cpu_ms(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 10.0)
}

impl SignerProc {
    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The listening address (`host:port`).
    pub fn addr(&self) -> Result<std::net::SocketAddr> {
        let hostport = self
            .url
            .strip_prefix("http://")
            .with_context(|| format!("unexpected signer url {}", self.url))?;
        Ok(hostport.parse()?)
    }

    fn command(&self, ckm: &Path) -> Result<Command> {
        let mut cmd = match &self.serve {
            Serve::Honest => {
                let mut cmd = Command::new(ckm);
                cmd.arg("--home").arg(&self.home).args([
                    "signer",
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--metrics",
                    "127.0.0.1:0",
                ]);
                cmd
            }
            Serve::Faulty(fault) => {
                let mut cmd = Command::new(faulty_bin(ckm)?);
                cmd.arg("--home").arg(&self.home).args([
                    "--listen",
                    "127.0.0.1:0",
                    "--fault",
                    fault,
                ]);
                cmd
            }
        };
        for key in &self.allowed {
            cmd.arg("--allow-coordinator").arg(key.to_string());
        }
        for peer in &self.peers {
            cmd.arg("--allow-peer").arg(peer.to_string());
        }
        cmd.env("CKM_PASSPHRASE", PASSPHRASE)
            .env_remove("CKM_HOME")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        Ok(cmd)
    }

    /// Spawns the server; [`SignerProc::wait_ready`] waits for its address.
    fn spawn(&mut self, ckm: &Path) -> Result<mpsc::Receiver<Option<std::io::Result<String>>>> {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.home.with_extension("serve.log"))?;
        let mut child = self
            .command(ckm)?
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting the signer of {}", self.home.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        self.child = Some(child);
        let (tx, rx) = mpsc::channel();
        let metrics = self.metrics.clone();
        *metrics.lock().unwrap_or_else(|p| p.into_inner()) = None;
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for line in lines.map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("metrics on ") {
                    *metrics.lock().unwrap_or_else(|p| p.into_inner()) = Some(url.to_string());
                }
            }
        });
        Ok(rx)
    }

    fn wait_ready(&mut self, rx: mpsc::Receiver<Option<std::io::Result<String>>>) -> Result<()> {
        let line = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Some(Ok(line))) => line,
            other => bail!(
                "signer of {} did not start ({other:?}); see {}",
                self.home.display(),
                self.home.with_extension("serve.log").display()
            ),
        };
        // "listening on http://ADDR as ID"
        let (url, id) = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split_once(" as "))
            .with_context(|| format!("unexpected first line from signer: {line}"))?;
        let id = IdentityPublic::from_str(id.trim())
            .map_err(|e| anyhow!("signer identity {id}: {e}"))?;
        ensure!(id == self.identity, "signer answered as {id}");
        self.url = url.to_string();
        Ok(())
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s) and serves the same home as
    /// `serve` on a new port.
    pub fn restart_as(&mut self, ckm: &Path, serve: Serve) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.serve = serve;
        let rx = self.spawn(ckm)?;
        self.wait_ready(rx)
    }
}

impl Drop for SignerProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `ckm signer init` in each home (in parallel), then `ckm signer serve` on a free loopback
/// port allowing the coordinators `allowed`, every signer approving every other as a
/// key-generation peer; returns once every server printed its address.
pub fn start_signers(
    ckm: &Path,
    homes: &[PathBuf],
    allowed: &[IdentityPublic],
) -> Result<Vec<SignerProc>> {
    let mut inits = Vec::new();
    for home in homes {
        let child = Command::new(ckm)
            .arg("--home")
            .arg(home)
            .args(["signer", "init"])
            .env("CKM_PASSPHRASE", PASSPHRASE)
            .env_remove("CKM_HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} signer init", ckm.display()))?;
        inits.push((home, child));
    }
    for (home, child) in inits {
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "signer init in {} failed: {}",
            home.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ids = homes
        .iter()
        .map(|h| Ok(SignerHome::public_identity(h)?))
        .collect::<Result<Vec<IdentityPublic>>>()?;
    let mut procs = Vec::new();
    let mut waiting = Vec::new();
    for (home, me) in homes.iter().zip(&ids) {
        let mut p = SignerProc {
            home: home.clone(),
            identity: *me,
            url: String::new(),
            serve: Serve::Honest,
            metrics: Arc::default(),
            child: None,
            allowed: allowed.to_vec(),
            peers: ids.iter().filter(|p| *p != me).copied().collect(),
        };
        // Owned by the list from here on, so an early return kills every child.
        let rx = p.spawn(ckm)?;
        procs.push(p);
        waiting.push(rx);
    }
    for (p, rx) in procs.iter_mut().zip(waiting) {
        p.wait_ready(rx)?;
    }
    Ok(procs)
}

/// One `Preprocess` call: `count` fresh commitments of `entry` for `wallet`, the batch's
/// signature checked (as a coordinator stores them for one-round signing).
pub fn preprocess(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    entry: &RosterEntry,
    wallet: &WalletRef,
    count: u16,
) -> Result<Vec<PreCommitment>> {
    let reply = rt.block_on(client.call(
        entry,
        &CoordinatorToSigner::Preprocess {
            wallet: wallet.clone(),
            count,
        },
    ))?;
    let SignerToCoordinator::Preprocessed { batch, .. } = reply else {
        bail!("signer {} answered Preprocess with {reply:?}", entry.index);
    };
    Ok(batch.verify(
        entry.index,
        &entry.identity,
        &client.identity().public(),
        &wallet.group_key,
    )?)
}

/// `ckm --json signer policy set --wallet WALLET --daily-limit-sats SATS` on a signer home
/// (a running server applies it to the next request).
pub fn set_daily_limit(ckm: &Path, home: &Path, wallet: &str, sats: u64) -> Result<()> {
    let out = Command::new(ckm)
        .arg("--home")
        .arg(home)
        .args(["--json", "signer", "policy", "set", "--wallet", wallet])
        .args(["--daily-limit-sats", &sats.to_string()])
        .env("CKM_PASSPHRASE", PASSPHRASE)
        .env_remove("CKM_HOME")
        .stdin(Stdio::null())
        .output()?;
    ensure!(
        out.status.success(),
        "policy set in {}: {}",
        home.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The floor
// ---------------------------------------------------------------------------------------

/// Bare frost: t signers commit, sign (root key packages) and one aggregation per message,
/// one process, no I/O, no PSBT.
pub fn floor_samples(
    t: u16,
    n: u16,
    inputs: usize,
    reps: usize,
    rng: &mut ThreadRng,
) -> Result<Vec<f64>> {
    let (secret_shares, public_key_package) =
        frost::keys::generate_with_dealer(n, t, frost::keys::IdentifierList::Default, &mut *rng)?;
    let key_packages: Vec<frost::keys::KeyPackage> = secret_shares
        .into_values()
        .take(usize::from(t))
        .map(frost::keys::KeyPackage::try_from)
        .collect::<Result<_, _>>()?;
    sample(reps, || {
        let messages: Vec<[u8; 32]> = (0..inputs).map(|_| rng.gen()).collect();
        let start = Instant::now();
        let mut commitments: Vec<BTreeMap<frost::Identifier, frost::round1::SigningCommitments>> =
            vec![BTreeMap::new(); inputs];
        let mut nonces: Vec<Vec<frost::round1::SigningNonces>> = Vec::new();
        for kp in &key_packages {
            let mut mine = Vec::with_capacity(inputs);
            for per_input in commitments.iter_mut() {
                let (nonce, commitment) = frost::round1::commit(kp.signing_share(), &mut *rng);
                per_input.insert(*kp.identifier(), commitment);
                mine.push(nonce);
            }
            nonces.push(mine);
        }
        let packages: Vec<frost::SigningPackage> = commitments
            .into_iter()
            .zip(&messages)
            .map(|(c, m)| frost::SigningPackage::new(c, m))
            .collect();
        let mut shares: Vec<BTreeMap<frost::Identifier, frost::round2::SignatureShare>> =
            vec![BTreeMap::new(); inputs];
        for (kp, mine) in key_packages.iter().zip(&nonces) {
            for ((package, nonce), per_input) in packages.iter().zip(mine).zip(shares.iter_mut()) {
                let share = frost::round2::sign_with_tweak(package, nonce, kp, None)?;
                per_input.insert(*kp.identifier(), share);
            }
        }
        for (package, per_input) in packages.iter().zip(&shares) {
            frost::aggregate_with_tweak(package, per_input, &public_key_package, None)?;
        }
        Ok(start.elapsed())
    })
}

/// `reps` durable SQLite commits in `dir` (the disk the signer homes use), each a 4 KiB row in
/// its own `BEGIN IMMEDIATE` transaction, WAL and `synchronous=FULL` as in `signer.db`: the
/// cost of the one durable write a signing makes, measured in the same run (ms).
pub fn commit_samples(dir: &Path, reps: usize) -> Result<Vec<f64>> {
    use bdk_wallet::rusqlite::{Connection, TransactionBehavior};
    let path = dir.join("commit-probe.db");
    let mut conn = Connection::open(&path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, body BLOB NOT NULL);",
    )?;
    let body = vec![0x5au8; 4096];
    let commit = |conn: &mut Connection| -> Result<Duration> {
        let start = Instant::now();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("INSERT INTO probe (body) VALUES (?1)", [&body])?;
        tx.commit()?;
        Ok(start.elapsed())
    };
    for _ in 0..5 {
        commit(&mut conn)?;
    }
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        out.push(ms(commit(&mut conn)?));
    }
    drop(conn);
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
    Ok(out)
}
