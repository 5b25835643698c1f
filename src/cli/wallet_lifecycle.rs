//! `ckm wallet refresh | remove-signer | repair | add-signer | resume | show | transition
//! status`: managing a wallet's signers without moving funds. Each runs a certified epoch
//! transition across the signers (`ckm::protocol::lifecycle`): every member stores the new
//! share pending and signs prepared; then every member's ready vote makes a commit
//! certificate that each member checks before it erases its old share (or enough abort votes
//! an abort certificate). An interrupted transition is finished or rolled back by `ckm
//! wallet resume`, from what the members hold, by this or any other coordinator they allow.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use ckm::keys::{GroupKey, RosterEntry};
use ckm::net::client::Client;
use ckm::net::transitions::{
    farewell, gather_status, resume_transition, run_transition, settle, Settlement,
};
use ckm::protocol::lifecycle::{
    CertifiedTransition, Decision, Joining, TransitionContext, TransitionKind, TRANSITION_VERSION,
};
use ckm::protocol::SessionId;
use ckm::wallet::lock::WalletLock;
use ckm::wallet::{CkmWallet, PendingTransition};
use clap::Args;

use super::args::{parse_signer, SignerSpec, WalletArg};
use super::{runtime, Context};

/// `--timeout SECS`, shared by the lifecycle commands.
#[derive(Debug, Args, Clone)]
pub struct TimeoutArg {
    /// Seconds to wait for each signer
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub timeout: u64,
}

/// `wallet refresh`.
#[derive(Debug, Args)]
pub struct RefreshArgs {
    #[command(flatten)]
    pub wallet: WalletArg,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

/// `wallet remove-signer`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Roster index of the signer to remove (see `ckm wallet show`)
    #[arg(long = "signer", value_name = "INDEX")]
    pub index: u16,
    #[command(flatten)]
    pub wallet: WalletArg,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

/// `wallet repair`.
#[derive(Debug, Args)]
pub struct RepairArgs {
    /// Roster index of the signer whose share was lost
    #[arg(long = "signer", value_name = "INDEX")]
    pub index: u16,
    /// The replacement signer (a fresh home, approved as a peer by the other signers'
    /// operators): URL#PUBKEY or https://…#PUBKEY@TLS_SHA256
    #[arg(long = "to", value_name = "URL#PUBKEY", value_parser = parse_signer)]
    pub to: SignerSpec,
    /// Roster indexes of the helpers (default: the first t other signers)
    #[arg(long, value_name = "INDEX", value_delimiter = ',')]
    pub helpers: Vec<u16>,
    /// Repair alone, without refreshing every share (by default the repair and a refresh
    /// are one transition: a repaired share alone is the same point as the lost one, so a
    /// stolen copy of the lost share would keep combining until every share changes)
    #[arg(long)]
    pub no_refresh: bool,
    #[command(flatten)]
    pub wallet: WalletArg,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

/// `wallet add-signer`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The new signer: URL#PUBKEY or https://…#PUBKEY@TLS_SHA256
    #[arg(value_name = "URL#PUBKEY", value_parser = parse_signer)]
    pub signer: SignerSpec,
    /// Roster indexes of the helpers (default: the first t signers)
    #[arg(long, value_name = "INDEX", value_delimiter = ',')]
    pub helpers: Vec<u16>,
    /// Enrol alone, without refreshing every share (by default the enrolment and a refresh
    /// are one transition, so that no share of the roster before stays valid)
    #[arg(long)]
    pub no_refresh: bool,
    #[command(flatten)]
    pub wallet: WalletArg,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

/// `wallet resume` and `wallet show`.
#[derive(Debug, Args)]
pub struct WalletOnlyArgs {
    #[command(flatten)]
    pub wallet: WalletArg,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

/// The coordinator's client with the command's timeout.
pub(crate) fn client(ctx: &Context, timeout: &TimeoutArg) -> Result<Client> {
    Ok(Client::new(
        ctx.coordinator_identity()?,
        Duration::from_secs(timeout.timeout),
    )?)
}

/// Locks and opens the wallet for `operation`; the lock is held while the guard lives.
fn open(ctx: &Context, wallet: &WalletArg, operation: &str) -> Result<(WalletLock, CkmWallet)> {
    let (lock, w) = ctx.open_wallet_locked(wallet.name.as_deref(), operation)?;
    if w.meta().keygen.is_none() {
        bail!(
            "wallet '{}' predates certified key generation: its signers cannot be changed in place; move its funds with `ckm wallet migrate`",
            w.meta().name
        );
    }
    Ok((lock, w))
}

fn helpers_or_default(given: &[u16], members: &[u16], exclude: Option<u16>, t: u16) -> Vec<u16> {
    if !given.is_empty() {
        let mut h = given.to_vec();
        h.sort_unstable();
        h.dedup();
        return h;
    }
    members
        .iter()
        .copied()
        .filter(|i| Some(*i) != exclude)
        .take(usize::from(t))
        .collect()
}

/// Runs one transition: prepare everywhere, record the decision, commit everywhere.
fn run(
    ctx: &Context,
    mut w: CkmWallet,
    kind: TransitionKind,
    newcomer: Option<RosterEntry>,
    helpers: &[u16],
    timeout: &TimeoutArg,
) -> Result<()> {
    if w.meta().pending.is_some() {
        bail!(
            "wallet '{}' has a transition to finish first: run `ckm wallet resume`",
            w.meta().name
        );
    }
    let meta = w.meta().clone();
    let from = meta.current_state();
    let t = meta.group.threshold();
    let members = from.roster.indexes();
    let removed = match kind {
        TransitionKind::Remove(i) => from.roster.get(i).cloned(),
        _ => None,
    };
    let (new_roster, helpers) = match kind {
        TransitionKind::Refresh => (from.roster.clone(), members.clone()),
        TransitionKind::Remove(i) => {
            if from.roster.get(i).is_none() {
                bail!(
                    "signer {i} is not in the roster of '{}' (see `ckm wallet show`)",
                    meta.name
                );
            }
            let roster = from.roster.without(i)?;
            if roster.len() < t {
                bail!(
                    "removing signer {i} would leave {} signers for a {t}-of-{} wallet; add a signer first, or move the funds with `ckm wallet migrate`",
                    roster.len(),
                    from.roster.len()
                );
            }
            let indexes = roster.indexes();
            (roster, indexes)
        }
        TransitionKind::Repair(i)
        | TransitionKind::Enrol(i)
        | TransitionKind::RepairRefresh(i)
        | TransitionKind::EnrolRefresh(i) => {
            let entry = newcomer
                .clone()
                .ok_or_else(|| anyhow!("no new signer given"))?;
            let roster = from.roster.with(entry)?;
            (roster, helpers_or_default(helpers, &members, Some(i), t))
        }
    };
    let key = ctx.coordinator_identity()?;
    let context = TransitionContext {
        version: TRANSITION_VERSION,
        session: SessionId::random(&mut rand::rngs::OsRng),
        kind,
        wallet: GroupKey::of(&meta.group),
        coordinator: key.public(),
        from_epoch: from.epoch,
        from_state: from.hash(),
        new_roster,
        helpers,
    };
    context
        .check(&from)
        .with_context(|| format!("cannot run a {kind} on '{}'", meta.name))?;
    let joining = match (&newcomer, &meta.keygen) {
        (Some(_), Some(keygen)) => Some(Joining {
            name: meta.name.clone(),
            network: meta.network,
            creator: keygen.context.coordinator,
            history: meta
                .history()
                .ok_or_else(|| anyhow!("no certified history"))?,
        }),
        _ => None,
    };
    let client = client(ctx, timeout)?;
    ctx.say(format!(
        "running the {kind} of '{}' (epoch {} → {}) across {} signers…",
        meta.name,
        from.epoch,
        from.epoch + 1,
        context.new_roster.len()
    ));
    let rt = runtime()?;
    let prepared = rt
        .block_on(run_transition(&client, context, from, joining))
        .with_context(|| {
            format!("the {kind} failed before every signer prepared; the old epoch stays (the members were asked to cancel or vote abort; `ckm wallet transition status` shows what each holds)")
        })?;
    // Cached only: the members' votes decide, and any coordinator can finish from them.
    let mut cached = meta;
    cached.pending = Some(PendingTransition {
        record: prepared.record.clone(),
        decided: false,
        committed: Vec::new(),
    });
    w.set_meta(cached)?;
    let members = prepared.record.state.roster.entries().to_vec();
    let settlement = rt.block_on(settle(
        &client,
        &members,
        &prepared.record,
        &prepared.prepared,
        Decision::Commit,
    ));
    if let (Some(entry), Some(cert)) = (&removed, &settlement.certificate) {
        if cert.decision == Decision::Commit {
            match rt.block_on(farewell(&client, entry, &prepared.record, cert)) {
                Ok(_) => ctx.say(format!(
                    "signer {} checked the removal's commit certificate and erased its share",
                    entry.index
                )),
                Err(e) => ctx.say(format!(
                    "warning: the removed signer {} did not erase its share ({e}); its share no longer combines with any current one, but have its operator delete its home",
                    entry.index
                )),
            }
        }
    }
    conclude(ctx, &mut w, &prepared.record, &settlement, false)
}

/// Brings the coordinator's wallet in line with a settlement: a commit applied by every
/// member becomes the wallet's epoch; an abort clears the cache; anything else is reported
/// with what is missing (and `ckm wallet resume` to run once they are reachable).
fn conclude(
    ctx: &Context,
    w: &mut CkmWallet,
    record: &CertifiedTransition,
    settlement: &Settlement,
    resuming: bool,
) -> Result<()> {
    let mut meta = w.meta().clone();
    let all = record.state.roster.indexes();
    match settlement.decision() {
        Some(Decision::Commit) => {
            let committed: Vec<u16> = settlement.applied.keys().copied().collect();
            catch_up(&mut meta, std::slice::from_ref(record))?;
            if committed == all {
                meta.pending = None;
                w.set_meta(meta.clone())?;
                let fingerprint = meta.fingerprint();
                return ctx.output(
                    serde_json::json!({
                        "wallet": meta.name,
                        "transition": record.context.kind.to_string(),
                        "decision": "commit",
                        "epoch": meta.epoch,
                        "signers": all,
                        "threshold": meta.group.threshold(),
                        "fingerprint": fingerprint.map(|f| f.to_string()),
                    }),
                    || {
                        format!(
                            "{} of '{}' committed by every signer's ready vote: epoch {}, signers {:?} ({}-of-{}); addresses unchanged",
                            record.context.kind,
                            meta.name,
                            meta.epoch,
                            all,
                            meta.group.threshold(),
                            all.len()
                        )
                    },
                );
            }
            meta.pending = Some(PendingTransition {
                record: record.clone(),
                decided: true,
                committed: committed.clone(),
            });
            w.set_meta(meta)?;
            bail!(
                "the {} is decided (commit certificate) and {} of {} signers applied it; run `ckm wallet resume` once the others are reachable:\n  - {}",
                record.context.kind,
                committed.len(),
                all.len(),
                reasons(&settlement.unapplied)
            )
        }
        Some(Decision::Abort) => {
            meta.pending = None;
            w.set_meta(meta.clone())?;
            let voters: Vec<u16> = settlement
                .votes
                .iter()
                .filter(|(_, v)| v.kind == ckm::protocol::lifecycle::VoteKind::Abort)
                .map(|(i, _)| *i)
                .collect();
            if resuming {
                return ctx.output(
                    serde_json::json!({
                        "wallet": meta.name,
                        "transition": record.context.kind.to_string(),
                        "decision": "abort",
                        "abort_votes": voters,
                        "epoch": meta.epoch,
                    }),
                    || {
                        format!(
                            "the unfinished {} was rolled back by the abort votes of signers {voters:?}; '{}' stays at epoch {}",
                            record.context.kind, meta.name, meta.epoch
                        )
                    },
                );
            }
            bail!(
                "the {} was rolled back by the members' abort votes ({:?}); '{}' stays at epoch {}{}",
                record.context.kind,
                settlement.votes.iter().filter(|(_, v)| v.kind == ckm::protocol::lifecycle::VoteKind::Abort).map(|(i, _)| *i).collect::<Vec<_>>(),
                meta.name,
                meta.epoch,
                if settlement.missing.is_empty() { String::new() } else { format!(":\n  - {}", reasons(&settlement.missing)) }
            )
        }
        None => bail!(
            "the {} is undecided: the votes gathered ({}) make no certificate, so every signer keeps its old share and the pending one; run `ckm wallet resume` once these signers are reachable:\n  - {}",
            record.context.kind,
            settlement
                .votes
                .iter()
                .map(|(i, v)| format!("{i}: {}", v.kind))
                .collect::<Vec<_>>()
                .join(", "),
            reasons(&settlement.missing)
        ),
    }
}

/// Applies the committed transitions this coordinator has not seen, in order, each checked
/// against the state before it (certificates and recomputed state).
fn catch_up(
    meta: &mut ckm::wallet::WalletMeta,
    transitions: &[CertifiedTransition],
) -> Result<bool> {
    let mut changed = false;
    for t in transitions {
        if t.state.epoch <= meta.epoch {
            continue;
        }
        t.verify(&meta.current_state()).with_context(|| {
            format!(
                "the signers' transition to epoch {} does not follow this coordinator's record of the wallet (epoch {})",
                t.state.epoch, meta.epoch
            )
        })?;
        meta.epoch = t.state.epoch;
        meta.group = t.state.group.clone();
        meta.roster = t.state.roster.clone();
        meta.transitions.push(t.clone());
        changed = true;
    }
    Ok(changed)
}

fn reasons(list: &[(u16, String)]) -> String {
    list.iter()
        .map(|(i, e)| format!("signer {i}: {e}"))
        .collect::<Vec<_>>()
        .join("\n  - ")
}

pub fn refresh(ctx: &Context, args: RefreshArgs) -> Result<()> {
    let (_lock, w) = open(ctx, &args.wallet, "wallet refresh")?;
    run(ctx, w, TransitionKind::Refresh, None, &[], &args.timeout)
}

pub fn remove_signer(ctx: &Context, args: RemoveArgs) -> Result<()> {
    let (_lock, w) = open(ctx, &args.wallet, "wallet remove-signer")?;
    run(
        ctx,
        w,
        TransitionKind::Remove(args.index),
        None,
        &[],
        &args.timeout,
    )
}

pub fn repair(ctx: &Context, args: RepairArgs) -> Result<()> {
    let (_lock, w) = open(ctx, &args.wallet, "wallet repair")?;
    let entry = RosterEntry {
        index: args.index,
        url: args.to.url,
        identity: args.to.identity,
        tls_sha256: args.to.tls_sha256,
    };
    let kind = if args.no_refresh {
        TransitionKind::Repair(args.index)
    } else {
        TransitionKind::RepairRefresh(args.index)
    };
    run(ctx, w, kind, Some(entry), &args.helpers, &args.timeout)
}

pub fn add_signer(ctx: &Context, args: AddArgs) -> Result<()> {
    let (_lock, w) = open(ctx, &args.wallet, "wallet add-signer")?;
    let index = w.meta().roster.indexes().into_iter().max().unwrap_or(0) + 1;
    let entry = RosterEntry {
        index,
        url: args.signer.url,
        identity: args.signer.identity,
        tls_sha256: args.signer.tls_sha256,
    };
    let kind = if args.no_refresh {
        TransitionKind::Enrol(index)
    } else {
        TransitionKind::EnrolRefresh(index)
    };
    run(ctx, w, kind, Some(entry), &args.helpers, &args.timeout)
}

pub fn resume(ctx: &Context, args: WalletOnlyArgs) -> Result<()> {
    let (_lock, mut w) = open(ctx, &args.wallet, "wallet resume")?;
    let client = client(ctx, &args.timeout)?;
    let meta = w.meta().clone();
    let known = known_members(&meta);
    ctx.say("asking every signer what it holds…");
    let resumed = runtime()?.block_on(resume_transition(
        &client,
        &known,
        GroupKey::of(&meta.group),
    ));
    let unreachable: Vec<(u16, String)> = resumed
        .statuses
        .iter()
        .filter_map(|(i, s)| s.as_ref().err().map(|e| (*i, e.clone())))
        .collect();
    match (&resumed.record, &resumed.settlement) {
        (Some(record), Some(settlement)) => conclude(ctx, &mut w, record, settlement, true),
        _ => {
            let mut meta = meta;
            let caught_up = catch_up(&mut meta, &resumed.history)?;
            if caught_up {
                // Keep the signers' URLs this coordinator knows (the certified roster has
                // the same identities).
                for k in &known {
                    if let Some(e) = meta.roster.index_of(&k.identity) {
                        meta.roster.set_endpoint(e, k.url.clone(), k.tls_sha256);
                    }
                }
            }
            meta.pending = None;
            w.set_meta(meta.clone())?;
            ctx.output(
                serde_json::json!({
                    "wallet": meta.name,
                    "epoch": meta.epoch,
                    "caught_up": caught_up,
                    "pending": false,
                    "unreachable": unreachable.iter().map(|(i, e)| serde_json::json!({"index": i, "error": e})).collect::<Vec<_>>(),
                }),
                || {
                    let mut text = if caught_up {
                        format!(
                            "no transition of '{}' is pending; caught up with the signers' certified history: epoch {}",
                            meta.name, meta.epoch
                        )
                    } else {
                        format!(
                            "nothing to resume: no signer holds a transition of '{}' pending; epoch {}",
                            meta.name, meta.epoch
                        )
                    };
                    for (i, e) in &unreachable {
                        text.push_str(&format!("\n  unreachable: signer {i}: {e}"));
                    }
                    text
                },
            )
        }
    }
}

/// The signers this coordinator knows of: the roster, and a newcomer of the transition it
/// has cached as pending.
fn known_members(meta: &ckm::wallet::WalletMeta) -> Vec<RosterEntry> {
    let mut known = meta.roster.entries().to_vec();
    if let Some(p) = &meta.pending {
        for m in p.record.state.roster.entries() {
            if !known.iter().any(|k| k.identity == m.identity) {
                known.push(m.clone());
            }
        }
    }
    known
}

/// `ckm wallet transition status`: each member's pending transition, its votes, and the
/// certificate it holds; who is missing for a decision.
pub fn transition_status(ctx: &Context, args: WalletOnlyArgs) -> Result<()> {
    let w = ctx.open_wallet(args.wallet.name.as_deref())?;
    let meta = w.meta().clone();
    let client = client(ctx, &args.timeout)?;
    let known = known_members(&meta);
    let statuses = runtime()?.block_on(gather_status(&client, &known, GroupKey::of(&meta.group)));
    let rows: Vec<serde_json::Value> = statuses
        .iter()
        .map(|(i, s)| match s {
            Ok(s) => serde_json::json!({
                "index": i,
                "epoch": s.epoch,
                "pending": s.pending.as_ref().map(|p| serde_json::json!({
                    "session": p.record.context.session.to_string(),
                    "transition": p.record.context.kind.to_string(),
                    "to_epoch": p.record.state.epoch,
                    "prepared": true,
                    "vote": p.standing.as_ref().map(|v| v.kind.to_string()),
                })),
                "last_decided": s.last.as_ref().map(|d| serde_json::json!({
                    "session": d.session.to_string(),
                    "decision": d.certificate.decision.to_string(),
                    "votes": d.certificate.votes.keys().collect::<Vec<_>>(),
                })),
            }),
            Err(e) => serde_json::json!({"index": i, "error": e}),
        })
        .collect();
    let quorum = statuses
        .iter()
        .filter_map(|(_, s)| s.as_ref().ok()?.pending.as_ref())
        .map(|p| {
            ckm::protocol::lifecycle::Ballot::new(&p.record.context, &p.record.state).quorums()
        })
        .next();
    ctx.output(
        serde_json::json!({
            "wallet": meta.name,
            "epoch": meta.epoch,
            "signers": rows,
            "quorums": quorum,
        }),
        || {
            let mut lines = vec![format!("wallet '{}' (this coordinator: epoch {})", meta.name, meta.epoch)];
            if let Some(q) = quorum {
                lines.push(format!(
                    "a commit needs all {} members ready; an abort needs {} abort votes (up to {} colluding members tolerated)",
                    q.commit, q.abort, q.colluders
                ));
            }
            for r in &rows {
                let line = if let Some(e) = r["error"].as_str() {
                    format!("  #{}  unreachable: {e}", r["index"])
                } else {
                    let pending = match &r["pending"] {
                        serde_json::Value::Object(p) => format!(
                            "pending {} (session {}) to epoch {}, vote: {}",
                            p["transition"].as_str().unwrap_or(""),
                            p["session"].as_str().unwrap_or(""),
                            p["to_epoch"],
                            p["vote"].as_str().unwrap_or("prepared only")
                        ),
                        _ => "nothing pending".to_string(),
                    };
                    let last = match &r["last_decided"] {
                        serde_json::Value::Object(d) => format!("; last decided: {} ({})", d["decision"].as_str().unwrap_or(""), d["session"].as_str().unwrap_or("")),
                        _ => String::new(),
                    };
                    format!("  #{}  epoch {}  {pending}{last}", r["index"], r["epoch"])
                };
                lines.push(line);
            }
            lines.join("\n")
        },
    )
}

pub fn show(ctx: &Context, args: WalletOnlyArgs) -> Result<()> {
    let w = ctx.open_wallet(args.wallet.name.as_deref())?;
    let meta = w.meta().clone();
    let client = client(ctx, &args.timeout)?;
    let members = meta.roster.entries().to_vec();
    let statuses = runtime()?.block_on(gather_status(&client, &members, GroupKey::of(&meta.group)));
    let expected = meta.current_state().hash();
    let rows: Vec<serde_json::Value> = members
        .iter()
        .map(|m| {
            let status = statuses.iter().find(|(i, _)| *i == m.index).map(|(_, s)| s);
            let (epoch, agrees, pending, error) = match status {
                Some(Ok(status)) => (
                    status.epoch,
                    Some(status.state == Some(expected)),
                    status.pending.as_ref().map(|p| {
                        format!(
                            "{} (epoch {})",
                            p.record.context.session, p.record.state.epoch
                        )
                    }),
                    None,
                ),
                Some(Err(e)) => (None, None, None, Some(e.clone())),
                None => (None, None, None, Some("no answer".to_string())),
            };
            serde_json::json!({
                "index": m.index,
                "url": m.url,
                "identity": m.identity.to_string(),
                "epoch": epoch,
                "agrees": agrees,
                "pending": pending,
                "error": error,
            })
        })
        .collect();
    let fingerprint = meta.fingerprint().map(|f| f.to_string());
    ctx.output(
        serde_json::json!({
            "wallet": meta.name,
            "network": meta.network.to_string(),
            "epoch": meta.epoch,
            "threshold": meta.group.threshold(),
            "signers": rows,
            "fingerprint": fingerprint,
            "transitions": meta.transitions.iter().map(|t| t.context.kind.to_string()).collect::<Vec<_>>(),
            "pending": meta.pending.as_ref().map(|p| p.record.context.kind.to_string()),
            "birth_height": meta.birth_height,
        }),
        || {
            let mut lines = vec![
                format!(
                    "wallet:      {} ({}-of-{}, {})",
                    meta.name,
                    meta.group.threshold(),
                    members.len(),
                    meta.network
                ),
                format!("fingerprint: {}", fingerprint.clone().unwrap_or_else(|| "none".into())),
                format!("epoch:       {}", meta.epoch),
                format!(
                    "birth:       {}",
                    meta.birth_height.map_or_else(
                        || "not recorded (a first sync from bitcoind starts at the network's default or --birth-height)".to_string(),
                        |h| format!("block {h} (a first sync from bitcoind starts there)")
                    )
                ),
            ];
            if let Some(p) = &meta.pending {
                lines.push(format!(
                    "pending:     {} (run `ckm wallet resume`)",
                    p.record.context.kind
                ));
            }
            lines.push("signers:".into());
            for r in &rows {
                let state = match (&r["epoch"], &r["agrees"]) {
                    (serde_json::Value::Number(e), serde_json::Value::Bool(true)) => format!("epoch {e}"),
                    (serde_json::Value::Number(e), _) => format!("epoch {e}, DISAGREES with this coordinator"),
                    _ => format!("unreachable: {}", r["error"].as_str().unwrap_or("")),
                };
                lines.push(format!(
                    "  #{} {}  {}  [{state}]",
                    r["index"],
                    r["url"].as_str().unwrap_or(""),
                    r["identity"].as_str().unwrap_or("")
                ));
            }
            for t in &meta.transitions {
                lines.push(format!("  history: epoch {} by {}", t.state.epoch, t.context.kind));
            }
            lines.join("\n")
        },
    )
}
