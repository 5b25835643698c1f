//! The coordinator's wallet: its public side only (the coordinator holds no secret share).
//!
//! Reading order:
//! - this file: BIP-0086-style descriptors `tr([fp]xpub/0/*)` / `…/1/*` built from the group
//!   key and chain code (with the certified recovery leaf when the wallet has one:
//!   `tr([fp]xpub/0/*,and_v(v:pk(REC/0/*),older(N)))`, see [`crate::recovery`]), and
//!   [`CkmWallet`], a bdk_wallet wallet persisted in SQLite together with ckm's metadata;
//! - `meta`: what ckm keeps besides bdk's state (roster, group key package, certified key
//!   generation and transitions) and its offline check;
//! - [`spend`]: building payments over bdk_wallet's `TxBuilder` (recipients, coin control and
//!   freezing, the fee policy and its guard) and reviewing them;
//! - [`history`]: balances (frozen coins apart) and transactions with their states;
//!   [`labels`]: labels in BIP-0329's shape;
//! - [`lock`]: one writer per wallet operation on a coordinator home;
//! - [`record`], [`export`]: a wallet's record as the signers confirm it, and exports for
//!   other wallets; `commitments`: preprocessed signer commitments kept for one-round signing.
//!
//! May import: `protocol`, `psbt`, `recovery`, `keys`, `frost`, `identity` (lower floors).
//! Never `signer`, `net`, `chain`, `ops` or `cli`: chain access is [`crate::chain`]'s, which
//! updates a wallet from above.

pub mod export;
pub mod history;
mod inspect;
pub mod labels;
pub mod lock;
mod meta;
pub mod record;
mod script_status;
pub mod spend;

use std::path::Path;
use std::str::FromStr;

use bdk_wallet::rusqlite::{self, Connection, OptionalExtension};
use bdk_wallet::{AddressInfo, KeychainKind, PersistedWallet, Wallet};
use bitcoin::{Address, Network, OutPoint};

mod commitments;

pub use commitments::WalletCommitments;
pub use history::{Balance, HistoryEntry, TxState};
pub use inspect::NotSignable;
pub use meta::{PendingTransition, WalletMeta, WalletVerifyError};
pub use spend::{
    Coin, FeeGuardError, FeeRateSource, PayAmount, Payment, Recipient, RecipientError,
    ReplaceError, Replacement, Review, ReviewInput, ReviewOutput,
};

use crate::frost::shares::GroupPublic;
use crate::identity::IdentityPublic;
use crate::keys::Keychain;
pub use crate::keys::{Roster, RosterEntry};
use crate::recovery::{RecoveryPolicy, WalletScripts};

/// Errors of wallet operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalletError {
    /// The descriptor could not be built.
    #[error("cannot build the wallet descriptor: {0}")]
    Descriptor(String),
    /// SQLite failed.
    #[error("wallet database error")]
    Database(#[from] rusqlite::Error),
    /// The database already holds a wallet.
    #[error("a wallet already exists at {0}")]
    Exists(String),
    /// No wallet in the database.
    #[error("no wallet found at {0}")]
    NotFound(String),
    /// bdk refused to create or load the wallet.
    #[error("bdk_wallet: {0}")]
    Bdk(String),
    /// Metadata could not be encoded or decoded.
    #[error("wallet metadata is malformed: {0}")]
    Metadata(String),
    /// The address is for another network.
    #[error("address {address} is not valid on {network}")]
    WrongNetwork {
        /// The address as given.
        address: String,
        /// The wallet's network.
        network: Network,
    },
    /// The payment could not be built (insufficient funds, dust, ...).
    #[error("cannot build the transaction: {0}")]
    Build(String),
    /// A recipient was refused (checked before anything else).
    #[error(transparent)]
    Recipient(#[from] RecipientError),
    /// The outpoint is not an unspent coin of the wallet.
    #[error("{0} is not an unspent coin of this wallet (as of its last sync)")]
    UnknownCoin(OutPoint),
    /// A frozen coin was picked by hand.
    #[error("coin {0} is frozen")]
    Frozen(OutPoint),
    /// A bump, cancellation or CPFP was refused.
    #[error(transparent)]
    Replace(#[from] ReplaceError),
    /// The fee guard refused the transaction.
    #[error("fee guard: {0}")]
    FeeGuard(#[from] FeeGuardError),
    /// A recovery spend of a wallet without a recovery path.
    #[error("wallet '{0}' has no recovery path (its key generation certified no recovery key)")]
    NoRecovery(String),
    /// No coin is deep enough for the recovery path yet.
    #[error("no coin can be spent through the recovery path yet: it needs {blocks} confirmations; {}", match .ready_at { Some(h) => format!("the oldest coin gets there at height {h} (the wallet's tip is {tip}; sync first if that is stale)"), None => "the wallet has no confirmed coin (sync first)".to_string() })]
    NotMature {
        /// The policy's timelock.
        blocks: u16,
        /// The wallet's chain tip.
        tip: u32,
        /// Height at which the oldest coin can be spent (as the next block).
        ready_at: Option<u32>,
    },
}

/// The external and internal descriptors (with checksums) of a group's wallet:
/// `tr([fp]xpub/0/*)#…` and `tr([fp]xpub/1/*)#…`.
///
/// # Errors
/// Only if miniscript rejects the descriptor it is handed (a bug).
pub fn descriptors(group: &GroupPublic, network: Network) -> Result<(String, String), WalletError> {
    descriptors_with(group, network, None)
}

/// The external and internal descriptors (with checksums) of a group's wallet with an optional
/// recovery path: `tr([fp]xpub/0/*,and_v(v:pk([…]REC/0/*),older(N)))#…` and `…/1/*…`;
/// without one they are those of [`descriptors`].
///
/// # Errors
/// miniscript refusing the descriptor.
pub fn descriptors_with(
    group: &GroupPublic,
    network: Network,
    recovery: Option<&RecoveryPolicy>,
) -> Result<(String, String), WalletError> {
    let scripts = WalletScripts::new(group, network, recovery)
        .map_err(|e| WalletError::Descriptor(e.to_string()))?;
    Ok((
        scripts.descriptor(Keychain::External).to_string(),
        scripts.descriptor(Keychain::Internal).to_string(),
    ))
}

const META_TABLE: &str = "CREATE TABLE IF NOT EXISTS ckm_wallet (id INTEGER PRIMARY KEY CHECK (id = 0), meta TEXT NOT NULL)";

/// A ckm wallet: bdk_wallet over SQLite plus ckm's metadata in the same database.
#[derive(Debug)]
pub struct CkmWallet {
    meta: WalletMeta,
    wallet: PersistedWallet<Connection>,
    db: Connection,
}

impl CkmWallet {
    /// Creates the wallet database at `path` (which must not hold a wallet yet).
    ///
    /// # Errors
    /// An existing wallet, a database error or bdk refusing the descriptors.
    pub fn create(path: &Path, meta: WalletMeta) -> Result<Self, WalletError> {
        let mut db = Connection::open(path)?;
        db.execute(META_TABLE, [])?;
        db.execute(commitments::TABLE, [])?;
        db.execute(commitments::FLAGS, [])?;
        db.execute(labels::TABLE, [])?;
        db.execute(spend::replace::TABLE, [])?;
        let existing: Option<String> = db
            .query_row("SELECT meta FROM ckm_wallet WHERE id = 0", [], |r| r.get(0))
            .optional()?;
        if existing.is_some() {
            return Err(WalletError::Exists(path.display().to_string()));
        }
        let (external, internal) = meta.descriptors()?;
        let wallet = Wallet::create(external, internal)
            .network(meta.network)
            .create_wallet(&mut db)
            .map_err(|e| WalletError::Bdk(e.to_string()))?;
        let text =
            serde_json::to_string(&meta).map_err(|e| WalletError::Metadata(e.to_string()))?;
        db.execute("INSERT INTO ckm_wallet (id, meta) VALUES (0, ?1)", [text])?;
        Ok(CkmWallet { meta, wallet, db })
    }

    /// Loads the wallet stored at `path`, checking bdk's descriptors against the metadata.
    ///
    /// # Errors
    /// No wallet there, a database error, or inconsistent contents.
    pub fn load(path: &Path) -> Result<Self, WalletError> {
        if !path.exists() {
            return Err(WalletError::NotFound(path.display().to_string()));
        }
        let mut db = Connection::open(path)?;
        db.execute(META_TABLE, [])?;
        db.execute(commitments::TABLE, [])?;
        db.execute(commitments::FLAGS, [])?;
        db.execute(labels::TABLE, [])?;
        db.execute(spend::replace::TABLE, [])?;
        let text: Option<String> = db
            .query_row("SELECT meta FROM ckm_wallet WHERE id = 0", [], |r| r.get(0))
            .optional()?;
        let text = text.ok_or_else(|| WalletError::NotFound(path.display().to_string()))?;
        let meta: WalletMeta =
            serde_json::from_str(&text).map_err(|e| WalletError::Metadata(e.to_string()))?;
        let (external, internal) = meta.descriptors()?;
        let wallet = Wallet::load()
            .descriptor(KeychainKind::External, Some(external))
            .descriptor(KeychainKind::Internal, Some(internal))
            .check_network(meta.network)
            .load_wallet(&mut db)
            .map_err(|e| WalletError::Bdk(e.to_string()))?
            .ok_or_else(|| WalletError::NotFound(path.display().to_string()))?;
        Ok(CkmWallet { meta, wallet, db })
    }

    /// Replaces the stored metadata (e.g. a new default Electrum server).
    ///
    /// # Errors
    /// Database errors.
    pub fn set_meta(&mut self, meta: WalletMeta) -> Result<(), WalletError> {
        let text =
            serde_json::to_string(&meta).map_err(|e| WalletError::Metadata(e.to_string()))?;
        self.db
            .execute("UPDATE ckm_wallet SET meta = ?1 WHERE id = 0", [text])?;
        self.meta = meta;
        Ok(())
    }

    /// The preprocessed commitments `coordinator` holds for this wallet's current epoch,
    /// with the metadata (both borrowed at once, for one-round signing).
    pub fn commitments(
        &self,
        coordinator: &IdentityPublic,
    ) -> (&WalletMeta, WalletCommitments<'_>) {
        (
            &self.meta,
            WalletCommitments::new(&self.db, coordinator, self.meta.epoch),
        )
    }

    /// The wallet's metadata.
    pub fn meta(&self) -> &WalletMeta {
        &self.meta
    }

    /// The underlying bdk wallet.
    pub fn bdk(&self) -> &Wallet {
        &self.wallet
    }

    /// The underlying bdk wallet, mutably (remember to [`CkmWallet::persist`]).
    pub fn bdk_mut(&mut self) -> &mut Wallet {
        &mut self.wallet
    }

    /// Writes bdk's pending changes to SQLite.
    ///
    /// # Errors
    /// Database errors.
    pub fn persist(&mut self) -> Result<(), WalletError> {
        self.wallet.persist(&mut self.db)?;
        Ok(())
    }

    /// Reveals and persists the next receive address.
    ///
    /// # Errors
    /// Database errors.
    pub fn reveal_next_address(&mut self) -> Result<AddressInfo, WalletError> {
        let info = self.wallet.reveal_next_address(KeychainKind::External);
        self.persist()?;
        Ok(info)
    }

    /// Parses an address and checks it belongs to the wallet's network.
    ///
    /// # Errors
    /// Malformed address or another network.
    pub fn parse_address(&self, text: &str) -> Result<Address, WalletError> {
        let wrong = || WalletError::WrongNetwork {
            address: text.to_string(),
            network: self.meta.network,
        };
        Address::from_str(text)
            .map_err(|_| wrong())?
            .require_network(self.meta.network)
            .map_err(|_| wrong())
    }
}
