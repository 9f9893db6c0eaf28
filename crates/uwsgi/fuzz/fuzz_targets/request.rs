//! Arbitrary bytes into the request packet parser: it must never panic, a Partial prefix must
//! stay consistent with the full input, and whatever parses must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uwsgi::{encode_request, Request, Status, Var, EMPTY_VAR};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the caller's storage size, so TooManyVars is reached too.
    let Some((&slots, buf)) = data.split_first() else {
        return;
    };
    let mut storage = [EMPTY_VAR; 64];
    let storage = &mut storage[..usize::from(slots % 65)];
    let slots = storage.len();
    let mut req = Request::new(storage);
    let result = req.parse(buf);
    match result {
        Ok(Status::Complete(n)) => {
            assert!(n <= buf.len());
            let vars: Vec<Var<'_>> = req.vars.to_vec();
            let pairs = vars.iter().map(|v| (v.key, v.value));
            let mut again = Vec::new();
            assert_eq!(encode_request(req.modifier1, req.modifier2, pairs, &mut again), Ok(n));
            assert_eq!(&again[..], &buf[..n]);
            // Every strict prefix of a complete packet is Partial.
            let mut storage = [EMPTY_VAR; 64];
            let cut = n / 2;
            assert_eq!(Request::new(&mut storage[..slots]).parse(&buf[..cut]), Ok(Status::Partial));
        }
        Ok(Status::Partial) | Err(_) => assert_eq!(req.vars.len(), slots),
    }
});
