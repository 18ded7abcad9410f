//! The manifest decoder on arbitrary wire bytes (a reassembled
//! `cvms.ComputationRunReq`): it must never panic, and a manifest it
//! accepts must survive its own JSON form unchanged.
#![no_main]

use cocos_manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::from_wire_bytes(data) {
        let json = m.to_computation().to_json();
        let again = Manifest::from_json(&json).expect("our own JSON must validate");
        assert_eq!(again.to_computation(), m.to_computation());
    }
});
