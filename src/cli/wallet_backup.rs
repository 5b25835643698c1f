//! `ckm wallet recover` and `ckm wallet export --format envelope|ur` (the formats slot into
//! `wallet_export.rs`): the coordinator's wallet as a public Gordian Envelope record, and
//! rebuilding a lost coordinator database from the signers' records or such a file
//! (library: `ckm::wallet::record`).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use ckm::identity::IdentityPublic;
use ckm::keys::RosterEntry;
use ckm::message::{CoordinatorToSigner, SignerToCoordinator};
use ckm::net::client::Client;
use ckm::store::read_limited;
use ckm::wallet::record::{self, SignerRecords};
use ckm::wallet::WalletMeta;
use clap::Subcommand;

use super::args::{parse_signer, SignerSpec};
use super::{runtime, Context};

/// Largest wallet record file read.
const MAX_RECORD: u64 = 16 << 20;
/// Largest `--trust-file` read.
const MAX_TRUST_FILE: u64 = 1 << 20;

/// `wallet recover` (flattened into `ckm wallet`).
#[derive(Debug, Subcommand)]
pub enum WalletBackupCommand {
    /// Rebuild a lost coordinator wallet database from the signers' public records (or from
    /// an exported record)
    ///
    /// Asks each signer for the wallets bound to this coordinator, re-checks every record's
    /// certified history offline, requires the signers that hold a wallet to agree and at
    /// least its threshold of them to answer, and stores the wallet: the same descriptors,
    /// roster and epoch. The new database knows no transaction yet: run `ckm wallet sync`
    /// to rescan the chain (the next address then follows the last used one).
    ///
    /// A signer answers only for wallets bound to this coordinator. When the coordinator's
    /// identity was lost too (a new `ckm id`), each signer's operator first allows it:
    /// `ckm signer serve --allow-coordinator <new id>` and
    /// `ckm signer wallet allow-coordinator --wallet NAME <new id>`.
    ///
    /// Examples:
    ///   ckm --home ~/coord wallet recover --signer http://127.0.0.1:7001#<id1> \
    ///       --signer http://127.0.0.1:7002#<id2> --signer http://127.0.0.1:7003#<id3>
    ///   ckm wallet sync --electrum tcp://127.0.0.1:60401
    ///   ckm --home ~/coord wallet recover --from vault.ur \
    ///       --trust <id1> --trust <id2> --trust http://10.0.0.3:7003#<id3>
    ///   ckm --home ~/coord wallet recover --from vault.ur --trust-file signers.txt
    ///
    /// A file's own roster proves nothing (anyone can certify a wallet of their own keys, with
    /// their own recovery key): with --from, give the identity keys of the wallet's signers
    /// (`ckm signer id` on each) with --trust or --trust-file. At least the wallet's threshold
    /// of them must answer with the same roster, group key, recovery policy and epoch, or
    /// nothing is stored.
    #[command(verbatim_doc_comment)]
    Recover {
        /// A signer as URL#PUBKEY (repeat; at least each wallet's threshold of its signers)
        #[arg(long = "signer", value_name = "URL#PUBKEY", value_parser = parse_signer, required_unless_present = "from", conflicts_with = "from")]
        signers: Vec<SignerSpec>,
        /// Read the wallet from a file written by `wallet export --format envelope|ur`
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
        /// With --from: a signer whose identity key you trust, as PUBKEY (reached at the
        /// address the file gives it) or URL#PUBKEY (repeat; at least the wallet's threshold
        /// of them must confirm the file)
        #[arg(long = "trust", value_name = "PUBKEY|URL#PUBKEY", value_parser = parse_trust, requires = "from")]
        trust: Vec<Trusted>,
        /// With --from: a file of trusted signers, one PUBKEY or URL#PUBKEY a line (blank
        /// lines and lines starting with '#' are skipped)
        #[arg(long = "trust-file", value_name = "FILE", requires = "from")]
        trust_file: Option<PathBuf>,
        /// Recover only this wallet [default: every wallet the signers return]
        #[arg(long = "wallet", value_name = "NAME")]
        name: Option<String>,
        /// Seconds to wait for each signer
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        timeout: u64,
    },
}

pub fn run(ctx: &Context, cmd: WalletBackupCommand) -> Result<()> {
    match cmd {
        WalletBackupCommand::Recover {
            signers,
            from,
            trust,
            trust_file,
            name,
            timeout,
        } => {
            let metas = match from {
                Some(file) => {
                    let trusted = trusted(trust, trust_file.as_deref())?;
                    let meta = from_file(&file, name.as_deref())?;
                    confirm_file(ctx, &file, meta, &trusted, timeout)?
                }
                None => from_signers(ctx, signers, name.as_deref(), timeout)?,
            };
            store(ctx, metas)
        }
    }
}

/// A signer pinned with `--trust`: its identity key, and its endpoint when given.
#[derive(Debug, Clone)]
pub struct Trusted {
    identity: IdentityPublic,
    endpoint: Option<SignerSpec>,
}

fn parse_trust(s: &str) -> Result<Trusted, String> {
    let s = s.trim();
    if s.contains('#') {
        let spec = parse_signer(s)?;
        return Ok(Trusted {
            identity: spec.identity,
            endpoint: Some(spec),
        });
    }
    let identity = IdentityPublic::from_str(s)
        .map_err(|e| format!("'{s}' is not PUBKEY or URL#PUBKEY (see `ckm signer id`): {e}"))?;
    Ok(Trusted {
        identity,
        endpoint: None,
    })
}

/// The pinned signers of `--trust` and `--trust-file`; at least one.
fn trusted(mut trust: Vec<Trusted>, file: Option<&Path>) -> Result<Vec<Trusted>> {
    if let Some(file) = file {
        let bytes = read_limited(file, MAX_TRUST_FILE)
            .with_context(|| format!("reading {}", file.display()))?;
        let text = std::str::from_utf8(&bytes)
            .with_context(|| format!("{} is not UTF-8 text", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            trust.push(
                parse_trust(line).map_err(|e| anyhow!("{} line {}: {e}", file.display(), n + 1))?,
            );
        }
    }
    if trust.is_empty() {
        bail!(
            "--from needs the identity keys of the wallet's signers: --trust PUBKEY (repeat) or \
             --trust-file FILE (`ckm signer id` prints each signer's); the file's own roster is \
             not trusted; nothing was stored"
        );
    }
    Ok(trust)
}

/// Asks every pinned signer for its records and keeps `meta` only if at least its threshold
/// of them hold the same wallet ([`record::confirm`]).
fn confirm_file(
    ctx: &Context,
    file: &Path,
    meta: WalletMeta,
    trusted: &[Trusted],
    timeout: u64,
) -> Result<Vec<WalletMeta>> {
    let key = ctx.coordinator_identity()?;
    let me = key.public();
    let client = Client::new(key, Duration::from_secs(timeout))?;
    let entries: Vec<Result<RosterEntry, String>> = trusted
        .iter()
        .map(|t| match &t.endpoint {
            Some(s) => Ok(RosterEntry {
                index: 0,
                url: s.url.clone(),
                identity: s.identity,
                tls_sha256: s.tls_sha256,
            }),
            None => meta
                .roster
                .entries()
                .iter()
                .find(|e| e.identity == t.identity)
                .cloned()
                .ok_or_else(|| {
                    "not in the file's roster; give its address as --trust URL#PUBKEY".to_string()
                }),
        })
        .collect();
    ctx.say(format!(
        "asking {} pinned signer(s) to confirm wallet '{}' (epoch {}) for this coordinator ({me})…",
        trusted.len(),
        meta.name,
        meta.epoch
    ));
    let answers = runtime()?.block_on(async {
        let mut out = Vec::with_capacity(entries.len());
        for (t, entry) in trusted.iter().zip(&entries) {
            let answer = match entry {
                Err(why) => Err(why.clone()),
                Ok(e) => match client.call(e, &CoordinatorToSigner::WalletRecords).await {
                    Ok(SignerToCoordinator::WalletRecords(records)) => Ok(records),
                    Ok(_) => Err(format!("{} answered out of protocol", e.url)),
                    Err(err) => Err(format!("{}: {err}", e.url)),
                },
            };
            out.push(record::PinnedAnswer {
                signer: t.identity,
                answer,
            });
        }
        out
    });
    let confirmed = record::confirm(&meta, &answers)
        .with_context(|| format!("{}: nothing was stored", file.display()))?;
    ctx.say(format!(
        "{} pinned signer(s) confirm the record (threshold {})",
        confirmed.by.len(),
        meta.group.threshold()
    ));
    // A confirming signer pinned with its address is reached there from now on.
    let mut meta = meta;
    for (t, entry) in trusted.iter().zip(&entries) {
        if let (Some(_), Ok(e)) = (&t.endpoint, entry) {
            if confirmed.by.contains(&t.identity) {
                if let Some(index) = meta.roster.index_of(&t.identity) {
                    meta.roster.set_endpoint(index, e.url.clone(), e.tls_sha256);
                }
            }
        }
    }
    Ok(vec![meta])
}

fn from_file(file: &Path, name: Option<&str>) -> Result<WalletMeta> {
    let bytes =
        read_limited(file, MAX_RECORD).with_context(|| format!("reading {}", file.display()))?;
    let meta = record::from_bytes(&bytes)
        .with_context(|| format!("{}: nothing was stored", file.display()))?;
    if let Some(n) = name {
        if n != meta.name {
            bail!("{} holds wallet '{}', not '{n}'", file.display(), meta.name);
        }
    }
    Ok(meta)
}

fn from_signers(
    ctx: &Context,
    signers: Vec<SignerSpec>,
    name: Option<&str>,
    timeout: u64,
) -> Result<Vec<WalletMeta>> {
    let key = ctx.coordinator_identity()?;
    let me = key.public();
    let client = Client::new(key, Duration::from_secs(timeout))?;
    let entries: Vec<RosterEntry> = signers
        .into_iter()
        .enumerate()
        .map(|(i, s)| RosterEntry {
            index: u16::try_from(i + 1).unwrap_or(u16::MAX),
            url: s.url,
            identity: s.identity,
            tls_sha256: s.tls_sha256,
        })
        .collect();
    ctx.say(format!(
        "asking {} signer(s) for the wallets bound to this coordinator ({me})…",
        entries.len()
    ));
    let replies = runtime()?.block_on(async {
        let mut out = Vec::with_capacity(entries.len());
        for e in &entries {
            out.push(client.call(e, &CoordinatorToSigner::WalletRecords).await);
        }
        out
    });
    let mut answers = Vec::new();
    for (entry, reply) in entries.iter().zip(replies) {
        match reply {
            Ok(SignerToCoordinator::WalletRecords(records)) => answers.push(SignerRecords {
                signer: entry.clone(),
                records,
            }),
            Ok(_) => ctx.say(format!(
                "signer {} ({}) answered out of protocol; ignored",
                entry.identity, entry.url
            )),
            Err(e) => ctx.say(format!(
                "signer {} ({}) did not answer: {e} (is it running, and does it allow this coordinator, {me}?)",
                entry.identity, entry.url
            )),
        }
    }
    record::recover(&answers, name).context("nothing was stored")
}

fn store(ctx: &Context, metas: Vec<WalletMeta>) -> Result<()> {
    let existing = ctx.wallet_names()?;
    if let Some(m) = metas.iter().find(|m| existing.contains(&m.name)) {
        bail!(
            "this home already has a wallet named '{}'; recover into another --home; nothing was stored",
            m.name
        );
    }
    let mut rows = Vec::new();
    for meta in metas {
        let (external, internal) = meta.descriptors()?;
        let row = serde_json::json!({
            "wallet": meta.name,
            "network": meta.network.to_string(),
            "epoch": meta.epoch,
            "threshold": meta.group.threshold(),
            "signers": meta.roster.indexes(),
            "fingerprint": meta.fingerprint().map(|f| f.to_string()),
            "external": external,
            "internal": internal,
        });
        ctx.store_wallet(meta)?;
        rows.push(row);
    }
    ctx.output(
        serde_json::json!({ "recovered": rows, "next": "run `ckm wallet sync` to rescan the chain" }),
        || {
            let lines: Vec<String> = rows
                .iter()
                .map(|r| {
                    format!(
                        "recovered '{}' (epoch {}, fingerprint {})\n  external: {}\n  internal: {}",
                        r["wallet"].as_str().unwrap_or_default(),
                        r["epoch"],
                        r["fingerprint"].as_str().unwrap_or("none"),
                        r["external"].as_str().unwrap_or_default(),
                        r["internal"].as_str().unwrap_or_default(),
                    )
                })
                .collect();
            format!(
                "{}\nThe wallet knows no transaction yet: run `ckm wallet sync` to rescan the chain.",
                lines.join("\n")
            )
        },
    )
}
