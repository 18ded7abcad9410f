//! The strict reader: [`read_gpt`] and [`read_gpt_bytes`] parse and
//! validate the table of an image, a block device or a disk held in memory
//! (used by `inspect` and by cocos-init to find partitions).
//!
//! The input is untrusted: every field is range-checked, both CRCs of both
//! copies are verified, and the backup must agree with the primary. It
//! never panics and reports what is wrong as a [`GptError`].

use std::collections::HashSet;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use uuid::Uuid;
use zerocopy::FromBytes;

use super::raw::{GPT_REVISION_1_0, GPT_SIGNATURE, HEADER_SIZE_MIN, RawEntry, RawHeader, crc32};
use super::{DiskLayout, ENTRY_SIZE, GptError, HeaderKind, PlacedPartition, SECTOR_SIZE};

/// The most entries [`read_gpt`] accepts in a foreign table (512 KiB of
/// entries), so a corrupt count cannot make it allocate gigabytes.
const MAX_READ_ENTRIES: u32 = 4096;

/// A header that passed [`parse_header`].
struct Header {
    raw: RawHeader,
    /// Bytes in the entry array.
    array_bytes: u64,
}

impl Header {
    fn entry_lba(&self) -> u64 {
        self.raw.partition_entry_lba.get()
    }
    fn array_sectors(&self) -> u64 {
        self.array_bytes.div_ceil(SECTOR_SIZE)
    }
}

/// Reads and validates the partition table of `file` (a disk image or a
/// block device).
///
/// Checks: the protective MBR (signature 0x55AA and a type 0xEE record);
/// both headers (signature, revision 1.0, header size, CRC32, reserved
/// field, `MyLBA`, `AlternateLBA`, usable range, entry array placement,
/// entry size 128); both entry arrays' CRC32; that the backup header (at
/// the primary's `AlternateLBA`) describes the same table and its array is
/// byte-identical; and every used entry (non-nil unique GUID, ordered LBAs
/// inside the usable range, valid UTF-16 name, no overlaps, no duplicate
/// unique GUIDs).
///
/// There is no fallback: a damaged primary or backup is an error, never
/// silently repaired from the other copy.
///
/// The returned `disk_size` is the size the table describes (the backup
/// header's LBA + 1 sectors), which may be less than the device size if the
/// device was grown. Partitions keep their entry numbers; unused entries
/// are skipped. Reading uses positional reads; the file position is
/// restored after measuring the device's size.
pub fn read_gpt(file: &File) -> Result<DiskLayout, GptError> {
    read_from(&Device::new(file)?)
}

/// [`read_gpt`] over a disk image held in memory (the same checks; used by
/// the fuzz target and by callers that already hold the first and last
/// sectors of a disk).
pub fn read_gpt_bytes(disk: &[u8]) -> Result<DiskLayout, GptError> {
    read_from(&Device {
        source: disk,
        size: disk.len() as u64,
    })
}

fn read_from<S: ReadAt + ?Sized>(device: &Device<'_, S>) -> Result<DiskLayout, GptError> {
    let mbr = device.read(0, SECTOR_SIZE, "protective MBR")?;
    check_protective_mbr(&mbr)?;

    let primary_bytes = device.read(SECTOR_SIZE, SECTOR_SIZE, "primary GPT header")?;
    let primary = parse_header(&primary_bytes, HeaderKind::Primary, 1, device.sectors())?;
    let primary_array = device.read_array(&primary, "primary partition entry array")?;
    check_array_crc(&primary, &primary_array, HeaderKind::Primary)?;

    let backup_lba = primary.raw.alternate_lba.get();
    let backup_bytes = device.read(
        backup_lba.saturating_mul(SECTOR_SIZE),
        SECTOR_SIZE,
        "backup GPT header",
    )?;
    let backup = parse_header(
        &backup_bytes,
        HeaderKind::Backup,
        backup_lba,
        device.sectors(),
    )?;
    let p = &primary.raw;
    let b = &backup.raw;
    let mismatch = |field| Err(GptError::BackupMismatch { field });
    if b.alternate_lba.get() != p.my_lba.get() {
        return mismatch("AlternateLBA");
    }
    if b.disk_guid != p.disk_guid {
        return mismatch("DiskGUID");
    }
    if b.first_usable_lba.get() != p.first_usable_lba.get() {
        return mismatch("FirstUsableLBA");
    }
    if b.last_usable_lba.get() != p.last_usable_lba.get() {
        return mismatch("LastUsableLBA");
    }
    if b.number_of_partition_entries.get() != p.number_of_partition_entries.get() {
        return mismatch("NumberOfPartitionEntries");
    }
    if b.partition_entry_array_crc32.get() != p.partition_entry_array_crc32.get() {
        return mismatch("PartitionEntryArrayCRC32");
    }
    let backup_array = device.read_array(&backup, "backup partition entry array")?;
    check_array_crc(&backup, &backup_array, HeaderKind::Backup)?;
    if backup_array != primary_array {
        return mismatch("partition entry array");
    }

    let partitions = parse_entries(&primary, &primary_array)?;
    Ok(DiskLayout {
        disk_guid: Uuid::from_bytes_le(p.disk_guid),
        disk_size: backup_lba
            .checked_add(1)
            .and_then(|s| s.checked_mul(SECTOR_SIZE))
            .ok_or(GptError::Overflow)?,
        partitions,
    })
}

/// Positional reads from a file or from memory.
trait ReadAt {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).ok();
        let end = start.and_then(|s| s.checked_add(buf.len()));
        match (start, end) {
            (Some(start), Some(end)) if end <= self.len() => {
                buf.copy_from_slice(&self[start..end]);
                Ok(())
            }
            _ => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// The disk being read, with its size.
struct Device<'a, S: ReadAt + ?Sized> {
    source: &'a S,
    size: u64,
}

impl<'a> Device<'a, File> {
    fn new(file: &'a File) -> Result<Self, GptError> {
        let mut f = file;
        let position = f.stream_position()?;
        let size = f.seek(SeekFrom::End(0))?;
        f.seek(SeekFrom::Start(position))?;
        Ok(Device { source: file, size })
    }
}

impl<S: ReadAt + ?Sized> Device<'_, S> {
    fn sectors(&self) -> u64 {
        self.size / SECTOR_SIZE
    }

    /// Reads `len` bytes at `offset`, or says which structure is cut off.
    fn read(&self, offset: u64, len: u64, what: &'static str) -> Result<Vec<u8>, GptError> {
        let truncated = GptError::Truncated {
            what,
            offset,
            end: offset.saturating_add(len),
            device_size: self.size,
        };
        match offset.checked_add(len) {
            Some(end) if end <= self.size => {}
            _ => return Err(truncated),
        }
        let Ok(len) = usize::try_from(len) else {
            return Err(truncated);
        };
        let mut buf = vec![0; len];
        match self.source.read_exact_at(&mut buf, offset) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(truncated),
            Err(e) => Err(e.into()),
        }
    }

    fn read_array(&self, header: &Header, what: &'static str) -> Result<Vec<u8>, GptError> {
        // parse_header bounded the LBA by the device size, so this cannot
        // overflow; saturate anyway and let read() report it.
        self.read(
            header.entry_lba().saturating_mul(SECTOR_SIZE),
            header.array_bytes,
            what,
        )
    }
}

/// UEFI 2.10 §5.2.3: signature 0xAA55 at byte 510 and a partition record
/// of OS type 0xEE. (Tools also write hybrid MBRs; any 0xEE record is
/// accepted.)
fn check_protective_mbr(mbr: &[u8]) -> Result<(), GptError> {
    if mbr.get(510..512) != Some(&[0x55, 0xAA][..]) {
        return Err(GptError::ProtectiveMbr("boot signature 0x55AA missing"));
    }
    let has_protective = (0..4).any(|i| mbr.get(446 + 16 * i + 4) == Some(&0xEE));
    if !has_protective {
        return Err(GptError::ProtectiveMbr(
            "no partition record of type 0xEE (GPT protective)",
        ));
    }
    Ok(())
}

/// Validates one header on its own (UEFI 2.10 §5.3.2, "the following tests
/// must be performed": signature, header CRC32, `MyLBA`), plus range checks
/// of every field against the device.
fn parse_header(
    block: &[u8],
    kind: HeaderKind,
    my_lba: u64,
    device_sectors: u64,
) -> Result<Header, GptError> {
    let invalid = |field: &'static str, detail: String| {
        Err(GptError::InvalidHeader {
            header: kind,
            field,
            detail,
        })
    };
    let Ok((raw, _)) = RawHeader::read_from_prefix(block) else {
        return invalid("HeaderSize", "block shorter than 92 bytes".into());
    };
    if raw.signature != GPT_SIGNATURE {
        return Err(GptError::BadSignature { header: kind });
    }
    let header_size = raw.header_size.get();
    if !(HEADER_SIZE_MIN..=SECTOR_SIZE as u32).contains(&header_size) {
        return invalid(
            "HeaderSize",
            format!("{header_size}, not in {HEADER_SIZE_MIN}..={SECTOR_SIZE}"),
        );
    }
    let Some(covered) = block.get(..header_size as usize) else {
        return invalid("HeaderSize", format!("{header_size} exceeds the block"));
    };
    let mut covered = covered.to_vec();
    covered[16..20].fill(0);
    let computed = crc32(&covered);
    let stored = raw.header_crc32.get();
    if computed != stored {
        return Err(GptError::HeaderCrc {
            header: kind,
            stored,
            computed,
        });
    }
    if raw.revision.get() != GPT_REVISION_1_0 {
        return invalid(
            "Revision",
            format!("{:#010x}, expected 0x00010000", raw.revision.get()),
        );
    }
    if raw.reserved.get() != 0 {
        return invalid(
            "Reserved",
            format!("{:#x}, must be zero", raw.reserved.get()),
        );
    }
    if raw.my_lba.get() != my_lba {
        return invalid(
            "MyLBA",
            format!("{}, but the header is at LBA {my_lba}", raw.my_lba.get()),
        );
    }
    let alternate = raw.alternate_lba.get();
    match kind {
        HeaderKind::Primary if alternate <= my_lba || alternate >= device_sectors => {
            return invalid(
                "AlternateLBA",
                format!("{alternate}, not between LBA {my_lba} and the device's last LBA"),
            );
        }
        HeaderKind::Backup if alternate != 1 => {
            return invalid("AlternateLBA", format!("{alternate}, must be 1"));
        }
        _ => {}
    }
    let entry_size = raw.size_of_partition_entry.get();
    if entry_size != ENTRY_SIZE {
        return invalid(
            "SizeOfPartitionEntry",
            format!("{entry_size}, only {ENTRY_SIZE} is supported"),
        );
    }
    let entries = raw.number_of_partition_entries.get();
    if entries > MAX_READ_ENTRIES {
        return invalid(
            "NumberOfPartitionEntries",
            format!("{entries}, more than the {MAX_READ_ENTRIES} supported"),
        );
    }
    let header = Header {
        array_bytes: u64::from(entries) * u64::from(entry_size),
        raw,
    };
    let raw = &header.raw;
    let first_usable = raw.first_usable_lba.get();
    let last_usable = raw.last_usable_lba.get();
    let (primary_lba, backup_lba) = match kind {
        HeaderKind::Primary => (my_lba, alternate),
        HeaderKind::Backup => (alternate, my_lba),
    };
    if first_usable <= primary_lba || first_usable > last_usable || last_usable >= backup_lba {
        return invalid(
            "FirstUsableLBA/LastUsableLBA",
            format!(
                "{first_usable}..={last_usable}, not an area between the headers at LBAs {primary_lba} and {backup_lba}"
            ),
        );
    }
    let array_start = header.entry_lba();
    let array_end = array_start.saturating_add(header.array_sectors());
    let fits = match kind {
        // Between the primary header and the first usable LBA.
        HeaderKind::Primary => array_start > my_lba && array_end <= first_usable,
        // Between the last usable LBA and the backup header.
        HeaderKind::Backup => array_start > last_usable && array_end <= my_lba,
    };
    if !fits {
        return invalid(
            "PartitionEntryLBA",
            format!(
                "entry array at LBAs {array_start}..{array_end} overlaps the header or the usable area"
            ),
        );
    }
    Ok(header)
}

fn check_array_crc(header: &Header, array: &[u8], kind: HeaderKind) -> Result<(), GptError> {
    let computed = crc32(array);
    let stored = header.raw.partition_entry_array_crc32.get();
    if computed != stored {
        return Err(GptError::EntryArrayCrc {
            header: kind,
            stored,
            computed,
        });
    }
    Ok(())
}

fn parse_entries(header: &Header, array: &[u8]) -> Result<Vec<PlacedPartition>, GptError> {
    let first_usable = header.raw.first_usable_lba.get();
    let last_usable = header.raw.last_usable_lba.get();
    let mut partitions: Vec<PlacedPartition> = Vec::new();
    let mut guids = HashSet::new();
    for (number, chunk) in (1u32..).zip(array.chunks_exact(ENTRY_SIZE as usize)) {
        let invalid = |detail: String| Err(GptError::InvalidEntry { number, detail });
        let Ok(raw) = RawEntry::read_from_bytes(chunk) else {
            return invalid("entry shorter than 128 bytes".into());
        };
        let type_guid = Uuid::from_bytes_le(raw.partition_type_guid);
        if type_guid.is_nil() {
            continue; // UEFI 2.10 §5.3.3: a zero type GUID marks an unused entry.
        }
        let unique_guid = Uuid::from_bytes_le(raw.unique_partition_guid);
        if unique_guid.is_nil() {
            return invalid("unique partition GUID is nil".into());
        }
        if !guids.insert(unique_guid) {
            return invalid(format!("unique partition GUID {unique_guid} is used twice"));
        }
        let first_lba = raw.starting_lba.get();
        let last_lba = raw.ending_lba.get();
        if first_lba > last_lba || first_lba < first_usable || last_lba > last_usable {
            return invalid(format!(
                "LBAs {first_lba}..={last_lba} are not inside the usable LBAs {first_usable}..={last_usable}"
            ));
        }
        let units: Vec<u16> = raw
            .partition_name
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let Ok(name) = String::from_utf16(&units) else {
            return invalid("name is not valid UTF-16".into());
        };
        // last_usable < device sectors, so these cannot overflow; check anyway.
        let (Some(offset), Some(size)) = (
            first_lba.checked_mul(SECTOR_SIZE),
            (last_lba - first_lba + 1).checked_mul(SECTOR_SIZE),
        ) else {
            return Err(GptError::Overflow);
        };
        partitions.push(PlacedPartition {
            number,
            name,
            type_guid,
            unique_guid,
            attributes: raw.attributes.get(),
            offset,
            size,
            first_lba,
            last_lba,
        });
    }
    let mut by_start: Vec<&PlacedPartition> = partitions.iter().collect();
    by_start.sort_by_key(|p| p.first_lba);
    for pair in by_start.windows(2) {
        if let [a, b] = pair {
            if b.first_lba <= a.last_lba {
                return Err(GptError::InvalidEntry {
                    number: b.number,
                    detail: format!("overlaps partition {}", a.number),
                });
            }
        }
    }
    Ok(partitions)
}
