//! What the wallet holds and has done: its balance by state ([`Balance`]), frozen coins apart,
//! and its transactions with their states ([`CkmWallet::history`]): pending, confirmed,
//! replaced (by which), cancelled (by ckm: see `spend::replace`), dropped — over bdk_wallet's
//! canonical `transactions()`, the full transaction graph (where replaced and dropped
//! transactions stay) and `calculate_fee`.

use std::collections::HashSet;

use bdk_wallet::chain::{CanonicalizationParams, ChainPosition};
use bdk_wallet::KeychainKind;
use bitcoin::{Amount, SignedAmount, Transaction, Txid};

use super::labels::LabelKind;
use super::{CkmWallet, WalletError};

/// A transaction's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxState {
    /// Not yet in a block (in the mempool as far as the wallet knows).
    Pending,
    /// In a block.
    Confirmed {
        /// The block's height.
        height: u32,
        /// Confirmations at the wallet's tip.
        confirmations: u32,
    },
    /// Replaced by a conflicting transaction (a fee bump).
    Replaced {
        /// The replacement.
        by: Txid,
    },
    /// Cancelled by ckm (a replacement paying the wallet back).
    Cancelled {
        /// The cancellation.
        by: Txid,
    },
    /// Neither pending nor confirmed and not replaced by one of ours: evicted, or conflicted
    /// by a transaction the wallet does not know (e.g. after a reorg).
    Dropped,
}

impl TxState {
    /// A short name: `pending`, `confirmed`, `replaced`, `cancelled`, `dropped`.
    pub fn name(&self) -> &'static str {
        match self {
            TxState::Pending => "pending",
            TxState::Confirmed { .. } => "confirmed",
            TxState::Replaced { .. } => "replaced",
            TxState::Cancelled { .. } => "cancelled",
            TxState::Dropped => "dropped",
        }
    }
}

/// One transaction of the wallet's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The transaction.
    pub txid: Txid,
    /// Its state.
    pub state: TxState,
    /// What it changed in the wallet: received minus sent (negative for a payment).
    pub net: SignedAmount,
    /// Its fee, when the wallet knows every input.
    pub fee: Option<Amount>,
    /// Its label (BIP-0329 `tx`).
    pub label: Option<String>,
    /// Confirmation time, else when it was last seen unconfirmed (unix seconds).
    pub time: Option<u64>,
}

/// Newest first: unconfirmed and dropped before confirmed, then by height, then by time.
fn order_key(e: &HistoryEntry) -> (u32, u64, Txid) {
    let height = match e.state {
        TxState::Confirmed { height, .. } => height,
        _ => u32::MAX,
    };
    (height, e.time.unwrap_or(0), e.txid)
}

/// The wallet's coins by state. Frozen coins are counted only in `frozen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Balance {
    /// In a block.
    pub confirmed: Amount,
    /// Not yet in a block (ours, trusted, or received from others).
    pub unconfirmed: Amount,
    /// Coinbase outputs not yet spendable.
    pub immature: Amount,
    /// Frozen coins, whatever their state (never spent automatically).
    pub frozen: Amount,
}

impl CkmWallet {
    /// The wallet's transactions, newest first, from `offset`, at most `limit` of them, with
    /// the total count (as of the last sync and the transactions ckm broadcast since).
    ///
    /// # Errors
    /// Database errors (reading labels and cancellations).
    pub fn history(
        &self,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<HistoryEntry>, usize), WalletError> {
        let w = self.bdk();
        let tip = w.latest_checkpoint().height();
        let graph = w.tx_graph();
        let mut canonical = HashSet::new();
        // (txid, state, time, tx) without labels; labels are read for the page only.
        let mut rows: Vec<(HistoryEntry, std::sync::Arc<Transaction>)> = Vec::new();
        for wtx in w.transactions() {
            canonical.insert(wtx.tx_node.txid);
            let (state, time) = match wtx.chain_position {
                ChainPosition::Confirmed { anchor, .. } => (
                    TxState::Confirmed {
                        height: anchor.block_id.height,
                        confirmations: tip.saturating_sub(anchor.block_id.height).saturating_add(1),
                    },
                    Some(anchor.confirmation_time),
                ),
                ChainPosition::Unconfirmed {
                    last_seen,
                    first_seen,
                } => (TxState::Pending, last_seen.or(first_seen)),
            };
            rows.push((
                HistoryEntry {
                    txid: wtx.tx_node.txid,
                    state,
                    net: SignedAmount::ZERO,
                    fee: None,
                    label: None,
                    time,
                },
                wtx.tx_node.tx.clone(),
            ));
        }
        for node in graph.full_txs() {
            if canonical.contains(&node.txid) {
                continue;
            }
            let (sent, received) = w.sent_and_received(&node.tx);
            if sent == Amount::ZERO && received == Amount::ZERO {
                continue;
            }
            let state = match self.cancelled_by(node.txid)? {
                Some(by) => TxState::Cancelled { by },
                None => node
                    .tx
                    .input
                    .iter()
                    .flat_map(|i| graph.outspends(i.previous_output).iter())
                    .find(|t| **t != node.txid && canonical.contains(*t))
                    .map_or(TxState::Dropped, |by| TxState::Replaced { by: *by }),
            };
            rows.push((
                HistoryEntry {
                    txid: node.txid,
                    state,
                    net: SignedAmount::ZERO,
                    fee: None,
                    label: None,
                    time: node.last_seen.or(node.first_seen),
                },
                node.tx.clone(),
            ));
        }
        rows.sort_by_key(|r| std::cmp::Reverse(order_key(&r.0)));
        let total = rows.len();
        let mut page = Vec::new();
        for (mut entry, tx) in rows.into_iter().skip(offset).take(limit) {
            let (sent, received) = w.sent_and_received(&tx);
            entry.net = match (received.to_signed(), sent.to_signed()) {
                (Ok(r), Ok(s)) => r.checked_sub(s).unwrap_or(SignedAmount::ZERO),
                _ => SignedAmount::ZERO,
            };
            entry.fee = w.calculate_fee(&tx).ok();
            entry.label = self.label(LabelKind::Tx, &entry.txid.to_string())?;
            page.push(entry);
        }
        Ok((page, total))
    }

    /// The wallet's balance as of its last sync (and the transactions it broadcast since):
    /// bdk_wallet's balance over the coins not frozen, and the frozen coins' total apart.
    pub fn balance(&self) -> Balance {
        let w = self.bdk();
        let frozen = |op| w.is_outpoint_locked(op);
        let b = w.tx_graph().balance(
            w.local_chain(),
            w.local_chain().tip().block_id(),
            CanonicalizationParams::default(),
            w.spk_index()
                .outpoints()
                .iter()
                .filter(|(_, op)| !frozen(*op))
                .cloned(),
            |&(k, _), _| k == KeychainKind::Internal,
        );
        Balance {
            confirmed: b.confirmed,
            unconfirmed: b.trusted_pending + b.untrusted_pending,
            immature: b.immature,
            frozen: w
                .list_unspent()
                .filter(|u| frozen(u.outpoint))
                .map(|u| u.txout.value)
                .sum(),
        }
    }
}
