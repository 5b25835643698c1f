//! Messages between the coordinator and the signers, typed by direction
//! ([`CoordinatorToSigner`], [`SignerToCoordinator`]) and wrapped in a version header
//! ([`Versioned`]) that is checked on read. Transport-agnostic (JSON over HTTP today).
//!
//! The first file to read: it names every message that flows. It imports the protocols'
//! message types (`protocol`) and the lower floors; nothing above (`signer`, `wallet`, `net`,
//! `cli`).

use std::collections::BTreeMap;

use frost::round1::SigningCommitments;
use frost::round2::SignatureShare;
use frost::SigningPackage;
use frost_secp256k1_tr as frost;
use serde::{Deserialize, Serialize};

use crate::identity::IdentityPublic;
pub use crate::identity::Sealed;
use crate::keys::GroupKey;
use crate::protocol::roast::{CommitmentBatch, InputCommitments, NonceId};
use crate::protocol::spend_limits::{Receipt, Statement};
pub use crate::protocol::SessionId;
use crate::protocol::{dkg, lifecycle};

/// The protocol version this build speaks (2: certified key generation; 3: limit statements
/// carry the outpoints each spend consumes, so that replacements count once).
pub const PROTOCOL_VERSION: u16 = 3;

/// Most statements in one [`CoordinatorToSigner::ConfirmEpoch`] (a roster has at most a few
/// dozen members; each statement costs a signature check).
pub const MAX_EPOCH_STATEMENTS: usize = 64;

/// A message with its version header.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Versioned<T> {
    /// Protocol version of the sender.
    pub version: u16,
    /// The message.
    pub body: T,
}

/// Errors reading a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {got} (this build speaks {PROTOCOL_VERSION})")]
    Version {
        /// The version received.
        got: u16,
    },
    /// The bytes are not a message.
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl<T> Versioned<T> {
    /// Wraps a message in the current version.
    pub fn new(body: T) -> Self {
        Versioned {
            version: PROTOCOL_VERSION,
            body,
        }
    }

    /// Unwraps a message, refusing other versions.
    ///
    /// # Errors
    /// [`MessageError::Version`].
    pub fn open(self) -> Result<T, MessageError> {
        if self.version != PROTOCOL_VERSION {
            return Err(MessageError::Version { got: self.version });
        }
        Ok(self.body)
    }
}

/// Decodes a versioned JSON message.
///
/// # Errors
/// Malformed JSON or another version.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, MessageError> {
    let v: Versioned<T> =
        serde_json::from_slice(bytes).map_err(|e| MessageError::Malformed(e.to_string()))?;
    v.open()
}

/// Encodes a message as versioned JSON.
pub fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    // Serializing these plain data types to JSON cannot fail.
    serde_json::to_vec(&Versioned::new(body)).unwrap_or_default()
}

/// Which wallet a request is about: the coordinator's name for it and its group key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletRef {
    /// The name the coordinator gave the wallet at creation.
    pub name: String,
    /// The group's root public key.
    pub group_key: GroupKey,
    /// The epoch the coordinator signs for (signers refuse another one).
    #[serde(default)]
    pub epoch: u64,
}

/// A wallet's public record as a signer holds it: everything a coordinator needs to rebuild
/// the wallet (the certified key generation and every transition since) and nothing secret.
/// The receiver re-checks the history offline ([`lifecycle::History::verify`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletRecord {
    /// The wallet's name (as certified at key generation).
    pub name: String,
    /// The group's root public key.
    pub group_key: GroupKey,
    /// The epoch the signer's share belongs to.
    pub epoch: u64,
    /// The signer's roster index.
    pub index: u16,
    /// The certified key generation and every committed transition since.
    pub history: lifecycle::History,
}

/// A further one-round session in a [`CoordinatorToSigner::SignPreprocessed`] request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoreSession {
    /// Signing session.
    pub session: SessionId,
    /// Every chosen signer's commitments, one per input.
    pub commitments: BTreeMap<u16, InputCommitments>,
    /// This signer's nonce ids for it, one per input.
    pub nonces: Vec<NonceId>,
}

/// Requests from the coordinator to a signer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)]
pub enum CoordinatorToSigner {
    /// Who are you? (answered with [`SignerToCoordinator::Status`]).
    Status,
    /// Take part in a certified key generation (see [`crate::protocol::dkg`]).
    DkgBegin(dkg::Begin),
    /// Every participant's round-1 broadcast.
    DkgRound1(dkg::Round1Request),
    /// The sealed round-2 packages addressed to the recipient and every transcript hash.
    DkgRound2(dkg::Round2Request),
    /// Every participant's certificate: verify them all, then store the share (until then it
    /// is only in memory, so an aborted key generation leaves no share anywhere).
    DkgConfirm(dkg::ConfirmRequest),
    /// A step of an epoch transition (refresh, removal, repair, enrolment: see
    /// [`crate::protocol::lifecycle`]).
    Transition(lifecycle::TransitionRequest),
    /// The public records of every wallet bound to the requesting coordinator (answered with
    /// [`SignerToCoordinator::WalletRecords`]), from which `ckm wallet recover` rebuilds a
    /// lost coordinator database.
    WalletRecords,
    /// To a restored signer: draw a fresh challenge for confirming its epoch of `wallet`
    /// (answered with [`SignerToCoordinator::EpochChallenge`]; see
    /// [`crate::protocol::lifecycle::confirm`]).
    EpochChallenge {
        /// The wallet.
        wallet: GroupKey,
    },
    /// To a member: state your current epoch of `wallet`, answering a restored signer's
    /// challenge (answered with [`SignerToCoordinator::EpochStatement`]).
    EpochStatement {
        /// The wallet.
        wallet: GroupKey,
        /// The restored signer's challenge.
        challenge: lifecycle::Challenge,
    },
    /// To a restored signer: the members' statements answering its challenge; it signs for
    /// `wallet` again only if they confirm its epoch.
    ConfirmEpoch {
        /// The wallet.
        wallet: GroupKey,
        /// The statements (at most [`MAX_EPOCH_STATEMENTS`]).
        statements: Vec<lifecycle::SignedStatement>,
    },
    /// Round 1 of signing: check this PSBT and commit nonces for every input.
    SignCommit {
        /// Signing session.
        session: SessionId,
        /// The wallet.
        wallet: WalletRef,
        /// The PSBT (base64).
        psbt: String,
    },
    /// Preprocessing: generate `count` nonce pairs for this coordinator and wallet, keep them
    /// in memory, return their commitments (see [`crate::protocol::roast`]).
    Preprocess {
        /// The wallet.
        wallet: WalletRef,
        /// How many (at most 500 per request).
        count: u16,
    },
    /// One-round signing with preprocessed nonces: check the PSBT, sign every input with
    /// the named nonces (one per input; consumed whatever happens).
    SignPreprocessed {
        /// Signing session.
        session: SessionId,
        /// The wallet.
        wallet: WalletRef,
        /// The PSBT (base64).
        psbt: String,
        /// Every chosen signer's commitments, one per input (the signer builds the signing
        /// packages with the sighashes it computes).
        commitments: BTreeMap<u16, InputCommitments>,
        /// This signer's nonce ids, one per input.
        nonces: Vec<NonceId>,
        /// Further sessions of the same PSBT for this signer in the same request (a hedged
        /// start): each signed with its own nonces, one decision for all.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        more: Vec<MoreSession>,
    },
    /// Check this PSBT in the background and keep the outcome for a one-round request that
    /// may follow: sent by a ROAST coordinator to the spare signers of a large PSBT while the
    /// first session runs, so that a spare needed for a second session only signs. Nothing is
    /// signed, reserved or recorded; answered at once with [`SignerToCoordinator::Prepared`]
    /// (a refused PSBT is refused, with its reason, by the request that follows).
    PrepareSign {
        /// The wallet.
        wallet: WalletRef,
        /// The PSBT (base64).
        psbt: String,
    },
    /// Between the rounds, for wallets with a wallet-wide limit: every chosen signer's
    /// receipt of its round-1 reservation; answered with a signed statement of everything the
    /// signer signed or reserved for the wallet in the window (see
    /// [`crate::protocol::spend_limits`]).
    SignStatement {
        /// Signing session (as in round 1).
        session: SessionId,
        /// Receipts by roster index (the chosen signers).
        receipts: BTreeMap<u16, Receipt>,
    },
    /// Round 2 of signing: one signing package per input, and the chosen signers'
    /// statements when the wallet has a wallet-wide limit.
    SignShare {
        /// Signing session (as in round 1).
        session: SessionId,
        /// Signing packages, one per input.
        packages: Vec<SigningPackage>,
        /// Statements by roster index (empty without a statement round).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        statements: BTreeMap<u16, Statement>,
    },
}

/// Answers from a signer to the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)]
pub enum SignerToCoordinator {
    /// The signer's identity and the wallets it holds.
    Status {
        /// Identity key.
        identity: IdentityPublic,
        /// ckm version.
        software: String,
        /// Wallets held (names).
        wallets: Vec<String>,
    },
    /// The public records of the wallets bound to the requesting coordinator (nothing
    /// secret: each wallet's certified history, from which its roster and descriptors follow).
    WalletRecords(Vec<WalletRecord>),
    /// A restored signer's challenge, and whether its epoch of the wallet is confirmed.
    EpochChallenge {
        /// The challenge (kept in the signer's memory for a few minutes).
        challenge: lifecycle::Challenge,
        /// The signer's epoch of the wallet.
        epoch: u64,
        /// Whether it signs for the wallet already (never restored, or confirmed).
        confirmed: bool,
    },
    /// A member's signed statement of its epoch.
    EpochStatement(lifecycle::SignedStatement),
    /// The restored signer's epoch is confirmed: it signs for the wallet again.
    EpochConfirmed {
        /// The confirmed epoch.
        epoch: u64,
        /// The members whose statements confirmed it.
        members: Vec<u16>,
    },
    /// Round-1 broadcast of the key generation.
    DkgRound1(dkg::Round1Answer),
    /// Transcript hash and sealed round-2 packages by recipient index.
    DkgRound2(dkg::Round2Answer),
    /// The key generation finished: the group as this signer sees it and its certificate
    /// (the share is held in memory until [`CoordinatorToSigner::DkgConfirm`]).
    DkgCertified(dkg::Certified),
    /// Every certificate verified; the share is stored, encrypted, on the signer's disk.
    DkgStored(dkg::Stored),
    /// An answer in an epoch transition.
    Transition(lifecycle::TransitionAnswer),
    /// Nonce commitments, one per input, and the receipt of the spend's reservation.
    SignCommitments {
        /// Commitments, one per input.
        commitments: Vec<SigningCommitments>,
        /// The signer's signed receipt of its reservation.
        receipt: Receipt,
        /// Whether this signer needs the statement round before it signs (its policy has a
        /// wallet-wide limit).
        statements_required: bool,
    },
    /// A signed statement of the wallet's spends in the window.
    SignStatement(Statement),
    /// Preprocessed commitments.
    Preprocessed {
        /// The commitments, signed by the signer for this coordinator and wallet.
        batch: CommitmentBatch,
        /// Whether this signer needs the statement rounds (its policy has a wallet-wide
        /// limit): one-round signing is then refused.
        statements_required: bool,
    },
    /// A [`CoordinatorToSigner::PrepareSign`] was taken (its check runs in the background).
    Prepared,
    /// One-round signing: shares, one per input, and fresh commitments for the next session.
    SignedPreprocessed {
        /// Shares, one per input.
        shares: Vec<SignatureShare>,
        /// As many fresh commitments as nonces were used (signed like a batch).
        fresh: CommitmentBatch,
        /// Shares of each further session of the request, in its order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        more: Vec<Vec<SignatureShare>>,
    },
    /// Signature shares, one per input.
    SignShares {
        /// Shares, one per input.
        shares: Vec<SignatureShare>,
    },
    /// The request was refused.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable reason.
        message: String,
    },
}

/// Machine-readable refusal reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Request not authenticated (bad signature, unknown coordinator, replay).
    Unauthorized,
    /// Malformed or wrong-version request.
    BadRequest,
    /// Session unknown (e.g. the signer restarted) or already used.
    UnknownSession,
    /// The wallet is not held by this signer.
    UnknownWallet,
    /// The PSBT or signing package failed the signer's checks.
    Refused,
    /// The signer's policy refused the spend.
    Policy,
    /// A key generation whose roster names an identity the signer's operator did not
    /// approve.
    UnapprovedPeer,
    /// The wallet is bound to other coordinators.
    WrongCoordinator,
    /// The signer's records are older than its checkpoint (rolled back); it refuses to sign
    /// until its operator resets the state.
    State,
    /// The request is for another epoch of the wallet than the signer's.
    WrongEpoch,
    /// A preprocessed nonce is unknown or already used (the signer restarted, or a replay).
    UnknownNonce,
    /// One-round signing refused: the wallet has a wallet-wide limit, which needs the
    /// statement rounds.
    NeedsStatements,
    /// The signer was restored from a backup and has not confirmed the wallet's current
    /// epoch with the other members yet (`ckm wallet confirm-restored`).
    Unconfirmed,
    /// Internal failure.
    Internal,
}
