//! What the dynamic loader needs of an ELF file, and one section of a
//! kernel module; parsed with the `object` crate.
//!
//! Format: System V ABI, "Object Files" (section headers) and "Program
//! Loading and Dynamic Linking" (`PT_INTERP`, `PT_DYNAMIC`, `PT_LOAD`, the
//! `DT_*` tags). The dependencies are read the way `ld.so` reads them: from
//! the `PT_DYNAMIC` segment, with `DT_STRTAB` (a virtual address) mapped to
//! a file offset through the `PT_LOAD` segment holding it, so section
//! headers are not needed (stripped binaries may lack them).

use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader, SectionHeader};
use object::{Endianness, FileKind};
use thiserror::Error;

/// An ELF file that could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ElfError(pub String);

impl From<object::read::Error> for ElfError {
    fn from(e: object::read::Error) -> Self {
        ElfError(format!("malformed ELF file: {e}"))
    }
}

/// `e_type`, as far as the loader cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfType {
    /// `ET_EXEC`: a fixed-address executable.
    Executable,
    /// `ET_DYN`: a shared library or a position-independent executable.
    Shared,
    /// `ET_REL`: an object file (kernel modules are these).
    Relocatable,
    /// Anything else (core files, processor-specific types).
    Other,
}

/// The dynamic-linking facts of an ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicInfo {
    /// What kind of file.
    pub kind: ElfType,
    /// `ELFCLASS64`.
    pub class64: bool,
    /// `e_machine`.
    pub machine: u16,
    /// `PT_INTERP`: the program interpreter's path.
    pub interpreter: Option<String>,
    /// `DT_NEEDED`, in order.
    pub needed: Vec<String>,
    /// `DT_SONAME`.
    pub soname: Option<String>,
    /// `DT_RPATH` (colon-separated in the file; split here).
    pub rpath: Vec<String>,
    /// `DT_RUNPATH`, split.
    pub runpath: Vec<String>,
}

impl DynamicInfo {
    /// Whether the file is loaded by the dynamic loader (an interpreter or
    /// shared libraries to load): false for static executables.
    pub fn is_dynamic(&self) -> bool {
        self.interpreter.is_some() || !self.needed.is_empty()
    }
}

/// Whether `data` starts with the ELF magic (`\x7fELF`).
pub fn is_elf(data: &[u8]) -> bool {
    data.starts_with(&elf::ELFMAG)
}

/// Reads the interpreter and dynamic section of an ELF file.
pub fn dynamic_info(data: &[u8]) -> Result<DynamicInfo, ElfError> {
    match FileKind::parse(data)? {
        FileKind::Elf32 => dynamic_info_of::<elf::FileHeader32<Endianness>>(data),
        FileKind::Elf64 => dynamic_info_of::<elf::FileHeader64<Endianness>>(data),
        _ => Err(ElfError("not an ELF file".into())),
    }
}

/// The contents of the section called `name` (section headers are needed
/// here: kernel modules are relocatable files without segments). `None`
/// if there is no such section.
pub fn section_data<'a>(data: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, ElfError> {
    match FileKind::parse(data)? {
        FileKind::Elf32 => section_data_of::<elf::FileHeader32<Endianness>>(data, name),
        FileKind::Elf64 => section_data_of::<elf::FileHeader64<Endianness>>(data, name),
        _ => Err(ElfError("not an ELF file".into())),
    }
}

fn section_data_of<'a, Elf: FileHeader<Endian = Endianness>>(
    data: &'a [u8],
    name: &str,
) -> Result<Option<&'a [u8]>, ElfError> {
    let header = Elf::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    match sections.section_by_name(endian, name.as_bytes()) {
        Some((_, section)) => Ok(Some(section.data(endian, data)?)),
        None => Ok(None),
    }
}

fn text(bytes: &[u8], what: &str) -> Result<String, ElfError> {
    let s = std::str::from_utf8(bytes).map_err(|_| ElfError(format!("{what} is not UTF-8")))?;
    if s.is_empty() {
        return Err(ElfError(format!("empty {what}")));
    }
    Ok(s.to_owned())
}

fn dynamic_info_of<Elf: FileHeader<Endian = Endianness>>(
    data: &[u8],
) -> Result<DynamicInfo, ElfError> {
    let header = Elf::parse(data)?;
    let endian = header.endian()?;
    let kind = match header.e_type(endian) {
        elf::ET_EXEC => ElfType::Executable,
        elf::ET_DYN => ElfType::Shared,
        elf::ET_REL => ElfType::Relocatable,
        _ => ElfType::Other,
    };
    let mut info = DynamicInfo {
        kind,
        class64: header.is_class_64(),
        machine: header.e_machine(endian).0,
        interpreter: None,
        needed: Vec::new(),
        soname: None,
        rpath: Vec::new(),
        runpath: Vec::new(),
    };
    let segments = header.program_headers(endian, data)?;
    let mut dynamic = None;
    for segment in segments {
        if let Some(interp) = segment.interpreter(endian, data)? {
            info.interpreter = Some(text(interp, "PT_INTERP")?);
        }
        if let Some(d) = segment.dynamic(endian, data)? {
            dynamic = Some(d);
        }
    }
    let Some(dynamic) = dynamic else {
        return Ok(info);
    };
    // The entries up to DT_NULL (System V ABI: "DT_NULL marks the end of
    // the _DYNAMIC array").
    let entries: Vec<(elf::DynamicTag, u64)> = dynamic
        .iter()
        .map(|d| (d.d_tag(endian), d.d_val(endian).into()))
        .take_while(|(tag, _)| *tag != elf::DT_NULL)
        .collect();
    let value = |tag: elf::DynamicTag| entries.iter().find(|(t, _)| *t == tag).map(|e| e.1);
    let has_strings = entries.iter().any(|(t, _)| {
        [
            elf::DT_NEEDED,
            elf::DT_SONAME,
            elf::DT_RPATH,
            elf::DT_RUNPATH,
        ]
        .contains(t)
    });
    if !has_strings {
        return Ok(info);
    }
    let (Some(strtab), Some(strsz)) = (value(elf::DT_STRTAB), value(elf::DT_STRSZ)) else {
        return Err(ElfError(
            "dynamic section without DT_STRTAB/DT_STRSZ".into(),
        ));
    };
    // DT_STRTAB is an address: find the loaded bytes behind it.
    let table = segments
        .iter()
        .filter(|s| s.p_type(endian) == elf::PT_LOAD)
        .find_map(|s| {
            let vaddr: u64 = s.p_vaddr(endian).into();
            let filesz: u64 = s.p_filesz(endian).into();
            let offset: u64 = s.p_offset(endian).into();
            let within = strtab.checked_sub(vaddr)?;
            let end = within.checked_add(strsz)?;
            if end > filesz {
                return None;
            }
            let start = usize::try_from(offset.checked_add(within)?).ok()?;
            let len = usize::try_from(strsz).ok()?;
            data.get(start..start.checked_add(len)?)
        })
        .ok_or_else(|| ElfError("DT_STRTAB is not inside a loaded segment".into()))?;
    let string = |offset: u64, what: &str| -> Result<String, ElfError> {
        let start = usize::try_from(offset)
            .ok()
            .filter(|&s| s < table.len())
            .ok_or_else(|| ElfError(format!("{what} points outside the string table")))?;
        let rest = &table[start..];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| ElfError(format!("{what} is not NUL-terminated")))?;
        text(&rest[..end], what)
    };
    let split = |s: String| -> Vec<String> {
        s.split(':')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    };
    for &(tag, val) in &entries {
        match tag {
            elf::DT_NEEDED => info.needed.push(string(val, "DT_NEEDED")?),
            elf::DT_SONAME => info.soname = Some(string(val, "DT_SONAME")?),
            elf::DT_RPATH => info.rpath.extend(split(string(val, "DT_RPATH")?)),
            elf::DT_RUNPATH => info.runpath.extend(split(string(val, "DT_RUNPATH")?)),
            _ => {}
        }
    }
    Ok(info)
}

/// The Debian multiarch tuple of a machine (`/lib/<tuple>` is searched
/// first by Debian's loader), for the machines Debian builds.
pub fn multiarch_tuple(machine: u16, class64: bool) -> Option<&'static str> {
    match (elf::Machine(machine), class64) {
        (elf::EM_X86_64, true) => Some("x86_64-linux-gnu"),
        (elf::EM_AARCH64, true) => Some("aarch64-linux-gnu"),
        (elf::EM_386, false) => Some("i386-linux-gnu"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_elf_is_an_error_not_a_panic() {
        assert!(dynamic_info(b"#!/bin/sh\n").is_err());
        assert!(dynamic_info(b"\x7fELF").is_err());
        assert!(!is_elf(b"#!"));
        assert!(section_data(b"", ".modinfo").is_err());
    }
}
