//! What co-signing a PSBT costs, from the bare FROST arithmetic to real signer processes.
//!
//! Run with `just bench` (which builds `target/release/ckm` first) or
//! `cargo bench --locked --bench cosign` once the release binary exists. One run measures, for
//! N = 1, 10, 100 inputs and 2-of-3, 3-of-5, 7-of-10 groups (median of several repetitions,
//! after one warm-up):
//!
//! - **floor**: the bare frost-secp256k1-tr work (`round1::commit` for t signers × N inputs,
//!   `round2::sign_with_tweak` with the root key packages on N random messages,
//!   `aggregate_with_tweak`), one process, no I/O, no PSBT;
//! - **memory**: [`ckm::psbt::sign_in_memory`] on a real wallet PSBT of N inputs (signer
//!   checks, sighashes, HD derivation, both rounds, aggregation, verification, finalization),
//!   shares from [`ckm::frost::pedersen::run_in_memory`];
//! - **network**: the same shape of PSBT co-signed by [`ckm::net::coordinator::sign_psbt`]
//!   through n real `ckm signer serve` processes on loopback, the wallet created by a DKG
//!   across those processes ([`ckm::net::coordinator::create_wallet`]);
//! - **single-key**: bdk_wallet signing (and finalizing) the same shape of PSBT with an ordinary
//!   `tr(tprv…/0/*)` / `tr(tprv…/1/*)` wallet.
//!
//! Plus the DKG across real signer processes vs in one process for n = 3, 5, 10, 20 with
//! t = ⌈2n/3⌉; a refresh of a 2-of-3 and a 7-of-10 wallet across the processes, by phase
//! (compute + prepare, the ready vote round, decide), vs the same refresh computed in one
//! process (`refresh/mod.rs`);
//!
//! - **scale**: two 2-of-3 sets of signer processes, one holding 1 wallet and one holding
//!   10 000 wallets (the measured one from a DKG across the processes, 9 999 from certified
//!   DKGs in memory stored with `SignerHome::save_shares`) and 100 000 audit records over the
//!   last 30 days; the measured wallet has the same policy in both (a daily limit never
//!   reached, so the statement round and the window query run). Co-signing latency of a
//!   10-input PSBT (61 signings per set) and start-up time (spawn to "listening"), the two
//!   sets interleaved;
//! - **load**: 50 coordinators (each its own identity, all allowed on the signers) at once
//!   through the same three signer processes, co-signing 10-input PSBTs of one 2-of-3 wallet
//!   (its operators added the 49 other coordinators to its policy), and each co-signing a
//!   PSBT of its own wallet (50 wallets, one DKG per coordinator); runs of the two alternate.
//!
//! Every signed transaction is checked once with libbitcoinconsensus (Taproot rules).
//! Output: a table on stdout and `target/bench/report.json`.
//!
//! Environment: `CKM_BIN` (the ckm binary; default: the one cargo built with this bench,
//! `target/release/ckm`),
//! `CKM_BENCH_QUICK=1` (N = 1 and 10 only, fewer repetitions, DKG up to n = 10, scale with
//! 300 wallets and 3 000 records (labelled as such), one load run of each kind: a smoke run),
//! `CKM_BENCH_LOAD_RUNS` (runs of each kind of load, default 7, 1 in quick mode),
//! `CKM_BENCH_PERF=FILE` (profile mode: only the 100-input 2-of-3 network case, recorded by
//! `perf record --call-graph dwarf` attached to the signer processes and this process, written
//! to FILE; `CKM_BENCH_PERF_REPS` signings, default 15; `CKM_BENCH_PERF_INPUTS` inputs,
//! default 100; `CKM_BENCH_PERF_ONE_ROUND=1` one-round signings, counting those that started
//! a second session; `CKM_BENCH_PATIENCE=none` signs them without patience;
//! `CKM_BENCH_PERF_SCHED=1` records the scheduler's events of the whole machine instead,
//! for `perf sched timehist`),
//! `CKM_BENCH_REFRESH=REPS` (refresh mode: only the refresh rows, REPS refreshes of each
//! group after a warm-up; prints the table, writes `target/bench/refresh.json`),
//! `CKM_BENCH_FLOOR=ROUNDS` (floor mode: only the floor, memory and network rows of 100 inputs
//! 2-of-3, ROUNDS rounds of 5 repetitions each, the three kinds interleaved in every round;
//! prints the medians over all repetitions, each round's ratios and the phase breakdown;
//! writes no report).

#[path = "../tests/common/consensus.rs"]
mod consensus;
use consensus::made_up_funding;
// Shared with the WAN bench; not every helper is used here.
#[allow(dead_code)]
mod common;
mod refresh;
use common::{
    consensus_verify, env_number, floor_samples, foreign_address, log, machine, median, ms, round3,
    sample, target_dir, NETWORK, PASSPHRASE, SATS_PER_INPUT,
};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use bdk_wallet::{KeychainKind, SignOptions, Wallet};
use bitcoin::bip32::{DerivationPath, Xpriv};
use bitcoin::hashes::Hash;
use bitcoin::{Amount, FeeRate, NetworkKind, Psbt, ScriptBuf, Transaction, Txid};
use ckm::frost::pedersen::{run_in_memory, DkgParams};
use ckm::frost::shares::{Derivation, GroupPublic, KeyError, KeyShare};
use ckm::identity::{IdentityKey, IdentityPublic};
use ckm::keys::{GroupKey, Roster, RosterEntry};
use ckm::message::{self, CoordinatorToSigner, SessionId, SignerToCoordinator, WalletRef};
use ckm::net::client::Client;
use ckm::net::coordinator::{create_wallet, sign_psbt};
use ckm::net::one_round::sign_psbt_one_round;
use ckm::protocol::dkg::{run_in_memory as certified_dkg, CertifiedShare, DkgContext};
use ckm::protocol::roast::{CommitmentStore, MemoryCommitments};
use ckm::psbt::{check_psbt, commit, sign_in_memory, SigningSession};
use ckm::signer::audit::{self, AuditEvent, AuditKind};
use ckm::signer::db::SignerDb;
use ckm::signer::home::{HomeError, SignerHome, WalletInfo};
use ckm::signer::legacy::open_migrating;
use ckm::signer::policy::Policy;
use ckm::wallet::{CkmWallet, WalletMeta};
use rand::rngs::ThreadRng;
use rand::Rng;

const GROUPS: [(u16, u16); 3] = [(2, 3), (3, 5), (7, 10)];
const LOAD_COORDINATORS: usize = 50;
const LOAD_INPUTS: usize = 10;
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/// Nearest-rank percentile.
fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

fn spread(samples: &[f64]) -> String {
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let max = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "median {:.2} ms (min {:.2}, max {:.2}, n={})",
        median(samples),
        min,
        max,
        samples.len()
    )
}

fn ckm_bin() -> Result<PathBuf> {
    // Cargo builds the binary with the library a bench links (same sources, same profile
    // directory: target/release/ckm); CKM_BIN overrides it.
    let bin = std::env::var_os("CKM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ckm")));
    let bin = if bin.is_relative() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(bin)
    } else {
        bin
    };
    ensure!(
        bin.exists(),
        "{} not found: build it first with `cargo build --release --locked` (or set CKM_BIN)",
        bin.display()
    );
    Ok(bin)
}

// ---------------------------------------------------------------------------------------
// PSBTs of N inputs
// ---------------------------------------------------------------------------------------

/// Funds `inputs` fresh receive addresses of `wallet` with made-up unconfirmed transactions
/// and builds a PSBT spending all of them: one payment (half the funds) and change.
fn fund_and_build(wallet: &mut Wallet, inputs: usize, rng: &mut ThreadRng) -> Result<Psbt> {
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
        .map(|spk| (made_up_funding(rng, spk, SATS_PER_INPUT), 1_700_000_000))
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

/// A ckm wallet (SQLite in `dir`) of `group` holding a PSBT of `inputs` inputs.
fn ckm_psbt(
    dir: &Path,
    name: &str,
    group: &GroupPublic,
    roster: Roster,
    inputs: usize,
    rng: &mut ThreadRng,
) -> Result<(WalletMeta, Psbt)> {
    let meta = WalletMeta {
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
    };
    let mut wallet = CkmWallet::create(&dir.join(format!("{name}-{inputs}.sqlite")), meta.clone())?;
    let psbt = fund_and_build(wallet.bdk_mut(), inputs, rng)?;
    Ok((meta, psbt))
}

// ---------------------------------------------------------------------------------------
// Signer processes
// ---------------------------------------------------------------------------------------

/// A running `ckm signer serve` process; killed (by its pid) when dropped.
struct SignerProc {
    child: Child,
    url: String,
    identity: IdentityPublic,
    /// When the process was spawned.
    spawned: Instant,
    /// From spawning the process to its "listening" line.
    startup: Duration,
}

impl SignerProc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn status_field_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status.lines().find_map(|l| {
            l.strip_prefix(field)
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        })
    }

    /// Resets the peak RSS (VmHWM) to the current RSS (Linux `clear_refs` value 5).
    fn reset_peak_rss(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").is_ok()
    }
}

impl Drop for SignerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn roster(signers: &[SignerProc]) -> Result<Roster> {
    Ok(Roster::new(
        signers
            .iter()
            .enumerate()
            .map(|(i, s)| RosterEntry {
                index: u16::try_from(i + 1).expect("small roster"),
                url: s.url.clone(),
                identity: s.identity,
                tls_sha256: None,
            })
            .collect(),
    )?)
}

/// The first `n` members of a roster.
fn first(roster: &Roster, n: u16) -> Result<Roster> {
    Ok(Roster::new(roster.entries()[..usize::from(n)].to_vec())?)
}

/// `ckm signer init` in each home, in parallel.
fn init_homes(bin: &Path, homes: &[PathBuf]) -> Result<()> {
    let mut inits = Vec::new();
    for home in homes {
        let child = Command::new(bin)
            .arg("--home")
            .arg(home)
            .args(["signer", "init"])
            .env("CKM_PASSPHRASE", PASSPHRASE)
            .env_remove("CKM_HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} signer init", bin.display()))?;
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
    Ok(())
}

/// The first line of a starting signer and when it arrived.
type FirstLine = (Option<std::io::Result<String>>, Instant);

/// Spawns `ckm signer serve` on a free loopback port in `home`, allowing `allowed` as
/// coordinators and `peers` as key-generation peers. The process is owned by the returned
/// guard; [`await_listening`] waits for its first line.
fn spawn_serve(
    bin: &Path,
    home: &Path,
    allowed: &[IdentityPublic],
    peers: &[IdentityPublic],
) -> Result<(SignerProc, mpsc::Receiver<FirstLine>)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("serve.log"))?;
    let mut cmd = Command::new(bin);
    cmd.arg("--home")
        .arg(home)
        .args(["signer", "serve", "--listen", "127.0.0.1:0"]);
    for key in allowed {
        cmd.arg("--allow-coordinator").arg(key.to_string());
    }
    for peer in peers {
        cmd.arg("--allow-peer").arg(peer.to_string());
    }
    cmd.env("CKM_PASSPHRASE", PASSPHRASE)
        .env_remove("CKM_HOME")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    let spawned = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {} signer serve", bin.display()))?;
    let stdout = child.stdout.take();
    // Owned by a guard from here on, so an early return kills it.
    let proc = SignerProc {
        child,
        url: String::new(),
        identity: IdentityKey::generate(&mut rand::rngs::OsRng).public(),
        spawned,
        startup: Duration::ZERO,
    };
    let stdout = stdout.context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next();
        let _ = tx.send((first, Instant::now()));
        for _ in lines {}
    });
    Ok((proc, rx))
}

/// Waits for the "listening on http://ADDR as ID" line of a spawned signer; fills in its
/// address, identity and start-up time (spawn to the arrival of that line).
fn await_listening(
    signer: &mut SignerProc,
    rx: &mpsc::Receiver<FirstLine>,
    home: &Path,
) -> Result<()> {
    let (line, at) = match rx.recv_timeout(Duration::from_secs(300)) {
        Ok((Some(Ok(line)), at)) => (line, at),
        other => bail!(
            "signer in {} did not start ({:?}); see {}",
            home.display(),
            other.map(|(l, _)| l),
            home.join("serve.log").display()
        ),
    };
    let (url, id) = line
        .strip_prefix("listening on ")
        .and_then(|rest| rest.split_once(" as "))
        .with_context(|| format!("unexpected first line from signer: {line}"))?;
    signer.url = url.to_string();
    signer.identity =
        IdentityPublic::from_str(id.trim()).map_err(|e| anyhow!("signer identity {id}: {e}"))?;
    signer.startup = at.saturating_duration_since(signer.spawned);
    Ok(())
}

/// The identities of the other homes of a set: every signer of a set approves every other
/// as a key-generation peer.
fn peers_of(homes: &[PathBuf], me: usize) -> Result<Vec<IdentityPublic>> {
    homes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != me)
        .map(|(_, h)| Ok(SignerHome::public_identity(h)?))
        .collect()
}

/// `ckm signer serve` in each (initialized) home at once; returns once every server printed
/// its address.
fn serve_homes(
    bin: &Path,
    homes: &[PathBuf],
    allowed: &[IdentityPublic],
) -> Result<Vec<SignerProc>> {
    let mut pending = Vec::new();
    for (i, home) in homes.iter().enumerate() {
        pending.push(spawn_serve(bin, home, allowed, &peers_of(homes, i)?)?);
    }
    let mut procs = Vec::new();
    for ((mut signer, rx), home) in pending.into_iter().zip(homes) {
        await_listening(&mut signer, &rx, home)?;
        procs.push(signer);
    }
    Ok(procs)
}

/// `ckm signer init` in each home, then `ckm signer serve` allowing `allowed`.
fn start_signers(
    bin: &Path,
    homes: &[PathBuf],
    allowed: &[IdentityPublic],
) -> Result<Vec<SignerProc>> {
    init_homes(bin, homes)?;
    serve_homes(bin, homes, allowed)
}

// ---------------------------------------------------------------------------------------
// The four ways of signing
// ---------------------------------------------------------------------------------------

fn memory_samples(
    psbt: &Psbt,
    shares: &[KeyShare],
    t: u16,
    reps: usize,
    rng: &mut ThreadRng,
) -> Result<Vec<f64>> {
    let signers: Vec<&KeyShare> = shares.iter().take(usize::from(t)).collect();
    let mut checked = false;
    sample(reps, || {
        let mut p = psbt.clone();
        let start = Instant::now();
        let tx = sign_in_memory(&mut p, &signers, &mut *rng)?;
        let elapsed = start.elapsed();
        if !checked {
            consensus_verify(psbt, &tx)?;
            checked = true;
        }
        Ok(elapsed)
    })
}

fn network_samples(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    meta: &WalletMeta,
    psbt: &Psbt,
    reps: usize,
) -> Result<Vec<f64>> {
    let mut checked = false;
    sample(reps, || {
        let mut p = psbt.clone();
        let start = Instant::now();
        let report = rt.block_on(sign_psbt(client, meta, &mut p))?;
        let elapsed = start.elapsed();
        ensure!(
            report.culprits.is_empty() && report.skipped.is_empty(),
            "signers failed: {:?}",
            report.skipped
        );
        if !checked {
            consensus_verify(psbt, &report.transaction)?;
            checked = true;
        }
        Ok(elapsed)
    })
}

/// An ordinary single-key BIP-0086-style wallet (`tr(tprv/0/*)`, `tr(tprv/1/*)`).
fn single_key_samples(inputs: usize, reps: usize, rng: &mut ThreadRng) -> Result<Vec<f64>> {
    let seed: [u8; 32] = rng.gen();
    let xprv = Xpriv::new_master(NetworkKind::Test, &seed)?;
    let mut wallet = Wallet::create(format!("tr({xprv}/0/*)"), format!("tr({xprv}/1/*)"))
        .network(NETWORK)
        .create_wallet_no_persist()?;
    let psbt = fund_and_build(&mut wallet, inputs, rng)?;
    let mut checked = false;
    sample(reps, || {
        let mut p = psbt.clone();
        let start = Instant::now();
        #[allow(deprecated)]
        let finalized = wallet.sign(&mut p, SignOptions::default())?;
        let elapsed = start.elapsed();
        ensure!(finalized, "the single-key wallet did not finalize its PSBT");
        if !checked {
            let tx = p.extract_tx()?;
            consensus_verify(&psbt, &tx)?;
            checked = true;
        }
        Ok(elapsed)
    })
}

// ---------------------------------------------------------------------------------------
// Where the time goes (100 inputs, 2-of-3, in one process)
// ---------------------------------------------------------------------------------------

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let start = Instant::now();
    let v = f()?;
    Ok((v, ms(start.elapsed())))
}

/// Times each phase of co-signing separately and the size of the protocol messages.
fn breakdown(psbt: &Psbt, shares: &[KeyShare], reps: usize) -> Result<Vec<(String, f64)>> {
    let mut rng = rand::thread_rng();
    let group = shares[0].group().clone();
    let signers: Vec<&KeyShare> = shares.iter().take(2).collect();
    let inputs = psbt.inputs.len();
    // Phases in the order they run (insertion order kept).
    let mut rows: Vec<(&'static str, Vec<f64>)> = Vec::new();
    let mut sizes: Vec<(String, f64)> = Vec::new();
    for rep in 0..=reps {
        let mut add = |k: &'static str, v: f64| {
            if rep > 0 {
                match rows.iter_mut().find(|(name, _)| *name == k) {
                    Some((_, samples)) => samples.push(v),
                    None => rows.push((k, vec![v])),
                }
            }
        };
        let (checked, t) = timed(|| Ok(check_psbt(psbt, &group)?))?;
        add(
            "check_psbt (whole PSBT, incl. sighashes and derivations, remembered after the first repetition)",
            t,
        );
        type Derive = fn(&GroupPublic, &DerivationPath) -> Result<Derivation, KeyError>;
        for (label, derive) in [
            (
                "GroupPublic::derivation × N the first time (a new input: uncached)",
                GroupPublic::derivation_uncached as Derive,
            ),
            (
                "GroupPublic::derivation × N again (remembered)",
                GroupPublic::derivation,
            ),
        ] {
            let (_, t) = timed(|| {
                for i in checked.inputs() {
                    derive(&group, i.derivation.path())?;
                }
                Ok(())
            })?;
            add(label, t);
        }
        let (_, t) = timed(|| {
            for i in checked.inputs() {
                signers[0].derive(&i.derivation)?;
            }
            Ok(())
        })?;
        add("KeyShare::derive × N (one signer)", t);
        let ids = signers.iter().map(|s| s.identifier()).collect();
        let (_, t) = timed(|| {
            for i in checked.inputs() {
                group.derive_public_key_package(&i.derivation, Some(&ids))?;
            }
            Ok(())
        })?;
        add("GroupPublic::derive_public_key_package × N (t shares)", t);

        let (session, t) = timed(|| Ok(SigningSession::new(psbt, &group)?))?;
        add("coordinator: SigningSession::new (= check_psbt)", t);
        let mut commitments = BTreeMap::new();
        let mut nonces = Vec::new();
        let mut t_commit = 0.0;
        for s in &signers {
            let ((n, c, _), t) = timed(|| Ok(commit(psbt, s, &mut rng)?))?;
            t_commit += t;
            commitments.insert(s.identifier(), c);
            nonces.push((*s, n));
        }
        add(
            "signer round 1: commit (check + N nonces), per signer",
            t_commit / 2.0,
        );
        let (packages, t) = timed(|| Ok(session.signing_packages(&commitments)?))?;
        add("coordinator: signing_packages", t);
        let mut signature_shares = BTreeMap::new();
        let mut t_sign = 0.0;
        for (s, n) in nonces {
            let (sh, t) = timed(|| Ok(n.sign(psbt, s, &packages)?))?;
            t_sign += t;
            signature_shares.insert(s.identifier(), sh);
        }
        add(
            "signer round 2: sign (check + spend key package + sign), per signer",
            t_sign / 2.0,
        );
        let (signatures, t) = timed(|| Ok(session.aggregate(&packages, &signature_shares)?))?;
        add(
            "coordinator: aggregate (spend keys + binding factors + one libsecp verification per input)",
            t,
        );
        let mut p = psbt.clone();
        let (_, t) = timed(|| Ok(session.finalize(&mut p, &signatures)?))?;
        add("coordinator: finalize (key-path witnesses)", t);

        let session_id = SessionId::random(&mut rng);
        let commit_msg = CoordinatorToSigner::SignCommit {
            session: session_id,
            wallet: WalletRef {
                name: "bench".into(),
                group_key: GroupKey::of(&group),
                epoch: 0,
            },
            psbt: psbt.to_string(),
        };
        let share_msg = CoordinatorToSigner::SignShare {
            session: session_id,
            packages: packages.clone(),
            statements: Default::default(),
        };
        let (bytes, t) = timed(|| Ok(message::encode(&share_msg)))?;
        add("JSON encode SignShare (N signing packages)", t);
        let (_, t) = timed(|| Ok(message::decode::<CoordinatorToSigner>(&bytes)?))?;
        add("JSON decode SignShare", t);
        let (text, t) = timed(|| Ok(psbt.to_string()))?;
        add("PSBT to base64", t);
        let (_, t) = timed(|| Ok(Psbt::from_str(&text)?))?;
        add("PSBT from base64", t);
        if rep == reps {
            let commitments_reply = SignerToCoordinator::SignCommitments {
                commitments: commitments.values().next().cloned().unwrap_or_default(),
                receipt: ckm::protocol::spend_limits::Receipt::sign(
                    &IdentityKey::generate(&mut rng),
                    GroupKey::of(&group),
                    session_id,
                    1,
                    psbt.unsigned_tx.compute_txid(),
                    0,
                ),
                statements_required: false,
            };
            let shares_reply = SignerToCoordinator::SignShares {
                shares: signature_shares
                    .values()
                    .next()
                    .cloned()
                    .unwrap_or_default(),
            };
            for (name, len) in [
                (
                    "SignCommit request (PSBT)",
                    message::encode(&commit_msg).len(),
                ),
                (
                    "SignCommitments reply",
                    message::encode(&commitments_reply).len(),
                ),
                ("SignShare request (packages)", bytes.len()),
                ("SignShares reply", message::encode(&shares_reply).len()),
            ] {
                sizes.push((format!("{name} (bytes, {inputs} inputs)"), len as f64));
            }
        }
    }
    let mut out: Vec<(String, f64)> = rows
        .into_iter()
        .map(|(k, v)| (format!("{k} (ms)"), median(&v)))
        .collect();
    out.extend(sizes);
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Scale: a signer set holding 1 wallet vs one holding 10 000 wallets and 100 000 records
// ---------------------------------------------------------------------------------------

const SCALE_WALLETS: usize = 10_000;
const SCALE_RECORDS: usize = 100_000;
const QUICK_SCALE_WALLETS: usize = 300;
const QUICK_SCALE_RECORDS: usize = 3_000;
/// The audit history spans this many days (the daily-limit window is the last one).
const HISTORY_DAYS: u64 = 30;
/// A daily limit (and per-spend maximum) no bench spend comes near (21 million BTC): the
/// statement round and the window query run, nothing is refused.
const NEVER_REACHED_SATS: u64 = 2_100_000_000_000_000;
/// Filler wallets are made and stored this many at a time (one `save_shares` transaction).
const WALLET_BATCH: usize = 500;
/// Audit records are appended this many per transaction.
const RECORD_BATCH: usize = 20_000;

/// The policy of the measured wallet, the same in both sets: every rule set, none reached.
fn measured_policy() -> Policy {
    Policy {
        max_fee_sats: Some(1_000_000),
        max_fee_rate: Some(1_000),
        max_amount_sats: Some(NEVER_REACHED_SATS),
        daily_limit_sats: Some(NEVER_REACHED_SATS),
        allow_addresses: Vec::new(),
        coordinators: Vec::new(),
    }
}

/// A 2-of-3 signer set (three homes, their running processes) and its measured wallet.
struct SignerSet {
    label: &'static str,
    homes: Vec<PathBuf>,
    procs: Vec<SignerProc>,
    allowed: Vec<IdentityPublic>,
    /// The measured wallet (its roster is refreshed from `procs`: ports change on restart)
    /// and a 10-input PSBT of it.
    wallet: Option<(WalletMeta, Psbt)>,
}

impl SignerSet {
    fn start(
        bin: &Path,
        dir: &Path,
        label: &'static str,
        allowed: &[IdentityPublic],
    ) -> Result<Self> {
        let homes: Vec<PathBuf> = (1..=3).map(|i| dir.join(format!("{label}{i}"))).collect();
        let procs = start_signers(bin, &homes, allowed)?;
        Ok(SignerSet {
            label,
            homes,
            procs,
            allowed: allowed.to_vec(),
            wallet: None,
        })
    }

    fn stop(&mut self) {
        self.procs.clear();
    }

    fn serve(&mut self, bin: &Path) -> Result<()> {
        self.procs = serve_homes(bin, &self.homes, &self.allowed)?;
        Ok(())
    }

    /// Kills signer `i` and starts it again; returns its start-up time (spawn to
    /// "listening").
    fn restart(&mut self, bin: &Path, i: usize) -> Result<f64> {
        drop(self.procs.remove(i));
        let (mut signer, rx) = spawn_serve(
            bin,
            &self.homes[i],
            &self.allowed,
            &peers_of(&self.homes, i)?,
        )?;
        await_listening(&mut signer, &rx, &self.homes[i])?;
        let startup = ms(signer.startup);
        self.procs.insert(i, signer);
        Ok(startup)
    }

    /// The measured wallet with the current addresses of the signers.
    fn measured(&self) -> Result<(WalletMeta, &Psbt)> {
        let (meta, psbt) = self.wallet.as_ref().context("no measured wallet yet")?;
        let mut meta = meta.clone();
        meta.roster = roster(&self.procs)?;
        Ok((meta, psbt))
    }

    /// Sets `policy` on `group_key` in every home (`SignerHome::open` + `set_policy`; a
    /// running server re-reads it per request).
    fn set_policy(&self, group_key: &GroupKey, policy: &Policy, detail: &str) -> Result<()> {
        for home in &self.homes {
            let h = open_migrating(home, PASSPHRASE.as_bytes(), &mut rand::rngs::OsRng)?;
            h.set_policy(group_key, policy, detail, &mut rand::rngs::OsRng)?;
        }
        Ok(())
    }
}

/// What populating a set cost and left.
struct Populated {
    /// Audit records in each home afterwards (filler wallets, history, policy, DKG).
    audit_total: u64,
    seconds: f64,
    db_mb: f64,
}

/// Fills the (stopped) homes of `set` with `wallets − 1` more real 2-of-3 wallets — each
/// from its own certified key generation in memory (`ckm::protocol::dkg::run_in_memory`,
/// with the signers' own identity keys and roster), stored with `SignerHome::save_shares`
/// `WALLET_BATCH` at a time — and `records` audit records (signed and refused spends spread
/// over every wallet, the measured one included, and over the last `HISTORY_DAYS` days,
/// oldest first), appended with `ckm::signer::audit::append` `RECORD_BATCH` per transaction;
/// then advances each checkpoint.
fn populate(
    set: &SignerSet,
    members: &Roster,
    coordinator: IdentityPublic,
    measured: (&str, GroupKey),
    wallets: usize,
    records: usize,
) -> Result<Populated> {
    let started = Instant::now();
    let mut rng = rand::thread_rng();
    let homes: Vec<SignerHome> = set
        .homes
        .iter()
        .map(|h| open_migrating(h, PASSPHRASE.as_bytes(), &mut rand::rngs::OsRng))
        .collect::<Result<_, _>>()?;
    let keys: Vec<&IdentityKey> = homes.iter().map(SignerHome::identity).collect();
    ensure!(
        keys.iter()
            .zip(members.entries())
            .all(|(k, e)| k.public() == e.identity),
        "the roster does not match the homes"
    );
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut names: Vec<(String, String)> = vec![(measured.0.to_string(), measured.1.to_string())];
    let fillers = wallets.saturating_sub(1);
    let mut next = 0;
    while next < fillers {
        let end = (next + WALLET_BATCH).min(fillers);
        // One certified DKG per wallet, spread over the cores.
        let made: Vec<Vec<CertifiedShare>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let keys = &keys;
                    s.spawn(move || -> Result<Vec<Vec<CertifiedShare>>> {
                        let mut rng = rand::thread_rng();
                        (next + t..end)
                            .step_by(threads)
                            .map(|k| {
                                let context = DkgContext::new(
                                    SessionId::random(&mut rng),
                                    &format!("w{k:05}"),
                                    NETWORK,
                                    DkgParams::new(2, 3)?,
                                    coordinator,
                                    members.clone(),
                                )?;
                                let (shares, _, _) = certified_dkg(context, keys, &mut rng)?;
                                Ok(shares)
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| anyhow!("a DKG thread panicked"))?)
                .collect::<Result<Vec<_>>>()
                .map(|v| v.into_iter().flatten().collect())
        })?;
        for (i, home) in homes.iter().enumerate() {
            let infos: Vec<(WalletInfo, &KeyShare)> = made
                .iter()
                .map(|shares| {
                    let c = &shares[i];
                    ensure!(usize::from(c.index) == i + 1, "share out of roster order");
                    let context = &c.keygen.context;
                    Ok((
                        WalletInfo {
                            name: context.wallet.clone(),
                            network: context.network,
                            group_key: GroupKey::of(c.share.group()),
                            coordinator,
                            threshold: c.share.group().threshold(),
                            signers: c.share.group().signers(),
                            index: c.index,
                            fingerprint: Some(c.fingerprint),
                            keygen: Some(c.keygen.clone()),
                            epoch: 0,
                            transitions: Vec::new(),
                        },
                        &c.share,
                    ))
                })
                .collect::<Result<_>>()?;
            let pairs: Vec<(&WalletInfo, &KeyShare)> =
                infos.iter().map(|(info, share)| (info, *share)).collect();
            home.save_shares(&pairs, &mut rng)?;
            if i == 0 {
                names.extend(
                    infos
                        .iter()
                        .map(|(info, _)| (info.name.clone(), info.group_key.to_string())),
                );
            }
        }
        next = end;
        if next % 2_000 == 0 || next == fillers {
            log(format!(
                "scale: {} of {fillers} filler wallets made and stored ({:.0} s)",
                next,
                started.elapsed().as_secs_f64()
            ));
        }
    }

    // The history: spends of every wallet over the last HISTORY_DAYS days, oldest first.
    let now = ckm::auth::unix_now();
    let span = HISTORY_DAYS * 24 * 3600;
    let mut times: Vec<u64> = (0..records)
        .map(|_| now - span + rng.gen_range(0..span))
        .collect();
    times.sort_unstable();
    let coordinator_text = coordinator.to_string();
    let events: Vec<(u64, AuditEvent)> = times
        .into_iter()
        .map(|time| {
            let (wallet, group_key) = names[rng.gen_range(0..names.len())].clone();
            let signed = rng.gen_bool(0.9);
            let outflow = rng.gen_range(10_000..5_000_000);
            let fee = rng.gen_range(200..20_000);
            let event = AuditEvent {
                kind: if signed {
                    AuditKind::Signed
                } else {
                    AuditKind::Refused
                },
                wallet,
                group_key,
                coordinator: coordinator_text.clone(),
                txid: Txid::from_byte_array(rng.gen()).to_string(),
                outflow_sats: outflow,
                fee_sats: fee,
                detail: if signed {
                    format!("session {}", SessionId::random(&mut rng))
                } else {
                    format!("policy max-amount-sats: {outflow} sat would leave the wallet (payments plus fee), more than 1000000 sat per spend")
                },
                inputs: if signed {
                    vec![bitcoin::OutPoint::new(Txid::from_byte_array(rng.gen()), 0)]
                } else {
                    Vec::new()
                },
            };
            (time, event)
        })
        .collect();
    let mut audit_total = 0;
    for home in &homes {
        for batch in events.chunks(RECORD_BATCH) {
            home.db().write(|tx| {
                for (time, event) in batch {
                    audit::append(tx, home.audit_key(), event.clone(), *time)?;
                }
                Ok::<_, HomeError>(())
            })?;
        }
        home.advance_checkpoint(&mut rng)?;
        audit_total = home.db().read(audit::tail)?.0;
    }
    let db = SignerDb::path_in(&SignerHome::dir_of(&set.homes[0]));
    let db_bytes: u64 = [db.clone(), db.with_extension("db-wal")]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    Ok(Populated {
        audit_total,
        seconds: started.elapsed().as_secs_f64(),
        db_mb: db_bytes as f64 / (1024.0 * 1024.0),
    })
}

struct ScaleResult {
    quick: bool,
    wallets: usize,
    records: usize,
    audit_total: u64,
    populate_s: f64,
    db_mb: f64,
    /// Co-signing latencies (ms) of the measured wallet: big set, one-wallet set.
    big: Vec<f64>,
    one: Vec<f64>,
    /// Start-up times (ms): big set, one-wallet set.
    big_startup: Vec<f64>,
    one_startup: Vec<f64>,
    /// In this process (median of 3): `SignerHome::open` (Argon2id unlock) and
    /// `SignerHome::check_state` (keyed audit chain against the checkpoint); one-wallet set
    /// first.
    unlock_ms: [f64; 2],
    check_state_ms: [f64; 2],
}

/// Signs the measured wallet's PSBT once through `set`; checks the result.
fn sign_measured(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    set: &SignerSet,
    verify: bool,
) -> Result<f64> {
    let (meta, psbt) = set.measured()?;
    let mut p = psbt.clone();
    let start = Instant::now();
    let report = rt.block_on(sign_psbt(client, &meta, &mut p))?;
    let elapsed = ms(start.elapsed());
    ensure!(
        report.culprits.is_empty() && report.skipped.is_empty(),
        "{} set: signers failed: {:?}",
        set.label,
        report.skipped
    );
    if verify {
        consensus_verify(psbt, &report.transaction)?;
    }
    Ok(elapsed)
}

fn scale(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    dir: &Path,
    client: &Client,
    quick: bool,
) -> Result<ScaleResult> {
    let mut rng = rand::thread_rng();
    let (wallets, records) = if quick {
        (QUICK_SCALE_WALLETS, QUICK_SCALE_RECORDS)
    } else {
        (SCALE_WALLETS, SCALE_RECORDS)
    };
    let (sign_reps, startup_reps) = if quick { (5, 1) } else { (61, 3) };
    let coordinator = client.identity().public();
    log(format!(
        "scale: two 2-of-3 signer sets; one will hold 1 wallet, the other {wallets} wallets and {records} audit records{}",
        if quick { " (quick mode: reduced)" } else { "" }
    ));
    let mut sets = [
        SignerSet::start(bin, dir, "one", &[coordinator])?,
        SignerSet::start(bin, dir, "big", &[coordinator])?,
    ];
    // The measured wallet: a certified DKG across each set's processes, the same policy.
    for set in &mut sets {
        let members = roster(&set.procs)?;
        let (group, _) = rt
            .block_on(create_wallet(client, "measured", NETWORK, 2, &members))
            .with_context(|| format!("DKG of the measured wallet ({} set)", set.label))?;
        let coord_dir = dir.join(format!("coordinator-{}", set.label));
        std::fs::create_dir_all(&coord_dir)?;
        set.wallet = Some(ckm_psbt(
            &coord_dir,
            "measured",
            &group,
            members,
            LOAD_INPUTS,
            &mut rng,
        )?);
    }
    let group_key = |set: &SignerSet| -> Result<GroupKey> {
        let (meta, _) = set.wallet.as_ref().context("no measured wallet")?;
        Ok(GroupKey::of(&meta.group))
    };
    let policy = measured_policy();
    let one_gk = group_key(&sets[0])?;
    let big_gk = group_key(&sets[1])?;
    sets[0].set_policy(&one_gk, &policy, "bench: the measured wallet's policy")?;

    // Fill the big set while its signers are stopped.
    let members = roster(&sets[1].procs)?;
    sets[1].stop();
    let populated = populate(
        &sets[1],
        &members,
        coordinator,
        ("measured", big_gk),
        wallets,
        records,
    )?;
    sets[1].set_policy(&big_gk, &policy, "bench: the measured wallet's policy")?;
    log(format!(
        "scale: stored {} filler wallets and appended {records} records per signer in {:.0} s ({} audit records in all, signer.db {:.1} MiB)",
        wallets - 1,
        populated.seconds,
        populated.audit_total,
        populated.db_mb
    ));
    // Where start-up goes, in this process: unlocking the home (Argon2id) and checking the
    // records against the checkpoint (the whole keyed audit chain), which `signer serve` does
    // before it listens.
    let mut unlock: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut check: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for rep in 0..3 {
        for k in if rep % 2 == 0 { [0, 1] } else { [1, 0] } {
            let start = Instant::now();
            let home = open_migrating(
                &sets[k].homes[0],
                PASSPHRASE.as_bytes(),
                &mut rand::rngs::OsRng,
            )?;
            unlock[k].push(ms(start.elapsed()));
            let start = Instant::now();
            home.check_state(&mut rng)?;
            check[k].push(ms(start.elapsed()));
        }
    }
    log(format!(
        "scale: in this process, unlock {} / {}; check_state {} / {} (1 wallet / {wallets} wallets)",
        spread(&unlock[0]),
        spread(&unlock[1]),
        spread(&check[0]),
        spread(&check[1])
    ));
    sets[1].serve(bin)?;
    // What the running signers hold.
    for signer in &sets[1].procs {
        let entry = RosterEntry {
            index: 1,
            url: signer.url.clone(),
            identity: signer.identity,
            tls_sha256: None,
        };
        match rt.block_on(client.call(&entry, &CoordinatorToSigner::Status))? {
            SignerToCoordinator::Status { wallets: held, .. } => ensure!(
                held.len() == wallets,
                "a big-set signer holds {} wallets, not {wallets}",
                held.len()
            ),
            other => bail!("unexpected status answer: {other:?}"),
        }
    }

    // Start-up: each signer restarted alone, the sets interleaved.
    let mut startup: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for rep in 0..startup_reps {
        for k in if rep % 2 == 0 { [0, 1] } else { [1, 0] } {
            for i in 0..3 {
                let t = sets[k].restart(bin, i)?;
                startup[k].push(t);
            }
        }
    }
    log(format!(
        "scale: start-up, 1 wallet: {}; {wallets} wallets: {}",
        spread(&startup[0]),
        spread(&startup[1])
    ));

    // Co-signing: one warm-up each (checked with libbitcoinconsensus), then alternating.
    for set in &sets {
        sign_measured(rt, client, set, true)?;
    }
    let mut latency: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for rep in 0..sign_reps {
        for k in if rep % 2 == 0 { [0, 1] } else { [1, 0] } {
            latency[k].push(sign_measured(rt, client, &sets[k], false)?);
        }
    }
    log(format!(
        "scale: co-signing a {LOAD_INPUTS}-input PSBT, 1 wallet: {}; {wallets} wallets: {}",
        spread(&latency[0]),
        spread(&latency[1])
    ));
    let [one, big] = latency;
    let [one_startup, big_startup] = startup;
    Ok(ScaleResult {
        unlock_ms: [median(&unlock[0]), median(&unlock[1])],
        check_state_ms: [median(&check[0]), median(&check[1])],
        quick,
        wallets,
        records,
        audit_total: populated.audit_total,
        populate_s: populated.seconds,
        db_mb: populated.db_mb,
        big,
        one,
        big_startup,
        one_startup,
    })
}

// ---------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------

struct CaseResult {
    inputs: usize,
    t: u16,
    n: u16,
    floor: f64,
    memory: f64,
    network: f64,
    single_key: f64,
}

struct DkgResult {
    t: u16,
    n: u16,
    frost: f64,
    network: f64,
}

/// One load run: every coordinator started at once.
struct LoadRun {
    errors: usize,
    wall_ms: f64,
    per_second: f64,
    p50: f64,
    p99: f64,
    peak_rss_mb: f64,
    rss_reset: bool,
}

struct LoadResult {
    sessions: usize,
    /// Every coordinator co-signing a PSBT of one shared wallet, per run.
    one_wallet: Vec<LoadRun>,
    /// Every coordinator co-signing a PSBT of its own wallet, per run.
    own_wallets: Vec<LoadRun>,
    startup_rss_mb: f64,
}

impl LoadResult {
    fn errors(&self) -> usize {
        self.one_wallet
            .iter()
            .chain(&self.own_wallets)
            .map(|r| r.errors)
            .sum()
    }
}

/// Median, min and max of one figure over load runs.
fn load_stat(runs: &[LoadRun], f: impl Fn(&LoadRun) -> f64) -> (f64, f64, f64) {
    let v: Vec<f64> = runs.iter().map(f).collect();
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(&v), min, max)
}

fn min_max(samples: &[f64]) -> (f64, f64) {
    (
        samples.iter().copied().fold(f64::INFINITY, f64::min),
        samples.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

fn reps_for(inputs: usize, t: u16, network: bool, quick: bool) -> usize {
    // The in-process kinds are cheap: more repetitions against a noisy machine.
    let base = match (network, inputs) {
        (false, 1) => 15,
        (false, 10) => 9,
        (false, _) => 5,
        (true, 1) => 9,
        (true, 10) => 7,
        (true, _) if t >= 7 => 3,
        (true, _) => 5,
    };
    if quick {
        base.min(3)
    } else {
        base
    }
}

fn dkg_threshold(n: u16) -> u16 {
    (2 * n).div_ceil(3).max(2)
}

fn main() -> Result<()> {
    if let Some(path) = std::env::var_os("CKM_BENCH_PERF") {
        return profile(Path::new(&path).to_path_buf());
    }
    if let Some(rounds) = env_number::<usize>("CKM_BENCH_FLOOR") {
        return floor_mode(rounds.max(1));
    }
    if let Some(reps) = env_number::<usize>("CKM_BENCH_REFRESH") {
        return refresh_mode(reps.max(1));
    }
    let quick = std::env::var("CKM_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let started = Instant::now();
    let bin = ckm_bin()?;
    let machine = machine();
    log(format!("machine: {machine}; ckm binary: {}", bin.display()));
    let dir = tempfile::Builder::new().prefix("ckm-bench-").tempdir()?;
    let mut rng = rand::thread_rng();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    let input_counts: &[usize] = if quick { &[1, 10] } else { &[1, 10, 100] };
    let dkg_sizes: &[u16] = if quick { &[3, 5, 10] } else { &[3, 5, 10, 20] };
    let pool_size = usize::from(*dkg_sizes.iter().max().unwrap_or(&10)).max(10);

    // Signer processes: a pool for the cases and the DKG, three more for the load test.
    let coordinator = IdentityKey::generate(&mut rand::rngs::OsRng);
    let coordinator_pub = coordinator.public();
    let client = Client::new(coordinator, CALL_TIMEOUT)?;
    let load_keys: Vec<IdentityKey> = (0..LOAD_COORDINATORS)
        .map(|_| IdentityKey::generate(&mut rand::rngs::OsRng))
        .collect();
    let load_pubs: Vec<IdentityPublic> = load_keys.iter().map(IdentityKey::public).collect();
    let t0 = Instant::now();
    let pool_homes: Vec<PathBuf> = (1..=pool_size)
        .map(|i| dir.path().join(format!("s{i}")))
        .collect();
    let load_homes: Vec<PathBuf> = (1..=3)
        .map(|i| dir.path().join(format!("load{i}")))
        .collect();
    log(format!(
        "starting {} signer processes (init + serve, Argon2 64 MiB each)…",
        pool_size + 3
    ));
    let pool = start_signers(&bin, &pool_homes, &[coordinator_pub])?;
    let load_signers = start_signers(&bin, &load_homes, &load_pubs)?;
    log(format!("signers up in {:.1} s", t0.elapsed().as_secs_f64()));
    let pool_roster = roster(&pool)?;

    // Wallets: in memory (run_in_memory) and across processes (create_wallet) per group.
    let mut mem_groups = BTreeMap::new();
    let mut net_groups = BTreeMap::new();
    for (t, n) in GROUPS {
        let shares = run_in_memory(DkgParams::new(t, n)?, &mut rng)?;
        mem_groups.insert((t, n), shares);
        let members = first(&pool_roster, n)?;
        let (group, _) = rt
            .block_on(create_wallet(
                &client,
                &format!("bench-{t}of{n}"),
                NETWORK,
                t,
                &members,
            ))
            .with_context(|| format!("DKG {t}-of-{n} across signer processes"))?;
        net_groups.insert((t, n), (group, members));
    }

    // The cases, interleaved so that background load hits every kind alike.
    let mut cases = Vec::new();
    for &inputs in input_counts {
        for (t, n) in GROUPS {
            let label = format!("{inputs} input(s), {t}-of-{n}");
            let reps = reps_for(inputs, t, false, quick);
            let floor = floor_samples(t, n, inputs, reps, &mut rng)?;
            log(format!("{label}: floor {}", spread(&floor)));

            let shares = &mem_groups[&(t, n)];
            let fake_roster = first(&pool_roster, n)?;
            let (_, mem_psbt) = ckm_psbt(
                dir.path(),
                &format!("mem-{t}of{n}"),
                shares[0].group(),
                fake_roster,
                inputs,
                &mut rng,
            )?;
            let memory = memory_samples(&mem_psbt, shares, t, reps, &mut rng)?;
            log(format!("{label}: memory {}", spread(&memory)));

            let (group, members) = &net_groups[&(t, n)];
            let (meta, net_psbt) = ckm_psbt(
                dir.path(),
                &format!("bench-{t}of{n}"),
                group,
                members.clone(),
                inputs,
                &mut rng,
            )?;
            let network = network_samples(
                &rt,
                &client,
                &meta,
                &net_psbt,
                reps_for(inputs, t, true, quick),
            )?;
            log(format!("{label}: network {}", spread(&network)));

            let single = single_key_samples(inputs, reps, &mut rng)?;
            log(format!("{label}: single-key {}", spread(&single)));
            cases.push(CaseResult {
                inputs,
                t,
                n,
                floor: median(&floor),
                memory: median(&memory),
                network: median(&network),
                single_key: median(&single),
            });
        }
    }

    // Where the time goes for the largest 2-of-3 case, in one process.
    let breakdown_inputs = *input_counts.last().unwrap_or(&10);
    let shares = &mem_groups[&(2, 3)];
    let (_, psbt) = ckm_psbt(
        dir.path(),
        "breakdown",
        shares[0].group(),
        first(&pool_roster, 3)?,
        breakdown_inputs,
        &mut rng,
    )?;
    let phases = breakdown(&psbt, shares, 3)?;

    // DKG: across the signer processes vs in one process.
    let mut dkgs = Vec::new();
    for &n in dkg_sizes {
        let t = dkg_threshold(n);
        let reps = match n {
            0..=5 => 5,
            6..=10 => 3,
            _ => 2,
        };
        let reps = if quick { reps.min(2) } else { reps };
        let params = DkgParams::new(t, n)?;
        let frost_ms = sample(reps, || {
            let start = Instant::now();
            run_in_memory(params, &mut rng)?;
            Ok(start.elapsed())
        })?;
        let members = first(&pool_roster, n)?;
        let mut k = 0;
        let network_ms = sample(reps, || {
            k += 1;
            let start = Instant::now();
            rt.block_on(create_wallet(
                &client,
                &format!("dkg-{n}-{k}"),
                NETWORK,
                t,
                &members,
            ))?;
            Ok(start.elapsed())
        })?;
        log(format!(
            "DKG {t}-of-{n}: in one process {}; across processes {}",
            spread(&frost_ms),
            spread(&network_ms)
        ));
        dkgs.push(DkgResult {
            t,
            n,
            frost: median(&frost_ms),
            network: median(&network_ms),
        });
    }

    // Refresh: across the signer processes, by phase, vs in one process.
    let refreshes = refresh::rows(&rt, &client, &pool_roster, if quick { 2 } else { 5 })?;
    drop(pool);

    // Scale: a signer set holding 1 wallet vs one holding 10 000 wallets and 100 000
    // audit records.
    let scale = scale(&rt, &bin, dir.path(), &client, quick)?;

    // Load: many coordinators at once on the same three signer processes.
    let load_runs = env_number("CKM_BENCH_LOAD_RUNS").unwrap_or(if quick { 1 } else { 7 });
    let load = load_test(
        &rt,
        dir.path(),
        &load_signers,
        &load_homes,
        load_keys,
        load_runs,
        &mut rng,
    )?;
    drop(load_signers);

    report(&machine, &cases, &phases, &dkgs, &refreshes, &scale, &load)?;
    log(format!("total {:.1} s", started.elapsed().as_secs_f64()));
    ensure!(load.errors() == 0, "{} load sessions failed", load.errors());
    Ok(())
}

/// One coordinator's job in a load run: its client, the wallet and the PSBT it co-signs.
type LoadJob = (Client, Arc<WalletMeta>, Arc<Psbt>);

/// All `jobs` start at the same instant (a barrier), each co-signs its PSBT once.
fn load_run(rt: &tokio::runtime::Runtime, signers: &[SignerProc], jobs: &[LoadJob]) -> LoadRun {
    let rss_reset = signers.iter().all(SignerProc::reset_peak_rss);
    let sessions = jobs.len();
    let barrier = Arc::new(tokio::sync::Barrier::new(sessions + 1));
    let (latencies, errors, wall) = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (client, meta, psbt) in jobs.iter().cloned() {
            let barrier = barrier.clone();
            set.spawn(async move {
                barrier.wait().await;
                let start = Instant::now();
                let mut p = (*psbt).clone();
                let result = sign_psbt(&client, &meta, &mut p).await;
                let ok = matches!(&result, Ok(r) if r.skipped.is_empty() && r.culprits.is_empty());
                match &result {
                    Err(e) => log(format!("load session failed: {e}")),
                    Ok(r) if !ok => log(format!(
                        "load session degraded: skipped {:?}, culprits {:?}",
                        r.skipped, r.culprits
                    )),
                    Ok(_) => {}
                }
                (ms(start.elapsed()), ok)
            });
        }
        barrier.wait().await;
        let start = Instant::now();
        let mut latencies = Vec::new();
        let mut errors = 0;
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((latency, true)) => latencies.push(latency),
                _ => errors += 1,
            }
        }
        (latencies, errors, ms(start.elapsed()))
    });
    let peak = signers
        .iter()
        .filter_map(|s| s.status_field_kib("VmHWM:"))
        .max()
        .unwrap_or(0);
    LoadRun {
        errors,
        wall_ms: wall,
        per_second: latencies.len() as f64 / (wall / 1000.0),
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        peak_rss_mb: peak as f64 / 1024.0,
        rss_reset,
    }
}

/// The load test on three dedicated signer processes: `LOAD_COORDINATORS` coordinators at
/// once (a) all co-signing a PSBT of ONE wallet (created by the first; its operators add the
/// others to the wallet's policy: wallets answer only the coordinators they are bound to),
/// and (b) each co-signing a PSBT of its OWN wallet (one DKG per coordinator). The two kinds
/// alternate, `runs` times each.
fn load_test(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    signers: &[SignerProc],
    homes: &[PathBuf],
    keys: Vec<IdentityKey>,
    runs: usize,
    rng: &mut ThreadRng,
) -> Result<LoadResult> {
    let clients: Vec<Client> = keys
        .into_iter()
        .map(|k| Client::new(k, CALL_TIMEOUT))
        .collect::<Result<_, _>>()?;
    let members = roster(signers)?;
    let startup_rss = signers
        .iter()
        .filter_map(|s| s.status_field_kib("VmHWM:"))
        .max()
        .unwrap_or(0);

    // (a) One wallet, shared by every coordinator.
    let (group, _) = rt
        .block_on(create_wallet(&clients[0], "load", NETWORK, 2, &members))
        .context("DKG of the load wallet")?;
    let others: Vec<IdentityPublic> = clients[1..].iter().map(|c| c.identity().public()).collect();
    let shared_policy = Policy {
        coordinators: others,
        ..Policy::default()
    };
    for home in homes {
        open_migrating(home, PASSPHRASE.as_bytes(), &mut rand::rngs::OsRng)?.set_policy(
            &GroupKey::of(&group),
            &shared_policy,
            "bench: the load coordinators may use the load wallet",
            &mut rand::rngs::OsRng,
        )?;
    }
    let (meta, psbt) = ckm_psbt(dir, "load", &group, members.clone(), LOAD_INPUTS, rng)?;
    let (meta, psbt) = (Arc::new(meta), Arc::new(psbt));
    let one_wallet: Vec<LoadJob> = clients
        .iter()
        .map(|c| (c.clone(), meta.clone(), psbt.clone()))
        .collect();

    // (b) One wallet per coordinator, each from a DKG that coordinator ran.
    let own_dir = dir.join("load-own");
    std::fs::create_dir_all(&own_dir)?;
    let mut own_wallets = Vec::new();
    for (k, client) in clients.iter().enumerate() {
        let name = format!("load-{k:02}");
        let (group, _) = rt
            .block_on(create_wallet(client, &name, NETWORK, 2, &members))
            .with_context(|| format!("DKG of {name}"))?;
        let (meta, psbt) = ckm_psbt(&own_dir, &name, &group, members.clone(), LOAD_INPUTS, rng)?;
        own_wallets.push((client.clone(), Arc::new(meta), Arc::new(psbt)));
    }

    let sessions = clients.len();
    let mut one_runs = Vec::new();
    let mut own_runs = Vec::new();
    for run in 0..runs {
        for kind in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
            let (label, jobs, out) = if kind == 0 {
                ("one wallet", &one_wallet, &mut one_runs)
            } else {
                ("own wallets", &own_wallets, &mut own_runs)
            };
            log(format!(
                "load: {sessions} coordinators co-signing {LOAD_INPUTS}-input 2-of-3 PSBTs at once ({label}, run {})…",
                run + 1
            ));
            let r = load_run(rt, signers, jobs);
            log(format!(
                "load ({label}): {} ok, {} errors in {:.0} ms: {:.1} sessions/s, p50 {:.0} ms, p99 {:.0} ms, peak RSS {:.1} MiB",
                sessions - r.errors,
                r.errors,
                r.wall_ms,
                r.per_second,
                r.p50,
                r.p99,
                r.peak_rss_mb
            ));
            out.push(r);
        }
    }
    Ok(LoadResult {
        sessions,
        one_wallet: one_runs,
        own_wallets: own_runs,
        startup_rss_mb: startup_rss as f64 / 1024.0,
    })
}

fn report(
    machine: &str,
    cases: &[CaseResult],
    phases: &[(String, f64)],
    dkgs: &[DkgResult],
    refreshes: &[refresh::RefreshRow],
    scale: &ScaleResult,
    load: &LoadResult,
) -> Result<()> {
    let mut out = String::new();
    out.push_str(&format!("\nckm co-signing benchmark — {machine}\n\n"));
    out.push_str("Signing one PSBT (median ms; t-of-n signers; ratios of medians)\n\n");
    out.push_str("| inputs | t-of-n | floor | memory | network | single-key | memory/floor | network/floor | network/single-key |\n");
    out.push_str("|---:|:---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for c in cases {
        out.push_str(&format!(
            "| {} | {}-of-{} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |\n",
            c.inputs,
            c.t,
            c.n,
            c.floor,
            c.memory,
            c.network,
            c.single_key,
            c.memory / c.floor,
            c.network / c.floor,
            c.network / c.single_key
        ));
    }
    out.push_str("\nDKG (median ms; t = ceil(2n/3))\n\n");
    out.push_str("| t-of-n | in one process (run_in_memory) | across signer processes (create_wallet) | ratio |\n");
    out.push_str("|:---:|---:|---:|---:|\n");
    for d in dkgs {
        out.push_str(&format!(
            "| {}-of-{} | {:.1} | {:.1} | {:.2} |\n",
            d.t,
            d.n,
            d.frost,
            d.network,
            d.network / d.frost
        ));
    }
    out.push_str(&refresh::table(refreshes));
    // Scale.
    let (p50, one_p50) = (median(&scale.big), median(&scale.one));
    let (startup, one_startup) = (median(&scale.big_startup), median(&scale.one_startup));
    let (big_min, big_max) = min_max(&scale.big);
    let (one_min, one_max) = min_max(&scale.one);
    let (bs_min, bs_max) = min_max(&scale.big_startup);
    // The signings alternate, so sample k of each set ran back to back: the median of the
    // per-pair ratios is robust to background load that drifts during the run.
    let pairs: Vec<f64> = scale
        .big
        .iter()
        .zip(&scale.one)
        .map(|(b, o)| b / o)
        .collect();
    let paired = median(&pairs);
    let (os_min, os_max) = min_max(&scale.one_startup);
    out.push_str(&format!(
        "\nScale: one 2-of-3 signer set holding 1 wallet vs one holding {} wallets and {} audit records{} (same measured wallet policy, daily limit never reached)\n\n",
        scale.wallets,
        scale.records,
        if scale.quick { " — QUICK MODE, reduced sizes" } else { "" }
    ));
    out.push_str(
        "| signer set | co-sign 10 inputs p50 ms (min–max) | start-up p50 ms (min–max) |\n",
    );
    out.push_str("|:---|---:|---:|\n");
    out.push_str(&format!(
        "| 1 wallet | {one_p50:.2} ({one_min:.2}–{one_max:.2}, n={}) | {one_startup:.0} ({os_min:.0}–{os_max:.0}, n={}) |\n",
        scale.one.len(),
        scale.one_startup.len()
    ));
    out.push_str(&format!(
        "| {} wallets, {} records | {p50:.2} ({big_min:.2}–{big_max:.2}, n={}) | {startup:.0} ({bs_min:.0}–{bs_max:.0}, n={}) |\n",
        scale.wallets,
        scale.records,
        scale.big.len(),
        scale.big_startup.len()
    ));
    out.push_str(&format!(
        "| ratio of medians | {:.3} | {:.2} |\n| median of back-to-back pair ratios | {paired:.3} | |\n",
        p50 / one_p50,
        startup / one_startup
    ));
    out.push_str(&format!(
        "\n(start-up, the same steps timed in this process, 1 / {} wallets: unlocking the home (Argon2id) {:.0} / {:.0} ms; check_state (the whole keyed audit chain against the checkpoint) {:.1} / {:.1} ms)\n",
        scale.wallets,
        scale.unlock_ms[0],
        scale.unlock_ms[1],
        scale.check_state_ms[0],
        scale.check_state_ms[1]
    ));
    out.push_str(&format!(
        "\n(goal: co-signing with {} wallets and {} records at most 1.2× the one-wallet latency: {}; {} audit records per signer in all; signer.db {:.1} MiB; filling took {:.0} s)\n",
        scale.wallets,
        scale.records,
        if p50 / one_p50 <= 1.2 { "met" } else { "NOT met" },
        scale.audit_total,
        scale.db_mb,
        scale.populate_s
    ));

    // Load.
    out.push_str(&format!(
        "\nLoad: {} coordinators at once, each co-signing a {LOAD_INPUTS}-input 2-of-3 PSBT through the same 3 signer processes (median of {} runs, min–max)\n\n",
        load.sessions,
        load.one_wallet.len()
    ));
    out.push_str("| wallets | sessions | errors | wall ms | sessions/s | p50 ms | p99 ms | peak RSS per signer MiB |\n");
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (wallets, runs) in [(1, &load.one_wallet), (load.sessions, &load.own_wallets)] {
        let (wall, _, _) = load_stat(runs, |r| r.wall_ms);
        let (ps, ps_min, ps_max) = load_stat(runs, |r| r.per_second);
        let (p50, _, _) = load_stat(runs, |r| r.p50);
        let (p99, _, _) = load_stat(runs, |r| r.p99);
        let (rss, _, _) = load_stat(runs, |r| r.peak_rss_mb);
        out.push_str(&format!(
            "| {wallets} | {} | {} | {wall:.0} | {ps:.1} ({ps_min:.1}–{ps_max:.1}) | {p50:.0} | {p99:.0} | {rss:.1} |\n",
            load.sessions,
            runs.iter().map(|r| r.errors).sum::<usize>(),
        ));
    }
    let one_ps = load_stat(&load.one_wallet, |r| r.per_second).0;
    let own_ps = load_stat(&load.own_wallets, |r| r.per_second).0;
    out.push_str(&format!(
        "\n({} wallets / 1 wallet sessions/s (medians): {:.2}; every figure is the median over the runs; peak RSS = largest VmHWM of the three signers during a run{}; at start-up, including the Argon2 unlock: {:.1} MiB)\n",
        load.sessions,
        own_ps / one_ps,
        if load.one_wallet.iter().chain(&load.own_wallets).all(|r| r.rss_reset) {
            ", after resetting it with /proc/PID/clear_refs"
        } else {
            " (could not reset it: includes start-up)"
        },
        load.startup_rss_mb
    ));
    if !phases.is_empty() {
        out.push_str("\nWhere the time goes: 2-of-3, largest PSBT, one process (median of 3)\n\n");
        out.push_str("| phase | value |\n|:---|---:|\n");
        for (name, v) in phases {
            if name.contains("(bytes") {
                out.push_str(&format!("| {name} | {v:.0} |\n"));
            } else {
                out.push_str(&format!("| {name} | {v:.2} |\n"));
            }
        }
    }
    print!("{out}");
    std::io::stdout().flush()?;

    let json = serde_json::json!({
        "machine": machine,
        "cases": cases.iter().map(|c| serde_json::json!({
            "inputs": c.inputs,
            "threshold": c.t,
            "signers": c.n,
            "floor_ms": round3(c.floor),
            "memory_ms": round3(c.memory),
            "network_ms": round3(c.network),
            "single_key_ms": round3(c.single_key),
        })).collect::<Vec<_>>(),
        "dkg": dkgs.iter().map(|d| serde_json::json!({
            "signers": d.n,
            "frost_ms": round3(d.frost),
            "network_ms": round3(d.network),
        })).collect::<Vec<_>>(),
        "refresh": refresh::json(refreshes),
        "scale": {
            "wallets": scale.wallets,
            "records": scale.records,
            "p50_ms": round3(p50),
            "one_wallet_p50_ms": round3(one_p50),
            "startup_ms": round3(startup),
            "one_wallet_startup_ms": round3(one_startup),
            "quick": scale.quick,
            "ratio": round3(p50 / one_p50),
            "paired_ratio": round3(paired),
            "startup_ratio": round3(startup / one_startup),
            "min_ms": round3(big_min),
            "max_ms": round3(big_max),
            "one_wallet_min_ms": round3(one_min),
            "one_wallet_max_ms": round3(one_max),
            "startup_min_ms": round3(bs_min),
            "startup_max_ms": round3(bs_max),
            "one_wallet_startup_min_ms": round3(os_min),
            "one_wallet_startup_max_ms": round3(os_max),
            "signings": scale.big.len(),
            "startups": scale.big_startup.len(),
            "audit_records_total": scale.audit_total,
            "unlock_ms": round3(scale.unlock_ms[1]),
            "one_wallet_unlock_ms": round3(scale.unlock_ms[0]),
            "check_state_ms": round3(scale.check_state_ms[1]),
            "one_wallet_check_state_ms": round3(scale.check_state_ms[0]),
            "db_mb": round3(scale.db_mb),
        },
        "load": load_json(load.sessions, 1, &load.one_wallet, Some(load_json(
            load.sessions,
            load.sessions,
            &load.own_wallets,
            None,
        ))),
    });
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&json)?)?;
    log(format!("wrote {}", path.display()));
    Ok(())
}

/// One kind of load run in report.json: the figures of the median run first (the keys the
/// report always had), then spreads.
fn load_json(
    sessions: usize,
    wallets: usize,
    runs: &[LoadRun],
    across: Option<serde_json::Value>,
) -> serde_json::Value {
    let (ps, ps_min, ps_max) = load_stat(runs, |r| r.per_second);
    let mut v = serde_json::json!({
        "sessions": sessions,
        "per_second": round3(ps),
        "p50_ms": round3(load_stat(runs, |r| r.p50).0),
        "p99_ms": round3(load_stat(runs, |r| r.p99).0),
        "peak_rss_mb": round3(load_stat(runs, |r| r.peak_rss_mb).0),
        "wallets": wallets,
        "runs": runs.len(),
        "per_second_min": round3(ps_min),
        "per_second_max": round3(ps_max),
        "errors": runs.iter().map(|r| r.errors).sum::<usize>(),
    });
    if let (Some(across), Some(obj)) = (across, v.as_object_mut()) {
        if let Some(other) = across.get("per_second").and_then(serde_json::Value::as_f64) {
            obj.insert(
                "across_wallets_ratio".into(),
                serde_json::json!(round3(other / ps)),
            );
        }
        obj.insert("across_wallets".into(), across);
    }
    v
}

/// Profile mode: the 100-input 2-of-3 network case under `perf record`, attached to the
/// three signer processes and to this process once they are up (so start-up is not recorded).
fn profile(out: PathBuf) -> Result<()> {
    let bin = ckm_bin()?;
    let reps: usize = env_number("CKM_BENCH_PERF_REPS").unwrap_or(15);
    let dir = tempfile::Builder::new().prefix("ckm-bench-").tempdir()?;
    let mut rng = rand::thread_rng();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let coordinator = IdentityKey::generate(&mut rand::rngs::OsRng);
    let homes: Vec<PathBuf> = (1..=3).map(|i| dir.path().join(format!("s{i}"))).collect();
    let signers = start_signers(&bin, &homes, &[coordinator.public()])?;
    let client = Client::new(coordinator, CALL_TIMEOUT)?;
    let members = roster(&signers)?;
    let (group, _) = rt.block_on(create_wallet(&client, "perf", NETWORK, 2, &members))?;
    let inputs: usize = env_number("CKM_BENCH_PERF_INPUTS").unwrap_or(100);
    let (meta, psbt) = ckm_psbt(dir.path(), "perf", &group, members, inputs, &mut rng)?;
    // Warm up the connections.
    let mut p = psbt.clone();
    rt.block_on(sign_psbt(&client, &meta, &mut p))?;
    // CKM_BENCH_PERF_ONE_ROUND=1: one-round signings from commitments fetched before the
    // profile starts (so that only the signings are recorded).
    let one_round = std::env::var("CKM_BENCH_PERF_ONE_ROUND").is_ok_and(|v| v == "1");
    let mut store = MemoryCommitments::default();
    let sign_one_round = |p: &mut Psbt, store: &mut MemoryCommitments| {
        rt.block_on(sign_psbt_one_round(
            &client,
            &meta,
            p,
            store,
            common::one_round_options(false),
        ))
    };
    if one_round {
        let wallet = WalletRef {
            name: meta.name.clone(),
            group_key: GroupKey::of(&meta.group),
            epoch: meta.epoch,
        };
        // A few sessions' worth: each answer brings the commitments of the next signing (more
        // than a signer's pool holds would be forgotten there, and the driver's refills after
        // it would be profiled instead of the signings).
        let want = (8 * inputs).min(ckm::signer::nonces::MAX_POOL);
        for entry in meta.roster.entries() {
            let mut fetched = 0;
            while fetched < want {
                let count = u16::try_from((want - fetched).min(500))?;
                let commitments = common::preprocess(&rt, &client, entry, &wallet, count)?;
                fetched += commitments.len();
                store.add(entry.index, commitments);
            }
        }
        sign_one_round(&mut psbt.clone(), &mut store)?;
    }
    let mut pids: Vec<String> = signers.iter().map(|s| s.pid().to_string()).collect();
    pids.push(std::process::id().to_string());
    // CKM_BENCH_PERF_SCHED=1: the scheduler's events of the whole machine instead of samples
    // (`perf sched timehist -i FILE -s`: each thread's run time and its wait for a core).
    let sched = std::env::var("CKM_BENCH_PERF_SCHED").is_ok_and(|v| v == "1");
    let mut perf = Command::new("perf");
    if sched {
        perf.args(["sched", "record", "-a", "-o"]).arg(&out);
    } else {
        perf.args(["record", "-F", "499", "--call-graph", "dwarf,16384", "-o"])
            .arg(&out)
            .arg("-p")
            .arg(pids.join(","));
    }
    let mut perf = perf.stdin(Stdio::null()).spawn().context("starting perf")?;
    std::thread::sleep(Duration::from_millis(1500));
    let mut samples = Vec::new();
    let mut second_sessions = 0;
    for _ in 0..reps {
        let mut p = psbt.clone();
        let start = Instant::now();
        if one_round {
            if sign_one_round(&mut p, &mut store)?.sessions > 1 {
                second_sessions += 1;
            }
        } else {
            rt.block_on(sign_psbt(&client, &meta, &mut p))?;
        }
        samples.push(ms(start.elapsed()));
    }
    // Stop perf (our own child) with SIGINT so that it writes its file.
    let _ = Command::new("kill")
        .args(["-INT", &perf.id().to_string()])
        .status();
    perf.wait()?;
    log(format!(
        "profiled {reps} {} network signings of {inputs} input(s), 2-of-3: {}{}; signer pids {}; perf data in {}",
        if one_round { "one-round" } else { "two-round" },
        spread(&samples),
        if one_round {
            format!(" ({second_sessions} started a second session)")
        } else {
            String::new()
        },
        pids.join(","),
        out.display()
    ));
    Ok(())
}

/// Refresh mode: only the refresh rows (10 signer processes).
fn refresh_mode(reps: usize) -> Result<()> {
    let bin = ckm_bin()?;
    let machine = machine();
    log(format!("machine: {machine}; ckm binary: {}", bin.display()));
    let dir = tempfile::Builder::new().prefix("ckm-bench-").tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let coordinator = IdentityKey::generate(&mut rand::rngs::OsRng);
    let n = refresh::GROUPS.iter().map(|&(_, n)| n).max().unwrap_or(3);
    let homes: Vec<PathBuf> = (1..=n).map(|i| dir.path().join(format!("s{i}"))).collect();
    log(format!("starting {n} signer processes…"));
    let signers = start_signers(&bin, &homes, &[coordinator.public()])?;
    let client = Client::new(coordinator, CALL_TIMEOUT)?;
    let rows = refresh::rows(&rt, &client, &roster(&signers)?, reps)?;
    drop(signers);
    println!(
        "\nckm refresh benchmark — {machine}\n{}",
        refresh::table(&rows)
    );
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("refresh.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&serde_json::json!({
            "machine": machine,
            "refresh": refresh::json(&rows),
        }))?,
    )?;
    log(format!("wrote {}", path.display()));
    Ok(())
}

/// Floor mode: the 100-input 2-of-3 floor, memory and network rows only, `rounds` rounds
/// (each kind 5 times per round, interleaved), for working on the per-input cost.
fn floor_mode(rounds: usize) -> Result<()> {
    const INPUTS: usize = 100;
    const REPS: usize = 5;
    let bin = ckm_bin()?;
    log(format!(
        "machine: {}; ckm binary: {}",
        machine(),
        bin.display()
    ));
    let dir = tempfile::Builder::new().prefix("ckm-bench-").tempdir()?;
    let mut rng = rand::thread_rng();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let coordinator = IdentityKey::generate(&mut rand::rngs::OsRng);
    let homes: Vec<PathBuf> = (1..=3).map(|i| dir.path().join(format!("s{i}"))).collect();
    let signers = start_signers(&bin, &homes, &[coordinator.public()])?;
    let client = Client::new(coordinator, CALL_TIMEOUT)?;
    let members = roster(&signers)?;
    let (group, _) = rt.block_on(create_wallet(&client, "floor", NETWORK, 2, &members))?;
    let (meta, net_psbt) = ckm_psbt(
        dir.path(),
        "floor",
        &group,
        members.clone(),
        INPUTS,
        &mut rng,
    )?;
    let shares = run_in_memory(DkgParams::new(2, 3)?, &mut rng)?;
    let (_, mem_psbt) = ckm_psbt(
        dir.path(),
        "floor-mem",
        shares[0].group(),
        members,
        INPUTS,
        &mut rng,
    )?;
    let (mut floor, mut memory, mut network) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let f = floor_samples(2, 3, INPUTS, REPS, &mut rng)?;
        let m = memory_samples(&mem_psbt, &shares, 2, REPS, &mut rng)?;
        let n = network_samples(&rt, &client, &meta, &net_psbt, REPS)?;
        log(format!(
            "round {round}: floor {}; memory {}; network {}; memory/floor {:.2}, network/floor {:.2}",
            spread(&f),
            spread(&m),
            spread(&n),
            median(&m) / median(&f),
            median(&n) / median(&f)
        ));
        floor.extend(f);
        memory.extend(m);
        network.extend(n);
    }
    let phases = breakdown(&mem_psbt, &shares, 3)?;
    for (name, value) in &phases {
        println!("  {name}: {value:.3}");
    }
    println!(
        "100 inputs, 2-of-3, {} repetitions each: floor {}; memory {}; network {}",
        floor.len(),
        spread(&floor),
        spread(&memory),
        spread(&network)
    );
    println!(
        "memory/floor {:.3}, network/floor {:.3} (medians over all repetitions)",
        median(&memory) / median(&floor),
        median(&network) / median(&floor)
    );
    Ok(())
}
