//! Coin control: the wallet's unspent coins as a user sees them ([`Coin`]), and freezing —
//! bdk_wallet's persistent outpoint locks. A lock only keeps bdk's automatic selection away
//! from a coin; bdk's manual selection ignores it and its balance counts it, so
//! [`CkmWallet::check_spendable`] refuses a frozen coin picked by hand and
//! [`CkmWallet::balance`] shows frozen coins apart.

use bdk_wallet::chain::ChainPosition;
use bdk_wallet::KeychainKind;
use bitcoin::{Address, Amount, OutPoint};

use crate::wallet::labels::LabelKind;
use crate::wallet::{CkmWallet, WalletError};

/// One unspent coin of the wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coin {
    /// Where it is.
    pub outpoint: OutPoint,
    /// Its value.
    pub amount: Amount,
    /// The address it was paid to.
    pub address: Option<Address>,
    /// Receive (external) or change (internal).
    pub keychain: KeychainKind,
    /// Derivation index in that keychain.
    pub index: u32,
    /// Confirmations (0: not yet in a block).
    pub confirmations: u32,
    /// Frozen: never picked automatically, refused when picked by hand.
    pub frozen: bool,
    /// The output's label, if any.
    pub label: Option<String>,
}

impl CkmWallet {
    /// The wallet's unspent coins, largest first (as of the last sync).
    ///
    /// # Errors
    /// Database errors (reading labels).
    pub fn coins(&self) -> Result<Vec<Coin>, WalletError> {
        let mut coins = self.unlabelled_coins();
        for coin in &mut coins {
            coin.label = self.label(LabelKind::Output, &coin.outpoint.to_string())?;
        }
        Ok(coins)
    }

    /// A page of [`CkmWallet::coins`]: at most `limit` coins from `offset`, with the number of
    /// coins; labels are read for the page only (a wallet may hold thousands of coins).
    ///
    /// # Errors
    /// Database errors (reading labels).
    pub fn coins_page(
        &self,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<Coin>, usize), WalletError> {
        let all = self.unlabelled_coins();
        let total = all.len();
        let mut page: Vec<Coin> = all.into_iter().skip(offset).take(limit).collect();
        for coin in &mut page {
            coin.label = self.label(LabelKind::Output, &coin.outpoint.to_string())?;
        }
        Ok((page, total))
    }

    /// The unspent coins, largest first, without their labels.
    fn unlabelled_coins(&self) -> Vec<Coin> {
        let tip = self.wallet.latest_checkpoint().height();
        let network = self.meta.network;
        let mut coins: Vec<Coin> = self
            .wallet
            .list_unspent()
            .map(|u| Coin {
                outpoint: u.outpoint,
                amount: u.txout.value,
                address: Address::from_script(&u.txout.script_pubkey, network).ok(),
                keychain: u.keychain,
                index: u.derivation_index,
                confirmations: match u.chain_position {
                    ChainPosition::Confirmed { anchor, .. } => {
                        tip.saturating_sub(anchor.block_id.height).saturating_add(1)
                    }
                    ChainPosition::Unconfirmed { .. } => 0,
                },
                frozen: self.wallet.is_outpoint_locked(u.outpoint),
                label: None,
            })
            .collect();
        coins.sort_by(|a, b| {
            b.amount
                .cmp(&a.amount)
                .then_with(|| a.outpoint.cmp(&b.outpoint))
        });
        coins
    }

    /// Freezes one of the wallet's unspent coins (persisted). Returns false if it already was.
    ///
    /// # Errors
    /// The outpoint is not an unspent coin of the wallet; database errors.
    pub fn freeze(&mut self, outpoint: OutPoint) -> Result<bool, WalletError> {
        if self.wallet.get_utxo(outpoint).is_none() {
            return Err(WalletError::UnknownCoin(outpoint));
        }
        let was = self.wallet.is_outpoint_locked(outpoint);
        self.wallet.lock_outpoint(outpoint);
        self.persist()?;
        Ok(!was)
    }

    /// Unfreezes a coin (persisted). Returns false if it was not frozen.
    ///
    /// # Errors
    /// Database errors.
    pub fn unfreeze(&mut self, outpoint: OutPoint) -> Result<bool, WalletError> {
        let was = self.wallet.is_outpoint_locked(outpoint);
        self.wallet.unlock_outpoint(outpoint);
        self.persist()?;
        Ok(was)
    }

    /// Whether a coin is frozen.
    pub fn is_frozen(&self, outpoint: OutPoint) -> bool {
        self.wallet.is_outpoint_locked(outpoint)
    }

    /// Checks coins picked by hand: each an unspent coin of the wallet, none frozen.
    ///
    /// # Errors
    /// [`WalletError::UnknownCoin`], [`WalletError::Frozen`] naming the first culprit.
    pub fn check_spendable(&self, outpoints: &[OutPoint]) -> Result<(), WalletError> {
        for op in outpoints {
            if self.wallet.get_utxo(*op).is_none() {
                return Err(WalletError::UnknownCoin(*op));
            }
            if self.wallet.is_outpoint_locked(*op) {
                return Err(WalletError::Frozen(*op));
            }
        }
        Ok(())
    }
}
