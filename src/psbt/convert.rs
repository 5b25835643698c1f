//! Version 2 ↔ version 0: a version-2 PSBT converted to the model ckm works on
//! ([`bitcoin::Psbt`], version 0) plus what only version 2 says ([`V2Fields`]), and back.
//!
//! Only the fields in which the two versions differ are moved (version 2 carries the
//! transaction's version, lock time, inputs' outpoints and sequences and outputs' amounts and
//! scripts as separate fields; version 0 carries an unsigned transaction); every other pair is
//! carried over byte for byte, and the fields themselves are then parsed by `bitcoin`'s own
//! PSBT decoder.

use bitcoin::absolute::LockTime;
use bitcoin::consensus::encode::{self, VarInt};
use bitcoin::hashes::Hash;
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, OutPoint, Psbt, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};

use super::codec::{
    decode_exact, read_map, take, u32_field, write_map, MapName, Pair, PsbtDecodeError, MAX_INPUTS,
    MAX_OUTPUTS,
};
use super::consts::*;

/// Why a PSBT could not be written in the requested version.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PsbtEncodeError {
    /// BIP-0370 requires transaction version 2 or more.
    #[error(
        "a version 2 PSBT needs transaction version 2 or more; this transaction has version {0}"
    )]
    TxVersion(i32),
    /// The PSBT's maps and its transaction disagree.
    #[error("the PSBT is malformed: its maps do not match the unsigned transaction")]
    Malformed,
    /// An output pays more than 21 million BTC (valid in no transaction).
    #[error("output {0} pays more than 21 million BTC")]
    Amount(usize),
    /// The version-0 PSBT carries a field that only version 2 may have.
    #[error("the PSBT's {map} carries a field of type {key_type:#04x}, reserved for version 2")]
    ReservedField {
        /// The map.
        map: MapName,
        /// The key's type.
        key_type: u8,
    },
}

/// What a version-2 PSBT says that its version-0 form cannot: kept from the PSBT that came in
/// so that it is written back as it was.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct V2Fields {
    /// PSBT_GLOBAL_FALLBACK_LOCKTIME.
    pub fallback_lock_time: Option<LockTime>,
    /// PSBT_GLOBAL_TX_MODIFIABLE.
    pub tx_modifiable: Option<u8>,
    /// Each input's PSBT_IN_REQUIRED_TIME_LOCKTIME and PSBT_IN_REQUIRED_HEIGHT_LOCKTIME.
    pub required_lock_times: Vec<RequiredLockTime>,
}

/// An input's required lock times (BIP-0370).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequiredLockTime {
    /// PSBT_IN_REQUIRED_TIME_LOCKTIME (a UNIX time).
    pub time: Option<u32>,
    /// PSBT_IN_REQUIRED_HEIGHT_LOCKTIME (a block height).
    pub height: Option<u32>,
}

impl V2Fields {
    /// The transaction lock time these fields determine (BIP-0370, "Determining Lock Time").
    ///
    /// # Errors
    /// [`PsbtDecodeError::LockTimeConflict`].
    pub fn lock_time(&self) -> Result<LockTime, PsbtDecodeError> {
        let constrained: Vec<&RequiredLockTime> = self
            .required_lock_times
            .iter()
            .filter(|r| r.time.is_some() || r.height.is_some())
            .collect();
        if constrained.is_empty() {
            return Ok(self.fallback_lock_time.unwrap_or(LockTime::ZERO));
        }
        // Height is preferred when every constrained input accepts it.
        if constrained.iter().all(|r| r.height.is_some()) {
            let max = constrained.iter().filter_map(|r| r.height).max();
            return Ok(LockTime::from_consensus(max.unwrap_or(0)));
        }
        if constrained.iter().all(|r| r.time.is_some()) {
            let max = constrained.iter().filter_map(|r| r.time).max();
            return Ok(LockTime::from_consensus(max.unwrap_or(0)));
        }
        Err(PsbtDecodeError::LockTimeConflict)
    }

    /// Fields for a transaction that came as version 0: its lock time as the fallback.
    pub(super) fn for_transaction(tx: &Transaction) -> Self {
        V2Fields {
            fallback_lock_time: (tx.lock_time != LockTime::ZERO).then_some(tx.lock_time),
            tx_modifiable: None,
            required_lock_times: vec![RequiredLockTime::default(); tx.input.len()],
        }
    }
}

/// Converts a version-2 PSBT to the version-0 model plus what only version 2 says.
///
/// # Errors
/// A malformed map, a missing or invalid BIP-0370 field, an undeterminable lock time, or a
/// field `bitcoin` refuses.
pub fn from_v2(bytes: &[u8]) -> Result<(Psbt, V2Fields), PsbtDecodeError> {
    let g = MapName::Global;
    let mut cur = bytes
        .strip_prefix(PSBT_MAGIC_BYTES)
        .ok_or(PsbtDecodeError::Magic)?;
    let mut global = read_map(&mut cur, g)?;
    if global.iter().any(|p| p.key_type == PSBT_GLOBAL_UNSIGNED_TX) {
        return Err(PsbtDecodeError::Invalid {
            map: g,
            field: "PSBT_GLOBAL_UNSIGNED_TX (not allowed with PSBT_GLOBAL_VERSION 2)",
        });
    }
    let version = take(&mut global, PSBT_GLOBAL_VERSION, g, "PSBT_GLOBAL_VERSION")?.ok_or(
        PsbtDecodeError::Missing {
            map: g,
            field: "PSBT_GLOBAL_VERSION",
        },
    )?;
    if u32_field(&version, g, "PSBT_GLOBAL_VERSION")? != 2 {
        return Err(PsbtDecodeError::Invalid {
            map: g,
            field: "PSBT_GLOBAL_VERSION",
        });
    }
    let required = |field| PsbtDecodeError::Missing { map: g, field };
    let tx_version = take(
        &mut global,
        PSBT_GLOBAL_TX_VERSION,
        g,
        "PSBT_GLOBAL_TX_VERSION",
    )?
    .ok_or_else(|| required("PSBT_GLOBAL_TX_VERSION"))?;
    let tx_version = Version(decode_exact::<i32>(
        &tx_version,
        g,
        "PSBT_GLOBAL_TX_VERSION",
    )?);
    if tx_version.0 < 2 {
        return Err(PsbtDecodeError::Invalid {
            map: g,
            field: "PSBT_GLOBAL_TX_VERSION (must be 2 or more)",
        });
    }
    let fallback_lock_time = take(
        &mut global,
        PSBT_GLOBAL_FALLBACK_LOCKTIME,
        g,
        "PSBT_GLOBAL_FALLBACK_LOCKTIME",
    )?
    .map(|v| u32_field(&v, g, "PSBT_GLOBAL_FALLBACK_LOCKTIME"))
    .transpose()?
    .map(LockTime::from_consensus);
    let count =
        |global: &mut Vec<Pair>, key_type, field, limit| -> Result<usize, PsbtDecodeError> {
            let value = take(global, key_type, g, field)?.ok_or_else(|| required(field))?;
            let VarInt(n) = decode_exact::<VarInt>(&value, g, field)?;
            // Each map takes at least its separator byte: a count beyond the remaining bytes is a
            // lie, refused before anything is allocated for it.
            let n = usize::try_from(n)
                .ok()
                .filter(|n| *n <= bytes.len())
                .ok_or(PsbtDecodeError::Invalid { map: g, field })?;
            if n > limit {
                return Err(PsbtDecodeError::TooMany {
                    map: g,
                    field,
                    count: n as u64,
                    limit,
                });
            }
            Ok(n)
        };
    let input_count = count(
        &mut global,
        PSBT_GLOBAL_INPUT_COUNT,
        "PSBT_GLOBAL_INPUT_COUNT",
        MAX_INPUTS,
    )?;
    let output_count = count(
        &mut global,
        PSBT_GLOBAL_OUTPUT_COUNT,
        "PSBT_GLOBAL_OUTPUT_COUNT",
        MAX_OUTPUTS,
    )?;
    let tx_modifiable = take(
        &mut global,
        PSBT_GLOBAL_TX_MODIFIABLE,
        g,
        "PSBT_GLOBAL_TX_MODIFIABLE",
    )?
    .map(|v| match v.as_slice() {
        [flags] => Ok(*flags),
        _ => Err(PsbtDecodeError::Invalid {
            map: g,
            field: "PSBT_GLOBAL_TX_MODIFIABLE",
        }),
    })
    .transpose()?;

    let mut inputs = Vec::new();
    let mut txins = Vec::new();
    let mut required_lock_times = Vec::new();
    for index in 0..input_count {
        let m = MapName::Input(index);
        let mut pairs = read_map(&mut cur, m)?;
        let txid = take(
            &mut pairs,
            PSBT_IN_PREVIOUS_TXID,
            m,
            "PSBT_IN_PREVIOUS_TXID",
        )?
        .ok_or(PsbtDecodeError::Missing {
            map: m,
            field: "PSBT_IN_PREVIOUS_TXID",
        })?;
        let txid: [u8; 32] = txid
            .as_slice()
            .try_into()
            .map_err(|_| PsbtDecodeError::Invalid {
                map: m,
                field: "PSBT_IN_PREVIOUS_TXID",
            })?;
        let vout = take(&mut pairs, PSBT_IN_OUTPUT_INDEX, m, "PSBT_IN_OUTPUT_INDEX")?.ok_or(
            PsbtDecodeError::Missing {
                map: m,
                field: "PSBT_IN_OUTPUT_INDEX",
            },
        )?;
        let vout = u32_field(&vout, m, "PSBT_IN_OUTPUT_INDEX")?;
        let sequence = take(&mut pairs, PSBT_IN_SEQUENCE, m, "PSBT_IN_SEQUENCE")?
            .map(|v| u32_field(&v, m, "PSBT_IN_SEQUENCE"))
            .transpose()?
            .map_or(Sequence::MAX, Sequence);
        let time = take(
            &mut pairs,
            PSBT_IN_REQUIRED_TIME_LOCKTIME,
            m,
            "PSBT_IN_REQUIRED_TIME_LOCKTIME",
        )?
        .map(|v| u32_field(&v, m, "PSBT_IN_REQUIRED_TIME_LOCKTIME"))
        .transpose()?;
        if time.is_some_and(|t| t < LOCKTIME_THRESHOLD) {
            return Err(PsbtDecodeError::Invalid {
                map: m,
                field: "PSBT_IN_REQUIRED_TIME_LOCKTIME (below 500000000)",
            });
        }
        let height = take(
            &mut pairs,
            PSBT_IN_REQUIRED_HEIGHT_LOCKTIME,
            m,
            "PSBT_IN_REQUIRED_HEIGHT_LOCKTIME",
        )?
        .map(|v| u32_field(&v, m, "PSBT_IN_REQUIRED_HEIGHT_LOCKTIME"))
        .transpose()?;
        if height.is_some_and(|h| h == 0 || h >= LOCKTIME_THRESHOLD) {
            return Err(PsbtDecodeError::Invalid {
                map: m,
                field: "PSBT_IN_REQUIRED_HEIGHT_LOCKTIME (must be 1 to 499999999)",
            });
        }
        txins.push(TxIn {
            previous_output: OutPoint::new(Txid::from_byte_array(txid), vout),
            script_sig: ScriptBuf::new(),
            sequence,
            witness: Witness::new(),
        });
        required_lock_times.push(RequiredLockTime { time, height });
        inputs.push(pairs);
    }

    let mut outputs = Vec::new();
    let mut txouts = Vec::new();
    for index in 0..output_count {
        let m = MapName::Output(index);
        let mut pairs = read_map(&mut cur, m)?;
        let amount = take(&mut pairs, PSBT_OUT_AMOUNT, m, "PSBT_OUT_AMOUNT")?.ok_or(
            PsbtDecodeError::Missing {
                map: m,
                field: "PSBT_OUT_AMOUNT",
            },
        )?;
        let amount = decode_exact::<i64>(&amount, m, "PSBT_OUT_AMOUNT")?;
        let amount = u64::try_from(amount)
            .ok()
            .map(Amount::from_sat)
            .filter(|a| *a <= Amount::MAX_MONEY)
            .ok_or(PsbtDecodeError::Invalid {
                map: m,
                field: "PSBT_OUT_AMOUNT",
            })?;
        let script = take(&mut pairs, PSBT_OUT_SCRIPT, m, "PSBT_OUT_SCRIPT")?.ok_or(
            PsbtDecodeError::Missing {
                map: m,
                field: "PSBT_OUT_SCRIPT",
            },
        )?;
        txouts.push(TxOut {
            value: amount,
            script_pubkey: ScriptBuf::from_bytes(script),
        });
        outputs.push(pairs);
    }
    if !cur.is_empty() {
        return Err(PsbtDecodeError::Trailing(cur.len()));
    }

    let fields = V2Fields {
        fallback_lock_time,
        tx_modifiable,
        required_lock_times,
    };
    let tx = Transaction {
        version: tx_version,
        lock_time: fields.lock_time()?,
        input: txins,
        output: txouts,
    };

    // The same maps as version 0: the unsigned transaction first, no version field.
    let mut v0 = PSBT_MAGIC_BYTES.to_vec();
    let mut global_v0 = vec![Pair::new(PSBT_GLOBAL_UNSIGNED_TX, unsigned_tx_bytes(&tx))];
    global_v0.extend(global);
    write_map(&global_v0, &mut v0);
    for pairs in inputs.iter().chain(&outputs) {
        write_map(pairs, &mut v0);
    }
    let psbt = Psbt::deserialize(&v0).map_err(PsbtDecodeError::Fields)?;
    Ok((psbt, fields))
}

/// The unsigned transaction as BIP-0174 stores it: always without the segwit marker, even
/// with no inputs (where `Transaction`'s own encoding switches to the BIP-0141 form).
fn unsigned_tx_bytes(tx: &Transaction) -> Vec<u8> {
    let mut bytes = encode::serialize(&tx.version);
    bytes.extend(encode::serialize(&tx.input));
    bytes.extend(encode::serialize(&tx.output));
    bytes.extend(encode::serialize(&tx.lock_time));
    bytes
}

/// Writes `psbt` as a version-2 PSBT with `fields` for what version 0 does not carry.
///
/// # Errors
/// Transaction version below 2, or maps that do not match the transaction.
pub fn to_v2(psbt: &Psbt, fields: &V2Fields) -> Result<Vec<u8>, PsbtEncodeError> {
    let tx = &psbt.unsigned_tx;
    if tx.version.0 < 2 {
        return Err(PsbtEncodeError::TxVersion(tx.version.0));
    }
    if psbt.inputs.len() != tx.input.len()
        || psbt.outputs.len() != tx.output.len()
        || fields.required_lock_times.len() != tx.input.len()
    {
        return Err(PsbtEncodeError::Malformed);
    }
    // bitcoin's own serialization of every field, read back as raw maps.
    let v0 = psbt.serialize();
    let mut cur = v0
        .strip_prefix(PSBT_MAGIC_BYTES)
        .ok_or(PsbtEncodeError::Malformed)?;
    let malformed = |_| PsbtEncodeError::Malformed;
    let mut global = read_map(&mut cur, MapName::Global).map_err(malformed)?;
    global.retain(|p| p.key_type != PSBT_GLOBAL_UNSIGNED_TX && p.key_type != PSBT_GLOBAL_VERSION);
    let mut added = vec![Pair::new(
        PSBT_GLOBAL_TX_VERSION,
        tx.version.0.to_le_bytes().to_vec(),
    )];
    if let Some(lock_time) = fields.fallback_lock_time {
        added.push(Pair::new(
            PSBT_GLOBAL_FALLBACK_LOCKTIME,
            lock_time.to_consensus_u32().to_le_bytes().to_vec(),
        ));
    }
    added.push(Pair::new(
        PSBT_GLOBAL_INPUT_COUNT,
        encode::serialize(&VarInt(tx.input.len() as u64)),
    ));
    added.push(Pair::new(
        PSBT_GLOBAL_OUTPUT_COUNT,
        encode::serialize(&VarInt(tx.output.len() as u64)),
    ));
    if let Some(flags) = fields.tx_modifiable {
        added.push(Pair::new(PSBT_GLOBAL_TX_MODIFIABLE, vec![flags]));
    }
    added.push(Pair::new(PSBT_GLOBAL_VERSION, 2u32.to_le_bytes().to_vec()));
    merge(&mut global, added, MapName::Global)?;

    let mut out = PSBT_MAGIC_BYTES.to_vec();
    write_map(&global, &mut out);
    for ((txin, required), index) in tx.input.iter().zip(&fields.required_lock_times).zip(0..) {
        let map = MapName::Input(index);
        let mut pairs = read_map(&mut cur, map).map_err(malformed)?;
        let mut added = vec![
            Pair::new(
                PSBT_IN_PREVIOUS_TXID,
                txin.previous_output.txid.to_byte_array().to_vec(),
            ),
            Pair::new(
                PSBT_IN_OUTPUT_INDEX,
                txin.previous_output.vout.to_le_bytes().to_vec(),
            ),
        ];
        if txin.sequence != Sequence::MAX {
            added.push(Pair::new(
                PSBT_IN_SEQUENCE,
                txin.sequence.0.to_le_bytes().to_vec(),
            ));
        }
        if let Some(time) = required.time {
            added.push(Pair::new(
                PSBT_IN_REQUIRED_TIME_LOCKTIME,
                time.to_le_bytes().to_vec(),
            ));
        }
        if let Some(height) = required.height {
            added.push(Pair::new(
                PSBT_IN_REQUIRED_HEIGHT_LOCKTIME,
                height.to_le_bytes().to_vec(),
            ));
        }
        merge(&mut pairs, added, map)?;
        write_map(&pairs, &mut out);
    }
    for (txout, index) in tx.output.iter().zip(0..) {
        if txout.value > Amount::MAX_MONEY {
            return Err(PsbtEncodeError::Amount(index));
        }
        let map = MapName::Output(index);
        let mut pairs = read_map(&mut cur, map).map_err(malformed)?;
        let added = vec![
            Pair::new(
                PSBT_OUT_AMOUNT,
                (txout.value.to_sat() as i64).to_le_bytes().to_vec(),
            ),
            Pair::new(PSBT_OUT_SCRIPT, txout.script_pubkey.to_bytes()),
        ];
        merge(&mut pairs, added, map)?;
        write_map(&pairs, &mut out);
    }
    Ok(out)
}

/// Adds the version-2 fields to a map read from version 0 and orders it by key (the order
/// Bitcoin Core writes). A version-0 map that already has a pair of one of their types (kept by
/// `bitcoin` as an unknown field) is refused rather than written as a PSBT that cannot be read.
fn merge(pairs: &mut Vec<Pair>, added: Vec<Pair>, map: MapName) -> Result<(), PsbtEncodeError> {
    let reserved: &[u8] = match map {
        MapName::Global => &[
            PSBT_GLOBAL_TX_VERSION,
            PSBT_GLOBAL_FALLBACK_LOCKTIME,
            PSBT_GLOBAL_INPUT_COUNT,
            PSBT_GLOBAL_OUTPUT_COUNT,
            PSBT_GLOBAL_TX_MODIFIABLE,
            PSBT_GLOBAL_VERSION,
        ],
        MapName::Input(_) => &[
            PSBT_IN_PREVIOUS_TXID,
            PSBT_IN_OUTPUT_INDEX,
            PSBT_IN_SEQUENCE,
            PSBT_IN_REQUIRED_TIME_LOCKTIME,
            PSBT_IN_REQUIRED_HEIGHT_LOCKTIME,
        ],
        MapName::Output(_) => &[PSBT_OUT_AMOUNT, PSBT_OUT_SCRIPT],
    };
    if let Some(p) = pairs.iter().find(|p| reserved.contains(&p.key_type)) {
        return Err(PsbtEncodeError::ReservedField {
            map,
            key_type: p.key_type,
        });
    }
    pairs.extend(added);
    pairs.sort_by_key(Pair::key_bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_time_follows_bip370() {
        let r = |time, height| RequiredLockTime { time, height };
        let mut f = V2Fields {
            fallback_lock_time: Some(LockTime::from_consensus(77)),
            tx_modifiable: None,
            required_lock_times: vec![r(None, None), r(None, None)],
        };
        assert_eq!(f.lock_time().ok(), Some(LockTime::from_consensus(77)));
        f.required_lock_times = vec![r(Some(600_000_000), Some(100)), r(None, Some(120))];
        assert_eq!(f.lock_time().ok(), Some(LockTime::from_consensus(120)));
        f.required_lock_times = vec![r(Some(600_000_000), Some(100)), r(Some(600_000_100), None)];
        assert_eq!(
            f.lock_time().ok(),
            Some(LockTime::from_consensus(600_000_100))
        );
        f.required_lock_times = vec![r(Some(600_000_000), None), r(None, Some(120))];
        assert!(matches!(
            f.lock_time(),
            Err(PsbtDecodeError::LockTimeConflict)
        ));
    }
}
