//! PSBT versions 0 (BIP-0174) and 2 (BIP-0370), converted at the edges.
//!
//! Everything inside ckm — the signer's checks, the FROST rounds, finalization, the wallet —
//! works on one model, [`bitcoin::Psbt`] (version 0). A version-2 PSBT is converted to it when
//! it enters ([`VersionedPsbt::deserialize`]) and back when it leaves
//! ([`VersionedPsbt::serialize`]), so one check path serves both versions and a PSBT is written
//! back in the version it came in.
//!
//! The conversion works on the raw key-value maps: only the fields in which the two versions
//! differ are moved (version 2 carries the transaction's version, lock time, inputs' outpoints
//! and sequences and outputs' amounts and scripts as separate fields; version 0 carries an
//! unsigned transaction), and every other pair is carried over byte for byte, so fields ckm does
//! not know survive both ways. The fields themselves are then parsed by `bitcoin`'s own PSBT
//! decoder. What only version 2 can express (the fallback lock time, the modifiable flags, the
//! inputs' required lock times) is remembered in [`V2Fields`] and written back.
//!
//! rust-bitcoin's `psbt-v2` crate (0.3) is used in the tests as an independent oracle but not
//! here: it has no conversion to or from `bitcoin::Psbt`, and its decoder trusts the input count
//! of the PSBT to pre-allocate memory, which a signer reading PSBTs from the network cannot
//! afford (see `docs/interop.md`).

use std::fmt;
use std::str::FromStr;

use bitcoin::absolute::LockTime;
use bitcoin::base64::prelude::{Engine as _, BASE64_STANDARD};
use bitcoin::consensus::encode::{self, Decodable, VarInt};
use bitcoin::hashes::Hash;
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, OutPoint, Psbt, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};

/// The PSBT magic: `psbt` followed by 0xff.
const MAGIC: &[u8; 5] = b"psbt\xff";

// Global types.
const GLOBAL_UNSIGNED_TX: u8 = 0x00;
const GLOBAL_TX_VERSION: u8 = 0x02;
const GLOBAL_FALLBACK_LOCKTIME: u8 = 0x03;
const GLOBAL_INPUT_COUNT: u8 = 0x04;
const GLOBAL_OUTPUT_COUNT: u8 = 0x05;
const GLOBAL_TX_MODIFIABLE: u8 = 0x06;
const GLOBAL_VERSION: u8 = 0xfb;
// Input types (version 2 only).
const IN_PREVIOUS_TXID: u8 = 0x0e;
const IN_OUTPUT_INDEX: u8 = 0x0f;
const IN_SEQUENCE: u8 = 0x10;
const IN_REQUIRED_TIME_LOCKTIME: u8 = 0x11;
const IN_REQUIRED_HEIGHT_LOCKTIME: u8 = 0x12;
// Output types (version 2 only).
const OUT_AMOUNT: u8 = 0x03;
const OUT_SCRIPT: u8 = 0x04;

/// PSBT_GLOBAL_TX_MODIFIABLE bits (BIP-0370).
const INPUTS_MODIFIABLE: u8 = 0x01;
const OUTPUTS_MODIFIABLE: u8 = 0x02;

/// Lock times at or above this are UNIX times, below it block heights.
const LOCK_TIME_THRESHOLD: u32 = 500_000_000;

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
    fn for_transaction(tx: &Transaction) -> Self {
        V2Fields {
            fallback_lock_time: (tx.lock_time != LockTime::ZERO).then_some(tx.lock_time),
            tx_modifiable: None,
            required_lock_times: vec![RequiredLockTime::default(); tx.input.len()],
        }
    }
}

/// A PSBT as ckm works on it ([`bitcoin::Psbt`]) with the version it came in (and, for
/// version 2, what only that version carries), so it can be written back the same way.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionedPsbt {
    psbt: Psbt,
    version: PsbtVersion,
    v2: Option<V2Fields>,
}

impl VersionedPsbt {
    /// Wraps a PSBT to be written in `version`.
    pub fn new(psbt: Psbt, version: PsbtVersion) -> Self {
        VersionedPsbt {
            psbt,
            version,
            v2: None,
        }
    }

    /// Reads a binary PSBT of version 0 or 2.
    ///
    /// # Errors
    /// Anything that makes the bytes not a valid PSBT of those versions, naming the map.
    pub fn deserialize(bytes: &[u8]) -> Result<Self, PsbtDecodeError> {
        match peek_version(bytes)? {
            PsbtVersion::V0 => Ok(VersionedPsbt {
                psbt: Psbt::deserialize(bytes).map_err(PsbtDecodeError::Fields)?,
                version: PsbtVersion::V0,
                v2: None,
            }),
            PsbtVersion::V2 => {
                let (psbt, fields) = from_v2(bytes)?;
                Ok(VersionedPsbt {
                    psbt,
                    version: PsbtVersion::V2,
                    v2: Some(fields),
                })
            }
        }
    }

    /// Reads a base64 PSBT of version 0 or 2.
    ///
    /// # Errors
    /// Not base64, or see [`VersionedPsbt::deserialize`].
    pub fn from_base64(text: &str) -> Result<Self, PsbtDecodeError> {
        let bytes = BASE64_STANDARD
            .decode(text.trim())
            .map_err(PsbtDecodeError::Base64)?;
        Self::deserialize(&bytes)
    }

    /// The PSBT (as version 0, the model every check works on).
    pub fn psbt(&self) -> &Psbt {
        &self.psbt
    }

    /// The PSBT, mutably (e.g. to finalize it).
    pub fn psbt_mut(&mut self) -> &mut Psbt {
        &mut self.psbt
    }

    /// The PSBT, dropping its version.
    pub fn into_psbt(self) -> Psbt {
        self.psbt
    }

    /// The version it is written in.
    pub fn version(&self) -> PsbtVersion {
        self.version
    }

    /// Writes it in `version` from now on.
    pub fn set_version(&mut self, version: PsbtVersion) {
        self.version = version;
    }

    /// The version-2 fields remembered from the PSBT that came in, if it was version 2.
    pub fn v2_fields(&self) -> Option<&V2Fields> {
        self.v2.as_ref()
    }

    /// Records that every input was signed with SIGHASH_DEFAULT or SIGHASH_ALL: BIP-0370 then
    /// requires the signer to clear the inputs-modifiable and outputs-modifiable flags.
    pub fn mark_signed(&mut self) {
        if let Some(flags) = self.v2.as_mut().and_then(|f| f.tx_modifiable.as_mut()) {
            *flags &= !(INPUTS_MODIFIABLE | OUTPUTS_MODIFIABLE);
        }
    }

    /// The binary PSBT in its version.
    ///
    /// # Errors
    /// [`PsbtEncodeError`] when the transaction cannot be expressed in version 2.
    pub fn serialize(&self) -> Result<Vec<u8>, PsbtEncodeError> {
        match self.version {
            PsbtVersion::V0 => Ok(self.psbt.serialize()),
            PsbtVersion::V2 => {
                // The remembered fields apply while they still describe the transaction.
                let fields = self
                    .v2
                    .as_ref()
                    .filter(|f| {
                        f.required_lock_times.len() == self.psbt.unsigned_tx.input.len()
                            && f.lock_time().ok() == Some(self.psbt.unsigned_tx.lock_time)
                    })
                    .cloned()
                    .unwrap_or_else(|| {
                        let mut fresh = V2Fields::for_transaction(&self.psbt.unsigned_tx);
                        fresh.tx_modifiable = self.v2.as_ref().and_then(|f| f.tx_modifiable);
                        fresh
                    });
                to_v2(&self.psbt, &fields)
            }
        }
    }

    /// The base64 PSBT in its version.
    ///
    /// # Errors
    /// See [`VersionedPsbt::serialize`].
    pub fn to_base64(&self) -> Result<String, PsbtEncodeError> {
        Ok(BASE64_STANDARD.encode(self.serialize()?))
    }
}

impl From<Psbt> for VersionedPsbt {
    fn from(psbt: Psbt) -> Self {
        VersionedPsbt::new(psbt, PsbtVersion::V0)
    }
}

/// Reads a base64 PSBT of version 0 or 2 as the version-0 model (what the signer does with the
/// PSBT of a signing request).
///
/// # Errors
/// See [`VersionedPsbt::from_base64`].
pub fn psbt_from_base64(text: &str) -> Result<Psbt, PsbtDecodeError> {
    VersionedPsbt::from_base64(text).map(VersionedPsbt::into_psbt)
}

// ------------------------------------------------------------------------------- raw maps

/// One key-value pair: the key's type, the rest of the key, the value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pair {
    key_type: u8,
    key_data: Vec<u8>,
    value: Vec<u8>,
}

impl Pair {
    fn new(key_type: u8, value: Vec<u8>) -> Self {
        Pair {
            key_type,
            key_data: Vec::new(),
            value,
        }
    }

    fn key_bytes(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(1 + self.key_data.len());
        k.push(self.key_type);
        k.extend_from_slice(&self.key_data);
        k
    }

    fn write(&self, out: &mut Vec<u8>) {
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
fn read_map(cur: &mut &[u8], map: MapName) -> Result<Vec<Pair>, PsbtDecodeError> {
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

fn write_map(pairs: &[Pair], out: &mut Vec<u8>) {
    for p in pairs {
        p.write(out);
    }
    out.push(0x00);
}

/// Takes the pair of `key_type` out of `pairs`. A version-2 field appears at most once and with
/// an empty key; any other pair of its type is refused (it could not be written back).
fn take(
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

fn decode_exact<T: Decodable>(
    value: &[u8],
    map: MapName,
    field: &'static str,
) -> Result<T, PsbtDecodeError> {
    encode::deserialize(value).map_err(|_| PsbtDecodeError::Invalid { map, field })
}

fn u32_field(value: &[u8], map: MapName, field: &'static str) -> Result<u32, PsbtDecodeError> {
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
    let mut cur = bytes.strip_prefix(MAGIC).ok_or(PsbtDecodeError::Magic)?;
    let global = read_map(&mut cur, MapName::Global)?;
    let version = match global.iter().find(|p| p.key_type == GLOBAL_VERSION) {
        None => 0,
        Some(p) => u32_field(&p.value, MapName::Global, "PSBT_GLOBAL_VERSION")?,
    };
    match version {
        0 => Ok(PsbtVersion::V0),
        2 => Ok(PsbtVersion::V2),
        v => Err(PsbtDecodeError::UnsupportedVersion(v)),
    }
}

/// Converts a version-2 PSBT to the version-0 model plus what only version 2 says.
///
/// # Errors
/// A malformed map, a missing or invalid BIP-0370 field, an undeterminable lock time, or a
/// field `bitcoin` refuses.
pub fn from_v2(bytes: &[u8]) -> Result<(Psbt, V2Fields), PsbtDecodeError> {
    let g = MapName::Global;
    let mut cur = bytes.strip_prefix(MAGIC).ok_or(PsbtDecodeError::Magic)?;
    let mut global = read_map(&mut cur, g)?;
    if global.iter().any(|p| p.key_type == GLOBAL_UNSIGNED_TX) {
        return Err(PsbtDecodeError::Invalid {
            map: g,
            field: "PSBT_GLOBAL_UNSIGNED_TX (not allowed in version 2)",
        });
    }
    let version = take(&mut global, GLOBAL_VERSION, g, "PSBT_GLOBAL_VERSION")?.ok_or(
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
    let tx_version = take(&mut global, GLOBAL_TX_VERSION, g, "PSBT_GLOBAL_TX_VERSION")?
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
        GLOBAL_FALLBACK_LOCKTIME,
        g,
        "PSBT_GLOBAL_FALLBACK_LOCKTIME",
    )?
    .map(|v| u32_field(&v, g, "PSBT_GLOBAL_FALLBACK_LOCKTIME"))
    .transpose()?
    .map(LockTime::from_consensus);
    let count = |global: &mut Vec<Pair>, key_type, field| -> Result<usize, PsbtDecodeError> {
        let value = take(global, key_type, g, field)?.ok_or_else(|| required(field))?;
        let VarInt(n) = decode_exact::<VarInt>(&value, g, field)?;
        // Each map takes at least its separator byte: a count beyond the remaining bytes is a
        // lie, refused before anything is allocated for it.
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= bytes.len())
            .ok_or(PsbtDecodeError::Invalid { map: g, field })
    };
    let input_count = count(&mut global, GLOBAL_INPUT_COUNT, "PSBT_GLOBAL_INPUT_COUNT")?;
    let output_count = count(&mut global, GLOBAL_OUTPUT_COUNT, "PSBT_GLOBAL_OUTPUT_COUNT")?;
    let tx_modifiable = take(
        &mut global,
        GLOBAL_TX_MODIFIABLE,
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
        let txid = take(&mut pairs, IN_PREVIOUS_TXID, m, "PSBT_IN_PREVIOUS_TXID")?.ok_or(
            PsbtDecodeError::Missing {
                map: m,
                field: "PSBT_IN_PREVIOUS_TXID",
            },
        )?;
        let txid: [u8; 32] = txid
            .as_slice()
            .try_into()
            .map_err(|_| PsbtDecodeError::Invalid {
                map: m,
                field: "PSBT_IN_PREVIOUS_TXID",
            })?;
        let vout = take(&mut pairs, IN_OUTPUT_INDEX, m, "PSBT_IN_OUTPUT_INDEX")?.ok_or(
            PsbtDecodeError::Missing {
                map: m,
                field: "PSBT_IN_OUTPUT_INDEX",
            },
        )?;
        let vout = u32_field(&vout, m, "PSBT_IN_OUTPUT_INDEX")?;
        let sequence = take(&mut pairs, IN_SEQUENCE, m, "PSBT_IN_SEQUENCE")?
            .map(|v| u32_field(&v, m, "PSBT_IN_SEQUENCE"))
            .transpose()?
            .map_or(Sequence::MAX, Sequence);
        let time = take(
            &mut pairs,
            IN_REQUIRED_TIME_LOCKTIME,
            m,
            "PSBT_IN_REQUIRED_TIME_LOCKTIME",
        )?
        .map(|v| u32_field(&v, m, "PSBT_IN_REQUIRED_TIME_LOCKTIME"))
        .transpose()?;
        if time.is_some_and(|t| t < LOCK_TIME_THRESHOLD) {
            return Err(PsbtDecodeError::Invalid {
                map: m,
                field: "PSBT_IN_REQUIRED_TIME_LOCKTIME (below 500000000)",
            });
        }
        let height = take(
            &mut pairs,
            IN_REQUIRED_HEIGHT_LOCKTIME,
            m,
            "PSBT_IN_REQUIRED_HEIGHT_LOCKTIME",
        )?
        .map(|v| u32_field(&v, m, "PSBT_IN_REQUIRED_HEIGHT_LOCKTIME"))
        .transpose()?;
        if height.is_some_and(|h| h == 0 || h >= LOCK_TIME_THRESHOLD) {
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
        let amount = take(&mut pairs, OUT_AMOUNT, m, "PSBT_OUT_AMOUNT")?.ok_or(
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
        let script = take(&mut pairs, OUT_SCRIPT, m, "PSBT_OUT_SCRIPT")?.ok_or(
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
    let mut v0 = MAGIC.to_vec();
    let mut global_v0 = vec![Pair::new(GLOBAL_UNSIGNED_TX, unsigned_tx_bytes(&tx))];
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
    let mut cur = v0.strip_prefix(MAGIC).ok_or(PsbtEncodeError::Malformed)?;
    let malformed = |_| PsbtEncodeError::Malformed;
    let mut global = read_map(&mut cur, MapName::Global).map_err(malformed)?;
    global.retain(|p| p.key_type != GLOBAL_UNSIGNED_TX && p.key_type != GLOBAL_VERSION);
    let mut added = vec![Pair::new(
        GLOBAL_TX_VERSION,
        tx.version.0.to_le_bytes().to_vec(),
    )];
    if let Some(lock_time) = fields.fallback_lock_time {
        added.push(Pair::new(
            GLOBAL_FALLBACK_LOCKTIME,
            lock_time.to_consensus_u32().to_le_bytes().to_vec(),
        ));
    }
    added.push(Pair::new(
        GLOBAL_INPUT_COUNT,
        encode::serialize(&VarInt(tx.input.len() as u64)),
    ));
    added.push(Pair::new(
        GLOBAL_OUTPUT_COUNT,
        encode::serialize(&VarInt(tx.output.len() as u64)),
    ));
    if let Some(flags) = fields.tx_modifiable {
        added.push(Pair::new(GLOBAL_TX_MODIFIABLE, vec![flags]));
    }
    added.push(Pair::new(GLOBAL_VERSION, 2u32.to_le_bytes().to_vec()));
    merge(&mut global, added, MapName::Global)?;

    let mut out = MAGIC.to_vec();
    write_map(&global, &mut out);
    for ((txin, required), index) in tx.input.iter().zip(&fields.required_lock_times).zip(0..) {
        let map = MapName::Input(index);
        let mut pairs = read_map(&mut cur, map).map_err(malformed)?;
        let mut added = vec![
            Pair::new(
                IN_PREVIOUS_TXID,
                txin.previous_output.txid.to_byte_array().to_vec(),
            ),
            Pair::new(
                IN_OUTPUT_INDEX,
                txin.previous_output.vout.to_le_bytes().to_vec(),
            ),
        ];
        if txin.sequence != Sequence::MAX {
            added.push(Pair::new(
                IN_SEQUENCE,
                txin.sequence.0.to_le_bytes().to_vec(),
            ));
        }
        if let Some(time) = required.time {
            added.push(Pair::new(
                IN_REQUIRED_TIME_LOCKTIME,
                time.to_le_bytes().to_vec(),
            ));
        }
        if let Some(height) = required.height {
            added.push(Pair::new(
                IN_REQUIRED_HEIGHT_LOCKTIME,
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
                OUT_AMOUNT,
                (txout.value.to_sat() as i64).to_le_bytes().to_vec(),
            ),
            Pair::new(OUT_SCRIPT, txout.script_pubkey.to_bytes()),
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
            GLOBAL_TX_VERSION,
            GLOBAL_FALLBACK_LOCKTIME,
            GLOBAL_INPUT_COUNT,
            GLOBAL_OUTPUT_COUNT,
            GLOBAL_TX_MODIFIABLE,
            GLOBAL_VERSION,
        ],
        MapName::Input(_) => &[
            IN_PREVIOUS_TXID,
            IN_OUTPUT_INDEX,
            IN_SEQUENCE,
            IN_REQUIRED_TIME_LOCKTIME,
            IN_REQUIRED_HEIGHT_LOCKTIME,
        ],
        MapName::Output(_) => &[OUT_AMOUNT, OUT_SCRIPT],
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

    fn pair(key_type: u8, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Pair::new(key_type, value.to_vec()).write(&mut out);
        out
    }

    #[test]
    fn versions_parse_and_display() {
        assert_eq!("0".parse::<PsbtVersion>().ok(), Some(PsbtVersion::V0));
        assert_eq!("2".parse::<PsbtVersion>().ok(), Some(PsbtVersion::V2));
        assert!("1".parse::<PsbtVersion>().is_err());
        assert_eq!(PsbtVersion::V2.to_string(), "2");
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert!(matches!(
            VersionedPsbt::deserialize(b"not a psbt"),
            Err(PsbtDecodeError::Magic)
        ));
        // A global map that claims a huge key length.
        let mut bytes = MAGIC.to_vec();
        bytes.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(matches!(
            VersionedPsbt::deserialize(&bytes),
            Err(PsbtDecodeError::Truncated(MapName::Global))
        ));
    }

    #[test]
    fn a_lying_input_count_is_refused_before_allocating() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(pair(GLOBAL_VERSION, &2u32.to_le_bytes()));
        bytes.extend(pair(GLOBAL_TX_VERSION, &2i32.to_le_bytes()));
        bytes.extend(pair(
            GLOBAL_INPUT_COUNT,
            &encode::serialize(&VarInt(u64::MAX >> 4)),
        ));
        bytes.extend(pair(GLOBAL_OUTPUT_COUNT, &encode::serialize(&VarInt(0))));
        bytes.push(0);
        let err = VersionedPsbt::deserialize(&bytes);
        assert!(
            matches!(
                err,
                Err(PsbtDecodeError::Invalid {
                    map: MapName::Global,
                    field: "PSBT_GLOBAL_INPUT_COUNT"
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn other_versions_and_v2_without_its_fields_are_refused() {
        let mut v1 = MAGIC.to_vec();
        v1.extend(pair(GLOBAL_VERSION, &1u32.to_le_bytes()));
        v1.push(0);
        assert!(matches!(
            VersionedPsbt::deserialize(&v1),
            Err(PsbtDecodeError::UnsupportedVersion(1))
        ));
        let mut v2 = MAGIC.to_vec();
        v2.extend(pair(GLOBAL_VERSION, &2u32.to_le_bytes()));
        v2.push(0);
        assert!(matches!(
            VersionedPsbt::deserialize(&v2),
            Err(PsbtDecodeError::Missing {
                map: MapName::Global,
                field: "PSBT_GLOBAL_TX_VERSION"
            })
        ));
    }

    #[test]
    fn a_transaction_without_inputs_survives_the_round_trip() {
        // Found by the fuzz target: Transaction's encoding of an input-less transaction uses
        // the segwit marker, which a PSBT's unsigned transaction must not.
        let tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: Vec::new(),
            output: Vec::new(),
        };
        let psbt = Psbt::from_unsigned_tx(tx).map_err(|e| e.to_string());
        let Ok(psbt) = psbt else {
            panic!("{psbt:?}");
        };
        let v2 = VersionedPsbt::new(psbt.clone(), PsbtVersion::V2);
        let bytes = v2.serialize().map_err(|e| e.to_string());
        let back = bytes.and_then(|b| VersionedPsbt::deserialize(&b).map_err(|e| e.to_string()));
        assert_eq!(back.map(VersionedPsbt::into_psbt), Ok(psbt));
    }

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
