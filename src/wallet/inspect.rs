//! A PSBT as this wallet sees it (`psbt inspect`, the console's PSBT page) and the check,
//! before any signer is contacted, that it carries what the signers need (`psbt sign`).

use bdk_wallet::KeychainKind;
use bitcoin::OutPoint;

use super::CkmWallet;
use crate::psbt::inspect::{inspect, Inspection, Keychain, Owner};
use crate::psbt::VersionedPsbt;

/// Why a PSBT cannot go to the signers as it is (PSBTs made by other tools often lack these
/// before an updater has filled them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotSignable {
    /// An input carries no UTXO for the signers to check.
    #[error("input {index} ({outpoint}) carries no UTXO (witness_utxo) for the signers to check")]
    MissingUtxo {
        /// The input.
        index: usize,
        /// The coin it spends.
        outpoint: OutPoint,
    },
    /// An input of the wallet's carries no Taproot key origin.
    #[error(
        "input {index} is the wallet's ({keychain:?} #{address_index}) but carries no Taproot \
         key origin (tap_internal_key, tap_key_origins)"
    )]
    MissingKeyOrigin {
        /// The input.
        index: usize,
        /// Its keychain.
        keychain: Keychain,
        /// Its address index.
        address_index: u32,
    },
}

impl CkmWallet {
    /// What `psbt` does for this wallet (its scripts recognised through bdk's index too).
    pub fn inspect_psbt(&self, psbt: &VersionedPsbt) -> Inspection {
        let meta = self.meta();
        inspect(
            psbt.psbt(),
            psbt.version(),
            &meta.group,
            meta.network,
            |script| {
                self.bdk()
                    .derivation_of_spk(script.to_owned())
                    .map(|(k, i)| match k {
                        KeychainKind::External => (0, i),
                        KeychainKind::Internal => (1, i),
                    })
            },
        )
    }

    /// Checks that every input of `psbt` carries its UTXO, and every input of the wallet's its
    /// key origin: what the signers need to check it.
    ///
    /// # Errors
    /// The first input short of either.
    pub fn check_signable(&self, psbt: &VersionedPsbt) -> Result<(), NotSignable> {
        for input in self.inspect_psbt(psbt).inputs {
            if input.amount_sats.is_none() {
                return Err(NotSignable::MissingUtxo {
                    index: input.index,
                    outpoint: input.previous_output,
                });
            }
            if let Owner::Ours {
                keychain,
                index,
                key_origin: false,
            } = input.owner
            {
                return Err(NotSignable::MissingKeyOrigin {
                    index: input.index,
                    keychain,
                    address_index: index,
                });
            }
        }
        Ok(())
    }
}
