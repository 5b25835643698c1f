//! Share backups and coordinator recovery through the real command line, with real
//! `ckm signer serve` processes (no bitcoind: payments are made-up funding checked with
//! libbitcoinconsensus; `tests/regtest_backup.rs` mines them):
//!
//! 1. `signer backup --split 2of3` writes three `ur:envelope` files, mode 0600. The signer's
//!    home is wiped; `signer restore` with one file, with files of two backups, with a
//!    corrupted file, and without the backup passphrase of a locked backup each fails with
//!    its own message and writes nothing; two files of one backup restore the same identity
//!    and wallet (a second restore into it is refused; without --yes nothing is restored);
//!    the restored signer serves but signs only after `wallet confirm-restored` (refused
//!    with too few members online), then co-signs; its audit records start with the
//!    restore and hold the confirmation.
//! 2. `wallet export --format ur|envelope` round-trips through `wallet recover --from`; a
//!    coordinator with a new identity gets nothing from the signers until their operators
//!    allow it (transport, then wallet), then `wallet recover --signer …` rebuilds the same
//!    descriptors and roster and the recovered coordinator co-signs.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use ckm::signer::audit::{self, AuditKind};
use ckm::signer::home::SignerHome;
use ckm::signer::legacy::open_migrating;
use cluster::*;

fn files_of(v: &serde_json::Value) -> Result<Vec<PathBuf>> {
    Ok(string_array(&v["files"])?
        .into_iter()
        .map(PathBuf::from)
        .collect())
}

/// `signer restore FILES…` into `home` must fail, mention `needle`, and leave no home.
fn restore_refused(home: &Path, files: &[&Path], extra: &[&str], needle: &str) -> Result<()> {
    let mut args = vec!["--json", "signer", "restore"];
    for f in files {
        args.push(path_str(f)?);
    }
    args.extend_from_slice(extra);
    let out = ckm(home, &args)?;
    ensure!(!out.status.success(), "restore {files:?} succeeded");
    let err = json_error(&out)?;
    ensure!(
        err.contains(needle),
        "restore {files:?}: the error does not say {needle:?}: {err}"
    );
    ensure!(
        !SignerHome::dir_of(home).exists(),
        "restore {files:?} left {} behind",
        SignerHome::dir_of(home).display()
    );
    Ok(())
}

#[test]
fn backup_wipe_restore_and_cosign() -> Result<()> {
    let mut c = Cluster::with_wallet(3, 2)?;
    let s1 = c.signers[0].home.clone();
    let id1 = c.signers[0].identity.to_string();
    let before = ckm_json(&s1, &["signer", "wallets"])?;
    let backups = c.dir.path().join("backups");
    let a = ckm_json(
        &s1,
        &[
            "signer",
            "backup",
            "--split",
            "2of3",
            "--out",
            path_str(&backups.join("a"))?,
        ],
    )?;
    ensure!(a["identity"] == id1.as_str() && a["threshold"] == 2, "{a}");
    let a = files_of(&a)?;
    ensure!(a.len() == 3);
    for f in &a {
        let mode = std::fs::metadata(f)?.permissions().mode() & 0o777;
        ensure!(mode == 0o600, "{} has mode {mode:o}", f.display());
        let text = std::fs::read_to_string(f)?;
        ensure!(text.starts_with("ur:envelope/") && text.lines().count() == 1);
    }
    let b = files_of(&ckm_json(
        &s1,
        &[
            "signer",
            "backup",
            "--split",
            "2of3",
            "--out",
            path_str(&backups.join("b"))?,
        ],
    )?)?;
    let pass = c.dir.path().join("backup.pass");
    std::fs::write(&pass, "backup passphrase\n")?;
    let locked = files_of(&ckm_json(
        &s1,
        &[
            "signer",
            "backup",
            "--split",
            "2of2",
            "--out",
            path_str(&backups.join("locked"))?,
            "--backup-passphrase-file",
            path_str(&pass)?,
        ],
    )?)?;

    // The signer's home is lost.
    c.signers[0].stop()?;
    std::fs::remove_dir_all(&s1)?;
    restore_refused(&s1, &[&a[0]], &[], "needs 2 shares; 1 given")?;
    restore_refused(&s1, &[&a[0], &b[1]], &[], "another backup")?;
    let corrupted = c.dir.path().join("corrupted.ur");
    let mut text = std::fs::read(&a[1])?;
    let at = text.len() / 2;
    text[at] = if text[at] == b'a' { b'o' } else { b'a' };
    std::fs::write(&corrupted, &text)?;
    restore_refused(&s1, &[&a[0], &corrupted], &[], "corrupted")?;
    restore_refused(&s1, &[&locked[0], &locked[1]], &[], "backup passphrase")?;
    let wrong = c.dir.path().join("wrong.pass");
    std::fs::write(&wrong, "not it\n")?;
    restore_refused(
        &s1,
        &[&locked[0], &locked[1]],
        &["--backup-passphrase-file", path_str(&wrong)?],
        "does not open",
    )?;

    // Two files of one backup restore it (the locked one with its passphrase, elsewhere).
    let elsewhere = c.dir.path().join("s1-locked");
    let v = ckm_json(
        &elsewhere,
        &[
            "signer",
            "restore",
            path_str(&locked[1])?,
            path_str(&locked[0])?,
            "--backup-passphrase-file",
            path_str(&pass)?,
            "--yes",
        ],
    )?;
    ensure!(v["identity"] == id1.as_str(), "{v}");
    // Without a terminal and without --yes, what the backup brings back is not confirmed:
    // nothing is written.
    restore_refused(&s1, &[&a[2], &a[0]], &[], "pass --yes")?;
    let v = ckm_json(
        &s1,
        &[
            "signer",
            "restore",
            path_str(&a[2])?,
            path_str(&a[0])?,
            "--yes",
        ],
    )?;
    ensure!(v["identity"] == id1.as_str(), "{v}");
    ensure!(SignerHome::public_identity(&s1)?.to_string() == id1);
    ensure!(
        ckm_json(&s1, &["signer", "wallets"])? == before,
        "the restored wallets differ"
    );
    restore_refused_existing(&s1, &a)?;

    // The restored signer serves, but signs only once the other members confirmed its
    // epoch: with signer 2 down, signer 3 alone is one statement short of n − t + 1 = 2.
    c.signers[0].relaunch_same_port(Kind::Honest)?;
    c.sync_roster()?;
    c.signers[1].stop()?;
    let p = fund_and_build(&c)?;
    let input = c.write_psbt("unsigned.psbt", &p.psbt)?;
    let out = c.dir.path().join("signed.psbt");
    let refused = c.sign(&input, &out, &[])?;
    ensure!(
        !refused.status.success(),
        "an unconfirmed restored signer signed"
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    ensure!(err.contains("confirm-restored"), "{err}");
    let confirm = ["--json", "wallet", "confirm-restored", "--signer", "1"];
    let short = ckm(&c.coord, &confirm)?;
    ensure!(!short.status.success(), "confirmed with one statement");
    let err = json_error(&short)?;
    ensure!(err.contains("are needed"), "{err}");
    c.signers[1].relaunch_same_port(Kind::Honest)?;
    let done = ckm_json(&c.coord, &confirm[1..])?;
    ensure!(done["confirmed_by"] == serde_json::json!([2, 3]), "{done}");
    let again = ckm_json(&c.coord, &confirm[1..])?;
    ensure!(again["already_confirmed"] == true, "{again}");
    c.signers[1].stop()?;
    let report = c.sign_ok(&input, &out, &[])?;
    let tx = check_signed(&out, &p)?;
    let used = check_report(&c, &report, &tx)?;
    ensure!(used == vec![1, 3], "{used:?}");
    c.signers[0].stop()?;
    let home = open_migrating(&s1, PASSPHRASE.as_bytes(), &mut rand::rngs::OsRng)?;
    let kinds: Vec<AuditKind> = home
        .db()
        .read(audit::records)?
        .iter()
        .map(|r| r.event.kind)
        .collect();
    ensure!(
        kinds.first() == Some(&AuditKind::Wallet)
            && kinds.get(1) == Some(&AuditKind::Restored)
            && kinds.contains(&AuditKind::Confirmed)
            && kinds.contains(&AuditKind::Signed),
        "{kinds:?}"
    );
    home.check_state(&mut rand::thread_rng())?;
    Ok(())
}

/// A restore into a home that is already a signer home is refused and changes nothing.
fn restore_refused_existing(home: &Path, files: &[PathBuf]) -> Result<()> {
    let out = ckm(
        home,
        &[
            "--json",
            "signer",
            "restore",
            path_str(&files[0])?,
            path_str(&files[1])?,
        ],
    )?;
    ensure!(!out.status.success(), "restored over an existing home");
    let err = json_error(&out)?;
    ensure!(err.contains("exists already"), "{err}");
    Ok(())
}

fn descriptors(home: &Path) -> Result<(String, String, Vec<String>)> {
    let v = ckm_json(home, &["wallet", "descriptor"])?;
    let ids = v["signers"]
        .as_array()
        .context("signers")?
        .iter()
        .map(|s| format!("{}:{}", s["index"], s["identity"]))
        .collect();
    Ok((
        json_str(&v, "external")?.to_string(),
        json_str(&v, "internal")?.to_string(),
        ids,
    ))
}

#[test]
fn export_and_recover_the_coordinator_wallet() -> Result<()> {
    let mut c = Cluster::with_wallet(3, 2)?;
    let original = descriptors(&c.coord)?;
    let dir = c.dir.path().to_path_buf();

    // Exported records rebuild the wallet offline.
    let ur = dir.join("vault.ur");
    let env = dir.join("vault.envelope");
    ckm_json(
        &c.coord,
        &[
            "wallet",
            "export",
            "--format",
            "ur",
            "--out",
            path_str(&ur)?,
        ],
    )?;
    ckm_json(
        &c.coord,
        &[
            "wallet",
            "export",
            "--format",
            "envelope",
            "--out",
            path_str(&env)?,
        ],
    )?;
    ensure!(std::fs::read_to_string(&ur)?.starts_with("ur:envelope/"));
    let out = ckm(&c.coord, &["wallet", "export", "--format", "envelope"])?;
    ensure!(!out.status.success(), "a binary envelope went to stdout");
    // Into a home that kept the coordinator's identity, with the signers' keys pinned.
    for (name, file) in [("from-ur", &ur), ("from-envelope", &env)] {
        let home = dir.join(name);
        std::fs::create_dir_all(&home)?;
        for f in ["identity.key", "identity.pub"] {
            std::fs::copy(c.coord.join(f), home.join(f))?;
        }
        let mut args = vec!["wallet", "recover", "--from", path_str(file)?];
        let keys: Vec<String> = c.signers.iter().map(|s| s.identity.to_string()).collect();
        for k in &keys {
            args.extend(["--trust", k.as_str()]);
        }
        ckm_json(&home, &args)?;
        ensure!(descriptors(&home)? == original, "{name}");
    }

    // A coordinator with a new identity (its home was lost entirely).
    let coord2 = dir.join("coord2");
    let id2 = json_str(&ckm_json(&coord2, &["id"])?, "identity")?.to_string();
    let specs: Vec<String> = c.signers.iter().map(|s| s.spec()).collect();
    let recover = |home: &Path, specs: &[String]| {
        let mut args = vec!["--json", "wallet", "recover"];
        for s in specs {
            args.extend(["--signer", s.as_str()]);
        }
        ckm(home, &args)
    };
    // Not allowed by the signers at all: nothing.
    let out = recover(&coord2, &specs)?;
    ensure!(!out.status.success(), "a stranger recovered the wallet");
    ensure!(json_error(&out)?.contains("no signer returned"));
    // Allowed to talk to the signers, but the wallet is not bound to it: still nothing.
    for s in &mut c.signers {
        s.extra_coordinators.push(id2.clone());
        s.restart()?;
    }
    let specs: Vec<String> = c.signers.iter().map(|s| s.spec()).collect();
    let out = recover(&coord2, &specs)?;
    ensure!(
        !out.status.success(),
        "an unbound coordinator recovered the wallet"
    );
    ensure!(ckm_json(&coord2, &["wallet", "list"])? == serde_json::json!([]));
    // Each operator binds the wallet to it: the wallet comes back.
    for s in &c.signers {
        ckm_json(
            &s.home,
            &[
                "signer",
                "wallet",
                "allow-coordinator",
                "--wallet",
                WALLET,
                &id2,
            ],
        )?;
    }
    let out = recover(&coord2, &specs[..2])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["recovered"][0]["wallet"] == WALLET, "{v}");
    ensure!(
        descriptors(&coord2)? == original,
        "other descriptors or roster"
    );
    ensure!(
        !recover(&coord2, &specs)?.status.success(),
        "recovered a wallet the home already has"
    );

    // The recovered coordinator co-signs.
    c.coord = coord2;
    c.coord_id = id2;
    c.sync_roster()?;
    let p = fund_and_build(&c)?;
    let input = c.write_psbt("unsigned.psbt", &p.psbt)?;
    let out = c.dir.path().join("signed.psbt");
    let report = c.sign_ok(&input, &out, &[])?;
    let tx = check_signed(&out, &p)?;
    check_report(&c, &report, &tx)?;
    Ok(())
}
