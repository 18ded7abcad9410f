//! The runtime `/etc/fstab`.
//!
//! The running system must see an fstab that describes it: the root from
//! `/dev/mapper/root_verity`, read-only, and the two 9P shares the host
//! provides (`certs_share` on `/etc/certs`, `env_share` on `/etc/cocos`,
//! over virtio). The image's fstab is written at build time and covered by
//! the root hash; when it already says all that it is used as is.
//! Otherwise cocos-init writes the corrected text (this module) to a tmpfs
//! and bind-mounts it over the read-only `/etc/fstab` (`mounts`).
//!
//! The entry lines follow `fstab(5)`: whitespace-separated fields `spec
//! file vfstype mntops freq passno`, `#` comments.

/// The root entry cocos-init writes when the image has none that fits.
pub const ROOT_ENTRY: &str = "/dev/mapper/root_verity / ext4 ro 0 0";
/// The certificates share entry (the options of the image the seed builds).
pub const CERTS_ENTRY: &str =
    "certs_share /etc/certs 9p trans=virtio,version=9p2000.L,cache=mmap,nofail 0 0";
/// The environment share entry.
pub const ENV_ENTRY: &str =
    "env_share /etc/cocos 9p trans=virtio,version=9p2000.L,cache=mmap,nofail 0 0";

/// One entry the runtime fstab must have.
struct Required {
    spec: &'static str,
    file: &'static str,
    vfstype: &'static str,
    /// Options that must be present.
    options: &'static [&'static str],
    /// Options that must be absent.
    forbidden: &'static [&'static str],
    canonical: &'static str,
}

const REQUIRED: [Required; 3] = [
    Required {
        spec: "/dev/mapper/root_verity",
        file: "/",
        vfstype: "ext4",
        options: &["ro"],
        forbidden: &["rw"],
        canonical: ROOT_ENTRY,
    },
    Required {
        spec: "certs_share",
        file: "/etc/certs",
        vfstype: "9p",
        options: &["trans=virtio"],
        forbidden: &[],
        canonical: CERTS_ENTRY,
    },
    Required {
        spec: "env_share",
        file: "/etc/cocos",
        vfstype: "9p",
        options: &["trans=virtio"],
        forbidden: &[],
        canonical: ENV_ENTRY,
    },
];

/// The fields of an entry line.
struct Entry<'a> {
    spec: &'a str,
    file: &'a str,
    vfstype: Option<&'a str>,
    options: Option<&'a str>,
}

fn parse_entry(line: &str) -> Option<Entry<'_>> {
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let mut fields = trimmed.split_whitespace();
    let spec = fields.next()?;
    let file = fields.next()?;
    Some(Entry {
        spec,
        file,
        vfstype: fields.next(),
        options: fields.next(),
    })
}

/// A mount point without trailing slashes (`/etc/certs/` is `/etc/certs`).
fn normalize(file: &str) -> &str {
    let t = file.trim_end_matches('/');
    if t.is_empty() { "/" } else { t }
}

impl Required {
    /// Whether `entry` is about this mount: the same source, or the same
    /// mount point.
    fn concerns(&self, entry: &Entry<'_>) -> bool {
        entry.spec == self.spec || normalize(entry.file) == self.file
    }

    /// Whether `entry` says what the runtime needs.
    fn satisfied_by(&self, entry: &Entry<'_>) -> bool {
        let options: Vec<&str> = entry.options.unwrap_or("").split(',').collect();
        entry.spec == self.spec
            && normalize(entry.file) == self.file
            && entry.vfstype == Some(self.vfstype)
            && self.options.iter().all(|o| options.contains(o))
            && !self.forbidden.iter().any(|o| options.contains(o))
    }
}

/// The fstab the running system should see, given the image's `existing`
/// one (empty when the image has none).
///
/// - Lines that are not about the root or the two 9P mounts (comments,
///   blank lines, other entries) are kept as they are, in order.
/// - An entry about one of them (same source, or same mount point) that
///   says what the runtime needs is kept as written (spacing and extra
///   options included): the root from `/dev/mapper/root_verity`, `ext4`,
///   `ro`; a share with its tag, its mount point, `9p` and `trans=virtio`.
/// - One that is written differently (another source or mount point,
///   another type, `trans=virtio` missing, the root `rw`) is replaced, in
///   place, by [`ROOT_ENTRY`], [`CERTS_ENTRY`] or [`ENV_ENTRY`]; further
///   entries about the same mount are dropped.
/// - A missing root entry is added before the first entry; missing shares
///   at the end.
///
/// The result ends with a newline, and rewriting it again changes nothing.
///
/// ```
/// use cocos_init::fstab::rewrite_fstab;
/// let runtime = rewrite_fstab("proc /proc proc defaults 0 0\n");
/// assert_eq!(
///     runtime,
///     "/dev/mapper/root_verity / ext4 ro 0 0\n\
///      proc /proc proc defaults 0 0\n\
///      certs_share /etc/certs 9p trans=virtio,version=9p2000.L,cache=mmap,nofail 0 0\n\
///      env_share /etc/cocos 9p trans=virtio,version=9p2000.L,cache=mmap,nofail 0 0\n"
/// );
/// ```
pub fn rewrite_fstab(existing: &str) -> String {
    let mut lines: Vec<&str> = Vec::new();
    let mut placed = [false; REQUIRED.len()];
    let mut first_entry: Option<usize> = None;
    for line in existing.lines() {
        // `lines` drops "\r\n" but keeps a lone trailing "\r": drop it too,
        // so the output (LF endings) reads back the same (found by fuzzing).
        let line = line.trim_end_matches('\r');
        let Some(entry) = parse_entry(line) else {
            lines.push(line);
            continue;
        };
        match REQUIRED.iter().position(|r| r.concerns(&entry)) {
            None => {
                first_entry.get_or_insert(lines.len());
                lines.push(line);
            }
            Some(i) if placed[i] => {} // a second entry for the same mount
            Some(i) => {
                placed[i] = true;
                first_entry.get_or_insert(lines.len());
                let required = &REQUIRED[i];
                lines.push(if required.satisfied_by(&entry) {
                    line
                } else {
                    required.canonical
                });
            }
        }
    }
    if !placed[0] {
        lines.insert(first_entry.unwrap_or(lines.len()), REQUIRED[0].canonical);
    }
    for (required, placed) in REQUIRED.iter().zip(placed).skip(1) {
        if !placed {
            lines.push(required.canonical);
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The image fstab of the system cocos-init replaces
    /// (`hal/disk/board/rootfs-overlay/etc/fstab`), which already
    /// describes the runtime.
    const SEED_FSTAB: &str = "# Root is mounted read-only by the initramfs through dm-verity.\n\
# /cocos, /var, /tmp, and bind mounts are set up by the initramfs init script.\n\
/dev/mapper/root_verity  /        ext4  ro,defaults          0 0\n\
\n\
# 9P virtio shares \u{2014} provided by the hypervisor, optional (nofail)\n\
certs_share  /etc/certs   9p  trans=virtio,version=9p2000.L,cache=mmap,nofail  0 0\n\
env_share    /etc/cocos   9p  trans=virtio,version=9p2000.L,cache=mmap,nofail  0 0\n";

    /// Found by the boot_inputs fuzz target: a lone "\r" line became
    /// "\r\n" in the output, which reads back as an empty line.
    #[test]
    fn carriage_returns_do_not_break_idempotence() {
        for input in [
            "\r",
            "a\r",
            "\r\r\r\n",
            "proc /proc proc defaults 0 0\r\n\r",
        ] {
            let once = rewrite_fstab(input);
            assert_eq!(rewrite_fstab(&once), once, "{input:?}");
            assert!(!once.contains('\r'), "{once:?}");
        }
    }

    /// The entries as fields, for comparisons that ignore spacing.
    fn entries(text: &str) -> Vec<Vec<&str>> {
        text.lines()
            .filter(|l| parse_entry(l).is_some())
            .map(|l| l.split_whitespace().collect())
            .collect()
    }

    #[test]
    fn a_complete_fstab_is_kept_byte_for_byte() {
        assert_eq!(rewrite_fstab(SEED_FSTAB), SEED_FSTAB);
    }

    #[test]
    fn an_empty_fstab_gets_all_three_entries() {
        let out = rewrite_fstab("");
        assert_eq!(
            entries(&out),
            vec![
                vec!["/dev/mapper/root_verity", "/", "ext4", "ro", "0", "0"],
                vec![
                    "certs_share",
                    "/etc/certs",
                    "9p",
                    "trans=virtio,version=9p2000.L,cache=mmap,nofail",
                    "0",
                    "0"
                ],
                vec![
                    "env_share",
                    "/etc/cocos",
                    "9p",
                    "trans=virtio,version=9p2000.L,cache=mmap,nofail",
                    "0",
                    "0"
                ],
            ]
        );
    }

    #[test]
    fn a_debootstrap_fstab_keeps_its_comment_and_gains_the_entries() {
        // debootstrap writes this one-line placeholder.
        let out = rewrite_fstab("# UNCONFIGURED FSTAB FOR BASE SYSTEM\n");
        assert_eq!(
            out,
            format!(
                "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n{ROOT_ENTRY}\n{CERTS_ENTRY}\n{ENV_ENTRY}\n"
            )
        );
    }

    #[test]
    fn other_lines_are_kept_in_order() {
        let existing = "# comment\n\
proc /proc proc defaults 0 0\n\
\n\
tmpfs /dev/shm tmpfs nosuid,nodev 0 0\n";
        let out = rewrite_fstab(existing);
        assert_eq!(
            out,
            format!(
                "# comment\n{ROOT_ENTRY}\nproc /proc proc defaults 0 0\n\ntmpfs /dev/shm tmpfs nosuid,nodev 0 0\n{CERTS_ENTRY}\n{ENV_ENTRY}\n"
            )
        );
    }

    #[test]
    fn a_missing_share_is_added_and_the_present_one_kept() {
        let existing =
            format!("{ROOT_ENTRY}\nenv_share\t/etc/cocos\t9p\ttrans=virtio,msize=262144\t0 0\n");
        let out = rewrite_fstab(&existing);
        assert_eq!(
            out,
            format!(
                "{ROOT_ENTRY}\nenv_share\t/etc/cocos\t9p\ttrans=virtio,msize=262144\t0 0\n{CERTS_ENTRY}\n"
            )
        );
    }

    #[test]
    fn differently_written_9p_entries_are_replaced_in_place() {
        let cases = [
            // No transport: the 9P client would not use virtio.
            "certs_share /etc/certs 9p version=9p2000.L 0 0",
            // The right share on another mount point.
            "certs_share /mnt/certs 9p trans=virtio 0 0",
            // Another source on the share's mount point.
            "/dev/vdb /etc/certs ext4 defaults 0 0",
            // Wrong type.
            "certs_share /etc/certs virtiofs defaults 0 0",
            // No options at all.
            "certs_share /etc/certs 9p",
        ];
        for bad in cases {
            let existing = format!("{ROOT_ENTRY}\n{bad}\n# tail\n{ENV_ENTRY}\n");
            let out = rewrite_fstab(&existing);
            assert_eq!(
                out,
                format!("{ROOT_ENTRY}\n{CERTS_ENTRY}\n# tail\n{ENV_ENTRY}\n"),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_trailing_slash_on_the_mount_point_is_the_same_mount() {
        let existing =
            format!("{ROOT_ENTRY}\ncerts_share /etc/certs/ 9p trans=virtio 0 0\n{ENV_ENTRY}\n");
        assert_eq!(rewrite_fstab(&existing), existing);
    }

    #[test]
    fn duplicate_entries_for_a_mount_are_dropped() {
        let existing = format!(
            "{ROOT_ENTRY}\n{CERTS_ENTRY}\ncerts_share /etc/certs 9p trans=virtio,cache=none 0 0\n{ENV_ENTRY}\n"
        );
        assert_eq!(
            rewrite_fstab(&existing),
            format!("{ROOT_ENTRY}\n{CERTS_ENTRY}\n{ENV_ENTRY}\n")
        );
    }

    #[test]
    fn a_root_that_is_not_the_verity_device_or_is_writable_is_replaced() {
        for root in [
            "/dev/sda2 / ext4 ro 0 1",
            "UUID=0f0e0d0c-0b0a-0908-0706-050403020100 / ext4 errors=remount-ro 0 1",
            "/dev/mapper/root_verity / ext4 rw 0 0",
            "/dev/mapper/root_verity / ext4 defaults 0 0",
            "/dev/mapper/root_verity / btrfs ro 0 0",
        ] {
            let existing = format!("# head\n{root}\n{CERTS_ENTRY}\n{ENV_ENTRY}\n");
            assert_eq!(
                rewrite_fstab(&existing),
                format!("# head\n{ROOT_ENTRY}\n{CERTS_ENTRY}\n{ENV_ENTRY}\n"),
                "{root}"
            );
        }
    }

    #[test]
    fn missing_final_newline_is_added() {
        let existing = format!("{ROOT_ENTRY}\n{CERTS_ENTRY}\n{ENV_ENTRY}");
        assert_eq!(rewrite_fstab(&existing), format!("{existing}\n"));
    }

    #[test]
    fn rewriting_is_idempotent() {
        for input in [
            "",
            SEED_FSTAB,
            "certs_share /x 9p trans=virtio 0 0\nfoo\n/dev/sda2 / ext4 rw 0 1\n",
            "# only a comment",
            "env_share /etc/cocos 9p trans=virtio 0 0\nenv_share /etc/cocos 9p 0 0\n",
        ] {
            let once = rewrite_fstab(input);
            assert_eq!(rewrite_fstab(&once), once, "{input:?}");
            let e = entries(&once);
            assert_eq!(e.iter().filter(|f| f[1] == "/").count(), 1, "{once}");
            assert_eq!(
                e.iter().filter(|f| f[0] == "certs_share").count(),
                1,
                "{once}"
            );
            assert_eq!(
                e.iter().filter(|f| f[0] == "env_share").count(),
                1,
                "{once}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_gets_exactly_one_of_each_entry_and_is_stable(
            lines in proptest::collection::vec(
                proptest::prop_oneof![
                    "[ -~]{0,40}",
                    "(certs_share|env_share|/dev/mapper/root_verity|/dev/sda2|#x) (/|/etc/certs|/etc/cocos|/mnt)/? (9p|ext4|tmpfs) (ro|rw|trans=virtio|defaults)(,[a-z=0-9.]{1,8})?( 0 0)?",
                ],
                0..8,
            )
        ) {
            let input = lines.join("\n");
            let once = rewrite_fstab(&input);
            proptest::prop_assert_eq!(rewrite_fstab(&once), once.clone());
            let e = entries(&once);
            proptest::prop_assert_eq!(e.iter().filter(|f| normalize(f[1]) == "/").count(), 1);
            proptest::prop_assert_eq!(e.iter().filter(|f| f[0] == "certs_share" || normalize(f[1]) == "/etc/certs").count(), 1);
            proptest::prop_assert_eq!(e.iter().filter(|f| f[0] == "env_share" || normalize(f[1]) == "/etc/cocos").count(), 1);
        }
    }
}
