//! `ckm signer peers …` and `ckm signer wallet …`: who a signer generates keys with, and which
//! coordinators may use each of its wallets. Both are kept sealed in the signer's store and
//! re-read by a running server on every request (no restart).

use std::path::PathBuf;

use anyhow::{bail, Result};
use ckm::identity::IdentityPublic;
use ckm::signer::home::SignerHome;
use ckm::signer::legacy::{find_wallet, open_migrating};
use clap::Subcommand;

use super::{read_passphrase, Context};

#[derive(Debug, Subcommand)]
pub enum PeersCommand {
    /// Approve another signer's identity key for key generations
    ///
    /// This signer joins a key generation only when every other member of its roster is an
    /// approved peer: a coordinator cannot slip in keys of its own. Compare the key with the
    /// other operator out of band (it is what `ckm --home THEIR_HOME id` prints).
    ///
    /// Example:
    ///   ckm --home ~/signer1 signer peers add $(ckm --home ~/signer2 id) --label "signer 2, Zurich"
    #[command(verbatim_doc_comment)]
    Add {
        /// The peer's identity key (64 hex characters)
        identity: IdentityPublic,
        /// A note to remember who it is
        #[arg(long, value_name = "TEXT")]
        label: Option<String>,
        /// Read the passphrase from this file instead of CKM_PASSPHRASE or a prompt
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Withdraw the approval of a peer (wallets already made with it are not affected)
    ///
    /// Example:
    ///   ckm --home ~/signer1 signer peers remove <PUBKEY>
    #[command(verbatim_doc_comment)]
    Remove {
        /// The peer's identity key
        identity: IdentityPublic,
        /// Read the passphrase from this file instead of CKM_PASSPHRASE or a prompt
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// List the approved peers (those kept in the store; `--allow-peer` flags of a running
    /// server come on top)
    List {
        /// Read the passphrase from this file instead of CKM_PASSPHRASE or a prompt
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum WalletBindCommand {
    /// Let another coordinator use a wallet (by default only the coordinator that created it
    /// may ask for signatures)
    ///
    /// Example:
    ///   ckm --home ~/signer1 signer wallet allow-coordinator --wallet vault <PUBKEY>
    #[command(verbatim_doc_comment)]
    AllowCoordinator {
        /// Wallet name, group key or fingerprint
        #[arg(long = "wallet", value_name = "NAME")]
        wallet: String,
        /// The coordinator's identity key (`ckm id` in its home)
        coordinator: IdentityPublic,
        /// Read the passphrase from this file instead of CKM_PASSPHRASE or a prompt
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Withdraw a coordinator added with allow-coordinator
    DisallowCoordinator {
        /// Wallet name, group key or fingerprint
        #[arg(long = "wallet", value_name = "NAME")]
        wallet: String,
        /// The coordinator's identity key
        coordinator: IdentityPublic,
        /// Read the passphrase from this file instead of CKM_PASSPHRASE or a prompt
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Show which coordinators may use a wallet
    Coordinators {
        /// Wallet name, group key or fingerprint
        #[arg(long = "wallet", value_name = "NAME")]
        wallet: String,
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

pub fn peers(ctx: &Context, cmd: PeersCommand) -> Result<()> {
    match cmd {
        PeersCommand::Add {
            identity,
            label,
            passphrase_file,
        } => {
            let home = open(ctx, passphrase_file)?;
            if identity == home.identity().public() {
                bail!("{identity} is this signer's own identity; approve the other signers' keys");
            }
            let mut peers = home.load_peers()?;
            let new = peers.add(identity, label, ckm::auth::unix_now());
            home.save_peers(
                &peers,
                &format!("approved peer {identity}"),
                &mut rand::rngs::OsRng,
            )?;
            ctx.output(
                serde_json::json!({ "identity": identity.to_string(), "added": new }),
                || {
                    if new {
                        format!("approved peer {identity}")
                    } else {
                        format!("{identity} was already approved")
                    }
                },
            )
        }
        PeersCommand::Remove {
            identity,
            passphrase_file,
        } => {
            let home = open(ctx, passphrase_file)?;
            let mut peers = home.load_peers()?;
            if !peers.remove(&identity) {
                bail!("{identity} is not an approved peer (see `ckm signer peers list`)");
            }
            home.save_peers(
                &peers,
                &format!("withdrew peer {identity}"),
                &mut rand::rngs::OsRng,
            )?;
            ctx.output(
                serde_json::json!({ "identity": identity.to_string(), "removed": true }),
                || format!("withdrew the approval of {identity}"),
            )
        }
        PeersCommand::List { passphrase_file } => {
            let home = open(ctx, passphrase_file)?;
            let peers = home.load_peers()?;
            let rows: Vec<serde_json::Value> = peers
                .peers
                .iter()
                .map(|(id, p)| {
                    serde_json::json!({ "identity": id.to_string(), "label": p.label, "added": p.added })
                })
                .collect();
            ctx.output(serde_json::Value::Array(rows), || {
                if peers.peers.is_empty() {
                    return "no approved peers (add them with `ckm signer peers add PUBKEY`)"
                        .into();
                }
                peers
                    .peers
                    .iter()
                    .map(|(id, p)| match &p.label {
                        Some(l) => format!("{id}  {l}"),
                        None => id.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
    }
}

pub fn wallet(ctx: &Context, cmd: WalletBindCommand) -> Result<()> {
    match cmd {
        WalletBindCommand::AllowCoordinator {
            wallet,
            coordinator,
            passphrase_file,
        } => {
            let info = find_wallet(&SignerHome::dir_of(&ctx.home), &wallet)?;
            let home = open(ctx, passphrase_file)?;
            let mut policy = home.policy(&info.group_key)?;
            if coordinator == info.coordinator || policy.coordinators.contains(&coordinator) {
                bail!(
                    "coordinator {coordinator} may already use wallet {}",
                    info.name
                );
            }
            policy.coordinators.push(coordinator);
            home.set_policy(
                &info.group_key,
                &policy,
                &format!("wallet {}: allowed coordinator {coordinator}", info.name),
                &mut rand::rngs::OsRng,
            )?;
            ctx.output(
                serde_json::json!({ "wallet": info.name, "coordinator": coordinator.to_string(), "allowed": true }),
                || format!("coordinator {coordinator} may now use wallet {}", info.name),
            )
        }
        WalletBindCommand::DisallowCoordinator {
            wallet,
            coordinator,
            passphrase_file,
        } => {
            let info = find_wallet(&SignerHome::dir_of(&ctx.home), &wallet)?;
            let home = open(ctx, passphrase_file)?;
            let mut policy = home.policy(&info.group_key)?;
            let before = policy.coordinators.len();
            policy.coordinators.retain(|c| *c != coordinator);
            if policy.coordinators.len() == before {
                if coordinator == info.coordinator {
                    bail!(
                        "{coordinator} created wallet {} and cannot be withdrawn",
                        info.name
                    );
                }
                bail!(
                    "coordinator {coordinator} was not added to wallet {}",
                    info.name
                );
            }
            home.set_policy(
                &info.group_key,
                &policy,
                &format!("wallet {}: withdrew coordinator {coordinator}", info.name),
                &mut rand::rngs::OsRng,
            )?;
            ctx.output(
                serde_json::json!({ "wallet": info.name, "coordinator": coordinator.to_string(), "allowed": false }),
                || format!("coordinator {coordinator} may no longer use wallet {}", info.name),
            )
        }
        WalletBindCommand::Coordinators {
            wallet,
            passphrase_file,
        } => {
            let info = find_wallet(&SignerHome::dir_of(&ctx.home), &wallet)?;
            let home = open(ctx, passphrase_file)?;
            let added = home.policy(&info.group_key)?.coordinators;
            let json = serde_json::json!({
                "wallet": info.name,
                "creator": info.coordinator.to_string(),
                "added": added.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            });
            ctx.output(json, || {
                let mut lines = vec![format!("{}  (created it)", info.coordinator)];
                lines.extend(added.iter().map(|c| format!("{c}  (added)")));
                lines.join("\n")
            })
        }
    }
}
