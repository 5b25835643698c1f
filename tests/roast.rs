//! One-round signing with preprocessed nonces and ROAST, entirely in memory: the
//! transport-free [`RoastCoordinator`] driven against simulated signers that use the real
//! signer-side code ([`PreprocessedNonce`], [`SignerNonces::preprocessed`]) on a PSBT built by
//! the bdk wallet, with messages delivered in a random order (a seeded asynchronous network).
//!
//! 1. Honest 2-of-3 and 3-of-5: one session; every transaction passes libbitcoinconsensus.
//! 2. With `n − t` faulty signers of every kind (hanging, hanging after preprocessing,
//!    invalid shares, slow) in many random schedules: signing completes without ever
//!    waiting for a faulty signer, and every invalid-share signer that took part is named.
//! 3. With `n − t + 1` faulty signers: a clear failure naming the culprits; the PSBT is
//!    untouched.
//! 4. A nonce is consumed once: the signer refuses it a second time; a package that does not
//!    carry the signer's own commitment is refused.
//! 5. Signed commitment batches: a batch from another signer, for another coordinator or
//!    wallet, or altered, is refused.
//! 6. The wallet database's commitment store: take is all-or-nothing, clear, epochs.
//!
//! The random generator is seeded from `CKM_TEST_SEED` when set (printed otherwise).

#[path = "common/consensus.rs"]
mod consensus;

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{bail, ensure, Context, Result};
use bdk_wallet::KeychainKind;
use bitcoin::{Address, Amount, FeeRate, Network, OutPoint, Psbt, TxOut};
use ckm::frost::pedersen::{run_in_memory, DkgParams};
use ckm::frost::shares::{secp, KeyShare};
use ckm::identity::{IdentityKey, IdentityPublic};
use ckm::keys::{GroupKey, Roster, RosterEntry};
use ckm::protocol::cosign::SignError;
use ckm::protocol::roast::{
    binomial, subsets, BatchError, CommitmentBatch, CommitmentStore, MemoryCommitments, NonceId,
    PreCommitment, RoastCoordinator, SharesOutcome,
};
use ckm::protocol::SessionId;
use ckm::psbt::{PreprocessedNonce, SignerNonces};
use ckm::wallet::{CkmWallet, WalletMeta};
use consensus::{consensus_verify, made_up_funding};
use frost::round2::SignatureShare;
use frost::SigningPackage;
use frost_secp256k1_tr as frost;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NETWORK: Network = Network::Regtest;

fn test_rng(test: &str) -> StdRng {
    let seed = std::env::var("CKM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{test}: CKM_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

struct Fixture {
    _dir: tempfile::TempDir,
    shares: Vec<KeyShare>,
    wallet: CkmWallet,
    funding: HashMap<OutPoint, TxOut>,
    psbt: Psbt,
}

/// A `t`-of-`n` wallet with `inputs` funded coins and a PSBT spending all of them.
fn fixture(t: u16, n: u16, inputs: u32, rng: &mut StdRng) -> Result<Fixture> {
    let shares = run_in_memory(DkgParams::new(t, n)?, rng)?;
    let group = shares[0].group().clone();
    let dir = tempfile::tempdir()?;
    let roster = Roster::new(
        (1..=n)
            .map(|index| RosterEntry {
                index,
                url: format!("http://127.0.0.1:{}", 40_000 + index),
                identity: IdentityKey::generate(rng).public(),
                tls_sha256: None,
            })
            .collect(),
    )?;
    let meta = WalletMeta {
        name: "roast".into(),
        network: NETWORK,
        group,
        roster,
        electrum: None,
        keygen: None,
        epoch: 0,
        transitions: Vec::new(),
        pending: None,
        birth_height: None,
    };
    let mut wallet = CkmWallet::create(&dir.path().join("wallet.sqlite"), meta)?;
    wallet
        .bdk_mut()
        .reveal_addresses_to(KeychainKind::External, inputs)
        .for_each(drop);
    let mut funding = HashMap::new();
    let mut txs = Vec::new();
    for i in 0..inputs {
        let spk = wallet
            .bdk()
            .peek_address(KeychainKind::External, i)
            .address
            .script_pubkey();
        let tx = made_up_funding(rng, spk, 50_000);
        funding.insert(OutPoint::new(tx.compute_txid(), 0), tx.output[0].clone());
        txs.push((tx, 1_700_000_000u64));
    }
    wallet.bdk_mut().apply_unconfirmed_txs(txs);
    wallet.persist()?;
    let (foreign, _) = bitcoin::secp256k1::Keypair::new(secp(), rng).x_only_public_key();
    let to = Address::p2tr(secp(), foreign, None, NETWORK);
    let amount = Amount::from_sat(u64::from(inputs) * 50_000 - 20_000);
    let psbt = wallet.build_payment(&to, amount, FeeRate::from_sat_per_vb_u32(2))?;
    ensure!(psbt.inputs.len() == inputs as usize);
    Ok(Fixture {
        _dir: dir,
        shares,
        wallet,
        funding,
        psbt,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Honest,
    /// Never answers anything.
    Hang,
    /// Answers preprocessing, never a signing request.
    HangAfterPreprocess,
    /// Sends an altered share for input 0.
    Invalid,
    /// Honest, but its answers are delivered last.
    Slow,
}

/// A signer simulated with the real signer-side nonce and signing code.
struct Sim {
    share: KeyShare,
    pool: HashMap<NonceId, PreprocessedNonce>,
    behaviour: Behaviour,
}

impl Sim {
    fn preprocess(&mut self, count: usize, rng: &mut StdRng) -> Vec<PreCommitment> {
        (0..count)
            .map(|_| {
                let id = NonceId::random(rng);
                let nonce = PreprocessedNonce::generate(&self.share, rng);
                let c = PreCommitment {
                    id,
                    commitments: *nonce.commitments(),
                };
                self.pool.insert(id, nonce);
                c
            })
            .collect()
    }

    /// One-round signing as the signer does it: take the nonces out first, check the PSBT,
    /// sign.
    fn sign(
        &mut self,
        psbt: &Psbt,
        packages: &[SigningPackage],
        ids: &[NonceId],
    ) -> Result<Vec<SignatureShare>> {
        let mut nonces = Vec::new();
        for id in ids {
            nonces.push(
                self.pool
                    .remove(id)
                    .with_context(|| format!("unknown nonce {id}"))?,
            );
        }
        let (signer_nonces, _checked) =
            SignerNonces::preprocessed(psbt, &self.share, None, nonces)?;
        let mut shares = signer_nonces.sign(psbt, &self.share, packages)?;
        if self.behaviour == Behaviour::Invalid {
            if let Some(first) = shares.first_mut() {
                let mut bytes = first.serialize();
                // A different bit per signer: two corrupted shares in one session must not
                // cancel out (±1 and ∓1 would; distinct powers of two never do).
                let index = ckm::frost::shares::roster_index(&self.share.identifier());
                if let Some(last) = bytes.last_mut() {
                    *last ^= 1u8 << ((index - 1) % 8);
                }
                *first = SignatureShare::deserialize(&bytes)?;
            }
        }
        Ok(shares)
    }
}

/// A message in flight.
enum Msg {
    /// Commitments from a signer (preprocessing, or fresh after signing).
    Commitments { signer: u16, c: Vec<PreCommitment> },
    /// A signing request to a signer.
    Request {
        signer: u16,
        session: SessionId,
        packages: Vec<SigningPackage>,
        nonces: Vec<NonceId>,
    },
    /// Shares from a signer, with its fresh commitments.
    Shares {
        signer: u16,
        session: SessionId,
        shares: Vec<SignatureShare>,
        fresh: Vec<PreCommitment>,
    },
}

/// What a run ended with.
struct Run {
    result: Result<ckm::protocol::roast::RoastOutcome, SignError>,
    delivered_from_faulty_hangers: usize,
}

/// One simulated signer per share, behaving as `behaviours` says (in roster order).
fn simulated(f: &Fixture, behaviours: &[Behaviour]) -> BTreeMap<u16, Sim> {
    f.shares
        .iter()
        .zip(behaviours)
        .map(|(s, b)| {
            (
                ckm::frost::shares::roster_index(&s.identifier()),
                Sim {
                    share: s.clone(),
                    pool: HashMap::new(),
                    behaviour: *b,
                },
            )
        })
        .collect()
}

/// `n` behaviours: `faulty` on random distinct positions, honest elsewhere.
fn placed(faulty: &[Behaviour], n: u16, rng: &mut StdRng) -> Vec<Behaviour> {
    let mut behaviours = vec![Behaviour::Honest; usize::from(n)];
    let mut positions: Vec<usize> = (0..usize::from(n)).collect();
    for (k, b) in faulty.iter().enumerate() {
        let j = rng.gen_range(k..positions.len());
        positions.swap(k, j);
        behaviours[positions[k]] = *b;
    }
    behaviours
}

/// Drives a ROAST run: a pool of messages delivered in random order (slow signers' answers
/// only when nothing else is left); hanging signers' answers never.
fn run(f: &Fixture, behaviours: &[Behaviour], psbt: &mut Psbt, rng: &mut StdRng) -> Run {
    let group = f.shares[0].group();
    let roster: Vec<u16> = (1..=u16::try_from(behaviours.len()).unwrap_or(0)).collect();
    let mut machine = match RoastCoordinator::new(psbt, group, roster.clone()) {
        Ok(m) => m,
        Err(e) => {
            return Run {
                result: Err(e),
                delivered_from_faulty_hangers: 0,
            }
        }
    };
    let k = machine.inputs();
    let mut sims = simulated(f, behaviours);
    let mut store = MemoryCommitments::default();
    let mut flight: Vec<Msg> = Vec::new();
    // Preprocessing: every signer is asked; hanging ones never answer.
    for (i, sim) in sims.iter_mut() {
        if sim.behaviour != Behaviour::Hang {
            flight.push(Msg::Commitments {
                signer: *i,
                c: sim.preprocess(k, rng),
            });
        }
    }
    let mut from_hangers = 0;
    loop {
        if !machine.possible() {
            return Run {
                result: Err(machine.failure()),
                delivered_from_faulty_hangers: from_hangers,
            };
        }
        match machine.start(rng) {
            Ok(starts) => {
                for s in starts {
                    for i in &s.chosen {
                        flight.push(Msg::Request {
                            signer: *i,
                            session: s.session,
                            packages: s.packages.to_vec(),
                            nonces: s.nonces.get(i).cloned().unwrap_or_default(),
                        });
                    }
                }
            }
            Err(e) => {
                return Run {
                    result: Err(e),
                    delivered_from_faulty_hangers: from_hangers,
                }
            }
        }
        // Deliver one message: random among those not from slow signers, else a slow one.
        let fast: Vec<usize> = (0..flight.len())
            .filter(|j| {
                let signer = match &flight[*j] {
                    Msg::Commitments { signer, .. }
                    | Msg::Request { signer, .. }
                    | Msg::Shares { signer, .. } => *signer,
                };
                sims.get(&signer).map(|s| s.behaviour) != Some(Behaviour::Slow)
            })
            .collect();
        let pick = if fast.is_empty() {
            if flight.is_empty() {
                return Run {
                    result: Err(machine.failure()),
                    delivered_from_faulty_hangers: from_hangers,
                };
            }
            rng.gen_range(0..flight.len())
        } else {
            fast[rng.gen_range(0..fast.len())]
        };
        let msg = flight.swap_remove(pick);
        match msg {
            Msg::Commitments { signer, c } => {
                store.add(signer, c);
                if let Some(c) = store.take(signer, k) {
                    machine.ready(signer, c);
                }
            }
            Msg::Request {
                signer,
                session,
                packages,
                nonces,
            } => {
                let Some(sim) = sims.get_mut(&signer) else {
                    continue;
                };
                if matches!(
                    sim.behaviour,
                    Behaviour::Hang | Behaviour::HangAfterPreprocess
                ) {
                    continue; // swallowed: never answered
                }
                match sim.sign(psbt, &packages, &nonces) {
                    Ok(shares) => {
                        let fresh = sim.preprocess(k, rng);
                        flight.push(Msg::Shares {
                            signer,
                            session,
                            shares,
                            fresh,
                        });
                    }
                    Err(e) => machine.exclude(signer, e.to_string()),
                }
            }
            Msg::Shares {
                signer,
                session,
                shares,
                fresh,
            } => {
                store.add(signer, fresh);
                if matches!(
                    sims.get(&signer).map(|s| s.behaviour),
                    Some(Behaviour::Hang | Behaviour::HangAfterPreprocess)
                ) {
                    from_hangers += 1;
                }
                let again = match machine.shares(&session, signer, shares, psbt) {
                    Ok(SharesOutcome::Done(outcome)) => {
                        return Run {
                            result: Ok(*outcome),
                            delivered_from_faulty_hangers: from_hangers,
                        }
                    }
                    // Checked at once here (the driver runs it on another thread).
                    Ok(SharesOutcome::Check(check)) => {
                        let valid = check.run(&|| false) == Some(true);
                        machine.checked(signer, valid);
                        valid
                    }
                    Ok(_) => true,
                    Err(e) => {
                        return Run {
                            result: Err(e),
                            delivered_from_faulty_hangers: from_hangers,
                        }
                    }
                };
                if again && machine.usable(signer) {
                    if let Some(c) = store.take(signer, k) {
                        machine.ready(signer, c);
                    }
                }
            }
        }
    }
}

#[test]
fn honest_signers_sign_in_one_session() -> Result<()> {
    let mut rng = test_rng("honest_signers_sign_in_one_session");
    for (t, n, inputs) in [(2u16, 3u16, 1u32), (2, 3, 4), (3, 5, 3)] {
        let f = fixture(t, n, inputs, &mut rng)?;
        let mut psbt = f.psbt.clone();
        let r = run(
            &f,
            &vec![Behaviour::Honest; usize::from(n)],
            &mut psbt,
            &mut rng,
        );
        let outcome = r.result.map_err(|e| anyhow::anyhow!("{e}"))?;
        // A signer that answered is ready again at once (it might be a hanging partner that
        // stalls the session), so an honest run may start a second session before the first
        // completes; never more than ROAST's n − t + 1.
        ensure!(
            outcome.sessions <= usize::from(n - t) + 1,
            "{t}-of-{n}: {} sessions",
            outcome.sessions
        );
        ensure!(outcome.signers.len() == usize::from(t));
        ensure!(outcome.malicious.is_empty());
        consensus_verify(&outcome.transaction, &f.funding)?;
        ensure!(psbt.inputs.iter().all(|i| i.final_script_witness.is_some()));
    }
    Ok(())
}

#[test]
fn roast_completes_with_n_minus_t_faulty_signers_of_every_kind() -> Result<()> {
    let mut rng = test_rng("roast_completes_with_n_minus_t_faulty_signers_of_every_kind");
    use Behaviour::*;
    let kinds = [Hang, HangAfterPreprocess, Invalid, Slow];
    for (t, n) in [(2u16, 3u16), (3, 5), (3, 4)] {
        let f = fixture(t, n, 2, &mut rng)?;
        let faulty = usize::from(n - t);
        // Every combination of kinds for the faulty signers, on random positions, several
        // random schedules each.
        let mut combos: Vec<Vec<Behaviour>> = vec![Vec::new()];
        for _ in 0..faulty {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    kinds.iter().map(move |k| {
                        let mut c = c.clone();
                        c.push(*k);
                        c
                    })
                })
                .collect();
        }
        for combo in combos {
            for _ in 0..4 {
                let behaviours = placed(&combo, n, &mut rng);
                let mut psbt = f.psbt.clone();
                let r = run(&f, &behaviours, &mut psbt, &mut rng);
                let outcome = r
                    .result
                    .map_err(|e| anyhow::anyhow!("{t}-of-{n} {behaviours:?}: {e}"))?;
                consensus_verify(&outcome.transaction, &f.funding)?;
                ensure!(r.delivered_from_faulty_hangers == 0);
                for s in &outcome.signers {
                    let b = behaviours[usize::from(*s) - 1];
                    ensure!(
                        matches!(b, Honest | Slow),
                        "{behaviours:?}: signer {s} ({b:?}) in the signing set"
                    );
                }
                for m in &outcome.malicious {
                    ensure!(
                        behaviours[usize::from(*m) - 1] == Invalid,
                        "{behaviours:?}: honest signer {m} named malicious"
                    );
                }
                // ROAST's bound: at most n − t + 1 sessions.
                ensure!(
                    outcome.sessions <= usize::from(n - t) + 1,
                    "{behaviours:?}: {} sessions",
                    outcome.sessions
                );
            }
        }
    }
    Ok(())
}

#[test]
fn invalid_share_signer_in_a_session_is_named() -> Result<()> {
    let mut rng = test_rng("invalid_share_signer_in_a_session_is_named");
    // Signer 3 is slow: the first session is {1, 2}, signer 1's shares are invalid, so the
    // only valid set is {2, 3} and signer 1 must be named.
    let f = fixture(2, 3, 2, &mut rng)?;
    for _ in 0..10 {
        let mut psbt = f.psbt.clone();
        let r = run(
            &f,
            &[Behaviour::Invalid, Behaviour::Honest, Behaviour::Slow],
            &mut psbt,
            &mut rng,
        );
        let outcome = r.result.map_err(|e| anyhow::anyhow!("{e}"))?;
        consensus_verify(&outcome.transaction, &f.funding)?;
        ensure!(
            outcome.malicious == vec![1],
            "malicious {:?}",
            outcome.malicious
        );
        ensure!(
            outcome.signers == vec![2, 3],
            "signers {:?}",
            outcome.signers
        );
        ensure!(outcome.sessions == 2, "{} sessions", outcome.sessions);
    }
    Ok(())
}

#[test]
fn too_many_faulty_signers_fail_clearly_and_leave_the_psbt() -> Result<()> {
    let mut rng = test_rng("too_many_faulty_signers_fail_clearly_and_leave_the_psbt");
    use Behaviour::*;
    let f = fixture(3, 5, 2, &mut rng)?;
    for behaviours in [
        [Invalid, Invalid, Invalid, Honest, Honest],
        [Invalid, Hang, HangAfterPreprocess, Honest, Honest],
    ] {
        let mut psbt = f.psbt.clone();
        let r = run(&f, &behaviours, &mut psbt, &mut rng);
        match r.result {
            Ok(o) => bail!(
                "{behaviours:?}: signed with three faulty of five: signers {:?} malicious {:?}",
                o.signers,
                o.malicious
            ),
            Err(SignError::NotEnoughSigners { need, .. }) => ensure!(need == 3),
            Err(e) => bail!("{behaviours:?}: unexpected error {e}"),
        }
        ensure!(psbt == f.psbt, "the PSBT was changed");
    }
    // Invalid shares are named when they are the reason.
    let mut psbt = f.psbt.clone();
    let r = run(
        &f,
        &[Invalid, Invalid, Invalid, Honest, Honest],
        &mut psbt,
        &mut rng,
    );
    let Err(SignError::NotEnoughSigners { culprits, .. }) = r.result else {
        bail!("expected a failure");
    };
    ensure!(culprits == vec![1, 2, 3], "culprits {culprits:?}");
    Ok(())
}

#[test]
fn a_nonce_signs_once_and_only_under_its_own_commitment() -> Result<()> {
    let mut rng = test_rng("a_nonce_signs_once_and_only_under_its_own_commitment");
    let f = fixture(2, 3, 1, &mut rng)?;
    let mut sims: Vec<Sim> = f
        .shares
        .iter()
        .map(|s| Sim {
            share: s.clone(),
            pool: HashMap::new(),
            behaviour: Behaviour::Honest,
        })
        .collect();
    let mut machine = RoastCoordinator::new(&f.psbt, f.shares[0].group(), vec![1, 2, 3])?;
    let c1 = sims[0].preprocess(1, &mut rng);
    let c2 = sims[1].preprocess(1, &mut rng);
    machine.ready(1, c1.clone());
    machine.ready(2, c2);
    let start = machine.start(&mut rng)?;
    let s = start.first().context("a session")?;
    let ids1 = s.nonces.get(&1).cloned().context("signer 1's nonces")?;
    sims[0].sign(&f.psbt, &s.packages, &ids1)?;
    // The same request again: the nonce is gone.
    let again = sims[0].sign(&f.psbt, &s.packages, &ids1);
    ensure!(again.is_err(), "a nonce signed twice");

    // A package that carries another commitment for signer 1 than its nonce's: refused
    // (and the nonce is consumed anyway).
    let c1b = sims[0].preprocess(1, &mut rng);
    let c3 = sims[2].preprocess(1, &mut rng);
    let mut other = RoastCoordinator::new(&f.psbt, f.shares[0].group(), vec![1, 3])?;
    other.ready(1, c1.clone()); // the used commitment in the package…
    other.ready(3, c3);
    let s2 = other.start(&mut rng)?;
    let s2 = s2.first().context("a session")?;
    let wrong = sims[0].sign(&f.psbt, &s2.packages, &[c1b[0].id]); // …with a fresh nonce
    let Err(e) = wrong else {
        bail!("signed under a commitment that is not its nonce's");
    };
    ensure!(
        e.to_string().contains("commitment"),
        "unexpected refusal: {e}"
    );
    ensure!(sims[0].pool.is_empty(), "the nonce stayed in the pool");
    Ok(())
}

#[test]
fn commitment_batches_are_bound_to_signer_coordinator_and_wallet() -> Result<()> {
    let mut rng = test_rng("commitment_batches_are_bound_to_signer_coordinator_and_wallet");
    let f = fixture(2, 3, 1, &mut rng)?;
    let signer = IdentityKey::generate(&mut rng);
    let other_signer = IdentityKey::generate(&mut rng);
    let coordinator = IdentityKey::generate(&mut rng).public();
    let other_coordinator = IdentityKey::generate(&mut rng).public();
    let wallet = GroupKey::of(f.shares[0].group());
    let other = run_in_memory(DkgParams::new(2, 3)?, &mut rng)?;
    let other_wallet = GroupKey::of(other[0].group());
    let mut sim = Sim {
        share: f.shares[0].clone(),
        pool: HashMap::new(),
        behaviour: Behaviour::Honest,
    };
    let commitments = sim.preprocess(3, &mut rng);
    let batch = CommitmentBatch::sign(&signer, &coordinator, &wallet, commitments.clone());
    let ok = batch
        .clone()
        .verify(1, &signer.public(), &coordinator, &wallet)?;
    ensure!(ok == commitments);
    let cases: Vec<(
        &str,
        IdentityPublic,
        IdentityPublic,
        GroupKey,
        CommitmentBatch,
    )> = vec![
        (
            "another signer",
            other_signer.public(),
            coordinator,
            wallet,
            batch.clone(),
        ),
        (
            "another coordinator",
            signer.public(),
            other_coordinator,
            wallet,
            batch.clone(),
        ),
        (
            "another wallet",
            signer.public(),
            coordinator,
            other_wallet,
            batch.clone(),
        ),
        ("altered", signer.public(), coordinator, wallet, {
            let mut b = batch.clone();
            b.commitments.swap(0, 1);
            b
        }),
        ("truncated", signer.public(), coordinator, wallet, {
            let mut b = batch.clone();
            b.commitments.pop();
            b
        }),
    ];
    for (what, s, c, w, b) in cases {
        match b.verify(1, &s, &c, &w) {
            Err(BatchError::Signature { signer: 1 }) => {}
            other => bail!("{what}: {other:?}"),
        }
    }
    // A signed batch that repeats an id is refused too.
    let mut dup = commitments.clone();
    dup[1].id = dup[0].id;
    let b = CommitmentBatch::sign(&signer, &coordinator, &wallet, dup);
    ensure!(matches!(
        b.verify(1, &signer.public(), &coordinator, &wallet),
        Err(BatchError::Duplicate { .. })
    ));
    Ok(())
}

#[test]
fn wallet_database_keeps_commitments_per_coordinator_and_epoch() -> Result<()> {
    let mut rng = test_rng("wallet_database_keeps_commitments_per_coordinator_and_epoch");
    let mut f = fixture(2, 3, 1, &mut rng)?;
    let mut sim = Sim {
        share: f.shares[0].clone(),
        pool: HashMap::new(),
        behaviour: Behaviour::Honest,
    };
    let me = IdentityKey::generate(&mut rng).public();
    let someone = IdentityKey::generate(&mut rng).public();
    let first = sim.preprocess(5, &mut rng);
    {
        let (_, mut store) = f.wallet.commitments(&me);
        store.add(1, first.clone());
        ensure!(store.count(1) == 5 && store.count(2) == 0);
        ensure!(store.take(1, 6).is_none(), "take must be all-or-nothing");
        ensure!(store.count(1) == 5);
        let got = store.take(1, 3).context("three commitments")?;
        ensure!(got == first[..3], "not oldest first");
        ensure!(store.count(1) == 2);
    }
    {
        let (_, store) = f.wallet.commitments(&someone);
        ensure!(
            store.count(1) == 0,
            "another coordinator sees my commitments"
        );
    }
    // Reopened from disk: still there.
    let path = f._dir.path().join("wallet.sqlite");
    drop(f.wallet);
    f.wallet = CkmWallet::load(&path)?;
    {
        let (_, mut store) = f.wallet.commitments(&me);
        ensure!(store.count(1) == 2);
        store.clear(1);
        ensure!(store.count(1) == 0);
        store.add(2, sim.preprocess(2, &mut rng));
    }
    // A new epoch drops the old epoch's commitments.
    let mut meta = f.wallet.meta().clone();
    meta.epoch += 1;
    f.wallet.set_meta(meta)?;
    let (_, store) = f.wallet.commitments(&me);
    ensure!(store.count(2) == 0, "commitments survived an epoch change");
    let _unused: HashSet<u16> = HashSet::new();
    Ok(())
}

/// A hedged start opens a session for every `t`-subset at once; with `n − t` faulty signers
/// (hanging or sending invalid shares), the honest subset completes without any further
/// session (one round trip), and no faulty signer is in the signing set.
#[test]
fn hedged_start_completes_without_a_second_round() -> Result<()> {
    let mut rng = test_rng("hedged_start_completes_without_a_second_round");
    use Behaviour::*;
    let (t, n) = (3u16, 5u16);
    let f = fixture(t, n, 1, &mut rng)?;
    for faulty in [
        [Hang, Invalid],
        [Invalid, Invalid],
        [Hang, Hang],
        [Honest, Honest],
    ] {
        for _ in 0..4 {
            let behaviours = placed(&faulty, n, &mut rng);
            let mut psbt = f.psbt.clone();
            let roster: Vec<u16> = (1..=n).collect();
            let mut machine = RoastCoordinator::new(&psbt, f.shares[0].group(), roster.clone())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let k = machine.inputs();
            let mut sims = simulated(&f, &behaviours);
            let mut store = MemoryCommitments::default();
            let per_signer = binomial(usize::from(n) - 1, usize::from(t) - 1);
            for (i, sim) in sims.iter_mut() {
                store.add(*i, sim.preprocess(k * per_signer, &mut rng));
                let c = store.take(*i, k).context("commitments")?;
                machine.ready(*i, c);
            }
            let starts = machine
                .start_hedged(&roster, &mut |i| store.take(i, k), &mut rng)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            ensure!(starts.len() == binomial(usize::from(n), usize::from(t)));
            ensure!(
                (1..=n).all(|i| store.count(i) == 0),
                "every commitment is used once"
            );
            let mut flight: Vec<Msg> = starts
                .iter()
                .flat_map(|s| {
                    s.chosen.iter().map(|i| Msg::Request {
                        signer: *i,
                        session: s.session,
                        packages: s.packages.to_vec(),
                        nonces: s.nonces.get(i).cloned().unwrap_or_default(),
                    })
                })
                .collect();
            let outcome = loop {
                ensure!(!flight.is_empty(), "{behaviours:?}: no session completed");
                // Nothing becomes ready again: no session beyond the hedged ones.
                ensure!(machine
                    .start(&mut rng)
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .is_empty());
                let msg = flight.swap_remove(rng.gen_range(0..flight.len()));
                match msg {
                    Msg::Request {
                        signer,
                        session,
                        packages,
                        nonces,
                    } => {
                        let sim = sims.get_mut(&signer).context("signer")?;
                        if sim.behaviour == Hang {
                            continue;
                        }
                        let shares = sim
                            .sign(&psbt, &packages, &nonces)
                            .map_err(|e| anyhow::anyhow!("{e}"))?;
                        flight.push(Msg::Shares {
                            signer,
                            session,
                            shares,
                            fresh: Vec::new(),
                        });
                    }
                    Msg::Shares {
                        signer,
                        session,
                        shares,
                        ..
                    } => match machine
                        .shares(&session, signer, shares, &mut psbt)
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                    {
                        SharesOutcome::Done(outcome) => break *outcome,
                        _ => continue,
                    },
                    Msg::Commitments { .. } => bail!("no preprocessing here"),
                }
            };
            consensus_verify(&outcome.transaction, &f.funding)?;
            ensure!(outcome.sessions == binomial(usize::from(n), usize::from(t)));
            for s in &outcome.signers {
                ensure!(
                    behaviours[usize::from(*s) - 1] == Honest,
                    "{behaviours:?}: signer {s} in the signing set"
                );
            }
            for m in &outcome.malicious {
                ensure!(behaviours[usize::from(*m) - 1] == Invalid);
            }
        }
    }
    Ok(())
}

#[test]
fn subsets_and_binomials() {
    assert_eq!(
        subsets(&[1, 2, 3], 2),
        vec![vec![1, 2], vec![1, 3], vec![2, 3]]
    );
    assert_eq!(subsets(&[1, 2, 3, 4, 5], 3).len(), 10);
    assert!(subsets(&[1, 2], 3).is_empty());
    for (n, k, c) in [(5, 3, 10), (4, 2, 6), (3, 2, 3), (10, 7, 120), (2, 3, 0)] {
        assert_eq!(binomial(n, k), c);
    }
    use ckm::net::one_round::hedge_fits;
    // 3-of-5: 10 sessions, 6 per signer; 2-of-3: 3 sessions, 2 per signer (at most 8 shares).
    assert!(hedge_fits(5, 3, 1) && !hedge_fits(5, 3, 2));
    assert!(hedge_fits(3, 2, 4) && !hedge_fits(3, 2, 5));
    // 7-of-10 would be 120 sessions; t = n leaves nothing to hedge.
    assert!(!hedge_fits(10, 7, 1) && !hedge_fits(3, 3, 1));
}

#[test]
fn compact_commitments_round_trip_and_refuse_malformed_input() -> Result<()> {
    use ckm::protocol::roast::InputCommitments;
    let mut rng = test_rng("compact_commitments_round_trip_and_refuse_malformed_input");
    let f = fixture(2, 3, 1, &mut rng)?;
    let list: Vec<_> = (0..3)
        .map(|_| *PreprocessedNonce::generate(&f.shares[0], &mut rng).commitments())
        .collect();
    let wire = serde_json::to_string(&InputCommitments(list.clone()))?;
    ensure!(wire.len() == 2 + 3 * 66 * 2, "{} bytes", wire.len());
    let back: InputCommitments = serde_json::from_str(&wire)?;
    ensure!(back.0 == list);
    // Not a whole number of inputs, not hex, not a curve point: refused.
    for bad in [
        format!("\"{}\"", &wire[1..wire.len() - 3]),
        "\"zz\"".to_string(),
        format!("\"{}\"", "05".repeat(66)),
    ] {
        ensure!(
            serde_json::from_str::<InputCommitments>(&bad).is_err(),
            "accepted {bad}"
        );
    }
    Ok(())
}

/// PSBTs of 16 inputs or more are signed, checked and aggregated on two threads: the result
/// must be the same (a valid transaction; an invalid-share signer named).
#[test]
fn large_psbts_split_over_two_threads_sign_and_name_the_cheat() -> Result<()> {
    let mut rng = test_rng("large_psbts_split_over_two_threads_sign_and_name_the_cheat");
    let inputs = u32::try_from(ckm::psbt::PARALLEL_INPUTS)? + 3;
    let f = fixture(2, 3, inputs, &mut rng)?;
    let mut psbt = f.psbt.clone();
    let r = run(&f, &[Behaviour::Honest; 3], &mut psbt, &mut rng);
    let outcome = r.result.map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(outcome.transaction.input.len() == usize::try_from(inputs)?);
    consensus_verify(&outcome.transaction, &f.funding)?;
    let mut psbt = f.psbt.clone();
    let r = run(
        &f,
        &[Behaviour::Invalid, Behaviour::Honest, Behaviour::Slow],
        &mut psbt,
        &mut rng,
    );
    let outcome = r.result.map_err(|e| anyhow::anyhow!("{e}"))?;
    consensus_verify(&outcome.transaction, &f.funding)?;
    ensure!(outcome.malicious == vec![1], "{:?}", outcome.malicious);
    Ok(())
}
