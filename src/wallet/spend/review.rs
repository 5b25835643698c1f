//! The review of a built PSBT before it is signed: what it pays to whom, what comes back as
//! change, the fee and its rate — computed by the same check the signers run
//! ([`crate::psbt::check`]), so the review shows what the signers will see.

use bitcoin::{Address, Amount, OutPoint, Psbt, ScriptBuf};

use crate::psbt::{CoordinateError, SigningSession};
use crate::wallet::CkmWallet;

/// One output of a reviewed PSBT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewOutput {
    /// The output's script.
    pub script_pubkey: ScriptBuf,
    /// Its address on the wallet's network, when the script has one.
    pub address: Option<Address>,
    /// The amount.
    pub amount: Amount,
}

impl ReviewOutput {
    /// The address, or the script in hex when it has none.
    pub fn destination(&self) -> String {
        self.address
            .as_ref()
            .map_or_else(|| self.script_pubkey.to_hex_string(), |a| a.to_string())
    }
}

/// One input of a reviewed PSBT: the coin it spends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewInput {
    /// The coin spent.
    pub outpoint: OutPoint,
    /// Its value (from the PSBT's `witness_utxo`, which the signers' check requires).
    pub amount: Amount,
}

/// What a PSBT pays, as the signers will check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    /// Outputs to others, in output order.
    pub payments: Vec<ReviewOutput>,
    /// Outputs back to the wallet (change), in output order.
    pub change: Vec<ReviewOutput>,
    /// The fee (inputs minus outputs).
    pub fee: Amount,
    /// The transaction's estimated virtual size once signed.
    pub vsize: u64,
    /// Number of inputs.
    pub inputs: usize,
    /// The coins spent, in input order.
    pub spent: Vec<ReviewInput>,
}

impl Review {
    /// The fee rate in sat/vB (of the estimated signed size).
    pub fn fee_rate_sat_vb(&self) -> f64 {
        self.fee.to_sat() as f64 / self.vsize.max(1) as f64
    }
}

impl CkmWallet {
    /// Reviews `psbt` with the signers' own check against this wallet's key (and recovery
    /// path, if any).
    ///
    /// # Errors
    /// The PSBT fails the signers' check (the error says which input or output and why).
    pub fn review(&self, psbt: &Psbt) -> Result<Review, CoordinateError> {
        let meta = self.meta();
        let session = SigningSession::with_recovery(psbt, &meta.group, meta.recovery())?;
        let checked = session.checked();
        let output = |script_pubkey: &ScriptBuf, amount: Amount| ReviewOutput {
            address: Address::from_script(script_pubkey, meta.network).ok(),
            script_pubkey: script_pubkey.clone(),
            amount,
        };
        Ok(Review {
            payments: checked
                .payments()
                .map(|o| output(&o.script_pubkey, o.amount))
                .collect(),
            change: checked
                .outputs()
                .iter()
                .filter(|o| o.change_path.is_some())
                .map(|o| output(&o.script_pubkey, o.amount))
                .collect(),
            fee: checked.fee(),
            vsize: checked.estimated_vsize(),
            inputs: checked.inputs().len(),
            spent: psbt
                .unsigned_tx
                .input
                .iter()
                .zip(&psbt.inputs)
                .map(|(txin, input)| ReviewInput {
                    outpoint: txin.previous_output,
                    amount: input
                        .witness_utxo
                        .as_ref()
                        .map_or(Amount::ZERO, |u| u.value),
                })
                .collect(),
        })
    }
}
