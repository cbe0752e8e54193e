//! Shared regions: one anonymous memory file per large buffer, reachable from other processes.
//!
//! A region is a `memfd` mapped in this process, with its descriptor kept open. Another process
//! of the same user opens it through `/proc/<pid>/fd/<fd>` (its *handle*) for as long as this
//! process keeps the region. The kernel frees the memory when the last mapping and descriptor
//! are gone, in whichever process that happens and however processes end: nothing can leak,
//! and a crashed process's regions go with it.
//!
//! Every live region of this process is in a registry keyed by address, so a buffer that
//! already lies in a region this process shared on purpose (a shared array) is sent again by
//! reference instead of being copied (see `Region::by_reference`). A second registry caches the
//! regions opened from other processes, keyed by (pid, fd, inode): a handle received twice is
//! mapped once.
//!
//! A [`Region`] is one *use* of a mapping, listed in the mapping table below while it lives. The
//! mapping of a region opened from another process outlives its last use: the most recent ones
//! are kept mapped (`MAPPED_COUNT`, `MAPPED_BYTES`), so when its owner sends the same recycled
//! region again, the receiver finds its pages already mapped instead of faulting them in anew.
//! Keeping a mapping does not keep the region busy; only a use does, and a receiver reads a
//! region only through a use made from a handle received after the owner wrote it.
//!
//! Creating a region costs the kernel a page allocation per 4 KiB (about 0.6 ms per MiB here),
//! more than copying the data. So regions made for copies are recycled, and made roomy: the
//! uses that follow one another are of similar but rarely equal sizes (a map's chunks grow and
//! shrink with their measured cost), and a region fitting each use exactly would fit few of
//! the next ones, so every map would make new regions (a map of 3000 small arrays made 2 to 5
//! each time, 8 to 22 MB of new pages). A pooled region gets room for half as much again as
//! its first use, rounded up to a power of two (`pooled_capacity`), but only the pages a use
//! writes get allocated: the rest of the file costs nothing until a larger use needs it.
//!
//! Each region starts with a header listing the pid of every mapping of it (a mapping claims a
//! free entry when made and clears it when unmapped; past `MAPPING_ENTRIES`, an overflow count). A region this
//! process created, no longer uses, and that no live process maps any more is reused by the
//! next `acquire`. A process that dies while mapping a region leaves its entry behind; the pid
//! no longer exists, so the entry no longer counts, and it is freed for the next mapping (see
//! `Mappings` for the invariant). The pool keeps at most `POOL_BYTES`; the kernel frees a
//! dropped region with its last mapping.
//!
//! Linux only (`/proc`); elsewhere `open` fails and callers send buffers inline.
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::error::{CoreError, Result};
use crate::huge;
use crate::shm::{SharedMemory, HUGE_PAGE};

/// Where a region can be opened from: its exporting process and descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The exporting process.
    pub pid: u32,
    /// The descriptor number in that process.
    pub fd: i32,
}

/// Bytes before a region's data in its memory file: the mapping table, on its own cache line.
pub const HEADER: usize = 64;
/// Mappings listed by pid in the header; more are only counted.
const MAPPING_ENTRIES: usize = 15;
const _: () = assert!(std::mem::size_of::<Mappings>() <= HEADER);

/// The header: who maps the region. Zeroed memory is an empty table.
///
/// Invariant: every live use (`Region`) of the memory file in a live process is recorded,
/// by an entry holding that process's pid or by one count of `overflow`. So a region whose
/// entries name no live process but its owner, once, and whose `overflow` is 0, is read by no
/// live process, and its owner may overwrite it. The entries of one pid are interchangeable:
/// a process adds its pid to any free entry and removes it from any entry holding it.
///
/// An entry holding the pid of a process that no longer exists records no use (its process
/// died mapping the region: a worker that crashed while holding an argument). It must be
/// freed, or the table fills up with dead workers, one entry per crash, and the next mapping
/// goes to `overflow`, where no one can tell a dead process's count from a live one's: the
/// region would stay busy for good (a crash in every 15 leaked a pooled region, until the pool
/// held `POOL_BYTES` of them). So the owner clears dead entries whenever it checks whether the
/// region is idle, and a mapper that finds no free entry takes over a dead one before it
/// counts an overflow. Both change an entry only by a compare-exchange from the very pid seen
/// dead, so they never touch another entry, nor one that changed meanwhile. That relies on no
/// new process getting that pid and mapping the region between the check and the exchange
/// (microseconds; Linux hands out pids in increasing order, wrapping only at `pid_max`). A
/// zombie (dead, not yet reaped) still looks alive: its entry is freed at a later check.
/// Only an overflow count left by a dead process stays (more than 15 processes mapping one
/// region at once, one of them crashing): that region is never reused, and leaves the pool
/// with the oldest ones.
#[repr(C)]
struct Mappings {
    pids: [AtomicU32; MAPPING_ENTRIES],
    overflow: AtomicU32,
}

impl Mappings {
    /// Records a mapping by this process: in a free entry, else in one left by a dead
    /// process, else in `overflow`.
    fn add(&self) {
        let me = std::process::id();
        let claimed = self.pids.iter().any(|entry| {
            entry
                .compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        if claimed {
            return;
        }
        let taken_over = self.pids.iter().any(|entry| {
            let pid = entry.load(Ordering::SeqCst);
            pid != 0
                && pid != me
                && !process_alive(pid)
                && entry
                    .compare_exchange(pid, me, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
        });
        if !taken_over {
            self.overflow.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Forgets one mapping by this process.
    fn remove(&self) {
        let me = std::process::id();
        let released = self.pids.iter().any(|entry| {
            entry
                .compare_exchange(me, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        if !released {
            self.overflow.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Whether this process's one mapping is the only mapping by a live process. Clears the
    /// entries of processes that no longer exist on the way (see the invariant above).
    fn only_mine(&self) -> bool {
        let me = std::process::id();
        let mut mine = 0;
        let mut others = false;
        for entry in &self.pids {
            match entry.load(Ordering::SeqCst) {
                0 => {}
                pid if pid == me => mine += 1,
                pid if process_alive(pid) => others = true,
                pid => {
                    // Fails only if the entry changed since it was read: then it is not ours
                    // to clear.
                    let _ = entry.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
                }
            }
        }
        !others && mine == 1 && self.overflow.load(Ordering::SeqCst) == 0
    }
}

fn process_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}
/// Idle regions kept for reuse, in bytes of allocated pages.
const POOL_BYTES: usize = 1 << 30;
/// Uses of at least this many bytes get pooled regions of exactly their size: past it, the
/// room left for larger uses would be mapped for nothing in every process that maps the region
/// (and count against `MAPPED_BYTES` there).
const ROOMY_MAX: usize = 64 << 20;

/// Mappings of other processes' regions kept after their last use, most recent last: at most
/// this many, and this many bytes.
const MAPPED_COUNT: usize = 32;
const MAPPED_BYTES: usize = 256 << 20;

/// The data bytes of a new pooled region whose first use is `length` bytes: room for half as
/// much again, the whole file rounded up to a power of two (see the module docs); past
/// `ROOMY_MAX`, `length` itself.
fn pooled_capacity(length: usize) -> usize {
    if length >= ROOMY_MAX {
        return length;
    }
    (HEADER + length + length / 2).next_power_of_two() - HEADER
}

/// A use of a mapped memory file whose descriptor this process keeps open (listed in the
/// region's mapping table while it lives).
#[derive(Debug)]
pub struct Region {
    memory: Arc<SharedMemory>,
    /// Made by this process (else opened from another's handle).
    created_here: bool,
    /// Data bytes, from the start, whose pages are allocated (made here; else 0): the rest of a
    /// pooled region is allocated when a use needs it (see `acquire`).
    populated: AtomicUsize,
    /// Shared on purpose (a shared array, an argument shared once per call): a buffer lying in
    /// it is sent again by reference, where any other is copied (see `by_reference`).
    by_reference: AtomicBool,
}

impl Region {
    /// A new zero-filled region of `length` bytes, pages populated up front (one system call
    /// instead of a page fault per page when it is filled).
    ///
    /// A region of `huge::COLLAPSE_MIN` bytes or more is a whole number of huge pages, and is
    /// moved into huge pages on another thread soon after (see `huge`).
    pub fn create(length: usize) -> Result<Arc<Self>> {
        Self::create_with(length, length)
    }

    /// A new zero-filled region of `capacity` bytes (at least `used`), whose first `used` bytes
    /// have their pages allocated now; huge pages (as `create`) if `used` is large.
    fn create_with(capacity: usize, used: usize) -> Result<Arc<Self>> {
        let too_large = || {
            CoreError::InvalidArgument(format!("a shared buffer of {capacity} bytes is too large"))
        };
        let size = capacity.checked_add(HEADER).ok_or_else(too_large)?;
        let huge = used >= huge::COLLAPSE_MIN;
        let memory = if huge {
            let size = size
                .checked_next_multiple_of(HUGE_PAGE)
                .ok_or_else(too_large)?;
            let memory = SharedMemory::create("gilfree-buffer", size)?;
            memory.advise_huge_pages();
            memory
        } else {
            SharedMemory::create("gilfree-buffer", size)?
        };
        memory.populate(0, HEADER + used);
        let memory = Arc::new(memory);
        if huge {
            let moved = HEADER + used;
            huge::collapse_later(&mut lock(&huge::QUEUE), Arc::downgrade(&memory), moved);
        }
        let region = Self {
            memory,
            created_here: true,
            populated: AtomicUsize::new(used),
            by_reference: AtomicBool::new(false),
        };
        region.mappings().add();
        Ok(register(region))
    }

    /// A region of at least `length` bytes whose content does not matter (it is about to be
    /// overwritten), its first `length` bytes allocated: an idle one from the pool, or a new
    /// one that joins the pool (roomy: see `pooled_capacity`).
    pub fn acquire(length: usize) -> Result<Arc<Self>> {
        let mut pool = lock(&POOL);
        if let Some(index) = pool.iter().position(|region| region.reusable_for(length)) {
            let region = pool.remove(index);
            pool.push(Arc::clone(&region)); // most recently used last
            drop(pool); // the region is ours now: the pool sees it in use
            region.by_reference.store(false, Ordering::Relaxed); // a new use, a copy
            region.populate(length);
            return Ok(region);
        }
        let region = Self::create_with(pooled_capacity(length), length)?;
        let mut pooled: usize = pool.iter().map(|region| region.populated()).sum();
        while pooled + region.populated() > POOL_BYTES {
            // Oldest first, among those nothing in this process uses (another process may
            // still map one: dropping our reference is safe, the kernel frees it later).
            let Some(index) = pool
                .iter()
                .position(|region| Arc::strong_count(region) == 1)
            else {
                break;
            };
            pooled -= pool.remove(index).populated();
        }
        if pooled + region.populated() <= POOL_BYTES {
            pool.push(Arc::clone(&region));
        }
        Ok(region)
    }

    /// Data bytes whose pages are allocated (see `populated`).
    fn populated(&self) -> usize {
        self.populated.load(Ordering::Relaxed)
    }

    /// Allocates the pages of the first `length` data bytes that are not yet (a region of
    /// this process, in use by the caller alone).
    fn populate(&self, length: usize) {
        let populated = self.populated();
        if length > populated {
            self.memory.populate(HEADER + populated, length - populated);
            self.populated.store(length, Ordering::Relaxed);
        }
    }

    /// Idle (only the pool holds it, only this process maps it) and of a fitting size.
    fn reusable_for(self: &Arc<Self>, length: usize) -> bool {
        Arc::strong_count(self) == 1
            && self.mappings().only_mine()
            && self.len() >= length
            && self.len() / 4 <= length.max(1 << 20)
    }

    fn mappings(&self) -> &Mappings {
        // SAFETY: every region starts with HEADER (>= size_of::<Mappings>()) bytes holding the
        // table, only ever accessed atomically; the mapping outlives `self`.
        unsafe { &*self.memory.base().as_ptr().cast::<Mappings>() }
    }

    /// Opens the region another process exported as `origin` (or this process: a handle can
    /// come back), reusing the mapping if this process already has it.
    pub fn open(origin: Origin) -> Result<Arc<Self>> {
        if origin.pid == std::process::id() {
            if let Some(region) = Self::own(origin.fd) {
                return Ok(region); // a handle of ours came back: no need to map it again
            }
        }
        Self::open_mapped(origin)
    }

    /// `open` through `/proc`, as for another process's handle (whoever made it).
    fn open_mapped(origin: Origin) -> Result<Arc<Self>> {
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
            return Err(CoreError::InvalidArgument(format!(
                "{path} is not a gilfree buffer"
            )));
        }
        // The inode of what was opened (not of a second lookup of the path, which the origin
        // could have reused meanwhile) tells a cached mapping of the same file.
        let inode = rustix::fs::fstat(&fd)
            .map_err(|e| CoreError::os("fstat shared buffer", e))?
            .st_ino;
        let key = (origin, inode);
        if let Some(region) = lock(&OPENED).get(&key).and_then(Weak::upgrade) {
            return Ok(region);
        }
        let memory = if let Some(memory) = mapped(key) {
            memory
        } else {
            let memory = Arc::new(SharedMemory::open(fd)?);
            if memory.len() <= HEADER {
                return Err(CoreError::InvalidSegment(format!("{path} is too short")));
            }
            keep_mapped(key, &memory);
            memory
        };
        let region = Self {
            memory,
            created_here: false,
            populated: AtomicUsize::new(0),
            by_reference: AtomicBool::new(false),
        };
        region.mappings().add();
        let region = register(region);
        let mut opened = lock(&OPENED);
        opened.retain(|_, region| region.strong_count() > 0);
        opened.insert(key, Arc::downgrade(&region));
        Ok(region)
    }

    /// The live region this process created whose descriptor is `fd`.
    fn own(fd: i32) -> Option<Arc<Self>> {
        let regions = lock(&REGIONS);
        regions
            .values()
            .filter_map(Weak::upgrade)
            .find(|region| region.created_here && region.memory.fd().as_fd().as_raw_fd() == fd)
    }

    /// The handle other processes open this region by.
    #[must_use]
    pub fn origin(&self) -> Origin {
        Origin {
            pid: std::process::id(),
            fd: self.memory.fd().as_fd().as_raw_fd(),
        }
    }

    /// The first byte of the data.
    #[must_use]
    pub fn as_ptr(&self) -> *mut u8 {
        // SAFETY: every region is longer than its header (checked in `create` and `open`).
        unsafe { self.memory.base().as_ptr().add(HEADER) }
    }

    /// Length of the data in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.memory.len() - HEADER
    }

    /// Always false: regions are never empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Marks the region shared on purpose, for as long as this use lasts: the buffers lying in
    /// it are sent again by reference (see `by_reference`).
    pub fn share_by_reference(&self) {
        self.by_reference.store(true, Ordering::Relaxed);
    }

    /// Whether a buffer lying in this region is sent again by reference. Only a region shared
    /// on purpose is: a buffer received from another process (or copied for sending) holds a
    /// value, which its receiver owns as pickle's receiver owns its copy, so sending it on
    /// copies it. By reference, a task writing its argument would write the sender's own
    /// object, and what the sender wrote after sending would reach the task.
    #[must_use]
    pub fn by_reference(&self) -> bool {
        self.by_reference.load(Ordering::Relaxed)
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
        let mut regions = lock(&REGIONS);
        let address = self.as_ptr() as usize;
        // A new use of the same kept mapping may have registered meanwhile: keep that one.
        if regions
            .get(&address)
            .is_some_and(|region| region.strong_count() == 0)
        {
            regions.remove(&address);
        }
        drop(regions);
        self.mappings().remove();
    }
}

/// The kept mapping of the region `key` names, if any (moved to most recent).
fn mapped(key: (Origin, u64)) -> Option<Arc<SharedMemory>> {
    let mut kept = lock(&MAPPED);
    let index = kept.iter().position(|(kept_key, _)| *kept_key == key)?;
    let entry = kept.remove(index);
    let memory = Arc::clone(&entry.1);
    kept.push(entry);
    Some(memory)
}

/// Keeps `memory` mapped after its last use, dropping the oldest kept mappings past the limits.
fn keep_mapped(key: (Origin, u64), memory: &Arc<SharedMemory>) {
    let mut kept = lock(&MAPPED);
    kept.push((key, Arc::clone(memory)));
    let mut bytes: usize = kept.iter().map(|(_, memory)| memory.len()).sum();
    while kept.len() > MAPPED_COUNT || (bytes > MAPPED_BYTES && kept.len() > 1) {
        bytes -= kept.remove(0).1.len();
    }
}

static REGIONS: Mutex<BTreeMap<usize, Weak<Region>>> = Mutex::new(BTreeMap::new());
static POOL: Mutex<Vec<Arc<Region>>> = Mutex::new(Vec::new());
/// Regions opened from other processes, by origin and inode.
type OpenedRegions = HashMap<(Origin, u64), Weak<Region>>;
static OPENED: std::sync::LazyLock<Mutex<OpenedRegions>> = std::sync::LazyLock::new(Mutex::default);
/// Mappings of other processes' regions, kept after their last use (see the module docs).
type MappedRegions = Vec<((Origin, u64), Arc<SharedMemory>)>;
static MAPPED: Mutex<MappedRegions> = Mutex::new(Vec::new());

thread_local! {
    /// The registries' guards, held across a `fork` by the thread that forks.
    static FORK_GUARDS: std::cell::RefCell<Option<ForkGuards>> = const { std::cell::RefCell::new(None) };
}

type ForkGuards = (
    std::sync::MutexGuard<'static, Vec<Arc<Region>>>,
    std::sync::MutexGuard<'static, BTreeMap<usize, Weak<Region>>>,
    std::sync::MutexGuard<'static, OpenedRegions>,
    std::sync::MutexGuard<'static, MappedRegions>,
    std::sync::MutexGuard<'static, huge::Queue>,
);

/// Call just before `fork`: takes the registries' locks, so the child does not inherit one
/// held by a thread that does not exist there. Lock order: POOL, then REGIONS (as `acquire`,
/// which registers new regions while holding the pool), then OPENED, then MAPPED (the last two
/// never nested with each other or the first two, save in this function), then `huge::QUEUE`
/// (taken last wherever it nests). Until
/// `after_fork_in_parent`, other threads wait for these locks through `BLOCKING_WAIT` (GIL
/// released): the forking thread runs other at-fork hooks, Python code, meanwhile.
pub fn before_fork() {
    let guards = (
        lock(&POOL),
        lock(&REGIONS),
        lock(&OPENED),
        lock(&MAPPED),
        lock(&huge::QUEUE),
    );
    FORK_GUARDS.with(|held| *held.borrow_mut() = Some(guards));
}

/// Call in the parent just after `fork`.
pub fn after_fork_in_parent() {
    FORK_GUARDS.with(|held| held.borrow_mut().take());
}

/// Call in the child just after `fork`: releases the locks.
///
/// The child inherits the parent's mappings without being listed in their tables, so a region
/// the parent recycles can change under an object the child inherited. gilfree's own worker
/// loop never reads inherited objects; user code run in a forked worker that reads a large
/// result or argument the parent held at fork time may (listing the child instead would keep
/// every pooled region busy for the child's whole life).
pub fn after_fork_in_child() {
    FORK_GUARDS.with(|held| {
        if let Some(mut guards) = held.borrow_mut().take() {
            huge::forget_parents_work(&mut guards.4);
        }
    });
}

fn register(region: Region) -> Arc<Region> {
    let region = Arc::new(region);
    lock(&REGIONS).insert(region.as_ptr() as usize, Arc::downgrade(&region));
    region
}

/// Runs a wait that may block (a contended registry lock). The bindings set it to release the
/// GIL meanwhile: a thread forking holds every registry lock while Python at-fork hooks run, and
/// those need the GIL, so a thread blocking on a registry lock with the GIL held would deadlock
/// with it.
static BLOCKING_WAIT: std::sync::OnceLock<fn(&mut dyn FnMut())> = std::sync::OnceLock::new();

/// Sets how contended registry locks are waited for (see `BLOCKING_WAIT`); the first call wins.
pub fn set_blocking_wait(wait: fn(&mut dyn FnMut())) {
    let _ = BLOCKING_WAIT.set(wait);
}

/// Locks a registry: at once if it is free, else through `BLOCKING_WAIT`.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.try_lock() {
        Ok(guard) => guard,
        Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => {
            let mut guard = None;
            let mut wait = || guard = Some(mutex.lock().unwrap_or_else(PoisonError::into_inner));
            match BLOCKING_WAIT.get() {
                Some(blocking_wait) => blocking_wait(&mut wait),
                None => wait(),
            }
            guard.expect("the wait took the lock")
        }
    }
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
    fn only_a_region_shared_on_purpose_is_sent_by_reference_and_a_reuse_forgets_it() {
        let made = Region::create(1 << 16).unwrap();
        assert!(!made.by_reference(), "a copy, until shared on purpose");
        made.share_by_reference();
        assert!(made.by_reference());
        assert!(!Region::open_mapped(made.origin()).unwrap().by_reference());
        // A pooled region shared for one use is a plain copy at its next use.
        let length = 3 << 20; // larger than any other test's pooled use: none takes it
        let pooled = Region::acquire(length).unwrap();
        pooled.share_by_reference();
        let address = pooled.as_ptr() as usize;
        drop(pooled);
        // Other tests' idle regions may fit too (tests run at once): hold them until it comes.
        let mut held = Vec::new();
        let again = std::iter::from_fn(|| {
            let region = Region::acquire(length).unwrap();
            held.push(Arc::clone(&region));
            Some(region)
        })
        .take(16)
        .find(|region| region.as_ptr() as usize == address)
        .expect("the idle region is reused");
        assert!(!again.by_reference());
    }

    #[test]
    fn a_dropped_region_is_forgotten() {
        let region = Region::create(1 << 16).unwrap();
        let start = region.as_ptr() as usize;
        drop(region);
        assert!(Region::containing(start, 1).is_none());
    }

    #[test]
    fn opening_an_own_handle_gives_the_region_itself() {
        let region = Region::create(4096).unwrap();
        assert!(Arc::ptr_eq(
            &Region::open(region.origin()).unwrap(),
            &region
        ));
    }

    #[test]
    fn a_handle_mapped_twice_is_mapped_once() {
        let region = Region::create(4096).unwrap();
        // SAFETY: the region is 4096 bytes long and nothing else uses it.
        unsafe { region.as_ptr().write(42) };
        let again = Region::open_mapped(region.origin()).unwrap();
        // SAFETY: as above, through the second mapping.
        assert_eq!(unsafe { again.as_ptr().read() }, 42);
        let third = Region::open_mapped(region.origin()).unwrap();
        assert!(
            Arc::ptr_eq(&again, &third),
            "a handle opened twice is mapped once"
        );
    }

    /// Bytes of pages allocated to `region`'s memory file.
    fn allocated(region: &Region) -> usize {
        let stat = rustix::fs::fstat(region.memory.fd()).unwrap();
        usize::try_from(stat.st_blocks).unwrap() * 512
    }

    /// Acquires a region for `first` bytes, then, once it is idle, one for `second` bytes:
    /// the same region, with the pages of each use allocated and no more.
    fn a_region_serves_a_larger_use_next(first: usize, second: usize) -> Arc<Region> {
        // Sizes no other test of the pool asks for, nor fits in the regions they make (a
        // region is reused only for uses of at least a quarter of it).
        let region = Region::acquire(first).unwrap();
        assert!(region.len() >= first + first / 2, "room for larger uses");
        let page = rustix::param::page_size();
        assert!(allocated(&region) <= HEADER + first + page);
        let address = region.as_ptr() as usize;
        drop(region);
        let again = Region::acquire(second).unwrap();
        assert_eq!(
            again.as_ptr() as usize,
            address,
            "a larger use that fits takes the idle region"
        );
        assert!(allocated(&again) <= HEADER + second + page);
        again
    }

    #[test]
    fn a_pooled_region_has_room_for_larger_uses_allocated_only_when_used() {
        let region = a_region_serves_a_larger_use_next(6 << 20, (15 << 20) / 2);
        // Before, a region fitted its first use exactly: each larger one made a new region,
        // and a map whose chunks grow made new regions every time.
        if cfg!(target_os = "linux") {
            assert!(
                allocated(&region) >= (15 << 20) / 2,
                "the second use's pages are allocated"
            );
        }
    }

    #[test]
    fn a_large_pooled_region_moves_only_its_used_pages_into_huge_pages() {
        let region = a_region_serves_a_larger_use_next(20 << 20, 26 << 20);
        // The first use queued its pages for huge pages: once that is done, the region's
        // unused room is still not allocated.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let queue = lock(&huge::QUEUE);
            if queue.is_idle() {
                break;
            }
            drop(queue);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(allocated(&region) <= HEADER + (26 << 20) + HUGE_PAGE);
        assert!(region.len() >= 30 << 20);
    }

    #[test]
    fn an_idle_region_is_reused_and_a_busy_one_is_not() {
        let first = Region::acquire(3 << 20).unwrap();
        let address = first.as_ptr() as usize;
        let busy = Region::acquire(3 << 20).unwrap();
        assert_ne!(
            busy.as_ptr() as usize,
            address,
            "a region in use is not handed out twice"
        );
        drop(first);
        let again = Region::acquire(3 << 20).unwrap();
        assert_eq!(again.as_ptr() as usize, address, "an idle region is reused");
        let mapped_elsewhere = Region::open_mapped(again.origin()).unwrap();
        drop(again);
        let other = Region::acquire(3 << 20).unwrap();
        assert_ne!(
            other.as_ptr() as usize,
            address,
            "a region still mapped is not reused"
        );
        drop(mapped_elsewhere);
        drop((busy, other));
    }

    #[test]
    fn a_mapping_left_by_a_dead_process_does_not_keep_a_region_busy() {
        let region = Region::create(4096).unwrap();
        let entries = &region.mappings().pids;
        entries[1].store(u32::MAX - 7, Ordering::SeqCst); // no such process
        assert!(region.mappings().only_mine());
        assert_eq!(
            entries[1].load(Ordering::SeqCst),
            0,
            "and its entry is freed"
        );
        entries[1].store(1, Ordering::SeqCst); // init: alive
        assert!(!region.mappings().only_mine());
        entries[1].store(0, Ordering::SeqCst);
    }

    #[test]
    fn a_table_full_of_dead_processes_does_not_overflow() {
        let region = Region::create(4096).unwrap();
        let mappings = region.mappings();
        let dead = u32::MAX - 7; // no such process
        for entry in &mappings.pids[1..] {
            entry.store(dead, Ordering::SeqCst);
        }
        mappings.add(); // a second use: takes over a dead entry
        assert_eq!(mappings.overflow.load(Ordering::SeqCst), 0);
        mappings.remove();
        assert!(mappings.only_mine(), "dead entries do not count");
        let entries: Vec<u32> = mappings
            .pids
            .iter()
            .map(|entry| entry.load(Ordering::SeqCst))
            .collect();
        assert_eq!(
            entries.iter().filter(|&&pid| pid != 0).count(),
            1,
            "and the owner's check frees them: {entries:?}"
        );
    }

    #[test]
    fn a_mapping_outlives_its_last_use_without_keeping_the_region_busy() {
        let owned = Region::acquire(2 << 20).unwrap();
        let origin = owned.origin();
        let opened = Region::open_mapped(origin).unwrap();
        let address = opened.as_ptr() as usize;
        drop(opened);
        assert!(owned.mappings().only_mine(), "a kept mapping is not a use");
        assert!(
            Region::containing(address, 1).is_none(),
            "nor a registered region"
        );
        // SAFETY: the region is 2 MiB long and no other use of it exists.
        unsafe { owned.as_ptr().write(7) };
        let again = Region::open_mapped(origin).unwrap();
        assert_eq!(
            again.as_ptr() as usize,
            address,
            "the kept mapping is used again"
        );
        // SAFETY: as above, through the kept mapping.
        let seen = unsafe { again.as_ptr().read() };
        assert_eq!(seen, 7, "and sees the owner's writes");
        assert!(
            !owned.mappings().only_mine(),
            "a use makes the region busy again"
        );
        assert!(Region::containing(address, 1).is_some());
    }

    #[test]
    fn opening_a_handle_of_no_process_fails() {
        assert!(Region::open(Origin {
            pid: u32::MAX,
            fd: 3
        })
        .is_err());
    }
}
