//! The server's own answers: pongs for pings, the close handshake's reply, protocol errors
//! closed with their code, nothing after a close.

use websocket::frame::{apply_mask, encode_header, parse_header, Opcode};
use websocket::{Delivery, Session, Status};

fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1, 2, 3, 4];
    let mut out = Vec::new();
    encode_header(Opcode::Binary, payload.len(), &mut out);
    out[0] = 0x80 | opcode;
    out[1] |= 0x80;
    out.extend_from_slice(&mask);
    let mut body = payload.to_vec();
    apply_mask(&mut body, mask, 0);
    out.extend(body);
    out
}

/// The server frames in `bytes`: (opcode, payload).
fn frames(mut bytes: &[u8]) -> Vec<(Opcode, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let Ok(Status::Complete(h)) = parse_header(bytes) else {
            panic!("bad server frame")
        };
        assert!(h.mask.is_none(), "server frames are never masked");
        let end = h.header_len + h.len as usize;
        out.push((h.opcode, bytes[h.header_len..end].to_vec()));
        bytes = &bytes[end..];
    }
    out
}

#[test]
fn ping_is_answered_with_its_payload() {
    let mut s = Session::new(1024);
    let r = s.received(&client_frame(0x9, b"tick"));
    assert_eq!(frames(&r.replies), vec![(Opcode::Pong, b"tick".to_vec())]);
    assert!(r.deliveries.is_empty() && !r.end);
}

#[test]
fn close_is_echoed_and_reported() {
    let mut s = Session::new(1024);
    let mut bytes = client_frame(0x1, b"last words");
    bytes.extend(client_frame(0x8, &[0x0F, 0xA0, b'x']));
    let r = s.received(&bytes);
    assert_eq!(
        r.deliveries,
        vec![
            Delivery::Text("last words".into()),
            Delivery::Closed(4000, "x".into())
        ]
    );
    assert_eq!(frames(&r.replies), vec![(Opcode::Close, vec![0x0F, 0xA0])]);
    assert!(r.end && s.close_sent && s.done_reading);
    assert_eq!(s.app_close(1000, ""), None, "one close frame only");
    assert_eq!(s.eof(), None);
}

#[test]
fn empty_close_is_1005_for_the_app_and_1000_on_the_wire() {
    let mut s = Session::new(1024);
    let r = s.received(&client_frame(0x8, b""));
    assert_eq!(r.deliveries, vec![Delivery::Closed(1005, String::new())]);
    assert_eq!(frames(&r.replies), vec![(Opcode::Close, vec![0x03, 0xE8])]);
}

#[test]
fn protocol_error_closes_with_its_code() {
    let mut s = Session::new(1024);
    let r = s.received(&client_frame(0x1, &[0xff]));
    assert_eq!(r.deliveries, vec![Delivery::Closed(1007, String::new())]);
    let f = frames(&r.replies);
    assert_eq!(f[0].0, Opcode::Close);
    assert_eq!(&f[0].1[..2], &[0x03, 0xEF]);
    assert!(r.end);
}

#[test]
fn eof_is_1006_once() {
    let mut s = Session::new(1024);
    assert_eq!(s.eof(), Some(Delivery::Closed(1006, String::new())));
    assert_eq!(s.eof(), None);
}

#[test]
fn app_close_then_no_pong() {
    let mut s = Session::new(1024);
    assert!(s.app_close(1001, "bye").is_some());
    let r = s.received(&client_frame(0x9, b"late ping"));
    assert!(r.replies.is_empty());
}
