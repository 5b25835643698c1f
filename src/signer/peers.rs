//! The peers a signer's operator approved: the only identities this signer will run a key
//! generation with (see [`crate::protocol::dkg`]). Kept sealed in the signer's store
//! (`ckm signer peers add|remove|list`) and re-read for every key generation, plus any given
//! to `ckm signer serve --allow-peer` for the life of the process.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::identity::IdentityPublic;

/// One approved peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// The operator's note about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// When it was approved (Unix seconds).
    pub added: u64,
}

/// Every approved peer, by identity key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peers {
    /// The stored version (each change makes a new one; the checkpoint records it).
    #[serde(skip)]
    pub version: u64,
    /// Peers by identity.
    pub peers: BTreeMap<IdentityPublic, Peer>,
}

impl Peers {
    /// Whether `identity` is approved.
    pub fn contains(&self, identity: &IdentityPublic) -> bool {
        self.peers.contains_key(identity)
    }

    /// Approves `identity`; returns false when it already was (its label is then updated
    /// if a new one is given).
    pub fn add(&mut self, identity: IdentityPublic, label: Option<String>, now: u64) -> bool {
        match self.peers.get_mut(&identity) {
            Some(p) => {
                if label.is_some() {
                    p.label = label;
                }
                false
            }
            None => {
                self.peers.insert(identity, Peer { label, added: now });
                true
            }
        }
    }

    /// Withdraws the approval of `identity`; returns whether it was approved.
    pub fn remove(&mut self, identity: &IdentityPublic) -> bool {
        self.peers.remove(identity).is_some()
    }
}
