//! Daemon mode, child side: forward one request to its group over uwsgi and stream the answer
//! back through httpd's filters.
//!
//! The request packet carries the same CGI variables embedded mode gives the app, plus the
//! contract's vars (`uwsgi::contract`: the start time for the group's queue-timeout, the abort
//! mark, the PATH_INFO form). A chunked request body is read whole first so the packet can state
//! CONTENT_LENGTH: chunked uploads work and are never answered 411. A group that is restarting
//! (socket missing or refusing) makes the request wait up to queue-timeout (default: httpd's
//! Timeout), then 504.

use std::borrow::Cow;
use std::ffi::c_int;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyhost::{Body, Head, Outcome, Responder};
use supervisor::SocketSpec;
use uwsgi::contract::{FrontEndVars, PathInfoForm, ABORT_MARK_BYTE};

use crate::conf::DirConf;
use crate::ffi::*;
use crate::log::log_request;
use crate::request::{build_vars, Output, RequestBody, Vars};
use crate::supervise::{route, Route};

/// Largest response head we accept from a group (status line + headers).
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
const IO_CHUNK: usize = 64 * 1024;

/// A connection to a group: unix or TCP, one request per connection.
enum Conn {
    Unix(UnixStream),
    Tcp(std::net::TcpStream),
}

impl Conn {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s
                .set_read_timeout(Some(t))
                .and_then(|()| s.set_write_timeout(Some(t))),
            Conn::Tcp(s) => s
                .set_read_timeout(Some(t))
                .and_then(|()| s.set_write_timeout(Some(t))),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Connects, retrying while the group is (re)starting, until `wait` has passed.
fn connect(route: &Route) -> io::Result<Conn> {
    let deadline = Instant::now() + route.connect_wait;
    let mut pause = Duration::from_millis(10);
    loop {
        let attempt = match &route.socket {
            SocketSpec::Unix(path) => UnixStream::connect(path).map(Conn::Unix),
            SocketSpec::Tcp(addr) => std::net::TcpStream::connect(addr.as_str()).map(Conn::Tcp),
        };
        match attempt {
            Ok(conn) => return Ok(conn),
            Err(e) if Instant::now() + pause < deadline => {
                let retry = matches!(
                    e.kind(),
                    io::ErrorKind::NotFound
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::WouldBlock
                );
                if !retry {
                    return Err(e);
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

fn fail(r: &request_rec, status: u32, message: &str) -> c_int {
    // SAFETY: r is live.
    unsafe { log_request(r, APLOG_ERR, message) };
    status as c_int
}

/// Runs one daemon-mode request. Returns the handler status for httpd.
///
/// Stages: the group's route, the uwsgi packet (after reading a chunked body whole), the
/// request sent and the response head read (retried once where that is safe), the body relayed.
pub(crate) fn forward(r: &mut request_rec, conf: &DirConf, group: &str) -> c_int {
    let route = match checked_route(r, group) {
        Ok(route) => route,
        Err(status) => return status,
    };
    // SAFETY: r is live; once, before any body read.
    let status = unsafe { ap_setup_client_block(r, REQUEST_CHUNKED_DECHUNK as c_int) };
    if status != OK_ {
        return status;
    }
    let mut vars = build_vars(r, conf);
    // The group's secret: its workers refuse packets without it (uwsgi::contract::SECRET).
    if let Some(secret) = &route.secret {
        vars.push((
            Cow::Borrowed(uwsgi::contract::SECRET),
            Cow::Owned(secret.as_bytes().to_vec()),
        ));
    }
    let rp: *mut request_rec = r;
    let mut body = RequestBody::new(rp);
    let (packet, buffered) = match request_packet(r, vars, &mut body) {
        Ok(packet) => packet,
        Err(status) => return status,
    };
    let (mut conn, head) = match deliver(r, &route, &packet, buffered.as_deref(), &mut body) {
        Ok(answer) => answer,
        Err(status) => return status,
    };
    relay_body(r, &mut conn, head, group)
}

/// The route to `group`, which must serve the script this request was mapped to.
fn checked_route(r: &request_rec, group: &str) -> Result<Arc<Route>, c_int> {
    let Some(route) = route(group) else {
        return Err(fail(
            r,
            HTTP_INTERNAL_SERVER_ERROR,
            &format!("RW-AP010 no WSGI daemon process group '{group}' runs in this server"),
        ));
    };
    // SAFETY: r->filename is the script path after httpd's directory walk.
    let script = unsafe { cstr_bytes(r.filename) };
    if !route
        .scripts
        .iter()
        .any(|s| s.as_os_str().as_encoded_bytes() == script)
    {
        let message = format!(
            "RW-AP011 {} was routed to daemon group '{group}', which does not serve it (a group serves \
             the scripts of the WSGIScriptAlias lines routed to it)",
            String::from_utf8_lossy(script),
        );
        return Err(fail(r, HTTP_INTERNAL_SERVER_ERROR, &message));
    }
    Ok(route)
}

/// The uwsgi packet for the group, and the whole body when it came chunked (read first, so that
/// the packet can state CONTENT_LENGTH).
fn request_packet(
    r: &request_rec,
    mut vars: Vars<'_>,
    body: &mut RequestBody,
) -> Result<(Vec<u8>, Option<Vec<u8>>), c_int> {
    let buffered = if r.read_chunked != 0 {
        let mut all = Vec::new();
        let mut chunk = vec![0u8; IO_CHUNK];
        loop {
            match body.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
                Err(_) => {
                    return Err(fail(
                        r,
                        HTTP_BAD_REQUEST,
                        "RW-AP014 reading the chunked request body failed",
                    ))
                }
            }
        }
        vars.retain(|(k, _)| k.as_ref() != b"CONTENT_LENGTH");
        vars.push((
            Cow::Borrowed(b"CONTENT_LENGTH"),
            Cow::Owned(all.len().to_string().into_bytes()),
        ));
        Some(all)
    } else {
        None
    };
    mount_relative_path_info(&mut vars);
    // The contract's vars (uwsgi::contract): when httpd received the request (r->request_time,
    // microseconds), for the group's queue-timeout; the abort mark (see `send_abort_mark`); and
    // PATH_INFO as the whole path (made so just above).
    let start_us = u64::try_from(r.request_time).unwrap_or(0);
    vars.extend(
        FrontEndVars::new(start_us, PathInfoForm::Full)
            .pairs()
            .map(|(k, v)| (Cow::Borrowed(k), Cow::Owned(v.to_vec()))),
    );

    let mut packet = Vec::with_capacity(4096);
    if let Err(e) = uwsgi::encode_request(
        0,
        0,
        vars.iter().map(|(k, v)| (&k[..], &v[..])),
        &mut packet,
    ) {
        return Err(fail(
            r,
            431,
            &format!("RW-AP015 request variables do not fit a uwsgi packet: {e}"),
        ));
    }
    Ok((packet, buffered))
}

/// Connects to the group, sends the request and reads the response head.
///
/// A bodiless GET/HEAD/OPTIONS whose connection is reset before any response byte (it sat in
/// the backlog of a group that just died) is retried once, as proxies do for idempotent
/// requests; anything with a body could have been acted on, so it is not.
fn deliver(
    r: &request_rec,
    route: &Route,
    packet: &[u8],
    buffered: Option<&[u8]>,
    body: &mut RequestBody,
) -> Result<(Conn, ParsedHead), c_int> {
    let group = route.name.as_str();
    // SAFETY: r->server is live; Timeout is in microseconds.
    let timeout =
        Duration::from_micros(u64::try_from(unsafe { (*r.server).timeout }).unwrap_or(60_000_000));
    // SAFETY: r->method is NUL-terminated.
    let method = unsafe { cstr_bytes(r.method) };
    let no_body = buffered.is_none_or(|b| b.is_empty()) && r.remaining == 0 && r.read_chunked == 0;
    let retryable = no_body && matches!(method, b"GET" | b"HEAD" | b"OPTIONS");
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut conn = match connect(route) {
            Ok(c) => c,
            Err(e) => {
                let message = format!(
                    "RW-AP012 daemon group '{group}' ({}) not reachable: {e}",
                    route.socket
                );
                return Err(fail(r, HTTP_GATEWAY_TIME_OUT, &message));
            }
        };
        let _ = conn.set_timeouts(timeout.max(Duration::from_secs(1)));
        if let Err(e) = send_request(&mut conn, packet, buffered, body) {
            if retryable && attempt == 1 {
                continue;
            }
            let message =
                format!("RW-AP013 sending the request to daemon group '{group}' failed: {e}");
            return Err(fail(r, HTTP_BAD_GATEWAY, &message));
        }
        match read_head(&mut conn) {
            Ok(head) => {
                send_abort_mark(&mut conn, &head);
                return Ok((conn, head));
            }
            Err(HeadError::Gone(_)) if retryable && attempt == 1 => continue,
            Err(e) => return Err(fail(r, HTTP_BAD_GATEWAY, &e.message(group))),
        }
    }
}

/// Both our front ends send PATH_INFO in one form, the whole path (`PathInfoForm::Full`, what
/// nginx has), and the worker strips SCRIPT_NAME from its front once. httpd's PATH_INFO is the
/// part after the mount, so SCRIPT_NAME goes back in front of it: the worker's strip then gives
/// exactly httpd's PATH_INFO (/app/app/x, PATH_INFO /app/x, keeps its second /app).
fn mount_relative_path_info(vars: &mut Vars<'_>) {
    let Some(script) = vars
        .iter()
        .find(|(k, _)| k.as_ref() == b"SCRIPT_NAME")
        .map(|(_, v)| v.clone())
    else {
        return;
    };
    let end = script.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    if end == 0 {
        return; // mounted at /: nothing is stripped
    }
    if let Some((_, path_info)) = vars.iter_mut().find(|(k, _)| k.as_ref() == b"PATH_INFO") {
        let mut full = script[..end].to_vec();
        full.extend_from_slice(path_info);
        *path_info = Cow::Owned(full);
    }
}

fn send_request(
    conn: &mut Conn,
    packet: &[u8],
    buffered: Option<&[u8]>,
    body: &mut RequestBody,
) -> io::Result<()> {
    conn.write_all(packet)?;
    if let Some(all) = buffered {
        return conn.write_all(all);
    }
    let mut chunk = [0u8; 16 * 1024]; // on the stack: most requests have no body
    loop {
        match body.read(&mut chunk)? {
            0 => return Ok(()),
            n => conn.write_all(&chunk[..n])?,
        }
    }
}

/// The response head as the group sent it, plus the body bytes read along with it.
struct ParsedHead {
    status: u16,
    status_line: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    buf: Vec<u8>,
    head_len: usize,
    filled: usize,
}

enum HeadError {
    /// EOF or a reset before any complete head: the group died or dropped the connection.
    Gone(String),
    /// Something arrived, but not a valid head.
    Invalid(String),
}

impl HeadError {
    fn message(&self, group: &str) -> String {
        match self {
            HeadError::Gone(why) => {
                format!("RW-AP016 daemon group '{group}' gave no response head: {why}")
            }
            HeadError::Invalid(why) => {
                format!("RW-AP017 invalid response head from daemon group '{group}': {why}")
            }
        }
    }
}

fn read_head(conn: &mut Conn) -> Result<ParsedHead, HeadError> {
    let mut buf = vec![0u8; 16 * 1024]; // grows for big heads; the body relay widens it
    let mut filled = 0;
    loop {
        match conn.read(&mut buf[filled..]) {
            Ok(0) => return Err(HeadError::Gone("connection closed".into())),
            Ok(n) => filled += n,
            Err(e) => return Err(HeadError::Gone(e.to_string())),
        }
        let mut slots = [uwsgi::EMPTY_VAR; MAX_HEADERS];
        let mut head = uwsgi::ResponseHead::new(&mut slots);
        match head.parse(&buf[..filled]) {
            Ok(uwsgi::Status::Complete(head_len)) => {
                let mut status_line = head.status.to_string().into_bytes();
                if !head.reason.is_empty() {
                    status_line.push(b' ');
                    status_line.extend_from_slice(head.reason);
                }
                let headers = head
                    .headers
                    .iter()
                    .map(|h| (h.key.to_vec(), h.value.to_vec()))
                    .collect();
                let status = head.status;
                return Ok(ParsedHead {
                    status,
                    status_line,
                    headers,
                    buf,
                    head_len,
                    filled,
                });
            }
            Ok(uwsgi::Status::Partial) if filled < MAX_HEAD => {
                if filled == buf.len() {
                    buf.resize(buf.len() * 2, 0);
                }
            }
            Ok(uwsgi::Status::Partial) => {
                return Err(HeadError::Invalid(format!("over {MAX_HEAD} bytes")))
            }
            Err(e) => return Err(HeadError::Invalid(e.to_string())),
        }
    }
}

/// Sends the abort mark ([`ABORT_MARK_BYTE`]) once a head without Content-Length arrived (the
/// request is sent whole by then): a body that only the worker's close can end needs it to tell
/// a complete end from an aborted one (`uwsgi::contract`, "Aborted responses").
fn send_abort_mark(conn: &mut Conn, head: &ParsedHead) {
    let framed = head
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case(b"content-length"));
    if framed {
        return;
    }
    let fd = match conn {
        Conn::Unix(s) => s.as_raw_fd(),
        Conn::Tcp(s) => s.as_raw_fd(),
    };
    // Without waiting: if the socket is full, the worker has unread request bytes, which serve
    // as the mark. An error means the worker has closed already; the body relay sees how.
    // SAFETY: one byte from a static on the connection's open descriptor.
    unsafe {
        libc::send(
            fd,
            (&ABORT_MARK_BYTE as *const u8).cast(),
            1,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
}

/// Hands the head to httpd, then streams the body.
fn relay_body(r: &mut request_rec, conn: &mut Conn, parsed: ParsedHead, group: &str) -> c_int {
    let ParsedHead {
        status,
        status_line,
        headers,
        mut buf,
        head_len,
        filled,
    } = parsed;
    let rp: *const request_rec = &*r;
    // HEAD: the worker sends the head only (its Content-Length describes the GET body).
    let header_only = r.header_only != 0;
    let mut out = Output::new(r);
    let head = Head {
        status,
        status_line: &status_line,
        headers: &headers,
    };
    if out.start(&head).is_err() {
        return out.finish(Outcome::ClientGone);
    }
    if header_only {
        return out.finish(Outcome::Complete);
    }
    let expected = out.content_length();
    if buf.len() < IO_CHUNK && expected.is_none_or(|cl| cl > (filled - head_len) as u64) {
        buf.resize(IO_CHUNK, 0);
    }
    let mut received = (filled - head_len) as u64;
    if filled > head_len && out.write(&buf[head_len..filled]).is_err() {
        return out.finish(Outcome::ClientGone);
    }
    loop {
        if expected.is_some_and(|cl| received >= cl) {
            return out.finish(Outcome::Complete);
        }
        match conn.read(&mut buf) {
            Ok(0) if expected.is_none() => return out.finish(Outcome::Complete),
            Ok(0) | Err(_) => {
                // The group stopped mid-body (a crash, request-timeout): an incomplete response.
                let message = format!("RW-AP018 daemon group '{group}' ended the response early");
                // SAFETY: the request is live for the whole handler call.
                unsafe { log_request(rp, APLOG_ERR, &message) };
                return out.finish(Outcome::Aborted);
            }
            Ok(n) => {
                received += n as u64;
                if out.write(&buf[..n]).is_err() {
                    return out.finish(Outcome::ClientGone);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{mount_relative_path_info, Cow, Vars};

    fn run(script: &str, path_info: &str) -> Vec<u8> {
        let mut vars: Vars<'_> = vec![
            (
                Cow::Borrowed(b"SCRIPT_NAME"),
                Cow::Borrowed(script.as_bytes()),
            ),
            (
                Cow::Borrowed(b"PATH_INFO"),
                Cow::Borrowed(path_info.as_bytes()),
            ),
        ];
        mount_relative_path_info(&mut vars);
        vars.remove(1).1.into_owned()
    }

    #[test]
    fn path_info_carries_the_mount_for_the_worker_to_strip() {
        assert_eq!(run("/app", "/app/x"), b"/app/app/x");
        assert_eq!(run("/app", ""), b"/app");
        assert_eq!(run("/app/", "/x"), b"/app/x");
        assert_eq!(run("", "/x"), b"/x");
    }
}
