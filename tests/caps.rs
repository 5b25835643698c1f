//! Per-coordinator state on a signer stays bounded under a flood (issue 24), with a real
//! `ckm signer serve` process: a coordinator that opens round-1 sessions and never finishes
//! them, each with a PSBT padded to 1 MiB, keeps at most
//! [`MAX_SESSION_BYTES_PER_COORDINATOR`] bytes of them open; with small PSBTs, at most
//! [`MAX_SESSIONS_PER_COORDINATOR`] sessions. Beyond that the signer forgets the coordinator's
//! oldest sessions (issue 29: a busy coordinator's own leftovers, one per signing at each
//! signer it asked but did not choose, must not shut it out) instead of refusing the new one.
//! The signer's resident memory grows by less than [`RSS_BOUND_MIB`] over the whole flood (it
//! holds at most 32 MiB of PSBT text per coordinator, plus the parsed copies).

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;
#[path = "common/driver.rs"]
mod driver;

use std::collections::BTreeMap;

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

/// Opens `count` round-1 sessions at signer 1 (each must be accepted); returns their ids,
/// oldest first.
fn flood(d: &Driver, psbt: &bitcoin::Psbt, count: usize) -> Result<Vec<SessionId>> {
    let mut opened = Vec::with_capacity(count);
    for n in 0..count {
        let session = SessionId::random(&mut rand::thread_rng());
        match d.commit(session, psbt, 1)? {
            Ok(_) => opened.push(session),
            Err(e) => bail!("session {n} was not opened: {e}"),
        }
    }
    Ok(opened)
}

/// Whether signer 1 still holds `session` open: the statement round on it answers anything
/// but "unknown signing session".
fn still_open(d: &Driver, session: SessionId) -> Result<bool> {
    Ok(match d.statement(session, &BTreeMap::new(), 1)? {
        Err(CallError::Refused { message, .. }) => !message.contains("unknown signing session"),
        _ => true,
    })
}

/// How many of `sessions` (oldest first) signer 1 still holds, after checking that it forgot
/// the oldest: counted from the newest back until the first forgotten one (asking about a
/// session may end it, so each is asked once).
fn kept(d: &Driver, sessions: &[SessionId]) -> Result<usize> {
    let oldest = sessions.first().context("no sessions")?;
    ensure!(
        !still_open(d, *oldest)?,
        "the oldest of {} sessions is still open",
        sessions.len()
    );
    let mut open = 0;
    for session in sessions.iter().rev() {
        if !still_open(d, *session)? {
            break;
        }
        open += 1;
    }
    Ok(open)
}

#[test]
fn a_flood_of_open_sessions_is_capped_per_coordinator() -> Result<()> {
    let c = Cluster::with_wallet(3, 2)?;
    let funding = fund(&c, &FUNDS)?;
    let d = Driver::new(&c, WALLET)?;
    let pid = c.signers[0].pid().context("signer 1 runs")?;
    let before = rss_kib(pid)?;

    // Padded to 1 MiB: at most 32 MiB of them are held; the oldest are forgotten.
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
    let opened = flood(&d, &big, 60)?;
    let after = rss_kib(pid)?;
    let fits = MAX_SESSION_BYTES_PER_COORDINATOR / size;
    let open = kept(&d, &opened)?;
    ensure!(
        open == fits,
        "{open} of 60 sessions of {size} bytes open, {fits} fit in {MAX_SESSION_BYTES_PER_COORDINATOR} bytes"
    );
    let grown_mib = after.saturating_sub(before) / 1024;
    ensure!(
        grown_mib < RSS_BOUND_MIB,
        "RSS grew by {grown_mib} MiB ({before} → {after} KiB)"
    );
    eprintln!(
        "RSS {} → {} MiB over 60 sessions of {size} bytes, the newest {open} kept",
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
    let opened = flood(&d, &small, 200)?;
    let open = kept(&d, &opened)?;
    ensure!(
        open == MAX_SESSIONS_PER_COORDINATOR,
        "{open} of 200 small sessions open, at most {MAX_SESSIONS_PER_COORDINATOR} should be"
    );
    // A round 1 beyond the cap is still answered: the coordinator is not shut out.
    let session = SessionId::random(&mut rand::thread_rng());
    ensure!(
        d.commit(session, &small, 1)?.is_ok(),
        "a new session after the flood was refused"
    );
    Ok(())
}
