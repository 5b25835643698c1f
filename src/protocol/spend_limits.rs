//! Wallet-wide spending limits against a malicious coordinator: reservations, receipts and
//! signed statements (see `docs/wallet-wide-limits.md` for the argument).
//!
//! Round 1 ([`crate::message::CoordinatorToSigner::SignCommit`]): each asked signer
//! *reserves* the spend (its outflow counts until it is signed or its reservation expires;
//! the coordinator cannot release it) and answers with a [`Receipt`] signed by its identity
//! key. Statement round: the coordinator sends every chosen signer the receipts of all
//! chosen signers; a signer checks them (so its statement is provably taken after every
//! chosen signer reserved this spend) and answers with a [`Statement`] of everything it has
//! signed or reserved for the wallet in the window. Round 2 carries all statements; each
//! signer signs only if the union (by txid) of its own current records and every statement
//! fits its limit, where spends that share an input outpoint (a replacement and what it
//! replaces: at most one of them can confirm) are counted as [`counted_total`] explains.
//!
//! Everything here is pure: the signer supplies its records and its roster.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bitcoin::hashes::{sha256t_hash_newtype, Hash, HashEngine};
use bitcoin::{OutPoint, Txid};
use serde::{Deserialize, Serialize};

use super::SessionId;
use crate::identity::{IdentityKey, IdentityPublic};
use crate::keys::{GroupKey, Roster};

sha256t_hash_newtype! {
    struct ReceiptTag = hash_str("ckm/limits/receipt/v1");
    #[hash_newtype(forward)]
    struct ReceiptDigest(_);

    // v2: every spend carries the outpoints it consumes (protocol version 3).
    struct StatementTag = hash_str("ckm/limits/statement/v2");
    #[hash_newtype(forward)]
    struct StatementDigest(_);
}

const RECEIPT_DOMAIN: &str = "limits-receipt";
const STATEMENT_DOMAIN: &str = "limits-statement";

/// A BIP-340 signature by a signer's identity key (hex in JSON).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentitySignature(#[serde(with = "hex::serde")] pub [u8; 64]);

impl fmt::Debug for IdentitySignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentitySignature({}…)", hex::encode(&self.0[..8]))
    }
}

/// A signer's proof that it reserved a spend in a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The wallet.
    pub group_key: GroupKey,
    /// The signing session.
    pub session: SessionId,
    /// The signer's roster index.
    pub index: u16,
    /// The spend.
    pub txid: Txid,
    /// What leaves the wallet (inputs − change), in satoshis.
    pub outflow_sats: u64,
    /// The signer's signature over all of the above.
    pub signature: IdentitySignature,
}

impl Receipt {
    fn digest(
        group_key: &GroupKey,
        session: &SessionId,
        index: u16,
        txid: &Txid,
        outflow_sats: u64,
    ) -> [u8; 32] {
        let mut e = ReceiptDigest::engine();
        e.input(&group_key.to_bytes());
        e.input(&session.0);
        e.input(&index.to_be_bytes());
        e.input(txid.as_byte_array());
        e.input(&outflow_sats.to_be_bytes());
        ReceiptDigest::from_engine(e).to_byte_array()
    }

    /// A receipt signed by `key`.
    pub fn sign(
        key: &IdentityKey,
        group_key: GroupKey,
        session: SessionId,
        index: u16,
        txid: Txid,
        outflow_sats: u64,
    ) -> Self {
        let digest = Self::digest(&group_key, &session, index, &txid, outflow_sats);
        Receipt {
            group_key,
            session,
            index,
            txid,
            outflow_sats,
            signature: IdentitySignature(key.sign(RECEIPT_DOMAIN, &digest)),
        }
    }

    /// Whether `identity` signed this receipt.
    pub fn verify(&self, identity: &IdentityPublic) -> bool {
        let digest = Self::digest(
            &self.group_key,
            &self.session,
            self.index,
            &self.txid,
            self.outflow_sats,
        );
        identity
            .verify(RECEIPT_DOMAIN, &digest, &self.signature.0)
            .is_ok()
    }
}

/// Whether a recorded spend is signed or only reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpendState {
    /// Reserved in round 1, not (yet) signed.
    Reserved,
    /// Signed.
    Signed,
}

/// One spend a signer counts: signed within the window, or reserved and not expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendEntry {
    /// The spend.
    pub txid: Txid,
    /// Its outflow, in satoshis.
    pub outflow_sats: u64,
    /// Signed or reserved.
    pub state: SpendState,
    /// The outpoints it spends. Empty for spends recorded before ckm counted replacements
    /// once: such a spend conflicts with nothing and is counted in full.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<OutPoint>,
}

/// A signer's signed account of everything it signed or reserved for a wallet in the
/// window, taken for one session after every chosen signer reserved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// The wallet.
    pub group_key: GroupKey,
    /// The session the statement was taken for.
    pub session: SessionId,
    /// The signer's roster index.
    pub index: u16,
    /// When it was taken (Unix seconds, the signer's clock).
    pub issued_at: u64,
    /// Start of the window it covers (Unix seconds).
    pub since: u64,
    /// Every spend it counts.
    pub spends: Vec<SpendEntry>,
    /// The signer's signature over all of the above.
    pub signature: IdentitySignature,
}

impl Statement {
    fn digest(
        group_key: &GroupKey,
        session: &SessionId,
        index: u16,
        issued_at: u64,
        since: u64,
        spends: &[SpendEntry],
    ) -> [u8; 32] {
        let mut e = StatementDigest::engine();
        e.input(&group_key.to_bytes());
        e.input(&session.0);
        e.input(&index.to_be_bytes());
        e.input(&issued_at.to_be_bytes());
        e.input(&since.to_be_bytes());
        e.input(&(spends.len() as u64).to_be_bytes());
        for s in spends {
            e.input(s.txid.as_byte_array());
            e.input(&s.outflow_sats.to_be_bytes());
            e.input(&[match s.state {
                SpendState::Reserved => 0,
                SpendState::Signed => 1,
            }]);
            e.input(&(s.inputs.len() as u64).to_be_bytes());
            for o in &s.inputs {
                e.input(o.txid.as_byte_array());
                e.input(&o.vout.to_be_bytes());
            }
        }
        StatementDigest::from_engine(e).to_byte_array()
    }

    /// A statement signed by `key`.
    pub fn sign(
        key: &IdentityKey,
        group_key: GroupKey,
        session: SessionId,
        index: u16,
        issued_at: u64,
        since: u64,
        spends: Vec<SpendEntry>,
    ) -> Self {
        let digest = Self::digest(&group_key, &session, index, issued_at, since, &spends);
        Statement {
            group_key,
            session,
            index,
            issued_at,
            since,
            spends,
            signature: IdentitySignature(key.sign(STATEMENT_DOMAIN, &digest)),
        }
    }

    /// Whether `identity` signed this statement.
    pub fn verify(&self, identity: &IdentityPublic) -> bool {
        let digest = Self::digest(
            &self.group_key,
            &self.session,
            self.index,
            self.issued_at,
            self.since,
            &self.spends,
        );
        identity
            .verify(STATEMENT_DOMAIN, &digest, &self.signature.0)
            .is_ok()
    }
}

/// Why receipts or statements are refused. Signers are named by roster index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// Fewer receipts than the threshold.
    #[error("{got} receipt(s) for a wallet that needs {need} signers")]
    TooFewReceipts {
        /// Receipts given.
        got: usize,
        /// Threshold.
        need: u16,
    },
    /// A receipt or statement from an index outside the certified roster.
    #[error("index {0} is not in the wallet's certified roster")]
    NotInRoster(u16),
    /// A receipt that is not for this wallet, session or spend, or not signed by its signer.
    #[error("the receipt of signer {0} is not for this session and spend, or its signature does not verify")]
    BadReceipt(u16),
    /// This signer's own receipt is missing or not the one it gave.
    #[error("the receipts do not include this signer's own reservation for this session")]
    OwnReceiptMissing,
    /// The statements do not come from exactly the chosen signers.
    #[error("statements from signers {got:?}, but the chosen signers are {chosen:?}")]
    StatementSet {
        /// Indexes of the statements.
        got: Vec<u16>,
        /// The chosen signers.
        chosen: Vec<u16>,
    },
    /// A statement that is not for this wallet and session or not signed by its signer.
    #[error(
        "the statement of signer {0} is not for this session, or its signature does not verify"
    )]
    BadStatement(u16),
    /// The signers of round 2 are not the signers of the statement round.
    #[error("round 2 is signed by {got:?}, but the statements were taken for {chosen:?}")]
    SignerSetChanged {
        /// Signers of the signing packages.
        got: Vec<u16>,
        /// Signers the statements were taken for.
        chosen: Vec<u16>,
    },
}

/// Checks the receipts a statement request carries: at least `threshold`, every one from a
/// member of the certified roster, for this wallet, session, txid and outflow, and this
/// signer's own among them. Returns the chosen signers.
///
/// # Errors
/// [`LimitError`] naming the first problem.
#[allow(clippy::too_many_arguments)]
pub fn check_receipts(
    receipts: &BTreeMap<u16, Receipt>,
    roster: &Roster,
    threshold: u16,
    group_key: &GroupKey,
    session: &SessionId,
    txid: &Txid,
    outflow_sats: u64,
    own: &Receipt,
) -> Result<BTreeSet<u16>, LimitError> {
    if receipts.len() < usize::from(threshold) {
        return Err(LimitError::TooFewReceipts {
            got: receipts.len(),
            need: threshold,
        });
    }
    if receipts.get(&own.index) != Some(own) {
        return Err(LimitError::OwnReceiptMissing);
    }
    for (index, r) in receipts {
        let member = roster.get(*index).ok_or(LimitError::NotInRoster(*index))?;
        if r.index != *index
            || r.group_key != *group_key
            || r.session != *session
            || r.txid != *txid
            || r.outflow_sats != outflow_sats
            || !r.verify(&member.identity)
        {
            return Err(LimitError::BadReceipt(*index));
        }
    }
    Ok(receipts.keys().copied().collect())
}

/// Checks round 2's statements: exactly one from each chosen signer, each for this wallet
/// and session and signed by that member's identity key.
///
/// # Errors
/// [`LimitError`] naming the first problem.
pub fn check_statements(
    statements: &BTreeMap<u16, Statement>,
    chosen: &BTreeSet<u16>,
    roster: &Roster,
    group_key: &GroupKey,
    session: &SessionId,
) -> Result<(), LimitError> {
    let got: BTreeSet<u16> = statements.keys().copied().collect();
    if &got != chosen {
        return Err(LimitError::StatementSet {
            got: got.into_iter().collect(),
            chosen: chosen.iter().copied().collect(),
        });
    }
    for (index, s) in statements {
        let member = roster.get(*index).ok_or(LimitError::NotInRoster(*index))?;
        if s.index != *index
            || s.group_key != *group_key
            || s.session != *session
            || !s.verify(&member.identity)
        {
            return Err(LimitError::BadStatement(*index));
        }
    }
    Ok(())
}

/// The most spends in one group of mutually connected conflicts that [`counted_total`]
/// examines; a larger group is counted in full (a conservative answer).
const MAX_CONFLICT_GROUP: usize = 64;

/// The most branching steps [`counted_total`] spends on one group before counting it in full.
const CONFLICT_BUDGET: u32 = 100_000;

/// What `own` records and every statement's spends can take out of the wallet together.
///
/// The spends are merged by txid (each counted once, at the largest outflow any record gives
/// it; its inputs are those every record of it names, so a record without inputs makes the
/// spend conflict with nothing). Two spends *conflict* when they share an input outpoint: at
/// most one of them can ever confirm. The total is the largest outflow of a set of pairwise
/// non-conflicting spends (a maximum-weight independent set of the conflict graph), so a set
/// of mutually conflicting spends — a payment and its fee bumps — counts at its largest
/// outflow, and spends that share no input add up. A group of connected conflicts larger
/// than 64 spends, or one whose search exceeds its budget, counts in full.
pub fn counted_total<'a>(
    own: impl IntoIterator<Item = &'a SpendEntry>,
    statements: impl IntoIterator<Item = &'a Statement>,
) -> u64 {
    let mut by_txid: BTreeMap<Txid, (u64, BTreeSet<OutPoint>)> = BTreeMap::new();
    let mut add = |e: &SpendEntry| {
        let inputs: BTreeSet<OutPoint> = e.inputs.iter().copied().collect();
        match by_txid.get_mut(&e.txid) {
            Some((outflow, known)) => {
                *outflow = (*outflow).max(e.outflow_sats);
                known.retain(|o| inputs.contains(o));
            }
            None => {
                by_txid.insert(e.txid, (e.outflow_sats, inputs));
            }
        }
    };
    own.into_iter().for_each(&mut add);
    for s in statements {
        s.spends.iter().for_each(&mut add);
    }
    let spends: Vec<(u64, BTreeSet<OutPoint>)> = by_txid.into_values().collect();
    conflict_groups(&spends)
        .iter()
        .map(|group| group_total(&spends, group))
        .fold(0u64, u64::saturating_add)
}

/// The connected components of the conflict graph, as lists of indexes into `spends`.
fn conflict_groups(spends: &[(u64, BTreeSet<OutPoint>)]) -> Vec<Vec<usize>> {
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut parent: Vec<usize> = (0..spends.len()).collect();
    let mut first: BTreeMap<OutPoint, usize> = BTreeMap::new();
    for (i, (_, inputs)) in spends.iter().enumerate() {
        for o in inputs {
            let j = *first.entry(*o).or_insert(i);
            let (a, b) = (root(&mut parent, i), root(&mut parent, j));
            parent[a] = b;
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..spends.len() {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    groups.into_values().collect()
}

/// The largest outflow of pairwise non-conflicting spends of one group (or the group's sum
/// when it is too large or too tangled to search).
fn group_total(spends: &[(u64, BTreeSet<OutPoint>)], group: &[usize]) -> u64 {
    let sum = || {
        group
            .iter()
            .filter_map(|i| spends.get(*i))
            .fold(0u64, |acc, s| acc.saturating_add(s.0))
    };
    if group.len() == 1 || group.len() > MAX_CONFLICT_GROUP {
        return sum();
    }
    let members: Vec<&(u64, BTreeSet<OutPoint>)> =
        group.iter().filter_map(|i| spends.get(*i)).collect();
    let weights: Vec<u64> = members.iter().map(|m| m.0).collect();
    let adjacent: Vec<u64> = members
        .iter()
        .enumerate()
        .map(|(i, a)| {
            members
                .iter()
                .enumerate()
                .filter(|(j, b)| *j != i && !a.1.is_disjoint(&b.1))
                .fold(0u64, |mask, (j, _)| mask | (1u64 << j))
        })
        .collect();
    let all = if members.len() == 64 {
        u64::MAX
    } else {
        (1u64 << members.len()) - 1
    };
    let mut budget = CONFLICT_BUDGET;
    independent_max(all, &weights, &adjacent, &mut budget).unwrap_or_else(sum)
}

/// Maximum-weight independent set of the vertices in `mask` (bit `i` is vertex `i`): takes a
/// vertex that is safe to take (no conflict left, or one conflict with a spend of no larger
/// outflow), else branches on a vertex of highest degree; `None` when the budget runs out.
fn independent_max(mask: u64, weights: &[u64], adjacent: &[u64], budget: &mut u32) -> Option<u64> {
    *budget = budget.checked_sub(1)?;
    if mask == 0 {
        return Some(0);
    }
    let weight = |v: usize| weights.get(v).copied().unwrap_or(0);
    let neighbours = |v: usize| adjacent.get(v).copied().unwrap_or(0) & mask;
    let mut busiest = (0u32, 0usize);
    let mut rest = mask;
    while rest != 0 {
        let v = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        let n = neighbours(v);
        let safe = match n.count_ones() {
            0 => true,
            1 => weight(v) >= weight(n.trailing_zeros() as usize),
            _ => false,
        };
        if safe {
            let taken = independent_max(mask & !(1u64 << v) & !n, weights, adjacent, budget)?;
            return Some(taken.saturating_add(weight(v)));
        }
        if n.count_ones() > busiest.0 {
            busiest = (n.count_ones(), v);
        }
    }
    let v = busiest.1;
    let bit = 1u64 << v;
    let without = independent_max(mask & !bit, weights, adjacent, budget)?;
    let with = independent_max(mask & !bit & !neighbours(v), weights, adjacent, budget)?
        .saturating_add(weight(v));
    Some(without.max(with))
}

/// Whether the limits of a `threshold`-of-`signers` wallet hold wallet-wide: true when any
/// two sets of `threshold` signers share a signer (2t > n).
pub fn wallet_wide(threshold: u16, signers: u16) -> bool {
    2 * u32::from(threshold) > u32::from(signers)
}

/// How many times the limit a wallet can spend when its limits are per signer (2t <= n): as
/// many as there are pairwise disjoint sets of `threshold` signers.
pub fn per_signer_factor(threshold: u16, signers: u16) -> u16 {
    signers.checked_div(threshold).unwrap_or(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::RosterEntry;

    fn setup() -> (Vec<IdentityKey>, Roster, GroupKey, SessionId, Txid) {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
        let keys: Vec<IdentityKey> = (0..3).map(|_| IdentityKey::generate(&mut rng)).collect();
        let roster = Roster::new(
            keys.iter()
                .enumerate()
                .map(|(i, k)| RosterEntry {
                    index: u16::try_from(i + 1).unwrap(),
                    url: String::new(),
                    identity: k.public(),
                    tls_sha256: None,
                })
                .collect(),
        )
        .unwrap();
        let gk: GroupKey = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
            .parse()
            .unwrap();
        let txid = Txid::from_byte_array([9; 32]);
        (keys, roster, gk, SessionId([1; 16]), txid)
    }

    #[test]
    fn receipts_and_statements_bind_signer_session_and_spend() {
        let (keys, roster, gk, session, txid) = setup();
        let r1 = Receipt::sign(&keys[0], gk, session, 1, txid, 500);
        let r2 = Receipt::sign(&keys[1], gk, session, 2, txid, 500);
        let receipts = BTreeMap::from([(1, r1.clone()), (2, r2.clone())]);
        let chosen = check_receipts(&receipts, &roster, 2, &gk, &session, &txid, 500, &r1).unwrap();
        assert_eq!(chosen, BTreeSet::from([1, 2]));
        // Another outflow, another session, a receipt signed by the wrong key, too few.
        assert!(check_receipts(&receipts, &roster, 2, &gk, &session, &txid, 501, &r1).is_err());
        let forged = Receipt::sign(&keys[2], gk, session, 2, txid, 500);
        let bad = BTreeMap::from([(1, r1.clone()), (2, forged)]);
        assert_eq!(
            check_receipts(&bad, &roster, 2, &gk, &session, &txid, 500, &r1),
            Err(LimitError::BadReceipt(2))
        );
        let one = BTreeMap::from([(1, r1.clone())]);
        assert!(matches!(
            check_receipts(&one, &roster, 2, &gk, &session, &txid, 500, &r1),
            Err(LimitError::TooFewReceipts { .. })
        ));
        let without_me = BTreeMap::from([
            (2, r2),
            (3, Receipt::sign(&keys[2], gk, session, 3, txid, 500)),
        ]);
        assert_eq!(
            check_receipts(&without_me, &roster, 2, &gk, &session, &txid, 500, &r1),
            Err(LimitError::OwnReceiptMissing)
        );

        let spends = vec![SpendEntry {
            txid,
            outflow_sats: 500,
            state: SpendState::Reserved,
            inputs: vec![],
        }];
        let s1 = Statement::sign(&keys[0], gk, session, 1, 10, 0, spends.clone());
        let s2 = Statement::sign(&keys[1], gk, session, 2, 10, 0, spends.clone());
        let statements = BTreeMap::from([(1, s1.clone()), (2, s2.clone())]);
        check_statements(&statements, &chosen, &roster, &gk, &session).unwrap();
        let mut tampered = statements.clone();
        if let Some(s) = tampered.get_mut(&2) {
            s.spends.clear();
        }
        assert_eq!(
            check_statements(&tampered, &chosen, &roster, &gk, &session),
            Err(LimitError::BadStatement(2))
        );
        let other_session = BTreeMap::from([
            (1, s1),
            (
                2,
                Statement::sign(&keys[1], gk, SessionId([2; 16]), 2, 10, 0, spends),
            ),
        ]);
        assert_eq!(
            check_statements(&other_session, &chosen, &roster, &gk, &session),
            Err(LimitError::BadStatement(2))
        );
        let partial = BTreeMap::from([(2, s2)]);
        assert!(matches!(
            check_statements(&partial, &chosen, &roster, &gk, &session),
            Err(LimitError::StatementSet { .. })
        ));
    }

    #[test]
    fn union_counts_each_txid_once() {
        let (keys, _, gk, session, txid) = setup();
        let other = Txid::from_byte_array([8; 32]);
        let own = vec![SpendEntry {
            txid,
            outflow_sats: 300,
            state: SpendState::Reserved,
            inputs: vec![],
        }];
        let s = Statement::sign(
            &keys[1],
            gk,
            session,
            2,
            0,
            0,
            vec![
                SpendEntry {
                    txid,
                    outflow_sats: 300,
                    state: SpendState::Signed,
                    inputs: vec![],
                },
                SpendEntry {
                    txid: other,
                    outflow_sats: 200,
                    state: SpendState::Signed,
                    inputs: vec![],
                },
            ],
        );
        assert_eq!(counted_total(&own, [&s]), 500);
        assert!(wallet_wide(2, 3) && wallet_wide(3, 5) && !wallet_wide(2, 4));
        assert_eq!(per_signer_factor(2, 4), 2);
        assert_eq!(per_signer_factor(2, 5), 2);
    }

    fn spend(n: u8, outflow: u64, inputs: &[u8]) -> SpendEntry {
        SpendEntry {
            txid: Txid::from_byte_array([n; 32]),
            outflow_sats: outflow,
            state: SpendState::Signed,
            inputs: inputs
                .iter()
                .map(|i| OutPoint::new(Txid::from_byte_array([*i; 32]), u32::from(*i)))
                .collect(),
        }
    }

    #[test]
    fn conflicting_spends_count_once_at_their_largest_outflow() {
        // A payment and two bumps (all spend input 1; the second bump adds input 2).
        let chain = [
            spend(1, 100, &[1]),
            spend(2, 110, &[1]),
            spend(3, 120, &[1, 2]),
        ];
        assert_eq!(counted_total(&chain, []), 120);
        // A "bump" that shares no input is a new spend.
        let unrelated = [spend(1, 100, &[1]), spend(2, 110, &[3])];
        assert_eq!(counted_total(&unrelated, []), 210);
        // A path of conflicts A–B–C (A and C share nothing, so both can confirm).
        let path = [
            spend(1, 100, &[1]),
            spend(2, 150, &[1, 2]),
            spend(3, 100, &[2]),
        ];
        assert_eq!(counted_total(&path, []), 200);
        // A record without inputs (made before protocol 3) conflicts with nothing.
        let old = [spend(1, 100, &[]), spend(2, 110, &[1])];
        assert_eq!(counted_total(&old, []), 210);
        // Records of one txid keep only the inputs every record names.
        let merged = [spend(1, 100, &[1]), spend(1, 100, &[]), spend(2, 110, &[1])];
        assert_eq!(counted_total(&merged, []), 210);
        // A statement's spends conflict with the signer's own records.
        let (keys, _, gk, session, _) = setup();
        let s = Statement::sign(&keys[1], gk, session, 2, 0, 0, vec![spend(1, 100, &[1])]);
        assert_eq!(counted_total(&[spend(2, 130, &[1])], [&s]), 130);
        // Statements bind the inputs.
        let mut tampered = s.clone();
        if let Some(e) = tampered.spends.first_mut() {
            e.inputs.clear();
        }
        assert!(s.verify(&keys[1].public()) && !tampered.verify(&keys[1].public()));
    }

    #[test]
    fn large_conflict_groups_count_in_full() {
        // 65 spends all sharing one input: too many to search, so they add up.
        let many: Vec<SpendEntry> = (0..65u8).map(|n| spend(n, 10, &[200])).collect();
        assert_eq!(counted_total(&many, []), 650);
        // 64 of them: one group, counted once.
        assert_eq!(counted_total(&many[..64], []), 10);
        // A path of 64 conflicts (spend n shares an input with n - 1 and n + 1): every
        // other spend can confirm.
        let path: Vec<SpendEntry> = (0..64u8).map(|n| spend(n, 10, &[n, n + 1])).collect();
        assert_eq!(counted_total(&path, []), 320);
    }

    #[test]
    fn counted_total_is_the_largest_set_that_could_confirm_together() {
        use rand::{Rng, SeedableRng};
        // Random small windows (up to 12 spends over 6 coins), against every subset.
        let mut rng = rand::rngs::StdRng::seed_from_u64(26);
        for _ in 0..2_000 {
            let n = rng.gen_range(1..=12u8);
            let spends: Vec<SpendEntry> = (0..n)
                .map(|k| {
                    // A transaction never spends one outpoint twice.
                    let inputs: BTreeSet<u8> = (0..rng.gen_range(0..=3))
                        .map(|_| rng.gen_range(1..=6u8))
                        .collect();
                    let inputs: Vec<u8> = inputs.into_iter().collect();
                    spend(k, rng.gen_range(0..1_000), &inputs)
                })
                .collect();
            let mut best = 0u64;
            for subset in 0u32..(1 << n) {
                let chosen: Vec<&SpendEntry> = spends
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| subset & (1 << i) != 0)
                    .map(|(_, s)| s)
                    .collect();
                let mut seen = BTreeSet::new();
                if chosen
                    .iter()
                    .flat_map(|s| s.inputs.iter())
                    .all(|o| seen.insert(*o))
                {
                    best = best.max(chosen.iter().map(|s| s.outflow_sats).sum());
                }
            }
            assert_eq!(counted_total(&spends, []), best, "{spends:?}");
        }
    }
}
