//! Table-driven tests of the SCGI head parser and encoder, and the heads real front ends send
//! (tests/captures/README.md).

use gateway::scgi::{encode_request, header_len, Error, Request, MAX_HEADER_LEN};
use gateway::{Status, EMPTY_VAR};

type Pairs<'a> = &'a [(&'a [u8], &'a [u8])];

/// The example of the SCGI specification, body included.
const SPEC_EXAMPLE: &[u8] = b"70:CONTENT_LENGTH\x0027\x00SCGI\x001\x00REQUEST_METHOD\x00POST\x00\
REQUEST_URI\x00/deepthought\x00,What is the answer to life?";

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
        name: "length digits only",
        input: b"24",
        slots: 4,
        expect: Ok(Status::Partial),
        vars: &[],
    },
    Case {
        name: "block one byte short",
        input: b"24:CONTENT_LENGTH\x000\x00SCGI\x001",
        slots: 4,
        expect: Ok(Status::Partial),
        vars: &[],
    },
    Case {
        name: "comma missing yet",
        input: b"24:CONTENT_LENGTH\x000\x00SCGI\x001\x00",
        slots: 4,
        expect: Ok(Status::Partial),
        vars: &[],
    },
    Case {
        name: "smallest request",
        input: b"24:CONTENT_LENGTH\x000\x00SCGI\x001\x00,",
        slots: 2,
        expect: Ok(Status::Complete(28)),
        vars: &[(b"CONTENT_LENGTH", b"0"), (b"SCGI", b"1")],
    },
    Case {
        name: "the specification's example",
        input: SPEC_EXAMPLE,
        slots: 4,
        expect: Ok(Status::Complete(74)),
        vars: &[
            (b"CONTENT_LENGTH", b"27"),
            (b"SCGI", b"1"),
            (b"REQUEST_METHOD", b"POST"),
            (b"REQUEST_URI", b"/deepthought"),
        ],
    },
    Case {
        name: "SCGI after other vars, empty values, duplicates kept",
        input: b"35:CONTENT_LENGTH\x000\x00E\x00\x00K\x001\x00K\x002\x00SCGI\x001\x00,",
        slots: 5,
        expect: Ok(Status::Complete(39)),
        vars: &[
            (b"CONTENT_LENGTH", b"0"),
            (b"E", b""),
            (b"K", b"1"),
            (b"K", b"2"),
            (b"SCGI", b"1"),
        ],
    },
    Case {
        name: "repeated CONTENT_LENGTH with the same value",
        input: b"41:CONTENT_LENGTH\x003\x00SCGI\x001\x00CONTENT_LENGTH\x003\x00,",
        slots: 3,
        expect: Ok(Status::Complete(45)),
        vars: &[
            (b"CONTENT_LENGTH", b"3"),
            (b"SCGI", b"1"),
            (b"CONTENT_LENGTH", b"3"),
        ],
    },
    Case {
        name: "not a digit",
        input: b"x4:",
        slots: 4,
        expect: Err(Error::BadLength),
        vars: &[],
    },
    Case {
        name: "colon first",
        input: b":CONTENT_LENGTH",
        slots: 4,
        expect: Err(Error::BadLength),
        vars: &[],
    },
    Case {
        name: "leading zero",
        input: b"024:",
        slots: 4,
        expect: Err(Error::BadLength),
        vars: &[],
    },
    Case {
        name: "a space in the length",
        input: b"2 4:",
        slots: 4,
        expect: Err(Error::BadLength),
        vars: &[],
    },
    Case {
        name: "over 1 MiB",
        input: b"1048577",
        slots: 4,
        expect: Err(Error::TooLarge),
        vars: &[],
    },
    Case {
        name: "eight digits",
        input: b"10000000",
        slots: 4,
        expect: Err(Error::TooLarge),
        vars: &[],
    },
    Case {
        name: "no comma after the block",
        input: b"24:CONTENT_LENGTH\x000\x00SCGI\x001\x00;",
        slots: 4,
        expect: Err(Error::MissingComma),
        vars: &[],
    },
    Case {
        name: "empty block",
        input: b"0:,",
        slots: 4,
        expect: Err(Error::NoContentLength),
        vars: &[],
    },
    Case {
        name: "block not NUL-terminated",
        input: b"23:CONTENT_LENGTH\x000\x00SCGI\x001,",
        slots: 4,
        expect: Err(Error::Malformed),
        vars: &[],
    },
    Case {
        name: "a name without a value",
        input: b"26:CONTENT_LENGTH\x000\x00SCGI\x001\x00X\x00,",
        slots: 4,
        expect: Err(Error::Malformed),
        vars: &[],
    },
    Case {
        name: "empty name",
        input: b"27:CONTENT_LENGTH\x000\x00SCGI\x001\x00\x00v\x00,",
        slots: 4,
        expect: Err(Error::EmptyName),
        vars: &[],
    },
    Case {
        name: "CONTENT_LENGTH not first",
        input: b"24:SCGI\x001\x00CONTENT_LENGTH\x000\x00,",
        slots: 4,
        expect: Err(Error::NoContentLength),
        vars: &[],
    },
    Case {
        name: "signed CONTENT_LENGTH",
        input: b"25:CONTENT_LENGTH\x00-1\x00SCGI\x001\x00,",
        slots: 4,
        expect: Err(Error::BadContentLength),
        vars: &[],
    },
    Case {
        name: "empty CONTENT_LENGTH",
        input: b"23:CONTENT_LENGTH\x00\x00SCGI\x001\x00,",
        slots: 4,
        expect: Err(Error::BadContentLength),
        vars: &[],
    },
    Case {
        name: "CONTENT_LENGTH over u64",
        input: b"43:CONTENT_LENGTH\x0018446744073709551616\x00SCGI\x001\x00,",
        slots: 4,
        expect: Err(Error::BadContentLength),
        vars: &[],
    },
    Case {
        name: "conflicting CONTENT_LENGTH",
        input: b"41:CONTENT_LENGTH\x003\x00SCGI\x001\x00CONTENT_LENGTH\x004\x00,",
        slots: 4,
        expect: Err(Error::BadContentLength),
        vars: &[],
    },
    Case {
        name: "no SCGI var",
        input: b"17:CONTENT_LENGTH\x000\x00,",
        slots: 4,
        expect: Err(Error::NoScgi),
        vars: &[],
    },
    Case {
        name: "SCGI version 2",
        input: b"24:CONTENT_LENGTH\x000\x00SCGI\x002\x00,",
        slots: 4,
        expect: Err(Error::NoScgi),
        vars: &[],
    },
    Case {
        name: "more vars than slots",
        input: b"24:CONTENT_LENGTH\x000\x00SCGI\x001\x00,",
        slots: 1,
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
            assert_eq!(req.vars.len(), case.slots, "{}: storage kept", case.name);
        }
        // header_len agrees with parse on the framing.
        match (header_len(case.input), got) {
            (Ok(Some(n)), Ok(Status::Complete(m))) => assert_eq!(n, m, "{}", case.name),
            (Err(e), parsed) => assert_eq!(parsed, Err(e), "{}", case.name),
            _ => {}
        }
    }
}

#[test]
fn content_length_and_get() {
    let mut storage = [EMPTY_VAR; 8];
    let mut req = Request::new(&mut storage);
    assert_eq!(req.get(b"SCGI"), None, "nothing parsed yet");
    assert_eq!(req.parse(SPEC_EXAMPLE), Ok(Status::Complete(74)));
    assert_eq!(req.content_length, 27);
    assert_eq!(&SPEC_EXAMPLE[74..], b"What is the answer to life?");
    assert_eq!(req.get(b"REQUEST_URI"), Some(&b"/deepthought"[..]));
    assert_eq!(req.get(b"request_uri"), None, "names are case-sensitive");
    assert_eq!(req.get(b""), None);
}

#[test]
fn header_len_sizes_the_read() {
    assert_eq!(header_len(b""), Ok(None));
    assert_eq!(header_len(b"70"), Ok(None));
    assert_eq!(header_len(b"70:"), Ok(Some(74)));
    assert_eq!(header_len(b"0:"), Ok(Some(3)));
    assert_eq!(header_len(b"1048576:"), Ok(Some(8 + MAX_HEADER_LEN + 1)));
    assert_eq!(header_len(b"1048577:"), Err(Error::TooLarge));
}

/// Real front ends: the vars the worker needs are there, duplicates are kept.
#[test]
fn captured_front_ends() {
    let captures: [(&str, &[u8], u64, &[u8]); 4] = [
        (
            "nginx GET",
            include_bytes!("captures/nginx-scgi-get.bin"),
            0,
            b"GET",
        ),
        (
            "nginx POST",
            include_bytes!("captures/nginx-scgi-post.bin"),
            15,
            b"POST",
        ),
        (
            "Apache GET",
            include_bytes!("captures/apache-scgi-get.bin"),
            0,
            b"GET",
        ),
        (
            "Apache POST",
            include_bytes!("captures/apache-scgi-post.bin"),
            15,
            b"POST",
        ),
    ];
    for (name, bytes, content_length, method) in captures {
        let mut storage = [EMPTY_VAR; 64];
        let mut req = Request::new(&mut storage);
        let Ok(Status::Complete(n)) = req.parse(bytes) else {
            panic!("{name}: {:?}", req.parse(bytes));
        };
        assert_eq!(req.content_length, content_length, "{name}");
        assert_eq!(
            bytes.len() - n,
            content_length as usize,
            "{name}: body follows the head"
        );
        assert_eq!(req.get(b"REQUEST_METHOD"), Some(method), "{name}");
        for end in 0..n {
            let mut storage = [EMPTY_VAR; 64];
            assert_eq!(
                Request::new(&mut storage).parse(&bytes[..end]),
                Ok(Status::Partial)
            );
        }
    }
    // nginx 1.22 forwards repeated headers as repeated vars; the worker joins them.
    let bytes = include_bytes!("captures/nginx-scgi-get.bin");
    let mut storage = [EMPTY_VAR; 64];
    let mut req = Request::new(&mut storage);
    assert!(req.parse(bytes).is_ok_and(|s| s.is_complete()));
    let cookies: Vec<&[u8]> = req
        .vars
        .iter()
        .filter(|v| v.key == b"HTTP_COOKIE")
        .map(|v| v.value)
        .collect();
    assert_eq!(cookies, [&b"a=1"[..], b"b=2"]);
}

#[test]
fn encoder_writes_content_length_then_scgi() {
    let mut out = b"keep".to_vec();
    let vars: [(&[u8], &[u8]); 2] = [
        (b"REQUEST_METHOD", b"POST"),
        (b"REQUEST_URI", b"/deepthought"),
    ];
    assert_eq!(encode_request(27, vars, &mut out), Ok(74));
    assert_eq!(&out[4..], &SPEC_EXAMPLE[..74]);
}

#[test]
fn encoder_refuses_and_leaves_output_alone() {
    let cases: [(&[u8], &[u8], Error); 6] = [
        (b"", b"v", Error::EmptyName),
        (b"A\0B", b"v", Error::NulByte),
        (b"A", b"v\0", Error::NulByte),
        (b"CONTENT_LENGTH", b"5", Error::ReservedName),
        (b"SCGI", b"1", Error::ReservedName),
        (b"BIG", &[b'x'; MAX_HEADER_LEN], Error::TooLarge),
    ];
    for (name, value, expect) in cases {
        let mut out = b"keep".to_vec();
        let vars = [(&b"OK"[..], &b"1"[..]), (name, value)];
        assert_eq!(encode_request(0, vars, &mut out), Err(expect), "{name:?}");
        assert_eq!(out, b"keep");
    }
}

#[test]
fn largest_head_round_trips() {
    // CONTENT_LENGTH\00\0 (17) + SCGI\01\0 (7) + "V\0" (2) + value + "\0" = exactly 1 MiB.
    let value = vec![b'v'; MAX_HEADER_LEN - 27];
    let mut out = Vec::new();
    let n = encode_request(0, [(&b"V"[..], &value[..])], &mut out).unwrap();
    assert_eq!(n, "1048576:".len() + MAX_HEADER_LEN + 1);
    let mut storage = [EMPTY_VAR; 3];
    let mut req = Request::new(&mut storage);
    assert_eq!(req.parse(&out), Ok(Status::Complete(n)));
    assert_eq!(req.get(b"V").map(<[u8]>::len), Some(value.len()));
    // One byte more and the encoder refuses.
    let value = vec![b'v'; MAX_HEADER_LEN - 26];
    assert_eq!(
        encode_request(0, [(&b"V"[..], &value[..])], &mut Vec::new()),
        Err(Error::TooLarge)
    );
}
