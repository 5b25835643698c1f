//! A malicious coordinator against real `ckm signer serve` processes: the mirror image of
//! `examples/faulty_signer.rs`. The harness holds the identity key the signers allow as
//! their coordinator plus identity keys of its own ("fakes") that it slips into rosters, and
//! drives the certified key generation with crafted messages: equivocated rosters, Sybil
//! rosters, a swapped identity, contexts that differ between signers, withheld and forged
//! certificates. Each test asserts what the signers stored (no share file) and that the
//! harness could not open any sealed round-2 package with any key it holds; a control test
//! shows the same opening code does succeed when an operator approved one of its keys.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bitcoin::Network;
use ckm::frost::pedersen::DkgParams;
use ckm::identity::{IdentityKey, IdentityPublic};
use ckm::keys::{Roster, RosterEntry};
use ckm::message::{CoordinatorToSigner, ErrorCode, SessionId, SignerToCoordinator};
use ckm::net::client::{CallError, Client};
use ckm::protocol::dkg::{
    round2_aad, Begin, Certificate, ConfirmRequest, DkgContext, Participant1, Round1Request,
    Round2Answer, Round2Request, Transcript, CONTEXT_VERSION,
};
use cluster::*;

/// The malicious coordinator: the allowed coordinator key, fakes, and real signers.
struct Evil {
    c: Cluster,
    client: Client,
    rt: tokio::runtime::Runtime,
    key: IdentityKey,
    fakes: Vec<IdentityKey>,
    /// Sealed round-2 packages the harness got hold of.
    seen: usize,
    /// How many of them it could open.
    opened: usize,
}

impl Evil {
    fn start(n: usize) -> Result<Self> {
        let c = Cluster::start(n)?;
        let key = c.coordinator_key()?;
        let client = Client::new(c.coordinator_key()?, Duration::from_secs(20))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut rng = rand::thread_rng();
        let fakes = (0..n).map(|_| IdentityKey::generate(&mut rng)).collect();
        Ok(Evil {
            c,
            client,
            rt,
            key,
            fakes,
            seen: 0,
            opened: 0,
        })
    }

    /// The roster entry of real signer `p` (0-based process) at roster index `index`.
    fn real(&self, p: usize, index: u16) -> RosterEntry {
        let s = &self.c.signers[p];
        RosterEntry {
            index,
            url: s.url.clone(),
            identity: s.identity,
            tls_sha256: None,
        }
    }

    /// A roster entry carrying fake key `f` at `index` (unreachable URL).
    fn fake(&self, f: usize, index: u16) -> RosterEntry {
        RosterEntry {
            index,
            url: "http://127.0.0.1:9".into(),
            identity: self.fakes[f].public(),
            tls_sha256: None,
        }
    }

    fn context(&self, session: SessionId, roster: Vec<RosterEntry>, t: u16) -> Result<DkgContext> {
        let n = u16::try_from(roster.len())?;
        Ok(DkgContext {
            version: CONTEXT_VERSION,
            session,
            wallet: WALLET.into(),
            network: Network::Regtest,
            params: DkgParams::new(t, n)?,
            coordinator: self.key.public(),
            roster: Roster::new(roster)?,
            recovery: None,
        })
    }

    /// Sends `message` to real signer `p`.
    fn send(
        &self,
        p: usize,
        message: &CoordinatorToSigner,
    ) -> Result<SignerToCoordinator, CallError> {
        let entry = self.real(p, u16::try_from(p + 1).unwrap_or(1));
        self.rt.block_on(self.client.call(&entry, message))
    }

    /// Tries to open every package of a round-2 answer with every key the harness holds, as
    /// if it were the recipient the sender sealed to (`recipients` is the sender's roster).
    fn try_open(&mut self, sender: &IdentityPublic, sender_index: u16, answer: &Round2Answer) {
        for (to, blob) in &answer.sealed {
            self.seen += 1;
            let aad = round2_aad(&answer.transcript.0, sender_index, *to);
            let mine = std::iter::once(&self.key).chain(self.fakes.iter());
            if mine
                .into_iter()
                .any(|k| k.open(sender, &aad, &blob.0).is_ok())
            {
                self.opened += 1;
            }
        }
    }

    /// No honest signer wrote a share file.
    fn assert_no_shares(&self) -> Result<()> {
        for s in &self.c.signers {
            let files = share_files(&s.home)?;
            ensure!(files.is_empty(), "{} holds {files:?}", s.home.display());
        }
        Ok(())
    }
}

fn refusal(reply: Result<SignerToCoordinator, CallError>) -> Result<(ErrorCode, String)> {
    match reply {
        Err(CallError::Refused { code, message, .. }) => Ok((code, message)),
        other => bail!("expected a refusal, got {other:?}"),
    }
}

/// Round 1 of a run where signer `p` got `context`; returns its broadcast.
fn begin(
    e: &Evil,
    p: usize,
    context: &DkgContext,
) -> Result<ckm::frost::pedersen::Round1Broadcast> {
    match e.send(
        p,
        &CoordinatorToSigner::DkgBegin(Begin {
            context: context.clone(),
        }),
    )? {
        SignerToCoordinator::DkgRound1(a) => Ok(a.broadcast),
        other => bail!("signer {} answered {other:?}", p + 1),
    }
}

#[test]
fn equivocated_rosters_are_refused_before_round_1() -> Result<()> {
    let e = Evil::start(3)?;
    let session = SessionId::random(&mut rand::thread_rng());
    // Each signer sees itself among fakes at every other index: the coordinator would open
    // every "end-to-end" package and re-seal it to the real recipient.
    for p in 0..3 {
        let roster: Vec<RosterEntry> = (0..3)
            .map(|i| {
                let index = u16::try_from(i + 1).unwrap_or(1);
                if i == p {
                    e.real(p, index)
                } else {
                    e.fake(i, index)
                }
            })
            .collect();
        let context = e.context(session, roster, 2)?;
        let (code, message) =
            refusal(e.send(p, &CoordinatorToSigner::DkgBegin(Begin { context })))?;
        ensure!(code == ErrorCode::UnapprovedPeer, "{code:?}: {message}");
        let named = (0..3)
            .filter(|i| *i != p)
            .any(|i| message.contains(&e.fakes[i].public().to_string()));
        ensure!(
            named,
            "the refusal does not name the unapproved identity: {message}"
        );
        ensure!(message.contains("is not an approved peer"), "{message}");
    }
    // Pressing on with round 1 finds no session anywhere.
    for p in 0..3 {
        let (code, _) = refusal(e.send(
            p,
            &CoordinatorToSigner::DkgRound1(Round1Request {
                session,
                broadcasts: BTreeMap::new(),
            }),
        ))?;
        ensure!(code == ErrorCode::UnknownSession, "{code:?}");
    }
    ensure!(e.seen == 0 && e.opened == 0);
    e.assert_no_shares()
}

#[test]
fn sybil_roster_is_refused() -> Result<()> {
    let e = Evil::start(3)?;
    let session = SessionId::random(&mut rand::thread_rng());
    let roster = vec![e.real(0, 1), e.fake(1, 2), e.fake(2, 3)];
    let context = e.context(session, roster, 2)?;
    let (code, message) = refusal(e.send(0, &CoordinatorToSigner::DkgBegin(Begin { context })))?;
    ensure!(code == ErrorCode::UnapprovedPeer, "{code:?}: {message}");
    ensure!(
        message.contains(&e.fakes[1].public().to_string()),
        "{message}"
    );
    // A roster listing the coordinator itself is refused too.
    let mut roster = vec![e.real(0, 1), e.real(1, 2), e.real(2, 3)];
    roster[2].identity = e.key.public();
    let context = DkgContext {
        roster: Roster::new(roster)?,
        ..e.context(session, vec![e.real(0, 1), e.real(1, 2), e.real(2, 3)], 2)?
    };
    let (code, message) = refusal(e.send(0, &CoordinatorToSigner::DkgBegin(Begin { context })))?;
    ensure!(code == ErrorCode::BadRequest, "{code:?}: {message}");
    e.assert_no_shares()
}

/// The control: once an operator approves two of the coordinator's keys, the same Sybil
/// roster goes through round 2 and the harness opens the packages sealed to them — so the
/// "opened == 0" assertions of the other tests can fail.
#[test]
fn control_approving_coordinator_keys_leaks_packages() -> Result<()> {
    let mut e = Evil::start(3)?;
    for f in [1, 2] {
        let id = e.fakes[f].public().to_string();
        let out = ckm(&e.c.signers[0].home, &["signer", "peers", "add", &id])?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut rng = rand::thread_rng();
    let session = SessionId::random(&mut rng);
    let context = e.context(session, vec![e.real(0, 1), e.fake(1, 2), e.fake(2, 3)], 2)?;
    let b1 = begin(&e, 0, &context)?;
    // The harness plays participants 2 and 3 itself.
    let mut broadcasts = BTreeMap::from([(1u16, b1)]);
    let mut fakes = Vec::new();
    for f in [1usize, 2] {
        let (p, a) = Participant1::begin(
            Begin {
                context: context.clone(),
            },
            &e.fakes[f].public(),
            &e.key.public(),
            |_| true,
            &mut rng,
        )?;
        broadcasts.insert(u16::try_from(f + 1)?, a.broadcast);
        fakes.push(p);
    }
    let answer = match e.send(
        0,
        &CoordinatorToSigner::DkgRound1(Round1Request {
            session,
            broadcasts,
        }),
    )? {
        SignerToCoordinator::DkgRound2(a) => a,
        other => bail!("{other:?}"),
    };
    let sender = e.c.signers[0].identity;
    e.try_open(&sender, 1, &answer);
    ensure!(
        e.seen == 2 && e.opened == 2,
        "seen {} opened {}",
        e.seen,
        e.opened
    );
    Ok(())
}

#[test]
fn a_swapped_identity_makes_every_package_unopenable() -> Result<()> {
    let mut e = Evil::start(4)?;
    let session = SessionId::random(&mut rand::thread_rng());
    // Signers 1 and 3 see [S1, S2, S3]; signers 2 and 4 see [S1, S2, S4]: index 3 is swapped
    // for another approved identity.
    let a = e.context(session, vec![e.real(0, 1), e.real(1, 2), e.real(2, 3)], 2)?;
    let b = e.context(session, vec![e.real(0, 1), e.real(1, 2), e.real(3, 3)], 2)?;
    let procs: [(usize, &DkgContext, u16); 4] = [(0, &a, 1), (1, &b, 2), (2, &a, 3), (3, &b, 3)];
    let mut broadcasts_a = BTreeMap::new();
    let mut broadcasts_b = BTreeMap::new();
    for (p, ctx, index) in procs {
        let bc = begin(&e, p, ctx)?;
        if std::ptr::eq(ctx, &a) {
            broadcasts_a.insert(index, bc.clone());
        } else {
            broadcasts_b.insert(index, bc.clone());
        }
    }
    // Each group gets its own broadcasts, signers 1 and 2 their own in the other group's set.
    let mut full_a = broadcasts_a.clone();
    full_a.insert(2, broadcasts_b[&2].clone());
    let mut full_b = broadcasts_b.clone();
    full_b.insert(1, broadcasts_a[&1].clone());
    let mut answers = Vec::new();
    for (p, ctx, index) in procs {
        let set = if std::ptr::eq(ctx, &a) {
            &full_a
        } else {
            &full_b
        };
        let reply = e.send(
            p,
            &CoordinatorToSigner::DkgRound1(Round1Request {
                session,
                broadcasts: set.clone(),
            }),
        )?;
        let SignerToCoordinator::DkgRound2(answer) = reply else {
            bail!("{reply:?}");
        };
        let sender = e.c.signers[p].identity;
        e.try_open(&sender, index, &answer);
        answers.push((p, index, answer));
    }
    ensure!(
        e.seen == 8 && e.opened == 0,
        "seen {} opened {}",
        e.seen,
        e.opened
    );
    // Relay every package to whoever sits at its index in the recipient's view.
    let transcripts: BTreeMap<u16, Transcript> = answers
        .iter()
        .filter(|(p, _, _)| *p != 3)
        .map(|(_, i, a)| (*i, a.transcript))
        .collect();
    let mut certified = 0;
    for (p, _, index) in procs {
        let sealed = answers
            .iter()
            .filter(|(q, i, _)| *q != p && *i != index)
            .filter_map(|(_, i, a)| a.sealed.get(&index).map(|s| (*i, s.clone())))
            .collect();
        let reply = e.send(
            p,
            &CoordinatorToSigner::DkgRound2(Round2Request {
                session,
                sealed,
                transcripts: transcripts.clone(),
            }),
        );
        if matches!(reply, Ok(SignerToCoordinator::DkgCertified(_))) {
            certified += 1;
        }
    }
    ensure!(
        certified == 0,
        "{certified} signers certified a swapped roster"
    );
    e.assert_no_shares()
}

/// Runs rounds 1 and 2 honestly except that signer 3 gets `odd` as its context; returns each
/// signer's last reply (its refusal of round 1, or its answer to round 2).
fn run_with_odd_context(
    e: &mut Evil,
    odd: impl Fn(DkgContext) -> DkgContext,
) -> Result<Vec<Result<SignerToCoordinator, CallError>>> {
    let session = SessionId::random(&mut rand::thread_rng());
    let base = e.context(session, vec![e.real(0, 1), e.real(1, 2), e.real(2, 3)], 2)?;
    let contexts = [base.clone(), base.clone(), odd(base)];
    let mut broadcasts = BTreeMap::new();
    for (p, ctx) in contexts.iter().enumerate() {
        broadcasts.insert(u16::try_from(p + 1)?, begin(e, p, ctx)?);
    }
    let mut answers = BTreeMap::new();
    let mut last: Vec<Option<Result<SignerToCoordinator, CallError>>> = vec![None, None, None];
    for (p, slot) in last.iter_mut().enumerate() {
        let reply = e.send(
            p,
            &CoordinatorToSigner::DkgRound1(Round1Request {
                session,
                broadcasts: broadcasts.clone(),
            }),
        );
        match reply {
            Ok(SignerToCoordinator::DkgRound2(answer)) => {
                let index = u16::try_from(p + 1)?;
                let sender = e.c.signers[p].identity;
                e.try_open(&sender, index, &answer);
                answers.insert(index, answer);
            }
            other => *slot = Some(other),
        }
    }
    let transcripts: BTreeMap<u16, Transcript> =
        answers.iter().map(|(i, a)| (*i, a.transcript)).collect();
    for p in 0..3u16 {
        let index = p + 1;
        if last[usize::from(p)].is_some() {
            continue;
        }
        let sealed = answers
            .iter()
            .filter(|(i, _)| **i != index)
            .filter_map(|(i, a)| a.sealed.get(&index).map(|s| (*i, s.clone())))
            .collect();
        last[usize::from(p)] = Some(e.send(
            usize::from(p),
            &CoordinatorToSigner::DkgRound2(Round2Request {
                session,
                sealed,
                transcripts: transcripts.clone(),
            }),
        ));
    }
    Ok(last.into_iter().flatten().collect())
}

#[test]
fn contexts_that_differ_between_signers_abort_without_shares() -> Result<()> {
    let mut e = Evil::start(3)?;
    type Change = Box<dyn Fn(DkgContext) -> DkgContext>;
    let variants: Vec<(&str, Change)> = vec![
        (
            "wallet name",
            Box::new(|c| DkgContext {
                wallet: "other".into(),
                ..c
            }),
        ),
        (
            "network",
            Box::new(|c| DkgContext {
                network: Network::Testnet,
                ..c
            }),
        ),
        (
            "threshold",
            Box::new(|c| DkgContext {
                params: DkgParams::new(3, 3).unwrap_or(c.params),
                ..c
            }),
        ),
    ];
    for (what, odd) in variants {
        let replies = run_with_odd_context(&mut e, odd)?;
        for (p, reply) in replies.into_iter().enumerate() {
            let (code, message) =
                refusal(reply).with_context(|| format!("{what}: signer {}", p + 1))?;
            ensure!(code == ErrorCode::Refused, "{what}: {code:?} {message}");
        }
        ensure!(e.opened == 0, "{what}: opened {} of {}", e.opened, e.seen);
        e.assert_no_shares()?;
    }
    Ok(())
}

#[test]
fn withheld_or_forged_certificates_store_nothing() -> Result<()> {
    let mut e = Evil::start(3)?;
    // Withheld, forged, then (control) complete.
    for case in ["withheld", "forged", "complete"] {
        let session = SessionId::random(&mut rand::thread_rng());
        let context = e.context(session, vec![e.real(0, 1), e.real(1, 2), e.real(2, 3)], 2)?;
        let mut broadcasts = BTreeMap::new();
        for p in 0..3 {
            broadcasts.insert(u16::try_from(p + 1)?, begin(&e, p, &context)?);
        }
        let mut answers = BTreeMap::new();
        for p in 0..3 {
            let reply = e.send(
                p,
                &CoordinatorToSigner::DkgRound1(Round1Request {
                    session,
                    broadcasts: broadcasts.clone(),
                }),
            )?;
            let SignerToCoordinator::DkgRound2(answer) = reply else {
                bail!("{reply:?}");
            };
            let index = u16::try_from(p + 1)?;
            let sender = e.c.signers[p].identity;
            e.try_open(&sender, index, &answer);
            answers.insert(index, answer);
        }
        let transcripts: BTreeMap<u16, Transcript> =
            answers.iter().map(|(i, a)| (*i, a.transcript)).collect();
        let mut certificates = BTreeMap::new();
        for p in 0..3u16 {
            let index = p + 1;
            let sealed = answers
                .iter()
                .filter(|(i, _)| **i != index)
                .filter_map(|(i, a)| a.sealed.get(&index).map(|s| (*i, s.clone())))
                .collect();
            match e.send(
                usize::from(p),
                &CoordinatorToSigner::DkgRound2(Round2Request {
                    session,
                    sealed,
                    transcripts: transcripts.clone(),
                }),
            )? {
                SignerToCoordinator::DkgCertified(c) => {
                    certificates.insert(index, c.certificate);
                }
                other => bail!("{other:?}"),
            }
        }
        match case {
            "withheld" => {
                certificates.remove(&2);
            }
            "forged" => {
                // Signed by a key the coordinator holds, over the right kind of message.
                let fake = e.fakes[0].sign("dkg-certificate", &[7u8; 32]);
                certificates.insert(2, Certificate(fake));
            }
            _ => {}
        }
        let replies: Vec<_> = (0..3)
            .map(|p| {
                e.send(
                    p,
                    &CoordinatorToSigner::DkgConfirm(ConfirmRequest {
                        session,
                        certificates: certificates.clone(),
                    }),
                )
            })
            .collect();
        if case == "complete" {
            for r in replies {
                ensure!(matches!(r?, SignerToCoordinator::DkgStored(_)));
            }
            for s in &e.c.signers {
                ensure!(share_files(&s.home)?.len() == 1, "{case}: no share stored");
            }
        } else {
            for (p, r) in replies.into_iter().enumerate() {
                let (code, message) =
                    refusal(r).with_context(|| format!("{case}: signer {}", p + 1))?;
                ensure!(code == ErrorCode::Refused, "{case}: {code:?} {message}");
                ensure!(message.contains("certificate"), "{case}: {message}");
            }
            e.assert_no_shares()?;
        }
    }
    ensure!(
        e.seen == 18 && e.opened == 0,
        "seen {} opened {}",
        e.seen,
        e.opened
    );
    Ok(())
}
