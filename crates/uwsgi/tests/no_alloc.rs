//! The parsers never allocate: a counting global allocator (this test binary only) checks it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use uwsgi::{encode_request, Request, ResponseHead, Status, EMPTY_VAR};

thread_local! {
    // Per thread, so allocations by the test harness's other threads are not counted.
    // A const-initialised Cell has no lazy init and no destructor: safe inside the allocator.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged,
// so Counting upholds exactly the guarantees System does; the counter touches no heap memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded unchanged; the caller upholds alloc's contract for `layout`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by System with `layout` (all allocations go through it).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded unchanged; `ptr`/`layout` come from System and the caller upholds
        // realloc's contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn counter_sees_allocations() {
    // Guards the test itself: if counting were broken, the checks below would pass vacuously.
    assert!(allocations_during(|| drop(std::hint::black_box(vec![1u8; 16]))) > 0);
}

#[test]
fn request_parser_does_not_allocate() {
    let vars: Vec<(&[u8], &[u8])> = vec![
        (b"REQUEST_METHOD", b"GET"),
        (b"PATH_INFO", b"/"),
        (b"HTTP_HOST", b"h"),
    ];
    let mut packet = Vec::new();
    encode_request(0, 0, vars, &mut packet).unwrap();
    let inputs: [&[u8]; 4] = [
        &packet,
        &packet[..10],
        b"\x00\x04\x00\x00\x00\x00\x00\x00",
        b"\x00\x03\x00\x00\x05\x00ABC",
    ];
    let mut storage = [EMPTY_VAR; 8];
    let n = allocations_during(|| {
        for input in inputs {
            let mut req = Request::new(&mut storage);
            let _ = std::hint::black_box(req.parse(input));
            let _ = std::hint::black_box(req.get(b"PATH_INFO"));
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn response_parser_does_not_allocate() {
    let inputs: [&[u8]; 4] = [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX: y\r\n\r\nbody",
        b"HTTP/1.1 200 OK\r\nContent-Type: te",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
    ];
    let mut storage = [EMPTY_VAR; 2];
    let mut completed = 0;
    let n = allocations_during(|| {
        for input in inputs {
            let mut head = ResponseHead::new(&mut storage);
            if let Ok(Status::Complete(_)) = std::hint::black_box(head.parse(input)) {
                completed += 1;
            }
        }
    });
    assert_eq!(n, 0);
    assert_eq!(completed, 1);
}
