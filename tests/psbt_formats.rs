//! PSBT versions 0 and 2 and UR transport, in memory: a real wallet PSBT (DKG in memory,
//! bdk wallet over SQLite, made-up funding) converted v0 → v2 → v0, checked against an
//! independent BIP-0370 implementation (rust-bitcoin's `psbt-v2` crate), co-signed as v2 and
//! verified with libbitcoinconsensus, and carried through single and multipart URs with 1 and
//! 100 inputs.

#[path = "common/consensus.rs"]
mod consensus;

use std::collections::HashMap;

use anyhow::{ensure, Context, Result};
use bdk_wallet::KeychainKind;
use bitcoin::absolute::LockTime;
use bitcoin::{Address, Amount, FeeRate, Network, OutPoint, Psbt, TxOut};
use ckm::frost::pedersen::{run_in_memory, DkgParams};
use ckm::frost::shares::{secp, KeyShare};
use ckm::identity::IdentityKey;
use ckm::keys::{Roster, RosterEntry};
use ckm::psbt::inspect::{inspect, InputState, Keychain, Owner, SigningState};
use ckm::psbt::ur;
use ckm::psbt::version::{self, PsbtDecodeError, RequiredLockTime, V2Fields};
use ckm::psbt::{check_psbt, sign_in_memory, PsbtVersion, VersionedPsbt};
use ckm::wallet::{CkmWallet, WalletMeta};
use consensus::{consensus_verify, made_up_funding};

const NETWORK: Network = Network::Regtest;

struct Fixture {
    _dir: tempfile::TempDir,
    shares: Vec<KeyShare>,
    wallet: CkmWallet,
    funding: HashMap<OutPoint, TxOut>,
    psbt: Psbt,
}

/// A 2-of-3 wallet funded with `inputs` outputs of 10 000 sat (receive and change addresses
/// alternately) and a payment that spends them all.
fn fixture(inputs: u32) -> Result<Fixture> {
    let mut rng = rand::thread_rng();
    let shares = run_in_memory(DkgParams::new(2, 3)?, &mut rng)?;
    let dir = tempfile::tempdir()?;
    let roster = Roster::new(
        (1..=3u16)
            .map(|index| RosterEntry {
                index,
                url: format!("http://127.0.0.1:{}", 40_000 + index),
                identity: IdentityKey::generate(&mut rng).public(),
                tls_sha256: None,
            })
            .collect(),
    )?;
    let meta = WalletMeta {
        name: "vault".into(),
        network: NETWORK,
        group: shares[0].group().clone(),
        roster,
        electrum: None,
        keygen: None,
        epoch: 0,
        transitions: Vec::new(),
        pending: None,
        birth_height: None,
    };
    let mut wallet = CkmWallet::create(&dir.path().join("w.sqlite"), meta)?;
    let mut funding = HashMap::new();
    let mut txs = Vec::new();
    for i in 0..inputs {
        let keychain = if i % 2 == 0 {
            KeychainKind::External
        } else {
            KeychainKind::Internal
        };
        let index = i / 2;
        wallet
            .bdk_mut()
            .reveal_addresses_to(keychain, index)
            .for_each(drop);
        let spk = wallet
            .bdk()
            .peek_address(keychain, index)
            .address
            .script_pubkey();
        let tx = made_up_funding(&mut rng, spk, 10_000);
        funding.insert(OutPoint::new(tx.compute_txid(), 0), tx.output[0].clone());
        txs.push((tx, 1_700_000_000u64));
    }
    wallet.bdk_mut().apply_unconfirmed_txs(txs);
    wallet.persist()?;
    let to = foreign_address();
    // More than all inputs but one, with room for the fee (~58 vB per input) and a change
    // output above dust.
    let amount = Amount::from_sat(u64::from(inputs) * 10_000 - 1_000 - 70 * u64::from(inputs));
    let psbt = wallet.build_payment(&to, amount, FeeRate::from_sat_per_vb_u32(1))?;
    ensure!(
        psbt.inputs.len() == inputs as usize,
        "spends {}",
        psbt.inputs.len()
    );
    Ok(Fixture {
        _dir: dir,
        shares,
        wallet,
        funding,
        psbt,
    })
}

fn foreign_address() -> Address {
    let key = IdentityKey::generate(&mut rand::rngs::OsRng);
    Address::p2tr(secp(), key.public().x_only(), None, NETWORK)
}

fn v2_bytes(psbt: &Psbt) -> Result<Vec<u8>> {
    Ok(VersionedPsbt::new(psbt.clone(), PsbtVersion::V2).serialize()?)
}

#[test]
fn v0_to_v2_to_v0_keeps_every_field_and_byte() -> Result<()> {
    let f = fixture(3)?;
    let v2 = v2_bytes(&f.psbt)?;
    assert_eq!(version::peek_version(&v2)?, PsbtVersion::V2);
    assert_ne!(v2, f.psbt.serialize(), "version 2 is another encoding");
    let back = VersionedPsbt::deserialize(&v2)?;
    assert_eq!(back.version(), PsbtVersion::V2);
    assert_eq!(back.psbt(), &f.psbt, "the round trip changed the PSBT");
    assert_eq!(back.psbt().serialize(), f.psbt.serialize());
    // What the signers need is there, and they accept it.
    for input in &back.psbt().inputs {
        ensure!(input.witness_utxo.is_some() && input.tap_internal_key.is_some());
        ensure!(!input.tap_key_origins.is_empty());
    }
    let checked = check_psbt(back.psbt(), f.shares[0].group())?;
    assert_eq!(checked.txid(), f.psbt.unsigned_tx.compute_txid());
    assert_eq!(checked.inputs().len(), 3);
    assert_eq!(
        checked
            .outputs()
            .iter()
            .filter(|o| o.change_path.is_some())
            .count(),
        1
    );
    // Written back as version 2, byte for byte.
    assert_eq!(back.serialize()?, v2);
    // The signer's entry point reads the same PSBT from base64 of either version.
    assert_eq!(version::psbt_from_base64(&back.to_base64()?)?, f.psbt);
    assert_eq!(version::psbt_from_base64(&f.psbt.to_string())?, f.psbt);
    Ok(())
}

#[test]
fn an_independent_bip370_implementation_agrees() -> Result<()> {
    let f = fixture(2)?;
    let ours = v2_bytes(&f.psbt)?;
    let theirs = psbt_v2::v2::Psbt::deserialize(&ours)
        .map_err(|e| anyhow::anyhow!("psbt-v2 refuses our v2 PSBT: {e:?}"))?;
    let tx = &f.psbt.unsigned_tx;
    assert_eq!(theirs.global.input_count, tx.input.len());
    assert_eq!(theirs.global.output_count, tx.output.len());
    assert_eq!(theirs.global.tx_version, tx.version);
    assert_eq!(
        theirs
            .determine_lock_time()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        tx.lock_time
    );
    for ((input, txin), ours) in theirs.inputs.iter().zip(&tx.input).zip(&f.psbt.inputs) {
        assert_eq!(input.previous_txid, txin.previous_output.txid);
        assert_eq!(input.spent_output_index, txin.previous_output.vout);
        assert_eq!(
            input.sequence.unwrap_or(bitcoin::Sequence::MAX),
            txin.sequence
        );
        assert_eq!(input.witness_utxo, ours.witness_utxo);
        assert_eq!(input.tap_internal_key, ours.tap_internal_key);
        assert_eq!(input.tap_key_origins, ours.tap_key_origins);
    }
    for ((output, txout), ours) in theirs.outputs.iter().zip(&tx.output).zip(&f.psbt.outputs) {
        assert_eq!(output.amount, txout.value);
        assert_eq!(output.script_pubkey, txout.script_pubkey);
        assert_eq!(output.tap_internal_key, ours.tap_internal_key);
        assert_eq!(output.tap_key_origins, ours.tap_key_origins);
    }
    // Their writer's output reads back as the same PSBT.
    let rewritten = VersionedPsbt::deserialize(&theirs.serialize())?;
    assert_eq!(rewritten.version(), PsbtVersion::V2);
    assert_eq!(rewritten.psbt(), &f.psbt);
    Ok(())
}

#[test]
fn a_v2_psbt_is_cosigned_and_written_back_as_v2() -> Result<()> {
    let f = fixture(3)?;
    let mut fields = V2Fields {
        fallback_lock_time: None,
        tx_modifiable: Some(0b11),
        required_lock_times: vec![RequiredLockTime::default(); 3],
    };
    // One input requires a height lock time: the transaction's lock time follows it.
    fields.required_lock_times[1].height = Some(150);
    let mut psbt = f.psbt.clone();
    psbt.unsigned_tx.lock_time = LockTime::from_consensus(150);
    let bytes = version::to_v2(&psbt, &fields)?;
    let mut read = VersionedPsbt::deserialize(&bytes)?;
    assert_eq!(
        read.psbt().unsigned_tx.lock_time,
        LockTime::from_consensus(150)
    );
    assert_eq!(read.v2_fields(), Some(&fields));
    assert_eq!(
        read.serialize()?,
        bytes,
        "remembered v2 fields are written back"
    );

    let shares: Vec<&KeyShare> = f.shares.iter().take(2).collect();
    let tx = sign_in_memory(read.psbt_mut(), &shares, &mut rand::thread_rng())?;
    consensus_verify(&tx, &f.funding)?;
    read.mark_signed();
    let signed = VersionedPsbt::deserialize(&read.serialize()?)?;
    assert_eq!(signed.version(), PsbtVersion::V2);
    assert_eq!(
        signed.v2_fields().and_then(|f| f.tx_modifiable),
        Some(0),
        "BIP-0370: a SIGHASH_ALL signer clears the modifiable flags"
    );
    assert_eq!(signed.psbt().clone().extract_tx()?, tx);
    let seen = inspect(
        signed.psbt(),
        signed.version(),
        f.shares[0].group(),
        NETWORK,
        |_| None,
    );
    assert_eq!(seen.state, SigningState::Finalized);
    assert!(seen.vsize_exact);
    assert_eq!(seen.vsize, tx.vsize() as u64);
    Ok(())
}

#[test]
fn inspect_names_inputs_outputs_fee_and_state() -> Result<()> {
    let f = fixture(4)?;
    let lookup = |s: &bitcoin::Script| {
        f.wallet
            .bdk()
            .derivation_of_spk(s.to_owned())
            .map(|(k, i)| (if k == KeychainKind::External { 0 } else { 1 }, i))
    };
    let seen = inspect(
        &f.psbt,
        PsbtVersion::V0,
        f.shares[0].group(),
        NETWORK,
        lookup,
    );
    assert_eq!(seen.state, SigningState::Unsigned);
    assert_eq!(seen.inputs.len(), 4);
    assert!(seen.inputs.iter().all(|i| i.state == InputState::Unsigned));
    let keychains: Vec<(Keychain, u32)> = seen
        .inputs
        .iter()
        .filter_map(|i| match i.owner {
            Owner::Ours {
                keychain,
                index,
                key_origin: true,
            } => Some((keychain, index)),
            _ => None,
        })
        .collect();
    assert_eq!(keychains.len(), 4, "{:?}", seen.inputs);
    for expected in [
        (Keychain::Receive, 0),
        (Keychain::Receive, 1),
        (Keychain::Change, 0),
        (Keychain::Change, 1),
    ] {
        ensure!(
            keychains.contains(&expected),
            "{expected:?} missing: {keychains:?}"
        );
    }
    let fee = f.psbt.fee()?.to_sat();
    assert_eq!(seen.fee_sats, Some(fee));
    assert_eq!(seen.input_total_sats, Some(40_000));
    let payments: Vec<_> = seen
        .outputs
        .iter()
        .filter(|o| o.owner == Owner::Foreign)
        .collect();
    assert_eq!(payments.len(), 1);
    assert_eq!(seen.payment_total_sats, payments[0].amount_sats);
    let rate = seen.fee_rate_sat_per_vb.context("fee rate")?;
    ensure!(
        (0.9..1.5).contains(&rate),
        "built at 1 sat/vB, estimated {rate}"
    );

    // A PSBT that claims an input is ours at the wrong path is flagged, not trusted.
    let mut forged = f.psbt.clone();
    let key = forged.inputs[0].tap_internal_key.context("internal key")?;
    if let Some((_, (_, path))) = forged.inputs[0].tap_key_origins.get_mut(&key) {
        *path = "m/0/77".parse()?;
    }
    let seen = inspect(
        &forged,
        PsbtVersion::V0,
        f.shares[0].group(),
        NETWORK,
        |_| None,
    );
    assert!(
        matches!(seen.inputs[0].owner, Owner::FalseClaim { .. }),
        "{:?}",
        seen.inputs[0]
    );
    Ok(())
}

#[test]
fn truncated_and_corrupted_v2_psbts_are_refused_without_panicking() -> Result<()> {
    let f = fixture(2)?;
    let bytes = v2_bytes(&f.psbt)?;
    for len in 0..bytes.len() {
        ensure!(
            VersionedPsbt::deserialize(&bytes[..len]).is_err(),
            "a {len}-byte prefix was accepted"
        );
    }
    let mut refused = 0;
    for i in 5..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x5a;
        if VersionedPsbt::deserialize(&b).is_err() {
            refused += 1;
        }
    }
    ensure!(refused > 0);
    // Extra bytes after the last map.
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        VersionedPsbt::deserialize(&trailing),
        Err(PsbtDecodeError::Trailing(1))
    ));
    Ok(())
}

#[test]
fn a_v0_psbt_carrying_v2_only_fields_is_refused_and_not_written_as_v2() -> Result<()> {
    let f = fixture(1)?;
    let key = |type_value| bitcoin::psbt::raw::Key {
        type_value,
        key: Vec::new(),
    };
    let mut input = f.psbt.clone();
    input.inputs[0].unknown.insert(key(0x0e), vec![0; 32]);
    let mut global = f.psbt.clone();
    global.unknown.insert(key(0x04), vec![1]);
    for (psbt, expected, field) in [
        (input, version::MapName::Input(0), "PSBT_IN_PREVIOUS_TXID"),
        (global, version::MapName::Global, "PSBT_GLOBAL_INPUT_COUNT"),
    ] {
        // bitcoin writes it as version 0 (an unknown field), but BIP-0370 forbids the field in
        // version 0: refused when read ...
        let read = VersionedPsbt::deserialize(&psbt.serialize());
        assert!(
            matches!(read, Err(PsbtDecodeError::V2FieldInV0 { map, field: f }) if map == expected && f == field),
            "{read:?}"
        );
        // ... and as version 2 it would be a duplicate key: refused, not written.
        let err = VersionedPsbt::new(psbt, PsbtVersion::V2).serialize();
        assert!(
            matches!(err, Err(version::PsbtEncodeError::ReservedField { map, .. }) if map == expected),
            "{err:?}"
        );
    }
    Ok(())
}

/// The fuzz target's property (fuzz/fuzz_targets/psbt_formats.rs) on mutations of real
/// PSBTs: whatever decodes is written back (in its version, and as version 2) and reads again
/// as the same PSBT; nothing panics.
#[test]
fn mutated_psbts_that_decode_round_trip() -> Result<()> {
    use rand::{Rng, SeedableRng};
    let f = fixture(2)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut decoded = 0;
    for version in [PsbtVersion::V0, PsbtVersion::V2] {
        let original = VersionedPsbt::new(f.psbt.clone(), version).serialize()?;
        for _ in 0..3_000 {
            let mut bytes = original.clone();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(5..bytes.len());
                match rng.gen_range(0..3) {
                    0 => bytes[at] = rng.gen(),
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, rng.gen()),
                }
            }
            let Ok(read) = VersionedPsbt::deserialize(&bytes) else {
                continue;
            };
            decoded += 1;
            let again = VersionedPsbt::deserialize(&read.serialize()?)?;
            assert_eq!(again.psbt(), read.psbt());
            assert_eq!(again.version(), read.version());
            let mut v2 = read.clone();
            v2.set_version(PsbtVersion::V2);
            if let Ok(b) = v2.serialize() {
                assert_eq!(VersionedPsbt::deserialize(&b)?.psbt(), read.psbt());
            }
            let _ = ur::decode(String::from_utf8_lossy(&bytes).lines());
        }
    }
    ensure!(
        decoded > 0,
        "no mutation decoded: the property was never exercised"
    );
    Ok(())
}

fn ur_round_trip(inputs: u32) -> Result<()> {
    let f = fixture(inputs)?;
    for version in [PsbtVersion::V0, PsbtVersion::V2] {
        let bytes = VersionedPsbt::new(f.psbt.clone(), version).serialize()?;
        let single = ur::encode_single(&bytes)?;
        assert_eq!(ur::decode([single.as_str()])?, bytes);
        let parts = ur::encode_parts(&bytes, ur::DEFAULT_FRAGMENT_LEN, 0)?;
        if bytes.len() > ur::DEFAULT_FRAGMENT_LEN {
            ensure!(parts.len() > 1 && parts.iter().all(|p| p.starts_with("ur:psbt/")));
        }
        // Upper case (as scanned from QR codes), in reverse order.
        let upper: Vec<String> = parts.iter().rev().map(|p| p.to_uppercase()).collect();
        let restored = ur::decode(upper.iter().map(String::as_str))?;
        assert_eq!(restored, bytes, "{inputs} inputs, version {version}");
        let read = VersionedPsbt::deserialize(&restored)?;
        assert_eq!(read.version(), version);
        assert_eq!(read.psbt(), &f.psbt);
    }
    Ok(())
}

#[test]
fn ur_round_trip_with_one_input() -> Result<()> {
    ur_round_trip(1)
}

#[test]
fn ur_round_trip_with_a_hundred_inputs() -> Result<()> {
    ur_round_trip(100)
}

// ------------------------------------------------------------------------- BIP-0370 vectors

#[derive(serde::Deserialize)]
struct Bip370Vectors {
    vectors: Vec<Bip370Vector>,
}

#[derive(serde::Deserialize)]
struct Bip370Vector {
    line: u32,
    verdict: String,
    lock_time: Option<u32>,
    case: String,
    hex: String,
    base64: String,
}

/// Every test vector of BIP-0370 (extracted with its line by `tests/data/bip370_extract.py`)
/// gives the BIP's verdict: an invalid PSBT is refused with an error naming a field the case
/// names; a valid one decodes as version 2 and is written back byte for byte; the lock time is
/// the one the BIP computes, or none can be.
#[test]
fn every_bip370_vector_gives_the_bips_verdict() -> Result<()> {
    let data: Bip370Vectors = serde_json::from_str(include_str!("data/bip370_test_vectors.json"))?;
    ensure!(data.vectors.len() == 48, "{} vectors", data.vectors.len());
    let mut verdicts = HashMap::new();
    for v in &data.vectors {
        let at = format!("BIP-0370 line {} ({})", v.line, v.case);
        let bytes = hex::decode(&v.hex)?;
        let read = VersionedPsbt::deserialize(&bytes);
        let from_text = VersionedPsbt::from_base64(&v.base64);
        ensure!(
            read.is_ok() == from_text.is_ok(),
            "{at}: hex and base64 disagree"
        );
        match (v.verdict.as_str(), read) {
            ("invalid", Err(e)) => {
                let text = e.with_causes();
                let named: Vec<&str> = v
                    .case
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("PSBT_"))
                    .collect();
                ensure!(
                    named.iter().any(|field| text.contains(field)),
                    "{at}: refused, but the error does not name {named:?}: {text}"
                );
            }
            ("valid", Ok(psbt)) => {
                ensure!(psbt.version() == PsbtVersion::V2, "{at}: not read as v2");
                ensure!(
                    psbt.serialize()? == bytes,
                    "{at}: not written back byte for byte"
                );
                ensure!(psbt.to_base64()? == v.base64, "{at}: base64 differs");
            }
            ("lock_time", Ok(psbt)) => {
                let expected = Some(LockTime::from_consensus(v.lock_time.unwrap_or(u32::MAX)));
                ensure!(Some(psbt.psbt().unsigned_tx.lock_time) == expected, "{at}");
                ensure!(
                    psbt.v2_fields().and_then(|f| f.lock_time().ok()) == expected,
                    "{at}"
                );
                ensure!(
                    psbt.serialize()? == bytes,
                    "{at}: not written back byte for byte"
                );
            }
            ("lock_time_undetermined", Err(PsbtDecodeError::LockTimeConflict)) => {}
            (verdict, read) => anyhow::bail!("{at}: the BIP says {verdict}, ckm gives {read:?}"),
        }
        *verdicts.entry(v.verdict.as_str()).or_insert(0) += 1;
    }
    assert_eq!(verdicts.get("invalid"), Some(&24));
    assert_eq!(verdicts.get("valid"), Some(&14));
    Ok(())
}

// ---------------------------------------------------------------------------- hostile files

/// A PSBT of `version` with `pairs` unknown key-value pairs (7 bytes each) in its global map,
/// built from BIP-0370's first valid vector.
fn with_unknown_pairs(version: PsbtVersion, pairs: u32) -> Result<Vec<u8>> {
    let data: Bip370Vectors = serde_json::from_str(include_str!("data/bip370_test_vectors.json"))?;
    let valid = data
        .vectors
        .iter()
        .find(|v| v.verdict == "valid")
        .context("no valid vector")?;
    let v2 = VersionedPsbt::deserialize(&hex::decode(&valid.hex)?)?;
    let mut base = v2.clone();
    base.set_version(version);
    let base = base.serialize()?;
    let mut out = base[..5].to_vec();
    for i in 0..pairs {
        out.extend([5, 0xf0]);
        out.extend(i.to_le_bytes());
        out.push(0);
    }
    out.extend(&base[5..]);
    Ok(out)
}

/// The decoder takes time linear in the input: 160,000 unknown pairs (the 1.1 MB file that
/// took ckm 106 s of CPU when the duplicate-key scan was quadratic) decode at once in both
/// versions, binary and base64; 2.4 million (16 MB) are refused at ckm's bound per map, which
/// the error names. The release timings are `cargo bench --bench psbt_decode`.
#[test]
fn hostile_psbts_decode_in_linear_time_or_are_refused_at_a_bound() -> Result<()> {
    use std::time::{Duration, Instant};
    // Generous: a debug build on a loaded machine; the quadratic scan needed minutes.
    let bound = Duration::from_secs(5);
    for version in [PsbtVersion::V0, PsbtVersion::V2] {
        let bytes = with_unknown_pairs(version, 160_000)?;
        let start = Instant::now();
        let read = VersionedPsbt::deserialize(&bytes)?;
        ensure!(read.psbt().unknown.len() == 160_000);
        let text = read.to_base64()?;
        ensure!(VersionedPsbt::from_base64(&text)?.psbt() == read.psbt());
        let took = start.elapsed();
        ensure!(took < bound, "version {version}: {took:?}");

        let bytes = with_unknown_pairs(version, 2_400_000)?;
        ensure!(bytes.len() > 16_000_000);
        let start = Instant::now();
        let err = VersionedPsbt::deserialize(&bytes);
        let took = start.elapsed();
        assert!(
            matches!(
                err,
                Err(PsbtDecodeError::TooManyPairs {
                    map: version::MapName::Global,
                    limit: 200_000
                })
            ),
            "{err:?}"
        );
        ensure!(took < bound, "version {version}, 16 MB: {took:?}");
        if let Err(e) = err {
            let text = e.to_string();
            ensure!(
                text.contains("200000") && text.contains("global map"),
                "{text}"
            );
        }
    }
    Ok(())
}

/// Counts and lengths beyond ckm's bounds are refused with an error naming the bound and the
/// field, before anything is allocated for them.
#[test]
fn counts_beyond_the_bounds_are_refused_naming_the_field() -> Result<()> {
    let pair = |key: &[u8], value: &[u8]| {
        let mut out = vec![key.len() as u8];
        out.extend(key);
        out.extend(bitcoin::consensus::encode::serialize(&bitcoin::VarInt(
            value.len() as u64,
        )));
        out.extend(value);
        out
    };
    let v2_header = |inputs: u64| {
        let mut out = b"psbt\xff".to_vec();
        out.extend(pair(&[0x02], &2i32.to_le_bytes()));
        out.extend(pair(
            &[0x04],
            &bitcoin::consensus::encode::serialize(&bitcoin::VarInt(inputs)),
        ));
        out.extend(pair(&[0x05], &[0]));
        out.extend(pair(&[0xfb], &2u32.to_le_bytes()));
        out.push(0);
        out
    };
    // 30,000 inputs: more than fit in a block; the bytes are there for the maps.
    let mut many = v2_header(30_000);
    many.extend(vec![0; 30_000]);
    let err = VersionedPsbt::deserialize(&many);
    assert!(
        matches!(
            err,
            Err(PsbtDecodeError::TooMany {
                field: "PSBT_GLOBAL_INPUT_COUNT",
                count: 30_000,
                limit: 24_390,
                ..
            })
        ),
        "{err:?}"
    );
    // A value longer than a block.
    let mut long = b"psbt\xff".to_vec();
    long.extend(pair(&[0xf0], &vec![0; 4_000_001]));
    long.push(0);
    let err = VersionedPsbt::deserialize(&long);
    assert!(
        matches!(
            err,
            Err(PsbtDecodeError::TooLong {
                what: "value",
                len: 4_000_001,
                limit: 4_000_000,
                ..
            })
        ),
        "{err:?}"
    );
    Ok(())
}
