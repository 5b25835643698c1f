//! Fuzzes the edges where PSBTs enter: version 0/2 decoding (and the v2 → v0 → v2 round trip
//! of what decodes) and UR decoding of arbitrary text.
#![no_main]

use ckm::psbt::{PsbtVersion, VersionedPsbt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(read) = VersionedPsbt::deserialize(data) {
        // What was read is written back and reads again as the same PSBT and version.
        if let Ok(bytes) = read.serialize() {
            let again = VersionedPsbt::deserialize(&bytes).expect("our own output reads back");
            assert_eq!(again.psbt(), read.psbt());
            assert_eq!(again.version(), read.version());
        }
        // Either version can be written; version 2 needs transaction version 2 or more.
        let mut v2 = read.clone();
        v2.set_version(PsbtVersion::V2);
        if let Ok(bytes) = v2.serialize() {
            let back = VersionedPsbt::deserialize(&bytes).expect("our v2 reads back");
            assert_eq!(back.psbt(), read.psbt());
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ckm::psbt::ur::decode(text.lines());
    }
});
