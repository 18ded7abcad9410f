//! The canonical-request parser on arbitrary bytes: it must never panic,
//! and it accepts only canonical encodings (decode then encode gives the
//! input back).
#![no_main]

use cocos_auth::CanonicalRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = CanonicalRequest::decode(data) {
        assert_eq!(req.encode(), data, "accepted a non-canonical encoding");
    }
});
