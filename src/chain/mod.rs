//! Chain access for the coordinator's wallet, behind one small trait ([`ChainSource`]): bring
//! the wallet up to date, broadcast a transaction, estimate a fee rate, read the tip.
//!
//! Reading order: this file (the trait, its error and the helpers every source shares), then
//! one file per source: [`electrum`] (an Electrum server through `bdk_electrum`),
//! [`bitcoind`] (the user's own Bitcoin Core node over RPC, through `bdk_bitcoind_rpc`) and
//! [`cbf`] (compact block filters from P2P peers, through `bdk_kyoto`), so that the CLI and
//! the console pick a source once and call the same functions.
//!
//! May import: [`crate::wallet`] (the wallet it updates) and the lower floors. Never `net`,
//! `signer`, `ops` or `cli`: the chain is not the signers' network.

pub mod bitcoind;
pub mod cbf;
pub mod electrum;

use bdk_wallet::KeychainKind;
use bitcoin::{FeeRate, Transaction, Txid};

use crate::wallet::{CkmWallet, WalletError};

/// How far a sync has come, for a progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncProgress {
    /// A script of `keychain` at derivation `index` is being checked (address scans).
    Script {
        /// Receive or change.
        keychain: KeychainKind,
        /// Derivation index.
        index: u32,
    },
    /// Block `height` of `tip` was applied (block-by-block sources).
    Block {
        /// The block's height.
        height: u32,
        /// The source's tip when the sync started (or this block, if higher).
        tip: u32,
    },
    /// Compact block filters checked so far (filter sources), in thousandths of the work.
    Filters {
        /// 0 to 1000.
        permille: u16,
        /// The height of the peers' best header known so far.
        tip: u32,
    },
}

/// A callback told of a sync's progress; runs on the source's own thread.
pub type ProgressFn = Box<dyn FnMut(SyncProgress) + Send>;

/// Errors of a chain source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The source could not be reached, or answered with an error.
    #[error("{source_name}: {reason}")]
    Source {
        /// Which source (e.g. `electrum server tcp://…`).
        source_name: String,
        /// The cause, as the source gave it.
        reason: String,
    },
    /// The source refused to relay a transaction.
    #[error("{source_name}: broadcast refused: {reason}")]
    Refused {
        /// Which source.
        source_name: String,
        /// The source's reason.
        reason: String,
    },
    /// The update did not connect to the wallet's chain.
    #[error("the update from {source_name} does not connect to the wallet's chain: {reason}")]
    Connect {
        /// Which source.
        source_name: String,
        /// bdk's reason.
        reason: String,
    },
    /// The Bitcoin Core node cannot be used or failed.
    #[error(transparent)]
    Bitcoind(#[from] bitcoind::BitcoindError),
    /// The compact-filter peers cannot be used or failed.
    #[error(transparent)]
    Cbf(#[from] cbf::CbfError),
    /// Saving the wallet failed.
    #[error(transparent)]
    Wallet(#[from] WalletError),
}

/// One way to reach the chain. Implementations are blocking and hold their own connection.
pub trait ChainSource {
    /// A short human name for messages, e.g. `electrum server tcp://127.0.0.1:60401`.
    fn describe(&self) -> String;

    /// Brings `wallet` up to date with the chain, applies the update and persists it: a full
    /// scan the first time, then a sync of the addresses the wallet revealed that also
    /// notices unconfirmed transactions that left the mempool (replaced or dropped). Returns
    /// the height of the wallet's tip after the update.
    ///
    /// # Errors
    /// The source fails, the update does not connect, or the wallet cannot be saved.
    fn sync(&self, wallet: &mut CkmWallet, progress: ProgressFn) -> Result<u32, ChainError>;

    /// A full scan of the wallet's addresses (up to a gap of unused ones past the last used),
    /// applied and persisted: finds coins on addresses this wallet did not reveal itself (a
    /// restored wallet, another coordinator's copy). Returns the tip's height.
    ///
    /// # Errors
    /// As [`ChainSource::sync`].
    fn full_scan(&self, wallet: &mut CkmWallet, progress: ProgressFn) -> Result<u32, ChainError>;

    /// Relays `tx` to the network.
    ///
    /// # Errors
    /// The source is unreachable ([`ChainError::Source`]) or refuses the transaction
    /// ([`ChainError::Refused`], with its reason).
    fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError>;

    /// The source's fee-rate estimate for confirmation within `target_blocks`, or `None` when
    /// it has none (a fresh regtest chain, a node without enough data).
    ///
    /// # Errors
    /// The source fails.
    fn fee_estimate(&self, target_blocks: u16) -> Result<Option<FeeRate>, ChainError>;

    /// The height of the best block the source knows.
    ///
    /// # Errors
    /// The source fails.
    fn tip(&self) -> Result<u32, ChainError>;
}

/// Broadcasts `tx` through `source` and, when given a wallet, records it there as unconfirmed
/// (so balances and coin selection see it before the next sync) and persists the wallet.
///
/// # Errors
/// As [`ChainSource::broadcast`]; or the wallet cannot be saved (the transaction was relayed).
pub fn broadcast_and_record(
    source: &dyn ChainSource,
    wallet: Option<&mut CkmWallet>,
    tx: &Transaction,
) -> Result<Txid, ChainError> {
    let txid = source.broadcast(tx)?;
    if let Some(wallet) = wallet {
        let now = crate::auth::unix_now();
        wallet.bdk_mut().apply_unconfirmed_txs([(tx.clone(), now)]);
        wallet.persist()?;
    }
    Ok(txid)
}

/// The fee rate of a payment: `given` when set, else `source`'s estimate for `target_blocks`,
/// else the fallback ([`crate::wallet::spend::fees::FALLBACK_FEE_RATE_SAT_VB`]); with where
/// it came from.
///
/// # Errors
/// The source failed to answer the estimate.
pub fn fee_rate_for(
    given: Option<FeeRate>,
    source: Option<&dyn ChainSource>,
    target_blocks: u16,
) -> Result<(FeeRate, crate::wallet::FeeRateSource), ChainError> {
    let estimate = match (given, source) {
        (None, Some(source)) => source.fee_estimate(target_blocks)?,
        _ => None,
    };
    Ok(crate::wallet::spend::fees::choose_fee_rate(
        given,
        estimate,
        target_blocks,
    ))
}
