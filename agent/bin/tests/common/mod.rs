//! The harness of the wired tests: the real services as separate
//! processes of `cocos-agent` (agent, runner, log-forwarder, ingress with
//! TLS, egress), every path in a per-test temporary directory, a real
//! management service (`cocos-cli cvms serve`, its JSON lines read as they
//! come), and uploads with `cocos-cli`.
//!
//! Reference tools, not our code, make what the tests compare against:
//! `openssl` (keys, the ingress CA and certificate), `useradd`/`id` (the run
//! user), Python's `zipfile` (the result), `/proc` (what is left running).
//!
//! Every process a test starts is in a guard that ends it when the test
//! ends, passing or failing: services get SIGTERM (the runner then stops
//! its run), SIGKILL after a grace period; whatever still runs as the
//! test's run user is killed by pid. On failure the guard prints the tail
//! of every service's stderr and of the management service's output.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// How long any one readiness wait may take.
pub const READY: Duration = Duration::from_secs(20);

// ------------------------------------------------------------- binaries

/// The binary under test.
pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cocos-agent"))
}

/// `cocos-cli`: `COCOS_CLI`, or `cocos-cli` next to the `cocos-agent`
/// binary (both are in `<target>/debug` after `cargo build --workspace`).
/// Panics with the command that builds it when it is missing.
pub fn cli_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("COCOS_CLI").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "COCOS_CLI={} is not a file", p.display());
        return p;
    }
    let agent = agent_bin();
    let p = agent.with_file_name("cocos-cli");
    assert!(
        p.is_file(),
        "{} is missing: these tests drive the real cocos-cli. Build it first with \
         `cargo build -p cocos-cli` (same CARGO_TARGET_DIR and profile as this test; \
         scripts/test.sh builds the whole workspace), or set COCOS_CLI=/path/to/cocos-cli",
        p.display()
    );
    p
}

/// Runs a reference tool, panicking with an install hint when it is
/// missing and with its stderr when it fails.
pub fn tool(cmd: &mut Command, hint: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (install it: {hint})"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails the test unless it runs as root (the runner switches users, and
/// re-owns the work files).
pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the wired tests must run as root: the runner switches algorithms to a dedicated user"
    );
}

// ------------------------------------------------------------- run user

static USERADD: Mutex<()> = Mutex::new(());

/// A dedicated run user, created with `useradd --system` when missing
/// (one per test, so that the runner's end-of-run sweep of the run user's
/// processes never touches another test's algorithm).
#[derive(Debug, Clone)]
pub struct RunUser {
    /// The name.
    pub name: String,
    /// Its uid, as `id -u` reports it.
    pub uid: u32,
}

impl RunUser {
    /// The user `name`, created if needed.
    pub fn ensure(name: &str) -> RunUser {
        let _guard = USERADD.lock().unwrap_or_else(|e| e.into_inner());
        let exists = Command::new("id")
            .args(["-u", name])
            .output()
            .expect("id(1) (coreutils) must be installed")
            .status
            .success();
        if !exists {
            // useradd takes a lock on /etc/passwd; another process may hold
            // it for a moment (exit status 10).
            let mut tries = 0;
            loop {
                let out = Command::new("useradd")
                    .args([
                        "--system",
                        "--no-create-home",
                        "--home-dir",
                        "/nonexistent",
                        "--shell",
                        "/usr/sbin/nologin",
                        name,
                    ])
                    .output()
                    .expect(
                        "useradd (package passwd) must be installed: apt-get install -y passwd",
                    );
                if out.status.success() || out.status.code() == Some(9) {
                    break; // 9: it exists (created meanwhile)
                }
                tries += 1;
                assert!(
                    out.status.code() == Some(10) && tries < 50,
                    "useradd {name} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let uid = tool(Command::new("id").args(["-u", name]), "coreutils")
            .trim()
            .parse()
            .expect("id -u prints a number");
        assert_ne!(uid, 0, "{name} must not be root");
        RunUser {
            name: name.to_string(),
            uid,
        }
    }
}

// ------------------------------------------------------------- /proc

/// A live (not zombie) process.
#[derive(Debug, Clone)]
pub struct Proc {
    /// Its pid.
    pub pid: i32,
    /// Its real uid.
    pub uid: u32,
    /// Its command line, arguments joined by spaces.
    pub cmdline: String,
}

/// Every live, non-zombie process, from /proc.
pub fn processes() -> Vec<Proc> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        if field("State:").starts_with('Z') {
            continue;
        }
        let uid = field("Uid:")
            .split_whitespace()
            .next()
            .and_then(|u| u.parse().ok())
            .unwrap_or(u32::MAX);
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        found.push(Proc { pid, uid, cmdline });
    }
    found
}

/// Live processes whose command line carries `marker`.
pub fn processes_with(marker: &str) -> Vec<Proc> {
    let me = std::process::id() as i32;
    processes()
        .into_iter()
        .filter(|p| p.pid != me && p.cmdline.contains(marker))
        .collect()
}

/// Waits until no live process carries `marker`; panics with the
/// survivors after `within`.
pub fn assert_no_process_with(marker: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes of the algorithm (marker {marker}) are still running {within:?} later: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `count` live processes carry `marker`.
pub fn wait_processes_with(marker: &str, count: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let found = processes_with(marker);
        if found.len() == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} processes with marker {marker} within {within:?}, found {found:#?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A marker unique to this test run, digits only (it doubles as a
/// fractional number of seconds for sleep(1)).
pub fn unique_digits() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{}{:09}{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ------------------------------------------------------------- readiness

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ------------------------------------------------------------- processes

/// A service process with its stderr in a file.
struct Service {
    name: String,
    child: Child,
    log: PathBuf,
}

/// The services of one test; ended when dropped.
pub struct Services {
    list: Vec<Service>,
    logs: PathBuf,
    user: Option<u32>,
}

impl Services {
    /// No service yet; logs go under `logs`, leftovers of `user` are killed
    /// at the end.
    pub fn new(logs: PathBuf, user: Option<u32>) -> Self {
        std::fs::create_dir_all(&logs).unwrap();
        Self {
            list: Vec::new(),
            logs,
            user,
        }
    }

    /// Starts `cocos-agent <service>` with exactly these variables over a
    /// minimal environment.
    pub fn start(&mut self, service: &str, env: &BTreeMap<String, String>) {
        let log = self.logs.join(format!("{service}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(agent_bin());
        cmd.arg(service)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("AGENT_LOG_LEVEL", "info")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting cocos-agent {service}: {e}"));
        self.list.push(Service {
            name: service.to_string(),
            child,
            log,
        });
    }

    /// Panics (with its log) if `service` has exited.
    pub fn check_alive(&mut self, service: &str) {
        for s in &mut self.list {
            if s.name == service
                && let Ok(Some(status)) = s.child.try_wait()
            {
                panic!(
                    "cocos-agent {service} exited ({status}):\n{}",
                    tail(&s.log, 40)
                );
            }
        }
    }

    /// Waits until `path` is a Unix socket that accepts connections.
    pub fn wait_socket(&mut self, service: &str, path: &Path) {
        let deadline = Instant::now() + READY;
        loop {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
                && std::os::unix::net::UnixStream::connect(path).is_ok()
            {
                return;
            }
            self.check_alive(service);
            assert!(
                Instant::now() < deadline,
                "cocos-agent {service}: no socket at {} after {READY:?}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `addr` accepts TCP connections.
    pub fn wait_port(&mut self, service: &str, addr: SocketAddr) {
        let deadline = Instant::now() + READY;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            self.check_alive(service);
            assert!(
                Instant::now() < deadline,
                "cocos-agent {service}: nothing listens on {addr} after {READY:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The stderr of `service` so far.
    pub fn log(&self, service: &str) -> String {
        self.list
            .iter()
            .find(|s| s.name == service)
            .map(|s| std::fs::read_to_string(&s.log).unwrap_or_default())
            .unwrap_or_default()
    }
}

/// Ends `child`: SIGTERM, then SIGKILL after `grace`.
fn end(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Services {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for s in &self.list {
                eprintln!(
                    "--- cocos-agent {} (last lines)\n{}",
                    s.name,
                    tail(&s.log, 30)
                );
            }
        }
        // The agent first (it stops the runner's run), then the runner,
        // the proxies, and the forwarder last.
        for s in self.list.iter_mut().rev() {
            end(&mut s.child, Duration::from_secs(5));
        }
        if let Some(uid) = self.user {
            for p in processes().into_iter().filter(|p| p.uid == uid) {
                eprintln!("killing a leftover process of uid {uid}: {p:?}");
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
            }
        }
    }
}

// ------------------------------------------------------------- cvms serve

#[derive(Default)]
struct Lines {
    values: Vec<Value>,
    closed: bool,
}

/// `cocos-cli cvms serve`, its stdout read line by line as JSON.
pub struct Cvms {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<(Mutex<Lines>, Condvar)>,
    /// The address it listens on.
    pub addr: String,
    stderr: PathBuf,
    name: String,
}

/// An agent event as `cvms serve` printed it, details decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `event_type`.
    pub event_type: String,
    /// `status`.
    pub status: String,
    /// `originator`.
    pub originator: String,
    /// `computation_id`.
    pub computation_id: String,
    /// `details`, base64-decoded, as text.
    pub details: String,
}

impl Cvms {
    /// Starts it on `listen` (port 0: any) and waits for its `listening`
    /// line. `name` tells runs apart in failure output.
    pub fn start(name: &str, manifest: &Path, listen: &str, dir: &Path) -> Cvms {
        let stderr = dir.join(format!("{name}.stderr"));
        let mut child = Command::new(cli_bin())
            .args(["cvms", "serve"])
            .arg(manifest)
            .args(["--listen", listen])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("starting cocos-cli cvms serve");
        let stdout = child.stdout.take().unwrap();
        let lines: Arc<(Mutex<Lines>, Condvar)> = Arc::default();
        let shared = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({"type": "unparsed", "line": line}));
                let (m, cv) = &*shared;
                m.lock().unwrap().values.push(value);
                cv.notify_all();
            }
            let (m, cv) = &*shared;
            m.lock().unwrap().closed = true;
            cv.notify_all();
        });
        let mut cvms = Cvms {
            stdin: child.stdin.take(),
            child,
            lines,
            addr: String::new(),
            stderr,
            name: name.to_string(),
        };
        let listening = cvms.wait_for("the listening line", READY, |v| v["type"] == "listening");
        cvms.addr = listening["addr"].as_str().unwrap().to_string();
        cvms
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.0.lock().unwrap().values.clone()
    }

    /// Waits for a line matching `pred` and returns the first one.
    pub fn wait_for(&self, what: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        let (m, cv) = &*self.lines;
        let mut lines = m.lock().unwrap();
        loop {
            if let Some(v) = lines.values.iter().find(|v| pred(v)) {
                return v.clone();
            }
            let now = Instant::now();
            if now >= deadline || lines.closed {
                let seen: Vec<String> = lines
                    .values
                    .iter()
                    .filter(|v| v["type"] != "agent_log")
                    .map(|v| v.to_string())
                    .collect();
                drop(lines);
                panic!(
                    "{}: no {what} within {within:?} (closed: {}); lines other than logs:\n{}\nstderr:\n{}",
                    self.name,
                    self.lines.0.lock().unwrap().closed,
                    seen.join("\n"),
                    tail(&self.stderr, 20)
                );
            }
            lines = cv.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    /// Waits for an agent event of `event_type` (with `status`, if given).
    pub fn wait_event(&self, event_type: &str, status: Option<&str>, within: Duration) -> Event {
        let v = self.wait_for(
            &format!("agent_event {event_type} {status:?}"),
            within,
            |v| {
                v["type"] == "agent_event"
                    && v["event_type"] == event_type
                    && status.is_none_or(|s| v["status"] == s)
            },
        );
        event(&v)
    }

    /// The agent events so far, in order of arrival.
    pub fn events(&self) -> Vec<Event> {
        self.lines()
            .iter()
            .filter(|v| v["type"] == "agent_event")
            .map(event)
            .collect()
    }

    /// The messages of the agent logs so far, in order of arrival.
    pub fn log_messages(&self) -> Vec<String> {
        self.lines()
            .iter()
            .filter(|v| v["type"] == "agent_log")
            .map(|v| v["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Sends a command (`stop`, `state`, ...) on its stdin.
    pub fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }

    /// Kills it (SIGKILL: a management service that disappears).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Cvms {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let lines = self.lines();
            let shown: Vec<String> = lines[lines.len().saturating_sub(40)..]
                .iter()
                .map(|v| v.to_string())
                .collect();
            eprintln!(
                "--- {} output (last lines)\n{}\n--- its stderr\n{}",
                self.name,
                shown.join("\n"),
                tail(&self.stderr, 20)
            );
        }
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn event(v: &Value) -> Event {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let details = base64::engine::general_purpose::STANDARD
        .decode(s("details"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| panic!("event details are not base64: {e}: {v}"));
    Event {
        event_type: s("event_type"),
        status: s("status"),
        originator: s("originator"),
        computation_id: s("computation_id"),
        details,
    }
}

/// The agent's (originator `agent`) events as (type, status), consecutive
/// repeats folded and, with `first_only`, every pair kept only at its first
/// appearance (a replay after a reconnect repeats earlier ones).
pub fn agent_states(events: &[Event], first_only: bool) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for e in events.iter().filter(|e| e.originator == "agent") {
        let pair = (e.event_type.clone(), e.status.clone());
        if out.last() == Some(&pair) || (first_only && out.contains(&pair)) {
            continue;
        }
        out.push(pair);
    }
    out
}

/// `(type, status)` pairs from string slices.
pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

// ------------------------------------------------------------- the job

/// What a test's computation is.
pub struct Spec {
    /// Short name: the run user is `cocos-wired-<name>`.
    pub name: &'static str,
    /// The algorithm (a shell script).
    pub algorithm: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Datasets: file name and content.
    pub datasets: Vec<(String, Vec<u8>)>,
    /// `RUNNER_TIMEOUT_SECS`.
    pub timeout_secs: u64,
    /// `COCOS_EGRESS_ALLOW`.
    pub egress_allow: String,
}

impl Spec {
    /// A spec with no dataset, no argument, a 60 s timeout and an empty
    /// allowlist.
    pub fn new(name: &'static str, algorithm: &str) -> Spec {
        Spec {
            name,
            algorithm: algorithm.to_string(),
            args: Vec::new(),
            datasets: Vec::new(),
            timeout_secs: 60,
            egress_allow: String::new(),
        }
    }
}

/// One computation, its files, its management service and its services.
pub struct Job {
    /// The test's directory (0755: the run user must reach the work dir).
    pub dir: tempfile::TempDir,
    /// The computation id.
    pub id: String,
    /// The run user.
    pub user: RunUser,
    /// The manifest file.
    pub manifest: PathBuf,
    /// The management service, while one runs.
    pub cvms: Option<Cvms>,
    /// The services (ended before the management service, see Drop).
    pub services: Services,
    /// The ingress's address.
    pub ingress: SocketAddr,
    /// The egress proxy's address.
    pub egress: SocketAddr,
    algorithm: PathBuf,
    datasets: Vec<PathBuf>,
    args: Vec<String>,
    spec_timeout: u64,
    egress_allow: String,
    cvms_runs: usize,
    cvms_addr: Option<String>,
}

impl Job {
    /// Makes keys (openssl), the ingress's CA and certificate (openssl),
    /// the algorithm and dataset files and the manifest (`cocos-cli
    /// manifest new`).
    pub fn new(spec: Spec) -> Job {
        require_root();
        let cli = cli_bin();
        let user = RunUser::ensure(&format!("cocos-wired-{}", spec.name));
        let dir = tempfile::Builder::new()
            .prefix(&format!("cocos-wired-{}-", spec.name))
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.path();
        for who in ["algo", "data", "consumer"] {
            let k = d.join("keys").join(who);
            std::fs::create_dir_all(&k).unwrap();
            tool(
                Command::new("openssl")
                    .args(["genpkey", "-algorithm", "ed25519", "-out"])
                    .arg(k.join("private.pem")),
                "apt-get install -y openssl",
            );
            tool(
                Command::new("openssl")
                    .args(["pkey", "-pubout", "-in"])
                    .arg(k.join("private.pem"))
                    .arg("-out")
                    .arg(k.join("public.pem")),
                "apt-get install -y openssl",
            );
        }
        make_certs(&d.join("certs"));
        let inputs = d.join("inputs");
        std::fs::create_dir_all(&inputs).unwrap();
        let algorithm = inputs.join("algorithm.sh");
        std::fs::write(&algorithm, &spec.algorithm).unwrap();
        let mut datasets = Vec::new();
        for (name, content) in &spec.datasets {
            let p = inputs.join(name);
            std::fs::write(&p, content).unwrap();
            datasets.push(p);
        }
        let id = format!("wired-{}-{}", spec.name, unique_digits());
        let manifest = d.join("manifest.json");
        let mut cmd = Command::new(&cli);
        cmd.args(["manifest", "new", "--id", &id, "--name", spec.name])
            .arg("--algorithm")
            .arg(&algorithm)
            .arg(d.join("keys/algo/public.pem"))
            .args(["--type", "bin"]);
        for a in &spec.args {
            cmd.args(["--arg", a]);
        }
        for p in &datasets {
            cmd.arg("--dataset")
                .arg(p)
                .arg(d.join("keys/data/public.pem"));
        }
        cmd.arg("--consumer")
            .arg(d.join("keys/consumer/public.pem"))
            .arg("-o")
            .arg(&manifest);
        tool(&mut cmd, "cargo build -p cocos-cli");
        let ingress = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let egress = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let services = Services::new(d.join("logs"), Some(user.uid));
        Job {
            id,
            user,
            manifest,
            cvms: None,
            services,
            ingress,
            egress,
            algorithm,
            datasets,
            args: spec.args,
            spec_timeout: spec.timeout_secs,
            egress_allow: spec.egress_allow,
            cvms_runs: 0,
            cvms_addr: None,
            dir,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Starts a management service: on any free port the first time, on
    /// the same address after that.
    pub fn start_cvms(&mut self) {
        let listen = self
            .cvms_addr
            .clone()
            .unwrap_or_else(|| "127.0.0.1:0".into());
        self.cvms_runs += 1;
        let cvms = Cvms::start(
            &format!("cvms serve #{}", self.cvms_runs),
            &self.manifest,
            &listen,
            self.dir.path(),
        );
        self.cvms_addr = Some(cvms.addr.clone());
        self.cvms = Some(cvms);
    }

    /// The management service.
    pub fn cvms(&self) -> &Cvms {
        self.cvms.as_ref().expect("a management service is running")
    }

    /// The management service, mutably.
    pub fn cvms_mut(&mut self) -> &mut Cvms {
        self.cvms.as_mut().expect("a management service is running")
    }

    /// The environment of every service (each reads its own keys).
    fn env(&self) -> BTreeMap<String, String> {
        let p = |s: &str| self.path(s).display().to_string();
        let runner_config = self.path("runner.json");
        std::fs::create_dir_all(self.path("scratch")).unwrap();
        std::fs::set_permissions(self.path("scratch"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(
            &runner_config,
            serde_json::json!({ "scratch_dir": p("scratch") }).to_string(),
        )
        .unwrap();
        let cvms = self
            .cvms_addr
            .clone()
            .expect("start the management service first");
        [
            ("AGENT_CVM_GRPC_URL", format!("http://{cvms}")),
            ("AGENT_CVM_ID", self.id.clone()),
            ("LOG_FORWARDER_SOCKET", p("log.sock")),
            ("LOG_FORWARDER_BUFFER_DIR", p("log-buffer")),
            ("AGENT_WORK_DIR", p("work")),
            ("AGENT_GRPC_HOST", p("agent.sock")),
            ("AGENT_RUNNER_SOCKET", p("runner.sock")),
            ("RUNNER_CONFIG_FILE", p("runner.json")),
            ("RUNNER_USER", self.user.name.clone()),
            ("RUNNER_TIMEOUT_SECS", self.spec_timeout.to_string()),
            ("RUNNER_EGRESS_PROXY", format!("http://{}", self.egress)),
            ("COCOS_INGRESS_LISTEN", self.ingress.to_string()),
            ("COCOS_INGRESS_UPSTREAM", p("agent.sock")),
            ("COCOS_INGRESS_CERT", p("certs/server.pem")),
            ("COCOS_INGRESS_KEY", p("certs/server.key")),
            ("COCOS_EGRESS_LISTEN", self.egress.to_string()),
            ("COCOS_EGRESS_ALLOW", self.egress_allow.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Starts the services in the order of their dependencies, each once
    /// the previous one is ready: log-forwarder, runner, egress, agent,
    /// ingress.
    pub fn start_services(&mut self) {
        let env = self.env();
        let s = &mut self.services;
        s.start("log-forwarder", &env);
        s.wait_socket("log-forwarder", &self.dir.path().join("log.sock"));
        s.start("runner", &env);
        s.wait_socket("runner", &self.dir.path().join("runner.sock"));
        s.start("egress", &env);
        s.wait_port("egress", self.egress);
        s.start("agent", &env);
        s.wait_socket("agent", &self.dir.path().join("agent.sock"));
        s.start("ingress", &env);
        s.wait_port("ingress", self.ingress);
    }

    /// Runs `cocos-cli <args>` against the ingress (TLS, our CA), retrying
    /// while the agent is unreachable (exit status 3). Returns the status
    /// code and the output.
    pub fn cli(&self, args: &[&std::ffi::OsStr]) -> (i32, String) {
        let deadline = Instant::now() + READY;
        loop {
            let out = Command::new(cli_bin())
                .args(args)
                .arg("--manifest")
                .arg(&self.manifest)
                .arg("--addr")
                .arg(format!("https://{}", self.ingress))
                .arg("--ca")
                .arg(self.path("certs/ca.pem"))
                .args(["--domain", "localhost"])
                .output()
                .expect("running cocos-cli");
            let code = out.status.code().unwrap_or(-1);
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if code == 3 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            return (code, text);
        }
    }

    /// Uploads the algorithm, signed as its provider; panics on failure.
    pub fn upload_algorithm(&self) {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "algo".as_ref(),
            self.algorithm.as_os_str(),
            "--type".as_ref(),
            "bin".as_ref(),
        ];
        for a in &self.args {
            args.push("--args".as_ref());
            args.push(a.as_ref());
        }
        let key = self.path("keys/algo/private.pem");
        args.push("--key".as_ref());
        args.push(key.as_os_str());
        let (code, out) = self.cli(&args);
        assert_eq!(code, 0, "cocos-cli algo failed: {out}");
    }

    /// Uploads every dataset, signed as its provider; panics on failure.
    pub fn upload_datasets(&self) {
        let key = self.path("keys/data/private.pem");
        for p in &self.datasets {
            let (code, out) = self.cli(&[
                "data".as_ref(),
                p.as_os_str(),
                "--key".as_ref(),
                key.as_os_str(),
            ]);
            assert_eq!(code, 0, "cocos-cli data {} failed: {out}", p.display());
        }
    }

    /// Fetches the result as the consumer into `results.zip`: the exit
    /// status and output of `cocos-cli result`.
    pub fn fetch_result(&self) -> (i32, String, PathBuf) {
        let key = self.path("keys/consumer/private.pem");
        let out = self.path("results.zip");
        let (code, text) = self.cli(&[
            "result".as_ref(),
            "--key".as_ref(),
            key.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ]);
        (code, text, out)
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // The services first (the forwarder may still be delivering), then
        // the management service; the fields' own Drops do the work, in
        // declaration order: cvms is declared before services, so end the
        // services explicitly first.
        let services = std::mem::replace(
            &mut self.services,
            Services {
                list: Vec::new(),
                logs: PathBuf::new(),
                user: None,
            },
        );
        drop(services);
    }
}

/// A CA and a certificate for `localhost` and 127.0.0.1 signed by it, made
/// by openssl: `ca.pem`, `server.pem`, `server.key`.
fn make_certs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let hint = "apt-get install -y openssl";
    tool(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=cocos-wired-ca",
                "-keyout",
            ])
            .arg(dir.join("ca.key"))
            .arg("-out")
            .arg(dir.join("ca.pem")),
        hint,
    );
    tool(
        Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
            ])
            .arg(dir.join("server.key"))
            .arg("-out")
            .arg(dir.join("server.csr")),
        hint,
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    tool(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-in"])
            .arg(dir.join("server.csr"))
            .arg("-CA")
            .arg(dir.join("ca.pem"))
            .arg("-CAkey")
            .arg(dir.join("ca.key"))
            .arg("-CAcreateserial")
            .arg("-extfile")
            .arg(dir.join("ext.cnf"))
            .arg("-out")
            .arg(dir.join("server.pem")),
        hint,
    );
}

// ------------------------------------------------------------- reference readers

/// The members of a zip, as Python's `zipfile` reads them.
pub fn unzip(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let script = "import json,sys,zipfile\n\
                  z=zipfile.ZipFile(sys.argv[1])\n\
                  print(json.dumps({n: list(z.read(n)) for n in z.namelist()}))";
    let out = tool(
        Command::new("python3").args(["-c", script]).arg(path),
        "apt-get install -y python3",
    );
    serde_json::from_str(&out).unwrap()
}

// ------------------------------------------------------------- HTTP servers

/// A tiny HTTP/1.1 server on 127.0.0.1 that answers every request with
/// `body` and counts the connections it accepted.
pub struct HttpServer {
    /// Its address.
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub hits: Arc<AtomicUsize>,
}

impl HttpServer {
    /// Starts it on a free port, in a thread that lives as long as the
    /// test process.
    pub fn start(body: &str) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let body = body.to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(reply.as_bytes());
                });
            }
        });
        HttpServer { addr, hits }
    }
}
