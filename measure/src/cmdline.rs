//! The kernel command line: what cocos-init reads from `/proc/cmdline`,
//! and what a verifier reads from the GRUB configuration of an image
//! (`cocos-imgbuild inspect`). Both use this one parser, so the root hash a
//! verifier checks is the one the VM boots with, under the same rules
//! (case, duplicates, accepted lengths).
//!
//! | parameter | meaning |
//! | --- | --- |
//! | `roothash=<hex>` | dm-verity root hash of the root partition (required) |
//! | `cocos.debug=1` | after a failure, start `/bin/sh` instead of powering off |
//! | `cocos.disk=/dev/NAME` | only look for the partitions on this disk |
//! | `cocos.luks.cipher=<cipher-mode>` | LUKS2 cipher of `/cocos` (cryptsetup's `--cipher` form) |
//! | `cocos.luks.integrity=<mode>` | LUKS2 integrity of `/cocos` (`aead`, `hmac-sha256`, `none`, ...) |
//!
//! Everything else (`systemd.verity=0`, `console=`, ...) belongs to someone
//! else and is ignored. Words are split as the kernel's `next_arg()`
//! (`lib/cmdline.c`) does: on whitespace, with double quotes protecting
//! spaces and removed from the value. Parameters after a lone `--` are
//! arguments of init, not kernel parameters, and are ignored too.
//!
//! A parameter of ours given twice with different values is an error:
//! silently taking the first or the last would let whoever can append to
//! the command line choose.

use std::path::PathBuf;

use thiserror::Error;

/// Shortest accepted root hash in bytes (SHA-1).
const MIN_ROOT_HASH_BYTES: usize = 20;
/// Longest accepted root hash in bytes (SHA-512).
const MAX_ROOT_HASH_BYTES: usize = 64;

/// The parameters cocos-init takes from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParams {
    /// `roothash=`: the dm-verity root hash, as given (lower-case hex).
    pub root_hash_hex: String,
    /// The root hash bytes.
    pub root_hash: Vec<u8>,
    /// `cocos.debug=1`.
    pub debug: bool,
    /// `cocos.disk=`: the disk holding the partitions, when given.
    pub disk: Option<PathBuf>,
    /// `cocos.luks.cipher=`, when given.
    pub luks_cipher: Option<String>,
    /// `cocos.luks.integrity=`, when given.
    pub luks_integrity: Option<String>,
}

/// Why the command line cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CmdlineError {
    /// No `roothash=`.
    #[error("no roothash= on the kernel command line")]
    MissingRootHash,
    /// `roothash=` is not hex of a plausible length.
    #[error("roothash={value} is not {MIN_ROOT_HASH_BYTES} to {MAX_ROOT_HASH_BYTES} bytes of hex")]
    BadRootHash {
        /// The value given.
        value: String,
    },
    /// A parameter given twice with different values.
    #[error("{name}= is given twice with different values ({first:?} and {second:?})")]
    Conflict {
        /// The parameter.
        name: &'static str,
        /// The first value.
        first: String,
        /// The other value.
        second: String,
    },
    /// A value that is not allowed.
    #[error("{name}={value:?}: {reason}")]
    BadValue {
        /// The parameter.
        name: &'static str,
        /// The value given.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Splits a command line into `(name, value)` pairs as the kernel does:
/// whitespace separates words, double quotes keep spaces inside a word and
/// are removed, a word without `=` has no value. Stops at a lone `--`.
pub fn words(cmdline: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut chars = cmdline.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut in_quote = false;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() && !in_quote {
                break;
            }
            chars.next();
            if c == '"' {
                in_quote = !in_quote;
            } else {
                word.push(c);
            }
        }
        if word == "--" {
            break;
        }
        match word.split_once('=') {
            Some((name, value)) => out.push((name.to_owned(), Some(value.to_owned()))),
            None => out.push((word, None)),
        }
    }
    out
}

/// Whether the command line asks for the debug shell (`cocos.debug=1`).
/// Lenient on purpose: used after a failure, also when [`parse`] failed.
pub fn debug_requested(cmdline: &str) -> bool {
    words(cmdline)
        .iter()
        .any(|(name, value)| name == "cocos.debug" && value.as_deref() == Some("1"))
}

/// Parses the parameters of cocos-init from a kernel command line.
pub fn parse(cmdline: &str) -> Result<BootParams, CmdlineError> {
    let mut root_hash: Option<String> = None;
    let mut debug: Option<String> = None;
    let mut disk: Option<String> = None;
    let mut cipher: Option<String> = None;
    let mut integrity: Option<String> = None;
    for (name, value) in words(cmdline) {
        let (slot, name) = match name.as_str() {
            "roothash" => (&mut root_hash, "roothash"),
            "cocos.debug" => (&mut debug, "cocos.debug"),
            "cocos.disk" => (&mut disk, "cocos.disk"),
            "cocos.luks.cipher" => (&mut cipher, "cocos.luks.cipher"),
            "cocos.luks.integrity" => (&mut integrity, "cocos.luks.integrity"),
            _ => continue,
        };
        let value = value.unwrap_or_default();
        match slot {
            Some(first) if *first != value => {
                return Err(CmdlineError::Conflict {
                    name,
                    first: first.clone(),
                    second: value,
                });
            }
            _ => *slot = Some(value),
        }
    }

    let root_hash_hex = root_hash
        .ok_or(CmdlineError::MissingRootHash)?
        .to_ascii_lowercase();
    let bytes = match hex::decode(&root_hash_hex) {
        Ok(b) if (MIN_ROOT_HASH_BYTES..=MAX_ROOT_HASH_BYTES).contains(&b.len()) => b,
        _ => {
            return Err(CmdlineError::BadRootHash {
                value: root_hash_hex,
            });
        }
    };

    let debug = match debug.as_deref() {
        None | Some("0") => false,
        Some("1") => true,
        Some(other) => {
            return Err(CmdlineError::BadValue {
                name: "cocos.debug",
                value: other.to_owned(),
                reason: "must be 0 or 1",
            });
        }
    };

    let disk = match disk {
        None => None,
        Some(d) => {
            let name = d.strip_prefix("/dev/").unwrap_or_default();
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                return Err(CmdlineError::BadValue {
                    name: "cocos.disk",
                    value: d,
                    reason: "must be a disk under /dev, such as /dev/sda",
                });
            }
            Some(PathBuf::from(d))
        }
    };

    let nonempty = |name: &'static str, v: Option<String>| match v {
        Some(v) if v.is_empty() => Err(CmdlineError::BadValue {
            name,
            value: v,
            reason: "is empty",
        }),
        v => Ok(v),
    };

    Ok(BootParams {
        root_hash_hex,
        root_hash: bytes,
        debug,
        disk,
        luks_cipher: nonempty("cocos.luks.cipher", cipher)?,
        luks_integrity: nonempty("cocos.luks.integrity", integrity)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "1f4f7b353629fa1c793b02c8250121a77e607bb28edf8f192849986d70db97ea";

    #[test]
    fn image_command_line_gives_the_root_hash_and_nothing_else() {
        // The line cocos-imgbuild writes into the GRUB configuration.
        let line = format!(
            "BOOT_IMAGE=/bzImage roothash={HASH} systemd.verity=0 systemd.gpt_auto=0 console=ttyS0\n"
        );
        let p = parse(&line).unwrap();
        assert_eq!(p.root_hash_hex, HASH);
        assert_eq!(p.root_hash.len(), 32);
        assert_eq!(p.root_hash[..4], [0x1f, 0x4f, 0x7b, 0x35]);
        assert!(!p.debug);
        assert_eq!(p.disk, None);
        assert_eq!(p.luks_cipher, None);
        assert_eq!(p.luks_integrity, None);
    }

    #[test]
    fn every_option_is_read() {
        let line = format!(
            "roothash={} cocos.debug=1 cocos.disk=/dev/vdb cocos.luks.cipher=aes-xts-plain64 cocos.luks.integrity=none",
            HASH.to_uppercase()
        );
        let p = parse(&line).unwrap();
        assert_eq!(p.root_hash_hex, HASH, "hex is normalised to lower case");
        assert!(p.debug);
        assert_eq!(p.disk, Some(PathBuf::from("/dev/vdb")));
        assert_eq!(p.luks_cipher.as_deref(), Some("aes-xts-plain64"));
        assert_eq!(p.luks_integrity.as_deref(), Some("none"));
    }

    #[test]
    fn missing_root_hash_is_an_error() {
        assert_eq!(
            parse("console=ttyS0 quiet"),
            Err(CmdlineError::MissingRootHash)
        );
        // A word that merely contains the name does not count.
        assert_eq!(
            parse(&format!("xroothash={HASH}")),
            Err(CmdlineError::MissingRootHash)
        );
    }

    #[test]
    fn malformed_root_hashes_are_rejected() {
        for bad in [
            "",
            "xyz",
            "abc",                      // odd length
            &HASH[..38],                // 19 bytes: shorter than SHA-1
            &format!("{HASH}{HASH}00"), // 65 bytes: longer than SHA-512
        ] {
            let e = parse(&format!("roothash={bad}")).unwrap_err();
            assert!(
                matches!(e, CmdlineError::BadRootHash { .. }),
                "{bad:?} gave {e:?}"
            );
        }
        // A bare `roothash` word has an empty value.
        assert!(matches!(
            parse("roothash"),
            Err(CmdlineError::BadRootHash { .. })
        ));
    }

    #[test]
    fn sha1_and_sha512_lengths_are_accepted() {
        assert_eq!(
            parse(&format!("roothash={}", &HASH[..40]))
                .unwrap()
                .root_hash
                .len(),
            20
        );
        assert_eq!(
            parse(&format!("roothash={HASH}{HASH}"))
                .unwrap()
                .root_hash
                .len(),
            64
        );
    }

    #[test]
    fn conflicting_duplicates_are_rejected_and_identical_ones_accepted() {
        let other = HASH.replace('1', "2");
        let e = parse(&format!("roothash={HASH} quiet roothash={other}")).unwrap_err();
        assert_eq!(
            e,
            CmdlineError::Conflict {
                name: "roothash",
                first: HASH.into(),
                second: other
            }
        );
        assert!(parse(&format!("roothash={HASH} roothash={HASH}")).is_ok());
        assert!(matches!(
            parse(&format!("roothash={HASH} cocos.debug=0 cocos.debug=1")),
            Err(CmdlineError::Conflict {
                name: "cocos.debug",
                ..
            })
        ));
    }

    #[test]
    fn quotes_are_removed_as_the_kernel_does() {
        // lib/cmdline.c next_arg(): `name="value with spaces"` and
        // `"name=value"` both give the value without quotes.
        let w = words(r#"a="b c" "d=e f" g"#);
        assert_eq!(
            w,
            vec![
                ("a".into(), Some("b c".into())),
                ("d".into(), Some("e f".into())),
                ("g".into(), None),
            ]
        );
        let p = parse(&format!(r#"roothash="{HASH}""#)).unwrap();
        assert_eq!(p.root_hash_hex, HASH);
    }

    #[test]
    fn parameters_after_a_double_dash_belong_to_init() {
        assert_eq!(
            parse(&format!("quiet -- roothash={HASH}")),
            Err(CmdlineError::MissingRootHash)
        );
        assert!(!debug_requested("quiet -- cocos.debug=1"));
    }

    #[test]
    fn debug_values() {
        assert!(debug_requested("cocos.debug=1"));
        assert!(!debug_requested("cocos.debug=0"));
        assert!(!debug_requested("cocos.debug"));
        assert!(!debug_requested("cocos.debug=yes"));
        // Asked for even when the rest of the line is unusable.
        assert!(debug_requested("roothash=zz cocos.debug=1"));
        assert!(matches!(
            parse(&format!("roothash={HASH} cocos.debug=yes")),
            Err(CmdlineError::BadValue {
                name: "cocos.debug",
                ..
            })
        ));
    }

    #[test]
    fn disk_must_be_a_device_name() {
        for bad in [
            "sda",
            "/dev/",
            "/dev/../etc/passwd",
            "/dev/disk/by-id/x",
            "/tmp/sda",
        ] {
            assert!(
                matches!(
                    parse(&format!("roothash={HASH} cocos.disk={bad}")),
                    Err(CmdlineError::BadValue {
                        name: "cocos.disk",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        let p = parse(&format!("roothash={HASH} cocos.disk=/dev/nvme0n1")).unwrap();
        assert_eq!(p.disk, Some(PathBuf::from("/dev/nvme0n1")));
    }

    #[test]
    fn empty_luks_overrides_are_rejected() {
        assert!(matches!(
            parse(&format!("roothash={HASH} cocos.luks.cipher=")),
            Err(CmdlineError::BadValue {
                name: "cocos.luks.cipher",
                ..
            })
        ));
    }

    proptest::proptest! {
        #[test]
        fn parsing_any_line_never_panics_and_finds_a_given_hash(
            noise in "[ -~\t\n]{0,200}",
            hash in "[0-9a-f]{64}",
        ) {
            let _ = parse(&noise);
            let _ = debug_requested(&noise);
            // A well-formed roothash= word before arbitrary words that
            // are not ours (no `--`, no quotes, no parameter of ours).
            let tail: String = noise
                .split_whitespace()
                .filter(|w| !w.contains('"') && *w != "--" && !w.starts_with("roothash") && !w.starts_with("cocos."))
                .collect::<Vec<_>>()
                .join(" ");
            let p = parse(&format!("roothash={hash} {tail}")).unwrap();
            proptest::prop_assert_eq!(p.root_hash_hex, hash);
        }
    }
}
