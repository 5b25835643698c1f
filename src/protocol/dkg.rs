//! Certified distributed key generation, safe against a malicious coordinator.
//!
//! The coordinator proposes a [`DkgContext`]: protocol version, session, wallet name, network,
//! `t`, `n`, its own identity and the whole roster (index → identity key and TLS pin). A signer
//! takes part only when every *other* member of the roster is a peer its operator approved
//! (and the coordinator itself is not one of them); otherwise it refuses before round 1,
//! naming the identity, and keeps nothing.
//!
//! Every participant hashes the context into its transcript, together with every round-1
//! broadcast, and the round-2 packages are sealed end to end to the roster's identity keys
//! with the transcript as associated data. So a roster that differs between signers, or any
//! other difference in what they were shown, makes the packages unopenable and the
//! transcripts unequal. At the end each signer signs a certificate over (transcript, group
//! key, chain code) with its identity key; the coordinator relays all `n` certificates and
//! every signer verifies each one against its own roster before it stores its share
//! ("CertEq", as in ChillDKG). The coordinator and every signer keep the record
//! ([`CertifiedKeygen`]) so that anyone can re-check it offline.
//!
//! The context may carry the wallet's timelocked recovery policy
//! ([`crate::recovery::RecoveryPolicy`]); it is then hashed and certified like the rest, so
//! every signer knows the script tree each of the wallet's addresses commits to.
//!
//! Why a coordinator cannot learn the key: round-2 packages are only ever sealed to identity
//! keys an operator approved, bound to one transcript; the coordinator holds none of those
//! keys. Why no honest signer stores a share of a key-generation others disagree with: it
//! needs a valid certificate from every roster member over its own transcript.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bitcoin::hashes::{sha256t_hash_newtype, Hash, HashEngine};
use bitcoin::{Address, Network};
use frost::keys::dkg::round2;
use frost_secp256k1_tr as frost;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::SessionId;
use crate::frost::pedersen::{
    group_from_broadcasts, transcript_hash, DkgError, DkgParams, DkgRound1, DkgRound2,
    Round1Broadcast, TranscriptHash,
};
use crate::frost::{identifier, shares::roster_index};
use crate::identity::{IdentityError, IdentityKey, IdentityPublic, Sealed};
use crate::keys::WalletPath;
use crate::keys::{GroupKey, GroupPublic, KeyShare, Roster, WalletFingerprint};
use crate::recovery::{RecoveryError, RecoveryPolicy, WalletScripts};

/// The version of [`DkgContext`] without a recovery policy (what builds before the recovery
/// path wrote and accepted).
pub const CONTEXT_VERSION: u16 = 1;

/// The version of a [`DkgContext`] that carries a [`RecoveryPolicy`]: a signer built before
/// the recovery path refuses it by its version, before round 1, instead of failing later on a
/// transcript it cannot reproduce.
pub const CONTEXT_VERSION_RECOVERY: u16 = 2;

/// Longest wallet name, in bytes.
pub const MAX_WALLET_NAME: usize = 64;

sha256t_hash_newtype! {
    struct ContextTag = hash_str("ckm/dkg-context/v1");
    #[hash_newtype(forward)]
    struct ContextDigest(_);

    struct CertificateTag = hash_str("ckm/dkg-certificate/v1");
    #[hash_newtype(forward)]
    struct CertificateDigest(_);
}

/// Signing domain of certificates (see [`IdentityKey::sign`]).
const CERTIFICATE_DOMAIN: &str = "dkg-certificate";

/// Everything the participants of a key generation must agree on before round 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkgContext {
    /// Context version ([`CONTEXT_VERSION`]).
    pub version: u16,
    /// The key generation's session.
    pub session: SessionId,
    /// The wallet's name.
    pub wallet: String,
    /// The wallet's network.
    pub network: Network,
    /// `t`-of-`n`.
    pub params: DkgParams,
    /// The coordinator that runs the key generation (and to which the wallet is bound).
    pub coordinator: IdentityPublic,
    /// Every participant: index, identity key, TLS pin (URLs are not certified).
    pub roster: Roster,
    /// The wallet's timelocked recovery path, if it has one (then `version` is
    /// [`CONTEXT_VERSION_RECOVERY`]). Hashed only when present, so contexts without it hash as
    /// they always did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryPolicy>,
}

impl DkgContext {
    /// A context for a new key generation.
    ///
    /// # Errors
    /// [`CoordinatorError::Context`] when the parts do not fit together (see
    /// [`DkgContext::check`]).
    pub fn new(
        session: SessionId,
        wallet: &str,
        network: Network,
        params: DkgParams,
        coordinator: IdentityPublic,
        roster: Roster,
    ) -> Result<Self, CoordinatorError> {
        let context = DkgContext {
            version: CONTEXT_VERSION,
            session,
            wallet: wallet.to_string(),
            network,
            params,
            coordinator,
            roster,
            recovery: None,
        };
        context.check().map_err(CoordinatorError::Context)?;
        Ok(context)
    }

    /// The same context with a timelocked recovery path (version
    /// [`CONTEXT_VERSION_RECOVERY`]).
    ///
    /// # Errors
    /// [`CoordinatorError::Context`] when the policy's keys are for another network.
    pub fn with_recovery(mut self, policy: RecoveryPolicy) -> Result<Self, CoordinatorError> {
        self.version = CONTEXT_VERSION_RECOVERY;
        self.recovery = Some(policy);
        self.check().map_err(CoordinatorError::Context)?;
        Ok(self)
    }

    /// Checks what anyone can check without knowing who is asking: the version, the wallet
    /// name, the parameters against the roster, and that the coordinator is not a member.
    ///
    /// # Errors
    /// [`ContextError`] naming the problem.
    pub fn check(&self) -> Result<(), ContextError> {
        let expected = match self.recovery {
            None => CONTEXT_VERSION,
            Some(_) => CONTEXT_VERSION_RECOVERY,
        };
        if self.version != expected {
            return Err(ContextError::Version { got: self.version });
        }
        if let Some(policy) = &self.recovery {
            policy
                .check_network(self.network)
                .map_err(ContextError::Recovery)?;
        }
        check_wallet_name(&self.wallet)?;
        DkgParams::new(self.params.threshold(), self.params.signers())
            .map_err(|_| ContextError::Params)?;
        if self.roster.len() != self.params.signers() || !self.roster.is_contiguous() {
            return Err(ContextError::RosterSize {
                roster: self.roster.len(),
                signers: self.params.signers(),
            });
        }
        if self.roster.index_of(&self.coordinator).is_some() {
            return Err(ContextError::CoordinatorInRoster(self.coordinator));
        }
        Ok(())
    }

    /// The hash every participant binds its transcript to.
    pub fn hash(&self) -> [u8; 32] {
        let mut e = ContextDigest::engine();
        e.input(&self.version.to_be_bytes());
        e.input(&self.session.0);
        e.input(&(self.wallet.len() as u64).to_be_bytes());
        e.input(self.wallet.as_bytes());
        e.input(&self.network.magic().to_bytes());
        e.input(&self.params.threshold().to_be_bytes());
        e.input(&self.params.signers().to_be_bytes());
        e.input(&self.coordinator.to_bytes());
        for m in self.roster.entries() {
            e.input(&m.index.to_be_bytes());
            e.input(&m.identity.to_bytes());
            match &m.tls_sha256 {
                Some(pin) => {
                    e.input(&[1]);
                    e.input(&pin.0);
                }
                None => e.input(&[0]),
            }
        }
        // After the roster, whose length `check` ties to the hashed `n`: unambiguous.
        if let Some(policy) = &self.recovery {
            e.input(b"recovery");
            e.input(&policy.digest());
        }
        ContextDigest::from_engine(e).to_byte_array()
    }
}

/// Checks a wallet name: 1 to [`MAX_WALLET_NAME`] bytes, no control characters.
///
/// # Errors
/// [`ContextError::WalletName`].
pub fn check_wallet_name(name: &str) -> Result<(), ContextError> {
    if name.is_empty() || name.len() > MAX_WALLET_NAME || name.chars().any(char::is_control) {
        return Err(ContextError::WalletName);
    }
    Ok(())
}

/// Why a [`DkgContext`] is not acceptable on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// Another context version (or a version that does not match the presence of a recovery
    /// policy).
    #[error("unsupported DKG context version {got} (this build speaks {CONTEXT_VERSION}, and {CONTEXT_VERSION_RECOVERY} with a recovery policy)")]
    Version {
        /// The version received.
        got: u16,
    },
    /// The recovery policy does not fit the wallet.
    #[error("invalid recovery policy")]
    Recovery(#[source] RecoveryError),
    /// Bad wallet name.
    #[error("wallet names have 1 to {MAX_WALLET_NAME} bytes and no control characters")]
    WalletName,
    /// Bad `t`/`n`.
    #[error("invalid group parameters: need 2 <= threshold <= signers <= 255")]
    Params,
    /// Roster and parameters disagree.
    #[error(
        "the roster lists {roster} signers (indexes must be 1..=n) but the group has {signers}"
    )]
    RosterSize {
        /// Roster length.
        roster: u16,
        /// `n`.
        signers: u16,
    },
    /// The coordinator is a member.
    #[error("the coordinator {0} is itself listed in the roster")]
    CoordinatorInRoster(IdentityPublic),
}

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

fn certify(key: &IdentityKey, transcript: &TranscriptHash, group: &GroupPublic) -> Certificate {
    Certificate(key.sign(CERTIFICATE_DOMAIN, &certificate_message(transcript, group)))
}

fn check_certificate(
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

/// Associated data of a sealed round-2 package: the transcript (which covers the context,
/// hence the session, wallet, network, parameters and roster) and the two indexes.
pub fn round2_aad(transcript: &TranscriptHash, from: u16, to: u16) -> Vec<u8> {
    let mut aad = b"ckm/dkg-round2/v2".to_vec();
    aad.extend_from_slice(transcript);
    aad.extend_from_slice(&from.to_be_bytes());
    aad.extend_from_slice(&to.to_be_bytes());
    aad
}

fn by_identifier(
    broadcasts: &BTreeMap<u16, Round1Broadcast>,
) -> Result<BTreeMap<frost::Identifier, Round1Broadcast>, DkgError> {
    broadcasts
        .iter()
        .map(|(i, b)| {
            identifier(*i)
                .map(|id| (id, b.clone()))
                .map_err(|_| DkgError::WrongParticipants {
                    round: 1,
                    expected: broadcasts.len(),
                    got: 0,
                })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

/// Coordinator → signer: take part in this key generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Begin {
    /// What everyone must agree on.
    pub context: DkgContext,
}

/// Signer → coordinator: its round-1 broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round1Answer {
    /// The broadcast.
    pub broadcast: Round1Broadcast,
}

/// Coordinator → signer: every participant's round-1 broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round1Request {
    /// The session.
    pub session: SessionId,
    /// Broadcasts by roster index (the recipient's own included, unchanged).
    pub broadcasts: BTreeMap<u16, Round1Broadcast>,
}

/// Signer → coordinator: its transcript hash and its sealed round-2 packages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round2Answer {
    /// The sender's transcript hash.
    pub transcript: Transcript,
    /// Sealed packages by recipient index.
    pub sealed: BTreeMap<u16, Sealed>,
}

/// Coordinator → signer: the packages sealed to it and every transcript hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round2Request {
    /// The session.
    pub session: SessionId,
    /// Sealed packages by sender index.
    pub sealed: BTreeMap<u16, Sealed>,
    /// Transcript hashes by participant index.
    pub transcripts: BTreeMap<u16, Transcript>,
}

/// Signer → coordinator: the group it computed and its certificate (its share stays in
/// memory until [`ConfirmRequest`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certified {
    /// The group.
    pub group: GroupPublic,
    /// The signer's certificate.
    pub certificate: Certificate,
}

/// Coordinator → signer: every participant's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmRequest {
    /// The session.
    pub session: SessionId,
    /// Certificates by roster index.
    pub certificates: BTreeMap<u16, Certificate>,
}

/// Signer → coordinator: all certificates verified; the share is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The wallet fingerprint, for out-of-band comparison.
    pub fingerprint: WalletFingerprint,
}

// ---------------------------------------------------------------------------------------
// The record
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Participant (signer) half
// ---------------------------------------------------------------------------------------

/// Why a signer refuses or aborts a key generation. Participants are named by roster index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParticipantError {
    /// The context is malformed.
    #[error("invalid key generation request")]
    Context(#[from] ContextError),
    /// The authenticated requester is not the coordinator the context names.
    #[error("the request comes from coordinator {from} but the context names {named}")]
    CoordinatorMismatch {
        /// Who sent it.
        from: IdentityPublic,
        /// Who the context names.
        named: Box<IdentityPublic>,
    },
    /// This signer is not in the roster.
    #[error("this signer ({0}) is not in the roster")]
    NotInRoster(IdentityPublic),
    /// A member this signer's operator has not approved.
    #[error("roster member {index} ({identity}) is not an approved peer of this signer; if you trust its operator, approve it with `ckm signer peers add {identity}` or `ckm signer serve --allow-peer {identity}`")]
    UnapprovedPeer {
        /// Its roster index.
        index: u16,
        /// Its identity key.
        identity: IdentityPublic,
    },
    /// A message for another session.
    #[error("the message belongs to another session")]
    Session,
    /// A round-2 package could not be opened (sealed for another transcript or by another key).
    #[error("cannot open the round-2 package of participant {from}: it was sealed for another transcript or by another key")]
    Open {
        /// The sender's index.
        from: u16,
        /// The cause.
        #[source]
        source: IdentityError,
    },
    /// A round-2 package is missing or extra.
    #[error("expected sealed round-2 packages from participants {expected:?}, got {got:?}")]
    Packages {
        /// Senders expected.
        expected: Vec<u16>,
        /// Senders present.
        got: Vec<u16>,
    },
    /// A round-2 package does not decode.
    #[error("the round-2 package of participant {from} is malformed")]
    MalformedPackage {
        /// The sender.
        from: u16,
    },
    /// The FROST rounds failed (culprits named inside).
    #[error(transparent)]
    Dkg(#[from] DkgError),
    /// The certificates do not check out: nothing is stored.
    #[error("the certificates do not check out")]
    Certificates(#[from] VerifyError),
}

/// A signer that accepted a key generation and sent its round-1 broadcast.
pub struct Participant1 {
    context: DkgContext,
    index: u16,
    inner: DkgRound1,
}

impl fmt::Debug for Participant1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Participant1")
            .field("session", &self.context.session)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Participant1 {
    /// Accepts a key generation: `me` is this signer's identity, `from` the authenticated
    /// coordinator, `approved` tells whether an identity is an approved peer. Refuses (before
    /// any secret is drawn) a malformed context, a context naming another coordinator, a
    /// roster without this signer, or any unapproved member.
    ///
    /// # Errors
    /// [`ParticipantError`].
    pub fn begin<R: RngCore + CryptoRng>(
        request: Begin,
        me: &IdentityPublic,
        from: &IdentityPublic,
        approved: impl Fn(&IdentityPublic) -> bool,
        rng: &mut R,
    ) -> Result<(Self, Round1Answer), ParticipantError> {
        let context = request.context;
        context.check()?;
        if context.coordinator != *from {
            return Err(ParticipantError::CoordinatorMismatch {
                from: *from,
                named: Box::new(context.coordinator),
            });
        }
        let index = context
            .roster
            .index_of(me)
            .ok_or(ParticipantError::NotInRoster(*me))?;
        if let Some(m) = context
            .roster
            .entries()
            .iter()
            .find(|m| m.identity != *me && !approved(&m.identity))
        {
            return Err(ParticipantError::UnapprovedPeer {
                index: m.index,
                identity: m.identity,
            });
        }
        let id = identifier(index).map_err(|_| ParticipantError::NotInRoster(*me))?;
        let (inner, broadcast) = DkgRound1::start(id, context.params, context.hash(), rng)?;
        Ok((
            Participant1 {
                context,
                index,
                inner,
            },
            Round1Answer { broadcast },
        ))
    }

    /// The session.
    pub fn session(&self) -> SessionId {
        self.context.session
    }

    /// This signer's roster index.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Takes every participant's round-1 broadcast and seals this signer's round-2 packages
    /// to the other members' identity keys, bound to the transcript.
    ///
    /// # Errors
    /// Another session, a wrong participant set, an altered own broadcast, or a package frost
    /// rejects (culprit named).
    pub fn receive_round1<R: RngCore + CryptoRng>(
        self,
        request: Round1Request,
        key: &IdentityKey,
        rng: &mut R,
    ) -> Result<(Participant2, Round2Answer), ParticipantError> {
        if request.session != self.context.session {
            return Err(ParticipantError::Session);
        }
        let broadcasts = by_identifier(&request.broadcasts)?;
        let (inner, send) = self.inner.receive_round1(&broadcasts)?;
        let mut sealed = BTreeMap::new();
        for (to, package) in &send.packages {
            let to_index = roster_index(to);
            let recipient =
                self.context
                    .roster
                    .get(to_index)
                    .ok_or(DkgError::WrongParticipants {
                        round: 2,
                        expected: usize::from(self.context.params.signers()),
                        got: usize::from(to_index),
                    })?;
            let bytes = Zeroizing::new(package.serialize().map_err(|source| DkgError::Frost {
                culprit: None,
                source,
            })?);
            let aad = round2_aad(&send.transcript, self.index, to_index);
            sealed.insert(
                to_index,
                Sealed(key.seal(&recipient.identity, &aad, &bytes, rng)),
            );
        }
        let transcript = send.transcript;
        Ok((
            Participant2 {
                context: self.context,
                index: self.index,
                round1: request.broadcasts,
                inner,
            },
            Round2Answer {
                transcript: Transcript(transcript),
                sealed,
            },
        ))
    }
}

/// A signer after round 1 (holds its round-2 secret).
pub struct Participant2 {
    context: DkgContext,
    index: u16,
    round1: BTreeMap<u16, Round1Broadcast>,
    inner: DkgRound2,
}

impl fmt::Debug for Participant2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Participant2")
            .field("session", &self.context.session)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Participant2 {
    /// Opens the packages sealed to this signer, checks every transcript hash, finishes the
    /// FROST rounds and certifies the result. The share stays in memory.
    ///
    /// # Errors
    /// Another session, a transcript mismatch, an unopenable or invalid package (culprit
    /// named).
    pub fn receive_round2(
        self,
        request: Round2Request,
        key: &IdentityKey,
    ) -> Result<(Participant3, Certified), ParticipantError> {
        if request.session != self.context.session {
            return Err(ParticipantError::Session);
        }
        let mine = self.inner.transcript();
        let mut hashes = BTreeMap::new();
        for (i, t) in &request.transcripts {
            let id = identifier(*i).map_err(|_| DkgError::WrongParticipants {
                round: 2,
                expected: usize::from(self.context.params.signers()),
                got: request.transcripts.len(),
            })?;
            hashes.insert(id, t.0);
        }
        let expected: Vec<u16> = (1..=self.context.params.signers())
            .filter(|i| *i != self.index)
            .collect();
        let got: Vec<u16> = request.sealed.keys().copied().collect();
        if got != expected {
            return Err(ParticipantError::Packages { expected, got });
        }
        // Transcript agreement first: it names who saw other round-1 broadcasts.
        let culprits: Vec<u16> = request
            .transcripts
            .iter()
            .filter(|(_, t)| t.0 != mine)
            .map(|(i, _)| *i)
            .collect();
        if !culprits.is_empty() {
            return Err(DkgError::TranscriptMismatch { culprits }.into());
        }
        let mut packages: BTreeMap<frost::Identifier, round2::Package> = BTreeMap::new();
        for (from, blob) in &request.sealed {
            let sender =
                self.context
                    .roster
                    .get(*from)
                    .ok_or_else(|| ParticipantError::Packages {
                        expected: expected.clone(),
                        got: got.clone(),
                    })?;
            let aad = round2_aad(&mine, *from, self.index);
            let plain = key
                .open(&sender.identity, &aad, &blob.0)
                .map_err(|source| ParticipantError::Open {
                    from: *from,
                    source,
                })?;
            let package = round2::Package::deserialize(&plain)
                .map_err(|_| ParticipantError::MalformedPackage { from: *from })?;
            let id = identifier(*from)
                .map_err(|_| ParticipantError::MalformedPackage { from: *from })?;
            packages.insert(id, package);
        }
        let share = self.inner.finish(&packages, &hashes)?;
        let certificate = certify(key, &mine, share.group());
        let group = share.group().clone();
        Ok((
            Participant3 {
                context: self.context,
                index: self.index,
                round1: self.round1,
                share,
            },
            Certified { group, certificate },
        ))
    }
}

/// A signer that finished the rounds and holds its new share in memory, waiting for every
/// certificate.
pub struct Participant3 {
    context: DkgContext,
    index: u16,
    round1: BTreeMap<u16, Round1Broadcast>,
    share: KeyShare,
}

impl fmt::Debug for Participant3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Participant3")
            .field("session", &self.context.session)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// A share whose key generation every member certified: ready to be stored.
pub struct CertifiedShare {
    /// The share.
    pub share: KeyShare,
    /// This signer's roster index.
    pub index: u16,
    /// The record.
    pub keygen: CertifiedKeygen,
    /// The wallet fingerprint.
    pub fingerprint: WalletFingerprint,
}

impl fmt::Debug for CertifiedShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedShare")
            .field("index", &self.index)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Participant3 {
    /// The group this signer computed.
    pub fn group(&self) -> &GroupPublic {
        self.share.group()
    }

    /// Checks every member's certificate against this signer's own roster and transcript;
    /// only then is the share released for storage.
    ///
    /// # Errors
    /// Another session, or a missing, extra or invalid certificate.
    pub fn confirm(self, request: ConfirmRequest) -> Result<CertifiedShare, ParticipantError> {
        if request.session != self.context.session {
            return Err(ParticipantError::Session);
        }
        let keygen = CertifiedKeygen {
            context: self.context,
            round1: self.round1,
            certificates: request.certificates,
        };
        let fingerprint = keygen.verify(self.share.group())?;
        Ok(CertifiedShare {
            share: self.share,
            index: self.index,
            keygen,
            fingerprint,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Coordinator half
// ---------------------------------------------------------------------------------------

/// Why the coordinator aborts a key generation. Signers are named by roster index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// The proposed context is not acceptable.
    #[error("invalid key generation")]
    Context(#[source] ContextError),
    /// An answer from an index outside the roster, or a second one.
    #[error("unexpected {stage} answer from participant {index}")]
    Unexpected {
        /// Protocol stage.
        stage: &'static str,
        /// Roster index.
        index: u16,
    },
    /// A signer's answer is malformed.
    #[error("participant {index} sent a malformed {stage} answer: {reason}")]
    Malformed {
        /// Protocol stage.
        stage: &'static str,
        /// Roster index.
        index: u16,
        /// What is wrong.
        reason: &'static str,
    },
    /// The broadcasts cannot make a group.
    #[error("the round-1 broadcasts do not make a group")]
    Dkg(#[from] DkgError),
    /// Signers reported another group than the broadcasts define, or an invalid certificate.
    #[error("participants {culprits:?} reported another group or an invalid certificate")]
    Disagreement {
        /// Who.
        culprits: Vec<u16>,
    },
    /// A stage was asked for before every answer of the previous one arrived.
    #[error("the key generation is not ready for {0}")]
    NotReady(&'static str),
}

/// The coordinator's side: collects and routes messages, computes the expected group from
/// the public commitments, checks every certificate, and ends with the record.
#[derive(Debug)]
pub struct DkgCoordinator {
    context: DkgContext,
    round1: BTreeMap<u16, Round1Broadcast>,
    transcripts: BTreeMap<u16, Transcript>,
    sealed: BTreeMap<u16, BTreeMap<u16, Sealed>>,
    expected: Option<(GroupPublic, TranscriptHash)>,
    certificates: BTreeMap<u16, Certificate>,
    stored: BTreeSet<u16>,
}

impl DkgCoordinator {
    /// A key generation of `context`.
    ///
    /// # Errors
    /// [`CoordinatorError::Context`].
    pub fn new(context: DkgContext) -> Result<Self, CoordinatorError> {
        context.check().map_err(CoordinatorError::Context)?;
        Ok(DkgCoordinator {
            context,
            round1: BTreeMap::new(),
            transcripts: BTreeMap::new(),
            sealed: BTreeMap::new(),
            expected: None,
            certificates: BTreeMap::new(),
            stored: BTreeSet::new(),
        })
    }

    /// The context.
    pub fn context(&self) -> &DkgContext {
        &self.context
    }

    /// The roster indexes.
    pub fn indexes(&self) -> impl Iterator<Item = u16> + '_ {
        self.context.roster.entries().iter().map(|e| e.index)
    }

    fn n(&self) -> usize {
        usize::from(self.context.params.signers())
    }

    fn member(&self, stage: &'static str, index: u16) -> Result<(), CoordinatorError> {
        self.context
            .roster
            .get(index)
            .map(|_| ())
            .ok_or(CoordinatorError::Unexpected { stage, index })
    }

    /// The first message, the same for every signer.
    pub fn begin(&self) -> Begin {
        Begin {
            context: self.context.clone(),
        }
    }

    /// Records a round-1 answer.
    ///
    /// # Errors
    /// An index outside the roster or a second answer.
    pub fn add_round1(&mut self, index: u16, answer: Round1Answer) -> Result<(), CoordinatorError> {
        self.member("round 1", index)?;
        if self.round1.insert(index, answer.broadcast).is_some() {
            return Err(CoordinatorError::Unexpected {
                stage: "round 1",
                index,
            });
        }
        Ok(())
    }

    /// Every broadcast, once all arrived (the same message for every signer).
    ///
    /// # Errors
    /// [`CoordinatorError::NotReady`].
    pub fn round1_request(&mut self) -> Result<Round1Request, CoordinatorError> {
        if self.round1.len() != self.n() {
            return Err(CoordinatorError::NotReady("round 2"));
        }
        if self.expected.is_none() {
            let broadcasts = by_identifier(&self.round1)?;
            let transcript =
                transcript_hash(&self.context.hash(), &self.context.params, &broadcasts)?;
            let group = group_from_broadcasts(&broadcasts)?;
            self.expected = Some((group, transcript));
        }
        Ok(Round1Request {
            session: self.context.session,
            broadcasts: self.round1.clone(),
        })
    }

    /// Records a round-2 answer (sealed packages for every other member).
    ///
    /// # Errors
    /// An unexpected index, or packages not addressed to exactly the other members.
    pub fn add_round2(&mut self, index: u16, answer: Round2Answer) -> Result<(), CoordinatorError> {
        self.member("round 2", index)?;
        let expected: Vec<u16> = self.indexes().filter(|i| *i != index).collect();
        let got: Vec<u16> = answer.sealed.keys().copied().collect();
        if got != expected {
            return Err(CoordinatorError::Malformed {
                stage: "round 2",
                index,
                reason: "its sealed packages are not addressed to exactly the other members",
            });
        }
        if self.transcripts.insert(index, answer.transcript).is_some() {
            return Err(CoordinatorError::Unexpected {
                stage: "round 2",
                index,
            });
        }
        for (to, blob) in answer.sealed {
            self.sealed.entry(to).or_default().insert(index, blob);
        }
        Ok(())
    }

    /// What signer `index` needs to finish, once every round-2 answer arrived.
    ///
    /// # Errors
    /// [`CoordinatorError::NotReady`].
    pub fn round2_request(&self, index: u16) -> Result<Round2Request, CoordinatorError> {
        if self.transcripts.len() != self.n() {
            return Err(CoordinatorError::NotReady("round 3"));
        }
        Ok(Round2Request {
            session: self.context.session,
            sealed: self.sealed.get(&index).cloned().unwrap_or_default(),
            transcripts: self.transcripts.clone(),
        })
    }

    /// Records a signer's result: it must be the group the commitments define, certified
    /// under the transcript by the member's identity key.
    ///
    /// # Errors
    /// [`CoordinatorError::Disagreement`] naming the signer.
    pub fn add_certified(&mut self, index: u16, answer: Certified) -> Result<(), CoordinatorError> {
        self.member("certification", index)?;
        let (group, transcript) = self
            .expected
            .as_ref()
            .ok_or(CoordinatorError::NotReady("certification"))?;
        let identity = self.context.roster.get(index).map(|m| m.identity).ok_or(
            CoordinatorError::Unexpected {
                stage: "certification",
                index,
            },
        )?;
        if &answer.group != group
            || !check_certificate(&identity, &answer.certificate, transcript, group)
        {
            return Err(CoordinatorError::Disagreement {
                culprits: vec![index],
            });
        }
        self.certificates.insert(index, answer.certificate);
        Ok(())
    }

    /// Every certificate, once all arrived (the same message for every signer).
    ///
    /// # Errors
    /// [`CoordinatorError::NotReady`].
    pub fn confirm_request(&self) -> Result<ConfirmRequest, CoordinatorError> {
        if self.certificates.len() != self.n() {
            return Err(CoordinatorError::NotReady("confirmation"));
        }
        Ok(ConfirmRequest {
            session: self.context.session,
            certificates: self.certificates.clone(),
        })
    }

    /// Records that signer `index` stored its share.
    ///
    /// # Errors
    /// A fingerprint other than the transcript's.
    pub fn add_stored(&mut self, index: u16, answer: Stored) -> Result<(), CoordinatorError> {
        self.member("confirmation", index)?;
        let (_, transcript) = self
            .expected
            .as_ref()
            .ok_or(CoordinatorError::NotReady("confirmation"))?;
        if answer.fingerprint != WalletFingerprint::of_transcript(transcript) {
            return Err(CoordinatorError::Disagreement {
                culprits: vec![index],
            });
        }
        self.stored.insert(index);
        Ok(())
    }

    /// The group and the record, once every signer stored its share.
    ///
    /// # Errors
    /// [`CoordinatorError::NotReady`].
    pub fn finish(self) -> Result<(GroupPublic, CertifiedKeygen), CoordinatorError> {
        if self.stored.len() != self.n() {
            return Err(CoordinatorError::NotReady("the end"));
        }
        let (group, _) = self.expected.ok_or(CoordinatorError::NotReady("the end"))?;
        Ok((
            group,
            CertifiedKeygen {
                context: self.context,
                round1: self.round1,
                certificates: self.certificates,
            },
        ))
    }

    /// The record so far (certificates may be incomplete): what a coordinator can keep when
    /// the last confirmations did not arrive.
    pub fn record(&self) -> CertifiedKeygen {
        CertifiedKeygen {
            context: self.context.clone(),
            round1: self.round1.clone(),
            certificates: self.certificates.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// In memory
// ---------------------------------------------------------------------------------------

/// Errors of [`run_in_memory`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InMemoryError {
    /// A participant refused or aborted.
    #[error("participant {index} failed")]
    Participant {
        /// Roster index.
        index: u16,
        /// The cause.
        #[source]
        source: Box<ParticipantError>,
    },
    /// The coordinator aborted.
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    /// `keys` does not match the roster.
    #[error("one identity key per roster member is needed, in roster order")]
    Keys,
}

/// Runs a certified key generation in one process: `keys[i]` is the identity key of roster
/// member `i + 1`, and every member approves every other. For tests, benchmarks and docs.
///
/// # Errors
/// Any participant's or the coordinator's error.
pub fn run_in_memory<R: RngCore + CryptoRng>(
    context: DkgContext,
    keys: &[&IdentityKey],
    rng: &mut R,
) -> Result<(Vec<CertifiedShare>, GroupPublic, CertifiedKeygen), InMemoryError> {
    if keys.len() != usize::from(context.roster.len())
        || keys
            .iter()
            .zip(context.roster.entries())
            .any(|(k, e)| k.public() != e.identity)
    {
        return Err(InMemoryError::Keys);
    }
    let fail = |index: u16| {
        move |source| InMemoryError::Participant {
            index,
            source: Box::new(source),
        }
    };
    let coordinator_id = context.coordinator;
    let mut coordinator = DkgCoordinator::new(context)?;
    let members: Vec<IdentityPublic> = keys.iter().map(|k| k.public()).collect();
    let approve = |id: &IdentityPublic| members.contains(id);
    let mut stage1 = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let index = u16::try_from(i + 1).map_err(|_| InMemoryError::Keys)?;
        let (p, answer) = Participant1::begin(
            coordinator.begin(),
            &key.public(),
            &coordinator_id,
            approve,
            rng,
        )
        .map_err(fail(index))?;
        coordinator.add_round1(index, answer)?;
        stage1.push((index, *key, p));
    }
    let request = coordinator.round1_request()?;
    let mut stage2 = Vec::new();
    for (index, key, p) in stage1 {
        let (p, answer) = p
            .receive_round1(request.clone(), key, rng)
            .map_err(fail(index))?;
        coordinator.add_round2(index, answer)?;
        stage2.push((index, key, p));
    }
    let mut stage3 = Vec::new();
    for (index, key, p) in stage2 {
        let (p, answer) = p
            .receive_round2(coordinator.round2_request(index)?, key)
            .map_err(fail(index))?;
        coordinator.add_certified(index, answer)?;
        stage3.push((index, p));
    }
    let confirm = coordinator.confirm_request()?;
    let mut shares = Vec::new();
    for (index, p) in stage3 {
        let share = p.confirm(confirm.clone()).map_err(fail(index))?;
        coordinator.add_stored(
            index,
            Stored {
                fingerprint: share.fingerprint,
            },
        )?;
        shares.push(share);
    }
    let (group, keygen) = coordinator.finish()?;
    Ok((shares, group, keygen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::RosterEntry;

    fn setup(n: u16, t: u16) -> (Vec<IdentityKey>, IdentityKey, DkgContext) {
        let mut rng = rand::thread_rng();
        let keys: Vec<IdentityKey> = (0..n).map(|_| IdentityKey::generate(&mut rng)).collect();
        let coordinator = IdentityKey::generate(&mut rng);
        let roster = Roster::new(
            keys.iter()
                .enumerate()
                .map(|(i, k)| RosterEntry {
                    index: u16::try_from(i + 1).unwrap(),
                    url: format!("http://127.0.0.1:{}", 7000 + i),
                    identity: k.public(),
                    tls_sha256: None,
                })
                .collect(),
        )
        .unwrap();
        let context = DkgContext::new(
            SessionId::random(&mut rng),
            "vault",
            Network::Regtest,
            DkgParams::new(t, n).unwrap(),
            coordinator.public(),
            roster,
        )
        .unwrap();
        (keys, coordinator, context)
    }

    #[test]
    fn certified_dkg_agrees_and_verifies_offline() {
        let (keys, _, context) = setup(3, 2);
        let refs: Vec<&IdentityKey> = keys.iter().collect();
        let (shares, group, keygen) =
            run_in_memory(context, &refs, &mut rand::thread_rng()).unwrap();
        assert_eq!(shares.len(), 3);
        let fp = keygen.verify(&group).unwrap();
        for s in &shares {
            assert_eq!(s.share.group(), &group);
            assert_eq!(s.fingerprint, fp);
            assert_eq!(s.keygen, keygen);
        }
        // One flipped bit in any certificate fails the offline check, naming the member.
        let mut bad = keygen.clone();
        if let Some(c) = bad.certificates.get_mut(&2) {
            c.0[10] ^= 1;
        }
        assert!(matches!(
            bad.verify(&group),
            Err(VerifyError::BadCertificate { index: 2, .. })
        ));
        // A record with another wallet name no longer matches its certificates.
        let mut renamed = keygen.clone();
        renamed.context.wallet = "other".into();
        assert!(matches!(
            renamed.verify(&group),
            Err(VerifyError::BadCertificate { .. })
        ));
        // A missing certificate.
        let mut missing = keygen;
        missing.certificates.remove(&3);
        assert!(matches!(
            missing.verify(&group),
            Err(VerifyError::MissingCertificate { index: 3, .. })
        ));
    }

    #[test]
    fn unapproved_peer_and_foreign_coordinator_are_refused_before_round_1() {
        let (keys, coordinator, context) = setup(3, 2);
        let me = keys[0].public();
        let only_two = |id: &IdentityPublic| *id == keys[1].public();
        let err = Participant1::begin(
            Begin {
                context: context.clone(),
            },
            &me,
            &coordinator.public(),
            only_two,
            &mut rand::thread_rng(),
        )
        .unwrap_err();
        assert!(
            matches!(err, ParticipantError::UnapprovedPeer { index: 3, identity } if identity == keys[2].public())
        );
        let other = IdentityKey::generate(&mut rand::thread_rng());
        let err = Participant1::begin(
            Begin { context },
            &me,
            &other.public(),
            |_| true,
            &mut rand::thread_rng(),
        )
        .unwrap_err();
        assert!(matches!(err, ParticipantError::CoordinatorMismatch { .. }));
    }

    /// A context of fixed contents, to pin its hash.
    fn fixed_context() -> DkgContext {
        let ids: Vec<IdentityKey> = (1u8..=3)
            .map(|b| IdentityKey::from_secret_bytes(&[b; 32]).unwrap())
            .collect();
        let coordinator = IdentityKey::from_secret_bytes(&[9; 32]).unwrap();
        let roster = Roster::new(
            ids.iter()
                .enumerate()
                .map(|(i, k)| RosterEntry {
                    index: u16::try_from(i + 1).unwrap(),
                    url: format!("http://127.0.0.1:{}", 7001 + i),
                    identity: k.public(),
                    tls_sha256: (i == 1).then_some(crate::keys::CertPin([0xab; 32])),
                })
                .collect(),
        )
        .unwrap();
        DkgContext::new(
            SessionId([7; 16]),
            "vault",
            Network::Regtest,
            DkgParams::new(2, 3).unwrap(),
            coordinator.public(),
            roster,
        )
        .unwrap()
    }

    fn recovery_policy(seed: u8, blocks: u16) -> RecoveryPolicy {
        let master =
            bitcoin::bip32::Xpriv::new_master(bitcoin::NetworkKind::Test, &[seed; 32]).unwrap();
        let secret: crate::recovery::script_path::RecoverySecret =
            master.to_string().parse().unwrap();
        let key = secret.public_at(&"86'/1'/0'".parse().unwrap()).unwrap();
        RecoveryPolicy::new(vec![key], 1, blocks).unwrap()
    }

    #[test]
    fn contexts_without_recovery_hash_and_serialize_as_before() {
        // Computed by the build before the recovery path existed (commit 2fa2909).
        let context = fixed_context();
        assert_eq!(
            hex::encode(context.hash()),
            "90274e852fa98c536d8217ff66792a22f2f6957144f5d57499ed69f2ea4184bf"
        );
        let json = serde_json::to_string(&context).unwrap();
        assert!(!json.contains("recovery"), "{json}");
        let back: DkgContext = serde_json::from_str(&json).unwrap();
        assert_eq!(back, context);
    }

    #[test]
    fn the_recovery_policy_is_hashed_versioned_and_checked() {
        let plain = fixed_context();
        let with = plain
            .clone()
            .with_recovery(recovery_policy(1, 144))
            .unwrap();
        assert_eq!(with.version, CONTEXT_VERSION_RECOVERY);
        assert_ne!(with.hash(), plain.hash());
        // Every part of the policy changes the hash.
        let other_key = plain
            .clone()
            .with_recovery(recovery_policy(2, 144))
            .unwrap();
        let other_time = plain
            .clone()
            .with_recovery(recovery_policy(1, 145))
            .unwrap();
        assert_ne!(other_key.hash(), with.hash());
        assert_ne!(other_time.hash(), with.hash());
        // JSON round trip keeps it.
        let json = serde_json::to_string(&with).unwrap();
        let back: DkgContext = serde_json::from_str(&json).unwrap();
        assert_eq!(back.hash(), with.hash());
        // A policy under version 1, or version 2 without a policy, is refused.
        let mut v1 = with.clone();
        v1.version = CONTEXT_VERSION;
        assert!(matches!(v1.check(), Err(ContextError::Version { got: 1 })));
        let mut v2 = plain.clone();
        v2.version = CONTEXT_VERSION_RECOVERY;
        assert!(matches!(v2.check(), Err(ContextError::Version { got: 2 })));
        // Test-network keys on a mainnet wallet.
        let mut mainnet = plain;
        mainnet.network = Network::Bitcoin;
        assert!(matches!(
            mainnet.with_recovery(recovery_policy(1, 144)),
            Err(CoordinatorError::Context(ContextError::Recovery(_)))
        ));
    }

    #[test]
    fn the_certified_record_carries_the_recovery_policy() {
        let (keys, _, context) = setup(3, 2);
        let policy = recovery_policy(3, 10);
        let context = context.with_recovery(policy.clone()).unwrap();
        let refs: Vec<&IdentityKey> = keys.iter().collect();
        let (shares, group, keygen) =
            run_in_memory(context, &refs, &mut rand::thread_rng()).unwrap();
        assert_eq!(keygen.verified_recovery(&group).unwrap(), Some(&policy));
        for s in &shares {
            assert_eq!(s.keygen.context.recovery.as_ref(), Some(&policy));
        }
        // Swapping the policy in a stored record breaks every certificate.
        let mut swapped = keygen.clone();
        swapped.context.recovery = Some(recovery_policy(4, 10));
        assert!(matches!(
            swapped.verified_recovery(&group),
            Err(VerifyError::BadCertificate { .. })
        ));
        // Dropping it (and the version) too.
        let mut dropped = keygen;
        dropped.context.recovery = None;
        dropped.context.version = CONTEXT_VERSION;
        assert!(matches!(
            dropped.verified_recovery(&group),
            Err(VerifyError::BadCertificate { .. })
        ));
    }
}
