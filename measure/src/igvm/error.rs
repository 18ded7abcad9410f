//! Why an IGVM file cannot be measured.

use thiserror::Error;

use super::Platform;

/// An IGVM file that cannot be measured (or signed).
#[derive(Debug, Error)]
pub enum IgvmError {
    /// The igvm crate rejects the file.
    #[error("not a valid IGVM file: {0}")]
    Parse(#[source] igvm::Error),
    /// The fixed header places the variable headers outside the file (the
    /// igvm crate 0.5.0 overflows or panics on such files instead of
    /// rejecting them, so they are refused before it sees them).
    #[error(
        "not a valid IGVM file: variable headers at offset {offset} with {size} bytes do not fit \
         in the {len}-byte file"
    )]
    VariableHeadersOutside {
        /// `variable_header_offset` of the fixed header.
        offset: u32,
        /// `variable_header_size` of the fixed header.
        size: u32,
        /// File length.
        len: usize,
    },
    /// The file has no platform header for the platform asked for.
    #[error("the file has no {} platform header", .0.name())]
    NoPlatform(Platform),
    /// A 2 MiB page carries less than 2 MiB of data.
    #[error(
        "malformed page data at GPA {gpa:#x}: flagged as a 2 MiB page but carries {len} bytes \
         (a 2 MiB page is either data-less or carries 2 MiB)"
    )]
    Malformed2mPage {
        /// GPA of the page.
        gpa: u64,
        /// Data bytes present.
        len: usize,
    },
    /// Page data larger than a page.
    #[error("page data at GPA {gpa:#x} has {len} bytes, more than one 4 KiB page")]
    PageDataTooLarge {
        /// GPA of the page.
        gpa: u64,
        /// Data bytes.
        len: usize,
    },
    /// A parameter insert names an area that was not declared before it.
    #[error("a parameter insert refers to parameter area {index}, which is not declared before it")]
    UnknownParameterArea {
        /// The area index.
        index: u32,
    },
    /// A parameter area too large to be real, or one that overflows the
    /// address space where it is inserted.
    #[error(
        "parameter area {index} has {size} bytes: too large to insert (limit 1 GiB, below 2^64)"
    )]
    ParameterAreaTooLarge {
        /// The area index.
        index: u32,
        /// Its size.
        size: u64,
    },
    /// igvmmeasure semantics: its parser (igvm 0.4.0) rejects a VMSA page
    /// with bytes set past the 0x670-byte save area.
    #[error(
        "the VMSA at GPA {gpa:#x} has non-zero bytes past offset 0x670; igvmmeasure (igvm 0.4.0) \
         rejects such a file (InvalidVmsa)"
    )]
    VmsaNonZeroTail {
        /// GPA of the VMSA.
        gpa: u64,
    },
    /// The igvm crate's measurement failed.
    #[error("the igvm crate cannot measure the file: {0}")]
    Crate(String),
    /// `--native-zero` is an igvmmeasure option the igvm crate does not have.
    #[error("--native-zero cannot be combined with the igvm crate's semantics")]
    NativeZeroWithCrate,
    /// Signing needs the SNP guest policy of the file.
    #[error("the file has no SNP guest policy, which the ID block must carry")]
    NoGuestPolicy,
    /// The file has no SNP ID block.
    #[error("the file has no SNP ID block for the SEV-SNP platform")]
    NoIdBlock,
    /// Serializing a new file failed.
    #[error("cannot write the IGVM file: {0}")]
    Serialize(#[source] igvm::Error),
}
