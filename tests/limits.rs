//! Wallet-wide daily limits against a malicious coordinator, with real signer processes.
//!
//! Every signer of a 2-of-3 and of a 3-of-5 wallet has the same daily limit `L`. A malicious
//! coordinator (the hand-driven [`driver::Driver`]) runs many sessions, each paying a
//! different transaction to a foreign address through a different set of `t` signers, and
//! interleaves their round-1, statement and round-2 messages in adversarial orders: all
//! round 1s first; statements taken as early as the protocol lets it; random interleavings;
//! and for 3-of-5 the order in which two sessions each try to hide behind a different
//! participant. After each schedule it aggregates whatever shares it got; the total outflow of
//! the sessions with valid signatures never exceeds `L` (and one session after the other,
//! exactly the two that fit are signed, so the check is not vacuous). Concurrent reservations
//! count against each other until they expire: a coordinator that starts more than the limit
//! at once gets nothing signed, which is the safe outcome. Statements cannot be skipped, reused
//! from another session or taken from a signer outside the chosen set. And an honest
//! coordinator's sequential spends up to `L` all succeed (the next one is refused).
//!
//! Every session spends its own coin, except where a test replaces a transaction: a
//! replacement (a spend sharing an input with one already signed) counts once with what it
//! replaces, at the largest outflow, even when the original was signed by {1,2} and the
//! replacement is asked of {2,3}; a "replacement" that shares no input counts in full. The
//! adversary's gain is measured as the largest outflow of signed transactions that could
//! all confirm together (pairwise no shared input), computed here independently of ckm.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;
#[path = "common/driver.rs"]
mod driver;

use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};
use bitcoin::{OutPoint, Psbt};
use ckm::message::{ErrorCode, SessionId};
use ckm::net::client::CallError;
use ckm::protocol::spend_limits::{Receipt, Statement};
use cluster::*;
use driver::{Committed, Driver};
use frost_secp256k1_tr::round2::SignatureShare;
use frost_secp256k1_tr::SigningPackage;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

type Funding = std::collections::HashMap<bitcoin::OutPoint, bitcoin::TxOut>;

/// The daily limit on every signer.
const LIMIT: u64 = 100_000;
/// Each session pays about this much (plus its index, so every txid differs); with the fee,
/// two fit under the limit and three do not.
const PAY: u64 = 35_000;

/// Eight coins of 100 000 sat: each session spends its own.
const COINS: [(bdk_wallet::KeychainKind, u32, u64); 8] = {
    let mut coins = [(bdk_wallet::KeychainKind::External, 0, 100_000); 8];
    let mut i = 0;
    while i < coins.len() {
        coins[i].1 = i as u32;
        i += 1;
    }
    coins
};

/// A cluster of `n` signers with a `t`-of-`n` wallet, funded, every signer's daily limit set.
fn limited(n: usize, t: u16) -> Result<(Cluster, Funding)> {
    let c = Cluster::with_wallet(n, t)?;
    let funding = fund(&c, &COINS)?;
    c.set_daily_limit(LIMIT)?;
    Ok((c, funding))
}

/// One adversarial session.
struct Session {
    id: SessionId,
    chosen: Vec<u16>,
    psbt: Psbt,
    outflow: u64,
    /// The coins it spends.
    inputs: Vec<OutPoint>,
    committed: BTreeMap<u16, Committed>,
    statements: BTreeMap<u16, Statement>,
    packages: Option<Vec<SigningPackage>>,
    shares: BTreeMap<u16, Vec<SignatureShare>>,
    /// The first refusal, if any (the session cannot complete then).
    refused: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Commit,
    State,
    Sign,
}

/// One message of a schedule: step, session, signer.
type Event = (Step, usize, u16);

fn receipts(s: &Session) -> BTreeMap<u16, Receipt> {
    s.committed
        .iter()
        .map(|(i, c)| (*i, c.receipt.clone()))
        .collect()
}

fn refusal_text(e: &CallError) -> String {
    e.to_string()
}

/// Plays `events` in order against the signers; returns the sessions.
fn play(d: &Driver, mut sessions: Vec<Session>, events: &[Event]) -> Result<Vec<Session>> {
    for &(step, k, signer) in events {
        let s = &mut sessions[k];
        if s.refused.is_some() {
            continue;
        }
        match step {
            Step::Commit => match d.commit(s.id, &s.psbt, signer)? {
                Ok(c) => {
                    ensure!(
                        c.statements_required,
                        "a limited signer did not ask for statements"
                    );
                    s.committed.insert(signer, c);
                }
                Err(e) => s.refused = Some(refusal_text(&e)),
            },
            Step::State => {
                // The adversary needs every chosen signer's receipt to get a statement.
                if s.committed.len() < s.chosen.len() {
                    s.refused = Some("missing receipts".into());
                    continue;
                }
                match d.statement(s.id, &receipts(s), signer)? {
                    Ok(st) => {
                        s.statements.insert(signer, st);
                    }
                    Err(e) => s.refused = Some(refusal_text(&e)),
                }
            }
            Step::Sign => {
                if s.statements.len() < s.chosen.len() {
                    s.refused = Some("missing statements".into());
                    continue;
                }
                if s.packages.is_none() {
                    s.packages = Some(d.packages(&s.psbt, &s.committed)?);
                }
                let packages = s.packages.clone().unwrap_or_default();
                match d.sign(s.id, &packages, &s.statements, signer)? {
                    Ok(shares) => {
                        s.shares.insert(signer, shares);
                    }
                    Err(e) => s.refused = Some(refusal_text(&e)),
                }
            }
        }
    }
    Ok(sessions)
}

/// What the adversary can take out of the wallet with the sessions it holds valid signatures
/// for: the largest total outflow of signed transactions that share no input (so could all
/// confirm), by trying every subset; and how many sessions were signed.
fn signed_total(d: &Driver, sessions: &[Session]) -> Result<(u64, usize)> {
    let mut signed: Vec<&Session> = Vec::new();
    for s in sessions {
        if s.shares.len() != s.chosen.len() {
            continue;
        }
        let packages = s.packages.clone().context("shares without packages")?;
        if d.aggregate(&s.psbt, &packages, &s.shares).is_ok() {
            signed.push(s);
        }
    }
    ensure!(
        signed.len() < 16,
        "too many signed sessions to try every subset"
    );
    let mut best = 0;
    for subset in 0u32..(1 << signed.len()) {
        let chosen: Vec<&Session> = (0..signed.len())
            .filter(|i| subset & (1 << i) != 0)
            .map(|i| signed[i])
            .collect();
        let mut coins = std::collections::BTreeSet::new();
        let disjoint = chosen
            .iter()
            .flat_map(|s| s.inputs.iter())
            .all(|o| coins.insert(*o));
        if disjoint {
            best = best.max(chosen.iter().map(|s| s.outflow).sum::<u64>());
        }
    }
    Ok((best, signed.len()))
}

/// A session for `psbt`, which takes `outflow` out of the wallet.
fn session(chosen: &[u16], psbt: Psbt, outflow: u64) -> Session {
    Session {
        id: SessionId::random(&mut rand::thread_rng()),
        chosen: chosen.to_vec(),
        inputs: psbt
            .unsigned_tx
            .input
            .iter()
            .map(|i| i.previous_output)
            .collect(),
        psbt,
        outflow,
        committed: BTreeMap::new(),
        statements: BTreeMap::new(),
        packages: None,
        shares: BTreeMap::new(),
        refused: None,
    }
}

/// The coins of `funding`, in a fixed order.
fn coins(funding: &Funding) -> Vec<OutPoint> {
    let mut coins: Vec<OutPoint> = funding.keys().copied().collect();
    coins.sort();
    coins
}

fn make_sessions_paying(
    pay: u64,
    c: &Cluster,
    funding: &Funding,
    subsets: &[Vec<u16>],
) -> Result<Vec<Session>> {
    let coins = coins(funding);
    let mut out = Vec::new();
    for (k, chosen) in subsets.iter().enumerate() {
        let coin = *coins.get(k).context("more sessions than coins")?;
        let p = c.pay_from(funding, &[coin], &foreign_address(), pay + k as u64, 2)?;
        let outflow = p.amount + p.fee()?;
        out.push(session(chosen, p.psbt, outflow));
    }
    Ok(out)
}

fn make_sessions(c: &Cluster, funding: &Funding, subsets: &[Vec<u16>]) -> Result<Vec<Session>> {
    make_sessions_paying(PAY, c, funding, subsets)
}

/// Each session's events in protocol order (the adversary needs the receipts before the
/// statements and the statements before round 2).
fn per_session(sessions: &[Session]) -> Vec<Vec<Event>> {
    sessions
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let mut ev = Vec::new();
            for step in [Step::Commit, Step::State, Step::Sign] {
                ev.extend(s.chosen.iter().map(|i| (step, k, *i)));
            }
            ev
        })
        .collect()
}

/// All round 1s, then all statements, then all round 2s.
fn batched(sessions: &[Session]) -> Vec<Event> {
    let mut all: Vec<Event> = per_session(sessions).into_iter().flatten().collect();
    all.sort_by_key(|(step, _, _)| match step {
        Step::Commit => 0,
        Step::State => 1,
        Step::Sign => 2,
    });
    all
}

/// A random interleaving that keeps each session's own order.
fn random_order(sessions: &[Session], rng: &mut StdRng) -> Vec<Event> {
    let mut queues: Vec<Vec<Event>> = per_session(sessions)
        .into_iter()
        .map(|mut q| {
            // Shuffle within each phase, keep the phases in order.
            let n = q.len() / 3;
            for phase in q.chunks_mut(n.max(1)) {
                phase.shuffle(rng);
            }
            q.reverse();
            q
        })
        .collect();
    let mut out = Vec::new();
    while queues.iter().any(|q| !q.is_empty()) {
        let live: Vec<usize> = (0..queues.len())
            .filter(|i| !queues[*i].is_empty())
            .collect();
        let pick = live[rng.gen_range(0..live.len())];
        if let Some(e) = queues[pick].pop() {
            out.push(e);
        }
    }
    out
}

fn run_schedule(
    n: usize,
    t: u16,
    subsets: &[Vec<u16>],
    order: impl FnOnce(&[Session]) -> Vec<Event>,
    what: &str,
) -> Result<(u64, usize)> {
    run_schedule_paying(PAY, n, t, subsets, order, what)
}

fn run_schedule_paying(
    pay: u64,
    n: usize,
    t: u16,
    subsets: &[Vec<u16>],
    order: impl FnOnce(&[Session]) -> Vec<Event>,
    what: &str,
) -> Result<(u64, usize)> {
    let (c, funding) = limited(n, t)?;
    let d = Driver::new(&c, WALLET)?;
    let sessions = make_sessions_paying(pay, &c, &funding, subsets)?;
    let events = order(&sessions);
    let sessions = play(&d, sessions, &events)?;
    let (total, count) = signed_total(&d, &sessions)?;
    let refusals: Vec<String> = sessions.iter().filter_map(|s| s.refused.clone()).collect();
    eprintln!("{what}: {count} session(s) signed, {total} sat of {LIMIT}; refusals: {refusals:?}");
    ensure!(
        total <= LIMIT,
        "{what}: {count} sessions signed {total} sat, over the wallet-wide limit {LIMIT}"
    );
    Ok((total, count))
}

fn subsets_2_of_3() -> Vec<Vec<u16>> {
    vec![
        vec![1, 2],
        vec![2, 3],
        vec![1, 3],
        vec![1, 2],
        vec![2, 3],
        vec![1, 3],
    ]
}

fn subsets_3_of_5() -> Vec<Vec<u16>> {
    vec![
        vec![1, 2, 3],
        vec![3, 4, 5],
        vec![1, 4, 5],
        vec![2, 3, 4],
        vec![1, 2, 5],
        vec![2, 4, 5],
    ]
}

/// One session after the other.
fn sequential(sessions: &[Session]) -> Vec<Event> {
    per_session(sessions).into_iter().flatten().collect()
}

#[test]
fn adversarial_schedules_never_exceed_the_limit_2_of_3() -> Result<()> {
    // One after the other, the first two fit and the rest are refused.
    let (total, count) = run_schedule(3, 2, &subsets_2_of_3(), sequential, "2-of-3 sequential")?;
    ensure!(
        count == 2,
        "{count} sessions signed ({total} sat); expected exactly two to fit"
    );
    run_schedule(3, 2, &subsets_2_of_3(), batched, "2-of-3 batched")?;
    for seed in [1u64, 2, 3] {
        let mut rng = StdRng::seed_from_u64(seed);
        run_schedule(
            3,
            2,
            &subsets_2_of_3(),
            |s| random_order(s, &mut rng),
            &format!("2-of-3 random seed {seed}"),
        )?;
    }
    Ok(())
}

#[test]
fn adversarial_schedules_never_exceed_the_limit_3_of_5() -> Result<()> {
    let (total, count) = run_schedule(5, 3, &subsets_3_of_5(), sequential, "3-of-5 sequential")?;
    ensure!(
        count == 2,
        "{count} sessions signed ({total} sat); expected exactly two to fit"
    );
    run_schedule(5, 3, &subsets_3_of_5(), batched, "3-of-5 batched")?;
    // Two sessions, each trying to hide behind a different participant: X = {1,2,3} takes
    // its statements from 1 and 2 before Y = {3,4,5} reserves anywhere; Y takes its
    // statements from 4 and 5 before X's last statement (from 3, the shared signer) is taken.
    let hide = |s: &[Session]| -> Vec<Event> {
        let _ = s;
        let (x, y) = (0usize, 1usize);
        vec![
            (Step::Commit, x, 1),
            (Step::Commit, x, 2),
            (Step::Commit, x, 3),
            (Step::State, x, 1),
            (Step::State, x, 2),
            (Step::Commit, y, 3),
            (Step::Commit, y, 4),
            (Step::Commit, y, 5),
            (Step::State, y, 4),
            (Step::State, y, 5),
            (Step::State, y, 3),
            (Step::State, x, 3),
            (Step::Sign, x, 1),
            (Step::Sign, x, 2),
            (Step::Sign, x, 3),
            (Step::Sign, y, 3),
            (Step::Sign, y, 4),
            (Step::Sign, y, 5),
        ]
    };
    // Two sessions of 60k: either fits, both do not.
    let two = vec![vec![1, 2, 3], vec![3, 4, 5]];
    let (_, count) = run_schedule_paying(60_000, 5, 3, &two, hide, "3-of-5 hide-behind")?;
    ensure!(count <= 1, "both hidden sessions were signed");
    for seed in [11u64, 12, 13] {
        let mut rng = StdRng::seed_from_u64(seed);
        run_schedule(
            5,
            3,
            &subsets_3_of_5(),
            |s| random_order(s, &mut rng),
            &format!("3-of-5 random seed {seed}"),
        )?;
    }
    Ok(())
}

fn expect_refused(
    r: Result<Vec<SignatureShare>, CallError>,
    what: &str,
    needle: &str,
) -> Result<()> {
    match r {
        Err(CallError::Refused { code, message, .. }) => {
            ensure!(code == ErrorCode::Refused, "{what}: {code:?} {message}");
            ensure!(message.contains(needle), "{what}: {message}");
            Ok(())
        }
        other => anyhow::bail!("{what}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn statements_cannot_be_skipped_forged_or_reused() -> Result<()> {
    let (c, funding) = limited(3, 2)?;
    let d = Driver::new(&c, WALLET)?;
    let mut sessions = make_sessions(&c, &funding, &[vec![1, 2], vec![1, 2]])?;
    // Both sessions through round 1 and the statement round.
    for s in &mut sessions {
        for i in s.chosen.clone() {
            let committed = d
                .commit(s.id, &s.psbt, i)?
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            s.committed.insert(i, committed);
        }
        for i in s.chosen.clone() {
            let st = d
                .statement(s.id, &receipts(s), i)?
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            s.statements.insert(i, st);
        }
        s.packages = Some(d.packages(&s.psbt, &s.committed)?);
    }
    let (a, b) = (&sessions[0], &sessions[1]);
    let pa = a.packages.clone().unwrap_or_default();
    // Round 2 without statements (signer 1), with session B's statements (signer 2): both
    // refused — and each refusal consumes that signer's nonces for A.
    expect_refused(
        d.sign(a.id, &pa, &BTreeMap::new(), 1)?,
        "no statements",
        "statement",
    )?;
    expect_refused(
        d.sign(a.id, &pa, &b.statements, 2)?,
        "B's statements for A",
        "statement",
    )?;
    // B: a statement set with one signer missing, then with a statement from signer 3, which
    // is not chosen.
    let pb = b.packages.clone().unwrap_or_default();
    let mut partial = b.statements.clone();
    partial.remove(&2);
    expect_refused(
        d.sign(b.id, &pb, &partial, 1)?,
        "a missing statement",
        "statements from signers",
    )?;
    // A statement request without every chosen signer's receipt is refused too.
    let id = SessionId::random(&mut rand::thread_rng());
    let p = c.pay(&funding, &foreign_address(), 20_000, 2)?;
    let r1 = d
        .commit(id, &p.psbt, 1)?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let only_mine = BTreeMap::from([(1u16, r1.receipt.clone())]);
    match d.statement(id, &only_mine, 1)? {
        Err(CallError::Refused { message, .. }) => {
            ensure!(message.contains("receipt"), "{message}")
        }
        other => anyhow::bail!("a statement without every receipt: {other:?}"),
    }
    // Nothing was signed: no `signed` record anywhere.
    for s in &c.signers {
        let records = ckm_json(&s.home, &["signer", "audit", "show"])?;
        ensure!(
            !records
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x["kind"] == "signed")),
            "{} signed something",
            s.home.display()
        );
    }
    Ok(())
}

#[test]
fn honest_sequential_spends_up_to_the_limit_succeed() -> Result<()> {
    let (c, funding) = limited(3, 2)?;
    let coins = coins(&funding);
    let mut spent = 0;
    for k in 0..2u64 {
        let p = c.pay_from(
            &funding,
            &coins[k as usize..=k as usize],
            &foreign_address(),
            45_000 + k,
            2,
        )?;
        let input = c.write_psbt(&format!("honest{k}.psbt"), &p.psbt)?;
        let out = c.dir.path().join(format!("honest{k}.signed.psbt"));
        c.sign_ok(&input, &out, &[])?;
        check_signed(&out, &p)?;
        spent += p.amount + p.fee()?;
    }
    ensure!(spent <= LIMIT);
    // The third would exceed the limit: refused, naming the rule.
    let p = c.pay_from(&funding, &coins[2..3], &foreign_address(), 45_000, 2)?;
    let input = c.write_psbt("honest-over.psbt", &p.psbt)?;
    let out = c.dir.path().join("honest-over.signed.psbt");
    let res = c.sign(&input, &out, &[])?;
    ensure!(!res.status.success());
    let err = json_error(&res)?;
    ensure!(err.contains("policy daily-limit-sats"), "{err}");
    Ok(())
}

/// `p`'s transaction with `extra` sat more fee, taken from its change: a fee bump spending
/// the same coins. Returns the PSBT and its outflow.
fn bumped(original: &Session, to: &bitcoin::Address, extra: u64) -> Result<(Psbt, u64)> {
    let mut psbt = original.psbt.clone();
    let change = psbt
        .unsigned_tx
        .output
        .iter_mut()
        .find(|o| o.script_pubkey != to.script_pubkey())
        .context("no change output to take the fee from")?;
    change.value = change
        .value
        .checked_sub(bitcoin::Amount::from_sat(extra))
        .context("change too small")?;
    Ok((psbt, original.outflow + extra))
}

#[test]
fn a_replacement_counts_once_even_through_another_signer_set() -> Result<()> {
    let (c, funding) = limited(3, 2)?;
    let d = Driver::new(&c, WALLET)?;
    let coins = coins(&funding);
    let to = foreign_address();
    // A pays 60k from coin 0 through {1,2}; two of them do not fit under the limit.
    let a = c.pay_from(&funding, &coins[..1], &to, 60_000, 2)?;
    let a = session(&[1, 2], a.psbt.clone(), a.amount + a.fee()?);
    let sessions = play(&d, vec![a], &sequential_one(0, &[1, 2]))?;
    ensure!(
        sessions[0].refused.is_none(),
        "A: {:?}",
        sessions[0].refused
    );
    // B bumps A through {2,3}: signer 3 never saw A and learns it, with its coins, only from
    // signer 2's statement. C bumps B through {1,3}.
    let (psbt, outflow) = bumped(&sessions[0], &to, 1_000)?;
    let mut sessions = sessions;
    sessions.push(session(&[2, 3], psbt, outflow));
    let sessions = play(&d, sessions, &sequential_one(1, &[2, 3]))?;
    ensure!(
        sessions[1].refused.is_none(),
        "the bump through {{2,3}}: {:?}",
        sessions[1].refused
    );
    let (psbt, outflow) = bumped(&sessions[1], &to, 1_000)?;
    let mut sessions = sessions;
    sessions.push(session(&[1, 3], psbt, outflow));
    let sessions = play(&d, sessions, &sequential_one(2, &[1, 3]))?;
    ensure!(
        sessions[2].refused.is_none(),
        "the second bump: {:?}",
        sessions[2].refused
    );
    // D is presented as another bump of A (same payee, same amount) but spends another coin:
    // it conflicts with nothing, so it counts in full and is refused.
    let fake = c.pay_from(&funding, &coins[1..2], &to, 60_000 + 2_000, 2)?;
    let mut sessions = sessions;
    sessions.push(session(
        &[2, 3],
        fake.psbt.clone(),
        fake.amount + fake.fee()?,
    ));
    let sessions = play(&d, sessions, &sequential_one(3, &[2, 3]))?;
    let refusal = sessions[3].refused.clone().unwrap_or_default();
    ensure!(
        refusal.contains("policy daily-limit-sats"),
        "a non-conflicting \"bump\" was not counted in full: {refusal:?}"
    );
    let (total, count) = signed_total(&d, &sessions)?;
    ensure!(
        count == 3,
        "{count} sessions signed, expected A and its two bumps"
    );
    ensure!(
        total <= LIMIT,
        "{total} sat could confirm, over the limit {LIMIT}"
    );
    ensure!(total == sessions[2].outflow, "{total}");
    Ok(())
}

/// Session `k`'s events in protocol order for `chosen`.
fn sequential_one(k: usize, chosen: &[u16]) -> Vec<Event> {
    [Step::Commit, Step::State, Step::Sign]
        .into_iter()
        .flat_map(|step| chosen.iter().map(move |i| (step, k, *i)))
        .collect()
}
