//! Finding the root, verity and cocos partitions.
//!
//! cocos-imgbuild gives the root and root-verity partitions the unique
//! GUIDs derived from the root hash (first and last 128 bits, as
//! systemd-repart does: `cocos_formats::gpt::verity_partition_uuids`), and
//! names the writable partition `cocos`. So the init reads the GPT of every
//! whole disk in `/sys/class/block`, takes the disk whose table has both
//! derived GUIDs, and the partition named `cocos` on that same disk. The
//! disk name does not matter (`sda`, `vda`, `nvme0n1`).
//!
//! Images that do not carry the derived GUIDs (the system this replaces)
//! fall back to partitions 2, 3 and 4 of `/dev/sda` (or of `cocos.disk=`),
//! as its documentation describes. That is safe: dm-verity then checks the
//! root hash against whatever partition 3 holds.
//!
//! Disks appear asynchronously while drivers probe, so the search is
//! repeated until it succeeds or the configured timeout passes
//! ([`wait_for_partitions`]). The pure part ([`locate`]) works on a
//! snapshot ([`DiskScan`]) and is tested on GPT images built with
//! cocos-imgbuild; [`SysfsBlockDevices`] takes the snapshot from sysfs.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cocos_formats::gpt::{self, DiskLayout};
use thiserror::Error;
use uuid::Uuid;

/// GPT partition name of the writable partition (the label `build` gives
/// it: one constant for both).
pub const COCOS_PARTITION_NAME: &str = gpt::label::COCOS;
/// The disk of the fallback.
pub const FALLBACK_DISK: &str = "/dev/sda";
/// Partition numbers of root, verity and cocos in the fallback.
pub const FALLBACK_NUMBERS: [u32; 3] = [2, 3, 4];

/// One whole disk as seen at one moment.
#[derive(Debug, Clone)]
pub struct DiskScan {
    /// Device node (`/dev/sda`).
    pub disk: PathBuf,
    /// Its partition table, or why it could not be read.
    pub table: Result<DiskLayout, String>,
    /// Partition device nodes present, by partition number.
    pub partitions: BTreeMap<u32, PathBuf>,
}

/// How the partitions were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// By the unique GUIDs derived from the root hash and the name `cocos`.
    RootHashGuids,
    /// Partitions 2, 3 and 4 of the fallback disk.
    Fallback,
}

/// The three partitions of a boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPartitions {
    /// The disk holding them.
    pub disk: PathBuf,
    /// The ext4 root (dm-verity data).
    pub root: PathBuf,
    /// The dm-verity hash tree.
    pub verity: PathBuf,
    /// The writable partition, formatted at every boot.
    pub cocos: PathBuf,
    /// How they were found.
    pub method: Method,
}

/// What is still missing in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// No disk has both derived GUIDs and the fallback is not there.
    Root {
        /// The GUID looked for on the root partition.
        root_guid: Uuid,
        /// The GUID looked for on the verity partition.
        verity_guid: Uuid,
        /// What each disk looked like (`sda: no GPT (...)`).
        disks: Vec<String>,
    },
    /// Root and verity found, but no partition named `cocos` on their disk.
    Cocos {
        /// The disk.
        disk: PathBuf,
        /// The root partition found.
        root: PathBuf,
        /// The verity partition found.
        verity: PathBuf,
    },
    /// The table lists the partitions but their device nodes are not there
    /// (yet).
    Nodes {
        /// The disk.
        disk: PathBuf,
        /// Partition numbers without a node.
        numbers: Vec<u32>,
    },
}

/// Why the partitions cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DiscoverError {
    /// The wait ran out.
    #[error("{}", timeout_message(.missing, *.waited_ms))]
    Timeout {
        /// What was missing at the end.
        missing: Missing,
        /// How long the search went on.
        waited_ms: u64,
    },
    /// Two disks carry the root hash's GUIDs.
    #[error(
        "the root hash's partitions are on more than one disk ({}); choose one with cocos.disk=",
        disks.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    Ambiguous {
        /// The disks.
        disks: Vec<PathBuf>,
    },
    /// A partition found twice in one role (a corrupt or forged table).
    #[error("{what} resolves to {} more than once", path.display())]
    SamePartition {
        /// The roles.
        what: &'static str,
        /// The partition.
        path: PathBuf,
    },
}

fn timeout_message(missing: &Missing, ms: u64) -> String {
    match missing {
        Missing::Root {
            root_guid,
            verity_guid,
            disks,
        } => {
            let seen = if disks.is_empty() {
                "no disks".to_owned()
            } else {
                disks.join("; ")
            };
            format!(
                "no root partition found after {ms} ms (looked for unique GUIDs {root_guid} \
                 and {verity_guid} from roothash=, and for {FALLBACK_DISK}2..4; seen: {seen})"
            )
        }
        Missing::Cocos { disk, root, verity } => format!(
            "no cocos partition found after {ms} ms (no partition named \"{COCOS_PARTITION_NAME}\" \
             on {}, which holds root {} and verity {})",
            disk.display(),
            root.display(),
            verity.display()
        ),
        Missing::Nodes { disk, numbers } => format!(
            "partitions {numbers:?} of {} have no device node after {ms} ms",
            disk.display()
        ),
    }
}

/// A snapshot of the block devices.
pub trait BlockDevices {
    /// The whole disks now present, sorted by device name.
    fn scan(&self) -> Vec<DiskScan>;
    /// The node of the fallback disk ([`FALLBACK_DISK`]).
    fn fallback_disk(&self) -> PathBuf;
}

/// Finds the partitions in one snapshot. `only_disk` (`cocos.disk=`)
/// restricts the search to that disk, GUIDs and fallback alike; without
/// it, the fallback is partitions 2, 3 and 4 of `fallback_disk`.
pub fn locate(
    disks: &[DiskScan],
    root_hash: &[u8],
    only_disk: Option<&Path>,
    fallback_disk: &Path,
) -> Result<Result<BootPartitions, Missing>, DiscoverError> {
    let (root_guid, verity_guid) = gpt::verity_partition_uuids(root_hash);
    let candidates: Vec<&DiskScan> = disks
        .iter()
        .filter(|d| only_disk.is_none_or(|only| d.disk == only))
        .collect();

    // Disks whose table has both derived GUIDs: (disk, table, root, verity).
    let matching: Vec<(&DiskScan, &DiskLayout, u32, u32)> = candidates
        .iter()
        .filter_map(|d| {
            let table = d.table.as_ref().ok()?;
            let root = table.partition_by_guid(root_guid)?.number;
            let verity = table.partition_by_guid(verity_guid)?.number;
            Some((*d, table, root, verity))
        })
        .collect();
    if matching.len() > 1 {
        return Err(DiscoverError::Ambiguous {
            disks: matching.iter().map(|m| m.0.disk.clone()).collect(),
        });
    }
    if let Some(&(scan, table, root_n, verity_n)) = matching.first() {
        let node = |n: u32| {
            scan.partitions
                .get(&n)
                .cloned()
                .unwrap_or_else(|| partition_name(&scan.disk, n))
        };
        let Some(cocos) = table.partition(COCOS_PARTITION_NAME) else {
            return Ok(Err(Missing::Cocos {
                disk: scan.disk.clone(),
                root: node(root_n),
                verity: node(verity_n),
            }));
        };
        return nodes(
            scan,
            [root_n, verity_n, cocos.number],
            Method::RootHashGuids,
        );
    }

    // The fallback of the seed documents.
    let fallback = only_disk.unwrap_or(fallback_disk);
    if let Some(scan) = candidates.iter().find(|d| d.disk == fallback)
        && FALLBACK_NUMBERS
            .iter()
            .all(|n| scan.partitions.contains_key(n))
    {
        return nodes(scan, FALLBACK_NUMBERS, Method::Fallback);
    }
    Ok(Err(Missing::Root {
        root_guid,
        verity_guid,
        disks: candidates
            .iter()
            .map(|d| {
                let name = d.disk.display();
                match &d.table {
                    Ok(t) => format!("{name}: GPT with {} partitions", t.partitions.len()),
                    Err(e) => format!("{name}: {e}"),
                }
            })
            .collect(),
    }))
}

/// The device nodes of partitions `numbers` (root, verity, cocos) of `scan`.
fn nodes(
    scan: &DiskScan,
    numbers: [u32; 3],
    method: Method,
) -> Result<Result<BootPartitions, Missing>, DiscoverError> {
    let missing: Vec<u32> = numbers
        .iter()
        .copied()
        .filter(|n| !scan.partitions.contains_key(n))
        .collect();
    if !missing.is_empty() {
        return Ok(Err(Missing::Nodes {
            disk: scan.disk.clone(),
            numbers: missing,
        }));
    }
    let [root, verity, cocos] = numbers.map(|n| scan.partitions[&n].clone());
    for (what, a, b) in [
        ("root and verity", &root, &verity),
        ("root and cocos", &root, &cocos),
        ("verity and cocos", &verity, &cocos),
    ] {
        if a == b {
            return Err(DiscoverError::SamePartition {
                what,
                path: a.clone(),
            });
        }
    }
    Ok(Ok(BootPartitions {
        disk: scan.disk.clone(),
        root,
        verity,
        cocos,
        method,
    }))
}

/// The usual node name of partition `n` of `disk`: `sda` + `2`, or
/// `nvme0n1` + `p2` when the disk name ends in a digit. Only used in
/// messages; the real nodes come from sysfs.
pub fn partition_name(disk: &Path, n: u32) -> PathBuf {
    let s = disk.display().to_string();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{s}p{n}"))
    } else {
        PathBuf::from(format!("{s}{n}"))
    }
}

/// Repeats [`locate`] every `poll` until it succeeds, fails, or `timeout`
/// has passed since the call (then the last snapshot's [`Missing`] is the
/// error). At least one snapshot is always taken.
pub fn wait_for_partitions(
    devices: &dyn BlockDevices,
    root_hash: &[u8],
    only_disk: Option<&Path>,
    timeout: Duration,
    poll: Duration,
) -> Result<BootPartitions, DiscoverError> {
    let start = Instant::now();
    loop {
        match locate(
            &devices.scan(),
            root_hash,
            only_disk,
            &devices.fallback_disk(),
        )? {
            Ok(found) => return Ok(found),
            Err(missing) => {
                if start.elapsed() >= timeout {
                    return Err(DiscoverError::Timeout {
                        missing,
                        waited_ms: timeout.as_millis() as u64,
                    });
                }
            }
        }
        std::thread::sleep(poll.min(timeout.saturating_sub(start.elapsed())));
    }
}

/// Block devices as the kernel lists them in sysfs.
#[derive(Debug, Clone)]
pub struct SysfsBlockDevices {
    /// `/sys/class/block`.
    pub class_block: PathBuf,
    /// `/dev`.
    pub dev: PathBuf,
}

impl Default for SysfsBlockDevices {
    fn default() -> Self {
        SysfsBlockDevices {
            class_block: PathBuf::from("/sys/class/block"),
            dev: PathBuf::from("/dev"),
        }
    }
}

impl SysfsBlockDevices {
    /// Partition numbers of `disk` and their device nodes, from the
    /// `partition` file of each partition's sysfs directory.
    fn partitions(&self, disk: &str) -> BTreeMap<u32, PathBuf> {
        let mut out = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(self.class_block.join(disk)) else {
            return out;
        };
        for entry in entries.filter_map(Result::ok) {
            let number = std::fs::read_to_string(entry.path().join("partition"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            let node = self.dev.join(entry.file_name());
            if let Some(n) = number
                && node.exists()
            {
                out.insert(n, node);
            }
        }
        out
    }
}

impl BlockDevices for SysfsBlockDevices {
    fn fallback_disk(&self) -> PathBuf {
        let name = Path::new(FALLBACK_DISK).file_name().unwrap_or_default();
        self.dev.join(name)
    }

    fn scan(&self) -> Vec<DiskScan> {
        let Ok(entries) = std::fs::read_dir(&self.class_block) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let dir = self.class_block.join(&name);
            // Partitions have a `partition` file; whole disks do not.
            if dir.join("partition").exists() {
                continue;
            }
            // Empty devices (unused loop and ram disks, an empty CD drive).
            let sectors = std::fs::read_to_string(dir.join("size"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0);
            if sectors == 0 {
                continue;
            }
            let disk = self.dev.join(&name);
            let table = File::open(&disk)
                .map_err(|e| format!("cannot open: {e}"))
                .and_then(|f| gpt::read_gpt(&f).map_err(|e| format!("no usable GPT: {e}")));
            out.push(DiskScan {
                disk,
                table,
                partitions: self.partitions(&name),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocos_formats::gpt::{PartitionSpec, plan_layout};
    use cocos_imgbuild::gpt::write_gpt;
    use std::fs;

    /// The systemd-repart 252 run recorded in cocos_formats::gpt: this
    /// root hash gave these two partition UUIDs.
    const ROOT_HASH: &str = "1f4f7b353629fa1c793b02c8250121a77e607bb28edf8f192849986d70db97ea";
    const REPART_ROOT: Uuid = uuid::uuid!("1f4f7b35-3629-fa1c-793b-02c8250121a7");
    const REPART_VERITY: Uuid = uuid::uuid!("7e607bb2-8edf-8f19-2849-986d70db97ea");

    fn spec(name: &str, guid: Uuid) -> PartitionSpec {
        PartitionSpec {
            name: name.into(),
            type_guid: gpt::LINUX_DATA_TYPE,
            unique_guid: guid,
            size: 1 << 20,
        }
    }

    fn other(n: u128) -> Uuid {
        Uuid::from_u128(0x1234_0000 + n)
    }

    /// The four partitions cocos-imgbuild writes, with `root`/`verity`
    /// GUIDs and a last partition named `cocos_name`.
    fn image_specs(root: Uuid, verity: Uuid, cocos_name: &str) -> Vec<PartitionSpec> {
        vec![
            spec("esp", other(1)),
            spec("root", root),
            spec("root-verity", verity),
            spec(cocos_name, other(4)),
        ]
    }

    /// A fake /sys/class/block and /dev: each disk is a GPT image written
    /// by cocos-imgbuild; each partition a sysfs directory with a
    /// `partition` file and an (empty) node.
    struct FakeSystem {
        dir: tempfile::TempDir,
    }

    impl FakeSystem {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join("sys/class/block")).unwrap();
            fs::create_dir_all(dir.path().join("dev")).unwrap();
            FakeSystem { dir }
        }

        fn devices(&self) -> SysfsBlockDevices {
            SysfsBlockDevices {
                class_block: self.dir.path().join("sys/class/block"),
                dev: self.dir.path().join("dev"),
            }
        }

        fn dev(&self, name: &str) -> PathBuf {
            self.dir.path().join("dev").join(name)
        }

        fn add_disk(&self, name: &str, specs: &[PartitionSpec]) {
            let layout = plan_layout(other(99), specs).unwrap();
            let image = self.dev(name);
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&image)
                .unwrap();
            write_gpt(&f, &layout).unwrap();
            self.add_sysfs(name, layout.disk_size / 512, layout.partitions.len() as u32);
        }

        fn add_sysfs(&self, name: &str, sectors: u64, partitions: u32) {
            let sys = self.dir.path().join("sys/class/block").join(name);
            fs::create_dir_all(&sys).unwrap();
            fs::write(sys.join("size"), format!("{sectors}\n")).unwrap();
            for n in 1..=partitions {
                let part = if name.ends_with(|c: char| c.is_ascii_digit()) {
                    format!("{name}p{n}")
                } else {
                    format!("{name}{n}")
                };
                fs::create_dir_all(sys.join(&part)).unwrap();
                fs::write(sys.join(&part).join("partition"), format!("{n}\n")).unwrap();
                // sysfs also lists each partition at the top level.
                let top = self.dir.path().join("sys/class/block").join(&part);
                fs::create_dir_all(&top).unwrap();
                fs::write(top.join("partition"), format!("{n}\n")).unwrap();
                fs::write(top.join("size"), "2048\n").unwrap();
                fs::write(self.dev(&part), b"").unwrap();
            }
        }
    }

    fn hash() -> Vec<u8> {
        hex::decode(ROOT_HASH).unwrap()
    }

    fn find(
        sys: &FakeSystem,
        only: Option<&Path>,
    ) -> Result<Result<BootPartitions, Missing>, DiscoverError> {
        let devices = sys.devices();
        locate(&devices.scan(), &hash(), only, &devices.fallback_disk())
    }

    #[test]
    fn partitions_are_found_by_the_guids_systemd_repart_derives() {
        let sys = FakeSystem::new();
        sys.add_disk("sda", &image_specs(REPART_ROOT, REPART_VERITY, "cocos"));
        let found = find(&sys, None).unwrap().unwrap();
        assert_eq!(
            found,
            BootPartitions {
                disk: sys.dev("sda"),
                root: sys.dev("sda2"),
                verity: sys.dev("sda3"),
                cocos: sys.dev("sda4"),
                method: Method::RootHashGuids,
            }
        );
    }

    #[test]
    fn the_disk_name_and_partition_order_do_not_matter() {
        let sys = FakeSystem::new();
        // A data disk first, then the boot disk as an NVMe namespace with
        // the partitions in another order.
        sys.add_disk(
            "nvme0n1",
            &[
                spec("cocos", other(7)),
                spec("esp", other(8)),
                spec("root-verity", REPART_VERITY),
                spec("root", REPART_ROOT),
            ],
        );
        sys.add_disk("sda", &[spec("data", other(9))]);
        let found = find(&sys, None).unwrap().unwrap();
        assert_eq!(found.disk, sys.dev("nvme0n1"));
        assert_eq!(found.root, sys.dev("nvme0n1p4"));
        assert_eq!(found.verity, sys.dev("nvme0n1p3"));
        assert_eq!(found.cocos, sys.dev("nvme0n1p1"));
    }

    #[test]
    fn roles_follow_the_guids_not_the_partition_order() {
        let sys = FakeSystem::new();
        sys.add_disk("vda", &image_specs(REPART_VERITY, REPART_ROOT, "cocos"));
        let found = find(&sys, None).unwrap().unwrap();
        assert_eq!(
            (found.root, found.verity),
            (sys.dev("vda3"), sys.dev("vda2"))
        );
    }

    #[test]
    fn partitions_of_another_root_hash_do_not_match() {
        let sys = FakeSystem::new();
        // GUIDs of another image (another root hash), on a disk that is
        // not the fallback disk.
        sys.add_disk("vda", &image_specs(other(2), other(3), "cocos"));
        let missing = find(&sys, None).unwrap().unwrap_err();
        assert!(
            matches!(&missing, Missing::Root { root_guid, verity_guid, disks }
                if *root_guid == REPART_ROOT && *verity_guid == REPART_VERITY && disks.len() == 1),
            "{missing:?}"
        );
    }

    #[test]
    fn a_missing_cocos_partition_is_named() {
        let sys = FakeSystem::new();
        sys.add_disk("sda", &image_specs(REPART_ROOT, REPART_VERITY, "data"));
        let missing = find(&sys, None).unwrap().unwrap_err();
        assert_eq!(
            missing,
            Missing::Cocos {
                disk: sys.dev("sda"),
                root: sys.dev("sda2"),
                verity: sys.dev("sda3"),
            }
        );
        let e = DiscoverError::Timeout {
            missing,
            waited_ms: 10_000,
        };
        assert!(
            e.to_string()
                .starts_with("no cocos partition found after 10000 ms"),
            "{e}"
        );
    }

    #[test]
    fn a_disk_without_guids_falls_back_to_sda_2_3_4() {
        let sys = FakeSystem::new();
        sys.add_disk("sda", &image_specs(other(2), other(3), "whatever"));
        let found = find(&sys, None).unwrap().unwrap();
        assert_eq!(found.method, Method::Fallback);
        assert_eq!(
            [found.root, found.verity, found.cocos],
            [sys.dev("sda2"), sys.dev("sda3"), sys.dev("sda4")]
        );
    }

    #[test]
    fn the_fallback_needs_all_three_partitions() {
        let sys = FakeSystem::new();
        sys.add_disk("sda", &image_specs(other(2), other(3), "cocos")[..3]);
        let missing = find(&sys, None).unwrap().unwrap_err();
        let Missing::Root { disks, .. } = &missing else {
            panic!("{missing:?}");
        };
        assert_eq!(disks.len(), 1);
        assert!(
            disks[0].ends_with("sda: GPT with 3 partitions"),
            "{disks:?}"
        );
    }

    #[test]
    fn cocos_disk_restricts_the_search() {
        let sys = FakeSystem::new();
        sys.add_disk("sda", &image_specs(REPART_ROOT, REPART_VERITY, "cocos"));
        sys.add_disk("sdb", &image_specs(other(2), other(3), "cocos"));
        let sdb = sys.dev("sdb");
        // sdb has no derived GUIDs: its own partitions 2..4 are the fallback.
        let found = find(&sys, Some(&sdb)).unwrap().unwrap();
        assert_eq!(
            (found.method, found.root),
            (Method::Fallback, sys.dev("sdb2"))
        );
        let nvme = sys.dev("nvme0n1");
        assert!(matches!(
            find(&sys, Some(&nvme)).unwrap(),
            Err(Missing::Root { .. })
        ));
    }

    #[test]
    fn the_same_guids_on_two_disks_are_refused() {
        let sys = FakeSystem::new();
        sys.add_disk("sda", &image_specs(REPART_ROOT, REPART_VERITY, "cocos"));
        sys.add_disk("sdb", &image_specs(REPART_ROOT, REPART_VERITY, "cocos"));
        assert_eq!(
            find(&sys, None).unwrap_err(),
            DiscoverError::Ambiguous {
                disks: vec![sys.dev("sda"), sys.dev("sdb")]
            }
        );
        // ... unless the command line says which.
        let sdb = sys.dev("sdb");
        assert_eq!(
            find(&sys, Some(&sdb)).unwrap().unwrap().root,
            sys.dev("sdb2")
        );
    }

    #[test]
    fn disks_without_a_gpt_are_skipped_and_reported() {
        let sys = FakeSystem::new();
        fs::write(sys.dev("sda"), vec![0u8; 1 << 20]).unwrap();
        sys.add_sysfs("sda", 2048, 0);
        sys.add_disk("sdb", &image_specs(REPART_ROOT, REPART_VERITY, "cocos"));
        assert_eq!(find(&sys, None).unwrap().unwrap().disk, sys.dev("sdb"));

        let sys = FakeSystem::new();
        fs::write(sys.dev("sda"), vec![0u8; 1 << 20]).unwrap();
        sys.add_sysfs("sda", 2048, 0);
        let Err(Missing::Root { disks, .. }) = find(&sys, None).unwrap() else {
            panic!()
        };
        assert!(disks[0].contains("sda: no usable GPT"), "{disks:?}");
    }

    #[test]
    fn empty_devices_and_partitions_are_not_disks() {
        let sys = FakeSystem::new();
        sys.add_disk("sda", &image_specs(REPART_ROOT, REPART_VERITY, "cocos"));
        sys.add_sysfs("loop0", 0, 0);
        let names: Vec<PathBuf> = sys.devices().scan().into_iter().map(|d| d.disk).collect();
        assert_eq!(names, [sys.dev("sda")]);
    }

    #[test]
    fn missing_partition_nodes_are_waited_for() {
        let sys = FakeSystem::new();
        sys.add_disk("sda", &image_specs(REPART_ROOT, REPART_VERITY, "cocos"));
        fs::remove_file(sys.dev("sda4")).unwrap();
        assert_eq!(
            find(&sys, None).unwrap().unwrap_err(),
            Missing::Nodes {
                disk: sys.dev("sda"),
                numbers: vec![4]
            }
        );
    }

    #[test]
    fn waiting_ends_at_the_timeout_with_the_last_reason() {
        let sys = FakeSystem::new();
        let start = Instant::now();
        let e = wait_for_partitions(
            &sys.devices(),
            &hash(),
            None,
            Duration::from_millis(120),
            Duration::from_millis(10),
        )
        .unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(120));
        assert!(
            e.to_string().starts_with("no root partition found after 120 ms (looked for unique GUIDs 1f4f7b35-3629-fa1c-793b-02c8250121a7 and 7e607bb2-8edf-8f19-2849-986d70db97ea"),
            "{e}"
        );
    }

    #[test]
    fn waiting_sees_a_disk_that_appears_later() {
        let sys = FakeSystem::new();
        let devices = sys.devices();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                sys.add_disk("sda", &image_specs(REPART_ROOT, REPART_VERITY, "cocos"));
            });
            let found = wait_for_partitions(
                &devices,
                &hash(),
                None,
                Duration::from_secs(10),
                Duration::from_millis(10),
            )
            .unwrap();
            assert_eq!(found.cocos, sys.dev("sda4"));
        });
    }

    #[test]
    fn partition_names_follow_the_kernels_convention() {
        assert_eq!(
            partition_name(Path::new("/dev/sda"), 2),
            PathBuf::from("/dev/sda2")
        );
        assert_eq!(
            partition_name(Path::new("/dev/nvme0n1"), 2),
            PathBuf::from("/dev/nvme0n1p2")
        );
    }
}
