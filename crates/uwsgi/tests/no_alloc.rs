//! The parsers never allocate: a counting global allocator (this test binary only) checks it.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_during;
use uwsgi::{encode_request, Request, ResponseHead, Status, EMPTY_VAR};

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
