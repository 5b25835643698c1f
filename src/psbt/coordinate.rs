//! The coordinator's side of co-signing: builds one signing package per input from the
//! signers' commitments, aggregates their shares with the Taproot tweak, verifies every
//! aggregated signature against the input's output key, and only then writes `tap_key_sig`s
//! and finalizes (with miniscript, which checks the signatures again).

use std::collections::{BTreeMap, BTreeSet};

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{schnorr, Message};
use bitcoin::{taproot, Psbt, Transaction};
use frost::round1::SigningCommitments;
use frost::round2::SignatureShare;
use frost::{Identifier, SigningPackage};
use frost_secp256k1_tr as frost;
use miniscript::psbt::PsbtExt;

use super::check::{check_psbt_with, CheckError, CheckedPsbt};
use crate::frost::keys::{roster_index, secp, GroupPublic, KeyError};
use crate::recovery::RecoveryPolicy;

/// Why co-signing could not complete at the coordinator. Signers are named by roster index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinateError {
    /// The PSBT failed the coordinator's own checks.
    #[error(transparent)]
    Check(#[from] CheckError),
    /// Fewer signers than the threshold.
    #[error("only {have} signer(s) available, the wallet needs {need}")]
    NotEnoughSigners {
        /// Signers taking part.
        have: usize,
        /// Threshold.
        need: u16,
    },
    /// A signer sent the wrong number of commitments or shares.
    #[error("signer {signer} sent {got} {what}, expected {expected} (one per input)")]
    WrongCount {
        /// Roster index of the signer.
        signer: u16,
        /// "commitments" or "signature shares".
        what: &'static str,
        /// Inputs.
        expected: usize,
        /// Received.
        got: usize,
    },
    /// The set of signers answering round 2 differs from round 1.
    #[error("round 2 answers do not come from the signers of round 1")]
    SignerSetChanged,
    /// Signature shares failed verification: these signers cheated or are broken.
    #[error("invalid signature share(s) from signer(s) {culprits:?}")]
    InvalidShares {
        /// Roster indexes of the culprits.
        culprits: Vec<u16>,
        /// Identifiers of the culprits.
        identifiers: Vec<Identifier>,
    },
    /// The aggregated signature does not verify under the input's output key.
    #[error("input {input}: the aggregated signature does not verify under its output key")]
    InvalidSignature {
        /// Input index.
        input: usize,
    },
    /// Key derivation failed.
    #[error("input {input}: cannot derive the group key")]
    Derive {
        /// Input index.
        input: usize,
        /// The cause.
        #[source]
        source: KeyError,
    },
    /// frost failed to aggregate.
    #[error("input {input}: frost could not aggregate")]
    Frost {
        /// Input index.
        input: usize,
        /// The cause.
        #[source]
        source: frost::Error,
    },
    /// Finalization failed.
    #[error("finalizing the PSBT failed: {0}")]
    Finalize(String),
}

/// A coordinator's signing session for one PSBT.
#[derive(Debug, Clone)]
pub struct SigningSession {
    checked: CheckedPsbt,
    group: GroupPublic,
}

impl SigningSession {
    /// Checks the PSBT as a signer would and computes its sighashes.
    ///
    /// # Errors
    /// [`CoordinateError::Check`] when the PSBT is not one of this wallet's.
    pub fn new(psbt: &Psbt, group: &GroupPublic) -> Result<Self, CoordinateError> {
        Self::with_recovery(psbt, group, None)
    }

    /// Like [`SigningSession::new`] for a wallet with a certified recovery path (see
    /// [`check_psbt_with`]).
    ///
    /// # Errors
    /// [`CoordinateError::Check`] when the PSBT is not one of this wallet's.
    pub fn with_recovery(
        psbt: &Psbt,
        group: &GroupPublic,
        recovery: Option<&RecoveryPolicy>,
    ) -> Result<Self, CoordinateError> {
        Ok(SigningSession {
            checked: check_psbt_with(psbt, group, recovery)?,
            group: group.clone(),
        })
    }

    /// The checked PSBT (fee, outputs, sighashes).
    pub fn checked(&self) -> &CheckedPsbt {
        &self.checked
    }

    /// One signing package per input from each signer's commitments (one per input).
    ///
    /// # Errors
    /// Fewer than threshold signers, or a signer with the wrong number of commitments.
    pub fn signing_packages(
        &self,
        commitments: &BTreeMap<Identifier, Vec<SigningCommitments>>,
    ) -> Result<Vec<SigningPackage>, CoordinateError> {
        let need = self.group.threshold();
        if commitments.len() < usize::from(need) {
            return Err(CoordinateError::NotEnoughSigners {
                have: commitments.len(),
                need,
            });
        }
        let inputs = self.checked.inputs().len();
        for (id, list) in commitments {
            if list.len() != inputs {
                return Err(CoordinateError::WrongCount {
                    signer: roster_index(id),
                    what: "commitments",
                    expected: inputs,
                    got: list.len(),
                });
            }
        }
        Ok(self
            .checked
            .inputs()
            .iter()
            .enumerate()
            .map(|(k, input)| {
                let per_input: BTreeMap<Identifier, SigningCommitments> = commitments
                    .iter()
                    .filter_map(|(id, list)| list.get(k).map(|c| (*id, *c)))
                    .collect();
                SigningPackage::new(per_input, input.sighash.as_byte_array())
            })
            .collect())
    }

    /// Verifies one signer's shares (one per input) on their own, before the session's
    /// other shares arrive: ROAST uses it to know whether a signer that answered may join
    /// the next session. `stop` is polled between inputs; `Ok(None)` when stopped.
    ///
    /// # Errors
    /// A package without the signer, a wrong count, or a derivation failure; an invalid
    /// share is `Ok(Some(false))`.
    pub fn verify_shares(
        &self,
        packages: &[SigningPackage],
        signer: Identifier,
        shares: &[SignatureShare],
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<bool>, CoordinateError> {
        use frost::keys::Tweak as _;
        let inputs = self.checked.inputs().len();
        if packages.len() != inputs {
            return Err(CoordinateError::SignerSetChanged);
        }
        if shares.len() != inputs {
            return Err(CoordinateError::WrongCount {
                signer: roster_index(&signer),
                what: "signature shares",
                expected: inputs,
                got: shares.len(),
            });
        }
        for ((input, package), share) in self.checked.inputs().iter().zip(packages).zip(shares) {
            if stop() {
                return Ok(None);
            }
            let signers: BTreeSet<Identifier> =
                package.signing_commitments().keys().copied().collect();
            if !signers.contains(&signer) {
                return Err(CoordinateError::SignerSetChanged);
            }
            let merkle_root = input
                .merkle_root
                .as_ref()
                .map(|r| r.as_byte_array().as_slice());
            let public_key_package = self
                .group
                .derive_public_key_package(&input.derivation, Some(&signers))
                .map_err(|source| CoordinateError::Derive {
                    input: input.index,
                    source,
                })?
                .tweak(merkle_root);
            let Some(verifying_share) = public_key_package.verifying_shares().get(&signer) else {
                return Err(CoordinateError::SignerSetChanged);
            };
            if frost_core::verify_signature_share(
                signer,
                verifying_share,
                share,
                package,
                public_key_package.verifying_key(),
            )
            .is_err()
            {
                return Ok(Some(false));
            }
        }
        Ok(Some(true))
    }

    /// Aggregates every input's shares and verifies each signature under the input's output
    /// key. Returns one Taproot signature per input; nothing is written anywhere.
    ///
    /// # Errors
    /// [`CoordinateError::InvalidShares`] naming every signer whose share failed on any input.
    pub fn aggregate(
        &self,
        packages: &[SigningPackage],
        shares: &BTreeMap<Identifier, Vec<SignatureShare>>,
    ) -> Result<Vec<taproot::Signature>, CoordinateError> {
        let inputs = self.checked.inputs().len();
        if packages.len() != inputs {
            return Err(CoordinateError::SignerSetChanged);
        }
        let signers: BTreeSet<Identifier> = shares.keys().copied().collect();
        for (id, list) in shares {
            if list.len() != inputs {
                return Err(CoordinateError::WrongCount {
                    signer: roster_index(id),
                    what: "signature shares",
                    expected: inputs,
                    got: list.len(),
                });
            }
        }
        let mut culprits: BTreeSet<Identifier> = BTreeSet::new();
        let mut signatures = Vec::with_capacity(inputs);
        for (k, (input, package)) in self.checked.inputs().iter().zip(packages).enumerate() {
            let committed: BTreeSet<Identifier> =
                package.signing_commitments().keys().copied().collect();
            if committed != signers {
                return Err(CoordinateError::SignerSetChanged);
            }
            let per_input: BTreeMap<Identifier, SignatureShare> = shares
                .iter()
                .filter_map(|(id, list)| list.get(k).map(|s| (*id, *s)))
                .collect();
            let derive_err = |source| CoordinateError::Derive {
                input: input.index,
                source,
            };
            let public_key_package = self
                .group
                .derive_public_key_package(&input.derivation, Some(&signers))
                .map_err(derive_err)?;
            let merkle_root = input
                .merkle_root
                .as_ref()
                .map(|r| r.as_byte_array().as_slice());
            match frost::aggregate_with_tweak(package, &per_input, &public_key_package, merkle_root)
            {
                Ok(signature) => {
                    let bytes = signature
                        .serialize()
                        .map_err(|source| CoordinateError::Frost {
                            input: input.index,
                            source,
                        })?;
                    let signature = schnorr::Signature::from_slice(&bytes)
                        .map_err(|_| CoordinateError::InvalidSignature { input: input.index })?;
                    let message = Message::from_digest(input.sighash.to_byte_array());
                    secp()
                        .verify_schnorr(&signature, &message, &input.output_key)
                        .map_err(|_| CoordinateError::InvalidSignature { input: input.index })?;
                    signatures.push(taproot::Signature {
                        signature,
                        sighash_type: input.sighash_type,
                    });
                }
                Err(frost::Error::InvalidSignatureShare { culprits: found }) => {
                    culprits.extend(found);
                }
                Err(source) => {
                    return Err(CoordinateError::Frost {
                        input: input.index,
                        source,
                    })
                }
            }
        }
        if !culprits.is_empty() {
            return Err(CoordinateError::InvalidShares {
                culprits: culprits.iter().map(roster_index).collect(),
                identifiers: culprits.into_iter().collect(),
            });
        }
        Ok(signatures)
    }

    /// Writes the verified signatures as `tap_key_sig` and finalizes every input with
    /// miniscript (which verifies them again). The PSBT is changed only if every input
    /// finalizes.
    ///
    /// # Errors
    /// Wrong number of signatures, or miniscript's finalizer refusing.
    pub fn finalize(
        &self,
        psbt: &mut Psbt,
        signatures: &[taproot::Signature],
    ) -> Result<Transaction, CoordinateError> {
        if signatures.len() != psbt.inputs.len() {
            return Err(CoordinateError::Finalize(format!(
                "{} signatures for {} inputs",
                signatures.len(),
                psbt.inputs.len()
            )));
        }
        let mut signed = psbt.clone();
        for (input, signature) in signed.inputs.iter_mut().zip(signatures) {
            input.tap_key_sig = Some(*signature);
        }
        signed.finalize_mut(secp()).map_err(|errors| {
            CoordinateError::Finalize(
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let tx = signed
            .clone()
            .extract_tx()
            .map_err(|e| CoordinateError::Finalize(e.to_string()))?;
        *psbt = signed;
        Ok(tx)
    }
}
