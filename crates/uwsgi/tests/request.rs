//! Table-driven tests of the request packet parser and encoder, including the byte example of
//! the protocol reference (shared/reference/features.md, "(b) The uwsgi wire protocol").

use uwsgi::{
    encode_request, find_var, packet_len, Error, Request, Status, Var, EMPTY_VAR, HEADER_LEN,
    MAX_VARS, MAX_VARS_BLOCK,
};

type Pairs<'a> = &'a [(&'a [u8], &'a [u8])];

/// `REQUEST_METHOD=GET`, the reference's byte example: a 21-byte block (2+14+2+3).
const EXAMPLE: &[u8] = b"\x00\x15\x00\x00\x0e\x00REQUEST_METHOD\x03\x00GET";

struct Case {
    name: &'static str,
    input: &'static [u8],
    slots: usize,
    expect: Result<Status<usize>, Error>,
    vars: Pairs<'static>,
}

const CASES: &[Case] = &[
    Case {
        name: "empty buffer",
        input: b"",
        slots: 4,
        expect: Ok(Status::Partial),
        vars: &[],
    },
    Case {
        name: "partial header",
        input: b"\x00\x15\x00",
        slots: 4,
        expect: Ok(Status::Partial),
        vars: &[],
    },
    Case {
        name: "header only, block missing",
        input: b"\x00\x15\x00\x00",
        slots: 4,
        expect: Ok(Status::Partial),
        vars: &[],
    },
    Case {
        name: "block one byte short",
        input: b"\x00\x15\x00\x00\x0e\x00REQUEST_METHOD\x03\x00GE",
        slots: 4,
        expect: Ok(Status::Partial),
        vars: &[],
    },
    Case {
        name: "reference byte example",
        input: EXAMPLE,
        slots: 4,
        expect: Ok(Status::Complete(25)),
        vars: &[(b"REQUEST_METHOD", b"GET")],
    },
    Case {
        name: "body after the block is not consumed",
        input: b"\x00\x15\x00\x00\x0e\x00REQUEST_METHOD\x03\x00GEThello body",
        slots: 4,
        expect: Ok(Status::Complete(25)),
        vars: &[(b"REQUEST_METHOD", b"GET")],
    },
    Case {
        name: "empty vars block",
        input: b"\x00\x00\x00\x00",
        slots: 0,
        expect: Ok(Status::Complete(4)),
        vars: &[],
    },
    Case {
        name: "empty values, including the last",
        input: b"\x00\x10\x00\x00\x01\x00A\x00\x00\x01\x00B\x01\x00b\x01\x00C\x00\x00",
        slots: 3,
        expect: Ok(Status::Complete(20)),
        vars: &[(b"A", b""), (b"B", b"b"), (b"C", b"")],
    },
    Case {
        name: "duplicate keys are kept in order",
        input: b"\x00\x0c\x00\x00\x01\x00K\x01\x001\x01\x00K\x01\x002",
        slots: 2,
        expect: Ok(Status::Complete(16)),
        vars: &[(b"K", b"1"), (b"K", b"2")],
    },
    Case {
        name: "binary bytes in keys and values",
        input: b"\x00\x08\x00\x00\x02\x00\x00\xff\x02\x00\r\n",
        slots: 1,
        expect: Ok(Status::Complete(12)),
        vars: &[(b"\x00\xff", b"\r\n")],
    },
    Case {
        name: "empty key",
        input: b"\x00\x04\x00\x00\x00\x00\x00\x00",
        slots: 4,
        expect: Err(Error::EmptyKey),
        vars: &[],
    },
    Case {
        name: "empty key after a good var",
        input: b"\x00\x0a\x00\x00\x01\x00A\x01\x00a\x00\x00\x00\x00",
        slots: 4,
        expect: Err(Error::EmptyKey),
        vars: &[],
    },
    Case {
        name: "key length past the block although the buffer holds more (body)",
        input: b"\x00\x03\x00\x00\x05\x00ABCDEFGH",
        slots: 4,
        expect: Err(Error::Truncated),
        vars: &[],
    },
    Case {
        name: "value length past the block",
        input: b"\x00\x06\x00\x00\x01\x00A\x09\x00xyzxyzxyz",
        slots: 4,
        expect: Err(Error::Truncated),
        vars: &[],
    },
    Case {
        name: "value length field missing",
        input: b"\x00\x03\x00\x00\x01\x00A",
        slots: 4,
        expect: Err(Error::Truncated),
        vars: &[],
    },
    Case {
        name: "half a value length field",
        input: b"\x00\x04\x00\x00\x01\x00A\x00",
        slots: 4,
        expect: Err(Error::Truncated),
        vars: &[],
    },
    Case {
        name: "one stray byte after the last var",
        input: b"\x00\x07\x00\x00\x01\x00A\x01\x00aZ",
        slots: 4,
        expect: Err(Error::Truncated),
        vars: &[],
    },
    Case {
        name: "more vars than slots",
        input: b"\x00\x0c\x00\x00\x01\x00K\x01\x001\x01\x00L\x01\x002",
        slots: 1,
        expect: Err(Error::TooManyVars),
        vars: &[],
    },
    Case {
        name: "one var, no slots",
        input: EXAMPLE,
        slots: 0,
        expect: Err(Error::TooManyVars),
        vars: &[],
    },
];

#[test]
fn parse_table() {
    for case in CASES {
        let mut storage = vec![EMPTY_VAR; case.slots];
        let mut req = Request::new(&mut storage);
        let got = req.parse(case.input);
        assert_eq!(got, case.expect, "{}", case.name);
        if let Ok(Status::Complete(_)) = got {
            let vars: Vec<(&[u8], &[u8])> = req.vars.iter().map(|v| (v.key, v.value)).collect();
            assert_eq!(vars, case.vars, "{}", case.name);
        } else {
            // Partial and Err keep the caller's full storage so the parse can be repeated.
            assert_eq!(req.vars.len(), case.slots, "{}", case.name);
        }
    }
}

#[test]
fn modifiers_are_exposed_not_judged() {
    for (m1, m2) in [(0u8, 0u8), (30, 0), (72, 5), (200, 255)] {
        let packet = [m1, 0, 0, m2];
        let mut storage = [EMPTY_VAR; 1];
        let mut req = Request::new(&mut storage);
        assert_eq!(req.parse(&packet), Ok(Status::Complete(4)));
        assert_eq!((req.modifier1, req.modifier2), (m1, m2));
    }
    // The modifiers are readable as soon as the header is there, before the block is.
    let mut storage = [EMPTY_VAR; 1];
    let mut req = Request::new(&mut storage);
    assert_eq!(req.parse(b"\x1e\x15\x00\x07"), Ok(Status::Partial));
    assert_eq!((req.modifier1, req.modifier2), (30, 7));
}

#[test]
fn get_returns_first_match_and_never_matches_empty_key() {
    // K=1, L="", K=2: three vars of 6, 5 and 6 bytes.
    let input = b"\x00\x11\x00\x00\x01\x00K\x01\x001\x01\x00L\x00\x00\x01\x00K\x01\x002";
    let mut storage = [EMPTY_VAR; 8];
    let mut req = Request::new(&mut storage);
    assert_eq!(req.get(b"K"), None, "nothing parsed yet");
    assert_eq!(req.parse(input), Ok(Status::Complete(21)));
    assert_eq!(req.vars.len(), 3);
    assert_eq!(req.get(b"K"), Some(&b"1"[..]));
    assert_eq!(req.get(b"L"), Some(&b""[..]));
    assert_eq!(req.get(b"k"), None, "keys are case-sensitive");
    assert_eq!(req.get(b""), None);
}

#[test]
fn partial_then_complete_with_the_same_storage() {
    let mut storage = [EMPTY_VAR; 2];
    let mut req = Request::new(&mut storage);
    for end in 0..EXAMPLE.len() {
        assert_eq!(
            req.parse(&EXAMPLE[..end]),
            Ok(Status::Partial),
            "prefix of {end}"
        );
    }
    assert_eq!(req.parse(EXAMPLE), Ok(Status::Complete(EXAMPLE.len())));
    assert_eq!(
        req.vars,
        &[Var {
            key: b"REQUEST_METHOD",
            value: b"GET"
        }]
    );
}

#[test]
fn largest_block_parses() {
    // One var filling the 16-bit size exactly: 4 + 1 + 65,530 = 65,535.
    let value = vec![b'v'; MAX_VARS_BLOCK - 5];
    let mut packet = Vec::new();
    let n = encode_request(0, 0, [(&b"K"[..], &value[..])], &mut packet).unwrap();
    assert_eq!(n, HEADER_LEN + MAX_VARS_BLOCK);
    assert_eq!(&packet[1..3], &[0xff, 0xff]);
    let mut storage = [EMPTY_VAR; 1];
    let mut req = Request::new(&mut storage);
    assert_eq!(req.parse(&packet), Ok(Status::Complete(n)));
    assert_eq!(req.get(b"K").map(<[u8]>::len), Some(value.len()));
}

#[test]
fn encode_reference_example() {
    let mut out = Vec::new();
    assert_eq!(
        encode_request(0, 0, [(&b"REQUEST_METHOD"[..], &b"GET"[..])], &mut out),
        Ok(25)
    );
    assert_eq!(out, EXAMPLE);
}

#[test]
fn encode_appends_and_reports_its_length() {
    let mut out = b"prefix".to_vec();
    let vars: Pairs = &[(b"A", b""), (b"BB", b"bb")];
    assert_eq!(
        encode_request(30, 1, vars.iter().copied(), &mut out),
        Ok(4 + 5 + 8)
    );
    assert_eq!(
        out,
        b"prefix\x1e\x0d\x00\x01\x01\x00A\x00\x00\x02\x00BB\x02\x00bb"
    );
    let mut empty = Vec::new();
    assert_eq!(encode_request(0, 0, [], &mut empty), Ok(4));
    assert_eq!(empty, [0, 0, 0, 0]);
}

#[test]
fn encoder_accepts_exactly_65535_byte_blocks() {
    // One big var, and many small ones summing to the limit.
    let big = vec![b'x'; MAX_VARS_BLOCK - 5];
    let mut out = Vec::new();
    assert_eq!(
        encode_request(0, 0, [(&b"K"[..], &big[..])], &mut out),
        Ok(4 + 65_535)
    );
    // 500 vars of 131 bytes (4 + "KEY" + 124 value bytes) = 65,500, plus one of 35 bytes.
    let value = [b'v'; 124];
    let last = [b'z'; 30];
    let mut vars: Vec<(&[u8], &[u8])> = vec![(b"KEY", &value[..]); 500];
    vars.push((b"Z", &last[..]));
    out.clear();
    assert_eq!(
        encode_request(0, 0, vars.iter().copied(), &mut out),
        Ok(4 + 65_535)
    );
    assert_eq!(&out[..4], &[0, 0xff, 0xff, 0]);
}

#[test]
fn encoder_refuses_65536_byte_blocks_and_leaves_out_unchanged() {
    let big = vec![b'x'; MAX_VARS_BLOCK - 4];
    let mut out = b"keep".to_vec();
    assert_eq!(
        encode_request(0, 0, [(&b"K"[..], &big[..])], &mut out),
        Err(Error::VarsTooLarge)
    );
    assert_eq!(out, b"keep");
    // Many vars crossing the limit by one byte: no wrap to a 0-byte size.
    let value = [b'v'; 124];
    let last = [b'z'; 31];
    let mut vars: Vec<(&[u8], &[u8])> = vec![(b"KEY", &value[..]); 500];
    vars.push((b"Z", &last[..]));
    assert_eq!(
        encode_request(0, 0, vars.iter().copied(), &mut out),
        Err(Error::VarsTooLarge)
    );
    assert_eq!(out, b"keep");
}

#[test]
fn encoder_field_and_key_errors_leave_out_unchanged() {
    let huge = vec![b'x'; 65_536];
    let max_field = vec![b'x'; 65_535];
    let cases: &[(&str, Pairs, Error)] = &[
        ("empty key", &[(b"", b"v")], Error::EmptyKey),
        (
            "empty key after good vars",
            &[(b"A", b"a"), (b"", b"")],
            Error::EmptyKey,
        ),
        ("key of 65,536 bytes", &[(&huge, b"")], Error::FieldTooLong),
        (
            "value of 65,536 bytes",
            &[(b"K", &huge)],
            Error::FieldTooLong,
        ),
        // A 65,535-byte field has a valid length but can never fit in a block with its key.
        (
            "value of 65,535 bytes",
            &[(b"K", &max_field)],
            Error::VarsTooLarge,
        ),
    ];
    for (name, vars, error) in cases {
        let mut out = b"keep".to_vec();
        assert_eq!(
            encode_request(0, 0, vars.iter().copied(), &mut out),
            Err(*error),
            "{name}"
        );
        assert_eq!(out, b"keep", "{name}");
    }
}

#[test]
fn errors_display_and_are_std_errors() {
    let e: Box<dyn std::error::Error> = Box::new(Error::VarsTooLarge);
    assert_eq!(e.to_string(), "uwsgi vars block larger than 65535 bytes");
    assert_eq!(Error::Truncated.to_string(), Error::Truncated.as_str());
}

#[test]
fn packet_len_reads_the_header() {
    assert_eq!(packet_len(b""), None);
    assert_eq!(packet_len(b"\x00\x15\x00"), None);
    assert_eq!(packet_len(EXAMPLE), Some(25));
    assert_eq!(
        packet_len(b"\x00\xff\xff\x00"),
        Some(HEADER_LEN + MAX_VARS_BLOCK)
    );
}

#[test]
fn encoder_refuses_more_than_max_vars_and_leaves_out_unchanged() {
    let vars: Vec<(&[u8], &[u8])> = vec![(b"K", b"v"); MAX_VARS];
    let mut out = Vec::new();
    assert_eq!(
        encode_request(0, 0, vars.iter().copied(), &mut out),
        Ok(4 + 6 * MAX_VARS)
    );
    let mut out = b"keep".to_vec();
    let vars: Vec<(&[u8], &[u8])> = vec![(b"K", b"v"); MAX_VARS + 1];
    assert_eq!(
        encode_request(0, 0, vars.iter().copied(), &mut out),
        Err(Error::TooManyVars)
    );
    assert_eq!(out, b"keep");
}

#[test]
fn find_var_needs_no_storage() {
    let mut packet = Vec::new();
    let vars: Vec<(Vec<u8>, Vec<u8>)> = (0..600)
        .map(|i| (format!("K{i}").into_bytes(), format!("v{i}").into_bytes()))
        .collect();
    for (k, v) in &vars {
        packet.extend_from_slice(&(k.len() as u16).to_le_bytes());
        packet.extend_from_slice(k);
        packet.extend_from_slice(&(v.len() as u16).to_le_bytes());
        packet.extend_from_slice(v);
    }
    let mut full = vec![0u8];
    full.extend_from_slice(&(packet.len() as u16).to_le_bytes());
    full.push(0);
    full.extend_from_slice(&packet);
    full.extend_from_slice(b"body");
    assert_eq!(find_var(&full, b"K599"), Some(&b"v599"[..]));
    assert_eq!(find_var(&full, b"K0"), Some(&b"v0"[..]));
    assert_eq!(find_var(&full, b"K600"), None);
    assert_eq!(find_var(&full, b""), None);
    assert_eq!(
        find_var(&full[..full.len() - 10], b"K0"),
        None,
        "incomplete"
    );
    assert_eq!(find_var(EXAMPLE, b"REQUEST_METHOD"), Some(&b"GET"[..]));
}
