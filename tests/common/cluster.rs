//! Multi-process test harness for `ckm`: real `ckm signer serve` processes on loopback (or the
//! deliberately faulty signer of `examples/faulty_signer.rs` on an existing home), a
//! coordinator home driven through the real `ckm` command line, made-up funding of the
//! coordinator's wallet, and checks of the signed transactions with libbitcoinconsensus.
//!
//! Include it from a test file with
//!
//! ```ignore
//! #[path = "common/cluster.rs"]
//! mod cluster;
//! use cluster::*;
//! ```
//!
//! * [`Cluster::start`] / [`Cluster::with_wallet`]: `n` signers trusting a fresh coordinator
//!   (and a `t`-of-`n` wallet named [`WALLET`] made by `ckm wallet create`).
//! * [`Cluster::restart_faulty`]: restarts signer `i` as `faulty_signer --fault F` on the same
//!   home, on the same port when it can be bound again (else on a new port, and the
//!   coordinator's roster is updated).
//! * [`fund`], [`Cluster::pay`], [`fund_and_build`]: made-up unconfirmed funding and payments
//!   built with `CkmWallet::build_payment`.
//! * [`check_signed`] / [`consensus_verify`]: every input verified with the Taproot rules.
//!
//! Every cluster lives in its own temporary directory; processes are killed on drop.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::str::FromStr;
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, ensure, Context, Result};
use bdk_wallet::KeychainKind;
use bitcoin::{Address, Amount, FeeRate, Network, OutPoint, Psbt, Transaction, TxOut};
use ckm::frost::shares::{secp, GroupPublic};
use ckm::identity::{IdentityKey, IdentityPublic};
use ckm::message::{CoordinatorToSigner, SignerToCoordinator};
use ckm::net::MESSAGE_PATH;
use ckm::signer::home::SignerHome;
use ckm::wallet::{CkmWallet, RosterEntry};
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_ckm");

/// A fresh random recovery master key (test network) and its public recovery key at
/// m/86'/1'/0'.
pub fn recovery_key() -> Result<(bitcoin::bip32::Xpriv, ckm::recovery::RecoveryKey)> {
    use rand::RngCore;
    let mut seed = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut seed);
    let master = bitcoin::bip32::Xpriv::new_master(bitcoin::NetworkKind::Test, &seed)?;
    let secret: ckm::recovery::script_path::RecoverySecret = master.to_string().parse()?;
    let key = secret.public_at(&bitcoin::bip32::DerivationPath::from_str("86'/1'/0'")?)?;
    Ok((master, key))
}
pub const PASSPHRASE: &str = "correct horse battery staple";
pub const NETWORK: Network = Network::Regtest;
pub const WALLET: &str = "vault";
/// How long a signer may take to unlock its store and start listening.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// The ckm command line
// ---------------------------------------------------------------------------------------

/// A `ckm` command with a clean environment (only the passphrase is set).
pub fn ckm_cmd(home: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--home")
        .arg(home)
        .env_remove("CKM_HOME")
        .env_remove("CKM_ELECTRUM")
        .env_remove("CKM_BITCOIND")
        .env_remove("RUST_LOG")
        .env("CKM_PASSPHRASE", PASSPHRASE)
        .stdin(Stdio::null());
    cmd
}

/// Runs `ckm --home HOME ARGS…` to completion.
pub fn ckm(home: &Path, args: &[&str]) -> Result<Output> {
    ckm_cmd(home)
        .args(args)
        .output()
        .with_context(|| format!("running ckm {args:?}"))
}

/// Runs `ckm --home HOME --json ARGS…`, requires success and parses stdout as JSON.
pub fn ckm_json(home: &Path, args: &[&str]) -> Result<serde_json::Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ckm(home, &all)?;
    ensure!(
        out.status.success(),
        "ckm {all:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "ckm {all:?} printed no JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The `{"error": …}` message a failed `ckm --json …` printed last on stderr.
pub fn json_error(out: &Output) -> Result<String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    let err: serde_json::Value = serde_json::from_str(last)
        .with_context(|| format!("the last line of stderr is not JSON: {stderr}"))?;
    let mut text = json_str(&err, "error")?.to_string();
    if let Some(hint) = err["hint"].as_str() {
        text.push_str("\nhint: ");
        text.push_str(hint);
    }
    Ok(text)
}

pub fn json_str<'a>(v: &'a serde_json::Value, key: &str) -> Result<&'a str> {
    v[key]
        .as_str()
        .ok_or_else(|| anyhow!("no string field {key:?} in {v}"))
}

pub fn string_array(v: &serde_json::Value) -> Result<Vec<String>> {
    v.as_array()
        .with_context(|| format!("{v} is not an array"))?
        .iter()
        .map(|x| {
            x.as_str()
                .map(str::to_string)
                .with_context(|| format!("{x} is not a string"))
        })
        .collect()
}

pub fn u16_array(v: &serde_json::Value) -> Result<Vec<u16>> {
    v.as_array()
        .with_context(|| format!("{v} is not an array"))?
        .iter()
        .map(|x| {
            x.as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .with_context(|| format!("{x} is not an index"))
        })
        .collect()
}

pub fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

// ---------------------------------------------------------------------------------------
// The faulty signer example
// ---------------------------------------------------------------------------------------

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Path of `examples/faulty_signer` next to the `ckm` binary under test, built with
/// `cargo build --example faulty_signer` when it is missing or older than `ckm` (a
/// `cargo test --test NAME` run builds no example). Built at most once per test process.
pub fn faulty_signer_bin() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_faulty_signer().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn build_faulty_signer() -> Result<PathBuf> {
    let bin = Path::new(BIN);
    let profile_dir = bin.parent().context("ckm binary has no directory")?;
    let path = profile_dir
        .join("examples")
        .join(format!("faulty_signer{}", std::env::consts::EXE_SUFFIX));
    let fresh = matches!((modified(&path), modified(bin)), (Some(e), Some(b)) if e >= b);
    if fresh {
        return Ok(path);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building the faulty_signer example (cargo build --example faulty_signer)...");
    let log = std::env::temp_dir().join(format!("ckm-faulty-build-{}.log", std::process::id()));
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--example", "faulty_signer"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log)?));
    // The profile `cargo test` builds the library with, so only the example is compiled.
    if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
        cmd.arg("--release");
    } else {
        cmd.args(["--profile", "test"]);
    }
    let mut child = cmd.spawn().context("spawning cargo build --example")?;
    // Generous: the build directory may be locked by another build for a while.
    let deadline = Instant::now() + Duration::from_secs(30 * 60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("cargo build --example faulty_signer did not finish; run it by hand first");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    ensure!(
        status.success(),
        "cargo build --example faulty_signer failed:\n{text}"
    );
    ensure!(path.exists(), "{} was not built", path.display());
    Ok(path)
}

// ---------------------------------------------------------------------------------------
// Signer processes
// ---------------------------------------------------------------------------------------

/// What program serves a signer home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `ckm signer serve`.
    Honest,
    /// `faulty_signer --fault FAULT` (`corrupt-share`, `die-before-round2`, `hang`,
    /// `slow:MS`).
    Faulty(String),
}

/// One signer process (and its home).
pub struct SignerProc {
    pub home: PathBuf,
    pub identity: IdentityPublic,
    pub allow: String,
    /// Identity keys given to `--allow-peer` (the other signers of the cluster).
    pub peers: Vec<String>,
    /// More coordinators given to `--allow-coordinator` at the next launch.
    pub extra_coordinators: Vec<String>,
    /// A program (and its arguments) that runs `ckm signer serve` at the next launch, e.g.
    /// `unshare -m …` (it must end by exec'ing the command it is given).
    pub wrapper: Vec<String>,
    pub log: PathBuf,
    pub url: String,
    /// Address given to `--listen` at the next launch.
    pub listen: String,
    pub kind: Kind,
    /// More arguments for `ckm signer serve` (limits, more coordinators, …).
    pub extra: Vec<String>,
    /// Run `ckm signer serve --config FILE` alone (no other flag, no CKM_PASSPHRASE).
    pub config: Option<PathBuf>,
    /// The certificate fingerprint announced by a TLS signer.
    pub tls_sha256: Option<String>,
    /// Lines printed on stdout after the first one.
    pub more_stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    child: Option<Child>,
    starts: u32,
}

impl SignerProc {
    /// Runs `signer init` in a new home `home` (in parallel with others: see [`init_all`]).
    pub fn spawn_init(home: &Path) -> Result<Child> {
        ckm_cmd(home)
            .args(["--json", "signer", "init"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning ckm signer init")
    }

    /// Starts `signer serve` on 127.0.0.1:0 for an initialized home and waits until ready.
    pub fn start(home: &Path, allow_coordinator: &str) -> Result<Self> {
        Self::start_as(home, allow_coordinator, Kind::Honest)
    }

    /// Starts `signer serve … EXTRA…` on 127.0.0.1:0 and waits until ready.
    pub fn start_with(home: &Path, allow_coordinator: &str, extra: &[&str]) -> Result<Self> {
        Self::start_full(home, allow_coordinator, &[], Kind::Honest, extra)
    }

    /// Starts `kind` on 127.0.0.1:0 for an initialized home and waits until ready.
    pub fn start_as(home: &Path, allow_coordinator: &str, kind: Kind) -> Result<Self> {
        Self::start_with_peers(home, allow_coordinator, &[], kind)
    }

    /// Starts `kind` approving `peers` (`--allow-peer`) and waits until ready.
    pub fn start_with_peers(
        home: &Path,
        allow_coordinator: &str,
        peers: &[String],
        kind: Kind,
    ) -> Result<Self> {
        Self::start_full(home, allow_coordinator, peers, kind, &[])
    }

    fn start_full(
        home: &Path,
        allow_coordinator: &str,
        peers: &[String],
        kind: Kind,
        extra: &[&str],
    ) -> Result<Self> {
        let identity = SignerHome::public_identity(home)?;
        let mut proc = SignerProc {
            home: home.to_path_buf(),
            identity,
            allow: allow_coordinator.to_string(),
            peers: peers.to_vec(),
            extra_coordinators: Vec::new(),
            wrapper: Vec::new(),
            log: PathBuf::new(),
            url: String::new(),
            listen: "127.0.0.1:0".into(),
            kind,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            config: None,
            tls_sha256: None,
            more_stdout: Default::default(),
            child: None,
            starts: 0,
        };
        proc.launch()?;
        Ok(proc)
    }

    /// Starts `ckm signer serve --config CONFIG` (and nothing else: no other flag, no
    /// CKM_PASSPHRASE) and waits until ready.
    pub fn start_config(home: &Path, config: &Path) -> Result<Self> {
        let identity = SignerHome::public_identity(home)?;
        let mut proc = SignerProc {
            home: home.to_path_buf(),
            identity,
            allow: String::new(),
            peers: Vec::new(),
            extra_coordinators: Vec::new(),
            wrapper: Vec::new(),
            log: PathBuf::new(),
            url: String::new(),
            listen: String::new(),
            kind: Kind::Honest,
            extra: Vec::new(),
            config: Some(config.to_path_buf()),
            tls_sha256: None,
            more_stdout: Default::default(),
            child: None,
            starts: 0,
        };
        proc.launch()?;
        Ok(proc)
    }

    fn command(&self) -> Result<Command> {
        if let Some(config) = &self.config {
            let mut cmd = ckm_cmd(&self.home);
            cmd.env_remove("CKM_PASSPHRASE")
                .args(["signer", "serve", "--config"])
                .arg(config)
                .env("RUST_LOG", "info");
            return Ok(cmd);
        }
        Ok(match &self.kind {
            Kind::Honest if !self.wrapper.is_empty() => {
                let mut cmd = Command::new(&self.wrapper[0]);
                cmd.args(&self.wrapper[1..])
                    .arg(BIN)
                    .arg("--home")
                    .arg(&self.home)
                    .args([
                        "signer",
                        "serve",
                        "--listen",
                        &self.listen,
                        "--allow-coordinator",
                        &self.allow,
                    ])
                    .args(self.peers.iter().flat_map(|p| ["--allow-peer", p.as_str()]))
                    .args(&self.extra)
                    .env_remove("CKM_HOME")
                    .env_remove("CKM_ELECTRUM")
                    .env("RUST_LOG", "info")
                    .env("CKM_PASSPHRASE", PASSPHRASE)
                    .stdin(Stdio::null());
                cmd
            }
            Kind::Honest => {
                let mut cmd = ckm_cmd(&self.home);
                cmd.args([
                    "signer",
                    "serve",
                    "--listen",
                    &self.listen,
                    "--allow-coordinator",
                    &self.allow,
                ])
                .args(&self.extra)
                .env("RUST_LOG", "info");
                for p in &self.peers {
                    cmd.args(["--allow-peer", p]);
                }
                for c in &self.extra_coordinators {
                    cmd.args(["--allow-coordinator", c]);
                }
                cmd
            }
            Kind::Faulty(fault) => {
                let mut cmd = Command::new(faulty_signer_bin()?);
                cmd.arg("--home")
                    .arg(&self.home)
                    .args([
                        "--listen",
                        &self.listen,
                        "--allow-coordinator",
                        &self.allow,
                        "--fault",
                        fault,
                    ])
                    .args(self.peers.iter().flat_map(|p| ["--allow-peer", p.as_str()]))
                    .env_remove("CKM_HOME")
                    .env_remove("RUST_LOG")
                    .env("CKM_PASSPHRASE", PASSPHRASE)
                    .stdin(Stdio::null());
                cmd
            }
        })
    }

    /// Spawns the process on `self.listen` and waits for `listening on http://ADDR as ID`.
    pub fn launch(&mut self) -> Result<()> {
        ensure!(self.child.is_none(), "already running");
        self.starts += 1;
        let name = self
            .home
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("signer")
            .to_string();
        self.log = self
            .home
            .with_file_name(format!("{name}.serve{}.log", self.starts));
        let stderr = std::fs::File::create(&self.log)?;
        let mut child = self
            .command()?
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .with_context(|| format!("spawning signer {:?}", self.kind))?;
        let stdout = child.stdout.take().context("no stdout")?;
        // The child is owned (and killed on drop) from here on.
        self.child = Some(child);
        let (tx, rx) = mpsc::channel();
        let more = self.more_stdout.clone();
        if let Ok(mut m) = more.lock() {
            m.clear();
        }
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so the signer never blocks on a full pipe.
            for line in lines.map_while(Result::ok) {
                if let Ok(mut m) = more.lock() {
                    m.push(line);
                }
            }
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            other => {
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                self.kill();
                bail!(
                    "signer {} ({:?} on {}) did not report listening ({other:?}; exit status {status:?}); log:\n{}",
                    self.home.display(),
                    self.kind,
                    self.listen,
                    self.log_text()
                )
            }
        };
        // `listening on http(s)://ADDR as ID[ tls-sha256 FINGERPRINT]`
        let rest = line
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line {line:?}"))?;
        let (url, tail) = rest
            .split_once(" as ")
            .with_context(|| format!("unexpected first line {line:?}"))?;
        let mut words = tail.split_whitespace();
        let id = words.next().unwrap_or_default();
        ensure!(
            id == self.identity.to_string(),
            "signer announced identity {id}, its home says {}",
            self.identity
        );
        self.tls_sha256 = match (words.next(), words.next()) {
            (Some("tls-sha256"), Some(fp)) => Some(fp.to_string()),
            _ => None,
        };
        ensure!(
            url.starts_with("http://127.0.0.1:") || url.starts_with("https://127.0.0.1:"),
            "unexpected URL {url}"
        );
        self.url = url.to_string();
        Ok(())
    }

    /// `URL#PUBKEY` (plus `@FINGERPRINT` for a TLS signer) for `wallet create --signer`.
    pub fn spec(&self) -> String {
        match &self.tls_sha256 {
            Some(fp) => format!("{}#{}@{fp}", self.url, self.identity),
            None => format!("{}#{}", self.url, self.identity),
        }
    }

    /// Lines the signer printed on stdout after the first.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.more_stdout
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    pub fn endpoint(&self) -> String {
        format!("{}{MESSAGE_PATH}", self.url)
    }

    /// `127.0.0.1:PORT` of the current (or last) process.
    pub fn addr(&self) -> Result<String> {
        self.url
            .strip_prefix("http://")
            .or_else(|| self.url.strip_prefix("https://"))
            .map(str::to_string)
            .with_context(|| format!("no address in {}", self.url))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Process id of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has exited by itself (e.g. `die-before-round2`).
    pub fn has_exited(&mut self) -> Result<bool> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?.is_some()),
            None => Ok(true),
        }
    }

    /// SIGKILL (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; asserts a clean exit (code 0) within 10 s.
    pub fn stop(&mut self) -> Result<()> {
        let mut child = self.child.take().context("signer not running")?;
        let pid = child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status()?;
        ensure!(status.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                ensure!(
                    status.code() == Some(0),
                    "signer exited with {status} after SIGTERM; log:\n{}",
                    self.log_text()
                );
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("signer did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops (SIGTERM) and starts again with the same home, on a new port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.listen = "127.0.0.1:0".into();
        self.launch()
    }

    /// Ends the running process (SIGTERM for `ckm signer serve`, which must exit cleanly;
    /// SIGKILL for the faulty signer, which only stops on SIGINT) and starts `kind` on the
    /// same home. Tries the same port first (a few times), then falls back to a new port.
    /// Returns whether the URL changed (then the coordinator's roster must be updated: see
    /// [`Cluster::sync_roster`]).
    pub fn restart_as(&mut self, kind: Kind) -> Result<bool> {
        if self.is_running() {
            match self.kind {
                Kind::Honest => self.stop()?,
                Kind::Faulty(_) => self.kill(),
            }
        }
        self.relaunch_same_port(kind)
    }

    /// Starts `kind` on the home of a stopped (or killed) signer, on its previous port if
    /// that can be bound again, else on a new one. Returns whether the URL changed.
    pub fn relaunch_same_port(&mut self, kind: Kind) -> Result<bool> {
        ensure!(!self.is_running(), "still running");
        let old = self.url.clone();
        self.kind = kind;
        self.listen = self.addr()?;
        let mut last = None;
        for _ in 0..3 {
            match self.launch() {
                Ok(()) => return Ok(false),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Some(e) = last {
            eprintln!(
                "could not bind {} again ({e:#}); using a new port",
                self.listen
            );
        }
        self.listen = "127.0.0.1:0".into();
        self.launch()?;
        Ok(self.url != old)
    }
}

impl Drop for SignerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Initializes signer homes `s1..=sn` under `dir` in parallel; returns the home paths.
pub fn init_all(dir: &Path, n: usize) -> Result<Vec<PathBuf>> {
    let homes: Vec<PathBuf> = (1..=n).map(|i| dir.join(format!("s{i}"))).collect();
    let children = homes
        .iter()
        .map(|h| SignerProc::spawn_init(h))
        .collect::<Result<Vec<_>>>()?;
    for (child, home) in children.into_iter().zip(&homes) {
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "signer init {} failed: {}",
            home.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        ensure!(
            json_str(&v, "identity")? == SignerHome::public_identity(home)?.to_string(),
            "signer init printed another identity than the home's"
        );
    }
    Ok(homes)
}

// ---------------------------------------------------------------------------------------
// A coordinator and its signers
// ---------------------------------------------------------------------------------------

/// A coordinator home, `n` running signers and (once created) a `t`-of-`n` wallet.
/// Field order matters: the processes are killed before the directory is removed.
pub struct Cluster {
    pub signers: Vec<SignerProc>,
    pub coord: PathBuf,
    pub coord_id: String,
    /// `wallet create --json` output.
    pub created: serde_json::Value,
    pub dir: TempDir,
}

impl Cluster {
    /// `signer policy set --wallet WALLET --daily-limit-sats LIMIT` on every signer.
    pub fn set_daily_limit(&self, limit: u64) -> Result<()> {
        for s in &self.signers {
            let v = ckm_json(
                &s.home,
                &[
                    "signer",
                    "policy",
                    "set",
                    "--wallet",
                    WALLET,
                    "--daily-limit-sats",
                    &limit.to_string(),
                ],
            )?;
            ensure!(v["policy"]["daily_limit_sats"] == limit, "{v}");
        }
        Ok(())
    }

    /// Lets the coordinator with identity `id` use the wallet: every signer restarts with it
    /// allowed (`--allow-coordinator`) and its operator allows it for WALLET.
    pub fn allow_coordinator(&mut self, id: &str) -> Result<()> {
        for s in &mut self.signers {
            s.extra_coordinators.push(id.to_string());
            s.restart()?;
            ckm_json(
                &s.home,
                &[
                    "signer",
                    "wallet",
                    "allow-coordinator",
                    "--wallet",
                    WALLET,
                    id,
                ],
            )?;
        }
        Ok(())
    }

    /// `wallet recover --signer SPEC…` with every signer.
    pub fn recover_args(&self) -> Vec<String> {
        let mut args = vec!["wallet".to_string(), "recover".into()];
        for s in &self.signers {
            args.push("--signer".into());
            args.push(s.spec());
        }
        args
    }
}

impl Cluster {
    /// Starts `n` signers trusting a fresh coordinator, without a wallet.
    pub fn start(n: usize) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let coord = dir.path().join("coord");
        let coord_id = json_str(&ckm_json(&coord, &["id"])?, "identity")?.to_string();
        let homes = init_all(dir.path(), n)?;
        let ids = homes
            .iter()
            .map(|h| Ok(SignerHome::public_identity(h)?.to_string()))
            .collect::<Result<Vec<String>>>()?;
        let signers = homes
            .iter()
            .zip(&ids)
            .map(|(h, me)| {
                let peers: Vec<String> = ids.iter().filter(|i| *i != me).cloned().collect();
                SignerProc::start_with_peers(h, &coord_id, &peers, Kind::Honest)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Cluster {
            signers,
            coord,
            coord_id,
            created: serde_json::Value::Null,
            dir,
        })
    }

    /// Three signers and a 2-of-3 wallet named [`WALLET`] with a recovery path for `key`
    /// after `blocks` blocks (`wallet create … --recovery-key KEY --recovery-after BLOCKS`).
    pub fn with_recovery_wallet(key: &ckm::recovery::RecoveryKey, blocks: u16) -> Result<Self> {
        let mut c = Self::start(3)?;
        let mut args = c.create_args(WALLET, 2);
        args.extend([
            "--recovery-key".to_string(),
            key.to_string(),
            "--recovery-after".to_string(),
            blocks.to_string(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        c.created = ckm_json(&c.coord, &args).map_err(|e| e.context(c.logs()))?;
        Ok(c)
    }

    /// Starts `n` signers and runs `wallet create WALLET -t T` across them.
    pub fn with_wallet(n: usize, t: u16) -> Result<Self> {
        let mut c = Self::start(n)?;
        let args = c.create_args(WALLET, t);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        c.created = ckm_json(&c.coord, &args).map_err(|e| {
            let logs: Vec<String> = c.signers.iter().map(|s| s.log_text()).collect();
            e.context(format!("signer logs:\n{}", logs.join("\n---\n")))
        })?;
        Ok(c)
    }

    /// `wallet create NAME -t T --signer …` over all signers, in order.
    pub fn create_args(&self, name: &str, t: u16) -> Vec<String> {
        let mut args: Vec<String> = ["wallet", "create", name, "-t"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(t.to_string());
        for s in &self.signers {
            args.push("--signer".into());
            args.push(s.spec());
        }
        args
    }

    pub fn wallet_path(&self) -> PathBuf {
        self.wallet_path_of(WALLET)
    }

    pub fn wallet_path_of(&self, name: &str) -> PathBuf {
        self.coord.join("wallets").join(format!("{name}.sqlite"))
    }

    /// The coordinator's identity key, read from its home as the CLI stores it (hex).
    pub fn coordinator_key(&self) -> Result<IdentityKey> {
        let text = std::fs::read_to_string(self.coord.join("identity.key"))?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes)?;
        let key = IdentityKey::from_secret_bytes(&bytes)?;
        ensure!(key.public().to_string() == self.coord_id);
        Ok(key)
    }

    /// Points the coordinator's wallet roster at the signers' current URLs.
    pub fn sync_roster(&self) -> Result<()> {
        let mut wallet = CkmWallet::load(&self.wallet_path())?;
        let mut meta = wallet.meta().clone();
        let mut changed = false;
        let entries = meta.roster.entries().to_vec();
        for entry in entries {
            let s = self
                .signers
                .iter()
                .find(|s| s.identity == entry.identity)
                .with_context(|| format!("no signer process for {}", entry.identity))?;
            if entry.url != s.url {
                meta.roster
                    .set_endpoint(entry.index, s.url.clone(), entry.tls_sha256);
                changed = true;
            }
        }
        if changed {
            wallet.set_meta(meta)?;
        }
        Ok(())
    }

    /// Restarts signer `i` (0-based) as the faulty signer with `fault`, same home.
    pub fn restart_faulty(&mut self, i: usize, fault: &str) -> Result<()> {
        self.restart_signer(i, Kind::Faulty(fault.to_string()))
    }

    /// Restarts signer `i` (0-based) as `kind`, same home; keeps the roster valid.
    pub fn restart_signer(&mut self, i: usize, kind: Kind) -> Result<()> {
        if self.signers[i].restart_as(kind)? && self.created != serde_json::Value::Null {
            self.sync_roster()?;
        }
        Ok(())
    }

    /// A new signer home `name`, started approving every current signer, and approved by
    /// each of them on their running servers (`signer peers add`).
    pub fn new_peer(&self, name: &str) -> Result<SignerProc> {
        let home = self.dir.path().join(name);
        let out = SignerProc::spawn_init(&home)?.wait_with_output()?;
        ensure!(
            out.status.success(),
            "signer init {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ids: Vec<String> = self
            .signers
            .iter()
            .map(|s| s.identity.to_string())
            .collect();
        let proc = SignerProc::start_with_peers(&home, &self.coord_id, &ids, Kind::Honest)?;
        let id = proc.identity.to_string();
        for s in &self.signers {
            if s.home.exists() {
                approve(&s.home, &id)?;
            }
        }
        Ok(proc)
    }

    /// A `Status` request to signer `i` (0-based) through the coordinator's real client.
    pub fn status(&self, i: usize) -> Result<SignerToCoordinator> {
        let s = &self.signers[i];
        let client =
            ckm::net::client::Client::new(self.coordinator_key()?, Duration::from_secs(10))?;
        // Built through serde so that optional fields (added later) take their defaults.
        let mut entry = serde_json::json!({
            "index": i + 1,
            "url": s.url,
            "identity": s.identity.to_string(),
        });
        if let Some(fp) = &s.tls_sha256 {
            entry["tls_sha256"] = serde_json::json!(fp);
        }
        let entry: RosterEntry = serde_json::from_value(entry)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(rt.block_on(client.call(&entry, &CoordinatorToSigner::Status))?)
    }

    /// `ckm --json psbt sign INPUT --out OUT EXTRA…` (not required to succeed).
    pub fn sign(&self, input: &Path, out: &Path, extra: &[&str]) -> Result<Output> {
        let mut args = vec![
            "--json",
            "psbt",
            "sign",
            path_str(input)?,
            "--out",
            path_str(out)?,
        ];
        args.extend_from_slice(extra);
        ckm(&self.coord, &args)
    }

    /// Like [`Cluster::sign`], requiring success; returns the JSON report.
    pub fn sign_ok(&self, input: &Path, out: &Path, extra: &[&str]) -> Result<serde_json::Value> {
        let res = self.sign(input, out, extra)?;
        ensure!(
            res.status.success(),
            "psbt sign failed ({}):\nstderr: {}\nsigner logs:\n{}",
            res.status,
            String::from_utf8_lossy(&res.stderr),
            self.logs()
        );
        let v: serde_json::Value = serde_json::from_slice(&res.stdout)?;
        ensure!(v["complete"] == true, "{v}");
        Ok(v)
    }

    /// All signer logs, for error messages.
    pub fn logs(&self) -> String {
        self.signers
            .iter()
            .map(|s| format!("== {} ({:?})\n{}", s.log.display(), s.kind, s.log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Writes `psbt` (base64) to `DIR/NAME`, returns the path.
    pub fn write_psbt(&self, name: &str, psbt: &Psbt) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, psbt.to_string())?;
        Ok(path)
    }

    /// Builds a payment of `sats` to `to` at `sat_per_vb` from the (funded) wallet.
    pub fn pay(
        &self,
        funding: &HashMap<OutPoint, TxOut>,
        to: &Address,
        sats: u64,
        sat_per_vb: u32,
    ) -> Result<Payment> {
        let mut wallet = CkmWallet::load(&self.wallet_path())?;
        let psbt = wallet.build_payment(
            to,
            Amount::from_sat(sats),
            FeeRate::from_sat_per_vb_u32(sat_per_vb),
        )?;
        wallet.persist()?;
        let group = wallet.meta().group.clone();
        Ok(Payment {
            psbt,
            funding: funding.clone(),
            to: to.clone(),
            amount: sats,
            group,
        })
    }

    /// A payment of `sats` to `to` that spends exactly the coins `from` (coin control).
    pub fn pay_from(
        &self,
        funding: &HashMap<OutPoint, TxOut>,
        from: &[OutPoint],
        to: &Address,
        sats: u64,
        sat_per_vb: u32,
    ) -> Result<Payment> {
        use ckm::wallet::spend::{PayAmount, Payment as Spend, Recipient};
        let mut wallet = CkmWallet::load(&self.wallet_path())?;
        let psbt = wallet.build_payments(&Spend {
            recipients: vec![Recipient {
                address: to.clone(),
                amount: PayAmount::Exact(Amount::from_sat(sats)),
                label: None,
            }],
            from: from.to_vec(),
            fee_rate: FeeRate::from_sat_per_vb_u32(sat_per_vb),
        })?;
        wallet.persist()?;
        let group = wallet.meta().group.clone();
        Ok(Payment {
            psbt,
            funding: funding.clone(),
            to: to.clone(),
            amount: sats,
            group,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Wallet funding
// ---------------------------------------------------------------------------------------

/// Copies a directory tree (a signer or coordinator home).
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// `signer backup --split 2of3 --out OUT` of `home`; the share files written.
pub fn backup_2of3(home: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let v = ckm_json(
        home,
        &[
            "signer",
            "backup",
            "--split",
            "2of3",
            "--out",
            path_str(out)?,
        ],
    )?;
    Ok(string_array(&v["files"])?
        .into_iter()
        .map(PathBuf::from)
        .collect())
}

/// `--json signer restore --yes FILES…` into `home` (not required to succeed).
pub fn restore_from(home: &Path, files: &[&Path]) -> Result<Output> {
    let mut args = vec!["--json", "signer", "restore", "--yes"];
    for f in files {
        args.push(path_str(f)?);
    }
    ckm(home, &args)
}

/// `signer peers add IDENTITY` in a signer home.
pub fn approve(home: &Path, identity: &str) -> Result<()> {
    let v = ckm_json(home, &["signer", "peers", "add", identity])?;
    ensure!(v["identity"] == identity, "{v}");
    Ok(())
}

/// An address no wallet here owns.
pub fn foreign_address() -> Address {
    let key = IdentityKey::generate(&mut rand::rngs::OsRng);
    Address::p2tr(secp(), key.public().x_only(), None, NETWORK)
}

pub use crate::consensus::made_up_funding;

/// Funds to revealed addresses of both keychains: (keychain, index, sats).
pub const FUNDS: [(KeychainKind, u32, u64); 4] = [
    (KeychainKind::External, 0, 100_000),
    (KeychainKind::External, 2, 200_000),
    (KeychainKind::Internal, 0, 150_000),
    (KeychainKind::Internal, 1, 300_000),
];
/// More than any three of the funding outputs: the payment needs all four.
pub const PAY_SATS: u64 = 700_000;

/// A PSBT of the cluster's wallet and the outputs it spends.
pub struct Payment {
    pub psbt: Psbt,
    pub funding: HashMap<OutPoint, TxOut>,
    pub to: Address,
    /// Paid to `to`.
    pub amount: u64,
    pub group: GroupPublic,
}

impl Payment {
    /// Txid of the unsigned transaction (what the signers audit).
    pub fn txid(&self) -> String {
        self.psbt.unsigned_tx.compute_txid().to_string()
    }

    pub fn fee(&self) -> Result<u64> {
        Ok(self.psbt.fee()?.to_sat())
    }
}

/// Loads the coordinator's wallet, funds it with unconfirmed made-up transactions paying
/// `funds` (addresses up to the largest index are revealed), persists and closes it.
pub fn fund(c: &Cluster, funds: &[(KeychainKind, u32, u64)]) -> Result<HashMap<OutPoint, TxOut>> {
    let mut wallet = CkmWallet::load(&c.wallet_path())?;
    for keychain in [KeychainKind::External, KeychainKind::Internal] {
        if let Some(max) = funds.iter().filter(|f| f.0 == keychain).map(|f| f.1).max() {
            wallet
                .bdk_mut()
                .reveal_addresses_to(keychain, max)
                .for_each(drop);
        }
    }
    let before = wallet.bdk().balance().total();
    let mut funding = HashMap::new();
    let mut txs = Vec::new();
    for &(keychain, index, sats) in funds {
        let spk = wallet
            .bdk()
            .peek_address(keychain, index)
            .address
            .script_pubkey();
        let tx = made_up_funding(&mut rand::thread_rng(), spk, sats);
        funding.insert(OutPoint::new(tx.compute_txid(), 0), tx.output[0].clone());
        txs.push((tx, 1_700_000_000u64));
    }
    wallet.bdk_mut().apply_unconfirmed_txs(txs);
    wallet.persist()?;
    let total: u64 = funds.iter().map(|f| f.2).sum();
    ensure!(wallet.bdk().balance().total() == before + Amount::from_sat(total));
    Ok(funding)
}

/// Funds the wallet with [`FUNDS`] and builds a payment of [`PAY_SATS`] at 2 sat/vB that
/// needs every input.
pub fn fund_and_build(c: &Cluster) -> Result<Payment> {
    let funding = fund(c, &FUNDS)?;
    let p = c.pay(&funding, &foreign_address(), PAY_SATS, 2)?;
    ensure!(
        p.psbt.inputs.len() == FUNDS.len(),
        "the payment spends {} inputs, expected all {}",
        p.psbt.inputs.len(),
        FUNDS.len()
    );
    Ok(p)
}

pub use crate::consensus::consensus_verify;

/// Reads a signed PSBT file, extracts the transaction, checks it against the payment and
/// verifies every input with libbitcoinconsensus.
pub fn check_signed(out: &Path, p: &Payment) -> Result<Transaction> {
    let text = std::fs::read_to_string(out)?;
    let signed = Psbt::from_str(text.trim()).context("the output is not a base64 PSBT")?;
    ensure!(
        signed.unsigned_tx == p.psbt.unsigned_tx,
        "the signed PSBT is another transaction"
    );
    let tx = signed.extract_tx()?;
    ensure!(tx.input.len() == p.psbt.inputs.len());
    ensure!(tx.input.iter().all(|i| i.witness.len() == 1));
    ensure!(tx
        .output
        .iter()
        .any(|o| o.script_pubkey == p.to.script_pubkey() && o.value.to_sat() == p.amount));
    consensus_verify(&tx, &p.funding)?;
    Ok(tx)
}

/// Checks a `psbt sign --json` report against the signed file: complete, `txid` of the
/// transaction, `signers`/`signer_indexes` consistent with the cluster's roster.
pub fn check_report(c: &Cluster, v: &serde_json::Value, tx: &Transaction) -> Result<Vec<u16>> {
    ensure!(v["complete"] == true, "{v}");
    ensure!(json_str(v, "txid")? == tx.compute_txid().to_string(), "{v}");
    let indexes = u16_array(&v["signer_indexes"])?;
    let ids = string_array(&v["signers"])?;
    ensure!(indexes.len() == ids.len(), "{v}");
    for (i, id) in indexes.iter().zip(&ids) {
        let s = c
            .signers
            .get(usize::from(*i).wrapping_sub(1))
            .with_context(|| format!("index {i} is not in the roster: {v}"))?;
        ensure!(s.identity.to_string() == *id, "index {i} is not {id}: {v}");
    }
    Ok(indexes)
}

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

pub fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// Signing-share files (`*.share`) under a signer home.
/// The shares a signer home stores: the wallet rows of its `signer.db` (read directly with
/// SQLite, not through ckm) plus any `*.share` file of the v1 layout.
pub fn share_files(home: &Path) -> Result<Vec<String>> {
    let mut out: Vec<String> = files_under(home)?
        .into_iter()
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("share"))
        .map(|p| p.display().to_string())
        .collect();
    let db = SignerHome::dir_of(home).join("signer.db");
    if db.exists() {
        let conn = bdk_wallet::rusqlite::Connection::open_with_flags(
            &db,
            bdk_wallet::rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let mut stmt = conn.prepare("SELECT group_key, length(share) FROM wallets")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (gk, len) = row?;
            ensure!(len > 32, "the stored share of {gk} is only {len} bytes");
            out.push(format!("signer.db wallet {gk}"));
        }
    }
    Ok(out)
}
