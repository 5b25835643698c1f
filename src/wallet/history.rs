//! What the wallet holds and has done: its balance by state ([`Balance`]). Transaction history
//! with states (pending, confirmed, replaced, cancelled, dropped) and BIP-0329 labels are to
//! grow here, over bdk_wallet's `transactions()`, `tx_details` and `calculate_fee`.

use bitcoin::Amount;

use super::CkmWallet;

/// The wallet's coins by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Balance {
    /// In a block.
    pub confirmed: Amount,
    /// Not yet in a block (ours, trusted, or received from others).
    pub unconfirmed: Amount,
    /// Coinbase outputs not yet spendable.
    pub immature: Amount,
}

impl CkmWallet {
    /// The wallet's balance as of its last sync (and the transactions it broadcast since).
    pub fn balance(&self) -> Balance {
        let b = self.bdk().balance();
        Balance {
            confirmed: b.confirmed,
            unconfirmed: b.trusted_pending + b.untrusted_pending,
            immature: b.immature,
        }
    }
}
