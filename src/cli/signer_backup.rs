//! `ckm signer backup` and `ckm signer restore`: share backups as SSKR-split Gordian
//! Envelopes, one `ur:envelope/…` file per share (library: `ckm::signer::backup`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use ckm::signer::backup::{self, SignerBackup, Split};
use ckm::signer::home::{Restore, SignerHome};
use ckm::signer::legacy::open_migrating;
use ckm::store::{read_limited, write_atomic, KdfParams};
use clap::Subcommand;

use super::{read_passphrase, Context};

/// The backup subcommands (flattened into `ckm signer`).
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up this signer's identity key and wallet shares as SSKR shares (ur:envelope files)
    ///
    /// Writes one Gordian Envelope holding everything this signer needs to rejoin its wallets
    /// as itself: its identity key, and per wallet its key share, index, epoch, public record
    /// (the certified key generation, every transition and the roster) and policy, plus the
    /// approved peers. The envelope is encrypted under a fresh key, that key is split with
    /// SSKR into T-of-N shares, and each share is written as `ur:envelope/…` text to its own
    /// file (mode 0600) in DIR. Any T files restore the signer (`ckm signer restore`); fewer
    /// reveal nothing. With --backup-passphrase-file the content is also locked with that
    /// passphrase (Argon2id): then T files alone do not open it, and a lost passphrase makes
    /// the backup useless. Keep the files apart (different places, different people).
    ///
    /// A backup holds the shares of the current epoch: after a refresh, repair or other
    /// transition of a wallet, take a new backup (the old one no longer signs).
    ///
    /// Examples:
    ///   ckm --home ~/signer1 signer backup --split 2of3 --out /media/usb/backup
    ///   ckm --home ~/signer1 signer backup --wallet vault --split 3of5 --out backup \
    ///       --backup-passphrase-file ~/backup.pass
    #[command(verbatim_doc_comment)]
    Backup {
        /// Wallet to include, by name or group key (repeatable) [default: every wallet]
        #[arg(long = "wallet", value_name = "NAME")]
        wallets: Vec<String>,
        /// How many share files to write and how many restore: TofN, e.g. 2of3 (N <= 16)
        #[arg(long, value_name = "TofN")]
        split: Split,
        /// Directory for the share files (created if missing; existing files are never
        /// overwritten)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Also lock the backup with the passphrase in this file (needed again to restore)
        #[arg(long, value_name = "FILE")]
        backup_passphrase_file: Option<PathBuf>,
        /// Read the signer store's passphrase from this file instead of CKM_PASSPHRASE or a
        /// prompt
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Restore a signer into a new home from T of its backup's share files
    ///
    /// Reads the ur:envelope share files, checks they are shares of one backup and at least
    /// its threshold, opens it (with --backup-passphrase-file if it was locked with one), and
    /// re-checks every wallet: its certified history verifies offline and the share is the
    /// certified one of its index and epoch. Only then does it create the home, with the same
    /// identity key, the wallets, their policies and the approved peers, sealed under the new
    /// store passphrase; its audit records start afresh with a `restored` record. Any
    /// problem (too few shares, shares of different backups, a corrupted file, a wrong
    /// backup passphrase) stops it with nothing written. The home must not be a signer home
    /// yet. Before writing, it shows what the backup brings back — each wallet's epoch,
    /// coordinators and policy, and the approved peers — and asks for confirmation (skip
    /// with --yes; the audit records say the operator confirmed them). Then run `ckm signer
    /// serve`: the restored signer signs for a wallet only after `ckm wallet
    /// confirm-restored` (on the coordinator) showed it the other members' current epoch,
    /// and counts a wallet's daily limit as spent for 24 hours after the restore.
    ///
    /// Examples:
    ///   ckm --home ~/signer1-new signer restore backup/*-share1.ur backup/*-share3.ur
    ///   ckm --home ~/signer1-new signer restore share1.ur share2.ur \
    ///       --passphrase-file ~/signer1.pass --backup-passphrase-file ~/backup.pass --yes
    ///   ckm --home ~/coord wallet confirm-restored --signer 1 --wallet vault
    #[command(verbatim_doc_comment)]
    Restore {
        /// The share files (at least the backup's threshold)
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        /// The passphrase the backup was locked with, if any
        #[arg(long, value_name = "FILE")]
        backup_passphrase_file: Option<PathBuf>,
        /// Read the new store's passphrase from this file instead of CKM_PASSPHRASE or a
        /// prompt
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Confirm the policies, coordinators and peers the backup brings back without
        /// asking
        #[arg(long)]
        yes: bool,
    },
}

pub fn run(ctx: &Context, cmd: BackupCommand) -> Result<()> {
    match cmd {
        BackupCommand::Backup {
            wallets,
            split,
            out,
            backup_passphrase_file,
            passphrase_file,
        } => backup(
            ctx,
            &wallets,
            split,
            &out,
            backup_passphrase_file.as_deref(),
            passphrase_file.as_deref(),
        ),
        BackupCommand::Restore {
            files,
            backup_passphrase_file,
            passphrase_file,
            yes,
        } => restore(
            ctx,
            &files,
            backup_passphrase_file.as_deref(),
            passphrase_file.as_deref(),
            yes,
        ),
    }
}

fn backup_passphrase(file: Option<&Path>) -> Result<Option<zeroize::Zeroizing<String>>> {
    file.map(|f| read_passphrase(Some(f), false)).transpose()
}

fn backup(
    ctx: &Context,
    wallets: &[String],
    split: Split,
    out: &Path,
    backup_passphrase_file: Option<&Path>,
    passphrase_file: Option<&Path>,
) -> Result<()> {
    if !SignerHome::exists(&ctx.home) {
        bail!(
            "{} is not a signer home; run `ckm signer init` first",
            ctx.home.display()
        );
    }
    let lock = backup_passphrase(backup_passphrase_file)?;
    let passphrase = read_passphrase(passphrase_file, false)?;
    let home = open_migrating(&ctx.home, passphrase.as_bytes(), &mut rand::rngs::OsRng)?;
    drop(passphrase);
    let mut rng = rand::rngs::OsRng;
    if let Err(e) = home.check_state(&mut rng) {
        return Err(
            anyhow::Error::new(e).context("not backing up a signer whose records do not check out")
        );
    }
    let taken = SignerBackup::from_home(&home, wallets, ckm::auth::unix_now())?;
    let shares = backup::split(&taken, split, lock.as_ref().map(|p| p.as_bytes()), &mut rng)?;
    let identity = taken.identity.public().to_string();
    let prefix = format!(
        "ckm-signer-{}-backup-{:04x}",
        identity.get(..8).unwrap_or(&identity),
        shares.identifier
    );
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let paths: Vec<PathBuf> = (1..=shares.texts.len())
        .map(|i| out.join(format!("{prefix}-share{i}.ur")))
        .collect();
    if let Some(p) = paths.iter().find(|p| p.exists()) {
        bail!("{} exists already; nothing was written", p.display());
    }
    for (path, text) in paths.iter().zip(&shares.texts) {
        write_atomic(path, format!("{text}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let names: Vec<String> = taken.wallets.iter().map(|w| w.info.name.clone()).collect();
    let files: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    ctx.output(
        serde_json::json!({
            "identity": identity,
            "backup": format!("{:04x}", shares.identifier),
            "split": split.to_string(),
            "threshold": split.threshold(),
            "shares": split.shares(),
            "wallets": names,
            "backup_passphrase": lock.is_some(),
            "files": files,
        }),
        || {
            format!(
                "backup {:04x} of signer {identity} ({}): any {} of these {} files restore it{}:\n  {}\nKeep them in different places.",
                shares.identifier,
                names.join(", "),
                split.threshold(),
                split.shares(),
                if lock.is_some() { " together with the backup passphrase" } else { "" },
                files.join("\n  ")
            )
        },
    )
}

fn restore(
    ctx: &Context,
    files: &[PathBuf],
    backup_passphrase_file: Option<&Path>,
    passphrase_file: Option<&Path>,
    yes: bool,
) -> Result<()> {
    let dir = SignerHome::dir_of(&ctx.home);
    if dir.exists() {
        bail!(
            "{} exists already: restore only into a new home (a different --home)",
            dir.display()
        );
    }
    if ctx.home.join("identity.key").exists() {
        bail!(
            "{} is a coordinator home; restore a signer into a home of its own",
            ctx.home.display()
        );
    }
    let mut texts = Vec::with_capacity(files.len());
    for f in files {
        let bytes = read_limited(f, backup::MAX_SHARE_TEXT as u64)
            .with_context(|| format!("reading {}", f.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{} is not a text file", f.display()))?;
        texts.push((f.display().to_string(), text));
    }
    let lock = backup_passphrase(backup_passphrase_file)?;
    let restored = backup::combine(&texts, lock.as_ref().map(|p| p.as_bytes()))
        .context("nothing was written")?;
    let brought_back = brought_back(&restored);
    if !ctx.json {
        eprintln!("{brought_back}");
    }
    crate::cli::spend::confirm(
        yes,
        "Restore these wallets with these policies, coordinators and peers?",
        "restoring a backup's policies, coordinators and peers",
    )
    .context("nothing was written")?;
    let passphrase = read_passphrase(passphrase_file, true)?;
    let SignerBackup {
        identity: key,
        wallets: restored_wallets,
        peers,
        created,
    } = restored;
    let identity = key.public();
    let wallets: Vec<_> = restored_wallets
        .iter()
        .map(|w| (&w.info, &w.share, &w.policy))
        .collect();
    let home = SignerHome::restore(
        &ctx.home,
        passphrase.as_bytes(),
        KdfParams::default(),
        Restore {
            identity: key,
            wallets,
            peers: &peers,
            detail: format!(
                "restored from {} share(s) of a backup made at {created}; the operator confirmed (--yes: {yes}) what it brings back: {}",
                files.len(),
                brought_back.replace('\n', "; "),
            ),
        },
        &mut rand::rngs::OsRng,
    )
    .context("restoring the signer home")?;
    let rows: Vec<serde_json::Value> = restored_wallets
        .iter()
        .map(|w| {
            serde_json::json!({
                "name": w.info.name,
                "group_key": w.info.group_key.to_string(),
                "index": w.info.index,
                "epoch": w.info.epoch,
                "fingerprint": w.info.fingerprint.map(|f| f.to_string()),
            })
        })
        .collect();
    ctx.output(
        serde_json::json!({
            "identity": home.identity().public().to_string(),
            "created": created,
            "wallets": rows,
        }),
        || {
            let lines: Vec<String> = restored_wallets
                .iter()
                .map(|w| {
                    format!(
                        "  {}: signer #{} of {}-of-{}, epoch {}",
                        w.info.name, w.info.index, w.info.threshold, w.info.signers, w.info.epoch
                    )
                })
                .collect();
            format!(
                "restored signer {identity} into {}:\n{}\nStart it with `ckm signer serve` as before.",
                ctx.home.display(),
                lines.join("\n")
            )
        },
    )
}

/// What a backup brings back besides the shares, for the operator to confirm: each wallet's
/// epoch, coordinators and policy, and the approved peers.
fn brought_back(backup: &SignerBackup) -> String {
    let mut lines = vec![format!(
        "The backup (made at unix time {}) brings back:",
        backup.created
    )];
    for w in &backup.wallets {
        let mut coordinators = vec![w.info.coordinator.to_string()];
        coordinators.extend(w.policy.coordinators.iter().map(ToString::to_string));
        lines.push(format!(
            "  wallet {} (signer #{} of {}-of-{}, epoch {}): coordinators {}; policy: {}",
            w.info.name,
            w.info.index,
            w.info.threshold,
            w.info.signers,
            w.info.epoch,
            coordinators.join(", "),
            w.policy
        ));
    }
    if backup.peers.peers.is_empty() {
        lines.push("  no approved peers".into());
    } else {
        let peers: Vec<String> = backup.peers.peers.keys().map(ToString::to_string).collect();
        lines.push(format!("  approved peers: {}", peers.join(", ")));
    }
    lines.join("\n")
}
