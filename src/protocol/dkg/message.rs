//! The messages of a certified key generation, in the order they flow: [`Begin`] →
//! [`Round1Answer`] → [`Round1Request`] → [`Round2Answer`] → [`Round2Request`] → [`Certified`]
//! → [`ConfirmRequest`] → [`Stored`]. Carried on the wire inside
//! [`crate::message::CoordinatorToSigner`] and [`crate::message::SignerToCoordinator`]: field
//! names and order are part of the wire format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Certificate, DkgContext, Transcript};
use crate::frost::pedersen::Round1Broadcast;
use crate::identity::Sealed;
use crate::keys::{GroupPublic, WalletFingerprint};
use crate::protocol::SessionId;

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
