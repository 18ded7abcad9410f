//! `cocos-measure verity format` against `veritysetup format`, side by side:
//! the hash files must be byte-identical and the root hashes equal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use cocos_measure::verity::{
    self, BlockSize, HashAlgorithm, RootHash, Salt, TreeParams, VerityOptions, VerityParams,
};
use common::{cocos_measure, field, pseudo_random, run_veritysetup};
use proptest::prelude::*;
use uuid::Uuid;

const UUID: &str = "5a1f0e2d-3c4b-4a69-8877-665544332211";

#[derive(Debug, Clone)]
struct Case {
    algorithm: HashAlgorithm,
    data_block_size: u32,
    hash_block_size: u32,
    /// Blocks in the tree.
    blocks: u64,
    /// Extra blocks in the data file beyond the tree (uses --data-blocks).
    extra_blocks: u64,
    salt: Vec<u8>,
    superblock: bool,
    hash_offset: u64,
    seed: u64,
}

impl Case {
    fn new(algorithm: HashAlgorithm, dbs: u32, hbs: u32, blocks: u64) -> Self {
        Case {
            algorithm,
            data_block_size: dbs,
            hash_block_size: hbs,
            blocks,
            extra_blocks: 0,
            salt: vec![0x5a; 32],
            superblock: true,
            hash_offset: 0,
            seed: blocks ^ u64::from(dbs) << 20 ^ u64::from(hbs) << 40,
        }
    }

    fn salt_arg(&self) -> String {
        if self.salt.is_empty() {
            "-".into()
        } else {
            hex::encode(&self.salt)
        }
    }

    fn veritysetup_args(&self, data: &str, hash: &str) -> Vec<String> {
        let mut args = vec![
            "format".into(),
            data.into(),
            hash.into(),
            format!("--hash={}", self.algorithm),
            format!("--data-block-size={}", self.data_block_size),
            format!("--hash-block-size={}", self.hash_block_size),
            format!("--salt={}", self.salt_arg()),
            format!("--uuid={UUID}"),
        ];
        if !self.superblock {
            args.push("--no-superblock".into());
        }
        if self.hash_offset != 0 {
            args.push(format!("--hash-offset={}", self.hash_offset));
        }
        if self.extra_blocks != 0 {
            args.push(format!("--data-blocks={}", self.blocks));
        }
        args
    }

    fn options(&self) -> VerityOptions {
        VerityOptions {
            algorithm: Some(self.algorithm),
            data_block_size: Some(BlockSize::new(self.data_block_size.into()).unwrap()),
            hash_block_size: Some(BlockSize::new(self.hash_block_size.into()).unwrap()),
            salt: Some(Salt::new(self.salt.clone()).unwrap()),
            uuid: Some(Uuid::parse_str(UUID).unwrap()),
            no_superblock: !self.superblock,
            hash_offset: self.hash_offset,
            data_blocks: (self.extra_blocks != 0).then_some(self.blocks),
        }
    }

    /// Formats with both tools and asserts identical results; returns the
    /// number of levels veritysetup's tree has (from its `--debug` line
    /// "Using N hash levels."), which ours must have too.
    fn check(&self) -> usize {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let len = (self.blocks + self.extra_blocks) * u64::from(self.data_block_size);
        std::fs::write(&data, pseudo_random(len as usize, self.seed)).unwrap();

        // veritysetup writes the superblock by read-modify-write of its 4 KiB
        // page (a hash block if smaller). With a single data block there is
        // no tree to extend the file first, and at an unaligned offset the
        // read of that page from the empty file fails ("Error during update
        // of verity header"). Given the page as zeros, it succeeds; compare
        // against that.
        let page = u64::from(self.hash_block_size).min(4096);
        if self.blocks == 1 && self.superblock && self.hash_offset % page != 0 {
            let len = (self.hash_offset + 512).next_multiple_of(page);
            std::fs::write(dir.path().join("reference"), vec![0u8; len as usize]).unwrap();
        }
        let mut args = self.veritysetup_args("data", "reference");
        args.push("--debug".into());
        let out = run_veritysetup(dir.path(), &args);
        let reference_root = field(&out.stdout, "Root hash:");
        let reference_levels = field(&out.stdout, "# Using ")
            .strip_suffix(" hash levels.")
            .and_then(|n| n.parse::<usize>().ok())
            .expect("veritysetup --debug names its hash levels");

        let ours = dir.path().join("ours");
        let (report, _) = verity::format(&data, &ours, &self.options(), &|_| {}).unwrap();
        let root = report.params.root_hash.as_ref().unwrap().to_hex();

        assert_eq!(root, reference_root, "root hash differs for {self:?}");
        let reference = std::fs::read(dir.path().join("reference")).unwrap();
        let ours = std::fs::read(&ours).unwrap();
        assert_eq!(
            reference.len(),
            ours.len(),
            "hash file size differs for {self:?}"
        );
        if let Some(at) = reference.iter().zip(&ours).position(|(a, b)| a != b) {
            panic!("hash files differ first at byte {at} for {self:?}");
        }
        assert_eq!(
            report.hash_blocks.to_string(),
            field(&out.stdout, "Hash blocks:")
        );
        assert_eq!(
            report.levels, reference_levels,
            "levels differ for {self:?}"
        );
        reference_levels
    }
}

#[test]
fn every_algorithm_and_block_size_pair_matches() {
    let sizes = [512u32, 1024, 2048, 4096, 8192, 16384, 32768, 65536];
    let mut n = 0u64;
    for algorithm in HashAlgorithm::ALL {
        for dbs in sizes {
            for hbs in sizes {
                n += 1;
                let mut case = Case::new(algorithm, dbs, hbs, 1 + (n * 7919) % 40);
                // Alternate the superblock and give every other case a data
                // file longer than the tree.
                case.superblock = n % 2 == 0;
                case.extra_blocks = n % 3;
                case.check();
            }
        }
    }
}

#[test]
fn one_two_three_and_more_levels_match() {
    // sha512 in 512-byte hash blocks: 8 digests per block, so levels grow
    // quickly: 1 block → 0 levels, 2..=8 → 1, 9..=64 → 2, 65..=512 → 3, ...
    let cases = [
        (1, 0),
        (2, 1),
        (8, 1),
        (9, 2),
        (64, 2),
        (65, 3),
        (512, 3),
        (513, 4),
        (4096, 4),
        (4097, 5),
        (20000, 5),
    ];
    for (blocks, levels) in cases {
        let case = Case::new(HashAlgorithm::Sha512, 512, 512, blocks);
        assert_eq!(case.check(), levels, "{blocks} blocks");
    }
    // The default parameters: sha256, 4 KiB hash blocks, 128 digests per
    // block; three levels from 128*128+1 data blocks on.
    for (blocks, levels) in [(128, 1), (129, 2), (16384, 2), (16385, 3)] {
        let case = Case::new(HashAlgorithm::Sha256, 512, 4096, blocks);
        assert_eq!(case.check(), levels, "{blocks} blocks");
    }
}

#[test]
fn salts_from_0_to_256_bytes_match() {
    for len in [
        0usize, 1, 2, 19, 31, 32, 33, 55, 56, 63, 64, 65, 127, 128, 200, 255, 256,
    ] {
        for algorithm in HashAlgorithm::ALL {
            let mut case = Case::new(algorithm, 4096, 4096, 150);
            case.salt = pseudo_random(len, len as u64 + 1);
            case.check();
        }
    }
}

#[test]
fn hash_offsets_match() {
    for (superblock, offset, hbs) in [
        (true, 2048, 65536),
        (true, 512, 4096),
        (true, 3584, 4096),
        (true, 4096, 4096),
        (true, 8192 + 512, 4096),
        (true, 1 << 20, 4096),
        (true, 1536, 1024),
        (false, 4096, 4096),
        (false, 65536, 4096),
        (false, 1024, 512),
    ] {
        for blocks in [1, 300] {
            let mut case = Case::new(HashAlgorithm::Sha256, 4096, hbs, blocks);
            case.superblock = superblock;
            case.hash_offset = offset;
            case.check();
        }
    }
}

#[test]
fn data_and_hash_in_one_file_match() {
    // The common "append the tree to the image" use: hash offset just after
    // the data, --data-blocks to bound the data area.
    let dir = tempfile::tempdir().unwrap();
    let data = pseudo_random(200 * 4096, 7);
    for name in ["reference", "ours"] {
        std::fs::write(dir.path().join(name), &data).unwrap();
    }
    let args: Vec<String> = [
        "format",
        "reference",
        "reference",
        "--data-blocks=200",
        "--hash-offset=819200",
        "--salt=abcd",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--uuid={UUID}")])
    .collect();
    let out = run_veritysetup(dir.path(), &args);
    let path = dir.path().join("ours");
    let opts = VerityOptions {
        salt: Some(Salt::from_hex("abcd").unwrap()),
        uuid: Some(Uuid::parse_str(UUID).unwrap()),
        hash_offset: 819200,
        data_blocks: Some(200),
        ..VerityOptions::default()
    };
    let (report, _) = verity::format(&path, &path, &opts, &|_| {}).unwrap();
    assert_eq!(
        report.params.root_hash.unwrap().to_hex(),
        field(&out.stdout, "Root hash:")
    );
    assert!(std::fs::read(dir.path().join("reference")).unwrap() == std::fs::read(&path).unwrap());
}

#[test]
fn command_line_output_matches_veritysetup() {
    let salt = "--salt=0011";
    let uuid = "--uuid=5a1f0e2d-3c4b-4a69-8877-665544332211";
    for extra in [
        vec![salt, uuid],
        vec![salt, uuid, "--no-superblock"],
        vec![salt, uuid, "--hash-offset=8192"],
        vec!["--salt=-", uuid],
        vec![salt, "--uuid=5A1F0E2D-3C4B-4A69-8877-665544332211"],
        vec![salt, uuid, "--hash=sha1", "--hash-block-size=512"],
        vec![salt, uuid, "--data-block-size=1024", "--data-blocks=3"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data"), pseudo_random(4096 * 70, 3)).unwrap();
        let mut args: Vec<String> = vec!["format".into(), "data".into(), "hash".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let reference = run_veritysetup(dir.path(), &args);
        std::fs::remove_file(dir.path().join("hash")).unwrap();
        let mut ours = cocos_measure();
        ours.arg("verity").args(&args).current_dir(dir.path());
        let ours = ours.output().unwrap();
        assert!(
            ours.status.success(),
            "{}",
            String::from_utf8_lossy(&ours.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&reference.stdout),
            "format output differs for {extra:?}"
        );
    }
}

#[test]
fn json_output_carries_what_veritysetup_prints() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data"), pseudo_random(4096 * 300, 8)).unwrap();
    let args = [
        "format",
        "data",
        "hash",
        "--salt=99",
        &format!("--uuid={UUID}"),
    ];
    let reference = run_veritysetup(dir.path(), &args.map(String::from));
    std::fs::remove_file(dir.path().join("hash")).unwrap();
    let out = cocos_measure()
        .arg("verity")
        .args(args)
        .arg("--json")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = &reference.stdout;
    assert_eq!(v["root_hash"], field(text, "Root hash:"));
    assert_eq!(v["uuid"], field(text, "UUID:"));
    assert_eq!(v["salt"], field(text, "Salt:"));
    assert_eq!(v["algorithm"], field(text, "Hash algorithm:"));
    assert_eq!(v["data_blocks"].to_string(), field(text, "Data blocks:"));
    assert_eq!(v["hash_blocks"].to_string(), field(text, "Hash blocks:"));
    assert_eq!(
        format!("{} [bytes]", v["hash_area_end"]),
        field(text, "Hash device size:")
    );
}

/// `verity --json` names the parameters as `manifest.json` and `cocos-imgbuild
/// inspect --json` do (they serialise `VerityParams`), leaving out a UUID
/// without a superblock and the root hash from `dump`.
#[test]
fn json_names_the_parameters_as_the_manifest_does() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data"), pseudo_random(4096 * 40, 12)).unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        let out = cocos_measure()
            .arg("verity")
            .args(args)
            .arg("--json")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let keys = |v: &serde_json::Value| -> BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    };
    let root = RootHash::from_hex(&"00".repeat(32), HashAlgorithm::Sha256).unwrap();
    let manifest = VerityParams::new(&TreeParams::default(), 1)
        .with_uuid(Some(Uuid::nil()))
        .with_root_hash(Some(root));
    let manifest = serde_json::to_value(manifest).unwrap();
    let expected = |leave_out: &[&str], add: &[&str]| -> BTreeSet<String> {
        let tree = [
            "hash_blocks",
            "levels",
            "hash_offset",
            "tree_offset",
            "hash_area_end",
        ];
        let params = manifest.as_object().unwrap().keys().map(String::as_str);
        params
            .filter(|k| !leave_out.contains(k))
            .chain(tree)
            .chain(add.iter().copied())
            .map(String::from)
            .collect()
    };

    let uuid = format!("--uuid={UUID}");
    let formatted = json(&["format", "data", "hash", "--salt=ab", &uuid]);
    assert_eq!(keys(&formatted), expected(&[], &[]));
    assert_eq!(
        keys(&json(&["dump", "hash"])),
        expected(&["root_hash"], &[])
    );
    let root = formatted["root_hash"].as_str().unwrap();
    assert_eq!(
        keys(&json(&["verify", "data", "hash", root])),
        expected(&[], &["verified"])
    );
    let flat = json(&["format", "data", "flat", "--salt=ab", "--no-superblock"]);
    assert_eq!(keys(&flat), expected(&["uuid"], &[]));
}

#[test]
fn dump_matches_veritysetup_and_each_tool_verifies_the_others_tree() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data"), pseudo_random(4096 * 500, 11)).unwrap();
    let out = run_veritysetup(
        dir.path(),
        &[
            "format",
            "data",
            "hash",
            "--hash=sha512",
            "--hash-block-size=1024",
        ]
        .map(String::from),
    );
    let root = field(&out.stdout, "Root hash:");
    let reference_dump = run_veritysetup(dir.path(), &["dump".into(), "hash".into()]);
    let ours = cocos_measure()
        .args(["verity", "dump", "hash"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ours.stdout),
        String::from_utf8_lossy(&reference_dump.stdout)
    );
    // Our verify accepts veritysetup's tree...
    let ours = cocos_measure()
        .args(["verity", "verify", "data", "hash", &root])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        ours.status.success(),
        "{}",
        String::from_utf8_lossy(&ours.stderr)
    );
    // ...and veritysetup verifies ours.
    let ours = cocos_measure()
        .args([
            "verity",
            "format",
            "data",
            "ours",
            "--hash=sha512",
            "--root-hash-file=root",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(ours.status.success());
    let root = std::fs::read_to_string(dir.path().join("root")).unwrap();
    assert_eq!(
        root,
        field(&ours.stdout, "Root hash:"),
        "root hash file is bare hex"
    );
    run_veritysetup(
        dir.path(),
        &["verify", "data", "ours", &root].map(String::from),
    );
}

#[test]
fn random_salt_and_uuid_differ_between_runs_as_in_veritysetup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(&data, pseudo_random(4096 * 4, 5)).unwrap();
    let opts = VerityOptions::default();
    let (a, _) = verity::format(&data, &dir.path().join("a"), &opts, &|_| {}).unwrap();
    let (b, _) = verity::format(&data, &dir.path().join("b"), &opts, &|_| {}).unwrap();
    let (a, b) = (a.params, b.params);
    assert_eq!(a.salt.as_bytes().len(), 32);
    assert_ne!(a.salt, b.salt);
    assert_ne!(a.uuid, b.uuid);
    assert_ne!(a.root_hash, b.root_hash);
    // veritysetup reads our random parameters back from the superblock.
    let root = a.root_hash.unwrap().to_hex();
    run_veritysetup(
        dir.path(),
        &["verify", "data", "a", &root].map(String::from),
    );
}

fn block_size() -> impl Strategy<Value = u32> {
    (9u32..=16).prop_map(|bits| 1 << bits)
}

prop_compose! {
    fn any_case()(
        algorithm in prop::sample::select(HashAlgorithm::ALL.to_vec()),
        dbs in block_size(),
        hbs in block_size(),
        data_kib in 1u64..=3072,
        extra_blocks in prop_oneof![Just(0u64), 1u64..4],
        salt_len in prop_oneof![Just(0usize), Just(32), Just(256), 0usize..=256],
        superblock in any::<bool>(),
        offset_units in prop_oneof![Just(0u64), 0u64..8],
        seed in any::<u64>(),
    ) -> Case {
        let blocks = (data_kib * 1024 / u64::from(dbs)).max(1);
        let hash_offset = if superblock {
            offset_units * 512
        } else {
            offset_units * u64::from(hbs)
        };
        Case {
            algorithm,
            data_block_size: dbs,
            hash_block_size: hbs,
            blocks,
            extra_blocks,
            salt: pseudo_random(salt_len, seed),
            superblock,
            hash_offset,
            seed,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_parameters_match(case in any_case()) {
        case.check();
    }
}
