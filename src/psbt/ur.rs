//! PSBTs as Uniform Resources (Blockchain Commons BCR-2020-005/006) for air-gapped transfer:
//! `ur:psbt/…` for a PSBT that fits one QR code, and fountain-coded multipart URs
//! (`ur:psbt/1-5/…`, `ur:psbt/2-5/…`, …) for larger ones, which a camera can read in any order
//! and with gaps. The payload is the CBOR byte string of the binary PSBT (either version).
//!
//! Encoding and fountain codes come from the `bc-ur` crate; this module adds the PSBT type,
//! size limits checked before the decoder allocates anything, and errors that say what to do.

use bc_ur::prelude::{MultipartDecoder, MultipartEncoder, CBOR, UR};

/// The UR type of a PSBT (BCR-2020-006).
pub const UR_TYPE: &str = "psbt";
/// The legacy UR type some wallets still write; read, never written.
pub const LEGACY_UR_TYPE: &str = "crypto-psbt";
/// Default bytes of PSBT per fragment: a QR code of about version 15 (77 × 77 modules) that
/// phone cameras read from a terminal or screen.
pub const DEFAULT_FRAGMENT_LEN: usize = 200;
/// The largest PSBT accepted through UR.
pub const MAX_PSBT_LEN: usize = 16 * 1024 * 1024;
/// The most fragments a multipart UR may announce.
pub const MAX_FRAGMENTS: u64 = 100_000;

/// Why URs could not be read or written as a PSBT.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UrError {
    /// Not text of the form `ur:TYPE/…`.
    #[error("line {line}: not a UR (expected 'ur:psbt/…'): {reason}")]
    Malformed {
        /// 1-based line (or part) number.
        line: usize,
        /// What the UR decoder said.
        reason: String,
    },
    /// A UR of another type.
    #[error("line {line}: a 'ur:{found}' is not a PSBT (expected 'ur:psbt/…')")]
    WrongType {
        /// 1-based line number.
        line: usize,
        /// The type found.
        found: String,
    },
    /// A fragment announces a size beyond the limits.
    #[error("line {line}: the multipart UR announces {what}, more than ckm accepts")]
    TooLarge {
        /// 1-based line number.
        line: usize,
        /// What was too large.
        what: String,
    },
    /// Single-part and multipart URs, or parts of different messages, mixed.
    #[error("line {line}: this UR does not belong with the previous ones ({reason})")]
    Mixed {
        /// 1-based line number.
        line: usize,
        /// Why.
        reason: String,
    },
    /// Not enough fragments to rebuild the PSBT.
    #[error("the multipart UR is incomplete: {received} distinct fragments read, the message has {total}; scan more frames")]
    Incomplete {
        /// Distinct fragments received.
        received: usize,
        /// Fragments in the message.
        total: u64,
    },
    /// No UR at all.
    #[error("no UR found")]
    Empty,
    /// The payload is not a CBOR byte string.
    #[error("the UR payload is not a CBOR byte string holding a PSBT")]
    Payload,
    /// The encoder refused (e.g. a zero fragment length).
    #[error("cannot encode the UR: {0}")]
    Encode(String),
}

/// Encodes a binary PSBT as one `ur:psbt/…` string (lower case).
///
/// # Errors
/// Only if the encoder fails (never for a PSBT below [`MAX_PSBT_LEN`]).
pub fn encode_single(psbt: &[u8]) -> Result<String, UrError> {
    Ok(psbt_ur(psbt)?.string())
}

/// Encodes a binary PSBT as URs of at most `fragment_len` PSBT bytes each: one single-part UR
/// when it fits, else the `n` fountain fragments `ur:psbt/1-n/…` … `ur:psbt/n-n/…` (enough to
/// rebuild it when all are read), followed by `extra` further fountain parts that each mix
/// several fragments, so a reader that missed some frames still completes.
///
/// # Errors
/// A zero `fragment_len` or an encoder failure.
pub fn encode_parts(
    psbt: &[u8],
    fragment_len: usize,
    extra: usize,
) -> Result<Vec<String>, UrError> {
    if fragment_len == 0 {
        return Err(UrError::Encode(
            "the fragment length must be positive".into(),
        ));
    }
    let ur = psbt_ur(psbt)?;
    let cbor_len = CBOR::to_byte_string(psbt).to_cbor_data().len();
    if cbor_len <= fragment_len {
        return Ok(vec![ur.string()]);
    }
    let mut encoder =
        MultipartEncoder::new(&ur, fragment_len).map_err(|e| UrError::Encode(e.to_string()))?;
    let total = encoder.parts_count() + extra;
    (0..total)
        .map(|_| {
            encoder
                .next_part()
                .map_err(|e| UrError::Encode(e.to_string()))
        })
        .collect()
}

fn psbt_ur(psbt: &[u8]) -> Result<UR, UrError> {
    if psbt.len() > MAX_PSBT_LEN {
        return Err(UrError::Encode(format!(
            "the PSBT has {} bytes, more than {MAX_PSBT_LEN}",
            psbt.len()
        )));
    }
    UR::new(UR_TYPE, CBOR::to_byte_string(psbt)).map_err(|e| UrError::Encode(e.to_string()))
}

/// Does this text look like URs (its first non-blank line starts with `ur:`, any case)?
pub fn looks_like_ur(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .is_some_and(|l| l.len() >= 3 && l[..3].eq_ignore_ascii_case("ur:"))
}

/// Rebuilds a binary PSBT from URs: one single-part `ur:psbt/…` (or `ur:crypto-psbt/…`), or
/// multipart fragments in any order, with repeats, one per item. Case is ignored (QR codes
/// carry upper case); blank items and `#` comments are skipped.
///
/// # Errors
/// Malformed or foreign URs, mixed messages, announced sizes beyond the limits, too few
/// fragments, or a payload that is not a byte string.
pub fn decode<'a>(parts: impl IntoIterator<Item = &'a str>) -> Result<Vec<u8>, UrError> {
    let mut single: Option<Vec<u8>> = None;
    let mut multi: Option<(MultipartDecoder, Header)> = None;
    let mut received = std::collections::BTreeSet::new();
    for (i, raw) in parts.into_iter().enumerate() {
        let line = i + 1;
        let text = raw.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let text = text.to_ascii_lowercase();
        let malformed = |reason: String| UrError::Malformed { line, reason };
        let body = text
            .strip_prefix("ur:")
            .ok_or_else(|| malformed("it does not start with 'ur:'".into()))?;
        let (ur_type, rest) = body
            .split_once('/')
            .ok_or_else(|| malformed("no '/' after the type".into()))?;
        if ur_type != UR_TYPE && ur_type != LEGACY_UR_TYPE {
            return Err(UrError::WrongType {
                line,
                found: ur_type.to_string(),
            });
        }
        // The bc-ur decoders only know the type they were given: read as `psbt`.
        let text = format!("ur:{UR_TYPE}/{rest}");
        if rest.contains('/') {
            if single.is_some() {
                return Err(UrError::Mixed {
                    line,
                    reason: "a fragment after a single-part UR".into(),
                });
            }
            let header = Header::read(rest, line)?;
            let (decoder, first) =
                multi.get_or_insert_with(|| (MultipartDecoder::new(), header.clone()));
            if !first.same_message(&header) {
                return Err(UrError::Mixed {
                    line,
                    reason: "a fragment of another message".into(),
                });
            }
            decoder.receive(&text).map_err(|e| UrError::Mixed {
                line,
                reason: e.to_string(),
            })?;
            received.insert(header.seq_num);
        } else {
            if multi.is_some() || single.is_some() {
                return Err(UrError::Mixed {
                    line,
                    reason: "more than one single-part UR, or one among fragments".into(),
                });
            }
            let ur = UR::from_ur_string(text).map_err(|e| malformed(e.to_string()))?;
            single = Some(payload(ur.cbor())?);
        }
    }
    if let Some(bytes) = single {
        return Ok(bytes);
    }
    match multi {
        None => Err(UrError::Empty),
        Some((decoder, header)) => {
            let done = decoder
                .message()
                .ok()
                .flatten()
                .filter(|_| decoder.is_complete());
            match done {
                Some(ur) => payload(ur.cbor()),
                None => Err(UrError::Incomplete {
                    received: received.len(),
                    total: header.seq_len,
                }),
            }
        }
    }
}

fn payload(cbor: CBOR) -> Result<Vec<u8>, UrError> {
    cbor.try_into_byte_string().map_err(|_| UrError::Payload)
}

/// The header of a fountain part (`[seqNum, seqLen, messageLen, checksum, data]`), read and
/// bounded before the fountain decoder sees it: the decoder sizes its tables from these
/// numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    seq_num: u64,
    seq_len: u64,
    message_len: u64,
    checksum: u64,
    fragment_len: usize,
}

impl Header {
    fn read(rest: &str, line: usize) -> Result<Header, UrError> {
        let malformed = |reason: &str| UrError::Malformed {
            line,
            reason: reason.to_string(),
        };
        let (_, words) = rest
            .rsplit_once('/')
            .ok_or_else(|| malformed("no fragment payload"))?;
        let bytes = bc_ur::bytewords::decode(words, bc_ur::bytewords::Style::Minimal)
            .map_err(|e| malformed(&e.to_string()))?;
        let cbor = CBOR::try_from_data(bytes).map_err(|e| malformed(&e.to_string()))?;
        let items = cbor
            .try_into_array()
            .map_err(|_| malformed("the fragment is not a CBOR array"))?;
        let [seq_num, seq_len, message_len, checksum, data] = <[CBOR; 5]>::try_from(items)
            .map_err(|_| malformed("the fragment does not have 5 fields"))?;
        let int =
            |c: CBOR| u64::try_from(c).map_err(|_| malformed("a fragment field is not an integer"));
        let header = Header {
            seq_num: int(seq_num)?,
            seq_len: int(seq_len)?,
            message_len: int(message_len)?,
            checksum: int(checksum)?,
            fragment_len: data
                .try_into_byte_string()
                .map_err(|_| malformed("the fragment data is not a byte string"))?
                .len(),
        };
        let too_large = |what: String| UrError::TooLarge { line, what };
        if header.seq_len == 0 || header.seq_num == 0 || header.fragment_len == 0 {
            return Err(malformed("an empty fragment"));
        }
        if header.seq_len > MAX_FRAGMENTS {
            return Err(too_large(format!("{} fragments", header.seq_len)));
        }
        // The CBOR byte-string header adds at most 9 bytes to the PSBT.
        if header.message_len > (MAX_PSBT_LEN + 9) as u64 {
            return Err(too_large(format!("a {}-byte message", header.message_len)));
        }
        let capacity = header.seq_len.saturating_mul(header.fragment_len as u64);
        if capacity < header.message_len
            || capacity > header.message_len + header.fragment_len as u64
        {
            return Err(malformed(
                "its fragment count, fragment length and message length disagree",
            ));
        }
        Ok(header)
    }

    fn same_message(&self, other: &Header) -> bool {
        self.seq_len == other.seq_len
            && self.message_len == other.message_len
            && self.checksum == other.checksum
            && self.fragment_len == other.fragment_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        let mut bytes = b"psbt\xff".to_vec();
        bytes.extend((0..len).map(|i| (i * 7 % 251) as u8));
        bytes
    }

    #[test]
    fn single_part_round_trip() -> Result<(), UrError> {
        let psbt = sample(100);
        let ur = encode_single(&psbt)?;
        assert!(ur.starts_with("ur:psbt/"));
        assert_eq!(decode([ur.as_str()])?, psbt);
        assert_eq!(decode([ur.to_uppercase().as_str()])?, psbt);
        Ok(())
    }

    #[test]
    fn multipart_round_trip_in_any_order_and_with_losses() -> Result<(), UrError> {
        let psbt = sample(5_000);
        let parts = encode_parts(&psbt, 200, 20)?;
        assert!(parts.len() > 20);
        assert!(parts.iter().all(|p| p.starts_with("ur:psbt/")));
        // Every fragment, reversed.
        let n = parts.len() - 20;
        let mut reversed: Vec<&str> = parts[..n].iter().map(String::as_str).collect();
        reversed.reverse();
        assert_eq!(decode(reversed)?, psbt);
        // Two fragments lost, recovered from the mixed parts.
        let lossy: Vec<&str> = parts
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 7)
            .map(|(_, p)| p.as_str())
            .collect();
        assert_eq!(decode(lossy)?, psbt);
        Ok(())
    }

    #[test]
    fn incomplete_and_garbage_are_explained() -> Result<(), UrError> {
        let psbt = sample(2_000);
        let parts = encode_parts(&psbt, 200, 0)?;
        let some: Vec<&str> = parts[..3].iter().map(String::as_str).collect();
        assert!(matches!(
            decode(some),
            Err(UrError::Incomplete { received: 3, .. })
        ));
        assert!(matches!(
            decode(["ur:psbt/lpadaxcsencylobemohsgmoyadhdeynteelblrcygldwvarflojtcywyjy"]),
            Err(UrError::Malformed { line: 1, .. } | UrError::Mixed { line: 1, .. })
        ));
        assert!(matches!(
            decode(["hello"]),
            Err(UrError::Malformed { line: 1, .. })
        ));
        assert!(matches!(
            decode(["ur:bytes/hdcxdwinvezm"]),
            Err(UrError::WrongType { line: 1, .. })
        ));
        assert!(matches!(
            decode(["ur:psbt/zzzz"]),
            Err(UrError::Malformed { .. })
        ));
        assert!(matches!(decode(Vec::<&str>::new()), Err(UrError::Empty)));
        Ok(())
    }

    #[test]
    fn fragments_of_two_messages_do_not_mix() -> Result<(), UrError> {
        let a = encode_parts(&sample(1_000), 200, 0)?;
        let b = encode_parts(&sample(1_001), 200, 0)?;
        assert!(matches!(
            decode([a[0].as_str(), b[1].as_str()]),
            Err(UrError::Mixed { line: 2, .. })
        ));
        Ok(())
    }
}
