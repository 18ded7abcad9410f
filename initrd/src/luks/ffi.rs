//! The one libcryptsetup call its Rust bindings cannot make: `crypt_format`
//! for LUKS2 with integrity parameters, to size the dm-integrity journal.
//!
//! libcryptsetup-rs always passes the integrity parameters' three names
//! (`integrity`, `journal_integrity`, `journal_crypt`) as C strings, empty
//! or not, and libcryptsetup refuses any of them next to LUKS2 integrity
//! (`-EINVAL`, `-ENOTSUP`: `LUKS2_check_encryption_params` in
//! `lib/setup.c`). So this module fills the C structures itself, with those
//! names NULL, and hands the device back to the safe bindings for the rest
//! (keyslot, activation, freeing). The unsafe surface is two calls:
//! `crypt_init` and `crypt_format`.
#![allow(unsafe_code)]

use std::ffi::{CString, c_char, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

use libcryptsetup_rs::consts::vals::{KeyslotsSize, MetadataSize};
use libcryptsetup_rs::{CryptDevice, LibcryptErr};
use libcryptsetup_rs_sys as sys;

/// What [`format_luks2`] writes. Every string is checked for NUL bytes
/// before any call.
pub(super) struct Luks2Format<'a> {
    /// Cipher name (`aes`).
    pub cipher: &'a str,
    /// Cipher mode (`gcm-random`).
    pub mode: &'a str,
    /// The volume key.
    pub volume_key: &'a [u8],
    /// Integrity in libcryptsetup's form (`aead`), or none.
    pub integrity: Option<&'a str>,
    /// Size of the dm-integrity journal in bytes (with integrity only).
    pub journal_bytes: u64,
    /// Encryption sector size.
    pub sector_size: u32,
    /// LUKS2 label.
    pub label: &'a str,
    /// Binary header size (each of the two copies).
    pub metadata: MetadataSize,
    /// Keyslots area size.
    pub keyslots: KeyslotsSize,
    /// PBKDF2 hash of the keyslot.
    pub pbkdf2_hash: &'a str,
    /// PBKDF2 iterations of the keyslot.
    pub pbkdf2_iterations: u32,
}

/// A failed step: what was being done and libcryptsetup's error.
pub(super) type StepError = (&'static str, LibcryptErr);

fn c_string(what: &'static str, s: &[u8]) -> Result<CString, StepError> {
    CString::new(s).map_err(|e| (what, LibcryptErr::NullError(e)))
}

/// Maps a negative errno return of libcryptsetup.
fn check(action: &'static str, rc: i32) -> Result<(), StepError> {
    if rc < 0 {
        Err((
            action,
            LibcryptErr::IOError(std::io::Error::from_raw_os_error(-rc)),
        ))
    } else {
        Ok(())
    }
}

/// Opens `device` and formats it as LUKS2 with `f`, returning the device
/// context with the new header loaded (no keyslot yet).
pub(super) fn format_luks2(device: &Path, f: &Luks2Format<'_>) -> Result<CryptDevice, StepError> {
    let path = c_string("open", device.as_os_str().as_bytes())?;
    let cipher = c_string("format", f.cipher.as_bytes())?;
    let mode = c_string("format", f.mode.as_bytes())?;
    let label = c_string("format", f.label.as_bytes())?;
    let hash = c_string("format", f.pbkdf2_hash.as_bytes())?;
    let integrity = match f.integrity {
        Some(i) => Some(c_string("format", i.as_bytes())?),
        None => None,
    };

    let mut raw: *mut sys::crypt_device = ptr::null_mut();
    // SAFETY: `raw` is a valid place for the out pointer and `path` a
    // NUL-terminated string that outlives the call (libcryptsetup copies it).
    check("open", unsafe { sys::crypt_init(&mut raw, path.as_ptr()) })?;
    // From here the safe wrapper owns the context and frees it on every
    // path (its Drop calls crypt_free); `raw` stays valid while `cd` lives.
    let mut cd = CryptDevice::from_ptr(raw);
    cd.settings_handle()
        .set_metadata_size(f.metadata, f.keyslots)
        .map_err(|e| ("size the header of", e))?;

    let pbkdf = sys::crypt_pbkdf_type {
        type_: sys::CRYPT_KDF_PBKDF2.as_ptr().cast::<c_char>(),
        hash: hash.as_ptr(),
        time_ms: 0,
        iterations: f.pbkdf2_iterations,
        max_memory_kb: 0,
        parallel_threads: 0,
        flags: sys::CRYPT_PBKDF_NO_BENCHMARK,
    };
    // Only the journal size is set: every name NULL (see the module
    // comment), every other number 0 for libcryptsetup's and the kernel's
    // defaults.
    let integrity_params = sys::crypt_params_integrity {
        journal_size: f.journal_bytes,
        journal_watermark: 0,
        journal_commit_time: 0,
        interleave_sectors: 0,
        tag_size: 0,
        sector_size: 0,
        buffer_sectors: 0,
        integrity: ptr::null(),
        integrity_key_size: 0,
        journal_integrity: ptr::null(),
        journal_integrity_key: ptr::null(),
        journal_integrity_key_size: 0,
        journal_crypt: ptr::null(),
        journal_crypt_key: ptr::null(),
        journal_crypt_key_size: 0,
    };
    let mut params = sys::crypt_params_luks2 {
        pbkdf: &pbkdf,
        integrity: integrity.as_ref().map_or(ptr::null(), |i| i.as_ptr()),
        integrity_params: if integrity.is_some() {
            &integrity_params
        } else {
            ptr::null()
        },
        data_alignment: 0,
        data_device: ptr::null(),
        sector_size: f.sector_size,
        label: label.as_ptr(),
        subsystem: ptr::null(),
    };
    // SAFETY: `raw` is the live context owned by `cd`. Every pointer in
    // `params` (and `pbkdf`, `integrity_params`) points to a local or a
    // CString above, all of which outlive the call; libcryptsetup copies
    // what it keeps. The volume key pointer and length come from one slice.
    // The type constant is NUL-terminated.
    let rc = unsafe {
        sys::crypt_format(
            raw,
            sys::CRYPT_LUKS2.as_ptr().cast::<c_char>(),
            cipher.as_ptr(),
            mode.as_ptr(),
            ptr::null(),
            f.volume_key.as_ptr().cast::<c_char>(),
            f.volume_key.len(),
            (&mut params as *mut sys::crypt_params_luks2).cast::<c_void>(),
        )
    };
    check("format", rc)?;
    Ok(cd)
}
