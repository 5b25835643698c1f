//! What decoding a hostile PSBT costs (issue 25): a PSBT whose global map carries N unknown
//! key-value pairs (7 bytes each), read as binary version 0 and version 2, as base64 and as a
//! single-part UR, for N = 1k … 160k; then a 16 MB one (2.39 million pairs), which ckm refuses
//! at its bound of pairs per map (`ckm::psbt::codec::MAX_PAIRS_PER_MAP`).
//!
//! Run with `cargo bench --locked --bench psbt_decode`. Each figure is the median of several
//! decodes after one warm-up, on one thread; "ns/pair" is the binary v2 time over N (flat when
//! decoding is linear); "peak MB" is the process's peak resident memory (VmHWM) after the row
//! (rows run in increasing size, so it is the peak of the largest row so far).
//! `CKM_BENCH_QUICK=1` runs fewer repetitions.

use std::time::{Duration, Instant};

use bitcoin::absolute::LockTime;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, Psbt, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};
use ckm::psbt::version::PsbtDecodeError;
use ckm::psbt::{ur, PsbtVersion, VersionedPsbt};

/// A one-input, one-output PSBT in `version`.
fn base(version: PsbtVersion) -> Vec<u8> {
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(10_000),
            script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
        }],
    };
    let psbt = Psbt::from_unsigned_tx(tx).expect("an unsigned transaction");
    VersionedPsbt::new(psbt, version)
        .serialize()
        .expect("a version-2 transaction")
}

/// `base` with `pairs` unknown pairs at the start of its global map.
fn with_unknown_pairs(base: &[u8], pairs: u32) -> Vec<u8> {
    let mut out = base[..5].to_vec();
    out.reserve(pairs as usize * 7 + base.len());
    for i in 0..pairs {
        out.extend([5, 0xf0]);
        out.extend(i.to_le_bytes());
        out.push(0);
    }
    out.extend(&base[5..]);
    out
}

fn median_of(reps: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The process's peak resident memory in MB (Linux), or 0.
fn peak_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let quick = std::env::var_os("CKM_BENCH_QUICK").is_some();
    let reps = if quick { 3 } else { 9 };
    let (v0, v2) = (base(PsbtVersion::V0), base(PsbtVersion::V2));
    println!("PSBT decoding, N unknown pairs in the global map (median of {reps}, ms)");
    println!(
        "{:>9} {:>10} {:>9} {:>9} {:>11} {:>9} {:>8} {:>8}",
        "pairs", "bytes", "v0 bin", "v2 bin", "v2 base64", "v2 UR", "ns/pair", "peak MB"
    );
    for pairs in [1_000u32, 10_000, 20_000, 40_000, 80_000, 160_000] {
        let b0 = with_unknown_pairs(&v0, pairs);
        let b2 = with_unknown_pairs(&v2, pairs);
        let read = VersionedPsbt::deserialize(&b2).expect("decodes");
        assert_eq!(read.psbt().unknown.len(), pairs as usize);
        let text = read.to_base64().expect("encodes");
        let ur_text = ur::encode_single(&b2).expect("fits a UR");
        let t0 = median_of(reps, || {
            VersionedPsbt::deserialize(&b0).expect("decodes");
        });
        let t2 = median_of(reps, || {
            VersionedPsbt::deserialize(&b2).expect("decodes");
        });
        let t64 = median_of(reps, || {
            VersionedPsbt::from_base64(&text).expect("decodes");
        });
        let tur = median_of(reps, || {
            let raw = ur::decode([ur_text.as_str()]).expect("a UR");
            VersionedPsbt::deserialize(&raw).expect("decodes");
        });
        println!(
            "{pairs:>9} {:>10} {:>9.2} {:>9.2} {:>11.2} {:>9.2} {:>8.0} {:>8.1}",
            b2.len(),
            ms(t0),
            ms(t2),
            ms(t64),
            ms(tur),
            t2.as_nanos() as f64 / f64::from(pairs),
            peak_mb()
        );
    }

    let pairs = 2_390_000;
    println!("\n16 MB of unknown pairs ({pairs} pairs), refused at the bound per map (ms)");
    println!(
        "{:>10} {:>9} {:>9} {:>11} {:>9} {:>8}",
        "bytes", "v0 bin", "v2 bin", "v2 base64", "v2 UR", "peak MB"
    );
    let b0 = with_unknown_pairs(&v0, pairs);
    let b2 = with_unknown_pairs(&v2, pairs);
    let text = {
        use bitcoin::base64::prelude::{Engine as _, BASE64_STANDARD};
        BASE64_STANDARD.encode(&b2)
    };
    let ur_text = ur::encode_single(&b2).expect("fits a UR");
    let refused = |r: Result<VersionedPsbt, PsbtDecodeError>| {
        assert!(
            matches!(r, Err(PsbtDecodeError::TooManyPairs { .. })),
            "{r:?}"
        );
    };
    let reps = reps.min(5);
    let t0 = median_of(reps, || refused(VersionedPsbt::deserialize(&b0)));
    let t2 = median_of(reps, || refused(VersionedPsbt::deserialize(&b2)));
    let t64 = median_of(reps, || refused(VersionedPsbt::from_base64(&text)));
    let tur = median_of(reps, || {
        let raw = ur::decode([ur_text.as_str()]).expect("a UR");
        refused(VersionedPsbt::deserialize(&raw));
    });
    println!(
        "{:>10} {:>9.2} {:>9.2} {:>11.2} {:>9.2} {:>8.1}",
        b2.len(),
        ms(t0),
        ms(t2),
        ms(t64),
        ms(tur),
        peak_mb()
    );
}
