//! A spend through the wallet's timelocked recovery path (see [`crate::recovery`]).

use bdk_wallet::chain::ChainPosition;
use bdk_wallet::descriptor::policy::Condition;
use bitcoin::{Address, Amount, FeeRate, Psbt};

use crate::wallet::{CkmWallet, WalletError};

impl CkmWallet {
    /// Builds an unsigned PSBT paying `amount` to `to` through the recovery path: the inputs
    /// carry `nSequence` = the policy's timelock, and BIP-0371 `tap_scripts` and
    /// `tap_key_origins` of the recovery keys, so any BIP-0371 signer holding a recovery key
    /// can sign it. Only coins at least `N` blocks deep are spent, unless `allow_immature`
    /// (such a transaction is valid only once each of its coins is `N` blocks deep; bitcoind
    /// refuses it before with `non-BIP68-final`). Change returns to the wallet.
    ///
    /// # Errors
    /// No recovery path, no coin deep enough, insufficient funds and other builder errors.
    pub fn build_recovery(
        &mut self,
        to: &Address,
        amount: Amount,
        fee_rate: FeeRate,
        allow_immature: bool,
    ) -> Result<Psbt, WalletError> {
        let policy = self
            .meta
            .recovery()
            .cloned()
            .ok_or_else(|| WalletError::NoRecovery(self.meta.name.clone()))?;
        let blocks = u32::from(policy.blocks());
        let tip = self.wallet.latest_checkpoint().height();
        let mut immature = Vec::new();
        let mut ready_at: Option<u32> = None;
        let mut mature = 0usize;
        for utxo in self.wallet.list_unspent() {
            let height = match utxo.chain_position {
                ChainPosition::Confirmed { anchor, .. } => Some(anchor.block_id.height),
                ChainPosition::Unconfirmed { .. } => None,
            };
            // Valid in the next block when tip + 1 >= height + N (BIP-0068).
            match height {
                Some(h) if tip + 1 >= h.saturating_add(blocks) => mature += 1,
                other => {
                    if let Some(h) = other {
                        let at = h.saturating_add(blocks).saturating_sub(1);
                        ready_at = Some(ready_at.map_or(at, |r| r.min(at)));
                    }
                    immature.push(utxo.outpoint);
                }
            }
        }
        if !allow_immature && mature == 0 {
            return Err(WalletError::NotMature {
                blocks: policy.blocks(),
                tip,
                ready_at,
            });
        }
        let mut builder = self.wallet.build_tx();
        builder.add_recipient(to.script_pubkey(), amount);
        builder.fee_rate(fee_rate);
        builder.set_condition(Condition {
            csv: Some(policy.sequence()),
            timelock: None,
        });
        if !allow_immature {
            builder.unspendable(immature);
        }
        let psbt = builder
            .finish()
            .map_err(|e| WalletError::Build(e.to_string()))?;
        if psbt
            .unsigned_tx
            .input
            .iter()
            .any(|i| i.sequence != policy.sequence())
            || psbt.inputs.iter().any(|i| i.tap_scripts.is_empty())
        {
            return Err(WalletError::Build(
                "bdk did not build a recovery-path spend (nSequence or tap_scripts missing)".into(),
            ));
        }
        self.persist()?;
        Ok(psbt)
    }
}
