//! The BIP-0370 codec: a PSBT's raw key-value maps read and written byte for byte, the version
//! detected from the global map ([`peek_version`]), and the errors of reading a PSBT of
//! version 0 or 2 ([`PsbtDecodeError`], naming the map with [`MapName`]).
//!
//! Reading never allocates more than the input holds: a length is checked against the bytes
//! left before anything is taken.

use std::fmt;
use std::str::FromStr;

use bitcoin::consensus::encode::{self, Decodable, VarInt};

use super::consts::{PSBT_GLOBAL_VERSION, PSBT_MAGIC_BYTES, PSBT_SEPARATOR};

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

/// Reads a compact size and then that many bytes, never allocating more than is there.
fn read_chunk<'a>(cur: &mut &'a [u8], map: MapName) -> Result<&'a [u8], PsbtDecodeError> {
    let VarInt(len) = VarInt::consensus_decode(cur).map_err(|_| PsbtDecodeError::Truncated(map))?;
    let len = usize::try_from(len).map_err(|_| PsbtDecodeError::Truncated(map))?;
    if len > cur.len() {
        return Err(PsbtDecodeError::Truncated(map));
    }
    let (chunk, rest) = cur.split_at(len);
    *cur = rest;
    Ok(chunk)
}

/// Reads one map up to its 0x00 separator, refusing duplicate keys.
pub(super) fn read_map(cur: &mut &[u8], map: MapName) -> Result<Vec<Pair>, PsbtDecodeError> {
    let mut pairs: Vec<Pair> = Vec::new();
    loop {
        let key = read_chunk(cur, map)?;
        let Some((&key_type, key_data)) = key.split_first() else {
            return Ok(pairs);
        };
        let value = read_chunk(cur, map)?;
        if pairs
            .iter()
            .any(|p| p.key_type == key_type && p.key_data == key_data)
        {
            return Err(PsbtDecodeError::DuplicateKey { map, key_type });
        }
        pairs.push(Pair {
            key_type,
            key_data: key_data.to_vec(),
            value: value.to_vec(),
        });
    }
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
