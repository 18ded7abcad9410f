//! The whole job under QEMU: the agent image (`scripts/agent-image.sh`)
//! boots, takes a manifest from a host `cocos-cli cvms serve`, receives an
//! algorithm and a dataset from `cocos-cli` through the TLS ingress, runs
//! it, and hands back the result (`scripts/agent-run.sh` drives one
//! computation). Each algorithm type's result is checked against what the
//! test computes itself from the dataset, and read out of the zip by
//! Python's `zipfile`, not by our code.
//!
//! `#[ignore]`d like the boot tests: `scripts/test.sh` builds the image and
//! sets `COCOS_AGENT_E2E_DIR`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cocos_e2e::workspace;

/// The agent image under test; panics with instructions when missing.
fn agent_image() -> PathBuf {
    let dir = std::env::var_os("COCOS_AGENT_E2E_DIR")
        .map(PathBuf::from)
        .expect(
            "COCOS_AGENT_E2E_DIR is not set: build the image with scripts/agent-image.sh DIR \
             and set COCOS_AGENT_E2E_DIR=DIR (scripts/test.sh does both)",
        );
    assert!(
        dir.join("disk.img").is_file(),
        "{}: no disk.img; run scripts/agent-image.sh {}",
        dir.display(),
        dir.display()
    );
    dir
}

/// Runs one computation with `scripts/agent-run.sh`; returns the output
/// directory (kept in a temporary directory owned by the caller).
fn run_computation(tmp: &Path, algo: &Path, kind: &str, dataset: &Path, args: &[&str]) -> PathBuf {
    let out = tmp.join("out");
    let status = Command::new(workspace().join("scripts/agent-run.sh"))
        .arg(agent_image())
        .arg(&out)
        .arg(algo)
        .arg(kind)
        .arg(dataset)
        .args(args)
        .env("TIMEOUT", "900")
        .status()
        .unwrap();
    if !status.success() {
        for log in ["events.jsonl", "cvms.log", "serial.log"] {
            let text = std::fs::read_to_string(out.join(log)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!("--- {log} (last lines)");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        panic!("agent-run.sh {kind} failed: {status}");
    }
    out
}

/// The members of a zip, as Python's `zipfile` reads them.
fn unzip(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let script = "import json,sys,zipfile\n\
                  z=zipfile.ZipFile(sys.argv[1])\n\
                  print(json.dumps({n: list(z.read(n)) for n in z.namelist()}))";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3 (the zip reference) runs");
    assert!(
        out.status.success(),
        "zipfile refused {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let map: BTreeMap<String, Vec<u8>> = serde_json::from_slice(&out.stdout).unwrap();
    map
}

/// The event types the management service saw, in order.
fn event_types(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("events.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "agent_event")
        .filter_map(|v| v["event_type"].as_str().map(str::to_owned))
        .collect()
}

fn assert_ran_through_the_states(out: &Path) {
    let events = event_types(out);
    let order = [
        "ReceivingManifest",
        "ReceivingAlgorithm",
        "ReceivingData",
        "Running",
        "ConsumingResults",
    ];
    let mut at = 0;
    for e in &events {
        if at < order.len() && e == order[at] {
            at += 1;
        }
    }
    assert_eq!(at, order.len(), "states seen: {events:?}");
}

const DATASET: &str = "sepal,petal\n7.0,3.2\n6.4,3.2\n5.9,3.0\n";

#[test]
#[ignore = "boots the agent image under QEMU; run by scripts/test.sh"]
fn a_binary_algorithm_runs_to_its_result() {
    let tmp = tempfile::tempdir().unwrap();
    let algo = tmp.path().join("upper.sh");
    std::fs::write(
        &algo,
        "#!/bin/sh\nset -e\ntr a-z A-Z < datasets/iris.csv > results/upper.csv\necho \"$@\" > results/args.txt\n",
    )
    .unwrap();
    let dataset = tmp.path().join("iris.csv");
    std::fs::write(&dataset, DATASET).unwrap();
    let out = run_computation(tmp.path(), &algo, "bin", &dataset, &["one", "two"]);
    let files = unzip(&out.join("result.zip"));
    assert_eq!(files["upper.csv"], DATASET.to_uppercase().into_bytes());
    assert_eq!(files["args.txt"], b"one two\n");
    assert_ran_through_the_states(&out);
}

#[test]
#[ignore = "boots the agent image under QEMU; run by scripts/test.sh"]
fn a_python_algorithm_runs_to_its_result() {
    let tmp = tempfile::tempdir().unwrap();
    let algo = tmp.path().join("stats.py");
    std::fs::write(
        &algo,
        "import csv, os, sys\n\
         rows = list(csv.reader(open('datasets/iris.csv')))[1:]\n\
         total = sum(float(r[0]) for r in rows)\n\
         open('results/sum.txt', 'w').write(f'{total:.1f} {len(rows)} {sys.version_info[0]}\\n')\n",
    )
    .unwrap();
    let dataset = tmp.path().join("iris.csv");
    std::fs::write(&dataset, DATASET).unwrap();
    let out = run_computation(tmp.path(), &algo, "python", &dataset, &[]);
    let files = unzip(&out.join("result.zip"));
    // 7.0 + 6.4 + 5.9 over 3 rows, under Python 3.
    let expected: f64 = DATASET
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(
        String::from_utf8(files["sum.txt"].clone()).unwrap(),
        format!("{expected:.1} 3 3\n")
    );
    assert_ran_through_the_states(&out);
}

/// A WASI preview 1 module that copies /datasets/iris.csv to
/// /results/copy.csv (the runner preopens /datasets as fd 3 and /results as
/// fd 4).
const COPY_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "iris.csv")
  (data (i32.const 16) "copy.csv")
  (func $check (param i32)
    (if (local.get 0) (then (call $proc_exit (i32.add (i32.const 100) (local.get 0))))))
  (func (export "_start")
    (local $in i32) (local $out i32) (local $n i32)
    (call $check (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 8)
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 100)))
    (local.set $in (i32.load (i32.const 100)))
    (i32.store (i32.const 104) (i32.const 4096))
    (i32.store (i32.const 108) (i32.const 4096))
    (call $check (call $fd_read (local.get $in) (i32.const 104) (i32.const 1) (i32.const 112)))
    (local.set $n (i32.load (i32.const 112)))
    (call $check (call $path_open (i32.const 4) (i32.const 0) (i32.const 16) (i32.const 8)
      (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 100)))
    (local.set $out (i32.load (i32.const 100)))
    (i32.store (i32.const 104) (i32.const 4096))
    (i32.store (i32.const 108) (local.get $n))
    (call $check (call $fd_write (local.get $out) (i32.const 104) (i32.const 1) (i32.const 112)))))"#;

#[test]
#[ignore = "boots the agent image under QEMU; run by scripts/test.sh"]
fn a_wasm_module_runs_to_its_result() {
    let tmp = tempfile::tempdir().unwrap();
    let algo = tmp.path().join("copy.wasm");
    std::fs::write(&algo, wat::parse_str(COPY_WAT).unwrap()).unwrap();
    let dataset = tmp.path().join("iris.csv");
    std::fs::write(&dataset, DATASET).unwrap();
    let out = run_computation(tmp.path(), &algo, "wasm", &dataset, &[]);
    let files = unzip(&out.join("result.zip"));
    assert_eq!(files["copy.csv"], DATASET.as_bytes());
    assert_ran_through_the_states(&out);
}
