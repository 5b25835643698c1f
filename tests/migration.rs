//! A signer home of the v1 file layout (wallet files, `policy.sealed`, hash-chained
//! `audit.log`; written by ckm 2fa2909, see `tests/data/SOURCES.md`) opens with this build and
//! is converted into `signer.db` without losing anything: both wallets, their shares (which
//! still co-sign a PSBT that libbitcoinconsensus accepts), the policy, and every audit record
//! (re-chained under the keyed MAC, amounts counted as payments plus fee). The old files are
//! kept under `legacy-v1/`; opening again changes nothing; the CLI lists the wallets.

#[path = "common/consensus.rs"]
mod consensus;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use bdk_wallet::KeychainKind;
use bitcoin::{Amount, FeeRate, Network};
use ckm::frost::shares::GroupPublic;
use ckm::keys::{GroupKey, Roster, RosterEntry};
use ckm::signer::audit::{self, AuditKind};
use ckm::signer::home::SignerHome;
use ckm::signer::legacy::{list_wallets, open_migrating};
use ckm::wallet::{CkmWallet, WalletMeta};
use consensus::{consensus_verify, made_up_funding};

const PASSPHRASE: &[u8] = b"legacy";

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[test]
fn a_v1_signer_home_is_converted_without_losing_a_wallet() -> Result<()> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/legacy-signer-homes");
    let dir = tempfile::tempdir()?;
    copy_dir(&fixture, dir.path())?;
    let public: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("public.json"))?)?;
    let vault: GroupPublic = serde_json::from_value(public["vault"].clone())?;
    let vault_key = GroupKey::of(&vault);

    // Before: the v1 layout, listed from its files.
    let s1 = dir.path().join("s1");
    let before = list_wallets(&SignerHome::dir_of(&s1))?;
    ensure!(before.len() == 2, "{before:?}");
    ensure!(!SignerHome::dir_of(&s1).join("signer.db").exists());

    let mut shares = Vec::new();
    for name in ["s1", "s2"] {
        let home_dir = dir.path().join(name);
        let before = list_wallets(&SignerHome::dir_of(&home_dir))?;
        let home = open_migrating(&home_dir, PASSPHRASE, &mut rand::rngs::OsRng)?;
        let signer_dir = SignerHome::dir_of(&home_dir);
        ensure!(signer_dir.join("signer.db").exists());
        ensure!(signer_dir.join("legacy-v1").join("audit.log").exists());
        ensure!(!signer_dir.join("audit.log").exists() && !signer_dir.join("wallets").exists());

        let wallets = home.wallets()?;
        let names: Vec<&str> = wallets.iter().map(|w| w.name.as_str()).collect();
        ensure!(names == ["petty", "vault"], "{names:?}");
        ensure!(
            wallets == before,
            "the public records changed in the conversion"
        );
        for w in &wallets {
            let share = home.load_share(&w.group_key)?;
            ensure!(GroupKey::of(share.group()) == w.group_key);
        }
        shares.push(home.load_share(&vault_key)?);

        let p = home.policy(&vault_key)?;
        ensure!(
            p.daily_limit_sats == Some(5_000_000) && p.max_fee_sats == Some(20_000),
            "vault policy lost: {p:?}"
        );
        ensure!(home.policies()?.len() == 1);

        // Every v1 record, re-chained, plus the conversion's own record; the state checks out.
        let mut records = Vec::new();
        home.db().read(|c| {
            Ok(audit::verify_chain(c, home.audit_key(), |r| {
                records.push(r.clone())
            }))
        })??;
        let signed: Vec<_> = records
            .iter()
            .filter(|r| r.event.kind == AuditKind::Signed)
            .collect();
        ensure!(signed.len() == 2, "{records:?}");
        ensure!(signed[0].event.outflow_sats == 100_000 + 300);
        ensure!(signed[1].event.outflow_sats == 250_000 + 300);
        ensure!(records.last().map(|r| r.event.kind) == Some(AuditKind::Migrated));
        home.check_state(&mut rand::thread_rng())?;
        // The imported spends count in the window queries (their times are old: none now).
        let recent = home
            .db()
            .read(|c| audit::signed_since(c, &vault_key.to_string(), 0))?;
        ensure!(recent.len() == 2);
        drop(home);

        // Opening again changes nothing.
        let again = open_migrating(&home_dir, PASSPHRASE, &mut rand::rngs::OsRng)?;
        ensure!(again.wallets()? == wallets);
        let count = again.db().read(audit::tail)?.0;
        ensure!(count == records.len() as u64);
    }

    // The two converted shares co-sign a PSBT of the 2-of-3 wallet.
    let wdir = tempfile::tempdir()?;
    let roster = Roster::new(
        (1..=3u16)
            .map(|index| RosterEntry {
                index,
                url: format!("http://127.0.0.1:{}", 30_000 + index),
                identity: ckm::identity::IdentityKey::generate(&mut rand::thread_rng()).public(),
                tls_sha256: None,
            })
            .collect(),
    )?;
    let mut wallet = CkmWallet::create(
        &wdir.path().join("vault.sqlite"),
        WalletMeta {
            name: "vault".into(),
            network: Network::Regtest,
            group: vault.clone(),
            roster,
            electrum: None,
            keygen: None,
            epoch: 0,
            transitions: Vec::new(),
            pending: None,
            birth_height: None,
        },
    )?;
    let spk = wallet
        .bdk()
        .peek_address(KeychainKind::External, 0)
        .address
        .script_pubkey();
    let tx = made_up_funding(&mut rand::thread_rng(), spk, 500_000);
    let mut funding = HashMap::new();
    funding.insert(
        bitcoin::OutPoint::new(tx.compute_txid(), 0),
        tx.output[0].clone(),
    );
    wallet
        .bdk_mut()
        .apply_unconfirmed_txs([(tx, 1_700_000_000u64)]);
    let to = wallet.bdk().peek_address(KeychainKind::External, 5).address;
    let mut psbt = wallet.build_payment(
        &to,
        Amount::from_sat(100_000),
        FeeRate::from_sat_per_vb(2).context("fee rate")?,
    )?;
    let refs: Vec<&ckm::frost::shares::KeyShare> = shares.iter().collect();
    let signed = ckm::psbt::sign_in_memory(&mut psbt, &refs, &mut rand::thread_rng())?;
    consensus_verify(&signed, &funding)?;

    // The CLI lists the converted wallets without the passphrase.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ckm"))
        .args(["--json", "--home"])
        .arg(dir.path().join("s2"))
        .args(["signer", "wallets"])
        .env_remove("CKM_PASSPHRASE")
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(listed.as_array().map(Vec::len) == Some(2), "{listed}");
    Ok(())
}
