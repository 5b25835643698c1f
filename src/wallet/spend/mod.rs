//! Building payments over bdk_wallet's `TxBuilder`: a payment with change, a sweep of every
//! coin, a spend through the recovery path (`recovery`), and the review of a built PSBT as
//! the signers will see it ([`Review`]). Coin selection, fee computation and change are
//! bdk_wallet's; this module only sets what a ckm wallet needs (the key path of a wallet with
//! a recovery leaf, the recovery path's `nSequence`).
//!
//! Reading order: this file (a payment to several recipients, send-max, coin control:
//! [`CkmWallet::build_payments`]), [`recipient`] (parsing `ADDR:AMOUNT`, `ADDR:max`, BIP-0021
//! URIs, checked against the wallet's network), `coins` (the coin list, freezing),
//! [`fees`] (the default fee rate and the fee guard), `replace` (bump, cancel, CPFP),
//! `review`, `recovery`.

mod coins;
pub mod fees;
pub mod recipient;
mod recovery;
pub(super) mod replace;
mod review;

pub use coins::Coin;
pub use fees::{FeeGuardError, FeeRateSource};
pub use recipient::{PayAmount, Recipient, RecipientError};
pub use replace::{ReplaceError, Replacement};
pub use review::{Review, ReviewInput, ReviewOutput};

use bdk_wallet::descriptor::policy::Condition;
use bitcoin::{Address, Amount, FeeRate, OutPoint, Psbt};

use super::{CkmWallet, WalletError};

/// A payment to build: one transaction paying every recipient.
#[must_use]
#[derive(Debug, Clone)]
pub struct Payment {
    /// Who is paid (at most one [`PayAmount::Max`]; see [`recipient::check_recipients`]).
    pub recipients: Vec<Recipient>,
    /// Spend exactly these coins (coin control); empty: bdk's coin selection picks among the
    /// coins not frozen.
    pub from: Vec<OutPoint>,
    /// The fee rate.
    pub fee_rate: FeeRate,
}

impl CkmWallet {
    /// Builds an unsigned PSBT for `payment`: every recipient in one transaction; a
    /// [`PayAmount::Max`] recipient takes whatever the others and the fee leave (no change);
    /// with `from`, exactly those coins are spent (each must be an unspent coin of the wallet
    /// and not frozen), else bdk picks among the coins not frozen. Persists the revealed change
    /// address.
    ///
    /// # Errors
    /// A bad recipient list, an unknown or frozen coin in `from`, insufficient funds and
    /// other builder errors.
    pub fn build_payments(&mut self, payment: &Payment) -> Result<Psbt, WalletError> {
        recipient::check_recipients(&payment.recipients)?;
        self.check_spendable(&payment.from)?;
        let network = self.meta.network;
        for r in &payment.recipients {
            if !r.address.as_unchecked().is_valid_for_network(network) {
                return Err(RecipientError::WrongNetwork {
                    address: r.address.to_string(),
                    address_network: "another network".into(),
                    wallet_network: network,
                }
                .into());
            }
        }
        let has_recovery = self.meta.recovery().is_some();
        let mut builder = self.wallet.build_tx();
        for r in &payment.recipients {
            match r.amount {
                PayAmount::Exact(amount) => {
                    builder.add_recipient(r.address.script_pubkey(), amount);
                }
                PayAmount::Max => {
                    builder.drain_to(r.address.script_pubkey());
                    if payment.from.is_empty() {
                        builder.drain_wallet();
                    }
                }
            }
        }
        if !payment.from.is_empty() {
            builder
                .add_utxos(&payment.from)
                .map_err(|e| WalletError::Build(e.to_string()))?;
            builder.manually_selected_only();
        }
        builder.fee_rate(payment.fee_rate);
        if has_recovery {
            // The key path (see `build_payment`).
            builder.set_condition(Condition::default());
        }
        let psbt = builder
            .finish()
            .map_err(|e| WalletError::Build(e.to_string()))?;
        // bdk keeps frozen coins out of its own selection; check it did.
        if let Some(frozen) = psbt
            .unsigned_tx
            .input
            .iter()
            .map(|i| i.previous_output)
            .find(|op| self.wallet.is_outpoint_locked(*op))
        {
            return Err(WalletError::Frozen(frozen));
        }
        self.persist()?;
        Ok(psbt)
    }

    /// Builds an unsigned PSBT that sends every coin of the wallet to `to` (no change), at
    /// `fee_rate`.
    ///
    /// # Errors
    /// Nothing to spend, or other builder errors.
    pub fn build_sweep(&mut self, to: &Address, fee_rate: FeeRate) -> Result<Psbt, WalletError> {
        let has_recovery = self.meta.recovery().is_some();
        let mut builder = self.wallet.build_tx();
        builder.drain_wallet();
        builder.drain_to(to.script_pubkey());
        builder.fee_rate(fee_rate);
        if has_recovery {
            // The key path (see `build_payment`).
            builder.set_condition(Condition::default());
        }
        let psbt = builder
            .finish()
            .map_err(|e| WalletError::Build(e.to_string()))?;
        self.persist()?;
        Ok(psbt)
    }

    /// Builds an unsigned PSBT paying `amount` to `to` with change back to the wallet, at
    /// `fee_rate`; persists the revealed change address.
    ///
    /// # Errors
    /// Insufficient funds, dust amounts and other builder errors.
    pub fn build_payment(
        &mut self,
        to: &Address,
        amount: Amount,
        fee_rate: FeeRate,
    ) -> Result<Psbt, WalletError> {
        let has_recovery = self.meta.recovery().is_some();
        let mut builder = self.wallet.build_tx();
        builder.add_recipient(to.script_pubkey(), amount);
        builder.fee_rate(fee_rate);
        if has_recovery {
            // The key path: no timelock (bdk cannot tell which path is meant otherwise).
            builder.set_condition(Condition::default());
        }
        let psbt = builder
            .finish()
            .map_err(|e| WalletError::Build(e.to_string()))?;
        self.persist()?;
        Ok(psbt)
    }
}
