//! The signer's preprocessed nonces: per (coordinator, wallet) pools in memory only (a
//! restarted signer has none), bounded, each nonce taken out of its pool before it is used so
//! it can never sign twice. A full pool forgets its oldest nonces (a coordinator that lost
//! track of them — a crash, an abandoned request — would otherwise block the pool for good);
//! a coordinator naming a forgotten one is told so and refills.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use rand::{CryptoRng, RngCore};

use crate::identity::IdentityPublic;
use crate::keys::{GroupKey, KeyShare};
use crate::protocol::roast::{NonceId, PreCommitment};
use crate::psbt::PreprocessedNonce;

/// Most nonces kept per (coordinator, wallet).
pub const MAX_POOL: usize = 2_000;
/// Most nonces made by one request.
pub const MAX_BATCH: u16 = 500;

/// Why nonces could not be given or taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NonceError {
    /// Too many asked at once.
    #[error("at most {MAX_BATCH} nonces per request")]
    Batch,
    /// An unknown or already used nonce.
    #[error("preprocessed nonce {0} is unknown or already used (the signer may have restarted; fetch fresh commitments)")]
    Unknown(NonceId),
    /// The same nonce twice in one request.
    #[error("preprocessed nonce {0} is named twice")]
    Duplicate(NonceId),
}

/// One (coordinator, wallet) pool, oldest first.
#[derive(Debug, Default)]
struct Pool {
    by_id: HashMap<NonceId, (u64, PreprocessedNonce)>,
    order: BTreeMap<u64, NonceId>,
    next: u64,
}

impl Pool {
    fn insert(&mut self, id: NonceId, nonce: PreprocessedNonce) {
        let seq = self.next;
        self.next += 1;
        if let Some((old, _)) = self.by_id.insert(id, (seq, nonce)) {
            self.order.remove(&old);
        }
        self.order.insert(seq, id);
        while self.by_id.len() > MAX_POOL {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.by_id.remove(&oldest);
        }
    }

    fn remove(&mut self, id: &NonceId) -> Option<PreprocessedNonce> {
        let (seq, nonce) = self.by_id.remove(id)?;
        self.order.remove(&seq);
        Some(nonce)
    }

    fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// Every pool of a signer.
#[derive(Debug, Default)]
pub struct NoncePools {
    pools: Mutex<HashMap<(IdentityPublic, GroupKey), Pool>>,
}

impl NoncePools {
    /// Makes `count` nonce pairs for (`coordinator`, `wallet`) and returns their commitments.
    ///
    /// The pool keeps at most [`MAX_POOL`]; older nonces are forgotten first.
    ///
    /// # Errors
    /// Too many at once.
    pub fn generate<R: RngCore + CryptoRng>(
        &self,
        coordinator: &IdentityPublic,
        wallet: &GroupKey,
        share: &KeyShare,
        count: u16,
        rng: &mut R,
    ) -> Result<Vec<PreCommitment>, NonceError> {
        if count > MAX_BATCH {
            return Err(NonceError::Batch);
        }
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let pool = pools.entry((*coordinator, *wallet)).or_default();
        let mut out = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let id = NonceId::random(rng);
            let nonce = PreprocessedNonce::generate(share, rng);
            out.push(PreCommitment {
                id,
                commitments: *nonce.commitments(),
            });
            pool.insert(id, nonce);
        }
        Ok(out)
    }

    /// Takes the nonces `ids` (in order) out of the pool of (`coordinator`, `wallet`): all
    /// of them leave it, even when one is unknown (then nothing is returned).
    ///
    /// # Errors
    /// An unknown, used or repeated id.
    pub fn take(
        &self,
        coordinator: &IdentityPublic,
        wallet: &GroupKey,
        ids: &[NonceId],
    ) -> Result<Vec<PreprocessedNonce>, NonceError> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let pool = pools.entry((*coordinator, *wallet)).or_default();
        let mut out = Vec::with_capacity(ids.len());
        let mut problem = None;
        for id in ids {
            match pool.remove(id) {
                Some(n) => out.push(n),
                None if problem.is_none() => {
                    problem = Some(if ids.iter().filter(|x| *x == id).count() > 1 {
                        NonceError::Duplicate(*id)
                    } else {
                        NonceError::Unknown(*id)
                    })
                }
                None => {}
            }
        }
        match problem {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Nonces held in every pool (for metrics).
    pub fn held(&self) -> usize {
        self.pools
            .lock()
            .map(|p| p.values().map(Pool::len).sum())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frost::dkg::{run_in_memory, DkgParams};
    use crate::identity::IdentityKey;
    use rand::rngs::OsRng;

    #[test]
    fn taken_once_per_coordinator_and_wallet_oldest_forgotten(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let shares = run_in_memory(DkgParams::new(2, 3)?, &mut OsRng)?;
        let share = &shares[0];
        let wallet = GroupKey::of(share.group());
        let me = IdentityKey::generate(&mut OsRng).public();
        let other = IdentityKey::generate(&mut OsRng).public();
        let pools = NoncePools::default();
        assert_eq!(
            pools.generate(&me, &wallet, share, MAX_BATCH + 1, &mut OsRng),
            Err(NonceError::Batch)
        );
        let first = pools.generate(&me, &wallet, share, 3, &mut OsRng)?;
        let ids: Vec<NonceId> = first.iter().map(|c| c.id).collect();
        // Another coordinator cannot take them (and taking does not remove them).
        assert!(matches!(
            pools.take(&other, &wallet, &ids[..1]),
            Err(NonceError::Unknown(_))
        ));
        // A repeated id: refused, and both named nonces are gone.
        assert!(matches!(
            pools.take(&me, &wallet, &[ids[0], ids[0]]),
            Err(NonceError::Duplicate(_))
        ));
        assert!(matches!(
            pools.take(&me, &wallet, &ids[..1]),
            Err(NonceError::Unknown(_))
        ));
        // The others are intact, once.
        let taken = pools.take(&me, &wallet, &ids[1..])?;
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0].commitments(), &first[1].commitments);
        assert!(pools.take(&me, &wallet, &ids[1..2]).is_err());
        assert_eq!(pools.held(), 0);
        // Beyond MAX_POOL the oldest are forgotten.
        let mut all = Vec::new();
        for _ in 0..(MAX_POOL / usize::from(MAX_BATCH) + 1) {
            all.extend(pools.generate(&me, &wallet, share, MAX_BATCH, &mut OsRng)?);
        }
        assert_eq!(pools.held(), MAX_POOL);
        let oldest = all[0].id;
        let newest = all[all.len() - 1].id;
        assert!(pools.take(&me, &wallet, &[oldest]).is_err());
        assert!(pools.take(&me, &wallet, &[newest]).is_ok());
        Ok(())
    }
}
