//! TDX MRTD of IGVM files (`cocos-measure igvm FILE --platform tdx`, which
//! uses igvm 0.5.0's `generate_tdx_measurement`), checked two ways.
//!
//! Side by side with an implementation from outside the project: mosaik
//! 0.3.13's TDVF measurement (a Rust crate, `src/tee/tdx/builder/mrtd.rs`,
//! built by `scripts/setup-python-refs.sh` as `mosaik-mrtd`). The test
//! writes a TDVF image (the OVMF footer table, the TDVF metadata descriptor
//! and its sections) and the IGVM file a loader would use for the same
//! memory: a section with the MR.EXTEND attribute becomes page data, one
//! without it unmeasured pages (TDH.MEM.PAGE.ADD only), a PAGE_AUG section
//! shared pages (not measured). mosaik adds every page of a section before
//! extending any of them, while an IGVM file's page directives are added
//! and extended page by page; the two orders agree when each measured
//! section is one page, so the compared images have one-page measured
//! sections (and sections of any size without MR.EXTEND). The order
//! difference itself is shown by its own test.
//!
//! Against a model written here from the Intel TDX Module Base
//! Architecture Specification ("TD Measurement"): MRTD is one running
//! SHA-384 over a 128-byte record per `TDH.MEM.PAGE.ADD` ("MEM.PAGE.ADD",
//! GPA at byte 16, zeros) and, per 256-byte chunk measured with
//! `TDH.MR.EXTEND`, a 128-byte record ("MR.EXTEND", chunk GPA at byte 16,
//! zeros) followed by the chunk. The model covers parameter areas, which
//! TDVF images do not have.
//!
//! The IGVM files are generated with the igvm crate (`IgvmFile::new` +
//! `serialize`) for a TDX platform, so they exercise the same parse path
//! as real files. No TDX machine was available to check a real MRTD.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{cocos_measure, mosaik_mrtd, run_ok};
use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmPlatformHeader, IgvmRevision};
use igvm_defs::{
    IGVM_VHS_PARAMETER_INSERT, IGVM_VHS_SUPPORTED_PLATFORM, IgvmPageDataFlags, IgvmPageDataType,
    IgvmPlatformType,
};
use proptest::prelude::*;
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

// --- Side by side with mosaik's TDVF measurement -------------------------

/// The TDVF metadata section attribute "extend MRTD with the contents"
/// (TDVF design guide, TDX_METADATA_ATTRIBUTES_EXTENDMR).
const ATTR_EXTENDMR: u32 = 1;
/// Pages accepted later with TDH.MEM.PAGE.AUG: not in MRTD.
const ATTR_PAGE_AUG: u32 = 2;
const SECTION_BFV: u32 = 0;
const SECTION_TD_HOB: u32 = 2;
const SECTION_TEMP_MEM: u32 = 3;

/// One TDVF metadata section with the memory it describes.
#[derive(Debug, Clone)]
struct Section {
    gpa: u64,
    pages: u64,
    kind: u32,
    attributes: u32,
    /// Bytes copied from the image (for measured sections).
    raw: Vec<u8>,
}

/// GUIDs in their on-disk (little-endian) byte order.
fn guid(text: &str) -> [u8; 16] {
    uuid::Uuid::parse_str(text).unwrap().to_bytes_le()
}

/// A TDVF image as OVMF lays it out: the sections' raw data from offset 0,
/// then a last page holding the TDVF metadata descriptor and, at its end,
/// the GUIDed footer table (OVMF's ResetVector: the table ends 0x20 bytes
/// before the end of the file; its TDVF entry holds the descriptor's
/// offset from the end of the file).
fn tdvf_image(sections: &[Section]) -> Vec<u8> {
    let mut image = Vec::new();
    let mut offsets = Vec::new();
    for s in sections {
        let offset = if s.raw.is_empty() { 0 } else { image.len() };
        offsets.push(offset as u32);
        image.extend_from_slice(&s.raw);
        image.resize(image.len().next_multiple_of(4096), 0xcc);
    }
    let last_page = image.len();
    image.resize(last_page + 4096, 0);
    let len = image.len();

    let mut desc = Vec::new();
    desc.extend_from_slice(b"TDVF");
    desc.extend_from_slice(&(16 + 32 * sections.len() as u32).to_le_bytes());
    desc.extend_from_slice(&1u32.to_le_bytes());
    desc.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for (s, offset) in sections.iter().zip(offsets) {
        desc.extend_from_slice(&offset.to_le_bytes());
        desc.extend_from_slice(&(s.raw.len() as u32).to_le_bytes());
        desc.extend_from_slice(&s.gpa.to_le_bytes());
        desc.extend_from_slice(&(s.pages * 4096).to_le_bytes());
        desc.extend_from_slice(&s.kind.to_le_bytes());
        desc.extend_from_slice(&s.attributes.to_le_bytes());
    }
    assert!(desc.len() < 2048, "too many sections for one page");
    image[last_page..last_page + desc.len()].copy_from_slice(&desc);

    // [u32 offset][u16 entry size 22][TDVF GUID][u16 table size][footer GUID]
    let mut table = Vec::new();
    table.extend_from_slice(&((len - last_page) as u32).to_le_bytes());
    table.extend_from_slice(&22u16.to_le_bytes());
    table.extend_from_slice(&guid("e47a6535-984a-4798-865e-4685a7bf8ec2"));
    table.extend_from_slice(&40u16.to_le_bytes());
    table.extend_from_slice(&guid("96b582de-1fb2-45f7-baea-a366c55a082d"));
    assert_eq!(table.len(), 40);
    image[len - 0x20 - 40..len - 0x20].copy_from_slice(&table);
    image
}

/// The IGVM file for the same memory, page by page in section order.
fn tdvf_as_igvm(sections: &[Section]) -> Vec<u8> {
    let pages: Vec<(u64, Page)> = sections
        .iter()
        .flat_map(|s| {
            (0..s.pages).map(move |i| {
                let gpa = s.gpa + 4096 * i;
                let page = if s.attributes & ATTR_PAGE_AUG != 0 {
                    Page::Shared
                } else if s.attributes & ATTR_EXTENDMR != 0 {
                    let start = (4096 * i as usize).min(s.raw.len());
                    let end = (start + 4096).min(s.raw.len());
                    Page::Data(s.raw[start..end].to_vec())
                } else {
                    Page::Unmeasured
                };
                (gpa, page)
            })
        })
        .collect();
    igvm_file(&pages)
}

/// mosaik's MRTD of `sections` and ours of the same memory as IGVM.
fn both_mrtds(sections: &[Section]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tdvf.fd");
    std::fs::write(&path, tdvf_image(sections)).unwrap();
    let out = run_ok(std::process::Command::new(mosaik_mrtd()).arg(&path));
    let reference = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(reference.len(), 96, "mosaik-mrtd printed {reference:?}");
    (reference, cli_mrtd(&tdvf_as_igvm(sections)))
}

fn section(gpa: u64, pages: u64, kind: u32, attributes: u32, raw: Vec<u8>) -> Section {
    Section {
        gpa,
        pages,
        kind,
        attributes,
        raw,
    }
}

/// A firmware-like layout: a measured one-page BFV at the top of 4 GiB, a
/// TD HOB and temporary memory added without their contents, and a
/// PAGE_AUG region.
#[test]
fn tdvf_like_layout_matches_mosaik() {
    let bfv: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 253) as u8).collect();
    let sections = [
        section(0xffff_f000, 1, SECTION_BFV, ATTR_EXTENDMR, bfv),
        section(0x80_9000, 2, SECTION_TD_HOB, 0, Vec::new()),
        section(0x80_0000, 6, SECTION_TEMP_MEM, 0, Vec::new()),
        section(0x81_0000, 16, SECTION_TEMP_MEM, ATTR_PAGE_AUG, Vec::new()),
    ];
    let (reference, ours) = both_mrtds(&sections);
    assert_eq!(ours, reference);
}

/// The one place the two differ, and why the compared images keep measured
/// sections to one page: mosaik adds both pages of a two-page section
/// before extending them; the IGVM directives add and extend each page in
/// turn, which mosaik computes when the same bytes are two sections.
#[test]
fn a_multi_page_measured_section_is_ordered_differently_by_mosaik() {
    let data: Vec<u8> = (0..8192u32).map(|i| (i % 241) as u8).collect();
    let one = [section(
        0x100_0000,
        2,
        SECTION_BFV,
        ATTR_EXTENDMR,
        data.clone(),
    )];
    let two = [
        section(
            0x100_0000,
            1,
            SECTION_BFV,
            ATTR_EXTENDMR,
            data[..4096].to_vec(),
        ),
        section(
            0x100_1000,
            1,
            SECTION_BFV,
            ATTR_EXTENDMR,
            data[4096..].to_vec(),
        ),
    ];
    let (reference_one, ours_one) = both_mrtds(&one);
    let (reference_two, ours_two) = both_mrtds(&two);
    assert_eq!(ours_one, ours_two, "the same IGVM pages");
    assert_eq!(ours_two, reference_two);
    assert_ne!(reference_one, reference_two);
}

fn tdvf_section() -> impl Strategy<Value = (u64, u32, u32, Vec<u8>)> {
    prop_oneof![
        // Measured, one page, 0..=4096 bytes of data (zero-padded).
        3 => proptest::collection::vec(any::<u8>(), 0..=4096)
            .prop_map(|raw| (1u64, SECTION_BFV, ATTR_EXTENDMR, raw)),
        // Added without contents.
        2 => (1u64..=5).prop_map(|n| (n, SECTION_TEMP_MEM, 0, Vec::new())),
        // Not in MRTD.
        1 => (1u64..=3).prop_map(|n| (n, SECTION_TEMP_MEM, ATTR_PAGE_AUG, Vec::new())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Random TDVF layouts: the MRTD mosaik computes from the image equals
    /// ours of the same memory as IGVM.
    #[test]
    fn random_tdvf_layouts_match_mosaik(
        kinds in proptest::collection::vec(tdvf_section(), 0..8),
        first in proptest::collection::vec(any::<u8>(), 1..=4096),
    ) {
        // The first section carries data: the igvm parser rejects a file
        // whose data section is empty. GPAs are distinct and page-aligned,
        // in no particular order (descending here).
        let sections: Vec<Section> = std::iter::once((1, SECTION_BFV, ATTR_EXTENDMR, first))
            .chain(kinds)
            .enumerate()
            .map(|(i, (pages, kind, attributes, raw))| Section {
                gpa: 0xffe0_0000 - 0x10_0000 * i as u64,
                pages,
                kind,
                attributes,
                raw,
            })
            .collect();
        let (reference, ours) = both_mrtds(&sections);
        prop_assert_eq!(ours, reference);
    }
}
