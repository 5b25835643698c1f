//! Flags shared by several subcommands, defined once and flattened where needed.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Context as _, Result};
use bitcoin::{Amount, Network, OutPoint};
use ckm::identity::IdentityPublic;
use ckm::keys::CertPin;
use ckm::recovery::{RecoveryKey, RecoveryPolicy};
use ckm::wallet::spend::recipient::check_recipients;
use ckm::wallet::Recipient;
use clap::Args;

/// `--wallet NAME`, shared by every wallet-scoped command.
#[derive(Debug, Args, Clone)]
pub struct WalletArg {
    /// Wallet to use [default: the home's only wallet]
    #[arg(long = "wallet", value_name = "NAME")]
    pub name: Option<String>,
}

/// `--electrum URL`, `--bitcoind URL …` or `--cbf HOST:PORT …`, shared by the commands that
/// talk to the chain (resolved by [`super::chain::resolve`]).
#[derive(Debug, Args, Clone, Default)]
pub struct ElectrumArg {
    /// Electrum server, e.g. tcp://127.0.0.1:60401 [default: CKM_ELECTRUM, else the home's
    /// saved source (`ckm wallet chain set`), else the wallet's saved server]
    #[arg(long, value_name = "URL")]
    pub electrum: Option<String>,
    #[command(flatten)]
    pub bitcoind: BitcoindArgs,
    #[command(flatten)]
    pub cbf: CbfArgs,
}

/// `--cbf HOST:PORT` (repeatable), the compact-block-filter peers (flattened into
/// [`ElectrumArg`]).
#[derive(Debug, Args, Clone, Default)]
pub struct CbfArgs {
    /// A P2P peer serving compact block filters (BIP-0157), e.g. 127.0.0.1:8333: a bitcoind
    /// started with -blockfilterindex=1 -peerblockfilters=1. Repeat it: give two or more
    /// peers, as one peer can leave out blocks that pay you. Filters carry no mempool: a
    /// payment to you shows only once mined [default: CKM_CBF (comma-separated), else the
    /// home's saved source]
    #[arg(
        long = "cbf",
        value_name = "HOST:PORT",
        conflicts_with_all = ["electrum", "bitcoind"]
    )]
    pub cbf: Vec<String>,
    /// Seconds a compact-filter peer has to connect and to answer each request [default: 30]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub cbf_timeout: Option<u64>,
}

/// `--bitcoind URL` and its credentials, shared by the commands that talk to the chain
/// (flattened into [`ElectrumArg`]).
#[derive(Debug, Args, Clone, Default)]
pub struct BitcoindArgs {
    /// Your Bitcoin Core node's RPC, e.g. http://127.0.0.1:8332, with --bitcoind-cookie or
    /// --bitcoind-user and --bitcoind-pass-file [default: CKM_BITCOIND, else the home's saved
    /// source]
    #[arg(long, value_name = "URL", conflicts_with = "electrum")]
    pub bitcoind: Option<String>,
    /// bitcoind's cookie file, e.g. ~/.bitcoin/.cookie
    #[arg(
        long,
        value_name = "FILE",
        requires = "bitcoind",
        conflicts_with = "bitcoind_user"
    )]
    pub bitcoind_cookie: Option<PathBuf>,
    /// bitcoind's rpcuser (the password is read from --bitcoind-pass-file)
    #[arg(long, value_name = "USER", requires_all = ["bitcoind", "bitcoind_pass_file"])]
    pub bitcoind_user: Option<String>,
    /// A file whose first line is the rpcuser's password
    #[arg(long, value_name = "FILE", requires = "bitcoind_user")]
    pub bitcoind_pass_file: Option<PathBuf>,
    /// Send RPC credentials over plain http to a node that is not on this machine (only when
    /// the link is private: a VPN, your own LAN)
    #[arg(long, requires = "bitcoind")]
    pub bitcoind_allow_insecure: bool,
    /// Seconds before a connection or request to bitcoind fails [default: 30]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub bitcoind_timeout: Option<u64>,
    /// First block of a wallet's first sync from bitcoind or compact filters; with `wallet
    /// create`, the birth height to record [default: the wallet's birth height (the chain's tip at `wallet
    /// create`); without one, 709632 (Taproot's activation) on mainnet, 0 elsewhere]
    #[arg(long, value_name = "HEIGHT")]
    pub birth_height: Option<u32>,
}

/// The recipients, coins and fee of a payment, shared by `wallet send` and `psbt create`.
#[derive(Debug, Args, Clone)]
pub struct PaymentArgs {
    /// A recipient (repeat to pay several in one transaction): ADDR:AMOUNT, ADDR:max (all
    /// that is left, no change), a bitcoin: URI (BIP-21), or ADDR with --amount. Amounts in
    /// satoshis, or with a btc suffix (0.001btc)
    #[arg(long = "to", value_name = "RECIPIENT", required = true)]
    pub to: Vec<String>,
    /// The amount of a single --to ADDR (the older form), in satoshis or with a btc suffix
    #[arg(long, value_name = "AMOUNT", value_parser = parse_amount)]
    pub amount: Option<Amount>,
    /// Spend exactly this coin, TXID:VOUT (repeat; see `ckm wallet coins`)
    #[arg(long = "from", value_name = "OUTPOINT")]
    pub from: Vec<OutPoint>,
    /// Fee rate in sat/vB [default: the chain source's estimate for --target-blocks; 2 sat/vB
    /// when it has none]
    #[arg(long, value_name = "SAT_PER_VB", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub fee_rate: Option<u64>,
    /// Confirmation target of the fee estimate, in blocks
    #[arg(long, value_name = "BLOCKS", default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=1008))]
    pub target_blocks: u16,
    /// Sign even a fee the fee guard refuses (above 10% of the payment, 1000 sat/vB or
    /// 1,000,000 sat)
    #[arg(long)]
    pub allow_high_fee: bool,
}

impl PaymentArgs {
    /// The recipients, checked against `network` (offline: before any server is contacted).
    pub fn recipients(&self, network: Network) -> Result<Vec<Recipient>> {
        if self.amount.is_some() && self.to.len() > 1 {
            bail!("--amount goes with a single --to ADDR; with several, give each as ADDR:AMOUNT");
        }
        let recipients = self
            .to
            .iter()
            .map(|t| Recipient::parse(t, self.amount, network))
            .collect::<Result<Vec<_>, _>>()?;
        check_recipients(&recipients)?;
        Ok(recipients)
    }
}

fn parse_amount(s: &str) -> Result<Amount, String> {
    ckm::wallet::spend::recipient::parse_amount("--amount", s).map_err(|e| e.to_string())
}

/// `--recovery-key KEY… [--recovery-threshold K] --recovery-after BLOCKS` of `wallet create`.
#[derive(Debug, Args, Clone)]
pub struct RecoveryArgs {
    /// A recovery key: an extended public key with origin, e.g. "[73c5da0a/86'/1'/0']tpub…"
    /// (repeat for several; the wallet derives …/0/* and …/1/* below it)
    #[arg(long = "recovery-key", value_name = "KEY", requires = "recovery_after")]
    pub recovery_keys: Vec<RecoveryKey>,
    /// How many recovery keys must sign [default: 1 with a single key; required with several]
    #[arg(long, value_name = "K", requires = "recovery_keys")]
    pub recovery_threshold: Option<u16>,
    /// Blocks a coin must be deep before the recovery keys can spend it (1 to 65535; 144 is
    /// about a day)
    #[arg(long, value_name = "BLOCKS", requires = "recovery_keys", value_parser = clap::value_parser!(u16).range(1..))]
    pub recovery_after: Option<u16>,
}

impl RecoveryArgs {
    /// The policy, checked against the wallet's network (`None` without --recovery-key).
    pub fn policy(self, network: Network) -> Result<Option<RecoveryPolicy>> {
        let Some(blocks) = self.recovery_after else {
            return Ok(None);
        };
        let n = self.recovery_keys.len();
        let threshold = match (self.recovery_threshold, n) {
            (Some(k), _) => k,
            (None, 1) => 1,
            (None, n) => bail!(
                "{n} recovery keys given: say how many of them must sign with --recovery-threshold K"
            ),
        };
        let policy = RecoveryPolicy::new(self.recovery_keys, threshold, blocks)?;
        policy.check_network(network).with_context(|| {
            format!("the recovery keys must be for {network} (tpub… for test networks, xpub… for bitcoin)")
        })?;
        Ok(Some(policy))
    }
}

/// A signer given as `URL#PUBKEY`.
#[derive(Debug, Clone)]
pub struct SignerSpec {
    pub url: String,
    pub identity: IdentityPublic,
    pub tls_sha256: Option<CertPin>,
}

pub fn parse_signer(s: &str) -> Result<SignerSpec, String> {
    let (url, key) = s.rsplit_once('#').ok_or_else(|| {
        format!("'{s}' is not URL#PUBKEY or https://…#PUBKEY@TLS_SHA256 (see `ckm id`, `ckm signer tls`)")
    })?;
    let (key, pin) = match key.split_once('@') {
        Some((k, p)) => (k, Some(p.to_ascii_lowercase())),
        None => (key, None),
    };
    let parsed = ckm::net::client::check_url(url).map_err(|e| format!("signer URL {url}: {e}"))?;
    let identity = IdentityPublic::from_str(key).map_err(|e| format!("signer key {key}: {e}"))?;
    match (parsed.scheme(), &pin) {
        ("https", None) => {
            return Err(format!(
                "{url}: an https signer needs its certificate pinned: URL#PUBKEY@TLS_SHA256 \
                 (the fingerprint printed by `ckm signer tls` on the signer)"
            ))
        }
        ("https", Some(p)) => {
            ckm::net::tls::pinned_client_config(p).map_err(|e| e.to_string())?;
        }
        (_, Some(_)) => return Err(format!("{url}: a TLS fingerprint needs an https URL")),
        _ => {}
    }
    let tls_sha256 = pin
        .map(|p| p.parse::<CertPin>().map_err(|e| e.to_string()))
        .transpose()?;
    Ok(SignerSpec {
        url: url.to_string(),
        identity,
        tls_sha256,
    })
}
