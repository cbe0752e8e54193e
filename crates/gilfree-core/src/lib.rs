//! gilfree-core: the process-shared machinery behind gilfree, with no Python in it.
//!
//! ```text
//!  parent                                   worker i
//!  ------                                   --------
//!  Segment::create ── memfd ── inherited ──> Segment::open
//!  slot(i).request  ── frames ────────────> recv (spin, then futex on the ring's data event)
//!  pump: doorbell <── frames ─ slot(i).response <── send (rings the segment doorbell)
//! ```
//!
//! * [`codec`]: the wire format of the value codec and its bounds-checked reader.
//! * [`array`](mod@array): the codec's record for numpy arrays (dtype, shape, order, raw bytes).
//! * [`shm`]: an anonymous shared mapping that cannot leak.
//! * [`huge`]: huge pages for large regions, made on a thread of their own.
//! * [`notify`]: spin-then-futex events living in shared memory.
//! * [`ring`]: a single-producer single-consumer ring of variable-size frames, with messages
//!   split into fragments when they do not fit.
//! * [`memory`]: copies for another process to read, and the allocator policy of worker processes.
//! * [`message`]: the fixed header framing each message's payload.
//! * [`region`]: one memory file per large buffer, opened by other processes via `/proc`.
//! * [`segment`]: the layout of one executor's segment: a doorbell and per-worker ring pairs.
//! * [`supervisor`]: starting, reaping and describing worker processes.
#![allow(unsafe_code)] // the crate's purpose; each block carries a SAFETY comment.

pub mod array;
pub mod codec;
pub mod error;
pub mod huge;
pub mod memory;
pub mod message;
pub mod notify;
pub mod port;
pub mod region;
pub mod ring;
pub mod segment;
pub mod shm;
pub mod supervisor;

pub use error::CoreError;
