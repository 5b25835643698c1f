//! What the wallet holds and has done: its balance by state ([`Balance`]), frozen coins apart.
//! Transaction history with states (pending, confirmed, replaced, cancelled, dropped) is to
//! grow here, over bdk_wallet's `transactions()`, `tx_details` and `calculate_fee`.

use bdk_wallet::chain::CanonicalizationParams;
use bdk_wallet::KeychainKind;
use bitcoin::Amount;

use super::CkmWallet;

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
