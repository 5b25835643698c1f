//! What a PSBT does, as seen by one wallet: which inputs and outputs are the wallet's (keychain
//! and index, re-derived from the group key, never taken on the PSBT's word), what is paid
//! out, the fee and fee rate, how far signing has gone. Unlike the signer's check
//! ([`super::check_psbt`]) it refuses nothing: foreign inputs, missing UTXOs and PSBTs of
//! other wallets are described, not rejected.

use bitcoin::bip32::{ChildNumber, DerivationPath, Xpub};
use bitcoin::key::TapTweak;
use bitcoin::{
    Address, Amount, Network, OutPoint, Psbt, Script, ScriptBuf, TapSighashType, Txid,
    XOnlyPublicKey,
};
use serde::Serialize;

use super::version::PsbtVersion;
use crate::frost::shares::{secp, GroupPublic};

/// A wallet keychain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Keychain {
    /// Receive addresses (`…/0/*`).
    Receive,
    /// Change addresses (`…/1/*`).
    Change,
}

impl Keychain {
    fn from_branch(branch: u32) -> Option<Self> {
        match branch {
            0 => Some(Keychain::Receive),
            1 => Some(Keychain::Change),
            _ => None,
        }
    }
}

/// Whose an input or output is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "owner", rename_all = "snake_case")]
pub enum Owner {
    /// The wallet's, at this keychain and index.
    Ours {
        /// Keychain.
        keychain: Keychain,
        /// Address index.
        index: u32,
        /// Whether the PSBT carries the key origin the signers need (`tap_internal_key` and
        /// `tap_key_origins`); `false` when recognised only by its script.
        key_origin: bool,
    },
    /// Not the wallet's.
    Foreign,
    /// Claims to be the wallet's (its key origin has the wallet's fingerprint) but does not
    /// re-derive to its script: the signers will refuse it.
    FalseClaim {
        /// What did not match.
        reason: String,
    },
}

impl Owner {
    /// Is it the wallet's?
    pub fn is_ours(&self) -> bool {
        matches!(self, Owner::Ours { .. })
    }
}

/// How far one input is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputState {
    /// No signature.
    Unsigned,
    /// Has a signature, not finalized.
    Signed,
    /// Has its final witness or scriptSig.
    Finalized,
}

/// How far the whole PSBT is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SigningState {
    /// No input signed.
    Unsigned,
    /// Some inputs signed or finalized, not all.
    PartlySigned,
    /// Every input signed, some not finalized.
    Signed,
    /// Every input finalized: ready to broadcast.
    Finalized,
}

/// One input.
#[derive(Debug, Clone, Serialize)]
pub struct InputInfo {
    /// Index in the transaction.
    pub index: usize,
    /// The output it spends.
    pub previous_output: OutPoint,
    /// The amount spent, when the PSBT carries the UTXO.
    pub amount_sats: Option<u64>,
    /// Whose.
    #[serde(flatten)]
    pub owner: Owner,
    /// Signing state.
    pub state: InputState,
}

/// One output.
#[derive(Debug, Clone, Serialize)]
pub struct OutputInfo {
    /// Index in the transaction.
    pub index: usize,
    /// Amount.
    pub amount_sats: u64,
    /// Address on the wallet's network (None for scripts without one, e.g. OP_RETURN).
    pub address: Option<String>,
    /// The script, hex.
    pub script_pubkey: String,
    /// Whose (a foreign output is a payment).
    #[serde(flatten)]
    pub owner: Owner,
}

/// A PSBT described for one wallet.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// PSBT format version.
    pub psbt_version: u32,
    /// Txid of the unsigned transaction.
    pub txid: Txid,
    /// Transaction lock time (consensus value).
    pub lock_time: u32,
    /// Inputs.
    pub inputs: Vec<InputInfo>,
    /// Outputs.
    pub outputs: Vec<OutputInfo>,
    /// Sum of the inputs (None when an input's UTXO is missing).
    pub input_total_sats: Option<u64>,
    /// Sum of the outputs.
    pub output_total_sats: u64,
    /// Paid to outputs that are not the wallet's.
    pub payment_total_sats: u64,
    /// Fee (None when an input's UTXO is missing, or outputs exceed inputs).
    pub fee_sats: Option<u64>,
    /// Virtual size: exact for a finalized PSBT, else estimated with key-path witnesses for
    /// Taproot inputs.
    pub vsize: u64,
    /// Whether [`Inspection::vsize`] is exact.
    pub vsize_exact: bool,
    /// Fee rate in sat/vB.
    pub fee_rate_sat_per_vb: Option<f64>,
    /// Signing state.
    pub state: SigningState,
}

impl Inspection {
    /// Inputs that are the wallet's.
    pub fn our_inputs(&self) -> impl Iterator<Item = &InputInfo> {
        self.inputs.iter().filter(|i| i.owner.is_ours())
    }
}

/// Describes `psbt` for the wallet of `group` on `network`. `lookup` recognises the wallet's
/// scripts that the PSBT carries no key origin for (e.g. bdk's index of revealed addresses),
/// returning the keychain (0 or 1) and index.
pub fn inspect(
    psbt: &Psbt,
    version: PsbtVersion,
    group: &GroupPublic,
    network: Network,
    lookup: impl Fn(&Script) -> Option<(u32, u32)>,
) -> Inspection {
    let xpub = group.xpub(network);
    let tx = &psbt.unsigned_tx;
    let mut inputs = Vec::with_capacity(tx.input.len());
    let mut witness_weight: u64 = 0;
    for (index, (txin, input)) in tx.input.iter().zip(&psbt.inputs).enumerate() {
        let vout = usize::try_from(txin.previous_output.vout).unwrap_or(usize::MAX);
        let utxo = input.witness_utxo.clone().or_else(|| {
            input
                .non_witness_utxo
                .as_ref()
                .filter(|t| t.compute_txid() == txin.previous_output.txid)
                .and_then(|t| t.output.get(vout).cloned())
        });
        let owner = match &utxo {
            Some(utxo) => owner_of(
                &xpub,
                group,
                &utxo.script_pubkey,
                input.tap_internal_key,
                &input.tap_key_origins,
                input.tap_merkle_root.is_some(),
                &lookup,
            ),
            None => Owner::Foreign,
        };
        let state = if input.final_script_witness.is_some() || input.final_script_sig.is_some() {
            InputState::Finalized
        } else if input.tap_key_sig.is_some()
            || !input.tap_script_sigs.is_empty()
            || !input.partial_sigs.is_empty()
        {
            InputState::Signed
        } else {
            InputState::Unsigned
        };
        // A Taproot key-path witness: item count, length, 64-byte signature (65 with an
        // explicit sighash type). Other inputs are left out of the estimate.
        if utxo.as_ref().is_some_and(|u| u.script_pubkey.is_p2tr()) {
            let explicit = input
                .sighash_type
                .and_then(|t| t.taproot_hash_ty().ok())
                .is_some_and(|t| t != TapSighashType::Default);
            witness_weight += if explicit { 67 } else { 66 };
        }
        inputs.push(InputInfo {
            index,
            previous_output: txin.previous_output,
            amount_sats: utxo.map(|u| u.value.to_sat()),
            owner,
            state,
        });
    }

    let mut outputs = Vec::with_capacity(tx.output.len());
    for (index, (txout, output)) in tx.output.iter().zip(&psbt.outputs).enumerate() {
        let owner = owner_of(
            &xpub,
            group,
            &txout.script_pubkey,
            output.tap_internal_key,
            &output.tap_key_origins,
            output.tap_tree.is_some(),
            &lookup,
        );
        outputs.push(OutputInfo {
            index,
            amount_sats: txout.value.to_sat(),
            address: Address::from_script(&txout.script_pubkey, network)
                .ok()
                .map(|a| a.to_string()),
            script_pubkey: txout.script_pubkey.to_hex_string(),
            owner,
        });
    }

    let input_total = inputs
        .iter()
        .map(|i| i.amount_sats.map(Amount::from_sat))
        .try_fold(Amount::ZERO, |acc, a| acc.checked_add(a?));
    let output_total: Amount = tx.output.iter().map(|o| o.value).sum();
    let payment_total: Amount = outputs
        .iter()
        .filter(|o| !o.owner.is_ours())
        .map(|o| Amount::from_sat(o.amount_sats))
        .sum();
    let fee = input_total.and_then(|i| i.checked_sub(output_total));
    let finalized = !inputs.is_empty() && inputs.iter().all(|i| i.state == InputState::Finalized);
    let (vsize, vsize_exact) = if finalized {
        let signed = psbt.clone().extract_tx_unchecked_fee_rate();
        (signed.vsize() as u64, true)
    } else {
        (
            (tx.base_size() as u64 * 4 + 2 + witness_weight).div_ceil(4),
            false,
        )
    };
    let done = |s: InputState| inputs.iter().filter(|i| i.state == s).count();
    let state = if finalized {
        SigningState::Finalized
    } else if done(InputState::Unsigned) == inputs.len() {
        SigningState::Unsigned
    } else if done(InputState::Unsigned) == 0 {
        SigningState::Signed
    } else {
        SigningState::PartlySigned
    };
    Inspection {
        psbt_version: version.number(),
        txid: tx.compute_txid(),
        lock_time: tx.lock_time.to_consensus_u32(),
        input_total_sats: input_total.map(Amount::to_sat),
        output_total_sats: output_total.to_sat(),
        payment_total_sats: payment_total.to_sat(),
        fee_sats: fee.map(Amount::to_sat),
        fee_rate_sat_per_vb: fee.map(|f| f.to_sat() as f64 / vsize.max(1) as f64),
        vsize,
        vsize_exact,
        inputs,
        outputs,
        state,
    }
}

/// Whose `script` is: by the key origin the PSBT claims (verified by derivation), else by
/// `lookup`.
fn owner_of(
    xpub: &Xpub,
    group: &GroupPublic,
    script: &ScriptBuf,
    internal: Option<XOnlyPublicKey>,
    origins: &std::collections::BTreeMap<
        XOnlyPublicKey,
        (Vec<bitcoin::TapLeafHash>, bitcoin::bip32::KeySource),
    >,
    has_scripts: bool,
    lookup: &impl Fn(&Script) -> Option<(u32, u32)>,
) -> Owner {
    let claim = internal.and_then(|k| {
        origins
            .get(&k)
            .filter(|(_, (fp, _))| *fp == group.fingerprint())
            .map(|(_, (_, path))| (k, path.clone()))
    });
    if let Some((internal, path)) = claim {
        return match verify(xpub, internal, &path, script, has_scripts) {
            Ok((keychain, index)) => Owner::Ours {
                keychain,
                index,
                key_origin: true,
            },
            Err(reason) => Owner::FalseClaim {
                reason: reason.to_string(),
            },
        };
    }
    match lookup(script.as_script()) {
        Some((branch, index)) => match Keychain::from_branch(branch) {
            Some(keychain) => Owner::Ours {
                keychain,
                index,
                key_origin: false,
            },
            None => Owner::Foreign,
        },
        None => Owner::Foreign,
    }
}

fn verify(
    xpub: &Xpub,
    internal: XOnlyPublicKey,
    path: &DerivationPath,
    script: &ScriptBuf,
    has_scripts: bool,
) -> Result<(Keychain, u32), &'static str> {
    let (keychain, index) = match path.as_ref() {
        [ChildNumber::Normal { index: branch }, ChildNumber::Normal { index }] => (
            Keychain::from_branch(*branch)
                .ok_or("its path is not on the receive or change keychain")?,
            *index,
        ),
        _ => return Err("its path is not m/0/i or m/1/i"),
    };
    if has_scripts {
        return Err("it commits to a script tree the wallet does not have");
    }
    let child = xpub
        .derive_pub(secp(), path)
        .map_err(|_| "its path cannot be derived")?;
    if child.to_x_only_pub() != internal {
        return Err("its internal key is not the wallet's key at its path");
    }
    let (output_key, _) = internal.tap_tweak(secp(), None);
    if *script != ScriptBuf::new_p2tr_tweaked(output_key) {
        return Err("its script does not pay the wallet's key");
    }
    Ok((keychain, index))
}

/// An owner in words, with the fix for an input the signers will refuse.
fn owner_text(owner: &Owner) -> String {
    match owner {
        Owner::Ours {
            keychain,
            index,
            key_origin,
        } => {
            let k = match keychain {
                Keychain::Receive => "receive",
                Keychain::Change => "change",
            };
            let note = if *key_origin {
                ""
            } else {
                " (no key origin in the PSBT: the signers will refuse it; add it with Core's utxoupdatepsbt and `ckm wallet export` descriptors)"
            };
            format!("ours, {k} #{index}{note}")
        }
        Owner::Foreign => "not ours".into(),
        Owner::FalseClaim { reason } => format!("CLAIMS TO BE OURS BUT IS NOT: {reason}"),
    }
}

fn sats(v: Option<u64>) -> String {
    v.map_or_else(|| "?".into(), |s| s.to_string())
}

impl Inspection {
    /// The view `psbt inspect` prints: txid, version, state, each input and output with
    /// whose it is, what is paid out, the fee.
    pub fn to_text(&self, wallet: &str) -> String {
        let r = self;
        let mut lines = vec![
            format!("txid        {}", r.txid),
            format!(
                "PSBT        version {}, for wallet '{wallet}'",
                r.psbt_version
            ),
            format!(
                "state       {}",
                match r.state {
                    SigningState::Unsigned => "unsigned",
                    SigningState::PartlySigned => "partly signed",
                    SigningState::Signed => "signed, not finalized",
                    SigningState::Finalized => "finalized (ready to broadcast)",
                }
            ),
            format!("inputs      {}", r.inputs.len()),
        ];
        for i in &r.inputs {
            let state = match i.state {
                InputState::Unsigned => "unsigned",
                InputState::Signed => "signed",
                InputState::Finalized => "finalized",
            };
            lines.push(format!(
                "  #{:<3} {:>14} sat  {}  {}  [{state}]",
                i.index,
                sats(i.amount_sats),
                i.previous_output,
                owner_text(&i.owner)
            ));
        }
        lines.push(format!("outputs     {}", r.outputs.len()));
        for o in &r.outputs {
            let role = match &o.owner {
                Owner::Ours {
                    keychain: Keychain::Change,
                    ..
                } => "change ",
                Owner::Ours { .. } => "to self",
                Owner::Foreign => "payment",
                Owner::FalseClaim { .. } => "payment",
            };
            lines.push(format!(
                "  #{:<3} {:>14} sat  {role}  {}  {}",
                o.index,
                o.amount_sats,
                o.address.as_deref().unwrap_or(&o.script_pubkey),
                owner_text(&o.owner)
            ));
        }
        lines.push(format!("paid out    {} sat", r.payment_total_sats));
        let rate = r
            .fee_rate_sat_per_vb
            .map_or_else(|| "?".into(), |f| format!("{f:.2}"));
        lines.push(format!(
            "fee         {} sat, {rate} sat/vB ({}{} vB)",
            sats(r.fee_sats),
            if r.vsize_exact { "" } else { "~" },
            r.vsize
        ));
        lines.join("\n")
    }
}
