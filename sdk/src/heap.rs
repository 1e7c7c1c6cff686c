//! The guest's allocator on `wasm32-unknown-unknown`: dlmalloc (the allocator `std` itself uses
//! there), given the free end of the initial linear memory first and `memory.grow` after that.
//!
//! `std`'s own instance grows memory on its first allocation, even with free pages left in the
//! initial memory. In the gateway that growth is the dearest part of a fresh instance: the
//! grown pages are made accessible with an `mprotect` and taken back at the next instantiation
//! with another, each a TLB shootdown across the gateway's threads (BENCHMARKS.md). A plugin
//! whose allocations fit in the initial memory (`scripts/build-plugins.sh` links guests with
//! `--initial-memory`) never grows it.
#![allow(unsafe_code)] // a global allocator is unsafe by contract

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::{Cell, UnsafeCell};
use core::ptr;

const PAGE: usize = 64 * 1024;

/// Where dlmalloc gets memory from: the initial memory's free end once, then whole pages.
struct Region {
    tail_taken: Cell<bool>,
}

unsafe extern "C" {
    /// First byte after the module's data and stack (defined by the linker).
    static __heap_base: u8;
}

// SAFETY: dlmalloc's contract: regions handed out are valid, unused, writable memory of the
// size returned, never handed out twice, and zeroed (fresh pages are; the free end of the
// initial memory is, since no data segment reaches past `__heap_base`).
unsafe impl dlmalloc::Allocator for Region {
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        let end = wasm32::memory_size(0) * PAGE;
        let (start, tail) = if self.tail_taken.replace(true) {
            (end, 0)
        } else {
            let base = (ptr::addr_of!(__heap_base) as usize).next_multiple_of(16);
            (base, end.saturating_sub(base))
        };
        let pages = size.saturating_sub(tail).div_ceil(PAGE);
        if pages > 0 && wasm32::memory_grow(0, pages) == usize::MAX {
            return (ptr::null_mut(), 0, 0);
        }
        // Grown pages follow the old end, so the free end and the new pages are one region.
        (start as *mut u8, tail + pages * PAGE, 0)
    }

    fn remap(&self, _ptr: *mut u8, _old: usize, _new: usize, _can_move: bool) -> *mut u8 {
        ptr::null_mut()
    }

    fn free_part(&self, _ptr: *mut u8, _old: usize, _new: usize) -> bool {
        false
    }

    fn free(&self, _ptr: *mut u8, _size: usize) -> bool {
        false
    }

    fn can_release_part(&self, _flags: u32) -> bool {
        false
    }

    fn allocates_zeros(&self) -> bool {
        true
    }

    fn page_size(&self) -> usize {
        PAGE
    }
}

struct Heap(UnsafeCell<dlmalloc::Dlmalloc<Region>>);

// SAFETY: a `wasm32-unknown-unknown` guest has one thread, so the heap is never shared.
unsafe impl Sync for Heap {}

#[global_allocator]
static HEAP: Heap = Heap(UnsafeCell::new(dlmalloc::Dlmalloc::new_with_allocator(
    Region {
        tail_taken: Cell::new(false),
    },
)));

// SAFETY: forwards to dlmalloc, which upholds `GlobalAlloc`'s contract; one thread (above) means
// the `&mut` to the heap is never aliased.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { (*self.0.get()).malloc(layout.size(), layout.align()) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { (*self.0.get()).calloc(layout.size(), layout.align()) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { (*self.0.get()).free(ptr, layout.size(), layout.align()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { (*self.0.get()).realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}
