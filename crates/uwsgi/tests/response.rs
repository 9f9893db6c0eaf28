//! Table-driven tests of the response head parser (front-end side) and encoder (worker side).

use uwsgi::{
    encode_response_head, is_header_name, is_header_value, Error, ResponseHead, Status, EMPTY_VAR,
};

type Pairs<'a> = &'a [(&'a [u8], &'a [u8])];

struct Case {
    name: &'static str,
    input: &'static [u8],
    expect: Result<Status<usize>, Error>,
    /// (minor version, status, reason), checked on Complete.
    line: (u8, u16, &'static [u8]),
    headers: Pairs<'static>,
}

/// A head that parses; `body` = bytes after the head in `input`.
const fn ok(
    name: &'static str,
    input: &'static [u8],
    body: usize,
    line: (u8, u16, &'static [u8]),
    headers: Pairs<'static>,
) -> Case {
    Case {
        name,
        input,
        expect: Ok(Status::Complete(input.len() - body)),
        line,
        headers,
    }
}

const fn err(
    name: &'static str,
    input: &'static [u8],
    expect: Result<Status<usize>, Error>,
) -> Case {
    Case {
        name,
        input,
        expect,
        line: (0, 0, b""),
        headers: &[],
    }
}

const PARTIAL: Result<Status<usize>, Error> = Ok(Status::Partial);
const BAD_LINE: Result<Status<usize>, Error> = Err(Error::BadStatusLine);
const BAD_HEADER: Result<Status<usize>, Error> = Err(Error::BadHeader);

const CASES: &[Case] = &[
    ok(
        "typical head, body follows",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
        5,
        (1, 200, b"OK"),
        &[(b"Content-Type", b"text/plain"), (b"Content-Length", b"5")],
    ),
    ok(
        "no headers",
        b"HTTP/1.0 204 No Content\r\n\r\n",
        0,
        (0, 204, b"No Content"),
        &[],
    ),
    ok(
        "bare LF line ends",
        b"HTTP/1.1 200 OK\nA: b\n\n",
        0,
        (1, 200, b"OK"),
        &[(b"A", b"b")],
    ),
    ok(
        "mixed line ends",
        b"HTTP/1.1 200 OK\r\nA: b\n\r\n",
        0,
        (1, 200, b"OK"),
        &[(b"A", b"b")],
    ),
    ok(
        "no reason, no space",
        b"HTTP/1.1 200\r\n\r\n",
        0,
        (1, 200, b""),
        &[],
    ),
    ok(
        "empty reason after the space",
        b"HTTP/1.1 404 \r\n\r\n",
        0,
        (1, 404, b""),
        &[],
    ),
    ok(
        "reason with spaces, tab, obs-text",
        b"HTTP/1.1 200 A b\tc\xe9\r\n\r\n",
        0,
        (1, 200, b"A b\tc\xe9"),
        &[],
    ),
    ok(
        "lowest status",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        0,
        (1, 100, b"Continue"),
        &[],
    ),
    ok(
        "highest status",
        b"HTTP/1.1 999 X\r\n\r\n",
        0,
        (1, 999, b"X"),
        &[],
    ),
    ok(
        "OWS trimmed, inner kept",
        b"HTTP/1.1 200 OK\r\nX: \t a  b \t\r\n\r\n",
        0,
        (1, 200, b"OK"),
        &[(b"X", b"a  b")],
    ),
    ok(
        "empty value",
        b"HTTP/1.1 200 OK\r\nX:\r\nY:   \r\n\r\n",
        0,
        (1, 200, b"OK"),
        &[(b"X", b""), (b"Y", b"")],
    ),
    ok(
        "colon inside the value, token punctuation in the name",
        b"HTTP/1.1 302 Found\r\nLocation: http://h:1/\r\nX-a!#$%&'*+.^_`|~9: v\r\n\r\n",
        0,
        (1, 302, b"Found"),
        &[(b"Location", b"http://h:1/"), (b"X-a!#$%&'*+.^_`|~9", b"v")],
    ),
    ok(
        "duplicates kept",
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
        0,
        (1, 200, b"OK"),
        &[(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")],
    ),
    // Partial until the blank line.
    err("empty buffer", b"", PARTIAL),
    err("status line without end", b"HTTP/1.1 200 OK", PARTIAL),
    err(
        "status line, no blank line",
        b"HTTP/1.1 200 OK\r\n",
        PARTIAL,
    ),
    err("header without end", b"HTTP/1.1 200 OK\r\nA: b", PARTIAL),
    err(
        "header, no blank line",
        b"HTTP/1.1 200 OK\r\nA: b\r\n",
        PARTIAL,
    ),
    err(
        "blank line's LF missing",
        b"HTTP/1.1 200 OK\r\nA: b\r\n\r",
        PARTIAL,
    ),
    err("status code cut short", b"HTTP/1.1 20", PARTIAL),
    err("CR of the status line end", b"HTTP/1.1 200 OK\r", PARTIAL),
    err("name cut short", b"HTTP/1.1 200 OK\r\nContent-Ty", PARTIAL),
    err("CR of the blank line", b"HTTP/1.1 200 OK\r\n\r", PARTIAL),
    // Errors are reported as soon as the bad byte is there, before any line end.
    err("CGI head, no line end yet", b"Status: 2", BAD_LINE),
    err(
        "status starting with 0, no line end yet",
        b"HTTP/1.1 0",
        BAD_LINE,
    ),
    err(
        "CR not followed by LF in the status line",
        b"HTTP/1.1 200 OK\rX",
        BAD_LINE,
    ),
    err(
        "bad name, no line end yet",
        b"HTTP/1.1 200 OK\r\nA B",
        BAD_HEADER,
    ),
    err(
        "CR not followed by LF at the blank line",
        b"HTTP/1.1 200 OK\r\n\rX",
        BAD_HEADER,
    ),
    // Status line.
    err("complete garbage line", b"XTTP/1.1 200 OK\r\n", BAD_LINE),
    err("lower-case protocol", b"http/1.1 200 OK\r\n\r\n", BAD_LINE),
    err("HTTP/2.0", b"HTTP/2.0 200 OK\r\n\r\n", BAD_LINE),
    err("HTTP/1.2", b"HTTP/1.2 200 OK\r\n\r\n", BAD_LINE),
    err(
        "CGI Status header instead",
        b"Status: 200 OK\r\n\r\n",
        BAD_LINE,
    ),
    err(
        "two spaces before the code",
        b"HTTP/1.1  200 OK\r\n\r\n",
        BAD_LINE,
    ),
    err("status below 100", b"HTTP/1.1 099 X\r\n\r\n", BAD_LINE),
    err("two-digit status", b"HTTP/1.1 20 X\r\n\r\n", BAD_LINE),
    err("four-digit status", b"HTTP/1.1 2000 X\r\n\r\n", BAD_LINE),
    err("non-digit status", b"HTTP/1.1 2x0 X\r\n\r\n", BAD_LINE),
    err(
        "tab instead of space after code",
        b"HTTP/1.1 200\tOK\r\n\r\n",
        BAD_LINE,
    ),
    err("NUL in reason", b"HTTP/1.1 200 O\0K\r\n\r\n", BAD_LINE),
    err("bare CR in reason", b"HTTP/1.1 200 O\rK\r\n\r\n", BAD_LINE),
    err("DEL in reason", b"HTTP/1.1 200 O\x7fK\r\n\r\n", BAD_LINE),
    err("empty status line", b"\r\n\r\n", BAD_LINE),
    // Headers.
    err(
        "no colon",
        b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
        BAD_HEADER,
    ),
    err("empty name", b"HTTP/1.1 200 OK\r\n: v\r\n\r\n", BAD_HEADER),
    err(
        "space before colon",
        b"HTTP/1.1 200 OK\r\nA : b\r\n\r\n",
        BAD_HEADER,
    ),
    err(
        "space in name",
        b"HTTP/1.1 200 OK\r\nA B: c\r\n\r\n",
        BAD_HEADER,
    ),
    err(
        "obs-fold continuation",
        b"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n",
        BAD_HEADER,
    ),
    err(
        "NUL in value",
        b"HTTP/1.1 200 OK\r\nA: b\0c\r\n\r\n",
        BAD_HEADER,
    ),
    err(
        "control char in value",
        b"HTTP/1.1 200 OK\r\nA: b\x01c\r\n\r\n",
        BAD_HEADER,
    ),
    err(
        "DEL in value",
        b"HTTP/1.1 200 OK\r\nA: b\x7f\r\n\r\n",
        BAD_HEADER,
    ),
    err(
        "bare CR inside value (response splitting)",
        b"HTTP/1.1 200 OK\r\nA: b\rSet-Cookie: x\r\n\r\n",
        BAD_HEADER,
    ),
    err("CR CR LF", b"HTTP/1.1 200 OK\r\nA: b\r\r\n\r\n", BAD_HEADER),
    err(
        "non-token byte in name",
        b"HTTP/1.1 200 OK\r\nA\xe9: b\r\n\r\n",
        BAD_HEADER,
    ),
    err(
        "bad header seen before the blank line arrives",
        b"HTTP/1.1 200 OK\r\nA B: c\r\n",
        BAD_HEADER,
    ),
];

#[test]
fn parse_table() {
    for case in CASES {
        let mut storage = [EMPTY_VAR; 8];
        let mut head = ResponseHead::new(&mut storage);
        let got = head.parse(case.input);
        assert_eq!(got, case.expect, "{}", case.name);
        if let Ok(Status::Complete(n)) = got {
            assert!(case.input[..n].ends_with(b"\n"), "{}", case.name);
            assert_eq!(
                (head.minor_version, head.status, head.reason),
                case.line,
                "{}",
                case.name
            );
            let headers: Vec<(&[u8], &[u8])> =
                head.headers.iter().map(|h| (h.key, h.value)).collect();
            assert_eq!(headers, case.headers, "{}", case.name);
        } else {
            assert_eq!(
                head.headers.len(),
                8,
                "{}: storage kept on Partial/Err",
                case.name
            );
        }
    }
}

#[test]
fn too_many_headers() {
    let input = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n";
    let mut one = [EMPTY_VAR; 1];
    assert_eq!(
        ResponseHead::new(&mut one).parse(input),
        Err(Error::TooManyHeaders)
    );
    let mut two = [EMPTY_VAR; 2];
    assert_eq!(
        ResponseHead::new(&mut two).parse(input),
        Ok(Status::Complete(input.len()))
    );
    let mut none: [uwsgi::Var; 0] = [];
    assert_eq!(
        ResponseHead::new(&mut none).parse(b"HTTP/1.1 200 OK\r\n\r\n"),
        Ok(Status::Complete(19))
    );
}

#[test]
fn encode_exact_bytes_and_parses_back() {
    let headers: Pairs = &[
        (b"Content-Type", b"text/plain"),
        (b"X-Tab", b"a\tb"),
        (b"X-Empty", b""),
    ];
    let mut out = b"keep:".to_vec();
    assert_eq!(
        encode_response_head(b"201 Created", headers.iter().copied(), &mut out),
        Ok(())
    );
    assert_eq!(
        out,
        b"keep:HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nX-Tab: a\tb\r\nX-Empty: \r\n\r\n"
    );
    let mut storage = [EMPTY_VAR; 4];
    let mut head = ResponseHead::new(&mut storage);
    assert_eq!(head.parse(&out[5..]), Ok(Status::Complete(out.len() - 5)));
    assert_eq!(
        (head.minor_version, head.status, head.reason),
        (1, 201, &b"Created"[..])
    );
    let parsed: Vec<(&[u8], &[u8])> = head.headers.iter().map(|h| (h.key, h.value)).collect();
    assert_eq!(parsed, headers);

    out.clear();
    assert_eq!(encode_response_head(b"204", [], &mut out), Ok(()));
    assert_eq!(out, b"HTTP/1.1 204\r\n\r\n");
}

#[test]
fn encode_refusals_leave_out_unchanged() {
    let good: Pairs = &[(b"A", b"b")];
    let status_cases: &[&[u8]] = &[
        b"",
        b"20",
        b"099 Low",
        b"1000",
        b"200OK",
        b"2x0 X",
        b"200\tOK",
        b"200 O\r\nX: y",
        b"200 \0",
        b" 200 OK",
    ];
    for status in status_cases {
        let mut out = b"keep".to_vec();
        let got = encode_response_head(status, good.iter().copied(), &mut out);
        assert_eq!(
            got,
            Err(Error::BadStatusLine),
            "{:?}",
            String::from_utf8_lossy(status)
        );
        assert_eq!(out, b"keep");
    }
    let header_cases: &[Pairs] = &[
        &[(b"", b"v")],
        &[(b"A B", b"v")],
        &[(b"A:", b"v")],
        &[(b"A\r\nB", b"v")],
        &[(b"A", b"v\r\nSet-Cookie: evil=1")],
        &[(b"A", b"v\nx")],
        &[(b"A", b"v\0")],
        &[(b"A", b"\x1b[31m")],
        &[(b"Ok", b"fine"), (b"A", b"\x7f")],
    ];
    for headers in header_cases {
        let mut out = b"keep".to_vec();
        let got = encode_response_head(b"200 OK", headers.iter().copied(), &mut out);
        assert_eq!(got, Err(Error::BadHeader), "{headers:?}");
        assert_eq!(out, b"keep");
    }
}

#[test]
fn header_validators() {
    assert!(is_header_name(b"Content-Type"));
    assert!(is_header_name(b"x~!"));
    assert!(!is_header_name(b""));
    assert!(!is_header_name(b"a b"));
    assert!(!is_header_name(b"a:b"));
    assert!(!is_header_name(b"(a)"));
    assert!(is_header_value(b""));
    assert!(is_header_value(b"a b\tc \xff"));
    assert!(!is_header_value(b"a\rb"));
    assert!(!is_header_value(b"a\nb"));
    assert!(!is_header_value(b"\0"));
    assert!(!is_header_value(b"\x7f"));
}
