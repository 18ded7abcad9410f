//! Steps 2 and 6: the partition table. The ESP is planned first and alone
//! (it is the first partition, so its place does not depend on the others'
//! sizes); once the root filesystem is planned, the whole table is planned
//! with placeholder GUIDs for the root and hash partitions (offsets do not
//! depend on GUIDs); once the root hash is known, the final table, whose
//! root and verity GUIDs are its halves, is written.

use std::fs::File;

use cocos_measure::verity::RootHash;
use uuid::Uuid;

use super::BuildConfig;
use super::error::BuildError;
use super::root::Sizes;
use crate::gpt::{self, DiskLayout, PartitionSpec, PlacedPartition};
use crate::seed::{Seed, purpose};
use crate::spec::{self, Partition, Role, SizeRule, UuidRule};

/// Where the ESP lies in `disk.img`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EspPlace {
    /// Byte offset.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

impl EspPlace {
    /// The byte after its end.
    pub(super) fn end(&self) -> u64 {
        self.offset + self.size
    }
}

/// Where the root and hash partitions lie in `disk.img`, and its size.
#[derive(Debug, Clone, Copy)]
pub(super) struct Places {
    /// Byte offset of the root partition.
    pub root: u64,
    /// Byte offset of the hash partition.
    pub verity: u64,
    /// Size of the disk.
    pub disk_size: u64,
}

/// The build's partition table: the checked partitions, in disk order,
/// used by role.
pub(super) struct Table {
    partitions: Vec<Partition>,
    esp: Partition,
    root: Partition,
    root_verity: Partition,
    disk_guid: Uuid,
    seed: Seed,
}

/// A partition's size when the table gives it.
fn fixed_size(p: &Partition) -> Option<u64> {
    match p.size {
        SizeRule::Fixed(n) => Some(n),
        SizeRule::Auto => None,
    }
}

impl Table {
    /// The table of `cfg`, checked again here (a library caller may not
    /// have gone through `ImageSpec`).
    pub(super) fn resolve(cfg: &BuildConfig, seed: Seed) -> Result<Self, BuildError> {
        let partitions = spec::resolve_partitions(
            &cfg.partitions
                .iter()
                .map(Partition::to_def)
                .collect::<Vec<_>>(),
        )
        .map_err(BuildError::Spec)?;
        let by_role = |role: Role| {
            partitions
                .iter()
                .find(|p| p.role == role)
                .cloned()
                .ok_or(BuildError::Internal("a checked table lacks a role"))
        };
        let (esp, root, root_verity) = (
            by_role(Role::Esp)?,
            by_role(Role::Root)?,
            by_role(Role::RootVerity)?,
        );
        Ok(Table {
            partitions,
            esp,
            root,
            root_verity,
            disk_guid: seed.uuid_for(purpose::GPT_DISK),
            seed,
        })
    }

    /// The root filesystem's size when the table gives it.
    pub(super) fn root_size(&self) -> Option<u64> {
        fixed_size(&self.root)
    }

    /// Plans the ESP alone.
    pub(super) fn plan_esp(&self) -> Result<EspPlace, BuildError> {
        let esp = PartitionSpec {
            name: self.esp.label.clone(),
            type_guid: self.esp.type_guid,
            unique_guid: self.unique_guid(&self.esp, (Uuid::nil(), Uuid::nil())),
            size: fixed_size(&self.esp).ok_or(BuildError::Internal("the ESP has no size"))?,
        };
        gpt::plan_layout(self.disk_guid, std::slice::from_ref(&esp))?
            .partition(&self.esp.label)
            .map(|p| EspPlace {
                offset: p.offset,
                size: p.size,
            })
            .ok_or(BuildError::Internal("no ESP planned"))
    }

    /// Plans the whole table with placeholder GUIDs for the partitions
    /// that take theirs from the root hash, and checks that the ESP stays
    /// at `esp`.
    pub(super) fn plan(&self, esp: EspPlace, sizes: Sizes) -> Result<Places, BuildError> {
        let layout = gpt::plan_layout(
            self.disk_guid,
            &self.specs(
                sizes,
                (
                    self.seed.uuid_for(purpose::GPT_ROOT_PLACEHOLDER),
                    self.seed.uuid_for(purpose::GPT_VERITY_PLACEHOLDER),
                ),
            )?,
        )?;
        let part = |name: &str| {
            layout
                .partition(name)
                .map(|p| (p.offset, p.size))
                .ok_or(BuildError::Internal(
                    "a partition of the table was not planned",
                ))
        };
        if part(&self.esp.label)? != (esp.offset, esp.size) {
            return Err(BuildError::Internal("the ESP moved"));
        }
        let (root_offset, _) = part(&self.root.label)?;
        let (verity_offset, _) = part(&self.root_verity.label)?;
        Ok(Places {
            root: root_offset,
            verity: verity_offset,
            disk_size: layout.disk_size,
        })
    }

    /// Writes the final table into `disk`, with the GUIDs from the root
    /// hash.
    pub(super) fn write(
        &self,
        disk: &File,
        sizes: Sizes,
        root_hash: &RootHash,
    ) -> Result<DiskLayout, BuildError> {
        let halves = gpt::verity_partition_uuids(root_hash.as_bytes());
        let layout = gpt::plan_layout(self.disk_guid, &self.specs(sizes, halves)?)?;
        gpt::write_gpt(disk, &layout)?;
        Ok(layout)
    }

    /// The partitions of `layout` to read back for their digests: only the
    /// hash partitions. The others are hashed elsewhere or zeros by
    /// construction: the ESP, the root and the blank data partitions.
    pub(super) fn read_back<'a>(&self, layout: &'a DiskLayout) -> Vec<&'a PlacedPartition> {
        let hashed_elsewhere: Vec<&str> = self
            .partitions
            .iter()
            .filter(|p| p.role != Role::RootVerity)
            .map(|p| p.label.as_str())
            .collect();
        layout
            .partitions
            .iter()
            .filter(|p| !hashed_elsewhere.contains(&p.name.as_str()))
            .collect()
    }

    /// The root partition's number in `layout`.
    pub(super) fn root_number(&self, layout: &DiskLayout) -> Option<u32> {
        layout.partition(&self.root.label).map(|p| p.number)
    }

    /// The partitions to plan, with these sizes and these halves of the
    /// root hash.
    fn specs(&self, sizes: Sizes, halves: (Uuid, Uuid)) -> Result<Vec<PartitionSpec>, BuildError> {
        self.partitions
            .iter()
            .map(|p| {
                let size = match p.role {
                    Role::Esp => {
                        fixed_size(p).ok_or(BuildError::Internal("the ESP has no size"))?
                    }
                    Role::Root => sizes.root,
                    Role::RootVerity => sizes.verity,
                    Role::Data => {
                        fixed_size(p).ok_or(BuildError::Internal("a data partition has no size"))?
                    }
                };
                Ok(PartitionSpec {
                    name: p.label.clone(),
                    type_guid: p.type_guid,
                    unique_guid: self.unique_guid(p, halves),
                    size,
                })
            })
            .collect()
    }

    /// A partition's unique GUID, once the root hash's halves are known.
    fn unique_guid(&self, p: &Partition, halves: (Uuid, Uuid)) -> Uuid {
        match &p.uuid {
            UuidRule::Seed(label) => self.seed.uuid_for(label),
            UuidRule::Fixed(u) => *u,
            UuidRule::RootHashFirstHalf => halves.0,
            UuidRule::RootHashLastHalf => halves.1,
        }
    }
}
