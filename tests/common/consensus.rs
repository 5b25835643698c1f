//! Bitcoin Core's script interpreter (libbitcoinconsensus, Taproot rules) as the test oracle
//! for every signed transaction.
#![allow(dead_code)]

use std::collections::HashMap;

use anyhow::{anyhow, Context, Result};
use bitcoin::{OutPoint, Transaction, TxOut};

/// Verifies every input of `tx` against the outputs it spends, looked up in `funding`.
pub fn consensus_verify(tx: &Transaction, funding: &HashMap<OutPoint, TxOut>) -> Result<()> {
    let spent: Vec<TxOut> = tx
        .input
        .iter()
        .map(|i| funding.get(&i.previous_output).cloned())
        .collect::<Option<_>>()
        .context("the transaction spends an unknown output")?;
    consensus_verify_against(tx, &spent)
}

/// Verifies every input of `tx` against `spent` (one output per input, in order).
pub fn consensus_verify_against(tx: &Transaction, spent: &[TxOut]) -> Result<()> {
    let tx_bytes = bitcoin::consensus::serialize(tx);
    // The Utxo structs point into `spent`, which outlives them.
    let utxos: Vec<bitcoinconsensus::Utxo> = spent
        .iter()
        .map(|o| bitcoinconsensus::Utxo {
            script_pubkey: o.script_pubkey.as_bytes().as_ptr(),
            script_pubkey_len: o.script_pubkey.len() as u32,
            value: o.value.to_sat() as i64,
        })
        .collect();
    for (index, prev) in spent.iter().enumerate() {
        bitcoinconsensus::verify_with_flags(
            prev.script_pubkey.as_bytes(),
            prev.value.to_sat(),
            &tx_bytes,
            Some(&utxos),
            index,
            bitcoinconsensus::VERIFY_ALL_PRE_TAPROOT | bitcoinconsensus::VERIFY_TAPROOT,
        )
        .map_err(|e| anyhow!("input {index}: consensus verification failed: {e:?}"))?;
    }
    Ok(())
}
