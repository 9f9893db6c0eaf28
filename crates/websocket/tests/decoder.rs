//! The decoder against what clients send: masked frames split at every byte, fragmented
//! messages with interleaved control frames, and each protocol violation with its close code
//! (cases after RFC 6455 and the Autobahn test suite's sections 1-7, written as tables).

use websocket::frame::{apply_mask, encode_header, Opcode};
use websocket::{Decoder, Error, Event};

const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

/// A client frame: header with the mask bit, the key, the masked payload.
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_header(Opcode::Binary, payload.len(), &mut out);
    out[0] = (if fin { 0x80 } else { 0 }) | opcode;
    out[1] |= 0x80;
    out.extend_from_slice(&MASK);
    let mut body = payload.to_vec();
    apply_mask(&mut body, MASK, 0);
    out.extend_from_slice(&body);
    out
}

/// Decodes `stream` pushed `step` bytes at a time, the way a socket delivers it.
fn decode_in_steps(stream: &[u8], step: usize, limit: usize) -> Result<Vec<Event>, Error> {
    let mut d = Decoder::new(limit);
    let mut events = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    for piece in stream.chunks(step.max(1)) {
        pending.extend_from_slice(piece);
        let used = d.decode(&pending, &mut events)?;
        pending.drain(..used);
    }
    Ok(events)
}

#[test]
fn messages_survive_any_split() {
    let mut stream = Vec::new();
    stream.extend(client_frame(true, 0x1, "héllo".as_bytes()));
    stream.extend(client_frame(true, 0x2, &[0u8; 300]));
    stream.extend(client_frame(false, 0x1, b"frag"));
    stream.extend(client_frame(true, 0x9, b"ping!")); // a ping between fragments
    stream.extend(client_frame(true, 0x0, b"mented"));
    stream.extend(client_frame(true, 0x2, &vec![7u8; 70_000]));
    stream.extend(client_frame(true, 0xA, b""));
    stream.extend(client_frame(true, 0x8, &[0x03, 0xE8, b'o', b'k']));
    let want = vec![
        Event::Text("héllo".into()),
        Event::Binary(vec![0; 300]),
        Event::Ping(b"ping!".to_vec()),
        Event::Text("fragmented".into()),
        Event::Binary(vec![7; 70_000]),
        Event::Pong(Vec::new()),
        Event::Close(Some((1000, "ok".into()))),
    ];
    for step in [1, 2, 3, 7, 64, 1000, stream.len()] {
        assert_eq!(
            decode_in_steps(&stream, step, 1 << 20).unwrap(),
            want,
            "step {step}"
        );
    }
}

#[test]
fn nothing_is_consumed_after_close() {
    let mut stream = client_frame(true, 0x8, b"");
    let close_len = stream.len();
    stream.extend(client_frame(true, 0x1, b"late"));
    let mut d = Decoder::new(1024);
    let mut events = Vec::new();
    assert_eq!(d.decode(&stream, &mut events), Ok(close_len));
    assert_eq!(events, vec![Event::Close(None)]);
}

#[test]
fn violations_and_their_close_codes() {
    let cases: Vec<(&str, Vec<u8>, Error, u16)> = vec![
        ("unmasked", vec![0x81, 0x01, b'x'], Error::Unmasked, 1002),
        (
            "reserved bit",
            {
                let mut f = client_frame(true, 0x1, b"x");
                f[0] |= 0x40;
                f
            },
            Error::ReservedBits,
            1002,
        ),
        (
            "opcode 3",
            client_frame(true, 0x3, b""),
            Error::UnknownOpcode(3),
            1002,
        ),
        (
            "opcode 0xB",
            client_frame(true, 0xB, b""),
            Error::UnknownOpcode(0xB),
            1002,
        ),
        (
            "continuation first",
            client_frame(true, 0x0, b"x"),
            Error::BadFragmentation,
            1002,
        ),
        (
            "text inside a message",
            {
                let mut f = client_frame(false, 0x1, b"a");
                f.extend(client_frame(true, 0x1, b"b"));
                f
            },
            Error::BadFragmentation,
            1002,
        ),
        (
            "fragmented ping",
            client_frame(false, 0x9, b"x"),
            Error::BadControlFrame,
            1002,
        ),
        (
            "long ping",
            client_frame(true, 0x9, &[0; 126]),
            Error::BadControlFrame,
            1002,
        ),
        (
            "bad utf-8",
            client_frame(true, 0x1, &[0xff, 0xfe]),
            Error::InvalidUtf8,
            1007,
        ),
        (
            "utf-8 split badly across fragments",
            {
                let mut f = client_frame(false, 0x1, &[0xce]);
                f.extend(client_frame(true, 0x0, &[0x41]));
                f
            },
            Error::InvalidUtf8,
            1007,
        ),
        (
            "too big",
            client_frame(true, 0x2, &[0; 2000]),
            Error::TooBig,
            1009,
        ),
        (
            "too big in fragments",
            {
                let mut f = client_frame(false, 0x2, &[0; 800]);
                f.extend(client_frame(true, 0x0, &[0; 800]));
                f
            },
            Error::TooBig,
            1009,
        ),
        (
            "close with one byte",
            client_frame(true, 0x8, &[3]),
            Error::BadClose,
            1002,
        ),
        (
            "close code 1005",
            client_frame(true, 0x8, &[0x03, 0xED]),
            Error::BadClose,
            1002,
        ),
        (
            "close code 999",
            client_frame(true, 0x8, &[0x03, 0xE7]),
            Error::BadClose,
            1002,
        ),
        (
            "close reason not utf-8",
            client_frame(true, 0x8, &[0x03, 0xE8, 0xff]),
            Error::InvalidUtf8,
            1007,
        ),
    ];
    for (what, stream, error, code) in cases {
        let got = decode_in_steps(&stream, 1, 1024);
        assert_eq!(got, Err(error.clone()), "{what}");
        assert_eq!(error.close_code(), code, "{what}");
        // Whole at once: the same answer.
        assert_eq!(
            decode_in_steps(&stream, stream.len(), 1024),
            Err(error),
            "{what}"
        );
    }
}

#[test]
fn text_split_inside_a_character_across_fragments_is_fine() {
    let mut stream = client_frame(false, 0x1, &[0xc3]);
    stream.extend(client_frame(true, 0x0, &[0xa9]));
    assert_eq!(
        decode_in_steps(&stream, 1, 1024).unwrap(),
        vec![Event::Text("é".into())]
    );
}
