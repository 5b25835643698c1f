//! Confirming a restored share's epoch before it signs again.
//!
//! A signer restored from a backup holds the share, record and epoch of the day the backup
//! was taken. If the wallet has moved on since (a refresh, a removal), that share belongs to
//! a superseded epoch: together with a removed member's never-erased share it could still
//! sign. So a restored signer signs nothing for a wallet until it has learnt the wallet's
//! current epoch from fresh statements of the other members:
//!
//! - it draws a random [`Challenge`] (kept in memory only, for a few minutes);
//! - each member asked signs an [`EpochStatement`] with its identity key: the wallet, its
//!   roster index, its current epoch and state hash, whether it holds an undecided
//!   transition, and the challenge (so no statement can be recorded earlier and replayed);
//! - [`confirm`] accepts only if at least `n − t + 1` other members of the roster the
//!   restored signer knows state its own epoch and state, and none states a later epoch, a
//!   different state at the same epoch, or an undecided transition.
//!
//! Why `n − t + 1`: a later epoch exists only if a commit certificate was formed, and that
//! needs a ready vote of every member of the new roster, so at least `t` members of the old
//! roster (every roster keeps at least `t`) hold or have voted for the later epoch. Any
//! `n − t + 1` members include at least one of them, and an honest one says so: the
//! restored share is then refused for good (it is repaired or re-enrolled instead). The
//! argument, and what a colluding member can and cannot do here, is in
//! `docs/managing-signers.md`.
//!
//! Pure: no I/O; the signer keeps the challenge and records the outcome.

use std::collections::BTreeSet;
use std::fmt;

use bitcoin::hashes::{sha256t_hash_newtype, Hash, HashEngine};
use serde::{Deserialize, Serialize};

use super::{Digest, WalletState};
use crate::identity::IdentityKey;
use crate::keys::GroupKey;

sha256t_hash_newtype! {
    struct StatementTag = hash_str("ckm/epoch-statement/v1");
    #[hash_newtype(forward)]
    struct StatementDigest(_);
}

const STATEMENT_DOMAIN: &str = "epoch-statement";

/// A fresh random challenge of a restored signer (hex in JSON).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Challenge(#[serde(with = "hex::serde")] pub [u8; 32]);

impl Challenge {
    /// A fresh random challenge.
    pub fn random<R: rand::RngCore + rand::CryptoRng>(rng: &mut R) -> Self {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        Challenge(b)
    }
}

impl fmt::Debug for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Challenge({}…)", hex::encode(&self.0[..6]))
    }
}

/// What a member states of a wallet, answering a restored signer's challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochStatement {
    /// The wallet.
    pub group_key: GroupKey,
    /// The stating member's roster index.
    pub member: u16,
    /// Its current epoch.
    pub epoch: u64,
    /// The hash of its current [`WalletState`].
    pub state: Digest,
    /// Whether it holds a transition that is not decided yet.
    pub pending: bool,
    /// The challenge answered.
    pub challenge: Challenge,
}

/// An [`EpochStatement`] signed by the member's identity key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedStatement {
    /// What is stated.
    pub statement: EpochStatement,
    /// BIP-340 signature of the member's identity key.
    #[serde(with = "hex::serde")]
    pub signature: [u8; 64],
}

impl EpochStatement {
    fn message(&self) -> [u8; 32] {
        let mut e = StatementDigest::engine();
        e.input(&self.group_key.to_bytes());
        e.input(&self.member.to_be_bytes());
        e.input(&self.epoch.to_be_bytes());
        e.input(&self.state.0);
        e.input(&[u8::from(self.pending)]);
        e.input(&self.challenge.0);
        StatementDigest::from_engine(e).to_byte_array()
    }

    /// Signs the statement with the member's identity key.
    pub fn sign(self, key: &IdentityKey) -> SignedStatement {
        let signature = key.sign(STATEMENT_DOMAIN, &self.message());
        SignedStatement {
            statement: self,
            signature,
        }
    }
}

/// How many other members must confirm: `n − t + 1` of a roster of `n` with threshold `t`
/// (at least 1).
pub fn needed(threshold: u16, members: u16) -> u16 {
    members.saturating_sub(threshold).saturating_add(1).max(1)
}

/// A restored share's epoch, confirmed by enough fresh statements: only [`confirm`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmedEpoch {
    epoch: u64,
    members: Vec<u16>,
}

impl ConfirmedEpoch {
    /// The confirmed epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The members whose statements confirmed it.
    pub fn members(&self) -> &[u16] {
        &self.members
    }
}

/// Why a restored share's epoch was not confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfirmError {
    /// A statement by someone not in the roster the restored signer knows.
    #[error("a statement claims roster index {member}, which is not a member of the wallet's roster at epoch {epoch}")]
    NotMember {
        /// The index claimed.
        member: u16,
        /// The restored epoch.
        epoch: u64,
    },
    /// A statement of another wallet.
    #[error("member {member}'s statement is about another wallet")]
    OtherWallet {
        /// The member.
        member: u16,
    },
    /// A statement answering another challenge (old or replayed).
    #[error(
        "member {member}'s statement answers another challenge (a stale or replayed statement)"
    )]
    WrongChallenge {
        /// The member.
        member: u16,
    },
    /// The signature does not verify.
    #[error("member {member}'s statement is not signed by its identity key")]
    BadSignature {
        /// The member.
        member: u16,
    },
    /// A member holds a later epoch: the restored share is superseded.
    #[error("member {member} is at epoch {epoch}, later than the restored share's epoch {restored}: this share is superseded and must never sign again; repair this signer (`ckm wallet repair`) or enrol it anew")]
    Superseded {
        /// The member.
        member: u16,
        /// Its epoch.
        epoch: u64,
        /// The restored epoch.
        restored: u64,
    },
    /// A member states the same epoch with another state.
    #[error("member {member} states epoch {epoch} with another roster or verifying shares than the restored record: refused (a forged record or a diverged member)")]
    Diverged {
        /// The member.
        member: u16,
        /// The epoch.
        epoch: u64,
    },
    /// A member holds an undecided transition.
    #[error("member {member} holds a transition that is not decided yet: finish it first (`ckm wallet resume`), then confirm again")]
    Pending {
        /// The member.
        member: u16,
    },
    /// Too few confirming statements.
    #[error("{got} member(s) confirmed epoch {epoch}, {needed} (n − t + 1) are needed: bring more signers online and confirm again")]
    TooFew {
        /// Confirming statements.
        got: usize,
        /// Needed.
        needed: u16,
        /// The restored epoch.
        epoch: u64,
    },
}

/// Checks the statements given to a restored signer (roster index `own_index` in `own`, the
/// state its record ends in) that answered `challenge`. Statements of members behind the
/// restored epoch neither count nor refuse; the restored signer's own index never counts; a
/// member's repeated statement counts once.
///
/// # Errors
/// [`ConfirmError`] naming the first statement that refuses, or [`ConfirmError::TooFew`].
pub fn confirm(
    own: &WalletState,
    own_index: u16,
    challenge: &Challenge,
    statements: &[SignedStatement],
) -> Result<ConfirmedEpoch, ConfirmError> {
    let group_key = GroupKey::of(&own.group);
    let own_state = own.hash();
    let mut confirming = BTreeSet::new();
    for signed in statements {
        let s = &signed.statement;
        let entry = own.roster.get(s.member).ok_or(ConfirmError::NotMember {
            member: s.member,
            epoch: own.epoch,
        })?;
        if s.group_key != group_key {
            return Err(ConfirmError::OtherWallet { member: s.member });
        }
        if s.challenge != *challenge {
            return Err(ConfirmError::WrongChallenge { member: s.member });
        }
        entry
            .identity
            .verify(STATEMENT_DOMAIN, &s.message(), &signed.signature)
            .map_err(|_| ConfirmError::BadSignature { member: s.member })?;
        if s.epoch > own.epoch {
            return Err(ConfirmError::Superseded {
                member: s.member,
                epoch: s.epoch,
                restored: own.epoch,
            });
        }
        if s.epoch == own.epoch && s.state != own_state {
            return Err(ConfirmError::Diverged {
                member: s.member,
                epoch: s.epoch,
            });
        }
        if s.pending {
            return Err(ConfirmError::Pending { member: s.member });
        }
        if s.epoch == own.epoch && s.member != own_index {
            confirming.insert(s.member);
        }
    }
    let needed = needed(own.group.threshold(), own.roster.len());
    if confirming.len() < usize::from(needed) {
        return Err(ConfirmError::TooFew {
            got: confirming.len(),
            needed,
            epoch: own.epoch,
        });
    }
    Ok(ConfirmedEpoch {
        epoch: own.epoch,
        members: confirming.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::frost::shares::GroupPublic;
    use crate::keys::{Roster, RosterEntry};

    struct Wallet {
        keys: Vec<IdentityKey>,
        state: WalletState,
    }

    fn wallet(t: u16, n: u16, epoch: u64, rng: &mut StdRng) -> Wallet {
        let keys: Vec<IdentityKey> = (0..n).map(|_| IdentityKey::generate(rng)).collect();
        let roster = Roster::new(
            keys.iter()
                .zip(1u16..)
                .map(|(k, index)| RosterEntry {
                    index,
                    url: format!("http://signer-{index}"),
                    identity: k.public(),
                    tls_sha256: None,
                })
                .collect(),
        )
        .expect("a roster");
        let (_, package) = frost_secp256k1_tr::keys::generate_with_dealer(
            n,
            t,
            frost_secp256k1_tr::keys::IdentifierList::Default,
            &mut *rng,
        )
        .expect("dealer");
        let group = GroupPublic::new(package, [7; 32]).expect("group");
        Wallet {
            keys,
            state: WalletState {
                epoch,
                roster,
                group,
            },
        }
    }

    fn statement(w: &Wallet, member: u16, challenge: Challenge) -> EpochStatement {
        EpochStatement {
            group_key: GroupKey::of(&w.state.group),
            member,
            epoch: w.state.epoch,
            state: w.state.hash(),
            pending: false,
            challenge,
        }
    }

    fn signed(w: &Wallet, s: EpochStatement) -> SignedStatement {
        let key = &w.keys[usize::from(s.member) - 1];
        s.sign(key)
    }

    #[test]
    fn n_minus_t_plus_one_fresh_statements_confirm_and_fewer_do_not() {
        let mut rng = StdRng::seed_from_u64(1);
        let w = wallet(3, 5, 4, &mut rng);
        let c = Challenge::random(&mut rng);
        // Signer 1 was restored; n − t + 1 = 3 others must confirm.
        let all: Vec<SignedStatement> = (2..=5).map(|m| signed(&w, statement(&w, m, c))).collect();
        let ok = confirm(&w.state, 1, &c, &all[..3]).expect("three confirm");
        assert_eq!(ok.epoch(), 4);
        assert_eq!(ok.members(), &[2, 3, 4]);
        // Its own statement and a repeated one count once / not at all.
        let mut padded = vec![signed(&w, statement(&w, 1, c))];
        padded.extend_from_slice(&all[..2]);
        padded.push(all[0].clone());
        assert_eq!(
            confirm(&w.state, 1, &c, &padded),
            Err(ConfirmError::TooFew {
                got: 2,
                needed: 3,
                epoch: 4
            })
        );
    }

    #[test]
    fn a_later_epoch_a_diverged_state_or_a_pending_transition_refuses() {
        let mut rng = StdRng::seed_from_u64(2);
        let w = wallet(2, 3, 1, &mut rng);
        let c = Challenge::random(&mut rng);
        let good = signed(&w, statement(&w, 2, c));
        let later = signed(
            &w,
            EpochStatement {
                epoch: 2,
                state: Digest([9; 32]),
                ..statement(&w, 3, c)
            },
        );
        assert_eq!(
            confirm(&w.state, 1, &c, &[good.clone(), later]),
            Err(ConfirmError::Superseded {
                member: 3,
                epoch: 2,
                restored: 1
            })
        );
        let diverged = signed(
            &w,
            EpochStatement {
                state: Digest([9; 32]),
                ..statement(&w, 3, c)
            },
        );
        assert_eq!(
            confirm(&w.state, 1, &c, &[good.clone(), diverged]),
            Err(ConfirmError::Diverged {
                member: 3,
                epoch: 1
            })
        );
        let pending = signed(
            &w,
            EpochStatement {
                pending: true,
                ..statement(&w, 3, c)
            },
        );
        assert_eq!(
            confirm(&w.state, 1, &c, &[good.clone(), pending]),
            Err(ConfirmError::Pending { member: 3 })
        );
        // A member behind neither counts nor refuses.
        let behind = signed(
            &w,
            EpochStatement {
                epoch: 0,
                state: Digest([1; 32]),
                ..statement(&w, 3, c)
            },
        );
        assert!(matches!(
            confirm(&w.state, 1, &c, &[good, behind]),
            Err(ConfirmError::TooFew { got: 1, .. })
        ));
    }

    #[test]
    fn replayed_forged_or_foreign_statements_are_refused() {
        let mut rng = StdRng::seed_from_u64(3);
        let w = wallet(2, 3, 0, &mut rng);
        let c = Challenge::random(&mut rng);
        let old = Challenge::random(&mut rng);
        let replayed = signed(&w, statement(&w, 2, old));
        assert_eq!(
            confirm(&w.state, 1, &c, &[replayed]),
            Err(ConfirmError::WrongChallenge { member: 2 })
        );
        // Signed by member 3's key, claiming member 2.
        let forged = statement(&w, 2, c).sign(&w.keys[2]);
        assert_eq!(
            confirm(&w.state, 1, &c, &[forged]),
            Err(ConfirmError::BadSignature { member: 2 })
        );
        // A statement edited after signing (pending flag dropped).
        let mut edited = signed(
            &w,
            EpochStatement {
                pending: true,
                ..statement(&w, 2, c)
            },
        );
        edited.statement.pending = false;
        assert_eq!(
            confirm(&w.state, 1, &c, &[edited]),
            Err(ConfirmError::BadSignature { member: 2 })
        );
        let stranger = signed(&w, statement(&w, 2, c));
        let mut outsider = stranger.clone();
        outsider.statement.member = 9;
        assert_eq!(
            confirm(&w.state, 1, &c, &[outsider]),
            Err(ConfirmError::NotMember {
                member: 9,
                epoch: 0
            })
        );
        let other = wallet(2, 3, 0, &mut rng);
        let foreign = signed(&w, statement(&other, 2, c));
        assert_eq!(
            confirm(&w.state, 1, &c, &[foreign]),
            Err(ConfirmError::OtherWallet { member: 2 })
        );
        assert_eq!(needed(2, 3), 2);
        assert_eq!(needed(3, 5), 3);
        assert_eq!(needed(7, 10), 4);
    }
}
