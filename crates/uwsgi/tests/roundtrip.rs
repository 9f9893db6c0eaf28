//! Property tests: encode -> parse round trips, prefixes are Partial, and arbitrary bytes never
//! panic and are consistent with re-encoding.

use proptest::collection::vec;
use proptest::prelude::*;
use uwsgi::{encode_request, encode_response_head, Request, ResponseHead, Status, EMPTY_VAR};

type OwnedPairs = Vec<(Vec<u8>, Vec<u8>)>;

fn request_vars() -> impl Strategy<Value = OwnedPairs> {
    vec((vec(any::<u8>(), 1..40), vec(any::<u8>(), 0..80)), 0..40)
}

/// A valid header name (RFC 9110 token).
fn token() -> impl Strategy<Value = Vec<u8>> {
    let tchar = prop::sample::select(
        b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".to_vec(),
    );
    vec(tchar, 1..24)
}

/// A valid header value as the parser returns it: text bytes, no surrounding whitespace.
fn field_value() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![Just(b'\t'), 0x20u8..=0x7e, 0x80u8..=0xff];
    vec(text, 0..60).prop_map(|v| {
        let start = v
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t'))
            .unwrap_or(v.len());
        let end = v
            .iter()
            .rposition(|b| !matches!(b, b' ' | b'\t'))
            .map_or(start, |i| i + 1);
        v[start..end].to_vec()
    })
}

fn as_pairs(owned: &OwnedPairs) -> Vec<(&[u8], &[u8])> {
    owned
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect()
}

proptest! {
    #[test]
    fn request_round_trip(m1: u8, m2: u8, vars in request_vars(), body in vec(any::<u8>(), 0..32)) {
        let pairs = as_pairs(&vars);
        let mut packet = Vec::new();
        let n = encode_request(m1, m2, pairs.iter().copied(), &mut packet).unwrap();
        prop_assert_eq!(n, packet.len());
        packet.extend_from_slice(&body);

        let mut storage = [EMPTY_VAR; 40];
        let mut req = Request::new(&mut storage);
        prop_assert_eq!(req.parse(&packet), Ok(Status::Complete(n)));
        prop_assert_eq!((req.modifier1, req.modifier2), (m1, m2));
        let parsed: Vec<(&[u8], &[u8])> = req.vars.iter().map(|v| (v.key, v.value)).collect();
        prop_assert_eq!(parsed, pairs);
    }

    #[test]
    fn request_prefixes_are_partial(vars in request_vars(), cut in any::<prop::sample::Index>()) {
        let mut packet = Vec::new();
        encode_request(0, 0, as_pairs(&vars), &mut packet).unwrap();
        let end = cut.index(packet.len());
        let mut storage = [EMPTY_VAR; 40];
        prop_assert_eq!(Request::new(&mut storage).parse(&packet[..end]), Ok(Status::Partial));
    }

    #[test]
    fn request_arbitrary_bytes(buf in vec(any::<u8>(), 0..300), slots in 0usize..8) {
        let mut storage = vec![EMPTY_VAR; slots];
        let mut req = Request::new(&mut storage);
        if let Ok(Status::Complete(n)) = req.parse(&buf) {
            // Whatever parses re-encodes to exactly the bytes it came from.
            let pairs: Vec<(&[u8], &[u8])> = req.vars.iter().map(|v| (v.key, v.value)).collect();
            let mut again = Vec::new();
            prop_assert_eq!(encode_request(req.modifier1, req.modifier2, pairs, &mut again), Ok(n));
            prop_assert_eq!(&again[..], &buf[..n]);
        }
    }

    #[test]
    fn response_round_trip(
        status in 100u16..=999,
        reason in field_value(),
        headers in vec((token(), field_value()), 0..16),
        body in vec(any::<u8>(), 0..32),
    ) {
        let mut status_line = status.to_string().into_bytes();
        if !reason.is_empty() {
            status_line.push(b' ');
            status_line.extend_from_slice(&reason);
        }
        let pairs = as_pairs(&headers);
        let mut out = Vec::new();
        encode_response_head(&status_line, pairs.iter().copied(), &mut out).unwrap();
        let head_len = out.len();
        out.extend_from_slice(&body);

        let mut storage = [EMPTY_VAR; 16];
        let mut head = ResponseHead::new(&mut storage);
        prop_assert_eq!(head.parse(&out), Ok(Status::Complete(head_len)));
        prop_assert_eq!((head.minor_version, head.status, head.reason), (1, status, &reason[..]));
        let parsed: Vec<(&[u8], &[u8])> = head.headers.iter().map(|h| (h.key, h.value)).collect();
        prop_assert_eq!(parsed, pairs);

        for end in 0..head_len {
            let mut storage = [EMPTY_VAR; 16];
            prop_assert_eq!(ResponseHead::new(&mut storage).parse(&out[..end]), Ok(Status::Partial));
        }
    }

    #[test]
    fn response_arbitrary_bytes_are_prefix_consistent(
        buf in prop_oneof![
            vec(any::<u8>(), 0..200),
            // Mostly-valid heads with a byte flipped, to reach past the status line.
            (vec(any::<u8>(), 0..40), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(tail, at, byte)| {
                let mut v = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX: y\r\n\r\n".to_vec();
                let i = at.index(v.len());
                v[i] = byte;
                v.extend_from_slice(&tail);
                v
            }),
        ],
        cut in any::<prop::sample::Index>(),
    ) {
        let mut full_storage = [EMPTY_VAR; 4];
        let full = ResponseHead::new(&mut full_storage).parse(&buf);
        let end = cut.index(buf.len() + 1);
        let mut storage = [EMPTY_VAR; 4];
        let prefix = ResponseHead::new(&mut storage).parse(&buf[..end]);
        // A prefix is either Partial or already has the final answer.
        if prefix != Ok(Status::Partial) {
            prop_assert_eq!(prefix, full);
        }
    }
}
