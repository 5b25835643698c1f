//! Per-coordinator state on a signer stays bounded under a flood (issue 24), with a real
//! `ckm signer serve` process: a coordinator that opens round-1 sessions and never finishes
//! them, each with a PSBT padded to 1 MiB, is refused once its open sessions hold
//! [`MAX_SESSION_BYTES_PER_COORDINATOR`] bytes; with small PSBTs, after
//! [`MAX_SESSIONS_PER_COORDINATOR`] sessions. The signer's resident memory grows by less than
//! [`RSS_BOUND_MIB`] over the whole flood (it holds at most 32 MiB of PSBT text per
//! coordinator, plus the parsed copies).

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;
#[path = "common/driver.rs"]
mod driver;

use anyhow::{bail, ensure, Context, Result};
use bitcoin::psbt::raw::ProprietaryKey;
use ckm::message::SessionId;
use ckm::net::client::CallError;
use ckm::signer::{MAX_SESSIONS_PER_COORDINATOR, MAX_SESSION_BYTES_PER_COORDINATOR};
use cluster::*;
use driver::Driver;

/// The stated bound on the signer's RSS growth over the flood, in MiB.
const RSS_BOUND_MIB: u64 = 160;

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

/// Opens round-1 sessions at signer 1 until it refuses; returns how many it took and the
/// refusal.
fn flood(d: &Driver, psbt: &bitcoin::Psbt, most: usize) -> Result<(usize, String)> {
    for n in 0..most {
        match d.commit(SessionId::random(&mut rand::thread_rng()), psbt, 1)? {
            Ok(_) => {}
            Err(CallError::Refused { message, .. }) => return Ok((n, message)),
            Err(e) => bail!("session {n}: {e}"),
        }
    }
    bail!("{most} sessions and no refusal")
}

#[test]
fn a_flood_of_open_sessions_is_capped_per_coordinator() -> Result<()> {
    let c = Cluster::with_wallet(3, 2)?;
    let funding = fund(&c, &FUNDS)?;
    let d = Driver::new(&c, WALLET)?;
    let pid = c.signers[0].pid().context("signer 1 runs")?;
    let before = rss_kib(pid)?;

    // Padded to 1 MiB: refused once 32 MiB are held.
    let mut big = c.pay(&funding, &foreign_address(), 10_000, 2)?.psbt;
    big.proprietary.insert(
        ProprietaryKey {
            prefix: b"ckm-test".to_vec(),
            subtype: 0,
            key: Vec::new(),
        },
        vec![0x55; 768 << 10],
    );
    let size = big.to_string().len();
    ensure!(size > 1 << 20, "{size}");
    let (taken, why) = flood(&d, &big, 200)?;
    ensure!(
        taken == MAX_SESSION_BYTES_PER_COORDINATOR / size,
        "{taken} sessions of {size} bytes: {why}"
    );
    ensure!(why.contains("bytes of PSBT"), "{why}");
    let after = rss_kib(pid)?;
    let grown_mib = after.saturating_sub(before) / 1024;
    ensure!(
        grown_mib < RSS_BOUND_MIB,
        "RSS grew by {grown_mib} MiB ({before} → {after} KiB)"
    );
    eprintln!(
        "RSS {} → {} MiB over {taken} sessions of {size} bytes",
        before / 1024,
        after / 1024
    );
    Ok(())
}

#[test]
fn small_sessions_are_capped_by_count() -> Result<()> {
    let c = Cluster::with_wallet(3, 2)?;
    let funding = fund(&c, &FUNDS)?;
    let d = Driver::new(&c, WALLET)?;
    let small = c.pay(&funding, &foreign_address(), 10_000, 2)?.psbt;
    let (taken, why) = flood(&d, &small, 200)?;
    ensure!(taken == MAX_SESSIONS_PER_COORDINATOR, "{taken}: {why}");
    ensure!(why.contains("signing sessions open"), "{why}");
    Ok(())
}
