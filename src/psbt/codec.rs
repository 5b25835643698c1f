//! The BIP-0370 codec: a PSBT's raw key-value maps read and written byte for byte, the version
//! detected from the global map ([`peek_version`]), and the errors of reading a PSBT of
//! version 0 or 2 ([`PsbtDecodeError`], naming the map with [`MapName`]).
//!
//! Reading never allocates more than the input holds: a length is checked against the bytes
//! left before anything is taken. It takes time linear in the input (duplicate keys are found
//! with a hash set) and holds every count to a bound ([`MAX_INPUTS`], [`MAX_OUTPUTS`],
//! [`MAX_PAIRS_PER_MAP`], [`MAX_KEY_LEN`], [`MAX_VALUE_LEN`]), refused with an error that names
//! the bound and the map. A version-0 PSBT is held to BIP-0370's rule that it carries no field
//! of version 2 ([`check_v0`]) before `bitcoin`'s decoder reads it.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use bitcoin::consensus::encode::{self, Decodable, VarInt};
use bitcoin::{TxIn, TxOut};

use super::consts::*;

/// The most inputs ckm reads: as many as fit in a block (4,000,000 weight units, BIP-0141) at
/// 164 weight units for the smallest input.
pub const MAX_INPUTS: usize = 24_390;
/// The most outputs ckm reads: as many as fit in a block at 36 weight units for the smallest
/// output.
pub const MAX_OUTPUTS: usize = 111_111;
/// The most key-value pairs ckm reads in one map: far more than any PSBT needs (a script path
/// with a thousand keys takes a few thousand), few enough to keep one map's index small.
pub const MAX_PAIRS_PER_MAP: usize = 200_000;
/// The longest key ckm reads, in bytes: twice the longest key BIP-0174 defines
/// (PSBT_IN_TAP_LEAF_SCRIPT with a control block of depth 128 is 4,130 bytes), rounded up.
pub const MAX_KEY_LEN: usize = 10_000;
/// The longest value ckm reads, in bytes: a whole transaction of a block's weight (a
/// PSBT_IN_NON_WITNESS_UTXO can be no longer).
pub const MAX_VALUE_LEN: usize = 4_000_000;

/// A PSBT format version ckm reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum PsbtVersion {
    /// BIP-0174: the unsigned transaction in the global map.
    #[default]
    V0,
    /// BIP-0370: the transaction spread over the maps; what Bitcoin Core's `createpsbt`
    /// makes by default.
    V2,
}

impl PsbtVersion {
    /// The version number as written in PSBT_GLOBAL_VERSION.
    pub fn number(self) -> u32 {
        match self {
            PsbtVersion::V0 => 0,
            PsbtVersion::V2 => 2,
        }
    }
}

impl fmt::Display for PsbtVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

impl FromStr for PsbtVersion {
    type Err = PsbtDecodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "0" => Ok(PsbtVersion::V0),
            "2" => Ok(PsbtVersion::V2),
            other => Err(PsbtDecodeError::UnsupportedVersion(
                other.parse().unwrap_or(u32::MAX),
            )),
        }
    }
}

/// Which map of a PSBT an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MapName {
    /// The global map.
    Global,
    /// The map of input `n`.
    Input(usize),
    /// The map of output `n`.
    Output(usize),
}

impl fmt::Display for MapName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapName::Global => f.write_str("global map"),
            MapName::Input(i) => write!(f, "input {i}"),
            MapName::Output(i) => write!(f, "output {i}"),
        }
    }
}

/// Why bytes could not be read as a PSBT of version 0 or 2.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PsbtDecodeError {
    /// The bytes do not start with `psbt` 0xff.
    #[error("not a PSBT: the magic bytes 'psbt' 0xff are missing")]
    Magic,
    /// The bytes end inside a map.
    #[error("the PSBT is truncated in its {0}")]
    Truncated(MapName),
    /// Bytes follow the last output map.
    #[error("the PSBT has {0} bytes of trailing data after its last map")]
    Trailing(usize),
    /// A version other than 0 or 2.
    #[error("PSBT version {0} is not supported (ckm reads versions 0 and 2)")]
    UnsupportedVersion(u32),
    /// A key appears twice in one map.
    #[error("PSBT {map}: duplicate key of type {key_type:#04x}")]
    DuplicateKey {
        /// The map.
        map: MapName,
        /// The key's type.
        key_type: u8,
    },
    /// A field version 2 requires is missing.
    #[error("PSBT v2 {map}: missing {field}")]
    Missing {
        /// The map.
        map: MapName,
        /// The BIP-0370 field name.
        field: &'static str,
    },
    /// A field is malformed or not allowed in this version.
    #[error("PSBT v2 {map}: invalid {field}")]
    Invalid {
        /// The map.
        map: MapName,
        /// The BIP-0370 field name.
        field: &'static str,
    },
    /// A map holds more key-value pairs than [`MAX_PAIRS_PER_MAP`].
    #[error("PSBT {map}: more than {limit} key-value pairs (ckm's limit per map)")]
    TooManyPairs {
        /// The map.
        map: MapName,
        /// The limit.
        limit: usize,
    },
    /// A key or value is longer than [`MAX_KEY_LEN`] or [`MAX_VALUE_LEN`].
    #[error("PSBT {map}: a {what} of {len} bytes is longer than ckm's limit of {limit}")]
    TooLong {
        /// The map.
        map: MapName,
        /// `key` or `value`.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// More inputs than [`MAX_INPUTS`] or outputs than [`MAX_OUTPUTS`].
    #[error("PSBT {map}: {field} says {count}, more than ckm's limit of {limit}")]
    TooMany {
        /// The map.
        map: MapName,
        /// The field that gives the count.
        field: &'static str,
        /// The count.
        count: u64,
        /// The limit.
        limit: usize,
    },
    /// A version-0 PSBT carries a field that only version 2 may have (BIP-0370).
    #[error("PSBT v0 {map}: {field} is only allowed in version 2")]
    V2FieldInV0 {
        /// The map.
        map: MapName,
        /// The BIP-0370 field name.
        field: &'static str,
    },
    /// Some inputs need a time lock time, others a height lock time (BIP-0370).
    #[error("PSBT v2: some inputs require a time-based lock time and others a height-based one; no lock time satisfies both")]
    LockTimeConflict,
    /// The text is not base64.
    #[error("the PSBT text is not base64")]
    Base64(#[source] bitcoin::base64::DecodeError),
    /// `bitcoin`'s decoder refused the (converted) PSBT.
    #[error("invalid PSBT fields")]
    Fields(#[source] bitcoin::psbt::Error),
}

impl PsbtDecodeError {
    /// The message followed by its causes, for a one-line report (e.g. to the coordinator).
    pub fn with_causes(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }
}

/// One key-value pair: the key's type, the rest of the key, the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pair {
    pub(super) key_type: u8,
    pub(super) key_data: Vec<u8>,
    pub(super) value: Vec<u8>,
}

impl Pair {
    pub(super) fn new(key_type: u8, value: Vec<u8>) -> Self {
        Pair {
            key_type,
            key_data: Vec::new(),
            value,
        }
    }

    pub(super) fn key_bytes(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(1 + self.key_data.len());
        k.push(self.key_type);
        k.extend_from_slice(&self.key_data);
        k
    }

    pub(super) fn write(&self, out: &mut Vec<u8>) {
        let key = self.key_bytes();
        out.extend(encode::serialize(&VarInt(key.len() as u64)));
        out.extend(&key);
        out.extend(encode::serialize(&VarInt(self.value.len() as u64)));
        out.extend(&self.value);
    }
}

/// Reads a compact size and then that many bytes, never allocating more than is there; a
/// `what` (key or value) longer than `limit` is refused.
fn read_chunk<'a>(
    cur: &mut &'a [u8],
    map: MapName,
    what: &'static str,
    limit: usize,
) -> Result<&'a [u8], PsbtDecodeError> {
    let VarInt(len) = VarInt::consensus_decode(cur).map_err(|_| PsbtDecodeError::Truncated(map))?;
    let len = usize::try_from(len).map_err(|_| PsbtDecodeError::Truncated(map))?;
    if len > cur.len() {
        return Err(PsbtDecodeError::Truncated(map));
    }
    if len > limit {
        return Err(PsbtDecodeError::TooLong {
            map,
            what,
            len,
            limit,
        });
    }
    let (chunk, rest) = cur.split_at(len);
    *cur = rest;
    Ok(chunk)
}

/// Walks one map up to its 0x00 separator, handing each pair (key type, rest of the key,
/// value) to `each`; refuses duplicate keys and more than [`MAX_PAIRS_PER_MAP`] pairs, in time
/// linear in the map's length.
fn walk_map<'a>(
    cur: &mut &'a [u8],
    map: MapName,
    mut each: impl FnMut(u8, &'a [u8], &'a [u8]) -> Result<(), PsbtDecodeError>,
) -> Result<(), PsbtDecodeError> {
    let mut keys: HashSet<&'a [u8]> = HashSet::new();
    loop {
        let key = read_chunk(cur, map, "key", MAX_KEY_LEN)?;
        let Some((&key_type, key_data)) = key.split_first() else {
            return Ok(());
        };
        let value = read_chunk(cur, map, "value", MAX_VALUE_LEN)?;
        if !keys.insert(key) {
            return Err(PsbtDecodeError::DuplicateKey { map, key_type });
        }
        if keys.len() > MAX_PAIRS_PER_MAP {
            return Err(PsbtDecodeError::TooManyPairs {
                map,
                limit: MAX_PAIRS_PER_MAP,
            });
        }
        each(key_type, key_data, value)?;
    }
}

/// Reads one map up to its 0x00 separator, refusing duplicate keys (see [`walk_map`]).
pub(super) fn read_map(cur: &mut &[u8], map: MapName) -> Result<Vec<Pair>, PsbtDecodeError> {
    let mut pairs: Vec<Pair> = Vec::new();
    walk_map(cur, map, |key_type, key_data, value| {
        pairs.push(Pair {
            key_type,
            key_data: key_data.to_vec(),
            value: value.to_vec(),
        });
        Ok(())
    })?;
    Ok(pairs)
}

pub(super) fn write_map(pairs: &[Pair], out: &mut Vec<u8>) {
    for p in pairs {
        p.write(out);
    }
    out.push(PSBT_SEPARATOR);
}

/// Takes the pair of `key_type` out of `pairs`. A version-2 field appears at most once and with
/// an empty key; any other pair of its type is refused (it could not be written back).
pub(super) fn take(
    pairs: &mut Vec<Pair>,
    key_type: u8,
    map: MapName,
    field: &'static str,
) -> Result<Option<Vec<u8>>, PsbtDecodeError> {
    let mut found = pairs
        .iter()
        .enumerate()
        .filter(|(_, p)| p.key_type == key_type);
    let Some((i, _)) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() || !pairs[i].key_data.is_empty() {
        return Err(PsbtDecodeError::Invalid { map, field });
    }
    Ok(Some(pairs.remove(i).value))
}

pub(super) fn decode_exact<T: Decodable>(
    value: &[u8],
    map: MapName,
    field: &'static str,
) -> Result<T, PsbtDecodeError> {
    encode::deserialize(value).map_err(|_| PsbtDecodeError::Invalid { map, field })
}

pub(super) fn u32_field(
    value: &[u8],
    map: MapName,
    field: &'static str,
) -> Result<u32, PsbtDecodeError> {
    let bytes: [u8; 4] = value
        .try_into()
        .map_err(|_| PsbtDecodeError::Invalid { map, field })?;
    Ok(u32::from_le_bytes(bytes))
}

/// The version in the global map (0 when absent), without parsing anything else.
///
/// # Errors
/// Not a PSBT, a truncated global map, or a version other than 0 or 2.
pub fn peek_version(bytes: &[u8]) -> Result<PsbtVersion, PsbtDecodeError> {
    let mut cur = bytes
        .strip_prefix(PSBT_MAGIC_BYTES)
        .ok_or(PsbtDecodeError::Magic)?;
    let global = read_map(&mut cur, MapName::Global)?;
    let version = match global.iter().find(|p| p.key_type == PSBT_GLOBAL_VERSION) {
        None => 0,
        Some(p) => u32_field(&p.value, MapName::Global, "PSBT_GLOBAL_VERSION")?,
    };
    match version {
        0 => Ok(PsbtVersion::V0),
        2 => Ok(PsbtVersion::V2),
        v => Err(PsbtDecodeError::UnsupportedVersion(v)),
    }
}

/// The BIP-0370 name of a field that only version 2 may carry in `map`, if `key_type` is one.
pub fn v2_only_field(map: MapName, key_type: u8) -> Option<&'static str> {
    match (map, key_type) {
        (MapName::Global, PSBT_GLOBAL_TX_VERSION) => Some("PSBT_GLOBAL_TX_VERSION"),
        (MapName::Global, PSBT_GLOBAL_FALLBACK_LOCKTIME) => Some("PSBT_GLOBAL_FALLBACK_LOCKTIME"),
        (MapName::Global, PSBT_GLOBAL_INPUT_COUNT) => Some("PSBT_GLOBAL_INPUT_COUNT"),
        (MapName::Global, PSBT_GLOBAL_OUTPUT_COUNT) => Some("PSBT_GLOBAL_OUTPUT_COUNT"),
        (MapName::Global, PSBT_GLOBAL_TX_MODIFIABLE) => Some("PSBT_GLOBAL_TX_MODIFIABLE"),
        (MapName::Input(_), PSBT_IN_PREVIOUS_TXID) => Some("PSBT_IN_PREVIOUS_TXID"),
        (MapName::Input(_), PSBT_IN_OUTPUT_INDEX) => Some("PSBT_IN_OUTPUT_INDEX"),
        (MapName::Input(_), PSBT_IN_SEQUENCE) => Some("PSBT_IN_SEQUENCE"),
        (MapName::Input(_), PSBT_IN_REQUIRED_TIME_LOCKTIME) => {
            Some("PSBT_IN_REQUIRED_TIME_LOCKTIME")
        }
        (MapName::Input(_), PSBT_IN_REQUIRED_HEIGHT_LOCKTIME) => {
            Some("PSBT_IN_REQUIRED_HEIGHT_LOCKTIME")
        }
        (MapName::Output(_), PSBT_OUT_AMOUNT) => Some("PSBT_OUT_AMOUNT"),
        (MapName::Output(_), PSBT_OUT_SCRIPT) => Some("PSBT_OUT_SCRIPT"),
        _ => None,
    }
}

/// Holds a version-0 PSBT to BIP-0370 and to ckm's bounds before `bitcoin`'s decoder reads it:
/// no map carries a field of version 2, and every map, key and value is within bounds. Walks
/// the maps without keeping them, in time linear in the input.
///
/// What is left to `bitcoin`'s decoder (a missing or malformed unsigned transaction) passes
/// here unchecked, so that its error is the one reported.
///
/// # Errors
/// Not a PSBT, a map that is truncated, has a duplicate key or is over a bound, or a field of
/// version 2.
pub fn check_v0(bytes: &[u8]) -> Result<(), PsbtDecodeError> {
    let mut cur = bytes
        .strip_prefix(PSBT_MAGIC_BYTES)
        .ok_or(PsbtDecodeError::Magic)?;
    let no_v2 = |map: MapName| {
        move |key_type, _: &[u8], _: &[u8]| match v2_only_field(map, key_type) {
            Some(field) => Err(PsbtDecodeError::V2FieldInV0 { map, field }),
            None => Ok(()),
        }
    };
    let mut unsigned_tx = None;
    let global = MapName::Global;
    walk_map(&mut cur, global, |key_type, key_data, value| {
        if key_type == PSBT_GLOBAL_UNSIGNED_TX && key_data.is_empty() {
            unsigned_tx = Some(value);
        }
        no_v2(global)(key_type, key_data, value)
    })?;
    // The counts of inputs and outputs, read as BIP-0174 stores the transaction (never with the
    // segwit marker); bitcoin's decoder reports what is wrong with it.
    let Some(counts) = unsigned_tx.and_then(|mut tx| {
        let _version = i32::consensus_decode(&mut tx).ok()?;
        let inputs = Vec::<TxIn>::consensus_decode(&mut tx).ok()?;
        let outputs = Vec::<TxOut>::consensus_decode(&mut tx).ok()?;
        Some((inputs.len(), outputs.len()))
    }) else {
        return Ok(());
    };
    let (inputs, outputs) = counts;
    for (count, limit) in [(inputs, MAX_INPUTS), (outputs, MAX_OUTPUTS)] {
        if count > limit {
            return Err(PsbtDecodeError::TooMany {
                map: global,
                field: "PSBT_GLOBAL_UNSIGNED_TX",
                count: count as u64,
                limit,
            });
        }
    }
    let maps = (0..inputs)
        .map(MapName::Input)
        .chain((0..outputs).map(MapName::Output));
    for map in maps {
        walk_map(&mut cur, map, no_v2(map))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_display() {
        assert_eq!("0".parse::<PsbtVersion>().ok(), Some(PsbtVersion::V0));
        assert_eq!("2".parse::<PsbtVersion>().ok(), Some(PsbtVersion::V2));
        assert!("1".parse::<PsbtVersion>().is_err());
        assert_eq!(PsbtVersion::V2.to_string(), "2");
    }
}
