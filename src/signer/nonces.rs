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
//!
//! Bounded in time and bound to the epoch (issue 24): a nonce older than [`NONCE_TTL_SECS`]
//! (wall clock) is refused and dropped, and a pool made at one epoch of a wallet is dropped
//! as soon as the wallet is asked for at another. Per coordinator at most
//! [`MAX_PER_COORDINATOR`] nonces are held over all its wallets (the pool used least
//! recently is dropped first). Nonces live in memory only, which is why a signer must never
//! run from a restored VM or RAM snapshot: the snapshot's pool would hand the same nonces out
//! again for other messages, and two signatures with one nonce give the share away (the TTL
//! bounds that window when the clock has moved on; `docs/operations.md`).

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
/// Most nonces held for one coordinator over all its wallets.
pub const MAX_PER_COORDINATOR: usize = 10_000;
/// How long a preprocessed nonce may wait for its signing (wall-clock seconds).
pub const NONCE_TTL_SECS: u64 = 24 * 3600;

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
    /// A nonce older than [`NONCE_TTL_SECS`] (dropped).
    #[error(
        "preprocessed nonce {0} expired (older than {NONCE_TTL_SECS} s; fetch fresh commitments)"
    )]
    Expired(NonceId),
}

/// One (coordinator, wallet) pool at one epoch, oldest first.
#[derive(Debug, Default)]
struct Pool {
    epoch: u64,
    /// Sequence number, creation time (unix seconds) and nonce.
    by_id: HashMap<NonceId, (u64, u64, PreprocessedNonce)>,
    order: BTreeMap<u64, NonceId>,
    next: u64,
    /// Made but never handed out (at most [`MAX_BATCH`]).
    reserve: Vec<PreprocessedNonce>,
    /// A background refill of the reserve is running.
    refilling: bool,
    /// When it was last used (a counter over all pools), for eviction.
    touched: u64,
}

impl Pool {
    fn insert(&mut self, id: NonceId, nonce: PreprocessedNonce, now: u64) {
        let seq = self.next;
        self.next += 1;
        if let Some((old, _, _)) = self.by_id.insert(id, (seq, now, nonce)) {
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

    fn remove(&mut self, id: &NonceId) -> Option<(u64, PreprocessedNonce)> {
        let (seq, made, nonce) = self.by_id.remove(id)?;
        self.order.remove(&seq);
        Some((made, nonce))
    }

    /// Drops the nonces older than the TTL (the oldest come first).
    fn expire(&mut self, now: u64) {
        while let Some((&seq, id)) = self.order.first_key_value() {
            match self.by_id.get(id) {
                Some((_, made, _)) if now.saturating_sub(*made) < NONCE_TTL_SECS => break,
                _ => {
                    let id = *id;
                    self.order.remove(&seq);
                    self.by_id.remove(&id);
                }
            }
        }
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
    touches: std::sync::atomic::AtomicU64,
}

/// The pool of `key` at `epoch`: a pool of another epoch is dropped first.
fn pool_at(
    pools: &mut HashMap<PoolKey, Pool>,
    key: PoolKey,
    epoch: u64,
    touched: u64,
) -> &mut Pool {
    let pool = pools.entry(key).or_default();
    if pool.epoch != epoch {
        *pool = Pool {
            epoch,
            ..Pool::default()
        };
    }
    pool.touched = touched;
    pool
}

/// Drops whole pools of `coordinator` (least recently used first, never `keep`) until it
/// holds at most [`MAX_PER_COORDINATOR`] nonces.
fn cap_coordinator(
    pools: &mut HashMap<PoolKey, Pool>,
    coordinator: &IdentityPublic,
    keep: &PoolKey,
) {
    loop {
        let held: usize = pools
            .iter()
            .filter(|(k, _)| k.0 == *coordinator)
            .map(|(_, p)| p.len() + p.reserve.len())
            .sum();
        if held <= MAX_PER_COORDINATOR {
            return;
        }
        let victim = pools
            .iter()
            .filter(|(k, _)| k.0 == *coordinator && *k != keep)
            .min_by_key(|(_, p)| p.touched)
            .map(|(k, _)| *k);
        match victim {
            Some(k) => {
                pools.remove(&k);
            }
            None => return,
        }
    }
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
        epoch: u64,
        share: &KeyShare,
        count: u16,
        rng: &mut R,
    ) -> Result<Vec<PreCommitment>, NonceError> {
        self.generate_at(
            coordinator,
            wallet,
            epoch,
            share,
            count,
            rng,
            crate::auth::unix_now(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn generate_at<R: RngCore + CryptoRng>(
        &self,
        coordinator: &IdentityPublic,
        wallet: &GroupKey,
        epoch: u64,
        share: &KeyShare,
        count: u16,
        rng: &mut R,
        now: u64,
    ) -> Result<Vec<PreCommitment>, NonceError> {
        if count > MAX_BATCH {
            return Err(NonceError::Batch);
        }
        let touched = self.touch();
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let key = (*coordinator, *wallet);
        let pool = pool_at(&mut pools, key, epoch, touched);
        pool.expire(now);
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
            pool.insert(id, nonce, now);
        }
        cap_coordinator(&mut pools, coordinator, &key);
        Ok(out)
    }

    fn touch(&self) -> u64 {
        self.touches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Makes, on a background thread, enough nonce pairs for the reserve of (`coordinator`,
    /// `wallet`) to hold `count` (at most [`MAX_BATCH`]); their commitments are handed out by
    /// later calls of [`NoncePools::generate`], drawing from `rng` (moved to that thread).
    /// Does nothing while a refill of that pool runs.
    pub fn refill<R: RngCore + CryptoRng + Send + 'static>(
        &self,
        coordinator: &IdentityPublic,
        wallet: &GroupKey,
        epoch: u64,
        share: &KeyShare,
        count: u16,
        mut rng: R,
    ) {
        let key = (*coordinator, *wallet);
        let target = usize::from(count.min(MAX_BATCH));
        let touched = self.touch();
        let missing = {
            let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            let pool = pool_at(&mut pools, key, epoch, touched);
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
                // Only into the pool of the epoch they were made for.
                if let Some(pool) = pools.get_mut(&key).filter(|p| p.epoch == epoch) {
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
        epoch: u64,
        ids: &[NonceId],
    ) -> Result<Vec<PreprocessedNonce>, NonceError> {
        self.take_at(coordinator, wallet, epoch, ids, crate::auth::unix_now())
    }

    fn take_at(
        &self,
        coordinator: &IdentityPublic,
        wallet: &GroupKey,
        epoch: u64,
        ids: &[NonceId],
        now: u64,
    ) -> Result<Vec<PreprocessedNonce>, NonceError> {
        let touched = self.touch();
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let pool = pool_at(&mut pools, (*coordinator, *wallet), epoch, touched);
        let mut out = Vec::with_capacity(ids.len());
        let mut problem = None;
        for id in ids {
            match pool.remove(id) {
                Some((made, _))
                    if now.saturating_sub(made) >= NONCE_TTL_SECS && problem.is_none() =>
                {
                    problem = Some(NonceError::Expired(*id));
                }
                // Expired: dropped either way.
                Some((made, _)) if now.saturating_sub(made) >= NONCE_TTL_SECS => {}
                Some((_, n)) => out.push(n),
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

    type Fixture = (StdRng, Vec<KeyShare>, GroupKey, IdentityPublic);

    /// A seeded generator, the shares of a 2-of-3 group, its wallet and a coordinator.
    fn fixture(seed: u64) -> Result<Fixture, Box<dyn std::error::Error>> {
        let mut rng = StdRng::seed_from_u64(seed);
        let shares = run_in_memory(DkgParams::new(2, 3)?, &mut rng)?;
        let wallet = GroupKey::of(shares[0].group());
        let me = IdentityKey::generate(&mut rng).public();
        Ok((rng, shares, wallet, me))
    }

    #[test]
    fn taken_once_per_coordinator_and_wallet_oldest_forgotten(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (mut rng, shares, wallet, me) = fixture(7)?;
        let share = &shares[0];
        let other = IdentityKey::generate(&mut rng).public();
        let pools = NoncePools::default();
        assert_eq!(
            pools.generate(&me, &wallet, 0, share, MAX_BATCH + 1, &mut rng),
            Err(NonceError::Batch)
        );
        let first = pools.generate(&me, &wallet, 0, share, 3, &mut rng)?;
        let ids: Vec<NonceId> = first.iter().map(|c| c.id).collect();
        // Another coordinator cannot take them (and taking does not remove them).
        assert!(matches!(
            pools.take(&other, &wallet, 0, &ids[..1]),
            Err(NonceError::Unknown(_))
        ));
        // A repeated id: refused, and both named nonces are gone.
        assert!(matches!(
            pools.take(&me, &wallet, 0, &[ids[0], ids[0]]),
            Err(NonceError::Duplicate(_))
        ));
        assert!(matches!(
            pools.take(&me, &wallet, 0, &ids[..1]),
            Err(NonceError::Unknown(_))
        ));
        // The others are intact, once.
        let taken = pools.take(&me, &wallet, 0, &ids[1..])?;
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0].commitments(), &first[1].commitments);
        assert!(pools.take(&me, &wallet, 0, &ids[1..2]).is_err());
        assert_eq!(pools.held(), 0);
        // Beyond MAX_POOL the oldest are forgotten.
        let mut all = Vec::new();
        for _ in 0..(MAX_POOL / usize::from(MAX_BATCH) + 1) {
            all.extend(pools.generate(&me, &wallet, 0, share, MAX_BATCH, &mut rng)?);
        }
        assert_eq!(pools.held(), MAX_POOL);
        let oldest = all[0].id;
        let newest = all[all.len() - 1].id;
        assert!(pools.take(&me, &wallet, 0, &[oldest]).is_err());
        assert!(pools.take(&me, &wallet, 0, &[newest]).is_ok());
        Ok(())
    }

    #[test]
    fn the_reserve_is_made_in_the_background_and_handed_out_once(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (mut rng, shares, wallet, me) = fixture(7)?;
        let share = &shares[0];
        let pools = NoncePools::default();
        let reserved = |pools: &NoncePools| {
            pools
                .pools
                .lock()
                .map(|p| p.get(&(me, wallet)).map_or(0, |pool| pool.reserve.len()))
                .unwrap_or(0)
        };
        pools.refill(&me, &wallet, 0, share, 5, StdRng::seed_from_u64(8));
        let started = std::time::Instant::now();
        while reserved(&pools) < 5 {
            assert!(started.elapsed() < std::time::Duration::from_secs(10));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Reserve nonces are not handed out: none can be taken yet.
        assert_eq!(pools.held(), 0);
        let given = pools.generate(&me, &wallet, 0, share, 3, &mut rng)?;
        assert_eq!(reserved(&pools), 2);
        assert_eq!(pools.held(), 3);
        let ids: Vec<NonceId> = given.iter().map(|c| c.id).collect();
        let taken = pools.take(&me, &wallet, 0, &ids)?;
        for (n, c) in taken.iter().zip(&given) {
            assert_eq!(n.commitments(), &c.commitments);
        }
        assert!(pools.take(&me, &wallet, 0, &ids).is_err());
        Ok(())
    }

    #[test]
    fn nonces_expire_and_die_with_their_epoch_and_a_coordinator_is_capped(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (mut rng, shares, wallet, me) = fixture(9)?;
        let share = &shares[0];
        let pools = NoncePools::default();
        let t0 = 1_000_000;
        // Expired at the TTL, usable just before it.
        let a = pools.generate_at(&me, &wallet, 3, share, 2, &mut rng, t0)?;
        assert!(pools
            .take_at(&me, &wallet, 3, &[a[0].id], t0 + NONCE_TTL_SECS - 1)
            .is_ok());
        assert!(matches!(
            pools.take_at(&me, &wallet, 3, &[a[1].id], t0 + NONCE_TTL_SECS),
            Err(NonceError::Expired(id)) if id == a[1].id
        ));
        // A later batch drops the expired ones when it is made.
        let _ = pools.generate_at(&me, &wallet, 3, share, 4, &mut rng, t0)?;
        let _ = pools.generate_at(&me, &wallet, 3, share, 1, &mut rng, t0 + NONCE_TTL_SECS)?;
        assert_eq!(pools.held(), 1);
        // Asked for another epoch, the pool of the old one is gone.
        let b = pools.generate_at(&me, &wallet, 3, share, 2, &mut rng, t0)?;
        assert!(matches!(
            pools.take_at(&me, &wallet, 4, &[b[0].id], t0),
            Err(NonceError::Unknown(_))
        ));
        assert!(matches!(
            pools.take_at(&me, &wallet, 3, &[b[1].id], t0),
            Err(NonceError::Unknown(_))
        ));
        // One coordinator over many wallets: at most MAX_PER_COORDINATOR, the least recently
        // used pool dropped first; another coordinator is not touched.
        let other = IdentityKey::generate(&mut rng).public();
        let kept = pools.generate_at(&other, &wallet, 0, share, 10, &mut rng, t0)?;
        let wallets: Vec<GroupKey> = (0..(MAX_PER_COORDINATOR / MAX_POOL + 2))
            .map(|_| {
                let s =
                    run_in_memory(DkgParams::new(2, 3).expect("params"), &mut rng).expect("dkg");
                GroupKey::of(s[0].group())
            })
            .collect();
        let mut first = Vec::new();
        for (k, w) in wallets.iter().enumerate() {
            for _ in 0..(MAX_POOL / usize::from(MAX_BATCH)) {
                let made = pools.generate_at(&me, w, 0, share, MAX_BATCH, &mut rng, t0)?;
                if k == 0 && first.is_empty() {
                    first = made;
                }
            }
        }
        assert!(pools.held() <= MAX_PER_COORDINATOR + kept.len());
        assert!(matches!(
            pools.take_at(&me, &wallets[0], 0, &[first[0].id], t0),
            Err(NonceError::Unknown(_))
        ));
        assert!(pools.take_at(&other, &wallet, 0, &[kept[0].id], t0).is_ok());
        Ok(())
    }
}
