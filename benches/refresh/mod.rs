//! Refresh rows of the co-signing bench (issue 24): a refresh of a 2-of-3 and a 7-of-10 wallet
//! across real `ckm signer serve` processes, split into its phases, against the same refresh
//! computed in one process, in the same run.
//!
//! - **memory**: `ckm::protocol::lifecycle::run_in_memory` (begin, both refresh rounds,
//!   certificates, prepare) for a group of the same t-of-n from a certified key generation in
//!   memory: the computation without transport, storage or votes;
//! - **network**, per refresh: *compute + prepare* (`ckm::net::transitions::run_transition`:
//!   begin, the two rounds, certification, prepare — every member stores its pending share and
//!   its signed prepared vote), the **ready vote** round (every member checks all prepared
//!   votes, stores its ready vote and an audit record, answers), and *decide* (the commit
//!   certificate of n ready votes sent to every member, which commits and erases its old
//!   share). The ready vote round is the round the vote-decided design adds; its share of the
//!   total is reported.
//!
//! Each repetition refreshes the wallet once more (epoch e → e + 1), so every sample is a
//! real transition from the epoch the last one left. Groups are interleaved per repetition.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{ensure, Context as _, Result};
use ckm::frost::pedersen::DkgParams;
use ckm::identity::IdentityKey;
use ckm::keys::{GroupKey, Roster, RosterEntry};
use ckm::message::{CoordinatorToSigner, SessionId, SignerToCoordinator};
use ckm::net::client::Client;
use ckm::net::coordinator::create_wallet;
use ckm::net::transitions::run_transition;
use ckm::protocol::dkg::{self, DkgContext};
use ckm::protocol::lifecycle::{
    run_in_memory as refresh_in_memory, Ballot, Decision, Member, SignedVote, TransitionAnswer,
    TransitionContext, TransitionKind, TransitionRequest, VoteKind, WalletState,
    TRANSITION_VERSION,
};
use tokio::task::JoinSet;

use super::{first, log, median, ms, spread, NETWORK};

/// The groups refreshed.
pub const GROUPS: [(u16, u16); 2] = [(2, 3), (7, 10)];

/// One group's samples (ms).
pub struct RefreshRow {
    pub t: u16,
    pub n: u16,
    pub memory: Vec<f64>,
    pub prepare: Vec<f64>,
    pub vote: Vec<f64>,
    pub decide: Vec<f64>,
    pub total: Vec<f64>,
}

/// A wallet in memory: the members' keys and shares and its state.
struct InMemory {
    keys: Vec<IdentityKey>,
    shares: Vec<ckm::keys::KeyShare>,
    state: WalletState,
    coordinator: IdentityKey,
}

fn in_memory_group(t: u16, n: u16) -> Result<InMemory> {
    let mut rng = rand::thread_rng();
    let keys: Vec<IdentityKey> = (0..n).map(|_| IdentityKey::generate(&mut rng)).collect();
    let coordinator = IdentityKey::generate(&mut rng);
    let roster = Roster::new(
        keys.iter()
            .zip(1u16..)
            .map(|(k, index)| RosterEntry {
                index,
                url: format!("http://127.0.0.1:{}", 20_000 + index),
                identity: k.public(),
                tls_sha256: None,
            })
            .collect(),
    )?;
    let context = DkgContext::new(
        SessionId::random(&mut rng),
        &format!("mem-{t}of{n}"),
        NETWORK,
        DkgParams::new(t, n)?,
        coordinator.public(),
        roster,
    )?;
    let refs: Vec<&IdentityKey> = keys.iter().collect();
    let (shares, group, record) = dkg::run_in_memory(context, &refs, &mut rng)?;
    Ok(InMemory {
        keys,
        shares: shares.into_iter().map(|s| s.share).collect(),
        state: WalletState::genesis(&record, &group),
        coordinator,
    })
}

fn refresh_context(from: &WalletState, coordinator: &IdentityKey) -> TransitionContext {
    TransitionContext {
        version: TRANSITION_VERSION,
        session: SessionId::random(&mut rand::thread_rng()),
        kind: TransitionKind::Refresh,
        wallet: GroupKey::of(&from.group),
        coordinator: coordinator.public(),
        from_epoch: from.epoch,
        from_state: from.hash(),
        new_roster: from.roster.clone(),
        helpers: from.roster.indexes(),
    }
}

fn memory_sample(g: &InMemory) -> Result<f64> {
    let members: Vec<Member<'_>> = g
        .keys
        .iter()
        .zip(&g.shares)
        .map(|(key, share)| Member {
            key,
            share: Some(share),
        })
        .collect();
    let context = refresh_context(&g.state, &g.coordinator);
    let start = Instant::now();
    let (prepared, _record) =
        refresh_in_memory(context, &g.state, &members, &mut rand::thread_rng())?;
    let elapsed = ms(start.elapsed());
    ensure!(prepared.len() == g.keys.len(), "not every member prepared");
    Ok(elapsed)
}

/// Sends `message(entry)` to every entry at once; the answers by index.
async fn to_all(
    client: &Client,
    members: &[RosterEntry],
    message: impl Fn(&RosterEntry) -> CoordinatorToSigner,
) -> Result<BTreeMap<u16, SignerToCoordinator>> {
    let mut set = JoinSet::new();
    for e in members {
        let (client, e, m) = (client.clone(), e.clone(), message(e));
        set.spawn(async move { (e.index, client.call(&e, &m).await) });
    }
    let mut out = BTreeMap::new();
    while let Some(joined) = set.join_next().await {
        let (index, reply) = joined?;
        out.insert(index, reply.with_context(|| format!("signer {index}"))?);
    }
    Ok(out)
}

/// One refresh across the processes; returns (prepare, vote, decide) in ms and the new state.
fn network_sample(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    from: &WalletState,
) -> Result<([f64; 3], WalletState)> {
    let context = refresh_context(from, client.identity());
    let start = Instant::now();
    let prepared = rt.block_on(run_transition(client, context, from.clone(), None))?;
    let prepare_ms = ms(start.elapsed());
    let record = &prepared.record;
    let session = record.context.session;
    let ballot = Ballot::new(&record.context, &record.state);
    let members = record.state.roster.entries().to_vec();

    let start = Instant::now();
    let answers = rt.block_on(to_all(client, &members, |_| {
        CoordinatorToSigner::Transition(TransitionRequest::Vote {
            session,
            want: VoteKind::Ready,
            prepared: prepared.prepared.clone(),
            record: None,
        })
    }))?;
    let vote_ms = ms(start.elapsed());
    let votes: Vec<SignedVote> = answers
        .into_values()
        .filter_map(|a| match a {
            SignerToCoordinator::Transition(TransitionAnswer::Voted { vote }) => Some(vote),
            _ => None,
        })
        .collect();
    let certificate = ballot
        .certificate(votes.iter())
        .context("the ready votes made no certificate")?;
    ensure!(certificate.decision == Decision::Commit, "not a commit");

    let start = Instant::now();
    let answers = rt.block_on(to_all(client, &members, |_| {
        CoordinatorToSigner::Transition(TransitionRequest::Decide {
            session,
            certificate: certificate.clone(),
        })
    }))?;
    let decide_ms = ms(start.elapsed());
    for (index, a) in answers {
        ensure!(
            matches!(
                a,
                SignerToCoordinator::Transition(TransitionAnswer::Decided {
                    decision: Decision::Commit,
                    epoch,
                }) if epoch == from.epoch + 1
            ),
            "signer {index} did not commit epoch {}",
            from.epoch + 1
        );
    }
    Ok(([prepare_ms, vote_ms, decide_ms], record.state.clone()))
}

/// Runs `reps` refreshes (after one warm-up) of each group in [`GROUPS`], in memory and
/// across the first n processes of `pool`, interleaved.
pub fn rows(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    pool: &Roster,
    reps: usize,
) -> Result<Vec<RefreshRow>> {
    let mut groups = Vec::new();
    for (t, n) in GROUPS {
        let members = first(pool, n)?;
        let (group, keygen) = rt
            .block_on(create_wallet(
                client,
                &format!("refresh-{t}of{n}"),
                NETWORK,
                t,
                &members,
            ))
            .with_context(|| format!("DKG {t}-of-{n} across signer processes"))?;
        let state = WalletState::genesis(&keygen, &group);
        groups.push((in_memory_group(t, n)?, state));
    }
    let mut rows: Vec<RefreshRow> = GROUPS
        .iter()
        .map(|&(t, n)| RefreshRow {
            t,
            n,
            memory: Vec::new(),
            prepare: Vec::new(),
            vote: Vec::new(),
            decide: Vec::new(),
            total: Vec::new(),
        })
        .collect();
    for rep in 0..=reps {
        for ((mem, state), row) in groups.iter_mut().zip(rows.iter_mut()) {
            let m = memory_sample(mem)?;
            let ([p, v, d], next) = network_sample(rt, client, state)
                .with_context(|| format!("refresh {}-of-{} across processes", row.t, row.n))?;
            *state = next;
            if rep == 0 {
                continue; // warm-up
            }
            row.memory.push(m);
            row.prepare.push(p);
            row.vote.push(v);
            row.decide.push(d);
            row.total.push(p + v + d);
        }
    }
    for r in &rows {
        log(format!(
            "refresh {}-of-{}: in memory {}; across processes {} (prepare {}, ready votes {}, decide {}); ratio {:.2}, ready votes {:.1} % of the total",
            r.t,
            r.n,
            spread(&r.memory),
            spread(&r.total),
            spread(&r.prepare),
            spread(&r.vote),
            spread(&r.decide),
            median(&r.total) / median(&r.memory),
            100.0 * median(&r.vote) / median(&r.total)
        ));
    }
    Ok(rows)
}

/// The rows as a Markdown table.
pub fn table(rows: &[RefreshRow]) -> String {
    let mut out = String::from(
        "\nRefresh (median ms; min–max in brackets; ready votes = the round the vote-decided design adds)\n\n",
    );
    out.push_str("| t-of-n | in memory (computation) | across processes: total | compute + prepare | ready votes | decide (commit) | total/memory | ready votes / total |\n");
    out.push_str("|:---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let cell = |v: &[f64]| {
        let (lo, hi) = super::min_max(v);
        format!("{:.1} [{lo:.1}–{hi:.1}]", median(v))
    };
    for r in rows {
        out.push_str(&format!(
            "| {}-of-{} | {} | {} | {} | {} | {} | {:.2} | {:.1} % |\n",
            r.t,
            r.n,
            cell(&r.memory),
            cell(&r.total),
            cell(&r.prepare),
            cell(&r.vote),
            cell(&r.decide),
            median(&r.total) / median(&r.memory),
            100.0 * median(&r.vote) / median(&r.total)
        ));
    }
    out
}

/// The rows for report.json.
pub fn json(rows: &[RefreshRow]) -> serde_json::Value {
    let stat = |v: &[f64]| {
        let (lo, hi) = super::min_max(v);
        serde_json::json!({
            "median_ms": super::round3(median(v)),
            "min_ms": super::round3(lo),
            "max_ms": super::round3(hi),
        })
    };
    serde_json::Value::Array(
        rows.iter()
            .map(|r| {
                serde_json::json!({
                    "t": r.t,
                    "n": r.n,
                    "samples": r.total.len(),
                    "memory": stat(&r.memory),
                    "network_total": stat(&r.total),
                    "prepare": stat(&r.prepare),
                    "ready_votes": stat(&r.vote),
                    "decide": stat(&r.decide),
                    "total_over_memory": super::round3(median(&r.total) / median(&r.memory)),
                    "ready_votes_share": super::round3(median(&r.vote) / median(&r.total)),
                })
            })
            .collect(),
    )
}
