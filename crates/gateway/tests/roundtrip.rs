//! Property tests: encode -> parse round trips, every prefix is Partial, and arbitrary bytes never
//! panic and give the same answer for a prefix as for the whole (or Partial).

use gateway::fastcgi::{
    self, encode_begin_request, encode_pair, encode_params, encode_record, kind, parse_params,
    role, Event, Responder,
};
use gateway::{cgi, scgi, Status, EMPTY_VAR};
use proptest::collection::vec;
use proptest::prelude::*;

type OwnedPairs = Vec<(Vec<u8>, Vec<u8>)>;

fn as_pairs(owned: &OwnedPairs) -> Vec<(&[u8], &[u8])> {
    owned
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect()
}

/// SCGI vars the encoder accepts: names and values without NUL, names not reserved.
fn scgi_vars() -> impl Strategy<Value = OwnedPairs> {
    let no_nul = || vec(1u8..=255, 0..40);
    vec((vec(1u8..=255, 1..30), no_nul()), 0..30).prop_map(|mut vars| {
        vars.retain(|(name, _)| name != b"CONTENT_LENGTH" && name != b"SCGI");
        vars
    })
}

/// A netstring built from parsed vars, as any SCGI sender would write it.
fn netstring(vars: &[(&[u8], &[u8])]) -> Vec<u8> {
    let block: Vec<u8> = vars
        .iter()
        .flat_map(|(k, v)| [*k, b"\0", *v, b"\0"].concat())
        .collect();
    [format!("{}:", block.len()).as_bytes(), &block, b","].concat()
}

/// A valid header name (RFC 9110 token) other than `Status`.
fn token() -> impl Strategy<Value = Vec<u8>> {
    let tchar = prop::sample::select(
        b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".to_vec(),
    );
    vec(tchar, 1..24).prop_filter("Status is the status line", |t| {
        !t.eq_ignore_ascii_case(b"status")
    })
}

/// A header value as a parser returns it: text bytes without surrounding whitespace (among text
/// bytes, the only ASCII whitespace is SP and HTAB, which is what `trim_ascii` removes here).
fn field_value() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![Just(b'\t'), 0x20u8..=0x7e, 0x80u8..=0xff];
    vec(text, 0..60).prop_map(|v| v.trim_ascii().to_vec())
}

/// What a worker collects from a request: the PARAMS chunks, the body, the bytes left over.
type Collected = (Vec<Vec<u8>>, Vec<u8>, usize);

/// Feeds a byte stream through `responder` as a worker would.
fn drive(responder: &mut Responder, bytes: &[u8]) -> Result<Collected, fastcgi::Error> {
    let (mut params, mut body, mut pos) = (Vec::new(), Vec::new(), 0);
    while let Status::Complete((event, n)) = responder.feed(&bytes[pos..])? {
        assert!(n > 0 && n <= bytes.len() - pos);
        match event {
            Event::Params(chunk) => params.push(chunk.to_vec()),
            Event::Stdin(chunk) => body.extend_from_slice(chunk),
            _ => {}
        }
        pos += n;
    }
    Ok((params, body, bytes.len() - pos))
}

proptest! {
    #[test]
    fn scgi_round_trip(content_length: u64, vars in scgi_vars(), body in vec(any::<u8>(), 0..16)) {
        let pairs = as_pairs(&vars);
        let mut packet = Vec::new();
        let n = scgi::encode_request(content_length, pairs.iter().copied(), &mut packet).unwrap();
        prop_assert_eq!(n, packet.len());
        packet.extend_from_slice(&body);

        let mut storage = [EMPTY_VAR; 32];
        let mut req = scgi::Request::new(&mut storage);
        prop_assert_eq!(req.parse(&packet), Ok(Status::Complete(n)));
        prop_assert_eq!(req.content_length, content_length);
        let parsed: Vec<(&[u8], &[u8])> = req.vars.iter().map(|v| (v.key, v.value)).collect();
        let length = content_length.to_string();
        let mut expect: Vec<(&[u8], &[u8])> = vec![(b"CONTENT_LENGTH", length.as_bytes()), (b"SCGI", b"1")];
        expect.extend(pairs.iter().copied());
        prop_assert_eq!(parsed, expect);

        for end in 0..n {
            let mut storage = [EMPTY_VAR; 32];
            prop_assert_eq!(scgi::Request::new(&mut storage).parse(&packet[..end]), Ok(Status::Partial));
        }
    }

    #[test]
    fn scgi_arbitrary_bytes(
        buf in prop_oneof![
            vec(any::<u8>(), 0..200),
            // A valid head with one byte changed, to reach past the length prefix.
            (vec(any::<u8>(), 0..20), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(tail, at, byte)| {
                let mut v = b"35:CONTENT_LENGTH\x000\x00E\x00\x00K\x001\x00K\x002\x00SCGI\x001\x00,".to_vec();
                let i = at.index(v.len());
                v[i] = byte;
                v.extend_from_slice(&tail);
                v
            }),
        ],
        cut in any::<prop::sample::Index>(),
        slots in 0usize..8,
    ) {
        let mut storage = vec![EMPTY_VAR; slots];
        let mut req = scgi::Request::new(&mut storage);
        let full = req.parse(&buf);
        if let Ok(Status::Complete(n)) = full {
            // Whatever parses is exactly the netstring of what was parsed.
            let pairs: Vec<(&[u8], &[u8])> = req.vars.iter().map(|v| (v.key, v.value)).collect();
            prop_assert_eq!(netstring(&pairs), &buf[..n]);
        } else {
            prop_assert_eq!(req.vars.len(), slots);
        }
        let end = cut.index(buf.len() + 1);
        let mut storage = vec![EMPTY_VAR; slots];
        let prefix = scgi::Request::new(&mut storage).parse(&buf[..end]);
        if prefix != Ok(Status::Partial) {
            prop_assert_eq!(prefix, full);
        }
    }

    #[test]
    fn fastcgi_pairs_round_trip(pairs in vec((vec(any::<u8>(), 1..200), vec(any::<u8>(), 0..300)), 0..20)) {
        let mut block = Vec::new();
        for (name, value) in &pairs {
            encode_pair(name, value, &mut block).unwrap();
        }
        let mut storage = [EMPTY_VAR; 20];
        let n = parse_params(&block, &mut storage).unwrap();
        let parsed: Vec<(&[u8], &[u8])> = storage[..n].iter().map(|v| (v.key, v.value)).collect();
        prop_assert_eq!(parsed, as_pairs(&pairs));
    }

    #[test]
    fn fastcgi_pairs_arbitrary_bytes(block in vec(any::<u8>(), 0..200)) {
        let mut storage = [EMPTY_VAR; 8];
        if let Ok(n) = parse_params(&block, &mut storage) {
            // Re-encoding (shortest lengths) and parsing again gives the same pairs.
            let mut again = Vec::new();
            for v in &storage[..n] {
                encode_pair(v.key, v.value, &mut again).unwrap();
            }
            prop_assert!(again.len() <= block.len());
            let mut storage2 = [EMPTY_VAR; 8];
            prop_assert_eq!(parse_params(&again, &mut storage2), Ok(n));
            prop_assert_eq!(&storage2[..n], &storage[..n]);
        }
    }

    #[test]
    fn fastcgi_request_round_trip(
        id in 1u16..,
        keep_conn: bool,
        params in vec((vec(any::<u8>(), 1..40), vec(any::<u8>(), 0..200)), 0..20),
        body in vec(any::<u8>(), 0..400),
        cuts in vec(1usize..100, 0..10),
    ) {
        let mut input = Vec::new();
        encode_begin_request(id, role::RESPONDER, keep_conn, &mut input);
        encode_params(id, as_pairs(&params), &mut input).unwrap();
        // The body in pieces of arbitrary sizes, as a front end reading from a client would.
        let mut rest = &body[..];
        for cut in cuts.iter().chain(std::iter::repeat(&usize::MAX)) {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*cut).min(rest.len()));
            encode_record(kind::STDIN, id, piece, &mut input).unwrap();
            rest = tail;
        }
        encode_record(kind::STDIN, id, b"", &mut input).unwrap();

        let mut responder = Responder::default();
        let (chunks, got_body, left) = drive(&mut responder, &input).unwrap();
        prop_assert_eq!(left, 0);
        prop_assert_eq!((responder.active_request(), responder.keep_conn()), (Some(id), keep_conn));
        let collected = chunks.concat();
        let mut storage = [EMPTY_VAR; 20];
        let n = parse_params(&collected, &mut storage).unwrap();
        let parsed: Vec<(&[u8], &[u8])> = storage[..n].iter().map(|v| (v.key, v.value)).collect();
        prop_assert_eq!(parsed, as_pairs(&params));
        prop_assert_eq!(got_body, body);

        // Every strict prefix of the first record is Partial and changes nothing.
        for end in 0..16 {
            let mut fresh = Responder::default();
            prop_assert_eq!(fresh.feed(&input[..end]), Ok(Status::Partial));
            prop_assert_eq!(fresh, Responder::default());
        }
    }

    #[test]
    fn fastcgi_arbitrary_records(
        records in vec((0u8..14, 0u16..4, vec(any::<u8>(), 0..20), 0u8..4), 0..20),
        cut in any::<prop::sample::Index>(),
        max_params in 0usize..64,
    ) {
        // Well-framed records of random types and ids: the state machine never panics, and a
        // prefix of the next record is Partial or already gives the final answer.
        let mut input = Vec::new();
        for (t, id, content, padding) in &records {
            let header = fastcgi::Header {
                version: 1, kind: *t, request_id: *id,
                content_length: content.len() as u16, padding_length: *padding,
            };
            input.extend_from_slice(&header.to_bytes());
            input.extend_from_slice(content);
            input.extend(std::iter::repeat_n(0, usize::from(*padding)));
        }
        let mut responder = Responder::new(max_params);
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            let end = cut.index(rest.len() + 1);
            let mut probe = responder.clone();
            let prefix = probe.feed(&rest[..end]);
            let full = responder.feed(rest);
            if prefix != Ok(Status::Partial) {
                prop_assert_eq!(&prefix, &full);
                prop_assert_eq!(&probe, &responder);
            }
            match full {
                Ok(Status::Complete((event, n))) => {
                    prop_assert!(n > 0 && n <= rest.len());
                    if let Event::Begin { request_id, .. } = event {
                        prop_assert_eq!(responder.active_request(), Some(request_id));
                    }
                    pos += n;
                }
                Ok(Status::Partial) => { prop_assert!(rest.is_empty()); break; }
                Err(_) => break,
            }
        }
    }

    #[test]
    fn cgi_head_round_trip(
        status in 100u16..=999,
        reason in field_value(),
        headers in vec((token(), field_value()), 0..12),
    ) {
        let mut status_line = status.to_string().into_bytes();
        if !reason.is_empty() {
            status_line.push(b' ');
            status_line.extend_from_slice(&reason);
        }
        let pairs = as_pairs(&headers);
        let mut out = Vec::new();
        cgi::encode_head(&status_line, pairs.iter().copied(), &mut out).unwrap();
        // "Status: NNN reason" + headers is an HTTP head once the first line is a status line:
        // parse it with the strict uwsgi response parser.
        let http = [b"HTTP/1.1 ", out.strip_prefix(b"Status: ").unwrap()].concat();
        let mut storage = [EMPTY_VAR; 12];
        let mut head = uwsgi::ResponseHead::new(&mut storage);
        prop_assert_eq!(head.parse(&http), Ok(Status::Complete(http.len())));
        prop_assert_eq!((head.status, head.reason), (status, &reason[..]));
        let parsed: Vec<(&[u8], &[u8])> = head.headers.iter().map(|h| (h.key, h.value)).collect();
        prop_assert_eq!(parsed, pairs);
    }
}
