//! IGVM files on arbitrary bytes, through everything `cocos-measure igvm`
//! does with them: parsing (the igvm crate), the SEV-SNP digest under every
//! semantics, the TDX MRTD and the ID block check. Nothing may panic.
#![no_main]

use cocos_measure::igvm::{IgvmImage, Semantics};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(image) = IgvmImage::parse(data) else {
        return;
    };
    for semantics in [Semantics::Firmware, Semantics::Igvmmeasure, Semantics::IgvmCrate] {
        for native_zero in [false, true] {
            let _ = image.snp_launch_digest(semantics, native_zero);
        }
    }
    let _ = image.tdx_mrtd();
    let _ = image.snp_guest_policy();
    if let Ok(Some(block)) = image.snp_id_block() {
        let _ = block.verify(0x30000);
    }
});
