//! SCGI: a netstring (`LEN:` NUL-separated names and values `,`) whose first var is
//! `CONTENT_LENGTH`, then that many body bytes; the response is a CGI head (`Status: 200 OK`,
//! the headers, a blank line) and the body, ended by the close. nginx's `scgi_pass` and
//! Apache's `mod_proxy_scgi` both send one request per connection and always a length (nginx
//! buffers a chunked upload to learn it; httpd answers 411 to one itself).

use gateway::scgi;
use uwsgi::Var;

use super::{parse_in, read_prefixed, Bad, Head};
use crate::stream::Stream;

/// The largest head read: the SCGI parser's own bound (1 MiB), far above what nginx or httpd
/// send (their request heads are bounded by their header buffers, 32 KiB by default in nginx).
const MAX_HEAD: usize = scgi::MAX_HEADER_LEN + 16;

/// Reads until `buf` holds the whole netstring; an over-long or malformed length is refused
/// as soon as it is seen. `None`: EOF before the first byte.
pub(super) fn read_head<'b>(
    stream: &Stream,
    buf: &'b mut Vec<u8>,
) -> Result<Option<Head<'b>>, Bad> {
    let read = read_prefixed(stream, buf, MAX_HEAD, |got| {
        scgi::header_len(got).map_err(Bad::Scgi)
    })?;
    Ok(read.map(|(filled, need)| {
        let (netstring, rest) = buf[..filled].split_at(need);
        Head::Scgi { netstring, rest }
    }))
}

/// The netstring's vars, `CONTENT_LENGTH` and `SCGI` included (see [`Head::parse_vars`]).
pub(super) fn parse_vars<'p, 's>(
    netstring: &'p [u8],
    small: &'s mut [Var<'p>],
    large: &'s mut Vec<Var<'p>>,
) -> Result<&'s [Var<'p>], Bad> {
    parse_in(small, large, |storage| {
        let mut req = scgi::Request::new(storage);
        match req.parse(netstring) {
            Ok(uwsgi::Status::Complete(_)) => Ok(req.vars),
            Err(scgi::Error::TooManyVars) => Err(Bad::TooManyVars),
            Err(e) => Err(Bad::Scgi(e)),
            // read_head holds the whole netstring, so this cannot be short.
            Ok(uwsgi::Status::Partial) => Err(Bad::Scgi(scgi::Error::MissingComma)),
        }
    })
}

/// The first var named `name` in a netstring read whole (any number of vars).
pub(super) fn find_var<'p>(netstring: &'p [u8], name: &[u8]) -> Option<&'p [u8]> {
    let start = netstring.iter().position(|&b| b == b':')? + 1;
    let block = netstring.get(start..netstring.len().checked_sub(1)?)?;
    let mut fields = block.split(|&b| b == 0);
    while let (Some(key), Some(value)) = (fields.next(), fields.next()) {
        if key == name {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_var_walks_the_pairs() {
        let mut head = Vec::new();
        let vars: [(&[u8], &[u8]); 3] = [(b"A", b"1"), (b"RWSGI_SECRET", b"s"), (b"B", b"")];
        scgi::encode_request(3, vars, &mut head).unwrap();
        assert_eq!(find_var(&head, b"CONTENT_LENGTH"), Some(&b"3"[..]));
        assert_eq!(find_var(&head, b"RWSGI_SECRET"), Some(&b"s"[..]));
        assert_eq!(find_var(&head, b"B"), Some(&b""[..]));
        assert_eq!(find_var(&head, b"1"), None, "a value is not a name");
        assert_eq!(find_var(&head, b"C"), None);
    }
}
