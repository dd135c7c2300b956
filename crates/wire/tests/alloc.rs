//! Proves the frame reader's allocation bounds with a counting allocator.
//!
//! The one `unsafe` of this crate's tests: a `GlobalAlloc` that forwards to `System` and
//! records, per thread, the largest single request. It lives in its own test binary so the
//! other tests run on the plain allocator.
#![deny(unsafe_op_in_unsafe_fn)]

use keyward_wire::codec::decode;
use keyward_wire::frame::read_frame;
use keyward_wire::{Request, WireError, MAX_FRAME_LEN};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Cursor;

struct Largest;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the slot may be gone while the thread is being torn down.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the bookkeeping touches only a const-initialised thread-local Cell,
// which never allocates.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same layout the caller gave us, under the same contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this layout (via `alloc`/`realloc`).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr`/`layout` come from `System`; the caller upholds `new_size`'s rules.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Largest = Largest;

/// Runs `f` and returns the largest single allocation it made on this thread.
fn largest_allocation(f: impl FnOnce()) -> usize {
    LARGEST.with(|l| l.set(0));
    f();
    LARGEST.with(|l| l.get())
}

#[test]
fn over_cap_length_allocates_nothing_for_the_payload() {
    let mut bytes = u32::MAX.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0; 16]);
    let largest = largest_allocation(|| {
        let result = read_frame(&mut Cursor::new(&bytes));
        assert!(matches!(result, Err(WireError::FrameTooLarge { .. })));
    });
    assert!(largest < 1024, "largest allocation {largest} bytes");
}

#[test]
fn a_big_announcement_with_few_bytes_costs_little() {
    // Announces exactly the cap, sends 4 bytes.
    let mut bytes = u32::try_from(MAX_FRAME_LEN).unwrap().to_be_bytes().to_vec();
    bytes.extend_from_slice(b"tiny");
    let largest = largest_allocation(|| {
        let result = read_frame(&mut Cursor::new(&bytes));
        assert!(matches!(result, Err(WireError::Truncated { .. })));
    });
    assert!(largest <= 128 * 1024, "largest allocation {largest} bytes");
}

#[test]
fn the_counter_sees_big_allocations() {
    // Guards the two tests above against a counter that sees nothing.
    let largest = largest_allocation(|| {
        let v: Vec<u8> = Vec::with_capacity(MAX_FRAME_LEN);
        assert!(v.capacity() >= MAX_FRAME_LEN);
    });
    assert!(largest >= MAX_FRAME_LEN);
}

#[test]
fn decoding_a_huge_announced_sequence_stays_small() {
    // Request { id: 0, body: Admin(RoleCreate-like Vec) } is too coupled to admin.rs; use a
    // plain Vec<String> announcing 2^40 elements in a 10-byte payload instead.
    let payload = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40, 0, 0, 0];
    let largest = largest_allocation(|| {
        assert!(decode::<Vec<String>>(&payload).is_err());
        assert!(decode::<Request>(&payload).is_err());
    });
    // serde's cautious pre-allocation caps a sequence at 1 MiB whatever it announces.
    assert!(largest <= 1024 * 1024, "largest allocation {largest} bytes");
}
