//! Epoch transitions in memory (the participant and coordinator halves of
//! `ckm::protocol::lifecycle`, driven by `run_in_memory`): refresh, remove, repair and
//! enrol on a certified 2-of-3 wallet. After each, the group key (hence every address) is
//! unchanged, the new shares co-sign a PSBT of the wallet that libbitcoinconsensus accepts,
//! the shares of the old epoch no longer combine with the new ones, and the record re-checks
//! offline (alone and as part of the wallet's history). A repair and an enrolment with a
//! refresh (one transition each): every share changes and the lost share combines with no new
//! one. Refusals: a newcomer nobody approved, a context that does not start from the member's
//! state, a forged certificate, sigmas withheld from the newcomer or handed to another member.

#[path = "common/consensus.rs"]
mod consensus;

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, ensure, Context, Result};
use bdk_wallet::KeychainKind;
use bitcoin::{Amount, FeeRate, Network, OutPoint, Psbt, TxOut};
use ckm::frost::pedersen::DkgParams;
use ckm::identity::IdentityKey;
use ckm::keys::{GroupKey, KeyShare, Roster, RosterEntry};
use ckm::protocol::dkg::{self, CertifiedKeygen, DkgContext};
use ckm::protocol::lifecycle::{
    run_in_memory, History, Holding, Member, Participant, TransitionContext, TransitionCoordinator,
    TransitionError, TransitionKind, TransitionRequest, WalletState, TRANSITION_VERSION,
};
use ckm::protocol::SessionId;
use ckm::wallet::{CkmWallet, WalletMeta};
use consensus::{consensus_verify, made_up_funding};

struct Wallet {
    _dir: tempfile::TempDir,
    psbt: Psbt,
    funding: HashMap<OutPoint, TxOut>,
}

fn roster(keys: &[&IdentityKey], indexes: &[u16]) -> Result<Roster> {
    Ok(Roster::new(
        keys.iter()
            .zip(indexes)
            .map(|(k, i)| RosterEntry {
                index: *i,
                url: format!("http://127.0.0.1:{}", 20_000 + i),
                identity: k.public(),
                tls_sha256: None,
            })
            .collect(),
    )?)
}

/// A certified 2-of-3 key generation.
fn keygen(
    keys: &[IdentityKey],
) -> Result<(Vec<KeyShare>, CertifiedKeygen, WalletState, IdentityKey)> {
    let mut rng = rand::thread_rng();
    let coordinator = IdentityKey::generate(&mut rng);
    let refs: Vec<&IdentityKey> = keys.iter().collect();
    let context = DkgContext::new(
        SessionId::random(&mut rng),
        "vault",
        Network::Regtest,
        DkgParams::new(2, 3)?,
        coordinator.public(),
        roster(&refs, &[1, 2, 3])?,
    )?;
    let (shares, group, record) = dkg::run_in_memory(context, &refs, &mut rng)?;
    let state = WalletState::genesis(&record, &group);
    Ok((
        shares.into_iter().map(|s| s.share).collect(),
        record,
        state,
        coordinator,
    ))
}

/// A funded wallet of the group and a PSBT spending it.
fn wallet(state: &WalletState) -> Result<Wallet> {
    let dir = tempfile::tempdir()?;
    let mut rng = rand::thread_rng();
    let mut w = CkmWallet::create(
        &dir.path().join("w.sqlite"),
        WalletMeta {
            name: "vault".into(),
            network: Network::Regtest,
            group: state.group.clone(),
            roster: state.roster.clone(),
            electrum: None,
            keygen: None,
            epoch: 0,
            transitions: Vec::new(),
            pending: None,
            birth_height: None,
        },
    )?;
    let spk = w
        .bdk()
        .peek_address(KeychainKind::External, 0)
        .address
        .script_pubkey();
    let tx = made_up_funding(&mut rng, spk, 400_000);
    let mut funding = HashMap::new();
    funding.insert(OutPoint::new(tx.compute_txid(), 0), tx.output[0].clone());
    w.bdk_mut().apply_unconfirmed_txs([(tx, 1_700_000_000u64)]);
    let to = w.bdk().peek_address(KeychainKind::External, 7).address;
    let psbt = w.build_payment(
        &to,
        Amount::from_sat(100_000),
        FeeRate::from_sat_per_vb(2).context("rate")?,
    )?;
    Ok(Wallet {
        _dir: dir,
        psbt,
        funding,
    })
}

/// Co-signs the wallet's PSBT with `shares` and checks it under libbitcoinconsensus.
fn cosign(w: &Wallet, shares: &[&KeyShare]) -> Result<()> {
    let mut psbt = w.psbt.clone();
    let tx = ckm::psbt::sign_in_memory(&mut psbt, shares, &mut rand::thread_rng())?;
    consensus_verify(&tx, &w.funding)
}

fn context(
    kind: TransitionKind,
    from: &WalletState,
    coordinator: &IdentityKey,
    new_roster: Roster,
    helpers: Vec<u16>,
) -> TransitionContext {
    TransitionContext {
        version: TRANSITION_VERSION,
        session: SessionId::random(&mut rand::thread_rng()),
        kind,
        wallet: GroupKey::of(&from.group),
        coordinator: coordinator.public(),
        from_epoch: from.epoch,
        from_state: from.hash(),
        new_roster,
        helpers,
    }
}

#[test]
fn refresh_remove_repair_and_enrol_keep_the_key_and_retire_old_shares() -> Result<()> {
    let mut rng = rand::thread_rng();
    let keys: Vec<IdentityKey> = (0..3).map(|_| IdentityKey::generate(&mut rng)).collect();
    let (shares, record, genesis, coordinator) = keygen(&keys)?;
    let w = wallet(&genesis)?;
    cosign(&w, &[&shares[0], &shares[1]])?;
    let mut history = History {
        keygen: record,
        transitions: Vec::new(),
    };
    ensure!(history.verify()? == genesis);

    // 1. Refresh: every share changes, the key stays.
    let ctx = context(
        TransitionKind::Refresh,
        &genesis,
        &coordinator,
        genesis.roster.clone(),
        vec![1, 2, 3],
    );
    let members: Vec<Member> = keys
        .iter()
        .zip(&shares)
        .map(|(key, s)| Member {
            key,
            share: Some(s),
        })
        .collect();
    let (prepared, t1) = run_in_memory(ctx, &genesis, &members, &mut rng)?;
    let e1 = t1.state.clone();
    ensure!(e1.epoch == 1 && GroupKey::of(&e1.group) == GroupKey::of(&genesis.group));
    ensure!(e1.group.chain_code() == genesis.group.chain_code());
    ensure!(
        e1.group != genesis.group,
        "the verifying shares did not change"
    );
    let new: Vec<KeyShare> = prepared.into_values().map(|p| p.share).collect();
    for (old, fresh) in shares.iter().zip(&new) {
        ensure!(
            *old.to_secret_bytes()? != *fresh.to_secret_bytes()?,
            "a share did not change"
        );
    }
    cosign(&w, &[&new[0], &new[2]])?;
    // An old share no longer combines with a new one.
    let mut psbt = w.psbt.clone();
    let mixed = ckm::psbt::sign_in_memory(&mut psbt, &[&new[0], &shares[1]], &mut rng);
    ensure!(mixed.is_err(), "an old share combined with a new one");
    history.transitions.push(t1);
    ensure!(history.verify()? == e1);

    // 2. Remove signer 3: a refresh among 1 and 2.
    let ctx = context(
        TransitionKind::Remove(3),
        &e1,
        &coordinator,
        e1.roster.without(3)?,
        vec![1, 2],
    );
    let members: Vec<Member> = keys[..2]
        .iter()
        .zip(&new[..2])
        .map(|(key, s)| Member {
            key,
            share: Some(s),
        })
        .collect();
    let (prepared, t2) = run_in_memory(ctx, &e1, &members, &mut rng)?;
    let e2 = t2.state.clone();
    ensure!(e2.roster.indexes() == vec![1, 2] && e2.group.signers() == 2);
    let after_remove: Vec<KeyShare> = prepared.into_values().map(|p| p.share).collect();
    cosign(&w, &[&after_remove[0], &after_remove[1]])?;
    let mut psbt = w.psbt.clone();
    ensure!(
        ckm::psbt::sign_in_memory(&mut psbt, &[&after_remove[0], &new[2]], &mut rng).is_err(),
        "the removed signer's share still combines"
    );
    history.transitions.push(t2);
    ensure!(history.verify()? == e2);

    // 3. Enrol a new signer at index 3 (helpers 1 and 2).
    let newcomer = IdentityKey::generate(&mut rng);
    let entry = RosterEntry {
        index: 3,
        url: "http://127.0.0.1:29999".into(),
        identity: newcomer.public(),
        tls_sha256: None,
    };
    let ctx = context(
        TransitionKind::Enrol(3),
        &e2,
        &coordinator,
        e2.roster.with(entry.clone())?,
        vec![1, 2],
    );
    let members = vec![
        Member {
            key: &keys[0],
            share: Some(&after_remove[0]),
        },
        Member {
            key: &keys[1],
            share: Some(&after_remove[1]),
        },
        Member {
            key: &newcomer,
            share: None,
        },
    ];
    let (prepared, t3) = run_in_memory(ctx, &e2, &members, &mut rng)?;
    let e3 = t3.state.clone();
    ensure!(
        e3.group.signers() == 3 && e3.roster.get(3).map(|e| e.identity) == Some(newcomer.public())
    );
    let enrolled: BTreeMap<u16, KeyShare> =
        prepared.into_iter().map(|(i, p)| (i, p.share)).collect();
    let s3 = enrolled.get(&3).context("no share for the newcomer")?;
    let s1 = enrolled.get(&1).context("no share 1")?;
    cosign(&w, &[s1, s3])?;
    history.transitions.push(t3);
    ensure!(history.verify()? == e3);

    // 4. Repair signer 1 under a new identity (helpers 2 and 3): the same share comes back.
    let replacement = IdentityKey::generate(&mut rng);
    let entry = RosterEntry {
        index: 1,
        url: "http://127.0.0.1:29998".into(),
        identity: replacement.public(),
        tls_sha256: None,
    };
    let ctx = context(
        TransitionKind::Repair(1),
        &e3,
        &coordinator,
        e3.roster.with(entry)?,
        vec![2, 3],
    );
    let s2 = enrolled.get(&2).context("no share 2")?;
    let members = vec![
        Member {
            key: &replacement,
            share: None,
        },
        Member {
            key: &keys[1],
            share: Some(s2),
        },
        Member {
            key: &newcomer,
            share: Some(s3),
        },
    ];
    let (prepared, t4) = run_in_memory(ctx, &e3, &members, &mut rng)?;
    let repaired = &prepared.get(&1).context("no repaired share")?.share;
    ensure!(
        repaired.key_package().signing_share() == s1.key_package().signing_share(),
        "the repaired share is not the lost one"
    );
    let s3_now = &prepared.get(&3).context("share 3")?.share;
    cosign(&w, &[repaired, s3_now])?;
    history.transitions.push(t4.clone());
    let e4 = history.verify()?;
    ensure!(e4.epoch == 4 && GroupKey::of(&e4.group) == GroupKey::of(&genesis.group));

    // A record with a flipped certificate no longer verifies.
    let mut bad = history.clone();
    if let Some(c) = bad.transitions[3].certificates.get_mut(&2) {
        c.0[5] ^= 1;
    }
    match bad.verify() {
        Err(TransitionError::Certificate { index: 2, .. }) => {}
        other => bail!("a flipped certificate: {other:?}"),
    }
    Ok(())
}

#[test]
fn unapproved_newcomers_and_foreign_states_are_refused() -> Result<()> {
    let mut rng = rand::thread_rng();
    let keys: Vec<IdentityKey> = (0..3).map(|_| IdentityKey::generate(&mut rng)).collect();
    let (shares, _, genesis, coordinator) = keygen(&keys)?;
    let stranger = IdentityKey::generate(&mut rng);
    let entry = RosterEntry {
        index: 4,
        url: "http://127.0.0.1:1".into(),
        identity: stranger.public(),
        tls_sha256: None,
    };
    let ctx = context(
        TransitionKind::Enrol(4),
        &genesis,
        &coordinator,
        genesis.roster.with(entry)?,
        vec![1, 2],
    );
    // A helper whose operator did not approve the newcomer refuses before any secret moves.
    let refused = Participant::begin(
        ctx.clone(),
        &keys[0],
        Holding {
            state: &genesis,
            share: Some(&shares[0]),
        },
        |id| *id != stranger.public(),
        &mut rng,
    );
    match refused {
        Err(TransitionError::UnapprovedPeer { index: 4, identity })
            if identity == stranger.public() => {}
        other => bail!("unapproved newcomer: {other:?}"),
    }
    // A context that starts from another state (another epoch) is refused.
    let mut other = ctx.clone();
    other.from_epoch = 7;
    ensure!(matches!(
        Participant::begin(
            other,
            &keys[0],
            Holding {
                state: &genesis,
                share: Some(&shares[0])
            },
            |_| true,
            &mut rng
        ),
        Err(TransitionError::WrongState { .. })
    ));
    // Fewer helpers than the threshold, or the newcomer among its helpers.
    let mut few = ctx.clone();
    few.helpers = vec![1];
    ensure!(matches!(
        few.check(&genesis),
        Err(TransitionError::Malformed { .. })
    ));
    // A removal that would leave fewer than t members.
    let two = genesis.roster.without(3)?;
    let one = two.without(2);
    ensure!(one.is_err(), "a one-member roster was accepted");
    Ok(())
}

/// The members' shares of a transition's result, by index.
fn shares_of(
    prepared: BTreeMap<u16, ckm::protocol::lifecycle::Prepared>,
) -> BTreeMap<u16, KeyShare> {
    prepared.into_iter().map(|(i, p)| (i, p.share)).collect()
}

#[test]
fn repair_and_enrolment_with_a_refresh_are_one_transition_that_retires_every_old_share(
) -> Result<()> {
    let mut rng = rand::thread_rng();
    let keys: Vec<IdentityKey> = (0..3).map(|_| IdentityKey::generate(&mut rng)).collect();
    let (shares, record, genesis, coordinator) = keygen(&keys)?;
    let w = wallet(&genesis)?;
    let mut history = History {
        keygen: record,
        transitions: Vec::new(),
    };

    // 1. Signer 1's machine is lost (its share perhaps stolen): a replacement at index 1,
    //    helped by 2 and 3, in one transition with a refresh of every share.
    let replacement = IdentityKey::generate(&mut rng);
    let entry = RosterEntry {
        index: 1,
        url: "http://127.0.0.1:29998".into(),
        identity: replacement.public(),
        tls_sha256: None,
    };
    let ctx = context(
        TransitionKind::RepairRefresh(1),
        &genesis,
        &coordinator,
        genesis.roster.with(entry)?,
        vec![2, 3],
    );
    ensure!(ctx.refreshers() == vec![1, 2, 3]);
    let members = vec![
        Member {
            key: &replacement,
            share: None,
        },
        Member {
            key: &keys[1],
            share: Some(&shares[1]),
        },
        Member {
            key: &keys[2],
            share: Some(&shares[2]),
        },
    ];
    let (prepared, t1) = run_in_memory(ctx, &genesis, &members, &mut rng)?;
    let e1 = t1.state.clone();
    ensure!(e1.epoch == 1, "one transition, one epoch: {}", e1.epoch);
    ensure!(GroupKey::of(&e1.group) == GroupKey::of(&genesis.group));
    ensure!(e1.roster.get(1).map(|e| e.identity) == Some(replacement.public()));
    ensure!(
        !t1.round1.is_empty(),
        "no refresh commitments in the record"
    );
    let new = shares_of(prepared);
    let (n1, n2, n3) = (
        new.get(&1).context("share 1")?,
        new.get(&2).context("share 2")?,
        new.get(&3).context("share 3")?,
    );
    // Every share changed, the repaired one included: it is not the lost point.
    for (old, fresh) in [(&shares[0], n1), (&shares[1], n2), (&shares[2], n3)] {
        ensure!(
            *old.to_secret_bytes()? != *fresh.to_secret_bytes()?,
            "a share did not change"
        );
    }
    cosign(&w, &[n1, n2])?;
    cosign(&w, &[n1, n3])?;
    // The lost share no longer combines with any new one.
    for fresh in [n2, n3] {
        let mut psbt = w.psbt.clone();
        ensure!(
            ckm::psbt::sign_in_memory(&mut psbt, &[&shares[0], fresh], &mut rng).is_err(),
            "the lost share still combines after the repair"
        );
    }
    history.transitions.push(t1.clone());
    ensure!(history.verify()? == e1);

    // A record without the newcomer's refresh commitment does not check out.
    let mut bad = history.clone();
    bad.transitions[0].round1.remove(&1);
    ensure!(
        bad.verify().is_err(),
        "a record missing a refresher verified"
    );

    // 2. Enrol signer 4 (helpers 1 and 2), with a refresh of every share.
    let newcomer = IdentityKey::generate(&mut rng);
    let entry = RosterEntry {
        index: 4,
        url: "http://127.0.0.1:29999".into(),
        identity: newcomer.public(),
        tls_sha256: None,
    };
    let ctx = context(
        TransitionKind::EnrolRefresh(4),
        &e1,
        &coordinator,
        e1.roster.with(entry)?,
        vec![1, 2],
    );
    let members = vec![
        Member {
            key: &replacement,
            share: Some(n1),
        },
        Member {
            key: &keys[1],
            share: Some(n2),
        },
        Member {
            key: &keys[2],
            share: Some(n3),
        },
        Member {
            key: &newcomer,
            share: None,
        },
    ];
    let (prepared, t2) = run_in_memory(ctx, &e1, &members, &mut rng)?;
    let e2 = t2.state.clone();
    ensure!(e2.epoch == 2 && e2.group.signers() == 4);
    let after = shares_of(prepared);
    let m4 = after.get(&4).context("share 4")?;
    let m3 = after.get(&3).context("share 3")?;
    cosign(&w, &[m4, m3])?;
    // The shares of epoch 1 no longer combine with those of epoch 2.
    let mut psbt = w.psbt.clone();
    ensure!(
        ckm::psbt::sign_in_memory(&mut psbt, &[m4, n3], &mut rng).is_err(),
        "an epoch-1 share combined with the newcomer's"
    );
    for (i, old) in [(1u16, n1), (2, n2), (3, n3)] {
        let fresh = after.get(&i).context("share")?;
        ensure!(
            *old.to_secret_bytes()? != *fresh.to_secret_bytes()?,
            "share {i} did not change at the enrolment"
        );
    }
    history.transitions.push(t2);
    ensure!(history.verify()? == e2);
    // The replaced identity is a former member for good.
    ensure!(history.former_members().contains_key(&keys[0].public()));
    Ok(())
}

/// In a repair with a refresh, the sigmas go to the newcomer only, with refresh round 2: a
/// coordinator that withholds them from the newcomer, or hands them to a member who keeps its
/// share, is refused by that member before it certifies anything.
#[test]
fn a_repair_with_a_refresh_refuses_sigmas_withheld_or_misplaced() -> Result<()> {
    let mut rng = rand::thread_rng();
    let keys: Vec<IdentityKey> = (0..3).map(|_| IdentityKey::generate(&mut rng)).collect();
    let (shares, _, genesis, coordinator) = keygen(&keys)?;
    let replacement = IdentityKey::generate(&mut rng);
    let entry = RosterEntry {
        index: 1,
        url: "http://127.0.0.1:29998".into(),
        identity: replacement.public(),
        tls_sha256: None,
    };
    let ctx = context(
        TransitionKind::RepairRefresh(1),
        &genesis,
        &coordinator,
        genesis.roster.with(entry)?,
        vec![2, 3],
    );
    let mut machine = TransitionCoordinator::new(ctx.clone(), genesis.clone())?;
    let mut members = BTreeMap::new();
    for (key, share) in [
        (&replacement, None),
        (&keys[1], Some(&shares[1])),
        (&keys[2], Some(&shares[2])),
    ] {
        let (p, answer) = Participant::begin(
            ctx.clone(),
            key,
            Holding {
                state: &genesis,
                share,
            },
            |_| true,
            &mut rng,
        )?;
        machine.add_begun(p.index(), answer)?;
        members.insert(p.index(), (key, p));
    }
    for h in [2u16, 3] {
        let (key, p) = members.get_mut(&h).context("helper")?;
        let answer = p.step(machine.repair_deltas(h), key, &mut rng)?;
        machine.add_sigma(h, answer)?;
    }
    let round1 = machine.refresh_round1()?;
    for (i, (key, p)) in members.iter_mut() {
        let answer = p.step(round1.clone(), key, &mut rng)?;
        machine.add_refresh_sealed(*i, answer)?;
    }
    let TransitionRequest::RefreshRound2 { sigmas, .. } = machine.refresh_round2(1) else {
        bail!("not a round-2 request");
    };
    ensure!(sigmas.len() == 2, "the newcomer's request lacks the sigmas");
    // Member 2 (keeps its share) is handed the newcomer's sigmas.
    let TransitionRequest::RefreshRound2 {
        session,
        sealed,
        transcripts,
        ..
    } = machine.refresh_round2(2)
    else {
        bail!("not a round-2 request");
    };
    let (key, p) = members.get_mut(&2).context("member 2")?;
    let misplaced = p.step(
        TransitionRequest::RefreshRound2 {
            session,
            sealed,
            transcripts,
            sigmas: sigmas.clone(),
        },
        key,
        &mut rng,
    );
    ensure!(
        matches!(misplaced, Err(TransitionError::Malformed { .. })),
        "sigmas to a member that keeps its share: {misplaced:?}"
    );
    // The newcomer without its sigmas.
    let TransitionRequest::RefreshRound2 {
        session,
        sealed,
        transcripts,
        ..
    } = machine.refresh_round2(1)
    else {
        bail!("not a round-2 request");
    };
    let (key, p) = members.get_mut(&1).context("newcomer")?;
    let withheld = p.step(
        TransitionRequest::RefreshRound2 {
            session,
            sealed,
            transcripts,
            sigmas: BTreeMap::new(),
        },
        key,
        &mut rng,
    );
    ensure!(
        matches!(withheld, Err(TransitionError::Packages { .. })),
        "the newcomer without sigmas: {withheld:?}"
    );
    // Member 3, asked properly, certifies.
    let (key, p) = members.get_mut(&3).context("member 3")?;
    let answer = p.step(machine.refresh_round2(3), key, &mut rng)?;
    machine.add_certified(3, answer)?;
    Ok(())
}
