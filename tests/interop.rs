//! Bitcoin Core as a peer, on regtest (a real bitcoind and electrs, three real `ckm signer
//! serve` processes, the `ckm` CLI as coordinator). This Core has no wallet, so it takes the
//! part a watch-only setup gives it: PSBTs made with `createpsbt` (version 2 by default, and
//! version 0) and filled by `utxoupdatepsbt` with the descriptors of `ckm wallet export`, then
//! co-signed by ckm and finalized, broadcast and mined by Core; ckm's PSBTs read by
//! `decodepsbt` / `analyzepsbt` at every stage and rebuilt by `combinepsbt` / `joinpsbts`;
//! `deriveaddresses` and `scantxoutset` over the exported descriptors.
//! Needs `--features regtest` (`just test` enables it).
#![cfg(feature = "regtest")]

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;
#[path = "common/testenv.rs"]
mod testenv;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Result};
use bdk_wallet::KeychainKind;
use ckm::wallet::CkmWallet;
use cluster::{ckm_json, foreign_address, json_str, path_str, Cluster};
use serde_json::{json, Value};
use testenv::{btc_to_sats, format_btc, TestEnv};

const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

fn sync(c: &Cluster, env: &TestEnv) -> Result<()> {
    let tip = env.block_count()?;
    env.wait_until_electrum_height(tip, SYNC_TIMEOUT)?;
    let deadline = Instant::now() + SYNC_TIMEOUT;
    loop {
        let v = ckm_json(
            &c.coord,
            &["wallet", "sync", "--electrum", &env.electrum_url()],
        )?;
        if v["height"].as_u64() == Some(tip) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("wallet sync stuck at {v}, tip {tip}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn receive_address(c: &Cluster) -> Result<String> {
    let v = ckm_json(&c.coord, &["wallet", "address"])?;
    Ok(json_str(&v, "address")?.to_string())
}

/// Reveals the next change address (through the library: the CLI hands out receive ones).
fn change_address(c: &Cluster) -> Result<String> {
    let mut w = CkmWallet::load(&c.wallet_path())?;
    let info = w.bdk_mut().reveal_next_address(KeychainKind::Internal);
    w.persist()?;
    Ok(info.address.to_string())
}

/// The receive and change descriptors of `wallet export --format core`, for Core's RPCs.
fn core_descriptors(c: &Cluster) -> Result<Vec<Value>> {
    let v = ckm_json(&c.coord, &["wallet", "export", "--format", "core"])?;
    let entries = v["content"]
        .as_array()
        .ok_or_else(|| anyhow!("export: {v}"))?;
    Ok(entries
        .iter()
        .map(|e| json!({ "desc": e["desc"], "range": [0, 200] }))
        .collect())
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// `ckm psbt sign IN --out OUT`, returning the signed file's text.
fn cosign(c: &Cluster, input: &Path, extra: &[&str]) -> Result<(String, Value)> {
    let out = input.with_extension("signed");
    let report = c.sign_ok(input, &out, extra)?;
    Ok((std::fs::read_to_string(&out)?.trim().to_string(), report))
}

/// Finalizes with Core, broadcasts, mines one block and checks the transaction confirmed.
fn finalize_send_and_mine(env: &TestEnv, psbt: &str) -> Result<String> {
    let fin = env.rpc("finalizepsbt", json!([psbt]))?;
    ensure!(
        fin["complete"] == json!(true),
        "Core cannot finalize: {fin}"
    );
    let hex = fin["hex"].as_str().ok_or_else(|| anyhow!("{fin}"))?;
    let txid = env.send_raw(hex)?;
    env.mine_blocks(1, None)?;
    let tx = env.get_raw_transaction(&txid)?;
    ensure!(tx["confirmations"].as_u64() == Some(1), "not mined: {tx}");
    Ok(txid)
}

/// Funds one fresh receive address with `sats` and returns the outpoint.
fn funded_utxo(c: &Cluster, env: &TestEnv, sats: u64) -> Result<(String, u32)> {
    let addr = receive_address(c)?;
    let txid = env.fund(&addr, sats)?;
    Ok((txid, 0))
}

#[test]
fn core_made_psbts_of_both_versions_are_cosigned_by_ckm_and_mined() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    let descriptors = core_descriptors(&c)?;
    for psbt_version in [2u32, 0] {
        let (txid, vout) = funded_utxo(&c, &env, 500_000)?;
        let to = foreign_address().to_string();
        let change = change_address(&c)?;
        // Core's own default first (version 2), then version 0 asked for by name.
        let mut params = json!({
            "inputs": [{ "txid": txid, "vout": vout }],
            "outputs": [{ to.clone(): format_btc(200_000) }, { change.clone(): format_btc(299_000) }],
        });
        if psbt_version == 0 {
            params["psbt_version"] = json!(0);
        }
        let created = env.rpc("createpsbt", params)?;
        let created = created.as_str().ok_or_else(|| anyhow!("{created}"))?;
        // Before Core's updater has run, ckm names the fix instead of asking the signers.
        let bare = write(c.dir.path(), &format!("bare-v{psbt_version}.psbt"), created)?;
        let refused = c.sign(&bare, &bare.with_extension("signed"), &[])?;
        let err = String::from_utf8_lossy(&refused.stderr);
        ensure!(
            !refused.status.success() && err.contains("utxoupdatepsbt"),
            "a PSBT without UTXOs: {err}"
        );
        let updated = env.rpc("utxoupdatepsbt", json!([created, descriptors]))?;
        let updated = updated.as_str().ok_or_else(|| anyhow!("{updated}"))?;
        let decoded = env.rpc("decodepsbt", json!([updated]))?;
        assert_eq!(decoded["psbt_version"], json!(psbt_version), "{decoded}");
        ensure!(
            decoded["inputs"][0]["taproot_bip32_derivs"].is_array(),
            "Core filled no Taproot derivation from the exported descriptors: {decoded}"
        );
        let file = write(c.dir.path(), &format!("core-v{psbt_version}.psbt"), updated)?;

        // ckm sees what Core made: our input, a payment and our change.
        let seen = ckm_json(&c.coord, &["psbt", "inspect", path_str(&file)?])?;
        assert_eq!(seen["psbt_version"], json!(psbt_version), "{seen}");
        assert_eq!(seen["inputs"][0]["owner"], "ours", "{seen}");
        assert_eq!(seen["fee_sats"], 1_000, "{seen}");
        let owners: Vec<&str> = seen["outputs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["keychain"].as_str().or(o["owner"].as_str()))
            .collect();
        ensure!(
            owners.contains(&"foreign") && owners.contains(&"change"),
            "{seen}"
        );

        let (signed, report) = cosign(&c, &file, &[])?;
        assert_eq!(report["psbt_version"], json!(psbt_version), "{report}");
        let decoded = env.rpc("decodepsbt", json!([signed]))?;
        assert_eq!(
            decoded["psbt_version"],
            json!(psbt_version),
            "written back as it came"
        );
        let analyzed = env.rpc("analyzepsbt", json!([signed]))?;
        assert_eq!(analyzed["next"], "extractor", "{analyzed}");
        let sent = finalize_send_and_mine(&env, &signed)?;
        assert_eq!(Some(sent.as_str()), report["txid"].as_str());
        ensure!(
            env.get_tx_out(&sent, 0)?.is_some(),
            "the payment is unspent in the UTXO set"
        );
    }
    Ok(())
}

#[test]
fn exported_descriptors_match_core_and_scantxoutset_totals_the_balance() -> Result<()> {
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;

    // Core accepts each descriptor as it is: checksum, ranged, no private key.
    let export = ckm_json(&c.coord, &["wallet", "export", "--format", "core"])?;
    let entries = export["content"]
        .as_array()
        .ok_or_else(|| anyhow!("{export}"))?
        .clone();
    for e in &entries {
        let desc = e["desc"].as_str().ok_or_else(|| anyhow!("{e}"))?;
        let info = env.rpc("getdescriptorinfo", json!([desc]))?;
        let checksum = desc.rsplit_once('#').map(|(_, c)| c).unwrap_or_default();
        assert_eq!(info["checksum"], checksum, "{info}");
        assert_eq!(info["isrange"], true, "{info}");
        assert_eq!(info["hasprivatekeys"], false, "{info}");
        let range = e["range"].as_array().ok_or_else(|| anyhow!("{e}"))?;
        ensure!(
            range[1].as_u64() >= e["next_index"].as_u64().map(|n| n + 999),
            "{e}"
        );
    }
    let multipath = ckm_json(&c.coord, &["wallet", "export", "--format", "descriptor"])?;
    let multipath = json_str(&multipath, "content")?.to_string();
    let info = env.rpc("getdescriptorinfo", json!([multipath]))?;
    assert_eq!(
        info["checksum"],
        multipath
            .rsplit_once('#')
            .map(|(_, c)| c)
            .unwrap_or_default(),
        "{info}"
    );

    // The first 20 receive and change addresses, from Core and from ckm.
    let external = entries[0]["desc"].as_str().unwrap_or_default();
    let internal = entries[1]["desc"].as_str().unwrap_or_default();
    let core_receive = env.derive_addresses(external, Some((0, 19)))?;
    let core_change = env.derive_addresses(internal, Some((0, 19)))?;
    let w = CkmWallet::load(&c.wallet_path())?;
    for i in 0..20u32 {
        let r = w.bdk().peek_address(KeychainKind::External, i).address;
        let ch = w.bdk().peek_address(KeychainKind::Internal, i).address;
        assert_eq!(core_receive[i as usize], r.to_string(), "receive #{i}");
        assert_eq!(core_change[i as usize], ch.to_string(), "change #{i}");
    }
    drop(w);
    // A multipath descriptor derives one list per path (BIP-0389).
    let multi = env.rpc("deriveaddresses", json!([multipath, [0, 19]]))?;
    assert_eq!(multi, json!([core_receive, core_change]), "{multi}");

    // After funding and a payment, Core's scan of the descriptors totals ckm's balance.
    for sats in [400_000, 250_000] {
        let addr = receive_address(&c)?;
        env.fund(&addr, sats)?;
    }
    sync(&c, &env)?;
    let to = foreign_address().to_string();
    let sent = ckm_json(
        &c.coord,
        &[
            "wallet",
            "send",
            "--to",
            &to,
            "--amount",
            "300000",
            "--yes",
            "--electrum",
            &env.electrum_url(),
        ],
    )?;
    let txid = json_str(&sent, "txid")?.to_string();
    env.wait_until_electrum_sees(&txid, SYNC_TIMEOUT)?;
    env.mine_blocks(1, None)?;
    sync(&c, &env)?;
    let balance = ckm_json(&c.coord, &["wallet", "balance"])?;
    let confirmed = balance["confirmed_sats"]
        .as_u64()
        .ok_or_else(|| anyhow!("{balance}"))?;
    ensure!(confirmed > 0 && confirmed < 350_000, "{balance}");
    let scan = env.rpc(
        "scantxoutset",
        json!(["start", [
            { "desc": external, "range": 100 },
            { "desc": internal, "range": 100 },
        ]]),
    )?;
    assert_eq!(btc_to_sats(&scan["total_amount"])?, confirmed, "{scan}");
    Ok(())
}

#[test]
fn ckm_psbts_pass_core_at_every_stage_and_core_combined_or_joined_ones_are_cosigned() -> Result<()>
{
    let env = TestEnv::new()?;
    let c = Cluster::with_wallet(3, 2)?;
    for sats in [300_000, 300_000, 300_000] {
        funded_utxo(&c, &env, sats)?;
    }
    sync(&c, &env)?;
    let descriptors = core_descriptors(&c)?;

    // ckm's PSBTs, version 0 and 2, before and after signing.
    for version in ["0", "2"] {
        let file = c.dir.path().join(format!("ckm-v{version}.psbt"));
        let created = ckm_json(
            &c.coord,
            &[
                "psbt",
                "create",
                "--to",
                &foreign_address().to_string(),
                "--amount",
                "100000",
                "--psbt-version",
                version,
                "--out",
                path_str(&file)?,
            ],
        )?;
        let text = std::fs::read_to_string(&file)?;
        let decoded = env.rpc("decodepsbt", json!([text.trim()]))?;
        assert_eq!(decoded["psbt_version"].to_string(), version, "{decoded}");
        assert_eq!(
            btc_to_sats(&decoded["fee"])?,
            created["fee_sats"].as_u64().unwrap_or(0)
        );
        // Core's updater, given the exported descriptors, finds nothing to add: its analysis
        // of ckm's PSBT and of its own update of it are the same. (Core 31.99 names the next
        // role "updater" for Taproot key-path inputs it holds no key for: it says so of the
        // PSBTs its own createpsbt + utxoupdatepsbt make, too.)
        let analyzed = env.rpc("analyzepsbt", json!([text.trim()]))?;
        let core_updated = env.rpc("utxoupdatepsbt", json!([text.trim(), descriptors]))?;
        let core_analyzed = env.rpc("analyzepsbt", json!([core_updated]))?;
        assert_eq!(
            analyzed, core_analyzed,
            "Core's updater would change ckm's PSBT"
        );
        ensure!(
            analyzed["inputs"].as_array().is_some_and(|i| i
                .iter()
                .all(|i| i["has_utxo"] == true && i["is_final"] == false)),
            "{analyzed}"
        );
        assert_eq!(
            btc_to_sats(&analyzed["fee"])?,
            created["fee_sats"].as_u64().unwrap_or(0)
        );
        let (signed, _) = cosign(&c, &file, &[])?;
        env.rpc("decodepsbt", json!([signed]))?;
        let analyzed = env.rpc("analyzepsbt", json!([signed]))?;
        assert_eq!(analyzed["next"], "extractor", "{analyzed}");
        let fin = env.rpc("finalizepsbt", json!([signed]))?;
        let accept = env.test_mempool_accept(fin["hex"].as_str().unwrap_or_default())?;
        assert_eq!(accept["allowed"], true, "{accept}");
    }

    // combinepsbt: ckm's v2 PSBT merged with a copy Core updated → still co-signable.
    let file = c.dir.path().join("combine.psbt");
    ckm_json(
        &c.coord,
        &[
            "psbt",
            "create",
            "--to",
            &foreign_address().to_string(),
            "--amount",
            "120000",
            "--psbt-version",
            "2",
            "--out",
            path_str(&file)?,
        ],
    )?;
    let ours = std::fs::read_to_string(&file)?.trim().to_string();
    let updated = env.rpc("utxoupdatepsbt", json!([ours, descriptors]))?;
    let combined = env.rpc("combinepsbt", json!([[ours, updated]]))?;
    let combined_file = write(
        c.dir.path(),
        "combined.psbt",
        combined.as_str().ok_or_else(|| anyhow!("{combined}"))?,
    )?;
    let (signed, _) = cosign(&c, &combined_file, &[])?;
    finalize_send_and_mine(&env, &signed)?;
    sync(&c, &env)?;

    // joinpsbts (version 0 only): a ckm PSBT and a Core-made one over another UTXO.
    let file = c.dir.path().join("join-a.psbt");
    ckm_json(
        &c.coord,
        &[
            "psbt",
            "create",
            "--to",
            &foreign_address().to_string(),
            "--amount",
            "50000",
            "--out",
            path_str(&file)?,
        ],
    )?;
    let a = std::fs::read_to_string(&file)?.trim().to_string();
    let a_inputs = env.rpc("decodepsbt", json!([a]))?["tx"]["vin"].clone();
    let used: Vec<(String, u64)> = a_inputs
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            (
                i["txid"].as_str().unwrap_or_default().to_string(),
                i["vout"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let scan = env.rpc("scantxoutset", json!(["start", descriptors]))?;
    let other = scan["unspents"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|u| {
            let key = (
                u["txid"].as_str().unwrap_or_default().to_string(),
                u["vout"].as_u64().unwrap_or(0),
            );
            !used.contains(&key) && btc_to_sats(&u["amount"]).is_ok_and(|s| s >= 100_000)
        })
        .ok_or_else(|| anyhow!("no second UTXO: {scan}"))?
        .clone();
    let other_sats = btc_to_sats(&other["amount"])?;
    let b = env.rpc(
        "createpsbt",
        json!({
            "inputs": [{ "txid": other["txid"], "vout": other["vout"] }],
            "outputs": [
                { foreign_address().to_string(): format_btc(60_000) },
                { change_address(&c)?: format_btc(other_sats - 60_000 - 1_000) },
            ],
            "psbt_version": 0,
        }),
    )?;
    let b = env.rpc("utxoupdatepsbt", json!([b, descriptors]))?;
    let joined = env.rpc("joinpsbts", json!([[a, b]]))?;
    let joined_file = write(
        c.dir.path(),
        "joined.psbt",
        joined.as_str().ok_or_else(|| anyhow!("{joined}"))?,
    )?;
    let seen = ckm_json(&c.coord, &["psbt", "inspect", path_str(&joined_file)?])?;
    assert_eq!(
        seen["inputs"].as_array().map(Vec::len),
        Some(used.len() + 1),
        "{seen}"
    );
    let (signed, _) = cosign(&c, &joined_file, &[])?;
    finalize_send_and_mine(&env, &signed)?;
    Ok(())
}
