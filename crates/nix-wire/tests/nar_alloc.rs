//! Hostile lengths never turn into allocations: with a global allocator
//! that records the largest request, decoding NARs that announce 2^60-byte
//! names, targets, tokens and contents allocates nothing large.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use nix_wire::nar;

struct Recording;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator, only recording request sizes.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Recording = Recording;

fn strs(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&(p.len() as u64).to_le_bytes());
        out.extend_from_slice(p.as_bytes());
        out.resize(out.len().next_multiple_of(8), 0);
    }
    out
}

#[test]
fn huge_lengths_allocate_nothing_large() {
    let prefixes = [
        strs(&["nix-archive-1", "("]),
        strs(&[
            "nix-archive-1",
            "(",
            "type",
            "directory",
            "entry",
            "(",
            "name",
        ]),
        strs(&["nix-archive-1", "(", "type", "symlink", "target"]),
        strs(&["nix-archive-1", "(", "type", "regular", "contents"]),
    ];
    let inputs: Vec<Vec<u8>> = prefixes
        .iter()
        .map(|p| [p.as_slice(), &(1u64 << 60).to_le_bytes(), &[0u8; 64]].concat())
        .collect();
    LARGEST.store(0, Ordering::Relaxed);
    for input in &inputs {
        assert!(nar::validate(&input[..]).is_err());
        let mut r = nar::NarReader::new(&input[..]);
        while let Ok(Some(_)) = r.next() {}
    }
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest <= 1 << 20, "an allocation of {largest} bytes");
}
