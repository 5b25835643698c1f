//! Fuzzes the share-store decoders: sealed blobs, store headers and key-share encodings.
#![no_main]

use std::sync::OnceLock;

use ckm::store::{KdfParams, StoreKey};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;

fn key() -> &'static StoreKey {
    static KEY: OnceLock<StoreKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        StoreKey::create(b"fuzz", KdfParams::fast_for_tests(), &mut rng)
            .expect("key")
            .0
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = key().open(b"share:x", data);
    let _ = ckm::frost::shares::KeyShare::from_secret_bytes(data);
    if let Ok(header) = serde_json::from_slice::<ckm::store::StoreHeader>(data) {
        // Unlock with cheap parameters only (the store refuses absurd ones itself; large
        // legitimate ones would only slow the fuzzer down).
        let p = header.kdf_params();
        if p.m_cost_kib <= 256 && p.t_cost <= 2 && p.p_cost <= 2 {
            let _ = StoreKey::unlock(b"fuzz", &header);
        }
    }
});
