//! Anonymous shared memory that cannot leak.
//!
//! On Linux the segment is a `memfd`: it has no name, so nothing is left behind in `/dev/shm` when
//! every process holding it is gone, whatever way they die. Elsewhere it is a POSIX shared-memory
//! object unlinked immediately after creation, which gives the same guarantee. Children receive
//! the segment by inheriting (or being sent) its file descriptor.
//!
//! Mappings of 2 MiB or more start at a 2 MiB boundary (`HUGE_PAGE`), in every process that maps
//! the file: file offset 0 at an aligned address is what lets the kernel map a huge page of the
//! file with one page-table entry (a PMD) instead of 512. Whether the file has huge pages at all
//! is the business of [`SharedMemory::advise_huge_pages`] and [`SharedMemory::collapse`].
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::mm::{MapFlags, ProtFlags};

use crate::error::{CoreError, Result};

/// The size of a huge page (x86-64's and aarch64's PMD size with 4 KiB pages): mappings at least
/// this long are aligned to it.
pub const HUGE_PAGE: usize = 2 << 20;

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

    /// As `create`, with every page allocated up front, asking for huge pages before they are (see
    /// `advise_huge_pages`: where the system gives shared memory huge pages on fault, they
    /// come at once; elsewhere see `collapse`).
    pub fn create_populated_huge(name: &str, len: usize) -> Result<Self> {
        let memory = Self::create(name, len)?;
        memory.advise_huge_pages();
        memory.populate(0, len);
        Ok(memory)
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
        let address = if len >= HUGE_PAGE {
            map_aligned(&fd, len)?
        } else {
            // SAFETY: a fresh shared mapping of a file we own, at an address the kernel picks;
            // it aliases no Rust object.
            unsafe {
                rustix::mm::mmap(
                    std::ptr::null_mut(),
                    len,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::SHARED,
                    &fd,
                    0,
                )
            }
            .map_err(|e| CoreError::os("mmap", e))?
        };
        let base = NonNull::new(address.cast::<u8>())
            .ok_or_else(|| CoreError::InvalidSegment("mmap returned null".into()))?;
        Ok(Self { base, len, fd })
    }

    /// Asks the kernel for huge pages when this mapping faults pages in. Advice only: where
    /// shared memory gets no huge pages on fault (`shmem_enabled` of `never`, as on these
    /// machines), nothing changes, and `collapse` is the way to them.
    pub fn advise_huge_pages(&self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        self.advise(rustix::mm::Advice::LinuxHugepage);
    }

    /// Allocates the (zero) pages of `[offset, offset + len)`, writable, now: one system call
    /// instead of a page fault per page when they are first written (Linux's
    /// `MADV_POPULATE_WRITE`). Kernels before 5.14 and other systems refuse it; the pages are
    /// then allocated when first touched. The range is widened to whole pages and cut at the
    /// end of the mapping.
    pub fn populate(&self, offset: usize, len: usize) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let page = rustix::param::page_size();
            let start = (offset / page) * page;
            let end = offset.saturating_add(len).min(self.len);
            if start < end {
                // SAFETY: advice on pages of our own mapping; populating changes no byte of it.
                let _ = unsafe {
                    rustix::mm::madvise(
                        self.base.as_ptr().add(start).cast(),
                        end - start,
                        rustix::mm::Advice::LinuxPopulateWrite,
                    )
                };
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = (offset, len);
    }

    /// `madvise` over the whole mapping, its failure ignored (advice only).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn advise(&self, advice: rustix::mm::Advice) {
        // SAFETY: advice on our own mapping; the two kinds given (huge pages, populate) change
        // no byte of it.
        let _ = unsafe { rustix::mm::madvise(self.base.as_ptr().cast(), self.len, advice) };
    }

    /// Moves the pages of the whole huge pages inside `[offset, offset + len)` into huge pages,
    /// now (Linux's `MADV_COLLAPSE`, 6.1 and
    /// later): the kernel copies them, so this costs about a copy of the range, and more when
    /// it must first compact memory to find free huge pages. Content and every process's view
    /// of it are unchanged; a process touching the range meanwhile waits for the part being
    /// moved. Mappings of the file in other processes that start at a 2 MiB boundary map the
    /// huge pages with one entry each from their next fault on.
    ///
    /// Returns whether the kernel did it; false where it cannot (older kernels, other systems,
    /// no huge page to be had).
    #[must_use]
    pub fn collapse(&self, offset: usize, len: usize) -> bool {
        let Some(end) = offset.checked_add(len).filter(|&end| end <= self.len) else {
            return false;
        };
        collapse_range(self.base.as_ptr() as usize + offset, end - offset)
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

/// Maps `len` bytes of `fd` shared and writable at an address that is a multiple of `HUGE_PAGE`:
/// reserves `len + HUGE_PAGE` bytes of address space, maps the file over the aligned part of the
/// reservation, and gives back the rest. No other thread can be handed the range meanwhile: it
/// is reserved from the first call on.
fn map_aligned(fd: &OwnedFd, len: usize) -> Result<*mut std::ffi::c_void> {
    let page = rustix::param::page_size();
    let span = len
        .checked_next_multiple_of(page)
        .and_then(|mapped| mapped.checked_add(HUGE_PAGE))
        .ok_or_else(|| CoreError::InvalidArgument(format!("a mapping of {len} bytes")))?;
    // SAFETY: a fresh inaccessible private mapping at an address the kernel picks: a
    // reservation of address space that aliases nothing.
    let reserved = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            span,
            ProtFlags::empty(),
            MapFlags::PRIVATE | MapFlags::NORESERVE,
        )
    }
    .map_err(|e| CoreError::os("mmap", e))?;
    let start = reserved as usize;
    let aligned = start.next_multiple_of(HUGE_PAGE);
    // SAFETY: `[aligned, aligned + len)` lies inside the reservation just made, which only
    // this function knows of; MAP_FIXED replaces that part of it with the file.
    let mapped = unsafe {
        rustix::mm::mmap(
            aligned as *mut std::ffi::c_void,
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED | MapFlags::FIXED,
            fd,
            0,
        )
    };
    let end = aligned + len.next_multiple_of(page);
    // SAFETY: the parts of the reservation before and after the file's mapping (either may be
    // empty), still ours alone; after a failed mmap, the whole reservation.
    unsafe {
        if mapped.is_err() {
            let _ = rustix::mm::munmap(reserved, span);
        } else {
            if aligned > start {
                let _ = rustix::mm::munmap(reserved, aligned - start);
            }
            if start + span > end {
                let _ = rustix::mm::munmap(end as *mut std::ffi::c_void, start + span - end);
            }
        }
    }
    mapped.map_err(|e| CoreError::os("mmap", e))
}

/// `MADV_COLLAPSE` over the whole huge pages of `[address, address + len)`.
#[cfg(target_os = "linux")]
fn collapse_range(address: usize, len: usize) -> bool {
    /// Linux's `MADV_COLLAPSE` (include/uapi/asm-generic/mman-common.h), the same on every
    /// architecture and C library.
    const MADV_COLLAPSE: libc::c_int = 25;
    let first = address.next_multiple_of(HUGE_PAGE);
    let last = (address + len) / HUGE_PAGE * HUGE_PAGE;
    if last <= first {
        return false;
    }
    // SAFETY: advice on whole huge pages of one of our mappings; the kernel keeps the content.
    unsafe { libc::madvise(first as *mut libc::c_void, last - first, MADV_COLLAPSE) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn collapse_range(_address: usize, _len: usize) -> bool {
    false
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
