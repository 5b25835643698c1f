//! The timelocked recovery path, in memory (no network, no bitcoind): the policy and its
//! descriptors, key-path co-signing of a wallet whose every address commits to the recovery
//! leaf, the signers' refusal of any other merkle root (inputs and change), and recovery
//! spends signed with the recovery key(s) and finalized by miniscript. Every signed
//! transaction is verified by libbitcoinconsensus with the Taproot rules.
//!
//! The random generator is seeded from `CKM_TEST_SEED` when set (printed), otherwise from
//! the OS.

#[path = "common/consensus.rs"]
mod consensus;
use consensus::{consensus_verify, made_up_funding};

use std::collections::HashMap;
use std::str::FromStr;

use anyhow::{bail, ensure, Context, Result};
use bdk_wallet::KeychainKind;
use bitcoin::bip32::{DerivationPath, Xpriv};
use bitcoin::key::{Keypair, TapTweak};
use bitcoin::secp256k1::SecretKey;
use bitcoin::taproot::{TapNodeHash, TaprootBuilder};
use bitcoin::{
    Address, Amount, FeeRate, Network, NetworkKind, OutPoint, Psbt, ScriptBuf, Sequence, TxOut,
};
use ckm::frost::pedersen::DkgParams;
use ckm::frost::shares::{secp, GroupPublic, KeyShare};
use ckm::identity::IdentityKey;
use ckm::keys::{Keychain, Roster, RosterEntry, WalletPath};
use ckm::protocol::dkg::{self, CertifiedKeygen, DkgContext, VerifyError};
use ckm::protocol::SessionId;
use ckm::psbt::check::CheckError;
use ckm::psbt::rounds::SignError;
use ckm::psbt::{check_psbt_with, commit_with, sign_in_memory, sign_in_memory_with};
use ckm::recovery::script_path::{finalize, sign_recovery, RecoverySecret, SignRecoveryError};
use ckm::recovery::{RecoveryError, RecoveryKey, RecoveryPolicy, WalletScripts};
use ckm::wallet::{descriptors, descriptors_with, CkmWallet, WalletError, WalletMeta};
use miniscript::descriptor::{Descriptor, DescriptorPublicKey};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

const NETWORK: Network = Network::Regtest;

fn test_rng(test: &str) -> StdRng {
    let seed = std::env::var("CKM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{test}: CKM_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

fn account_path() -> DerivationPath {
    DerivationPath::from_str("86'/1'/0'").expect("valid path")
}

/// A recovery master key (held by the "user" of the test).
fn master(rng: &mut StdRng) -> Result<Xpriv> {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    Ok(Xpriv::new_master(NetworkKind::Test, &seed)?)
}

fn secret_of(master: &Xpriv) -> Result<RecoverySecret> {
    Ok(master.to_string().parse()?)
}

/// `[fp/86'/1'/0']tpub…` of a master key.
fn public_of(master: &Xpriv) -> Result<RecoveryKey> {
    Ok(secret_of(master)?.public_at(&account_path())?)
}

/// A certified 2-of-3 key generation with `policy`, in memory.
fn certified(
    policy: Option<RecoveryPolicy>,
    rng: &mut StdRng,
) -> Result<(Vec<KeyShare>, GroupPublic, CertifiedKeygen)> {
    let keys: Vec<IdentityKey> = (0..3).map(|_| IdentityKey::generate(rng)).collect();
    let roster = Roster::new(
        keys.iter()
            .enumerate()
            .map(|(i, k)| RosterEntry {
                index: u16::try_from(i + 1).unwrap_or(1),
                url: format!("http://127.0.0.1:{}", 41_000 + i),
                identity: k.public(),
                tls_sha256: None,
            })
            .collect(),
    )?;
    let mut context = DkgContext::new(
        SessionId::random(rng),
        "vault",
        NETWORK,
        DkgParams::new(2, 3)?,
        IdentityKey::generate(rng).public(),
        roster,
    )?;
    if let Some(p) = policy {
        context = context.with_recovery(p)?;
    }
    let refs: Vec<&IdentityKey> = keys.iter().collect();
    let (shares, group, keygen) = dkg::run_in_memory(context, &refs, rng)?;
    Ok((shares.into_iter().map(|s| s.share).collect(), group, keygen))
}

struct Fixture {
    _dir: tempfile::TempDir,
    shares: Vec<KeyShare>,
    keygen: CertifiedKeygen,
    wallet: CkmWallet,
    policy: RecoveryPolicy,
    masters: Vec<Xpriv>,
    funding: HashMap<OutPoint, TxOut>,
}

impl Fixture {
    fn group(&self) -> &GroupPublic {
        self.shares[0].group()
    }

    fn scripts(&self) -> Result<WalletScripts> {
        Ok(WalletScripts::new(
            self.group(),
            NETWORK,
            Some(&self.policy),
        )?)
    }
}

const FUNDS: [(KeychainKind, u32, u64); 3] = [
    (KeychainKind::External, 0, 100_000),
    (KeychainKind::External, 3, 200_000),
    (KeychainKind::Internal, 1, 300_000),
];

/// A wallet with a `threshold`-of-`keys` recovery path after `blocks`, funded with [`FUNDS`]
/// (unconfirmed, made up).
fn fixture(keys: usize, threshold: u16, blocks: u16, rng: &mut StdRng) -> Result<Fixture> {
    let masters: Vec<Xpriv> = (0..keys).map(|_| master(rng)).collect::<Result<_>>()?;
    let publics: Vec<RecoveryKey> = masters.iter().map(public_of).collect::<Result<_>>()?;
    let policy = RecoveryPolicy::new(publics, threshold, blocks)?;
    let (shares, group, keygen) = certified(Some(policy.clone()), rng)?;
    let dir = tempfile::tempdir()?;
    let meta = WalletMeta {
        name: "vault".into(),
        network: NETWORK,
        group,
        roster: keygen.context.roster.clone(),
        electrum: None,
        keygen: Some(keygen.clone()),
        epoch: 0,
        transitions: Vec::new(),
        pending: None,
        birth_height: None,
    };
    meta.verify()?;
    let mut wallet = CkmWallet::create(&dir.path().join("w.sqlite"), meta)?;
    let mut funding = HashMap::new();
    let mut txs = Vec::new();
    for keychain in [KeychainKind::External, KeychainKind::Internal] {
        let max = FUNDS.iter().filter(|f| f.0 == keychain).map(|f| f.1).max();
        if let Some(max) = max {
            wallet
                .bdk_mut()
                .reveal_addresses_to(keychain, max)
                .for_each(drop);
        }
    }
    for &(keychain, index, sats) in &FUNDS {
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
    Ok(Fixture {
        _dir: dir,
        shares,
        keygen,
        wallet,
        policy,
        masters,
        funding,
    })
}

fn foreign_address(rng: &mut StdRng) -> Address {
    let sk = SecretKey::new(rng);
    let (x, _) = Keypair::from_secret_key(secp(), &sk).x_only_public_key();
    Address::p2tr(secp(), x, None, NETWORK)
}

fn payment(f: &mut Fixture, rng: &mut StdRng) -> Result<Psbt> {
    let to = foreign_address(rng);
    Ok(f.wallet.build_payment(
        &to,
        Amount::from_sat(450_000),
        FeeRate::from_sat_per_vb_u32(2),
    )?)
}

fn change_index(psbt: &Psbt, group: &GroupPublic) -> Result<usize> {
    psbt.outputs
        .iter()
        .position(|o| {
            o.tap_internal_key.is_some_and(|k| {
                o.tap_key_origins
                    .get(&k)
                    .is_some_and(|(_, (fp, _))| *fp == group.fingerprint())
            })
        })
        .context("the payment has no change output")
}

fn path_of(psbt: &Psbt, input: usize) -> Result<WalletPath> {
    let i = &psbt.inputs[input];
    let internal = i.tap_internal_key.context("no internal key")?;
    let (_, (_, path)) = i.tap_key_origins.get(&internal).context("no origin")?;
    Ok(WalletPath::from_derivation(path)?)
}

/// The merkle root of a single-leaf tree.
fn leaf_root(script: &ScriptBuf) -> TapNodeHash {
    TapNodeHash::from(bitcoin::taproot::TapLeafHash::from_script(
        script,
        bitcoin::taproot::LeafVersion::TapScript,
    ))
}

// ---------------------------------------------------------------------------------------
// The policy and its descriptors
// ---------------------------------------------------------------------------------------

#[test]
fn recovery_keys_and_policies_are_checked() -> Result<()> {
    let mut rng = test_rng("recovery_keys_and_policies_are_checked");
    let m = master(&mut rng)?;
    let key = public_of(&m)?;
    let text = key.to_string();
    ensure!(
        text.starts_with(&format!("[{}/86'/1'/0']tpub", m.fingerprint(secp()))),
        "{text}"
    );
    ensure!(RecoveryKey::from_str(&text)? == key);
    // With an "h" for hardened it is the same key.
    ensure!(RecoveryKey::from_str(&text.replace('\'', "h"))? == key);

    let bad = |s: &str| RecoveryKey::from_str(s).is_err();
    let bare = text.split(']').nth(1).context("no ]")?.to_string();
    ensure!(bad(&bare), "a key below the master without origin");
    ensure!(
        bad(&format!("{text}/0/*")),
        "derivation steps after the key"
    );
    ensure!(bad(&m.to_string()), "a private key");
    ensure!(
        bad(&text.replace("/86'/1'/0'", "/86'/1'")),
        "origin shorter than depth"
    );
    ensure!(bad("tpub"), "garbage");

    let other = public_of(&master(&mut rng)?)?;
    ensure!(matches!(
        RecoveryPolicy::new(vec![], 1, 10),
        Err(RecoveryError::KeyCount(0))
    ));
    ensure!(matches!(
        RecoveryPolicy::new(vec![key.clone()], 0, 10),
        Err(RecoveryError::Threshold { .. })
    ));
    ensure!(matches!(
        RecoveryPolicy::new(vec![key.clone(), other.clone()], 3, 10),
        Err(RecoveryError::Threshold { .. })
    ));
    ensure!(matches!(
        RecoveryPolicy::new(vec![key.clone()], 1, 0),
        Err(RecoveryError::Blocks)
    ));
    ensure!(matches!(
        RecoveryPolicy::new(vec![key.clone(), key.clone()], 1, 10),
        Err(RecoveryError::DuplicateKey(_))
    ));
    let mainnet_master = Xpriv::new_master(NetworkKind::Main, &[5; 32])?;
    let mainnet = secret_of(&mainnet_master)?.public_at(&account_path())?;
    ensure!(matches!(
        RecoveryPolicy::new(vec![key.clone(), mainnet.clone()], 1, 10),
        Err(RecoveryError::Network { .. })
    ));
    let policy = RecoveryPolicy::new(vec![key.clone(), other], 2, 144)?;
    ensure!(policy.check_network(Network::Regtest).is_ok());
    ensure!(policy.check_network(Network::Bitcoin).is_err());
    ensure!(policy.sequence() == Sequence::from_height(144));
    // JSON round trip; an invalid policy does not deserialize.
    let json = serde_json::to_value(&policy)?;
    ensure!(serde_json::from_value::<RecoveryPolicy>(json.clone())? == policy);
    let mut broken = json;
    broken["threshold"] = serde_json::json!(3);
    ensure!(serde_json::from_value::<RecoveryPolicy>(broken).is_err());
    Ok(())
}

#[test]
fn descriptors_without_recovery_are_unchanged_and_with_it_are_the_documented_miniscript(
) -> Result<()> {
    let mut rng = test_rng("descriptors");
    let (_, group, _) = certified(None, &mut rng)?;
    let xpub = group.xpub(NETWORK);
    let fp = group.fingerprint();
    // Without a policy: exactly the BIP-0086 descriptors of before.
    let (external, internal) = descriptors(&group, NETWORK)?;
    for (text, branch) in [(&external, 0), (&internal, 1)] {
        let expected =
            Descriptor::<DescriptorPublicKey>::from_str(&format!("tr([{fp}]{xpub}/{branch}/*)"))?
                .to_string();
        ensure!(*text == expected, "{text} != {expected}");
    }
    ensure!(descriptors_with(&group, NETWORK, None)? == (external.clone(), internal));
    let plain = WalletScripts::new(&group, NETWORK, None)?;
    let at = plain.at(&WalletPath {
        keychain: Keychain::External,
        index: 3,
    })?;
    ensure!(at.merkle_root.is_none());
    ensure!(
        at.output_key
            == at
                .internal_key
                .tap_tweak(secp(), None)
                .0
                .to_x_only_public_key()
    );

    // One key.
    let k1 = public_of(&master(&mut rng)?)?;
    let one = RecoveryPolicy::new(vec![k1.clone()], 1, 144)?;
    let (ext, int) = descriptors_with(&group, NETWORK, Some(&one))?;
    let body = |d: &str| d.split('#').next().unwrap_or_default().to_string();
    ensure!(
        body(&ext) == format!("tr([{fp}]{xpub}/0/*,and_v(v:pk({k1}/0/*),older(144)))"),
        "{ext}"
    );
    ensure!(
        body(&int) == format!("tr([{fp}]{xpub}/1/*,and_v(v:pk({k1}/1/*),older(144)))"),
        "{int}"
    );
    // Several keys.
    let k2 = public_of(&master(&mut rng)?)?;
    let two = RecoveryPolicy::new(vec![k1.clone(), k2.clone()], 2, 10)?;
    let (ext2, _) = descriptors_with(&group, NETWORK, Some(&two))?;
    ensure!(
        body(&ext2)
            == format!("tr([{fp}]{xpub}/0/*,and_v(v:multi_a(2,{k1}/0/*,{k2}/0/*),older(10)))"),
        "{ext2}"
    );

    // Per-index roots: each address has its own, and they match miniscript's own derivation.
    let scripts = WalletScripts::new(&group, NETWORK, Some(&one))?;
    let descriptor = Descriptor::<DescriptorPublicKey>::from_str(&ext)?;
    let mut roots = std::collections::BTreeSet::new();
    for keychain in [Keychain::External, Keychain::Internal] {
        for index in 0..5u32 {
            let s = scripts.at(&WalletPath { keychain, index })?;
            let root = s.merkle_root.context("a recovery address has a tree")?;
            ensure!(
                roots.insert(root),
                "merkle root repeated at {keychain:?}/{index}"
            );
            // The internal key is the FROST key at the path.
            let derivation = group.derivation(&WalletPath { keychain, index }.to_derivation())?;
            ensure!(s.internal_key == derivation.internal_key());
            if keychain == Keychain::External {
                let addr = descriptor.at_derivation_index(index)?.address(NETWORK)?;
                ensure!(s.address(NETWORK)? == addr);
            }
        }
    }
    Ok(())
}

#[test]
fn certified_addresses_come_from_the_verified_record_only() -> Result<()> {
    let mut rng = test_rng("certified_addresses_come_from_the_verified_record_only");
    let mut f = fixture(1, 1, 12, &mut rng)?;
    for index in 0..10u32 {
        let path = WalletPath {
            keychain: Keychain::External,
            index,
        };
        let from_record = f.keygen.address(f.group(), &path)?;
        let from_bdk = f
            .wallet
            .bdk_mut()
            .peek_address(KeychainKind::External, index);
        ensure!(from_record == from_bdk.address, "index {index}");
    }
    // The same record against another group, or with another policy: refused.
    let (_, other_group, _) = certified(None, &mut rng)?;
    let path = WalletPath {
        keychain: Keychain::Internal,
        index: 0,
    };
    ensure!(f.keygen.address(&other_group, &path).is_err());
    let mut swapped = f.keygen.clone();
    swapped.context.recovery = Some(RecoveryPolicy::new(
        vec![public_of(&master(&mut rng)?)?],
        1,
        12,
    )?);
    ensure!(matches!(
        swapped.verified_recovery(f.group()),
        Err(VerifyError::BadCertificate { .. })
    ));
    ensure!(swapped.address(f.group(), &path).is_err());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Key-path co-signing of a wallet with a recovery path
// ---------------------------------------------------------------------------------------

#[test]
fn key_path_spends_are_co_signed_with_each_inputs_own_merkle_root() -> Result<()> {
    let mut rng = test_rng("key_path_spends_are_co_signed_with_each_inputs_own_merkle_root");
    let mut f = fixture(1, 1, 144, &mut rng)?;
    let psbt = payment(&mut f, &mut rng)?;
    ensure!(psbt.inputs.len() >= 2, "the payment spends several inputs");
    let scripts = f.scripts()?;
    let mut roots = Vec::new();
    for (i, input) in psbt.inputs.iter().enumerate() {
        let expected = scripts.at(&path_of(&psbt, i)?)?.merkle_root;
        ensure!(input.tap_merkle_root == expected, "input {i}");
        roots.push(expected);
        ensure!(
            psbt.unsigned_tx.input[i].sequence != f.policy.sequence(),
            "a key-path spend carries no recovery timelock"
        );
    }
    roots.dedup();
    ensure!(
        roots.len() == psbt.inputs.len(),
        "every input has its own root"
    );

    // Without the policy the same PSBT is refused (a merkle root on a key-only wallet).
    let mut copy = psbt.clone();
    let err = sign_in_memory(&mut copy, &[&f.shares[0], &f.shares[1]], &mut rng)
        .err()
        .context("signed without the policy")?;
    ensure!(format!("{err:?}").contains("does not have"), "{err:?}");

    for pair in [[0usize, 1], [1, 2], [0, 2]] {
        let mut p = psbt.clone();
        let shares = [&f.shares[pair[0]], &f.shares[pair[1]]];
        let tx = sign_in_memory_with(&mut p, &shares, Some(&f.policy), &mut rng)?;
        for (i, input) in tx.input.iter().enumerate() {
            ensure!(
                input.witness.len() == 1 && input.witness.iter().all(|w| w.len() == 64),
                "input {i} is not a single 64-byte key-path signature"
            );
        }
        consensus_verify(&tx, &f.funding)?;
    }
    Ok(())
}

fn refused_with(f: &Fixture, psbt: &Psbt, rng: &mut StdRng, needle: &str) -> Result<()> {
    for share in &f.shares {
        match commit_with(psbt, share, Some(&f.policy), rng) {
            Err(SignError::Check(
                e @ (CheckError::NotOurs { .. } | CheckError::ChangeNotOurs { .. }),
            )) => {
                ensure!(e.to_string().contains(needle), "{e}");
            }
            Err(e) => bail!("refused for another reason: {e}"),
            Ok(_) => bail!("signer {:?} accepted it", share.identifier()),
        }
    }
    // The coordinator's own check refuses it too.
    ensure!(check_psbt_with(psbt, f.group(), Some(&f.policy)).is_err());
    Ok(())
}

#[test]
fn every_signer_refuses_an_input_merkle_root_other_than_the_certified_one() -> Result<()> {
    let mut rng =
        test_rng("every_signer_refuses_an_input_merkle_root_other_than_the_certified_one");
    let mut f = fixture(1, 1, 144, &mut rng)?;
    let psbt = payment(&mut f, &mut rng)?;
    let scripts = f.scripts()?;
    let path = path_of(&psbt, 0)?;
    // The control: untouched, every signer commits.
    for share in &f.shares {
        commit_with(&psbt, share, Some(&f.policy), &mut rng)?;
    }

    // The root of another index of the same policy.
    let mut p = psbt.clone();
    let other = scripts.at(&WalletPath {
        keychain: path.keychain,
        index: path.index + 7,
    })?;
    p.inputs[0].tap_merkle_root = other.merkle_root;
    refused_with(&f, &p, &mut rng, "tap_merkle_root is not the certified")?;

    // The root of an attacker's policy (its own recovery key) at the same index.
    let attacker = RecoveryPolicy::new(vec![public_of(&master(&mut rng)?)?], 1, 144)?;
    let evil = WalletScripts::new(f.group(), NETWORK, Some(&attacker))?.at(&path)?;
    let mut p = psbt.clone();
    p.inputs[0].tap_merkle_root = evil.merkle_root;
    refused_with(&f, &p, &mut rng, "tap_merkle_root is not the certified")?;

    // The same key with a shorter timelock.
    let sooner = RecoveryPolicy::new(f.policy.keys().to_vec(), 1, 1)?;
    let soon = WalletScripts::new(f.group(), NETWORK, Some(&sooner))?.at(&path)?;
    let mut p = psbt.clone();
    p.inputs[0].tap_merkle_root = soon.merkle_root;
    refused_with(&f, &p, &mut rng, "tap_merkle_root is not the certified")?;

    // No root at all.
    let mut p = psbt.clone();
    p.inputs[0].tap_merkle_root = None;
    refused_with(&f, &p, &mut rng, "no tap_merkle_root")?;

    // A wallet without a policy refuses any root (as before).
    let (shares, group, _) = certified(None, &mut rng)?;
    ensure!(check_psbt_with(&psbt, &group, None).is_err());
    ensure!(commit_with(&psbt, &shares[0], None, &mut rng).is_err());
    Ok(())
}

#[test]
fn every_signer_refuses_change_committed_to_another_tree() -> Result<()> {
    let mut rng = test_rng("every_signer_refuses_change_committed_to_another_tree");
    let mut f = fixture(1, 1, 144, &mut rng)?;
    let psbt = payment(&mut f, &mut rng)?;
    let c = change_index(&psbt, f.group())?;
    let internal = psbt.outputs[c].tap_internal_key.context("no key")?;
    let checked = check_psbt_with(&psbt, f.group(), Some(&f.policy))?;
    let change_path = checked.outputs()[c]
        .change_path
        .context("the change output is recognised")?;
    ensure!(
        psbt.outputs[c].tap_tree.is_some(),
        "bdk writes the change's tap_tree"
    );

    // Change paying our key under an attacker's recovery leaf, with a matching tap_tree.
    let attacker_master = master(&mut rng)?;
    let attacker = RecoveryPolicy::new(vec![public_of(&attacker_master)?], 1, 1)?;
    let evil = WalletScripts::new(f.group(), NETWORK, Some(&attacker))?.at(&change_path)?;
    ensure!(evil.internal_key == internal);
    let evil_leaf = {
        let d = WalletScripts::new(f.group(), NETWORK, Some(&attacker))?;
        let definite = d
            .descriptor(change_path.keychain)
            .at_derivation_index(change_path.index)?;
        let Descriptor::Tr(tr) = definite else {
            bail!("not tr")
        };
        let (_, ms) = tr.iter_scripts().next().context("no leaf")?;
        ms.encode()
    };
    ensure!(Some(leaf_root(&evil_leaf)) == evil.merkle_root);
    let evil_tree = TaprootBuilder::new()
        .add_leaf(0, evil_leaf)?
        .try_into_taptree()
        .map_err(|_| anyhow::anyhow!("not a complete tree"))?;
    let mut p = psbt.clone();
    p.unsigned_tx.output[c].script_pubkey = evil.script_pubkey.clone();
    p.outputs[c].tap_tree = Some(evil_tree.clone());
    refused_with(&f, &p, &mut rng, "tap_tree is not the certified")?;

    // The same without tap_tree: the script itself is checked.
    let mut p = psbt.clone();
    p.unsigned_tx.output[c].script_pubkey = evil.script_pubkey;
    p.outputs[c].tap_tree = None;
    refused_with(&f, &p, &mut rng, "certified recovery path")?;

    // Key-only change (no tree at all).
    let mut p = psbt.clone();
    p.unsigned_tx.output[c].script_pubkey = ScriptBuf::new_p2tr(secp(), internal, None);
    p.outputs[c].tap_tree = None;
    refused_with(&f, &p, &mut rng, "certified recovery path")?;

    // The right script but a lying tap_tree.
    let mut p = psbt.clone();
    p.outputs[c].tap_tree = Some(evil_tree);
    refused_with(&f, &p, &mut rng, "tap_tree is not the certified")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Spending through the recovery path
// ---------------------------------------------------------------------------------------

fn recovery_psbt(f: &mut Fixture, rng: &mut StdRng) -> Result<Psbt> {
    let to = foreign_address(rng);
    Ok(f.wallet.build_recovery(
        &to,
        Amount::from_sat(450_000),
        FeeRate::from_sat_per_vb_u32(2),
        true,
    )?)
}

/// Every input is a script-path spend of the recovery leaf: signature(s), the leaf script,
/// a 33-byte control block (single leaf).
fn assert_script_path(tx: &bitcoin::Transaction, signatures: usize) -> Result<()> {
    for (i, input) in tx.input.iter().enumerate() {
        let items: Vec<&[u8]> = input.witness.iter().collect();
        ensure!(
            items.len() >= 3,
            "input {i} is not a script-path spend: {} witness items",
            items.len()
        );
        let control = items[items.len() - 1];
        ensure!(
            control.len() == 33 && control[0] & 0xfe == 0xc0,
            "input {i}: control block"
        );
        let sigs = items[..items.len() - 2]
            .iter()
            .filter(|w| w.len() == 64)
            .count();
        ensure!(sigs == signatures, "input {i}: {sigs} signatures");
    }
    Ok(())
}

#[test]
fn a_recovery_spend_is_signed_by_the_recovery_key_and_verifies() -> Result<()> {
    let mut rng = test_rng("a_recovery_spend_is_signed_by_the_recovery_key_and_verifies");
    let mut f = fixture(1, 1, 20, &mut rng)?;
    let psbt = recovery_psbt(&mut f, &mut rng)?;
    let key = &f.policy.keys()[0];
    for (i, input) in psbt.inputs.iter().enumerate() {
        ensure!(psbt.unsigned_tx.input[i].sequence == Sequence::from_height(20));
        ensure!(input.tap_scripts.len() == 1, "input {i}: one leaf");
        let ours = input
            .tap_key_origins
            .values()
            .filter(|(leaves, (fp, _))| !leaves.is_empty() && *fp == key.fingerprint())
            .count();
        ensure!(ours == 1, "input {i}: the recovery key's origin is listed");
    }
    // The signers' check still accepts it (it is the wallet's, with the certified roots).
    check_psbt_with(&psbt, f.group(), Some(&f.policy))?;

    // Unsigned: not finalizable.
    ensure!(finalize(&mut psbt.clone()).is_err());
    // Another key signs nothing.
    let stranger = secret_of(&master(&mut rng)?)?;
    ensure!(matches!(
        sign_recovery(&mut psbt.clone(), &stranger, &mut rng),
        Err(SignRecoveryError::NothingToSign { .. })
    ));

    // The master key, and the account key with its origin, both sign.
    let account = {
        let m = &f.masters[0];
        let child = m.derive_priv(secp(), &account_path())?;
        format!("[{}/86'/1'/0']{child}", m.fingerprint(secp()))
    };
    for secret in [
        secret_of(&f.masters[0])?,
        account.parse::<RecoverySecret>()?,
    ] {
        let mut p = psbt.clone();
        let signed = sign_recovery(&mut p, &secret, &mut rng)?;
        ensure!(signed.inputs.len() == p.inputs.len() && signed.signatures == p.inputs.len());
        let tx = finalize(&mut p)?;
        assert_script_path(&tx, 1)?;
        consensus_verify(&tx, &f.funding)?;
        ensure!(tx
            .input
            .iter()
            .all(|i| i.sequence == Sequence::from_height(20)));
    }

    // The timelock is in the script: with a smaller nSequence the same signature-less PSBT
    // cannot be finalized once signed (miniscript's satisfier refuses older(20)).
    let mut early = psbt.clone();
    for input in &mut early.unsigned_tx.input {
        input.sequence = Sequence::from_height(19);
    }
    sign_recovery(&mut early, &secret_of(&f.masters[0])?, &mut rng)?;
    ensure!(
        finalize(&mut early).is_err(),
        "older(20) satisfied by nSequence 19"
    );

    // A PSBT naming our origin for another key is refused before signing.
    let mut lying = psbt.clone();
    let (xonly, entry) = lying.inputs[0]
        .tap_key_origins
        .iter()
        .find(|(_, (leaves, _))| !leaves.is_empty())
        .map(|(k, v)| (*k, v.clone()))
        .context("no recovery origin")?;
    lying.inputs[0].tap_key_origins.remove(&xonly);
    let other = Keypair::new(secp(), &mut rng).x_only_public_key().0;
    lying.inputs[0].tap_key_origins.insert(other, entry);
    ensure!(matches!(
        sign_recovery(&mut lying, &secret_of(&f.masters[0])?, &mut rng),
        Err(SignRecoveryError::KeyMismatch { input: 0, .. })
    ));
    Ok(())
}

#[test]
fn a_two_of_two_recovery_needs_both_keys() -> Result<()> {
    let mut rng = test_rng("a_two_of_two_recovery_needs_both_keys");
    let mut f = fixture(2, 2, 6, &mut rng)?;
    let mut psbt = recovery_psbt(&mut f, &mut rng)?;
    sign_recovery(&mut psbt, &secret_of(&f.masters[0])?, &mut rng)?;
    ensure!(
        finalize(&mut psbt.clone()).is_err(),
        "one of two keys finalized"
    );
    sign_recovery(&mut psbt, &secret_of(&f.masters[1])?, &mut rng)?;
    let tx = finalize(&mut psbt)?;
    // multi_a: one signature per key, in key order (for a 2-of-2 both are present).
    assert_script_path(&tx, 2)?;
    consensus_verify(&tx, &f.funding)
}

#[test]
fn recovery_spends_take_only_deep_enough_coins_unless_told() -> Result<()> {
    let mut rng = test_rng("recovery_spends_take_only_deep_enough_coins_unless_told");
    let mut f = fixture(1, 1, 20, &mut rng)?;
    let to = foreign_address(&mut rng);
    // The fixture's coins are unconfirmed.
    match f.wallet.build_recovery(
        &to,
        Amount::from_sat(10_000),
        FeeRate::from_sat_per_vb_u32(2),
        false,
    ) {
        Err(WalletError::NotMature { blocks: 20, .. }) => {}
        other => bail!("expected NotMature, got {other:?}"),
    }
    // A wallet without a recovery path has none to spend through.
    let (_, group, keygen) = certified(None, &mut rng)?;
    let dir = tempfile::tempdir()?;
    let mut plain = CkmWallet::create(
        &dir.path().join("p.sqlite"),
        WalletMeta {
            name: "plain".into(),
            network: NETWORK,
            group,
            roster: keygen.context.roster.clone(),
            electrum: None,
            keygen: Some(keygen),
            epoch: 0,
            transitions: Vec::new(),
            pending: None,
            birth_height: None,
        },
    )?;
    ensure!(matches!(
        plain.build_recovery(
            &to,
            Amount::from_sat(10_000),
            FeeRate::from_sat_per_vb_u32(2),
            true
        ),
        Err(WalletError::NoRecovery(_))
    ));
    Ok(())
}

#[test]
fn the_policy_digest_binds_keys_order_threshold_and_timelock() -> Result<()> {
    let mut rng = test_rng("the_policy_digest_binds_keys_order_threshold_and_timelock");
    let a = public_of(&master(&mut rng)?)?;
    let b = public_of(&master(&mut rng)?)?;
    let p1 = RecoveryPolicy::new(vec![a.clone(), b.clone()], 1, 10)?;
    let p2 = RecoveryPolicy::new(vec![b, a.clone()], 1, 10)?;
    let p3 = RecoveryPolicy::new(vec![a], 1, 10)?;
    ensure!(p1.digest() != p2.digest() && p1.digest() != p3.digest());
    ensure!(p1.digest() == RecoveryPolicy::new(p1.keys().to_vec(), 1, 10)?.digest());
    Ok(())
}

/// Every export format of a recovery wallet carries the recovery leaf: parsed back, each
/// gives the wallet's own receive and change descriptors (a watch-only wallet imported from
/// an export without the leaf would watch different addresses).
#[test]
fn exports_of_a_recovery_wallet_carry_the_recovery_leaf() -> Result<()> {
    use ckm::wallet::export::{
        bip388_policy, multipath_descriptor, read_descriptor_file, sparrow_file,
    };
    let mut rng = test_rng("exports");
    for (keys, threshold) in [(1, 1), (3, 2)] {
        let f = fixture(keys, threshold, 144, &mut rng)?;
        let meta = f.wallet.meta();
        let (external, internal) = meta.descriptors()?;
        let expected = vec![external, internal];
        let singles = |d: Descriptor<DescriptorPublicKey>| -> Result<Vec<String>> {
            Ok(d.into_single_descriptors()?
                .iter()
                .map(ToString::to_string)
                .collect())
        };
        let multipath = multipath_descriptor(meta)?;
        ensure!(
            multipath.contains("older(144)") && multipath.contains("/<0;1>/*"),
            "{multipath}"
        );
        ensure!(singles(Descriptor::from_str(&multipath)?)? == expected);
        let policy = bip388_policy(meta);
        ensure!(policy.keys_info.len() == 1 + keys, "{policy:?}");
        ensure!(
            policy.descriptor_template.starts_with("tr(@0/**,and_v(v:")
                && policy.descriptor_template.contains("@1/**"),
            "{}",
            policy.descriptor_template
        );
        ensure!(singles(policy.to_descriptor()?)? == expected);
        ensure!(singles(read_descriptor_file(&sparrow_file(meta)?)?)? == expected);
    }
    Ok(())
}
