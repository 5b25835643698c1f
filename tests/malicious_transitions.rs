//! A malicious coordinator against real `ckm signer serve` processes during key transitions:
//! the mirror image of `examples/faulty_signer.rs`. It has the wallet's coordinator key (the
//! signers allow it) and sends whatever it likes, in any order, to any subset: a commit to
//! some and an abort to others, forged, incomplete and replayed certificates, prepares
//! withheld from some members, two transitions at once, a colluding member's key signing
//! both votes, a removed member's way back (a signing set with it while its removal is
//! prepared, a forged farewell, an enrolment of its identity). After each attack, what every signer stored is read back through its status,
//! and t signers co-sign a spend (checked by libbitcoinconsensus) in one epoch.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;
#[path = "common/driver.rs"]
mod driver;

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};
use ckm::keys::GroupKey;
use ckm::message::{CoordinatorToSigner, SessionId, SignerToCoordinator};
use ckm::net::client::CallError;
use ckm::net::transitions::{gather_status, run_transition, settle};
use ckm::protocol::lifecycle::{
    Ballot, CertifiedTransition, Decision, DecisionCertificate, MemberStatus, SignedVote,
    TransitionAnswer, TransitionContext, TransitionCoordinator, TransitionKind, TransitionRequest,
    VoteKind, TRANSITION_VERSION,
};
use ckm::signer::home::SignerHome;
use cluster::*;
use driver::Driver;

type Funding = std::collections::HashMap<bitcoin::OutPoint, bitcoin::TxOut>;

/// The attacker: the coordinator's key and client, and the wallet as it was.
struct Evil {
    d: Driver,
}

impl Evil {
    fn new(c: &Cluster) -> Result<Self> {
        Ok(Evil {
            d: Driver::new(c, WALLET)?,
        })
    }

    fn context(&self, kind: TransitionKind) -> Result<TransitionContext> {
        let from = self.d.meta.current_state();
        let new_roster = match kind {
            TransitionKind::Remove(i) => from.roster.without(i)?,
            _ => from.roster.clone(),
        };
        let helpers = new_roster.indexes();
        Ok(TransitionContext {
            version: TRANSITION_VERSION,
            session: SessionId::random(&mut rand::thread_rng()),
            kind,
            wallet: GroupKey::of(&from.group),
            coordinator: self.d.client.identity().public(),
            from_epoch: from.epoch,
            from_state: from.hash(),
            new_roster,
            helpers,
        })
    }

    fn transition(
        &self,
        index: u16,
        request: TransitionRequest,
    ) -> Result<Result<TransitionAnswer, CallError>> {
        Ok(
            match self
                .d
                .call(index, &CoordinatorToSigner::Transition(request))?
            {
                Ok(SignerToCoordinator::Transition(a)) => Ok(a),
                Ok(other) => bail!("signer {index} answered {other:?}"),
                Err(e) => Err(e),
            },
        )
    }

    /// An honest refresh up to the certificates, then prepare sent only to `prepare_to`.
    fn refresh_prepared_at(
        &self,
        prepare_to: &[u16],
    ) -> Result<(CertifiedTransition, BTreeMap<u16, SignedVote>)> {
        self.prepared_at(TransitionKind::Refresh, prepare_to)
    }

    /// An honest refresh or removal up to the certificates, then prepare sent only to
    /// `prepare_to`.
    fn prepared_at(
        &self,
        kind: TransitionKind,
        prepare_to: &[u16],
    ) -> Result<(CertifiedTransition, BTreeMap<u16, SignedVote>)> {
        let context = self.context(kind)?;
        let from = self.d.meta.current_state();
        let members = context.new_roster.indexes();
        let mut machine = TransitionCoordinator::new(context.clone(), from)?;
        for &i in &members {
            let a = self.transition(
                i,
                TransitionRequest::Begin {
                    context: context.clone(),
                    joining: None,
                },
            )??;
            machine.add_begun(i, a)?;
        }
        let r1 = machine.refresh_round1()?;
        for &i in &members {
            let a = self.transition(i, r1.clone())??;
            machine.add_refresh_sealed(i, a)?;
        }
        for &i in &members {
            let a = self.transition(i, machine.refresh_round2(i))??;
            machine.add_certified(i, a)?;
        }
        let prepare = machine.prepare_request()?;
        let record = machine.record()?;
        let mut prepared = BTreeMap::new();
        for &i in prepare_to {
            match self.transition(i, prepare.clone())?? {
                TransitionAnswer::Prepared { vote } => {
                    prepared.insert(i, vote);
                }
                other => bail!("prepare at {i}: {other:?}"),
            }
        }
        Ok((record, prepared))
    }

    fn vote(
        &self,
        i: u16,
        session: SessionId,
        want: VoteKind,
        prepared: &BTreeMap<u16, SignedVote>,
    ) -> Result<Result<SignedVote, CallError>> {
        Ok(
            match self.transition(
                i,
                TransitionRequest::Vote {
                    session,
                    want,
                    prepared: prepared.clone(),
                    record: None,
                },
            )? {
                Ok(TransitionAnswer::Voted { vote }) => Ok(vote),
                Ok(other) => bail!("vote at {i}: {other:?}"),
                Err(e) => Err(e),
            },
        )
    }

    fn decide(
        &self,
        i: u16,
        session: SessionId,
        certificate: &DecisionCertificate,
    ) -> Result<Result<(Decision, u64), CallError>> {
        Ok(
            match self.transition(
                i,
                TransitionRequest::Decide {
                    session,
                    certificate: certificate.clone(),
                },
            )? {
                Ok(TransitionAnswer::Decided { decision, epoch }) => Ok((decision, epoch)),
                Ok(other) => bail!("decide at {i}: {other:?}"),
                Err(e) => Err(e),
            },
        )
    }

    fn statuses(&self) -> Result<BTreeMap<u16, MemberStatus>> {
        let members = self.d.meta.roster.entries().to_vec();
        let wallet = GroupKey::of(&self.d.meta.group);
        self.d
            .rt
            .block_on(gather_status(&self.d.client, &members, wallet))
            .into_iter()
            .map(|(i, s)| {
                s.map(|s| (i, s))
                    .map_err(|e| anyhow::anyhow!("signer {i}: {e}"))
            })
            .collect()
    }
}

fn certificate(decision: Decision, votes: &[&SignedVote]) -> DecisionCertificate {
    DecisionCertificate {
        decision,
        votes: votes.iter().map(|v| (v.voter, (*v).clone())).collect(),
    }
}

fn refused(r: Result<impl std::fmt::Debug, CallError>, needle: &str) -> Result<()> {
    match r {
        Err(e) => {
            let text = format!("{e:#}");
            ensure!(
                text.contains(needle),
                "refused, but not for '{needle}': {text}"
            );
            Ok(())
        }
        Ok(v) => bail!("accepted ({v:?}), expected a refusal naming '{needle}'"),
    }
}

/// Every member at `epoch`, with nothing pending.
fn all_at(evil: &Evil, epoch: u64) -> Result<()> {
    for (i, s) in evil.statuses()? {
        ensure!(
            s.epoch == Some(epoch) && s.pending.is_none(),
            "signer {i}: {s:?}"
        );
    }
    Ok(())
}

/// `t` signers co-sign a spend through the real CLI; returns the signers used.
fn spend(c: &Cluster, funding: &Funding, sats: u64, name: &str) -> Result<Vec<u16>> {
    let p = c.pay(funding, &foreign_address(), sats, 2)?;
    let input = c.write_psbt(&format!("{name}.psbt"), &p.psbt)?;
    let out = c.dir.path().join(format!("{name}.signed.psbt"));
    let v = c.sign_ok(&input, &out, &[])?;
    check_signed(&out, &p)?;
    u16_array(&v["signer_indexes"])
}

fn identity_home(c: &Cluster, i: usize) -> Result<SignerHome> {
    Ok(SignerHome::open_with(
        &c.signers[i].home,
        PASSPHRASE.as_bytes(),
        |_, _| Ok(()),
    )?)
}

#[test]
fn commit_to_some_and_abort_to_others_cannot_split_a_3_of_4() -> Result<()> {
    let c = Cluster::with_wallet(4, 3)?;
    let funding = fund(&c, &FUNDS)?;
    let evil = Evil::new(&c)?;
    let (record, prepared) = evil.refresh_prepared_at(&[1, 2, 3, 4])?;
    let session = record.context.session;
    let q = Ballot::new(&record.context, &record.state).quorums();
    ensure!((q.commit, q.abort, q.colluders) == (4, 2, 1), "{q:?}");
    // Ready from 1 and 2, abort from 3 and 4.
    let r1 = evil.vote(1, session, VoteKind::Ready, &prepared)??;
    let r2 = evil.vote(2, session, VoteKind::Ready, &prepared)??;
    let a3 = evil.vote(3, session, VoteKind::Abort, &prepared)??;
    let a4 = evil.vote(4, session, VoteKind::Abort, &prepared)??;
    ensure!(r1.kind == VoteKind::Ready && a3.kind == VoteKind::Abort);
    // Member 1 will not turn its ready into abort, nor 3 its abort into ready.
    ensure!(evil.vote(1, session, VoteKind::Abort, &prepared)??.kind == VoteKind::Ready);
    ensure!(evil.vote(3, session, VoteKind::Ready, &prepared)??.kind == VoteKind::Abort);
    // "Commit" to 1 and 2 with their own two ready votes: refused.
    let partial = certificate(Decision::Commit, &[&r1, &r2]);
    refused(evil.decide(1, session, &partial)?, "needs 4 votes")?;
    refused(evil.decide(2, session, &partial)?, "needs 4 votes")?;
    // Abort votes relabelled as ready: refused.
    let relabelled = certificate(Decision::Commit, &[&r1, &r2, &a3, &a4]);
    refused(evil.decide(1, session, &relabelled)?, "is abort, not ready")?;
    // The abort certificate of 3 and 4 is valid, and binds 1 and 2 as well.
    let abort = certificate(Decision::Abort, &[&a3, &a4]);
    for i in [3, 4, 1, 2] {
        let (decision, epoch) = evil.decide(i, session, &abort)??;
        ensure!(decision == Decision::Abort && epoch == 0);
    }
    all_at(&evil, 0)?;
    let used = spend(&c, &funding, 20_000, "after-split")?;
    ensure!(used.len() == 3, "{used:?}");
    Ok(())
}

#[test]
fn forged_incomplete_and_replayed_certificates_are_refused() -> Result<()> {
    let c = Cluster::with_wallet(3, 2)?;
    let funding = fund(&c, &FUNDS)?;
    let mut evil = Evil::new(&c)?;
    // A first refresh, decided honestly; its certificate is kept for a replay.
    let first = evil.d.rt.block_on(run_transition(
        &evil.d.client,
        evil.context(TransitionKind::Refresh)?,
        evil.d.meta.current_state(),
        None,
    ))?;
    let members = first.record.state.roster.entries().to_vec();
    let s1 = evil.d.rt.block_on(settle(
        &evil.d.client,
        &members,
        &first.record,
        &first.prepared,
        Decision::Commit,
    ));
    let old_cert = s1.certificate.clone().context("no certificate")?;
    ensure!(
        old_cert.decision == Decision::Commit && s1.applied.len() == 3,
        "{s1:?}"
    );
    all_at(&evil, 1)?;
    evil.d.meta.epoch = 1;
    evil.d.meta.group = first.record.state.group.clone();
    evil.d.meta.transitions.push(first.record.clone());

    let (record, prepared) = evil.refresh_prepared_at(&[1, 2, 3])?;
    let session = record.context.session;
    let ballot = Ballot::new(&record.context, &record.state);
    // Ready votes forged with the coordinator's own key, under each member's index.
    let coordinator = c.coordinator_key()?;
    let forged: Vec<SignedVote> = [1u16, 2, 3]
        .iter()
        .map(|i| ballot.sign(&coordinator, VoteKind::Ready, *i))
        .collect();
    let forged_cert = certificate(Decision::Commit, &forged.iter().collect::<Vec<_>>());
    refused(evil.decide(1, session, &forged_cert)?, "does not verify")?;
    // Prepared votes passed off as ready.
    let as_ready = certificate(Decision::Commit, &prepared.values().collect::<Vec<_>>());
    refused(
        evil.decide(2, session, &as_ready)?,
        "is prepared, not ready",
    )?;
    // Two of three ready votes.
    let r1 = evil.vote(1, session, VoteKind::Ready, &prepared)??;
    let r2 = evil.vote(2, session, VoteKind::Ready, &prepared)??;
    refused(
        evil.decide(1, session, &certificate(Decision::Commit, &[&r1, &r2]))?,
        "needs 3 votes",
    )?;
    // The older epoch's commit certificate, for the new session: its votes are of another
    // transition.
    refused(evil.decide(3, session, &old_cert)?, "does not verify")?;
    // Replayed for its own session: answered again, nothing changes.
    let (d, epoch) = evil.decide(3, first.record.context.session, &old_cert)??;
    ensure!(d == Decision::Commit && epoch == 1);
    // Ready without every prepared vote, or with one forged: refused.
    let mut missing = prepared.clone();
    missing.remove(&2);
    refused(
        evil.vote(3, session, VoteKind::Ready, &missing)?,
        "are missing",
    )?;
    let mut fake = prepared.clone();
    fake.insert(2, ballot.sign(&coordinator, VoteKind::Prepared, 2));
    refused(
        evil.vote(3, session, VoteKind::Ready, &fake)?,
        "does not verify",
    )?;
    // Every member still holds epoch 1 current and epoch 2 pending; 1 and 2 sign in epoch 1.
    for (i, s) in evil.statuses()? {
        ensure!(
            s.epoch == Some(1) && s.pending.is_some(),
            "signer {i}: {s:?}"
        );
    }
    // The honest path finishes it: ready from 3 makes the commit certificate.
    let r3 = evil.vote(3, session, VoteKind::Ready, &prepared)??;
    let cert = certificate(Decision::Commit, &[&r1, &r2, &r3]);
    for i in [1, 2, 3] {
        ensure!(evil.decide(i, session, &cert)?? == (Decision::Commit, 2));
    }
    all_at(&evil, 2)?;
    // The coordinator's own database never learnt of these epochs: resume catches up from
    // what the signers hold.
    let resumed = ckm_json(&c.coord, &["wallet", "resume"])?;
    ensure!(resumed["epoch"] == 2, "{resumed}");
    spend(&c, &funding, 21_000, "after-forgeries")?;
    Ok(())
}

#[test]
fn withheld_prepares_and_parallel_transitions_leave_the_old_epoch_whole() -> Result<()> {
    let c = Cluster::with_wallet(4, 3)?;
    let funding = fund(&c, &FUNDS)?;
    let evil = Evil::new(&c)?;
    // A second transition while one is open: every member refuses it.
    let open = evil.context(TransitionKind::Refresh)?;
    for i in 1..=4 {
        evil.transition(
            i,
            TransitionRequest::Begin {
                context: open.clone(),
                joining: None,
            },
        )??;
    }
    let parallel = evil.context(TransitionKind::Remove(4))?;
    for i in 1..=3 {
        refused(
            evil.transition(
                i,
                TransitionRequest::Begin {
                    context: parallel.clone(),
                    joining: None,
                },
            )?,
            "another transition of this wallet is open",
        )?;
    }
    for i in 1..=4 {
        let a = evil.transition(
            i,
            TransitionRequest::Cancel {
                session: open.session,
            },
        )??;
        ensure!(matches!(a, TransitionAnswer::Cancelled));
    }
    // Prepare sent to 1 and 2 only; 3 and 4 never hear of it.
    let (record, prepared) = evil.refresh_prepared_at(&[1, 2])?;
    let session = record.context.session;
    refused(
        evil.vote(1, session, VoteKind::Ready, &prepared)?,
        "are missing",
    )?;
    // A second refresh begun meanwhile: refused where the first is pending, and the others
    // cannot complete it without them.
    let second = evil.context(TransitionKind::Refresh)?;
    refused(
        evil.transition(
            1,
            TransitionRequest::Begin {
                context: second.clone(),
                joining: None,
            },
        )?,
        "is pending here",
    )?;
    // Members 1 and 2 hold epoch 0 and the pending epoch 1; 3 of the 4 still sign in epoch 0.
    let statuses = evil.statuses()?;
    ensure!(statuses[&1].pending.is_some() && statuses[&3].pending.is_none());
    let used = spend(&c, &funding, 20_000, "while-pending")?;
    ensure!(used.len() == 3, "{used:?}");
    // Abort votes of 1 and 2 make the abort certificate (Qa = 2).
    let a1 = evil.vote(1, session, VoteKind::Abort, &prepared)??;
    let a2 = evil.vote(2, session, VoteKind::Abort, &prepared)??;
    let abort = certificate(Decision::Abort, &[&a1, &a2]);
    for i in [1, 2] {
        evil.decide(i, session, &abort)??;
    }
    all_at(&evil, 0)?;
    // Session ids are never reused.
    let mut reused = evil.context(TransitionKind::Refresh)?;
    reused.session = session;
    refused(
        evil.transition(
            1,
            TransitionRequest::Begin {
                context: reused,
                joining: None,
            },
        )?,
        "never reused",
    )?;
    spend(&c, &funding, 21_000, "after-abort")?;
    Ok(())
}

#[test]
fn a_colluding_member_signing_both_votes_cannot_split_a_2_of_3() -> Result<()> {
    let c = Cluster::with_wallet(3, 2)?;
    let funding = fund(&c, &FUNDS)?;
    let evil = Evil::new(&c)?;
    let colluder = identity_home(&c, 2)?;
    let (record, prepared) = evil.refresh_prepared_at(&[1, 2, 3])?;
    let session = record.context.session;
    let ballot = Ballot::new(&record.context, &record.state);
    // Member 3 colludes: its key signs ready and abort.
    let r3 = ballot.sign(colluder.identity(), VoteKind::Ready, 3);
    let a3 = ballot.sign(colluder.identity(), VoteKind::Abort, 3);
    let r1 = evil.vote(1, session, VoteKind::Ready, &prepared)??;
    let a2 = evil.vote(2, session, VoteKind::Abort, &prepared)??;
    // Member 1 is shown a commit certificate: impossible without member 2's ready vote.
    refused(
        evil.decide(1, session, &certificate(Decision::Commit, &[&r1, &r3]))?,
        "needs 3 votes",
    )?;
    // The abort certificate (2 and the colluder) exists, and member 1 follows it too.
    let abort = certificate(Decision::Abort, &[&a2, &a3]);
    for i in [2, 1, 3] {
        ensure!(evil.decide(i, session, &abort)?? == (Decision::Abort, 0));
    }
    all_at(&evil, 0)?;
    spend(&c, &funding, 20_000, "after-collusion")?;
    Ok(())
}

#[test]
fn a_member_lost_after_its_vote_comes_back_to_the_decision_through_resume() -> Result<()> {
    let mut c = Cluster::with_wallet(3, 2)?;
    let funding = fund(&c, &FUNDS)?;
    let evil = Evil::new(&c)?;
    let (record, prepared) = evil.refresh_prepared_at(&[1, 2, 3])?;
    let session = record.context.session;
    let votes: Vec<SignedVote> = [1u16, 2, 3]
        .iter()
        .map(|i| {
            evil.vote(*i, session, VoteKind::Ready, &prepared)?
                .map_err(anyhow::Error::from)
        })
        .collect::<Result<_>>()?;
    let cert = certificate(Decision::Commit, &votes.iter().collect::<Vec<_>>());
    // kill -9 of member 3 after its vote; 1 and 2 commit.
    c.signers[2].kill();
    for i in [1, 2] {
        ensure!(evil.decide(i, session, &cert)?? == (Decision::Commit, 1));
    }
    // The old epoch is gone at 1 and 2 and the new one whole there. The coordinator's
    // database still says epoch 0: `wallet resume` catches up from the certified history
    // the signers hold (member 3 is still down), and 1 and 2 sign in epoch 1.
    let caught = ckm_json(&c.coord, &["wallet", "resume"])?;
    ensure!(
        caught["epoch"] == 1 && caught["caught_up"] == true,
        "{caught}"
    );
    let used = spend(&c, &funding, 20_000, "member-lost")?;
    ensure!(used == vec![1, 2], "{used:?}");
    // Member 3 returns; the coordinator (its database knows nothing of this transition)
    // runs `wallet resume`: the certificate member 1 holds is spread, 3 commits.
    c.signers[2].relaunch_same_port(Kind::Honest)?;
    c.sync_roster()?;
    let resumed = ckm_json(&c.coord, &["wallet", "resume"])?;
    ensure!(
        resumed["epoch"] == 1 && resumed["decision"] == "commit",
        "{resumed}"
    );
    all_at(&evil, 1)?;
    let shown = ckm_json(&c.coord, &["wallet", "transition", "status"])?;
    for r in shown["signers"].as_array().context("signers")? {
        ensure!(r["last_decided"]["decision"] == "commit", "{shown}");
    }
    spend(&c, &funding, 21_000, "after-resume")?;
    Ok(())
}

#[test]
fn resume_after_prepare_everywhere_finishes_with_every_ready_vote() -> Result<()> {
    let c = Cluster::with_wallet(3, 2)?;
    let funding = fund(&c, &FUNDS)?;
    let evil = Evil::new(&c)?;
    // The coordinator dies right after every member prepared (no vote asked).
    let (_, _) = evil.refresh_prepared_at(&[1, 2, 3])?;
    let status = ckm_json(&c.coord, &["wallet", "transition", "status"])?;
    for r in status["signers"].as_array().context("signers")? {
        ensure!(
            r["pending"]["prepared"] == true && r["pending"]["vote"].is_null(),
            "{status}"
        );
    }
    let resumed = ckm_json(&c.coord, &["wallet", "resume"])?;
    ensure!(resumed["epoch"] == 1, "{resumed}");
    all_at(&evil, 1)?;
    spend(&c, &funding, 20_000, "after-resume")?;
    // A prepared transition abandoned at one member only is rolled back by resume (the
    // others cannot vote ready without its prepared vote; 2 abort votes suffice).
    let mut evil = evil;
    evil.d.reload(&c, WALLET)?;
    let (_, _) = evil.refresh_prepared_at(&[1])?;
    let resumed = ckm_json(&c.coord, &["wallet", "resume"])?;
    ensure!(
        resumed["decision"] == "abort" && resumed["epoch"] == 1,
        "{resumed}"
    );
    // Members 2 and 3 never prepared: their abort votes (on the record, checked against
    // their own state) make the certificate with member 1's.
    ensure!(
        resumed["abort_votes"].as_array().map(Vec::len) >= Some(2),
        "{resumed}"
    );
    all_at(&evil, 1)?;
    spend(&c, &funding, 21_000, "after-rollback")?;
    Ok(())
}

#[test]
fn a_removed_member_signs_nothing_while_leaving_erases_its_share_and_never_comes_back() -> Result<()>
{
    let c = Cluster::with_wallet(4, 3)?;
    let funding = fund(&c, &FUNDS)?;
    let evil = Evil::new(&c)?;
    let (record, prepared) = evil.prepared_at(TransitionKind::Remove(4), &[1, 2, 3])?;
    let session = record.context.session;

    // Its removal prepared at 1, 2 and 3: a signing set with signer 4 is refused in round 2,
    // one without it still signs in the old epoch.
    let p = c.pay(&funding, &foreign_address(), 12_345, 2)?;
    let sign_session = SessionId::random(&mut rand::thread_rng());
    let mut committed = BTreeMap::new();
    for i in [1, 2, 4] {
        committed.insert(i, evil.d.commit(sign_session, &p.psbt, i)??);
    }
    let packages = evil.d.packages(&p.psbt, &committed)?;
    refused(
        evil.d.sign(sign_session, &packages, &BTreeMap::new(), 1)?,
        "signer 4 is being removed",
    )?;
    let p = c.pay(&funding, &foreign_address(), 20_000, 2)?;
    let sign_session = SessionId::random(&mut rand::thread_rng());
    let mut committed = BTreeMap::new();
    for i in [1, 2, 3] {
        committed.insert(i, evil.d.commit(sign_session, &p.psbt, i)??);
    }
    let packages = evil.d.packages(&p.psbt, &committed)?;
    let mut shares = BTreeMap::new();
    for i in [1, 2, 3] {
        shares.insert(
            i,
            evil.d
                .sign(sign_session, &packages, &BTreeMap::new(), i)??,
        );
    }
    evil.d.aggregate(&p.psbt, &packages, &shares)?;

    // The removal commits on every remaining member's ready vote.
    let votes: Vec<SignedVote> = [1, 2, 3]
        .iter()
        .map(|&i| {
            evil.vote(i, session, VoteKind::Ready, &prepared)?
                .map_err(Into::into)
        })
        .collect::<Result<_>>()?;
    let commit = certificate(Decision::Commit, &votes.iter().collect::<Vec<_>>());
    for i in [1, 2, 3] {
        ensure!(evil.decide(i, session, &commit)?? == (Decision::Commit, 1));
    }

    // Farewell: a forged (incomplete) certificate and an abort certificate erase nothing.
    let farewell = |certificate: &DecisionCertificate| {
        evil.transition(
            4,
            TransitionRequest::Farewell {
                record: Box::new(record.clone()),
                certificate: certificate.clone(),
            },
        )
    };
    let short = certificate(Decision::Commit, &[&votes[0], &votes[1]]);
    refused(farewell(&short)?, "needs 3 votes")?;
    let relabelled = DecisionCertificate {
        decision: Decision::Abort,
        votes: commit.votes.clone(),
    };
    refused(farewell(&relabelled)?, "is ready, not abort")?;
    let held = ckm_json(&c.signers[3].home, &["signer", "wallets"])?;
    ensure!(held.as_array().is_some_and(|a| a.len() == 1), "{held}");
    // The real one: signer 4 checks it and erases its share.
    match farewell(&commit)?? {
        TransitionAnswer::Erased { epoch } => ensure!(epoch == 1),
        other => bail!("farewell: {other:?}"),
    }
    let held = ckm_json(&c.signers[3].home, &["signer", "wallets"])?;
    ensure!(held.as_array().is_some_and(|a| a.is_empty()), "{held}");

    // Its identity is refused as a newcomer by every member.
    let id4 = c.signers[3].identity;
    let back = ckm::keys::RosterEntry {
        index: 5,
        url: c.signers[3].url.clone(),
        identity: id4,
        tls_sha256: None,
    };
    let context = TransitionContext {
        version: TRANSITION_VERSION,
        session: SessionId::random(&mut rand::thread_rng()),
        kind: TransitionKind::Enrol(5),
        wallet: GroupKey::of(&record.state.group),
        coordinator: evil.d.client.identity().public(),
        from_epoch: 1,
        from_state: record.state.hash(),
        new_roster: record.state.roster.with(back)?,
        helpers: vec![1, 2, 3],
    };
    for i in [1, 2, 3] {
        refused(
            evil.transition(
                i,
                TransitionRequest::Begin {
                    context: context.clone(),
                    joining: None,
                },
            )?,
            "never comes back",
        )?;
    }

    // The coordinator catches up from the members and 3 of 3 sign in epoch 1.
    let v = ckm_json(&c.coord, &["wallet", "resume"])?;
    ensure!(v["epoch"] == 1, "{v}");
    ensure!(spend(&c, &funding, 30_000, "after-removal")? == vec![1, 2, 3]);
    Ok(())
}
