//! `format`, `verify` and `dump` over files and block devices, with the
//! semantics of `veritysetup`.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tracing::debug;
use uuid::Uuid;

use super::check::{CheckError, HashArea, Mismatch};
use super::error::{Corruption, VerityError, io_err};
use super::geometry::{HashAreaLayout, TreeGeometry};
use super::params::{
    BlockSize, HashAlgorithm, ParamError, RootHash, Salt, TreeParams, VerityParams,
};
use super::superblock::{SUPERBLOCK_SIZE, Superblock};
use super::tree::{HashTree, HashTreeBuilder};

/// Data is hashed in batches of this many bytes (see [`batches`]).
const BATCH_BYTES: usize = 8 << 20;

/// Parameters given by the caller. For `format`, unset values take the
/// `veritysetup` defaults (sha256, 4096-byte blocks, a random 32-byte salt, a
/// random UUID). For `verify` with a superblock, the superblock provides them
/// and any value given here must agree with it.
#[derive(Debug, Clone, Default)]
pub struct VerityOptions {
    /// Hash algorithm.
    pub algorithm: Option<HashAlgorithm>,
    /// Data block size.
    pub data_block_size: Option<BlockSize>,
    /// Hash block size.
    pub hash_block_size: Option<BlockSize>,
    /// Salt.
    pub salt: Option<Salt>,
    /// UUID stored in the superblock.
    pub uuid: Option<Uuid>,
    /// Do not write or read a superblock.
    pub no_superblock: bool,
    /// Byte offset of the hash area (superblock or tree) in the hash file.
    pub hash_offset: u64,
    /// Number of data blocks; by default the whole data file.
    pub data_blocks: Option<u64>,
}

/// What `veritysetup format` and `veritysetup dump` report about a hash
/// area: its parameters, under the same names as in `manifest.json` and
/// `cocos-imgbuild inspect --json`, plus the shape of the tree and where it
/// sits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerityReport {
    /// Algorithm, block sizes, data blocks, salt, UUID (none without a
    /// superblock) and root hash (none from `dump`).
    #[serde(flatten)]
    pub params: VerityParams,
    /// Blocks of the tree (superblock excluded).
    pub hash_blocks: u64,
    /// Number of tree levels.
    pub levels: usize,
    /// Offset of the hash area.
    pub hash_offset: u64,
    /// Offset of the first tree block.
    pub tree_offset: u64,
    /// End of the hash area: the hash device size when the area starts at 0.
    pub hash_area_end: u64,
}

impl VerityReport {
    fn new(
        geometry: &TreeGeometry,
        params: &TreeParams,
        layout: &HashAreaLayout,
        uuid: Option<Uuid>,
        root_hash: Option<RootHash>,
    ) -> Self {
        VerityReport {
            params: VerityParams::new(params, geometry.data_blocks())
                .with_uuid(uuid)
                .with_root_hash(root_hash),
            hash_blocks: geometry.hash_blocks(),
            levels: geometry.levels().len(),
            hash_offset: layout.hash_offset,
            tree_offset: layout.tree_offset,
            hash_area_end: layout.tree_offset + geometry.tree_bytes(),
        }
    }
}

/// Builds the hash tree of `data_path` and writes it to `hash_path`, as
/// `veritysetup format DATA HASH` does; returns what it reports.
///
/// A hash file that does not exist yet is written under a temporary name and
/// renamed into place once complete. An existing one (or a block device) is
/// updated in place with the superblock cleared first and written last, so a
/// failure never leaves a valid-looking superblock over a partial tree.
/// Bytes of an existing hash file outside the hash area are kept.
///
/// `progress` is called with the number of data bytes hashed since the last
/// call.
pub fn format(
    data_path: &Path,
    hash_path: &Path,
    opts: &VerityOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(VerityReport, HashTree), VerityError> {
    let salt = match &opts.salt {
        Some(salt) => salt.clone(),
        None => Salt::random().map_err(|e| VerityError::Random(e.to_string()))?,
    };
    let params = TreeParams {
        algorithm: opts.algorithm.unwrap_or_default(),
        data_block_size: opts.data_block_size.unwrap_or_default(),
        hash_block_size: opts.hash_block_size.unwrap_or_default(),
        salt,
    };
    let uuid = if opts.no_superblock {
        None
    } else {
        Some(opts.uuid.unwrap_or_else(Uuid::new_v4))
    };
    let data = open_input(data_path, "open data file")?;
    let data_blocks = data_block_count(&data, data_path, &params, opts.data_blocks)?;
    let Placement {
        geometry,
        layout,
        end: area_end,
    } = place(&params, data_blocks, opts, data_path, hash_path)?;

    // Open (or create) the destination before the long hashing pass, so a
    // bad path fails at once.
    let target = HashTarget::open(hash_path, area_end)?;
    if target.same_file_as(&data)? && layout.hash_offset < geometry.data_bytes() {
        return Err(VerityError::Overlap {
            path: hash_path.to_path_buf(),
            hash_offset: layout.hash_offset,
            data_end: geometry.data_bytes(),
        });
    }

    debug!(?params, data_blocks, ?layout, "hashing data");
    let mut builder = HashTreeBuilder::with_capacity(params.clone(), data_blocks);
    for (first, count) in batches(data_blocks, params.data_block_size) {
        let offset = first * params.data_block_size.bytes_u64();
        builder
            .hash_file_blocks(&data, offset, count)
            .map_err(io_err(data_path, "read"))?;
        progress(count as u64 * params.data_block_size.bytes_u64());
    }
    let tree = builder.finish().map_err(|source| VerityError::Tree {
        path: data_path.to_path_buf(),
        source,
    })?;

    target.write(&tree, &layout, uuid)?;
    let report = VerityReport::new(
        tree.geometry(),
        &params,
        &layout,
        uuid,
        Some(tree.root_hash().clone()),
    );
    Ok((report, tree))
}

/// Checks `data_path` against the tree in `hash_path` and `root_hash` (hex),
/// as `veritysetup verify` does, but top-down like the kernel, so that the
/// first mismatch found is the corrupt block: the top hash block against the
/// root hash, then each level against the verified level above, then the data
/// blocks in order.
pub fn verify(
    data_path: &Path,
    hash_path: &Path,
    opts: &VerityOptions,
    root_hash: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<VerityReport, VerityError> {
    let hash = open_input(hash_path, "open hash file")?;
    let data = open_input(data_path, "open data file")?;
    let resolved = resolve(&hash, hash_path, opts)?;
    let params = resolved.params;
    let root_hash = RootHash::from_hex(root_hash, params.algorithm)?;
    let data_blocks = data_block_count(&data, data_path, &params, resolved.data_blocks)?;
    let Placement {
        geometry,
        layout,
        end: area_end,
    } = place(&params, data_blocks, opts, data_path, hash_path)?;
    let hash_size = file_size(&hash, hash_path)?;
    if hash_size < area_end {
        return Err(VerityError::HashFileTooSmall {
            path: hash_path.to_path_buf(),
            size: hash_size,
            needed: area_end,
            offset: layout.hash_offset,
        });
    }

    let area = HashArea {
        params: params.clone(),
        geometry,
        layout,
    };
    let located = |e| located_error(e, params.algorithm, data_path, hash_path);
    let tree = area.verify_tree(&hash, &root_hash).map_err(located)?;
    area.verify_data(&data, &tree, &root_hash, progress)
        .map_err(located)?;
    let HashArea {
        geometry, layout, ..
    } = area;

    Ok(VerityReport::new(
        &geometry,
        &params,
        &layout,
        resolved.uuid,
        Some(root_hash),
    ))
}

/// Reads the superblock at `hash_offset` of `hash_path`, as `veritysetup
/// dump` does.
pub fn dump(hash_path: &Path, hash_offset: u64) -> Result<VerityReport, VerityError> {
    let hash = open_input(hash_path, "open hash file")?;
    let sb = read_superblock(&hash, hash_path, hash_offset)?;
    let opts = VerityOptions {
        hash_offset,
        ..VerityOptions::default()
    };
    let Placement {
        geometry, layout, ..
    } = place(&sb.params, sb.data_blocks, &opts, hash_path, hash_path)?;
    Ok(VerityReport::new(
        &geometry,
        &sb.params,
        &layout,
        Some(sb.uuid),
        None,
    ))
}

/// The shape of a tree and where it goes in the hash file.
struct Placement {
    geometry: TreeGeometry,
    layout: HashAreaLayout,
    /// First byte after the hash area.
    end: u64,
}

fn place(
    params: &TreeParams,
    data_blocks: u64,
    opts: &VerityOptions,
    data_path: &Path,
    hash_path: &Path,
) -> Result<Placement, VerityError> {
    let geometry_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VerityError::Geometry { path, source }
    };
    let geometry = TreeGeometry::new(params, data_blocks).map_err(geometry_err(data_path))?;
    let layout = HashAreaLayout::new(
        opts.hash_offset,
        !opts.no_superblock,
        params.hash_block_size,
    )
    .map_err(geometry_err(hash_path))?;
    let end = layout.end(&geometry).map_err(geometry_err(hash_path))?;
    Ok(Placement {
        geometry,
        layout,
        end,
    })
}

/// A [`CheckError`] with the file it concerns, as `verify` reports it.
fn located_error(
    e: CheckError,
    algorithm: HashAlgorithm,
    data_path: &Path,
    hash_path: &Path,
) -> VerityError {
    match e {
        CheckError::Read {
            what: "data",
            source,
            ..
        } => io_err(data_path, "read")(source),
        CheckError::Read { source, .. } => io_err(hash_path, "read")(source),
        CheckError::RootHashLength { given, expected } => ParamError::RootHashLength {
            algorithm,
            expected,
            actual: given,
        }
        .into(),
        CheckError::Mismatch(m) => match m {
            Mismatch::TopBlock { offset } => Corruption::RootHash {
                path: hash_path.to_path_buf(),
                what: "the top hash block",
                offset,
            },
            Mismatch::HashBlock {
                level,
                levels,
                index,
                offset,
            } => Corruption::HashBlock {
                path: hash_path.to_path_buf(),
                level,
                levels,
                index,
                offset,
            },
            Mismatch::DataBlock { index, offset } => Corruption::DataBlock {
                path: data_path.to_path_buf(),
                index,
                offset,
            },
            Mismatch::SingleDataBlock => Corruption::RootHash {
                path: data_path.to_path_buf(),
                what: "data block 0",
                offset: 0,
            },
        }
        .into(),
    }
}

struct Resolved {
    params: TreeParams,
    data_blocks: Option<u64>,
    uuid: Option<Uuid>,
}

/// The parameters for `verify`: from the superblock (checked against what
/// the caller gave) or, without one, from the caller.
fn resolve(hash: &File, hash_path: &Path, opts: &VerityOptions) -> Result<Resolved, VerityError> {
    if opts.no_superblock {
        let salt = opts.salt.clone().ok_or(VerityError::Missing(
            "--salt is required with --no-superblock (use - for an empty salt)",
        ))?;
        return Ok(Resolved {
            params: TreeParams {
                algorithm: opts.algorithm.unwrap_or_default(),
                data_block_size: opts.data_block_size.unwrap_or_default(),
                hash_block_size: opts.hash_block_size.unwrap_or_default(),
                salt,
            },
            data_blocks: opts.data_blocks,
            uuid: None,
        });
    }
    let sb = read_superblock(hash, hash_path, opts.hash_offset)?;
    let mismatch = |field, on_disk: String, given: String| VerityError::SuperblockMismatch {
        path: hash_path.to_path_buf(),
        field,
        on_disk,
        given,
    };
    let p = &sb.params;
    if let Some(a) = opts.algorithm.filter(|a| *a != p.algorithm) {
        return Err(mismatch(
            "the hash algorithm",
            p.algorithm.to_string(),
            a.to_string(),
        ));
    }
    if let Some(s) = opts.data_block_size.filter(|s| *s != p.data_block_size) {
        return Err(mismatch(
            "the data block size",
            p.data_block_size.to_string(),
            s.to_string(),
        ));
    }
    if let Some(s) = opts.hash_block_size.filter(|s| *s != p.hash_block_size) {
        return Err(mismatch(
            "the hash block size",
            p.hash_block_size.to_string(),
            s.to_string(),
        ));
    }
    if let Some(s) = opts.salt.as_ref().filter(|s| **s != p.salt) {
        return Err(mismatch(
            "the salt",
            p.salt.to_display_hex(),
            s.to_display_hex(),
        ));
    }
    if let Some(u) = opts.uuid.filter(|u| *u != sb.uuid) {
        return Err(mismatch("the UUID", sb.uuid.to_string(), u.to_string()));
    }
    if let Some(n) = opts.data_blocks.filter(|n| *n != sb.data_blocks) {
        return Err(mismatch(
            "the number of data blocks",
            sb.data_blocks.to_string(),
            n.to_string(),
        ));
    }
    Ok(Resolved {
        params: sb.params,
        data_blocks: Some(sb.data_blocks),
        uuid: Some(sb.uuid),
    })
}

fn read_superblock(hash: &File, path: &Path, offset: u64) -> Result<Superblock, VerityError> {
    if offset % 512 != 0 {
        return Err(VerityError::Geometry {
            path: path.to_path_buf(),
            source: super::geometry::GeometryError::BadHashOffset(format!(
                "hash offset {offset} is not a multiple of 512 bytes"
            )),
        });
    }
    let size = file_size(hash, path)?;
    let available = size.saturating_sub(offset).min(SUPERBLOCK_SIZE as u64) as usize;
    let mut buf = vec![0u8; available];
    read_exact_at(hash, path, &mut buf, offset)?;
    Superblock::parse(&buf).map_err(|source| VerityError::Superblock {
        path: path.to_path_buf(),
        source,
    })
}

/// Data blocks to hash: `given`, if the file holds them, or the whole file,
/// which must then be a whole number of blocks.
fn data_block_count(
    data: &File,
    path: &Path,
    params: &TreeParams,
    given: Option<u64>,
) -> Result<u64, VerityError> {
    let size = file_size(data, path)?;
    let bs = params.data_block_size.bytes_u64();
    match given {
        Some(blocks) => {
            let needed = blocks.saturating_mul(bs);
            if size < needed {
                return Err(VerityError::DataTooSmall {
                    path: path.to_path_buf(),
                    size,
                    blocks,
                    block_size: params.data_block_size.get(),
                    needed,
                });
            }
            Ok(blocks)
        }
        None if size % bs != 0 => Err(VerityError::DataSizeNotMultiple {
            path: path.to_path_buf(),
            size,
            block_size: params.data_block_size.get(),
        }),
        None => Ok(size / bs),
    }
}

/// Opens a data or hash file for reading; it must be a regular file or a
/// block device.
fn open_input(path: &Path, what: &'static str) -> Result<File, VerityError> {
    let file = File::open(path).map_err(io_err(path, what))?;
    let kind = file.metadata().map_err(io_err(path, "stat"))?.file_type();
    let name = if kind.is_dir() {
        "directory"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_fifo() {
        "fifo"
    } else if kind.is_socket() {
        "socket"
    } else {
        return Ok(file);
    };
    Err(VerityError::NotAFile {
        path: path.to_path_buf(),
        kind: name,
    })
}

/// Size of a regular file or block device.
fn file_size(file: &File, path: &Path) -> Result<u64, VerityError> {
    let mut f = file;
    f.seek(SeekFrom::End(0))
        .map_err(io_err(path, "get the size of"))
}

fn read_exact_at(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<(), VerityError> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
        .map_err(io_err(path, "read"))
}

/// Splits `blocks` data blocks into batches of about [`BATCH_BYTES`]:
/// `(first block, block count)`. Batches bound the memory of `verify` and
/// the granularity of progress reports; within a batch all cores work.
fn batches(blocks: u64, block_size: BlockSize) -> impl Iterator<Item = (u64, usize)> {
    let per_batch = (BATCH_BYTES / block_size.bytes()) as u64;
    (0..blocks.div_ceil(per_batch)).map(move |i| {
        let first = i * per_batch;
        (first, (blocks - first).min(per_batch) as usize)
    })
}

/// Where `format` writes: an existing file or device, updated in place, or a
/// new file written under a temporary name.
enum HashTarget {
    InPlace {
        file: File,
        path: PathBuf,
    },
    New {
        temp: tempfile::NamedTempFile,
        path: PathBuf,
    },
}

impl HashTarget {
    fn open(path: &Path, area_end: u64) -> Result<Self, VerityError> {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => {
                let meta = file.metadata().map_err(io_err(path, "stat"))?;
                if meta.file_type().is_block_device() {
                    let size = file_size(&file, path)?;
                    if size < area_end {
                        return Err(VerityError::HashFileTooSmall {
                            path: path.to_path_buf(),
                            size,
                            needed: area_end,
                            offset: 0,
                        });
                    }
                }
                Ok(HashTarget::InPlace {
                    file,
                    path: path.to_path_buf(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let dir = match path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                let temp = tempfile::Builder::new()
                    .prefix(&format!(".{}.", name.unwrap_or_default()))
                    .tempfile_in(dir)
                    .map_err(io_err(path, "create"))?;
                Ok(HashTarget::New {
                    temp,
                    path: path.to_path_buf(),
                })
            }
            Err(e) => Err(io_err(path, "open for writing")(e)),
        }
    }

    fn same_file_as(&self, other: &File) -> Result<bool, VerityError> {
        let HashTarget::InPlace { file, path } = self else {
            return Ok(false);
        };
        let a = file.metadata().map_err(io_err(path, "stat"))?;
        let b = other.metadata().map_err(io_err(path, "stat"))?;
        Ok(a.dev() == b.dev() && a.ino() == b.ino())
    }

    fn write(
        self,
        tree: &HashTree,
        layout: &HashAreaLayout,
        uuid: Option<Uuid>,
    ) -> Result<(), VerityError> {
        match self {
            HashTarget::New { mut temp, path } => {
                tree.write_hash_area(temp.as_file_mut(), layout, uuid)
                    .and_then(|()| temp.as_file().sync_all())
                    .map_err(io_err(&path, "write"))?;
                temp.persist(&path)
                    .map_err(|e| io_err(&path, "rename the finished hash file to")(e.error))?;
                Ok(())
            }
            HashTarget::InPlace { mut file, path } => {
                let result = tree
                    .write_hash_area(&mut file, layout, uuid)
                    .and_then(|()| file.sync_all());
                if let Err(e) = result {
                    if layout.superblock {
                        // Best effort: leave nothing that looks like a valid
                        // superblock in front of a partial tree.
                        let _ = file
                            .seek(SeekFrom::Start(layout.hash_offset))
                            .and_then(|_| file.write_all(&[0u8; SUPERBLOCK_SIZE]));
                    }
                    return Err(io_err(&path, "write")(e));
                }
                Ok(())
            }
        }
    }
}

/// Writes `root_hash` as lower-case hex without a newline, as `veritysetup
/// format --root-hash-file` does, replacing `path` atomically.
pub fn write_root_hash_file(path: &Path, root_hash: &RootHash) -> Result<(), VerityError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".roothash.")
        .tempfile_in(dir)
        .map_err(io_err(path, "create"))?;
    temp.write_all(root_hash.to_hex().as_bytes())
        .and_then(|()| temp.as_file().sync_all())
        .map_err(io_err(path, "write"))?;
    temp.persist(path)
        .map_err(|e| io_err(path, "rename the finished root hash file to")(e.error))?;
    Ok(())
}
