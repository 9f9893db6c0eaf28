//! Arbitrary bytes into the response head parser: it must never panic, prefixes must agree
//! with the full input, and a parsed head must survive encode -> parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uwsgi::{encode_response_head, ResponseHead, Status, Var, EMPTY_VAR};

fuzz_target!(|data: &[u8]| {
    let mut storage = [EMPTY_VAR; 16];
    let mut head = ResponseHead::new(&mut storage);
    let full = head.parse(data);

    // A prefix is Partial or already carries the final answer.
    let mut prefix_storage = [EMPTY_VAR; 16];
    let prefix = ResponseHead::new(&mut prefix_storage).parse(&data[..data.len() / 2]);
    if prefix != Ok(Status::Partial) {
        assert_eq!(prefix, full);
    }

    if let Ok(Status::Complete(n)) = full {
        assert!(n <= data.len() && data[..n].ends_with(b"\n"));
        // Re-encode what parsed (as HTTP/1.1) and parse it again: same status, reason, headers.
        let (status, reason) = (head.status, head.reason);
        let headers: Vec<Var<'_>> = head.headers.to_vec();
        let mut status_line = status.to_string().into_bytes();
        status_line.push(b' ');
        status_line.extend_from_slice(reason);
        let mut out = Vec::new();
        let pairs = headers.iter().map(|h| (h.key, h.value));
        assert_eq!(encode_response_head(&status_line, pairs, &mut out), Ok(()));
        let mut again_storage = [EMPTY_VAR; 16];
        let mut again = ResponseHead::new(&mut again_storage);
        assert_eq!(again.parse(&out), Ok(Status::Complete(out.len())));
        assert_eq!((again.minor_version, again.status, again.reason), (1, status, reason));
        assert_eq!(&*again.headers, &headers[..]);
    }
});
