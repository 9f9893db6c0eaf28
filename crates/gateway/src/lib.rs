//! The two CGI-family gateway protocols besides uwsgi, as sans-I/O code in httparse's shape:
//! [`scgi`] (a netstring of NUL-separated vars, then the body) and [`fastcgi`] (records, responder
//! role only, one request at a time per connection). Both answer with a CGI response head,
//! written by [`cgi::encode_head`].
//!
//! What a worker gets from here, whichever protocol the front end speaks:
//! - the request vars as [`Var`]s borrowed from the read buffer (the same type the `uwsgi` crate
//!   yields, so one environ builder serves all three protocols);
//! - [`Status::Complete`]`(n)` / [`Status::Partial`] from every parser: `Partial` means "read
//!   more and call again with the longer buffer", never an error;
//! - an `Error` for anything malformed, never a panic; the caller closes that one connection.
//!
//! Invariants shared with the `uwsgi` crate: the parsers never allocate and never panic, lengths
//! are checked before use and never wrapped or truncated (a length that does not fit the wire
//! field is an encoder error, not a silently shortened field), and an encoder that fails leaves
//! its output `Vec` as it was.
//!
//! ```
//! use gateway::{scgi, Status, EMPTY_VAR};
//!
//! // Front end (nginx scgi_pass, Apache mod_proxy_scgi): CONTENT_LENGTH first, then SCGI=1.
//! let mut packet = Vec::new();
//! let vars: [(&[u8], &[u8]); 2] = [(b"REQUEST_METHOD", b"POST"), (b"PATH_INFO", b"/")];
//! let n = scgi::encode_request(5, vars, &mut packet)?;
//! packet.extend_from_slice(b"hello");
//!
//! // Worker: parse from whatever has been read so far; the body starts at packet[n].
//! let mut storage = [EMPTY_VAR; 16];
//! let mut req = scgi::Request::new(&mut storage);
//! assert_eq!(req.parse(&packet[..10])?, Status::Partial);
//! assert_eq!(req.parse(&packet)?, Status::Complete(n));
//! assert_eq!((req.content_length, req.get(b"PATH_INFO")), (5, Some(&b"/"[..])));
//! # Ok::<(), scgi::Error>(())
//! ```

pub mod cgi;
pub mod fastcgi;
pub mod scgi;

pub use uwsgi::{Status, Var, EMPTY_VAR};
