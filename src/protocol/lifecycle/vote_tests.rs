//! The decision rule against a malicious coordinator colluding with up to `f` members:
//! random interleavings of prepares, vote requests (with honest, partial and forged prepared
//! sets), certificates (formed, forged, replayed from another transition), crashes and
//! resumes, for every threshold up to 5-of-7, asserting the property after every step. A
//! mutant with `Qc + Qa = n′ + f` (one vote short) must break it, so the test can fail.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::keys::RosterEntry;

/// Seeds that once found a violation in a mutant or a draft of the rule (kept as
/// regressions; every run also tries fresh seeds from a fixed range).
const REGRESSIONS: &[u64] = &[3, 17, 1_000_003];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Open,
    Committed,
    RolledBack,
}

struct Honest {
    key: IdentityKey,
    prepared: bool,
    standing: Option<SignedVote>,
    outcome: Outcome,
}

struct World {
    t: u16,
    ballot: Ballot,
    /// A second transition of the same wallet (replays across transitions).
    other: Ballot,
    honest: BTreeMap<u16, Honest>,
    colluders: BTreeMap<u16, IdentityKey>,
    /// Every vote the coordinator has seen, of this ballot and of the other.
    seen: Vec<SignedVote>,
    seen_other: Vec<SignedVote>,
}

fn roster(keys: &[IdentityKey]) -> Roster {
    Roster::new(
        keys.iter()
            .enumerate()
            .map(|(i, k)| RosterEntry {
                index: u16::try_from(i + 1).unwrap_or(u16::MAX),
                url: format!("http://signer-{i}"),
                identity: k.public(),
                tls_sha256: None,
            })
            .collect(),
    )
    .expect("a roster")
}

fn world(t: u16, n: u16, rng: &mut StdRng, mutant: bool) -> World {
    let keys: Vec<IdentityKey> = (0..n).map(|_| IdentityKey::generate(rng)).collect();
    let roster = roster(&keys);
    let mut quorums = Quorums::new(t, n);
    if mutant {
        // One vote short of the bound: Qc + Qa = n′ + f.
        quorums.abort = quorums.colluders;
    }
    let ballot = Ballot {
        context: Digest(rng.gen()),
        state: Digest(rng.gen()),
        roster: roster.clone(),
        quorums,
    };
    let other = Ballot {
        context: Digest(rng.gen()),
        state: Digest(rng.gen()),
        roster,
        quorums,
    };
    let f = quorums.colluders;
    let mut honest = BTreeMap::new();
    let mut colluders = BTreeMap::new();
    for (i, key) in keys.into_iter().enumerate() {
        let index = u16::try_from(i + 1).unwrap_or(u16::MAX);
        if index > n - f {
            colluders.insert(index, key);
        } else {
            honest.insert(
                index,
                Honest {
                    key,
                    prepared: false,
                    standing: None,
                    outcome: Outcome::Open,
                },
            );
        }
    }
    World {
        t,
        ballot,
        other,
        honest,
        colluders,
        seen: Vec::new(),
        seen_other: Vec::new(),
    }
}

impl World {
    /// Member `i`'s identity key, honest or colluding.
    fn key(&self, i: u16) -> &IdentityKey {
        self.honest
            .get(&i)
            .map(|h| &h.key)
            .unwrap_or_else(|| &self.colluders[&i])
    }

    /// The coordinator's best certificate attempt of `decision` from what it holds, or a
    /// forgery (votes of the wrong kind, or of the other transition).
    fn certificate(&self, decision: Decision, rng: &mut StdRng) -> DecisionCertificate {
        let kind = match decision {
            Decision::Commit => VoteKind::Ready,
            Decision::Abort => VoteKind::Abort,
        };
        let pool: &[SignedVote] = match rng.gen_range(0..6) {
            0 => &self.seen_other,
            _ => &self.seen,
        };
        let mut votes = BTreeMap::new();
        for v in pool {
            let wrong_kind = rng.gen_bool(0.05);
            if v.kind == kind || wrong_kind {
                votes.insert(v.voter, v.clone());
            }
        }
        DecisionCertificate { decision, votes }
    }

    /// A member applies a certificate: only a valid one, and commit only with a pending share.
    fn deliver(&mut self, index: u16, cert: &DecisionCertificate) {
        let Ok(decision) = self.ballot.check_certificate(cert) else {
            return;
        };
        let Some(h) = self.honest.get_mut(&index) else {
            return;
        };
        match (decision, h.outcome) {
            (Decision::Commit, Outcome::Open) if h.prepared => h.outcome = Outcome::Committed,
            (Decision::Abort, Outcome::Open) => h.outcome = Outcome::RolledBack,
            _ => {}
        }
    }

    fn step(&mut self, rng: &mut StdRng) {
        let n = self.ballot.quorums.members;
        let index = rng.gen_range(1..=n);
        match rng.gen_range(0..8) {
            // Prepare: the member stores its pending share and signs prepared.
            0 | 1 => {
                if let Some(h) = self.honest.get_mut(&index) {
                    if h.outcome == Outcome::Open {
                        h.prepared = true;
                        self.seen
                            .push(self.ballot.sign(&h.key, VoteKind::Prepared, index));
                    }
                }
            }
            // Ask for ready, with every prepared vote seen, or a subset, or forged ones.
            2 | 3 => {
                let mut prepared: BTreeMap<u16, SignedVote> = self
                    .seen
                    .iter()
                    .filter(|v| v.kind == VoteKind::Prepared && rng.gen_bool(0.9))
                    .map(|v| (v.voter, v.clone()))
                    .collect();
                // The colluders sign prepared whenever asked.
                for (i, k) in &self.colluders {
                    prepared.insert(*i, self.ballot.sign(k, VoteKind::Prepared, *i));
                }
                if rng.gen_bool(0.2) {
                    // Forge the missing ones with a colluder's key.
                    if let Some((_, k)) = self.colluders.iter().next() {
                        for i in 1..=n {
                            prepared
                                .entry(i)
                                .or_insert_with(|| self.ballot.sign(k, VoteKind::Prepared, i));
                        }
                    }
                }
                self.ask(index, VoteKind::Ready, &prepared);
            }
            4 => self.ask(index, VoteKind::Abort, &BTreeMap::new()),
            // Colluders sign both ways, for this transition and the other.
            5 => {
                for (i, k) in &self.colluders {
                    for kind in [VoteKind::Prepared, VoteKind::Ready, VoteKind::Abort] {
                        self.seen.push(self.ballot.sign(k, kind, *i));
                        self.seen_other.push(self.other.sign(k, kind, *i));
                    }
                }
            }
            // Deliver a certificate (possibly forged or replayed) to one member.
            _ => {
                let decision = if rng.gen_bool(0.5) {
                    Decision::Commit
                } else {
                    Decision::Abort
                };
                let cert = self.certificate(decision, rng);
                self.deliver(index, &cert);
            }
        }
        // Honest members of the other transition vote too (their votes are replayable).
        if rng.gen_bool(0.1) {
            for (i, h) in &self.honest {
                let kind = if rng.gen_bool(0.5) {
                    VoteKind::Ready
                } else {
                    VoteKind::Abort
                };
                self.seen_other.push(self.other.sign(&h.key, kind, *i));
            }
        }
    }

    fn ask(&mut self, index: u16, want: VoteKind, prepared: &BTreeMap<u16, SignedVote>) {
        let Some(h) = self.honest.get_mut(&index) else {
            return;
        };
        // A crashed-and-restarted member has its durable standing vote; a member that has
        // not prepared (nothing stored) only votes abort.
        if want == VoteKind::Ready && !h.prepared {
            return;
        }
        if let Ok((vote, fresh)) = decide_vote(
            &self.ballot,
            &h.key,
            index,
            h.standing.as_ref(),
            want,
            prepared,
        ) {
            if fresh {
                h.standing = Some(vote.clone());
            }
            self.seen.push(vote);
        }
    }

    /// The property: no honest member committed while another rolled back; and the honest
    /// members holding one epoch's share number at least `t` in the old or the new epoch.
    fn check(&self) -> Result<(), String> {
        let committed = self
            .honest
            .values()
            .filter(|h| h.outcome == Outcome::Committed)
            .count();
        let rolled = self
            .honest
            .values()
            .filter(|h| h.outcome == Outcome::RolledBack)
            .count();
        if committed > 0 && rolled > 0 {
            return Err(format!(
                "{committed} honest members committed and {rolled} rolled back"
            ));
        }
        let old = self
            .honest
            .values()
            .filter(|h| h.outcome != Outcome::Committed)
            .count();
        let new = self
            .honest
            .values()
            .filter(|h| h.prepared && h.outcome != Outcome::RolledBack)
            .count();
        let t = usize::from(self.t);
        if old < t && new < t {
            return Err(format!(
                "only {old} honest holders of the old epoch and {new} of the new (t = {t})"
            ));
        }
        Ok(())
    }
}

/// Runs `runs` random interleavings of `steps` steps for every threshold up to 5-of-7 and
/// returns the first violation.
fn explore(seeds: impl Iterator<Item = u64> + Clone, steps: usize, mutant: bool) -> Option<String> {
    for n in 2u16..=7 {
        for t in 2..=n.min(5) {
            for seed in seeds.clone() {
                let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(n) << 32) ^ u64::from(t));
                let mut w = world(t, n, &mut rng, mutant);
                if n - w.ballot.quorums.colluders < t {
                    // Fewer honest members than t: no rule can keep t honest holders.
                    continue;
                }
                for step in 0..steps {
                    w.step(&mut rng);
                    if let Err(e) = w.check() {
                        return Some(format!("{t}-of-{n}, seed {seed}, step {step}: {e}"));
                    }
                }
            }
        }
    }
    None
}

#[test]
fn no_interleaving_leaves_fewer_than_t_honest_holders_in_one_epoch() {
    let seeds = REGRESSIONS.iter().copied().chain(0..40);
    assert_eq!(explore(seeds, 60, false), None);
}

#[test]
fn one_vote_short_of_the_bound_the_same_search_finds_a_split() {
    let found = explore(REGRESSIONS.iter().copied().chain(0..40), 60, true);
    assert!(found.is_some(), "the mutant rule was never broken");
}

#[test]
fn quorums_meet_the_bound_and_leave_abort_reachable() {
    for n in 2u16..=10 {
        for t in 2..=n {
            let q = Quorums::new(t, n);
            assert!(q.commit + q.abort > n + q.colluders, "{t}-of-{n}: {q:?}");
            assert!(q.abort <= n, "{t}-of-{n}: {q:?}");
            assert!(q.colluders >= 1, "{t}-of-{n}: {q:?}");
        }
    }
    // 2-of-3: one colluder; abort with two members, so a member lost before its ready vote
    // does not block the abort.
    let q = Quorums::new(2, 3);
    assert_eq!((q.colluders, q.commit, q.abort), (1, 3, 2));
    let q = Quorums::new(3, 5);
    assert_eq!((q.colluders, q.commit, q.abort), (2, 5, 3));
}

#[test]
fn a_member_holds_one_of_ready_and_abort_and_ready_needs_every_prepared_vote() {
    let mut rng = StdRng::seed_from_u64(7);
    let w = world(2, 3, &mut rng, false);
    let key = &w.honest[&1].key;
    let prepared: BTreeMap<u16, SignedVote> = [1u16, 2]
        .iter()
        .map(|i| (*i, w.ballot.sign(w.key(*i), VoteKind::Prepared, *i)))
        .collect();
    assert_eq!(
        decide_vote(&w.ballot, key, 1, None, VoteKind::Ready, &prepared).err(),
        Some(VoteError::NotAllPrepared { missing: vec![3] })
    );
    let (abort, fresh) =
        decide_vote(&w.ballot, key, 1, None, VoteKind::Abort, &prepared).expect("abort");
    assert!(fresh);
    let mut all = prepared.clone();
    all.insert(3, w.ballot.sign(&w.colluders[&3], VoteKind::Prepared, 3));
    let (again, fresh) =
        decide_vote(&w.ballot, key, 1, Some(&abort), VoteKind::Ready, &all).expect("standing");
    assert!(!fresh);
    assert_eq!(again.kind, VoteKind::Abort);
    // A vote keyed under another member, or of another transition, is refused.
    let mut forged = all.clone();
    forged.insert(2, w.ballot.sign(key, VoteKind::Prepared, 2));
    assert!(matches!(
        w.ballot.check_all_prepared(&forged),
        Err(VoteError::BadSignature { voter: 2, .. })
    ));
    let replayed: BTreeMap<u16, SignedVote> = all
        .keys()
        .map(|i| (*i, w.other.sign(w.key(*i), VoteKind::Prepared, *i)))
        .collect();
    assert!(w.ballot.check_all_prepared(&replayed).is_err());
    let used: BTreeSet<u16> = all.keys().copied().collect();
    assert_eq!(used.len(), 3);
}
