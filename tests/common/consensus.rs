//! Transactions for tests and benches: made-up funding for wallets that have no chain, and
//! Bitcoin Core's script interpreter (libbitcoinconsensus, Taproot rules) as the oracle for
//! every signed transaction.
#![allow(dead_code)]

use std::collections::HashMap;

use anyhow::{anyhow, Context, Result};
use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{Keypair, Secp256k1};
use bitcoin::transaction::Version;
use bitcoin::{
    Address, Amount, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid,
    Witness,
};
use rand::{Rng, RngCore};

/// A made-up unconfirmed transaction paying `sats` to `script_pubkey` (output 0), spending a
/// random outpoint, with a second output of 12 345 sat to a random regtest Taproot address.
pub fn made_up_funding<R: RngCore>(
    rng: &mut R,
    script_pubkey: ScriptBuf,
    sats: u64,
) -> Transaction {
    let mut prev = [0u8; 32];
    rng.fill_bytes(&mut prev);
    let secp = Secp256k1::new();
    let (decoy, _) = Keypair::new(&secp, rng).x_only_public_key();
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(Txid::from_byte_array(prev), rng.gen_range(0..4)),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[[0u8; 64]]),
        }],
        output: vec![
            TxOut {
                value: Amount::from_sat(sats),
                script_pubkey,
            },
            TxOut {
                value: Amount::from_sat(12_345),
                script_pubkey: Address::p2tr(&secp, decoy, None, Network::Regtest).script_pubkey(),
            },
        ],
    }
}

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
