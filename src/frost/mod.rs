//! FROST on secp256k1 for Taproot: key shares and their HD derivation ([`shares`]) and the
//! uncertified Pedersen distributed key generation of FROST ([`pedersen`]; the certified protocol
//! built on it is [`crate::protocol::dkg`]).
//!
//! Built on `frost-secp256k1-tr`; everything here is pure (inputs and an RNG in, values out).
//! The bottom floor: it imports nothing of ckm but the crate root.

pub mod pedersen;
pub mod shares;

pub use frost_secp256k1_tr::Identifier;

/// The participant identifier of the `index`-th (1-based) member of a roster.
///
/// # Errors
/// Fails for index 0.
pub fn identifier(index: u16) -> Result<Identifier, frost_secp256k1_tr::Error> {
    Identifier::try_from(index)
}

/// The 1-based roster index of a participant identifier created by [`identifier`], if any.
pub fn identifier_index(id: &Identifier, max: u16) -> Option<u16> {
    (1..=max).find(|i| identifier(*i).map(|x| &x == id).unwrap_or(false))
}

/// The compressed encodings of every commitment's hiding and binding points, `hiding ‖
/// binding` (66 bytes) per commitment, in order — the bytes frost's `serialize` gives each
/// point, computed with one field inversion for all of them (k256's batch normalization)
/// instead of one per point: a signing request of 100 inputs 3-of-5 carries 600 points.
/// `None` when a point is the identity (which frost refuses to encode; deserialized and
/// generated commitments never are).
pub fn compressed_commitments(
    commitments: &[frost_secp256k1_tr::round1::SigningCommitments],
) -> Option<Vec<[u8; 66]>> {
    use k256::elliptic_curve::group::Group as _;
    use k256::elliptic_curve::sec1::ToEncodedPoint as _;
    use k256::elliptic_curve::BatchNormalize as _;
    let points: Vec<k256::ProjectivePoint> = commitments
        .iter()
        .flat_map(|c| [c.hiding().value(), c.binding().value()])
        .collect();
    if points.iter().any(|p| bool::from(p.is_identity())) {
        return None;
    }
    let affine = k256::ProjectivePoint::batch_normalize(points.as_slice());
    affine
        .chunks_exact(2)
        .map(|pair| {
            let [hiding, binding] = pair else { return None };
            let mut bytes = [0u8; 66];
            let (h, b) = bytes.split_at_mut(33);
            h.copy_from_slice(hiding.to_encoded_point(true).as_bytes());
            b.copy_from_slice(binding.to_encoded_point(true).as_bytes());
            Some(bytes)
        })
        .collect()
}
