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

/// Most checks of [`CheckCache::prepare`] running at once; further preparations are
/// skipped (the signing request that may follow checks the PSBT itself).
pub const MAX_PREPARING: usize = 2;

/// The cache (bounded, oldest dropped first, entries expire after [`CHECK_TTL`]). Clones
/// share it.
#[derive(Debug, Default, Clone)]
pub struct CheckCache {
    entries: Arc<Mutex<HashMap<CheckKey, (Instant, Checked)>>>,
    preparing: Arc<std::sync::atomic::AtomicUsize>,
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

    /// Runs `check` on a background thread of the lowest scheduling class (it takes only CPU
    /// time nothing else wants: on a machine shared with other signers a preparation must
    /// not slow a signing under way) and keeps what it returns under `key`. Skipped when
    /// `key` is already kept or [`MAX_PREPARING`] checks are running; `false` then.
    pub fn prepare(
        &self,
        key: CheckKey,
        check: impl FnOnce() -> Option<(Psbt, CheckedPsbt)> + Send + 'static,
    ) -> bool {
        use std::sync::atomic::Ordering;
        /// A running preparation's place among the [`MAX_PREPARING`]: freed when dropped,
        /// whether the check ended, panicked or never started.
        struct Slot(Arc<std::sync::atomic::AtomicUsize>);
        impl Drop for Slot {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        if self.get(&key).is_some() {
            return false;
        }
        let running = self.preparing.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(Arc::clone(&self.preparing));
        if running >= MAX_PREPARING {
            return false;
        }
        let cache = self.clone();
        crate::idle::spawn("ckm-prepare", move || {
            let _slot = slot;
            if let Some(checked) = check() {
                cache.put(key, Arc::new(checked));
            }
        })
        .is_ok()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::mpsc;

    /// A key of its own each call (a fresh identity and wallet, from a seeded generator).
    fn key(n: u8) -> CheckKey {
        use rand::SeedableRng;
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(CALLS.fetch_add(1, Ordering::Relaxed));
        let identity = crate::identity::IdentityKey::generate(&mut rng).public();
        let wallet = GroupKey::from(
            bitcoin::secp256k1::SecretKey::new(&mut rng).public_key(crate::frost::shares::secp()),
        );
        CheckKey::new(&identity, &wallet, 0, &n.to_string())
    }

    /// At most [`MAX_PREPARING`] preparations run at once; a slot frees when its check ends.
    #[test]
    fn preparations_are_bounded() {
        let cache = CheckCache::default();
        let mut release = Vec::new();
        for n in 0..MAX_PREPARING {
            let (tx, rx) = mpsc::channel::<()>();
            release.push(tx);
            assert!(cache.prepare(key(n as u8), move || {
                let _ = rx.recv();
                None
            }));
        }
        assert!(!cache.prepare(key(99), || None), "one too many ran");
        drop(release);
        let start = Instant::now();
        while cache.preparing.load(Ordering::Acquire) > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "slots never freed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(cache.prepare(key(99), || None));
    }
}
