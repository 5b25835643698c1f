//! `ckm signer audit …` and `ckm signer state …`: the signer's keyed audit records and their
//! sealed checkpoint. Both need the passphrase: the records' MACs are keyed by it.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use ckm::signer::audit;
use ckm::signer::home::{HomeError, SignerHome};
use ckm::signer::legacy::open_migrating;
use clap::Subcommand;

use super::{read_passphrase, Context};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the keyed chain of the audit records; fails at the first edited, removed or
    /// reordered record
    ///
    /// Example:
    ///   ckm --home ~/signer1 signer audit verify
    #[command(verbatim_doc_comment)]
    Verify {
        /// Read the passphrase from this file instead of CKM_PASSPHRASE or a prompt
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Print the audit records (after verifying them)
    Show {
        /// Read the passphrase from this file instead of CKM_PASSPHRASE or a prompt
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Check the records (audit chain, policy, peers) against the sealed checkpoint
    ///
    /// A signer whose records are missing, truncated, replaced or older than its checkpoint
    /// (a deleted file, a restored backup) refuses to sign; this says why.
    ///
    /// Example:
    ///   ckm --home ~/signer1 signer state check
    #[command(verbatim_doc_comment)]
    Check {
        /// Read the passphrase from this file instead of CKM_PASSPHRASE or a prompt
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Accept the current records after a rollback warning (recorded in the audit log)
    ///
    /// Only after you checked why the records are older than the checkpoint: spends signed
    /// in the lost part no longer count against the daily limit. A running server applies
    /// the reset at its next request.
    ///
    /// Example:
    ///   ckm --home ~/signer1 signer state reset --reason "restored from last night's backup"
    #[command(verbatim_doc_comment)]
    Reset {
        /// Why (kept in the audit record)
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// Read the passphrase from this file instead of CKM_PASSPHRASE or a prompt
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
}

fn open(ctx: &Context, passphrase_file: Option<PathBuf>) -> Result<SignerHome> {
    let passphrase = read_passphrase(passphrase_file.as_deref(), false)?;
    Ok(open_migrating(
        &ctx.home,
        passphrase.as_bytes(),
        &mut rand::rngs::OsRng,
    )?)
}

pub fn audit(ctx: &Context, cmd: AuditCommand) -> Result<()> {
    let (passphrase_file, show) = match cmd {
        AuditCommand::Verify { passphrase_file } => (passphrase_file, false),
        AuditCommand::Show { passphrase_file } => (passphrase_file, true),
    };
    let home = open(ctx, passphrase_file)?;
    let mut records = Vec::new();
    let (count, _) = home
        .db()
        .read(|c| {
            Ok(audit::verify_chain(c, home.audit_key(), |r| {
                records.push(r.clone())
            }))
        })?
        .context("the audit records do not verify")?;
    if !show {
        return ctx.output(serde_json::json!({ "ok": true, "records": count }), || {
            format!("audit records OK: {count} records, keyed chain intact")
        });
    }
    ctx.output(serde_json::to_value(&records)?, || {
        if records.is_empty() {
            return "no audit records".into();
        }
        records
            .iter()
            .map(|r| {
                let e = &r.event;
                let mut line = format!("#{} {} {}", r.seq, r.time, e.kind);
                if !e.wallet.is_empty() {
                    line.push_str(&format!(" {}", e.wallet));
                }
                if !e.txid.is_empty() {
                    line.push_str(&format!(
                        " tx {} takes {} sat (fee {} sat)",
                        e.txid, e.outflow_sats, e.fee_sats
                    ));
                }
                if !e.detail.is_empty() {
                    line.push_str(&format!(": {}", e.detail));
                }
                line
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

pub fn state(ctx: &Context, cmd: StateCommand) -> Result<()> {
    match cmd {
        StateCommand::Check { passphrase_file } => {
            let home = open(ctx, passphrase_file)?;
            match home.check_state(&mut rand::rngs::OsRng) {
                Ok(s) => ctx.output(
                    serde_json::json!({
                        "ok": true,
                        "records": s.at.audit_count,
                        "checkpoint_records": s.checkpoint.map(|c| c.audit_count),
                        "policy_version": s.at.policy_version,
                        "peers_version": s.at.peers_version,
                    }),
                    || {
                        let ahead = s
                            .checkpoint
                            .map(|c| s.at.audit_count.saturating_sub(c.audit_count))
                            .unwrap_or(0);
                        format!(
                            "state OK: {} audit records, policy version {}, peers version {}; the checkpoint matches{}",
                            s.at.audit_count,
                            s.at.policy_version,
                            s.at.peers_version,
                            if ahead > 0 {
                                format!(" ({ahead} records were ahead of it, as after a crash right after a signing: it follows them now)")
                            } else {
                                String::new()
                            }
                        )
                    },
                ),
                Err(HomeError::State(e)) => {
                    Err(anyhow::anyhow!(
                        "{e}; {} (`ckm signer state reset --reason TEXT`)",
                        e.advice()
                    ))
                }
                Err(other) => Err(other.into()),
            }
        }
        StateCommand::Reset {
            reason,
            passphrase_file,
        } => {
            let home = open(ctx, passphrase_file)?;
            let at = home.reset_state(&reason, &mut rand::rngs::OsRng)?;
            ctx.output(
                serde_json::json!({ "ok": true, "records": at.audit_count }),
                || {
                    format!(
                        "checkpoint reset to the current records ({} audit records, policy version {}); the reset is recorded",
                        at.audit_count, at.policy_version
                    )
                },
            )
        }
    }
}
