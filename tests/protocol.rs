//! Protocol-level integration tests of `ckm`, entirely in memory (no network, no bitcoind):
//!
//! 1. DKG for several group sizes, the wallet descriptors and HD derivation on the group key
//!    (checked against rust-bitcoin's own BIP-0032 and against miniscript), and FROST
//!    signing with derived shares;
//! 2. DKG failure modes (equivocating relay, altered own broadcast, invalid parameters,
//!    disagreeing participants);
//! 3. co-signing a PSBT built by the bdk wallet with every qualified subset of signers, each
//!    resulting transaction verified by libbitcoinconsensus with the Taproot rules;
//! 4. too few signers;
//! 5. a signer returning a corrupted signature share;
//! 6. the signer's refusals in round 1 and round 2;
//! 7. the classification of change outputs.
//!
//! The random generator is seeded from `CKM_TEST_SEED` when set (the seed of every test is
//! printed, and shown when a test fails), otherwise from the OS.

#[path = "common/consensus.rs"]
mod consensus;
use consensus::{consensus_verify, consensus_verify_against, made_up_funding};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;

use anyhow::{bail, ensure, Context, Result};
use bdk_wallet::KeychainKind;
use bitcoin::bip32::{ChildNumber, DerivationPath, Fingerprint};
use bitcoin::hashes::Hash;
use bitcoin::key::{Keypair, TapTweak};
use bitcoin::psbt::PsbtSighashType;
use bitcoin::secp256k1::{schnorr, Message, Parity, Scalar, SecretKey, XOnlyPublicKey};
use bitcoin::{
    Address, Amount, FeeRate, Network, OutPoint, Psbt, ScriptBuf, TapSighashType, TxOut, Witness,
};
use ckm::frost::pedersen::{
    run_in_memory, DkgError, DkgParams, DkgRelay, DkgRound1, DkgRound2, Round1Broadcast,
    Round2Send, TranscriptHash,
};
use ckm::frost::shares::{secp, GroupPublic, KeyShare};
use ckm::frost::{identifier, Identifier};
use ckm::identity::IdentityKey;
use ckm::keys::{CertPin, Roster, RosterEntry};
use ckm::psbt::check::CheckError;
use ckm::psbt::coordinate::CoordinateError;
use ckm::psbt::rounds::SignError;
use ckm::psbt::{
    check_psbt, commit, sign_in_memory, InMemoryError, SessionPackages, SigningSession,
};
use ckm::wallet::{descriptors, CkmWallet, WalletMeta};
use frost::keys::dkg::round2;
use frost::round2::SignatureShare;
use frost::SigningPackage;
use frost_secp256k1_tr as frost;
use miniscript::descriptor::{Descriptor, DescriptorPublicKey};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

const NETWORK: Network = Network::Regtest;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A seeded RNG; the seed comes from `CKM_TEST_SEED` or the OS and is printed.
fn test_rng(test: &str) -> StdRng {
    let seed = std::env::var("CKM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{test}: CKM_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

fn id(index: u16) -> Identifier {
    identifier(index).expect("non-zero index")
}

fn path(text: &str) -> DerivationPath {
    DerivationPath::from_str(text).expect("valid derivation path")
}

/// A Taproot key that belongs to nobody in the test.
fn foreign_xonly(rng: &mut StdRng) -> XOnlyPublicKey {
    let sk = SecretKey::new(rng);
    Keypair::from_secret_key(secp(), &sk).x_only_public_key().0
}

/// A regtest P2TR address (BIP-0086 tweak) of nobody in the test.
fn foreign_address(rng: &mut StdRng) -> Address {
    Address::p2tr(secp(), foreign_xonly(rng), None, NETWORK)
}

/// The BIP-0086 output key of an internal key.
fn bip86_output_key(internal: XOnlyPublicKey) -> XOnlyPublicKey {
    internal.tap_tweak(secp(), None).0.to_x_only_public_key()
}

fn serialize_psbt(psbt: &Psbt) -> Vec<u8> {
    psbt.serialize()
}

// ---------------------------------------------------------------------------------------
// 1. DKG, descriptors, HD derivation
// ---------------------------------------------------------------------------------------

fn check_group(threshold: u16, signers: u16, rng: &mut StdRng) -> Result<Vec<KeyShare>> {
    let params = DkgParams::new(threshold, signers)?;
    let shares = run_in_memory(params, rng)?;
    ensure!(shares.len() == usize::from(signers), "one share per signer");
    let group = shares[0].group().clone();
    for (k, share) in shares.iter().enumerate() {
        ensure!(
            share.group() == &group,
            "{threshold}-of-{signers}: participant {} ended with another group",
            k + 1
        );
        ensure!(
            share.identifier() == id(u16::try_from(k + 1)?),
            "shares come back in roster order"
        );
    }
    ensure!(group.threshold() == threshold, "threshold recorded");
    ensure!(group.signers() == signers, "signer count recorded");
    let ids: Vec<Identifier> = group.identifiers().copied().collect();
    ensure!(ids == params.identifiers(), "the group's roster is 1..=n");
    let distinct: BTreeSet<Identifier> = shares.iter().map(KeyShare::identifier).collect();
    ensure!(distinct.len() == shares.len(), "identifiers are distinct");

    // Even Y, both on our side and in frost's own package.
    let (_, parity) = group.group_key().x_only_public_key();
    ensure!(parity == Parity::Even, "group key must have even Y");
    let frost_key = group.public_key_package().verifying_key().serialize()?;
    ensure!(
        frost_key == group.group_key().serialize().to_vec(),
        "frost's verifying key is the group key"
    );
    ensure!(frost_key[0] == 0x02, "frost's verifying key has even Y");

    // The encoded share round-trips and still belongs to the group.
    let bytes = shares[0].to_secret_bytes()?;
    let decoded = KeyShare::from_secret_bytes(&bytes)?;
    ensure!(decoded.group() == &group && decoded.identifier() == shares[0].identifier());

    check_descriptors(&group)?;
    Ok(shares)
}

/// The descriptors derive the same addresses as rust-bitcoin's BIP-0032 on the group xpub,
/// and `GroupPublic::derivation` agrees with `Xpub::derive_pub`.
fn check_descriptors(group: &GroupPublic) -> Result<()> {
    let xpub = group.xpub(NETWORK);
    ensure!(xpub.public_key == group.group_key());
    ensure!(xpub.fingerprint() == group.fingerprint());
    let (external, internal) = descriptors(group, NETWORK)?;
    let fp = group.fingerprint();
    for (branch, text) in [(0u32, &external), (1u32, &internal)] {
        ensure!(
            text.starts_with(&format!("tr([{fp}]{xpub}/{branch}/*)#")),
            "descriptor {text} is tr([fp]xpub/{branch}/*) with a checksum"
        );
        let descriptor = Descriptor::<DescriptorPublicKey>::from_str(text)?;
        for i in [0u32, 1, 2, 7, 19, 1000] {
            let from_descriptor = descriptor.at_derivation_index(i)?.address(NETWORK)?;
            let child_path = DerivationPath::from(vec![
                ChildNumber::from_normal_idx(branch)?,
                ChildNumber::from_normal_idx(i)?,
            ]);
            let child = xpub.derive_pub(secp(), &child_path)?;
            let from_bip32 = Address::p2tr(secp(), child.to_x_only_pub(), None, NETWORK);
            ensure!(
                from_descriptor == from_bip32,
                "m/{branch}/{i}: descriptor gives {from_descriptor}, BIP-0032 gives {from_bip32}"
            );
            let derivation = group.derivation(&child_path)?;
            ensure!(
                derivation.public_key() == child.public_key,
                "GroupPublic::derivation({child_path}) differs from Xpub::derive_pub"
            );
            ensure!(derivation.internal_key() == child.to_x_only_pub());
        }
    }
    // Deeper paths and the empty path, too.
    for p in ["m", "m/5", "m/0/3/9/2"] {
        let p = path(p);
        let derivation = group.derivation(&p)?;
        ensure!(derivation.public_key() == xpub.derive_pub(secp(), &p)?.public_key);
    }
    ensure!(
        group.derivation(&path("m/0h/1")).is_err(),
        "hardened steps are refused"
    );
    Ok(())
}

#[test]
fn dkg_groups_agree_and_derive_like_bip32() -> Result<()> {
    let mut rng = test_rng("dkg_groups_agree_and_derive_like_bip32");
    let mut keys = BTreeSet::new();
    for (t, n) in [(2, 3), (3, 5), (15, 20)] {
        let shares = check_group(t, n, &mut rng).with_context(|| format!("{t}-of-{n}"))?;
        keys.insert(shares[0].group().group_key().serialize());
    }
    ensure!(keys.len() == 3, "independent DKGs give independent keys");
    Ok(())
}

/// `GroupPublic::derivation` remembers what it derived (per process): asked again, in any
/// order (a child before its parent, a path twice), and for two groups with the same paths, it
/// still gives each group's own BIP-0032 child.
#[test]
fn remembered_derivations_stay_per_group_and_path() -> Result<()> {
    let mut rng = test_rng("remembered_derivations_stay_per_group_and_path");
    let groups = [
        check_group(2, 3, &mut rng)?[0].group().clone(),
        check_group(2, 3, &mut rng)?[0].group().clone(),
    ];
    let order = [
        "m/0/7",
        "m/0",
        "m/0/7",
        "m/1/7",
        "m/0/3/9/2",
        "m/0/3/9",
        "m/0/3/9/2",
        "m/1",
    ];
    for round in 0..2 {
        for group in &groups {
            let xpub = group.xpub(NETWORK);
            for p in order {
                let p = path(p);
                let derived = group.derivation(&p)?;
                ensure!(
                    derived.public_key() == xpub.derive_pub(secp(), &p)?.public_key,
                    "round {round}: {p} is not the group's BIP-0032 child"
                );
                ensure!(
                    derived.path() == &p,
                    "round {round}: {p} came back as {}",
                    derived.path()
                );
            }
        }
        ensure!(
            groups[0].derivation(&path("m/0/7"))? != groups[1].derivation(&path("m/0/7"))?,
            "two groups share a derivation"
        );
    }
    ensure!(
        groups[0].derivation(&path("m/0/7h")).is_err(),
        "a hardened step is refused even when its parent is remembered"
    );
    Ok(())
}

/// Signs `msg` with the key packages derived at `derivation` for `signers` and aggregates with
/// the derived public key package (BIP-0086 tweak, no script tree).
fn sign_derived(
    signers: &[&KeyShare],
    derivation: &ckm::frost::shares::Derivation,
    msg: &[u8; 32],
    rng: &mut StdRng,
) -> Result<schnorr::Signature> {
    let group = signers[0].group();
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for share in signers {
        let (n, c) = frost::round1::commit(share.root_signing_share(), rng);
        nonces.insert(share.identifier(), n);
        commitments.insert(share.identifier(), c);
    }
    let package = SigningPackage::new(commitments, msg);
    let mut sig_shares = BTreeMap::new();
    for share in signers {
        let key_package = share.derive(derivation)?;
        ensure!(key_package.verifying_key().serialize()? == derivation.public_key().serialize());
        let s = frost::round2::sign_with_tweak(
            &package,
            &nonces[&share.identifier()],
            &key_package,
            None,
        )?;
        sig_shares.insert(share.identifier(), s);
    }
    let ids: BTreeSet<Identifier> = signers.iter().map(|s| s.identifier()).collect();
    let pkp = group.derive_public_key_package(derivation, Some(&ids))?;
    let signature = frost::aggregate_with_tweak(&package, &sig_shares, &pkp, None)?;
    Ok(schnorr::Signature::from_slice(&signature.serialize()?)?)
}

#[test]
fn hd_shares_sign_for_the_child_key() -> Result<()> {
    let mut rng = test_rng("hd_shares_sign_for_the_child_key");
    let shares = run_in_memory(DkgParams::new(2, 3)?, &mut rng)?;
    let group = shares[0].group().clone();
    let child_path = path("m/0/7");
    let derivation = group.derivation(&child_path)?;
    let xpub_child = group.xpub(NETWORK).derive_pub(secp(), &child_path)?;
    let output_key = bip86_output_key(xpub_child.to_x_only_pub());
    // The output key is the one in the wallet's address at m/0/7.
    let address = Address::p2tr(secp(), xpub_child.to_x_only_pub(), None, NETWORK);
    ensure!(
        address.script_pubkey() == ScriptBuf::new_p2tr(secp(), derivation.internal_key(), None)
    );

    for pair in [[0usize, 1], [0, 2], [1, 2]] {
        let signers: Vec<&KeyShare> = pair.iter().map(|&k| &shares[k]).collect();
        let mut msg = [0u8; 32];
        rng.fill_bytes(&mut msg);
        let signature = sign_derived(&signers, &derivation, &msg, &mut rng)?;
        let message = Message::from_digest(msg);
        secp()
            .verify_schnorr(&signature, &message, &output_key)
            .with_context(|| format!("signers {pair:?}: BIP-0340 verification under m/0/7"))?;
        // It is a signature for that key only.
        ensure!(secp()
            .verify_schnorr(&signature, &message, &xpub_child.to_x_only_pub())
            .is_err());
        let other = bip86_output_key(group.derivation(&path("m/0/8"))?.internal_key());
        ensure!(secp().verify_schnorr(&signature, &message, &other).is_err());
        let root = bip86_output_key(group.group_key().x_only_public_key().0);
        ensure!(secp().verify_schnorr(&signature, &message, &root).is_err());
    }

    // All three signers, with the unrestricted public key package.
    let all: Vec<&KeyShare> = shares.iter().collect();
    let mut msg = [0u8; 32];
    rng.fill_bytes(&mut msg);
    let signature = sign_derived(&all, &derivation, &msg, &mut rng)?;
    secp().verify_schnorr(&signature, &Message::from_digest(msg), &output_key)?;

    // Root (un-derived) key packages do not sign for the child.
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for share in &shares[..2] {
        let (n, c) = frost::round1::commit(share.root_signing_share(), &mut rng);
        nonces.insert(share.identifier(), n);
        commitments.insert(share.identifier(), c);
    }
    let package = SigningPackage::new(commitments, &msg);
    let mut sig_shares = BTreeMap::new();
    let root = group.derivation(&path("m"))?;
    for share in &shares[..2] {
        let kp = share.derive(&root)?;
        sig_shares.insert(
            share.identifier(),
            frost::round2::sign_with_tweak(&package, &nonces[&share.identifier()], &kp, None)?,
        );
    }
    let ids: BTreeSet<Identifier> = shares[..2].iter().map(|s| s.identifier()).collect();
    let pkp = group.derive_public_key_package(&derivation, Some(&ids))?;
    ensure!(
        frost::aggregate_with_tweak(&package, &sig_shares, &pkp, None).is_err(),
        "shares for the root must not aggregate into a signature for m/0/7"
    );
    Ok(())
}

/// The spend key of an input (child key and Taproot tweak in one libsecp256k1 step) gives
/// exactly what frost gives in two steps: `KeyShare::derive` / `derive_public_key_package`,
/// then `Tweak::tweak`; for children of both Y parities, with and without a script tree.
#[test]
fn spend_keys_equal_frost_derive_then_tweak() -> Result<()> {
    use frost::keys::Tweak as _;
    let mut rng = test_rng("spend_keys_equal_frost_derive_then_tweak");
    let shares = run_in_memory(DkgParams::new(2, 3)?, &mut rng)?;
    let group = shares[0].group().clone();
    let mut parities = BTreeSet::new();
    let mut paths: Vec<String> = (0..12).map(|i| format!("m/{}/{i}", i % 2)).collect();
    paths.push("m".into());
    paths.push("m/5".into());
    for text in &paths {
        let derivation = group.derivation(&path(text))?;
        parities.insert(derivation.public_key().x_only_public_key().1 == Parity::Odd);
        let mut root = [0u8; 32];
        rng.fill_bytes(&mut root);
        for merkle_root in [None, Some(bitcoin::TapNodeHash::from_byte_array(root))] {
            let spend = ckm::frost::shares::SpendKey::new(&derivation, merkle_root)?;
            let frost_root = merkle_root.as_ref().map(|r| r.to_byte_array());
            let expected_output = derivation
                .internal_key()
                .tap_tweak(secp(), merkle_root)
                .0
                .to_x_only_public_key();
            ensure!(spend.output_key() == expected_output, "{text}: output key");
            for share in &shares {
                let expected = share.derive(&derivation)?.tweak(frost_root.as_ref());
                ensure!(
                    share.spend_key_package(&spend)? == expected,
                    "{text}, {merkle_root:?}: key package differs from derive + tweak"
                );
            }
            for pair in [[0usize, 1], [1, 2]] {
                let ids: BTreeSet<Identifier> =
                    pair.iter().map(|&k| shares[k].identifier()).collect();
                let expected = group
                    .derive_public_key_package(&derivation, Some(&ids))?
                    .tweak(frost_root.as_ref());
                ensure!(
                    group.spend_public_key_package(&spend, &ids)? == expected,
                    "{text}, {merkle_root:?}: public key package differs from derive + tweak"
                );
            }
        }
    }
    ensure!(
        parities.len() == 2,
        "children of both Y parities were tried"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. DKG failure modes
// ---------------------------------------------------------------------------------------

fn start_all(
    params: DkgParams,
    rng: &mut StdRng,
) -> Result<(Vec<DkgRound1>, BTreeMap<Identifier, Round1Broadcast>)> {
    let mut states = Vec::new();
    let mut broadcasts = BTreeMap::new();
    for i in params.identifiers() {
        let (state, broadcast) = DkgRound1::start(i, params, [0u8; 32], rng)?;
        states.push(state);
        broadcasts.insert(i, broadcast);
    }
    Ok((states, broadcasts))
}

type Relay = DkgRelay<round2::Package>;

/// Runs round 1 → round 2 with a per-participant view of the round-1 broadcasts, routing
/// round 2 through a relay.
fn round2_with_views(
    params: DkgParams,
    states: Vec<DkgRound1>,
    view: impl Fn(&Identifier) -> BTreeMap<Identifier, Round1Broadcast>,
) -> Result<(Vec<(Identifier, DkgRound2)>, Relay)> {
    let mut relay = DkgRelay::new(params);
    let mut next = Vec::new();
    for state in states {
        let me = state.identifier();
        let (r2, send): (DkgRound2, Round2Send) = state.receive_round1(&view(&me))?;
        ensure!(r2.transcript() == send.transcript);
        ensure!(send.packages.len() == usize::from(params.signers()) - 1);
        relay.add_round2(me, send.transcript, send.packages);
        next.push((me, r2));
    }
    Ok((next, relay))
}

#[test]
fn dkg_relay_equivocation_is_caught() -> Result<()> {
    let mut rng = test_rng("dkg_relay_equivocation_is_caught");
    let params = DkgParams::new(2, 3)?;
    let (states, honest) = start_all(params, &mut rng)?;
    // A second, unrelated DKG run: its participant-1 broadcast is well-formed (valid proof
    // of knowledge for identifier 1) but is not the one participant 1 sent.
    let (_other_states, other) = start_all(params, &mut rng)?;
    let mut forged = honest.clone();
    forged.insert(id(1), other[&id(1)].clone());

    let (round2, relay) = round2_with_views(params, states, |me| {
        if *me == id(3) {
            forged.clone()
        } else {
            honest.clone()
        }
    })?;
    let transcripts: BTreeMap<Identifier, TranscriptHash> =
        round2.iter().map(|(i, r)| (*i, r.transcript())).collect();
    ensure!(transcripts[&id(1)] == transcripts[&id(2)]);
    ensure!(transcripts[&id(1)] != transcripts[&id(3)]);

    // (a) The relay forwards the transcripts honestly: everybody sees the mismatch.
    let mut keyshares = 0;
    for (me, state) in round2 {
        let (packages, transcripts) = relay.round2_for(&me).context("round 2 complete")?;
        match state.finish(&packages, &transcripts) {
            Err(DkgError::TranscriptMismatch { culprits }) => {
                let expected = if me == id(3) { vec![1, 2] } else { vec![3] };
                ensure!(
                    culprits == expected,
                    "participant {me:?}: culprits {culprits:?}"
                );
            }
            Err(DkgError::Frost { .. }) if me == id(3) => {}
            Ok(_) => keyshares += 1,
            Err(e) => bail!("participant {me:?}: unexpected error {e}"),
        }
    }
    ensure!(keyshares == 0, "no participant may accept a share");
    Ok(())
}

#[test]
fn dkg_relay_equivocation_with_forged_transcripts_denies_the_victim_a_share() -> Result<()> {
    // The relay also lies about the transcripts (it shows each side the hashes it expects).
    // Participant 3 then cannot verify participant 1's secret share against the forged
    // commitment: frost rejects it and names participant 1. No inconsistent share results.
    let mut rng = test_rng("dkg_relay_equivocation_with_forged_transcripts");
    let params = DkgParams::new(2, 3)?;
    let (states, honest) = start_all(params, &mut rng)?;
    let (_other_states, other) = start_all(params, &mut rng)?;
    let mut forged = honest.clone();
    forged.insert(id(1), other[&id(1)].clone());
    let (round2, relay) = round2_with_views(params, states, |me| {
        if *me == id(3) {
            forged.clone()
        } else {
            honest.clone()
        }
    })?;
    let t_honest = round2[0].1.transcript();
    let t_forged = round2[2].1.transcript();
    for (me, state) in round2 {
        let (packages, _) = relay.round2_for(&me).context("round 2 complete")?;
        let lie = if me == id(3) { t_forged } else { t_honest };
        let transcripts: BTreeMap<Identifier, TranscriptHash> =
            params.identifiers().into_iter().map(|i| (i, lie)).collect();
        let result = state.finish(&packages, &transcripts);
        if me == id(3) {
            match result {
                Err(DkgError::Frost { culprit, .. }) => {
                    ensure!(
                        culprit == Some(1),
                        "frost should blame participant 1, got {culprit:?}"
                    )
                }
                Err(e) => bail!("participant 3: unexpected error {e}"),
                Ok(_) => bail!("participant 3 accepted a share from a forged commitment"),
            }
        }
    }
    Ok(())
}

#[test]
fn dkg_chain_code_equivocation_with_forged_transcripts_is_caught_by_the_agreement_check(
) -> Result<()> {
    // Documents a limit of the participant-side check: the transcript hashes reach each
    // participant through the relay, so a relay that forges them AND only changes a chain
    // code contribution (frost's package is untouched, so frost is happy) makes participant
    // 3 finish with the same group key but another chain code. The final agreement check
    // (`DkgRelay::finish`) names it. (Over the network, `ckm::signer` binds the sender's
    // transcript into the AEAD of every sealed round-2 package, which catches this earlier.)
    let mut rng = test_rng("dkg_chain_code_equivocation_with_forged_transcripts");
    let params = DkgParams::new(2, 3)?;
    let (states, honest) = start_all(params, &mut rng)?;
    let mut forged = honest.clone();
    forged
        .get_mut(&id(1))
        .context("participant 1")?
        .chain_code_contribution[5] ^= 0x10;
    let (round2, relay) = round2_with_views(params, states, |me| {
        if *me == id(3) {
            forged.clone()
        } else {
            honest.clone()
        }
    })?;
    let t_honest = round2[0].1.transcript();
    let t_forged = round2[2].1.transcript();
    ensure!(t_honest != t_forged);
    let mut results = BTreeMap::new();
    for (me, state) in round2 {
        let (packages, _) = relay.round2_for(&me).context("round 2 complete")?;
        let lie = if me == id(3) { t_forged } else { t_honest };
        let transcripts: BTreeMap<Identifier, TranscriptHash> =
            params.identifiers().into_iter().map(|i| (i, lie)).collect();
        results.insert(me, state.finish(&packages, &transcripts)?);
    }
    let (g1, g3) = (results[&id(1)].group(), results[&id(3)].group());
    ensure!(results[&id(2)].group() == g1);
    ensure!(g1.group_key() == g3.group_key(), "same key");
    ensure!(g1.chain_code() != g3.chain_code(), "different chain code");
    let mut final_relay: Relay = DkgRelay::new(params);
    for (me, share) in &results {
        final_relay.add_result(*me, share.group().clone());
    }
    match final_relay.finish() {
        Err(DkgError::Disagreement { culprits }) => ensure!(culprits == vec![3]),
        other => bail!("expected Disagreement naming 3, got {other:?}"),
    }
    Ok(())
}

#[test]
fn dkg_tampered_chain_code_contribution_is_caught_by_the_transcript() -> Result<()> {
    // frost cannot see the chain-code contribution; only the transcript check can.
    let mut rng = test_rng("dkg_tampered_chain_code_contribution");
    let params = DkgParams::new(2, 3)?;
    let (states, honest) = start_all(params, &mut rng)?;
    let mut forged = honest.clone();
    forged
        .get_mut(&id(2))
        .context("participant 2")?
        .chain_code_contribution[0] ^= 1;
    let (round2, relay) = round2_with_views(params, states, |me| {
        if *me == id(1) {
            forged.clone()
        } else {
            honest.clone()
        }
    })?;
    for (me, state) in round2 {
        let (packages, transcripts) = relay.round2_for(&me).context("round 2 complete")?;
        match state.finish(&packages, &transcripts) {
            Err(DkgError::TranscriptMismatch { culprits }) => {
                let expected = if me == id(1) { vec![2, 3] } else { vec![1] };
                ensure!(
                    culprits == expected,
                    "participant {me:?}: culprits {culprits:?}"
                );
            }
            Ok(_) => bail!("participant {me:?} accepted despite a different chain code view"),
            Err(e) => bail!("participant {me:?}: unexpected error {e}"),
        }
    }
    Ok(())
}

#[test]
fn dkg_altered_own_broadcast_and_wrong_sets_are_refused() -> Result<()> {
    let mut rng = test_rng("dkg_altered_own_broadcast");
    let params = DkgParams::new(2, 3)?;

    // Own chain-code contribution altered.
    let (mut states, honest) = start_all(params, &mut rng)?;
    let mut altered = honest.clone();
    altered
        .get_mut(&id(2))
        .context("participant 2")?
        .chain_code_contribution[31] ^= 0x80;
    let p2 = states.remove(1);
    match p2.receive_round1(&altered) {
        Err(DkgError::OwnBroadcastAltered { participant }) => ensure!(participant == 2),
        other => bail!("expected OwnBroadcastAltered, got {other:?}"),
    }

    // Own frost package replaced by another run's (valid) package.
    let (_, other) = start_all(params, &mut rng)?;
    let mut replaced = honest.clone();
    replaced.insert(id(1), other[&id(1)].clone());
    let p1 = states.remove(0);
    match p1.receive_round1(&replaced) {
        Err(DkgError::OwnBroadcastAltered { participant }) => ensure!(participant == 1),
        other => bail!("expected OwnBroadcastAltered, got {other:?}"),
    }

    // Missing and extra participants.
    let p3 = states.remove(0);
    let mut missing = honest.clone();
    missing.remove(&id(2));
    match p3.receive_round1(&missing) {
        Err(DkgError::WrongParticipants {
            round: 1,
            expected: 3,
            got: 2,
        }) => {}
        other => bail!("expected WrongParticipants, got {other:?}"),
    }
    let (mut states, honest) = start_all(params, &mut rng)?;
    let mut extra = honest.clone();
    extra.insert(id(4), honest[&id(1)].clone());
    match states.remove(0).receive_round1(&extra) {
        Err(DkgError::WrongParticipants { round: 1, .. }) => {}
        other => bail!("expected WrongParticipants, got {other:?}"),
    }
    Ok(())
}

#[test]
fn dkg_invalid_params_are_refused() -> Result<()> {
    for (t, n) in [(1, 3), (4, 3), (0, 0), (1, 1), (2, 256), (0, 5)] {
        match DkgParams::new(t, n) {
            Err(DkgError::InvalidParams { threshold, signers }) => {
                ensure!((threshold, signers) == (t, n), "error names {t}-of-{n}")
            }
            other => bail!("{t}-of-{n}: expected InvalidParams, got {other:?}"),
        }
    }
    for (t, n) in [(2, 2), (2, 3), (255, 255)] {
        let p = DkgParams::new(t, n)?;
        ensure!(p.threshold() == t && p.signers() == n);
    }
    Ok(())
}

#[test]
fn dkg_relay_finish_names_the_disagreeing_participant() -> Result<()> {
    let mut rng = test_rng("dkg_relay_finish_names_the_disagreeing_participant");
    let params = DkgParams::new(2, 3)?;
    let a = run_in_memory(params, &mut rng)?;
    let b = run_in_memory(params, &mut rng)?;
    let group_a = a[0].group().clone();
    let group_b = b[0].group().clone();
    ensure!(group_a != group_b);

    for odd in 1..=3u16 {
        let mut relay: DkgRelay<round2::Package> = DkgRelay::new(params);
        for i in 1..=3u16 {
            let g = if i == odd { &group_b } else { &group_a };
            relay.add_result(id(i), g.clone());
        }
        match relay.finish() {
            Err(DkgError::Disagreement { culprits }) => {
                ensure!(culprits == vec![odd], "expected [{odd}], got {culprits:?}")
            }
            other => bail!("expected Disagreement, got {other:?}"),
        }
    }

    // Missing result.
    let mut relay: DkgRelay<round2::Package> = DkgRelay::new(params);
    relay.add_result(id(1), group_a.clone());
    relay.add_result(id(2), group_a.clone());
    match relay.finish() {
        Err(DkgError::WrongParticipants {
            round: 3,
            expected: 3,
            got: 2,
        }) => {}
        other => bail!("expected WrongParticipants, got {other:?}"),
    }
    relay.add_result(id(3), group_a.clone());
    ensure!(relay.finish()? == group_a);

    // A group of another threshold is not accepted even when all agree on it.
    let c = run_in_memory(DkgParams::new(3, 3)?, &mut rng)?;
    let mut relay: DkgRelay<round2::Package> = DkgRelay::new(params);
    for share in &c {
        relay.add_result(share.identifier(), share.group().clone());
    }
    match relay.finish() {
        Err(DkgError::Disagreement { .. }) => {}
        other => bail!("expected Disagreement for a 3-of-3 result in a 2-of-3 DKG, got {other:?}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Wallet fixture: a 2-of-3 group, a bdk wallet in SQLite, three made-up funding outputs on
// both keychains, and a payment that needs all three.
// ---------------------------------------------------------------------------------------

struct Fixture {
    _dir: tempfile::TempDir,
    db_path: std::path::PathBuf,
    shares: Vec<KeyShare>,
    wallet: CkmWallet,
    /// The outputs the PSBT spends, by outpoint.
    funding: HashMap<OutPoint, TxOut>,
    psbt: Psbt,
    to: Address,
    amount: Amount,
}

impl Fixture {
    fn group(&self) -> &GroupPublic {
        self.shares[0].group()
    }
}

const FUNDS: [(KeychainKind, u32, u64); 3] = [
    (KeychainKind::External, 0, 100_000),
    (KeychainKind::External, 4, 200_000),
    (KeychainKind::Internal, 2, 300_000),
];

fn fixture(rng: &mut StdRng) -> Result<Fixture> {
    let shares = run_in_memory(DkgParams::new(2, 3)?, rng)?;
    let group = shares[0].group().clone();
    let dir = tempfile::tempdir()?;
    let db_path = dir.path().join("wallet.sqlite");
    let roster = Roster::new(
        (1..=3u16)
            .map(|index| RosterEntry {
                index,
                url: format!("http://127.0.0.1:{}", 40_000 + index),
                identity: IdentityKey::generate(rng).public(),
                tls_sha256: (index == 2).then_some(CertPin([0xab; 32])),
            })
            .collect(),
    )?;
    let meta = WalletMeta {
        name: "test".into(),
        network: NETWORK,
        group: group.clone(),
        roster,
        electrum: None,
        keygen: None,
        epoch: 0,
        transitions: Vec::new(),
        pending: None,
        birth_height: None,
    };
    let mut wallet = CkmWallet::create(&db_path, meta)?;

    // The wallet's addresses are the BIP-0086 addresses of the group xpub.
    let xpub = group.xpub(NETWORK);
    for (keychain, branch) in [(KeychainKind::External, 0u32), (KeychainKind::Internal, 1)] {
        for i in 0..6u32 {
            let child = xpub.derive_pub(
                secp(),
                &[
                    ChildNumber::from_normal_idx(branch)?,
                    ChildNumber::from_normal_idx(i)?,
                ],
            )?;
            let expected = Address::p2tr(secp(), child.to_x_only_pub(), None, NETWORK);
            ensure!(wallet.bdk().peek_address(keychain, i).address == expected);
        }
    }

    wallet
        .bdk_mut()
        .reveal_addresses_to(KeychainKind::External, 4)
        .for_each(drop);
    wallet
        .bdk_mut()
        .reveal_addresses_to(KeychainKind::Internal, 2)
        .for_each(drop);
    let mut funding = HashMap::new();
    let mut txs = Vec::new();
    for (keychain, index, sats) in FUNDS {
        let spk = wallet
            .bdk()
            .peek_address(keychain, index)
            .address
            .script_pubkey();
        let tx = made_up_funding(rng, spk, sats);
        funding.insert(OutPoint::new(tx.compute_txid(), 0), tx.output[0].clone());
        txs.push((tx, 1_700_000_000u64));
    }
    wallet.bdk_mut().apply_unconfirmed_txs(txs);
    wallet.persist()?;
    let balance = wallet.bdk().balance();
    ensure!(
        balance.total() == Amount::from_sat(600_000),
        "balance {balance:?}"
    );

    let to = foreign_address(rng);
    let amount = Amount::from_sat(550_000);
    let psbt = wallet.build_payment(&to, amount, FeeRate::from_sat_per_vb_u32(2))?;
    Ok(Fixture {
        _dir: dir,
        db_path,
        shares,
        wallet,
        funding,
        psbt,
        to,
        amount,
    })
}

fn origin_path(psbt: &Psbt, input: usize) -> Option<DerivationPath> {
    let i = &psbt.inputs[input];
    let key = i.tap_internal_key?;
    i.tap_key_origins.get(&key).map(|(_, (_, p))| p.clone())
}

fn change_index(psbt: &Psbt, fingerprint: Fingerprint) -> Option<usize> {
    psbt.outputs.iter().position(|o| {
        o.tap_internal_key.is_some_and(|k| {
            o.tap_key_origins
                .get(&k)
                .is_some_and(|(_, (fp, _))| *fp == fingerprint)
        })
    })
}

fn payment_index(f: &Fixture) -> Result<usize> {
    f.psbt
        .unsigned_tx
        .output
        .iter()
        .position(|o| o.script_pubkey == f.to.script_pubkey())
        .context("payment output")
}

// ---------------------------------------------------------------------------------------
// 3. Co-signing a wallet PSBT with every qualified subset
// ---------------------------------------------------------------------------------------

#[test]
fn wallet_psbt_cosigned_by_every_qualified_subset_passes_consensus() -> Result<()> {
    let mut rng = test_rng("wallet_psbt_cosigned_by_every_qualified_subset");
    let mut f = fixture(&mut rng)?;
    let psbt = f.psbt.clone();

    // The payment needs all three inputs, from both keychains at different indexes, plus
    // change.
    ensure!(psbt.inputs.len() == 3, "{} inputs", psbt.inputs.len());
    let paths: BTreeSet<DerivationPath> = (0..3)
        .map(|k| origin_path(&psbt, k).context("input origin"))
        .collect::<Result<_>>()?;
    let expected: BTreeSet<DerivationPath> =
        ["m/0/0", "m/0/4", "m/1/2"].into_iter().map(path).collect();
    ensure!(paths == expected, "input paths {paths:?}");
    ensure!(psbt.unsigned_tx.output.len() == 2, "payment plus change");
    ensure!(
        change_index(&psbt, f.group().fingerprint()).is_some(),
        "change output"
    );
    for input in &psbt.inputs {
        ensure!(input.witness_utxo.is_some());
        ensure!(input.tap_key_sig.is_none() && input.final_script_witness.is_none());
    }
    let unsigned_txid = psbt.unsigned_tx.compute_txid();

    let subsets: Vec<Vec<usize>> = vec![vec![0, 1], vec![0, 2], vec![1, 2], vec![0, 1, 2]];
    let mut txs = Vec::new();
    for subset in &subsets {
        let mut signed = psbt.clone();
        let signers: Vec<&KeyShare> = subset.iter().map(|&k| &f.shares[k]).collect();
        let tx = sign_in_memory(&mut signed, &signers, &mut rng)
            .with_context(|| format!("signers {subset:?}"))?;
        ensure!(
            tx.compute_txid() == unsigned_txid,
            "signing must not change the txid"
        );
        consensus_verify(&tx, &f.funding).with_context(|| format!("signers {subset:?}"))?;
        for (k, input) in signed.inputs.iter().enumerate() {
            let witness = input
                .final_script_witness
                .as_ref()
                .with_context(|| format!("signers {subset:?}: input {k} not finalized"))?;
            ensure!(witness.len() == 1, "key-path witness has one element");
            ensure!(
                witness.nth(0).map(<[u8]>::len) == Some(64),
                "64-byte SIGHASH_DEFAULT signature"
            );
            ensure!(tx.input[k].witness == *witness);
        }
        // The finalized PSBT extracts to the same transaction.
        ensure!(signed.clone().extract_tx()? == tx);
        txs.push(tx);
    }
    // Different signer sets use different nonces: distinct signatures, same transaction.
    let sigs: BTreeSet<Vec<u8>> = txs
        .iter()
        .map(|tx| tx.input[0].witness.nth(0).unwrap_or_default().to_vec())
        .collect();
    ensure!(sigs.len() == txs.len());

    // The consensus check is not vacuous: a flipped signature bit or a wrong spent amount fail.
    let mut bad = txs[0].clone();
    let mut sig = bad.input[1].witness.nth(0).context("witness")?.to_vec();
    sig[10] ^= 1;
    bad.input[1].witness = Witness::from_slice(&[sig]);
    ensure!(
        consensus_verify(&bad, &f.funding).is_err(),
        "tampered signature accepted"
    );
    let mut spent: Vec<TxOut> = txs[0]
        .input
        .iter()
        .map(|i| f.funding[&i.previous_output].clone())
        .collect();
    spent[2].value += Amount::from_sat(1);
    ensure!(
        consensus_verify_against(&txs[0], &spent).is_err(),
        "wrong prevout amount accepted"
    );

    // Reloading the wallet from SQLite gives the same wallet.
    let meta = f.wallet.meta().clone();
    let descriptors_before = (
        f.wallet
            .bdk()
            .public_descriptor(KeychainKind::External)
            .to_string(),
        f.wallet
            .bdk()
            .public_descriptor(KeychainKind::Internal)
            .to_string(),
    );
    let balance = f.wallet.bdk().balance();
    let indexes = (
        f.wallet.bdk().derivation_index(KeychainKind::External),
        f.wallet.bdk().derivation_index(KeychainKind::Internal),
    );
    let next_before = f.wallet.reveal_next_address()?;
    drop(f.wallet);
    let reloaded = CkmWallet::load(&f.db_path)?;
    ensure!(serde_json::to_string(reloaded.meta())? == serde_json::to_string(&meta)?);
    ensure!(reloaded.meta().group == meta.group && reloaded.meta().roster == meta.roster);
    ensure!(reloaded.meta().descriptors()? == meta.descriptors()?);
    let descriptors_after = (
        reloaded
            .bdk()
            .public_descriptor(KeychainKind::External)
            .to_string(),
        reloaded
            .bdk()
            .public_descriptor(KeychainKind::Internal)
            .to_string(),
    );
    ensure!(descriptors_after == descriptors_before);
    ensure!(reloaded.bdk().balance() == balance, "balance after reload");
    ensure!(reloaded.bdk().balance().total() == Amount::from_sat(600_000));
    ensure!(
        reloaded.bdk().derivation_index(KeychainKind::External) == Some(next_before.index)
            && reloaded.bdk().derivation_index(KeychainKind::Internal) == indexes.1,
        "revealed indexes persisted (before: {indexes:?})"
    );
    ensure!(reloaded.bdk().network() == NETWORK);
    match CkmWallet::create(&f.db_path, meta) {
        Err(ckm::wallet::WalletError::Exists(_)) => {}
        other => bail!("creating over an existing wallet: {other:?}"),
    }
    Ok(())
}

#[test]
fn sighash_all_is_signed_with_a_65_byte_signature() -> Result<()> {
    let mut rng = test_rng("sighash_all_is_signed_with_a_65_byte_signature");
    let f = fixture(&mut rng)?;
    let mut psbt = f.psbt.clone();
    for input in &mut psbt.inputs {
        input.sighash_type = Some(PsbtSighashType::from(TapSighashType::All));
    }
    let tx = sign_in_memory(&mut psbt, &[&f.shares[2], &f.shares[0]], &mut rng)?;
    consensus_verify(&tx, &f.funding)?;
    for input in &tx.input {
        let sig = input.witness.nth(0).context("witness")?;
        ensure!(sig.len() == 65 && sig[64] == TapSighashType::All as u8);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 4. Fewer than t signers
// ---------------------------------------------------------------------------------------

#[test]
fn fewer_than_threshold_signers_leave_the_psbt_untouched() -> Result<()> {
    let mut rng = test_rng("fewer_than_threshold_signers");
    let f = fixture(&mut rng)?;
    let before = serialize_psbt(&f.psbt);
    for signers in [vec![&f.shares[1]], vec![&f.shares[0], &f.shares[0]], vec![]] {
        let mut psbt = f.psbt.clone();
        match sign_in_memory(&mut psbt, &signers, &mut rng) {
            Err(InMemoryError::Coordinate(CoordinateError::NotEnoughSigners { have, need })) => {
                ensure!(have < 2 && need == 2, "have {have}, need {need}");
            }
            other => bail!(
                "{} signer(s): expected NotEnoughSigners, got {other:?}",
                signers.len()
            ),
        }
        ensure!(serialize_psbt(&psbt) == before, "the PSBT changed");
        ensure!(psbt
            .inputs
            .iter()
            .all(|i| i.tap_key_sig.is_none() && i.final_script_witness.is_none()));
    }

    // Same through the session API directly.
    let session = SigningSession::new(&f.psbt, f.group())?;
    let (_nonces, commitments, _) = commit(&f.psbt, &f.shares[0], &mut rng)?;
    let one = BTreeMap::from([(f.shares[0].identifier(), commitments)]);
    match session.signing_packages(&one) {
        Err(CoordinateError::NotEnoughSigners { have: 1, need: 2 }) => {}
        other => bail!("expected NotEnoughSigners, got {other:?}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 5. A corrupted signature share
// ---------------------------------------------------------------------------------------

struct Round2 {
    session: SigningSession,
    packages: Vec<SigningPackage>,
    shares: BTreeMap<Identifier, Vec<SignatureShare>>,
}

/// Runs both rounds for `signers` (indexes into the fixture's shares), honestly.
fn run_rounds(f: &Fixture, signers: &[usize], rng: &mut StdRng) -> Result<Round2> {
    let session = SigningSession::new(&f.psbt, f.group())?;
    let mut nonces = Vec::new();
    let mut commitments = BTreeMap::new();
    for &k in signers {
        let share = &f.shares[k];
        let (n, c, checked) = commit(&f.psbt, share, rng)?;
        ensure!(checked.txid() == f.psbt.unsigned_tx.compute_txid());
        ensure!(c.len() == f.psbt.inputs.len());
        commitments.insert(share.identifier(), c);
        nonces.push((share, n));
    }
    let packages = session.signing_packages(&commitments)?;
    let mut shares = BTreeMap::new();
    for (share, n) in nonces {
        shares.insert(share.identifier(), n.sign(&f.psbt, share, &packages)?);
    }
    Ok(Round2 {
        session,
        packages,
        shares,
    })
}

#[test]
fn corrupted_signature_share_names_the_culprit() -> Result<()> {
    let mut rng = test_rng("corrupted_signature_share_names_the_culprit");
    let f = fixture(&mut rng)?;
    let before = serialize_psbt(&f.psbt);
    // Signers 1 and 3 (roster indexes), so the culprit's index differs from its position.
    let r = run_rounds(&f, &[0, 2], &mut rng)?;
    let culprit = f.shares[2].identifier();

    // Honest shares aggregate into valid signatures, with or without the session's
    // precomputation, and each signer's shares check on their own.
    let signatures = r.session.aggregate(&r.packages, &r.shares)?;
    ensure!(signatures.len() == 3);
    let precomputed = SessionPackages::new(r.packages.clone());
    r.session.precompute(&precomputed);
    ensure!(precomputed.is_precomputed());
    let again = r.session.aggregate_session(&precomputed, &r.shares)?;
    ensure!(*again == *signatures);
    for (signer, list) in &r.shares {
        ensure!(
            r.session
                .verify_shares(&precomputed, *signer, list, &|| false)?
                == Some(true)
        );
    }

    // (a) Signer 3 sends its share for input 0 again as its share for input 1.
    let mut bad = r.shares.clone();
    let list = bad.get_mut(&culprit).context("culprit's shares")?;
    list[1] = SignatureShare::deserialize(&list[0].serialize())?;
    expect_culprits(&r, &bad, &[3])?;

    // (b) Signer 3's share for input 1 with its scalar tweaked by one.
    let mut bad = r.shares.clone();
    let list = bad.get_mut(&culprit).context("culprit's shares")?;
    let scalar = SecretKey::from_slice(&list[1].serialize())?.add_tweak(&Scalar::ONE)?;
    list[1] = SignatureShare::deserialize(&scalar.secret_bytes())?;
    expect_culprits(&r, &bad, &[3])?;

    // (c) Signer 1 cheats on input 0 and signer 3 on input 2: culprits are collected over
    // all inputs. (Merely swapping two signers' shares would not do: frost checks the sum
    // first, and the sum is unchanged.)
    let mut bad = r.shares.clone();
    let signer1 = f.shares[0].identifier();
    let list = bad.get_mut(&signer1).context("signer 1")?;
    let scalar = SecretKey::from_slice(&list[0].serialize())?.add_tweak(&Scalar::ONE)?;
    list[0] = SignatureShare::deserialize(&scalar.secret_bytes())?;
    let list = bad.get_mut(&culprit).context("signer 3")?;
    list[2] = list[1];
    expect_culprits(&r, &bad, &[1, 3])?;

    // (d) Wrong number of shares, and a signer who did not commit.
    let mut bad = r.shares.clone();
    bad.get_mut(&culprit).context("culprit")?.pop();
    match r.session.aggregate(&r.packages, &bad) {
        Err(CoordinateError::WrongCount {
            signer: 3,
            expected: 3,
            got: 2,
            ..
        }) => {}
        other => bail!("expected WrongCount, got {other:?}"),
    }
    let mut bad = r.shares.clone();
    let s = bad[&culprit].clone();
    bad.insert(f.shares[1].identifier(), s);
    match r.session.aggregate(&r.packages, &bad) {
        Err(CoordinateError::SignerSetChanged) => {}
        other => bail!("expected SignerSetChanged, got {other:?}"),
    }

    ensure!(serialize_psbt(&f.psbt) == before, "the PSBT changed");
    Ok(())
}

/// The coordinator writes the key-path witnesses itself (each signature was verified once,
/// in `aggregate`): the result is what miniscript's finalizer makes of the same signatures
/// (except that, as BIP-0174 asks, unknown fields are kept), and it refuses signatures of
/// another transaction.
#[test]
fn finalize_writes_what_miniscript_writes() -> Result<()> {
    let mut rng = test_rng("finalize_writes_what_miniscript_writes");
    let f = fixture(&mut rng)?;
    let r = run_rounds(&f, &[1, 2], &mut rng)?;
    let signatures = r.session.aggregate(&r.packages, &r.shares)?;
    ensure!(signatures.txid() == f.psbt.unsigned_tx.compute_txid());
    // Unknown and proprietary input fields survive finalization (BIP-0174 keeps the UTXOs
    // and the unknown fields; miniscript 12 drops them, the one difference).
    let mut base = f.psbt.clone();
    base.inputs[0].unknown.insert(
        bitcoin::psbt::raw::Key {
            type_value: 0xf0,
            key: vec![1, 2, 3],
        },
        vec![4, 5],
    );
    base.inputs[0].proprietary.insert(
        bitcoin::psbt::raw::ProprietaryKey {
            prefix: b"ckm-test".to_vec(),
            subtype: 7,
            key: vec![8],
        },
        vec![9],
    );
    let mut ours = base.clone();
    let tx = r.session.finalize(&mut ours, &signatures)?;
    ensure!(
        ours.inputs[0].unknown == base.inputs[0].unknown
            && ours.inputs[0].proprietary == base.inputs[0].proprietary,
        "finalize dropped the unknown or proprietary fields"
    );
    let mut theirs = base.clone();
    for (input, signature) in theirs.inputs.iter_mut().zip(signatures.iter()) {
        input.tap_key_sig = Some(*signature);
    }
    miniscript::psbt::PsbtExt::finalize_mut(&mut theirs, secp())
        .map_err(|e| anyhow::anyhow!("miniscript: {e:?}"))?;
    theirs.inputs[0].unknown = base.inputs[0].unknown.clone();
    theirs.inputs[0].proprietary = base.inputs[0].proprietary.clone();
    ensure!(
        ours == theirs,
        "ckm's finalized PSBT differs from miniscript's"
    );
    ensure!(theirs.extract_tx()? == tx);
    consensus_verify(&tx, &f.funding)?;

    // Another transaction (one more sat of fee) cannot take these signatures.
    let mut other = f.psbt.clone();
    let last = other.unsigned_tx.output.len() - 1;
    other.unsigned_tx.output[last].value -= Amount::from_sat(1);
    let before = serialize_psbt(&other);
    match r.session.finalize(&mut other, &signatures) {
        Err(CoordinateError::Finalize(_)) => {}
        other => bail!("expected Finalize, got {other:?}"),
    }
    ensure!(serialize_psbt(&other) == before, "the other PSBT changed");
    Ok(())
}

/// ROAST's check of one signer's shares from the session's precomputation (`z·G` against a
/// precomputed point) agrees with frost's own check, share by share, over many sessions (so
/// over group commitments of both parities): every honest share passes, every share off by
/// one fails, on either path.
#[test]
fn precomputed_share_checks_agree_with_frost() -> Result<()> {
    let mut rng = test_rng("precomputed_share_checks_agree_with_frost");
    let f = fixture(&mut rng)?;
    for round in 0..8 {
        let r = run_rounds(&f, &[round % 3, (round + 1) % 3], &mut rng)?;
        let plain = SessionPackages::new(r.packages.clone());
        let precomputed = SessionPackages::new(r.packages.clone());
        r.session.precompute(&precomputed);
        ensure!(precomputed.is_precomputed());
        for (signer, list) in &r.shares {
            for packages in [&plain, &precomputed] {
                let verdict = r
                    .session
                    .verify_shares(packages, *signer, list, &|| false)?;
                ensure!(
                    verdict == Some(true),
                    "round {round}: {signer:?} {verdict:?}"
                );
                for k in 0..list.len() {
                    let mut bad = list.clone();
                    let scalar =
                        SecretKey::from_slice(&bad[k].serialize())?.add_tweak(&Scalar::ONE)?;
                    bad[k] = SignatureShare::deserialize(&scalar.secret_bytes())?;
                    let verdict = r
                        .session
                        .verify_shares(packages, *signer, &bad, &|| false)?;
                    ensure!(
                        verdict == Some(false),
                        "round {round}, input {k}: {signer:?} {verdict:?}"
                    );
                }
            }
        }
        let signatures = r.session.aggregate(&r.packages, &r.shares)?;
        ensure!(*r.session.aggregate_session(&precomputed, &r.shares)? == *signatures);
    }
    Ok(())
}

fn expect_culprits(
    r: &Round2,
    shares: &BTreeMap<Identifier, Vec<SignatureShare>>,
    expected: &[u16],
) -> Result<()> {
    // Each signer's shares checked on their own (ROAST's check, with frost's own path and
    // from the session's precomputation) find the same culprits, as does the precomputed
    // aggregation.
    let plain = SessionPackages::new(r.packages.clone());
    let precomputed = SessionPackages::new(r.packages.clone());
    r.session.precompute(&precomputed);
    ensure!(precomputed.is_precomputed() && !plain.is_precomputed());
    for packages in [&plain, &precomputed] {
        for (signer, list) in shares {
            let verdict = r
                .session
                .verify_shares(packages, *signer, list, &|| false)?;
            let culprit = expected.iter().any(|&i| id(i) == *signer);
            ensure!(
                verdict == Some(!culprit),
                "signer {signer:?}: check said {verdict:?} ({packages:?})"
            );
        }
        match r.session.aggregate_session(packages, shares) {
            Err(CoordinateError::InvalidShares { culprits, .. }) => {
                ensure!(culprits == expected)
            }
            other => bail!("{packages:?}: expected InvalidShares {expected:?}, got {other:?}"),
        }
    }
    match r.session.aggregate(&r.packages, shares) {
        Err(CoordinateError::InvalidShares {
            culprits,
            identifiers,
        }) => {
            ensure!(
                culprits == expected,
                "culprits {culprits:?}, expected {expected:?}"
            );
            let ids: Vec<Identifier> = expected.iter().map(|&i| id(i)).collect();
            ensure!(identifiers == ids);
            Ok(())
        }
        other => bail!("expected InvalidShares {expected:?}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// 6. Signer refusals
// ---------------------------------------------------------------------------------------

fn expect_check_error(
    psbt: &Psbt,
    share: &KeyShare,
    rng: &mut StdRng,
    what: &str,
    pred: impl Fn(&CheckError) -> bool,
) -> Result<()> {
    match commit(psbt, share, rng) {
        Err(SignError::Check(e)) if pred(&e) => {}
        Err(e) => bail!("{what}: unexpected refusal: {e:?}"),
        Ok(_) => bail!("{what}: the signer committed"),
    }
    // The coordinator refuses the same PSBT.
    match SigningSession::new(psbt, share.group()) {
        Err(CoordinateError::Check(e)) if pred(&e) => Ok(()),
        other => bail!("{what}: coordinator: unexpected {other:?}"),
    }
}

#[test]
fn signers_refuse_inputs_that_are_not_ours() -> Result<()> {
    let mut rng = test_rng("signers_refuse_inputs_that_are_not_ours");
    let f = fixture(&mut rng)?;
    let share = &f.shares[1];
    let k = 1;
    let is_not_ours =
        |e: &CheckError| matches!(e, CheckError::NotOurs { input, .. } if *input == k);

    // A foreign input: its internal key, origin and witness_utxo are someone else's.
    let mut psbt = f.psbt.clone();
    let foreign = foreign_xonly(&mut rng);
    let input = &mut psbt.inputs[k];
    let value = input.witness_utxo.as_ref().context("witness_utxo")?.value;
    input.tap_internal_key = Some(foreign);
    input.tap_key_origins.clear();
    input.tap_key_origins.insert(
        foreign,
        (vec![], (Fingerprint::from([1, 2, 3, 4]), path("m/0/0"))),
    );
    input.witness_utxo = Some(TxOut {
        value,
        script_pubkey: ScriptBuf::new_p2tr(secp(), foreign, None),
    });
    expect_check_error(&psbt, share, &mut rng, "foreign input", is_not_ours)?;

    // Foreign key under our fingerprint and path.
    let mut psbt = f.psbt.clone();
    let input = &mut psbt.inputs[k];
    let origin = input
        .tap_key_origins
        .values()
        .next()
        .context("origin")?
        .clone();
    input.tap_internal_key = Some(foreign);
    input.tap_key_origins.clear();
    input.tap_key_origins.insert(foreign, origin);
    input.witness_utxo = Some(TxOut {
        value,
        script_pubkey: ScriptBuf::new_p2tr(secp(), foreign, None),
    });
    expect_check_error(
        &psbt,
        share,
        &mut rng,
        "foreign key, our origin",
        is_not_ours,
    )?;

    // Our key and origin, but the witness_utxo pays someone else.
    let mut psbt = f.psbt.clone();
    psbt.inputs[k].witness_utxo = Some(TxOut {
        value,
        script_pubkey: ScriptBuf::new_p2tr(secp(), foreign, None),
    });
    expect_check_error(&psbt, share, &mut rng, "foreign witness_utxo", is_not_ours)?;

    // Our key, but its origin points at another path.
    let mut psbt = f.psbt.clone();
    let input = &mut psbt.inputs[k];
    let internal = input.tap_internal_key.context("internal key")?;
    let entry = input.tap_key_origins.get_mut(&internal).context("origin")?;
    entry.1 .1 = path("m/0/99");
    expect_check_error(&psbt, share, &mut rng, "wrong origin path", is_not_ours)?;

    // Our key and origin, but a script tree (merkle root) the wallet does not have.
    let mut psbt = f.psbt.clone();
    psbt.inputs[k].tap_merkle_root = Some(bitcoin::taproot::TapNodeHash::from_byte_array([7; 32]));
    expect_check_error(&psbt, share, &mut rng, "merkle root", is_not_ours)?;

    // The group's own key, but at a path the wallet does not use: refused by the typed path
    // (only m/0/i and m/1/i are the wallet's).
    for p in ["m/2/0", "m/0/1/2", "m/5"] {
        let mut psbt = f.psbt.clone();
        let key = f.group().derivation(&path(p))?.internal_key();
        let input = &mut psbt.inputs[k];
        input.tap_internal_key = Some(key);
        input.tap_key_origins.clear();
        input
            .tap_key_origins
            .insert(key, (vec![], (f.group().fingerprint(), path(p))));
        input.witness_utxo = Some(TxOut {
            value,
            script_pubkey: ScriptBuf::new_p2tr(secp(), key, None),
        });
        expect_check_error(
            &psbt,
            share,
            &mut rng,
            p,
            |e| matches!(e, CheckError::NotOurs { input, reason } if *input == k && reason.contains("m/0/i")),
        )?;
    }

    // No internal key.
    let mut psbt = f.psbt.clone();
    psbt.inputs[k].tap_internal_key = None;
    expect_check_error(&psbt, share, &mut rng, "no internal key", is_not_ours)?;

    // A share of another group refuses the whole PSBT.
    let other = run_in_memory(DkgParams::new(2, 3)?, &mut rng)?;
    expect_check_error(&f.psbt, &other[0], &mut rng, "other group", |e| {
        matches!(e, CheckError::NotOurs { input: 0, .. })
    })?;
    let mut psbt = f.psbt.clone();
    match sign_in_memory(&mut psbt, &[&f.shares[0], &other[1]], &mut rng) {
        Err(InMemoryError::Signer {
            signer: 2,
            source: SignError::Check(CheckError::NotOurs { .. }),
        }) => {}
        other => bail!("mixed groups: expected signer 2 to refuse, got {other:?}"),
    }
    ensure!(psbt.serialize() == f.psbt.serialize());
    Ok(())
}

#[test]
fn signers_refuse_other_sighash_types_and_missing_utxos() -> Result<()> {
    let mut rng = test_rng("signers_refuse_other_sighash_types_and_missing_utxos");
    let f = fixture(&mut rng)?;
    let share = &f.shares[0];
    for (k, ty) in [
        (0usize, TapSighashType::None),
        (2, TapSighashType::AllPlusAnyoneCanPay),
        (1, TapSighashType::Single),
        (1, TapSighashType::NonePlusAnyoneCanPay),
    ] {
        let mut psbt = f.psbt.clone();
        psbt.inputs[k].sighash_type = Some(PsbtSighashType::from(ty));
        expect_check_error(
            &psbt,
            share,
            &mut rng,
            &format!("{ty}"),
            |e| matches!(e, CheckError::SighashType { input, .. } if *input == k),
        )?;
    }
    // An ECDSA-only value that is not a valid Taproot type.
    let mut psbt = f.psbt.clone();
    psbt.inputs[1].sighash_type = Some(PsbtSighashType::from_u32(0x04));
    expect_check_error(&psbt, share, &mut rng, "sighash 0x04", |e| {
        matches!(e, CheckError::SighashType { input: 1, .. })
    })?;

    let mut psbt = f.psbt.clone();
    psbt.inputs[2].witness_utxo = None;
    expect_check_error(&psbt, share, &mut rng, "missing witness_utxo", |e| {
        matches!(e, CheckError::MissingWitnessUtxo { input: 2 })
    })?;

    // A non_witness_utxo that contradicts the outpoint.
    let mut psbt = f.psbt.clone();
    psbt.inputs[0].non_witness_utxo = Some(made_up_funding(
        &mut rng,
        psbt.inputs[0]
            .witness_utxo
            .as_ref()
            .context("utxo")?
            .script_pubkey
            .clone(),
        1,
    ));
    expect_check_error(&psbt, share, &mut rng, "non_witness_utxo", |e| {
        matches!(e, CheckError::UtxoMismatch { input: 0 })
    })?;

    // Outputs exceeding inputs (a lying witness_utxo amount that would hide the fee).
    let mut psbt = f.psbt.clone();
    psbt.unsigned_tx.output[0].value += Amount::from_sat(1_000_000);
    expect_check_error(&psbt, share, &mut rng, "amounts", |e| {
        matches!(e, CheckError::Amounts { .. })
    })?;
    Ok(())
}

#[test]
fn signers_check_round_two() -> Result<()> {
    let mut rng = test_rng("signers_check_round_two");
    let f = fixture(&mut rng)?;
    let psbt = &f.psbt;
    let session = SigningSession::new(psbt, f.group())?;
    let signers = [&f.shares[0], &f.shares[1]];

    // Fresh commitments for every scenario: a SignerNonces value is consumed by `sign`
    // whatever the outcome (it takes `self`), so after a refusal the signer's nonces are gone
    // and cannot be reused — a compile-time guarantee, nothing to test at run time.
    let round1 = |rng: &mut StdRng| -> Result<_> {
        let mut nonces = Vec::new();
        let mut commitments = BTreeMap::new();
        for share in signers {
            let (n, c, _) = commit(psbt, share, rng)?;
            commitments.insert(share.identifier(), c);
            nonces.push(n);
        }
        let packages = session.signing_packages(&commitments)?;
        Ok((nonces, commitments, packages))
    };

    // (a) A message that is not the sighash.
    let (mut nonces, _, mut packages) = round1(&mut rng)?;
    packages[1] = SigningPackage::new(packages[1].signing_commitments().clone(), &[0x42; 32]);
    match nonces.remove(0).sign(psbt, signers[0], &packages) {
        Err(SignError::SighashMismatch { input: 1 }) => {}
        other => bail!("wrong message: expected SighashMismatch, got {other:?}"),
    }

    // (b) Input 0's sighash presented for input 2 too.
    let (mut nonces, _, mut packages) = round1(&mut rng)?;
    let msg0 = packages[0].message().clone();
    packages[2] = SigningPackage::new(packages[2].signing_commitments().clone(), &msg0);
    match nonces.remove(1).sign(psbt, signers[1], &packages) {
        Err(SignError::SighashMismatch { input: 2 }) => {}
        other => bail!("reused sighash: expected SighashMismatch, got {other:?}"),
    }

    // (c) The PSBT changed between the rounds (payment amount lowered, fee raised).
    let (mut nonces, _, packages) = round1(&mut rng)?;
    let mut changed = psbt.clone();
    let pay = payment_index(&f)?;
    changed.unsigned_tx.output[pay].value -= Amount::from_sat(1_000);
    match nonces.remove(0).sign(&changed, signers[0], &packages) {
        Err(SignError::TransactionChanged { expected, got }) => {
            ensure!(expected == psbt.unsigned_tx.compute_txid());
            ensure!(got == changed.unsigned_tx.compute_txid());
        }
        other => bail!("changed PSBT: expected TransactionChanged, got {other:?}"),
    }

    // (d) Our commitment swapped for another input's.
    let (mut nonces, commitments, mut packages) = round1(&mut rng)?;
    let me = signers[0].identifier();
    let mut per_input = packages[0].signing_commitments().clone();
    per_input.insert(me, commitments[&me][1]);
    packages[0] = SigningPackage::new(per_input, packages[0].message());
    match nonces.remove(0).sign(psbt, signers[0], &packages) {
        Err(SignError::CommitmentMismatch { input: 0 }) => {}
        other => bail!("swapped commitment: expected CommitmentMismatch, got {other:?}"),
    }

    // (e) A package with only our own commitment.
    let (mut nonces, _, mut packages) = round1(&mut rng)?;
    let mut alone = packages[1].signing_commitments().clone();
    alone.retain(|i, _| *i == me);
    packages[1] = SigningPackage::new(alone, packages[1].message());
    match nonces.remove(0).sign(psbt, signers[0], &packages) {
        Err(SignError::TooFewSigners {
            input: 1,
            have: 1,
            need: 2,
        }) => {}
        other => bail!("lone commitment: expected TooFewSigners, got {other:?}"),
    }

    // (f) One package missing.
    let (mut nonces, _, mut packages) = round1(&mut rng)?;
    packages.pop();
    match nonces.remove(0).sign(psbt, signers[0], &packages) {
        Err(SignError::PackageCount {
            expected: 3,
            got: 2,
        }) => {}
        other => bail!("missing package: expected PackageCount, got {other:?}"),
    }

    // (g) Honest round 2 still works with fresh nonces.
    let (nonces, _, packages) = round1(&mut rng)?;
    let mut shares = BTreeMap::new();
    for (n, share) in nonces.into_iter().zip(signers) {
        ensure!(n.txid() == psbt.unsigned_tx.compute_txid());
        shares.insert(share.identifier(), n.sign(psbt, share, &packages)?);
    }
    let signatures = session.aggregate(&packages, &shares)?;
    let mut signed = psbt.clone();
    let tx = session.finalize(&mut signed, &signatures)?;
    consensus_verify(&tx, &f.funding)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 7. Change outputs
// ---------------------------------------------------------------------------------------

#[test]
fn change_outputs_are_verified_and_amounts_add_up() -> Result<()> {
    let mut rng = test_rng("change_outputs_are_verified_and_amounts_add_up");
    let f = fixture(&mut rng)?;
    let group = f.group();
    let checked = check_psbt(&f.psbt, group)?;
    let change = change_index(&f.psbt, group.fingerprint()).context("change output")?;
    let pay = payment_index(&f)?;
    ensure!(change != pay);

    // Classification.
    let change_out = &checked.outputs()[change];
    let change_path = change_out
        .change_path
        .context("change is classified as change")?;
    ensure!(
        change_path.keychain == ckm::keys::Keychain::Internal,
        "change on the internal keychain, got {change_path}"
    );
    let index = change_path.index;
    ensure!(
        change_out.script_pubkey
            == f.wallet
                .bdk()
                .peek_address(KeychainKind::Internal, index)
                .address
                .script_pubkey()
    );
    ensure!(
        checked.outputs()[pay].change_path.is_none(),
        "payment is not change"
    );
    ensure!(checked.payments().count() == 1);

    // Amounts.
    let input_total: Amount = f.funding.values().map(|o| o.value).sum();
    ensure!(checked.input_total() == input_total && input_total == Amount::from_sat(600_000));
    let output_total: Amount = f.psbt.unsigned_tx.output.iter().map(|o| o.value).sum();
    ensure!(
        checked.payment_total() == f.amount,
        "payment total {}",
        checked.payment_total()
    );
    ensure!(checked.fee() == input_total - output_total);
    ensure!(checked.outflow() == f.amount + checked.fee());
    ensure!(
        checked.fee() == f.psbt.fee()?,
        "fee agrees with rust-bitcoin's"
    );
    ensure!(checked.outputs()[change].amount == input_total - f.amount - checked.fee());
    // bdk targeted 2 sat/vB; our estimate of the signed size must give about that.
    let rate = checked.fee().to_sat() as f64 / checked.estimated_vsize() as f64;
    ensure!((1.9..=2.2).contains(&rate), "fee rate {rate} sat/vB");
    // The estimate matches the real signed transaction.
    let mut signed = f.psbt.clone();
    let tx = sign_in_memory(&mut signed, &[&f.shares[0], &f.shares[1]], &mut rng)?;
    ensure!(
        tx.vsize() as u64 == checked.estimated_vsize(),
        "vsize {} vs {}",
        tx.vsize(),
        checked.estimated_vsize()
    );

    // Each input's derivation and output key.
    for input in checked.inputs() {
        let psbt_input = &f.psbt.inputs[input.index];
        ensure!(Some(input.derivation.path().clone()) == origin_path(&f.psbt, input.index));
        ensure!(Some(input.derivation.internal_key()) == psbt_input.tap_internal_key);
        ensure!(
            psbt_input
                .witness_utxo
                .as_ref()
                .map(|u| u.script_pubkey.clone())
                == Some(ScriptBuf::new_p2tr_tweaked(
                    input.derivation.internal_key().tap_tweak(secp(), None).0
                ))
        );
        ensure!(input.output_key == bip86_output_key(input.derivation.internal_key()));
        ensure!(input.sighash_type == TapSighashType::Default);
    }

    let share = &f.shares[2];
    let foreign = foreign_address(&mut rng).script_pubkey();
    let is_change_not_ours = |k: usize| move |e: &CheckError| matches!(e, CheckError::ChangeNotOurs { output, .. } if *output == k);

    // (a) The change output's script replaced by a foreign one, metadata kept.
    let mut psbt = f.psbt.clone();
    psbt.unsigned_tx.output[change].script_pubkey = foreign.clone();
    expect_check_error(
        &psbt,
        share,
        &mut rng,
        "change script",
        is_change_not_ours(change),
    )?;

    // (b) The payment output dressed up as change (our fingerprint, key and path).
    let mut psbt = f.psbt.clone();
    psbt.outputs[pay] = psbt.outputs[change].clone();
    expect_check_error(
        &psbt,
        share,
        &mut rng,
        "payment as change",
        is_change_not_ours(pay),
    )?;

    // (c) Our fingerprint with a path that does not derive to the key.
    let mut psbt = f.psbt.clone();
    let out = &mut psbt.outputs[change];
    let key = out.tap_internal_key.context("change internal key")?;
    out.tap_key_origins.get_mut(&key).context("origin")?.1 .1 = path("m/1/999");
    expect_check_error(
        &psbt,
        share,
        &mut rng,
        "change path",
        is_change_not_ours(change),
    )?;

    // (d) Our fingerprint on a foreign internal key.
    let mut psbt = f.psbt.clone();
    let out = &mut psbt.outputs[pay];
    let fk = foreign_xonly(&mut rng);
    out.tap_internal_key = Some(fk);
    out.tap_key_origins
        .insert(fk, (vec![], (group.fingerprint(), path("m/1/0"))));
    expect_check_error(
        &psbt,
        share,
        &mut rng,
        "foreign key as change",
        is_change_not_ours(pay),
    )?;

    // (e) Change with a script tree the wallet does not have.
    let mut psbt = f.psbt.clone();
    let leaf = ScriptBuf::from_bytes(vec![0x51]);
    let tree = bitcoin::taproot::TaprootBuilder::new()
        .add_leaf(0, leaf)?
        .try_into_taptree()
        .map_err(|_| anyhow::anyhow!("tap tree"))?;
    psbt.outputs[change].tap_tree = Some(tree);
    expect_check_error(
        &psbt,
        share,
        &mut rng,
        "change tap tree",
        is_change_not_ours(change),
    )?;

    // (f) Stripping the change metadata is safe: it is then counted as a payment.
    let mut psbt = f.psbt.clone();
    psbt.outputs[change] = Default::default();
    let stripped = check_psbt(&psbt, group)?;
    ensure!(stripped.outputs()[change].change_path.is_none());
    ensure!(stripped.payment_total() == f.amount + checked.outputs()[change].amount);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 7. The coordinator's co-signing state machine, driven in memory
// ---------------------------------------------------------------------------------------

/// How a signer of the in-memory run behaves.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Honest,
    /// Refuses round 1.
    Down,
    /// Answers round 1, then sends a corrupted share.
    Cheats,
}

/// Drives a `SigningCoordinator` over the fixture's shares with the given behaviours (by
/// roster position); answers come in roster order. Returns the outcome.
fn drive_machine(
    f: &Fixture,
    behaviour: [Behaviour; 3],
    rng: &mut StdRng,
) -> Result<(Psbt, ckm::protocol::cosign::SignOutcome)> {
    use ckm::protocol::cosign::{Round1Answer, SigningCoordinator, Step};
    use ckm::protocol::spend_limits::Receipt;
    let identity = IdentityKey::generate(rng);
    let group_key = ckm::keys::GroupKey::of(f.group());
    let mut psbt = f.psbt.clone();
    let mut machine = SigningCoordinator::new(&psbt, f.group(), vec![1, 2, 3])?;
    let mut step = machine.start(rng)?;
    let mut held = BTreeMap::new();
    for _ in 0..20 {
        step = match step {
            Step::Round1 { ask, session } => {
                held.clear();
                let mut next = Step::Wait;
                for index in ask {
                    let pos = usize::from(index - 1);
                    let answer = if behaviour[pos] == Behaviour::Down {
                        Err(format!("signer {index} is down"))
                    } else {
                        let (nonces, commitments, checked) = commit(&psbt, &f.shares[pos], rng)?;
                        held.insert(index, nonces);
                        Ok(Round1Answer {
                            commitments,
                            receipt: Receipt::sign(
                                &identity,
                                group_key,
                                session,
                                index,
                                checked.txid(),
                                checked.outflow().to_sat(),
                            ),
                            statements_required: false,
                        })
                    };
                    next = machine.commitments(index, answer, rng)?;
                    if !matches!(next, Step::Wait) {
                        break;
                    }
                }
                next
            }
            Step::Round2 {
                chosen, packages, ..
            } => {
                let mut next = Step::Wait;
                for index in chosen {
                    let pos = usize::from(index - 1);
                    let nonces = held
                        .remove(&index)
                        .context("no nonces for a chosen signer")?;
                    let mut shares = nonces.sign(&psbt, &f.shares[pos], &packages)?;
                    if behaviour[pos] == Behaviour::Cheats {
                        let scalar = SecretKey::from_slice(&shares[0].serialize())?
                            .add_tweak(&Scalar::ONE)?;
                        shares[0] = SignatureShare::deserialize(&scalar.secret_bytes())?;
                    }
                    next = machine.shares(index, Ok(shares), &mut psbt, rng)?;
                }
                next
            }
            Step::Done(outcome) => return Ok((psbt, *outcome)),
            Step::Statements { .. } => bail!("no signer asked for statements"),
            Step::Wait => bail!("the machine waits with nothing outstanding"),
        };
    }
    bail!("no outcome after 20 steps")
}

#[test]
fn signing_machine_excludes_the_down_and_the_cheating_signer() -> Result<()> {
    let mut rng = test_rng("signing_machine_excludes_the_down_and_the_cheating_signer");
    let f = fixture(&mut rng)?;
    use Behaviour::*;

    // Everyone honest: the first two answer, no one is skipped.
    let (psbt, out) = drive_machine(&f, [Honest, Honest, Honest], &mut rng)?;
    ensure!(out.signers == vec![1, 2] && out.culprits.is_empty() && out.skipped.is_empty());
    consensus_verify_psbt(&psbt, &f)?;

    // Signer 1 down: 2 and 3 sign; 1 is reported as skipped.
    let (psbt, out) = drive_machine(&f, [Down, Honest, Honest], &mut rng)?;
    ensure!(out.signers == vec![2, 3], "{:?}", out.signers);
    ensure!(out
        .skipped
        .iter()
        .any(|(i, m)| *i == 1 && m.contains("down")));
    consensus_verify_psbt(&psbt, &f)?;

    // Signer 2 cheats: named as culprit, excluded; a fresh attempt with 1 and 3 succeeds.
    let (psbt, out) = drive_machine(&f, [Honest, Cheats, Honest], &mut rng)?;
    ensure!(out.culprits == vec![2], "{:?}", out.culprits);
    ensure!(out.signers == vec![1, 3], "{:?}", out.signers);
    consensus_verify_psbt(&psbt, &f)?;

    // One down and one cheating: not enough honest signers.
    match drive_machine(&f, [Down, Cheats, Honest], &mut rng) {
        Err(e) => {
            let text = format!("{e:#}");
            ensure!(
                text.contains("only") && text.contains("invalid signature share"),
                "{text}"
            );
        }
        Ok(_) => bail!("signed with one honest signer"),
    }
    Ok(())
}

fn consensus_verify_psbt(psbt: &Psbt, f: &Fixture) -> Result<()> {
    let tx = psbt.clone().extract_tx()?;
    consensus_verify(&tx, &f.funding)
}
