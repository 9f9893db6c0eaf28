//! FastCGI: record framing, name-value pairs, the responder's connection rules (table-driven
//! scenarios), the encoders' exact bytes, and the requests real front ends send
//! (tests/captures/README.md).

use gateway::fastcgi::{
    encode_begin_request, encode_end_request, encode_get_values, encode_get_values_result,
    encode_pair, encode_params, encode_record, encode_stdout, encode_stream, encode_unknown_type,
    kind, parse_params, parse_record, record_header, record_len, role, Error, Event, Header,
    ProtocolStatus, Record, Responder, MAX_CONTENT_LEN,
};
use gateway::{Status, Var, EMPTY_VAR};

type Pairs<'a> = &'a [(&'a [u8], &'a [u8])];

/// name, input, content length it announces, body it carries.
type Capture<'a> = (&'a str, &'a [u8], Option<&'a [u8]>, &'a [u8]);

/// Feeds `bytes` through `responder` until it needs more input or fails; returns the events, the
/// error if any, and how many bytes were left unconsumed.
fn drive<'b>(responder: &mut Responder, bytes: &'b [u8]) -> (Vec<Event<'b>>, Option<Error>, usize) {
    let mut events = Vec::new();
    let mut pos = 0;
    loop {
        match responder.feed(&bytes[pos..]) {
            Ok(Status::Complete((event, n))) => {
                assert!(n > 0, "progress on every record");
                events.push(event);
                pos += n;
            }
            Ok(Status::Partial) => return (events, None, bytes.len() - pos),
            Err(e) => return (events, Some(e), bytes.len() - pos),
        }
    }
}

fn record(kind: u8, id: u16, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_record(kind, id, content, &mut out).unwrap();
    out
}

fn begin(id: u16, role: u16, keep_conn: bool) -> Vec<u8> {
    let mut out = Vec::new();
    encode_begin_request(id, role, keep_conn, &mut out);
    out
}

/// A whole request: BEGIN, the PARAMS stream, the STDIN stream.
fn request(id: u16, params: &[(&[u8], &[u8])], body: &[u8]) -> Vec<u8> {
    let mut out = begin(id, role::RESPONDER, false);
    encode_params(id, params.iter().copied(), &mut out).unwrap();
    encode_stream(kind::STDIN, id, body, &mut out);
    out.extend(record(kind::STDIN, id, b""));
    out
}

#[test]
fn record_framing() {
    // A STDIN record with 3 content bytes and 5 padding bytes, then the next record's first byte.
    let bytes = b"\x01\x05\x00\x01\x00\x03\x05\x00abc\0\0\0\0\0\x01";
    for end in 0..16 {
        assert_eq!(
            parse_record(&bytes[..end]),
            Ok(Status::Partial),
            "prefix {end}"
        );
    }
    let header = Header {
        version: 1,
        kind: kind::STDIN,
        request_id: 1,
        content_length: 3,
        padding_length: 5,
    };
    let expect = Record {
        header,
        content: b"abc",
    };
    assert_eq!(parse_record(bytes), Ok(Status::Complete((expect, 16))));
    assert_eq!(record_len(&bytes[..7]), None);
    assert_eq!(record_len(bytes), Some(16));
    assert_eq!(header.to_bytes(), bytes[..8]);
    // The version is judged on the first byte, before the rest arrives.
    assert_eq!(parse_record(b"\x02"), Err(Error::BadVersion));
    assert_eq!(
        parse_record(b"\x00\x05\x00\x01\x00\x00\x00\x00"),
        Err(Error::BadVersion)
    );
    // The largest record: 65,535 content bytes and 255 of padding.
    let mut big = vec![1, kind::STDIN, 0, 1, 0xff, 0xff, 0xff, 0];
    big.resize(8 + 65_535 + 255, b'x');
    assert_eq!(record_len(&big), Some(big.len()));
    assert!(
        matches!(parse_record(&big), Ok(Status::Complete((r, n))) if n == big.len() && r.content.len() == 65_535)
    );
}

#[test]
fn name_value_pairs() {
    let cases: [(&str, &[u8], Result<Pairs, Error>); 9] = [
        ("empty block", b"", Ok(&[])),
        (
            "1-byte lengths",
            b"\x01\x02ABc\x01\x00d\x01\x00E",
            Ok(&[(b"A", b"Bc"), (b"d", b""), (b"E", b"")]),
        ),
        (
            "4-byte lengths",
            b"\x80\x00\x00\x01\x80\x00\x00\x02Kvv",
            Ok(&[(b"K", b"vv")]),
        ),
        (
            "4-byte form of a short length",
            b"\x01\x80\x00\x00\x00K",
            Ok(&[(b"K", b"")]),
        ),
        ("empty name", b"\x00\x01v", Err(Error::EmptyName)),
        ("name past the block", b"\x05\x00ABC", Err(Error::Truncated)),
        ("value past the block", b"\x01\x05A", Err(Error::Truncated)),
        (
            "half a 4-byte length",
            b"\x01\x80\x00A",
            Err(Error::Truncated),
        ),
        (
            "2^31-1 value length",
            b"\x01\xff\xff\xff\xffA",
            Err(Error::Truncated),
        ),
    ];
    for (name, block, expect) in cases {
        let mut storage = [EMPTY_VAR; 4];
        let got = parse_params(block, &mut storage).map(|n| storage[..n].to_vec());
        let expect: Result<Vec<Var<'_>>, Error> = expect.map(|pairs| {
            pairs
                .iter()
                .map(|&(key, value)| Var { key, value })
                .collect()
        });
        assert_eq!(got, expect, "{name}");
    }
    let mut one = [EMPTY_VAR; 1];
    assert_eq!(
        parse_params(b"\x01\x00A\x01\x00B", &mut one),
        Err(Error::TooManyVars)
    );
}

#[test]
fn pair_lengths_switch_to_four_bytes_at_128() {
    for (len, prefix) in [
        (127usize, &b"\x7f"[..]),
        (128, b"\x80\x00\x00\x80"),
        (65_536, b"\x80\x01\x00\x00"),
    ] {
        let value = vec![b'v'; len];
        let mut out = Vec::new();
        encode_pair(b"K", &value, &mut out).unwrap();
        assert_eq!(&out[1..1 + prefix.len()], prefix, "value of {len}");
        let mut storage = [EMPTY_VAR; 1];
        assert_eq!(parse_params(&out, &mut storage), Ok(1));
        assert_eq!(storage[0].value.len(), len);
    }
    let mut out = b"keep".to_vec();
    assert_eq!(encode_pair(b"", b"v", &mut out), Err(Error::EmptyName));
    assert_eq!(out, b"keep");
}

/// One connection scenario: the bytes the web server sends, the events in order, how it ends.
struct Scenario {
    name: &'static str,
    input: Vec<u8>,
    events: Vec<Event<'static>>,
    error: Option<Error>,
}

/// The events of `request(1, &[(b"REQUEST_METHOD", b"GET")], b"")`.
fn get_events() -> Vec<Event<'static>> {
    vec![
        Event::Begin {
            request_id: 1,
            keep_conn: false,
        },
        Event::Params(b"\x0e\x03REQUEST_METHODGET"),
        Event::ParamsEnd,
        Event::StdinEnd,
    ]
}

fn scenarios() -> Vec<Scenario> {
    let get = request(1, &[(b"REQUEST_METHOD", b"GET")], b"");
    let mut second_begin = begin(1, role::RESPONDER, false);
    second_begin.extend(begin(2, role::RESPONDER, false));
    second_begin.extend(record(kind::PARAMS, 2, b"\x01\x01AB"));
    second_begin.extend(record(kind::PARAMS, 1, b""));
    let mut authorizer = begin(3, role::AUTHORIZER, false);
    authorizer.extend(record(kind::PARAMS, 3, b"\x01\x01AB"));
    authorizer.extend(get.clone());
    let mut abort = begin(1, role::RESPONDER, false);
    abort.extend(record(kind::ABORT_REQUEST, 1, b""));
    abort.extend(record(kind::PARAMS, 1, b""));
    vec![
        Scenario {
            name: "a whole GET",
            input: get.clone(),
            events: get_events(),
            error: None,
        },
        Scenario {
            name: "GET_VALUES is answered at any time",
            input: [
                record(kind::GET_VALUES, 0, b"\x0e\x00FCGI_MAX_CONNS"),
                begin(1, role::RESPONDER, true),
            ]
            .concat(),
            events: vec![
                Event::GetValues(b"\x0e\x00FCGI_MAX_CONNS"),
                Event::Begin {
                    request_id: 1,
                    keep_conn: true,
                },
            ],
            error: None,
        },
        Scenario {
            name: "unknown types, whatever the id; management types other than GET_VALUES",
            input: [
                record(0, 0, b""),
                record(12, 1, b"x"),
                record(255, 7, b""),
                record(kind::STDIN, 0, b""),
            ]
            .concat(),
            events: vec![
                Event::UnknownType(0),
                Event::UnknownType(12),
                Event::UnknownType(255),
                Event::UnknownType(kind::STDIN),
            ],
            error: None,
        },
        Scenario {
            name: "a second request on the connection is refused, the first goes on",
            input: second_begin,
            events: vec![
                Event::Begin {
                    request_id: 1,
                    keep_conn: false,
                },
                Event::Refuse {
                    request_id: 2,
                    status: ProtocolStatus::CantMpxConn,
                },
                Event::Ignored,
                Event::ParamsEnd,
            ],
            error: None,
        },
        Scenario {
            name: "other roles are refused; their records ignored; the next request is served",
            input: authorizer,
            events: [
                vec![
                    Event::Refuse {
                        request_id: 3,
                        status: ProtocolStatus::UnknownRole,
                    },
                    Event::Ignored,
                ],
                get_events(),
            ]
            .concat(),
            error: None,
        },
        Scenario {
            name: "records before any BEGIN_REQUEST are ignored",
            input: [record(kind::PARAMS, 1, b""), record(kind::STDIN, 1, b"x")].concat(),
            events: vec![Event::Ignored, Event::Ignored],
            error: None,
        },
        Scenario {
            name: "abort ends the request",
            input: abort,
            events: vec![
                Event::Begin {
                    request_id: 1,
                    keep_conn: false,
                },
                Event::Abort { request_id: 1 },
                Event::Ignored,
            ],
            error: None,
        },
        Scenario {
            name: "PARAMS after the PARAMS stream ended",
            input: [
                begin(1, role::RESPONDER, false),
                record(kind::PARAMS, 1, b""),
                record(kind::PARAMS, 1, b""),
            ]
            .concat(),
            events: vec![
                Event::Begin {
                    request_id: 1,
                    keep_conn: false,
                },
                Event::ParamsEnd,
            ],
            error: Some(Error::UnexpectedRecord),
        },
        Scenario {
            name: "STDIN after the body ended",
            input: [get.clone(), record(kind::STDIN, 1, b"x")].concat(),
            events: get_events(),
            error: Some(Error::UnexpectedRecord),
        },
        Scenario {
            name: "BEGIN_REQUEST body of 7 bytes",
            input: record(kind::BEGIN_REQUEST, 1, b"\x00\x01\x00\x00\x00\x00\x00"),
            events: vec![],
            error: Some(Error::BadBeginRequest),
        },
        Scenario {
            name: "malformed GET_VALUES query",
            input: record(kind::GET_VALUES, 0, b"\x05\x00AB"),
            events: vec![],
            error: Some(Error::Truncated),
        },
        Scenario {
            name: "bad version mid-connection",
            input: [record(kind::GET_VALUES, 0, b""), b"\x02\x01".to_vec()].concat(),
            events: vec![Event::GetValues(b"")],
            error: Some(Error::BadVersion),
        },
    ]
}

#[test]
fn responder_scenarios() {
    for scenario in scenarios() {
        let mut responder = Responder::default();
        let (events, error, rest) = drive(&mut responder, &scenario.input);
        assert_eq!(events, scenario.events, "{}", scenario.name);
        assert_eq!(error, scenario.error, "{}", scenario.name);
        if error.is_none() {
            assert_eq!(rest, 0, "{}: all consumed", scenario.name);
        }
    }
}

#[test]
fn one_record_out_of_place_after_begin_closes_the_connection() {
    let cases: [(&str, Vec<u8>); 5] = [
        (
            "STDIN before the PARAMS stream ended",
            record(kind::STDIN, 1, b"x"),
        ),
        (
            "a type only an application sends",
            record(kind::STDOUT, 1, b"x"),
        ),
        (
            "END_REQUEST from the web server",
            record(kind::END_REQUEST, 1, &[0; 8]),
        ),
        (
            "DATA, for the filter role only",
            record(kind::DATA, 1, b"x"),
        ),
        (
            "BEGIN_REQUEST again for the active id",
            begin(1, role::RESPONDER, false),
        ),
    ];
    for (name, bad) in cases {
        let input = [begin(1, role::RESPONDER, false), bad].concat();
        let mut responder = Responder::default();
        let (events, error, _) = drive(&mut responder, &input);
        let begun = Event::Begin {
            request_id: 1,
            keep_conn: false,
        };
        assert_eq!(
            (events, error),
            (vec![begun], Some(Error::UnexpectedRecord)),
            "{name}"
        );
    }
}

#[test]
fn params_limit() {
    let mut input = begin(1, role::RESPONDER, false);
    input.extend(record(kind::PARAMS, 1, &[b'x'; 10]));
    input.extend(record(kind::PARAMS, 1, &[b'x'; 10]));
    let mut responder = Responder::new(20);
    assert_eq!(drive(&mut responder, &input).1, None, "exactly the limit");
    input.extend(record(kind::PARAMS, 1, b"x"));
    let mut responder = Responder::new(20);
    assert_eq!(drive(&mut responder, &input).1, Some(Error::ParamsTooLarge));
}

#[test]
fn keep_conn_serves_the_next_request_after_end_request() {
    let mut input = begin(1, role::RESPONDER, true);
    input.extend(record(kind::PARAMS, 1, b""));
    input.extend(record(kind::STDIN, 1, b""));
    let mut responder = Responder::default();
    let (events, error, _) = drive(&mut responder, &input);
    assert_eq!((events.len(), error), (3, None));
    assert_eq!(
        (responder.active_request(), responder.keep_conn()),
        (Some(1), true)
    );
    // Until END_REQUEST is sent, the same id again is a protocol error...
    assert_eq!(
        responder.clone().feed(&begin(1, role::RESPONDER, true)),
        Err(Error::UnexpectedRecord)
    );
    // ...after it, a new request (ids are reused) begins.
    responder.end_request();
    assert_eq!(responder.active_request(), None);
    let next = begin(1, role::RESPONDER, true);
    assert_eq!(
        responder.feed(&next),
        Ok(Status::Complete((
            Event::Begin {
                request_id: 1,
                keep_conn: true
            },
            16
        )))
    );
}

#[test]
fn partial_records_leave_the_state_alone() {
    let input = request(9, &[(b"A", b"1")], b"body");
    let mut responder = Responder::default();
    let mut pos = 0;
    let mut events = Vec::new();
    // Offer every prefix of what is left; only whole records move the state.
    while pos < input.len() {
        let mut end = pos;
        loop {
            let before = responder.clone();
            match responder.feed(&input[pos..end]) {
                Ok(Status::Partial) => {
                    assert_eq!(responder, before);
                    end += 1;
                }
                Ok(Status::Complete((event, n))) => {
                    events.push(event);
                    pos += n;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert_eq!(events.last(), Some(&Event::StdinEnd));
    assert!(events.contains(&Event::Stdin(b"body")));
}

/// What a worker does with the events: collect params and body, then parse the params.
fn serve(bytes: &[u8]) -> (Vec<u8>, Vec<u8>, bool) {
    let mut responder = Responder::default();
    let (events, error, rest) = drive(&mut responder, bytes);
    assert_eq!((error, rest), (None, 0));
    let (mut params, mut body, mut ended) = (Vec::new(), Vec::new(), false);
    for event in events {
        match event {
            Event::Params(chunk) => params.extend_from_slice(chunk),
            Event::Stdin(chunk) => body.extend_from_slice(chunk),
            Event::StdinEnd => ended = true,
            Event::Begin {
                request_id: 1,
                keep_conn: false,
            }
            | Event::ParamsEnd => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    (params, body, ended)
}

#[test]
fn captured_front_ends() {
    let captures: [Capture; 5] = [
        (
            "nginx GET",
            include_bytes!("captures/nginx-fastcgi-get.bin"),
            Some(b""),
            b"",
        ),
        (
            "nginx POST",
            include_bytes!("captures/nginx-fastcgi-post.bin"),
            Some(b"15"),
            b"hello=world&x=1",
        ),
        (
            "Apache GET",
            include_bytes!("captures/apache-fastcgi-get.bin"),
            None,
            b"",
        ),
        (
            "Apache POST",
            include_bytes!("captures/apache-fastcgi-post.bin"),
            Some(b"15"),
            b"hello=world&x=1",
        ),
        (
            "Apache chunked",
            include_bytes!("captures/apache-fastcgi-chunked.bin"),
            None,
            b"",
        ),
    ];
    for (name, bytes, content_length, expect_body) in captures {
        let (params, body, ended) = serve(bytes);
        assert!(ended, "{name}: body ended");
        let mut storage = [EMPTY_VAR; 64];
        let n = parse_params(&params, &mut storage).unwrap_or_else(|e| panic!("{name}: {e}"));
        let get = |key: &[u8]| storage[..n].iter().find(|v| v.key == key).map(|v| v.value);
        assert_eq!(get(b"CONTENT_LENGTH"), content_length, "{name}");
        assert!(get(b"REQUEST_METHOD").is_some(), "{name}");
        if name == "Apache chunked" {
            // No CONTENT_LENGTH: the body is what the STDIN stream carries, up to its empty record.
            assert_eq!(get(b"HTTP_TRANSFER_ENCODING"), Some(&b"chunked"[..]));
            assert_eq!(body.len(), 21_700);
            assert!(body.starts_with(b"line 00000 of a chunked upload\n"));
        } else {
            assert_eq!(body, expect_body, "{name}");
        }
    }
    let (params, _, _) = serve(include_bytes!("captures/nginx-fastcgi-get.bin"));
    let mut storage = [EMPTY_VAR; 64];
    let n = parse_params(&params, &mut storage).unwrap();
    let cookies: Vec<&[u8]> = storage[..n]
        .iter()
        .filter(|v| v.key == b"HTTP_COOKIE")
        .map(|v| v.value)
        .collect();
    assert_eq!(cookies, [&b"a=1"[..], b"b=2"], "nginx 1.22 repeats the var");
}

#[test]
fn responder_records_exact_bytes() {
    let mut out = Vec::new();
    encode_stdout(1, b"Status: 200 OK\r\n\r\nok", &mut out);
    encode_record(kind::STDOUT, 1, b"", &mut out).unwrap();
    encode_end_request(1, 0, ProtocolStatus::RequestComplete, &mut out);
    let mut expect = b"\x01\x06\x00\x01\x00\x14\x00\x00Status: 200 OK\r\n\r\nok".to_vec();
    expect.extend_from_slice(b"\x01\x06\x00\x01\x00\x00\x00\x00");
    expect.extend_from_slice(b"\x01\x03\x00\x01\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00");
    assert_eq!(out, expect);

    let mut out = Vec::new();
    encode_end_request(0x0102, 0x0a0b0c0d, ProtocolStatus::CantMpxConn, &mut out);
    assert_eq!(
        out,
        b"\x01\x03\x01\x02\x00\x08\x00\x00\x0a\x0b\x0c\x0d\x01\x00\x00\x00"
    );
    let mut out = Vec::new();
    encode_end_request(3, 0, ProtocolStatus::UnknownRole, &mut out);
    assert_eq!(out[12], 3);

    let mut out = Vec::new();
    encode_unknown_type(200, &mut out);
    assert_eq!(
        out,
        b"\x01\x0b\x00\x00\x00\x08\x00\x00\xc8\x00\x00\x00\x00\x00\x00\x00"
    );
}

#[test]
fn get_values_answers_what_it_knows_in_query_order() {
    let mut query = Vec::new();
    let names: [&[u8]; 4] = [
        b"FCGI_MPXS_CONNS",
        b"FCGI_UNHEARD_OF",
        b"FCGI_MAX_REQS",
        b"FCGI_MAX_CONNS",
    ];
    encode_get_values(names, &mut query).unwrap();
    let Ok(Status::Complete((Event::GetValues(content), _))) = Responder::default().feed(&query)
    else {
        panic!("not a GET_VALUES event");
    };
    let known: [(&[u8], &[u8]); 3] = [
        (b"FCGI_MAX_CONNS", b"16"),
        (b"FCGI_MAX_REQS", b"16"),
        (b"FCGI_MPXS_CONNS", b"0"),
    ];
    let mut out = Vec::new();
    encode_get_values_result(content, &known, &mut out).unwrap();
    let Ok(Status::Complete((answer, n))) = parse_record(&out) else {
        panic!()
    };
    assert_eq!(
        (n, answer.header.kind, answer.header.request_id),
        (out.len(), kind::GET_VALUES_RESULT, 0)
    );
    let mut storage = [EMPTY_VAR; 4];
    let count = parse_params(answer.content, &mut storage).unwrap();
    let pairs: Vec<(&[u8], &[u8])> = storage[..count].iter().map(|v| (v.key, v.value)).collect();
    assert_eq!(
        pairs,
        [
            (&b"FCGI_MPXS_CONNS"[..], &b"0"[..]),
            (b"FCGI_MAX_REQS", b"16"),
            (b"FCGI_MAX_CONNS", b"16")
        ]
    );
    // A malformed query is refused, the output untouched.
    let mut out = b"keep".to_vec();
    assert_eq!(
        encode_get_values_result(b"\x09\x00AB", &known, &mut out),
        Err(Error::Truncated)
    );
    assert_eq!(out, b"keep");
}

#[test]
fn streams_split_at_the_record_limit_and_never_wrap() {
    assert_eq!(
        record_header(kind::STDOUT, 1, MAX_CONTENT_LEN).map(|h| [h[4], h[5]]),
        Ok([0xff, 0xff])
    );
    assert_eq!(
        record_header(kind::STDOUT, 1, MAX_CONTENT_LEN + 1),
        Err(Error::ContentTooLong)
    );
    let mut out = b"keep".to_vec();
    assert_eq!(
        encode_record(kind::STDOUT, 1, &vec![0; MAX_CONTENT_LEN + 1], &mut out),
        Err(Error::ContentTooLong)
    );
    assert_eq!(out, b"keep");

    let data = vec![7u8; 2 * MAX_CONTENT_LEN + 1];
    let mut out = Vec::new();
    encode_stream(kind::STDOUT, 5, &data, &mut out);
    let mut pos = 0;
    let mut lengths = Vec::new();
    while let Ok(Status::Complete((r, n))) = parse_record(&out[pos..]) {
        assert_eq!((r.header.kind, r.header.request_id), (kind::STDOUT, 5));
        lengths.push(r.content.len());
        pos += n;
    }
    assert_eq!(
        (lengths, pos),
        (vec![MAX_CONTENT_LEN, MAX_CONTENT_LEN, 1], out.len())
    );
    let mut out = Vec::new();
    encode_stream(kind::STDOUT, 5, b"", &mut out);
    assert!(out.is_empty(), "an empty chunk never ends the stream");
}

#[test]
fn params_straddling_records_reassemble() {
    // A value longer than one record forces the encoder to cut the pair stream mid-pair.
    let long = vec![b'c'; MAX_CONTENT_LEN + 100];
    let params: [(&[u8], &[u8]); 3] = [(b"A", b"1"), (b"HTTP_COOKIE", &long), (b"Z", b"26")];
    let input = request(1, &params, b"");
    let (collected, body, ended) = serve(&input);
    assert!(ended && body.is_empty());
    let mut storage = [EMPTY_VAR; 4];
    let n = parse_params(&collected, &mut storage).unwrap();
    let got: Vec<(&[u8], &[u8])> = storage[..n].iter().map(|v| (v.key, v.value)).collect();
    assert_eq!(got, params);
}
