//! Extended attributes: one block per inode that has any, entries sorted
//! as the kernel's lookup expects, names stored without their namespace
//! prefix (`fs/ext4/xattr.h`).

use std::path::Path;

use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32};

use super::{BLOCK, Ext4Error};
use crate::ext4::hash::{xattr_block_hash, xattr_entry_hash};
use crate::ext4::raw::{XATTR_MAGIC, XattrEntry, XattrHeader};
use crate::ext4::source::Xattr;

/// Prefixes of extended attribute names and their `e_name_index`
/// (`fs/ext4/xattr.h`), longest first so "system.posix_acl_access" wins
/// over "system.".
const XATTR_PREFIXES: [(&[u8], u8); 4] = [
    (b"user.", 1),
    (b"trusted.", 4),
    (b"security.", 6),
    (b"system.", 7),
];

/// An extended attribute block holding `xattrs`, entries sorted by (index,
/// name length, name) as the kernel's lookup expects.
pub(super) fn xattr_block(xattrs: &[Xattr], path: &Path) -> Result<Vec<u8>, Ext4Error> {
    let err = |reason: String| Ext4Error::Xattr {
        path: path.to_path_buf(),
        reason,
    };
    let mut entries: Vec<(u8, &[u8], &[u8])> = Vec::with_capacity(xattrs.len());
    for (name, value) in xattrs {
        if name.starts_with(b"system.posix_acl_") {
            return Err(err(
                "POSIX ACLs are not supported in images (the on-disk ACL format differs)".into(),
            ));
        }
        let (index, suffix) = XATTR_PREFIXES
            .iter()
            .find_map(|(p, i)| name.strip_prefix(*p).map(|s| (*i, s)))
            .ok_or_else(|| {
                err(format!(
                    "extended attribute {:?} has an unsupported prefix",
                    String::from_utf8_lossy(name)
                ))
            })?;
        if suffix.len() > 255 {
            return Err(err("extended attribute name longer than 255 bytes".into()));
        }
        entries.push((index, suffix, value));
    }
    entries.sort_by(|a, b| (a.0, a.1.len(), a.1).cmp(&(b.0, b.1.len(), b.1)));

    let mut block = vec![0u8; BLOCK];
    let mut at = 32;
    let mut value_end = BLOCK;
    let mut hashes = Vec::with_capacity(entries.len());
    for (index, name, value) in &entries {
        let entry_len = (16 + name.len()).next_multiple_of(4);
        let value_len = value.len().next_multiple_of(4);
        // Keep 4 zero bytes after the last entry (the end marker).
        if at + entry_len + 4 + value_len > value_end {
            return Err(err(
                "extended attributes do not fit in one 4 KiB block".into()
            ));
        }
        let offs = if value.is_empty() {
            0
        } else {
            value_end -= value_len;
            block[value_end..value_end + value.len()].copy_from_slice(value);
            value_end
        };
        let hash = xattr_entry_hash(name, value);
        hashes.push(hash);
        let e = XattrEntry {
            e_name_len: name.len() as u8,
            e_name_index: *index,
            e_value_offs: U16::new(offs as u16),
            e_value_inum: U32::new(0),
            e_value_size: U32::new(value.len() as u32),
            e_hash: U32::new(hash),
        };
        block[at..at + 16].copy_from_slice(e.as_bytes());
        block[at + 16..at + 16 + name.len()].copy_from_slice(name);
        at += entry_len;
    }
    let header = XattrHeader {
        h_magic: U32::new(XATTR_MAGIC),
        h_refcount: U32::new(1),
        h_blocks: U32::new(1),
        h_hash: U32::new(xattr_block_hash(&hashes)),
        h_checksum: U32::new(0),
        h_reserved: [U32::new(0); 3],
    };
    block[..32].copy_from_slice(header.as_bytes());
    Ok(block)
}
