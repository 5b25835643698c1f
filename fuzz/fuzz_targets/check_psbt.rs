//! Fuzzes the co-signer's PSBT check and round 1 with arbitrary PSBT bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let fx = common::fixture();
    if let Ok(psbt) = bitcoin::Psbt::deserialize(data) {
        let group = fx.shares[0].group();
        if let Ok(checked) = ckm::psbt::check_psbt(&psbt, group) {
            assert!(checked.fee() <= checked.input_total());
            assert!(checked.outflow() <= checked.input_total());
            assert_eq!(checked.inputs().len(), psbt.inputs.len());
            let _ = ckm::psbt::commit(&psbt, &fx.shares[0], &mut rand::thread_rng());
        }
    }
});
