//! The wallets the console shows, kept loaded (a wallet of 10 000 transactions takes longer
//! to load than a page may take) and loaded again when its database changed on disk (another
//! `ckm` process wrote it), with what the pages read of them (balance, coins, history pages)
//! computed once per state of the database; and the signers' health, probed in the
//! background.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::keys::GroupKey;
use crate::net::client::Client;
use crate::net::transitions::gather_status;
use crate::wallet::lock::{Access, WalletLock};
use crate::wallet::{Balance, CkmWallet, Coin, HistoryEntry};

use super::ConsoleError;

/// How long a write waits for another `ckm` process holding the wallet.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// What identifies a database's content on disk: sizes and modification times of the file
/// and its write-ahead log.
type Stamp = Vec<(u64, Option<SystemTime>)>;

fn stamp(db: &Path) -> Stamp {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    [db.to_path_buf(), PathBuf::from(wal)]
        .iter()
        .map(|p| match std::fs::metadata(p) {
            Ok(m) => (m.len(), m.modified().ok()),
            Err(_) => (0, None),
        })
        .collect()
}

struct Loaded {
    stamp: Stamp,
    wallet: CkmWallet,
    memo: Memo,
}

/// What the pages read of a wallet, computed once per state of its database (a balance over
/// 10 000 transactions takes longer than a page may): dropped when the wallet is loaded again
/// or written.
#[derive(Default)]
pub struct Memo {
    balance: Option<Balance>,
    coins: BTreeMap<(usize, usize), (Vec<Coin>, usize)>,
    history: BTreeMap<(usize, usize), (Vec<HistoryEntry>, usize)>,
}

/// History and coin pages kept per wallet state.
const MEMO_PAGES: usize = 64;

impl Memo {
    /// [`CkmWallet::balance`].
    pub fn balance(&mut self, w: &CkmWallet) -> Balance {
        *self.balance.get_or_insert_with(|| w.balance())
    }

    /// [`CkmWallet::coins_page`].
    ///
    /// # Errors
    /// Database errors.
    pub fn coins(
        &mut self,
        w: &CkmWallet,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<Coin>, usize), ConsoleError> {
        if let Some(page) = self.coins.get(&(limit, offset)) {
            return Ok(page.clone());
        }
        let page = w.coins_page(limit, offset)?;
        if self.coins.len() >= MEMO_PAGES {
            self.coins.clear();
        }
        self.coins.insert((limit, offset), page.clone());
        Ok(page)
    }

    /// [`CkmWallet::history`].
    ///
    /// # Errors
    /// Database errors.
    pub fn history(
        &mut self,
        w: &CkmWallet,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<HistoryEntry>, usize), ConsoleError> {
        if let Some(page) = self.history.get(&(limit, offset)) {
            return Ok(page.clone());
        }
        let page = w.history(limit, offset)?;
        if self.history.len() >= MEMO_PAGES {
            self.history.clear();
        }
        self.history.insert((limit, offset), page.clone());
        Ok(page)
    }
}

/// The wallets of a coordinator home (`<home>/wallets/NAME.sqlite`).
pub struct Wallets {
    dir: PathBuf,
    loaded: Mutex<BTreeMap<String, Arc<Mutex<Option<Loaded>>>>>,
}

impl Wallets {
    /// The wallets in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Wallets {
            dir,
            loaded: Mutex::new(BTreeMap::new()),
        }
    }

    /// The wallet names, sorted.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn names(&self) -> Result<Vec<String>, ConsoleError> {
        let mut names = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(ConsoleError::Io(e)),
        };
        for entry in entries {
            let path = entry.map_err(ConsoleError::Io)?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("sqlite") {
                if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                    if !stem.starts_with('.') {
                        names.push(stem.to_string());
                    }
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn db(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.sqlite"))
    }

    fn slot(&self, name: &str) -> Result<Arc<Mutex<Option<Loaded>>>, ConsoleError> {
        if !self.names()?.iter().any(|n| n == name) {
            return Err(ConsoleError::NoWallet(name.to_string()));
        }
        let mut map = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map.entry(name.to_string()).or_default().clone())
    }

    /// Runs `f` on wallet `name` (loaded again first if its database changed). Blocking: call
    /// from a blocking task.
    ///
    /// # Errors
    /// No such wallet, a load error, or `f`'s.
    pub fn read<T>(
        &self,
        name: &str,
        f: impl FnOnce(&CkmWallet, &mut Memo) -> Result<T, ConsoleError>,
    ) -> Result<T, ConsoleError> {
        let slot = self.slot(name)?;
        let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
        let loaded = self.fresh(name, &mut guard)?;
        f(&loaded.wallet, &mut loaded.memo)
    }

    /// Runs `f` on wallet `name` under its lock (as `operation`, shown to another `ckm` process
    /// waiting for it): one writer per wallet, like the CLI's.
    ///
    /// # Errors
    /// The lock is held elsewhere, a load error, or `f`'s.
    pub fn write<T>(
        &self,
        name: &str,
        operation: &str,
        f: impl FnOnce(&mut CkmWallet) -> Result<T, ConsoleError>,
    ) -> Result<T, ConsoleError> {
        self.write_as(name, operation, Access::Exclusive, f)
    }

    /// [`Wallets::write`] with the lock shared, as the CLI's `psbt sign` takes it: co-signing
    /// a PSBT made beforehand may run beside other signings (a `ckm psbt sign` in another
    /// process), never beside a transition or a spend that chooses coins.
    ///
    /// # Errors
    /// As [`Wallets::write`].
    pub fn cosign<T>(
        &self,
        name: &str,
        operation: &str,
        f: impl FnOnce(&mut CkmWallet) -> Result<T, ConsoleError>,
    ) -> Result<T, ConsoleError> {
        self.write_as(name, operation, Access::Shared, f)
    }

    fn write_as<T>(
        &self,
        name: &str,
        operation: &str,
        access: Access,
        f: impl FnOnce(&mut CkmWallet) -> Result<T, ConsoleError>,
    ) -> Result<T, ConsoleError> {
        let slot = self.slot(name)?;
        let db = self.db(name);
        let _lock = WalletLock::acquire(
            &WalletLock::path_for(&db),
            name,
            operation,
            access,
            LOCK_WAIT,
            |_| {},
        )?;
        let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
        let loaded = self.fresh(name, &mut guard)?;
        let out = f(&mut loaded.wallet);
        loaded.stamp = stamp(&db);
        loaded.memo = Memo::default();
        out
    }

    fn fresh<'a>(
        &self,
        name: &str,
        guard: &'a mut Option<Loaded>,
    ) -> Result<&'a mut Loaded, ConsoleError> {
        let db = self.db(name);
        let now = stamp(&db);
        if guard.as_ref().is_none_or(|l| l.stamp != now) {
            *guard = None;
            let wallet = CkmWallet::load(&db)?;
            *guard = Some(Loaded {
                stamp: stamp(&db),
                wallet,
                memo: Memo::default(),
            });
        }
        guard
            .as_mut()
            .ok_or_else(|| ConsoleError::NoWallet(name.to_string()))
    }
}

/// One signer as last probed.
#[derive(Debug, Clone, Default)]
pub struct SignerHealth {
    /// Roster index.
    pub index: u16,
    /// Its URL.
    pub url: String,
    /// Its identity key.
    pub identity: String,
    /// The pinned TLS certificate (SHA-256), for an https signer.
    pub tls_pin: Option<String>,
    /// The epoch it reported at its last answer.
    pub epoch: Option<u64>,
    /// Whether its state matched the wallet's at its last answer.
    pub agrees: Option<bool>,
    /// Whether the last probe got an answer.
    pub reachable: bool,
    /// When it last answered (unix seconds).
    pub last_answer: Option<u64>,
    /// Why the last probe failed.
    pub error: Option<String>,
    /// When it was last probed (unix seconds).
    pub probed: Option<u64>,
}

/// The signers of every wallet, as the background probe last saw them.
#[derive(Default)]
pub struct Health {
    by_wallet: Mutex<BTreeMap<String, Vec<SignerHealth>>>,
}

impl Health {
    /// The signers of wallet `name` (empty before the first probe).
    pub fn of(&self, name: &str) -> Vec<SignerHealth> {
        let map = self.by_wallet.lock().unwrap_or_else(|p| p.into_inner());
        map.get(name).cloned().unwrap_or_default()
    }
}

/// Probes every signer of every wallet once (the `Status` question `wallet show` asks).
pub async fn probe_all(wallets: &Wallets, client: &Client, health: &Health) {
    let Ok(names) = wallets.names() else { return };
    for name in names {
        let Ok(meta) = wallets.read(&name, |w, _| Ok(w.meta().clone())) else {
            continue;
        };
        let members = meta.roster.entries().to_vec();
        let expected = meta.current_state().hash();
        let statuses = gather_status(client, &members, GroupKey::of(&meta.group)).await;
        let now = crate::auth::unix_now();
        let previous = health.of(&name);
        let rows = members
            .iter()
            .map(|m| {
                let before = previous.iter().find(|p| p.index == m.index);
                let mut row = SignerHealth {
                    index: m.index,
                    url: m.url.clone(),
                    identity: m.identity.to_string(),
                    tls_pin: m.tls_sha256.as_ref().map(|p| p.to_string()),
                    last_answer: before.and_then(|b| b.last_answer),
                    epoch: before.and_then(|b| b.epoch),
                    probed: Some(now),
                    ..SignerHealth::default()
                };
                match statuses.iter().find(|(i, _)| *i == m.index).map(|(_, s)| s) {
                    Some(Ok(status)) => {
                        row.reachable = true;
                        row.epoch = status.epoch;
                        row.agrees = Some(status.state == Some(expected));
                        row.last_answer = Some(now);
                    }
                    Some(Err(e)) => row.error = Some(e.clone()),
                    None => row.error = Some("no answer".into()),
                }
                row
            })
            .collect();
        let mut map = health.by_wallet.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(name, rows);
    }
}
