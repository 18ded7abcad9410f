//! `cocos-init`: PID 1 of the initramfs. The six boot steps (the crate
//! documentation lists them), in order; each failure ends in one FATAL line and power-off
//! (see the library's modules for the how and why of each step).

use std::convert::Infallible;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cocos_init::config::{self, CONFIG_PATH};
use cocos_init::discover::{self, Method, SysfsBlockDevices};
use cocos_init::luks::{self, COCOS_MAPPING, EphemeralKeys, LuksSettings};
use cocos_init::mounts::{self, FstabOutcome, NEW_ROOT, RUNTIME_FSTAB};
use cocos_init::report::{AtStep, Console, Fatal, Step, progress_line};
use cocos_init::verity::{self, ROOT_MAPPING};
use cocos_init::{cmdline, cocosfs, devmapper, halt, modules, switchroot};

/// How often the partitions are looked for while waiting.
const PARTITION_POLL: Duration = Duration::from_millis(50);

fn main() {
    let started = Instant::now();
    // /dev first, so the console can be opened and every later failure
    // reported; its own failure is reported as the first step's.
    let dev = mounts::mount_dev();
    let mut console = Console::open();
    let Err(fatal) = boot(&mut console, dev, started);
    console.record(&fatal.line());
    halt::halt(&mut console, halt::debug_mode());
}

fn boot(
    console: &mut Console,
    dev: Result<(), mounts::MountError>,
    started: Instant,
) -> Result<Infallible, Fatal> {
    let root = Path::new(NEW_ROOT);

    console.line(&progress_line(1));
    dev.at(Step::Mounts)?;
    mounts::early_mounts().at(Step::Mounts)?;
    let config = config::load(Path::new(CONFIG_PATH)).at(Step::Config)?;
    let t = Instant::now();
    let loaded = modules::load_modules(&config.modules).at(Step::Modules)?;
    console.info(&format!(
        "modules: {loaded} loaded, {} already present ({} ms)",
        config.modules.len() - loaded,
        t.elapsed().as_millis()
    ));
    mounts::mount_configfs().at(Step::Mounts)?;

    console.line(&progress_line(2));
    let line = std::fs::read_to_string("/proc/cmdline")
        .map_err(mounts::io_err("read", Path::new("/proc/cmdline")))
        .at(Step::Cmdline)?;
    let params = cmdline::parse(&line).at(Step::Cmdline)?;
    let settings = LuksSettings::choose(
        params.luks_cipher.as_deref(),
        params.luks_integrity.as_deref(),
    )
    .at(Step::Cmdline)?;

    console.line(&progress_line(3));
    let parts = discover::wait_for_partitions(
        &SysfsBlockDevices::default(),
        &params.root_hash,
        params.disk.as_deref(),
        Duration::from_millis(config.device_timeout_ms),
        PARTITION_POLL,
    )
    .at(Step::Partitions)?;
    console.info(&format!(
        "partitions: root {}, verity {}, cocos {} ({} {})",
        parts.root.display(),
        parts.verity.display(),
        parts.cocos.display(),
        match parts.method {
            Method::RootHashGuids => "found by the root hash's GUIDs on",
            Method::Fallback => "no partition has the root hash's GUIDs; fallback to",
        },
        parts.disk.display()
    ));

    console.line(&progress_line(4));
    let tree = verity::check_hash_tree(&parts.root, &parts.verity, &params.root_hash)
        .at(Step::DmVerity)?;
    verity::open_verity(&parts.root, &parts.verity, ROOT_MAPPING, &params.root_hash)
        .at(Step::DmVerity)?;
    let root_dev = find_mapping(ROOT_MAPPING).at(Step::DmVerity)?;
    mounts::mount_ext4(&root_dev, root, true).at(Step::DmVerity)?;
    console.info(&format!(
        "dm-verity: {} ({}, {} data blocks, {} levels) mounted read-only on {NEW_ROOT}",
        root_dev.display(),
        tree.params.algorithm,
        tree.data_blocks,
        tree.levels
    ));

    console.line(&progress_line(5));
    let cocos = mounts::require_dir(root, "cocos").at(Step::Cocos)?;
    let t = Instant::now();
    let (format_ms, open_ms) = {
        // The key exists only in this scope (and in the kernel's dm-crypt
        // table); dropping it wipes it.
        let keys = EphemeralKeys::generate(settings.key_bytes).at(Step::Cocos)?;
        let formatted = luks::format(&parts.cocos, &settings, &keys).at(Step::Cocos)?;
        let format_ms = t.elapsed().as_millis();
        formatted
            .activate(COCOS_MAPPING, &settings, &keys)
            .at(Step::Cocos)?;
        (format_ms, t.elapsed().as_millis() - format_ms)
    };
    let crypt_dev = find_mapping(COCOS_MAPPING).at(Step::Cocos)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let t_fs = Instant::now();
    let fs = cocosfs::write_filesystem(&crypt_dev, now).at(Step::Cocos)?;
    mounts::mount_ext4(&crypt_dev, &cocos, false).at(Step::Cocos)?;
    console.info(&format!(
        "cocos: LUKS2 {settings} on {}; ext4 of {} MiB with {} inodes on {} \
         ({} ms: format {format_ms}, open {open_ms}, ext4 and mount {})",
        parts.cocos.display(),
        (fs.blocks * cocos_formats::ext4::writer::BLOCK_SIZE) >> 20,
        fs.inodes,
        crypt_dev.display(),
        t.elapsed().as_millis(),
        t_fs.elapsed().as_millis()
    ));

    console.line(&progress_line(6));
    mounts::runtime_mounts(root).at(Step::Runtime)?;
    let fstab = mounts::install_fstab(root, Path::new(RUNTIME_FSTAB)).at(Step::Fstab)?;
    console.info(match fstab {
        FstabOutcome::Kept => "fstab: the image's /etc/fstab describes the runtime",
        FstabOutcome::Replaced => {
            "fstab: the image's /etc/fstab lacks runtime entries; corrected copy bound over it"
        }
    });
    switchroot::enter_root(root).at(Step::SwitchRoot)?;
    switchroot::read_program(Path::new(switchroot::INIT)).at(Step::SwitchRoot)?;
    console.record(&format!(
        "cocos-init: switch_root to {} after {} ms (uptime {})",
        switchroot::INIT,
        started.elapsed().as_millis(),
        uptime()
    ));
    switchroot::exec_init().at(Step::SwitchRoot)
}

/// The node of a device-mapper mapping.
fn find_mapping(name: &str) -> Result<std::path::PathBuf, mounts::MountError> {
    devmapper::find_mapping(name, Path::new("/dev"), Path::new("/sys/block")).map_err(
        mounts::io_err("find the device of", &devmapper::mapper_path(name)),
    )
}

/// Seconds since the kernel started, for the benchmark's reading.
fn uptime() -> String {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).map_or_else(
        |_| "unknown".to_owned(),
        |t| format!("{}.{:03} s", t.tv_sec(), t.tv_nsec() / 1_000_000),
    )
}
