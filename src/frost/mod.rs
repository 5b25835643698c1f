//! FROST on secp256k1 for Taproot: key shares and their HD derivation ([`keys`]) and the
//! distributed key generation ([`dkg`]).
//!
//! Built on `frost-secp256k1-tr`; everything here is pure (inputs and an RNG in, values out).

pub mod dkg;
pub mod keys;

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
