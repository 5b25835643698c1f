//! The coordinator's side of co-signing: builds one signing package per input from the
//! signers' commitments, aggregates their shares for the input's Taproot output key,
//! verifies every aggregated signature against that output key ([`VerifiedSignatures`]),
//! and only then writes the key-path witnesses.
//!
//! Each signature is verified exactly once, with libsecp256k1, against the output key the
//! input's `witness_utxo` pays (checked by [`check_psbt_with`]): the signature is put together
//! from frost's own binding factors and group commitment (frost-core's `internals`), which
//! skips frost's second verification in k256; only when that verification fails does
//! frost's aggregation with cheater detection run, to name the signers whose shares are
//! invalid. The witnesses are then written directly (a key-path spend is the signature
//! alone), without miniscript's finalizer, which would verify every signature again.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{schnorr, Message, PublicKey, Scalar, SecretKey};
use bitcoin::{taproot, Psbt, Transaction, Txid, Witness};
use frost::round1::SigningCommitments;
use frost::round2::SignatureShare;
use frost::{Identifier, SigningPackage};
use frost_core::{Ciphersuite as _, Field as _};
use frost_secp256k1_tr as frost;

use super::check::{check_psbt_with, CheckError, CheckedInput, CheckedPsbt};
use crate::frost::shares::{roster_index, secp, GroupPublic, KeyError};
use crate::recovery::RecoveryPolicy;

type Suite = frost::Secp256K1Sha256TR;

/// Signatures that [`SigningSession::aggregate`] verified, one per input, under each
/// input's output key. Only `aggregate` makes them; [`SigningSession::finalize`] takes them.
#[derive(Debug, Clone)]
pub struct VerifiedSignatures {
    txid: Txid,
    signatures: Vec<taproot::Signature>,
}

impl VerifiedSignatures {
    /// The transaction they sign.
    pub fn txid(&self) -> Txid {
        self.txid
    }
}

impl Deref for VerifiedSignatures {
    type Target = [taproot::Signature];
    fn deref(&self) -> &[taproot::Signature] {
        &self.signatures
    }
}

/// How aggregating one input failed.
enum InputFailure {
    /// These signers' shares are invalid.
    Culprits(Vec<Identifier>),
    /// Anything else.
    Error(CoordinateError),
}

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

/// What frost computes for one input of a signing session before it looks at any share —
/// the binding factors, the members' commitment shares `Rᵢ = Dᵢ + ρᵢ·Eᵢ`, the group
/// commitment `R = ΣRᵢ` and the challenge `c` under the even-Y output key — kept as what
/// the aggregation and the share checks need: `R`, and for each member the point its share
/// must be the discrete logarithm of.
struct InputPrecompute {
    group_commitment: frost_core::GroupCommitment<Suite>,
    members: BTreeMap<Identifier, MemberPrecompute>,
}

/// One member's part of an [`InputPrecompute`].
struct MemberPrecompute {
    /// `z·G` for the member's valid share `z`: the right-hand side of frost's share check
    /// (RFC 9591 `verify_signature_share`, as frost-secp256k1-tr adapts it to BIP-340),
    /// `R'ᵢ + (c·λᵢ)·Y'ᵢ` — `R'ᵢ` is `Rᵢ` negated when `R` has odd Y, `Y'ᵢ` the member's
    /// verifying share negated when the output key has odd Y, `λᵢ` its Lagrange coefficient
    /// in the session. A check is then one multiplication by the generator (libsecp256k1).
    expected: PublicKey,
}

/// One signing session's packages (one per input) and, once computed, what its share checks
/// and its aggregation have in common ([`SigningSession::precompute`]): computed once,
/// ideally while the requests travel, rather than again for each signer's check and for the
/// aggregation on the critical path.
pub struct SessionPackages {
    packages: Vec<SigningPackage>,
    precomputed: std::sync::OnceLock<Option<Vec<InputPrecompute>>>,
}

impl SessionPackages {
    /// Packages not precomputed yet.
    pub fn new(packages: Vec<SigningPackage>) -> Self {
        SessionPackages {
            packages,
            precomputed: std::sync::OnceLock::new(),
        }
    }

    /// Whether [`SigningSession::precompute`] completed, so that checks and the aggregation
    /// use it.
    pub fn is_precomputed(&self) -> bool {
        matches!(self.precomputed.get(), Some(Some(_)))
    }
}

impl Deref for SessionPackages {
    type Target = [SigningPackage];
    fn deref(&self) -> &[SigningPackage] {
        &self.packages
    }
}

impl std::fmt::Debug for SessionPackages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPackages")
            .field("inputs", &self.packages.len())
            .field("precomputed", &self.is_precomputed())
            .finish()
    }
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
        Ok(super::rounds::signing_packages(&self.checked, commitments))
    }

    /// Verifies one signer's shares (one per input) on their own, before the session's
    /// other shares arrive: ROAST uses it to know whether a signer that answered may join
    /// the next session. `stop` is polled between inputs; `Ok(None)` when stopped. Large
    /// PSBTs are checked on two threads (each stops at its first invalid share).
    ///
    /// # Errors
    /// A package without the signer, a wrong count, or a derivation failure; an invalid
    /// share is `Ok(Some(false))`.
    pub fn verify_shares(
        &self,
        packages: &SessionPackages,
        signer: Identifier,
        shares: &[SignatureShare],
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<bool>, CoordinateError> {
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
        let pre = self.precomputed(packages);
        // Large PSBTs on two threads; the first invalid share found stops the other half.
        let found_invalid = std::sync::atomic::AtomicBool::new(false);
        let halt = || stop() || found_invalid.load(std::sync::atomic::Ordering::Relaxed);
        let parts = super::in_halves(inputs, |range| {
            let verdict = self.verify_share_range(packages, pre, signer, shares, range, &halt);
            if !matches!(verdict, Ok(Some(true)) | Ok(None)) {
                found_invalid.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            verdict
        });
        let mut all_valid = true;
        for part in parts {
            match part {
                Err(e) => return Err(e),
                Ok(Some(false)) => return Ok(Some(false)),
                Ok(Some(true)) => {}
                Ok(None) => all_valid = false,
            }
        }
        Ok(all_valid.then_some(true))
    }

    #[allow(clippy::too_many_arguments)]
    fn verify_share_range(
        &self,
        packages: &[SigningPackage],
        pre: Option<&[InputPrecompute]>,
        signer: Identifier,
        shares: &[SignatureShare],
        range: std::ops::Range<usize>,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<bool>, CoordinateError> {
        let inputs = self.checked.inputs();
        for k in range {
            if stop() {
                return Ok(None);
            }
            let (Some(input), Some(package), Some(share)) =
                (inputs.get(k), packages.get(k), shares.get(k))
            else {
                return Err(CoordinateError::SignerSetChanged);
            };
            if !package.signing_commitments().contains_key(&signer) {
                return Err(CoordinateError::SignerSetChanged);
            }
            if let Some(pre) = pre.and_then(|p| p.get(k)) {
                let Some(member) = pre.members.get(&signer) else {
                    return Err(CoordinateError::SignerSetChanged);
                };
                // z·G against the precomputed right-hand side (which is never the point at
                // infinity, so a zero share is invalid).
                let valid = SecretKey::from_slice(&share.serialize())
                    .is_ok_and(|z| PublicKey::from_secret_key(secp(), &z) == member.expected);
                if !valid {
                    return Ok(Some(false));
                }
                continue;
            }
            let derive_err = |source| CoordinateError::Derive {
                input: input.index,
                source,
            };
            let verifying_share = self
                .group
                .spend_verifying_share(&input.spend, &signer)
                .map_err(derive_err)?;
            let verifying_key = input.spend.verifying_key().map_err(derive_err)?;
            if frost_core::verify_signature_share(
                signer,
                &verifying_share,
                share,
                package,
                &verifying_key,
            )
            .is_err()
            {
                return Ok(Some(false));
            }
        }
        Ok(Some(true))
    }

    /// Computes, once, what every share check and the aggregation of `packages` have in
    /// common (for every input the group commitment and, per member, the point its share
    /// must be the discrete logarithm of), on two threads for large PSBTs.
    /// Meant for spare CPU time while the session's requests travel: checks and the
    /// aggregation use it once it is complete and otherwise take frost's own path (so they
    /// never wait for it); so does a failure here, which that path reports.
    pub fn precompute(&self, packages: &SessionPackages) {
        packages.precomputed.get_or_init(|| {
            let inputs = self.checked.inputs();
            if packages.packages.len() != inputs.len() {
                return None;
            }
            let parts = super::in_halves(inputs.len(), |range| {
                range
                    .map(|k| {
                        let (input, package) = (inputs.get(k)?, packages.packages.get(k)?);
                        self.precompute_input(input, package)
                    })
                    .collect::<Option<Vec<_>>>()
            });
            parts
                .into_iter()
                .collect::<Option<Vec<Vec<_>>>>()
                .map(|p| p.into_iter().flatten().collect())
        });
    }

    /// The precomputation of `packages` if it is complete.
    fn precomputed<'a>(&self, packages: &'a SessionPackages) -> Option<&'a [InputPrecompute]> {
        packages.precomputed.get().and_then(|p| p.as_deref())
    }

    /// frost's `verify_signature_share` up to its last step, for every member at once, with
    /// the group commitment as the sum of the commitment shares (what frost's
    /// `compute_group_commitment` computes) and the last points in libsecp256k1. `None`
    /// sends checks and aggregation of the session to frost's own path.
    fn precompute_input(
        &self,
        input: &CheckedInput,
        package: &SigningPackage,
    ) -> Option<InputPrecompute> {
        use frost_core::Group as _;
        use k256::elliptic_curve::point::AffineCoordinates as _;
        use k256::elliptic_curve::sec1::ToEncodedPoint as _;
        let identity = <Suite as frost_core::Ciphersuite>::Group::identity();
        // frost's `pre_aggregate` for this ciphersuite lifts the key to even Y (negating every
        // verifying share with it); `pre_commitment_aggregate` is the identity.
        let verifying_key = input.spend.even_verifying_key().ok()?;
        let negate_shares = input.spend.output_key_is_odd();
        let binding_factors =
            frost_core::compute_binding_factor_list::<Suite>(package, &verifying_key, &[]).ok()?;
        let mut commitment_shares = Vec::new();
        let mut sum = identity;
        for (id, commitments) in package.signing_commitments() {
            // frost refuses identity commitments (and so leaves this to its own path).
            if commitments.hiding().value() == identity || commitments.binding().value() == identity
            {
                return None;
            }
            let r = commitments
                .to_group_commitment_share(binding_factors.get(id)?)
                .to_element();
            sum += r;
            commitment_shares.push((*id, r));
        }
        if sum == identity {
            return None;
        }
        let challenge = Suite::challenge(&sum, &verifying_key, package.message()).ok()?;
        let odd_commitment = bool::from(sum.to_affine().y_is_odd());
        let mut members = BTreeMap::new();
        for (id, r) in commitment_shares {
            let lambda = frost_core::derive_interpolating_value(&id, package).ok()?;
            let factor =
                Scalar::from_be_bytes((challenge.to_scalar() * lambda).to_bytes().into()).ok()?;
            let y = self.group.spend_share_point(&input.spend, &id).ok()?;
            let y = if negate_shares { y.negate(secp()) } else { y };
            let r = PublicKey::from_slice(r.to_affine().to_encoded_point(true).as_bytes()).ok()?;
            let r = if odd_commitment { r.negate(secp()) } else { r };
            let expected = y.mul_tweak(secp(), &factor).ok()?.combine(&r).ok()?;
            members.insert(id, MemberPrecompute { expected });
        }
        Some(InputPrecompute {
            group_commitment: frost_core::GroupCommitment::from_element(sum),
            members,
        })
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
    ) -> Result<VerifiedSignatures, CoordinateError> {
        self.aggregate_with(packages, None, shares)
    }

    /// [`SigningSession::aggregate`] of a session's packages, with their precomputation
    /// when it is complete ([`SigningSession::precompute`]).
    ///
    /// # Errors
    /// As [`SigningSession::aggregate`].
    pub fn aggregate_session(
        &self,
        packages: &SessionPackages,
        shares: &BTreeMap<Identifier, Vec<SignatureShare>>,
    ) -> Result<VerifiedSignatures, CoordinateError> {
        self.aggregate_with(packages, self.precomputed(packages), shares)
    }

    fn aggregate_with(
        &self,
        packages: &[SigningPackage],
        pre: Option<&[InputPrecompute]>,
        shares: &BTreeMap<Identifier, Vec<SignatureShare>>,
    ) -> Result<VerifiedSignatures, CoordinateError> {
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
        let need = self.group.threshold();
        if signers.len() < usize::from(need) {
            return Err(CoordinateError::NotEnoughSigners {
                have: signers.len(),
                need,
            });
        }
        if packages
            .iter()
            .any(|package| !package.signing_commitments().keys().eq(signers.iter()))
        {
            return Err(CoordinateError::SignerSetChanged);
        }
        // Inputs are independent: large PSBTs are aggregated on two threads.
        let parts = super::in_halves(inputs, |range| {
            self.aggregate_range(packages, pre, shares, &signers, range)
        });
        let mut culprits: BTreeSet<Identifier> = BTreeSet::new();
        let mut signatures = Vec::with_capacity(inputs);
        for (input, result) in self
            .checked
            .inputs()
            .iter()
            .zip(parts.into_iter().flatten())
        {
            match result {
                Ok(signature) => signatures.push(taproot::Signature {
                    signature,
                    sighash_type: input.sighash_type,
                }),
                Err(InputFailure::Culprits(found)) => culprits.extend(found),
                Err(InputFailure::Error(e)) => return Err(e),
            }
        }
        if !culprits.is_empty() {
            return Err(CoordinateError::InvalidShares {
                culprits: culprits.iter().map(roster_index).collect(),
                identifiers: culprits.into_iter().collect(),
            });
        }
        Ok(VerifiedSignatures {
            txid: self.checked.txid(),
            signatures,
        })
    }

    /// [`SigningSession::aggregate_input`] for the inputs in `range`, in order.
    fn aggregate_range(
        &self,
        packages: &[SigningPackage],
        pre: Option<&[InputPrecompute]>,
        shares: &BTreeMap<Identifier, Vec<SignatureShare>>,
        signers: &BTreeSet<Identifier>,
        range: std::ops::Range<usize>,
    ) -> Vec<Result<schnorr::Signature, InputFailure>> {
        let inputs = self.checked.inputs();
        range
            .map(|k| {
                let (Some(input), Some(package)) = (inputs.get(k), packages.get(k)) else {
                    return Err(InputFailure::Error(CoordinateError::SignerSetChanged));
                };
                let per_input: BTreeMap<Identifier, SignatureShare> = shares
                    .iter()
                    .filter_map(|(id, list)| list.get(k).map(|s| (*id, *s)))
                    .collect();
                let group_commitment = pre
                    .and_then(|p| p.get(k))
                    .map(|p| p.group_commitment.clone());
                self.aggregate_input(input, package, group_commitment, &per_input, signers)
            })
            .collect()
    }

    /// One input: the signature from frost's binding factors and group commitment and the
    /// sum of the shares, verified under the output key; on failure, frost's aggregation
    /// with cheater detection names the culprits.
    fn aggregate_input(
        &self,
        input: &CheckedInput,
        package: &SigningPackage,
        group_commitment: Option<frost_core::GroupCommitment<Suite>>,
        shares: &BTreeMap<Identifier, SignatureShare>,
        signers: &BTreeSet<Identifier>,
    ) -> Result<schnorr::Signature, InputFailure> {
        let frost_err = |source| {
            InputFailure::Error(CoordinateError::Frost {
                input: input.index,
                source,
            })
        };
        let derive_err = |source| {
            InputFailure::Error(CoordinateError::Derive {
                input: input.index,
                source,
            })
        };
        // What frost's `aggregate` computes before verifying (its `pre_aggregate` lifts the
        // verifying key to even Y; `pre_commitment_aggregate` is the identity for this
        // ciphersuite), unless the session's precomputation has it.
        let group_commitment = match group_commitment {
            Some(g) => g,
            None => {
                let verifying_key = input.spend.even_verifying_key().map_err(derive_err)?;
                let binding_factors =
                    frost_core::compute_binding_factor_list::<Suite>(package, &verifying_key, &[])
                        .map_err(frost_err)?;
                let prepared = Suite::pre_commitment_aggregate(package, &binding_factors)
                    .map_err(frost_err)?;
                frost_core::compute_group_commitment::<Suite>(&prepared, &binding_factors)
                    .map_err(frost_err)?
            }
        };
        let mut z = frost::Secp256K1ScalarField::zero();
        for share in shares.values() {
            let bytes: [u8; 32] = share.serialize().try_into().map_err(|_| {
                InputFailure::Error(CoordinateError::InvalidSignature { input: input.index })
            })?;
            z += frost::Secp256K1ScalarField::deserialize(&bytes)
                .map_err(|e| frost_err(e.into()))?;
        }
        let aggregated = frost::Signature::new(group_commitment.to_element(), z);
        let message = Message::from_digest(input.sighash.to_byte_array());
        let verified = aggregated
            .serialize()
            .ok()
            .and_then(|bytes| schnorr::Signature::from_slice(&bytes).ok())
            .filter(|signature| {
                secp()
                    .verify_schnorr(signature, &message, &input.output_key)
                    .is_ok()
            });
        if let Some(signature) = verified {
            return Ok(signature);
        }
        // Some share is invalid (or the signature is): let frost find whose.
        let public_key_package = self
            .group
            .spend_public_key_package(&input.spend, signers)
            .map_err(derive_err)?;
        match frost_core::aggregate_custom(
            package,
            shares,
            &public_key_package,
            frost_core::CheaterDetection::AllCheaters,
        ) {
            Err(frost::Error::InvalidSignatureShare { culprits }) => {
                Err(InputFailure::Culprits(culprits))
            }
            Err(source) => Err(frost_err(source)),
            Ok(_) => Err(InputFailure::Error(CoordinateError::InvalidSignature {
                input: input.index,
            })),
        }
    }

    /// Writes each verified signature as its input's key-path witness and clears the input's
    /// other fields (as a BIP-0174 finalizer does: only the UTXOs, the unknown and
    /// proprietary fields and the witness remain),
    /// then extracts the transaction. The PSBT is changed only if every input is finalized.
    ///
    /// # Errors
    /// The signatures are for another transaction, or not one per input.
    pub fn finalize(
        &self,
        psbt: &mut Psbt,
        signatures: &VerifiedSignatures,
    ) -> Result<Transaction, CoordinateError> {
        let txid = psbt.unsigned_tx.compute_txid();
        if txid != signatures.txid || txid != self.checked.txid() {
            return Err(CoordinateError::Finalize(format!(
                "the signatures are for transaction {}, the PSBT is {txid}",
                signatures.txid
            )));
        }
        if signatures.len() != psbt.inputs.len() {
            return Err(CoordinateError::Finalize(format!(
                "{} signatures for {} inputs",
                signatures.len(),
                psbt.inputs.len()
            )));
        }
        let mut signed = psbt.clone();
        for (input, signature) in signed.inputs.iter_mut().zip(signatures.iter()) {
            // BIP-0174's finalizer keeps the UTXOs and the unknown (and proprietary) fields.
            let original = std::mem::take(input);
            input.non_witness_utxo = original.non_witness_utxo;
            input.witness_utxo = original.witness_utxo;
            input.unknown = original.unknown;
            input.proprietary = original.proprietary;
            input.final_script_witness = Some(Witness::p2tr_key_spend(signature));
        }
        let tx = signed
            .clone()
            .extract_tx()
            .map_err(|e| CoordinateError::Finalize(e.to_string()))?;
        *psbt = signed;
        Ok(tx)
    }
}
