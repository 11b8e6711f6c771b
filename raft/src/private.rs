//! Data at rest stays private to the node's user: directories 0700, files 0600.
//!
//! The `edgerun` binary sets its umask to 077 first thing, which covers every file sled and
//! the helpers create; the files this crate writes itself (log segments, snapshots, backups)
//! are also created with explicit modes, so they stay private when the crate runs under
//! another umask (tests, other binaries). [`prepare_data_dir`] creates the data directory or
//! tightens one made looser by hand or by an earlier edgerun; [`loose_modes`] lists what
//! group or others can reach (`edgerun doctor` warns about it).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the directories edgerun creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files edgerun creates.
pub const FILE_MODE: u32 = 0o600;
/// Group and other permission bits: none may be set on data at rest.
pub const LOOSE_BITS: u32 = 0o077;

/// Create `dir` and any missing parents, each 0700 (an existing one is left as it is).
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Open a new file at `path` for writing, 0600; fails if anything is there already
/// (`O_EXCL`: never follows a planted symlink, never replaces a file).
pub fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Open `path` for writing, created 0600 if missing, truncated if present.
pub fn create(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Create the data directory `dir` (0700, with missing parents) or, when it exists with group
/// or other bits, chmod it 0700. Only `dir` itself is changed, never a parent the operator
/// chose. Returns the mode it had when it was tightened, for the caller to log.
pub fn prepare_data_dir(dir: &Path) -> Result<Option<u32>, String> {
    create_dir(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & LOOSE_BITS == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
        .map_err(|e| format!("chmod 700 {}: {e}", dir.display()))?;
    Ok(Some(mode))
}

/// What group or others may reach under a directory: at most `cap` paths with their modes,
/// and how many there are in all.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Loose {
    pub paths: Vec<(PathBuf, u32)>,
    pub total: usize,
}

impl Loose {
    fn add(&mut self, path: PathBuf, mode: u32, cap: usize) {
        self.total += 1;
        if self.paths.len() < cap {
            self.paths.push((path, mode));
        }
    }
}

/// `root` and everything under it (symlinks are not followed; their own modes mean nothing)
/// with any group or other bit set. Unreadable entries are skipped.
pub fn loose_modes(root: &Path, cap: usize) -> Loose {
    let mut out = Loose::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & LOOSE_BITS != 0 {
            out.add(p.clone(), mode, cap);
        }
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                let mut children: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
                // Reverse order on the stack: the listing comes out sorted.
                children.sort_unstable_by(|a, b| b.cmp(a));
                stack.extend(children);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn a_loose_data_dir_is_tightened_and_loose_files_are_listed() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let data = tmp.path().join("a").join("data");
        assert_eq!(prepare_data_dir(&data), Ok(None));
        assert_eq!(mode(&data), 0o700);
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(prepare_data_dir(&data), Ok(Some(0o755)));
        assert_eq!(mode(&data), 0o700);

        let f = data.join("x");
        drop(create_new(&f).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(mode(&f), 0o600);
        assert!(create_new(&f).is_err(), "create_new replaced a file");
        assert_eq!(loose_modes(&data, 10), Loose::default());

        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{e}"));
        create_dir(&data.join("sub")).unwrap_or_else(|e| panic!("{e}"));
        for i in 0..3 {
            let g = data.join("sub").join(format!("g{i}"));
            drop(create(&g).unwrap_or_else(|e| panic!("{e}")));
            std::fs::set_permissions(&g, std::fs::Permissions::from_mode(0o640))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let l = loose_modes(&data, 2);
        assert_eq!(l.total, 4, "{l:?}");
        assert_eq!(
            l.paths,
            vec![
                (data.join("sub").join("g0"), 0o640),
                (data.join("sub").join("g1"), 0o640)
            ]
        );
    }
}
