//! The PSBT key types and constants ckm's own codec reads and writes, named as BIP-0174 and
//! BIP-0370 spell them. Every other field is parsed by `bitcoin`'s PSBT decoder and carried
//! over byte for byte by the codec, so it has no name here.

/// BIP-0174: the magic bytes every PSBT starts with, `psbt` followed by 0xff.
pub const PSBT_MAGIC_BYTES: &[u8; 5] = b"psbt\xff";

/// BIP-0174: the separator that ends a map (a key of length 0), 0x00.
pub const PSBT_SEPARATOR: u8 = 0x00;

// ----------------------------------------------------------------------------- global map

/// BIP-0174: the unsigned transaction (version 0 only), 0x00.
pub const PSBT_GLOBAL_UNSIGNED_TX: u8 = 0x00;
/// BIP-0370: the transaction's version (version 2 only), 0x02.
pub const PSBT_GLOBAL_TX_VERSION: u8 = 0x02;
/// BIP-0370: the lock time when no input requires one (version 2 only), 0x03.
pub const PSBT_GLOBAL_FALLBACK_LOCKTIME: u8 = 0x03;
/// BIP-0370: the number of inputs (version 2 only), 0x04.
pub const PSBT_GLOBAL_INPUT_COUNT: u8 = 0x04;
/// BIP-0370: the number of outputs (version 2 only), 0x05.
pub const PSBT_GLOBAL_OUTPUT_COUNT: u8 = 0x05;
/// BIP-0370: the modifiable flags (version 2 only), 0x06.
pub const PSBT_GLOBAL_TX_MODIFIABLE: u8 = 0x06;
/// BIP-0174: the PSBT's version number (absent means 0), 0xfb.
pub const PSBT_GLOBAL_VERSION: u8 = 0xfb;

/// BIP-0370: bit 0 of PSBT_GLOBAL_TX_MODIFIABLE, inputs may be added or removed, 0x01.
pub const TX_MODIFIABLE_INPUTS: u8 = 0x01;
/// BIP-0370: bit 1 of PSBT_GLOBAL_TX_MODIFIABLE, outputs may be added or removed, 0x02.
pub const TX_MODIFIABLE_OUTPUTS: u8 = 0x02;

// ------------------------------------------------------------------------------ input maps

/// BIP-0370: the txid of the output this input spends (version 2 only), 0x0e.
pub const PSBT_IN_PREVIOUS_TXID: u8 = 0x0e;
/// BIP-0370: the index of the output this input spends (version 2 only), 0x0f.
pub const PSBT_IN_OUTPUT_INDEX: u8 = 0x0f;
/// BIP-0370: the input's sequence number (version 2 only; absent means 0xffffffff), 0x10.
pub const PSBT_IN_SEQUENCE: u8 = 0x10;
/// BIP-0370: the time-based lock time this input requires (version 2 only), 0x11.
pub const PSBT_IN_REQUIRED_TIME_LOCKTIME: u8 = 0x11;
/// BIP-0370: the height-based lock time this input requires (version 2 only), 0x12.
pub const PSBT_IN_REQUIRED_HEIGHT_LOCKTIME: u8 = 0x12;

// ----------------------------------------------------------------------------- output maps

/// BIP-0370: the output's amount in satoshis (version 2 only), 0x03.
pub const PSBT_OUT_AMOUNT: u8 = 0x03;
/// BIP-0370: the output's script (version 2 only), 0x04.
pub const PSBT_OUT_SCRIPT: u8 = 0x04;

// --------------------------------------------------------------------------------- values

/// Lock times at or above this are UNIX times, below it block heights (BIP-0065's
/// LOCKTIME_THRESHOLD, which BIP-0370's required lock times follow), 500000000.
pub const LOCKTIME_THRESHOLD: u32 = 500_000_000;
