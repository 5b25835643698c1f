//! Electrum backend for the coordinator's wallet (bdk_electrum): full-scan sync with a
//! progress callback, and broadcast.

use bdk_electrum::electrum_client::{self, ElectrumApi};
use bdk_electrum::BdkElectrumClient;
use bdk_wallet::KeychainKind;
use bitcoin::{Transaction, Txid};

use crate::wallet::{CkmWallet, WalletError};

/// Addresses scanned past the last used one.
pub const STOP_GAP: usize = 20;

/// Errors talking to the Electrum server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ElectrumError {
    /// The server could not be reached or answered with an error.
    #[error("electrum server {url}: {reason}")]
    Server {
        /// Server URL.
        url: String,
        /// The cause.
        reason: String,
    },
    /// The update did not connect to the wallet's chain.
    #[error("the electrum update does not connect to the wallet's chain: {0}")]
    Connect(String),
    /// Saving the wallet failed.
    #[error(transparent)]
    Wallet(#[from] WalletError),
}

/// Connects to an Electrum server (`tcp://host:port` or `ssl://host:port`).
///
/// # Errors
/// Unreachable server.
pub fn connect(url: &str) -> Result<BdkElectrumClient<electrum_client::Client>, ElectrumError> {
    let config = electrum_client::ConfigBuilder::new()
        .timeout(Some(30))
        .retry(1)
        .build();
    let client =
        electrum_client::Client::from_config(url, config).map_err(|e| ElectrumError::Server {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    Ok(BdkElectrumClient::new(client))
}

/// Full scan of both keychains, applied to the wallet and persisted. `progress` is called
/// with (keychain, index) for every script checked.
///
/// # Errors
/// Server errors or an update that does not connect.
pub fn sync(
    wallet: &mut CkmWallet,
    url: &str,
    progress: impl FnMut(KeychainKind, u32) + Send + 'static,
) -> Result<u32, ElectrumError> {
    let client = connect(url)?;
    let mut progress = progress;
    let request = wallet
        .bdk()
        .start_full_scan()
        .inspect(move |keychain, index, _| progress(keychain, index))
        .build();
    let update =
        client
            .full_scan(request, STOP_GAP, 10, true)
            .map_err(|e| ElectrumError::Server {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
    wallet
        .bdk_mut()
        .apply_update(update)
        .map_err(|e| ElectrumError::Connect(e.to_string()))?;
    wallet.persist()?;
    Ok(wallet.bdk().latest_checkpoint().height())
}

/// Broadcasts a transaction and records it in the wallet as unconfirmed.
///
/// # Errors
/// The server refuses it (the message says why).
pub fn broadcast(
    wallet: Option<&mut CkmWallet>,
    url: &str,
    tx: &Transaction,
) -> Result<Txid, ElectrumError> {
    let client = connect(url)?;
    let txid = client
        .inner
        .transaction_broadcast(tx)
        .map_err(|e| ElectrumError::Server {
            url: url.to_string(),
            reason: format!("broadcast refused: {e}"),
        })?;
    if let Some(wallet) = wallet {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        wallet.bdk_mut().apply_unconfirmed_txs([(tx.clone(), now)]);
        wallet.persist()?;
    }
    Ok(txid)
}
