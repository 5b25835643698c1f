//! The certified record of a key generation: the transcript hash every participant computes
//! over the context and every round-1 broadcast, the certificate each signer makes with its
//! identity key over (transcript, group key, chain code) — "CertEq", as in ChillDKG — and the
//! public record ([`CertifiedKeygen`]) that the coordinator and every signer keep, so that
//! anyone can re-check it offline and derive the wallet's addresses from it.
//!
//! Why no honest signer stores a share of a key generation others disagree with: it needs a
//! valid certificate from every roster member over its own transcript.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bitcoin::hashes::{sha256t_hash_newtype, Hash, HashEngine};
use bitcoin::Address;
use serde::{Deserialize, Serialize};

use super::{by_identifier, ContextError, DkgContext};
use crate::frost::pedersen::{
    group_from_broadcasts, transcript_hash, DkgError, Round1Broadcast, TranscriptHash,
};
use crate::identity::{IdentityKey, IdentityPublic};
use crate::keys::WalletPath;
use crate::keys::{GroupKey, GroupPublic, WalletFingerprint};
use crate::recovery::{RecoveryError, RecoveryPolicy, WalletScripts};

sha256t_hash_newtype! {
    struct CertificateTag = hash_str("ckm/dkg-certificate/v1");
    #[hash_newtype(forward)]
    struct CertificateDigest(_);
}

/// Signing domain of certificates (see [`IdentityKey::sign`]).
const CERTIFICATE_DOMAIN: &str = "dkg-certificate";

/// A 32-byte transcript hash (hex in JSON).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Transcript(#[serde(with = "hex::serde")] pub TranscriptHash);

impl fmt::Debug for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Transcript({})", hex::encode(self.0))
    }
}

/// A signer's certificate of a key generation's result: a BIP-340 signature by its identity
/// key over (transcript hash, group key, chain code). Hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate(#[serde(with = "hex::serde")] pub [u8; 64]);

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Certificate({}…)", hex::encode(&self.0[..8]))
    }
}

fn certificate_message(transcript: &TranscriptHash, group: &GroupPublic) -> [u8; 32] {
    let mut e = CertificateDigest::engine();
    e.input(transcript);
    e.input(&GroupKey::of(group).to_bytes());
    e.input(&group.chain_code());
    CertificateDigest::from_engine(e).to_byte_array()
}

pub(super) fn certify(
    key: &IdentityKey,
    transcript: &TranscriptHash,
    group: &GroupPublic,
) -> Certificate {
    Certificate(key.sign(CERTIFICATE_DOMAIN, &certificate_message(transcript, group)))
}

pub(super) fn check_certificate(
    identity: &IdentityPublic,
    certificate: &Certificate,
    transcript: &TranscriptHash,
    group: &GroupPublic,
) -> bool {
    identity
        .verify(
            CERTIFICATE_DOMAIN,
            &certificate_message(transcript, group),
            &certificate.0,
        )
        .is_ok()
}

/// A certified key generation: the context, every round-1 broadcast and every certificate.
/// Public; kept by the coordinator and by every signer, and re-checkable offline with
/// [`CertifiedKeygen::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedKeygen {
    /// What the participants agreed on.
    pub context: DkgContext,
    /// Every round-1 broadcast by roster index.
    pub round1: BTreeMap<u16, Round1Broadcast>,
    /// Every participant's certificate by roster index.
    pub certificates: BTreeMap<u16, Certificate>,
}

/// Why a [`CertifiedKeygen`] does not check out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The context itself is malformed.
    #[error("the key generation context is invalid")]
    Context(#[from] ContextError),
    /// Round-1 broadcasts missing or extra.
    #[error("the record holds round-1 broadcasts of {got:?}, expected participants 1..={n}")]
    Broadcasts {
        /// Indexes present.
        got: Vec<u16>,
        /// `n`.
        n: u16,
    },
    /// The transcript cannot be computed or the group not derived.
    #[error("cannot recompute the key generation from its record")]
    Recompute(#[source] DkgError),
    /// The group the broadcasts define is not the wallet's.
    #[error("the round-1 commitments define another group key or chain code than the wallet's")]
    GroupMismatch,
    /// A certificate is missing.
    #[error("the certificate of participant {index} ({identity}) is missing")]
    MissingCertificate {
        /// Roster index.
        index: u16,
        /// Its identity key.
        identity: IdentityPublic,
    },
    /// A certificate does not verify.
    #[error("the certificate of participant {index} ({identity}) does not verify")]
    BadCertificate {
        /// Roster index.
        index: u16,
        /// Its identity key.
        identity: IdentityPublic,
    },
    /// A certificate from someone not in the roster.
    #[error("a certificate is attached for index {0}, which is not in the roster")]
    ExtraCertificate(u16),
}

impl CertifiedKeygen {
    /// The transcript hash: the context and every round-1 broadcast.
    ///
    /// # Errors
    /// Broadcasts that do not serialize or carry invalid indexes.
    pub fn transcript(&self) -> Result<TranscriptHash, VerifyError> {
        let broadcasts = by_identifier(&self.round1).map_err(VerifyError::Recompute)?;
        transcript_hash(&self.context.hash(), &self.context.params, &broadcasts)
            .map_err(VerifyError::Recompute)
    }

    /// The wallet fingerprint (first 8 bytes of the transcript hash).
    ///
    /// # Errors
    /// See [`CertifiedKeygen::transcript`].
    pub fn fingerprint(&self) -> Result<WalletFingerprint, VerifyError> {
        Ok(WalletFingerprint::of_transcript(&self.transcript()?))
    }

    /// Re-checks everything: the context, the transcript, that the round-1 commitments define
    /// exactly `group` (key and chain code), and every member's certificate. Returns the
    /// wallet fingerprint.
    ///
    /// # Errors
    /// [`VerifyError`] naming the first problem.
    pub fn verify(&self, group: &GroupPublic) -> Result<WalletFingerprint, VerifyError> {
        self.context.check()?;
        let n = self.context.params.signers();
        let expected: BTreeSet<u16> = (1..=n).collect();
        let got: BTreeSet<u16> = self.round1.keys().copied().collect();
        if got != expected {
            return Err(VerifyError::Broadcasts {
                got: got.into_iter().collect(),
                n,
            });
        }
        let transcript = self.transcript()?;
        let broadcasts = by_identifier(&self.round1).map_err(VerifyError::Recompute)?;
        let derived = group_from_broadcasts(&broadcasts).map_err(VerifyError::Recompute)?;
        if &derived != group || derived.threshold() != self.context.params.threshold() {
            return Err(VerifyError::GroupMismatch);
        }
        for index in self.certificates.keys() {
            if self.context.roster.get(*index).is_none() {
                return Err(VerifyError::ExtraCertificate(*index));
            }
        }
        for member in self.context.roster.entries() {
            let certificate =
                self.certificates
                    .get(&member.index)
                    .ok_or(VerifyError::MissingCertificate {
                        index: member.index,
                        identity: member.identity,
                    })?;
            if !check_certificate(&member.identity, certificate, &transcript, group) {
                return Err(VerifyError::BadCertificate {
                    index: member.index,
                    identity: member.identity,
                });
            }
        }
        Ok(WalletFingerprint::of_transcript(&transcript))
    }

    /// The certified recovery policy, after [`CertifiedKeygen::verify`] against `group` (a
    /// signer passes the group of its own sealed share, so an edited public record cannot
    /// change the policy it enforces). `None` for a wallet without a recovery path.
    ///
    /// # Errors
    /// [`VerifyError`] when the record does not check out.
    pub fn verified_recovery(
        &self,
        group: &GroupPublic,
    ) -> Result<Option<&RecoveryPolicy>, VerifyError> {
        self.verify_wallet_key(group)?;
        Ok(self.context.recovery.as_ref())
    }

    /// Re-checks the record on its own (the group its round-1 commitments define, every
    /// certificate) and that `group` has that group key and chain code — what every address
    /// derives from. Unlike [`CertifiedKeygen::verify`] it accepts the group of a later epoch
    /// (a refresh or repair changes the verifying shares, never the key or the chain code).
    ///
    /// # Errors
    /// [`VerifyError`]; [`VerifyError::GroupMismatch`] for another key or chain code.
    pub fn verify_wallet_key(&self, group: &GroupPublic) -> Result<WalletFingerprint, VerifyError> {
        let broadcasts = by_identifier(&self.round1).map_err(VerifyError::Recompute)?;
        let genesis = group_from_broadcasts(&broadcasts).map_err(VerifyError::Recompute)?;
        let fingerprint = self.verify(&genesis)?;
        if GroupKey::of(&genesis) != GroupKey::of(group)
            || genesis.chain_code() != group.chain_code()
        {
            return Err(VerifyError::GroupMismatch);
        }
        Ok(fingerprint)
    }
}

/// Why [`CertifiedKeygen::address`] could not derive an address.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertifiedAddressError {
    /// The record does not check out against the group.
    #[error("the certified key generation does not check out")]
    Record(#[from] VerifyError),
    /// The script cannot be derived.
    #[error(transparent)]
    Script(#[from] RecoveryError),
    /// Not a Taproot output (cannot happen for the wallet's descriptors).
    #[error("the wallet's script is not an address")]
    NotAnAddress,
}

impl CertifiedKeygen {
    /// The wallet's address at `path`, derived from this record alone: the record is verified
    /// against `group` (a signer passes the group of its own sealed share), and the address
    /// commits to the record's certified recovery path, if any. What a signer operator shows
    /// to compare with the coordinator's address.
    ///
    /// # Errors
    /// [`CertifiedAddressError`].
    pub fn address(
        &self,
        group: &GroupPublic,
        path: &WalletPath,
    ) -> Result<Address, CertifiedAddressError> {
        let recovery = self.verified_recovery(group)?;
        let network = self.context.network;
        let script = WalletScripts::new(group, network, recovery)?.at(path)?;
        script
            .address(network)
            .map_err(|_| CertifiedAddressError::NotAnAddress)
    }
}
