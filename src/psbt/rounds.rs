//! The co-signer's two FROST rounds over all inputs of a PSBT. Round 1 checks the PSBT and
//! commits one nonce pair per input; round 2 consumes those nonces (they cannot be used twice:
//! [`SignerNonces::sign`] takes `self`) after re-checking the PSBT and every signing package.

use std::fmt;

use bitcoin::hashes::Hash;
use bitcoin::{Psbt, Txid};
use frost::round1::{SigningCommitments, SigningNonces};
use frost::round2::SignatureShare;
use frost::SigningPackage;
use frost_secp256k1_tr as frost;
use rand::{CryptoRng, RngCore};

use super::check::{check_psbt_with, CheckError, CheckedPsbt};
use crate::frost::shares::{KeyError, KeyShare};
use crate::recovery::RecoveryPolicy;

/// Why a co-signer refused to commit or sign.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The PSBT failed the co-signer's checks.
    #[error(transparent)]
    Check(#[from] CheckError),
    /// Round 2 is for another transaction than round 1.
    #[error("round 2 is for transaction {got}, but the nonces were committed for {expected}")]
    TransactionChanged {
        /// Txid committed in round 1.
        expected: Txid,
        /// Txid in round 2.
        got: Txid,
    },
    /// Not one signing package per input.
    #[error("expected {expected} signing packages (one per input), got {got}")]
    PackageCount {
        /// Inputs.
        expected: usize,
        /// Packages.
        got: usize,
    },
    /// The coordinator asked to sign something else than the sighash we computed.
    #[error("input {input}: the message to sign is not the sighash this signer computed")]
    SighashMismatch {
        /// Input index.
        input: usize,
    },
    /// Our commitment in the signing package is not the one we sent.
    #[error("input {input}: the signing package does not carry this signer's commitment")]
    CommitmentMismatch {
        /// Input index.
        input: usize,
    },
    /// Fewer commitments than the threshold.
    #[error("input {input}: {have} signers committed, the group needs {need}")]
    TooFewSigners {
        /// Input index.
        input: usize,
        /// Commitments in the package.
        have: usize,
        /// Threshold.
        need: u16,
    },
    /// Key derivation failed.
    #[error("input {input}: cannot derive the signing key")]
    Derive {
        /// Input index.
        input: usize,
        /// The cause.
        #[source]
        source: KeyError,
    },
    /// frost refused to sign.
    #[error("input {input}: frost refused to sign")]
    Frost {
        /// Input index.
        input: usize,
        /// The cause.
        #[source]
        source: frost::Error,
    },
}

/// The signing package of every input of `checked`: each signer's commitment for that input
/// (lists in input order; a shorter list leaves the signer out of later inputs) and the
/// input's sighash.
pub fn signing_packages(
    checked: &CheckedPsbt,
    commitments: &std::collections::BTreeMap<frost::Identifier, Vec<SigningCommitments>>,
) -> Vec<SigningPackage> {
    checked
        .inputs()
        .iter()
        .enumerate()
        .map(|(k, input)| {
            let per_input: std::collections::BTreeMap<frost::Identifier, SigningCommitments> =
                commitments
                    .iter()
                    .filter_map(|(id, list)| list.get(k).map(|c| (*id, *c)))
                    .collect();
            SigningPackage::new(per_input, input.sighash.as_byte_array())
        })
        .collect()
}

/// One signer's nonces for one signing session: one pair per input, in memory only. Not
/// `Clone`, not serializable; consumed by [`SignerNonces::sign`] and zeroized on drop.
pub struct SignerNonces {
    txid: Txid,
    /// The wallet (group key) of round 1.
    group_key: bitcoin::secp256k1::PublicKey,
    /// What round 1 checked: round 2 signs exactly these inputs and sighashes.
    checked: CheckedPsbt,
    nonces: Vec<SigningNonces>,
    commitments: Vec<SigningCommitments>,
}

impl fmt::Debug for SignerNonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignerNonces")
            .field("txid", &self.txid)
            .field("inputs", &self.nonces.len())
            .field("nonces", &"<redacted>")
            .finish()
    }
}

/// Round 1: checks the PSBT and commits a fresh nonce pair for each input.
///
/// # Errors
/// [`SignError::Check`] when the PSBT is not one this signer will sign.
pub fn commit<R: RngCore + CryptoRng>(
    psbt: &Psbt,
    share: &KeyShare,
    rng: &mut R,
) -> Result<(SignerNonces, Vec<SigningCommitments>, CheckedPsbt), SignError> {
    commit_with(psbt, share, None, rng)
}

/// Round 1 for a wallet with a certified recovery path (`recovery`; `None` is [`commit`]):
/// every input's merkle root, and every change output, must be the certified policy's at its
/// own derivation index (see [`super::check::check_psbt_with`]).
///
/// # Errors
/// [`SignError::Check`] when the PSBT is not one this signer will sign.
pub fn commit_with<R: RngCore + CryptoRng>(
    psbt: &Psbt,
    share: &KeyShare,
    recovery: Option<&RecoveryPolicy>,
    rng: &mut R,
) -> Result<(SignerNonces, Vec<SigningCommitments>, CheckedPsbt), SignError> {
    let checked = check_psbt_with(psbt, share.group(), recovery)?;
    let (nonces, commitments): (Vec<_>, Vec<_>) = checked
        .inputs()
        .iter()
        .map(|_| frost::round1::commit(share.root_signing_share(), rng))
        .unzip();
    Ok((
        SignerNonces::new(&checked, share, nonces, commitments.clone()),
        commitments,
        checked,
    ))
}

/// A nonce pair generated in advance (preprocessing): its commitments are handed out before
/// any PSBT exists; the pair signs one input of one later session. In memory only; not
/// `Clone`; moved into [`SignerNonces::preprocessed`], which consumes it.
pub struct PreprocessedNonce {
    nonces: SigningNonces,
    commitments: SigningCommitments,
}

impl fmt::Debug for PreprocessedNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PreprocessedNonce(<redacted>)")
    }
}

impl PreprocessedNonce {
    /// A fresh nonce pair (hedged with the share, as frost does for round 1).
    pub fn generate<R: RngCore + CryptoRng>(share: &KeyShare, rng: &mut R) -> Self {
        let (nonces, commitments) = frost::round1::commit(share.root_signing_share(), rng);
        PreprocessedNonce {
            nonces,
            commitments,
        }
    }

    /// Its public commitments.
    pub fn commitments(&self) -> &SigningCommitments {
        &self.commitments
    }
}

impl SignerNonces {
    fn new(
        checked: &CheckedPsbt,
        share: &KeyShare,
        nonces: Vec<SigningNonces>,
        commitments: Vec<SigningCommitments>,
    ) -> Self {
        SignerNonces {
            txid: checked.txid(),
            group_key: share.group().group_key(),
            checked: checked.clone(),
            nonces,
            commitments,
        }
    }

    /// One-round signing: checks the PSBT (as round 1 would, against the wallet's certified
    /// recovery policy if it has one) and takes one preprocessed
    /// nonce pair per input, in input order. The nonces are consumed whatever happens next.
    ///
    /// # Errors
    /// The PSBT is refused, or not one nonce per input.
    pub fn preprocessed(
        psbt: &Psbt,
        share: &KeyShare,
        recovery: Option<&RecoveryPolicy>,
        nonces: Vec<PreprocessedNonce>,
    ) -> Result<(Self, CheckedPsbt), SignError> {
        let checked = check_psbt_with(psbt, share.group(), recovery)?;
        let nonces = Self::preprocessed_checked(&checked, share, nonces)?;
        Ok((nonces, checked))
    }

    /// [`SignerNonces::preprocessed`] for a PSBT this signer already checked with this
    /// wallet's share and recovery policy (`checked`, e.g. kept from an earlier session of
    /// the same signing). The nonces are consumed whatever happens next.
    ///
    /// # Errors
    /// Not one nonce per input, or `checked` is of another wallet.
    pub fn preprocessed_checked(
        checked: &CheckedPsbt,
        share: &KeyShare,
        nonces: Vec<PreprocessedNonce>,
    ) -> Result<Self, SignError> {
        if checked.group_key() != share.group().group_key() {
            return Err(SignError::Check(CheckError::NotOurs {
                input: 0,
                reason: "the PSBT was checked for another wallet",
            }));
        }
        if nonces.len() != checked.inputs().len() {
            return Err(SignError::PackageCount {
                expected: checked.inputs().len(),
                got: nonces.len(),
            });
        }
        let (nonces, commitments) = nonces
            .into_iter()
            .map(|n| (n.nonces, n.commitments))
            .unzip();
        Ok(SignerNonces::new(checked, share, nonces, commitments))
    }

    /// The transaction these nonces were committed for.
    pub fn txid(&self) -> Txid {
        self.txid
    }

    /// Round 2: checks that `psbt` is the transaction of round 1, checks each signing
    /// package (message = the sighash this signer computed in round 1, our commitment, at
    /// least threshold signers) and signs every input with the Taproot tweak of its merkle
    /// root. Everything signed comes from round 1's own check of the PSBT, so nothing in
    /// `psbt` beyond its transaction is trusted again. The nonces are consumed whatever the
    /// outcome.
    ///
    /// # Errors
    /// Any failed check; no share is returned unless every input passed.
    pub fn sign(
        self,
        psbt: &Psbt,
        share: &KeyShare,
        packages: &[SigningPackage],
    ) -> Result<Vec<SignatureShare>, SignError> {
        let txid = psbt.unsigned_tx.compute_txid();
        if txid != self.txid {
            return Err(SignError::TransactionChanged {
                expected: self.txid,
                got: txid,
            });
        }
        if share.group().group_key() != self.group_key {
            return Err(SignError::Check(CheckError::NotOurs {
                input: 0,
                reason: "round 2 uses another wallet's share than round 1",
            }));
        }
        let checked = &self.checked;
        if packages.len() != checked.inputs().len() || self.nonces.len() != checked.inputs().len() {
            return Err(SignError::PackageCount {
                expected: checked.inputs().len(),
                got: packages.len(),
            });
        }
        let me = share.identifier();
        let threshold = share.group().threshold();
        for ((input, package), commitment) in
            checked.inputs().iter().zip(packages).zip(&self.commitments)
        {
            let index = input.index;
            if package.message().as_slice() != input.sighash.as_byte_array().as_slice() {
                return Err(SignError::SighashMismatch { input: index });
            }
            if package.signing_commitments().get(&me) != Some(commitment) {
                return Err(SignError::CommitmentMismatch { input: index });
            }
            let have = package.signing_commitments().len();
            if have < usize::from(threshold) {
                return Err(SignError::TooFewSigners {
                    input: index,
                    have,
                    need: threshold,
                });
            }
        }
        // Inputs are independent: large PSBTs are signed on two threads.
        let mut shares = Vec::with_capacity(checked.inputs().len());
        for part in super::in_halves(checked.inputs().len(), |range| {
            self.sign_range(share, packages, range)
        }) {
            shares.extend(part?);
        }
        Ok(shares)
    }

    /// The shares of the inputs in `range`, in order (checks done by [`SignerNonces::sign`]).
    fn sign_range(
        &self,
        share: &KeyShare,
        packages: &[SigningPackage],
        range: std::ops::Range<usize>,
    ) -> Result<Vec<SignatureShare>, SignError> {
        let inputs = self.checked.inputs();
        let mut shares = Vec::with_capacity(range.len());
        for k in range {
            let (Some(input), Some(package), Some(nonces)) =
                (inputs.get(k), packages.get(k), self.nonces.get(k))
            else {
                return Err(SignError::PackageCount {
                    expected: inputs.len(),
                    got: packages.len(),
                });
            };
            // The child key package already tweaked for the input's Taproot output: frost's
            // plain `sign` on it is `sign_with_tweak` on the derived package.
            let key_package =
                share
                    .spend_key_package(&input.spend)
                    .map_err(|source| SignError::Derive {
                        input: input.index,
                        source,
                    })?;
            let signature_share =
                frost::round2::sign(package, nonces, &key_package).map_err(|source| {
                    SignError::Frost {
                        input: input.index,
                        source,
                    }
                })?;
            shares.push(signature_share);
        }
        Ok(shares)
    }
}
