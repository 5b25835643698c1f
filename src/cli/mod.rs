//! Command-line interface: shared flags, dispatch to one module per subcommand group, and
//! helpers for homes, passphrases and output. [`hints`] adds, to an error, the command that
//! fixes it (the library's errors never name a command or a flag).
//!
//! The top floor: it may import every room of the `ckm` library; nothing imports it.

mod args;
mod chain;
mod console;
pub mod hints;
mod id;
mod pin;
mod psbt;
mod psbt_inspect;
mod psbt_io;
mod psbt_qr;
mod signer;
mod signer_address;
mod signer_backup;
mod signer_peers;
mod signer_records;
mod spend;
mod wallet;
mod wallet_backup;
mod wallet_export;
mod wallet_lifecycle;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, bail, Context as _, Result};
use bitcoin::Network;
use ckm::identity::{IdentityKey, IdentityPublic};
use ckm::signer::home::SignerHome;
use ckm::store::write_atomic;
use ckm::wallet::lock::{Access, WalletLock};
use ckm::wallet::CkmWallet;
use clap::{Args, Parser, Subcommand};
use zeroize::Zeroizing;

/// How long a wallet operation waits for another one on the same wallet to end.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

const ABOUT: &str = "Collaborative Key Management for Bitcoin: FROST threshold Taproot wallets.

No single device ever holds a whole key. `n` co-signers (\"secret servers\", each a
`ckm signer serve` process) run a distributed key generation; any `t` of them co-sign
PSBTs, and on chain the spend is an ordinary single-key Taproot key-path spend.";

const AFTER_HELP: &str = "Typical session (one coordinator home, three signer homes):
  ckm --home s1 signer init                 # once per signer; prints its identity key
  ckm --home s1 signer peers add <id2> --label s2   # each signer approves every other one
  ckm --home s1 signer peers add <id3> --label s3   # (keys compared out of band)
  ckm --home s1 signer serve --listen 127.0.0.1:7001 --allow-coordinator $(ckm --home c id)
  ckm --home c wallet create vault --threshold 2 \\
      --signer http://127.0.0.1:7001#<id1> --signer http://127.0.0.1:7002#<id2> \\
      --signer http://127.0.0.1:7003#<id3>
  ckm --home c wallet address
  ckm --home c wallet sync --electrum tcp://127.0.0.1:60401
  ckm --home c wallet chain set --bitcoind http://127.0.0.1:8332 --bitcoind-cookie ~/.bitcoin/.cookie
  ckm --home c wallet sync                  # now through your own node
  ckm --home c wallet send --to <address> --amount 100000

Environment: CKM_HOME, CKM_PASSPHRASE, CKM_ELECTRUM, CKM_BITCOIND (with CKM_BITCOIND_COOKIE,
or CKM_BITCOIND_USER and CKM_BITCOIND_PASS_FILE), RUST_LOG.";

/// The `ckm` command line.
#[derive(Debug, Parser)]
#[command(name = "ckm", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Flags every subcommand accepts, before or after the subcommand name.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Directory holding this party's keys and wallets [default: the platform data dir, e.g. ~/.local/share/ckm]
    #[arg(long, global = true, env = "CKM_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// Bitcoin network for new wallets; commands on an existing wallet check it matches
    #[arg(long, global = true, value_name = "NETWORK", value_parser = parse_network)]
    network: Option<Network>,
    /// Machine-readable JSON on stdout (errors as JSON on stderr)
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

fn parse_network(s: &str) -> Result<Network, String> {
    Network::from_str(s).map_err(|_| {
        format!("unknown network '{s}' (use bitcoin, testnet, testnet4, signet or regtest)")
    })
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print this home's identity public key (created on first use)
    Id,
    /// Run and manage a co-signer ("secret server")
    #[command(subcommand)]
    Signer(signer::SignerCommand),
    /// Create and use wallets (the coordinator's side; holds no secret)
    #[command(subcommand)]
    Wallet(wallet::WalletCommand),
    /// Create, co-sign and broadcast PSBT files
    #[command(subcommand)]
    Psbt(psbt::PsbtCommand),
    /// Serve the web console of this coordinator home (wallets, receive, send, history,
    /// coins, signers) to a browser
    ///
    /// Binds loopback by default and prints one URL with a fresh login token; opening it gives
    /// the browser a session cookie. Every page needs that session, every form a CSRF token,
    /// and the Host header must be the listen address or a --public-host name. Off loopback it
    /// serves HTTPS only. The console is a view and a driver: the signers check every payment.
    ///
    /// Examples:
    ///   ckm --home ~/coord console
    ///   ckm --home ~/coord console --listen 127.0.0.1:8035 --electrum tcp://127.0.0.1:60401
    ///   ckm --home ~/coord console --listen 0.0.0.0:8443 --public-host ckm.lan \
    ///       --tls-cert cert.pem --tls-key key.pem
    #[command(verbatim_doc_comment)]
    Console(console::ConsoleArgs),
}

/// Whether the command sets up logging itself (`signer serve`, whose log format may come
/// from its configuration file).
pub fn sets_up_own_logging(cli: &Cli) -> bool {
    matches!(
        cli.command,
        Command::Signer(signer::SignerCommand::Serve(_))
    )
}

/// Sets up `tracing` on stderr, as text or as one JSON object per line with the stable
/// fields `timestamp`, `level`, `message`, `target` and the event's own fields.
pub fn init_logging(verbose: u8, format: ckm::ops::config::LogFormat) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log that cannot be written (a full disk) must not take the process down:
        // tracing-subscriber would otherwise report it with `eprintln!`, which panics.
        .log_internal_errors(false);
    let _ = match format {
        ckm::ops::config::LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .try_init(),
        ckm::ops::config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(true)
            .try_init(),
    };
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    let ctx = Context::new(cli.global)?;
    match cli.command {
        Command::Id => id::run(&ctx),
        Command::Signer(cmd) => signer::run(&ctx, cmd),
        Command::Wallet(cmd) => wallet::run(&ctx, cmd),
        Command::Psbt(cmd) => psbt::run(&ctx, cmd),
        Command::Console(args) => console::run(&ctx, args),
    }
}

/// What every subcommand needs: the home, the requested network, the output mode.
pub struct Context {
    pub home: PathBuf,
    pub network: Option<Network>,
    pub json: bool,
    /// `-v` count, for commands that set up logging themselves.
    pub verbose: u8,
}

impl Context {
    /// A quiet context on `home` (for work done on the console's behalf).
    pub fn for_home(home: PathBuf, network: Option<Network>) -> Self {
        Context {
            home,
            network,
            json: true,
            verbose: 0,
        }
    }

    fn new(global: GlobalArgs) -> Result<Self> {
        let home = match global.home {
            Some(h) => h,
            None => dirs::data_dir()
                .map(|d| d.join("ckm"))
                .ok_or_else(|| anyhow!("no platform data directory; pass --home DIR"))?,
        };
        Ok(Context {
            home,
            network: global.network,
            json: global.json,
            verbose: global.verbose,
        })
    }

    /// Prints a result: JSON on stdout with `--json`, else the human text.
    pub fn output(&self, json: serde_json::Value, human: impl FnOnce() -> String) -> Result<()> {
        let mut out = std::io::stdout().lock();
        let text = if self.json { json.to_string() } else { human() };
        match writeln!(out, "{text}") {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other.context("writing to stdout"),
        }
    }

    /// A progress line on stderr for humans (nothing in `--json` mode).
    pub fn say(&self, text: impl AsRef<str>) {
        if !self.json {
            eprintln!("{}", text.as_ref());
        }
    }

    fn ensure_home(&self) -> Result<()> {
        std::fs::create_dir_all(&self.home)
            .with_context(|| format!("creating home directory {}", self.home.display()))
    }

    /// The coordinator identity of this home, created on first use.
    pub fn coordinator_identity(&self) -> Result<IdentityKey> {
        if SignerHome::exists(&self.home) {
            bail!(
                "{} is a signer home; use a separate --home for the coordinator",
                self.home.display()
            );
        }
        let path = self.home.join("identity.key");
        if path.exists() {
            let text = Zeroizing::new(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
            );
            let mut bytes = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(text.trim(), bytes.as_mut_slice())
                .map_err(|_| anyhow!("{} is corrupted", path.display()))?;
            return IdentityKey::from_secret_bytes(&bytes)
                .map_err(|e| anyhow!("{} is corrupted: {e}", path.display()));
        }
        self.ensure_home()?;
        let key = IdentityKey::generate(&mut rand::rngs::OsRng);
        let text = Zeroizing::new(format!("{}\n", hex::encode(key.secret_bytes().as_slice())));
        write_atomic(&path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        write_atomic(
            &self.home.join("identity.pub"),
            format!("{}\n", key.public()).as_bytes(),
        )?;
        tracing::info!(identity = %key.public(), "created coordinator identity");
        Ok(key)
    }

    /// The public identity of this home (signer or coordinator), created on first use for a
    /// coordinator home.
    pub fn public_identity(&self) -> Result<IdentityPublic> {
        if SignerHome::exists(&self.home) {
            return Ok(SignerHome::public_identity(&self.home)?);
        }
        Ok(self.coordinator_identity()?.public())
    }

    fn wallets_dir(&self) -> PathBuf {
        self.home.join("wallets")
    }

    /// Names of the wallets in this home.
    pub fn wallet_names(&self) -> Result<Vec<String>> {
        let dir = self.wallets_dir();
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut names = Vec::new();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("sqlite") {
                if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                    names.push(stem.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Stores a new wallet database for `meta` (whose name must be free in this home).
    pub fn store_wallet(&self, meta: ckm::wallet::WalletMeta) -> Result<ckm::wallet::CkmWallet> {
        let name = meta.name.clone();
        let path = self.new_wallet_path(&name)?;
        // Built under a temporary name (not `*.sqlite`, so never listed) and moved into place
        // only once complete: a crash part-way leaves no half-made wallet that would break
        // `wallet list` and block the name. The hard link refuses to replace an existing wallet.
        let tmp = path.with_file_name(format!(".{name}.sqlite.creating-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        drop(ckm::wallet::CkmWallet::create(&tmp, meta)?);
        let placed = std::fs::hard_link(&tmp, &path)
            .with_context(|| format!("storing wallet '{name}' at {}", path.display()));
        let _ = std::fs::remove_file(&tmp);
        placed?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all())?;
        }
        Ok(ckm::wallet::CkmWallet::load(&path)?)
    }

    /// The database path of a new wallet.
    pub fn new_wallet_path(&self, name: &str) -> Result<PathBuf> {
        check_wallet_name(name)?;
        std::fs::create_dir_all(self.wallets_dir())?;
        let path = self.wallets_dir().join(format!("{name}.sqlite"));
        if path.exists() {
            bail!(
                "a wallet named '{name}' already exists in {}",
                self.home.display()
            );
        }
        Ok(path)
    }

    /// Takes the lock of wallet `name` (the home's only wallet when None) for `operation`
    /// (e.g. `wallet refresh`), waiting a few seconds if another operation holds it, then
    /// opens the wallet. The lock is held until the returned guard is dropped: keep it for
    /// the whole operation (see [`ckm::wallet::lock`]).
    pub fn open_wallet_locked(
        &self,
        name: Option<&str>,
        operation: &str,
    ) -> Result<(WalletLock, CkmWallet)> {
        self.open_wallet_with(name, operation, Access::Exclusive)
    }

    /// [`Context::open_wallet_locked`] with the lock shared: for co-signing a PSBT made
    /// beforehand, which may run beside other signings but never beside a transition.
    pub fn open_wallet_shared(
        &self,
        name: Option<&str>,
        operation: &str,
    ) -> Result<(WalletLock, CkmWallet)> {
        self.open_wallet_with(name, operation, Access::Shared)
    }

    fn open_wallet_with(
        &self,
        name: Option<&str>,
        operation: &str,
        access: Access,
    ) -> Result<(WalletLock, CkmWallet)> {
        let name = self.wallet_name(name)?;
        let lock = self.lock_wallet(&name, operation, access)?;
        let wallet = self.open_wallet(Some(&name))?;
        Ok((lock, wallet))
    }

    /// Takes the lock of wallet `name` (which need not exist yet) for `operation`.
    pub fn lock_wallet(&self, name: &str, operation: &str, access: Access) -> Result<WalletLock> {
        check_wallet_name(name)?;
        std::fs::create_dir_all(self.wallets_dir())?;
        let path = WalletLock::path_for(&self.wallets_dir().join(format!("{name}.sqlite")));
        Ok(WalletLock::acquire(
            &path,
            name,
            operation,
            access,
            LOCK_WAIT,
            |holder| {
                let who =
                    holder.map_or_else(|| "another ckm process".to_string(), |h| h.to_string());
                self.say(format!(
                    "wallet '{name}' is busy: {who} holds it; waiting up to {} s…",
                    LOCK_WAIT.as_secs()
                ));
            },
        )?)
    }

    /// The name of wallet `name`, or of the home's only wallet when None.
    fn wallet_name(&self, name: Option<&str>) -> Result<String> {
        let names = self.wallet_names()?;
        Ok(match name {
            Some(n) => {
                if !names.iter().any(|x| x == n) {
                    bail!(
                        "no wallet named '{n}' in {} (wallets: {})",
                        self.home.display(),
                        list_or_none(&names)
                    );
                }
                n.to_string()
            }
            None => match names.as_slice() {
                [only] => only.clone(),
                [] => bail!(
                    "no wallet in {}; create one with `ckm wallet create`",
                    self.home.display()
                ),
                _ => bail!(
                    "{} holds several wallets ({}); choose one with --wallet NAME",
                    self.home.display(),
                    names.join(", ")
                ),
            },
        })
    }

    /// Opens the wallet `name`, or the only wallet of the home when `name` is None (without
    /// its lock: for reading, or under [`Context::open_wallet_locked`]).
    pub fn open_wallet(&self, name: Option<&str>) -> Result<CkmWallet> {
        let name = self.wallet_name(name)?;
        let wallet = CkmWallet::load(&self.wallets_dir().join(format!("{name}.sqlite")))
            .with_context(|| format!("opening wallet '{name}'"))?;
        if let Some(n) = self.network {
            if n != wallet.meta().network {
                bail!("wallet '{name}' is on {}, not {n}", wallet.meta().network);
            }
        }
        Ok(wallet)
    }
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Wallet names: 1 to 64 of `A-Z a-z 0-9 _ - .`, not starting with a dot.
pub fn check_wallet_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        bail!("invalid wallet name '{name}': use 1 to 64 letters, digits, '_', '-' or '.'");
    }
    Ok(())
}

/// The passphrase: from `--passphrase-file`, else `CKM_PASSPHRASE`, else a prompt on the
/// terminal (asked twice when `confirm`).
pub fn read_passphrase(file: Option<&Path>, confirm: bool) -> Result<Zeroizing<String>> {
    if let Some(path) = file {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading passphrase file {}", path.display()))?,
        );
        let trimmed = Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_string());
        if trimmed.is_empty() {
            bail!("passphrase file {} is empty", path.display());
        }
        return Ok(trimmed);
    }
    if let Ok(p) = std::env::var("CKM_PASSPHRASE") {
        let p = Zeroizing::new(p);
        if p.is_empty() {
            bail!("CKM_PASSPHRASE is empty");
        }
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "no passphrase: pass --passphrase-file FILE, set CKM_PASSPHRASE, or run in a terminal"
        );
    }
    let first = Zeroizing::new(rpassword::prompt_password("Share store passphrase: ")?);
    if first.is_empty() {
        bail!("empty passphrase");
    }
    if confirm {
        let second = Zeroizing::new(rpassword::prompt_password("Repeat passphrase: ")?);
        if *first != *second {
            bail!("the passphrases differ");
        }
    }
    Ok(first)
}

/// A tokio runtime for the network commands.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Writes a file atomically (temp file, fsync, rename).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, bytes).with_context(|| format!("writing {}", path.display()))
}
