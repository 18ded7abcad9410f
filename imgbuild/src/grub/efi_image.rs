//! What a GRUB EFI image carries besides code: the embedded configuration
//! and the prefix, read from its `mods` section.
//!
//! `grub-mkimage -O x86_64-efi` appends the modules, the configuration
//! given with `-c` and the prefix given with `-p` to a PE section named
//! `mods`. At start-up GRUB finds that section by name
//! (`grub_efi_section_addr ("mods")`), walks the module headers between the
//! offsets of the section's info header, runs the **first** module of type
//! CONFIG as a script (up to its first NUL byte), and takes the first module
//! of type PREFIX as `$prefix`. Layout, from GRUB's `include/grub/kernel.h`:
//!
//! ```text
//! mods section:  grub_module_info64 { magic "mimg", padding, offset, size }
//!                at info + offset .. info + size:
//!                grub_module_header { type, size (header included) } + payload, ...
//! ```
//!
//! This reader is strict: a section that GRUB would walk differently (a
//! module size that is not a whole header, that runs past the end, a
//! configuration without its terminating NUL) is refused, because then
//! nobody can say what GRUB boots with.

use object::pe::{IMAGE_FILE_MACHINE_AMD64, ImageNtHeaders64};
use object::read::pe::PeFile;
use thiserror::Error;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The PE section GRUB keeps its modules in.
pub const MODS_SECTION: &str = "mods";
/// `GRUB_MODULE_MAGIC`: "mimg" read as a little-endian u32.
pub const MODULE_MAGIC: u32 = 0x676d_696d;

/// `struct grub_module_info64` (`include/grub/kernel.h`): the header at the
/// start of the `mods` section.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawModuleInfo64 {
    /// [`MODULE_MAGIC`].
    pub magic: U32,
    /// Zero; aligns the 64-bit fields.
    pub padding: U32,
    /// Offset of the first module header from the start of this header.
    pub offset: U64,
    /// Offset of the end of the last module from the start of this header
    /// ("the size of all modules plus this header").
    pub size: U64,
}
const _: () = assert!(size_of::<RawModuleInfo64>() == 24);

/// `struct grub_module_header` (`include/grub/kernel.h`): precedes each
/// module's payload.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawModuleHeader {
    /// The module type ([`ModuleType`]).
    pub kind: U32,
    /// Bytes of this header and the payload together (grub-mkimage pads
    /// the payload to a multiple of 4).
    pub size: U32,
}
const _: () = assert!(size_of::<RawModuleHeader>() == 8);

/// The module types of `include/grub/kernel.h` (`OBJ_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleType {
    /// `OBJ_TYPE_ELF` (0): a GRUB module (`linux.mod`, `fat.mod`, ...).
    Elf,
    /// `OBJ_TYPE_MEMDISK` (1): a memdisk image (`grub-mkimage -m`).
    Memdisk,
    /// `OBJ_TYPE_CONFIG` (2): the embedded configuration (`-c`).
    Config,
    /// `OBJ_TYPE_PREFIX` (3): `$prefix` (`-p`).
    Prefix,
    /// Any other type (public keys, device trees, newer flags).
    Other(u32),
}

impl From<u32> for ModuleType {
    fn from(v: u32) -> Self {
        match v {
            0 => ModuleType::Elf,
            1 => ModuleType::Memdisk,
            2 => ModuleType::Config,
            3 => ModuleType::Prefix,
            other => ModuleType::Other(other),
        }
    }
}

/// Why a file is not a GRUB EFI image this reader can vouch for.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GrubImageError {
    /// Not a 64-bit PE image.
    #[error("not an x86-64 PE/COFF image: {0}")]
    NotPe(String),
    /// A PE image without the `mods` section: not made by grub-mkimage.
    #[error("no {MODS_SECTION:?} section: not a GRUB image made by grub-mkimage")]
    NoModsSection,
    /// The `mods` section does not start with the module info header.
    #[error("the {MODS_SECTION:?} section does not start with GRUB's module magic")]
    BadMagic,
    /// The module info header's offsets do not fit the section.
    #[error(
        "the module area {offset}..{end} does not fit the {section_len}-byte {MODS_SECTION:?} section"
    )]
    BadModuleArea {
        /// `offset` of the info header.
        offset: u64,
        /// `size` of the info header.
        end: u64,
        /// Bytes of the section in the file.
        section_len: usize,
    },
    /// A module header whose size GRUB would walk differently.
    #[error(
        "module {index} at offset {at} has size {size}, which is not a header plus a payload inside the module area"
    )]
    BadModuleSize {
        /// 0-based index of the module.
        index: usize,
        /// Offset of its header in the section.
        at: usize,
        /// The size it claims.
        size: u32,
    },
    /// A configuration or prefix without its terminating NUL.
    #[error("the embedded {what} has no terminating NUL byte")]
    Unterminated {
        /// "configuration" or "prefix".
        what: &'static str,
    },
    /// A configuration or prefix that is not UTF-8 text.
    #[error("the embedded {what} is not UTF-8 text")]
    NotText {
        /// "configuration" or "prefix".
        what: &'static str,
    },
}

/// What a GRUB EFI image carries that decides how it boots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrubImage {
    /// The first embedded configuration (what GRUB runs before normal
    /// mode), without its NUL; `None` when the image has none.
    pub config: Option<String>,
    /// Further configuration modules, which GRUB ignores.
    pub ignored_configs: usize,
    /// The embedded prefix (`-p`), when there is one.
    pub prefix: Option<String>,
    /// Number of GRUB modules (ELF objects) built in.
    pub elf_modules: usize,
}

impl GrubImage {
    /// Reads the `mods` section of a GRUB EFI image.
    pub fn parse(pe: &[u8]) -> Result<Self, GrubImageError> {
        let file = PeFile::<ImageNtHeaders64>::parse(pe)
            .map_err(|e| GrubImageError::NotPe(e.to_string()))?;
        let machine = file
            .nt_headers()
            .file_header
            .machine
            .get(object::LittleEndian);
        if machine != IMAGE_FILE_MACHINE_AMD64 {
            return Err(GrubImageError::NotPe(format!(
                "machine type {machine:#06x}, not x86-64"
            )));
        }
        let section = file
            .section_table()
            .iter()
            .find(|s| s.raw_name() == MODS_SECTION.as_bytes())
            .ok_or(GrubImageError::NoModsSection)?;
        let data = section
            .pe_data(pe)
            .map_err(|e| GrubImageError::NotPe(e.to_string()))?;
        Self::parse_mods_section(data)
    }

    /// Reads the contents of a `mods` section.
    pub fn parse_mods_section(section: &[u8]) -> Result<Self, GrubImageError> {
        let (info, _) =
            RawModuleInfo64::read_from_prefix(section).map_err(|_| GrubImageError::BadMagic)?;
        if info.magic.get() != MODULE_MAGIC {
            return Err(GrubImageError::BadMagic);
        }
        let (offset, end) = (info.offset.get(), info.size.get());
        let area_ok = offset >= size_of::<RawModuleInfo64>() as u64
            && offset <= end
            && end <= section.len() as u64;
        if !area_ok {
            return Err(GrubImageError::BadModuleArea {
                offset,
                end,
                section_len: section.len(),
            });
        }
        // Both fit in the section's length, a usize.
        let (mut at, end) = (offset as usize, end as usize);
        let mut image = GrubImage::default();
        let mut index = 0;
        while at < end {
            let header = section
                .get(at..end)
                .and_then(|rest| RawModuleHeader::read_from_prefix(rest).ok())
                .map(|(h, _)| h);
            let size = header.as_ref().map_or(0, |h| h.size.get());
            let next = at.checked_add(size as usize);
            let (Some(header), Some(next)) = (header, next) else {
                return Err(GrubImageError::BadModuleSize { index, at, size });
            };
            if (size as usize) < size_of::<RawModuleHeader>() || next > end {
                return Err(GrubImageError::BadModuleSize { index, at, size });
            }
            let payload = &section[at + size_of::<RawModuleHeader>()..next];
            match ModuleType::from(header.kind.get()) {
                ModuleType::Config if image.config.is_none() => {
                    image.config = Some(c_string(payload, "configuration")?);
                }
                ModuleType::Config => image.ignored_configs += 1,
                ModuleType::Prefix if image.prefix.is_none() => {
                    image.prefix = Some(c_string(payload, "prefix")?);
                }
                ModuleType::Elf => image.elf_modules += 1,
                _ => {}
            }
            at = next;
            index += 1;
        }
        Ok(image)
    }
}

/// The text before the first NUL of a payload, as GRUB reads it.
fn c_string(payload: &[u8], what: &'static str) -> Result<String, GrubImageError> {
    let len = payload
        .iter()
        .position(|&b| b == 0)
        .ok_or(GrubImageError::Unterminated { what })?;
    String::from_utf8(payload[..len].to_vec()).map_err(|_| GrubImageError::NotText { what })
}

/// Where GRUB reads its configuration when none is embedded: normal mode
/// reads `$prefix/grub.cfg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigFile {
    /// A path on the partition GRUB was loaded from (the ESP), without a
    /// leading slash, e.g. `EFI/BOOT/grub.cfg`.
    OnEsp(String),
    /// The prefix names a device (`(hd0,gpt2)/boot/grub`): a file that
    /// may not be on the ESP at all.
    OnDevice {
        /// The prefix as embedded.
        prefix: String,
    },
}

/// The configuration file GRUB's normal mode reads: `$prefix/grub.cfg`.
///
/// Without an embedded prefix, GRUB takes the directory it was loaded
/// from; `image_dir` is that directory on the ESP (`EFI/BOOT` for the
/// removable-media path). A prefix without a device part is a path on the
/// boot partition.
pub fn config_file(prefix: Option<&str>, image_dir: &str) -> ConfigFile {
    let dir = match prefix {
        Some(p) if p.starts_with('(') => {
            return ConfigFile::OnDevice { prefix: p.into() };
        }
        Some(p) => p,
        None => image_dir,
    };
    let dir = dir.trim_matches('/');
    ConfigFile::OnEsp(if dir.is_empty() {
        "grub.cfg".into()
    } else {
        format!("{dir}/grub.cfg")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `mods` section as grub-mkimage lays it out (kernel.h): info
    /// header, then modules with sizes padded to 4.
    fn section(modules: &[(u32, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, payload) in modules {
            let padded = payload.len().div_ceil(4) * 4;
            body.extend_from_slice(&kind.to_le_bytes());
            body.extend_from_slice(&((8 + padded) as u32).to_le_bytes());
            body.extend_from_slice(payload);
            body.resize(body.len() + padded - payload.len(), 0);
        }
        let mut s = Vec::new();
        s.extend_from_slice(b"mimg");
        s.extend_from_slice(&[0; 4]);
        s.extend_from_slice(&24u64.to_le_bytes());
        s.extend_from_slice(&(24 + body.len() as u64).to_le_bytes());
        s.extend_from_slice(&body);
        s.resize(s.len() + 512, 0); // section padding after the modules
        s
    }

    #[test]
    fn first_config_and_prefix_are_taken() {
        let s = section(&[
            (0, b"\x7fELF...."),
            (2, b"linux /k a=1\nboot\n\0"),
            (2, b"linux /k a=2\n\0"),
            (3, b"/EFI/BOOT\0"),
        ]);
        let img = GrubImage::parse_mods_section(&s).unwrap();
        assert_eq!(img.config.as_deref(), Some("linux /k a=1\nboot\n"));
        assert_eq!(img.ignored_configs, 1);
        assert_eq!(img.prefix.as_deref(), Some("/EFI/BOOT"));
        assert_eq!(img.elf_modules, 1);
    }

    #[test]
    fn text_after_the_nul_is_not_part_of_the_config() {
        let s = section(&[(2, b"boot\n\0linux /evil\n\0")]);
        let img = GrubImage::parse_mods_section(&s).unwrap();
        assert_eq!(img.config.as_deref(), Some("boot\n"));
    }

    #[test]
    fn malformed_sections_are_refused() {
        let good = section(&[(2, b"boot\n\0")]);
        let mut bad_magic = good.clone();
        bad_magic[0] = b'x';
        assert_eq!(
            GrubImage::parse_mods_section(&bad_magic),
            Err(GrubImageError::BadMagic)
        );
        // A module size of zero would make GRUB loop on the same header.
        let mut zero = good.clone();
        zero[28..32].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            GrubImage::parse_mods_section(&zero),
            Err(GrubImageError::BadModuleSize { size: 0, .. })
        ));
        // A module running past the area.
        let mut long = good.clone();
        long[28..32].copy_from_slice(&4096u32.to_le_bytes());
        assert!(matches!(
            GrubImage::parse_mods_section(&long),
            Err(GrubImageError::BadModuleSize { size: 4096, .. })
        ));
        // An area past the section.
        let mut area = good.clone();
        area[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(
            GrubImage::parse_mods_section(&area),
            Err(GrubImageError::BadModuleArea { .. })
        ));
        // A configuration without its NUL.
        let s = section(&[(2, b"boot")]);
        assert_eq!(
            GrubImage::parse_mods_section(&s),
            Err(GrubImageError::Unterminated {
                what: "configuration"
            })
        );
        assert!(GrubImage::parse_mods_section(&[]).is_err());
    }

    #[test]
    fn config_file_follows_the_prefix() {
        assert_eq!(
            config_file(Some("/EFI/BOOT"), "EFI/BOOT"),
            ConfigFile::OnEsp("EFI/BOOT/grub.cfg".into())
        );
        assert_eq!(
            config_file(Some("/EFI/debian/"), "EFI/BOOT"),
            ConfigFile::OnEsp("EFI/debian/grub.cfg".into())
        );
        assert_eq!(
            config_file(None, "EFI/BOOT"),
            ConfigFile::OnEsp("EFI/BOOT/grub.cfg".into())
        );
        assert_eq!(
            config_file(Some("(hd0,gpt2)/boot/grub"), "EFI/BOOT"),
            ConfigFile::OnDevice {
                prefix: "(hd0,gpt2)/boot/grub".into()
            }
        );
    }
}
