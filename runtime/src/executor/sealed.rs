//! A checked kernels object as a sealed in-memory file, so `dlopen` maps exactly the bytes the
//! loader validated.
//!
//! The loader reads `kernels.so` once, checks its SHA-256 and its signature table on those bytes,
//! then must load the same bytes: opening the artifact's path again would load whatever the file
//! is by then (a time-of-check to time-of-use window: an object swapped in after the check runs
//! unvalidated code, initializers first). The bytes go into a `memfd` instead, sealed against
//! writes, growing and shrinking, and `dlopen` opens it through `/proc/self/fd/N`; nothing on
//! the file system can change what is mapped.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;

/// An anonymous, sealed, read-only file holding a kernels object's bytes; closed on drop. Keep
/// it open for as long as a library opened through [`SealedObject::path`] is loaded: `dlopen`
/// matches loaded objects by path string, so a reused descriptor number would hand a later
/// `dlopen` the earlier object.
pub struct SealedObject {
    file: File,
}

impl SealedObject {
    /// Copies `bytes` into a new memfd named `name` (the name shows in `/proc/self/maps` as
    /// `/memfd:NAME`) and seals it: no write, grow or shrink, and no further change of the seals.
    pub fn new(name: &str, bytes: &[u8]) -> std::io::Result<SealedObject> {
        let name =
            std::ffi::CString::new(name).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `name` is a NUL-terminated string that outlives the call.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let mut file = unsafe { File::from_raw_fd(fd) };
        file.write_all(bytes)?;
        let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
        // SAFETY: `fcntl` on an fd this function owns; F_ADD_SEALS takes an int argument.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(SealedObject { file })
    }

    /// The path `dlopen` opens the sealed bytes by, valid while `self` lives.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_sealed_file_reads_back_its_bytes_and_refuses_writes() {
        let sealed = SealedObject::new("tessera-test", b"\x7fELF and the rest").expect("memfd");
        let mut back = Vec::new();
        File::open(sealed.path()).and_then(|mut f| f.read_to_end(&mut back)).expect("reopen");
        assert_eq!(back, b"\x7fELF and the rest");
        // Reopened for writing through /proc, the seal still refuses a change of the bytes.
        let write = std::fs::OpenOptions::new().write(true).open(sealed.path()).and_then(|mut f| f.write_all(b"x"));
        assert_eq!(write.map_err(|e| e.raw_os_error()), Err(Some(libc::EPERM)));
    }
}
