//! What the coordinator keeps about a wallet besides bdk's own state ([`WalletMeta`]): name,
//! network, group key package, roster, the certified key generation and every committed
//! transition, and a transition being finished; and the offline check of all of it
//! ([`WalletMeta::verify`]).

use bitcoin::Network;
use serde::{Deserialize, Serialize};

use super::{descriptors_with, WalletError};
use crate::frost::shares::GroupPublic;
use crate::keys::Roster;
use crate::keys::WalletFingerprint;
use crate::protocol::dkg::{CertifiedKeygen, VerifyError};
use crate::protocol::lifecycle::{CertifiedTransition, History, WalletState};
use crate::recovery::{RecoveryPolicy, WalletScripts};

/// Everything the coordinator keeps about a wallet besides bdk's own state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WalletMeta {
    /// Wallet name (unique within a home).
    pub name: String,
    /// Bitcoin network.
    pub network: Network,
    /// The group's public key package and chain code.
    pub group: GroupPublic,
    /// The signers (URLs and TLS pins may change; indexes and identity keys are certified).
    pub roster: Roster,
    /// Default Electrum server for this wallet, if configured.
    #[serde(default)]
    pub electrum: Option<String>,
    /// The certified key generation (every signer's certificate); `None` only for wallets
    /// made before key generations were certified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keygen: Option<CertifiedKeygen>,
    /// The current epoch (0 until the first committed transition).
    #[serde(default)]
    pub epoch: u64,
    /// Every committed transition since the key generation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<CertifiedTransition>,
    /// A transition that every member prepared; when `decided`, the coordinator committed to
    /// it and `ckm wallet resume` finishes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingTransition>,
    /// The chain's height when the wallet was created (its key generation ran): no coin of
    /// the wallet can be in an earlier block, so a first sync from a Bitcoin Core node starts
    /// there. `None` for wallets created offline or by an older ckm, and for recovered ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_height: Option<u32>,
}

/// A prepared transition the coordinator is finishing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingTransition {
    /// The record.
    pub record: CertifiedTransition,
    /// The coordinator decided to commit (every member prepared).
    pub decided: bool,
    /// Members that acknowledged the commit.
    #[serde(default)]
    pub committed: Vec<u16>,
}

/// Why `wallet verify` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalletVerifyError {
    /// The wallet predates certified key generation.
    #[error("this wallet has no certified key generation record (it was created by an older ckm)")]
    Uncertified,
    /// The record does not check out.
    #[error(transparent)]
    Record(#[from] VerifyError),
    /// The live roster names other identity keys than the certified one.
    #[error(
        "roster entry {index} names identity {live}, but the certified roster has {certified}"
    )]
    RosterChanged {
        /// Index.
        index: u16,
        /// Identity in the live roster.
        live: Box<crate::identity::IdentityPublic>,
        /// Identity in the certified roster.
        certified: crate::identity::IdentityPublic,
    },
    /// Name or network differ from the certified ones.
    #[error("the wallet's name or network differ from the certified ones")]
    ContextChanged,
    /// The transitions since the key generation do not check out.
    #[error("the wallet's history does not check out: {0}")]
    History(String),
}

impl WalletMeta {
    /// Re-checks the certified key generation offline: every certificate, the group derived
    /// from the round-1 commitments, and that the live roster, name and network are the
    /// certified ones. Returns the wallet fingerprint.
    ///
    /// # Errors
    /// [`WalletVerifyError`] naming the first problem.
    pub fn verify(&self) -> Result<WalletFingerprint, WalletVerifyError> {
        let keygen = self.keygen.as_ref().ok_or(WalletVerifyError::Uncertified)?;
        let genesis = match self.transitions.first() {
            None => self.group.clone(),
            Some(_) => {
                let broadcasts = keygen
                    .round1
                    .iter()
                    .filter_map(|(i, b)| {
                        crate::frost::identifier(*i).ok().map(|id| (id, b.clone()))
                    })
                    .collect();
                crate::frost::pedersen::group_from_broadcasts(&broadcasts)
                    .map_err(|e| WalletVerifyError::History(e.to_string()))?
            }
        };
        let fingerprint = keygen.verify(&genesis)?;
        let state = self
            .history()
            .ok_or(WalletVerifyError::Uncertified)?
            .verify()
            .map_err(|e| WalletVerifyError::History(e.to_string()))?;
        if state.epoch != self.epoch || state.group != self.group {
            return Err(WalletVerifyError::History(format!(
                "the history ends at epoch {} but the wallet is at epoch {}",
                state.epoch, self.epoch
            )));
        }
        if keygen.context.wallet != self.name || keygen.context.network != self.network {
            return Err(WalletVerifyError::ContextChanged);
        }
        let current = self.current_state();
        let certified = current.roster.entries();
        if certified.len() != self.roster.entries().len() {
            return Err(WalletVerifyError::ContextChanged);
        }
        for (live, cert) in self.roster.entries().iter().zip(certified) {
            if live.identity != cert.identity || live.index != cert.index {
                return Err(WalletVerifyError::RosterChanged {
                    index: live.index,
                    live: Box::new(live.identity),
                    certified: cert.identity,
                });
            }
        }
        Ok(fingerprint)
    }

    /// The certified history (key generation and transitions), when there is one.
    pub fn history(&self) -> Option<History> {
        self.keygen.as_ref().map(|k| History {
            keygen: k.clone(),
            transitions: self.transitions.clone(),
        })
    }

    /// The wallet's current state (epoch, roster, verifying shares).
    pub fn current_state(&self) -> WalletState {
        WalletState {
            epoch: self.epoch,
            roster: self.roster.clone(),
            group: self.group.clone(),
        }
    }

    /// The signers to sign with, by index: the roster, less a member whose removal this
    /// coordinator has under way (the members that prepared it refuse any signing set that
    /// includes it).
    pub fn signing_roster(&self) -> std::collections::BTreeMap<u16, crate::keys::RosterEntry> {
        let mut roster = self.roster.by_index();
        if let Some(p) = &self.pending {
            if let crate::protocol::lifecycle::TransitionKind::Remove(i) = p.record.context.kind {
                roster.remove(&i);
            }
        }
        roster
    }

    /// The wallet fingerprint, when the wallet has a certified key generation.
    pub fn fingerprint(&self) -> Option<WalletFingerprint> {
        self.keygen.as_ref().and_then(|k| k.fingerprint().ok())
    }

    /// The external and internal descriptors (with the recovery leaf when the wallet has one).
    ///
    /// # Errors
    /// See [`descriptors_with`].
    pub fn descriptors(&self) -> Result<(String, String), WalletError> {
        descriptors_with(&self.group, self.network, self.recovery())
    }

    /// The recovery path of the certified key generation, if the wallet has one.
    pub fn recovery(&self) -> Option<&RecoveryPolicy> {
        self.keygen
            .as_ref()
            .and_then(|k| k.context.recovery.as_ref())
    }

    /// The wallet's scripts (to derive any address independently of bdk).
    ///
    /// # Errors
    /// See [`descriptors_with`].
    pub fn scripts(&self) -> Result<WalletScripts, WalletError> {
        WalletScripts::new(&self.group, self.network, self.recovery())
            .map_err(|e| WalletError::Descriptor(e.to_string()))
    }
}
