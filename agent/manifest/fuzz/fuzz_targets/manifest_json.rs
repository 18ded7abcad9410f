//! The JSON form on arbitrary bytes: reading must never panic, writing
//! what was read must be a fixed point (read(write(x)) writes the same
//! bytes), and validation must never panic.
#![no_main]

use cocos_manifest::Manifest;
use cocos_manifest::json::Computation;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Computation::from_json(data) {
        let out = c.to_json();
        let again = Computation::from_json(&out).expect("our own JSON must parse");
        assert_eq!(again.to_json(), out, "re-encoding is not a fixed point");
        let _ = Manifest::validate(&c, None);
    }
});
