//! The co-signer's check of a PSBT before it commits or signs: every input must be ours (its
//! `tap_internal_key` and `tap_key_origins` re-derive to the key its `witness_utxo` pays), use
//! SIGHASH_DEFAULT or SIGHASH_ALL, and the BIP-0341 key-spend sighash of every input is
//! computed here from the PSBT itself; outputs claiming to be ours are re-derived too.
//!
//! A wallet with a certified recovery path ([`crate::recovery`]) commits every address to a
//! script tree: [`check_psbt_with`] recomputes the tree at each input's and each change
//! output's own derivation index from the certified policy and refuses any other merkle root
//! (a wallet without a policy refuses every merkle root, as [`check_psbt`] always did).

use bitcoin::key::{TapTweak, TweakedPublicKey};
use bitcoin::sighash::{Prevouts, SighashCache};
use bitcoin::taproot::TapNodeHash;
use bitcoin::{Amount, Psbt, ScriptBuf, TapSighash, TapSighashType, TxOut, Txid, XOnlyPublicKey};

use crate::frost::shares::{secp, Derivation, GroupPublic, KeyError, SpendKey};
use crate::keys::WalletPath;
use crate::recovery::{RecoveryError, RecoveryPolicy, WalletScripts};

/// Why a PSBT was refused. Inputs and outputs are named by index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// Nothing to sign.
    #[error("the PSBT has no inputs")]
    NoInputs,
    /// PSBT and unsigned transaction disagree on the number of inputs or outputs.
    #[error("the PSBT is malformed: its maps do not match the unsigned transaction")]
    Malformed,
    /// The input lacks the previous output it spends.
    #[error("input {input}: missing witness_utxo")]
    MissingWitnessUtxo {
        /// Input index.
        input: usize,
    },
    /// `non_witness_utxo` contradicts the outpoint or `witness_utxo`.
    #[error("input {input}: non_witness_utxo does not match the outpoint or the witness_utxo")]
    UtxoMismatch {
        /// Input index.
        input: usize,
    },
    /// Only SIGHASH_DEFAULT and SIGHASH_ALL are signed.
    #[error("input {input}: sighash type {sighash} is not allowed (only SIGHASH_DEFAULT or SIGHASH_ALL)")]
    SighashType {
        /// Input index.
        input: usize,
        /// The requested type.
        sighash: String,
    },
    /// The input does not belong to this wallet.
    #[error("input {input} is not ours: {reason}")]
    NotOurs {
        /// Input index.
        input: usize,
        /// What did not match.
        reason: &'static str,
    },
    /// An output claims to be ours but does not re-derive to its script.
    #[error("output {output} claims to be our change but its script is not ours: {reason}")]
    ChangeNotOurs {
        /// Output index.
        output: usize,
        /// What did not match.
        reason: &'static str,
    },
    /// Derivation of the input's key failed.
    #[error("input {input}: cannot derive its key")]
    Derive {
        /// Input index.
        input: usize,
        /// The cause.
        #[source]
        source: KeyError,
    },
    /// The sighash could not be computed.
    #[error("input {input}: cannot compute the BIP-0341 sighash")]
    Sighash {
        /// Input index.
        input: usize,
        /// The cause.
        #[source]
        source: bitcoin::sighash::TaprootError,
    },
    /// The wallet's script at an input's or output's path cannot be derived.
    #[error("{what} {index}: cannot derive the wallet's script at its path")]
    Script {
        /// "input" or "output".
        what: &'static str,
        /// Its index.
        index: usize,
        /// The cause.
        #[source]
        source: RecoveryError,
    },
    /// The certified recovery policy does not make a descriptor.
    #[error("the wallet's recovery policy does not make a valid descriptor")]
    Policy(#[source] RecoveryError),
    /// Amounts overflow or outputs exceed inputs.
    #[error("the outputs ({outputs_sats} sat) exceed the inputs ({inputs_sats} sat) or overflow")]
    Amounts {
        /// Sum of inputs.
        inputs_sats: u64,
        /// Sum of outputs.
        outputs_sats: u64,
    },
}

/// One checked input, ready to sign.
#[derive(Debug, Clone)]
pub struct CheckedInput {
    /// Input index.
    pub index: usize,
    /// The BIP-0341 key-spend sighash, computed from the PSBT.
    pub sighash: TapSighash,
    /// The sighash type (Default or All).
    pub sighash_type: TapSighashType,
    /// Where the input's key sits in the wallet.
    pub path: WalletPath,
    /// Derivation of the input's internal key from the group root.
    pub derivation: Derivation,
    /// The input's script-tree merkle root (None for key-only outputs).
    pub merkle_root: Option<TapNodeHash>,
    /// The Taproot output key the signature must verify under.
    pub output_key: XOnlyPublicKey,
    /// The input's spend key (child key and Taproot tweak in one): what the signers'
    /// key packages and the coordinator's verification key are made from.
    pub spend: SpendKey,
    /// The amount spent.
    pub amount: Amount,
}

/// One output, classified.
#[derive(Debug, Clone)]
pub struct CheckedOutput {
    /// Output index.
    pub index: usize,
    /// Amount paid.
    pub amount: Amount,
    /// Its script.
    pub script_pubkey: ScriptBuf,
    /// Where the output's key sits, when it was verified to return to this wallet (change).
    pub change_path: Option<WalletPath>,
}

/// A PSBT that passed every check, with what a policy needs to judge it. Only
/// [`check_psbt`] makes one.
#[derive(Debug, Clone)]
pub struct CheckedPsbt {
    txid: Txid,
    /// The wallet (group key) it was checked for.
    group_key: bitcoin::secp256k1::PublicKey,
    inputs: Vec<CheckedInput>,
    outputs: Vec<CheckedOutput>,
    input_total: Amount,
    fee: Amount,
    estimated_vsize: u64,
    /// The outpoints the transaction spends, in input order.
    spent: Vec<bitcoin::OutPoint>,
}

impl CheckedPsbt {
    /// The wallet's group key the PSBT was checked for.
    pub fn group_key(&self) -> bitcoin::secp256k1::PublicKey {
        self.group_key
    }

    /// Txid of the unsigned transaction.
    pub fn txid(&self) -> Txid {
        self.txid
    }

    /// The outpoints the transaction spends, in input order (what a replacement shares
    /// with the transaction it replaces).
    pub fn spent_outpoints(&self) -> &[bitcoin::OutPoint] {
        &self.spent
    }

    /// Every input (all are ours).
    pub fn inputs(&self) -> &[CheckedInput] {
        &self.inputs
    }

    /// Every output.
    pub fn outputs(&self) -> &[CheckedOutput] {
        &self.outputs
    }

    /// Sum of inputs.
    pub fn input_total(&self) -> Amount {
        self.input_total
    }

    /// The fee.
    pub fn fee(&self) -> Amount {
        self.fee
    }

    /// Virtual size estimate of the signed transaction (key-path witnesses of 64/65 bytes).
    pub fn estimated_vsize(&self) -> u64 {
        self.estimated_vsize
    }

    /// Outputs not verified as change: payments.
    pub fn payments(&self) -> impl Iterator<Item = &CheckedOutput> {
        self.outputs.iter().filter(|o| o.change_path.is_none())
    }

    /// Sum of payments (excluding change and fee).
    pub fn payment_total(&self) -> Amount {
        self.payments().map(|o| o.amount).sum()
    }

    /// Sum of verified change outputs.
    pub fn change_total(&self) -> Amount {
        self.outputs
            .iter()
            .filter(|o| o.change_path.is_some())
            .map(|o| o.amount)
            .sum()
    }

    /// What leaves the wallet: inputs minus change, i.e. payments plus the fee. This is what
    /// every amount limit counts.
    pub fn outflow(&self) -> Amount {
        // The check guarantees outputs <= inputs, so change <= inputs.
        self.input_total
            .checked_sub(self.change_total())
            .unwrap_or(self.input_total)
    }
}

fn our_path(
    group: &GroupPublic,
    internal: &XOnlyPublicKey,
    origins: &std::collections::BTreeMap<
        XOnlyPublicKey,
        (
            Vec<bitcoin::taproot::TapLeafHash>,
            bitcoin::bip32::KeySource,
        ),
    >,
) -> Result<WalletPath, &'static str> {
    let (leaves, (fingerprint, path)) = origins
        .get(internal)
        .ok_or("no tap_key_origins entry for its internal key")?;
    if !leaves.is_empty() {
        return Err("its internal key is listed under script leaves");
    }
    if *fingerprint != group.fingerprint() {
        return Err("its key origin has another master fingerprint");
    }
    WalletPath::from_derivation(path)
        .map_err(|_| "its origin path is not m/0/i or m/1/i (i non-hardened)")
}

/// Checks `psbt` against a wallet without a recovery path (no script tree anywhere) and
/// computes every input's sighash. Same as [`check_psbt_with`]`(psbt, group, None)`.
///
/// # Errors
/// The first problem found, naming the input or output.
pub fn check_psbt(psbt: &Psbt, group: &GroupPublic) -> Result<CheckedPsbt, CheckError> {
    check_psbt_with(psbt, group, None)
}

/// Checks `psbt` against the group and the wallet's certified recovery policy (`None`: the
/// wallet has none) and computes every input's sighash. Every input's `tap_merkle_root`, and
/// every change output's script, must be the certified policy's at its own derivation index.
///
/// # Errors
/// The first problem found, naming the input or output.
pub fn check_psbt_with(
    psbt: &Psbt,
    group: &GroupPublic,
    recovery: Option<&RecoveryPolicy>,
) -> Result<CheckedPsbt, CheckError> {
    let scripts = recovery
        .map(|p| WalletScripts::new(group, p.network_kind(), Some(p)))
        .transpose()
        .map_err(CheckError::Policy)?;
    let tx = &psbt.unsigned_tx;
    if tx.input.is_empty() {
        return Err(CheckError::NoInputs);
    }
    if psbt.inputs.len() != tx.input.len() || psbt.outputs.len() != tx.output.len() {
        return Err(CheckError::Malformed);
    }
    let mut prevouts: Vec<TxOut> = Vec::with_capacity(tx.input.len());
    for (index, (input, txin)) in psbt.inputs.iter().zip(&tx.input).enumerate() {
        let utxo = input
            .witness_utxo
            .as_ref()
            .ok_or(CheckError::MissingWitnessUtxo { input: index })?;
        if let Some(prev_tx) = &input.non_witness_utxo {
            let vout = usize::try_from(txin.previous_output.vout).unwrap_or(usize::MAX);
            if prev_tx.compute_txid() != txin.previous_output.txid
                || prev_tx.output.get(vout) != Some(utxo)
            {
                return Err(CheckError::UtxoMismatch { input: index });
            }
        }
        prevouts.push(utxo.clone());
    }

    let mut cache = SighashCache::new(tx);
    let mut inputs = Vec::with_capacity(tx.input.len());
    for (index, (input, prevout)) in psbt.inputs.iter().zip(&prevouts).enumerate() {
        let sighash_type = match input.sighash_type {
            None => TapSighashType::Default,
            Some(t) => match t.taproot_hash_ty() {
                Ok(TapSighashType::Default) => TapSighashType::Default,
                Ok(TapSighashType::All) => TapSighashType::All,
                _ => {
                    return Err(CheckError::SighashType {
                        input: index,
                        sighash: t.to_string(),
                    })
                }
            },
        };
        let not_ours = |reason| CheckError::NotOurs {
            input: index,
            reason,
        };
        let internal = input
            .tap_internal_key
            .ok_or_else(|| not_ours("no tap_internal_key"))?;
        let path = our_path(group, &internal, &input.tap_key_origins).map_err(not_ours)?;
        let derivation =
            group
                .derivation(&path.to_derivation())
                .map_err(|source| CheckError::Derive {
                    input: index,
                    source,
                })?;
        if derivation.internal_key() != internal {
            return Err(not_ours(
                "its internal key is not our key at its origin path",
            ));
        }
        // The script tree must be the certified one at this input's own index (none without
        // a recovery policy): a coordinator could otherwise make signers sign for a key with
        // a tree it chose.
        let merkle_root = match &scripts {
            None => {
                if input.tap_merkle_root.is_some() {
                    return Err(not_ours(
                        "it commits to a script tree (tap_merkle_root) the wallet does not have",
                    ));
                }
                None
            }
            Some(scripts) => {
                let script = scripts.at(&path).map_err(|source| CheckError::Script {
                    what: "input",
                    index,
                    source,
                })?;
                if script.internal_key != internal {
                    return Err(not_ours(
                        "its internal key is not the certified descriptor's key at its path",
                    ));
                }
                match input.tap_merkle_root {
                    None => return Err(not_ours(
                        "it has no tap_merkle_root, but every address of this wallet commits to the certified recovery path",
                    )),
                    Some(root) if Some(root) != script.merkle_root => return Err(not_ours(
                        "its tap_merkle_root is not the certified recovery policy's at its derivation index",
                    )),
                    Some(_) => script.merkle_root,
                }
            }
        };
        let spend =
            SpendKey::new(&derivation, merkle_root).map_err(|source| CheckError::Derive {
                input: index,
                source,
            })?;
        // The output key was just computed from our own key: the tweak is known to be applied.
        let output_key = spend.output_key();
        if prevout.script_pubkey
            != ScriptBuf::new_p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(output_key))
        {
            return Err(not_ours("witness_utxo does not pay our key"));
        }
        let sighash = cache
            .taproot_key_spend_signature_hash(index, &Prevouts::All(&prevouts), sighash_type)
            .map_err(|source| CheckError::Sighash {
                input: index,
                source,
            })?;
        inputs.push(CheckedInput {
            index,
            path,
            sighash,
            sighash_type,
            derivation,
            merkle_root,
            output_key,
            spend,
            amount: prevout.value,
        });
    }

    let mut outputs = Vec::with_capacity(tx.output.len());
    for (index, (output, txout)) in psbt.outputs.iter().zip(&tx.output).enumerate() {
        let change_path = match output.tap_internal_key {
            Some(internal)
                if output
                    .tap_key_origins
                    .get(&internal)
                    .is_some_and(|(_, (fp, _))| *fp == group.fingerprint()) =>
            {
                let bad = |reason| CheckError::ChangeNotOurs {
                    output: index,
                    reason,
                };
                let path = our_path(group, &internal, &output.tap_key_origins).map_err(bad)?;
                let derivation = group
                    .derivation(&path.to_derivation())
                    .map_err(|_| bad("its path cannot be derived"))?;
                if derivation.internal_key() != internal {
                    return Err(bad("its internal key is not our key at its origin path"));
                }
                let merkle_root = match &scripts {
                    None => {
                        if output.tap_tree.is_some() {
                            return Err(bad(
                                "it commits to a script tree our wallet does not have",
                            ));
                        }
                        None
                    }
                    Some(scripts) => {
                        let script = scripts.at(&path).map_err(|source| CheckError::Script {
                            what: "output",
                            index,
                            source,
                        })?;
                        if let Some(tree) = &output.tap_tree {
                            if Some(tree.root_hash()) != script.merkle_root {
                                return Err(bad(
                                    "its tap_tree is not the certified recovery policy's at its derivation index",
                                ));
                            }
                        }
                        script.merkle_root
                    }
                };
                let (output_key, _) = internal.tap_tweak(secp(), merkle_root);
                if txout.script_pubkey != ScriptBuf::new_p2tr_tweaked(output_key) {
                    return Err(bad(if scripts.is_some() {
                        "its script does not pay our key with the certified recovery path"
                    } else {
                        "its script does not pay our key"
                    }));
                }
                Some(path)
            }
            _ => None,
        };
        outputs.push(CheckedOutput {
            index,
            amount: txout.value,
            script_pubkey: txout.script_pubkey.clone(),
            change_path,
        });
    }

    let input_total = prevouts
        .iter()
        .try_fold(Amount::ZERO, |acc, o| acc.checked_add(o.value));
    let output_total = tx
        .output
        .iter()
        .try_fold(Amount::ZERO, |acc, o| acc.checked_add(o.value));
    let (input_total, fee) = match (input_total, output_total) {
        (Some(i), Some(o)) if o <= i => (i, i - o),
        (i, o) => {
            return Err(CheckError::Amounts {
                inputs_sats: i.map(|a| a.to_sat()).unwrap_or(u64::MAX),
                outputs_sats: o.map(|a| a.to_sat()).unwrap_or(u64::MAX),
            })
        }
    };
    // Each key-path witness: 1 (item count) + 1 (length) + 64 or 65 bytes, in weight units.
    let witness_weight: u64 = inputs
        .iter()
        .map(|i| {
            if i.sighash_type == TapSighashType::Default {
                66
            } else {
                67
            }
        })
        .sum::<u64>()
        + 2; // segwit marker and flag
    let estimated_vsize = (tx.base_size() as u64 * 4 + witness_weight).div_ceil(4);
    Ok(CheckedPsbt {
        txid: tx.compute_txid(),
        group_key: group.group_key(),
        inputs,
        outputs,
        input_total,
        fee,
        estimated_vsize,
        spent: tx.input.iter().map(|i| i.previous_output).collect(),
    })
}
