//! Crash-safe output files and directories, the one implementation every tessera crate writes
//! through: a file is staged beside its destination, fsynced and renamed over it; a directory
//! is staged whole (`.NAME.tmp-PID`) and renamed into place. Destinations are confined: only a
//! regular file is ever replaced, never a symlink, FIFO, device node or socket, so `-o
//! /dev/full` or `-o link-to-elsewhere` is refused instead of silently replaced or followed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: is {kind}, not a regular file; tessera writes only regular files and will not replace it", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{}: the output must name a file or directory inside an existing directory", path.display())]
    NoName { path: PathBuf },
}

fn io<'p>(path: &'p Path, what: &'static str) -> impl FnOnce(std::io::Error) -> FileError + 'p {
    move |source| FileError::Io { path: path.to_path_buf(), what, source }
}

/// What the existing entry at `path` is, for the ones tessera refuses to replace.
fn special_kind(file_type: fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_symlink() {
        Some("a symbolic link")
    } else if file_type.is_fifo() {
        Some("a FIFO")
    } else if file_type.is_char_device() || file_type.is_block_device() {
        Some("a device node")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_dir() {
        Some("a directory")
    } else {
        None
    }
}

/// Refuses `path` unless it is absent or a regular file (symlinks are not followed).
pub fn check_file_destination(path: &Path) -> Result<(), FileError> {
    match fs::symlink_metadata(path) {
        Ok(meta) => match special_kind(meta.file_type()) {
            Some(kind) => Err(FileError::NotRegular { path: path.to_path_buf(), kind }),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path, "cannot inspect")(e)),
    }
}

/// Refuses `path` unless it is absent or a real directory (not a symlink to one).
pub fn check_dir_destination(path: &Path) -> Result<(), FileError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(meta) => Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind: special_kind(meta.file_type()).unwrap_or("a regular file"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path, "cannot inspect")(e)),
    }
}

/// The directory holding `path` (`.` for a bare name) and `path`'s file name.
fn split(path: &Path) -> Result<(PathBuf, String), FileError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && *n != "..")
        .ok_or_else(|| FileError::NoName { path: path.to_path_buf() })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_string()))
}

/// A hidden sibling of `path` to stage it in (same directory, so the rename is atomic), unique
/// within this process.
fn staging_path(parent: &Path, name: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent.join(format!(".{name}.tmp-{}-{unique}", std::process::id()))
}

/// Creates `path` (which must not exist) with `bytes` and fsyncs it: for files inside a
/// directory that is itself staged.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let mut file = fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(io(path, "cannot create"))?;
    file.write_all(bytes).map_err(io(path, "cannot write"))?;
    file.sync_all().map_err(io(path, "cannot sync"))
}

/// [`write_synced`] of the bytes `write` writes to the new file: content produced piece by
/// piece (a weights image) is never held whole in memory.
pub fn write_synced_from(
    path: &Path,
    write: impl FnOnce(&mut fs::File) -> std::io::Result<()>,
) -> Result<(), FileError> {
    let mut file = fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(io(path, "cannot create"))?;
    write(&mut file).map_err(io(path, "cannot write"))?;
    file.sync_all().map_err(io(path, "cannot sync"))
}

/// Fsyncs a directory, so the entries created or renamed in it survive a crash.
pub fn sync_dir(path: &Path) -> Result<(), FileError> {
    fs::File::open(path).and_then(|d| d.sync_all()).map_err(io(path, "cannot sync directory"))
}

/// Writes `bytes` to `path` through a staged sibling file and a rename, so a failure leaves
/// either the old file or the new one, never a partial one. Refuses a destination that is not
/// a regular file (see [`check_file_destination`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    check_file_destination(path)?;
    let (parent, name) = split(path)?;
    let tmp = staging_path(&parent, &name);
    // Errors name the destination, which the user typed, not the hidden staging file.
    let result = write_synced(&tmp, bytes)
        .map_err(|e| match e {
            FileError::Io { what, source, .. } => FileError::Io { path: path.to_path_buf(), what, source },
            other => other,
        })
        .and_then(|()| fs::rename(&tmp, path).map_err(io(path, "cannot rename into place")));
    if result.is_err() {
        // Best effort: the staged file may not exist if creating it was what failed.
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(&parent)
}

/// A directory being staged beside its destination; removed on drop unless published.
pub struct StagedDir {
    path: PathBuf,
    parent: PathBuf,
    name: String,
    published: bool,
}

impl StagedDir {
    /// Creates an empty staging directory beside `dest`. `dest` must be absent or a real
    /// directory; whether an existing one may be replaced is the caller's decision, made
    /// before [`StagedDir::publish`].
    pub fn beside(dest: &Path) -> Result<StagedDir, FileError> {
        check_dir_destination(dest)?;
        let (parent, name) = split(dest)?;
        let path = staging_path(&parent, &name);
        fs::create_dir(&path).map_err(io(&path, "cannot create"))?;
        Ok(StagedDir { path, parent, name, published: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fsyncs the staged directory and renames it onto `parent/name`; an existing directory
    /// there is moved aside first (rename(2) cannot replace a non-empty one) and removed after.
    pub fn publish(mut self) -> Result<PathBuf, FileError> {
        let dest = self.parent.join(&self.name);
        sync_dir(&self.path)?;
        replace_dir(&self.path, &dest)?;
        self.published = true;
        Ok(dest)
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Renames the complete directory `staged` onto `dest` (a sibling), replacing a directory
/// already there, and fsyncs the parent. Refuses a `dest` that is a symlink or not a directory.
pub fn replace_dir(staged: &Path, dest: &Path) -> Result<(), FileError> {
    check_dir_destination(dest)?;
    let (parent, name) = split(dest)?;
    if fs::symlink_metadata(dest).is_ok() {
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        fs::rename(dest, &old).map_err(io(dest, "cannot move the previous directory aside"))?;
        fs::rename(staged, dest).map_err(io(dest, "cannot rename into place"))?;
        let _ = fs::remove_dir_all(&old);
    } else {
        fs::rename(staged, dest).map_err(io(dest, "cannot rename into place"))?;
    }
    sync_dir(&parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tessera-files-test-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn write_atomic_replaces_a_regular_file_and_leaves_no_staging_file() {
        let dir = scratch();
        let path = dir.join("out.txt");
        write_atomic(&path, b"one").expect("first write");
        write_atomic(&path, b"two").expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert_eq!(entries(&dir), vec!["out.txt"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn write_atomic_refuses_symlinks_fifos_devices_and_directories() {
        let dir = scratch();
        let target = dir.join("target.txt");
        fs::write(&target, b"keep").expect("write target");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let e = write_atomic(&link, b"new").expect_err("a symlink is refused");
        assert!(e.to_string().ends_with("link: is a symbolic link, not a regular file; tessera writes only regular files and will not replace it"), "{e}");
        assert!(fs::symlink_metadata(&link).expect("link kept").file_type().is_symlink());
        assert_eq!(fs::read(&target).expect("read"), b"keep");

        let fifo = dir.join("fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
        assert!(status.success());
        let e = write_atomic(&fifo, b"new").expect_err("a FIFO is refused");
        assert!(e.to_string().contains("is a FIFO"), "{e}");

        let e = write_atomic(Path::new("/dev/null"), b"new").expect_err("a device is refused");
        assert!(e.to_string().contains("/dev/null: is a device node"), "{e}");
        let e = write_atomic(&dir, b"new").expect_err("a directory is refused");
        assert!(e.to_string().contains("is a directory"), "{e}");
        assert_eq!(entries(&dir), vec!["fifo", "link", "target.txt"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn staged_dir_replaces_a_directory_whole_or_is_removed_when_dropped() {
        let dir = scratch();
        let dest = dir.join("art");
        fs::create_dir(&dest).expect("mkdir");
        fs::write(dest.join("old.txt"), b"old").expect("write old");
        let staged = StagedDir::beside(&dest).expect("stage");
        write_synced(&staged.path().join("new.txt"), b"new").expect("write new");
        staged.publish().expect("publish");
        assert_eq!(entries(&dest), vec!["new.txt"]);
        assert_eq!(entries(&dir), vec!["art"]);

        let abandoned = StagedDir::beside(&dest).expect("stage");
        write_synced(&abandoned.path().join("half.txt"), b"half").expect("write");
        drop(abandoned);
        assert_eq!(entries(&dir), vec!["art"]);

        let link = dir.join("link");
        std::os::unix::fs::symlink(&dest, &link).expect("symlink");
        let e = StagedDir::beside(&link).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("is a symbolic link"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }
}
