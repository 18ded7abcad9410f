//! TDX MRTD of IGVM files (`cocos-measure igvm FILE --platform tdx`, which
//! uses igvm 0.5.0's `generate_tdx_measurement`), checked against an
//! independent model written here from the Intel TDX Module Base
//! Architecture Specification ("TD Measurement"): MRTD is one running
//! SHA-384 over a 128-byte record per `TDH.MEM.PAGE.ADD` ("MEM.PAGE.ADD",
//! GPA at byte 16, zeros) and, per 256-byte chunk measured with
//! `TDH.MR.EXTEND`, a 128-byte record ("MR.EXTEND", chunk GPA at byte 16,
//! zeros) followed by the chunk.
//!
//! The files are generated with the igvm crate (`IgvmFile::new` +
//! `serialize`) for a TDX platform, so they exercise the same parse path
//! as real files. No TDX machine was available to check a real MRTD.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod refs;

use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmPlatformHeader, IgvmRevision};
use igvm_defs::{
    IGVM_VHS_PARAMETER_INSERT, IGVM_VHS_SUPPORTED_PLATFORM, IgvmPageDataFlags, IgvmPageDataType,
    IgvmPlatformType,
};
use proptest::prelude::*;
use refs::cocos_measure;
use sha2::{Digest, Sha384};

const TDX_MASK: u32 = 0x1;

#[derive(Debug, Clone)]
enum Page {
    /// Page data with these bytes (empty: a page of zeros).
    Data(Vec<u8>),
    /// Page data with the unmeasured flag.
    Unmeasured,
    /// Page data with the shared flag.
    Shared,
    /// A parameter area of this many pages, inserted here.
    Parameters(u64),
}

fn record(op: &[u8], gpa: u64) -> [u8; 128] {
    let mut r = [0u8; 128];
    r[..op.len()].copy_from_slice(op);
    r[16..24].copy_from_slice(&gpa.to_le_bytes());
    r
}

/// The independent model: what the TDX module hashes for each page.
fn model_mrtd(pages: &[(u64, Page)]) -> [u8; 48] {
    let mut h = Sha384::new();
    let add = |h: &mut Sha384, gpa: u64| h.update(record(b"MEM.PAGE.ADD", gpa));
    for (gpa, page) in pages {
        match page {
            Page::Data(data) => {
                add(&mut h, *gpa);
                let mut full = data.clone();
                full.resize(4096, 0);
                for (i, chunk) in full.chunks(256).enumerate() {
                    h.update(record(b"MR.EXTEND", gpa + 256 * i as u64));
                    h.update(chunk);
                }
            }
            Page::Unmeasured => add(&mut h, *gpa),
            Page::Shared => {}
            Page::Parameters(n) => {
                for i in 0..*n {
                    add(&mut h, gpa + 4096 * i);
                }
            }
        }
    }
    h.finalize().into()
}

fn igvm_file(pages: &[(u64, Page)]) -> Vec<u8> {
    let mut directives = Vec::new();
    for (index, (gpa, page)) in pages.iter().enumerate() {
        let flags = IgvmPageDataFlags::new();
        let (flags, data) = match page {
            Page::Data(d) => (flags, d.clone()),
            Page::Unmeasured => (flags.with_unmeasured(true), Vec::new()),
            Page::Shared => (flags.with_shared(true), Vec::new()),
            Page::Parameters(n) => {
                directives.push(IgvmDirectiveHeader::ParameterArea {
                    number_of_bytes: n * 4096,
                    parameter_area_index: index as u32,
                    initial_data: Vec::new(),
                });
                directives.push(IgvmDirectiveHeader::ParameterInsert(
                    IGVM_VHS_PARAMETER_INSERT {
                        gpa: *gpa,
                        compatibility_mask: TDX_MASK,
                        parameter_area_index: index as u32,
                    },
                ));
                continue;
            }
        };
        directives.push(IgvmDirectiveHeader::PageData {
            gpa: *gpa,
            compatibility_mask: TDX_MASK,
            flags,
            data_type: IgvmPageDataType::NORMAL,
            data,
        });
    }
    let file = IgvmFile::new(
        IgvmRevision::V1,
        vec![IgvmPlatformHeader::SupportedPlatform(
            IGVM_VHS_SUPPORTED_PLATFORM {
                compatibility_mask: TDX_MASK,
                highest_vtl: 0,
                platform_type: IgvmPlatformType::TDX,
                platform_version: 1,
                shared_gpa_boundary: 0,
            },
        )],
        Vec::new(),
        directives,
    )
    .unwrap();
    let mut out = Vec::new();
    file.serialize(&mut out).unwrap();
    out
}

fn cli_mrtd(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tdx.igvm");
    std::fs::write(&path, bytes).unwrap();
    let out = cocos_measure()
        .arg("igvm")
        .arg(&path)
        .args(["--platform", "tdx"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One known page by hand: every record and chunk of it, hashed in order.
#[test]
fn one_page_mrtd_is_page_add_then_sixteen_extends() {
    let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let gpa = 0xff00_0000u64;
    let mut buf = Vec::new();
    let mut add = vec![0u8; 128];
    add[..12].copy_from_slice(b"MEM.PAGE.ADD");
    add[16..24].copy_from_slice(&gpa.to_le_bytes());
    buf.extend_from_slice(&add);
    for i in 0..16u64 {
        let mut ext = vec![0u8; 128];
        ext[..9].copy_from_slice(b"MR.EXTEND");
        ext[16..24].copy_from_slice(&(gpa + 256 * i).to_le_bytes());
        buf.extend_from_slice(&ext);
        buf.extend_from_slice(&data[256 * i as usize..256 * (i as usize + 1)]);
    }
    assert_eq!(buf.len(), 128 + 16 * 384);
    let expected = hex::encode(Sha384::digest(&buf));
    assert_eq!(cli_mrtd(&igvm_file(&[(gpa, Page::Data(data))])), expected);
}

fn page() -> impl Strategy<Value = Page> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..=4096).prop_map(Page::Data),
        1 => Just(Page::Unmeasured),
        1 => Just(Page::Shared),
        1 => (1u64..=4).prop_map(Page::Parameters),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random layouts: the crate's MRTD equals the model's.
    #[test]
    fn mrtd_matches_the_specification_model(kinds in proptest::collection::vec(page(), 1..12)) {
        // Distinct, ascending, page-aligned GPAs with room for parameter
        // areas. The first page carries data: the igvm parser rejects a file
        // with an empty data section.
        let pages: Vec<(u64, Page)> = std::iter::once(Page::Data(vec![0x5a; 100]))
            .chain(kinds)
            .enumerate()
            .map(|(i, p)| (0x10_0000 + 0x10_000 * i as u64, p))
            .collect();
        let bytes = igvm_file(&pages);
        prop_assert_eq!(cli_mrtd(&bytes), hex::encode(model_mrtd(&pages)));
    }
}
