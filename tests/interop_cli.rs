//! The interop commands through the real `ckm` binary, with real `ckm signer serve` processes
//! (the shared cluster harness) and made-up funding: a version-2 PSBT and a UR file co-signed
//! across processes and written back in the form they came in; `psbt inspect`; `psbt qr`
//! frames decoded back from their PNGs with a QR reader; every `wallet export` format parsed
//! back.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;

use std::path::Path;

use anyhow::{anyhow, ensure, Context, Result};
use ckm::psbt::ur;
use ckm::psbt::{PsbtVersion, VersionedPsbt};
use ckm::wallet::export::{read_descriptor_file, WalletPolicy};
use ckm::wallet::CkmWallet;
use cluster::{ckm, ckm_json, consensus_verify, fund_and_build, path_str, Cluster, Payment};
use miniscript::descriptor::{Descriptor, DescriptorPublicKey};

fn read_signed(path: &Path, p: &Payment) -> Result<VersionedPsbt> {
    let bytes = std::fs::read(path)?;
    let text = String::from_utf8(bytes.clone()).unwrap_or_default();
    let signed = if ur::looks_like_ur(&text) {
        VersionedPsbt::deserialize(&ur::decode(text.lines())?)?
    } else if bytes.starts_with(b"psbt\xff") {
        VersionedPsbt::deserialize(&bytes)?
    } else {
        VersionedPsbt::from_base64(&text)?
    };
    ensure!(
        signed.psbt().unsigned_tx == p.psbt.unsigned_tx,
        "another transaction"
    );
    let tx = signed.psbt().clone().extract_tx()?;
    consensus_verify(&tx, &p.funding)?;
    Ok(signed)
}

#[test]
fn version_2_and_ur_psbts_are_cosigned_across_processes_and_written_back_alike() -> Result<()> {
    let c = Cluster::with_wallet(3, 2)?;
    let p = fund_and_build(&c)?;

    // Version 2, base64 in → version 2, base64 out.
    let v2 = VersionedPsbt::new(p.psbt.clone(), PsbtVersion::V2);
    let input = c.dir.path().join("v2.psbt");
    std::fs::write(&input, v2.to_base64()?)?;
    let out = c.dir.path().join("v2.signed.psbt");
    let report = c.sign_ok(&input, &out, &[])?;
    assert_eq!(report["psbt_version"], 2, "{report}");
    assert_eq!(report["format"], "base64", "{report}");
    assert_eq!(read_signed(&out, &p)?.version(), PsbtVersion::V2);

    // URs in → URs out (multipart: the 4-input PSBT exceeds one fragment).
    let ur_in = c.dir.path().join("pay.ur");
    let parts = ur::encode_parts(&p.psbt.serialize(), 200, 0)?;
    ensure!(parts.len() > 1, "expected a multipart UR");
    std::fs::write(&ur_in, parts.join("\n"))?;
    let ur_out = c.dir.path().join("pay.signed.ur");
    let report = c.sign_ok(&ur_in, &ur_out, &[])?;
    assert_eq!(report["format"], "ur", "{report}");
    assert_eq!(report["psbt_version"], 0, "{report}");
    let text = std::fs::read_to_string(&ur_out)?;
    ensure!(text.lines().all(|l| l.starts_with("ur:psbt/")), "{text}");
    assert_eq!(read_signed(&ur_out, &p)?.version(), PsbtVersion::V0);

    // Asked for: version 2, binary.
    let bin_out = c.dir.path().join("pay.signed.bin");
    let report = c.sign_ok(
        &ur_in,
        &bin_out,
        &["--psbt-version", "2", "--format", "binary"],
    )?;
    assert_eq!(report["psbt_version"], 2, "{report}");
    assert_eq!(read_signed(&bin_out, &p)?.version(), PsbtVersion::V2);

    // An input of the wallet without its key origin: refused before the signers, with the fix.
    let mut stripped = p.psbt.clone();
    stripped.inputs[0].tap_internal_key = None;
    stripped.inputs[0].tap_key_origins.clear();
    let stripped_in = c.write_psbt("stripped.psbt", &stripped)?;
    let res = c.sign(&stripped_in, &c.dir.path().join("stripped.signed"), &[])?;
    let err = String::from_utf8_lossy(&res.stderr);
    ensure!(
        !res.status.success() && err.contains("key origin") && err.contains("utxoupdatepsbt"),
        "{err}"
    );

    // Garbage URs are refused with a message that says so, and nothing is written.
    let bad = c.dir.path().join("bad.ur");
    std::fs::write(&bad, format!("{}\nur:psbt/not-bytewords\n", parts[0]))?;
    let bad_out = c.dir.path().join("bad.signed");
    let res = c.sign(&bad, &bad_out, &[])?;
    ensure!(!res.status.success(), "a garbage UR was signed");
    let err = String::from_utf8_lossy(&res.stderr);
    ensure!(err.contains("UR"), "unclear error: {err}");
    ensure!(!bad_out.exists());
    let partial = c.dir.path().join("partial.ur");
    std::fs::write(&partial, &parts[0])?;
    let res = c.sign(&partial, &bad_out, &[])?;
    let err = String::from_utf8_lossy(&res.stderr);
    ensure!(
        !res.status.success() && err.contains("incomplete"),
        "one fragment of several: {err}"
    );
    Ok(())
}

#[test]
fn inspect_reports_what_the_psbt_does() -> Result<()> {
    let c = Cluster::with_wallet(3, 2)?;
    let p = fund_and_build(&c)?;
    let unsigned = c.write_psbt("pay.psbt", &p.psbt)?;
    let v = ckm_json(&c.coord, &["psbt", "inspect", path_str(&unsigned)?])?;
    assert_eq!(v["state"], "unsigned", "{v}");
    assert_eq!(v["psbt_version"], 0, "{v}");
    assert_eq!(v["fee_sats"], p.fee()?, "{v}");
    let inputs = v["inputs"].as_array().ok_or_else(|| anyhow!("{v}"))?;
    assert_eq!(inputs.len(), 4);
    ensure!(inputs.iter().all(|i| i["owner"] == "ours"), "{v}");
    let keychains: Vec<&str> = inputs
        .iter()
        .filter_map(|i| i["keychain"].as_str())
        .collect();
    ensure!(
        keychains.contains(&"receive") && keychains.contains(&"change"),
        "{v}"
    );
    let outputs = v["outputs"].as_array().ok_or_else(|| anyhow!("{v}"))?;
    let payment = outputs
        .iter()
        .find(|o| o["owner"] == "foreign")
        .ok_or_else(|| anyhow!("no payment in {v}"))?;
    assert_eq!(payment["address"], p.to.to_string());
    assert_eq!(payment["amount_sats"], p.amount);

    let signed = c.dir.path().join("pay.signed.psbt");
    c.sign_ok(&unsigned, &signed, &["--psbt-version", "2"])?;
    let v = ckm_json(&c.coord, &["psbt", "inspect", path_str(&signed)?])?;
    assert_eq!(v["state"], "finalized", "{v}");
    assert_eq!(v["psbt_version"], 2, "{v}");
    assert_eq!(v["vsize_exact"], true, "{v}");
    let human = ckm(&c.coord, &["psbt", "inspect", path_str(&signed)?])?;
    let text = String::from_utf8_lossy(&human.stdout);
    ensure!(
        text.contains("finalized") && text.contains("payment"),
        "{text}"
    );
    Ok(())
}

/// Reads every PNG frame with a QR decoder and returns the texts in frame order.
fn scan_frames(dir: &Path) -> Result<Vec<String>> {
    let mut frames: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    frames.sort();
    let mut texts = Vec::new();
    for frame in frames {
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&frame)?));
        let mut reader = decoder.read_info()?;
        let mut buf = vec![0; reader.output_buffer_size().context("png size")?];
        let info = reader.next_frame(&mut buf)?;
        let (w, h) = (info.width as usize, info.height as usize);
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
        let grids = img.detect_grids();
        ensure!(
            grids.len() == 1,
            "{}: {} QR codes",
            frame.display(),
            grids.len()
        );
        let (_, text) = grids[0]
            .decode()
            .map_err(|e| anyhow!("{}: {e:?}", frame.display()))?;
        texts.push(text);
    }
    Ok(texts)
}

#[test]
fn qr_frames_scan_back_to_the_same_psbt() -> Result<()> {
    let c = Cluster::with_wallet(3, 2)?;
    let p = fund_and_build(&c)?;
    let file = c.write_psbt("pay.psbt", &p.psbt)?;
    let dir = c.dir.path().join("qr");
    let v = ckm_json(
        &c.coord,
        &[
            "psbt",
            "qr",
            path_str(&file)?,
            "--png",
            path_str(&dir)?,
            "--fragment-len",
            "150",
            "--scale",
            "4",
        ],
    )?;
    let frames = v["frames"].as_array().map(Vec::len).unwrap_or(0);
    ensure!(frames > 1, "a 4-input PSBT takes several frames: {v}");
    let scanned = scan_frames(&dir)?;
    assert_eq!(scanned.len(), frames);
    ensure!(
        scanned.iter().all(|t| t.starts_with("UR:PSBT/")),
        "{scanned:?}"
    );
    let restored = ur::decode(scanned.iter().map(String::as_str))?;
    assert_eq!(
        restored,
        p.psbt.serialize(),
        "the frames carry the PSBT byte for byte"
    );

    // Without a terminal the frames are printed, each with its UR.
    let out = ckm(&c.coord, &["psbt", "qr", path_str(&file)?])?;
    ensure!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let urs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(_, u)| u))
        .filter(|u| u.starts_with("ur:psbt/"))
        .collect();
    assert_eq!(ur::decode(urs)?, p.psbt.serialize());
    Ok(())
}

fn singles(d: Descriptor<DescriptorPublicKey>) -> Result<Vec<String>> {
    Ok(d.into_single_descriptors()?
        .iter()
        .map(|d| d.to_string())
        .collect())
}

#[test]
fn every_export_format_parses_back_to_the_wallet() -> Result<()> {
    let c = Cluster::with_wallet(3, 2)?;
    let _ = fund_and_build(&c)?;
    let wallet = CkmWallet::load(&c.wallet_path())?;
    let (external, internal) = wallet.meta().descriptors()?;
    let expected = vec![external.clone(), internal.clone()];
    drop(wallet);

    let v = ckm_json(&c.coord, &["wallet", "export", "--format", "descriptor"])?;
    let multipath = v["content"].as_str().ok_or_else(|| anyhow!("{v}"))?;
    ensure!(multipath.contains("/<0;1>/*)#"), "{multipath}");
    let parsed: Descriptor<DescriptorPublicKey> = multipath.parse()?;
    assert_eq!(singles(parsed)?, expected);

    let v = ckm_json(&c.coord, &["wallet", "export", "--format", "core"])?;
    let core = v["content"].as_array().ok_or_else(|| anyhow!("{v}"))?;
    assert_eq!(core.len(), 2);
    assert_eq!(core[0]["desc"], external);
    assert_eq!(core[1]["desc"], internal);
    assert_eq!(core[1]["internal"], true);
    // fund_and_build revealed receive 0..=2 and change 0..=1, and the payment one more change.
    ensure!(core[0]["next_index"].as_u64() >= Some(3), "{v}");
    assert_eq!(
        core[0]["timestamp"], 0,
        "no confirmed history: scan the whole chain"
    );
    let v = ckm_json(
        &c.coord,
        &["wallet", "export", "--format", "core", "--timestamp", "now"],
    )?;
    assert_eq!(v["content"][0]["timestamp"], "now");

    let policy_file = c.dir.path().join("policy.json");
    ckm_json(
        &c.coord,
        &[
            "wallet",
            "export",
            "--format",
            "bip388",
            "--out",
            path_str(&policy_file)?,
        ],
    )?;
    let policy: WalletPolicy = serde_json::from_str(&std::fs::read_to_string(&policy_file)?)?;
    assert_eq!(policy.descriptor_template, "tr(@0/**)");
    assert_eq!(singles(policy.to_descriptor()?)?, expected);

    let sparrow = c.dir.path().join("sparrow.txt");
    ckm_json(
        &c.coord,
        &[
            "wallet",
            "export",
            "--format",
            "sparrow",
            "--out",
            path_str(&sparrow)?,
        ],
    )?;
    let text = std::fs::read_to_string(&sparrow)?;
    assert_eq!(read_descriptor_file(&text)?.to_string(), multipath);
    ensure!(
        text.contains("Import Wallet"),
        "the file says how to import it"
    );

    let misuse = ckm(
        &c.coord,
        &[
            "wallet",
            "export",
            "--format",
            "bip388",
            "--timestamp",
            "now",
        ],
    )?;
    ensure!(!misuse.status.success());
    Ok(())
}
