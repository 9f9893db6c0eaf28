//! Arbitrary status lines and headers into the CGI head encoder: it either refuses, leaving the
//! output alone, or writes a head that a strict HTTP parser reads back as exactly what was given,
//! so no app-supplied byte can split or add a header.
#![no_main]

use gateway::{cgi, Status, EMPTY_VAR};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // 0xff separates the status line, then names and values in turn.
    let mut parts = data.split(|&b| b == 0xff);
    let Some(status_line) = parts.next() else {
        return;
    };
    let fields: Vec<&[u8]> = parts.collect();
    let headers: Vec<(&[u8], &[u8])> = fields.chunks_exact(2).map(|p| (p[0], p[1])).collect();
    let mut out = b"keep".to_vec();
    if cgi::encode_head(status_line, headers.iter().copied(), &mut out).is_err() {
        assert_eq!(out, b"keep");
        return;
    }
    let head = out.strip_prefix(b"keepStatus: ").expect("a head starts with Status:");
    let http = [b"HTTP/1.1 ", head].concat();
    let mut storage = vec![EMPTY_VAR; headers.len()];
    let mut parsed = uwsgi::ResponseHead::new(&mut storage);
    let Ok(Status::Complete(n)) = parsed.parse(&http) else {
        panic!("encoded head does not parse: {:?}", parsed.parse(&http));
    };
    assert_eq!(n, http.len());
    assert_eq!(parsed.status.to_string().as_bytes(), &status_line[..3]);
    assert_eq!(parsed.headers.len(), headers.len());
    for (got, (name, value)) in parsed.headers.iter().zip(&headers) {
        assert_eq!(got.key, *name);
        assert_eq!(got.value, value.trim_ascii());
    }
});
