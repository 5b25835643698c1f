//! Unsticking a payment: a fee bump (bdk_wallet's `build_fee_bump`), a cancellation (the same
//! replacement with no recipient: the inputs go back to the wallet), and CPFP (a child
//! spending our unconfirmed output so that the package of parent and child reaches a rate).
//! Every ckm transaction signals RBF (bdk's default). A cancellation is recorded in the wallet
//! database, since bdk has no such state, so the history can tell it from a bump.

use bdk_wallet::descriptor::policy::Condition;
use bdk_wallet::rusqlite::{params, OptionalExtension};
use bdk_wallet::KeychainKind;
use bitcoin::{Amount, FeeRate, OutPoint, Psbt, Transaction, Txid};

use crate::wallet::{CkmWallet, WalletError};

pub(in crate::wallet) const TABLE: &str = "CREATE TABLE IF NOT EXISTS ckm_cancellations (txid TEXT PRIMARY KEY, replacement TEXT NOT NULL)";

/// Why a bump, cancellation or CPFP was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplaceError {
    /// The wallet does not know the transaction, or it spends none of the wallet's coins
    /// (only its own transactions can be replaced).
    #[error("transaction {0} is not one of this wallet's (as of its last sync)")]
    NotOurs(Txid),
    /// Already in a block.
    #[error(
        "transaction {txid} is already confirmed (at height {height}): there is nothing to unstick"
    )]
    Confirmed {
        /// The transaction.
        txid: Txid,
        /// Its block.
        height: u32,
    },
    /// CPFP needs an unconfirmed output of ours to spend.
    #[error("transaction {0} has no unspent output of this wallet to spend (CPFP needs one)")]
    NoOwnOutput(Txid),
    /// The new rate is not above the old one.
    #[error(
        "the new fee rate of {new:.1} sat/vB is not above transaction {txid}'s {old:.1} sat/vB"
    )]
    RateNotAbove {
        /// The transaction.
        txid: Txid,
        /// Its fee rate, sat/vB.
        old: f64,
        /// The rate asked, sat/vB.
        new: f64,
    },
    /// The transaction's fee cannot be computed (an input the wallet has not seen).
    #[error("the fee of transaction {0} is unknown (the wallet lacks one of its inputs)")]
    FeeUnknown(Txid),
}

/// A replacement or child to sign, and what it replaces or accelerates.
#[derive(Debug, Clone)]
pub struct Replacement {
    /// The unsigned transaction.
    pub psbt: Psbt,
    /// The transaction replaced (bump, cancel) or accelerated (CPFP).
    pub original: Txid,
    /// Its fee.
    pub old_fee: Amount,
    /// Its fee rate.
    pub old_rate: FeeRate,
}

fn sat_vb(rate: FeeRate) -> f64 {
    rate.to_sat_per_kwu() as f64 * 4.0 / 1000.0
}

impl CkmWallet {
    /// The unconfirmed transaction `txid` of this wallet, its fee and fee rate; refuses a rate
    /// not above it.
    fn unconfirmed_own(
        &self,
        txid: Txid,
        rate: FeeRate,
    ) -> Result<(Transaction, Amount, FeeRate), WalletError> {
        let wtx = self
            .wallet
            .get_tx(txid)
            .ok_or(ReplaceError::NotOurs(txid))?;
        if let Some(anchor) = wtx.chain_position.confirmation_height_upper_bound() {
            return Err(ReplaceError::Confirmed {
                txid,
                height: anchor,
            }
            .into());
        }
        let tx = wtx.tx_node.tx.as_ref().clone();
        let fee = self
            .wallet
            .calculate_fee(&tx)
            .map_err(|_| ReplaceError::FeeUnknown(txid))?;
        let old_rate = fee / tx.weight();
        if rate <= old_rate {
            return Err(ReplaceError::RateNotAbove {
                txid,
                old: sat_vb(old_rate),
                new: sat_vb(rate),
            }
            .into());
        }
        Ok((tx, fee, old_rate))
    }

    /// Builds a replacement of `txid` paying the same recipients at `rate` (bdk_wallet's
    /// `build_fee_bump`: the same inputs, more only if needed and never a frozen one).
    ///
    /// # Errors
    /// [`ReplaceError`] (not ours, confirmed, rate not above), builder errors.
    pub fn build_bump(&mut self, txid: Txid, rate: FeeRate) -> Result<Replacement, WalletError> {
        self.build_replacement(txid, rate, false)
    }

    /// Builds a cancellation of `txid`: a replacement at `rate` spending the same inputs back
    /// to a change address of the wallet (no recipient). Record it with
    /// [`CkmWallet::record_cancellation`] once broadcast.
    ///
    /// # Errors
    /// As [`CkmWallet::build_bump`].
    pub fn build_cancel(&mut self, txid: Txid, rate: FeeRate) -> Result<Replacement, WalletError> {
        self.build_replacement(txid, rate, true)
    }

    fn build_replacement(
        &mut self,
        txid: Txid,
        rate: FeeRate,
        cancel: bool,
    ) -> Result<Replacement, WalletError> {
        let (tx, old_fee, old_rate) = self.unconfirmed_own(txid, rate)?;
        if self.wallet.sent_and_received(&tx).0 == Amount::ZERO {
            return Err(ReplaceError::NotOurs(txid).into());
        }
        let original_inputs: Vec<OutPoint> = tx.input.iter().map(|i| i.previous_output).collect();
        let back = if cancel {
            Some(
                self.wallet
                    .next_unused_address(KeychainKind::Internal)
                    .script_pubkey(),
            )
        } else {
            None
        };
        let has_recovery = self.meta.recovery().is_some();
        let mut builder = self
            .wallet
            .build_fee_bump(txid)
            .map_err(|e| WalletError::Build(e.to_string()))?;
        builder.fee_rate(rate);
        if let Some(back) = back {
            builder.set_recipients(Vec::new());
            builder.drain_to(back);
        }
        if has_recovery {
            builder.set_condition(Condition::default());
        }
        let psbt = builder
            .finish()
            .map_err(|e| WalletError::Build(e.to_string()))?;
        self.refuse_new_frozen(&psbt, &original_inputs)?;
        self.persist()?;
        Ok(Replacement {
            psbt,
            original: txid,
            old_fee,
            old_rate,
        })
    }

    /// Builds a child of `txid` spending its unspent outputs of this wallet back to the wallet,
    /// with the fee that brings parent and child together to `rate`.
    ///
    /// # Errors
    /// [`ReplaceError`] (not ours, confirmed, no own output, parent already at the rate),
    /// builder errors.
    pub fn build_cpfp(&mut self, txid: Txid, rate: FeeRate) -> Result<Replacement, WalletError> {
        let (parent, parent_fee, parent_rate) = self.unconfirmed_own(txid, rate)?;
        let outputs: Vec<OutPoint> = self
            .wallet
            .list_unspent()
            .filter(|u| u.outpoint.txid == txid && !self.wallet.is_outpoint_locked(u.outpoint))
            .map(|u| u.outpoint)
            .collect();
        if outputs.is_empty() {
            return Err(ReplaceError::NoOwnOutput(txid).into());
        }
        let back = self
            .wallet
            .next_unused_address(KeychainKind::Internal)
            .script_pubkey();
        // First at `rate` alone, for the child's size; then with the package's fee.
        let child = self.build_child(&outputs, &back, |b| {
            b.fee_rate(rate);
        })?;
        let child_vsize = self
            .review(&child)
            .map_err(|e| WalletError::Build(e.to_string()))?
            .vsize;
        let package_fee = rate
            .fee_vb(parent.vsize() as u64 + child_vsize)
            .ok_or_else(|| WalletError::Build("fee overflow".into()))?;
        let child_fee = package_fee
            .checked_sub(parent_fee)
            .filter(|f| *f > Amount::ZERO)
            .ok_or(ReplaceError::RateNotAbove {
                txid,
                old: sat_vb(parent_rate),
                new: sat_vb(rate),
            })?;
        let psbt = self.build_child(&outputs, &back, |b| {
            b.fee_absolute(child_fee);
        })?;
        self.persist()?;
        Ok(Replacement {
            psbt,
            original: txid,
            old_fee: parent_fee,
            old_rate: parent_rate,
        })
    }

    fn build_child(
        &mut self,
        outputs: &[OutPoint],
        back: &bitcoin::ScriptBuf,
        fee: impl FnOnce(
            &mut bdk_wallet::TxBuilder<
                '_,
                bdk_wallet::coin_selection::DefaultCoinSelectionAlgorithm,
            >,
        ),
    ) -> Result<Psbt, WalletError> {
        let has_recovery = self.meta.recovery().is_some();
        let mut builder = self.wallet.build_tx();
        builder
            .add_utxos(outputs)
            .map_err(|e| WalletError::Build(e.to_string()))?;
        builder.manually_selected_only();
        builder.drain_to(back.clone());
        fee(&mut builder);
        if has_recovery {
            builder.set_condition(Condition::default());
        }
        builder
            .finish()
            .map_err(|e| WalletError::Build(e.to_string()))
    }

    /// Refuses a replacement that pulled in a frozen coin the original did not spend.
    fn refuse_new_frozen(&self, psbt: &Psbt, original: &[OutPoint]) -> Result<(), WalletError> {
        match psbt
            .unsigned_tx
            .input
            .iter()
            .map(|i| i.previous_output)
            .find(|op| !original.contains(op) && self.wallet.is_outpoint_locked(*op))
        {
            Some(op) => Err(WalletError::Frozen(op)),
            None => Ok(()),
        }
    }

    /// Records that `txid` was replaced (once its replacement was broadcast and recorded):
    /// marks it evicted at `now` (unix seconds), so bdk no longer counts it — both would
    /// otherwise be "seen" in the same second and bdk could keep either.
    ///
    /// # Errors
    /// Database errors.
    pub fn record_replacement(&mut self, txid: Txid, now: u64) -> Result<(), WalletError> {
        self.wallet.apply_evicted_txs([(txid, now)]);
        self.persist()
    }

    /// Records that `replacement` cancelled `txid` (after it was broadcast), and
    /// [`CkmWallet::record_replacement`].
    ///
    /// # Errors
    /// Database errors.
    pub fn record_cancellation(
        &mut self,
        txid: Txid,
        replacement: Txid,
        now: u64,
    ) -> Result<(), WalletError> {
        self.db.execute(
            "INSERT OR REPLACE INTO ckm_cancellations (txid, replacement) VALUES (?1, ?2)",
            params![txid.to_string(), replacement.to_string()],
        )?;
        self.record_replacement(txid, now)
    }

    /// The transaction that cancelled `txid`, if ckm cancelled it.
    ///
    /// # Errors
    /// Database errors.
    pub fn cancelled_by(&self, txid: Txid) -> Result<Option<Txid>, WalletError> {
        let text: Option<String> = self
            .db
            .query_row(
                "SELECT replacement FROM ckm_cancellations WHERE txid = ?1",
                params![txid.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(text.and_then(|t| t.parse().ok()))
    }
}
