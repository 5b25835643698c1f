//! `wallet recover --from FILE` trusts only the signers the user pins, tested from the
//! attacker's side with real `ckm signer serve` processes (no bitcoind):
//!
//! - An attacker runs its own three signers and coordinator and certifies a wallet of the same
//!   name with its own keys and its own timelocked recovery key: the file checks out offline
//!   (its certificates are the attacker's). Given to a coordinator that pins the genuine
//!   signers' identity keys, by key alone or with their addresses, it is refused and nothing
//!   is stored.
//! - Without a pin, `--from` is refused and the error names `--trust`.
//! - A genuine file of an older epoch (a refresh ran since) is refused: the signers are at
//!   another epoch.
//! - The genuine file is stored when at least t = 2 pinned signers confirm it, refused (and
//!   nothing stored) when only one can.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;

use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{ensure, Result};
use cluster::*;

/// `wallet export --format ur` of `home`'s only wallet, to `file`.
fn export(home: &Path, file: &Path) -> Result<()> {
    ckm_json(
        home,
        &[
            "wallet",
            "export",
            "--format",
            "ur",
            "--out",
            path_str(file)?,
        ],
    )?;
    Ok(())
}

/// A coordinator home that lost its wallet database but kept its identity (`identity.key`):
/// the signers still answer it.
fn lost_database(c: &Cluster, name: &str) -> Result<PathBuf> {
    let home = c.dir.path().join(name);
    std::fs::create_dir_all(&home)?;
    for f in ["identity.key", "identity.pub"] {
        std::fs::copy(c.coord.join(f), home.join(f))?;
    }
    Ok(home)
}

fn recover(home: &Path, file: &Path, trust: &[String]) -> Result<Output> {
    let mut args = vec!["--json", "wallet", "recover", "--from", path_str(file)?];
    for t in trust {
        args.extend(["--trust", t.as_str()]);
    }
    args.extend(["--timeout", "10"]);
    ckm(home, &args)
}

/// `recover` must fail, say `needle`, and leave `home` without a wallet.
fn refused(home: &Path, file: &Path, trust: &[String], needle: &str) -> Result<()> {
    let out = recover(home, file, trust)?;
    ensure!(
        !out.status.success(),
        "recovered {} with pins {trust:?}",
        file.display()
    );
    let err = json_error(&out)?;
    ensure!(
        err.contains(needle),
        "the error does not say {needle:?}: {err}"
    );
    ensure!(
        ckm_json(home, &["wallet", "list"])? == serde_json::json!([]),
        "a refused recover stored a wallet"
    );
    Ok(())
}

/// The descriptors and the roster's (index, identity) pairs.
fn descriptors(home: &Path) -> Result<serde_json::Value> {
    let v = ckm_json(home, &["wallet", "descriptor"])?;
    let roster: Vec<serde_json::Value> = v["signers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| serde_json::json!([s["index"], s["identity"]]))
                .collect()
        })
        .unwrap_or_default();
    Ok(serde_json::json!([v["external"], v["internal"], roster]))
}

#[test]
fn recover_from_a_file_needs_t_pinned_signers_to_confirm_it() -> Result<()> {
    let mut c = Cluster::with_wallet(3, 2)?;
    let dir = c.dir.path().to_path_buf();
    let old = dir.join("epoch0.ur");
    export(&c.coord, &old)?;
    ckm_json(&c.coord, &["wallet", "refresh"])?;
    let genuine = dir.join("vault.ur");
    export(&c.coord, &genuine)?;
    let original = descriptors(&c.coord)?;
    let keys: Vec<String> = c.signers.iter().map(|s| s.identity.to_string()).collect();
    let specs: Vec<String> = c.signers.iter().map(|s| s.spec()).collect();

    // The attacker's wallet: its keys, its recovery leaf, the victim's wallet name.
    let (_master, attacker_recovery) = recovery_key()?;
    let evil = Cluster::with_recovery_wallet(&attacker_recovery, 6)?;
    let forged = dir.join("forged.ur");
    export(&evil.coord, &forged)?;
    // It checks out offline: only the pins can tell.
    ensure!(ckm::wallet::record::from_bytes(&std::fs::read(&forged)?).is_ok());

    let home = lost_database(&c, "lost")?;
    refused(&home, &genuine, &[], "--trust")?;
    refused(&home, &forged, &keys, "not in the file's roster")?;
    refused(&home, &forged, &specs, "holds no wallet with group key")?;
    // Pins that include the attacker's signers (say the user was tricked into one wrong
    // key per signer but one): they hold no wallet bound to this coordinator, so one genuine
    // confirmation remains, short of t.
    let evil_keys: Vec<String> = evil
        .signers
        .iter()
        .map(|s| s.identity.to_string())
        .collect();
    let mixed = [vec![keys[0].clone()], evil_keys].concat();
    refused(&home, &forged, &mixed, "fewer than its threshold 2")?;
    refused(
        &home,
        &old,
        &keys,
        "it is at epoch 1, the record at epoch 0",
    )?;

    // Only one pinned signer up: fewer than t = 2 confirm.
    c.signers[1].stop()?;
    c.signers[2].stop()?;
    refused(
        &home,
        &genuine,
        &keys,
        "only 1 of the pinned signers confirm",
    )?;

    // A second one back (on a new port: pinned with its address): stored.
    c.signers[2].launch()?;
    let trust = [keys[0].clone(), keys[1].clone(), c.signers[2].spec()];
    let out = recover(&home, &genuine, &trust)?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["recovered"][0]["wallet"] == WALLET, "{v}");
    ensure!(v["recovered"][0]["epoch"] == 1, "{v}");
    ensure!(
        descriptors(&home)? == original,
        "other descriptors or roster"
    );
    Ok(())
}
