//! Arbitrary client bytes into the decoder, pushed in pieces whose sizes the input picks: it
//! must never panic, never consume more than it was given, and give the same events (or the
//! same error) however the stream is split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use websocket::{Decoder, Event};

fn run(stream: &[u8], step: usize) -> (Vec<Event>, Option<websocket::Error>) {
    let mut d = Decoder::new(64 * 1024);
    let mut events = Vec::new();
    let mut pending = Vec::new();
    for piece in stream.chunks(step.max(1)) {
        pending.extend_from_slice(piece);
        match d.decode(&pending, &mut events) {
            Ok(used) => {
                assert!(used <= pending.len());
                pending.drain(..used);
            }
            Err(e) => return (events, Some(e)),
        }
    }
    (events, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let whole = run(stream, stream.len());
    let split = run(stream, usize::from(step % 17) + 1);
    assert_eq!(whole, split);
});
