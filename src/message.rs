//! Messages between the coordinator and the signers, typed by direction
//! ([`CoordinatorToSigner`], [`SignerToCoordinator`]) and wrapped in a version header
//! ([`Versioned`]) that is checked on read. Transport-agnostic (JSON over HTTP today).

use std::collections::BTreeMap;

use bitcoin::Network;
use frost::round1::SigningCommitments;
use frost::round2::SignatureShare;
use frost::SigningPackage;
use frost_secp256k1_tr as frost;
use serde::{Deserialize, Serialize};

use crate::frost::dkg::{DkgParams, Round1Broadcast};
use crate::frost::keys::GroupPublic;
use crate::identity::IdentityPublic;
use crate::wallet::RosterEntry;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

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

/// A 16-byte random session identifier, hex in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(#[serde(with = "hex::serde")] pub [u8; 16]);

impl SessionId {
    /// A fresh random session id.
    pub fn random<R: rand::RngCore>(rng: &mut R) -> Self {
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        SessionId(b)
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A DKG round-2 package encrypted end to end to its recipient (hex in JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed(#[serde(with = "hex::serde")] pub Vec<u8>);

/// Which wallet a request is about: the coordinator's name for it and its group key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletRef {
    /// The name the coordinator gave the wallet at creation.
    pub name: String,
    /// The group's root public key (33-byte hex).
    pub group_key: String,
}

/// Requests from the coordinator to a signer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)]
pub enum CoordinatorToSigner {
    /// Who are you? (answered with [`SignerToCoordinator::Status`]).
    Status,
    /// Start a DKG as participant `index` of `roster`.
    DkgBegin {
        /// DKG session.
        session: SessionId,
        /// Wallet name.
        wallet: String,
        /// Network of the wallet.
        network: Network,
        /// Group parameters.
        params: DkgParams,
        /// Every participant (index and identity key).
        roster: Vec<RosterEntry>,
        /// The recipient's own roster index.
        index: u16,
    },
    /// Every participant's round-1 broadcast, by roster index.
    DkgRound1 {
        /// DKG session.
        session: SessionId,
        /// Broadcasts by roster index.
        broadcasts: BTreeMap<u16, Round1Broadcast>,
    },
    /// The sealed round-2 packages addressed to the recipient and every transcript hash.
    DkgRound2 {
        /// DKG session.
        session: SessionId,
        /// Sealed packages by sender index.
        sealed: BTreeMap<u16, Sealed>,
        /// Transcript hashes by participant index (hex).
        transcripts: BTreeMap<u16, String>,
    },
    /// Every signer reported the same group: store the share (until then it is only in
    /// memory, so an aborted DKG leaves no share file anywhere).
    DkgConfirm {
        /// DKG session.
        session: SessionId,
        /// The agreed group key (33-byte hex), as a check.
        group_key: String,
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
    /// Round 2 of signing: one signing package per input.
    SignShare {
        /// Signing session (as in round 1).
        session: SessionId,
        /// Signing packages, one per input.
        packages: Vec<SigningPackage>,
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
    /// Round-1 broadcast of the DKG.
    DkgRound1 {
        /// The broadcast.
        broadcast: Round1Broadcast,
    },
    /// Transcript hash and sealed round-2 packages by recipient index.
    DkgRound2 {
        /// Hash of all round-1 broadcasts seen (hex).
        transcript: String,
        /// Sealed packages by recipient index.
        sealed: BTreeMap<u16, Sealed>,
    },
    /// The DKG finished: the group as this signer sees it (share held in memory until
    /// [`CoordinatorToSigner::DkgConfirm`]).
    DkgDone {
        /// The group public side.
        group: GroupPublic,
    },
    /// The share is stored, encrypted, on the signer's disk.
    DkgStored,
    /// Nonce commitments, one per input.
    SignCommitments {
        /// Commitments, one per input.
        commitments: Vec<SigningCommitments>,
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
    /// Internal failure.
    Internal,
}
