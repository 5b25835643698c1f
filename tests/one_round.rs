//! One-round signing and ROAST with real signer processes over sockets.
//!
//! 1. `ckm psbt sign` signs in one round once the wallet database holds commitments: the
//!    first signing fetches them ("preprocessed-first"), the next is "one-round"; every
//!    transaction passes libbitcoinconsensus.
//! 2. A malicious coordinator (hand-driven, the real client) replays a one-round request,
//!    names the same nonce for two inputs, invents a nonce, or uses another coordinator's or
//!    wallet's nonce: refused, no share, no `signed` record.
//! 3. A signer restarted between preprocessing and signing refuses the old commitments; the
//!    CLI notices, refills and signs.
//! 4. ROAST in 3-of-5 with n − t = 2 faulty signers of each kind (invalid shares, hanging
//!    after preprocessing, hanging from the start, slow): signing completes well inside the
//!    per-signer timeout (no timeout is waited for), and the invalid-share signer is named.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;
#[path = "common/driver.rs"]
mod driver;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bitcoin::{OutPoint, TxOut};
use ckm::message::{ErrorCode, SessionId};
use ckm::net::client::CallError;
use ckm::protocol::roast::NonceId;
use cluster::*;
use driver::Driver;

/// `signer audit show --json` records of one transaction.
fn audit_for(home: &Path, txid: &str) -> Result<Vec<serde_json::Value>> {
    let v = ckm_json(home, &["signer", "audit", "show"])?;
    Ok(v.as_array()
        .context("audit show is not an array")?
        .iter()
        .filter(|r| r["txid"] == txid)
        .cloned()
        .collect())
}

fn signed_by(c: &Cluster, txid: &str) -> Result<Vec<u16>> {
    let mut out = Vec::new();
    for (i, s) in c.signers.iter().enumerate() {
        if audit_for(&s.home, txid)?
            .iter()
            .any(|r| r["kind"] == "signed")
        {
            out.push(u16::try_from(i + 1)?);
        }
    }
    Ok(out)
}

/// A fresh payment of the cluster's wallet (new made-up coins each time), with every coin
/// funded so far in `funding`.
fn payment(c: &Cluster, funding: &mut HashMap<OutPoint, TxOut>) -> Result<Payment> {
    funding.extend(fund(c, &FUNDS)?);
    // More than any one coin: at least two inputs.
    c.pay(funding, &foreign_address(), 450_000, 2)
}

/// A 2-of-3 wallet whose database holds every signer's commitments (after one signing), and
/// the funding so far.
fn filled_cluster() -> Result<(Cluster, HashMap<OutPoint, TxOut>)> {
    let c = Cluster::with_wallet(3, 2)?;
    let mut funding = HashMap::new();
    let p = payment(&c, &mut funding)?;
    sign_and_check(&c, &p, "fill", &[])?;
    Ok((c, funding))
}

fn sign_and_check(
    c: &Cluster,
    p: &Payment,
    name: &str,
    extra: &[&str],
) -> Result<serde_json::Value> {
    let input = c.write_psbt(&format!("{name}.psbt"), &p.psbt)?;
    let out = c.dir.path().join(format!("{name}.signed.psbt"));
    let v = c.sign_ok(&input, &out, extra)?;
    let text = std::fs::read_to_string(&out)?;
    let signed: bitcoin::Psbt = text.trim().parse()?;
    let tx = signed.extract_tx()?;
    consensus::consensus_verify(&tx, &p.funding)?;
    check_report(c, &v, &tx)?;
    Ok(v)
}

#[test]
fn one_round_signing_after_preprocessing_and_after_a_restart() -> Result<()> {
    let mut c = Cluster::with_wallet(3, 2)?;
    let mut funding = HashMap::new();

    let p1 = payment(&c, &mut funding)?;
    let v = sign_and_check(&c, &p1, "first", &[])?;
    ensure!(v["mode"] == "preprocessed-first", "{v}");

    // The wallet now holds commitments: one round trip.
    for k in 0..3 {
        let p = payment(&c, &mut funding)?;
        let v = sign_and_check(&c, &p, &format!("next{k}"), &[])?;
        ensure!(v["mode"] == "one-round", "{v}");
        // A signer that answered waits for its session's patience: if its partner's answer
        // is later still, a second session may start; never more than n − t + 1 = 2.
        ensure!(v["sessions"] == 1 || v["sessions"] == 2, "{v}");
        let by_audit = signed_by(&c, &p.txid())?;
        let reported = u16_array(&v["signer_indexes"])?;
        ensure!(
            reported.iter().all(|i| by_audit.contains(i)),
            "reported {reported:?}, audited {by_audit:?}"
        );
    }

    // Every signer restarts: their pools are gone, the wallet's commitments are stale.
    for i in 0..3 {
        c.restart_signer(i, Kind::Honest)?;
    }
    let p = payment(&c, &mut funding)?;
    let v = sign_and_check(&c, &p, "after-restart", &[])?;
    ensure!(v["mode"] == "preprocessed-first", "{v}");
    let refused_old = c
        .signers
        .iter()
        .filter(|s| s.log_text().contains("unknown or already used"))
        .count();
    ensure!(
        refused_old >= 2,
        "no signer refused its old commitments:\n{}",
        c.logs()
    );
    // And one round again.
    let p = payment(&c, &mut funding)?;
    let v = sign_and_check(&c, &p, "again", &[])?;
    ensure!(v["mode"] == "one-round", "{v}");

    // The interactive rounds remain available.
    let p = payment(&c, &mut funding)?;
    let v = sign_and_check(&c, &p, "two", &["--two-rounds"])?;
    ensure!(v["mode"] == "two-rounds", "{v}");
    Ok(())
}

fn refused_with(
    r: Result<
        (
            Vec<frost_secp256k1_tr::round2::SignatureShare>,
            Vec<ckm::protocol::roast::PreCommitment>,
        ),
        CallError,
    >,
    code: ErrorCode,
    what: &str,
) -> Result<()> {
    match r {
        Err(CallError::Refused { code: got, .. }) if got == code => Ok(()),
        Err(e) => bail!("{what}: refused for another reason: {e}"),
        Ok(_) => bail!("{what}: the signer released shares"),
    }
}

#[test]
fn replayed_reused_invented_and_foreign_nonces_are_refused() -> Result<()> {
    let mut c = Cluster::with_wallet(3, 2)?;
    let mut funding = HashMap::new();
    let p = payment(&c, &mut funding)?;
    let inputs = p.psbt.inputs.len();
    ensure!(inputs >= 2, "the payment needs two inputs");
    let d = Driver::new(&c, WALLET)?;

    // An honest one-round session by hand: signers 1 and 2.
    let mut held = BTreeMap::new();
    for i in [1u16, 2] {
        let (commitments, statements) = d.preprocess(i, 8)?.map_err(|e| anyhow::anyhow!("{e}"))?;
        ensure!(!statements);
        ensure!(commitments.len() == 8);
        held.insert(i, commitments);
    }
    let chosen: BTreeMap<u16, Vec<_>> = held
        .iter()
        .map(|(i, c)| (*i, c[..inputs].to_vec()))
        .collect();
    let packages = d.packages_preprocessed(&p.psbt, &chosen)?;
    let ids = |i: u16| -> Vec<NonceId> { chosen[&i].iter().map(|c| c.id).collect() };
    let session = SessionId::random(&mut rand::rngs::OsRng);
    let mut shares = BTreeMap::new();
    for i in [1u16, 2] {
        let (s, fresh) = d
            .sign_preprocessed(session, &p.psbt, &packages, &ids(i), i)?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        ensure!(fresh.len() == inputs, "fresh commitments: {}", fresh.len());
        shares.insert(i, s);
    }
    let signed = d.aggregate(&p.psbt, &packages, &shares)?;
    consensus::consensus_verify(&signed.extract_tx()?, &p.funding)?;

    // Replay: the same request again (new session id, or the same).
    for s in [session, SessionId::random(&mut rand::rngs::OsRng)] {
        refused_with(
            d.sign_preprocessed(s, &p.psbt, &packages, &ids(1), 1)?,
            ErrorCode::UnknownNonce,
            "replayed one-round request",
        )?;
    }

    // Another transaction, signer 1's used nonce again with fresh ones for signer 2.
    let q = payment(&c, &mut funding)?;
    let q_inputs = q.psbt.inputs.len();
    let before = signed_by(&c, &q.txid())?;
    ensure!(before.is_empty());
    let mut mixed = BTreeMap::new();
    mixed.insert(
        1u16,
        chosen[&1]
            .iter()
            .cycle()
            .take(q_inputs)
            .cloned()
            .collect::<Vec<_>>(),
    );
    mixed.insert(
        2u16,
        held[&2][inputs..inputs + q_inputs.min(8 - inputs)].to_vec(),
    );
    if mixed[&2].len() == q_inputs {
        let qp = d.packages_preprocessed(&q.psbt, &mixed)?;
        let reuse: Vec<NonceId> = mixed[&1].iter().map(|c| c.id).collect();
        refused_with(
            d.sign_preprocessed(
                SessionId::random(&mut rand::rngs::OsRng),
                &q.psbt,
                &qp,
                &reuse,
                1,
            )?,
            ErrorCode::UnknownNonce,
            "a used nonce for another transaction",
        )?;
    }

    // Fresh nonces of signer 3, one named for two inputs.
    let (c3, _) = d.preprocess(3, 8)?.map_err(|e| anyhow::anyhow!("{e}"))?;
    let (c2, _) = d.preprocess(2, 8)?.map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut dup = BTreeMap::new();
    dup.insert(3u16, vec![c3[0].clone(); q_inputs]);
    dup.insert(2u16, c2[..q_inputs].to_vec());
    let dp = d.packages_preprocessed(&q.psbt, &dup)?;
    refused_with(
        d.sign_preprocessed(
            SessionId::random(&mut rand::rngs::OsRng),
            &q.psbt,
            &dp,
            &vec![c3[0].id; q_inputs],
            3,
        )?,
        ErrorCode::UnknownNonce,
        "one nonce for two inputs",
    )?;
    // An invented nonce id.
    let invented: Vec<NonceId> = (0..q_inputs)
        .map(|_| NonceId::random(&mut rand::rngs::OsRng))
        .collect();
    refused_with(
        d.sign_preprocessed(
            SessionId::random(&mut rand::rngs::OsRng),
            &q.psbt,
            &dp,
            &invented,
            3,
        )?,
        ErrorCode::UnknownNonce,
        "an invented nonce",
    )?;

    // Another coordinator (allowed by every signer) cannot use this coordinator's nonces.
    let other_home = c.dir.path().join("other-coord");
    let other_id = json_str(&ckm_json(&other_home, &["id"])?, "identity")?.to_string();
    let mut moved = false;
    for s in c.signers.iter_mut() {
        s.stop()?;
        let v = ckm_json(
            &s.home,
            &[
                "signer",
                "wallet",
                "allow-coordinator",
                "--wallet",
                WALLET,
                &other_id,
            ],
        )?;
        ensure!(v != serde_json::Value::Null);
        s.extra_coordinators.push(other_id.clone());
        moved |= s.relaunch_same_port(Kind::Honest)?;
    }
    if moved {
        c.sync_roster()?;
    }
    // (The restart emptied every pool: fetch new nonces for this coordinator first.)
    let d = Driver::new(&c, WALLET)?;
    let (mine, _) = d.preprocess(1, 8)?.map_err(|e| anyhow::anyhow!("{e}"))?;
    let (mine2, _) = d.preprocess(2, 8)?.map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut set = BTreeMap::new();
    set.insert(1u16, mine[..q_inputs].to_vec());
    set.insert(2u16, mine2[..q_inputs].to_vec());
    let sp = d.packages_preprocessed(&q.psbt, &set)?;
    let text = std::fs::read_to_string(other_home.join("identity.key"))?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes)?;
    let other = Driver {
        client: ckm::net::client::Client::new(
            ckm::identity::IdentityKey::from_secret_bytes(&bytes)?,
            Duration::from_secs(30),
        )?,
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?,
        meta: d.meta.clone(),
    };
    let theirs: Vec<NonceId> = set[&1].iter().map(|c| c.id).collect();
    match other.sign_preprocessed(
        SessionId::random(&mut rand::rngs::OsRng),
        &q.psbt,
        &sp,
        &theirs,
        1,
    )? {
        Err(CallError::Refused {
            code: ErrorCode::UnknownNonce,
            ..
        }) => {}
        Err(e) => bail!("another coordinator's use of my nonces: unexpected {e}"),
        Ok(_) => bail!("a signer signed with nonces preprocessed for another coordinator"),
    }
    // The nonces are still good for their coordinator.
    let mut shares = BTreeMap::new();
    for i in [1u16, 2] {
        let ids: Vec<NonceId> = set[&i].iter().map(|c| c.id).collect();
        let (s, _) = d
            .sign_preprocessed(
                SessionId::random(&mut rand::rngs::OsRng),
                &q.psbt,
                &sp,
                &ids,
                i,
            )?
            .map_err(|e| anyhow::anyhow!("signer {i}: {e}"))?;
        shares.insert(i, s);
    }
    // Different sessions, same packages: the shares still aggregate (the session id is
    // only a label; what binds is the package).
    let signed = d.aggregate(&q.psbt, &sp, &shares)?;
    consensus::consensus_verify(&signed.extract_tx()?, &q.funding)?;
    Ok(())
}

#[test]
fn a_restarted_signer_refuses_old_commitments() -> Result<()> {
    let mut c = Cluster::with_wallet(2, 2)?;
    let mut funding = HashMap::new();
    let p = payment(&c, &mut funding)?;
    let inputs = p.psbt.inputs.len();
    let d = Driver::new(&c, WALLET)?;
    let mut set = BTreeMap::new();
    for i in [1u16, 2] {
        let (cm, _) = d
            .preprocess(i, u16::try_from(inputs)?)?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        set.insert(i, cm);
    }
    c.restart_signer(0, Kind::Honest)?;
    let d = Driver::new(&c, WALLET)?;
    let packages = d.packages_preprocessed(&p.psbt, &set)?;
    let ids: Vec<NonceId> = set[&1].iter().map(|c| c.id).collect();
    refused_with(
        d.sign_preprocessed(
            SessionId::random(&mut rand::rngs::OsRng),
            &p.psbt,
            &packages,
            &ids,
            1,
        )?,
        ErrorCode::UnknownNonce,
        "old commitments after a restart",
    )?;
    ensure!(signed_by(&c, &p.txid())?.is_empty());
    Ok(())
}

/// Signs in 3-of-5 with signers 1 and 2 faulty as given and signers 3–5 honest but slow to
/// preprocess (so the first session is {1, 2, 3}); returns the report and the time taken.
fn roast_case(faults: [&str; 2]) -> Result<(serde_json::Value, Duration, Cluster)> {
    let mut c = Cluster::with_wallet(5, 3)?;
    c.restart_faulty(0, faults[0])?;
    c.restart_faulty(1, faults[1])?;
    c.restart_faulty(3, "slow-preprocess:1500")?;
    c.restart_faulty(4, "slow-preprocess:1500")?;
    let mut funding = HashMap::new();
    let p = payment(&c, &mut funding)?;
    let started = Instant::now();
    let v = sign_and_check(&c, &p, "roast", &["--timeout", "60"])?;
    let took = started.elapsed();
    let used = u16_array(&v["signer_indexes"])?;
    ensure!(
        used.iter().all(|i| *i >= 3),
        "{faults:?}: faulty signer in the signing set {used:?}"
    );
    Ok((v, took, c))
}

#[test]
fn roast_completes_with_two_faulty_of_five_and_names_the_cheat() -> Result<()> {
    for faults in [
        ["corrupt-share", "hang-after-commit"],
        ["corrupt-share", "hang"],
        ["hang-after-commit", "hang"],
        ["slow:20000", "corrupt-share"],
    ] {
        let (v, took, _c) = roast_case(faults)?;
        eprintln!("{faults:?}: {took:?}, {v}");
        // The per-signer timeout is 60 s: finishing in well under half of it means no
        // timeout was waited for (the faulty signers never answer, or answer after 20 s).
        ensure!(
            took < Duration::from_secs(15),
            "{faults:?}: took {took:?}: waited on a faulty signer"
        );
        let culprits = u16_array(&v["culprits"])?;
        let cheat = faults
            .iter()
            .position(|f| *f == "corrupt-share")
            .map(|k| u16::try_from(k + 1))
            .transpose()?;
        match cheat {
            // The cheat is in the first session (it preprocessed fast): always named.
            Some(k) if faults[0] != "slow:20000" => {
                ensure!(
                    culprits == vec![k],
                    "{faults:?}: culprits {culprits:?}: {v}"
                )
            }
            _ => ensure!(
                culprits.iter().all(|c| Some(*c) == cheat),
                "{faults:?}: culprits {culprits:?}"
            ),
        }
    }
    Ok(())
}

/// A partner that is only slow costs the signer that answered its session's patience, not the
/// partner's delay: after it, that signer joins a second session with the spare (ROAST), and
/// the payment is signed long before the slow answer would come.
#[test]
fn a_slow_partner_costs_the_patience_not_its_delay() -> Result<()> {
    let (mut c, mut funding) = filled_cluster()?;
    c.restart_faulty(0, "slow:8000")?;
    for k in 0..2 {
        let p = payment(&c, &mut funding)?;
        let started = Instant::now();
        let v = sign_and_check(&c, &p, &format!("slow{k}"), &["--timeout", "60"])?;
        let took = started.elapsed();
        // The first session is {1, 2} (roster order); 2 waits for 1, then signs with 3.
        ensure!(v["sessions"] == 2, "{v}");
        ensure!(u16_array(&v["signer_indexes"])? == vec![2, 3], "{v}");
        ensure!(
            took < Duration::from_secs(6),
            "took {took:?}: waited for the slow signer's answer (8 s): {v}"
        );
    }
    Ok(())
}

fn set_policy_all(c: &Cluster, args: &[&str]) -> Result<()> {
    for s in &c.signers {
        let mut all = vec!["signer", "policy", "set", "--wallet", WALLET];
        all.extend_from_slice(args);
        ckm_json(&s.home, &all)?;
    }
    Ok(())
}

#[test]
fn a_wallet_wide_limit_uses_the_statement_rounds_and_is_remembered() -> Result<()> {
    let c = Cluster::with_wallet(3, 2)?;
    let mut funding = HashMap::new();
    set_policy_all(&c, &["--daily-limit-sats", "100000000"])?;
    // First: preprocessing tells the coordinator a statement round is needed.
    let p = payment(&c, &mut funding)?;
    let v = sign_and_check(&c, &p, "limited1", &[])?;
    ensure!(v["mode"] == "with-statements", "{v}");
    // Then it goes straight to the rounds with statements (no preprocessing request). A
    // preprocessing request of the first signing may still be in flight to a signer it did
    // not wait for: count once the logs stop changing.
    let count = || -> Vec<usize> {
        c.signers
            .iter()
            .map(|s| s.log_text().matches("preprocessed nonces").count())
            .collect()
    };
    let mut before = count();
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let now = count();
        if now == before {
            break;
        }
        before = now;
    }
    ensure!(
        before.iter().sum::<usize>() > 0,
        "the first signing did not preprocess"
    );
    let p = payment(&c, &mut funding)?;
    let v = sign_and_check(&c, &p, "limited2", &[])?;
    ensure!(v["mode"] == "with-statements", "{v}");
    let after = count();
    ensure!(
        before == after,
        "preprocessing was asked again: {before:?} → {after:?}"
    );
    // The limit removed: the next signing finds out, the one after is one round again.
    set_policy_all(&c, &["--clear"])?;
    let p = payment(&c, &mut funding)?;
    let v = sign_and_check(&c, &p, "cleared1", &[])?;
    ensure!(v["mode"] == "two-rounds", "{v}");
    let p = payment(&c, &mut funding)?;
    let v = sign_and_check(&c, &p, "cleared2", &[])?;
    ensure!(v["mode"] == "preprocessed-first", "{v}");
    let p = payment(&c, &mut funding)?;
    let v = sign_and_check(&c, &p, "cleared3", &[])?;
    ensure!(v["mode"] == "one-round", "{v}");
    Ok(())
}

/// `psbt sign --hedge` on a small PSBT starts every 2-subset of the 3 signer processes at
/// once: a hanging signer, then an invalid-share signer, costs no second session round and no
/// timeout, and the signature is made by the two honest signers.
#[test]
fn hedged_signing_needs_no_second_round_with_a_faulty_signer() -> Result<()> {
    let (mut c, mut funding) = filled_cluster()?;

    for (fault, name) in [("hang-after-commit", "hang"), ("corrupt-share", "cheat")] {
        c.restart_faulty(0, fault)?;
        // A plain signing first: the restarted signer's old commitments are refused and
        // refilled (the hanging one keeps its stored ones: it never answers a signing).
        let p = payment(&c, &mut funding)?;
        sign_and_check(&c, &p, &format!("{name}-plain"), &["--timeout", "60"])?;
        let p = payment(&c, &mut funding)?;
        let started = Instant::now();
        let v = sign_and_check(&c, &p, name, &["--timeout", "60", "--hedge"])?;
        let took = started.elapsed();
        ensure!(v["mode"] == "one-round", "{v}");
        // All three 2-subsets started at once, none after.
        ensure!(v["sessions"] == 3, "{fault}: {v}");
        ensure!(
            u16_array(&v["signer_indexes"])? == vec![2, 3],
            "{fault}: {v}"
        );
        ensure!(
            u16_array(&v["culprits"])?.iter().all(|c| *c == 1),
            "{fault}: {v}"
        );
        ensure!(
            took < Duration::from_secs(15),
            "{fault}: took {took:?}: waited on the faulty signer"
        );
    }
    Ok(())
}

/// A signer that cannot read one-round requests (another ckm version) refuses them as
/// malformed: the coordinator signs in the interactive rounds instead of failing.
#[test]
fn a_signer_that_cannot_read_one_round_requests_gets_the_interactive_rounds() -> Result<()> {
    let (mut c, mut funding) = filled_cluster()?;
    for k in 0..3 {
        c.restart_faulty(k, "no-one-round")?;
    }
    let p = payment(&c, &mut funding)?;
    let v = sign_and_check(&c, &p, "old", &["--timeout", "60"])?;
    ensure!(v["mode"] == "two-rounds", "{v}");
    Ok(())
}

/// A spare's preparation (`PrepareSign`, sent by a ROAST coordinator for large PSBTs) checks
/// a PSBT in the background and nothing else: it is answered at once, records nothing and
/// takes no nonce; a PSBT the signer refuses is still refused when it is then asked to sign
/// it; a prepared PSBT signs in one round as usual; an unknown wallet is refused.
#[test]
fn a_preparation_only_checks() -> Result<()> {
    use ckm::message::{CoordinatorToSigner, SignerToCoordinator};
    let c = Cluster::with_wallet(3, 2)?;
    let mut funding = HashMap::new();
    let p = payment(&c, &mut funding)?;
    let d = Driver::new(&c, WALLET)?;
    let prepare = |index: u16, psbt: &bitcoin::Psbt, wallet| {
        d.call(
            index,
            &CoordinatorToSigner::PrepareSign {
                wallet,
                psbt: psbt.to_string(),
            },
        )
    };
    let mut bad = p.psbt.clone();
    bad.inputs[0].witness_utxo = None;
    for i in [1u16, 2, 3] {
        for psbt in [&p.psbt, &bad] {
            match prepare(i, psbt, d.wallet_ref())? {
                Ok(SignerToCoordinator::Prepared) => {}
                other => bail!("signer {i} answered a preparation with {other:?}"),
            }
        }
    }
    let mut unknown = d.wallet_ref();
    let stranger = bitcoin::secp256k1::SecretKey::new(&mut rand::rngs::OsRng);
    unknown.group_key = ckm::keys::GroupKey::from(stranger.public_key(ckm::frost::shares::secp()));
    match prepare(1, &p.psbt, unknown)? {
        Err(CallError::Refused {
            code: ErrorCode::UnknownWallet,
            ..
        }) => {}
        other => bail!("a preparation for an unknown wallet: {other:?}"),
    }
    // The background checks have had time to finish: still nothing signed or recorded.
    std::thread::sleep(Duration::from_millis(500));
    ensure!(signed_by(&c, &p.txid())?.is_empty());
    for i in 1..=3 {
        ensure!(
            audit_for(&c.signers[i - 1].home, &p.txid())?.is_empty(),
            "signer {i} recorded a preparation"
        );
    }
    // The refused PSBT is refused when signed, with fresh nonces (none was taken above).
    let (held, _) = d.preprocess(1, 8)?.map_err(|e| anyhow::anyhow!("{e}"))?;
    let (held2, _) = d.preprocess(2, 8)?.map_err(|e| anyhow::anyhow!("{e}"))?;
    let inputs = p.psbt.inputs.len();
    let mut chosen = BTreeMap::new();
    chosen.insert(1u16, held[..inputs].to_vec());
    chosen.insert(2u16, held2[..inputs].to_vec());
    let packages = d.packages_preprocessed(&p.psbt, &chosen)?;
    let ids: Vec<NonceId> = chosen[&1].iter().map(|c| c.id).collect();
    refused_with(
        d.sign_preprocessed(
            SessionId::random(&mut rand::rngs::OsRng),
            &bad,
            &packages,
            &ids,
            1,
        )?,
        ErrorCode::Refused,
        "a prepared PSBT the signer refuses",
    )?;
    // The prepared PSBT signs as usual.
    let v = sign_and_check(&c, &p, "prepared", &[])?;
    ensure!(
        v["mode"] == "preprocessed-first" || v["mode"] == "one-round",
        "{v}"
    );
    Ok(())
}
