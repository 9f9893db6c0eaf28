//! The CGI response head that SCGI and FastCGI responders send: a `Status:` header line, the
//! response headers, a blank line (RFC 3875 section 6.2, "document response").
//!
//! Why not an HTTP status line, as the uwsgi protocol uses: nginx's `scgi_pass` accepts either,
//! but nginx's `fastcgi_pass` and Apache's `mod_proxy_scgi` and `mod_proxy_fcgi` read the head
//! with a CGI header scanner (`ap_scan_script_header_err_brigade_ex` in httpd), where a line
//! without a colon is a "malformed header from script" and a 500. `Status:` works with all four.
//!
//! Front ends act on some CGI headers (httpd: a `Location` starting with `/` and status 200 is
//! an internal redirect in `mod_proxy_scgi`, `ProxySCGIInternalRedirect`; nginx and httpd
//! both drop the app's `Content-Length` and frame the body themselves). Those are the front
//! end's rules and are documented for users; this encoder only guarantees a well-formed head.

use uwsgi::Error;

/// Appends `"Status: " + status_line + "\r\n"`, one `"Name: value\r\n"` per header, and the
/// blank line to `out`.
///
/// `status_line` is the WSGI status, e.g. `b"200 OK"`: three digits 100..=999, optionally a
/// space and a reason phrase without control characters, else [`Error::BadStatusLine`]. A header
/// with a non-token name, a value with CR, LF, NUL or another control character (HTAB excepted),
/// or the name `Status` in any case (in CGI that line *is* the status: a second one would let
/// the app's header silently replace the real status) is [`Error::BadHeader`]. On error `out`
/// is left as it was.
pub fn encode_head<'a, I>(status_line: &[u8], headers: I, out: &mut Vec<u8>) -> Result<(), Error>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    // The uwsgi encoder checks the status and every header the same way; only the first line
    // differs, and "HTTP/1.1 " is swapped for "Status: " afterwards.
    let start = out.len();
    let mut status_header = false;
    let headers = headers
        .into_iter()
        .inspect(|(name, _)| status_header |= name.eq_ignore_ascii_case(b"status"));
    uwsgi::encode_response_head(status_line, headers, out)?;
    if status_header {
        out.truncate(start);
        return Err(Error::BadHeader);
    }
    debug_assert!(out[start..].starts_with(HTTP_PREFIX));
    out.splice(start..start + HTTP_PREFIX.len(), *b"Status: ");
    Ok(())
}

/// What `uwsgi::encode_response_head` starts a head with.
const HTTP_PREFIX: &[u8] = b"HTTP/1.1 ";

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: &[u8], headers: &[(&[u8], &[u8])]) -> Result<Vec<u8>, Error> {
        let mut out = b"keep".to_vec();
        let result = encode_head(status, headers.iter().copied(), &mut out);
        match result {
            Ok(()) => Ok(out.split_off(4)),
            Err(e) => {
                assert_eq!(out, b"keep", "output untouched on error");
                Err(e)
            }
        }
    }

    #[test]
    fn encodes_a_cgi_head() {
        assert_eq!(
            head(
                b"200 OK",
                &[(b"Content-Type", b"text/plain"), (b"X-A", b"")]
            )
            .unwrap(),
            b"Status: 200 OK\r\nContent-Type: text/plain\r\nX-A: \r\n\r\n"
        );
        assert_eq!(head(b"204", &[]).unwrap(), b"Status: 204\r\n\r\n");
        assert_eq!(head(b"599 ", &[]).unwrap(), b"Status: 599 \r\n\r\n");
    }

    #[test]
    fn refuses_what_could_split_or_fake_the_head() {
        let bad_status: [&[u8]; 7] = [
            b"",
            b"20",
            b"2000",
            b"099 x",
            b"200\tOK",
            b"2x0 OK",
            b"200 O\r\nK",
        ];
        for status in bad_status {
            assert_eq!(head(status, &[]), Err(Error::BadStatusLine), "{status:?}");
        }
        let bad_headers: [(&[u8], &[u8]); 6] = [
            (b"", b"v"),
            (b"Bad Name", b"v"),
            (b"X", b"a\r\nInjected: 1"),
            (b"X", b"a\0b"),
            (b"Status", b"404 Not Found"),
            (b"sTaTuS", b"302"),
        ];
        for header in bad_headers {
            assert_eq!(
                head(b"200 OK", &[header]),
                Err(Error::BadHeader),
                "{header:?}"
            );
        }
    }
}
