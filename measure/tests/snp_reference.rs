//! `cocos-measure snp` side by side with sev-snp-measure 0.0.13 (PyPI) on
//! random combinations: modes, vCPU counts and signatures, VMMs, guest
//! features, synthetic kernels and initrds, command lines (UTF-8 too), and
//! SVSM variable-store sizes. Both must print the same digest, or both
//! fail. Needs `scripts/setup-python-refs.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod refs;

use std::path::Path;
use std::process::Command;

use common::{cocos_measure, sev_snp_measure};
use proptest::prelude::*;
use refs::input;

#[derive(Debug, Clone)]
enum Vcpu {
    Type(&'static str),
    Sig(u32),
    Fms(u32, u32, u32),
}

#[derive(Debug, Clone)]
struct Case {
    mode: &'static str,
    vcpus: u32,
    vcpu: Vcpu,
    vmm: &'static str,
    ovmf: &'static str,
    guest_features: u64,
    /// Sizes and seeds of a synthetic kernel and initrd.
    kernel: Option<(usize, u8)>,
    initrd: Option<(usize, u8)>,
    append: Option<String>,
    vars_size: u64,
}

const TYPES: &[&str] = &[
    "EPYC",
    "EPYC-v1",
    "EPYC-v2",
    "EPYC-IBPB",
    "EPYC-v3",
    "EPYC-v4",
    "EPYC-Rome",
    "EPYC-Rome-v1",
    "EPYC-Rome-v2",
    "EPYC-Rome-v3",
    "EPYC-Milan",
    "EPYC-Milan-v1",
    "EPYC-Milan-v2",
    "EPYC-Genoa",
    "EPYC-Genoa-v1",
    "EPYC-Turin",
];

fn vcpu() -> impl Strategy<Value = Vcpu> {
    prop_oneof![
        3 => proptest::sample::select(TYPES).prop_map(Vcpu::Type),
        1 => (1u32..0x0fff_ffff).prop_map(Vcpu::Sig),
        1 => (1u32..40, 0u32..256, 0u32..16).prop_map(|(f, m, s)| Vcpu::Fms(f, m, s)),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let direct = (
        proptest::sample::select(&["snp", "snp", "seves", "sev"][..]),
        0u32..=24,
        vcpu(),
        proptest::sample::select(&["QEMU", "QEMU", "ec2", "gce"][..]),
        proptest::sample::select(&[0x1u64, 0x21, 0x0, 0x61, 0x5, 0xffff][..]),
        proptest::option::of((0usize..300_000, any::<u8>())),
        proptest::option::of((0usize..100_000, any::<u8>())),
        proptest::option::of("[ -~]{0,60}|[a-zé=ü☃ ]{1,20}"),
        proptest::sample::select(
            &[
                "fixtures/ovmf_AmdSev_suffix.bin",
                "debian/OVMF_CODE.fd",
                "fixtures/ovmf_OvmfX64_suffix.bin",
            ][..],
        ),
    )
        .prop_map(
            |(mode, vcpus, vcpu, vmm, gf, kernel, initrd, append, ovmf)| {
                // Only the AmdSev build takes a kernel.
                let amdsev = ovmf.contains("AmdSev");
                let kernel = if amdsev { kernel } else { None };
                Case {
                    mode,
                    vcpus,
                    vcpu,
                    vmm,
                    ovmf,
                    guest_features: gf,
                    initrd: if kernel.is_some() { initrd } else { None },
                    append: if kernel.is_some() { append } else { None },
                    kernel,
                    vars_size: 0,
                }
            },
        );
    let svsm = (1u32..=16, vcpu(), 1u64..=256).prop_map(|(vcpus, vcpu, pages)| Case {
        mode: "snp:svsm",
        vcpus,
        vcpu,
        vmm: "QEMU",
        ovmf: "fixtures/svsm_ovmf.fd",
        guest_features: 0x1,
        kernel: None,
        initrd: None,
        append: None,
        vars_size: pages * 4096,
    });
    prop_oneof![4 => direct, 1 => svsm]
}

fn synth(dir: &Path, name: &str, (len, seed): (usize, u8)) -> String {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path.display().to_string()
}

fn args(case: &Case, dir: &Path) -> Vec<String> {
    let mut a = vec![
        format!("--mode={}", case.mode),
        format!("--ovmf={}", input(case.ovmf).display()),
        format!("--vmm-type={}", case.vmm),
        format!("--guest-features={:#x}", case.guest_features),
    ];
    if case.mode != "sev" {
        a.push(format!("--vcpus={}", case.vcpus));
        match case.vcpu {
            Vcpu::Type(t) => a.push(format!("--vcpu-type={t}")),
            Vcpu::Sig(sig) => a.push(format!("--vcpu-sig={sig:#x}")),
            Vcpu::Fms(f, m, s) => a.extend([
                format!("--vcpu-family={f}"),
                format!("--vcpu-model={m}"),
                format!("--vcpu-stepping={s}"),
            ]),
        }
    }
    if let Some(k) = case.kernel {
        a.push(format!("--kernel={}", synth(dir, "kernel", k)));
    }
    if let Some(i) = case.initrd {
        a.push(format!("--initrd={}", synth(dir, "initrd", i)));
    }
    if let Some(cmd) = &case.append {
        a.push(format!("--append={cmd}"));
    }
    if case.mode == "snp:svsm" {
        a.push(format!("--svsm={}", input("fixtures/svsm.bin").display()));
        a.push(format!("--vars-size={}", case.vars_size));
    }
    a
}

fn run(mut cmd: Command) -> (bool, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn same_digest_as_sev_snp_measure() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    });
    let digests = std::cell::Cell::new(0u32);
    let result = runner.run(&case(), |case| {
        let dir = tempfile::tempdir().unwrap();
        let a = args(&case, dir.path());
        let mut reference = Command::new(sev_snp_measure());
        reference.args(&a).current_dir(dir.path());
        let mut ours = cocos_measure();
        ours.arg("snp").args(&a).current_dir(dir.path());
        let (ref_ok, ref_out, ref_err) = run(reference);
        let (our_ok, our_out, our_err) = run(ours);
        prop_assert_eq!(
            our_ok,
            ref_ok,
            "success differs for {:?}: ours {:?} {}, reference {:?} {}",
            a,
            our_out,
            our_err,
            ref_out,
            ref_err
        );
        if ref_ok {
            prop_assert!(
                ref_out.len() == 64 || ref_out.len() == 96,
                "reference printed {:?}",
                ref_out
            );
            digests.set(digests.get() + 1);
        }
        prop_assert_eq!(our_out, ref_out, "{:?}", a);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generator must mostly produce launches both tools accept.
    assert!(
        digests.get() >= 30,
        "only {} of 48 cases produced a digest",
        digests.get()
    );
}
