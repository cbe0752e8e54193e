//! Shared regions: one anonymous memory file per large buffer, reachable from other processes.
//!
//! A region is a `memfd` mapped in this process, with its descriptor kept open. Another process
//! of the same user opens it through `/proc/<pid>/fd/<fd>` (its *handle*) for as long as this
//! process keeps the region. The kernel frees the memory when the last mapping and descriptor
//! are gone, in whichever process that happens and however processes end: nothing can leak,
//! and a crashed process's regions go with it.
//!
//! Every live region of this process is in a registry keyed by address, so a buffer that
//! already lies in shared memory (a view received from another process, a shared array) is sent
//! again by reference instead of being copied. A second registry caches the regions opened from
//! other processes, keyed by (pid, fd, inode): a handle received twice is mapped once.
//!
//! Linux only (`/proc`); elsewhere `open` fails and callers send buffers inline.
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::error::{CoreError, Result};
use crate::shm::SharedMemory;

/// Where a region can be opened from: its exporting process and descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The exporting process.
    pub pid: u32,
    /// The descriptor number in that process.
    pub fd: i32,
}

/// A mapped memory file whose descriptor this process keeps open.
#[derive(Debug)]
pub struct Region {
    memory: SharedMemory,
}

impl Region {
    /// A new zero-filled region of `length` bytes, pages populated up front (one system call
    /// instead of a page fault per page when it is filled).
    pub fn create(length: usize) -> Result<Arc<Self>> {
        let memory = SharedMemory::create_populated("gilfree-buffer", length)?;
        Ok(register(Self { memory }))
    }

    /// Opens the region another process exported as `origin` (or this process: a handle can
    /// come back), reusing the mapping if this process already has it.
    pub fn open(origin: Origin) -> Result<Arc<Self>> {
        let path = format!("/proc/{}/fd/{}", origin.pid, origin.fd);
        let fd = rustix::fs::open(
            path.as_str(),
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| CoreError::os("open shared buffer", e))?;
        // What was opened must be one of gilfree's memory files, not any file a forged handle
        // names (checked on our own descriptor, so it is the file we will map).
        let opened = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let target = rustix::fs::readlinkat(rustix::fs::CWD, opened.as_str(), Vec::new())
            .map_err(|e| CoreError::os("readlink shared buffer", e))?;
        if !target.to_bytes().starts_with(b"/memfd:gilfree-buffer") {
            return Err(CoreError::InvalidArgument(format!("{path} is not a gilfree buffer")));
        }
        // The inode of what was opened (not of a second lookup of the path, which the origin
        // could have reused meanwhile) tells a cached mapping of the same file.
        let inode = rustix::fs::fstat(&fd).map_err(|e| CoreError::os("fstat shared buffer", e))?.st_ino;
        let key = (origin, inode);
        if let Some(region) = lock(&OPENED).get(&key).and_then(Weak::upgrade) {
            return Ok(region);
        }
        let region = register(Self { memory: SharedMemory::open(fd)? });
        let mut opened = lock(&OPENED);
        opened.retain(|_, region| region.strong_count() > 0);
        opened.insert(key, Arc::downgrade(&region));
        Ok(region)
    }

    /// The handle other processes open this region by.
    #[must_use]
    pub fn origin(&self) -> Origin {
        Origin { pid: std::process::id(), fd: self.memory.fd().as_fd().as_raw_fd() }
    }

    /// The first byte.
    #[must_use]
    pub fn as_ptr(&self) -> *mut u8 {
        self.memory.base().as_ptr()
    }

    /// Length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.memory.len()
    }

    /// Always false: regions are never empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The region of this process containing `[address, address + length)`, with the offset
    /// of `address` in it.
    #[must_use]
    pub fn containing(address: usize, length: usize) -> Option<(Arc<Self>, usize)> {
        let regions = lock(&REGIONS);
        let (&start, region) = regions.range(..=address).next_back()?;
        let region = region.upgrade()?;
        let offset = address - start;
        (offset.checked_add(length)? <= region.len()).then_some((region, offset))
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        lock(&REGIONS).remove(&(self.as_ptr() as usize));
    }
}

static REGIONS: Mutex<BTreeMap<usize, Weak<Region>>> = Mutex::new(BTreeMap::new());
/// Regions opened from other processes, by origin and inode.
type OpenedRegions = HashMap<(Origin, u64), Weak<Region>>;
static OPENED: std::sync::LazyLock<Mutex<OpenedRegions>> = std::sync::LazyLock::new(Mutex::default);

fn register(region: Region) -> Arc<Region> {
    let region = Arc::new(region);
    lock(&REGIONS).insert(region.as_ptr() as usize, Arc::downgrade(&region));
    region
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_is_found_by_any_address_inside_it() {
        let region = Region::create(1 << 16).unwrap();
        let start = region.as_ptr() as usize;
        let (found, offset) = Region::containing(start + 100, 50).unwrap();
        assert!(Arc::ptr_eq(&found, &region));
        assert_eq!(offset, 100);
        assert!(Region::containing(start + (1 << 16) - 10, 50).is_none());
    }

    #[test]
    fn a_dropped_region_is_forgotten() {
        let region = Region::create(1 << 16).unwrap();
        let start = region.as_ptr() as usize;
        drop(region);
        assert!(Region::containing(start, 1).is_none());
    }

    #[test]
    fn opening_an_own_handle_maps_the_same_memory() {
        let region = Region::create(4096).unwrap();
        // SAFETY: the region is 4096 bytes long and nothing else uses it.
        unsafe { region.as_ptr().write(42) };
        let again = Region::open(region.origin()).unwrap();
        // SAFETY: as above, through the second mapping.
        assert_eq!(unsafe { again.as_ptr().read() }, 42);
        let third = Region::open(region.origin()).unwrap();
        assert!(Arc::ptr_eq(&again, &third), "a handle opened twice is mapped once");
    }

    #[test]
    fn opening_a_handle_of_no_process_fails() {
        assert!(Region::open(Origin { pid: u32::MAX, fd: 3 }).is_err());
    }
}
