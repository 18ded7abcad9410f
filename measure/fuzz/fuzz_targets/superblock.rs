//! The dm-verity superblock parser on arbitrary bytes: it must never panic,
//! and whatever it accepts must be exactly what we would write (the parser
//! is strict, so only the canonical encoding is accepted).
#![no_main]

use cocos_measure::verity::Superblock;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sb) = Superblock::parse(data) {
        let bytes = sb.to_bytes();
        assert_eq!(&bytes[..], &data[..512], "accepted a non-canonical superblock");
        assert_eq!(Superblock::parse(&bytes), Ok(sb));
    }
});
