//! Anonymous shared memory that cannot leak.
//!
//! On Linux the segment is a `memfd`: it has no name, so nothing is left behind in `/dev/shm` when
//! every process holding it is gone, whatever way they die. Elsewhere it is a POSIX shared-memory
//! object unlinked immediately after creation, which gives the same guarantee. Children receive
//! the segment by inheriting (or being sent) its file descriptor.
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::mm::{MapFlags, ProtFlags};

use crate::error::{CoreError, Result};

/// A shared, writable mapping of a whole memory file.
#[derive(Debug)]
pub struct SharedMemory {
    base: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain shared memory; every access to it goes through atomics or through
// the ring protocol, which gives each byte a single writer at a time.
unsafe impl Send for SharedMemory {}
// SAFETY: as above; `&SharedMemory` only hands out raw addresses.
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    /// Creates a zero-filled segment of `len` bytes. Pages are only backed when first touched.
    pub fn create(name: &str, len: usize) -> Result<Self> {
        if len == 0 {
            return Err(CoreError::InvalidArgument(
                "shared memory length must be > 0".into(),
            ));
        }
        let fd = create_anonymous_file(name)?;
        rustix::fs::ftruncate(&fd, len as u64).map_err(|e| CoreError::os("ftruncate", e))?;
        Self::map(fd, len)
    }

    /// As `create`, with every page allocated up front (for memory about to be filled).
    pub fn create_populated(name: &str, len: usize) -> Result<Self> {
        if len == 0 {
            return Err(CoreError::InvalidArgument(
                "shared memory length must be > 0".into(),
            ));
        }
        let fd = create_anonymous_file(name)?;
        rustix::fs::ftruncate(&fd, len as u64).map_err(|e| CoreError::os("ftruncate", e))?;
        Self::map_with(fd, len, populate_flag())
    }

    /// Maps an inherited segment; its length is read from the file.
    pub fn open(fd: OwnedFd) -> Result<Self> {
        let stat = rustix::fs::fstat(&fd).map_err(|e| CoreError::os("fstat", e))?;
        let len = usize::try_from(stat.st_size)
            .map_err(|_| CoreError::InvalidSegment("negative size".into()))?;
        if len == 0 {
            return Err(CoreError::InvalidSegment("empty segment".into()));
        }
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Self> {
        Self::map_with(fd, len, MapFlags::empty())
    }

    fn map_with(fd: OwnedFd, len: usize, extra: MapFlags) -> Result<Self> {
        // SAFETY: a fresh shared mapping of a file we own, at an address the kernel picks; it
        // aliases no Rust object.
        let address = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | extra,
                &fd,
                0,
            )
        }
        .map_err(|e| CoreError::os("mmap", e))?;
        let base = NonNull::new(address.cast::<u8>())
            .ok_or_else(|| CoreError::InvalidSegment("mmap returned null".into()))?;
        Ok(Self { base, len, fd })
    }

    /// The first byte of the mapping (page-aligned).
    #[must_use]
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// The mapping's length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: empty segments cannot be created.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memory file, to pass to a child process.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe the mapping made in `map`, and no reference into it
        // outlives `self` (borrows of the segment are tied to `&self`).
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn create_anonymous_file(name: &str) -> Result<OwnedFd> {
    rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| CoreError::os("memfd_create", e))
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn create_anonymous_file(name: &str) -> Result<OwnedFd> {
    use rustix::shm;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let unique = format!(
        "/{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let fd = shm::open(
        unique.as_str(),
        shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
    )
    .map_err(|e| CoreError::os("shm_open", e))?;
    // Unlinked at once: the object lives only as long as its descriptors and mappings.
    shm::unlink(unique.as_str()).map_err(|e| CoreError::os("shm_unlink", e))?;
    Ok(fd)
}

/// Duplicates a descriptor this process holds open (for example one received from Python).
pub fn duplicate_fd(fd: std::os::fd::RawFd) -> Result<OwnedFd> {
    // SAFETY: `fd` is only borrowed for the duration of the dup call; a closed or invalid
    // descriptor makes dup fail with EBADF rather than touching anything else.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed
        .try_clone_to_owned()
        .map_err(|e| CoreError::os("dup", e))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn populate_flag() -> MapFlags {
    MapFlags::POPULATE
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn populate_flag() -> MapFlags {
    MapFlags::empty()
}
