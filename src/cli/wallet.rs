//! `ckm wallet …`: the coordinator's wallets (DKG across signers, descriptors, addresses,
//! Electrum sync, balance). The coordinator holds no secret share. The everyday wallet has a
//! file per command group: `send` is in `cli/spend.rs`; `coins` (coins, freeze, unfreeze),
//! `replace` (bump, cancel, cpfp), `history`, `labels`, and `migrate` are children here.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use bitcoin::Network;
use ckm::chain::{ProgressFn, SyncProgress};
use ckm::keys::{Roster, RosterEntry};
use ckm::net::client::Client;
use ckm::recovery::RecoveryPolicy;
use ckm::wallet::{CkmWallet, WalletMeta};
use clap::Subcommand;

use super::args::{parse_signer, ElectrumArg, PaymentArgs, RecoveryArgs, SignerSpec, WalletArg};
use super::signer_address;
use super::spend;

mod coins;
mod history;
mod labels;
mod migrate;
mod replace;
mod restored;
use super::wallet_lifecycle::{self, AddArgs, RefreshArgs, RemoveArgs, RepairArgs, WalletOnlyArgs};
use super::{runtime, wallet_export, Context};

/// `ckm wallet transition …`.
#[derive(Debug, Subcommand)]
pub enum TransitionCommand {
    /// Ask every signer what it holds: pending transition, its prepared and ready/abort
    /// votes, the last certificate it applied
    ///
    /// Example:
    ///   ckm wallet transition status --wallet vault
    #[command(verbatim_doc_comment)]
    Status(WalletOnlyArgs),
}

#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Create a wallet by running a certified FROST key generation across the signers
    ///
    /// The signers must be running (`ckm signer serve`), trust this home's identity
    /// (`ckm id`, given to `--allow-coordinator`), and each must have approved every other
    /// signer as a peer (`ckm signer peers add PUBKEY` or `--allow-peer PUBKEY`); a signer
    /// refuses a roster with any identity its operator did not approve. Round-2 packages are
    /// encrypted end to end between signers and bound to a transcript that covers the whole
    /// roster, the wallet name, the network and t/n; the coordinator relays them without being
    /// able to read them. Every signer certifies the result with its identity key and stores
    /// its share only after checking all n certificates. Prints the descriptors and the wallet
    /// fingerprint: compare it with `ckm signer wallets` on every signer.
    ///
    /// With --recovery-key, every address also commits to a timelocked recovery path: the
    /// recovery key(s) alone can spend a coin once it is --recovery-after blocks deep (for
    /// when the signers are gone for good). The policy is certified with the key generation,
    /// every signer enforces it, and `ckm signer address` shows addresses from a signer's
    /// own record. Everyday spends stay co-signed key-path spends.
    ///
    /// Examples (2-of-3; then with a recovery key usable after 144 blocks, about a day):
    ///   ckm --home ~/coord wallet create vault --threshold 2 \
    ///       --signer http://127.0.0.1:7001#<id1> \
    ///       --signer http://127.0.0.1:7002#<id2> \
    ///       --signer http://127.0.0.1:7003#<id3>
    ///   ckm --home ~/coord wallet create vault --threshold 2 --signer … --signer … --signer … \
    ///       --recovery-key "[73c5da0a/86'/1'/0']tpubDDfvzhd…" --recovery-after 144
    ///   (several keys: repeat --recovery-key and add --recovery-threshold K)
    ///
    /// The chain's tip at creation is recorded as the wallet's birth height (shown by
    /// `ckm wallet show`): a first sync from bitcoind starts there instead of at block 709,632
    /// (mainnet; 0 elsewhere). The tip comes from --bitcoind/--electrum, CKM_BITCOIND or
    /// CKM_ELECTRUM, or the home's saved source (`ckm wallet chain set`); --birth-height
    /// records a given height instead. No source reachable: nothing is recorded, the create
    /// goes on and says so.
    ///   ckm --home ~/coord wallet create vault -t 2 --signer … --signer … --signer … \
    ///       --bitcoind http://127.0.0.1:8332 --bitcoind-cookie ~/.bitcoin/.cookie
    #[command(verbatim_doc_comment)]
    Create {
        /// Wallet name (letters, digits, '_', '-', '.')
        name: String,
        /// Signatures need this many signers (2 <= T <= number of signers)
        #[arg(long, short = 't', value_name = "T")]
        threshold: u16,
        /// A signer as URL#PUBKEY, in roster order (repeat for each signer)
        #[arg(long = "signer", value_name = "URL#PUBKEY", value_parser = parse_signer, required = true)]
        signers: Vec<SignerSpec>,
        /// Seconds to wait for each signer
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        timeout: u64,
        #[command(flatten)]
        recovery: RecoveryArgs,
        /// The chain source whose tip is recorded as the wallet's birth height (a first sync
        /// from bitcoind starts there); none reachable: nothing recorded, the create goes on
        #[command(flatten)]
        chain: ElectrumArg,
    },
    /// List the wallets of this home
    List,
    /// Print the wallet's public descriptors (importable into Bitcoin Core as watch-only),
    /// roster, fingerprint and recovery path
    ///
    /// The descriptors are complete, recovery leaf included:
    /// `tr([fp]xpub/0/*,and_v(v:pk([…]tpub…/0/*),older(N)))#checksum` (and `/1/*` for change).
    /// Bitcoin Core's `deriveaddresses` gives the wallet's addresses from them, and
    /// `importdescriptors` watches the wallet (add the recovery key's private descriptor
    /// to spend through the recovery path from Core).
    ///
    /// Example:
    ///   ckm wallet descriptor --json | jq -r .external
    #[command(verbatim_doc_comment)]
    Descriptor {
        #[command(flatten)]
        wallet: WalletArg,
    },
    /// Export the wallet's public side for other wallets (watch-only; no secret)
    ///
    /// Formats: a BIP-0389 multipath descriptor; Bitcoin Core's `importdescriptors` request;
    /// a BIP-0388 wallet policy; a descriptor file for Sparrow (File > Import Wallet > Output
    /// Descriptor). Each carries its checksum; PSBTs those wallets make are co-signed with
    /// `ckm psbt sign`. And ckm's own public wallet record (descriptors, roster, epoch, the
    /// certified history) as a Gordian Envelope, binary or `ur:envelope/…` text, from which
    /// `ckm wallet recover --from FILE` rebuilds the wallet.
    ///
    /// Examples:
    ///   ckm wallet export --format descriptor
    ///   ckm wallet export --format core --out vault-core.json
    ///   bitcoin-cli -rpcwallet=vault importdescriptors "$(cat vault-core.json)"
    ///   ckm wallet export --format bip388
    ///   ckm wallet export --format sparrow --out vault-sparrow.txt
    ///   ckm wallet export --format ur --out vault.ur
    ///   ckm wallet export --format envelope --out vault.envelope
    #[command(verbatim_doc_comment)]
    Export {
        #[command(flatten)]
        wallet: WalletArg,
        #[command(flatten)]
        args: wallet_export::ExportArgs,
    },
    /// Re-check the wallet's certified key generation offline
    ///
    /// Recomputes the transcript from the stored context and round-1 broadcasts, derives the
    /// group key and chain code from the public commitments, and verifies every signer's
    /// certificate against the certified roster; also checks that the live roster still
    /// names the certified identity keys. Prints the wallet fingerprint.
    ///
    /// Example:
    ///   ckm wallet verify --wallet vault
    #[command(verbatim_doc_comment)]
    Verify {
        #[command(flatten)]
        wallet: WalletArg,
    },
    /// Show the wallet's roster, epoch, threshold and fingerprint, with each signer's epoch
    /// as it reports it
    ///
    /// Example:
    ///   ckm wallet show --wallet vault
    #[command(verbatim_doc_comment)]
    Show(WalletOnlyArgs),
    /// Refresh every signer's share: the group key, descriptors and addresses stay; a new
    /// epoch begins and the shares of the old one are erased on every signer
    ///
    /// Every signer must be reachable. Two phases: each signer stores its new share pending;
    /// once all have, the coordinator records its decision and tells them to commit, and each
    /// erases its old share. If anything stops half-way, `ckm wallet resume` finishes or
    /// rolls back.
    ///
    /// Example:
    ///   ckm wallet refresh --wallet vault
    #[command(verbatim_doc_comment)]
    Refresh(RefreshArgs),
    /// Remove a signer: a refresh among the others that leaves it out (it need not be
    /// online); its share no longer combines with anyone's
    ///
    /// Example:
    ///   ckm wallet remove-signer --signer 3 --wallet vault
    #[command(verbatim_doc_comment)]
    RemoveSigner(RemoveArgs),
    /// Give a signer that lost its share a new one at the same index (a fresh home with a new
    /// identity key), from t helpers, without anyone else learning it
    ///
    /// The other signers' operators must first approve the new identity as a peer
    /// (`ckm signer peers add`), and the new signer's operator must approve theirs.
    ///
    /// Example:
    ///   ckm wallet repair --signer 2 --to http://127.0.0.1:7005#<new id> --wallet vault
    #[command(verbatim_doc_comment)]
    Repair(RepairArgs),
    /// Enrol a new signer at the next index (n grows, t stays); it then signs like any other
    ///
    /// Example:
    ///   ckm wallet add-signer http://127.0.0.1:7004#<id4> --wallet vault
    #[command(verbatim_doc_comment)]
    AddSigner(AddArgs),
    /// Finish (commit) or roll back an interrupted refresh, removal, repair or enrolment
    ///
    /// Example:
    ///   ckm wallet resume --wallet vault
    #[command(verbatim_doc_comment)]
    Resume(WalletOnlyArgs),
    /// Let a signer restored from a backup (`ckm signer restore`) sign again: it checks fresh
    /// statements of n − t + 1 other members that its epoch is still the wallet's current one
    ///
    /// A restored signer refuses to sign for its wallets until then; if a member reports a
    /// later epoch, the restored share is superseded for good (repair the signer instead).
    ///
    /// Example:
    ///   ckm wallet confirm-restored --signer 2 --wallet vault
    #[command(verbatim_doc_comment)]
    ConfirmRestored(restored::ConfirmRestoredArgs),
    /// Key transitions as the signers hold them: each signer's pending transition and vote,
    /// the last decision it applied, and who is missing for a commit or an abort
    #[command(subcommand)]
    Transition(TransitionCommand),
    /// Move every coin to a new wallet: a new key generation (any t-of-n, e.g. a lower
    /// threshold, which a refresh cannot change) and one co-signed sweep
    ///
    /// Syncs the old wallet, creates the new one (or uses it if it exists), shows the sweep,
    /// asks for confirmation (skip with --yes), co-signs it with the old wallet's signers and
    /// broadcasts it.
    ///
    /// Example:
    ///   ckm wallet migrate --wallet vault --to vault2 --threshold 3 \
    ///       --signer http://127.0.0.1:7001#<id1> ... --signer http://127.0.0.1:7005#<id5> --yes
    #[command(verbatim_doc_comment)]
    Migrate(migrate::MigrateArgs),
    /// Reveal the next receive address
    Address {
        #[command(flatten)]
        wallet: WalletArg,
    },
    /// Bring the wallet up to date through the chain source. An Electrum server: a full scan
    /// the first time, then the addresses the wallet revealed (which also notices
    /// transactions replaced or dropped from the mempool, shown by `wallet history`). Your own
    /// Bitcoin Core node: the blocks since the last sync, then the mempool; the first sync
    /// starts at the wallet's birth height (recorded at `wallet create`) or --birth-height.
    /// Compact block filters from P2P peers (--cbf): the same, without any mempool (a payment
    /// to you shows once mined), and from two or more peers (one can leave out blocks)
    ///
    /// Examples:
    ///   ckm wallet sync --electrum tcp://127.0.0.1:60401
    ///   ckm wallet sync --bitcoind http://127.0.0.1:8332 --bitcoind-cookie ~/.bitcoin/.cookie
    ///   ckm wallet sync --cbf node1.example.org:8333 --cbf 203.0.113.5:8333   # no mempool
    ///   ckm wallet sync --birth-height 850000    # the home's saved bitcoind source, first sync
    ///   ckm wallet sync --rescan    # coins sent to addresses this wallet never showed
    #[command(verbatim_doc_comment)]
    Sync {
        #[command(flatten)]
        wallet: WalletArg,
        #[command(flatten)]
        electrum: ElectrumArg,
        /// Find coins on addresses this wallet did not reveal (a restored wallet, another
        /// coordinator's copy): through Electrum, scan every address up to 20 unused ones past
        /// the last used; through bitcoind, read every block again from --birth-height; through
        /// compact filters, every filter again from --birth-height
        #[arg(long)]
        rescan: bool,
    },
    /// Save or show the chain source of this home (Electrum or your own bitcoind), so that
    /// everyday commands need no --electrum/--bitcoind flag
    #[command(subcommand)]
    Chain(super::chain::ChainCommand),
    /// Show the balance (as of the last sync), frozen coins apart
    Balance {
        #[command(flatten)]
        wallet: WalletArg,
    },
    /// List the wallet's transactions, newest first: state (pending, confirmed with height
    /// and confirmations, replaced by TXID, cancelled, dropped), net amount, fee, label
    ///
    /// As of the last sync and the transactions ckm broadcast since.
    ///
    /// Examples:
    ///   ckm wallet history
    ///   ckm wallet history --limit 20 --offset 20 --json
    #[command(verbatim_doc_comment)]
    History(history::HistoryArgs),
    /// Label a transaction (TXID), a coin (TXID:VOUT) or an address; an empty TEXT removes it
    ///
    /// Labels show in `wallet history` and `wallet coins`, and travel as BIP-329 with
    /// `wallet labels export|import`.
    ///
    /// Examples:
    ///   ckm wallet label <txid> "rent, March"
    ///   ckm wallet label <txid>:1 "from the exchange"
    #[command(verbatim_doc_comment)]
    Label {
        #[command(flatten)]
        wallet: WalletArg,
        /// TXID, TXID:VOUT or ADDRESS
        #[arg(value_name = "REF")]
        reference: String,
        /// The label (at most 255 characters)
        text: String,
    },
    /// Export or import labels (BIP-329 JSON Lines)
    Labels {
        #[command(subcommand)]
        cmd: labels::LabelsCommand,
    },
    /// List the wallet's unspent coins (as of the last sync): outpoint, amount, address,
    /// keychain/index, confirmations, frozen, label
    ///
    /// Example:
    ///   ckm wallet coins --json | jq -r '.[] | select(.frozen | not) | .outpoint'
    #[command(verbatim_doc_comment)]
    Coins {
        #[command(flatten)]
        wallet: WalletArg,
    },
    /// Freeze coins: never picked by a payment, refused in --from, shown apart in the balance
    ///
    /// Example:
    ///   ckm wallet freeze <txid>:0
    #[command(verbatim_doc_comment)]
    Freeze {
        #[command(flatten)]
        wallet: WalletArg,
        /// The coin, TXID:VOUT (several may be given)
        #[arg(value_name = "OUTPOINT", required = true)]
        outpoints: Vec<bitcoin::OutPoint>,
    },
    /// Replace an unconfirmed payment of this wallet with one paying a higher fee rate
    ///
    /// The same recipients and inputs (more inputs only if needed, never a frozen coin); the
    /// change pays the difference. Re-signed by the signers, then broadcast; bitcoind drops
    /// the original. The new rate must be above the old one (by at least 1 sat/vB).
    ///
    /// Example:
    ///   ckm wallet bump <txid> --fee-rate 10 --yes
    #[command(verbatim_doc_comment)]
    Bump(replace::ReplaceArgs),
    /// Cancel an unconfirmed payment of this wallet: a replacement at a higher fee rate that
    /// sends its inputs back to the wallet (recorded as a cancellation in the history)
    ///
    /// Example:
    ///   ckm wallet cancel <txid> --fee-rate 10 --yes
    #[command(verbatim_doc_comment)]
    Cancel(replace::ReplaceArgs),
    /// Speed up an unconfirmed transaction with a child (CPFP) spending its output of this
    /// wallet, so that parent and child together pay --fee-rate
    ///
    /// Example:
    ///   ckm wallet cpfp <txid> --fee-rate 20 --yes
    #[command(verbatim_doc_comment)]
    Cpfp(replace::ReplaceArgs),
    /// Unfreeze coins
    ///
    /// Example:
    ///   ckm wallet unfreeze <txid>:0
    #[command(verbatim_doc_comment)]
    Unfreeze {
        #[command(flatten)]
        wallet: WalletArg,
        /// The coin, TXID:VOUT (several may be given)
        #[arg(value_name = "OUTPOINT", required = true)]
        outpoints: Vec<bitcoin::OutPoint>,
    },
    #[command(flatten)]
    Backup(super::wallet_backup::WalletBackupCommand),
    /// Pay one or several recipients in one transaction: build, review, co-sign, broadcast
    ///
    /// Every recipient is checked (address, network, amount) before any server is contacted.
    /// The fee rate is --fee-rate, else the Electrum server's estimate for --target-blocks
    /// (default 6), else 2 sat/vB when the server has none (a fresh regtest chain). The fee
    /// guard refuses a fee above 10% of what is paid to others, above 1000 sat/vB or above
    /// 1,000,000 sat (--allow-high-fee overrides it). Shows the recipients, amounts, change,
    /// fee (sat and sat/vB) and the coins spent, asks for confirmation (skip with --yes;
    /// without a terminal it refuses), then co-signs with the first T signers that answer
    /// and broadcasts through Electrum. Frozen coins are never spent.
    ///
    /// Examples:
    ///   ckm wallet send --to bcrt1p...:150000 --to bcrt1q...:0.002btc --yes
    ///   ckm wallet send --to bcrt1p...:max --fee-rate 3 --yes
    ///   ckm wallet send --to "bitcoin:bcrt1p...?amount=0.001&label=rent" --yes
    ///   ckm wallet send --to bcrt1p...:50000 --from <txid>:1 --yes
    ///   ckm wallet send --to bcrt1p... --amount 150000 --fee-rate 3 --yes
    #[command(verbatim_doc_comment)]
    Send {
        #[command(flatten)]
        wallet: WalletArg,
        #[command(flatten)]
        payment: PaymentArgs,
        #[command(flatten)]
        electrum: ElectrumArg,
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Pin a signer's new TLS certificate after checking its signed statement
    ///
    /// For every https signer of the wallet (every wallet of the home without --wallet; one
    /// signer with --signer): fetches the statement the signer serves at /v1/tls-statement,
    /// checks that the signer's identity key (from the roster) signed it and that it names
    /// the certificate the signer presented, then pins that certificate. No pin is changed
    /// on the network's word: a certificate without its identity's signature is refused.
    ///
    /// Example (after `ckm signer tls --rotate` and a restart on signer 2):
    ///   ckm --home ~/coord wallet update-pin --wallet vault --signer 2
    #[command(verbatim_doc_comment)]
    UpdatePin {
        /// Only this wallet [default: every wallet of the home]
        #[arg(long = "wallet", value_name = "NAME")]
        wallet: Option<String>,
        /// Only this signer: its roster index or identity key
        #[arg(long, value_name = "INDEX|PUBKEY")]
        signer: Option<String>,
        /// Seconds to wait for each signer
        #[arg(long, default_value_t = 10, value_name = "SECS")]
        timeout: u64,
    },
}

pub fn run(ctx: &Context, cmd: WalletCommand) -> Result<()> {
    match cmd {
        WalletCommand::Create {
            name,
            threshold,
            signers,
            timeout,
            recovery,
            chain,
        } => create(ctx, &name, threshold, signers, timeout, recovery, &chain),
        WalletCommand::List => list(ctx),
        WalletCommand::Descriptor { wallet } => {
            descriptor(ctx, &ctx.open_wallet(wallet.name.as_deref())?)
        }
        WalletCommand::Export { wallet, args } => {
            wallet_export::run(ctx, &ctx.open_wallet(wallet.name.as_deref())?, args)
        }
        WalletCommand::Verify { wallet } => verify(ctx, &ctx.open_wallet(wallet.name.as_deref())?),
        WalletCommand::Show(args) => wallet_lifecycle::show(ctx, args),
        WalletCommand::Refresh(args) => wallet_lifecycle::refresh(ctx, args),
        WalletCommand::RemoveSigner(args) => wallet_lifecycle::remove_signer(ctx, args),
        WalletCommand::Repair(args) => wallet_lifecycle::repair(ctx, args),
        WalletCommand::AddSigner(args) => wallet_lifecycle::add_signer(ctx, args),
        WalletCommand::Resume(args) => wallet_lifecycle::resume(ctx, args),
        WalletCommand::ConfirmRestored(args) => restored::confirm(ctx, args),
        WalletCommand::Transition(TransitionCommand::Status(args)) => {
            wallet_lifecycle::transition_status(ctx, args)
        }
        WalletCommand::Migrate(args) => migrate::migrate(ctx, args),
        WalletCommand::Backup(cmd) => super::wallet_backup::run(ctx, cmd),
        WalletCommand::Address { wallet } => address(ctx, wallet),
        WalletCommand::Sync {
            wallet,
            electrum,
            rescan,
        } => sync(ctx, wallet, electrum, rescan),
        WalletCommand::Chain(cmd) => super::chain::run(ctx, cmd),
        WalletCommand::Balance { wallet } => balance(ctx, wallet),
        WalletCommand::Send {
            wallet,
            payment,
            electrum,
            yes,
        } => spend::send(ctx, wallet, payment, electrum, yes),
        WalletCommand::Coins { wallet } => coins::coins(ctx, wallet),
        WalletCommand::History(args) => history::run(ctx, args),
        WalletCommand::Label {
            wallet,
            reference,
            text,
        } => labels::label(ctx, wallet, &reference, &text),
        WalletCommand::Labels { cmd } => labels::run(ctx, cmd),
        WalletCommand::Bump(args) => replace::run(ctx, replace::Kind::Bump, args),
        WalletCommand::Cancel(args) => replace::run(ctx, replace::Kind::Cancel, args),
        WalletCommand::Cpfp(args) => replace::run(ctx, replace::Kind::Cpfp, args),
        WalletCommand::Freeze { wallet, outpoints } => coins::freeze(ctx, wallet, &outpoints, true),
        WalletCommand::Unfreeze { wallet, outpoints } => {
            coins::freeze(ctx, wallet, &outpoints, false)
        }
        WalletCommand::UpdatePin {
            wallet,
            signer,
            timeout,
        } => super::pin::update_pin(ctx, wallet, signer, timeout),
    }
}

fn create(
    ctx: &Context,
    name: &str,
    threshold: u16,
    signers: Vec<SignerSpec>,
    timeout: u64,
    recovery: RecoveryArgs,
    chain: &ElectrumArg,
) -> Result<()> {
    let network = ctx.network.unwrap_or(Network::Regtest);
    let recovery = recovery.policy(network)?;
    // A taken name is refused before the chain is asked anything.
    ctx.new_wallet_path(name)?;
    // Asked before the key generation: an earlier height is as safe and a refused node shows
    // before the signers do any work.
    let birth = super::chain::birth_height_for_new(ctx, chain, name, network);
    let wallet = create_wallet(
        ctx, name, threshold, signers, timeout, None, recovery, birth,
    )?;
    descriptor(ctx, &wallet)
}

/// Runs the certified key generation and stores the new wallet (atomically), with
/// `birth_height` recorded when known.
#[allow(clippy::too_many_arguments)]
fn create_wallet(
    ctx: &Context,
    name: &str,
    threshold: u16,
    signers: Vec<SignerSpec>,
    timeout: u64,
    network: Option<Network>,
    recovery: Option<RecoveryPolicy>,
    birth_height: Option<u32>,
) -> Result<CkmWallet> {
    // Refuse a taken name before running the key generation.
    ctx.new_wallet_path(name)?;
    let n = u16::try_from(signers.len()).unwrap_or(u16::MAX);
    ckm::frost::pedersen::DkgParams::new(threshold, n)?;
    let network = network.or(ctx.network).unwrap_or(Network::Regtest);
    let roster = Roster::new(
        signers
            .into_iter()
            .enumerate()
            .map(|(i, s)| RosterEntry {
                index: u16::try_from(i + 1).unwrap_or(u16::MAX),
                url: s.url,
                identity: s.identity,
                tls_sha256: s.tls_sha256,
            })
            .collect(),
    )?;
    let key = ctx.coordinator_identity()?;
    if roster.index_of(&key.public()).is_some() {
        bail!("this coordinator's own identity ({}) is listed as a signer; a signer runs in its own home", key.public());
    }
    let client = Client::new(key, Duration::from_secs(timeout))?;
    ctx.say(format!(
        "running a certified {threshold}-of-{} key generation across the signers…",
        roster.len()
    ));
    if let Some(policy) = &recovery {
        ctx.say(format!("with a recovery path: {policy}"));
    }
    let (group, keygen) = runtime()?
        .block_on(ckm::net::coordinator::create_wallet_with_recovery(
            &client, name, network, threshold, &roster, recovery,
        ))
        .context("wallet creation failed; nothing was stored")?;
    let meta = WalletMeta {
        name: name.to_string(),
        network,
        group,
        roster,
        electrum: None,
        keygen: Some(keygen),
        epoch: 0,
        transitions: Vec::new(),
        pending: None,
        birth_height,
    };
    meta.verify()
        .context("the certified key generation does not check out; nothing was stored")?;
    ctx.store_wallet(meta)
}

fn list(ctx: &Context) -> Result<()> {
    let names = ctx.wallet_names()?;
    let mut rows = Vec::new();
    for name in &names {
        let w = ctx.open_wallet(Some(name))?;
        rows.push(serde_json::json!({
            "wallet": name,
            "network": w.meta().network.to_string(),
            "threshold": w.meta().group.threshold(),
            "signers": w.meta().roster.len(),
            "fingerprint": w.meta().fingerprint().map(|f| f.to_string()),
        }));
    }
    ctx.output(serde_json::Value::Array(rows.clone()), || {
        if rows.is_empty() {
            return "no wallets".into();
        }
        rows.iter()
            .map(|r| {
                format!(
                    "{}  {}-of-{}  {}",
                    r["wallet"].as_str().unwrap_or_default(),
                    r["threshold"],
                    r["signers"],
                    r["network"].as_str().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn descriptor(ctx: &Context, wallet: &CkmWallet) -> Result<()> {
    let meta = wallet.meta();
    let (external, internal) = meta.descriptors()?;
    let fingerprint = meta.fingerprint();
    let recovery = meta.recovery().map(signer_address::recovery_json);
    let signers: Vec<serde_json::Value> = meta
        .roster
        .entries()
        .iter()
        .map(|r| serde_json::json!({ "index": r.index, "url": r.url, "identity": r.identity.to_string() }))
        .collect();
    ctx.output(
        serde_json::json!({
            "wallet": meta.name,
            "network": meta.network.to_string(),
            "external": external,
            "internal": internal,
            "threshold": meta.group.threshold(),
            "fingerprint": fingerprint.map(|f| f.to_string()),
            "signers": signers,
            "recovery": recovery,
        }),
        || {
            let roster: Vec<String> = meta
                .roster
                .entries()
                .iter()
                .map(|r| format!("  #{} {}  {}", r.index, r.url, r.identity))
                .collect();
            let recovery = meta
                .recovery()
                .map_or_else(|| "none".to_string(), signer_address::recovery_text);
            format!(
                "wallet:      {} ({}-of-{}, {})\nfingerprint: {}\nexternal:    {external}\ninternal:    {internal}\nrecovery:    {recovery}\nsigners:\n{}",
                meta.name,
                meta.group.threshold(),
                meta.roster.len(),
                meta.network,
                fingerprint.map_or_else(|| "none (created before certified key generation)".to_string(), |f| f.to_string()),
                roster.join("\n")
            )
        },
    )
}

fn verify(ctx: &Context, wallet: &CkmWallet) -> Result<()> {
    let meta = wallet.meta();
    let fingerprint = meta
        .verify()
        .with_context(|| format!("wallet '{}' failed verification", meta.name))?;
    ctx.output(
        serde_json::json!({
            "wallet": meta.name,
            "verified": true,
            "fingerprint": fingerprint.to_string(),
            "certificates": meta.roster.len(),
        }),
        || {
            format!(
                "wallet '{}': all {} certificates verify; fingerprint {fingerprint}",
                meta.name,
                meta.roster.len()
            )
        },
    )
}

fn address(ctx: &Context, wallet: WalletArg) -> Result<()> {
    // Revealing reads the last index and writes the next: under the wallet's lock, so that
    // two processes (or this one and the console's receive page) never hand out the same
    // address. The lock is held for milliseconds; during a transition this waits up to 5 s,
    // then says which operation holds the wallet.
    let (_lock, mut w) = ctx.open_wallet_locked(wallet.name.as_deref(), "wallet address")?;
    let info = w.reveal_next_address()?;
    ctx.output(
        serde_json::json!({ "address": info.address.to_string(), "index": info.index }),
        || info.address.to_string(),
    )
}

fn sync(ctx: &Context, wallet: WalletArg, electrum: ElectrumArg, rescan: bool) -> Result<()> {
    let mut w = ctx.open_wallet(wallet.name.as_deref())?;
    let source = super::chain::open(ctx, &electrum, &w)?;
    let synced = w.bdk().latest_checkpoint().height();
    if electrum.bitcoind.birth_height.is_some() && synced > 0 && !rescan {
        ctx.say(format!(
            "--birth-height applies to a first sync and to --rescan: this wallet has synced to \
             {synced}, so the sync goes on from there"
        ));
    }
    let (mut progress, bar) = super::chain::progress(ctx);
    // The blocks applied (block-by-block sources): first, last and how many.
    let blocks = std::sync::Arc::new(std::sync::Mutex::new(None::<(u32, u32, u32)>));
    let seen = std::sync::Arc::clone(&blocks);
    let progress: ProgressFn = Box::new(move |p| {
        if let SyncProgress::Block { height, .. } = p {
            if let Ok(mut b) = seen.lock() {
                *b = Some(match *b {
                    None => (height, height, 1),
                    Some((first, _, n)) => (first, height, n + 1),
                });
            }
        }
        progress(p);
    });
    let height = if rescan {
        source.full_scan(&mut w, progress)?
    } else {
        source.sync(&mut w, progress)?
    };
    let blocks = blocks.lock().ok().and_then(|b| *b);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(url) = &electrum.electrum {
        if w.meta().electrum.as_deref() != Some(url.as_str()) {
            let mut meta = w.meta().clone();
            meta.electrum = Some(url.clone());
            w.set_meta(meta)?;
        }
    }
    let balance = w.balance();
    ctx.output(
        serde_json::json!({
            "height": height,
            "source": source.describe(),
            "confirmed_sats": balance.confirmed.to_sat(),
            "unconfirmed_sats": (balance.unconfirmed + balance.immature).to_sat(),
            "blocks": blocks.map(|(first, last, count)| serde_json::json!({
                "first": first, "last": last, "count": count,
            })),
        }),
        || {
            let applied = blocks.map_or_else(String::new, |(first, last, count)| {
                format!(" ({count} blocks applied, {first} to {last})")
            });
            format!(
                "synced to height {height}{applied}; balance {} sat confirmed",
                balance.confirmed.to_sat()
            )
        },
    )
}

fn balance(ctx: &Context, wallet: WalletArg) -> Result<()> {
    let w = ctx.open_wallet(wallet.name.as_deref())?;
    let b = w.balance();
    let unconfirmed = b.unconfirmed;
    ctx.output(
        serde_json::json!({
            "confirmed_sats": b.confirmed.to_sat(),
            "unconfirmed_sats": unconfirmed.to_sat(),
            "immature_sats": b.immature.to_sat(),
            "frozen_sats": b.frozen.to_sat(),
        }),
        || {
            format!(
                "confirmed:   {} sat\nunconfirmed: {} sat\nimmature:    {} sat\nfrozen:      {} sat",
                b.confirmed.to_sat(),
                unconfirmed.to_sat(),
                b.immature.to_sat(),
                b.frozen.to_sat()
            )
        },
    )
}
