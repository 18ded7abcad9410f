//! vCPU signatures: the CPUID family/model/stepping value QEMU puts in RDX
//! of every vCPU at reset, and so in every VMSA it measures.
//!
//! Source: AMD *CPUID Specification* (publication 25481), "CPUID
//! Fn0000_0001_EAX Family, Model, Stepping Identifiers"; the CPU models are
//! QEMU's `builtin_x86_defs` (the names sev-snp-measure accepts).

/// The CPUID Fn0000_0001_EAX signature of `family`/`model`/`stepping`:
/// families above 0xF are encoded as 0xF plus an extended family.
pub fn cpu_signature(family: u32, model: u32, stepping: u32) -> u32 {
    let (family_low, family_high) = if family > 0xf {
        (0xf, (family - 0xf) & 0xff)
    } else {
        (family, 0)
    };
    let model_low = model & 0xf;
    let model_high = (model >> 4) & 0xf;
    let stepping_low = stepping & 0xf;
    (family_high << 20) | (model_high << 16) | (family_low << 8) | (model_low << 4) | stepping_low
}

/// QEMU CPU models and their (family, model, stepping).
pub const CPU_MODELS: &[(&str, (u32, u32, u32))] = &[
    ("EPYC", (23, 1, 2)),
    ("EPYC-v1", (23, 1, 2)),
    ("EPYC-v2", (23, 1, 2)),
    ("EPYC-IBPB", (23, 1, 2)),
    ("EPYC-v3", (23, 1, 2)),
    ("EPYC-v4", (23, 1, 2)),
    ("EPYC-Rome", (23, 49, 0)),
    ("EPYC-Rome-v1", (23, 49, 0)),
    ("EPYC-Rome-v2", (23, 49, 0)),
    ("EPYC-Rome-v3", (23, 49, 0)),
    ("EPYC-Milan", (25, 1, 1)),
    ("EPYC-Milan-v1", (25, 1, 1)),
    ("EPYC-Milan-v2", (25, 1, 1)),
    ("EPYC-Genoa", (25, 17, 0)),
    ("EPYC-Genoa-v1", (25, 17, 0)),
    ("EPYC-Turin", (26, 0, 0)),
];

/// The signature of a QEMU CPU model, by its exact name.
pub fn model_signature(name: &str) -> Option<u32> {
    CPU_MODELS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, (f, m, s))| cpu_signature(*f, *m, *s))
}

/// The names [`model_signature`] accepts.
pub fn model_names() -> impl Iterator<Item = &'static str> {
    CPU_MODELS.iter().map(|(n, _)| *n)
}
