//! The opening handshake's server side (RFC 6455 section 4.2): which requests are WebSocket
//! handshakes, and the `Sec-WebSocket-Accept` value that answers one.

use crate::sha1;

/// The GUID RFC 6455 appends to the client's key.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// True for a `Sec-WebSocket-Key` the RFC allows: the base64 form of 16 bytes (24 characters,
/// ending in `==`).
pub fn key_is_valid(key: &[u8]) -> bool {
    let key = key.trim_ascii();
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

/// `Sec-WebSocket-Accept` for the client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    base64(&sha1::digest(&[key.trim_ascii(), GUID]))
}

/// What a request's headers say about a WebSocket handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// Not a WebSocket request.
    No,
    /// A valid handshake: the `Sec-WebSocket-Accept` value to answer with.
    Yes(String),
    /// It asks for a WebSocket but is malformed: answer this status (400, or 426 for a
    /// version other than 13).
    Bad(u16),
}

/// Checks a request's `Upgrade`, `Connection`, `Sec-WebSocket-Version` and `Sec-WebSocket-Key`
/// (RFC 6455 4.2.1). `method_get`: the method is GET; `http11`: HTTP/1.1 (HTTP/2 has its own
/// WebSocket mechanism, RFC 8441, not offered here).
pub fn check(
    method_get: bool,
    http11: bool,
    upgrade: Option<&[u8]>,
    connection: Option<&[u8]>,
    version: Option<&[u8]>,
    key: Option<&[u8]>,
) -> Handshake {
    if !upgrade.is_some_and(|u| has_token(u, b"websocket")) {
        return Handshake::No;
    }
    if !method_get || !http11 || !connection.is_some_and(|c| has_token(c, b"upgrade")) {
        return Handshake::Bad(400);
    }
    if version.map(<[u8]>::trim_ascii) != Some(b"13") {
        return Handshake::Bad(426);
    }
    match key {
        Some(k) if key_is_valid(k) => Handshake::Yes(accept_key(k)),
        _ => Handshake::Bad(400),
    }
}

/// True when `value` (a `Connection` or `Upgrade` header) lists `token`, ignoring case.
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn base64(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(key_is_valid(b"dGhlIHNhbXBsZSBub25jZQ=="));
    }

    #[test]
    fn handshakes() {
        let key = Some(&b"dGhlIHNhbXBsZSBub25jZQ=="[..]);
        let ws = Some(&b"websocket"[..]);
        let up = Some(&b"keep-alive, Upgrade"[..]);
        let v13 = Some(&b"13"[..]);
        assert_eq!(
            check(true, true, ws, up, v13, key),
            Handshake::Yes("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into())
        );
        assert_eq!(check(true, true, None, up, v13, key), Handshake::No);
        assert_eq!(check(true, true, Some(b"h2c"), up, v13, key), Handshake::No);
        assert_eq!(check(false, true, ws, up, v13, key), Handshake::Bad(400));
        assert_eq!(check(true, false, ws, up, v13, key), Handshake::Bad(400));
        assert_eq!(check(true, true, ws, None, v13, key), Handshake::Bad(400));
        assert_eq!(
            check(true, true, ws, up, Some(b"8"), key),
            Handshake::Bad(426)
        );
        assert_eq!(
            check(true, true, ws, up, v13, Some(b"x")),
            Handshake::Bad(400)
        );
    }

    #[test]
    fn keys_and_tokens() {
        assert!(!key_is_valid(b"short=="));
        assert!(!key_is_valid(b"dGhlIHNhbXBsZSBub25jZQ!="));
        assert!(has_token(b"keep-alive, Upgrade", b"upgrade"));
        assert!(!has_token(b"keep-alive", b"upgrade"));
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
    }
}
