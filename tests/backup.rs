//! Share backups and wallet recovery in memory (no processes): a signer home with two
//! certified wallets (one refreshed to epoch 1), its backup split 2-of-3 with SSKR into
//! `ur:envelope` texts, and
//!
//! * every pair of shares restores the same identity, shares, records, policies and peers;
//!   the restored home opens, checks out against its checkpoint and starts a fresh audit
//!   chain ending in a `restored` record;
//! * one share, a share of another backup, the same share twice, a corrupted character, a
//!   share whose SSKR value was altered (a well-formed UR), a wallet record instead of a
//!   share, a missing or wrong backup passphrase: each refused with its own error;
//! * the coordinator's public wallet record (envelope and UR) round-trips and a forged
//!   certificate in it is refused; `recover` rebuilds the wallet from the signers' records,
//!   and refuses a stale signer (disagreement), too few signers and a signer claiming another
//!   member's index.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};
use bc_envelope::prelude::*;
use bc_envelope::Envelope;
use bitcoin::Network;
use ckm::frost::pedersen::DkgParams;
use ckm::identity::IdentityKey;
use ckm::keys::{GroupKey, KeyShare, Roster, RosterEntry};
use ckm::message::WalletRecord;
use ckm::protocol::dkg::{self, DkgContext};
use ckm::protocol::lifecycle::{
    run_in_memory, History, Member, TransitionContext, TransitionKind, WalletState,
    TRANSITION_VERSION,
};
use ckm::protocol::SessionId;
use ckm::signer::audit::{self, AuditKind};
use ckm::signer::backup::{self, RestoreError, SignerBackup, Split};
use ckm::signer::home::{Restore, SignerHome, WalletInfo};
use ckm::signer::legacy::open_migrating;
use ckm::signer::peers::Peers;
use ckm::signer::policy::Policy;
use ckm::store::KdfParams;
use ckm::wallet::record::{
    self, ConfirmError, PinnedAnswer, RecordError, RecoverError, SignerRecords,
};
use ckm::wallet::WalletMeta;

const PASS: &[u8] = b"store passphrase";

fn clone_key(k: &IdentityKey) -> Result<IdentityKey> {
    Ok(IdentityKey::from_secret_bytes(&k.secret_bytes())?)
}

fn roster(keys: &[IdentityKey]) -> Result<Roster> {
    Ok(Roster::new(
        keys.iter()
            .enumerate()
            .map(|(i, k)| RosterEntry {
                index: u16::try_from(i + 1).unwrap_or(u16::MAX),
                url: format!("http://127.0.0.1:{}", 21_000 + i),
                identity: k.public(),
                tls_sha256: None,
            })
            .collect(),
    )?)
}

/// One certified wallet of three signers: each member's share and record.
struct Wallet {
    name: String,
    history: History,
    state: WalletState,
    shares: Vec<KeyShare>,
    coordinator: IdentityKey,
}

impl Wallet {
    fn new(name: &str, keys: &[IdentityKey], refreshes: u32) -> Result<Self> {
        let mut rng = rand::thread_rng();
        let coordinator = IdentityKey::generate(&mut rng);
        let refs: Vec<&IdentityKey> = keys.iter().collect();
        let context = DkgContext::new(
            SessionId::random(&mut rng),
            name,
            Network::Regtest,
            DkgParams::new(2, 3)?,
            coordinator.public(),
            roster(keys)?,
        )?;
        let (certified, group, keygen) = dkg::run_in_memory(context, &refs, &mut rng)?;
        let mut state = WalletState::genesis(&keygen, &group);
        let mut shares: Vec<KeyShare> = certified.into_iter().map(|c| c.share).collect();
        let mut history = History {
            keygen,
            transitions: Vec::new(),
        };
        for _ in 0..refreshes {
            let ctx = TransitionContext {
                version: TRANSITION_VERSION,
                session: SessionId::random(&mut rng),
                kind: TransitionKind::Refresh,
                wallet: GroupKey::of(&state.group),
                coordinator: coordinator.public(),
                from_epoch: state.epoch,
                from_state: state.hash(),
                new_roster: state.roster.clone(),
                helpers: vec![1, 2, 3],
            };
            let members: Vec<Member> = keys
                .iter()
                .zip(&shares)
                .map(|(key, s)| Member {
                    key,
                    share: Some(s),
                })
                .collect();
            let (prepared, record) = run_in_memory(ctx, &state, &members, &mut rng)?;
            shares = prepared.into_values().map(|p| p.share).collect();
            state = record.state.clone();
            history.transitions.push(record);
        }
        ensure!(history.verify()? == state);
        Ok(Wallet {
            name: name.into(),
            history,
            state,
            shares,
            coordinator,
        })
    }

    fn info(&self, index: u16) -> Result<WalletInfo> {
        Ok(WalletInfo {
            name: self.name.clone(),
            network: Network::Regtest,
            group_key: GroupKey::of(&self.state.group),
            coordinator: self.coordinator.public(),
            threshold: 2,
            signers: 3,
            index,
            fingerprint: Some(self.history.keygen.fingerprint()?),
            keygen: Some(self.history.keygen.clone()),
            epoch: self.state.epoch,
            transitions: self.history.transitions.clone(),
        })
    }

    fn record(&self, index: u16) -> WalletRecord {
        WalletRecord {
            name: self.name.clone(),
            group_key: GroupKey::of(&self.state.group),
            epoch: self.state.epoch,
            index,
            history: self.history.clone(),
        }
    }
}

/// Signer 1's home holding two wallets ("vault" refreshed once, "cold" at epoch 0), a
/// policy on "vault" and two approved peers.
struct Fixture {
    dir: tempfile::TempDir,
    home: SignerHome,
    keys: Vec<IdentityKey>,
    vault: Wallet,
    cold: Wallet,
    policy: Policy,
}

fn fixture() -> Result<Fixture> {
    let mut rng = rand::thread_rng();
    let dir = tempfile::tempdir()?;
    let home = SignerHome::init(
        &dir.path().join("s1"),
        PASS,
        KdfParams::fast_for_tests(),
        &mut rng,
    )?;
    let keys = vec![
        clone_key(home.identity())?,
        IdentityKey::generate(&mut rng),
        IdentityKey::generate(&mut rng),
    ];
    let vault = Wallet::new("vault", &keys, 1)?;
    let cold = Wallet::new("cold", &keys, 0)?;
    home.save_shares(
        &[
            (&vault.info(1)?, &vault.shares[0]),
            (&cold.info(1)?, &cold.shares[0]),
        ],
        &mut rng,
    )?;
    let policy = Policy {
        max_fee_sats: Some(25_000),
        daily_limit_sats: Some(1_000_000),
        coordinators: vec![IdentityKey::generate(&mut rng).public()],
        ..Policy::default()
    };
    home.set_policy(
        &GroupKey::of(&vault.state.group),
        &policy,
        "test policy",
        &mut rng,
    )?;
    let mut peers = Peers::default();
    peers.add(keys[1].public(), Some("s2".into()), 1);
    peers.add(keys[2].public(), None, 2);
    home.save_peers(&peers, "test peers", &mut rng)?;
    Ok(Fixture {
        dir,
        home,
        keys,
        vault,
        cold,
        policy,
    })
}

fn files(texts: &[&String]) -> Vec<(String, String)> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("share{}.ur", i + 1), (*t).clone()))
        .collect()
}

fn same_share(a: &KeyShare, b: &KeyShare) -> Result<bool> {
    Ok(*a.to_secret_bytes()? == *b.to_secret_bytes()?)
}

fn check_restored(f: &Fixture, b: &SignerBackup) -> Result<()> {
    ensure!(
        b.identity.public() == f.keys[0].public(),
        "another identity"
    );
    ensure!(
        *b.identity.secret_bytes() == *f.keys[0].secret_bytes(),
        "another identity secret"
    );
    ensure!(b.wallets.len() == 2, "{} wallets", b.wallets.len());
    for (w, wallet) in [(&f.vault, "vault"), (&f.cold, "cold")] {
        let got = b
            .wallets
            .iter()
            .find(|x| x.info.name == wallet)
            .with_context(|| format!("no wallet {wallet}"))?;
        ensure!(got.info == w.info(1)?, "{wallet}: another record");
        ensure!(
            same_share(&got.share, &w.shares[0])?,
            "{wallet}: another share"
        );
    }
    let vault = b
        .wallets
        .iter()
        .find(|x| x.info.name == "vault")
        .context("vault")?;
    ensure!(vault.info.epoch == 1 && vault.policy == f.policy);
    ensure!(f.home.load_peers()?.peers == b.peers.peers, "other peers");
    Ok(())
}

#[test]
fn any_two_of_three_shares_restore_the_signer() -> Result<()> {
    let f = fixture()?;
    let taken = SignerBackup::from_home(&f.home, &[], 1_700_000_000)?;
    let shares = backup::split(&taken, Split::new(2, 3)?, None, &mut rand::thread_rng())?;
    ensure!(shares.texts.len() == 3);
    for t in &shares.texts {
        ensure!(t.starts_with("ur:envelope/"), "{}", &t[..20.min(t.len())]);
        // Nothing secret in clear: neither the identity key nor a share's bytes.
        ensure!(!t.contains(&hex::encode(f.keys[0].secret_bytes().as_slice())));
    }
    for (a, b) in [(0, 1), (0, 2), (2, 1)] {
        let restored = backup::combine(&files(&[&shares.texts[a], &shares.texts[b]]), None)?;
        check_restored(&f, &restored)?;
    }
    let all = backup::combine(&files(&shares.texts.iter().collect::<Vec<_>>()), None)?;
    check_restored(&f, &all)?;

    // Into a new home: same identity, wallets, shares, policy, peers; records check out.
    let mut rng = rand::thread_rng();
    let new_home = f.dir.path().join("s1-restored");
    let restored = backup::combine(&files(&[&shares.texts[1], &shares.texts[2]]), None)?;
    let wallets: Vec<_> = restored
        .wallets
        .iter()
        .map(|w| (&w.info, &w.share, &w.policy))
        .collect();
    let home = SignerHome::restore(
        &new_home,
        b"new passphrase",
        KdfParams::fast_for_tests(),
        Restore {
            identity: IdentityKey::from_secret_bytes(&restored.identity.secret_bytes())?,
            wallets: wallets.clone(),
            peers: &restored.peers,
            detail: "test restore".into(),
        },
        &mut rng,
    )?;
    drop(home);
    let home = open_migrating(&new_home, b"new passphrase", &mut rand::rngs::OsRng)?;
    ensure!(home.identity().public() == f.keys[0].public());
    ensure!(SignerHome::public_identity(&new_home)? == f.keys[0].public());
    for w in [&f.vault, &f.cold] {
        let gk = GroupKey::of(&w.state.group);
        ensure!(home.wallet(&w.name)? == w.info(1)?);
        ensure!(same_share(&home.load_share(&gk)?, &w.shares[0])?);
    }
    ensure!(home.policy(&GroupKey::of(&f.vault.state.group))? == f.policy);
    ensure!(home.policy(&GroupKey::of(&f.cold.state.group))? == Policy::default());
    ensure!(home.load_peers()?.peers == f.home.load_peers()?.peers);
    let state = home.check_state(&mut rng)?;
    ensure!(state.checkpoint.is_some(), "no checkpoint was written");
    let records = home.db().read(audit::records)?;
    let kinds: Vec<AuditKind> = records.iter().map(|r| r.event.kind).collect();
    ensure!(
        kinds == [AuditKind::Wallet, AuditKind::Wallet, AuditKind::Restored],
        "{kinds:?}"
    );
    ensure!(records[2].event.detail.contains("test restore"));
    // The old passphrase does not open it.
    ensure!(open_migrating(&new_home, PASS, &mut rand::rngs::OsRng).is_err());
    // A second restore into the same home is refused and leaves it as it was.
    let again = SignerHome::restore(
        &new_home,
        b"other",
        KdfParams::fast_for_tests(),
        Restore {
            identity: IdentityKey::from_secret_bytes(&restored.identity.secret_bytes())?,
            wallets,
            peers: &restored.peers,
            detail: "again".into(),
        },
        &mut rng,
    );
    ensure!(again.is_err(), "restored over an existing home");
    ensure!(open_migrating(&new_home, b"new passphrase", &mut rand::rngs::OsRng).is_ok());
    Ok(())
}

#[test]
fn one_wallet_backup_and_a_pending_transition() -> Result<()> {
    let f = fixture()?;
    let taken = SignerBackup::from_home(&f.home, &["cold".into()], 1)?;
    ensure!(taken.wallets.len() == 1 && taken.wallets[0].info.name == "cold");
    ensure!(SignerBackup::from_home(&f.home, &["nope".into()], 1).is_err());
    // A wallet in the middle of a transition is not backed up.
    let mut pending = f.cold.info(1)?;
    pending.epoch = 1;
    // The vote is a placeholder: the store keeps it, nothing here checks it.
    let vote = ckm::protocol::lifecycle::SignedVote {
        kind: ckm::protocol::lifecycle::VoteKind::Prepared,
        voter: 1,
        signature: [0; 64],
    };
    f.home.prepare_transition(
        "s",
        &pending,
        &f.cold.shares[0],
        &vote,
        &mut rand::thread_rng(),
    )?;
    let err = SignerBackup::from_home(&f.home, &["cold".into()], 1)
        .err()
        .context("a pending wallet was backed up")?;
    ensure!(err.to_string().contains("pending"), "{err}");
    Ok(())
}

/// The UR of `e` as a share text.
fn ur_of(e: &Envelope) -> Result<String> {
    Ok(bc_ur::UR::new("envelope", e.untagged_cbor())?.string())
}

fn envelope_of(text: &str) -> Result<Envelope> {
    Ok(Envelope::from_untagged_cbor(
        bc_ur::UR::from_ur_string(text)?.cbor(),
    )?)
}

#[test]
fn bad_share_sets_are_refused() -> Result<()> {
    let f = fixture()?;
    let mut rng = rand::thread_rng();
    let taken = SignerBackup::from_home(&f.home, &[], 5)?;
    let a = backup::split(&taken, Split::new(2, 3)?, None, &mut rng)?;
    let b = backup::split(&taken, Split::new(2, 3)?, None, &mut rng)?;

    // One share alone.
    match backup::combine(&files(&[&a.texts[0]]), None) {
        Err(RestoreError::TooFewShares {
            have: 1, need: 2, ..
        }) => {}
        other => bail!("one share: {other:?}"),
    }
    // Two shares of different backups (of the same signer, even the same content). Their
    // 16-bit SSKR identifiers collide once in 65536 backups: the shares then fail to combine.
    match backup::combine(&files(&[&a.texts[0], &b.texts[1]]), None) {
        Err(RestoreError::DifferentBackups { .. }) if a.identifier != b.identifier => {}
        Err(RestoreError::DoNotCombine(_)) if a.identifier == b.identifier => {}
        other => bail!("two backups: {other:?}"),
    }
    // The same share twice.
    match backup::combine(&files(&[&a.texts[0], &a.texts[0]]), None) {
        Err(RestoreError::Duplicate { member: 1, .. }) => {}
        other => bail!("duplicate: {other:?}"),
    }
    // One corrupted character: the UR checksum fails, the file is named.
    let mut corrupted = a.texts[1].clone().into_bytes();
    let at = corrupted.len() / 2;
    corrupted[at] = if corrupted[at] == b'a' { b'e' } else { b'a' };
    let corrupted = String::from_utf8(corrupted)?;
    match backup::combine(&files(&[&a.texts[0], &corrupted]), None) {
        Err(RestoreError::Unreadable { file, .. }) if file == "share2.ur" => {}
        other => bail!("corrupted: {other:?}"),
    }
    // A truncated file.
    let truncated = a.texts[1][..a.texts[1].len() / 2].to_string();
    ensure!(matches!(
        backup::combine(&files(&[&a.texts[0], &truncated]), None),
        Err(RestoreError::Unreadable { .. })
    ));
    // A well-formed share whose SSKR value was altered: the shares do not combine.
    let e = envelope_of(&a.texts[1])?;
    let assertion = e
        .assertions_with_predicate(known_values::SSKR_SHARE)
        .first()
        .cloned()
        .context("no share")?;
    let share: bc_components::SSKRShare =
        assertion.as_object().context("object")?.extract_subject()?;
    let mut bytes = share.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let altered = e.remove_assertion(assertion).add_assertion(
        known_values::SSKR_SHARE,
        bc_components::SSKRShare::from_data(bytes),
    );
    let altered = ur_of(&altered)?;
    match backup::combine(&files(&[&a.texts[0], &altered]), None) {
        Err(RestoreError::DoNotCombine(_)) => {}
        other => bail!("altered: {other:?}"),
    }
    // Something else than a share.
    let meta = recovered_meta(&f)?;
    let wallet_record = record::to_ur(&meta)?;
    ensure!(matches!(
        backup::combine(&files(&[&a.texts[0], &wallet_record]), None),
        Err(RestoreError::NotAShare { .. })
    ));
    ensure!(matches!(
        backup::combine(&[], None),
        Err(RestoreError::NoShares)
    ));
    // And the good pair still restores.
    check_restored(
        &f,
        &backup::combine(&files(&[&a.texts[0], &a.texts[2]]), None)?,
    )?;
    Ok(())
}

#[test]
fn a_backup_passphrase_is_needed_too() -> Result<()> {
    let f = fixture()?;
    let taken = SignerBackup::from_home(&f.home, &[], 9)?;
    let s = backup::split(
        &taken,
        Split::new(2, 2)?,
        Some(b"backup pass"),
        &mut rand::thread_rng(),
    )?;
    let pair = files(&[&s.texts[0], &s.texts[1]]);
    ensure!(matches!(
        backup::combine(&pair, None),
        Err(RestoreError::PassphraseRequired)
    ));
    ensure!(matches!(
        backup::combine(&pair, Some(b"wrong")),
        Err(RestoreError::WrongPassphrase)
    ));
    check_restored(&f, &backup::combine(&pair, Some(b"backup pass"))?)?;
    Ok(())
}

/// The coordinator's wallet "vault" as recovered from the three signers.
fn recovered_meta(f: &Fixture) -> Result<WalletMeta> {
    let answers = signer_answers(f, &[1, 2, 3], &f.vault);
    let mut metas = record::recover(&answers, Some("vault"))?;
    ensure!(metas.len() == 1);
    Ok(metas.remove(0))
}

fn signer_answers(f: &Fixture, indexes: &[u16], w: &Wallet) -> Vec<SignerRecords> {
    indexes
        .iter()
        .map(|i| SignerRecords {
            signer: RosterEntry {
                index: 0,
                url: format!("http://127.0.0.1:{}", 31_000 + i),
                identity: f.keys[usize::from(*i) - 1].public(),
                tls_sha256: None,
            },
            records: vec![w.record(*i)],
        })
        .collect()
}

#[test]
fn recover_rebuilds_the_wallet_and_refuses_disagreement() -> Result<()> {
    let f = fixture()?;
    let meta = recovered_meta(&f)?;
    ensure!(meta.epoch == 1 && meta.transitions.len() == 1);
    ensure!(meta.group == f.vault.state.group);
    ensure!(
        meta.descriptors()? == ckm::wallet::descriptors(&f.vault.state.group, Network::Regtest)?
    );
    let urls: Vec<&str> = meta
        .roster
        .entries()
        .iter()
        .map(|e| e.url.as_str())
        .collect();
    ensure!(
        urls == [
            "http://127.0.0.1:31001",
            "http://127.0.0.1:31002",
            "http://127.0.0.1:31003"
        ],
        "{urls:?}"
    );
    meta.verify()?;

    // Two of three suffice for a 2-of-3 wallet; the third keeps its certified URL.
    let two = record::recover(&signer_answers(&f, &[1, 3], &f.vault), None)?;
    ensure!(
        two.len() == 1
            && two[0].roster.get(2).map(|e| e.url.as_str()) == Some("http://127.0.0.1:21001")
    );
    // Both wallets when no name is given.
    let mut both = signer_answers(&f, &[1, 2], &f.vault);
    for (a, i) in both.iter_mut().zip([1u16, 2]) {
        a.records.push(f.cold.record(i));
    }
    let names: Vec<String> = record::recover(&both, None)?
        .into_iter()
        .map(|m| m.name)
        .collect();
    ensure!(names.len() == 2 && names.contains(&"cold".to_string()));

    // One signer alone is fewer than the threshold.
    ensure!(matches!(
        record::recover(&signer_answers(&f, &[2], &f.vault), None),
        Err(RecoverError::TooFew {
            have: 1,
            need: 2,
            ..
        })
    ));
    // A signer still at epoch 0 (it missed the commit: its history is a prefix of the
    // others'): the wallet is recovered at the common prefix, which every signer vouches for,
    // and `wallet resume` catches up from the members' certificates. (Taking the longest
    // would let one signer present a transition that was aborted as committed.)
    let mut stale = signer_answers(&f, &[1, 2, 3], &f.vault);
    let mut old = f.vault.record(3);
    old.history.transitions.clear();
    old.epoch = 0;
    stale[2].records = vec![old];
    match record::recover(&stale, None)?.as_slice() {
        [m] if m.epoch == 0 && m.transitions.is_empty() => {}
        other => bail!("stale: {other:?}"),
    }
    // A signer claiming another member's index.
    let mut liar = signer_answers(&f, &[1, 2], &f.vault);
    liar[1].records[0].index = 1;
    ensure!(matches!(
        record::recover(&liar, None),
        Err(RecoverError::Invalid { .. })
    ));
    // A forged certificate.
    let mut forged = signer_answers(&f, &[1, 2], &f.vault);
    let certs: &mut BTreeMap<u16, _> = &mut forged[0].records[0].history.keygen.certificates;
    let one = certs.get(&1).cloned().context("cert 1")?;
    let two_cert = certs.get(&2).cloned().context("cert 2")?;
    certs.insert(1, two_cert);
    certs.insert(2, one);
    ensure!(matches!(
        record::recover(&forged, None),
        Err(RecoverError::Invalid { .. })
    ));
    ensure!(matches!(
        record::recover(&signer_answers(&f, &[1, 2], &f.vault), Some("nope")),
        Err(RecoverError::NoWallet(_))
    ));
    Ok(())
}

/// A pinned signer `i` (1-based) answering with `records`.
fn pinned(f: &Fixture, i: usize, records: Vec<WalletRecord>) -> PinnedAnswer {
    PinnedAnswer {
        signer: f.keys[i - 1].public(),
        answer: Ok(records),
    }
}

/// `confirm` must refuse with too few confirmations (`have` of 2), one reason saying `needle`.
fn too_few(meta: &WalletMeta, answers: &[PinnedAnswer], have: usize, needle: &str) -> Result<()> {
    match record::confirm(meta, answers) {
        Err(ConfirmError::TooFew {
            have: h,
            need: 2,
            not,
            ..
        }) if h == have => {
            ensure!(
                not.iter().any(|(_, why)| why.contains(needle)),
                "no reason says {needle:?}: {not:?}"
            );
            Ok(())
        }
        other => bail!("expected {have} confirmation(s) and {needle:?}, got {other:?}"),
    }
}

#[test]
fn a_record_from_a_file_needs_t_distinct_pinned_confirmations() -> Result<()> {
    let f = fixture()?;
    let meta = recovered_meta(&f)?;
    let ok = record::confirm(
        &meta,
        &[
            pinned(&f, 1, vec![f.cold.record(1), f.vault.record(1)]),
            pinned(&f, 3, vec![f.vault.record(3)]),
        ],
    )?;
    ensure!(ok.by == [f.keys[0].public(), f.keys[2].public()]);

    ensure!(matches!(
        record::confirm(&meta, &[]),
        Err(ConfirmError::NoPins)
    ));
    // One signer pinned twice counts once.
    let one = pinned(&f, 1, vec![f.vault.record(1)]);
    ensure!(matches!(
        record::confirm(&meta, &[one.clone(), one.clone()]),
        Err(ConfirmError::TooFew { have: 1, .. })
    ));
    // Unreachable.
    let gone = PinnedAnswer {
        signer: f.keys[1].public(),
        answer: Err("connection refused".into()),
    };
    too_few(&meta, &[one.clone(), gone], 1, "connection refused")?;
    // It holds only another wallet.
    too_few(
        &meta,
        &[one.clone(), pinned(&f, 2, vec![f.cold.record(2)])],
        1,
        "holds no wallet",
    )?;
    // It answers with another member's record (index 3's, as signer 2).
    too_few(
        &meta,
        &[one.clone(), pinned(&f, 2, vec![f.vault.record(3)])],
        1,
        "does not give it index",
    )?;
    // It is still at epoch 0.
    let mut old = f.vault.record(2);
    old.history.transitions.clear();
    old.epoch = 0;
    too_few(
        &meta,
        &[one.clone(), pinned(&f, 2, vec![old])],
        1,
        "at epoch 0",
    )?;
    // The file is another wallet's (same signers): no pinned signer holds its group key at
    // its epoch and history.
    let cold = record::recover(&signer_answers(&f, &[1, 2], &f.cold), None)?;
    let cold = cold.first().context("cold")?;
    too_few(
        cold,
        &[
            pinned(&f, 1, vec![f.vault.record(1)]),
            pinned(&f, 2, vec![f.vault.record(2)]),
        ],
        0,
        "holds no wallet",
    )?;
    Ok(())
}

#[test]
fn the_public_wallet_record_round_trips() -> Result<()> {
    let f = fixture()?;
    let meta = recovered_meta(&f)?;
    for bytes in [
        record::to_cbor(&meta)?,
        record::to_ur(&meta)?.into_bytes(),
        format!("{}\n", record::to_ur(&meta)?.to_uppercase()).into_bytes(),
    ] {
        let back = record::from_bytes(&bytes)?;
        ensure!(back.descriptors()? == meta.descriptors()?);
        ensure!(back.roster == meta.roster && back.epoch == meta.epoch);
        ensure!(back.keygen == meta.keygen && back.transitions == meta.transitions);
    }
    ensure!(record::to_ur(&meta)?.starts_with("ur:envelope/"));
    // A forged certificate is refused.
    let mut forged = meta.clone();
    if let Some(k) = forged.keygen.as_mut() {
        let one = k.certificates.get(&1).cloned().context("cert")?;
        let two = k.certificates.get(&2).cloned().context("cert")?;
        k.certificates.insert(1, two);
        k.certificates.insert(2, one);
    }
    ensure!(matches!(
        record::from_bytes(&record::to_cbor(&forged)?),
        Err(RecordError::Verify(_))
    ));
    // A label that does not match the history (epoch 0 history, epoch 1 label).
    let mut relabelled = meta.clone();
    relabelled.transitions.clear();
    relabelled.group = f.vault.history.keygen_group()?;
    ensure!(record::from_bytes(&record::to_cbor(&relabelled)?).is_err());
    // Garbage.
    ensure!(record::from_bytes(b"ur:envelope/nonsense").is_err());
    ensure!(record::from_bytes(&[0x01, 0x02]).is_err());
    Ok(())
}

trait KeygenGroup {
    fn keygen_group(&self) -> Result<ckm::frost::shares::GroupPublic>;
}

impl KeygenGroup for History {
    fn keygen_group(&self) -> Result<ckm::frost::shares::GroupPublic> {
        Ok(History {
            keygen: self.keygen.clone(),
            transitions: Vec::new(),
        }
        .verify()?
        .group)
    }
}
