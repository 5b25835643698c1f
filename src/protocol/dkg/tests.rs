//! Unit tests of the certified key generation: the context and its hash, the participant's
//! refusals before round 1, and the record checked offline. Every RNG is seeded, so a run can
//! be replayed.

use bitcoin::Network;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::frost::pedersen::DkgParams;
use crate::identity::{IdentityKey, IdentityPublic};
use crate::keys::{Roster, RosterEntry};
use crate::protocol::SessionId;
use crate::recovery::RecoveryPolicy;

/// `n` identity keys, a coordinator key and a `t`-of-`n` context over them, all drawn from
/// `rng`.
fn setup(n: u16, t: u16, rng: &mut StdRng) -> (Vec<IdentityKey>, IdentityKey, DkgContext) {
    let keys: Vec<IdentityKey> = (0..n).map(|_| IdentityKey::generate(rng)).collect();
    let coordinator = IdentityKey::generate(rng);
    let roster = Roster::new(
        keys.iter()
            .enumerate()
            .map(|(i, k)| RosterEntry {
                index: u16::try_from(i + 1).unwrap(),
                url: format!("http://127.0.0.1:{}", 7000 + i),
                identity: k.public(),
                tls_sha256: None,
            })
            .collect(),
    )
    .unwrap();
    let context = DkgContext::new(
        SessionId::random(rng),
        "vault",
        Network::Regtest,
        DkgParams::new(t, n).unwrap(),
        coordinator.public(),
        roster,
    )
    .unwrap();
    (keys, coordinator, context)
}

#[test]
fn certified_dkg_agrees_and_verifies_offline() {
    let mut rng = StdRng::seed_from_u64(1);
    let (keys, _, context) = setup(3, 2, &mut rng);
    let refs: Vec<&IdentityKey> = keys.iter().collect();
    let (shares, group, keygen) = run_in_memory(context, &refs, &mut rng).unwrap();
    assert_eq!(shares.len(), 3);
    let fp = keygen.verify(&group).unwrap();
    for s in &shares {
        assert_eq!(s.share.group(), &group);
        assert_eq!(s.fingerprint, fp);
        assert_eq!(s.keygen, keygen);
    }
    // One flipped bit in any certificate fails the offline check, naming the member.
    let mut bad = keygen.clone();
    if let Some(c) = bad.certificates.get_mut(&2) {
        c.0[10] ^= 1;
    }
    assert!(matches!(
        bad.verify(&group),
        Err(VerifyError::BadCertificate { index: 2, .. })
    ));
    // A record with another wallet name no longer matches its certificates.
    let mut renamed = keygen.clone();
    renamed.context.wallet = "other".into();
    assert!(matches!(
        renamed.verify(&group),
        Err(VerifyError::BadCertificate { .. })
    ));
    // A missing certificate.
    let mut missing = keygen;
    missing.certificates.remove(&3);
    assert!(matches!(
        missing.verify(&group),
        Err(VerifyError::MissingCertificate { index: 3, .. })
    ));
}

#[test]
fn unapproved_peer_and_foreign_coordinator_are_refused_before_round_1() {
    let mut rng = StdRng::seed_from_u64(2);
    let (keys, coordinator, context) = setup(3, 2, &mut rng);
    let me = keys[0].public();
    let only_two = |id: &IdentityPublic| *id == keys[1].public();
    let err = Participant1::begin(
        Begin {
            context: context.clone(),
        },
        &me,
        &coordinator.public(),
        only_two,
        &mut rng,
    )
    .unwrap_err();
    assert!(
        matches!(err, ParticipantError::UnapprovedPeer { index: 3, identity } if identity == keys[2].public())
    );
    let other = IdentityKey::generate(&mut rng);
    let err = Participant1::begin(Begin { context }, &me, &other.public(), |_| true, &mut rng)
        .unwrap_err();
    assert!(matches!(err, ParticipantError::CoordinatorMismatch { .. }));
}

/// A context of fixed contents, to pin its hash.
fn fixed_context() -> DkgContext {
    let ids: Vec<IdentityKey> = (1u8..=3)
        .map(|b| IdentityKey::from_secret_bytes(&[b; 32]).unwrap())
        .collect();
    let coordinator = IdentityKey::from_secret_bytes(&[9; 32]).unwrap();
    let roster = Roster::new(
        ids.iter()
            .enumerate()
            .map(|(i, k)| RosterEntry {
                index: u16::try_from(i + 1).unwrap(),
                url: format!("http://127.0.0.1:{}", 7001 + i),
                identity: k.public(),
                tls_sha256: (i == 1).then_some(crate::keys::CertPin([0xab; 32])),
            })
            .collect(),
    )
    .unwrap();
    DkgContext::new(
        SessionId([7; 16]),
        "vault",
        Network::Regtest,
        DkgParams::new(2, 3).unwrap(),
        coordinator.public(),
        roster,
    )
    .unwrap()
}

fn recovery_policy(seed: u8, blocks: u16) -> RecoveryPolicy {
    let master =
        bitcoin::bip32::Xpriv::new_master(bitcoin::NetworkKind::Test, &[seed; 32]).unwrap();
    let secret: crate::recovery::script_path::RecoverySecret = master.to_string().parse().unwrap();
    let key = secret.public_at(&"86'/1'/0'".parse().unwrap()).unwrap();
    RecoveryPolicy::new(vec![key], 1, blocks).unwrap()
}

#[test]
fn contexts_without_recovery_hash_and_serialize_as_before() {
    // Computed by the build before the recovery path existed (commit 2fa2909).
    let context = fixed_context();
    assert_eq!(
        hex::encode(context.hash()),
        "90274e852fa98c536d8217ff66792a22f2f6957144f5d57499ed69f2ea4184bf"
    );
    let json = serde_json::to_string(&context).unwrap();
    assert!(!json.contains("recovery"), "{json}");
    let back: DkgContext = serde_json::from_str(&json).unwrap();
    assert_eq!(back, context);
}

#[test]
fn the_recovery_policy_is_hashed_versioned_and_checked() {
    let plain = fixed_context();
    let with = plain
        .clone()
        .with_recovery(recovery_policy(1, 144))
        .unwrap();
    assert_eq!(with.version, CONTEXT_VERSION_RECOVERY);
    assert_ne!(with.hash(), plain.hash());
    // Every part of the policy changes the hash.
    let other_key = plain
        .clone()
        .with_recovery(recovery_policy(2, 144))
        .unwrap();
    let other_time = plain
        .clone()
        .with_recovery(recovery_policy(1, 145))
        .unwrap();
    assert_ne!(other_key.hash(), with.hash());
    assert_ne!(other_time.hash(), with.hash());
    // JSON round trip keeps it.
    let json = serde_json::to_string(&with).unwrap();
    let back: DkgContext = serde_json::from_str(&json).unwrap();
    assert_eq!(back.hash(), with.hash());
    // A policy under version 1, or version 2 without a policy, is refused.
    let mut v1 = with.clone();
    v1.version = CONTEXT_VERSION;
    assert!(matches!(v1.check(), Err(ContextError::Version { got: 1 })));
    let mut v2 = plain.clone();
    v2.version = CONTEXT_VERSION_RECOVERY;
    assert!(matches!(v2.check(), Err(ContextError::Version { got: 2 })));
    // Test-network keys on a mainnet wallet.
    let mut mainnet = plain;
    mainnet.network = Network::Bitcoin;
    assert!(matches!(
        mainnet.with_recovery(recovery_policy(1, 144)),
        Err(CoordinatorError::Context(ContextError::Recovery(_)))
    ));
}

#[test]
fn the_certified_record_carries_the_recovery_policy() {
    let mut rng = StdRng::seed_from_u64(3);
    let (keys, _, context) = setup(3, 2, &mut rng);
    let policy = recovery_policy(3, 10);
    let context = context.with_recovery(policy.clone()).unwrap();
    let refs: Vec<&IdentityKey> = keys.iter().collect();
    let (shares, group, keygen) = run_in_memory(context, &refs, &mut rng).unwrap();
    assert_eq!(keygen.verified_recovery(&group).unwrap(), Some(&policy));
    for s in &shares {
        assert_eq!(s.keygen.context.recovery.as_ref(), Some(&policy));
    }
    // Swapping the policy in a stored record breaks every certificate.
    let mut swapped = keygen.clone();
    swapped.context.recovery = Some(recovery_policy(4, 10));
    assert!(matches!(
        swapped.verified_recovery(&group),
        Err(VerifyError::BadCertificate { .. })
    ));
    // Dropping it (and the version) too.
    let mut dropped = keygen;
    dropped.context.recovery = None;
    dropped.context.version = CONTEXT_VERSION;
    assert!(matches!(
        dropped.verified_recovery(&group),
        Err(VerifyError::BadCertificate { .. })
    ));
}
