//! Which chain source a command uses, and `ckm wallet chain set|show|clear`.
//!
//! Order: `--electrum URL`, `--bitcoind URL …` or `--cbf HOST:PORT …` (mutually exclusive),
//! then the environment (`CKM_ELECTRUM`, or `CKM_BITCOIND` with `CKM_BITCOIND_COOKIE` or
//! `CKM_BITCOIND_USER` and `CKM_BITCOIND_PASS_FILE`, or `CKM_CBF` with comma-separated peers),
//! then the home's saved source (`chain.json`, written by `ckm wallet chain set`), then the
//! wallet's saved Electrum server. The saved source holds file paths only, never a password.
//!
//! Where a first sync from bitcoind or compact filters starts: `--birth-height`, else the
//! wallet's recorded birth height (the tip when `wallet create` ran, [`birth_height_for_new`]),
//! else the saved source's birth height, else the network's default (709,632 on mainnet, 0
//! elsewhere).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use bdk_wallet::KeychainKind;
use bitcoin::Network;
use ckm::chain::bitcoind::{Bitcoind, BitcoindConfig, RpcAuth};
use ckm::chain::cbf::{Cbf, CbfConfig};
use ckm::chain::electrum::Electrum;
use ckm::chain::{ChainSource, ProgressFn, SyncProgress};
use ckm::wallet::CkmWallet;
use clap::Subcommand;
use serde::{Deserialize, Serialize};

use super::args::{BitcoindArgs, CbfArgs, ElectrumArg};
use super::Context;

/// The file of the home's saved chain source.
const SAVED_FILE: &str = "chain.json";
/// A saved source is a few hundred bytes; refuse to read a large file.
const SAVED_MAX_BYTES: u64 = 64 * 1024;
/// Seconds `wallet create` waits for a node's tip (the birth height) at most.
const BIRTH_QUERY_SECS: u64 = 10;

/// A source, as saved in the home or resolved for one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum ChainChoice {
    /// An Electrum server.
    Electrum {
        /// `tcp://host:port` or `ssl://host:port`.
        url: String,
    },
    /// A Bitcoin Core node.
    Bitcoind {
        /// `http://host[:port]`.
        url: String,
        /// Cookie file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cookie: Option<PathBuf>,
        /// rpcuser.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        /// The file holding rpcuser's password.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pass_file: Option<PathBuf>,
        /// Plain http off this machine allowed.
        #[serde(default)]
        allow_insecure: bool,
        /// Request timeout in seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<u64>,
        /// Start height of a first sync.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        birth_height: Option<u32>,
    },
    /// Compact block filters from P2P peers.
    Cbf {
        /// `HOST:PORT` of each peer.
        peers: Vec<String>,
        /// Connection and request timeout in seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<u64>,
        /// Start height of a first sync.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        birth_height: Option<u32>,
    },
}

impl ChainChoice {
    /// The source the flags name, if any (credentials checked to be given, not read).
    fn from_flags(arg: &ElectrumArg) -> Result<Option<ChainChoice>> {
        let b = &arg.bitcoind;
        if let Some(url) = &arg.electrum {
            if b.birth_height.is_some()
                || b.bitcoind_timeout.is_some()
                || arg.cbf.cbf_timeout.is_some()
            {
                bail!(
                    "--birth-height, --bitcoind-timeout and --cbf-timeout go with a bitcoind or \
                     compact-filter source, not --electrum"
                );
            }
            return Ok(Some(ChainChoice::Electrum { url: url.clone() }));
        }
        if !arg.cbf.cbf.is_empty() {
            if b.bitcoind_timeout.is_some() {
                bail!("--bitcoind-timeout goes with --bitcoind; use --cbf-timeout with --cbf");
            }
            return Ok(Some(ChainChoice::Cbf {
                peers: arg.cbf.cbf.clone(),
                timeout_secs: arg.cbf.cbf_timeout,
                birth_height: b.birth_height,
            }));
        }
        let Some(url) = &b.bitcoind else {
            return Ok(None);
        };
        if arg.cbf.cbf_timeout.is_some() {
            bail!("--cbf-timeout goes with --cbf, not --bitcoind (use --bitcoind-timeout)");
        }
        if b.bitcoind_cookie.is_none() && b.bitcoind_user.is_none() {
            bail!(
                "--bitcoind needs credentials: --bitcoind-cookie FILE (e.g. ~/.bitcoin/.cookie) \
                 or --bitcoind-user USER --bitcoind-pass-file FILE"
            );
        }
        Ok(Some(ChainChoice::Bitcoind {
            url: url.clone(),
            cookie: b.bitcoind_cookie.as_deref().map(absolute).transpose()?,
            user: b.bitcoind_user.clone(),
            pass_file: b.bitcoind_pass_file.as_deref().map(absolute).transpose()?,
            allow_insecure: b.bitcoind_allow_insecure,
            timeout_secs: b.bitcoind_timeout,
            birth_height: b.birth_height,
        }))
    }

    /// The source the environment names, if any.
    fn from_env() -> Result<Option<ChainChoice>> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(list) = var("CKM_CBF") {
            if var("CKM_ELECTRUM").is_some() || var("CKM_BITCOIND").is_some() {
                bail!("CKM_CBF is set with CKM_ELECTRUM or CKM_BITCOIND: unset all but one");
            }
            let peers: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect();
            return Ok(Some(ChainChoice::Cbf {
                peers,
                timeout_secs: None,
                birth_height: None,
            }));
        }
        match (var("CKM_ELECTRUM"), var("CKM_BITCOIND")) {
            (Some(_), Some(_)) => bail!("CKM_ELECTRUM and CKM_BITCOIND are both set: unset one"),
            (Some(url), None) => Ok(Some(ChainChoice::Electrum { url })),
            (None, Some(url)) => {
                let cookie = var("CKM_BITCOIND_COOKIE").map(PathBuf::from);
                let user = var("CKM_BITCOIND_USER");
                let pass_file = var("CKM_BITCOIND_PASS_FILE").map(PathBuf::from);
                if cookie.is_none() && (user.is_none() || pass_file.is_none()) {
                    bail!(
                        "CKM_BITCOIND needs CKM_BITCOIND_COOKIE, or CKM_BITCOIND_USER and \
                         CKM_BITCOIND_PASS_FILE"
                    );
                }
                Ok(Some(ChainChoice::Bitcoind {
                    url,
                    cookie,
                    user,
                    pass_file,
                    allow_insecure: false,
                    timeout_secs: None,
                    birth_height: None,
                }))
            }
            (None, None) => Ok(None),
        }
    }

    /// `--birth-height`, `--bitcoind-timeout` and `--cbf-timeout` given with a saved or
    /// environment source.
    fn with_overrides(mut self, arg: &BitcoindArgs, cbf: &CbfArgs) -> Result<Self> {
        match &mut self {
            ChainChoice::Bitcoind {
                timeout_secs,
                birth_height,
                ..
            } => {
                if cbf.cbf_timeout.is_some() {
                    bail!("--cbf-timeout goes with compact filters; this command uses bitcoind");
                }
                *timeout_secs = arg.bitcoind_timeout.or(*timeout_secs);
                *birth_height = arg.birth_height.or(*birth_height);
            }
            ChainChoice::Cbf {
                timeout_secs,
                birth_height,
                ..
            } => {
                if arg.bitcoind_timeout.is_some() {
                    bail!(
                        "--bitcoind-timeout goes with bitcoind; this command uses compact filters"
                    );
                }
                *timeout_secs = cbf.cbf_timeout.or(*timeout_secs);
                *birth_height = arg.birth_height.or(*birth_height);
            }
            ChainChoice::Electrum { url } => {
                if arg.birth_height.is_some()
                    || arg.bitcoind_timeout.is_some()
                    || cbf.cbf_timeout.is_some()
                {
                    bail!(
                        "--birth-height, --bitcoind-timeout and --cbf-timeout go with a bitcoind \
                         or compact-filter source; this command uses the Electrum server {url}"
                    );
                }
            }
        }
        Ok(self)
    }

    /// The connection settings of a compact-filter source.
    fn cbf_config(&self) -> Result<CbfConfig> {
        let ChainChoice::Cbf {
            peers,
            timeout_secs,
            birth_height,
        } = self
        else {
            bail!("{} is not a compact-filter source", self.describe());
        };
        let mut config = CbfConfig::new(peers.clone());
        if let Some(secs) = timeout_secs {
            config.timeout = Duration::from_secs(*secs);
        }
        config.start_height = *birth_height;
        Ok(config)
    }

    /// The connection settings of a bitcoind source.
    fn bitcoind_config(&self) -> Result<BitcoindConfig> {
        let ChainChoice::Bitcoind {
            url,
            cookie,
            user,
            pass_file,
            allow_insecure,
            timeout_secs,
            birth_height,
        } = self
        else {
            bail!("{} is not a bitcoind source", self.describe());
        };
        let auth = match (cookie, user, pass_file) {
            (Some(c), _, _) => RpcAuth::Cookie(c.clone()),
            (None, Some(user), Some(pass_file)) => RpcAuth::UserPassFile {
                user: user.clone(),
                pass_file: pass_file.clone(),
            },
            _ => bail!(
                "the bitcoind source {url} has no credentials: set it again with \
                 `ckm wallet chain set`"
            ),
        };
        let mut config = BitcoindConfig::new(url.clone(), auth);
        config.allow_insecure = *allow_insecure;
        if let Some(secs) = timeout_secs {
            config.timeout = Duration::from_secs(*secs);
        }
        config.start_height = *birth_height;
        Ok(config)
    }

    /// Connects: an Electrum client, or a checked bitcoind connection (endpoint, credentials,
    /// network of wallet `name`).
    pub fn open(&self, name: &str, network: Network) -> Result<Box<dyn ChainSource>> {
        match self {
            ChainChoice::Electrum { url } => Ok(Box::new(Electrum::connect(url)?)),
            ChainChoice::Cbf { .. } => {
                Ok(Box::new(Cbf::connect(&self.cbf_config()?, name, network)?))
            }
            ChainChoice::Bitcoind { .. } => Ok(Box::new(Bitcoind::connect(
                &self.bitcoind_config()?,
                name,
                network,
            )?)),
        }
    }

    /// The JSON shown by `chain show` (file paths, never a secret).
    fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    fn describe(&self) -> String {
        match self {
            ChainChoice::Electrum { url } => format!("electrum {url}"),
            ChainChoice::Bitcoind {
                url,
                cookie,
                user,
                pass_file,
                allow_insecure,
                timeout_secs,
                birth_height,
            } => {
                let mut text = format!("bitcoind {url}");
                if let Some(c) = cookie {
                    text += &format!(", cookie {}", c.display());
                }
                if let (Some(u), Some(p)) = (user, pass_file) {
                    text += &format!(", user {u}, password in {}", p.display());
                }
                if *allow_insecure {
                    text += ", plain http off this machine allowed";
                }
                if let Some(t) = timeout_secs {
                    text += &format!(", timeout {t} s");
                }
                if let Some(h) = birth_height {
                    text += &format!(", birth height {h}");
                }
                text
            }
            ChainChoice::Cbf {
                peers,
                timeout_secs,
                birth_height,
            } => {
                let mut text = format!("compact block filters from {}", peers.join(", "));
                if let Some(t) = timeout_secs {
                    text += &format!(", timeout {t} s");
                }
                if let Some(h) = birth_height {
                    text += &format!(", birth height {h}");
                }
                text
            }
        }
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

fn saved_path(ctx: &Context) -> PathBuf {
    ctx.home.join(SAVED_FILE)
}

/// The home's saved source, if any.
fn saved(ctx: &Context) -> Result<Option<ChainChoice>> {
    let path = saved_path(ctx);
    match ckm::store::read_limited(&path, SAVED_MAX_BYTES) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("reading the saved chain source {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The source for a command on wallet `w`, if one is named anywhere (see the module docs).
pub fn resolve(ctx: &Context, arg: &ElectrumArg, w: &CkmWallet) -> Result<Option<ChainChoice>> {
    if let Some(choice) = ChainChoice::from_flags(arg)? {
        return Ok(Some(choice));
    }
    let found = match ChainChoice::from_env()? {
        Some(choice) => Some(choice),
        None => match saved(ctx)? {
            Some(choice) => Some(choice),
            None => w
                .meta()
                .electrum
                .clone()
                .map(|url| ChainChoice::Electrum { url }),
        },
    };
    found
        .map(|c| c.with_overrides(&arg.bitcoind, &arg.cbf))
        .transpose()
}

/// The source for a command that has no wallet yet (`wallet create`): the flags, the
/// environment, the home's saved source.
fn resolve_new(ctx: &Context, arg: &ElectrumArg) -> Result<Option<ChainChoice>> {
    if let Some(choice) = ChainChoice::from_flags(arg)? {
        return Ok(Some(choice));
    }
    match ChainChoice::from_env()? {
        Some(choice) => Ok(Some(choice)),
        None => saved(ctx),
    }
}

/// The birth height to record for wallet `name`, created now on `network`: `--birth-height`
/// when given, else the tip of the chain source the flags, the environment or the home name
/// (bitcoind: `getblockcount`; Electrum: the header tip). No source, or none reachable: `None`
/// and one line on stderr saying so; never an error, so that an offline create goes on.
pub fn birth_height_for_new(
    ctx: &Context,
    arg: &ElectrumArg,
    name: &str,
    network: Network,
) -> Option<u32> {
    if let Some(height) = arg.bitcoind.birth_height {
        return Some(height);
    }
    let default = ckm::chain::bitcoind::default_birth_height(network);
    let tip = resolve_new(ctx, arg).and_then(|choice| {
        choice
            .map(|mut c| {
                // A node that does not answer delays the create by this much at most.
                if let ChainChoice::Bitcoind { timeout_secs, .. }
                | ChainChoice::Cbf { timeout_secs, .. } = &mut c
                {
                    *timeout_secs = Some(
                        timeout_secs
                            .unwrap_or(BIRTH_QUERY_SECS)
                            .min(BIRTH_QUERY_SECS),
                    );
                }
                Ok(c.open(name, network)?.tip()?)
            })
            .transpose()
    });
    let why = match tip {
        Ok(Some(height)) => return Some(height),
        Ok(None) => "no chain source given".to_string(),
        Err(e) => format!("{e:#}"),
    };
    ctx.say(format!(
        "no birth height recorded ({why}): a first sync from bitcoind or compact filters \
         starts at block {default} unless given --birth-height"
    ));
    None
}

/// The source for a command on wallet `w`, connected. A bitcoind or compact-filter source's
/// first sync starts at `--birth-height`, else at the wallet's recorded birth height, else as
/// saved. A compact-filter source with one peer gets a warning on stderr (with `--json` too).
pub fn open(ctx: &Context, arg: &ElectrumArg, w: &CkmWallet) -> Result<Box<dyn ChainSource>> {
    let mut choice = resolve(ctx, arg, w)?.ok_or_else(|| {
        anyhow!(
            "no chain source: pass --electrum URL, --bitcoind URL --bitcoind-cookie FILE or \
             --cbf HOST:PORT (twice), set CKM_ELECTRUM, CKM_BITCOIND or CKM_CBF, or save one \
             with `ckm wallet chain set`"
        )
    })?;
    if let (
        ChainChoice::Bitcoind { birth_height, .. } | ChainChoice::Cbf { birth_height, .. },
        None,
        Some(born),
    ) = (
        &mut choice,
        arg.bitcoind.birth_height,
        w.meta().birth_height,
    ) {
        *birth_height = Some(born);
    }
    if let ChainChoice::Cbf { peers, .. } = &choice {
        if peers.len() == 1 {
            eprintln!("{}", ONE_PEER_WARNING);
        }
        let mut config = choice.cbf_config()?;
        let cp = w.bdk().latest_checkpoint();
        config.checkpoint = (cp.height() > 0).then(|| (cp.height(), cp.hash()));
        let source = Cbf::connect(&config, &w.meta().name, w.meta().network)?;
        return Ok(Box::new(source));
    }
    choice.open(&w.meta().name, w.meta().network)
}

/// Printed when compact filters come from a single peer.
const ONE_PEER_WARNING: &str = "warning: only one compact-filter peer (--cbf): it can leave out \
     blocks that pay you or spend your coins, and the balance would be wrong without any \
     error; give a second --cbf HOST:PORT of a node run by someone else";

/// A progress callback for `wallet sync`: a spinner on a terminal; without one, a line on
/// stderr every few seconds of a long block-by-block sync; nothing with `--json`.
pub fn progress(ctx: &Context) -> (ProgressFn, Option<indicatif::ProgressBar>) {
    if ctx.json {
        return (Box::new(|_| {}), None);
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let shown = bar.clone();
    let started = Instant::now();
    let mut first: Option<u32> = None;
    let mut last_line = Instant::now();
    let callback = move |p: SyncProgress| {
        let text = match p {
            SyncProgress::Script { keychain, index } => {
                let k = match keychain {
                    KeychainKind::External => "receive",
                    KeychainKind::Internal => "change",
                };
                format!("scanning {k} address {index}")
            }
            SyncProgress::Filters { permille, tip } => {
                let secs = started.elapsed().as_secs();
                format!(
                    "compact filters: {}.{}% checked, peers' tip {tip}, {secs} s",
                    permille / 10,
                    permille % 10
                )
            }
            SyncProgress::Block { height, tip } => {
                let from = *first.get_or_insert(height);
                let done = height.saturating_sub(from) + 1;
                let total = tip.saturating_sub(from) + 1;
                let secs = started.elapsed().as_secs_f64().max(0.001);
                format!(
                    "block {height} of {tip}: {done}/{total} blocks, {:.0} blocks/s",
                    f64::from(done) / secs
                )
            }
            _ => return,
        };
        match &shown {
            Some(bar) => bar.set_message(text),
            None if last_line.elapsed() >= Duration::from_secs(5) => {
                last_line = Instant::now();
                eprintln!("{text}");
            }
            None => {}
        }
    };
    (Box::new(callback), bar)
}

/// `ckm wallet chain …`.
#[derive(Debug, Subcommand)]
pub enum ChainCommand {
    /// Save the chain source of this coordinator home, used when a command gets none of
    /// --electrum, --bitcoind, --cbf (nor CKM_ELECTRUM/CKM_BITCOIND/CKM_CBF)
    ///
    /// The source is checked first: a bitcoind node must answer with the credentials and be on
    /// the network of every wallet of the home (without wallets, its chain is shown); an
    /// Electrum server must answer; every compact-filter peer must answer a P2P handshake on
    /// the wallets' network and serve filters. Only file paths are saved, never a password.
    ///
    /// Compact filters (--cbf): no mempool (a payment to you shows once mined), and one peer
    /// can leave out blocks: give two or more peers.
    ///
    /// Examples:
    ///   ckm wallet chain set --bitcoind http://127.0.0.1:8332 --bitcoind-cookie ~/.bitcoin/.cookie
    ///   ckm wallet chain set --bitcoind http://10.8.0.1:8332 --bitcoind-user ckm \
    ///       --bitcoind-pass-file ~/.ckm-rpc-pass --bitcoind-allow-insecure --birth-height 850000
    ///   ckm wallet chain set --electrum ssl://electrum.example.org:50002
    ///   ckm wallet chain set --cbf node1.example.org:8333 --cbf 203.0.113.5:8333
    #[command(verbatim_doc_comment)]
    Set {
        #[command(flatten)]
        source: ElectrumArg,
    },
    /// Show the home's saved chain source (and an environment variable that overrides it)
    ///
    /// Example:
    ///   ckm wallet chain show --json
    #[command(verbatim_doc_comment)]
    Show,
    /// Forget the home's saved chain source
    Clear,
}

pub fn run(ctx: &Context, cmd: ChainCommand) -> Result<()> {
    match cmd {
        ChainCommand::Set { source } => set(ctx, &source),
        ChainCommand::Show => show(ctx),
        ChainCommand::Clear => {
            let path = saved_path(ctx);
            let existed = match std::fs::remove_file(&path) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
            };
            ctx.output(serde_json::json!({ "cleared": existed }), || {
                if existed {
                    "the saved chain source is forgotten".into()
                } else {
                    "no chain source was saved".into()
                }
            })
        }
    }
}

fn set(ctx: &Context, source: &ElectrumArg) -> Result<()> {
    let choice = ChainChoice::from_flags(source)?.ok_or_else(|| {
        anyhow!("give --electrum URL, --bitcoind URL with its credentials, or --cbf HOST:PORT")
    })?;
    // What the check found: the node's chain, or the Electrum server's tip.
    let mut checked = serde_json::Value::Null;
    match &choice {
        ChainChoice::Bitcoind { .. } => {
            let config = choice.bitcoind_config()?;
            let mut networks = Vec::new();
            for name in ctx.wallet_names()? {
                let w = ctx.open_wallet(Some(&name))?;
                networks.push((name, w.meta().network));
            }
            if let (true, Some(network)) = (networks.is_empty(), ctx.network) {
                networks.push(("(new wallets)".into(), network));
            }
            for (name, network) in &networks {
                Bitcoind::connect(&config, name, *network)?;
            }
            if networks.is_empty() {
                // No wallet yet and no --network: credentials and reachability only.
                let (_, info) = Bitcoind::connect_any(&config)?;
                checked = serde_json::json!({ "chain": info.chain, "blocks": info.blocks });
            }
        }
        ChainChoice::Electrum { url } => {
            let tip = Electrum::connect(url)?.tip()?;
            checked = serde_json::json!({ "tip": tip });
        }
        ChainChoice::Cbf { peers, .. } => {
            if peers.len() == 1 {
                eprintln!("{ONE_PEER_WARNING}");
            }
            let config = choice.cbf_config()?;
            let mut networks = Vec::new();
            for name in ctx.wallet_names()? {
                let w = ctx.open_wallet(Some(&name))?;
                networks.push((name, w.meta().network));
            }
            if let (true, Some(network)) = (networks.is_empty(), ctx.network) {
                networks.push(("(new wallets)".into(), network));
            }
            for (name, network) in &networks {
                let tip = Cbf::connect(&config, name, *network)?.tip()?;
                checked = serde_json::json!({ "chain": network.to_core_arg(), "tip": tip });
            }
            if networks.is_empty() {
                let (source, network) = Cbf::connect_any(&config)?;
                checked =
                    serde_json::json!({ "chain": network.to_core_arg(), "tip": source.tip()? });
            }
        }
    }
    std::fs::create_dir_all(&ctx.home)
        .with_context(|| format!("creating home directory {}", ctx.home.display()))?;
    let path = saved_path(ctx);
    let bytes = serde_json::to_vec_pretty(&choice)?;
    ckm::store::write_atomic(&path, &bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    ctx.output(
        serde_json::json!({ "saved": choice.json(), "checked": checked }),
        || format!("saved: {}", choice.describe()),
    )
}

fn show(ctx: &Context) -> Result<()> {
    let saved = saved(ctx)?;
    let env = ChainChoice::from_env()?;
    let mut json = serde_json::json!({
        "saved": saved.as_ref().map(ChainChoice::json),
        "file": saved_path(ctx).display().to_string(),
    });
    if let (Some(e), Some(obj)) = (&env, json.as_object_mut()) {
        obj.insert("environment".into(), e.json());
    }
    ctx.output(json, || {
        let mut text = match &saved {
            Some(c) => format!("saved: {}", c.describe()),
            None => "no chain source saved (commands need --electrum, --bitcoind or --cbf, or \
                     the wallet's saved Electrum server)"
                .to_string(),
        };
        if let Some(e) = &env {
            text += &format!("\noverridden by the environment: {}", e.describe());
        }
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_source_round_trips_without_secrets() -> Result<()> {
        let c = ChainChoice::Bitcoind {
            url: "http://127.0.0.1:8332".into(),
            cookie: None,
            user: Some("ckm".into()),
            pass_file: Some("/etc/ckm/pass".into()),
            allow_insecure: false,
            timeout_secs: None,
            birth_height: Some(850_000),
        };
        let text = serde_json::to_string(&c)?;
        assert!(text.contains("\"source\":\"bitcoind\""), "{text}");
        assert_eq!(serde_json::from_str::<ChainChoice>(&text)?, c);
        let f = ChainChoice::Cbf {
            peers: vec!["127.0.0.1:8333".into(), "node.example.org:8333".into()],
            timeout_secs: Some(5),
            birth_height: None,
        };
        let text = serde_json::to_string(&f)?;
        assert!(text.contains("\"source\":\"cbf\""), "{text}");
        assert_eq!(serde_json::from_str::<ChainChoice>(&text)?, f);
        let e: ChainChoice = serde_json::from_str(r#"{"source":"electrum","url":"tcp://h:1"}"#)?;
        assert_eq!(
            e,
            ChainChoice::Electrum {
                url: "tcp://h:1".into()
            }
        );
        Ok(())
    }
}
