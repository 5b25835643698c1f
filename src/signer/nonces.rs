//! The signer's preprocessed nonces: per (coordinator, wallet) pools in memory only (a
//! restarted signer has none), bounded, each nonce taken out of its pool before it is used so
//! it can never sign twice. A full pool forgets its oldest nonces (a coordinator that lost
//! track of them — a crash, an abandoned request — would otherwise block the pool for good);
//! a coordinator naming a forgotten one is told so and refills.
//!
//! Each pool also keeps a reserve of nonce pairs whose commitments were never handed out,
//! made on a background thread after a signing answer ([`NoncePools::refill`]): the fresh
//! commitments of the next answer come from it instead of being computed while the
//! coordinator waits.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

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
    /// Made but never handed out (at most [`MAX_BATCH`]).
    reserve: Vec<PreprocessedNonce>,
    /// A background refill of the reserve is running.
    refilling: bool,
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

type PoolKey = (IdentityPublic, GroupKey);

/// Every pool of a signer.
#[derive(Debug, Default)]
pub struct NoncePools {
    pools: Arc<Mutex<HashMap<PoolKey, Pool>>>,
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
            let nonce = pool
                .reserve
                .pop()
                .unwrap_or_else(|| PreprocessedNonce::generate(share, rng));
            out.push(PreCommitment {
                id,
                commitments: *nonce.commitments(),
            });
            pool.insert(id, nonce);
        }
        Ok(out)
    }

    /// Makes, on a background thread, enough nonce pairs for the reserve of (`coordinator`,
    /// `wallet`) to hold `count` (at most [`MAX_BATCH`]); their commitments are handed out by
    /// later calls of [`NoncePools::generate`], drawing from `rng` (moved to that thread).
    /// Does nothing while a refill of that pool runs.
    pub fn refill<R: RngCore + CryptoRng + Send + 'static>(
        &self,
        coordinator: &IdentityPublic,
        wallet: &GroupKey,
        share: &KeyShare,
        count: u16,
        mut rng: R,
    ) {
        let key = (*coordinator, *wallet);
        let target = usize::from(count.min(MAX_BATCH));
        let missing = {
            let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            let pool = pools.entry(key).or_default();
            if pool.refilling || pool.reserve.len() >= target {
                return;
            }
            pool.refilling = true;
            target - pool.reserve.len()
        };
        let pools = Arc::clone(&self.pools);
        let share = share.clone();
        let spawned = std::thread::Builder::new()
            .name("ckm-nonces".into())
            .spawn(move || {
                let made: Vec<PreprocessedNonce> = (0..missing)
                    .map(|_| PreprocessedNonce::generate(&share, &mut rng))
                    .collect();
                drop(share);
                let mut pools = pools.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(pool) = pools.get_mut(&key) {
                    pool.reserve.extend(made);
                    pool.reserve.truncate(usize::from(MAX_BATCH));
                    pool.refilling = false;
                }
            });
        if spawned.is_err() {
            // No thread: the next answer makes its commitments itself.
            let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(pool) = pools.get_mut(&key) {
                pool.refilling = false;
            }
        }
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
    use crate::frost::pedersen::{run_in_memory, DkgParams};
    use crate::identity::IdentityKey;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn taken_once_per_coordinator_and_wallet_oldest_forgotten(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let mut rng = StdRng::seed_from_u64(7);
        let shares = run_in_memory(DkgParams::new(2, 3)?, &mut rng)?;
        let share = &shares[0];
        let wallet = GroupKey::of(share.group());
        let me = IdentityKey::generate(&mut rng).public();
        let other = IdentityKey::generate(&mut rng).public();
        let pools = NoncePools::default();
        assert_eq!(
            pools.generate(&me, &wallet, share, MAX_BATCH + 1, &mut rng),
            Err(NonceError::Batch)
        );
        let first = pools.generate(&me, &wallet, share, 3, &mut rng)?;
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
            all.extend(pools.generate(&me, &wallet, share, MAX_BATCH, &mut rng)?);
        }
        assert_eq!(pools.held(), MAX_POOL);
        let oldest = all[0].id;
        let newest = all[all.len() - 1].id;
        assert!(pools.take(&me, &wallet, &[oldest]).is_err());
        assert!(pools.take(&me, &wallet, &[newest]).is_ok());
        Ok(())
    }

    #[test]
    fn the_reserve_is_made_in_the_background_and_handed_out_once(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let mut rng = StdRng::seed_from_u64(7);
        let shares = run_in_memory(DkgParams::new(2, 3)?, &mut rng)?;
        let share = &shares[0];
        let wallet = GroupKey::of(share.group());
        let me = IdentityKey::generate(&mut rng).public();
        let pools = NoncePools::default();
        let reserved = |pools: &NoncePools| {
            pools
                .pools
                .lock()
                .map(|p| p.get(&(me, wallet)).map_or(0, |pool| pool.reserve.len()))
                .unwrap_or(0)
        };
        pools.refill(&me, &wallet, share, 5, StdRng::seed_from_u64(8));
        let started = std::time::Instant::now();
        while reserved(&pools) < 5 {
            assert!(started.elapsed() < std::time::Duration::from_secs(10));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Reserve nonces are not handed out: none can be taken yet.
        assert_eq!(pools.held(), 0);
        let given = pools.generate(&me, &wallet, share, 3, &mut rng)?;
        assert_eq!(reserved(&pools), 2);
        assert_eq!(pools.held(), 3);
        let ids: Vec<NonceId> = given.iter().map(|c| c.id).collect();
        let taken = pools.take(&me, &wallet, &ids)?;
        for (n, c) in taken.iter().zip(&given) {
            assert_eq!(n.commitments(), &c.commitments);
        }
        assert!(pools.take(&me, &wallet, &ids).is_err());
        Ok(())
    }
}
