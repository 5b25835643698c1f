//! Fuzzes the signer's message handling: arbitrary bytes decoded as a versioned
//! coordinator message and handed to a real signer (with a real encrypted home and share).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let fx = common::fixture();
    if let Ok(msg) = ckm::message::decode::<ckm::message::CoordinatorToSigner>(data) {
        let _ = fx.signer.handle(&fx.coordinator, msg, &mut rand::thread_rng());
    }
});
