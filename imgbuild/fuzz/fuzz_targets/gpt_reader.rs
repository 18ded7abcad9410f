//! The GPT reader on arbitrary disks: it must never panic, and whatever it
//! accepts must describe partitions inside the disk that do not overlap.
//!
//! The first input byte chooses the mode: odd means "reseal", i.e. the CRCs
//! of both headers and entry arrays are recomputed (UEFI 2.10 §5.3.2) before
//! reading, so mutations reach the checks behind the CRCs instead of being
//! rejected by them.
#![no_main]

use cocos_formats::gpt::read_gpt_bytes;
use libfuzzer_sys::fuzz_target;

const SECTOR: usize = 512;
const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

fn le32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

fn le64(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

/// Recomputes the entry-array CRC, then the header CRC, of the header at `lba`.
fn reseal(disk: &mut [u8], lba: u64) -> Option<()> {
    let h = usize::try_from(lba).ok()?.checked_mul(SECTOR)?;
    let header = disk.get(h..h.checked_add(SECTOR)?)?;
    let array = usize::try_from(le64(header, 72)?)
        .ok()?
        .checked_mul(SECTOR)?;
    let count = usize::try_from(le32(header, 80)?).ok()?;
    let entry = usize::try_from(le32(header, 84)?).ok()?;
    let len = count.checked_mul(entry)?;
    if let Some(bytes) = disk.get(array..array.checked_add(len)?) {
        let crc = CRC.checksum(bytes);
        disk.get_mut(h + 88..h + 92)?
            .copy_from_slice(&crc.to_le_bytes());
    }
    let size = usize::try_from(le32(disk, h + 12)?).ok()?.min(SECTOR);
    disk.get_mut(h + 16..h + 20)?.fill(0);
    let crc = CRC.checksum(disk.get(h..h + size)?);
    disk.get_mut(h + 16..h + 20)?
        .copy_from_slice(&crc.to_le_bytes());
    Some(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, disk)) = data.split_first() else {
        return;
    };
    let mut disk = disk.to_vec();
    if mode & 1 == 1 {
        let backup = le64(&disk, SECTOR + 32);
        let _ = reseal(&mut disk, 1);
        if let Some(lba) = backup {
            let _ = reseal(&mut disk, lba);
        }
    }
    if let Ok(layout) = read_gpt_bytes(&disk) {
        assert!(layout.disk_size <= disk.len() as u64);
        let mut spans: Vec<_> = layout
            .partitions
            .iter()
            .map(|p| (p.first_lba, p.last_lba))
            .collect();
        spans.sort_unstable();
        for (first, last) in &spans {
            assert!(first <= last);
            assert!((last + 1) * SECTOR as u64 <= layout.disk_size);
        }
        for pair in spans.windows(2) {
            assert!(pair[0].1 < pair[1].0, "overlapping partitions accepted");
        }
    }
});
