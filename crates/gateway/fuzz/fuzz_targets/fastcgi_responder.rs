//! Arbitrary bytes into the FastCGI responder, record after record, as a worker feeds it: it
//! must never panic, always make progress, agree on prefixes, keep the PARAMS limit, and every
//! PARAMS stream it accepts must parse and survive encode -> parse unchanged.
#![no_main]

use gateway::fastcgi::{encode_get_values_result, encode_pair, parse_params, Event, Responder};
use gateway::{Status, Var, EMPTY_VAR};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the PARAMS limit (0..8160 bytes), so ParamsTooLarge is reached too.
    let Some((&limit, mut rest)) = data.split_first() else {
        return;
    };
    let max_params = usize::from(limit) * 32;
    let mut responder = Responder::new(max_params);
    let mut params = Vec::new();
    loop {
        let mut probe = responder.clone();
        let prefix = probe.feed(&rest[..rest.len() / 2]);
        let result = responder.feed(rest);
        if prefix != Ok(Status::Partial) {
            assert_eq!(prefix, result);
            assert_eq!(probe, responder);
        }
        let (event, n) = match result {
            Ok(Status::Complete(step)) => step,
            Ok(Status::Partial) | Err(_) => return,
        };
        assert!(n > 0 && n <= rest.len());
        match event {
            Event::Begin { .. } => params.clear(),
            Event::Params(chunk) => {
                params.extend_from_slice(chunk);
                assert!(params.len() <= max_params);
            }
            Event::ParamsEnd => check_params(&params),
            Event::GetValues(query) => {
                let known: [(&[u8], &[u8]); 1] = [(b"FCGI_MPXS_CONNS", b"0")];
                assert!(encode_get_values_result(query, &known, &mut Vec::new()).is_ok());
            }
            _ => {}
        }
        rest = &rest[n..];
    }
});

/// A PARAMS stream that parses re-encodes (shortest lengths) to pairs that parse the same.
fn check_params(block: &[u8]) {
    let mut storage = [EMPTY_VAR; 64];
    let Ok(count) = parse_params(block, &mut storage) else {
        return;
    };
    let parsed: Vec<Var<'_>> = storage[..count].to_vec();
    let mut again = Vec::new();
    for v in &parsed {
        assert!(encode_pair(v.key, v.value, &mut again).is_ok());
    }
    assert!(again.len() <= block.len());
    let mut storage = [EMPTY_VAR; 64];
    assert_eq!(parse_params(&again, &mut storage), Ok(count));
    assert_eq!(&storage[..count], &parsed[..]);
}
