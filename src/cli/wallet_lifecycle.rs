//! `ckm wallet refresh | remove-signer | repair | add-signer | resume | show`: managing a
//! wallet's signers without moving funds. Each runs a certified epoch transition across the
//! signers (`ckm::protocol::lifecycle`) in two phases: every member stores the new share
//! pending; the coordinator records its decision; then every member commits and erases its
//! old share. An interrupted transition is finished or rolled back by `ckm wallet resume`
//! (or by running the same command again).

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use ckm::keys::{GroupKey, RosterEntry};
use ckm::net::client::Client;
use ckm::net::coordinator::{
    abort_transition, commit_transition, run_transition, transition_status,
};
use ckm::protocol::lifecycle::{Joining, TransitionContext, TransitionKind, TRANSITION_VERSION};
use ckm::protocol::SessionId;
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

fn client(ctx: &Context, timeout: &TimeoutArg) -> Result<Client> {
    Ok(Client::new(
        ctx.coordinator_identity()?,
        Duration::from_secs(timeout.timeout),
    )?)
}

fn open(ctx: &Context, wallet: &WalletArg) -> Result<CkmWallet> {
    let w = ctx.open_wallet(wallet.name.as_deref())?;
    if w.meta().keygen.is_none() {
        bail!(
            "wallet '{}' predates certified key generation: its signers cannot be changed in place; move its funds with `ckm wallet migrate`",
            w.meta().name
        );
    }
    Ok(w)
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
        TransitionKind::Repair(i) | TransitionKind::Enrol(i) => {
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
    let record = runtime()?
        .block_on(run_transition(&client, context, from, joining))
        .with_context(|| {
            format!("the {kind} failed; nothing changed (every signer was told to abort)")
        })?;
    // Every member holds the new share pending: the decision is recorded before any commit.
    let mut decided = meta;
    decided.pending = Some(PendingTransition {
        record,
        decided: true,
        committed: Vec::new(),
    });
    w.set_meta(decided)?;
    finish(ctx, &mut w, &client)
}

/// Commits a decided transition on every member that has not acknowledged it yet; when all
/// have, makes the new epoch the wallet's.
fn finish(ctx: &Context, w: &mut CkmWallet, client: &Client) -> Result<()> {
    let mut meta = w.meta().clone();
    let Some(mut pending) = meta.pending.clone() else {
        return Ok(());
    };
    let record = pending.record.clone();
    let members: Vec<RosterEntry> = record
        .state
        .roster
        .entries()
        .iter()
        .filter(|e| !pending.committed.contains(&e.index))
        .cloned()
        .collect();
    let outcomes = runtime()?.block_on(commit_transition(client, &members, record.context.session));
    let mut failures = Vec::new();
    for (index, outcome) in outcomes {
        match outcome {
            Ok(epoch) if epoch == record.state.epoch => pending.committed.push(index),
            Ok(epoch) => failures.push(format!("signer {index} reports epoch {epoch}")),
            Err(e) => failures.push(e),
        }
    }
    pending.committed.sort_unstable();
    pending.committed.dedup();
    let all = record.state.roster.indexes();
    if pending.committed == all {
        meta.epoch = record.state.epoch;
        meta.group = record.state.group.clone();
        meta.roster = record.state.roster.clone();
        meta.transitions.push(record.clone());
        meta.pending = None;
        w.set_meta(meta.clone())?;
        let fingerprint = meta.fingerprint();
        return ctx.output(
            serde_json::json!({
                "wallet": meta.name,
                "transition": record.context.kind.to_string(),
                "epoch": meta.epoch,
                "signers": all,
                "threshold": meta.group.threshold(),
                "fingerprint": fingerprint.map(|f| f.to_string()),
            }),
            || {
                format!(
                    "{} of '{}' committed: epoch {}, signers {:?} ({}-of-{}); addresses unchanged",
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
    meta.pending = Some(pending.clone());
    w.set_meta(meta)?;
    bail!(
        "the {} is decided and {} of {} signers committed it; run `ckm wallet resume` once the others are reachable:\n  - {}",
        record.context.kind,
        pending.committed.len(),
        all.len(),
        failures.join("\n  - ")
    )
}

pub fn refresh(ctx: &Context, args: RefreshArgs) -> Result<()> {
    let w = open(ctx, &args.wallet)?;
    run(ctx, w, TransitionKind::Refresh, None, &[], &args.timeout)
}

pub fn remove_signer(ctx: &Context, args: RemoveArgs) -> Result<()> {
    let w = open(ctx, &args.wallet)?;
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
    let w = open(ctx, &args.wallet)?;
    let entry = RosterEntry {
        index: args.index,
        url: args.to.url,
        identity: args.to.identity,
        tls_sha256: args.to.tls_sha256,
    };
    run(
        ctx,
        w,
        TransitionKind::Repair(args.index),
        Some(entry),
        &args.helpers,
        &args.timeout,
    )
}

pub fn add_signer(ctx: &Context, args: AddArgs) -> Result<()> {
    let w = open(ctx, &args.wallet)?;
    let index = w.meta().roster.indexes().into_iter().max().unwrap_or(0) + 1;
    let entry = RosterEntry {
        index,
        url: args.signer.url,
        identity: args.signer.identity,
        tls_sha256: args.signer.tls_sha256,
    };
    run(
        ctx,
        w,
        TransitionKind::Enrol(index),
        Some(entry),
        &args.helpers,
        &args.timeout,
    )
}

pub fn resume(ctx: &Context, args: WalletOnlyArgs) -> Result<()> {
    let mut w = open(ctx, &args.wallet)?;
    let client = client(ctx, &args.timeout)?;
    if w.meta().pending.as_ref().is_some_and(|p| p.decided) {
        ctx.say("finishing the decided transition…");
        return finish(ctx, &mut w, &client);
    }
    // Nothing decided here: any transition a signer still holds pending was abandoned.
    let meta = w.meta().clone();
    let members = meta.roster.entries().to_vec();
    let rt = runtime()?;
    let statuses = rt.block_on(transition_status(
        &client,
        &members,
        GroupKey::of(&meta.group),
    ));
    let mut aborted = Vec::new();
    let mut unreachable = Vec::new();
    for (index, status) in statuses {
        match status {
            Ok((_, _, Some((session, _)))) => {
                rt.block_on(abort_transition(&client, &members, session));
                aborted.push(index);
            }
            Ok(_) => {}
            Err(e) => unreachable.push(e),
        }
    }
    ctx.output(
        serde_json::json!({
            "wallet": meta.name,
            "epoch": meta.epoch,
            "aborted_on": aborted,
            "unreachable": unreachable,
        }),
        || {
            let mut text = if aborted.is_empty() {
                format!("nothing to resume: '{}' is at epoch {}", meta.name, meta.epoch)
            } else {
                format!(
                    "rolled back an unfinished transition held by signers {aborted:?}; '{}' stays at epoch {}",
                    meta.name, meta.epoch
                )
            };
            for u in &unreachable {
                text.push_str(&format!("\n  unreachable: {u}"));
            }
            text
        },
    )
}

pub fn show(ctx: &Context, args: WalletOnlyArgs) -> Result<()> {
    let w = ctx.open_wallet(args.wallet.name.as_deref())?;
    let meta = w.meta().clone();
    let client = client(ctx, &args.timeout)?;
    let members = meta.roster.entries().to_vec();
    let statuses = runtime()?.block_on(transition_status(
        &client,
        &members,
        GroupKey::of(&meta.group),
    ));
    let expected = meta.current_state().hash();
    let rows: Vec<serde_json::Value> = members
        .iter()
        .map(|m| {
            let status = statuses.iter().find(|(i, _)| *i == m.index).map(|(_, s)| s);
            let (epoch, agrees, pending, error) = match status {
                Some(Ok((epoch, state, pending))) => (
                    Some(*epoch),
                    Some(*state == expected),
                    pending.map(|(s, e)| format!("{s} (epoch {e})")),
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
