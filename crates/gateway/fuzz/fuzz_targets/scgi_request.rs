//! Arbitrary bytes into the SCGI head parser: it must never panic, a prefix must be Partial or
//! give the final answer, and whatever parses must be exactly the netstring of what was parsed.
#![no_main]

use gateway::{scgi, Status, EMPTY_VAR};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the caller's storage size, so TooManyVars is reached too.
    let Some((&slots, buf)) = data.split_first() else {
        return;
    };
    let mut storage = [EMPTY_VAR; 64];
    let storage = &mut storage[..usize::from(slots % 65)];
    let slots = storage.len();
    let mut req = scgi::Request::new(storage);
    let full = req.parse(buf);
    match full {
        Ok(Status::Complete(n)) => {
            assert!(n <= buf.len());
            assert_eq!(scgi::header_len(buf), Ok(Some(n)));
            let mut block = Vec::new();
            for v in req.vars.iter() {
                block.extend_from_slice(v.key);
                block.push(0);
                block.extend_from_slice(v.value);
                block.push(0);
            }
            let netstring = [format!("{}:", block.len()).as_bytes(), &block, b","].concat();
            assert_eq!(&netstring[..], &buf[..n]);
            assert_eq!(req.vars.first().map(|v| v.key), Some(&b"CONTENT_LENGTH"[..]));
            assert!(req.vars.iter().any(|v| v.key == b"SCGI" && v.value == b"1"));
        }
        Ok(Status::Partial) | Err(_) => assert_eq!(req.vars.len(), slots),
    }
    let mut storage = [EMPTY_VAR; 64];
    let prefix = scgi::Request::new(&mut storage[..slots]).parse(&buf[..buf.len() / 2]);
    if prefix != Ok(Status::Partial) {
        assert_eq!(prefix, full);
    }
});
