//! Co-signing over an emulated WAN: two rounds vs one round (preprocessed nonces), the
//! statement rounds of a wallet-wide daily limit, and ROAST vs the two-round retry with a
//! hanging and an invalid-share signer.
//!
//! Run with `just bench` (after the `cosign` bench; it builds `target/release/ckm` and the
//! faulty signer example first) or `cargo bench --locked --bench wan` once both exist.
//!
//! **Latency.** Each of the 5 real signer processes (`ckm signer serve` on loopback) sits
//! behind a TCP relay in this process: bytes read from one side are written to the other
//! RTT/2 later, in order, in both directions (no bandwidth cap; a blocking thread per
//! direction, so the delay is as precise as `thread::sleep`, not a 1 ms timer tick). The
//! bytes of a new connection leave one RTT after it was accepted at the earliest (the TCP
//! handshake; no TLS). How late the relay wrote chunks against their due time is reported
//! per row (the timed signings only; `relay_late_max_us`), chunks over 20 ms late are logged. The
//! wallets' rosters point at the relays. Every timed signing runs on warm connections (an
//! untimed `Status` call to every signer first: the drivers drop the connection of every
//! request they abort, e.g. round-1 answers they no longer need); the connections opened
//! during timed signings are counted and reported.
//!
//! **Rows** (`"wan"` in `target/bench/report.json`), for RTT 0, 50 and 200 ms, 1 and 100
//! inputs, 2-of-3 and 3-of-5, each signing the same wallet PSBT repeatedly:
//! - `two_round_ms`: [`sign_psbt`] (commit, share);
//! - `one_round_ms`: [`sign_psbt_one_round`] with the coordinator's store holding every
//!   signer's preprocessed commitments (the signers' answers refill it; a signer short of
//!   commitments is asked for a batch, untimed, before the signing: `one_round_refills`
//!   counts them); every timed signing must report [`SignMode::OneRound`];
//! - `with_statements_ms`: [`sign_psbt`] on a second wallet of the same signers whose
//!   signers all have a (huge) daily limit, which is wallet-wide: three rounds (commit and
//!   reserve, statements, shares; [`SignMode::WithStatements`]);
//! - `floor_ms`: the bare frost-secp256k1-tr work for t signers and N inputs in one process
//!   (as in the `cosign` bench).
//!
//! **ROAST rows** (`"roast"`), 3-of-5, signer 1 restarted as the faulty signer
//! `hang-after-commit` (answers commitments and preprocessing, never a request for shares)
//! and signer 2 as `corrupt-share` (an invalid share for input 0): lowest indexes, so both
//! are in the first signing set.
//! - `roast_ms`: [`sign_psbt_one_round`] (ROAST) with preprocessed commitments (the hanging
//!   signer's used commitments are topped up, untimed, before each signing); every timed
//!   signing must be one round, name signer 2 as malicious and be signed by 3, 4, 5. At RTT 0
//!   these signings go straight to the signers, as the small rows do (through the relays
//!   until 2026-12-07). The small report adds, for RTT 0, the CPU time of the coordinator
//!   and the five signers per signing (`cpu_per_signing_ms`; live threads, a lower bound)
//!   and the least wall time that CPU allows on the machine's cores;
//! - `retry_ms`: [`sign_psbt`] with a client timeout of [`RETRY_TIMEOUT`]: the first
//!   attempt waits for the hanging signer's round-2 answer until the timeout, then starts a
//!   new attempt without it (shares of an attempt with a failed signer are not checked, so
//!   the invalid-share signer is found by the next attempt that includes it, and the one
//!   after that signs: `retry_sessions`). Two-round signing chooses the first t signers to
//!   answer round 1; so that the faulty ones are among them, signers 4 and 5 are [`SKEW`]
//!   further away during these signings (reported as `skew_ms`; it slows each later attempt
//!   by at most 2 × SKEW). Signings that did not meet both faulty signers (the hanging one
//!   skipped, the invalid one named) are not counted (`retry_misses`).
//!
//! Medians of the repetitions with min and max; every kind of signed transaction is checked
//! once with libbitcoinconsensus. The keys are added to the report the `cosign` bench wrote
//! (created when absent).
//!
//! Environment: `CKM_BIN`, `CKM_FAULTY_BIN` (default: `examples/faulty_signer` next to
//! `ckm`), `CKM_BENCH_SETTLE_MS=MS` (idle time after each untimed warm-up call, before a
//! timed signing, so that the previous signing's background work is done: default 0),
//! `CKM_BENCH_QUICK=1` (RTT 0 and 50 ms, 1 input, 3 repetitions),
//! `CKM_BENCH_ROAST_ONLY=1` (while working on ROAST: only the ROAST rows, without the retry,
//! printed but not written to the report).

mod common;
#[path = "../tests/common/consensus.rs"]
mod consensus;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bitcoin::Psbt;
use ckm::identity::{IdentityKey, IdentityPublic};
use ckm::keys::{GroupKey, Roster, RosterEntry};
use ckm::message::{CoordinatorToSigner, WalletRef};
use ckm::net::client::Client;
use ckm::net::coordinator::{create_wallet, sign_psbt, SignMode, SignReport};
use ckm::net::one_round::{hedge_fits, sign_psbt_one_round, HEDGE_MAX_SHARES};
use ckm::protocol::roast::{CommitmentStore, MemoryCommitments};
use ckm::wallet::WalletMeta;
use common::*;

const GROUPS: [(u16, u16); 2] = [(2, 3), (3, 5)];
/// The client timeout of the ROAST and retry rows.
const RETRY_TIMEOUT: Duration = Duration::from_secs(2);
/// Extra RTT of signers 4 and 5 during the retry signings (see the module docs).
const SKEW: Duration = Duration::from_millis(20);
/// A daily limit no benchmark reaches (2·10^15 sat), set on every signer of the `lim-*`
/// wallets: it makes the limit wallet-wide, so signing needs the statement rounds.
const HUGE_LIMIT: u64 = 2_000_000_000_000_000;
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Roster index of the signer that hangs after round 1 / sends an invalid share.
const HANG: u16 = 1;
const INVALID: u16 = 2;

// ---------------------------------------------------------------------------------------
// The latency relay
// ---------------------------------------------------------------------------------------

/// How late the relay wrote chunks, against their due time: over the whole run and over
/// the current window (one row; see [`Lateness::take_window`]).
#[derive(Default)]
struct Lateness {
    total: LateCounters,
    window: LateCounters,
}

#[derive(Default)]
struct LateCounters {
    hops: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
    /// Chunks written more than [`LATE_US`] after their due time.
    over: AtomicU64,
}

/// A chunk this late (µs) is counted.
const LATE_US: u64 = 1_000;
/// A chunk this late (µs) is logged.
const LATE_LOG_US: u64 = 20_000;

/// Lateness over some chunks.
#[derive(Clone, Copy, Default)]
struct Late {
    hops: u64,
    mean_us: f64,
    max_us: u64,
    over: u64,
}

impl LateCounters {
    fn record(&self, us: u64) {
        self.hops.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        if us > LATE_US {
            self.over.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn read(&self, reset: bool) -> Late {
        let get = |a: &AtomicU64| {
            if reset {
                a.swap(0, Ordering::Relaxed)
            } else {
                a.load(Ordering::Relaxed)
            }
        };
        let hops = get(&self.hops);
        let sum_us = get(&self.sum_us);
        Late {
            hops,
            mean_us: sum_us as f64 / hops.max(1) as f64,
            max_us: get(&self.max_us),
            over: get(&self.over),
        }
    }
}

impl Lateness {
    /// Records a chunk written `late` after its due time; returns the µs.
    fn record(&self, late: Duration) -> u64 {
        let us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        self.total.record(us);
        self.window.record(us);
        us
    }

    /// The lateness since the last call, and starts a new window.
    fn take_window(&self) -> Late {
        self.window.read(true)
    }

    fn total(&self) -> Late {
        self.total.read(false)
    }
}

impl Late {
    /// Adds the chunks of `other`.
    fn add(&mut self, other: &Late) {
        let hops = self.hops + other.hops;
        self.mean_us = (self.mean_us * self.hops as f64 + other.mean_us * other.hops as f64)
            / hops.max(1) as f64;
        self.hops = hops;
        self.max_us = self.max_us.max(other.max_us);
        self.over += other.over;
    }

    fn text(&self) -> String {
        format!(
            "relay late by {:.0} µs on average, at most {} µs, {} of {} chunks over {} µs",
            self.mean_us, self.max_us, self.over, self.hops, LATE_US
        )
    }
}

/// A TCP relay on 127.0.0.1 in front of one signer, adding a one-way delay each way.
struct Relay {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    /// One-way delay, microseconds.
    one_way_us: Arc<AtomicU64>,
    connections: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Shared {
    target: Arc<Mutex<SocketAddr>>,
    one_way_us: Arc<AtomicU64>,
    connections: Arc<AtomicUsize>,
    lateness: Arc<Lateness>,
    /// Roster index of the signer behind the relay (for the log).
    signer: usize,
}

impl Shared {
    fn one_way(&self) -> Duration {
        Duration::from_micros(self.one_way_us.load(Ordering::Relaxed))
    }
}

impl Relay {
    fn start(signer: usize, target: SocketAddr, lateness: Arc<Lateness>) -> Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Shared {
            target: Arc::new(Mutex::new(target)),
            one_way_us: Arc::new(AtomicU64::new(0)),
            connections: Arc::new(AtomicUsize::new(0)),
            lateness,
            signer,
        };
        let relay = Relay {
            addr,
            target: shared.target.clone(),
            one_way_us: shared.one_way_us.clone(),
            connections: shared.connections.clone(),
        };
        // Lives as long as the bench process.
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    if let Err(e) = connection(client, &shared) {
                        log(format!("relay: {e:#}"));
                    }
                });
            }
        });
        Ok(relay)
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the round-trip time through this relay.
    fn set_rtt(&self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros() / 2).unwrap_or(u64::MAX);
        self.one_way_us.store(us, Ordering::Relaxed);
    }

    fn retarget(&self, to: SocketAddr) {
        if let Ok(mut t) = self.target.lock() {
            *t = to;
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

fn connection(client: TcpStream, shared: &Shared) -> Result<()> {
    let accepted = Instant::now();
    let target = *shared
        .target
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let server = TcpStream::connect(target).with_context(|| format!("connecting {target}"))?;
    shared.connections.fetch_add(1, Ordering::Relaxed);
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    // The client's first bytes would have left one RTT after it started connecting.
    let handshake = accepted + 2 * shared.one_way();
    pump(
        client.try_clone()?,
        server.try_clone()?,
        Some(handshake),
        shared,
        "to",
    );
    pump(server, client, None, shared, "from");
    Ok(())
}

/// Relays `from` to `to`: each chunk is written one-way delay after it was read (and not
/// before `not_before` plus that delay), in order; end of stream is passed on the same way.
/// A chunk written more than [`LATE_LOG_US`] late is logged with the time its predecessor's
/// write took (a full receive buffer at the destination blocks the writer).
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    not_before: Option<Instant>,
    shared: &Shared,
    direction: &'static str,
) {
    let (tx, rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>();
    let reader_shared = shared.clone();
    let reader_to = to.try_clone().ok();
    std::thread::spawn(move || {
        loop {
            let mut buf = vec![0u8; 64 * 1024];
            let read = from.read(&mut buf);
            let now = Instant::now();
            let d = reader_shared.one_way();
            // Every chunk read before the handshake is over leaves when it is over: the
            // client could not have sent any of it earlier.
            let due = match not_before {
                Some(nb) => now.max(nb) + d,
                None => now + d,
            };
            match read {
                Ok(0) | Err(_) => {
                    let _ = tx.send((due, None));
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send((due, Some(buf))).is_err() {
                        // The writer gave up (the other side is gone).
                        let _ = from.shutdown(Shutdown::Both);
                        if let Some(t) = &reader_to {
                            let _ = t.shutdown(Shutdown::Both);
                        }
                        return;
                    }
                }
            }
        }
    });
    let lateness = shared.lateness.clone();
    let signer = shared.signer;
    std::thread::spawn(move || {
        let mut last_write = Duration::ZERO;
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let late = lateness.record(Instant::now().saturating_duration_since(due));
            if late > LATE_LOG_US {
                log(format!(
                    "relay {direction} signer {signer}: a chunk of {} bytes written {late} µs late (the previous write took {} µs)",
                    chunk.as_ref().map_or(0, Vec::len),
                    last_write.as_micros()
                ));
            }
            match chunk {
                Some(bytes) => {
                    let started = Instant::now();
                    if to.write_all(&bytes).is_err() {
                        let _ = to.shutdown(Shutdown::Both);
                        return;
                    }
                    last_write = started.elapsed();
                }
                None => {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// Signing helpers
// ---------------------------------------------------------------------------------------

struct Bench {
    rt: tokio::runtime::Runtime,
    relays: Vec<Relay>,
    lateness: Arc<Lateness>,
    /// Idle time after each warm-up call, before a timed signing (`CKM_BENCH_SETTLE_MS`).
    settle: Duration,
}

impl Bench {
    fn set_rtt(&self, rtt: Duration) {
        for r in &self.relays {
            r.set_rtt(rtt);
        }
    }

    fn connections(&self) -> usize {
        self.relays.iter().map(Relay::connections).sum()
    }

    fn two_rounds(&self, client: &Client, meta: &WalletMeta, psbt: &Psbt) -> Result<Timed> {
        let mut p = distinct(psbt);
        let before = self.connections();
        self.lateness.take_window();
        let start = Instant::now();
        let report = self.rt.block_on(sign_psbt(client, meta, &mut p))?;
        Ok(Timed::new(
            start,
            report,
            self.connections() - before,
            self.lateness.take_window(),
        ))
    }

    fn one_round(
        &self,
        client: &Client,
        meta: &WalletMeta,
        psbt: &Psbt,
        store: &mut MemoryCommitments,
        hedge: bool,
    ) -> Result<Timed> {
        let mut p = distinct(psbt);
        let before = self.connections();
        self.lateness.take_window();
        let start = Instant::now();
        let report = self.rt.block_on(sign_psbt_one_round(
            client,
            meta,
            &mut p,
            store,
            common::one_round_options(hedge),
        ))?;
        Ok(Timed::new(
            start,
            report,
            self.connections() - before,
            self.lateness.take_window(),
        ))
    }

    /// Asks every signer of `meta` holding fewer than `inputs` commitments in `store` for
    /// a batch (untimed preparation of a one-round signing).
    fn top_up(
        &self,
        client: &Client,
        meta: &WalletMeta,
        store: &mut MemoryCommitments,
        inputs: usize,
    ) -> Result<usize> {
        let mut asked = 0;
        let wallet = WalletRef {
            name: meta.name.clone(),
            group_key: GroupKey::of(&meta.group),
            epoch: meta.epoch,
        };
        // Enough for a hedged start of a small PSBT too (several sessions per signer).
        let want = inputs.max(HEDGE_MAX_SHARES);
        for entry in meta.roster.entries() {
            if store.count(entry.index) >= want {
                continue;
            }
            let count = u16::try_from(want.max(16))?;
            let commitments = preprocess(&self.rt, client, entry, &wallet, count)?;
            store.add(entry.index, commitments);
            asked += 1;
        }
        Ok(asked)
    }

    /// One `Status` call to every signer of `meta` at once, so that the client's pool holds
    /// an open connection to each (the drivers drop a connection when they abort a request
    /// they no longer need).
    fn warm(&self, client: &Client, meta: &WalletMeta) -> Result<()> {
        self.rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for entry in meta.roster.entries() {
                let (client, entry) = (client.clone(), entry.clone());
                set.spawn(async move { client.call(&entry, &CoordinatorToSigner::Status).await });
            }
            while let Some(joined) = set.join_next().await {
                joined??;
            }
            Ok::<(), anyhow::Error>(())
        })?;
        std::thread::sleep(self.settle);
        Ok(())
    }
}

struct Timed {
    ms: f64,
    report: SignReport,
    /// Connections the relays accepted meanwhile.
    connections: usize,
    /// The relays' lateness meanwhile.
    late: Late,
}

impl Timed {
    fn new(start: Instant, report: SignReport, connections: usize, late: Late) -> Timed {
        Timed {
            ms: ms(start.elapsed()),
            report,
            connections,
            late,
        }
    }

    fn expect_clean(self, mode: SignMode, what: &str) -> Result<Timed> {
        let r = &self.report;
        ensure!(
            r.mode == mode && r.culprits.is_empty() && r.skipped.is_empty(),
            "{what}: expected a clean {mode} signing, got {} (culprits {:?}, skipped {:?})",
            r.mode,
            r.culprits,
            r.skipped
        );
        Ok(self)
    }
}

/// Checks the first signed transaction of each kind with libbitcoinconsensus.
#[derive(Default)]
struct Checked(std::collections::BTreeSet<String>);

impl Checked {
    fn once(&mut self, key: String, psbt: &Psbt, t: &Timed) -> Result<()> {
        if self.0.insert(key.clone()) {
            consensus_verify(psbt, &t.report.transaction)
                .with_context(|| format!("libbitcoinconsensus on {key}"))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------

struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(samples: &[f64]) -> Spread {
        Spread {
            median: median(samples),
            min: min(samples),
            max: max(samples),
        }
    }

    fn cell(&self) -> String {
        format!("{:.1} ({:.1}–{:.1})", self.median, self.min, self.max)
    }
}

struct WanRow {
    rtt: u64,
    inputs: usize,
    t: u16,
    n: u16,
    floor: Spread,
    two: Spread,
    one: Spread,
    statements: Spread,
    reps: usize,
    new_connections: usize,
    /// Most ROAST sessions one one-round signing started.
    one_sessions: usize,
    /// Signers asked for commitments (untimed) before a one-round signing because the
    /// store ran short.
    refills: usize,
    /// The relays' lateness during the timed signings.
    late: Late,
}

struct RoastRow {
    /// Timed ROAST signings that named the invalid-share signer.
    named: usize,
    /// Hedged ROAST (every 3-subset at once), when the PSBT is small enough.
    hedged: Option<Spread>,
    /// Timed hedged signings that named the invalid-share signer.
    hedged_named: usize,
    /// Most sessions a hedged signing started.
    hedged_sessions: usize,
    rtt: u64,
    inputs: usize,
    floor: Spread,
    retry: Spread,
    roast: Spread,
    /// CPU time of the coordinator and the five signers per timed ROAST signing (ms; live
    /// threads only, so a lower bound: [`common::cpu_during`]).
    roast_cpu: Spread,
    reps: usize,
    retry_misses: usize,
    sessions: usize,
    retry_sessions: usize,
    /// Connections the relays accepted during the timed ROAST / retry signings.
    roast_connections: usize,
    retry_connections: usize,
    /// The relays' lateness during the timed signings.
    late: Late,
}

/// The wallets of one group: plain and with a wallet-wide limit, PSBTs per input count.
struct Group {
    t: u16,
    n: u16,
    plain: WalletMeta,
    limited: WalletMeta,
    /// The same wallets with rosters straight to the signers (no relay): the small-payment
    /// rows.
    direct_plain: WalletMeta,
    direct_limited: WalletMeta,
    store: MemoryCommitments,
    psbts: BTreeMap<usize, (Psbt, Psbt)>,
}

#[allow(clippy::too_many_arguments)]
fn wan_row(
    bench: &Bench,
    client: &Client,
    g: &mut Group,
    rtt: u64,
    inputs: usize,
    floor: &[f64],
    reps: usize,
    checked: &mut Checked,
) -> Result<WanRow> {
    let (plain_psbt, limited_psbt) = g.psbts[&inputs].clone();
    let label = format!("RTT {rtt} ms, {inputs} input(s), {}-of-{}", g.t, g.n);
    bench.set_rtt(Duration::from_millis(rtt));
    // Warm-up (untimed): connections, the one-round store, consensus checks.
    let two = bench
        .two_rounds(client, &g.plain, &plain_psbt)?
        .expect_clean(SignMode::TwoRounds, &label)?;
    checked.once(format!("two rounds {label}"), &plain_psbt, &two)?;
    bench.top_up(client, &g.plain, &mut g.store, inputs)?;
    let one = bench
        .one_round(client, &g.plain, &plain_psbt, &mut g.store, false)?
        .expect_clean(SignMode::OneRound, &label)?;
    checked.once(format!("one round {label}"), &plain_psbt, &one)?;
    let lim = bench
        .two_rounds(client, &g.limited, &limited_psbt)?
        .expect_clean(SignMode::WithStatements, &label)?;
    checked.once(format!("with statements {label}"), &limited_psbt, &lim)?;

    let (mut connections, mut one_sessions, mut refills) = (0, 0, 0);
    let mut late = Late::default();
    let (mut two_ms, mut one_ms, mut lim_ms) = (Vec::new(), Vec::new(), Vec::new());
    // Interleaved, so that background noise hits every kind alike.
    for _ in 0..reps {
        bench.warm(client, &g.plain)?;
        let two = bench
            .two_rounds(client, &g.plain, &plain_psbt)?
            .expect_clean(SignMode::TwoRounds, &label)?;
        two_ms.push(two.ms);
        connections += two.connections;
        late.add(&two.late);
        refills += bench.top_up(client, &g.plain, &mut g.store, inputs)?;
        bench.warm(client, &g.plain)?;
        let one = bench
            .one_round(client, &g.plain, &plain_psbt, &mut g.store, false)?
            .expect_clean(SignMode::OneRound, &label)?;
        one_sessions = one_sessions.max(one.report.sessions);
        one_ms.push(one.ms);
        connections += one.connections;
        late.add(&one.late);
        bench.warm(client, &g.limited)?;
        let lim = bench
            .two_rounds(client, &g.limited, &limited_psbt)?
            .expect_clean(SignMode::WithStatements, &label)?;
        lim_ms.push(lim.ms);
        connections += lim.connections;
        late.add(&lim.late);
    }
    let row = WanRow {
        rtt,
        inputs,
        t: g.t,
        n: g.n,
        floor: Spread::of(floor),
        two: Spread::of(&two_ms),
        one: Spread::of(&one_ms),
        statements: Spread::of(&lim_ms),
        reps,
        new_connections: connections,
        late,
        one_sessions,
        refills,
    };
    log(format!(
        "{label}: floor {:.2}; two rounds {}; one round {} (at most {one_sessions} sessions, {refills} refills); with statements {}; {connections} connections opened; {}",
        row.floor.median,
        spread(&two_ms),
        spread(&one_ms),
        spread(&lim_ms),
        late.text()
    ));
    Ok(row)
}

#[allow(clippy::too_many_arguments)]
fn roast_row(
    bench: &Bench,
    client: &Client,
    meta: &WalletMeta,
    direct: &WalletMeta,
    psbt: &Psbt,
    rtt: u64,
    floor: &[f64],
    reps: usize,
    with_retry: bool,
    pids: &[String],
    checked: &mut Checked,
) -> Result<RoastRow> {
    let inputs = psbt.inputs.len();
    let label = format!("ROAST RTT {rtt} ms, {inputs} input(s), 3-of-5");
    let rtt_d = Duration::from_millis(rtt);
    bench.set_rtt(rtt_d);
    let mut store = MemoryCommitments::default();
    let hedgeable = hedge_fits(5, 3, inputs);
    // The signing and the CPU time of all six processes while it ran (a lower bound).
    // At RTT 0 the relays would only forward: ROAST goes straight to the signers there, as
    // the small rows do (the retry keeps the relays, which hold signers 4 and 5 back).
    let roast_meta = if rtt == 0 { direct } else { meta };
    let roast = |store: &mut MemoryCommitments, hedge: bool| -> Result<(Timed, Option<Vec<f64>>)> {
        bench.top_up(client, roast_meta, store, inputs)?;
        bench.warm(client, roast_meta)?;
        let (t, cpu) = common::cpu_during(pids, || {
            bench.one_round(client, roast_meta, psbt, store, hedge)
        })?;
        let r = &t.report;
        // A hedged start may complete before the invalid-share signer's answer arrives: it
        // is then not named (counted in `hedged_named`).
        ensure!(
            r.mode == SignMode::OneRound
                && (r.culprits == [INVALID] || (r.culprits.is_empty() && hedge))
                && r.signers == [3, 4, 5],
            "{label}: expected one round, culprit {INVALID}, signers 3, 4, 5; got {}, culprits {:?}, signers {:?}, skipped {:?}",
            r.mode,
            r.culprits,
            r.signers,
            r.skipped
        );
        Ok((t, cpu))
    };
    // Some(t) when the first attempt included both faulty signers.
    let retry = || -> Result<Option<Timed>> {
        bench.warm(client, meta)?;
        for r in &bench.relays[3..5] {
            r.set_rtt(rtt_d + SKEW);
        }
        let t = bench.two_rounds(client, meta, psbt);
        bench.set_rtt(rtt_d);
        let t = t?;
        let r = &t.report;
        ensure!(
            r.mode == SignMode::TwoRounds,
            "{label}: retry signed in {}",
            r.mode
        );
        let hung = r.skipped.iter().any(|(i, _)| *i == HANG);
        Ok((hung && r.culprits == [INVALID]).then_some(t))
    };
    // Warm-up.
    let (t, _) = roast(&mut store, false)?;
    checked.once(format!("roast {inputs}"), psbt, &t)?;
    if hedgeable {
        let (t, _) = roast(&mut store, true)?;
        checked.once(format!("hedged {inputs}"), psbt, &t)?;
    }
    let (mut hedged_ms, mut hedged_named, mut hedged_sessions) = (Vec::new(), 0, 0);
    if with_retry {
        if let Some(t) = &retry()? {
            checked.once(format!("retry {inputs}"), psbt, t)?;
        }
    }
    let (mut roast_connections, mut retry_connections) = (0, 0);
    let mut late = Late::default();
    let (mut roast_ms, mut retry_ms, mut misses) = (Vec::new(), Vec::new(), 0);
    let mut roast_cpu = Vec::new();
    // Per process: the coordinator (this process), then signers 1 to 5.
    let mut roast_cpu_each: Vec<Vec<f64>> = Vec::new();
    let (mut sessions, mut retry_sessions, mut named) = (0, 0, 0);
    for _ in 0..reps {
        if hedgeable {
            let (t, _) = roast(&mut store, true)?;
            hedged_sessions = hedged_sessions.max(t.report.sessions);
            hedged_named += usize::from(t.report.culprits == [INVALID]);
            hedged_ms.push(t.ms);
            late.add(&t.late);
        }
        let (t, cpu) = roast(&mut store, false)?;
        if let Some(each) = cpu {
            roast_cpu.push(each.iter().sum());
            for (k, ms) in each.into_iter().enumerate() {
                if let Some(v) = roast_cpu_each.get_mut(k) {
                    v.push(ms);
                } else {
                    roast_cpu_each.push(vec![ms]);
                }
            }
        }
        sessions = sessions.max(t.report.sessions);
        named += usize::from(t.report.culprits == [INVALID]);
        roast_ms.push(t.ms);
        roast_connections += t.connections;
        late.add(&t.late);
        if with_retry {
            loop {
                match retry()? {
                    Some(t) => {
                        checked.once(format!("retry {inputs}"), psbt, &t)?;
                        retry_sessions = retry_sessions.max(t.report.sessions);
                        retry_ms.push(t.ms);
                        retry_connections += t.connections;
                        late.add(&t.late);
                        break;
                    }
                    None => {
                        misses += 1;
                        ensure!(
                            misses <= 3 * reps,
                            "{label}: the retry's first attempt missed the faulty signers {misses} times"
                        );
                    }
                }
            }
        }
    }
    // Connections to the hanging signer are dropped each time (by the ROAST run when it
    // ends, by the retry's timeout) and opened again by the untimed preparation.
    let row = RoastRow {
        rtt,
        inputs,
        floor: Spread::of(floor),
        retry: Spread::of(&retry_ms),
        roast: Spread::of(&roast_ms),
        roast_cpu: Spread::of(&roast_cpu),
        reps,
        retry_misses: misses,
        sessions,
        named,
        hedged: hedgeable.then(|| Spread::of(&hedged_ms)),
        hedged_named,
        hedged_sessions,
        retry_sessions,
        roast_connections,
        retry_connections,
        late,
    };
    log(format!(
        "{label}: floor {:.2}; ROAST {} ({sessions} sessions, culprit named {named}/{reps}; CPU of the six processes per signing {}, medians by process: coordinator {}); hedged {} ({hedged_sessions} sessions, named {hedged_named}); retry {} ({retry_sessions} attempts, {misses} misses); connections opened: {roast_connections} by ROAST, {retry_connections} by the retries; {}",
        row.floor.median,
        spread(&roast_ms),
        spread(&roast_cpu),
        roast_cpu_each
            .iter()
            .enumerate()
            .map(|(k, v)| if k == 0 {
                format!("{:.2}", median(v))
            } else {
                format!("signer {k} {:.2}", median(v))
            })
            .collect::<Vec<_>>()
            .join(", "),
        spread(&hedged_ms),
        spread(&retry_ms),
        late.text()
    ));
    Ok(row)
}

// ---------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------

/// `psbt` with a lock time no earlier signing used: every signing signs its own transaction
/// (so nothing a signer kept from an earlier signing of the same PSBT — its check of it —
/// is reused; sessions of one signing still share it, as in real use).
fn distinct(psbt: &Psbt) -> Psbt {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let mut p = psbt.clone();
    let height = NEXT.fetch_add(1, Ordering::Relaxed);
    if let Ok(lock) = bitcoin::absolute::LockTime::from_height(height) {
        p.unsigned_tx.lock_time = lock;
    }
    p
}

fn proxied(direct: &Roster, relays: &[Relay]) -> Result<Roster> {
    let mut r = direct.clone();
    for (i, relay) in relays.iter().enumerate() {
        r.set_endpoint(u16::try_from(i + 1)?, relay.url(), None);
    }
    Ok(r)
}

fn main() -> Result<()> {
    let quick = std::env::var("CKM_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let roast_only = std::env::var("CKM_BENCH_ROAST_ONLY").is_ok_and(|v| !v.is_empty() && v != "0");
    let started = Instant::now();
    let bin = ckm_bin()?;
    faulty_bin(&bin)?;
    let machine = machine();
    log(format!(
        "emulated WAN: machine {machine}; ckm binary {}",
        bin.display()
    ));
    let dir = tempfile::Builder::new()
        .prefix("ckm-bench-wan-")
        .tempdir()?;
    let mut rng = rand::thread_rng();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    let small_only = std::env::var("CKM_BENCH_SMALL").is_ok_and(|v| !v.is_empty() && v != "0");
    let rtts: &[u64] = if small_only {
        &[]
    } else if quick {
        &[0, 50]
    } else {
        &[0, 50, 200]
    };
    let input_counts: &[usize] = if quick { &[1] } else { &[1, 100] };
    let roast_rtts: &[u64] = if small_only {
        &[0]
    } else if quick {
        &[50]
    } else {
        &[0, 50, 200]
    };
    let reps = if quick { 3 } else { 7 };
    let small_reps = if quick { 5 } else { 15 };

    // One coordinator (wallets are bound to the coordinator that created them), two
    // clients: a long timeout for the WAN rows, RETRY_TIMEOUT for ROAST and the retry.
    let key = IdentityKey::generate(&mut rand::rngs::OsRng);
    let allowed: Vec<IdentityPublic> = vec![key.public()];
    let roast_client = Client::new(key.clone(), RETRY_TIMEOUT)?;
    let client = Client::new(key, CALL_TIMEOUT)?;

    let homes: Vec<PathBuf> = (1..=5).map(|i| dir.path().join(format!("s{i}"))).collect();
    log("starting 5 signer processes…");
    let mut signers = start_signers(&bin, &homes, &allowed)?;
    let lateness = Arc::new(Lateness::default());
    let relays = signers
        .iter()
        .enumerate()
        .map(|(i, s)| Relay::start(i + 1, s.addr()?, lateness.clone()))
        .collect::<Result<Vec<_>>>()?;
    let direct = Roster::new(
        signers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Ok(RosterEntry {
                    index: u16::try_from(i + 1)?,
                    url: s.url.clone(),
                    identity: s.identity,
                    tls_sha256: None,
                })
            })
            .collect::<Result<Vec<_>>>()?,
    )?;
    let settle = Duration::from_millis(env_number("CKM_BENCH_SETTLE_MS").unwrap_or(0));
    let bench = Bench {
        rt,
        relays,
        lateness: lateness.clone(),
        settle,
    };

    // Wallets (key generation on direct connections), rosters through the relays.
    let mut groups = Vec::new();
    for (t, n) in GROUPS {
        let members = Roster::new(direct.entries()[..usize::from(n)].to_vec())?;
        let mut metas = Vec::new();
        for kind in ["wan", "lim"] {
            let name = format!("{kind}-{t}of{n}");
            let (group, _) = bench
                .rt
                .block_on(create_wallet(&client, &name, NETWORK, t, &members))
                .with_context(|| format!("key generation of {name}"))?;
            if kind == "lim" {
                for s in &signers[..usize::from(n)] {
                    set_daily_limit(&bin, &s.home, &name, HUGE_LIMIT)?;
                }
            }
            metas.push((
                wallet_meta(&name, &group, proxied(&members, &bench.relays)?),
                wallet_meta(&name, &group, members.clone()),
            ));
        }
        let (limited, direct_limited) = metas.pop().context("two wallets")?;
        let (plain, direct_plain) = metas.pop().context("two wallets")?;
        let mut psbts = BTreeMap::new();
        for &inputs in input_counts {
            psbts.insert(
                inputs,
                (
                    wallet_psbt(dir.path(), &plain, inputs, &mut rng)?,
                    wallet_psbt(dir.path(), &limited, inputs, &mut rng)?,
                ),
            );
        }
        groups.push(Group {
            t,
            n,
            plain,
            limited,
            direct_plain,
            direct_limited,
            store: MemoryCommitments::default(),
            psbts,
        });
    }

    // Floors, in the same run. A 1-input floor is a millisecond or two: 9 samples of it moved
    // its median from 1.7 to 3.5 ms between runs of the same code (3-of-5), which decided the
    // small rows' goal verdicts; 61 cost a tenth of a second.
    let mut floors = BTreeMap::new();
    for (t, n) in GROUPS {
        for &inputs in input_counts {
            let samples = if inputs == 1 { 61 } else { reps.max(9) };
            let f = floor_samples(t, n, inputs, samples, &mut rng)?;
            log(format!(
                "floor {t}-of-{n}, {inputs} input(s): {}",
                spread(&f)
            ));
            floors.insert((t, n, inputs), f);
        }
    }

    let mut checked = Checked::default();
    // Small payments: one durable commit on the signers' disk, and 1-input signings on
    // direct connections, in the same run.
    let commit = commit_samples(dir.path(), 200)?;
    log(format!(
        "one durable SQLite commit (4 KiB, WAL, synchronous=FULL) in {}: {}",
        dir.path().display(),
        spread(&commit)
    ));
    let mut small = Vec::new();
    if !roast_only {
        for g in groups.iter_mut() {
            let floor = &floors[&(g.t, g.n, 1)];
            small.push(small_row(
                &bench,
                &signers[..usize::from(g.n)],
                &client,
                g,
                floor,
                small_reps,
                &mut checked,
            )?);
        }
    }
    let mut wan = Vec::new();
    for &rtt in rtts.iter().filter(|_| !roast_only) {
        for g in groups.iter_mut() {
            for &inputs in input_counts {
                let floor = &floors[&(g.t, g.n, inputs)];
                wan.push(wan_row(
                    &bench,
                    &client,
                    g,
                    rtt,
                    inputs,
                    floor,
                    reps,
                    &mut checked,
                )?);
            }
        }
    }

    // ROAST: signers 1 and 2 of the 3-of-5 wallet turn faulty (same homes, new ports).
    for (index, fault) in [(HANG, "hang-after-commit"), (INVALID, "corrupt-share")] {
        let i = usize::from(index - 1);
        signers[i].restart_as(&bin, Serve::Faulty(fault.into()))?;
        bench.relays[i].retarget(signers[i].addr()?);
        log(format!(
            "signer {index} restarted as faulty_signer --fault {fault}"
        ));
    }
    let three_of_five = groups
        .iter()
        .find(|g| (g.t, g.n) == (3, 5))
        .context("no 3-of-5 wallet")?;
    // The same wallet with its roster straight to the signers as they run now (the faulty
    // ones on new ports): the ROAST signings at RTT 0.
    let mut direct_roast = three_of_five.direct_plain.clone();
    for s in signers.iter().take(5) {
        if let Some(index) = direct_roast.roster.index_of(&s.identity) {
            direct_roast.roster.set_endpoint(index, s.url.clone(), None);
        }
    }
    let roast_pids: Vec<String> = signers
        .iter()
        .take(5)
        .filter_map(|s| s.pid().map(|p| p.to_string()))
        .collect();
    let mut roast = Vec::new();
    let rows_filter = std::env::var("CKM_BENCH_ROAST_ROWS").unwrap_or_default();
    for &rtt in roast_rtts {
        for &inputs in input_counts {
            if !rows_filter.is_empty()
                && !rows_filter
                    .split(',')
                    .any(|r| r == format!("{rtt}:{inputs}"))
            {
                continue;
            }
            let (psbt, _) = &three_of_five.psbts[&inputs];
            roast.push(roast_row(
                &bench,
                &roast_client,
                &three_of_five.plain,
                &direct_roast,
                psbt,
                rtt,
                &floors[&(3, 5, inputs)],
                reps,
                !roast_only,
                &roast_pids,
                &mut checked,
            )?);
        }
    }
    drop(signers);
    if roast_only {
        log("CKM_BENCH_ROAST_ONLY: the report is not written");
        return Ok(());
    }

    let total = lateness.total();
    log(format!("whole run (timed or not): {}", total.text()));
    let small = small_report(&Spread::of(&commit), &small, &roast)?;
    if small_only {
        merge_report(
            &machine,
            [
                ("small", small),
                ("commit_ms", serde_json::json!(round3(median(&commit)))),
            ],
        )?;
        log(format!("total {:.1} s", started.elapsed().as_secs_f64()));
        return Ok(());
    }
    report(&machine, &wan, &roast, &total, small, median(&commit))?;
    log(format!("total {:.1} s", started.elapsed().as_secs_f64()));
    Ok(())
}

fn report(
    machine: &str,
    wan: &[WanRow],
    roast: &[RoastRow],
    total: &Late,
    small: serde_json::Value,
    commit_ms: f64,
) -> Result<()> {
    let mut out = String::new();
    out.push_str(&format!(
        "\nckm over an emulated WAN — {machine}\n\nMedian ms (min–max); goal one round ≤ 1.2 × (RTT + floor)\n\n"
    ));
    out.push_str("| RTT ms | inputs | t-of-n | floor | two rounds | one round | with statements | one round / (RTT + floor) | two rounds / (2 RTT + floor) | new connections | relay late max µs |\n");
    out.push_str("|---:|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in wan {
        let rtt = r.rtt as f64;
        out.push_str(&format!(
            "| {} | {} | {}-of-{} | {:.2} | {} | {} | {} | {:.2} | {:.2} | {} | {} |\n",
            r.rtt,
            r.inputs,
            r.t,
            r.n,
            r.floor.median,
            r.two.cell(),
            r.one.cell(),
            r.statements.cell(),
            r.one.median / (rtt + r.floor.median),
            r.two.median / (2.0 * rtt + r.floor.median),
            r.new_connections,
            r.late.max_us,
        ));
    }
    out.push_str(&format!(
        "\nROAST vs retry, 3-of-5, signer 1 hangs after round 1, signer 2 sends an invalid share; client timeout {} ms; median ms (min–max); goal ROAST ≤ 2 × RTT + floor\n\n",
        RETRY_TIMEOUT.as_millis()
    ));
    out.push_str("| RTT ms | inputs | floor | retry (two rounds) | ROAST (one round) | ROAST / (2 RTT + floor) | ROAST sessions | culprit named | hedged ROAST | hedged / (2 RTT + floor) | hedged culprit named | retry attempts | retry misses | new connections ROAST / retry | relay late max µs |\n");
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in roast {
        let (hedged, hedged_ratio, hedged_named) = match &r.hedged {
            Some(h) => (
                h.cell(),
                format!("{:.2}", h.median / (2.0 * r.rtt as f64 + r.floor.median)),
                format!("{}/{}", r.hedged_named, r.reps),
            ),
            None => ("–".into(), "–".into(), "–".into()),
        };
        out.push_str(&format!(
            "| {} | {} | {:.2} | {} | {} | {:.2} | {} | {}/{} | {} | {} | {} | {} | {} | {} / {} | {} |\n",
            r.rtt,
            r.inputs,
            r.floor.median,
            r.retry.cell(),
            r.roast.cell(),
            r.roast.median / (2.0 * r.rtt as f64 + r.floor.median),
            r.sessions,
            r.named,
            r.reps,
            hedged,
            hedged_ratio,
            hedged_named,
            r.retry_sessions,
            r.retry_misses,
            r.roast_connections,
            r.retry_connections,
            r.late.max_us
        ));
    }
    out.push_str(&format!(
        "\n(relay, whole run: {}; the last column is the latest chunk during the timed signings of the row)\n",
        total.text()
    ));
    print!("{out}");
    std::io::stdout().flush()?;

    let wan_json: Vec<serde_json::Value> = wan
        .iter()
        .map(|r| {
            let rtt = r.rtt as f64;
            serde_json::json!({
                "rtt_ms": r.rtt,
                "inputs": r.inputs,
                "threshold": r.t,
                "signers": r.n,
                "floor_ms": round3(r.floor.median),
                "two_round_ms": round3(r.two.median),
                "one_round_ms": round3(r.one.median),
                "with_statements_ms": round3(r.statements.median),
                "two_round_min_ms": round3(r.two.min),
                "two_round_max_ms": round3(r.two.max),
                "one_round_min_ms": round3(r.one.min),
                "one_round_max_ms": round3(r.one.max),
                "with_statements_min_ms": round3(r.statements.min),
                "with_statements_max_ms": round3(r.statements.max),
                "one_round_over_rtt_plus_floor": round3(r.one.median / (rtt + r.floor.median)),
                "one_round_max_sessions": r.one_sessions,
                "one_round_refills": r.refills,
                "repetitions": r.reps,
                "new_connections": r.new_connections,
                "relay_late_mean_us": round3(r.late.mean_us),
                "relay_late_max_us": r.late.max_us,
            })
        })
        .collect();
    let roast_json: Vec<serde_json::Value> = roast
        .iter()
        .map(|r| {
            serde_json::json!({
                "rtt_ms": r.rtt,
                "inputs": r.inputs,
                "threshold": 3,
                "signers": 5,
                "faulty": ["hang", "invalid"],
                "floor_ms": round3(r.floor.median),
                "retry_ms": round3(r.retry.median),
                "roast_ms": round3(r.roast.median),
                "retry_min_ms": round3(r.retry.min),
                "retry_max_ms": round3(r.retry.max),
                "roast_min_ms": round3(r.roast.min),
                "roast_max_ms": round3(r.roast.max),
                "roast_over_2rtt_plus_floor": round3(r.roast.median / (2.0 * r.rtt as f64 + r.floor.median)),
                "roast_sessions": r.sessions,
                "roast_named": r.named,
                "hedged_ms": r.hedged.as_ref().map(|h| round3(h.median)),
                "hedged_min_ms": r.hedged.as_ref().map(|h| round3(h.min)),
                "hedged_max_ms": r.hedged.as_ref().map(|h| round3(h.max)),
                "hedged_over_2rtt_plus_floor": r.hedged.as_ref().map(|h| round3(h.median / (2.0 * r.rtt as f64 + r.floor.median))),
                "hedged_named": r.hedged.as_ref().map(|_| r.hedged_named),
                "hedged_sessions": r.hedged.as_ref().map(|_| r.hedged_sessions),
                "retry_sessions": r.retry_sessions,
                "retry_timeout_ms": RETRY_TIMEOUT.as_millis() as u64,
                "skew_ms": SKEW.as_millis() as u64,
                "retry_misses": r.retry_misses,
                "repetitions": r.reps,
                "roast_new_connections": r.roast_connections,
                "retry_new_connections": r.retry_connections,
                "relay_late_mean_us": round3(r.late.mean_us),
                "relay_late_max_us": r.late.max_us,
            })
        })
        .collect();

    merge_report(
        machine,
        [
            ("wan", serde_json::Value::Array(wan_json)),
            ("roast", serde_json::Value::Array(roast_json)),
            ("small", small),
            ("commit_ms", serde_json::json!(round3(commit_ms))),
        ],
    )
}

/// Adds `keys` to `target/bench/report.json` (created when absent).
fn merge_report<const N: usize>(machine: &str, keys: [(&str, serde_json::Value); N]) -> Result<()> {
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("report.json");
    let mut json = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .with_context(|| format!("{} is not JSON", path.display()))?,
        Err(_) => serde_json::json!({ "machine": machine }),
    };
    let obj = json
        .as_object_mut()
        .with_context(|| format!("{} is not a JSON object", path.display()))?;
    let names: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
    for (k, v) in keys {
        obj.insert(k.into(), v);
    }
    write_atomic(&path, &serde_json::to_vec_pretty(&json)?)?;
    log(format!("added {names:?} to {}", path.display()));
    Ok(())
}

/// One small-payment row: 1 input, direct connections (no relay), the three kinds
/// interleaved.
struct SmallRow {
    t: u16,
    n: u16,
    floor: Spread,
    one: Spread,
    /// CPU time of the coordinator and the group's signers per one-round signing (ms; live
    /// threads only, so a lower bound: [`common::cpu_during`]).
    one_cpu: Spread,
    two: Spread,
    statements: Spread,
    /// The signers' own mean time per one-round request (their `/metrics`: from the request
    /// read to the answer built, decision commit included), ms.
    signer_ms: f64,
    /// CPU time of the bench process and the group's signers per repetition (one signing of
    /// each kind, the commitment top-up and warm-up calls included), ms.
    cpu_ms: f64,
    /// One-round signings that started a second session (ROAST, when an answer was later
    /// than the session's patience), of `reps`.
    second_sessions: usize,
    reps: usize,
}

/// Sum (seconds) and count of the one-round requests `signers` have handled, read off their
/// `/metrics` (the histogram `ckm_signing_round_seconds{round="one-round"}`).
fn one_round_handling(signers: &[SignerProc]) -> Result<(f64, f64)> {
    let (mut sum, mut count) = (0.0, 0.0);
    for signer in signers {
        let deadline = Instant::now() + Duration::from_secs(10);
        let url = loop {
            let printed = signer
                .metrics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(url) = printed {
                break url;
            }
            ensure!(
                Instant::now() < deadline,
                "signer {} printed no metrics address",
                signer.home.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let url = reqwest::Url::parse(&url)?;
        let host = url.host_str().context("metrics URL without host")?;
        let port = url.port().context("metrics URL without port")?;
        let mut stream = TcpStream::connect((host, port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET /metrics HTTP/1.0\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        for line in text.lines() {
            let value = |prefix: &str| {
                line.strip_prefix(prefix)
                    .and_then(|v| v.trim().parse::<f64>().ok())
            };
            if let Some(v) = value("ckm_signing_round_seconds_sum{round=\"one-round\"}") {
                sum += v;
            } else if let Some(v) = value("ckm_signing_round_seconds_count{round=\"one-round\"}") {
                count += v;
            }
        }
    }
    Ok((sum, count))
}

fn small_row(
    bench: &Bench,
    signers: &[SignerProc],
    client: &Client,
    g: &mut Group,
    floor: &[f64],
    reps: usize,
    checked: &mut Checked,
) -> Result<SmallRow> {
    let (plain_psbt, limited_psbt) = g.psbts.get(&1).cloned().context("no 1-input PSBT")?;
    let label = format!("small, 1 input, {}-of-{}", g.t, g.n);
    bench.set_rtt(Duration::ZERO);
    // Warm-up (untimed).
    let two = bench
        .two_rounds(client, &g.direct_plain, &plain_psbt)?
        .expect_clean(SignMode::TwoRounds, &label)?;
    checked.once(format!("two rounds {label}"), &plain_psbt, &two)?;
    bench.top_up(client, &g.direct_plain, &mut g.store, 1)?;
    let one = bench
        .one_round(client, &g.direct_plain, &plain_psbt, &mut g.store, false)?
        .expect_clean(SignMode::OneRound, &label)?;
    checked.once(format!("one round {label}"), &plain_psbt, &one)?;
    bench
        .two_rounds(client, &g.direct_limited, &limited_psbt)?
        .expect_clean(SignMode::WithStatements, &label)?;
    let (mut one_ms, mut two_ms, mut lim_ms) = (Vec::new(), Vec::new(), Vec::new());
    let (mut handled_s, mut handled) = (0.0, 0.0);
    let mut second_sessions = 0;
    let signer_pids: Vec<String> = signers
        .iter()
        .filter_map(|s| s.pid().map(|p| p.to_string()))
        .collect();
    let (mut one_cpu, mut one_cpu_coordinator) = (Vec::new(), Vec::new());
    let mut pids = signer_pids.clone();
    pids.push("self".into());
    let cpu_now = || -> Option<f64> { pids.iter().map(|p| cpu_ms(p)).sum() };
    let cpu_before = cpu_now();
    for _ in 0..reps {
        bench.top_up(client, &g.direct_plain, &mut g.store, 1)?;
        bench.warm(client, &g.direct_plain)?;
        let before = one_round_handling(signers)?;
        let (one, cpu) = common::cpu_during(&signer_pids, || {
            bench.one_round(client, &g.direct_plain, &plain_psbt, &mut g.store, false)
        })?;
        let one = one.expect_clean(SignMode::OneRound, &label)?;
        if let Some(each) = cpu {
            one_cpu.push(each.iter().sum::<f64>());
            one_cpu_coordinator.push(each.first().copied().unwrap_or(0.0));
        }
        let after = one_round_handling(signers)?;
        handled_s += after.0 - before.0;
        handled += after.1 - before.1;
        if one.report.sessions > 1 {
            second_sessions += 1;
        }
        one_ms.push(one.ms);
        bench.warm(client, &g.direct_plain)?;
        let two = bench
            .two_rounds(client, &g.direct_plain, &plain_psbt)?
            .expect_clean(SignMode::TwoRounds, &label)?;
        two_ms.push(two.ms);
        bench.warm(client, &g.direct_limited)?;
        let lim = bench
            .two_rounds(client, &g.direct_limited, &limited_psbt)?
            .expect_clean(SignMode::WithStatements, &label)?;
        lim_ms.push(lim.ms);
    }
    ensure!(
        handled >= 1.0,
        "{label}: the signers' metrics counted no one-round request"
    );
    let signer_ms = 1000.0 * handled_s / handled;
    let cpu_ms = cpu_before
        .zip(cpu_now())
        .map(|(a, b)| (b - a) / reps as f64)
        .context("cannot read the processes' CPU time from /proc")?;
    log(format!(
        "{label}: one round {}; two rounds {}; with statements {}; a signer's own handling of a one-round request {signer_ms:.2} ms on average ({handled} requests); CPU of all processes per repetition of the three {cpu_ms:.1} ms; CPU of all processes per one-round signing {} (the coordinator's {:.2} ms); one-round signings with a second session {second_sessions}/{reps}",
        spread(&one_ms),
        spread(&two_ms),
        spread(&lim_ms),
        spread(&one_cpu),
        median(&one_cpu_coordinator)
    ));
    Ok(SmallRow {
        t: g.t,
        n: g.n,
        floor: Spread::of(floor),
        one: Spread::of(&one_ms),
        one_cpu: Spread::of(&one_cpu),
        two: Spread::of(&two_ms),
        statements: Spread::of(&lim_ms),
        signer_ms,
        cpu_ms,
        second_sessions,
        reps,
    })
}

/// The small-payment table (printed) and its JSON: for each kind, network − floor and its
/// ratio to one durable commit, against the goal network − floor ≤ 1.5 × commit + 1 ms; the
/// ROAST rows at RTT 0 against floor + 2 × commit + 1 ms (1 input) and 1.15 × floor (100).
fn small_report(
    commit: &Spread,
    rows: &[SmallRow],
    roast: &[RoastRow],
) -> Result<serde_json::Value> {
    let c = commit.median;
    let goal = 1.5 * c + 1.0;
    // No schedule can end a signing sooner than its processes' CPU time spread evenly over
    // the machine's cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut out = format!(
        "\nSmall payments, 1 input, direct loopback: one durable commit (commit_ms) {} ms; goal network − floor ≤ 1.5 × commit_ms + 1 = {goal:.2} ms\n\n",
        commit.cell()
    );
    out.push_str("| t-of-n | floor | kind | network | network − floor | (network − floor) / commit_ms | goal met |\n|:---:|---:|:---|---:|---:|---:|:---:|\n");
    let mut json_rows = Vec::new();
    for r in rows {
        for (kind, s) in [
            ("one round", &r.one),
            ("two rounds", &r.two),
            ("with statements", &r.statements),
        ] {
            let over = s.median - r.floor.median;
            out.push_str(&format!(
                "| {}-of-{} | {:.2} | {kind} | {} | {over:.2} | {:.2} | {} |\n",
                r.t,
                r.n,
                r.floor.median,
                s.cell(),
                over / c,
                if over <= goal { "yes" } else { "no" }
            ));
            json_rows.push(serde_json::json!({
                "threshold": r.t,
                "signers": r.n,
                "inputs": 1,
                "kind": kind,
                "floor_ms": round3(r.floor.median),
                "network_ms": round3(s.median),
                "network_min_ms": round3(s.min),
                "network_max_ms": round3(s.max),
                "network_minus_floor_ms": round3(over),
                "over_commit_ms": round3(over / c),
                "goal_ms": round3(goal),
                "goal_met": over <= goal,
            }));
        }
    }
    out.push_str(&format!("\nOne round, where the time goes: a signer's own handling of its request (its metrics: request read to answer built, the decision's durable commit included; signers work in parallel), and the rest (the coordinator's work before and after, HTTP on both sides, scheduling of the processes on the machine's cores)\n\n| t-of-n | network | floor | a signer's handling (mean) | rest | CPU per repetition of the three kinds, all processes | CPU per one-round signing, all processes (live threads) | that CPU over {cores} cores: the least wall time any schedule allows | goal for network (floor + goal) | one-round signings with a second session |\n|:---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"));
    for r in rows {
        out.push_str(&format!(
            "| {}-of-{} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} | {}/{} |\n",
            r.t,
            r.n,
            r.one.median,
            r.floor.median,
            r.signer_ms,
            r.one.median - r.signer_ms,
            r.cpu_ms,
            r.one_cpu.median,
            r.one_cpu.median / cores,
            r.floor.median + goal,
            r.second_sessions,
            r.reps
        ));
        json_rows.push(serde_json::json!({
            "threshold": r.t,
            "signers": r.n,
            "inputs": 1,
            "kind": "one round, a signer's handling",
            "signer_handling_ms": round3(r.signer_ms),
            "cpu_per_repetition_ms": round3(r.cpu_ms),
            "cpu_per_one_round_signing_ms": round3(r.one_cpu.median),
            "cpu_per_one_round_signing_over_cores_ms": round3(r.one_cpu.median / cores),
            "second_sessions": r.second_sessions,
            "repetitions": r.reps,
        }));
    }
    let mut roast_json = Vec::new();
    for r in roast.iter().filter(|r| r.rtt == 0) {
        let (bound, what) = if r.inputs == 1 {
            (r.floor.median + 2.0 * c + 1.0, "floor + 2 × commit_ms + 1")
        } else {
            (1.15 * r.floor.median, "1.15 × floor")
        };
        out.push_str(&format!(
            "ROAST 3-of-5 at RTT 0, {} input(s), one hanging and one invalid signer: {} ms; goal ≤ {what} = {bound:.2} ms: {}; CPU of the six processes per signing {} ms (live threads), over {cores} cores at least {:.2} ms\n",
            r.inputs,
            r.roast.cell(),
            if r.roast.median <= bound { "met" } else { "not met" },
            r.roast_cpu.cell(),
            r.roast_cpu.median / cores
        ));
        roast_json.push(serde_json::json!({
            "inputs": r.inputs,
            "floor_ms": round3(r.floor.median),
            "roast_ms": round3(r.roast.median),
            "goal_ms": round3(bound),
            "goal": what,
            "goal_met": r.roast.median <= bound,
            "cpu_per_signing_ms": round3(r.roast_cpu.median),
            "cpu_per_signing_over_cores_ms": round3(r.roast_cpu.median / cores),
        }));
    }
    print!("{out}");
    std::io::stdout().flush()?;
    Ok(serde_json::json!({
        "commit_ms": round3(c),
        "commit_min_ms": round3(commit.min),
        "commit_max_ms": round3(commit.max),
        "rows": json_rows,
        "roast_rtt0": roast_json,
    }))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
