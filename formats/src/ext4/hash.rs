//! The hashes ext4 stores: the half-MD4 directory hash of hash-tree
//! directories and the extended attribute entry and block hashes.
//!
//! Directory hash: kernel `fs/ext4/hash.c` (`str2hashbuf_unsigned`,
//! `half_md4_transform`, `ext4fs_dirhash`); this writer sets
//! `EXT2_FLAGS_UNSIGNED_HASH`, so name bytes are taken as unsigned. Tests
//! compare with `debugfs -R "dx_hash -h half_md4 -s SEED NAME"`.
//! Attribute hashes: `fs/ext4/xattr.c` (`ext4_xattr_hash_entry`,
//! `ext4_xattr_rehash`).

/// MD4 round constants as used by the kernel's half MD4 (octal in the source).
const K2: u32 = 0o13240474631;
const K3: u32 = 0o15666365641;

fn f(x: u32, y: u32, z: u32) -> u32 {
    z ^ (x & (y ^ z))
}
fn g(x: u32, y: u32, z: u32) -> u32 {
    (x & y).wrapping_add((x ^ y) & z)
}
fn h(x: u32, y: u32, z: u32) -> u32 {
    x ^ y ^ z
}

fn half_md4_transform(buf: &mut [u32; 4], input: &[u32; 8]) {
    let [mut a, mut b, mut c, mut d] = *buf;
    macro_rules! round {
        ($f:ident, $a:ident, $b:ident, $c:ident, $d:ident, $x:expr, $s:expr) => {
            $a = $a
                .wrapping_add($f($b, $c, $d))
                .wrapping_add($x)
                .rotate_left($s);
        };
    }
    // Round 1.
    round!(f, a, b, c, d, input[0], 3);
    round!(f, d, a, b, c, input[1], 7);
    round!(f, c, d, a, b, input[2], 11);
    round!(f, b, c, d, a, input[3], 19);
    round!(f, a, b, c, d, input[4], 3);
    round!(f, d, a, b, c, input[5], 7);
    round!(f, c, d, a, b, input[6], 11);
    round!(f, b, c, d, a, input[7], 19);
    // Round 2.
    round!(g, a, b, c, d, input[1].wrapping_add(K2), 3);
    round!(g, d, a, b, c, input[3].wrapping_add(K2), 5);
    round!(g, c, d, a, b, input[5].wrapping_add(K2), 9);
    round!(g, b, c, d, a, input[7].wrapping_add(K2), 13);
    round!(g, a, b, c, d, input[0].wrapping_add(K2), 3);
    round!(g, d, a, b, c, input[2].wrapping_add(K2), 5);
    round!(g, c, d, a, b, input[4].wrapping_add(K2), 9);
    round!(g, b, c, d, a, input[6].wrapping_add(K2), 13);
    // Round 3.
    round!(h, a, b, c, d, input[3].wrapping_add(K3), 3);
    round!(h, d, a, b, c, input[7].wrapping_add(K3), 9);
    round!(h, c, d, a, b, input[2].wrapping_add(K3), 11);
    round!(h, b, c, d, a, input[6].wrapping_add(K3), 15);
    round!(h, a, b, c, d, input[1].wrapping_add(K3), 3);
    round!(h, d, a, b, c, input[5].wrapping_add(K3), 9);
    round!(h, c, d, a, b, input[0].wrapping_add(K3), 11);
    round!(h, b, c, d, a, input[4].wrapping_add(K3), 15);
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

/// Packs up to `out.len() * 4` name bytes into words, padded with the
/// length pattern (`str2hashbuf_unsigned`).
fn str2hashbuf_unsigned(msg: &[u8], out: &mut [u32; 8]) {
    let len = msg.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let mut val = pad;
    let take = msg.len().min(out.len() * 4);
    let mut i_out = 0;
    for (i, &byte) in msg[..take].iter().enumerate() {
        val = u32::from(byte).wrapping_add(val << 8);
        if i % 4 == 3 {
            out[i_out] = val;
            i_out += 1;
            val = pad;
        }
    }
    if i_out < out.len() {
        out[i_out] = val;
        i_out += 1;
    }
    for word in &mut out[i_out..] {
        *word = pad;
    }
}

/// The major hash of `name` for a hash-tree directory (half MD4, unsigned),
/// with its low bit cleared as stored in `dx_entry`.
pub fn dir_hash(name: &[u8], seed: &[u32; 4]) -> u32 {
    let mut buf = if seed.iter().any(|&w| w != 0) {
        *seed
    } else {
        [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476]
    };
    let mut input = [0u32; 8];
    // The kernel hashes 32 bytes at a time, padding each chunk according to
    // the length that remains from its start.
    let mut rest = name;
    while !rest.is_empty() {
        str2hashbuf_unsigned(rest, &mut input);
        half_md4_transform(&mut buf, &input);
        rest = &rest[rest.len().min(32)..];
    }
    let hash = buf[1] & !1;
    // EXT4_HTREE_EOF_32BIT << 1 is reserved as the end-of-directory marker.
    if hash == 0x7fff_ffff << 1 {
        (0x7fff_ffff - 1) << 1
    } else {
        hash
    }
}

/// `ext4_xattr_hash_entry`: hash of an attribute's name and value.
pub fn xattr_entry_hash(name: &[u8], value: &[u8]) -> u32 {
    let mut hash: u32 = 0;
    for &b in name {
        hash = (hash << 5) ^ (hash >> 27) ^ u32::from(b);
    }
    for word in value.chunks(4) {
        let mut w = [0u8; 4];
        w[..word.len()].copy_from_slice(word);
        hash = (hash << 16) ^ (hash >> 16) ^ u32::from_le_bytes(w);
    }
    hash
}

/// `ext4_xattr_rehash`: the block hash over all entry hashes.
pub fn xattr_block_hash(entry_hashes: &[u32]) -> u32 {
    let mut hash: u32 = 0;
    for &e in entry_hashes {
        if e == 0 {
            return 0;
        }
        hash = (hash << 16) ^ (hash >> 16) ^ e;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// `debugfs dx_hash` (e2fsprogs) is the reference. It needs an image
    /// to open; any small ext4 image will do.
    fn debugfs_hash(name: &str, seed: &str) -> u32 {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        let st = Command::new("mke2fs")
            .args(["-q", "-t", "ext4", "-F"])
            .arg(&img)
            .arg("1M")
            .status()
            .expect("mke2fs not found: install e2fsprogs (scripts/setup-host.sh)");
        assert!(st.success());
        let out = Command::new("debugfs")
            .arg("-R")
            .arg(format!("dx_hash -h half_md4 -s {seed} {name}"))
            .arg(&img)
            .output()
            .expect("debugfs not found: install e2fsprogs");
        let text = String::from_utf8_lossy(&out.stdout);
        // "Hash of NAME is 0x12345678 (minor 0x9abcdef0)"
        let hex = text
            .split("is 0x")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected debugfs output: {text}"));
        u32::from_str_radix(hex, 16).unwrap()
    }

    fn seed_words(seed: &uuid::Uuid) -> [u32; 4] {
        let b = seed.as_bytes();
        std::array::from_fn(|i| {
            u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
        })
    }

    #[test]
    fn dir_hash_matches_debugfs() {
        let seed = uuid::Uuid::parse_str("6e0f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b").unwrap();
        for name in [
            "a",
            "lost+found",
            "bin",
            "libc.so.6",
            "0123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdef0",
            &"x".repeat(100),
            &"long-name-".repeat(25),
        ] {
            assert_eq!(
                dir_hash(name.as_bytes(), &seed_words(&seed)),
                debugfs_hash(name, &seed.to_string()),
                "{name}"
            );
        }
    }

    #[test]
    fn xattr_hash_of_a_known_entry() {
        // A rotate-and-xor over the name bytes, then over value words:
        // worked by hand for name "ab", value [1, 0, 0, 0].
        let h = ((u32::from(b'a') << 5) ^ u32::from(b'b')) << 16 ^ 1;
        assert_eq!(xattr_entry_hash(b"ab", &[1]), h);
        assert_eq!(xattr_block_hash(&[h, 0]), 0);
    }
}
