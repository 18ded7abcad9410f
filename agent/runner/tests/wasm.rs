//! `wasm` algorithms: WASI preview 1 modules built from WAT. Results from a
//! dataset, argv, time, memory and output limits, proc_exit, read-only
//! datasets, Stop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cocos_runner::{RunnerConfig, WasmLimits};
use common::{Fixture, SERIAL};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The WASI imports the modules use (wasi_snapshot_preview1 signatures).
const IMPORTS: &str = r#"
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
"#;

/// WASI: preopened directories are fds 3, 4, ... in order: the runner
/// preopens /datasets (3) then /results (4). Rights: FD_READ = 1<<1,
/// FD_WRITE = 1<<6. Oflags: CREAT = 1, TRUNC = 8.
fn module(body: &str) -> Vec<u8> {
    let text = format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (data (i32.const 0) "input.txt")
  (data (i32.const 16) "out.txt")
  (data (i32.const 32) "new.txt")
  (data (i32.const 48) "failing now\n")
  ;; a non-zero WASI errno ends the module with status 100 + errno
  (func $check (param i32)
    (if (local.get 0) (then (call $proc_exit (i32.add (i32.const 100) (local.get 0))))))
  {body})"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("WAT: {e}\n{text}"))
}

/// Reads datasets/input.txt, writes it to results/out.txt, and writes its
/// argv buffer (NUL-separated arguments) to stdout.
fn copy_module() -> Vec<u8> {
    module(
        r#"(func (export "_start")
    (local $in i32) (local $out i32) (local $n i32)
    (call $check (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 9)
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 100)))
    (local.set $in (i32.load (i32.const 100)))
    (i32.store (i32.const 104) (i32.const 4096))
    (i32.store (i32.const 108) (i32.const 4096))
    (call $check (call $fd_read (local.get $in) (i32.const 104) (i32.const 1) (i32.const 112)))
    (local.set $n (i32.load (i32.const 112)))
    (call $check (call $path_open (i32.const 4) (i32.const 0) (i32.const 16) (i32.const 7)
      (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 100)))
    (local.set $out (i32.load (i32.const 100)))
    (i32.store (i32.const 104) (i32.const 4096))
    (i32.store (i32.const 108) (local.get $n))
    (call $check (call $fd_write (local.get $out) (i32.const 104) (i32.const 1) (i32.const 112)))
    (call $check (call $args_sizes_get (i32.const 120) (i32.const 124)))
    (call $check (call $args_get (i32.const 200) (i32.const 1000)))
    (i32.store (i32.const 104) (i32.const 1000))
    (i32.store (i32.const 108) (i32.load (i32.const 124)))
    (call $check (call $fd_write (i32.const 1) (i32.const 104) (i32.const 1) (i32.const 112))))"#,
    )
}

fn write_module(fx: &Fixture, bytes: &[u8]) -> PathBuf {
    fx.write_algorithm("algo.wasm", bytes)
}

fn config(fx: &Fixture, wasm: WasmLimits) -> RunnerConfig {
    RunnerConfig {
        wasm,
        ..fx.config()
    }
}

#[tokio::test]
async fn a_module_reads_a_dataset_and_writes_a_result() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    fx.dataset("input.txt", b"sepal,petal\n7.0,3.2\n");
    let algo = write_module(&fx, &copy_module());
    let runner = fx.runner(fx.config());
    let resp = runner
        .run(fx.request("w", "wasm", &algo, &["x", "y z"]))
        .await
        .unwrap();
    assert_eq!(resp.error, "");
    assert_eq!(resp.exit_code, 0);
    assert_eq!(
        std::fs::read(fx.results().join("out.txt")).unwrap(),
        b"sepal,petal\n7.0,3.2\n"
    );
    assert_eq!(fx.sink.stdout("w"), b"algo\0x\0y z\0");
}

#[tokio::test]
async fn proc_exit_1_is_an_error_with_stderr() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let algo = write_module(
        &fx,
        &module(
            r#"(func (export "_start")
    (i32.store (i32.const 104) (i32.const 48))
    (i32.store (i32.const 108) (i32.const 12))
    (drop (call $fd_write (i32.const 2) (i32.const 104) (i32.const 1) (i32.const 112)))
    (call $proc_exit (i32.const 1)))"#,
        ),
    );
    let runner = fx.runner(fx.config());
    let resp = runner
        .run(fx.request("w", "wasm", &algo, &[]))
        .await
        .unwrap();
    assert_eq!(resp.exit_code, 1);
    assert_eq!(resp.error, "algorithm exited with status 1: failing now");
    assert_eq!(fx.stderr("w"), "failing now\n");
}

#[tokio::test]
async fn proc_exit_0_is_success() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let algo = write_module(
        &fx,
        &module(r#"(func (export "_start") (call $proc_exit (i32.const 0)))"#),
    );
    let runner = fx.runner(fx.config());
    let resp = runner
        .run(fx.request("w", "wasm", &algo, &[]))
        .await
        .unwrap();
    assert_eq!(resp.error, "");
    assert_eq!(resp.exit_code, 0);
}

#[tokio::test]
async fn an_endless_loop_hits_the_time_limit() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let algo = write_module(
        &fx,
        &module(r#"(func (export "_start") (loop $l (br $l)))"#),
    );
    let runner = fx.runner(config(
        &fx,
        WasmLimits {
            max_time_secs: Some(1),
            ..WasmLimits::default()
        },
    ));
    let started = Instant::now();
    let resp = runner
        .run(fx.request("w", "wasm", &algo, &[]))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(resp.error, "algorithm timed out after 1 s");
    assert_eq!(resp.exit_code, -1);
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[tokio::test]
async fn stop_ends_an_endless_loop() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let algo = write_module(
        &fx,
        &module(r#"(func (export "_start") (loop $l (br $l)))"#),
    );
    let runner = fx.runner(fx.config());
    let run = {
        let runner = runner.clone();
        let req = fx.request("w", "wasm", &algo, &[]);
        tokio::spawn(async move { runner.run(req).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    assert!(runner.stop("w").await);
    assert!(started.elapsed() < Duration::from_secs(5));
    let resp = run.await.unwrap().unwrap();
    assert_eq!(resp.error, "computation stopped");
}

#[tokio::test]
async fn growing_memory_past_the_cap_ends_the_run() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    // Grows by 16 pages (1 MiB) at a time, forever; memory.grow returning
    // -1 would loop until the time limit instead.
    let algo = write_module(
        &fx,
        &module(
            r#"(func (export "_start") (loop $l (drop (memory.grow (i32.const 16))) (br $l)))"#,
        ),
    );
    let runner = fx.runner(config(
        &fx,
        WasmLimits {
            max_memory_bytes: 4 << 20,
            max_time_secs: Some(20),
            ..WasmLimits::default()
        },
    ));
    let resp = runner
        .run(fx.request("w", "wasm", &algo, &[]))
        .await
        .unwrap();
    assert_eq!(resp.error, "wasm memory limit of 4194304 bytes exceeded");
    assert_eq!(resp.exit_code, -1);
}

#[tokio::test]
async fn an_initial_memory_past_the_cap_is_refused() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let text = r#"(module (memory (export "memory") 100) (func (export "_start")))"#;
    let algo = write_module(&fx, &wat::parse_str(text).unwrap());
    let runner = fx.runner(config(
        &fx,
        WasmLimits {
            max_memory_bytes: 1 << 20,
            ..WasmLimits::default()
        },
    ));
    let resp = runner
        .run(fx.request("w", "wasm", &algo, &[]))
        .await
        .unwrap();
    assert_eq!(resp.error, "wasm memory limit of 1048576 bytes exceeded");
}

#[tokio::test]
async fn endless_output_hits_the_output_limit() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let algo = write_module(
        &fx,
        &module(
            r#"(func (export "_start")
    (i32.store (i32.const 104) (i32.const 4096))
    (i32.store (i32.const 108) (i32.const 1000))
    (loop $l
      (drop (call $fd_write (i32.const 1) (i32.const 104) (i32.const 1) (i32.const 112)))
      (br $l)))"#,
        ),
    );
    let runner = fx.runner(config(
        &fx,
        WasmLimits {
            max_output_bytes: 64 << 10,
            max_time_secs: Some(20),
            ..WasmLimits::default()
        },
    ));
    let resp = runner
        .run(fx.request("w", "wasm", &algo, &[]))
        .await
        .unwrap();
    assert_eq!(
        resp.error,
        "wasm output limit of 65536 bytes (stdout and stderr) exceeded"
    );
    // Exactly the budget reached the sink, in pieces of at most 1 KiB.
    let pieces = fx.sink.stdout_pieces("w");
    assert_eq!(pieces.iter().map(Vec::len).sum::<usize>(), 64 << 10);
    assert!(pieces.iter().all(|p| p.len() <= 1024));
}

#[tokio::test]
async fn endless_results_hit_the_results_limit() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let algo = write_module(
        &fx,
        &module(
            r#"(func (export "_start")
    (local $out i32)
    (call $check (call $path_open (i32.const 4) (i32.const 0) (i32.const 16) (i32.const 7)
      (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 100)))
    (local.set $out (i32.load (i32.const 100)))
    (i32.store (i32.const 104) (i32.const 4096))
    (i32.store (i32.const 108) (i32.const 4096))
    (loop $l
      (call $check (call $fd_write (local.get $out) (i32.const 104) (i32.const 1) (i32.const 112)))
      (br $l)))"#,
        ),
    );
    let runner = fx.runner(config(
        &fx,
        WasmLimits {
            max_results_bytes: 1 << 20,
            max_time_secs: Some(30),
            ..WasmLimits::default()
        },
    ));
    let resp = runner
        .run(fx.request("w", "wasm", &algo, &[]))
        .await
        .unwrap();
    assert_eq!(resp.error, "results size limit of 1048576 bytes exceeded");
}

#[tokio::test]
async fn datasets_are_read_only_to_a_module() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    fx.dataset("input.txt", b"data\n");
    // Creating datasets/new.txt must fail: exit 0 when it does, 99 when not.
    let algo = write_module(
        &fx,
        &module(
            r#"(func (export "_start")
    (call $proc_exit (select (i32.const 99) (i32.const 0)
      (i32.eqz (call $path_open (i32.const 3) (i32.const 0) (i32.const 32) (i32.const 7)
        (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 100))))))"#,
        ),
    );
    let runner = fx.runner(fx.config());
    let resp = runner
        .run(fx.request("w", "wasm", &algo, &[]))
        .await
        .unwrap();
    assert_eq!(resp.error, "");
    assert!(!fx.datasets().join("new.txt").exists());
}

#[tokio::test]
async fn an_invalid_module_is_an_error() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let algo = write_module(&fx, b"\0asm\x01\0\0\0garbage");
    let runner = fx.runner(fx.config());
    let resp = runner
        .run(fx.request("w", "wasm", &algo, &[]))
        .await
        .unwrap();
    assert!(
        resp.error.starts_with("wasm module: loading"),
        "{}",
        resp.error
    );
}
