//! One-round signing with preprocessed nonces, made robust with ROAST (Ruffing, Ronge,
//! Schneider, Schröder, Fournier, CCS 2022).
//!
//! Preprocessing: a signer keeps, in memory only, a pool of nonce pairs per (coordinator,
//! wallet) and hands out their commitments in advance ([`PreCommitment`], in batches, and a
//! fresh set in every signing answer). The coordinator keeps them ([`CommitmentStore`]). To
//! sign it sends each chosen signer one request: the PSBT, the signing packages built from
//! preprocessed commitments, and the ids of that signer's nonces; the signer checks the PSBT,
//! computes the sighashes, consumes those nonces (once: they leave its pool) and answers with
//! its shares and fresh commitments. One round trip online.
//!
//! ROAST ([`RoastCoordinator`]): the coordinator starts a session as soon as any `t`
//! responsive signers have fresh commitments, and keeps sessions concurrent: a signer that
//! answers a session returns fresh commitments and is ready for the next one, a signer whose
//! share does not verify is marked malicious and never chosen again, a signer that does not
//! answer simply never becomes ready again. With at most `n − t` faulty signers (hanging,
//! slow, refusing or sending bad shares), a session of `t` responsive honest signers
//! eventually forms and completes — no step waits on a timeout.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use bitcoin::{Psbt, Transaction};
use frost::round1::SigningCommitments;
use frost::round2::SignatureShare;
use frost_secp256k1_tr as frost;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use super::cosign::SignError;
use super::SessionId;
use crate::frost::identifier;
use crate::identity::{IdentityKey, IdentityPublic};
use crate::keys::{GroupKey, GroupPublic};
use crate::psbt::{CoordinateError, SessionPackages, SigningSession};
use crate::recovery::RecoveryPolicy;

/// The id of one preprocessed nonce pair at one signer (16 random bytes, hex in JSON).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NonceId(#[serde(with = "hex::serde")] pub [u8; 16]);

impl NonceId {
    /// A fresh random id.
    pub fn random<R: RngCore>(rng: &mut R) -> Self {
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        NonceId(b)
    }
}

impl fmt::Debug for NonceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NonceId({})", hex::encode(self.0))
    }
}

impl fmt::Display for NonceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A preprocessed nonce pair's public side, as a signer hands it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreCommitment {
    /// Its id at the signer.
    pub id: NonceId,
    /// The commitments.
    pub commitments: SigningCommitments,
}

/// One signer's commitments for every input of a session, in input order. On the wire one
/// hex string of `hiding ‖ binding` compressed points, 66 bytes per input — a third of the
/// size of frost's signing packages, which repeat headers and the message for every input
/// (the signer builds the packages itself, with the sighashes it computed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputCommitments(pub Vec<SigningCommitments>);

impl InputCommitments {
    /// The commitments of preprocessed nonces, in order.
    pub fn of(nonces: &[PreCommitment]) -> Self {
        InputCommitments(nonces.iter().map(|p| p.commitments).collect())
    }
}

/// Bytes per input in [`InputCommitments`].
const COMMITMENT_BYTES: usize = 66;

impl Serialize for InputCommitments {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = crate::frost::compressed_commitments(&self.0)
            .ok_or_else(|| serde::ser::Error::custom("a commitment is the identity point"))?;
        serializer.serialize_str(&hex::encode(bytes.as_flattened()))
    }
}

impl<'de> Deserialize<'de> for InputCommitments {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let bytes = hex::decode(text.as_bytes()).map_err(D::Error::custom)?;
        if bytes.len() % COMMITMENT_BYTES != 0 {
            return Err(D::Error::custom(format!(
                "commitments are {COMMITMENT_BYTES} bytes per input, got {} bytes",
                bytes.len()
            )));
        }
        bytes
            .chunks_exact(COMMITMENT_BYTES)
            .map(|chunk| {
                let (hiding, binding) = chunk.split_at(COMMITMENT_BYTES / 2);
                Ok(SigningCommitments::new(
                    frost::round1::NonceCommitment::deserialize(hiding)
                        .map_err(D::Error::custom)?,
                    frost::round1::NonceCommitment::deserialize(binding)
                        .map_err(D::Error::custom)?,
                ))
            })
            .collect::<Result<Vec<_>, D::Error>>()
            .map(InputCommitments)
    }
}

/// Each commitment as frost's `SigningCommitments::serialize` encodes it (what a batch
/// signs), without its field inversion per point: frost's encoding of the first commitment is
/// a template whose two points are replaced by each commitment's
/// ([`crate::frost::compressed_commitments`]); the result for the last commitment is compared
/// with frost's own, and frost encodes every commitment when it differs.
fn frost_encodings(list: &[SigningCommitments]) -> Option<Vec<Vec<u8>>> {
    let one_by_one = || list.iter().map(|c| c.serialize().ok()).collect();
    // The template costs three encodings (first, all at once, last): not worth it for the one
    // or two commitments of a small signing's fresh batch.
    let (Some(first), Some(last), 3..) = (list.first(), list.last(), list.len()) else {
        return one_by_one();
    };
    let template = first.serialize().ok()?;
    let compact = crate::frost::compressed_commitments(list)?;
    let (hiding, binding) = compact.first()?.split_at(COMMITMENT_BYTES / 2);
    let find = |needle: &[u8], from: usize| {
        template
            .get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let Some(h) = find(hiding, 0) else {
        return one_by_one();
    };
    let Some(b) = find(binding, h + hiding.len()) else {
        return one_by_one();
    };
    let fill = |c: &[u8; COMMITMENT_BYTES]| -> Option<Vec<u8>> {
        let (hiding, binding) = c.split_at(COMMITMENT_BYTES / 2);
        let mut t = template.clone();
        t.get_mut(h..h + hiding.len())?.copy_from_slice(hiding);
        t.get_mut(b..b + binding.len())?.copy_from_slice(binding);
        Some(t)
    };
    let out: Option<Vec<Vec<u8>>> = compact.iter().map(fill).collect();
    match out {
        Some(out) if out.last() == last.serialize().ok().as_ref() => Some(out),
        _ => one_by_one(),
    }
}

/// Signing domain of commitment batches (tag `ckm/nonces`).
pub const BATCH_DOMAIN: &str = "nonces";

/// A batch of preprocessed commitments as a signer hands them out: signed with its identity
/// key, bound to the coordinator and the wallet they are for, so a coordinator stores only
/// commitments its signers really made for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitmentBatch {
    /// The commitments.
    pub commitments: Vec<PreCommitment>,
    /// BIP-340 signature of the signer's identity key (domain `nonces`) over the coordinator,
    /// the wallet and every (id, commitments).
    #[serde(with = "hex::serde")]
    pub signature: Vec<u8>,
}

/// Why a commitment batch was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The signature does not verify under the signer's certified identity.
    #[error("the commitment batch is not signed by signer {signer}'s certified identity")]
    Signature {
        /// Roster index.
        signer: u16,
    },
    /// A commitment cannot be encoded (malformed).
    #[error("signer {signer} sent a malformed commitment")]
    Malformed {
        /// Roster index.
        signer: u16,
    },
    /// A nonce id appears twice.
    #[error("signer {signer} sent nonce id {id} twice")]
    Duplicate {
        /// Roster index.
        signer: u16,
        /// The id.
        id: NonceId,
    },
}

impl CommitmentBatch {
    /// The signed message: coordinator, wallet, then every (id, commitments).
    fn message(
        coordinator: &IdentityPublic,
        wallet: &GroupKey,
        commitments: &[PreCommitment],
    ) -> Option<Vec<u8>> {
        let mut m = Vec::with_capacity(65 + commitments.len() * 90);
        m.extend_from_slice(b"ckm/nonces/v1");
        m.extend_from_slice(&coordinator.to_bytes());
        m.extend_from_slice(&wallet.to_bytes());
        m.extend_from_slice(&u32::try_from(commitments.len()).ok()?.to_be_bytes());
        let list: Vec<SigningCommitments> = commitments.iter().map(|c| c.commitments).collect();
        for (c, bytes) in commitments.iter().zip(frost_encodings(&list)?) {
            m.extend_from_slice(&c.id.0);
            m.extend_from_slice(&u32::try_from(bytes.len()).ok()?.to_be_bytes());
            m.extend_from_slice(&bytes);
        }
        Some(m)
    }

    /// Signs `commitments` for `coordinator` and `wallet` (signer side).
    pub fn sign(
        key: &IdentityKey,
        coordinator: &IdentityPublic,
        wallet: &GroupKey,
        commitments: Vec<PreCommitment>,
    ) -> Self {
        let signature = Self::message(coordinator, wallet, &commitments)
            .map(|m| key.sign(BATCH_DOMAIN, &m).to_vec())
            .unwrap_or_default();
        CommitmentBatch {
            commitments,
            signature,
        }
    }

    /// Checks the batch came from `signer` (roster `index`) for `coordinator` and `wallet`,
    /// and returns its commitments.
    ///
    /// # Errors
    /// A bad signature, a malformed commitment or a repeated id.
    pub fn verify(
        self,
        index: u16,
        signer: &IdentityPublic,
        coordinator: &IdentityPublic,
        wallet: &GroupKey,
    ) -> Result<Vec<PreCommitment>, BatchError> {
        let message = Self::message(coordinator, wallet, &self.commitments)
            .ok_or(BatchError::Malformed { signer: index })?;
        signer
            .verify(BATCH_DOMAIN, &message, &self.signature)
            .map_err(|_| BatchError::Signature { signer: index })?;
        let mut seen = BTreeSet::new();
        for c in &self.commitments {
            if !seen.insert(c.id) {
                return Err(BatchError::Duplicate {
                    signer: index,
                    id: c.id,
                });
            }
        }
        Ok(self.commitments)
    }
}

/// Where the coordinator keeps the commitments signers handed out (the wallet database in
/// the CLI; a map in tests and benchmarks). A commitment is taken out before it is used, so
/// it is never offered twice.
pub trait CommitmentStore {
    /// Takes `count` commitments of `signer` (all or none).
    fn take(&mut self, signer: u16, count: usize) -> Option<Vec<PreCommitment>>;
    /// Keeps commitments of `signer`.
    fn add(&mut self, signer: u16, commitments: Vec<PreCommitment>);
    /// Forgets every commitment of `signer` (it restarted and lost its pool).
    fn clear(&mut self, signer: u16);
    /// How many commitments of `signer` are kept.
    fn count(&self, signer: u16) -> usize;
    /// Whether the wallet was last seen to need the statement rounds (a signer enforces a
    /// wallet-wide limit): then one-round signing is not tried.
    fn needs_statements(&self) -> bool {
        false
    }
    /// Remembers whether the wallet needs the statement rounds.
    fn set_needs_statements(&mut self, _needs: bool) {}
}

/// A [`CommitmentStore`] in memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryCommitments(HashMap<u16, Vec<PreCommitment>>, bool);

impl CommitmentStore for MemoryCommitments {
    fn needs_statements(&self) -> bool {
        self.1
    }
    fn set_needs_statements(&mut self, needs: bool) {
        self.1 = needs;
    }
    fn take(&mut self, signer: u16, count: usize) -> Option<Vec<PreCommitment>> {
        let held = self.0.get_mut(&signer)?;
        if held.len() < count {
            return None;
        }
        Some(held.drain(..count).collect())
    }
    fn add(&mut self, signer: u16, commitments: Vec<PreCommitment>) {
        self.0.entry(signer).or_default().extend(commitments);
    }
    fn clear(&mut self, signer: u16) {
        self.0.remove(&signer);
    }
    fn count(&self, signer: u16) -> usize {
        self.0.get(&signer).map_or(0, Vec::len)
    }
}

/// A session to start: send each chosen signer the PSBT, the packages and its nonce ids.
#[derive(Debug, Clone)]
pub struct SessionStart {
    /// The session.
    pub session: SessionId,
    /// The chosen signers.
    pub chosen: Vec<u16>,
    /// One signing package per input (the same for every chosen signer).
    pub packages: Arc<SessionPackages>,
    /// What the signers are sent instead: every chosen signer's commitments.
    pub commitments: Arc<BTreeMap<u16, InputCommitments>>,
    /// Each chosen signer's nonce ids, one per input.
    pub nonces: BTreeMap<u16, Vec<NonceId>>,
}

#[derive(Debug)]
struct Active {
    chosen: Vec<u16>,
    packages: Arc<SessionPackages>,
    shares: BTreeMap<u16, Vec<SignatureShare>>,
    /// A member failed: the session can never complete.
    dead: bool,
}

/// A successful ROAST run.
#[derive(Debug, Clone)]
pub struct RoastOutcome {
    /// The signers whose shares made the signatures.
    pub signers: Vec<u16>,
    /// Signers whose shares did not verify.
    pub malicious: Vec<u16>,
    /// Signers excluded and why (refusals, failures).
    pub excluded: Vec<(u16, String)>,
    /// Sessions started.
    pub sessions: usize,
    /// The finalized transaction.
    pub transaction: Transaction,
}

/// What feeding a signer's shares did.
#[derive(Debug)]
#[non_exhaustive]
pub enum SharesOutcome {
    /// Every signature verified and the PSBT is finalized.
    Done(Box<RoastOutcome>),
    /// The session waits for other members. Before this signer may join another session,
    /// run the check (it may run on another thread) and feed its verdict to
    /// [`RoastCoordinator::checked`]; a signer whose shares are invalid is thus never chosen
    /// again, even if its session never completes.
    Check(ShareCheck),
    /// The session completed but shares were invalid: their signers are marked malicious.
    /// This signer may join another session if it is not one of them.
    Failed {
        /// The culprits.
        culprits: Vec<u16>,
    },
    /// Not for a known session or not a member: ignored.
    Ignored,
}

/// A check of one signer's shares of one session, runnable anywhere (see
/// [`SharesOutcome::Check`]).
#[derive(Debug)]
pub struct ShareCheck {
    core: Arc<SigningSession>,
    packages: Arc<SessionPackages>,
    /// The signer.
    pub signer: u16,
    shares: Vec<SignatureShare>,
}

impl ShareCheck {
    /// Verifies every share; `None` when `stop` said so first. A malformed answer counts as
    /// invalid.
    pub fn run(&self, stop: &(dyn Fn() -> bool + Sync)) -> Option<bool> {
        let Ok(id) = identifier(self.signer) else {
            return Some(false);
        };
        match self
            .core
            .verify_shares(&self.packages, id, &self.shares, stop)
        {
            Ok(verdict) => verdict,
            Err(_) => Some(false),
        }
    }
}

/// Why a hedged start did not happen.
#[derive(Debug)]
#[non_exhaustive]
pub enum HedgeError {
    /// The signer is not ready.
    NotReady(u16),
    /// No further commitment set for `signer`; the sets taken so far are handed back (give
    /// them back to the store).
    Short {
        /// The signer.
        signer: u16,
        /// Sets taken from `more`, by signer.
        taken: BTreeMap<u16, Vec<Vec<PreCommitment>>>,
    },
    /// The signing packages cannot be built.
    Sign(SignError),
}

impl From<SignError> for HedgeError {
    fn from(e: SignError) -> Self {
        HedgeError::Sign(e)
    }
}

/// Every `k`-subset of `items`, in lexicographic order.
pub fn subsets(items: &[u16], k: usize) -> Vec<Vec<u16>> {
    fn go(items: &[u16], k: usize, from: usize, cur: &mut Vec<u16>, out: &mut Vec<Vec<u16>>) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for j in from..items.len() {
            if let Some(x) = items.get(j) {
                cur.push(*x);
                go(items, k, j + 1, cur, out);
                cur.pop();
            }
        }
    }
    let mut out = Vec::new();
    if k <= items.len() {
        go(items, k, 0, &mut Vec::with_capacity(k), &mut out);
    }
    out
}

/// Number of `k`-subsets of `n` items (saturating).
pub fn binomial(n: usize, k: usize) -> usize {
    if k > n {
        return 0;
    }
    let k = k.min(n - k);
    let mut r: usize = 1;
    for i in 0..k {
        r = r.saturating_mul(n - i) / (i + 1);
    }
    r
}

/// The coordinator's ROAST over one-round sessions, without I/O.
#[derive(Debug)]
pub struct RoastCoordinator {
    core: Arc<SigningSession>,
    roster: Vec<u16>,
    need: u16,
    ready: BTreeMap<u16, Vec<PreCommitment>>,
    malicious: BTreeSet<u16>,
    excluded: BTreeMap<u16, String>,
    sessions: BTreeMap<SessionId, Active>,
    started: usize,
}

impl RoastCoordinator {
    /// Checks `psbt` as a signer would and prepares to co-sign it with `roster` (indexes) of
    /// `group`.
    ///
    /// # Errors
    /// The PSBT is not the wallet's.
    pub fn new(psbt: &Psbt, group: &GroupPublic, roster: Vec<u16>) -> Result<Self, SignError> {
        Self::with_recovery(psbt, group, None, roster)
    }

    /// Like [`RoastCoordinator::new`] for a wallet with a certified recovery path: every input
    /// and change output is checked against `recovery`, and each input is signed with the
    /// Taproot tweak of its own merkle root.
    ///
    /// # Errors
    /// The PSBT is not the wallet's.
    pub fn with_recovery(
        psbt: &Psbt,
        group: &GroupPublic,
        recovery: Option<&RecoveryPolicy>,
        roster: Vec<u16>,
    ) -> Result<Self, SignError> {
        Ok(RoastCoordinator {
            core: Arc::new(SigningSession::with_recovery(psbt, group, recovery)?),
            need: group.threshold(),
            roster,
            ready: BTreeMap::new(),
            malicious: BTreeSet::new(),
            excluded: BTreeMap::new(),
            sessions: BTreeMap::new(),
            started: 0,
        })
    }

    /// Nonces needed per session from each signer: one per input.
    pub fn inputs(&self) -> usize {
        self.core.checked().inputs().len()
    }

    /// Sessions started so far.
    pub fn sessions_started(&self) -> usize {
        self.started
    }

    /// Signers needed per session (the threshold).
    pub fn threshold(&self) -> u16 {
        self.need
    }

    /// Signers ready for the next session.
    pub fn ready_count(&self) -> usize {
        self.ready.len()
    }

    /// The roster.
    pub fn roster(&self) -> &[u16] {
        &self.roster
    }

    /// Whether `signer` may still take part (not malicious, not excluded).
    pub fn usable(&self, signer: u16) -> bool {
        self.roster.contains(&signer)
            && !self.malicious.contains(&signer)
            && !self.excluded.contains_key(&signer)
    }

    /// `signer` is responsive with fresh commitments for one session (one per input).
    pub fn ready(&mut self, signer: u16, commitments: Vec<PreCommitment>) {
        if self.usable(signer) && commitments.len() == self.inputs() {
            self.ready.insert(signer, commitments);
        }
    }

    /// `signer` may not take part any more (it refused, for a reason a retry won't change).
    pub fn exclude(&mut self, signer: u16, reason: String) {
        self.ready.remove(&signer);
        self.excluded.insert(signer, reason);
        for s in self.sessions.values_mut() {
            if s.chosen.contains(&signer) {
                s.dead = true;
            }
        }
    }

    /// A member of `session` failed (no answer, a refusal): that session can never complete.
    pub fn failed(&mut self, session: &SessionId, signer: u16) {
        if let Some(s) = self.sessions.get_mut(session) {
            if s.chosen.contains(&signer) {
                s.dead = true;
            }
        }
    }

    /// Whether `t` signers could still make a signature.
    pub fn possible(&self) -> bool {
        self.roster.iter().filter(|i| self.usable(**i)).count() >= usize::from(self.need)
    }

    /// Why it is not possible (or what went wrong so far).
    pub fn failure(&self) -> SignError {
        let mut failures: Vec<(u16, String)> =
            self.excluded.iter().map(|(i, m)| (*i, m.clone())).collect();
        for m in &self.malicious {
            failures.push((
                *m,
                format!("signer {m} returned an invalid signature share"),
            ));
        }
        SignError::NotEnoughSigners {
            available: self.roster.iter().filter(|i| self.usable(**i)).count(),
            need: self.need,
            failures,
            culprits: self.malicious.iter().copied().collect(),
        }
    }

    /// Starts as many sessions as the ready signers allow (`t` each).
    ///
    /// # Errors
    /// The signing packages cannot be built (a bug or malformed commitments).
    pub fn start<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
    ) -> Result<Vec<SessionStart>, SignError> {
        let mut out = Vec::new();
        while self.ready.len() >= usize::from(self.need) {
            let chosen: Vec<u16> = self
                .ready
                .keys()
                .copied()
                .take(usize::from(self.need))
                .collect();
            let members = chosen
                .iter()
                .filter_map(|i| self.ready.remove(i).map(|c| (*i, c)))
                .collect();
            out.push(self.open(members, rng)?);
        }
        Ok(out)
    }

    /// The signers ready for a session, in roster order.
    pub fn ready_signers(&self) -> Vec<u16> {
        self.ready.keys().copied().collect()
    }

    /// Whether `signer` is ready (holds commitments for the next session).
    pub fn is_ready(&self, signer: u16) -> bool {
        self.ready.contains_key(&signer)
    }

    /// Hedged start: one session for every `t`-subset of `signers` (all ready), started at
    /// once, so that with at most `signers − t` faulty among them one session has only
    /// honest members and completes in one round trip. A signer's first session uses its
    /// ready commitments, each further one a set from `more` (one commitment per input, as
    /// [`RoastCoordinator::ready`] takes). Every session has its own nonces: a signer in
    /// several sessions signs the same message with different nonces, as in consecutive
    /// ROAST sessions.
    ///
    /// # Errors
    /// A signer is not ready or `more` has no set for it (nothing is started then), or the
    /// signing packages cannot be built.
    pub fn start_hedged<R: RngCore + CryptoRng>(
        &mut self,
        signers: &[u16],
        more: &mut dyn FnMut(u16) -> Option<Vec<PreCommitment>>,
        rng: &mut R,
    ) -> Result<Vec<SessionStart>, HedgeError> {
        let subsets = subsets(signers, usize::from(self.need));
        let mut sets: BTreeMap<u16, Vec<Vec<PreCommitment>>> = BTreeMap::new();
        for i in signers {
            let uses = subsets.iter().filter(|s| s.contains(i)).count();
            if !self.ready.contains_key(i) {
                return Err(HedgeError::NotReady(*i));
            }
            let mut list = Vec::with_capacity(uses);
            for _ in 1..uses {
                match more(*i) {
                    Some(c) if c.len() == self.inputs() => list.push(c),
                    _ => {
                        return Err(HedgeError::Short {
                            signer: *i,
                            taken: sets.into_iter().chain([(*i, list)]).collect(),
                        })
                    }
                }
            }
            sets.insert(*i, list);
        }
        let mut out = Vec::with_capacity(subsets.len());
        for subset in subsets {
            let mut members = BTreeMap::new();
            for i in subset {
                let c = match self.ready.remove(&i) {
                    Some(c) => c,
                    None => sets
                        .get_mut(&i)
                        .and_then(Vec::pop)
                        .ok_or(HedgeError::NotReady(i))?,
                };
                members.insert(i, c);
            }
            out.push(self.open(members, rng)?);
        }
        Ok(out)
    }

    /// Opens one session with these members and their commitments.
    fn open<R: RngCore + CryptoRng>(
        &mut self,
        members: BTreeMap<u16, Vec<PreCommitment>>,
        rng: &mut R,
    ) -> Result<SessionStart, SignError> {
        self.adopt(SessionId::random(rng), members)
    }

    /// Takes on a session whose requests were sent before this coordinator existed (before
    /// its own check of the PSBT finished): `session` with these members and commitments,
    /// as [`RoastCoordinator::start`] would have opened it.
    ///
    /// # Errors
    /// The signing packages cannot be built (wrong number of commitments, too few members).
    pub fn adopt(
        &mut self,
        session: SessionId,
        members: BTreeMap<u16, Vec<PreCommitment>>,
    ) -> Result<SessionStart, SignError> {
        let mut by_id = BTreeMap::new();
        let mut nonces = BTreeMap::new();
        let mut compact = BTreeMap::new();
        for (i, c) in &members {
            let id =
                identifier(*i).map_err(|source| CoordinateError::Frost { input: 0, source })?;
            let list = InputCommitments::of(c);
            by_id.insert(id, list.0.clone());
            compact.insert(*i, list);
            nonces.insert(*i, c.iter().map(|p| p.id).collect::<Vec<_>>());
        }
        let chosen: Vec<u16> = members.into_keys().collect();
        let packages = Arc::new(SessionPackages::new(self.core.signing_packages(&by_id)?));
        self.sessions.insert(
            session,
            Active {
                chosen: chosen.clone(),
                packages: Arc::clone(&packages),
                shares: BTreeMap::new(),
                dead: false,
            },
        );
        self.started += 1;
        Ok(SessionStart {
            session,
            chosen,
            packages,
            commitments: Arc::new(compact),
            nonces,
        })
    }

    /// What a started session's share checks and aggregation have in common
    /// ([`SigningSession::precompute`]), as work for another thread while its requests
    /// travel: the checks and the aggregation then skip most of their work.
    pub fn precomputation(&self, start: &SessionStart) -> impl FnOnce() + Send + 'static {
        let core = Arc::clone(&self.core);
        let packages = Arc::clone(&start.packages);
        move || core.precompute(&packages)
    }

    /// Commitments handed to [`RoastCoordinator::ready`] that no session used (never sent
    /// to anyone): give them back to the store.
    pub fn unused(&mut self) -> Vec<(u16, Vec<PreCommitment>)> {
        std::mem::take(&mut self.ready).into_iter().collect()
    }

    /// Whether `session` may still complete (started, not finished, no member failed).
    pub fn live(&self, session: &SessionId) -> bool {
        self.sessions.get(session).is_some_and(|s| !s.dead)
    }

    /// Whether `signer` is a member of a session still waiting for shares.
    pub fn busy(&self, signer: u16) -> bool {
        self.sessions
            .values()
            .any(|s| !s.dead && s.chosen.contains(&signer) && !s.shares.contains_key(&signer))
    }

    /// The verdict of a [`ShareCheck`]: a valid signer may be made ready again, an invalid
    /// one is marked malicious (and every live session with it can never complete).
    pub fn checked(&mut self, signer: u16, valid: bool) {
        if !valid {
            self.mark_malicious(signer);
        }
    }

    fn mark_malicious(&mut self, signer: u16) {
        tracing::warn!(
            signer,
            "signer returned an invalid signature share; it is excluded"
        );
        self.malicious.insert(signer);
        self.ready.remove(&signer);
        for s in self.sessions.values_mut() {
            if s.chosen.contains(&signer) {
                s.dead = true;
            }
        }
    }

    /// Feeds `signer`'s shares for `session`: the session completes (signatures verified,
    /// `psbt` finalized) or fails (culprits named), or waits for its other members.
    ///
    /// # Errors
    /// A PSBT the coordinator cannot finalize.
    pub fn shares(
        &mut self,
        session: &SessionId,
        signer: u16,
        shares: Vec<SignatureShare>,
        psbt: &mut Psbt,
    ) -> Result<SharesOutcome, SignError> {
        let Some(active) = self.sessions.get_mut(session) else {
            return Ok(SharesOutcome::Ignored);
        };
        if !active.chosen.contains(&signer) {
            return Ok(SharesOutcome::Ignored);
        }
        if active.dead || active.shares.len() + 1 != active.chosen.len() {
            let check = ShareCheck {
                core: Arc::clone(&self.core),
                packages: Arc::clone(&active.packages),
                signer,
                shares: shares.clone(),
            };
            active.shares.insert(signer, shares);
            return Ok(SharesOutcome::Check(check));
        }
        active.shares.insert(signer, shares);
        let by_id = active
            .shares
            .iter()
            .filter_map(|(i, s)| identifier(*i).ok().map(|id| (id, s.clone())))
            .collect();
        let packages = Arc::clone(&active.packages);
        let chosen = active.chosen.clone();
        self.sessions.remove(session);
        match self.core.aggregate_session(&packages, &by_id) {
            Ok(signatures) => {
                let transaction = self.core.finalize(psbt, &signatures)?;
                Ok(SharesOutcome::Done(Box::new(RoastOutcome {
                    signers: chosen,
                    malicious: self.malicious.iter().copied().collect(),
                    excluded: self.excluded.iter().map(|(i, m)| (*i, m.clone())).collect(),
                    sessions: self.started,
                    transaction,
                })))
            }
            Err(CoordinateError::InvalidShares { culprits, .. }) => {
                for c in &culprits {
                    self.mark_malicious(*c);
                }
                Ok(SharesOutcome::Failed { culprits })
            }
            Err(CoordinateError::WrongCount { signer, .. }) => {
                self.mark_malicious(signer);
                Ok(SharesOutcome::Failed {
                    culprits: vec![signer],
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batch-normalized encodings equal frost's own, point by point and commitment by
    /// commitment, for freshly computed points (projective, z ≠ 1) and for decoded ones.
    #[test]
    fn fast_commitment_encodings_are_frosts() {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(14);
        let (shares, _) =
            frost::keys::generate_with_dealer(3, 2, frost::keys::IdentifierList::Default, &mut rng)
                .expect("dealer");
        let share = shares.values().next().expect("a share");
        let list: Vec<SigningCommitments> = (0..20)
            .map(|_| frost::round1::commit(share.signing_share(), &mut rng).1)
            .collect();
        let compact = crate::frost::compressed_commitments(&list).expect("no identity");
        assert_eq!(compact.len(), list.len());
        for (c, bytes) in list.iter().zip(&compact) {
            let frosts = [
                c.hiding().serialize().expect("hiding"),
                c.binding().serialize().expect("binding"),
            ]
            .concat();
            assert_eq!(bytes.as_slice(), frosts.as_slice());
        }
        let wire = serde_json::to_string(&InputCommitments(list.clone())).expect("encode");
        let decoded: InputCommitments = serde_json::from_str(&wire).expect("decode");
        assert_eq!(decoded.0, list);
        for commitments in [list, decoded.0] {
            let fast = frost_encodings(&commitments).expect("encodings");
            assert_eq!(fast.len(), commitments.len());
            for (c, bytes) in commitments.iter().zip(&fast) {
                assert_eq!(&c.serialize().expect("frost"), bytes);
            }
        }
        assert_eq!(frost_encodings(&[]), Some(Vec::new()));
    }
}
