//! Certified key generation and wallet binding through the real command line, with real
//! `ckm signer serve` processes:
//!
//! 1. A signer whose operator did not approve a peer refuses the key generation (the error
//!    names the identity) and nobody keeps anything; after `ckm signer peers add` on the
//!    running signer the same `wallet create` succeeds, every signer shows the coordinator's
//!    fingerprint, and `wallet verify` passes — and fails once one byte of one stored
//!    certificate is flipped.
//! 2. A second allowed coordinator cannot get signature shares for a wallet it did not
//!    create until each signer's operator adds it for that wallet.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;

use anyhow::{ensure, Context, Result};
use bdk_wallet::rusqlite::Connection;
use ckm::signer::home::SignerHome;
use cluster::*;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unapproved_peer_refused_then_approved_and_certificates_verified() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let coord = dir.path().join("coord");
    let coord_id = json_str(&ckm_json(&coord, &["id"])?, "identity")?.to_string();
    let homes = init_all(dir.path(), 3)?;
    let ids: Vec<String> = homes
        .iter()
        .map(|h| Ok(SignerHome::public_identity(h)?.to_string()))
        .collect::<Result<_>>()?;
    // Signer 1 approves only signer 2; the others approve everyone.
    let peers = [
        vec![ids[1].clone()],
        vec![ids[0].clone(), ids[2].clone()],
        vec![ids[0].clone(), ids[1].clone()],
    ];
    let signers = homes
        .iter()
        .zip(&peers)
        .map(|(h, p)| SignerProc::start_with_peers(h, &coord_id, p, Kind::Honest))
        .collect::<Result<Vec<_>>>()?;
    let mut args = vec!["--json", "wallet", "create", WALLET, "-t", "2"];
    let specs: Vec<String> = signers.iter().map(|s| s.spec()).collect();
    for s in &specs {
        args.extend(["--signer", s.as_str()]);
    }
    let out = ckm(&coord, &args)?;
    ensure!(
        !out.status.success(),
        "wallet create succeeded without approval"
    );
    let err = json_error(&out)?;
    ensure!(
        err.contains(&ids[2]),
        "the error does not name signer 3's identity: {err}"
    );
    ensure!(
        err.contains("peers add"),
        "the error does not say how to approve: {err}"
    );
    for s in &signers {
        ensure!(
            share_files(&s.home)?.is_empty(),
            "{} kept a share",
            s.home.display()
        );
    }
    ensure!(
        !coord
            .join("wallets")
            .join(format!("{WALLET}.sqlite"))
            .exists(),
        "the coordinator kept a wallet"
    );

    // The operator of signer 1 approves signer 3 on the running server: no restart.
    let added = ckm_json(
        &signers[0].home,
        &["signer", "peers", "add", &ids[2], "--label", "s3"],
    )?;
    ensure!(added["added"] == true, "{added}");
    let listed = ckm_json(&signers[0].home, &["signer", "peers", "list"])?;
    ensure!(listed.as_array().map(Vec::len) == Some(1), "{listed}");

    let created = ckm_json(&coord, &args[1..])?;
    let fingerprint = json_str(&created, "fingerprint")?.to_string();
    ensure!(fingerprint.len() == 19, "{created}");
    for s in &signers {
        ensure!(share_files(&s.home)?.len() == 1);
        let wallets = ckm_json(&s.home, &["signer", "wallets"])?;
        ensure!(
            wallets[0]["fingerprint"] == fingerprint.as_str(),
            "signer {} shows {} not {fingerprint}",
            s.home.display(),
            wallets[0]["fingerprint"]
        );
    }
    let verified = ckm_json(&coord, &["wallet", "verify"])?;
    ensure!(verified["verified"] == true && verified["fingerprint"] == fingerprint.as_str());
    let described = ckm_json(&coord, &["wallet", "descriptor"])?;
    ensure!(
        described["fingerprint"] == fingerprint.as_str(),
        "{described}"
    );

    // Flip one byte of signer 2's stored certificate in the coordinator's database.
    let db = Connection::open(coord.join("wallets").join(format!("{WALLET}.sqlite")))?;
    let text: String =
        db.query_row("SELECT meta FROM ckm_wallet WHERE id = 0", [], |r| r.get(0))?;
    let mut meta: serde_json::Value = serde_json::from_str(&text)?;
    let cert = meta["keygen"]["certificates"]["2"]
        .as_str()
        .context("no certificate 2 stored")?
        .to_string();
    let flipped = format!(
        "{}{}{}",
        &cert[..10],
        if &cert[10..11] == "0" { "1" } else { "0" },
        &cert[11..]
    );
    meta["keygen"]["certificates"]["2"] = serde_json::Value::String(flipped);
    db.execute(
        "UPDATE ckm_wallet SET meta = ?1 WHERE id = 0",
        [serde_json::to_string(&meta)?],
    )?;
    let out = ckm(&coord, &["--json", "wallet", "verify"])?;
    ensure!(!out.status.success(), "verify passed a flipped certificate");
    let err = json_error(&out)?;
    ensure!(err.contains("certificate of participant 2"), "{err}");
    Ok(())
}

#[test]
fn a_second_coordinator_needs_the_operators_consent() -> Result<()> {
    let mut c = Cluster::start(3)?;
    let dir = c.dir.path().to_path_buf();
    let other = dir.join("coord2");
    let other_id = json_str(&ckm_json(&other, &["id"])?, "identity")?.to_string();
    // Every signer allows both coordinators.
    for s in &mut c.signers {
        s.extra_coordinators.push(other_id.clone());
        s.restart()?;
    }
    let args = c.create_args(WALLET, 2);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.created = ckm_json(&c.coord, &args)?;
    let p = fund_and_build(&c)?;
    let input = c.write_psbt("pay.psbt", &p.psbt)?;

    // The second coordinator holds a copy of the wallet (public data only).
    std::fs::create_dir_all(other.join("wallets"))?;
    std::fs::copy(
        c.wallet_path(),
        other.join("wallets").join(format!("{WALLET}.sqlite")),
    )?;
    let out_path = dir.join("signed-by-other.psbt");
    let out = ckm(
        &other,
        &[
            "--json",
            "psbt",
            "sign",
            path_str(&input)?,
            "--out",
            path_str(&out_path)?,
        ],
    )?;
    ensure!(
        !out.status.success(),
        "the second coordinator got signatures"
    );
    let err = json_error(&out)?;
    ensure!(err.contains("allow-coordinator"), "{err}");
    ensure!(!out_path.exists());
    // Signing gives up once fewer than t = 2 signers can sign: at least n − t + 1 = 2 were
    // asked and refused (the third request may be dropped before it is handled).
    let refused = c
        .signers
        .iter()
        .filter(|s| s.log_text().contains("bound to the coordinator"))
        .count();
    ensure!(refused >= 2, "only {refused} signers logged the refusal");

    // The operators add it for this wallet; now it signs.
    for s in &c.signers {
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
        ensure!(v["allowed"] == true, "{v}");
    }
    let out = ckm(
        &other,
        &[
            "--json",
            "psbt",
            "sign",
            path_str(&input)?,
            "--out",
            path_str(&out_path)?,
        ],
    )?;
    ensure!(out.status.success(), "{}\n{}", stderr_of(&out), c.logs());
    check_signed(&out_path, &p)?;
    Ok(())
}
