//! `cocos-imgbuild`: command-line front end of the `cocos_imgbuild` library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use cocos_imgbuild::build::{self, Bootloader, BuildConfig, InitramfsSource};
use cocos_imgbuild::grub;
use cocos_imgbuild::initramfs::{self, ExtraFile, Initramfs, InitramfsSpec};
use cocos_imgbuild::spec::ImageSpec;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "cocos-imgbuild",
    version,
    about = "Build reproducible, sparse GPT disk images for confidential VMs"
)]
struct Cli {
    /// Log more (repeat for more detail); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build disk.img and its side artifacts into --out DIR.
    ///
    /// Inputs come from flags and/or --config image.toml (flags win).
    /// SOURCE_DATE_EPOCH (environment; default 1980-01-01) stamps every
    /// timestamp and clamps file mtimes; --seed drives every UUID and salt.
    /// Two builds of the same inputs are bit-identical. Writes disk.img,
    /// rootfs.ext4, rootfs.verity, rootfs.roothash, rootfs.cpio.gz and
    /// manifest.json; nothing is left behind on failure.
    Build(Box<BuildArgs>),
    /// Build an initramfs: a deterministic, gzip-compressed newc cpio
    /// archive with /init, the kernel modules asked for and their
    /// dependencies (load order in /etc/cocos-init.toml), the shared
    /// libraries of every program, device nodes and extra files.
    ///
    /// SOURCE_DATE_EPOCH (environment; default 1980-01-01) stamps every
    /// entry. The same inputs give the same bytes. Nothing is left behind
    /// on failure.
    Initramfs(Box<InitramfsArgs>),
    /// Write only the ext4 root filesystem of a tree (no verity, no disk).
    Mkfs {
        /// Root tree: a directory, or a tar archive (.tar, .tar.gz).
        #[arg(long, value_name = "DIR|TAR")]
        rootfs: PathBuf,
        /// Output file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Size [default: the tree plus 10%].
        #[arg(long, value_name = "SIZE")]
        size: Option<String>,
        /// Seed of the UUID and hash seed [default: the nil UUID].
        #[arg(long, value_name = "UUID")]
        seed: Option<Uuid>,
        /// Own every file by 0:0.
        #[arg(long)]
        root_owned: bool,
    },
    /// Show a disk.img (partitions, ESP files, kernel command line, verity
    /// parameters) and re-verify its root against the root hash it boots
    /// with. Exit 1 on any mismatch, 2 when the image cannot be read.
    Inspect {
        /// The disk image.
        disk: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct InitramfsArgs {
    /// The init program, stored as /init.
    #[arg(long, value_name = "FILE")]
    init: PathBuf,
    /// Output file (e.g. initrd.cpio.gz).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Kernel module tree: a lib/modules/<version> directory (e.g. of an
    /// unpacked Debian kernel package; modules.dep is used when present,
    /// else each module's .modinfo).
    #[arg(long, value_name = "DIR")]
    modules_dir: Option<PathBuf>,
    /// A kernel module to load (repeatable; dependencies are added).
    #[arg(long = "module", value_name = "NAME")]
    module: Vec<String>,
    /// Kernel modules to load, space separated.
    #[arg(long, value_name = "LIST")]
    modules: Option<String>,
    /// An extra file: SRC:DEST[:MODE] (DEST absolute, MODE octal
    /// [default: 0755 if SRC is executable, else 0644]; repeatable).
    #[arg(long = "file", value_name = "SRC:DEST[:MODE]")]
    file: Vec<ExtraFile>,
    /// An extra directory to find shared libraries in (repeatable);
    /// libraries found there are stored in /lib.
    #[arg(long = "lib-dir", value_name = "DIR")]
    lib_dir: Vec<PathBuf>,
    /// How long cocos-init waits for the disk partitions [default: 10000].
    #[arg(long, value_name = "N")]
    device_timeout_ms: Option<u64>,
    /// Print one JSON summary object (entries, modules in load order,
    /// libraries, size, sha256) on stdout.
    #[arg(long, conflicts_with = "list")]
    json: bool,
    /// List the entries as `cpio -tv` does.
    #[arg(long)]
    list: bool,
}

#[derive(Args, Default)]
struct BuildArgs {
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Image description: TOML with the same keys as these flags, plus
    /// the partition table ([[partition]]) and [verity]; flags win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Root tree: a directory, or a tar archive (.tar, .tar.gz) whose
    /// owners, devices and xattrs are kept without root privileges.
    #[arg(long, value_name = "DIR|TAR")]
    rootfs: Option<PathBuf>,
    /// Kernel image (bzImage).
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// A prebuilt initramfs (copied to rootfs.cpio.gz and the ESP); or
    /// --init to generate one.
    #[arg(long, value_name = "FILE")]
    initramfs: Option<PathBuf>,
    /// Generate the initramfs (as `cocos-imgbuild initramfs` does) with
    /// this init program, instead of --initramfs.
    #[arg(long, value_name = "FILE")]
    init: Option<PathBuf>,
    /// With --init: kernel module tree (lib/modules/<version>).
    #[arg(long, value_name = "DIR")]
    modules_dir: Option<PathBuf>,
    /// With --init: a kernel module to load (repeatable).
    #[arg(long = "module", value_name = "NAME")]
    module: Vec<String>,
    /// With --init: kernel modules to load, space separated (in
    /// image.toml also an array).
    #[arg(long, value_name = "LIST")]
    modules: Option<String>,
    /// With --init: an extra file SRC:DEST[:MODE] (repeatable).
    #[arg(long = "initramfs-file", value_name = "SRC:DEST[:MODE]")]
    initramfs_file: Vec<ExtraFile>,
    /// With --init: an extra directory to find shared libraries in.
    #[arg(long = "lib-dir", value_name = "DIR")]
    lib_dir: Vec<PathBuf>,
    /// With --init: how long cocos-init waits for the disk partitions
    /// [default: 10000].
    #[arg(long, value_name = "N")]
    device_timeout_ms: Option<u64>,
    /// A prebuilt EFI bootloader instead of building GRUB.
    #[arg(long, value_name = "FILE")]
    bootloader: Option<PathBuf>,
    /// GRUB modules, space separated [default: boot linux echo normal part_gpt fat ls search tpm].
    #[arg(long, value_name = "LIST")]
    grub_modules: Option<String>,
    /// GRUB module directory [default: /usr/lib/grub/x86_64-efi].
    #[arg(long, value_name = "DIR")]
    grub_modules_dir: Option<PathBuf>,
    /// Extra kernel command line options.
    #[arg(long, value_name = "EXTRA")]
    cmdline: Option<String>,
    /// ESP size (e.g. 256M) [default: 256M].
    #[arg(long, value_name = "SIZE")]
    esp_size: Option<String>,
    /// Root filesystem size [default: the tree plus 10%].
    #[arg(long, value_name = "SIZE")]
    root_size: Option<String>,
    /// Size of the blank cocos partition (sparse) [default: 20G].
    #[arg(long, value_name = "SIZE")]
    cocos_size: Option<String>,
    /// Seed of every UUID and salt [default: the nil UUID].
    #[arg(long, value_name = "UUID")]
    seed: Option<Uuid>,
    /// Own every file by 0:0 (unprivileged builds cannot chown the tree).
    #[arg(long)]
    root_owned: bool,
    /// Print one JSON summary object on stdout.
    #[arg(long)]
    json: bool,
}

/// Parses `256M`, `20G`, `1048576`, `4K`, `2T` (binary units).
fn parse_size(s: &str) -> Result<u64> {
    cocos_imgbuild::spec::parse_size(s).map_err(anyhow::Error::msg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Build(args) => run_build(*args).map(|()| ExitCode::SUCCESS),
        Command::Initramfs(args) => run_initramfs(*args).map(|()| ExitCode::SUCCESS),
        Command::Inspect { disk, json } => run_inspect(&disk, json),
        Command::Mkfs {
            rootfs,
            out,
            size,
            seed,
            root_owned,
        } => run_mkfs(&rootfs, &out, size, seed, root_owned).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("cocos-imgbuild: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(verbose: u8) {
    let default = ["warn", "info", "debug", "trace"][usize::from(verbose.min(3))];
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

impl BuildArgs {
    /// The flags as an image description, to overlay a file's.
    fn into_spec(self) -> ImageSpec {
        ImageSpec {
            out: self.out,
            rootfs: self.rootfs,
            kernel: self.kernel,
            initramfs: self.initramfs,
            init: self.init,
            modules_dir: self.modules_dir,
            module: self.module,
            modules: self.modules,
            initramfs_file: self.initramfs_file,
            lib_dir: self.lib_dir,
            device_timeout_ms: self.device_timeout_ms,
            bootloader: self.bootloader,
            grub_modules: self.grub_modules,
            grub_modules_dir: self.grub_modules_dir,
            cmdline: self.cmdline,
            esp_size: self.esp_size,
            root_size: self.root_size,
            cocos_size: self.cocos_size,
            seed: self.seed,
            root_owned: self.root_owned,
            partitions: Vec::new(),
            verity: None,
        }
    }
}

/// Module names from `--module` (repeatable) and `--modules "a b"`.
fn module_list(module: Vec<String>, modules: Option<String>) -> Vec<String> {
    let mut all = module;
    if let Some(list) = modules {
        all.extend(list.split_whitespace().map(String::from));
    }
    all
}

/// Where the initramfs of a build comes from: `--initramfs FILE`, or
/// `--init FILE` and the other generation options. The flags choose if
/// they give either; otherwise image.toml does.
fn initramfs_source(
    flags: &mut ImageSpec,
    file: &mut ImageSpec,
    source_date_epoch: i64,
) -> Result<InitramfsSource> {
    let generation_options = |a: &ImageSpec| {
        let mut given = Vec::new();
        if a.modules_dir.is_some() {
            given.push("modules-dir");
        }
        if !a.module.is_empty() || a.modules.is_some() {
            given.push("module(s)");
        }
        if !a.initramfs_file.is_empty() {
            given.push("initramfs-file");
        }
        if !a.lib_dir.is_empty() {
            given.push("lib-dir");
        }
        if a.device_timeout_ms.is_some() {
            given.push("device-timeout-ms");
        }
        given
    };
    let from_flags = flags.initramfs.is_some() || flags.init.is_some();
    // Generation options that would be ignored with a prebuilt initramfs:
    // the flags' always, the file's when the file chose.
    let mut ignored = generation_options(flags);
    if !from_flags {
        ignored.extend(generation_options(file));
    }
    let chosen = if from_flags { &mut *flags } else { &mut *file };
    match (chosen.initramfs.take(), chosen.init.take()) {
        (Some(_), Some(_)) => {
            bail!(
                "give either --initramfs FILE (a prebuilt initramfs) or --init FILE (to generate one), not both"
            )
        }
        (None, None) => {
            bail!(
                "--initramfs FILE (a prebuilt initramfs) or --init FILE (to generate one) is required"
            )
        }
        (Some(path), None) => {
            if !ignored.is_empty() {
                ignored.sort_unstable();
                ignored.dedup();
                bail!(
                    "{} only apply with --init FILE, not with --initramfs FILE",
                    ignored.join(", ")
                );
            }
            Ok(InitramfsSource::File(path))
        }
        (None, Some(init)) => {
            // Flags win over the file, option by option (lists as a whole).
            fn pick_list<T>(a: Vec<T>, b: Vec<T>) -> Vec<T> {
                if a.is_empty() { b } else { a }
            }
            let modules_flags =
                module_list(std::mem::take(&mut flags.module), flags.modules.take());
            let modules_file = module_list(std::mem::take(&mut file.module), file.modules.take());
            let files = pick_list(
                std::mem::take(&mut flags.initramfs_file),
                std::mem::take(&mut file.initramfs_file),
            );
            let lib_dirs = if flags.lib_dir.is_empty() {
                std::mem::take(&mut file.lib_dir)
            } else {
                std::mem::take(&mut flags.lib_dir)
            };
            Ok(InitramfsSource::Generate(Box::new(InitramfsSpec {
                init,
                modules_dir: flags.modules_dir.take().or(file.modules_dir.take()),
                modules: pick_list(modules_flags, modules_file),
                files,
                lib_dirs,
                device_timeout_ms: flags
                    .device_timeout_ms
                    .or(file.device_timeout_ms)
                    .unwrap_or(cocos_formats::init_config::DEFAULT_DEVICE_TIMEOUT_MS),
                source_date_epoch,
            })))
        }
    }
}

fn run_build(flags: BuildArgs) -> Result<()> {
    let json = flags.json;
    let config = flags.config.clone();
    let mut file = match &config {
        Some(path) => ImageSpec::load(path)?,
        None => ImageSpec::default(),
    };
    let mut flags = flags.into_spec();
    let source_date_epoch = source_date_epoch()?;
    let initramfs = initramfs_source(&mut flags, &mut file, source_date_epoch)?;
    // Flags win over the file.
    let pick = |a: Option<PathBuf>, b: Option<PathBuf>| a.or(b);
    let out = pick(flags.out, file.out).context("--out DIR is required")?;
    let rootfs = pick(flags.rootfs, file.rootfs).context("--rootfs DIR|TAR is required")?;
    let kernel = pick(flags.kernel, file.kernel).context("--kernel FILE is required")?;
    let bootloader = match pick(flags.bootloader, file.bootloader) {
        Some(path) => Bootloader::Prebuilt(path),
        None => Bootloader::Grub {
            modules: flags
                .grub_modules
                .or(file.grub_modules)
                .map(|m| m.split_whitespace().map(String::from).collect())
                .unwrap_or_else(|| {
                    grub::DEFAULT_MODULES
                        .iter()
                        .map(|m| m.to_string())
                        .collect()
                }),
            modules_dir: pick(flags.grub_modules_dir, file.grub_modules_dir)
                .unwrap_or_else(|| PathBuf::from(grub::DEFAULT_MODULES_DIR)),
        },
    };
    // The partition table: the file's (or the default), with the sizes the
    // flags or the file's size keys give.
    let table = ImageSpec {
        esp_size: flags.esp_size.or(file.esp_size),
        root_size: flags.root_size.or(file.root_size),
        cocos_size: flags.cocos_size.or(file.cocos_size),
        partitions: file.partitions,
        ..ImageSpec::default()
    };
    let partitions = table.partition_table().with_context(|| match &config {
        Some(path) => format!("{}: partition table", path.display()),
        None => "partition table".into(),
    })?;
    let cfg = BuildConfig {
        out_dir: out,
        rootfs,
        kernel,
        initramfs,
        bootloader,
        cmdline: flags.cmdline.or(file.cmdline).unwrap_or_default(),
        partitions,
        verity: file.verity.unwrap_or_default(),
        seed: flags.seed.or(file.seed).unwrap_or_default(),
        source_date_epoch,
        root_owned: flags.root_owned || file.root_owned,
    };

    let bar = if std::io::stderr().is_terminal() && !json {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template(
        "writing root filesystem [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let summary = build::build(&cfg, &|total| bar.set_length(total), &|n| bar.inc(n))?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("Built {}", summary.out_dir.display());
        println!("Root hash:      {}", summary.root_hash);
        println!("Kernel cmdline: {}", summary.kernel_cmdline);
        for a in &summary.artifacts {
            println!("  {:<22} {:>12} bytes  sha256 {}", a.path, a.size, a.sha256);
        }
    }
    Ok(())
}

fn run_initramfs(args: InitramfsArgs) -> Result<()> {
    let spec = InitramfsSpec {
        init: args.init,
        modules_dir: args.modules_dir,
        modules: module_list(args.module, args.modules),
        files: args.file,
        lib_dirs: args.lib_dir,
        device_timeout_ms: args
            .device_timeout_ms
            .unwrap_or(cocos_formats::init_config::DEFAULT_DEVICE_TIMEOUT_MS),
        source_date_epoch: source_date_epoch()?,
    };
    let built = Initramfs::build(&spec)?;
    let summary = built.write(&args.out)?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else if args.list {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        print!("{}", initramfs::cpio::list_long(&built.members()?, now));
    } else {
        println!(
            "Wrote {}: {} entries, {} modules{}, {} libraries, {} bytes, sha256 {}",
            args.out.display(),
            summary.entries.len(),
            summary.modules.len(),
            summary
                .kernel_version
                .as_ref()
                .map(|v| format!(" (kernel {v})"))
                .unwrap_or_default(),
            summary.libraries.len(),
            summary.size,
            summary.sha256
        );
        if !summary.builtin_modules.is_empty() {
            println!(
                "Built into the kernel (not loaded): {}",
                summary.builtin_modules.join(" ")
            );
        }
    }
    Ok(())
}

fn run_inspect(disk: &Path, json: bool) -> Result<ExitCode> {
    let r = cocos_imgbuild::inspect::inspect(disk)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "Disk {} ({} bytes, GUID {})",
            disk.display(),
            r.partitions.disk_size,
            r.partitions.disk_guid
        );
        for p in &r.partitions.partitions {
            println!(
                "  {} {:<12} offset {:>12}  size {:>12}  type {}  uuid {}",
                p.number, p.name, p.offset, p.size, p.type_guid, p.unique_guid
            );
        }
        println!("ESP files:");
        for f in &r.esp_files {
            println!("  {:<24} {:>10} bytes  sha256 {}", f.path, f.size, f.sha256);
        }
        let unknown = || "(unknown: see below)".to_owned();
        if let Some(cfg) = &r.boot_config {
            let copy = match cfg.esp_copy_agrees {
                Some(true) => "; the ESP copy EFI/BOOT/grub.cfg agrees",
                Some(false) => "; the ESP copy EFI/BOOT/grub.cfg DIFFERS",
                None => "",
            };
            println!(
                "GRUB config:    {} ({}){copy}",
                cfg.file,
                if cfg.embedded {
                    "embedded, measured with the bootloader"
                } else {
                    "read from the ESP by normal mode, not measured"
                }
            );
        }
        println!(
            "Kernel cmdline: {}",
            r.kernel_cmdline.clone().unwrap_or_else(unknown)
        );
        let v = &r.verity;
        println!(
            "Verity:         {} data blocks of {} bytes, {} hash blocks of {} bytes, salt {}, uuid {}",
            v.data_blocks,
            v.data_block_size.bytes(),
            v.algorithm,
            v.hash_block_size.bytes(),
            hex::encode(v.salt.as_bytes()),
            v.uuid.map(|u| u.to_string()).unwrap_or_default()
        );
        println!(
            "Root hash:      {}",
            r.root_hash.as_ref().map_or_else(unknown, |h| h.to_hex())
        );
        if r.verification.ok {
            println!(
                "Root verified:  every block of the root partition verifies against the root hash"
            );
        }
    }
    for p in &r.verification.problems {
        eprintln!("cocos-imgbuild: {}: {p}", disk.display());
    }
    Ok(if r.verification.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn source_date_epoch() -> Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        // Unset: the earliest time every format in the image (FAT
        // included) can hold, so builds stay reproducible.
        Err(_) => Ok(cocos_imgbuild::fat::FAT_EPOCH_UNIX),
    }
}

fn run_mkfs(
    rootfs: &Path,
    out: &Path,
    size: Option<String>,
    seed: Option<Uuid>,
    root_owned: bool,
) -> Result<()> {
    use cocos_formats::ext4::{Ext4Plan, FileSink};
    let seed = cocos_imgbuild::seed::Seed::new(seed.unwrap_or_default());
    let tree = cocos_imgbuild::tree::read(rootfs)?;
    let size = size.map(|s| parse_size(&s)).transpose()?;
    let plan = Ext4Plan::new(
        &tree,
        build::ext4_options(&seed, source_date_epoch()?, root_owned, size),
    )?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let temp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("{}: cannot create", out.display()))?;
    temp.as_file().set_len(plan.size())?;
    plan.write(&tree, &mut FileSink::new(temp.as_file(), 0), &|_| {})?;
    temp.persist(out)
        .with_context(|| format!("{}: cannot move into place", out.display()))?;
    Ok(())
}
