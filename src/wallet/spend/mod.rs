//! Building payments over bdk_wallet's `TxBuilder`: a payment with change, a sweep of every
//! coin, a spend through the recovery path ([`recovery`]), and the review of a built PSBT as
//! the signers will see it ([`Review`]). Coin selection, fee computation and change are
//! bdk_wallet's; this module only sets what a ckm wallet needs (the key path of a wallet with
//! a recovery leaf, the recovery path's `nSequence`).
//!
//! Where the everyday wallet grows (several recipients, send-max, coin control and freezing,
//! fee policy, bump, cancel and CPFP), it grows here, one file per concern.

mod recovery;
mod review;

pub use review::{Review, ReviewOutput};

use bdk_wallet::descriptor::policy::Condition;
use bitcoin::{Address, Amount, FeeRate, Psbt};

use super::{CkmWallet, WalletError};

impl CkmWallet {
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
