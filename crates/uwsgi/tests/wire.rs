//! Byte-level checks against the wire format in the protocol reference.

use uwsgi::{encode_request, Request, Status, EMPTY_VAR};

#[test]
fn reference_byte_example_parses_and_encodes() {
    let packet: &[u8] = b"\x00\x15\x00\x00\x0e\x00REQUEST_METHOD\x03\x00GET";
    let mut storage = [EMPTY_VAR; 4];
    let mut req = Request::new(&mut storage);
    assert_eq!(req.parse(packet), Ok(Status::Complete(25)));
    assert_eq!(req.vars.len(), 1);
    assert_eq!(req.get(b"REQUEST_METHOD"), Some(&b"GET"[..]));
    let mut out = Vec::new();
    let vars: [(&[u8], &[u8]); 1] = [(b"REQUEST_METHOD", b"GET")];
    assert_eq!(encode_request(0, 0, vars, &mut out), Ok(25));
    assert_eq!(out, packet);
}
