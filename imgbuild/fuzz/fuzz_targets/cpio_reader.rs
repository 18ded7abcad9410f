//! The newc cpio reader on arbitrary archives: it must never panic, and
//! whatever it accepts must encode back to members it reads the same way
//! (names, fields and data survive a round trip through the writer).
#![no_main]

use cocos_imgbuild::initramfs::cpio::{Member, read_newc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(members) = read_newc(data) else {
        return;
    };
    let mut again = Vec::new();
    for m in &members {
        assert!(!m.name.is_empty() && !m.name.contains('\0'));
        m.encode(&mut again)
            .expect("a member that was read encodes");
    }
    Member::trailer()
        .encode(&mut again)
        .expect("the trailer encodes");
    assert_eq!(
        read_newc(&again).expect("re-encoded archive reads"),
        members
    );
});
