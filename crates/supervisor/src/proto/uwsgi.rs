//! uwsgi: a 4-byte header (modifier1, 16-bit little-endian vars size, modifier2), the vars
//! block, then `CONTENT_LENGTH` body bytes; the response is an HTTP/1.1 status line, headers and
//! the body, ended by the close. Only modifier 0/0 (a WSGI request) is served.

use std::io::{self, Read};

use uwsgi::{Var, EMPTY_VAR, HEADER_LEN, MAX_VARS, MAX_VARS_BLOCK};

use super::{read_error, Bad, Head};
use crate::stream::Stream;

/// Reads until `buf` holds the whole packet head (4 bytes + vars block), which may come with
/// the start of the body. `None`: EOF before the first byte.
pub(super) fn read_head<'b>(
    mut stream: &Stream,
    buf: &'b mut Vec<u8>,
) -> Result<Option<Head<'b>>, Bad> {
    let mut filled = 0;
    loop {
        let need = if filled < HEADER_LEN {
            HEADER_LEN
        } else {
            HEADER_LEN + usize::from(u16::from_le_bytes([buf[1], buf[2]]))
        };
        if filled >= HEADER_LEN && (buf[0], buf[3]) != (0, 0) {
            // Refused before the block is read: nothing but WSGI requests here.
            return Err(Bad::Modifier(buf[0], buf[3]));
        }
        if filled >= need {
            let (packet, rest) = buf[..filled].split_at(need);
            return Ok(Some(Head::Uwsgi { packet, rest }));
        }
        if buf.len() < need {
            // At most HEADER_LEN + 65,535 bytes: the 16-bit size field bounds it.
            buf.resize(need.min(HEADER_LEN + MAX_VARS_BLOCK), 0);
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(Bad::Eof(filled)),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(e, filled)),
        }
    }
}

/// The packet's vars (see [`Head::parse_vars`]).
pub(super) fn parse_vars<'p, 's>(
    packet: &'p [u8],
    small: &'s mut [Var<'p>],
    large: &'s mut Vec<Var<'p>>,
) -> Result<&'s [Var<'p>], Bad> {
    let mut req = uwsgi::Request::new(small);
    let mut parsed = req.parse(packet);
    if parsed == Err(uwsgi::Error::TooManyVars) {
        *large = vec![EMPTY_VAR; MAX_VARS];
        req = uwsgi::Request::new(large);
        parsed = req.parse(packet);
    }
    match parsed {
        Ok(uwsgi::Status::Complete(_)) => Ok(req.vars),
        Err(uwsgi::Error::TooManyVars) => Err(Bad::TooManyVars),
        Err(e) => Err(Bad::Uwsgi(e)),
        // read_head holds the whole declared block, so this cannot be short.
        Ok(uwsgi::Status::Partial) => Err(Bad::Uwsgi(uwsgi::Error::Truncated)),
    }
}
