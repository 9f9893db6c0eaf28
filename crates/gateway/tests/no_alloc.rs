//! The parsers never allocate: a counting global allocator (this test binary only) checks it,
//! on the requests real front ends send (tests/captures) and on malformed input.

#[path = "../../uwsgi/tests/support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_during;
use gateway::fastcgi::{parse_params, parse_record, Event, Responder};
use gateway::{scgi, Status, EMPTY_VAR};

#[test]
fn scgi_parser_does_not_allocate() {
    let inputs: [&[u8]; 6] = [
        include_bytes!("captures/nginx-scgi-get.bin"),
        include_bytes!("captures/apache-scgi-post.bin"),
        &include_bytes!("captures/nginx-scgi-post.bin")[..100],
        b"24:CONTENT_LENGTH\x00x\x00SCGI\x001\x00,",
        b"01:",
        b"17:CONTENT_LENGTH\x000\x00,",
    ];
    let mut storage = [EMPTY_VAR; 64];
    let mut completed = 0;
    let n = allocations_during(|| {
        for input in inputs {
            let mut req = scgi::Request::new(&mut storage);
            if let Ok(Status::Complete(_)) = std::hint::black_box(req.parse(input)) {
                completed += 1;
            }
            let _ = std::hint::black_box((req.get(b"PATH_INFO"), scgi::header_len(input)));
        }
    });
    assert_eq!(n, 0);
    assert_eq!(completed, 2);
}

#[test]
fn fastcgi_responder_does_not_allocate() {
    let inputs: [&[u8]; 4] = [
        include_bytes!("captures/nginx-fastcgi-post.bin"),
        include_bytes!("captures/apache-fastcgi-chunked.bin"),
        b"\x01\x09\x00\x00\x00\x03\x00\x00\x05\x00A",
        b"\x01\x01\x00\x01\x00\x08\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00",
    ];
    // Params are collected into storage the caller owns (a fixed buffer here).
    let mut params = [0u8; 4096];
    let mut summary = Vec::with_capacity(16);
    let n = allocations_during(|| {
        for input in inputs {
            let mut responder = Responder::default();
            let (mut pos, mut filled, mut body) = (0, 0, 0);
            while let Ok(Status::Complete((event, used))) = responder.feed(&input[pos..]) {
                match event {
                    Event::Params(chunk) => {
                        params[filled..filled + chunk.len()].copy_from_slice(chunk);
                        filled += chunk.len();
                    }
                    Event::Stdin(chunk) => body += chunk.len(),
                    _ => {}
                }
                pos += used;
            }
            let mut vars = [EMPTY_VAR; 64];
            let count = parse_params(&params[..filled], &mut vars).unwrap_or(0);
            let _ = std::hint::black_box(parse_record(input));
            summary.push((count, body));
        }
    });
    assert_eq!(n, 0);
    assert_eq!(summary[1].1, 21_700, "the chunked body came through");
    assert!(summary[0].0 > 10 && summary[1].0 > 10);
}
