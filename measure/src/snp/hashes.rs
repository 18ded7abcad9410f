//! The kernel-hashes table that QEMU places in guest memory for direct
//! boot (`-kernel`, `-initrd`, `-append` with `kernel-hashes=on`), and that
//! OVMF checks before booting the kernel.
//!
//! Source: QEMU `target/i386/sev.c` (`SevHashTable`, `PaddedSevHashTable`,
//! `sev_add_kernel_loader_hashes`) and EDK2
//! `OvmfPkg/Include/Library/BlobVerifierLib` /
//! `OvmfPkg/AmdSev/BlobVerifierLibSevHashes` (the GUIDs). The table is
//! packed, little-endian, and padded to a multiple of 16 bytes.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};
use uuid::{Uuid, uuid};
use zerocopy::little_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::page_info::PAGE_SIZE;

/// GUID of the table header (`SEV_HASH_TABLE_GUID`).
pub const HASH_TABLE_HEADER_GUID: Uuid = uuid!("9438d606-4f22-4cc9-b479-a793d411fd21");
/// GUID of the kernel entry.
pub const KERNEL_ENTRY_GUID: Uuid = uuid!("4de79437-abd2-427f-b835-d5b172d2045b");
/// GUID of the initrd entry.
pub const INITRD_ENTRY_GUID: Uuid = uuid!("44baf731-3a2f-4bd7-9af1-41e29169781d");
/// GUID of the command-line entry.
pub const CMDLINE_ENTRY_GUID: Uuid = uuid!("97d02dd8-bd20-4c94-aa78-e7714d36ab2a");

/// One entry (QEMU `SevHashTableEntry`): GUID, length of the entry, SHA-256.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SevHashTableEntry {
    /// The entry's GUID (EFI byte order).
    pub guid: [u8; 16],
    /// Size of this entry: 50.
    pub length: U16,
    /// SHA-256 of the blob.
    pub hash: [u8; 32],
}

const _: () = assert!(size_of::<SevHashTableEntry>() == 50);

/// The table (QEMU `SevHashTable`): header GUID and length, then the
/// command line, initrd and kernel entries, in that order.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SevHashTable {
    /// [`HASH_TABLE_HEADER_GUID`].
    pub guid: [u8; 16],
    /// Size of the unpadded table: 168.
    pub length: U16,
    /// Command line entry.
    pub cmdline: SevHashTableEntry,
    /// Initrd entry.
    pub initrd: SevHashTableEntry,
    /// Kernel entry.
    pub kernel: SevHashTableEntry,
}

const _: () = assert!(size_of::<SevHashTable>() == 168);

/// The table padded with zeros to a multiple of 16 bytes (QEMU
/// `PaddedSevHashTable`): what QEMU writes and, for SEV and SEV-ES, what it
/// measures with `LAUNCH_UPDATE_DATA`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PaddedSevHashTable {
    /// The table.
    pub table: SevHashTable,
    /// Zeros.
    pub padding: [u8; 8],
}

const _: () = assert!(size_of::<PaddedSevHashTable>() == 176);

/// The SHA-256 digests of the three direct-boot blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelHashes {
    /// SHA-256 of the kernel image.
    pub kernel: [u8; 32],
    /// SHA-256 of the initrd (of nothing when there is none).
    pub initrd: [u8; 32],
    /// SHA-256 of the command line with its terminating NUL.
    pub cmdline: [u8; 32],
}

/// The kernel-hashes page cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the kernel-hashes table ({table} bytes) does not fit at offset {offset} of a 4 KiB page")]
pub struct TableOffsetError {
    /// Offset within the page.
    pub offset: usize,
    /// Table size.
    pub table: usize,
}

impl KernelHashes {
    /// Hashes from the blobs in memory. An empty or absent command line is
    /// measured as a single NUL, as QEMU passes it (`--append ''` equals no
    /// `--append`).
    pub fn new(kernel: &[u8], initrd: Option<&[u8]>, cmdline: Option<&[u8]>) -> Self {
        KernelHashes {
            kernel: Sha256::digest(kernel).into(),
            initrd: Sha256::digest(initrd.unwrap_or_default()).into(),
            cmdline: cmdline_hash(cmdline),
        }
    }

    /// Hashes from files, read in 128 KiB pieces; kernel and initrd are
    /// hashed concurrently.
    pub fn from_files(
        kernel: &Path,
        initrd: Option<&Path>,
        cmdline: Option<&[u8]>,
    ) -> io::Result<Self> {
        let (kernel, initrd) = rayon::join(
            || sha256_file(kernel),
            || match initrd {
                Some(p) => sha256_file(p),
                None => Ok(Sha256::digest([]).into()),
            },
        );
        Ok(KernelHashes {
            kernel: kernel?,
            initrd: initrd?,
            cmdline: cmdline_hash(cmdline),
        })
    }

    /// The padded table QEMU writes.
    pub fn table(&self) -> PaddedSevHashTable {
        let entry = |guid: Uuid, hash: [u8; 32]| SevHashTableEntry {
            guid: guid.to_bytes_le(),
            length: U16::new(size_of::<SevHashTableEntry>() as u16),
            hash,
        };
        PaddedSevHashTable {
            table: SevHashTable {
                guid: HASH_TABLE_HEADER_GUID.to_bytes_le(),
                length: U16::new(size_of::<SevHashTable>() as u16),
                cmdline: entry(CMDLINE_ENTRY_GUID, self.cmdline),
                initrd: entry(INITRD_ENTRY_GUID, self.initrd),
                kernel: entry(KERNEL_ENTRY_GUID, self.kernel),
            },
            padding: [0; 8],
        }
    }

    /// The 4 KiB page holding the table at `offset` (the low 12 bits of its
    /// GPA), zeros elsewhere: what SEV-SNP measures as a NORMAL page.
    pub fn page(&self, offset: usize) -> Result<[u8; PAGE_SIZE], TableOffsetError> {
        let table = self.table();
        let bytes = table.as_bytes();
        let mut page = [0u8; PAGE_SIZE];
        let dest = page
            .get_mut(offset..offset.saturating_add(bytes.len()))
            .ok_or(TableOffsetError {
                offset,
                table: bytes.len(),
            })?;
        dest.copy_from_slice(bytes);
        Ok(page)
    }
}

fn cmdline_hash(cmdline: Option<&[u8]>) -> [u8; 32] {
    let mut h = Sha256::new();
    if let Some(c) = cmdline {
        h.update(c);
    }
    h.update([0u8]);
    h.finalize().into()
}

fn sha256_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut file = File::open(path)?;
    let mut h = Sha256::new();
    // Small enough to stay in L2 between the copy and the hash.
    let mut buf = vec![0u8; 128 << 10];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}
