//! Finding the block device of a device-mapper target by name.
//!
//! libdevmapper creates `/dev/mapper/<name>` itself when udev is not
//! running (as in this initramfs). devtmpfs always has `/dev/dm-<N>`, and
//! `/sys/block/dm-<N>/dm/name` tells which name it carries; that is the
//! fallback, so a missing `/dev/mapper` node is never a boot failure.

use std::io;
use std::path::{Path, PathBuf};

/// `/dev/mapper/<name>`.
pub fn mapper_path(name: &str) -> PathBuf {
    Path::new("/dev/mapper").join(name)
}

/// The device node of the mapping `name`: `<dev>/mapper/<name>` when it
/// exists, else `<dev>/dm-<N>` for the `dm-<N>` under `sys_block` whose
/// `dm/name` is `name`.
pub fn find_mapping(name: &str, dev: &Path, sys_block: &Path) -> io::Result<PathBuf> {
    let mapper = dev.join("mapper").join(name);
    if mapper.exists() {
        return Ok(mapper);
    }
    let mut entries: Vec<_> = std::fs::read_dir(sys_block)?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("dm-"))
        .collect();
    entries.sort();
    for entry in entries {
        let dm_name = std::fs::read_to_string(sys_block.join(&entry).join("dm/name"));
        if dm_name.is_ok_and(|n| n.trim_end() == name) {
            let node = dev.join(&entry);
            if node.exists() {
                return Ok(node);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "no {} and no dm-N device named {name} in {}",
            mapper.display(),
            sys_block.display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn mapper_node_first_then_dm_n_by_sysfs_name() {
        let t = tempfile::tempdir().unwrap();
        let (dev, sys) = (t.path().join("dev"), t.path().join("sys/block"));
        for (n, name) in [(0, "root_verity"), (1, "cocos_crypt")] {
            fs::create_dir_all(sys.join(format!("dm-{n}/dm"))).unwrap();
            fs::write(sys.join(format!("dm-{n}/dm/name")), format!("{name}\n")).unwrap();
        }
        fs::create_dir_all(sys.join("sda")).unwrap();
        fs::create_dir_all(&dev).unwrap();
        fs::write(dev.join("dm-0"), b"").unwrap();
        fs::write(dev.join("dm-1"), b"").unwrap();

        assert_eq!(
            find_mapping("cocos_crypt", &dev, &sys).unwrap(),
            dev.join("dm-1")
        );
        assert_eq!(
            find_mapping("root_verity", &dev, &sys).unwrap(),
            dev.join("dm-0")
        );
        assert_eq!(
            find_mapping("other", &dev, &sys).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );

        fs::create_dir_all(dev.join("mapper")).unwrap();
        fs::write(dev.join("mapper/root_verity"), b"").unwrap();
        assert_eq!(
            find_mapping("root_verity", &dev, &sys).unwrap(),
            dev.join("mapper/root_verity")
        );
    }
}
