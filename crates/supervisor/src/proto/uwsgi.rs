//! uwsgi: a 4-byte header (modifier1, 16-bit little-endian vars size, modifier2), the vars
//! block, then `CONTENT_LENGTH` body bytes; the response is an HTTP/1.1 status line, headers and
//! the body, ended by the close. Only modifier 0/0 (a WSGI request) is served.

use uwsgi::{Var, HEADER_LEN, MAX_VARS_BLOCK};

use super::{parse_in, read_prefixed, Bad, Head};
use crate::stream::Stream;

/// Reads until `buf` holds the whole packet head (4 bytes + vars block), which may come with
/// the start of the body; a packet that is not a WSGI request (modifiers 0/0) is refused before
/// its block is read. `None`: EOF before the first byte.
pub(super) fn read_head<'b>(
    stream: &Stream,
    buf: &'b mut Vec<u8>,
) -> Result<Option<Head<'b>>, Bad> {
    let read = read_prefixed(stream, buf, HEADER_LEN + MAX_VARS_BLOCK, |got| match *got {
        [m1, _, _, m2, ..] if (m1, m2) != (0, 0) => Err(Bad::Modifier(m1, m2)),
        // At most HEADER_LEN + 65,535 bytes: the 16-bit size field bounds it.
        _ => Ok(uwsgi::packet_len(got)),
    })?;
    Ok(read.map(|(filled, need)| {
        let (packet, rest) = buf[..filled].split_at(need);
        Head::Uwsgi { packet, rest }
    }))
}

/// The packet's vars (see [`Head::parse_vars`]).
pub(super) fn parse_vars<'p, 's>(
    packet: &'p [u8],
    small: &'s mut [Var<'p>],
    large: &'s mut Vec<Var<'p>>,
) -> Result<&'s [Var<'p>], Bad> {
    parse_in(small, large, |storage| {
        let mut req = uwsgi::Request::new(storage);
        match req.parse(packet) {
            Ok(uwsgi::Status::Complete(_)) => Ok(req.vars),
            Err(uwsgi::Error::TooManyVars) => Err(Bad::TooManyVars),
            Err(e) => Err(Bad::Uwsgi(e)),
            // read_head holds the whole declared block, so this cannot be short.
            Ok(uwsgi::Status::Partial) => Err(Bad::Uwsgi(uwsgi::Error::Truncated)),
        }
    })
}
