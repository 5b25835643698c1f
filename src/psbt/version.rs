//! PSBT versions 0 (BIP-0174) and 2 (BIP-0370), converted at the edges: the public face of
//! [`super::codec`] and [`super::convert`].
//!
//! Everything inside ckm — the signer's checks, the FROST rounds, finalization, the wallet —
//! works on one model, [`bitcoin::Psbt`] (version 0). A version-2 PSBT is converted to it when
//! it enters ([`VersionedPsbt::deserialize`]) and back when it leaves
//! ([`VersionedPsbt::serialize`]), so one check path serves both versions and a PSBT is written
//! back in the version it came in.
//!
//! The conversion ([`from_v2`], [`to_v2`]) works on the raw key-value maps: only the fields in
//! which the two versions differ are moved, and every other pair is carried over byte for byte,
//! so fields ckm does not know survive both ways. What only version 2 can express (the fallback
//! lock time, the modifiable flags, the inputs' required lock times) is remembered in
//! [`V2Fields`] and written back.
//!
//! rust-bitcoin's `psbt-v2` crate (0.3) is used in the tests as an independent oracle but not
//! here: it has no conversion to or from `bitcoin::Psbt`, and its decoder trusts the input count
//! of the PSBT to pre-allocate memory, which a signer reading PSBTs from the network cannot
//! afford (see `docs/interop.md`).

use bitcoin::base64::prelude::{Engine as _, BASE64_STANDARD};
use bitcoin::Psbt;

pub use super::codec::{check_v0, peek_version, MapName, PsbtDecodeError, PsbtVersion};
use super::consts::{TX_MODIFIABLE_INPUTS, TX_MODIFIABLE_OUTPUTS};
pub use super::convert::{from_v2, to_v2, PsbtEncodeError, RequiredLockTime, V2Fields};

/// A PSBT as ckm works on it ([`bitcoin::Psbt`]) with the version it came in (and, for
/// version 2, what only that version carries), so it can be written back the same way.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionedPsbt {
    psbt: Psbt,
    version: PsbtVersion,
    v2: Option<V2Fields>,
}

/// The form a PSBT file or upload came in ([`VersionedPsbt::from_file_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsbtFileForm {
    /// Binary (BIP-0174's file format, `psbt\xff…`).
    Binary,
    /// Base64 text (line breaks allowed).
    Base64,
    /// Uniform Resources, one `ur:psbt/…` per line.
    Ur,
}

/// Why the bytes of a PSBT file are not a PSBT.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PsbtFileError {
    /// It starts like a binary PSBT but is not a valid one.
    #[error("not a valid binary PSBT")]
    Binary(#[source] PsbtDecodeError),
    /// Its URs do not decode.
    #[error("its URs cannot be read as a PSBT")]
    Ur(#[source] super::ur::UrError),
    /// Its URs decode to something that is not a valid PSBT.
    #[error("its UR does not hold a valid PSBT")]
    UrPsbt(#[source] PsbtDecodeError),
    /// Text that is not a valid base64 PSBT.
    #[error("not a valid PSBT (binary, base64 or UR)")]
    Base64(#[source] PsbtDecodeError),
    /// Neither binary nor text.
    #[error("not a PSBT (neither binary, base64 nor UR)")]
    NotText,
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
            PsbtVersion::V0 => {
                check_v0(bytes)?;
                Ok(VersionedPsbt {
                    psbt: Psbt::deserialize(bytes).map_err(PsbtDecodeError::Fields)?,
                    version: PsbtVersion::V0,
                    v2: None,
                })
            }
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

    /// Reads the bytes of a PSBT file in any form ckm writes: binary, base64 text (line
    /// breaks and surrounding blanks allowed) or URs; version 0 or 2 in each. The CLI's file
    /// reader and the console's upload both use it.
    ///
    /// # Errors
    /// [`PsbtFileError`], naming the form the bytes looked like.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<(Self, PsbtFileForm), PsbtFileError> {
        if bytes.starts_with(super::consts::PSBT_MAGIC_BYTES) {
            let psbt = Self::deserialize(bytes).map_err(PsbtFileError::Binary)?;
            return Ok((psbt, PsbtFileForm::Binary));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| PsbtFileError::NotText)?;
        if super::ur::looks_like_ur(text) {
            let raw = super::ur::decode(text.lines()).map_err(PsbtFileError::Ur)?;
            let psbt = Self::deserialize(&raw).map_err(PsbtFileError::UrPsbt)?;
            return Ok((psbt, PsbtFileForm::Ur));
        }
        let compact: String = text.split_whitespace().collect();
        let psbt = Self::from_base64(&compact).map_err(PsbtFileError::Base64)?;
        Ok((psbt, PsbtFileForm::Base64))
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
            *flags &= !(TX_MODIFIABLE_INPUTS | TX_MODIFIABLE_OUTPUTS);
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

#[cfg(test)]
mod tests {
    use bitcoin::absolute::LockTime;
    use bitcoin::consensus::encode::{self, VarInt};
    use bitcoin::transaction::Version;
    use bitcoin::Transaction;

    use super::super::codec::Pair;
    use super::super::consts::{
        PSBT_GLOBAL_INPUT_COUNT, PSBT_GLOBAL_OUTPUT_COUNT, PSBT_GLOBAL_TX_VERSION,
        PSBT_GLOBAL_VERSION, PSBT_MAGIC_BYTES,
    };
    use super::*;

    fn pair(key_type: u8, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Pair::new(key_type, value.to_vec()).write(&mut out);
        out
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert!(matches!(
            VersionedPsbt::deserialize(b"not a psbt"),
            Err(PsbtDecodeError::Magic)
        ));
        // A global map that claims a huge key length.
        let mut bytes = PSBT_MAGIC_BYTES.to_vec();
        bytes.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(matches!(
            VersionedPsbt::deserialize(&bytes),
            Err(PsbtDecodeError::Truncated(MapName::Global))
        ));
    }

    #[test]
    fn a_lying_input_count_is_refused_before_allocating() {
        let mut bytes = PSBT_MAGIC_BYTES.to_vec();
        bytes.extend(pair(PSBT_GLOBAL_VERSION, &2u32.to_le_bytes()));
        bytes.extend(pair(PSBT_GLOBAL_TX_VERSION, &2i32.to_le_bytes()));
        bytes.extend(pair(
            PSBT_GLOBAL_INPUT_COUNT,
            &encode::serialize(&VarInt(u64::MAX >> 4)),
        ));
        bytes.extend(pair(
            PSBT_GLOBAL_OUTPUT_COUNT,
            &encode::serialize(&VarInt(0)),
        ));
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
        let mut v1 = PSBT_MAGIC_BYTES.to_vec();
        v1.extend(pair(PSBT_GLOBAL_VERSION, &1u32.to_le_bytes()));
        v1.push(0);
        assert!(matches!(
            VersionedPsbt::deserialize(&v1),
            Err(PsbtDecodeError::UnsupportedVersion(1))
        ));
        let mut v2 = PSBT_MAGIC_BYTES.to_vec();
        v2.extend(pair(PSBT_GLOBAL_VERSION, &2u32.to_le_bytes()));
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
    fn a_file_is_read_in_each_form_and_garbage_is_named() {
        use bitcoin::{Amount, OutPoint, ScriptBuf, TxIn, TxOut};
        let tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                ..TxIn::default()
            }],
            output: vec![TxOut {
                value: Amount::from_sat(1000),
                script_pubkey: ScriptBuf::new(),
            }],
        };
        let Ok(psbt) = Psbt::from_unsigned_tx(tx) else {
            panic!("unsigned tx");
        };
        for version in [PsbtVersion::V0, PsbtVersion::V2] {
            let v = VersionedPsbt::new(psbt.clone(), version);
            let Ok(binary) = v.serialize() else {
                panic!("serialize");
            };
            let read = |bytes: &[u8]| {
                VersionedPsbt::from_file_bytes(bytes)
                    .map(|(p, form)| (p.version(), p.into_psbt(), form))
                    .map_err(|e| e.to_string())
            };
            assert_eq!(
                read(&binary),
                Ok((version, psbt.clone(), PsbtFileForm::Binary))
            );
            // Base64 wrapped at 20 columns, with blanks around it.
            let text = BASE64_STANDARD.encode(&binary);
            let wrapped: Vec<String> = text
                .as_bytes()
                .chunks(20)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            let file = format!("\n  {}\n\n", wrapped.join("\n"));
            assert_eq!(
                read(file.as_bytes()),
                Ok((version, psbt.clone(), PsbtFileForm::Base64))
            );
            let Ok(parts) = super::super::ur::encode_parts(&binary, 30, 0) else {
                panic!("ur");
            };
            assert!(parts.len() > 1, "several fragments");
            assert_eq!(
                read(parts.join("\n").as_bytes()),
                Ok((version, psbt.clone(), PsbtFileForm::Ur))
            );
        }
        assert!(matches!(
            VersionedPsbt::from_file_bytes(b"\xff\xfe not text"),
            Err(PsbtFileError::NotText)
        ));
        assert!(matches!(
            VersionedPsbt::from_file_bytes(b"cHNidP8 is not a whole psbt"),
            Err(PsbtFileError::Base64(_))
        ));
        assert!(matches!(
            VersionedPsbt::from_file_bytes(b"psbt\xff\x00"),
            Err(PsbtFileError::Binary(_))
        ));
    }
}
