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
//! fits its limit.
//!
//! Everything here is pure: the signer supplies its records and its roster.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bitcoin::hashes::{sha256t_hash_newtype, Hash, HashEngine};
use bitcoin::Txid;
use serde::{Deserialize, Serialize};

use super::SessionId;
use crate::identity::{IdentityKey, IdentityPublic};
use crate::keys::{GroupKey, Roster};

sha256t_hash_newtype! {
    struct ReceiptTag = hash_str("ckm/limits/receipt/v1");
    #[hash_newtype(forward)]
    struct ReceiptDigest(_);

    struct StatementTag = hash_str("ckm/limits/statement/v1");
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

/// The total outflow of the union, by txid, of `own` records and every statement's spends
/// (each txid counted once, at the largest outflow any record gives it).
pub fn union_total<'a>(
    own: impl IntoIterator<Item = &'a SpendEntry>,
    statements: impl IntoIterator<Item = &'a Statement>,
) -> u64 {
    let mut by_txid: BTreeMap<Txid, u64> = BTreeMap::new();
    let mut add = |e: &SpendEntry| {
        let v = by_txid.entry(e.txid).or_insert(0);
        *v = (*v).max(e.outflow_sats);
    };
    own.into_iter().for_each(&mut add);
    for s in statements {
        s.spends.iter().for_each(&mut add);
    }
    by_txid.values().fold(0u64, |acc, v| acc.saturating_add(*v))
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
                },
                SpendEntry {
                    txid: other,
                    outflow_sats: 200,
                    state: SpendState::Signed,
                },
            ],
        );
        assert_eq!(union_total(&own, [&s]), 500);
        assert!(wallet_wide(2, 3) && wallet_wide(3, 5) && !wallet_wide(2, 4));
        assert_eq!(per_signer_factor(2, 4), 2);
        assert_eq!(per_signer_factor(2, 5), 2);
    }
}
