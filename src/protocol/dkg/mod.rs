//! Certified distributed key generation, safe against a malicious coordinator.
//!
//! The certified protocol runs the uncertified FROST key generation of
//! [`crate::frost::pedersen`] inside a context every participant agrees on before round 1
//! ([`DkgContext`]: version, session, wallet name, network, `t`-of-`n`, the coordinator and the
//! whole roster of identity keys, optionally the wallet's recovery policy). A signer takes part
//! only when every other roster member is a peer its operator approved; round-2 packages are
//! sealed end to end to the roster's identity keys, bound to a transcript over the context and
//! every round-1 broadcast; and no signer stores its share before it has checked every member's
//! certificate over (transcript, group key, chain code). The result is a public record
//! ([`CertifiedKeygen`]) that anyone can re-check offline. The design and its reasons are in
//! `docs/certified-keygen.md`.
//!
//! Files, in reading order:
//! - this file: the context ([`DkgContext`], [`check_wallet_name`], [`ContextError`]) and the
//!   helpers both halves share ([`round2_aad`]);
//! - `message.rs`: what flows, coordinator → signer ([`Begin`], [`Round1Request`],
//!   [`Round2Request`], [`ConfirmRequest`]) and signer → coordinator ([`Round1Answer`],
//!   [`Round2Answer`], [`Certified`], [`Stored`]);
//! - `record.rs`: the certified record ([`Transcript`], [`Certificate`], [`CertifiedKeygen`]
//!   and its offline checks, [`VerifyError`], [`CertifiedAddressError`]);
//! - `participant.rs`: the signer's half, as typestates consumed one step at a time
//!   ([`Participant1`] → [`Participant2`] → [`Participant3`] → [`CertifiedShare`]) with
//!   [`ParticipantError`];
//! - `coordinator.rs`: the coordinator's half ([`DkgCoordinator`], [`CoordinatorError`]);
//! - `in_memory.rs`: both halves driven in one process ([`run_in_memory`], [`InMemoryError`]).
//!
//! Transport-free: messages and an RNG in, messages out; the signer daemon, the coordinator's
//! network driver and the in-memory harness drive the same code. Builds on the uncertified
//! primitive [`crate::frost::pedersen`], and may import only from this folder's parent
//! ([`crate::protocol::SessionId`]) and lower floors: `psbt`, `recovery`, `keys`, `identity`,
//! `auth`, `store`, `frost` — never `signer`, `wallet`, `net`, `ops` or `cli`.

use std::collections::BTreeMap;

use bitcoin::hashes::{sha256t_hash_newtype, Hash, HashEngine};
use bitcoin::Network;
use frost_secp256k1_tr as frost;
use serde::{Deserialize, Serialize};

use super::SessionId;
use crate::frost::identifier;
use crate::frost::pedersen::{DkgError, DkgParams, Round1Broadcast, TranscriptHash};
use crate::identity::IdentityPublic;
use crate::keys::Roster;
use crate::recovery::{RecoveryError, RecoveryPolicy};

mod coordinator;
mod in_memory;
mod message;
mod participant;
mod record;
#[cfg(test)]
mod tests;

pub use coordinator::{CoordinatorError, DkgCoordinator};
pub use in_memory::{run_in_memory, InMemoryError};
pub use message::{
    Begin, Certified, ConfirmRequest, Round1Answer, Round1Request, Round2Answer, Round2Request,
    Stored,
};
pub use participant::{CertifiedShare, Participant1, Participant2, Participant3, ParticipantError};
pub use record::{Certificate, CertifiedAddressError, CertifiedKeygen, Transcript, VerifyError};

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
}

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

/// Associated data of a sealed round-2 package: the transcript (which covers the context,
/// hence the session, wallet, network, parameters and roster) and the two indexes.
pub fn round2_aad(transcript: &TranscriptHash, from: u16, to: u16) -> Vec<u8> {
    let mut aad = b"ckm/dkg-round2/v2".to_vec();
    aad.extend_from_slice(transcript);
    aad.extend_from_slice(&from.to_be_bytes());
    aad.extend_from_slice(&to.to_be_bytes());
    aad
}

/// The round-1 broadcasts keyed by FROST identifier instead of roster index.
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
