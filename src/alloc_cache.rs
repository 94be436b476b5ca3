//! A per-thread cache of small heap blocks in front of the system allocator.
//!
//! The proxy allocates and frees a few dozen small blocks per request (header names and
//! values, token lists). glibc's malloc keeps such blocks in a per-thread cache; musl's
//! (mallocng) does not, and measured at about 340 instructions per malloc/free pair on
//! the proxy's path, a third of the user-space instructions per request of the static
//! build. This cache keeps up to [`KEEP`] freed blocks of each size class per thread and
//! hands them out again; everything else (large or over-aligned blocks, a full class)
//! goes to the system allocator unchanged.
//!
//! Blocks of a class are all allocated with the class's size and 16-byte alignment, so
//! any block of a class serves any request that maps to that class, whichever thread
//! freed it. Memory held by the cache is bounded: classes times [`KEEP`] blocks per
//! living thread (under 150 KiB). What a thread holds when it ends is not given back
//! (the cache has no destructor, so that it never allocates); mothership's threads live
//! as long as the process, but for the short-lived resolver threads of uplink checks at
//! start. A block of up to 512 bytes freed twice is not caught by musl's checks, as it
//! never reaches musl's allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;

/// Block sizes of the classes, ascending; requests up to the largest are cached.
const CLASSES: [usize; 13] = [16, 32, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512];
const LARGEST: usize = 512;
/// Alignment of every cached block (what malloc gives on x86_64 and aarch64).
const ALIGN: usize = 16;
/// Freed blocks kept per class and thread.
pub const KEEP: u32 = 64;

/// Class index by `(size + 15) / 16` for sizes 1..=512.
const BY_SIXTEENTHS: [u8; LARGEST / 16 + 1] = {
    let mut t = [0u8; LARGEST / 16 + 1];
    let mut i = 0;
    while i < t.len() {
        let size = i * 16;
        let mut c = 0;
        while CLASSES[c] < size {
            c += 1;
        }
        t[i] = c as u8;
        i += 1;
    }
    t
};

/// The class of a request, if it is cached.
fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size();
    if size == 0 || size > LARGEST || layout.align() > ALIGN {
        return None;
    }
    Some(BY_SIXTEENTHS[size.div_ceil(16)] as usize)
}

fn class_layout(class: usize) -> Layout {
    // SAFETY: class sizes are non-zero multiples of ALIGN, a power of two.
    unsafe { Layout::from_size_align_unchecked(CLASSES[class], ALIGN) }
}

/// A free block's first word links to the next free block of its class.
struct Bin {
    head: Cell<*mut u8>,
    len: Cell<u32>,
}

impl Bin {
    const fn new() -> Bin {
        Bin {
            head: Cell::new(ptr::null_mut()),
            len: Cell::new(0),
        }
    }
}

thread_local! {
    // Const-initialised and without a destructor: reachable from the allocator at any
    // point of a thread's life, and never allocates itself.
    static BINS: [Bin; CLASSES.len()] = const { [const { Bin::new() }; CLASSES.len()] };
}

/// The global allocator of the `mothership` binary.
pub struct CachedAlloc;

impl CachedAlloc {
    /// A block from this thread's cache of `class`, if it has one.
    fn take(class: usize) -> *mut u8 {
        BINS.try_with(|bins| {
            let bin = &bins[class];
            let block = bin.head.get();
            if !block.is_null() {
                // SAFETY: a cached block is at least 16 bytes and its first word holds
                // the next link, written by `give`.
                bin.head.set(unsafe { *(block as *mut *mut u8) });
                bin.len.set(bin.len.get() - 1);
            }
            block
        })
        .unwrap_or(ptr::null_mut())
    }

    /// Keeps `block` in this thread's cache of `class`; false when that is full.
    fn give(class: usize, block: *mut u8) -> bool {
        BINS.try_with(|bins| {
            let bin = &bins[class];
            if bin.len.get() >= KEEP {
                return false;
            }
            // SAFETY: the block is a freed block of this class (at least 16 bytes, 16-byte
            // aligned) that nothing else refers to any more.
            unsafe { *(block as *mut *mut u8) = bin.head.get() };
            bin.head.set(block);
            bin.len.set(bin.len.get() + 1);
            true
        })
        .unwrap_or(false)
    }
}

// SAFETY: every block handed out is either the system allocator's answer for the caller's
// own layout, or a block of at least the requested size and alignment (its class's) that
// was freed and is no longer referenced; blocks are returned to the system allocator with
// the layout they were allocated with.
// Not inlined: with LTO, the allocator would otherwise be copied into every place that
// allocates (measured: 176 KiB more in the static build).
unsafe impl GlobalAlloc for CachedAlloc {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(c) => {
                let block = Self::take(c);
                if block.is_null() {
                    System.alloc(class_layout(c))
                } else {
                    block
                }
            }
            None => System.alloc(layout),
        }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        match class_of(layout) {
            Some(c) => {
                if !Self::give(c, block) {
                    System.dealloc(block, class_layout(c));
                }
            }
            None => System.dealloc(block, layout),
        }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(_) => {
                let block = self.alloc(layout);
                if !block.is_null() {
                    ptr::write_bytes(block, 0, layout.size());
                }
                block
            }
            None => System.alloc_zeroed(layout),
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        match (class_of(layout), class_of(new_layout)) {
            // Still fits its block: nothing to do.
            (Some(a), Some(b)) if a == b => block,
            (None, None) => System.realloc(block, layout, new_size),
            _ => {
                let new = self.alloc(new_layout);
                if !new.is_null() {
                    ptr::copy_nonoverlapping(block, new, layout.size().min(new_size));
                    self.dealloc(block, layout);
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_maps_to_the_smallest_class_that_holds_it() {
        for size in 1..=LARGEST {
            let c = class_of(Layout::from_size_align(size, 1).unwrap()).unwrap();
            assert!(CLASSES[c] >= size, "size {size} in class {}", CLASSES[c]);
            assert!(
                c == 0 || CLASSES[c - 1] < size,
                "size {size}: a smaller class fits"
            );
        }
        assert_eq!(class_of(Layout::from_size_align(0, 1).unwrap()), None);
        assert_eq!(class_of(Layout::from_size_align(513, 8).unwrap()), None);
        assert_eq!(class_of(Layout::from_size_align(64, 32).unwrap()), None);
    }

    #[test]
    fn blocks_are_reused_aligned_and_bounded() {
        let a = CachedAlloc;
        unsafe {
            let l = Layout::from_size_align(40, 8).unwrap();
            let p = a.alloc(l);
            assert_eq!(p as usize % ALIGN, 0);
            p.write_bytes(0xab, 40);
            a.dealloc(p, l);
            // Same class (48): the block just freed comes back, zeroed when asked.
            let l2 = Layout::from_size_align(33, 1).unwrap();
            let q = a.alloc_zeroed(l2);
            assert_eq!(q, p);
            assert!(std::slice::from_raw_parts(q, 33).iter().all(|&b| b == 0));
            // Growing within the class keeps the block; across classes moves the bytes.
            q.write_bytes(7, 33);
            let r = a.realloc(q, l2, 48);
            assert_eq!(r, q);
            let s = a.realloc(r, Layout::from_size_align(48, 1).unwrap(), 1000);
            assert!(std::slice::from_raw_parts(s, 33).iter().all(|&b| b == 7));
            let t = a.realloc(s, Layout::from_size_align(1000, 1).unwrap(), 20);
            assert!(std::slice::from_raw_parts(t, 20).iter().all(|&b| b == 7));
            a.dealloc(t, Layout::from_size_align(20, 1).unwrap());

            // No more than KEEP blocks are kept per class.
            let l = Layout::from_size_align(500, 8).unwrap();
            let blocks: Vec<*mut u8> = (0..KEEP + 10).map(|_| a.alloc(l)).collect();
            for &b in &blocks {
                a.dealloc(b, l);
            }
            let class = class_of(l).unwrap();
            assert_eq!(BINS.with(|bins| bins[class].len.get()), KEEP);
        }
    }

    #[test]
    fn blocks_freed_on_another_thread_serve_this_one() {
        let l = Layout::from_size_align(100, 8).unwrap();
        let p = unsafe { CachedAlloc.alloc(l) } as usize;
        std::thread::spawn(move || unsafe { CachedAlloc.dealloc(p as *mut u8, l) })
            .join()
            .unwrap();
        unsafe {
            let q = CachedAlloc.alloc(l);
            q.write_bytes(1, 100);
            CachedAlloc.dealloc(q, l);
        }
    }
}
