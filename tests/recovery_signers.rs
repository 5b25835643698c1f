//! The recovery path against real `ckm signer serve` processes: a wallet created by
//! `ckm wallet create --recovery-key …` is co-signed on the key path with each input's own
//! merkle root; a malicious coordinator (the harness, holding the coordinator's identity key
//! and talking to the signers directly) that puts any other merkle root on an input, or
//! sends change to our key under another script tree, is refused by every signer; and
//! `ckm signer address` on each signer shows the coordinator's addresses.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bdk_wallet::KeychainKind;
use bitcoin::{Psbt, ScriptBuf};
use ckm::keys::{GroupKey, WalletPath};
use ckm::message::{CoordinatorToSigner, ErrorCode, SessionId, SignerToCoordinator, WalletRef};
use ckm::net::client::{CallError, Client};
use ckm::recovery::{RecoveryPolicy, WalletScripts};
use ckm::wallet::{CkmWallet, RosterEntry};
use cluster::*;

const BLOCKS: u16 = 10;

/// Sends round 1 of a signing session for `psbt` to every signer, as the coordinator.
fn commit_everywhere(
    c: &Cluster,
    psbt: &Psbt,
) -> Result<Vec<Result<SignerToCoordinator, CallError>>> {
    let wallet = CkmWallet::load(&c.wallet_path())?;
    let client = Client::new(c.coordinator_key()?, Duration::from_secs(20))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let message = CoordinatorToSigner::SignCommit {
        session: SessionId::random(&mut rand::thread_rng()),
        wallet: WalletRef {
            name: WALLET.into(),
            group_key: GroupKey::of(&wallet.meta().group),
            epoch: wallet.meta().epoch,
        },
        psbt: psbt.to_string(),
    };
    let mut out = Vec::new();
    for (i, s) in c.signers.iter().enumerate() {
        let entry: RosterEntry = serde_json::from_value(serde_json::json!({
            "index": i + 1,
            "url": s.url,
            "identity": s.identity.to_string(),
        }))?;
        out.push(rt.block_on(client.call(&entry, &message)));
    }
    Ok(out)
}

fn all_refuse(c: &Cluster, psbt: &Psbt, needle: &str) -> Result<()> {
    for (i, reply) in commit_everywhere(c, psbt)?.into_iter().enumerate() {
        match reply {
            Err(CallError::Refused { code, message, .. }) => {
                ensure!(code == ErrorCode::Refused, "signer {}: {code:?}", i + 1);
                ensure!(message.contains(needle), "signer {}: {message}", i + 1);
            }
            other => bail!("signer {} did not refuse: {other:?}", i + 1),
        }
    }
    Ok(())
}

fn path_of(psbt: &Psbt, input: usize) -> Result<WalletPath> {
    let i = &psbt.inputs[input];
    let internal = i.tap_internal_key.context("no internal key")?;
    let (_, (_, path)) = i.tap_key_origins.get(&internal).context("no origin")?;
    Ok(WalletPath::from_derivation(path)?)
}

#[test]
fn every_signer_refuses_merkle_roots_other_than_the_certified_policy() -> Result<()> {
    let (_, key) = recovery_key()?;
    let c = Cluster::with_recovery_wallet(&key, BLOCKS)?;
    let p = fund_and_build(&c)?;
    let group = p.group.clone();
    let policy = RecoveryPolicy::new(vec![key], 1, BLOCKS)?;
    let scripts = WalletScripts::new(&group, NETWORK, Some(&policy))?;

    // The control: every signer commits to the untouched PSBT…
    for (i, reply) in commit_everywhere(&c, &p.psbt)?.into_iter().enumerate() {
        ensure!(
            matches!(reply, Ok(SignerToCoordinator::SignCommitments { .. })),
            "signer {} refused the honest PSBT: {reply:?}",
            i + 1
        );
    }
    // …and `psbt sign` co-signs it: one 64-byte key-path signature per input, verified by
    // libbitcoinconsensus against the outputs spent.
    let input = c.write_psbt("pay.psbt", &p.psbt)?;
    let out = c.dir.path().join("pay.signed.psbt");
    let report = c.sign_ok(&input, &out, &[])?;
    let tx = check_signed(&out, &p)?;
    check_report(&c, &report, &tx)?;
    ensure!(tx
        .input
        .iter()
        .all(|i| i.witness.iter().all(|w| w.len() == 64)));

    // Input 0 with the root of another index of the certified policy.
    let path = path_of(&p.psbt, 0)?;
    let mut evil = p.psbt.clone();
    evil.inputs[0].tap_merkle_root = scripts
        .at(&WalletPath {
            keychain: path.keychain,
            index: path.index + 1,
        })?
        .merkle_root;
    all_refuse(&c, &evil, "tap_merkle_root is not the certified")?;

    // Input 0 with the root of the coordinator's own recovery key.
    let (_, coordinator_key) = recovery_key()?;
    let theirs = RecoveryPolicy::new(vec![coordinator_key], 1, 1)?;
    let their_scripts = WalletScripts::new(&group, NETWORK, Some(&theirs))?;
    let mut evil = p.psbt.clone();
    evil.inputs[0].tap_merkle_root = their_scripts.at(&path)?.merkle_root;
    all_refuse(&c, &evil, "tap_merkle_root is not the certified")?;

    // Input 0 with no root (a key-only spend of a key that is never key-only).
    let mut evil = p.psbt.clone();
    evil.inputs[0].tap_merkle_root = None;
    all_refuse(&c, &evil, "no tap_merkle_root")?;

    // Change to our key under the coordinator's script tree.
    let change = p
        .psbt
        .outputs
        .iter()
        .position(|o| o.tap_internal_key.is_some() && o.tap_tree.is_some())
        .context("no change output")?;
    let checked = ckm::psbt::check_psbt_with(&p.psbt, &group, Some(&policy))?;
    let change_path = checked.outputs()[change]
        .change_path
        .context("change not recognised")?;
    let theirs_at = their_scripts.at(&change_path)?;
    let mut evil = p.psbt.clone();
    evil.unsigned_tx.output[change].script_pubkey = theirs_at.script_pubkey;
    evil.outputs[change].tap_tree = None;
    all_refuse(&c, &evil, "certified recovery path")?;

    // Key-only change.
    let mut evil = p.psbt.clone();
    evil.unsigned_tx.output[change].script_pubkey =
        ScriptBuf::new_p2tr(ckm::frost::shares::secp(), theirs_at.internal_key, None);
    evil.outputs[change].tap_tree = None;
    all_refuse(&c, &evil, "certified recovery path")?;
    Ok(())
}

#[test]
fn signer_address_shows_the_coordinators_addresses() -> Result<()> {
    let (_, key) = recovery_key()?;
    let c = Cluster::with_recovery_wallet(&key, BLOCKS)?;
    let desc = ckm_json(&c.coord, &["wallet", "descriptor"])?;
    ensure!(
        json_str(&desc, "external")?.contains(&format!("{key}/0/*")),
        "{desc}"
    );
    ensure!(
        desc["recovery"]["after_blocks"] == serde_json::json!(BLOCKS),
        "{desc}"
    );
    // Every signer lists the certified recovery key and timelock, for its owner to check.
    for s in &c.signers {
        let listed = ckm_json(&s.home, &["signer", "wallets"])?;
        let r = &listed[0]["recovery"];
        ensure!(
            r["keys"] == serde_json::json!([key.to_string()]),
            "{listed}"
        );
        ensure!(r["after_blocks"] == serde_json::json!(BLOCKS), "{listed}");
    }
    let signer_address = |s: usize, index: u32, change: bool| -> Result<String> {
        let index = index.to_string();
        let mut args = vec!["signer", "address", "--wallet", WALLET, "--index", &index];
        if change {
            args.push("--change");
        }
        let v = ckm_json(&c.signers[s].home, &args)?;
        ensure!(v["recovery"].is_string(), "{v}");
        Ok(json_str(&v, "address")?.to_string())
    };
    for index in 0..10u32 {
        let v = ckm_json(&c.coord, &["wallet", "address"])?;
        ensure!(v["index"] == serde_json::json!(index), "{v}");
        let coordinator = json_str(&v, "address")?;
        // Every signer at the first indexes, signer 1 (unlocking costs Argon2) after.
        let signers = if index < 2 { 0..3 } else { 0..1 };
        for s in signers {
            ensure!(
                signer_address(s, index, false)? == coordinator,
                "signer {} differs at index {index}",
                s + 1
            );
        }
    }
    // Change addresses too.
    let wallet = CkmWallet::load(&c.wallet_path())?;
    for index in [0u32, 5] {
        let expected = wallet.bdk().peek_address(KeychainKind::Internal, index);
        ensure!(signer_address(1, index, true)? == expected.address.to_string());
    }
    Ok(())
}

#[test]
fn the_recovery_path_survives_refresh_and_enrolment() -> Result<()> {
    let (_, key) = recovery_key()?;
    let mut c = Cluster::with_recovery_wallet(&key, BLOCKS)?;
    let funding = fund(&c, &FUNDS)?;
    let before = ckm_json(&c.coord, &["wallet", "descriptor"])?;
    let spend = |c: &Cluster, name: &str, sats: u64| -> Result<Vec<u16>> {
        let p = c.pay(&funding, &foreign_address(), sats, 2)?;
        ensure!(
            p.psbt.inputs.iter().all(|i| i.tap_merkle_root.is_some()),
            "the wallet's inputs commit to the recovery leaf"
        );
        let input = c.write_psbt(&format!("{name}.psbt"), &p.psbt)?;
        let out = c.dir.path().join(format!("{name}.signed.psbt"));
        let v = c.sign_ok(&input, &out, &[])?;
        check_signed(&out, &p)?;
        u16_array(&v["signer_indexes"])
    };

    // A refresh changes every share, not the key, the chain code or the certified policy.
    let v = ckm_json(&c.coord, &["wallet", "refresh"])?;
    ensure!(v["epoch"] == 1, "{v}");
    let after = ckm_json(&c.coord, &["wallet", "descriptor"])?;
    ensure!(after["external"] == before["external"], "{after}");
    ensure!(ckm_json(&c.coord, &["wallet", "verify"])?["verified"] == true);
    spend(&c, "after-refresh", 20_000)?;

    // A newcomer learns the policy from the certified history it joins: with signers 1 and 2
    // stopped, 3 and the new 4 co-sign (4 would refuse every root if it did not know it),
    // and 4 shows the coordinator's addresses.
    let s4 = c.new_peer("s4")?;
    let v = ckm_json(&c.coord, &["wallet", "add-signer", &s4.spec()])?;
    ensure!(
        v["epoch"] == 2 && v["transition"] == "enrolment of signer 4 with a refresh",
        "{v}"
    );
    c.signers.push(s4);
    c.signers[0].stop()?;
    c.signers[1].stop()?;
    let used = spend(&c, "after-enrol", 21_000)?;
    ensure!(used == vec![3, 4], "{used:?}");
    let wallet = CkmWallet::load(&c.wallet_path())?;
    for index in [0u32, 3] {
        let expected = wallet.bdk().peek_address(KeychainKind::External, index);
        let i = index.to_string();
        let v = ckm_json(
            &c.signers[3].home,
            &["signer", "address", "--wallet", WALLET, "--index", &i],
        )?;
        ensure!(
            json_str(&v, "address")? == expected.address.to_string(),
            "{v}"
        );
    }
    Ok(())
}
