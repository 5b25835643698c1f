//! The timelocked recovery path on a real chain (real bitcoind and electrs, three real
//! `ckm signer serve` processes, the `ckm` CLI as coordinator); every claim is asserted on
//! what bitcoind reports. Needs `--features regtest` (`just test` enables it).
//!
//! - Key-path spends of a wallet with a recovery key are co-signed and mined, with a single
//!   64-byte signature as witness.
//! - A recovery spend before the timelock is refused by bitcoind (`non-BIP68-final`); after
//!   it, it is mined. One recovery spend is signed by `ckm psbt sign-recovery`, another by
//!   Bitcoin Core's `descriptorprocesspsbt` with the private descriptor (an independent
//!   BIP-0371 signer); both witnesses are script-path spends of the recovery leaf.
//! - Core's `deriveaddresses` of the exported descriptors equals `ckm wallet address` and
//!   `ckm signer address` for the first 10 indexes.
#![cfg(feature = "regtest")]

#[path = "common/chain.rs"]
mod chain;
#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/consensus.rs"]
mod consensus;
#[path = "common/testenv.rs"]
mod testenv;

use std::path::Path;
use std::str::FromStr;

use anyhow::{anyhow, ensure, Result};
use bitcoin::bip32::DerivationPath;
use bitcoin::Psbt;
use chain::{assert_key_path, mine_and_confirm, sync};
use ckm::frost::shares::secp;
use cluster::{ckm, ckm_json, foreign_address, json_str, path_str, recovery_key, Cluster, WALLET};
use serde_json::{json, Value};
use testenv::TestEnv;

/// The recovery timelock of the tests' wallets.
const BLOCKS: u16 = 20;

fn address(c: &Cluster) -> Result<String> {
    Ok(json_str(&ckm_json(&c.coord, &["wallet", "address"])?, "address")?.to_string())
}

fn witnesses(tx: &Value) -> Result<Vec<Vec<String>>> {
    tx["vin"]
        .as_array()
        .ok_or_else(|| anyhow!("no vin in {tx}"))?
        .iter()
        .map(|vin| {
            vin["txinwitness"]
                .as_array()
                .ok_or_else(|| anyhow!("an input has no witness: {vin}"))?
                .iter()
                .map(|w| {
                    w.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| anyhow!("bad witness item {w}"))
                })
                .collect()
        })
        .collect()
}

/// Every input: a script-path spend of `and_v(v:pk(K),older(BLOCKS))` — [64-byte signature,
/// `<K> OP_CHECKSIGVERIFY <BLOCKS> OP_CHECKSEQUENCEVERIFY`, 33-byte control block] — with
/// nSequence = BLOCKS.
fn assert_recovery_path(tx: &Value) -> Result<()> {
    // BLOCKS = 20 is pushed as one byte (0x14).
    let tail = format!("ad01{:02x}b2", BLOCKS);
    for (i, w) in witnesses(tx)?.iter().enumerate() {
        ensure!(w.len() == 3, "input {i} is not a script-path spend: {w:?}");
        ensure!(
            w[0].len() == 128,
            "input {i}: not one 64-byte signature: {w:?}"
        );
        ensure!(
            w[1].len() == 2 + 64 + tail.len() && w[1].starts_with("20") && w[1].ends_with(&tail),
            "input {i}: not the recovery leaf: {}",
            w[1]
        );
        ensure!(
            w[2].len() == 66 && (w[2].starts_with("c0") || w[2].starts_with("c1")),
            "input {i}: not a single-leaf control block: {}",
            w[2]
        );
    }
    for (i, vin) in tx["vin"].as_array().into_iter().flatten().enumerate() {
        ensure!(
            vin["sequence"] == json!(BLOCKS),
            "input {i}: nSequence {} is not the recovery timelock",
            vin["sequence"]
        );
    }
    Ok(())
}

fn read_psbt(path: &Path) -> Result<Psbt> {
    Ok(Psbt::from_str(std::fs::read_to_string(path)?.trim())?)
}

fn tx_hex(path: &Path) -> Result<String> {
    let tx = read_psbt(path)?.extract_tx()?;
    Ok(bitcoin::consensus::encode::serialize_hex(&tx))
}

#[test]
fn key_path_still_works_and_the_recovery_path_opens_after_the_timelock() -> Result<()> {
    let env = TestEnv::new()?;
    let (master, key) = recovery_key()?;
    let c = Cluster::with_recovery_wallet(&key, BLOCKS)?;
    for _ in 0..3 {
        env.fund(&address(&c)?, 1_000_000)?;
    }
    sync(&c, &env)?;

    // 1. An everyday payment: co-signed on the key path with each input's own merkle root.
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
            "--fee-rate",
            "2",
            "--yes",
            "--electrum",
            &env.electrum_url(),
        ],
    )?;
    let tx = mine_and_confirm(&env, json_str(&sent, "txid")?)?;
    assert_key_path(&tx)?;
    sync(&c, &env)?;

    // 2. Too early: no coin is deep enough, unless told; bitcoind refuses the early spend.
    let dir = c.dir.path();
    let early = dir.join("early.psbt");
    let refused = ckm(
        &c.coord,
        &[
            "--json",
            "psbt",
            "create",
            "--recovery",
            "--to",
            &to,
            "--amount",
            "400000",
            "--out",
            path_str(&early)?,
        ],
    )?;
    ensure!(
        !refused.status.success(),
        "a recovery PSBT of immature coins was built"
    );
    ensure!(
        String::from_utf8_lossy(&refused.stderr).contains("recovery path yet"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    ckm_json(
        &c.coord,
        &[
            "psbt",
            "create",
            "--recovery",
            "--allow-immature",
            "--to",
            &to,
            "--amount",
            "400000",
            "--out",
            path_str(&early)?,
        ],
    )?;
    let key_file = dir.join("recovery.xprv");
    std::fs::write(&key_file, format!("{master}\n"))?;
    let signed = dir.join("early.signed.psbt");
    let report = ckm_json(
        &c.coord,
        &[
            "psbt",
            "sign-recovery",
            path_str(&early)?,
            "--key-file",
            path_str(&key_file)?,
            "--out",
            path_str(&signed)?,
        ],
    )?;
    ensure!(report["complete"] == json!(true), "{report}");
    let finalized = dir.join("early.final.psbt");
    let fin = ckm_json(
        &c.coord,
        &[
            "psbt",
            "finalize",
            path_str(&signed)?,
            "--out",
            path_str(&finalized)?,
        ],
    )?;
    ensure!(
        fin["spends"]
            .as_array()
            .is_some_and(|s| s.iter().all(|x| x == "script-path")),
        "{fin}"
    );
    let hex = tx_hex(&finalized)?;
    let verdict = env.test_mempool_accept(&hex)?;
    ensure!(
        verdict["allowed"] == json!(false),
        "accepted before the timelock: {verdict}"
    );
    ensure!(
        verdict["reject-reason"] == json!("non-BIP68-final"),
        "refused for another reason: {verdict}"
    );
    let broadcast = ckm(
        &c.coord,
        &[
            "psbt",
            "broadcast",
            path_str(&finalized)?,
            "--electrum",
            &env.electrum_url(),
        ],
    )?;
    ensure!(
        !broadcast.status.success(),
        "broadcast before the timelock succeeded"
    );
    // The server's refusal reaches the user.
    ensure!(
        String::from_utf8_lossy(&broadcast.stderr).contains("non-BIP68-final"),
        "{}",
        String::from_utf8_lossy(&broadcast.stderr)
    );

    // 3. After the timelock the same transaction is accepted and mined.
    env.mine_blocks(u64::from(BLOCKS), None)?;
    let verdict = env.test_mempool_accept(&hex)?;
    ensure!(
        verdict["allowed"] == json!(true),
        "refused after the timelock: {verdict}"
    );
    sync(&c, &env)?;
    let sent = ckm_json(
        &c.coord,
        &[
            "psbt",
            "broadcast",
            path_str(&finalized)?,
            "--electrum",
            &env.electrum_url(),
        ],
    )?;
    let tx = mine_and_confirm(&env, json_str(&sent, "txid")?)?;
    assert_recovery_path(&tx)?;

    // 4. Bitcoin Core as an independent signer: the private descriptors (the recovery key's
    //    account xprv in place of its tpub) sign and finalize a recovery PSBT made by ckm.
    sync(&c, &env)?;
    let core_psbt = dir.join("core.psbt");
    let to2 = foreign_address().to_string();
    ckm_json(
        &c.coord,
        &[
            "psbt",
            "create",
            "--recovery",
            "--to",
            &to2,
            "--amount",
            "500000",
            "--out",
            path_str(&core_psbt)?,
        ],
    )?;
    let desc = ckm_json(&c.coord, &["wallet", "descriptor"])?;
    let account = master.derive_priv(secp(), &DerivationPath::from_str("86'/1'/0'")?)?;
    let public = key.to_string();
    let private = public.replace(&key.xpub().to_string(), &account.to_string());
    let mut descriptors = Vec::new();
    for which in ["external", "internal"] {
        let text = json_str(&desc, which)?;
        let body = text.split('#').next().unwrap_or_default();
        ensure!(body.contains(&public), "{which}: {text}");
        descriptors.push(json!({ "desc": body.replace(&public, &private), "range": [0, 50] }));
    }
    let processed = env.rpc(
        "descriptorprocesspsbt",
        json!([
            std::fs::read_to_string(&core_psbt)?.trim(),
            descriptors,
            "DEFAULT",
            true,
            true
        ]),
    )?;
    ensure!(
        processed["complete"] == json!(true),
        "Core did not complete it: {processed}"
    );
    let hex = processed["hex"]
        .as_str()
        .ok_or_else(|| anyhow!("no hex in {processed}"))?;
    let txid = env.send_raw(hex)?;
    let tx = mine_and_confirm(&env, &txid)?;
    assert_recovery_path(&tx)?;
    Ok(())
}

#[test]
fn exported_recovery_descriptor_derives_the_same_addresses_in_bitcoind() -> Result<()> {
    let env = TestEnv::new()?;
    let (_, key) = recovery_key()?;
    let c = Cluster::with_recovery_wallet(&key, BLOCKS)?;
    let desc = ckm_json(&c.coord, &["wallet", "descriptor"])?;
    let external = json_str(&desc, "external")?;
    let internal = json_str(&desc, "internal")?;
    ensure!(
        external.contains(&format!("and_v(v:pk({key}/0/*),older({BLOCKS}))")),
        "{external}"
    );
    let from_core = env.derive_addresses(external, Some((0, 9)))?;
    for (i, core) in from_core.iter().enumerate() {
        let v = ckm_json(&c.coord, &["wallet", "address"])?;
        ensure!(v["index"] == json!(i), "{v}");
        ensure!(
            json_str(&v, "address")? == core,
            "wallet address {i}: {v} vs {core}"
        );
        let index = i.to_string();
        let s = ckm_json(
            &c.signers[i % 3].home,
            &["signer", "address", "--wallet", WALLET, "--index", &index],
        )?;
        ensure!(
            json_str(&s, "address")? == core,
            "signer {} address {i}: {s} vs {core}",
            i % 3 + 1
        );
    }
    let change_core = env.derive_addresses(internal, Some((0, 2)))?;
    for (i, core) in change_core.iter().enumerate() {
        let index = i.to_string();
        let s = ckm_json(
            &c.signers[0].home,
            &[
                "signer", "address", "--wallet", WALLET, "--index", &index, "--change",
            ],
        )?;
        ensure!(
            json_str(&s, "address")? == core,
            "change {i}: {s} vs {core}"
        );
    }
    // Core accepts both as valid, ranged, public descriptors with our checksums.
    for text in [external, internal] {
        let (body, checksum) = text
            .split_once('#')
            .ok_or_else(|| anyhow!("no checksum in {text}"))?;
        let info = env.rpc("getdescriptorinfo", json!([body]))?;
        ensure!(info["isrange"] == json!(true), "{info}");
        ensure!(info["hasprivatekeys"] == json!(false), "{info}");
        ensure!(info["checksum"] == json!(checksum), "{info} vs {checksum}");
    }
    Ok(())
}
