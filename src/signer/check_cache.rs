//! PSBTs this signer checked recently, so the same PSBT asked of it again — another ROAST
//! session of the same signing, a hedged session, a preparation — is not parsed and checked
//! again. What is cached is only the outcome of the pure check (a function of the PSBT's
//! bytes, the wallet's group and its certified recovery policy, all in the key); the policy
//! and the decision run on every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::hashes::{sha256, Hash};
use bitcoin::Psbt;

use crate::identity::IdentityPublic;
use crate::keys::GroupKey;
use crate::psbt::CheckedPsbt;

/// How long a checked PSBT is kept.
pub const CHECK_TTL: Duration = Duration::from_secs(120);
/// Most checked PSBTs kept.
pub const MAX_CHECKED: usize = 16;

/// What a cached entry is keyed by: coordinator, wallet, epoch, SHA-256 of the PSBT text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CheckKey {
    coordinator: IdentityPublic,
    wallet: GroupKey,
    epoch: u64,
    psbt: sha256::Hash,
}

impl CheckKey {
    /// The key of `psbt_text` for `coordinator`, `wallet` at `epoch`.
    pub fn new(
        coordinator: &IdentityPublic,
        wallet: &GroupKey,
        epoch: u64,
        psbt_text: &str,
    ) -> Self {
        CheckKey {
            coordinator: *coordinator,
            wallet: *wallet,
            epoch,
            psbt: sha256::Hash::hash(psbt_text.as_bytes()),
        }
    }
}

/// A parsed PSBT and what the check found.
pub type Checked = Arc<(Psbt, CheckedPsbt)>;

/// The cache (bounded, oldest dropped first, entries expire after [`CHECK_TTL`]).
#[derive(Debug, Default)]
pub struct CheckCache {
    entries: Mutex<HashMap<CheckKey, (Instant, Checked)>>,
}

impl CheckCache {
    /// The cached check of `key`, if fresh.
    pub fn get(&self, key: &CheckKey) -> Option<Checked> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < CHECK_TTL)
            .map(|(_, c)| Arc::clone(c))
    }

    /// Remembers `checked` under `key`.
    pub fn put(&self, key: CheckKey, checked: Checked) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (at, _)| at.elapsed() < CHECK_TTL);
        while entries.len() >= MAX_CHECKED {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| *k)
            else {
                break;
            };
            entries.remove(&oldest);
        }
        entries.insert(key, (Instant::now(), checked));
    }
}
