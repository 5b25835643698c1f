//! An Electrum server as the wallet's chain source (`bdk_electrum`): a full scan of both
//! keychains the first time (and on a rescan), then a sync of the revealed scripts that also
//! asks about the unconfirmed transactions the wallet expects (so a transaction replaced or
//! dropped from the mempool is seen as gone); progress, broadcast, `blockchain.estimatefee`
//! and the header tip.
//!
//! Incremental syncs skip the scripts whose history has not changed: every sync first asks
//! the server for the status of each revealed script (`blockchain.scripthash.subscribe`, one
//! batch), and the wallet keeps the statuses of the last applied sync
//! ([`CkmWallet::script_statuses`]); a script is synced again when its status differs, when
//! the wallet expects an unconfirmed transaction on it, or when the wallet's last block is no
//! longer the server's (a reorg: a status names heights, not blocks). A connection subscribes
//! to a script once (the client refuses a second time), so a second sync on the same
//! connection (the console) reads every script's history, as before.

use std::collections::{HashMap, HashSet};

use bdk_electrum::electrum_client::{self, ElectrumApi};
use bdk_electrum::BdkElectrumClient;
use bdk_wallet::chain::spk_client::SyncRequest;
use bdk_wallet::KeychainKind;
use bitcoin::{FeeRate, ScriptBuf, Transaction, Txid};

use super::{ChainError, ChainSource, ProgressFn, SyncProgress};
use crate::wallet::CkmWallet;

/// Addresses scanned past the last used one.
pub const STOP_GAP: usize = 20;

/// Seconds before an unanswered request to the server fails.
pub const TIMEOUT_SECS: u8 = 30;

/// A connection to one Electrum server (`tcp://host:port` or `ssl://host:port`).
pub struct Electrum {
    url: String,
    client: BdkElectrumClient<electrum_client::Client>,
    /// Scripts this connection has subscribed to: the client refuses a second subscription,
    /// so a later sync on the same connection reads their history without a status.
    subscribed: std::sync::Mutex<HashSet<ScriptBuf>>,
}

impl std::fmt::Debug for Electrum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Electrum").field("url", &self.url).finish()
    }
}

impl Electrum {
    /// Connects to the server at `url`.
    ///
    /// # Errors
    /// [`ChainError::Source`]: the server is unreachable or the URL malformed.
    pub fn connect(url: &str) -> Result<Self, ChainError> {
        let config = electrum_client::ConfigBuilder::new()
            .timeout(Some(TIMEOUT_SECS))
            .retry(1)
            .build();
        let client =
            electrum_client::Client::from_config(url, config).map_err(|e| source_error(url, e))?;
        Ok(Electrum {
            url: url.to_string(),
            client: BdkElectrumClient::new(client),
            subscribed: std::sync::Mutex::new(HashSet::new()),
        })
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

fn describe(url: &str) -> String {
    format!("electrum server {url}")
}

fn source_error(url: &str, e: impl std::fmt::Display) -> ChainError {
    ChainError::Source {
        source_name: describe(url),
        reason: e.to_string(),
    }
}

impl ChainSource for Electrum {
    fn describe(&self) -> String {
        describe(&self.url)
    }

    /// A full scan the first time (a wallet never synced: its tip is the genesis block),
    /// else a sync of the revealed scripts ([`Electrum::sync_revealed`]).
    fn sync(&self, wallet: &mut CkmWallet, progress: ProgressFn) -> Result<u32, ChainError> {
        if wallet.bdk().latest_checkpoint().height() == 0 {
            self.full_scan(wallet, progress)
        } else {
            self.sync_revealed(wallet, progress)
        }
    }

    /// A full scan of both keychains (every script up to [`STOP_GAP`] past the last used one).
    fn full_scan(
        &self,
        wallet: &mut CkmWallet,
        mut progress: ProgressFn,
    ) -> Result<u32, ChainError> {
        self.warm(wallet);
        let statuses = self.statuses(&revealed(wallet))?;
        let request = wallet
            .bdk()
            .start_full_scan()
            .inspect(move |keychain, index, _| progress(SyncProgress::Script { keychain, index }))
            .build();
        let update = self
            .client
            .full_scan(request, STOP_GAP, 10, true)
            .map_err(|e| source_error(&self.url, e))?;
        let height = self.apply(wallet, update)?;
        wallet.set_script_statuses(&statuses)?;
        Ok(height)
    }

    fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        self.client
            .inner
            .transaction_broadcast(tx)
            .map_err(|e| ChainError::Refused {
                source_name: self.describe(),
                reason: e.to_string(),
            })
    }

    /// `blockchain.estimatefee`: BTC per kvB, or a negative number when the server has no
    /// estimate (`None` here).
    fn fee_estimate(&self, target_blocks: u16) -> Result<Option<FeeRate>, ChainError> {
        let btc_per_kvb = self
            .client
            .inner
            .estimate_fee(usize::from(target_blocks.max(1)))
            .map_err(|e| source_error(&self.url, e))?;
        Ok(fee_rate_of_btc_per_kvb(btc_per_kvb))
    }

    fn tip(&self) -> Result<u32, ChainError> {
        let header = self
            .client
            .inner
            .block_headers_subscribe()
            .map_err(|e| source_error(&self.url, e))?;
        u32::try_from(header.height).map_err(|_| source_error(&self.url, "tip height out of range"))
    }
}

impl Electrum {
    /// bdk's sync of the revealed scripts (`start_sync_with_revealed_spks`): every address
    /// the wallet handed out, and the unconfirmed transactions it expects on each, so that one
    /// the server no longer reports (replaced, or dropped from the mempool) is marked evicted
    /// and its state in the history changes. Addresses past the last revealed one are not
    /// looked at: a rescan ([`ChainSource::full_scan`]) finds those.
    ///
    /// # Errors
    /// As [`ChainSource::sync`].
    pub fn sync_revealed(
        &self,
        wallet: &mut CkmWallet,
        mut progress: ProgressFn,
    ) -> Result<u32, ChainError> {
        self.warm(wallet);
        let revealed = revealed(wallet);
        let statuses = self.statuses(&revealed)?;
        let bdk = wallet.bdk();
        let tip = bdk.latest_checkpoint();
        let expected: Vec<(ScriptBuf, Txid)> = bdk
            .tx_graph()
            .list_expected_spk_txids(bdk.local_chain(), tip.block_id(), bdk.spk_index(), ..)
            .collect();
        // Skipping needs the wallet's last block to still be the server's.
        let same_chain = tip.height() == 0
            || self
                .client
                .inner
                .block_header(tip.height() as usize)
                .is_ok_and(|h| h.block_hash() == tip.hash());
        let saved = if same_chain {
            wallet.script_statuses()?
        } else {
            Default::default()
        };
        // Scripts with an unconfirmed transaction of the wallet: looked at every time, so that
        // one the server does not have (dropped, replaced, never relayed) is marked evicted.
        let unconfirmed: HashSet<Txid> = bdk
            .transactions()
            .filter(|t| !t.chain_position.is_confirmed())
            .map(|t| t.tx_node.txid)
            .collect();
        let awaited: HashSet<&ScriptBuf> = expected
            .iter()
            .filter(|(_, txid)| unconfirmed.contains(txid))
            .map(|(spk, _)| spk)
            .collect();
        let current: HashMap<&ScriptBuf, &Option<[u8; 32]>> =
            statuses.iter().map(|(spk, status)| (spk, status)).collect();
        let to_sync: Vec<((KeychainKind, u32), ScriptBuf)> = revealed
            .into_iter()
            .filter(|(_, spk)| {
                awaited.contains(spk)
                    || match (current.get(spk), saved.get(spk)) {
                        (Some(now), Some(before)) => *now != before,
                        _ => true,
                    }
            })
            .collect();
        let request = SyncRequest::builder()
            .chain_tip(tip)
            .spks_with_indexes(to_sync)
            .expected_spk_txids(expected)
            .inspect(move |item, _| {
                if let bdk_wallet::chain::spk_client::SyncItem::Spk((keychain, index), _) = item {
                    progress(SyncProgress::Script { keychain, index });
                }
            })
            .build();
        let update = self
            .client
            .sync(request, 10, true)
            .map_err(|e| source_error(&self.url, e))?;
        let height = self.apply(wallet, update)?;
        wallet.set_script_statuses(&statuses)?;
        Ok(height)
    }

    /// The server's status of each script (one batch) not subscribed to yet on this
    /// connection (the others have none here: their history is read), taken before any
    /// history is read so that a change in between makes the next sync look again.
    fn statuses(
        &self,
        scripts: &[((KeychainKind, u32), ScriptBuf)],
    ) -> Result<Statuses, ChainError> {
        let mut subscribed = self
            .subscribed
            .lock()
            .map_err(|_| source_error(&self.url, "subscription list poisoned"))?;
        let fresh: Vec<&ScriptBuf> = scripts
            .iter()
            .map(|(_, spk)| spk)
            .filter(|spk| !subscribed.contains(*spk))
            .collect();
        if fresh.is_empty() {
            return Ok(Vec::new());
        }
        let answers = self
            .client
            .inner
            .batch_script_subscribe(fresh.iter().map(|spk| spk.as_script()))
            .map_err(|e| source_error(&self.url, e))?;
        subscribed.extend(fresh.iter().map(|spk| (*spk).clone()));
        if answers.len() != fresh.len() {
            return Err(source_error(
                &self.url,
                format!("{} statuses for {} scripts", answers.len(), fresh.len()),
            ));
        }
        Ok(fresh
            .into_iter()
            .zip(answers)
            .map(|(spk, status)| (spk.clone(), status.map(|s| *s)))
            .collect())
    }

    /// Hands the client the transactions and anchors (confirmation proofs) the wallet
    /// already holds, so that a sync fetches and checks only what is new: without it every
    /// process started with an empty cache and a later sync asked the server again for every
    /// transaction and merkle proof of the wallet's history (77 % of a first sync's time in
    /// `just bench`'s sync rows).
    fn warm(&self, wallet: &CkmWallet) {
        let graph = wallet.bdk().tx_graph();
        self.client
            .populate_tx_cache(graph.full_txs().map(|node| node.tx));
        self.client.populate_anchor_cache(
            graph
                .all_anchors()
                .iter()
                .map(|(txid, anchors)| (*txid, anchors.iter().copied())),
        );
    }

    fn apply(
        &self,
        wallet: &mut CkmWallet,
        update: impl Into<bdk_wallet::Update>,
    ) -> Result<u32, ChainError> {
        wallet
            .bdk_mut()
            .apply_update(update)
            .map_err(|e| ChainError::Connect {
                source_name: self.describe(),
                reason: e.to_string(),
            })?;
        wallet.persist()?;
        Ok(wallet.bdk().latest_checkpoint().height())
    }
}

/// Each script with its Electrum status (`None`: no history).
type Statuses = Vec<(ScriptBuf, Option<[u8; 32]>)>;

/// Every script the wallet has revealed, with its keychain and index.
fn revealed(wallet: &CkmWallet) -> Vec<((KeychainKind, u32), ScriptBuf)> {
    wallet.bdk().spk_index().revealed_spks(..).collect()
}

/// A fee rate from BTC per 1000 vbytes, as Electrum and Bitcoin Core give it: `None` for a
/// value that is not a positive finite number (no estimate); rounded to whole sat/kvB, then up
/// to whole sat/kwu.
pub fn fee_rate_of_btc_per_kvb(btc_per_kvb: f64) -> Option<FeeRate> {
    if !btc_per_kvb.is_finite() || btc_per_kvb <= 0.0 {
        return None;
    }
    // Whole satoshis per kvB first (the sources give BTC with 8 decimals), then 1 kvB = 4 kwu.
    let sat_per_kvb = (btc_per_kvb * 100_000_000.0).round();
    if sat_per_kvb > u64::MAX as f64 {
        return None;
    }
    Some(FeeRate::from_sat_per_kwu((sat_per_kvb as u64).div_ceil(4)))
}

#[cfg(test)]
mod tests {
    use super::fee_rate_of_btc_per_kvb;

    #[test]
    fn fee_rates_from_btc_per_kvb() {
        assert_eq!(fee_rate_of_btc_per_kvb(-1.0), None);
        assert_eq!(fee_rate_of_btc_per_kvb(0.0), None);
        assert_eq!(fee_rate_of_btc_per_kvb(f64::NAN), None);
        // 0.00001 BTC/kvB = 1 sat/vB = 250 sat/kwu.
        let one = fee_rate_of_btc_per_kvb(0.000_01).map(|r| r.to_sat_per_kwu());
        assert_eq!(one, Some(250));
        let twenty = fee_rate_of_btc_per_kvb(0.000_2).map(|r| r.to_sat_per_vb_ceil());
        assert_eq!(twenty, Some(20));
    }
}
