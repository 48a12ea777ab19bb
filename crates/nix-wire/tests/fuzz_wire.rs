//! Fuzzing with proptest (the coverage-guided fuzzers are in `fuzz/`): random bytes as daemon
//! responses never panic, and never make the client allocate absurdly (a
//! counting global allocator tracks the largest single allocation).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Cursor;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::Script;
use nix_wire::daemon::{ClientConfig, DaemonClient, ProtocolVersion};
use nix_wire::fuzzing::Canned;
use nix_wire::wire::{self, FramedSource};
use nix_wire::StorePath;
use proptest::prelude::*;

/// Records the largest allocation request.
struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// No single allocation may exceed this (the largest legitimate buffers
/// are 1 MiB strings/frames).
const ALLOC_CEILING: usize = 4 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Pieces that look like protocol data, so the fuzzer gets past the first check.
fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0u64..4).prop_map(|v| v.to_le_bytes().to_vec()),
        any::<u64>().prop_map(|v| v.to_le_bytes().to_vec()),
        prop::sample::select(vec![
            0x6f6c_6d67u64,
            0x6461_7461,
            0x6461_7416,
            0x616c_7473,
            0x6378_7470,
            0x5354_5254,
            0x5354_4f50,
            0x5253_4c54,
            1 << 60,
        ])
        .prop_map(|v| v.to_le_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|s| {
            let mut out = (s.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(&s);
            out.resize(out.len().div_ceil(8) * 8, 0);
            out
        }),
        Just(
            Script::default()
                .str("/nix/store/g7lkiv5g5vdwr6vb5vpsmi573bs288bk-hello1")
                .0
        ),
        Just(
            Script::default()
                .str("1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13")
                .0
        ),
        Just(Script::default().str("Error").0),
        prop::collection::vec(any::<u8>(), 0..16),
    ]
}

fn handshake() -> impl Strategy<Value = (Vec<u8>, u8)> {
    prop_oneof![
        Just((Script::handshake_2_8().0, 38)),
        Just((Script::handshake_2_3().0, 21)),
        Just((Script::handshake_2_8().0, 25)),
        Just((
            Script::default()
                .u64(0x6478_696f)
                .u64(0x126)
                .u64(0)
                .str("2.26.3")
                .u64(1)
                .last()
                .0,
            38
        )),
    ]
}

/// Runs a handshake and a sequence of ops over canned bytes.
async fn exercise(bytes: Vec<u8>, minor: u8) {
    let config = ClientConfig {
        max_version: ProtocolVersion::new(1, minor),
        ..Default::default()
    };
    let Ok(mut c) = DaemonClient::connect(Canned::new(bytes), config).await else {
        return;
    };
    let p = StorePath::parse("/nix/store/g7lkiv5g5vdwr6vb5vpsmi573bs288bk-hello1").unwrap();
    let nar = common::hello_nar();
    let info = common::hello_info();
    let _ = c.is_valid_path(&p).await;
    let _ = c.query_path_info(&p).await;
    let _ = c.query_valid_paths([&p], true).await;
    let _ = c.query_missing(std::slice::from_ref(&p)).await;
    let _ = c.nar_from_valid_path(&p, 120, None, &mut Vec::new()).await;
    let _ = c.add_to_store_nar(&info, &nar[..], false, true).await;
    let _ = c
        .add_multiple_to_store([(info.clone(), &nar[..])], false, true)
        .await;
    let _ = c.add_temp_root(&p).await;
    let _ = c.set_options(&Default::default()).await;
}

fn check_allocations() -> Result<(), TestCaseError> {
    let largest = LARGEST.load(Ordering::Relaxed);
    prop_assert!(
        largest <= ALLOC_CEILING,
        "allocated {largest} bytes at once"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_as_handshake(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        runtime().block_on(exercise(bytes, 38));
        check_allocations()?;
    }

    #[test]
    fn random_responses_after_a_valid_handshake(
        (prefix, minor) in handshake(),
        tokens in prop::collection::vec(token(), 0..60),
    ) {
        let mut bytes = prefix;
        bytes.extend(tokens.concat());
        runtime().block_on(exercise(bytes, minor));
        check_allocations()?;
    }

    #[test]
    fn primitives_on_random_bytes(tokens in prop::collection::vec(token(), 0..20)) {
        let data = tokens.concat();
        runtime().block_on(async {
            let _ = wire::read_bytes(&mut Cursor::new(&data), 1 << 20, "s").await;
            let _ = wire::read_strings(&mut Cursor::new(&data), 1 << 20, 1 << 16, "l").await;
            let _ = wire::read_store_paths(&mut Cursor::new(&data), 1 << 20).await;
            let mut cur = Cursor::new(&data);
            let _ = FramedSource::new(&mut cur).read_to_end(1 << 20).await;
        });
        check_allocations()?;
    }
}
