//! Flood-proof transport, tested from the attacker's side against real `ckm signer serve`
//! processes, and the coordinator client's refusals against hostile servers.
//!
//! 1. The signed header is checked before any byte of the body: a request head announcing
//!    a 15 MiB body, with no signature, an unknown coordinator, a forged signature under an
//!    allowed coordinator's (public) key or an expired timestamp, is answered 401 and the
//!    connection closed without the body ever being sent; an allowed coordinator announcing
//!    more than `MAX_BODY` gets a signed 413, also without sending it.
//! 2. A flood of unauthenticated 15 MiB bodies from 48 concurrent connections plus 300
//!    slowloris connections (more than the default cap of 256) against a signer with the
//!    default limits: the signer's resident memory (VmRSS, sampled every 100 ms) never grows
//!    by more than [`RSS_GROWTH_BOUND_MIB`] over its value before the flood, and an
//!    authenticated Status request every second is answered throughout.
//! 3. One coordinator withholding its bodies fills only its own in-flight slots: its next
//!    request is answered "busy" (signed 503) while another coordinator is served.
//! 4. The coordinator's client does not follow redirects, refuses an answer larger than
//!    `MAX_BODY` (announced or streamed), and refuses to send a request larger than a signer
//!    accepts, naming the fix.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ckm::auth::{unix_now, RequestAuth};
use ckm::identity::{IdentityKey, IdentityPublic};
use ckm::message::{self, CoordinatorToSigner, SessionId, SignerToCoordinator};
use ckm::net::client::{CallError, Client};
use ckm::net::{signed_path, AUTH_HEADER, MAX_BODY, MESSAGE_PATH};
use ckm::wallet::RosterEntry;
use cluster::*;

/// Largest growth of the flooded signer's VmRSS over its value before the flood.
///
/// The design bound for unauthenticated traffic is `max_connections` (256) × (a 64 KiB read
/// buffer + per-connection state): about 20 MiB. Bodies are never read. Before the header
/// was checked first, 40 such bodies took a signer to about 370 MiB.
const RSS_GROWTH_BOUND_MIB: u64 = 48;
const FLOODERS: usize = 48;
const SLOWLORIS: usize = 300;
const FLOOD: Duration = Duration::from_secs(25);
const ATTACK_BODY: usize = 15 * 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn vm_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .context("no VmRSS in /proc/PID/status")
}

fn entry(url: &str, identity: IdentityPublic) -> Result<RosterEntry> {
    // Built through serde so that optional fields (added later) take their defaults.
    Ok(serde_json::from_value(serde_json::json!({
        "index": 1,
        "url": url,
        "identity": identity.to_string(),
    }))?)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn addr_of(url: &str) -> Result<String> {
    url.strip_prefix("http://")
        .map(str::to_string)
        .with_context(|| format!("no address in {url}"))
}

/// A request head for the signer's endpoint announcing `length` bytes of body.
fn head(auth: Option<&str>, length: usize) -> String {
    let mut h = format!(
        "POST {MESSAGE_PATH} HTTP/1.1\r\nhost: signer\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\n"
    );
    if let Some(a) = auth {
        h.push_str(&format!("{AUTH_HEADER}: {a}\r\n"));
    }
    h.push_str("\r\n");
    h
}

/// Sends only `head` (no body), reads the whole answer until the signer closes the
/// connection; returns (status, answer text).
fn head_only(addr: &str, head: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(head.as_bytes())?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .context("the signer neither answered nor closed the connection")?;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP answer: {text:?}"))?;
    Ok((status, text))
}

/// A header signed by `key` for `signer` over `body`, at `now`.
fn signed_header(key: &IdentityKey, signer: &IdentityPublic, body: &[u8], now: u64) -> String {
    RequestAuth::sign(
        key,
        "POST",
        &signed_path(signer),
        body,
        now,
        &mut rand::rngs::OsRng,
    )
    .to_header_value()
}

/// A well-formed header naming `claimed` but signed by someone else.
fn forged_header(claimed: &IdentityPublic, signer: &IdentityPublic) -> String {
    let stranger = IdentityKey::generate(&mut rand::rngs::OsRng);
    let mut auth = RequestAuth::sign(
        &stranger,
        "POST",
        &signed_path(signer),
        b"",
        unix_now(),
        &mut rand::rngs::OsRng,
    );
    auth.coordinator = *claimed;
    auth.to_header_value()
}

// ---------------------------------------------------------------------------------------
// 1. Header before body
// ---------------------------------------------------------------------------------------

#[test]
fn the_body_is_not_read_before_the_header_is_checked() -> Result<()> {
    let c = Cluster::start(1)?;
    let s = &c.signers[0];
    let addr = addr_of(&s.url)?;
    let key = c.coordinator_key()?;
    let stranger = IdentityKey::generate(&mut rand::rngs::OsRng);
    let status = message::encode(&CoordinatorToSigner::Status);
    let cases = [
        ("no signature", None),
        (
            "unknown coordinator",
            Some(signed_header(&stranger, &s.identity, &status, unix_now())),
        ),
        (
            "forged signature under the allowed key",
            Some(forged_header(&key.public(), &s.identity)),
        ),
        (
            "expired timestamp",
            Some(signed_header(&key, &s.identity, &status, unix_now() - 3600)),
        ),
        (
            "header of another signer",
            Some(signed_header(&key, &stranger.public(), &status, unix_now())),
        ),
    ];
    for (what, auth) in &cases {
        // The head announces 15 MiB; no byte of it is ever sent.
        let (code, text) = head_only(&addr, &head(auth.as_deref(), ATTACK_BODY))?;
        ensure!(code == 401, "{what}: expected 401, got {text}");
        ensure!(text.contains("unauthorized"), "{what}: {text}");
    }
    // An allowed coordinator announcing more than MAX_BODY: a signed 413, body unsent.
    let auth = signed_header(&key, &s.identity, &status, unix_now());
    let (code, text) = head_only(&addr, &head(Some(&auth), MAX_BODY + 1))?;
    ensure!(code == 413, "oversized: expected 413, got {text}");
    ensure!(
        text.contains("x-ckm-signer-signature"),
        "413 not signed: {text}"
    );
    ensure!(text.contains(&format!("{MAX_BODY} bytes")), "{text}");
    // The signer is still fine.
    ensure!(matches!(c.status(0)?, SignerToCoordinator::Status { .. }));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. The flood
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Counters {
    attack_connections: AtomicU64,
    attack_bytes: AtomicU64,
    slowloris_connections: AtomicU64,
    slowloris_closed_by_signer: AtomicU64,
}

/// Sends 15 MiB bodies on fresh connections until `stop`, in one of four styles.
fn flooder(
    addr: String,
    style: usize,
    allowed: IdentityPublic,
    signer: IdentityPublic,
    stop: Arc<AtomicBool>,
    n: Arc<Counters>,
) {
    let chunk = vec![b'A'; 64 * 1024];
    let stranger = IdentityKey::generate(&mut rand::rngs::OsRng);
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(&addr) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        n.attack_connections.fetch_add(1, Ordering::Relaxed);
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let request_head = match style {
            0 => head(None, ATTACK_BODY),
            1 => head(Some(&forged_header(&allowed, &signer)), ATTACK_BODY),
            2 => head(
                Some(&signed_header(&stranger, &signer, b"x", unix_now())),
                ATTACK_BODY,
            ),
            _ => format!(
                "POST {MESSAGE_PATH} HTTP/1.1\r\nhost: signer\r\ntransfer-encoding: chunked\r\n\r\n"
            ),
        };
        if s.write_all(request_head.as_bytes()).is_err() {
            continue;
        }
        let mut sent = 0;
        while sent < ATTACK_BODY && !stop.load(Ordering::Relaxed) {
            let ok = if style == 3 {
                s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .and_then(|()| s.write_all(&chunk))
                    .and_then(|()| s.write_all(b"\r\n"))
                    .is_ok()
            } else {
                s.write_all(&chunk).is_ok()
            };
            if !ok {
                break;
            }
            sent += chunk.len();
            n.attack_bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    }
}

/// Holds a connection open without completing a request header (silent, or one byte every
/// 500 ms), reconnecting whenever the signer closes it, until `stop`.
fn slowloris(addr: String, trickle: bool, stop: Arc<AtomicBool>, n: Arc<Counters>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(&addr) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        n.slowloris_connections.fetch_add(1, Ordering::Relaxed);
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if trickle
            && s.write_all(b"POST /v1/message HTTP/1.1\r\nx-slow: ")
                .is_err()
        {
            continue;
        }
        let mut buf = [0u8; 1024];
        loop {
            if stop.load(Ordering::Relaxed) {
                let _ = s.shutdown(Shutdown::Both);
                return;
            }
            match s.read(&mut buf) {
                // Closed by the signer.
                Ok(0) => {
                    n.slowloris_closed_by_signer.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => {
                    n.slowloris_closed_by_signer.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            if trickle && s.write_all(b"a").is_err() {
                n.slowloris_closed_by_signer.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
}

#[test]
fn unauthenticated_flood_keeps_memory_bounded_and_honest_requests_served() -> Result<()> {
    let c = Cluster::start(1)?;
    let s = &c.signers[0];
    let pid = s.pid().context("signer not running")?;
    let addr = addr_of(&s.url)?;
    let key = c.coordinator_key()?;
    let allowed = key.public();
    let honest = Client::new(key, Duration::from_secs(60))?;
    let target = entry(&s.url, s.identity)?;
    let rt = runtime()?;
    let status = |rt: &tokio::runtime::Runtime| -> Result<Duration> {
        let start = Instant::now();
        match rt.block_on(honest.call(&target, &CoordinatorToSigner::Status))? {
            SignerToCoordinator::Status { identity, .. } if identity == s.identity => {
                Ok(start.elapsed())
            }
            other => bail!("Status answered {other:?}"),
        }
    };
    // Warm up, then take the baseline.
    status(&rt)?;
    std::thread::sleep(Duration::from_millis(500));
    let before = vm_rss_kib(pid)?;

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let mut threads = Vec::new();
    for i in 0..FLOODERS {
        let (addr, stop, n) = (addr.clone(), stop.clone(), counters.clone());
        let signer = s.identity;
        threads.push(std::thread::spawn(move || {
            flooder(addr, i % 4, allowed, signer, stop, n)
        }));
    }
    for i in 0..SLOWLORIS {
        let (addr, stop, n) = (addr.clone(), stop.clone(), counters.clone());
        threads.push(std::thread::spawn(move || {
            slowloris(addr, i % 2 == 1, stop, n)
        }));
    }
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<u64> {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(vm_rss_kib(pid)?);
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(peak)
        })
    };

    // Honest requests during the flood, one a second.
    let start = Instant::now();
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    while start.elapsed() < FLOOD {
        match status(&rt) {
            Ok(d) => latencies.push(d),
            Err(e) => failures.push(format!("{e:#}")),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().expect("sampler panicked")?;
    for t in threads {
        let _ = t.join();
    }
    let after = vm_rss_kib(pid)?;
    let n = &counters;
    let mib = |kib: u64| kib as f64 / 1024.0;
    eprintln!(
        "flood: {} attack connections, {:.0} MiB of attack body sent, {} slowloris \
         connections ({} closed by the signer); signer VmRSS {:.1} MiB before, peak {:.1} MiB, \
         {:.1} MiB after; {} honest requests, slowest {:?}, failures {:?}",
        n.attack_connections.load(Ordering::Relaxed),
        n.attack_bytes.load(Ordering::Relaxed) as f64 / 1048576.0,
        n.slowloris_connections.load(Ordering::Relaxed),
        n.slowloris_closed_by_signer.load(Ordering::Relaxed),
        mib(before),
        mib(peak),
        mib(after),
        latencies.len(),
        latencies.iter().max(),
        failures
    );
    ensure!(
        failures.is_empty(),
        "honest requests failed during the flood: {failures:?}\n{}",
        c.logs()
    );
    ensure!(
        latencies.len() >= 10,
        "only {} honest requests",
        latencies.len()
    );
    // The flood was real: every flooder got through several times, offering far more body
    // than the bound (the numbers vary with the machine's load).
    let (conns, bytes) = (
        n.attack_connections.load(Ordering::Relaxed),
        n.attack_bytes.load(Ordering::Relaxed),
    );
    ensure!(
        conns >= 2 * FLOODERS as u64,
        "only {conns} attack connections"
    );
    ensure!(
        bytes >= 10 * RSS_GROWTH_BOUND_MIB * 1024 * 1024,
        "only {bytes} bytes of attack body"
    );
    ensure!(n.slowloris_connections.load(Ordering::Relaxed) >= SLOWLORIS as u64);
    // Accepted slowloris connections were closed by the header timeout.
    let closed = n.slowloris_closed_by_signer.load(Ordering::Relaxed);
    ensure!(closed >= 100, "only {closed} slowloris connections closed");
    ensure!(
        peak <= before + RSS_GROWTH_BOUND_MIB * 1024,
        "VmRSS grew from {:.1} MiB to {:.1} MiB during the flood (bound: +{RSS_GROWTH_BOUND_MIB} MiB)",
        mib(before),
        mib(peak)
    );
    // And it still answers afterwards.
    status(&rt)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. In-flight slots per coordinator
// ---------------------------------------------------------------------------------------

#[test]
fn withheld_bodies_fill_only_their_coordinators_slots() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coord = dir.path().join("coord");
    let coord_id = json_str(&ckm_json(&coord, &["id"])?, "identity")?.to_string();
    let homes = init_all(dir.path(), 1)?;
    let other = IdentityKey::generate(&mut rand::rngs::OsRng);
    let other_id = other.public().to_string();
    let s = SignerProc::start_with(
        &homes[0],
        &coord_id,
        &[
            "--allow-coordinator",
            &other_id,
            "--max-in-flight",
            "4",
            "--max-in-flight-per-coordinator",
            "2",
            "--queue-timeout",
            "2",
        ],
    )?;
    let addr = addr_of(&s.url)?;
    let key = {
        let text = std::fs::read_to_string(coord.join("identity.key"))?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes)?;
        IdentityKey::from_secret_bytes(&bytes)?
    };
    let body = message::encode(&CoordinatorToSigner::Status);
    // Two requests of the coordinator whose bodies never come: both slots taken.
    let mut withheld = Vec::new();
    for _ in 0..2 {
        let mut conn = TcpStream::connect(&addr)?;
        let auth = signed_header(&key, &s.identity, &body, unix_now());
        conn.write_all(head(Some(&auth), body.len()).as_bytes())?;
        withheld.push(conn);
    }
    std::thread::sleep(Duration::from_millis(500));
    let rt = runtime()?;
    let target = entry(&s.url, s.identity)?;
    // Its third request waits for a slot, then is answered busy.
    let first = Client::new(key, Duration::from_secs(30))?;
    let started = Instant::now();
    match rt.block_on(first.call(&target, &CoordinatorToSigner::Status)) {
        Err(CallError::Refused { message, .. }) if message.contains("busy") => {}
        other => bail!("expected a busy refusal, got {other:?}\n{}", s.log_text()),
    }
    ensure!(
        started.elapsed() >= Duration::from_secs(2),
        "answered busy before the queue timeout"
    );
    // Another coordinator is served meanwhile.
    let second = Client::new(other, Duration::from_secs(30))?;
    ensure!(matches!(
        rt.block_on(second.call(&target, &CoordinatorToSigner::Status))?,
        SignerToCoordinator::Status { .. }
    ));
    // Sending a withheld body completes that request.
    let mut conn = withheld.remove(0);
    conn.write_all(&body)?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut answer = [0u8; 12];
    conn.read_exact(&mut answer)?;
    ensure!(
        &answer == b"HTTP/1.1 200",
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // With a slot free again, the first coordinator is served.
    drop(withheld);
    ensure!(matches!(
        rt.block_on(first.call(&target, &CoordinatorToSigner::Status))?,
        SignerToCoordinator::Status { .. }
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 4. The client against hostile servers
// ---------------------------------------------------------------------------------------

/// A one-thread HTTP server answering every connection with `answer(stream)` after
/// reading the request head and body; counts connections.
struct Hostile {
    addr: String,
    connections: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

fn hostile(answer: impl Fn(&mut TcpStream, &AtomicU64) + Send + 'static) -> Result<Hostile> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    let connections = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let (c, w) = (connections.clone(), written.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            c.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            if read_request(&mut stream).is_ok() {
                answer(&mut stream, &w);
            }
        }
    });
    Ok(Hostile {
        addr,
        connections,
        written,
    })
}

/// Reads a request head and its Content-Length body.
fn read_request(s: &mut TcpStream) -> std::io::Result<()> {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte)?;
        data.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&data).to_ascii_lowercase();
    let length: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    s.read_exact(&mut body)
}

fn call(
    url: &str,
    message: &CoordinatorToSigner,
) -> Result<Result<SignerToCoordinator, CallError>> {
    let client = Client::new(
        IdentityKey::generate(&mut rand::rngs::OsRng),
        Duration::from_secs(30),
    )?;
    let signer = IdentityKey::generate(&mut rand::rngs::OsRng).public();
    let target = entry(url, signer)?;
    Ok(runtime()?.block_on(client.call(&target, message)))
}

#[test]
fn client_does_not_follow_redirects() -> Result<()> {
    // Where a redirect points: must never be contacted.
    let elsewhere = hostile(|s, _| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    })?;
    for status in [301, 302, 303, 307, 308] {
        let location = format!("http://{}{MESSAGE_PATH}", elsewhere.addr);
        let redirecting = hostile(move |s, _| {
            let _ = s.write_all(
                format!(
                    "HTTP/1.1 {status} Moved\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n"
                )
                .as_bytes(),
            );
        })?;
        let result = call(
            &format!("http://{}", redirecting.addr),
            &CoordinatorToSigner::Status,
        )?;
        match &result {
            Err(
                e @ CallError::Redirected {
                    status: got,
                    location: Some(l),
                    ..
                },
            ) if *got == status && l.contains(&elsewhere.addr) => {
                let text = e.to_string();
                ensure!(text.contains("does not follow redirects"), "{text}");
            }
            other => bail!("HTTP {status}: expected a refused redirect, got {other:?}"),
        }
        ensure!(redirecting.connections.load(Ordering::SeqCst) == 1);
    }
    ensure!(
        elsewhere.connections.load(Ordering::SeqCst) == 0,
        "the client followed a redirect"
    );
    Ok(())
}

#[test]
fn client_refuses_oversized_answers() -> Result<()> {
    // Announced: a Content-Length above the limit is refused without reading.
    let announced = hostile(|s, _| {
        let _ = s.write_all(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                64 * MAX_BODY
            )
            .as_bytes(),
        );
        let _ = s.write_all(&[b'{'; 4096]);
    })?;
    // Streamed: a chunked body that never ends (up to 64 × the limit).
    let streamed = hostile(|s, written| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..(64 * MAX_BODY / chunk.len()) {
            let ok = s
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .and_then(|()| s.write_all(&chunk))
                .and_then(|()| s.write_all(b"\r\n"))
                .is_ok();
            if !ok {
                return;
            }
            written.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
    })?;
    for (what, server) in [("announced", &announced), ("streamed", &streamed)] {
        let result = call(
            &format!("http://{}", server.addr),
            &CoordinatorToSigner::Status,
        )?;
        match &result {
            Err(e @ CallError::ResponseTooLarge { limit, .. }) if *limit == MAX_BODY => {
                let text = e.to_string();
                ensure!(
                    text.contains(&format!("larger than {MAX_BODY} bytes")),
                    "{what}: {text}"
                );
            }
            other => bail!("{what}: expected an oversized answer refused, got {other:?}"),
        }
    }
    // The client stopped reading: the server could not push the whole stream.
    std::thread::sleep(Duration::from_millis(500));
    let written = streamed.written.load(Ordering::SeqCst);
    ensure!(
        written < 4 * MAX_BODY as u64,
        "the client kept reading ({written} bytes)"
    );
    Ok(())
}

#[test]
fn client_refuses_to_send_requests_a_signer_would_refuse() -> Result<()> {
    let server = hostile(|s, _| {
        let _ = s.write_all(b"HTTP/1.1 500 Nope\r\ncontent-length: 0\r\n\r\n");
    })?;
    // A signing round 2 for 2 000 inputs at threshold 20: more than MAX_BODY.
    let share = frost_secp256k1_tr::keys::SigningShare::deserialize(&[7u8; 32])?;
    let commitments = (1..=20u16)
        .map(|i| {
            let (_, c) = frost_secp256k1_tr::round1::commit(&share, &mut rand::rngs::OsRng);
            Ok((ckm::frost::identifier(i)?, c))
        })
        .collect::<Result<std::collections::BTreeMap<_, _>>>()?;
    let package = frost_secp256k1_tr::SigningPackage::new(commitments, &[1u8; 32]);
    let message = CoordinatorToSigner::SignShare {
        session: SessionId::random(&mut rand::rngs::OsRng),
        packages: vec![package; 2 * ckm::net::MAX_INPUTS],
        statements: Default::default(),
    };
    let result = call(&format!("http://{}", server.addr), &message)?;
    match &result {
        Err(e @ CallError::RequestTooLarge { bytes, limit, .. })
            if *limit == MAX_BODY && *bytes > MAX_BODY =>
        {
            let text = e.to_string();
            ensure!(text.contains("split the spend"), "{text}");
        }
        other => bail!("expected the request refused, got {other:?}"),
    }
    ensure!(
        server.connections.load(Ordering::SeqCst) == 0,
        "the oversized request was sent"
    );
    Ok(())
}
