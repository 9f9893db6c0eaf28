//! Daemon mode, child side: forward one request to its group over uwsgi and stream the answer
//! back through httpd's filters.
//!
//! The request packet carries the same CGI variables embedded mode gives the app, plus the
//! contract's vars (`uwsgi::contract`: the start time for the group's queue-timeout, the abort
//! mark, the PATH_INFO form). Stages, in order:
//! 1. the packet is made first, so a request too large for the daemon is answered 431 before
//!    its body is read;
//! 2. the request body is read whole (`spool`: memory up to 1 MiB, then an unlinked temp file),
//!    so a slow upload never holds a daemon thread and a chunked body gets the CONTENT_LENGTH
//!    the packet must state (chunked uploads work and are never answered 411);
//! 3. connect: a group that is restarting (socket missing or refusing) makes the request wait up
//!    to queue-timeout (default: httpd's Timeout), then 504;
//! 4. the packet and body go out while the response comes in (`backend`), so no unread body
//!    can deadlock a response;
//! 5. the head is parsed and the body relayed.
//!
//! A request is sent once. It is tried again only when it provably never reached the app (see
//! `deliver`); never once the group may have started it: a worker killed mid-request is a 502,
//! a group silent for `Timeout` a 504, and the app never runs twice for one request.

use std::borrow::Cow;
use std::ffi::c_int;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyhost::{Head, Outcome, Responder};
use supervisor::SocketSpec;
use uwsgi::contract::{FrontEndVars, PathInfoForm};

use crate::backend::{connect, Backend};
use crate::conf::DirConf;
use crate::ffi::*;
use crate::log::log_request;
use crate::request::{build_vars, Output, RequestBody, Vars};
use crate::spool::{apr_temp_dir, read_body, Spool, SpoolError};
use crate::supervise::{route, Route};

/// Largest response head we accept from a group (status line + headers).
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
const IO_CHUNK: usize = 64 * 1024;

fn fail(r: &request_rec, status: u32, message: &str) -> c_int {
    // SAFETY: r is live.
    unsafe { log_request(r, APLOG_ERR, message) };
    status as c_int
}

/// Runs one daemon-mode request. Returns the handler status for httpd.
///
/// Stages (module docs): the group's route, the uwsgi packet, the body read whole, the request
/// sent while the response head is read, the body relayed.
pub(crate) fn forward(r: &mut request_rec, conf: &DirConf, group: &str) -> c_int {
    let route = match checked_route(r, group) {
        Ok(route) => route,
        Err(status) => return status,
    };
    if asks_for_websocket(r) {
        // httpd's uwsgi relay has no upgrade tunnel: refused plainly, never half-done.
        return fail(
            r,
            HTTP_NOT_IMPLEMENTED,
            "RW-AP019 a WebSocket handshake reached a daemon group through Apache; mod_rwsgi \
             does not tunnel WebSockets (serve this route through nginx)",
        );
    }
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
    mount_relative_path_info(&mut vars);
    // The packet is made before the body is read, so a request too large for the daemon is
    // refused (431) without taking its upload first; a chunked body's length is only known
    // once it is in (the check used the widest one).
    let chunked = r.read_chunked != 0;
    let announced = match (chunked, r.remaining) {
        (true, _) => Some(u64::MAX),
        (false, 0) => None,
        (false, n) => Some(u64::try_from(n).unwrap_or(0)),
    };
    let mut packet = match request_packet(r, &vars, announced) {
        Ok(packet) => packet,
        Err(status) => {
            if announced.is_some() {
                // httpd would read (discard) the whole body before sending the error, for a
                // next request on the connection; this one is refused, so it closes instead
                // (after its lingering close, so the client still gets the answer).
                // SAFETY: r->connection is live for the request.
                unsafe { (*r.connection).keepalive = ap_conn_keepalive_e_AP_CONN_CLOSE };
            }
            return status;
        }
    };
    let body = match spool_body(r) {
        Ok(body) => body,
        Err(status) => return status,
    };
    if chunked {
        packet = match request_packet(r, &vars, body.as_ref().map(Spool::len)) {
            Ok(packet) => packet,
            Err(status) => return status,
        };
    }
    let (mut backend, head) = match deliver(r, &route, &packet, body.as_ref()) {
        Ok(answer) => answer,
        Err(status) => return status,
    };
    relay_body(r, &mut backend, head, group)
}

/// The whole request body (module docs, stage 2), or None for a request without one.
fn spool_body(r: &mut request_rec) -> Result<Option<Spool>, c_int> {
    if r.read_chunked == 0 && r.remaining == 0 {
        return Ok(None);
    }
    let announced = (r.read_chunked == 0).then(|| u64::try_from(r.remaining).unwrap_or(0));
    let pool = r.pool;
    let rp: *mut request_rec = r;
    let mut body = RequestBody::new(rp);
    // SAFETY: the request pool is live for the whole handler call.
    let temp_dir = || unsafe { apr_temp_dir(pool) };
    match read_body(&mut body, announced, temp_dir) {
        Ok(spool) => Ok(Some(spool)),
        Err(SpoolError::Client) => {
            // The client's fault (it went away, timed out, broke the chunked encoding, passed
            // LimitRequestBody), so at httpd's level for it (its own AH01590/AH01591 lines are
            // info too). httpd has answered already (ap_get_client_block sends 400/408/413
            // itself); DONE keeps it from answering twice.
            let message = "RW-AP014 reading the request body from the client failed (gone, \
                           timed out, bad chunked encoding or over LimitRequestBody): not forwarded";
            // SAFETY: r is live.
            unsafe { log_request(r, APLOG_INFO, message) };
            Err(DONE)
        }
        Err(SpoolError::TempFile(e)) => Err(fail(
            r,
            HTTP_INTERNAL_SERVER_ERROR,
            &format!("RW-AP061 spooling the request body to a temp file failed: {e}"),
        )),
    }
}

/// True for a request with `Upgrade: websocket`.
fn asks_for_websocket(r: &request_rec) -> bool {
    // SAFETY: headers_in is a live table; apr_table_get returns NULL or a pool string.
    let upgrade = unsafe { apr_table_get(r.headers_in, c"Upgrade".as_ptr()) };
    // SAFETY: a non-null value is a NUL-terminated string in r->pool.
    !upgrade.is_null()
        && websocket::handshake::has_token(unsafe { cstr_bytes(upgrade) }, b"websocket")
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

/// The uwsgi packet for the group: the CGI vars (PATH_INFO already in its full form, see
/// `mount_relative_path_info`), CONTENT_LENGTH = `content_length` (the body as read: for a
/// chunked body the only length there is, for any other the client's) and the contract's vars.
fn request_packet(
    r: &request_rec,
    vars: &Vars<'_>,
    content_length: Option<u64>,
) -> Result<Vec<u8>, c_int> {
    let length = content_length.map(|n| n.to_string().into_bytes());
    let cgi = vars
        .iter()
        .filter(|(k, _)| length.is_none() || k.as_ref() != b"CONTENT_LENGTH")
        .map(|(k, v)| (&k[..], &v[..]));
    let body = length.iter().map(|n| (&b"CONTENT_LENGTH"[..], &n[..]));
    // The contract's vars (uwsgi::contract): when httpd received the request (r->request_time,
    // microseconds), for the group's queue-timeout; the abort mark (see `deliver`); and the
    // PATH_INFO form.
    let start_us = u64::try_from(r.request_time).unwrap_or(0);
    let front = FrontEndVars::new(start_us, PathInfoForm::Full);
    let mut packet = Vec::with_capacity(4096);
    if let Err(e) = uwsgi::encode_request(0, 0, cgi.chain(body).chain(front.pairs()), &mut packet) {
        return Err(fail(
            r,
            431,
            &format!("RW-AP015 request variables do not fit a uwsgi packet: {e}"),
        ));
    }
    Ok(packet)
}

/// Connects to the group, sends the request and reads the response head.
///
/// Tried again, until queue-timeout (default `Timeout`), only while the request provably never
/// reached the app (issue 10, case 3: running it twice is worse than a 502):
/// - the connect failed (inside `connect`: the group is restarting);
/// - the connection failed before the group took a byte of it;
/// - over a unix socket, a request without a body was reset before any response byte. A unix
///   socket resets only when closed with data unread, so part of the packet was never read
///   (or the connection still sat in the backlog of a group that went away, as when its
///   supervisor is killed), and a worker runs the app only once it has read the whole packet.
///   Over TCP a worker's abort resets too, and with a body the unread bytes may be body the app
///   left, so neither is retried.
fn deliver<'a>(
    r: &request_rec,
    route: &Route,
    packet: &'a [u8],
    body: Option<&'a Spool>,
) -> Result<(Backend<'a>, ParsedHead), c_int> {
    let group = route.name.as_str();
    // SAFETY: r->server is live; Timeout is in microseconds.
    let timeout =
        Duration::from_micros(u64::try_from(unsafe { (*r.server).timeout }).unwrap_or(60_000_000))
            .max(Duration::from_secs(1));
    let deadline = Instant::now() + route.connect_wait;
    let unread_proves_it = body.is_none() && matches!(route.socket, SocketSpec::Unix(_));
    loop {
        let conn = connect(route, deadline).map_err(|e| {
            let message = format!(
                "RW-AP012 daemon group '{group}' ({}) not reachable: {e}",
                route.socket
            );
            fail(r, HTTP_GATEWAY_TIME_OUT, &message)
        })?;
        let mut backend = Backend::start(conn, packet, body, timeout).map_err(|e| {
            let message =
                format!("RW-AP013 sending the request to daemon group '{group}' failed: {e}");
            fail(r, HTTP_BAD_GATEWAY, &message)
        })?;
        let head = if backend.never_reached() {
            Err(HeadError::NotTaken)
        } else {
            read_head(&mut backend)
        };
        let error = match head {
            Ok(head) => {
                if !head.framed() {
                    backend.send_abort_mark();
                }
                return Ok((backend, head));
            }
            Err(e) => e,
        };
        let unstarted = match error {
            HeadError::NotTaken => true,
            HeadError::Reset => unread_proves_it,
            _ => false,
        };
        if !unstarted || Instant::now() >= deadline {
            let status = match error {
                HeadError::TimedOut | HeadError::NotTaken => HTTP_GATEWAY_TIME_OUT,
                _ => HTTP_BAD_GATEWAY,
            };
            return Err(fail(r, status, &error.message(group, backend.send_error())));
        }
        let message = format!(
            "RW-AP062 daemon group '{group}' dropped the request before reading it (its workers \
             were going away); sending it again"
        );
        // SAFETY: r is live.
        unsafe { log_request(r, APLOG_INFO, &message) };
        std::thread::sleep(Duration::from_millis(10));
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

/// The response head as the group sent it, plus the body bytes read along with it.
struct ParsedHead {
    status: u16,
    status_line: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    buf: Vec<u8>,
    head_len: usize,
    filled: usize,
}

impl ParsedHead {
    /// Whether the body has a Content-Length (else only the worker's close ends it).
    fn framed(&self) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(b"content-length"))
    }
}

enum HeadError {
    /// The connection failed before the group took a byte of the request.
    NotTaken,
    /// Reset before any response byte (see `deliver` for when that proves the app did not run).
    Reset,
    /// EOF or another error before any complete head: the group died or dropped the connection.
    Gone(String),
    /// Nothing for `Timeout`.
    TimedOut,
    /// Something arrived, but not a valid head.
    Invalid(String),
}

impl HeadError {
    fn message(&self, group: &str, send_error: Option<&io::Error>) -> String {
        let sending = send_error.map_or(String::new(), |e| {
            format!(" (it stopped taking the request: {e})")
        });
        match self {
            HeadError::NotTaken => format!(
                "RW-AP012 daemon group '{group}' closed every connection before taking the \
                 request{sending}"
            ),
            HeadError::Reset => format!(
                "RW-AP016 daemon group '{group}' gave no response head: connection reset{sending}"
            ),
            HeadError::Gone(why) => {
                format!("RW-AP016 daemon group '{group}' gave no response head: {why}{sending}")
            }
            HeadError::TimedOut => {
                format!("RW-AP060 daemon group '{group}' sent no response head within Timeout: 504")
            }
            HeadError::Invalid(why) => {
                format!("RW-AP017 invalid response head from daemon group '{group}': {why}")
            }
        }
    }
}

fn read_head(backend: &mut Backend<'_>) -> Result<ParsedHead, HeadError> {
    let mut buf = vec![0u8; 16 * 1024]; // grows for big heads; the body relay widens it
    let mut filled = 0;
    loop {
        match backend.read(&mut buf[filled..]) {
            Ok(0) => return Err(HeadError::Gone("connection closed".into())),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(HeadError::TimedOut),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && filled == 0 => {
                return Err(HeadError::Reset)
            }
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

/// Hands the head to httpd, then streams the body.
fn relay_body(
    r: &mut request_rec,
    backend: &mut Backend<'_>,
    parsed: ParsedHead,
    group: &str,
) -> c_int {
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
        match backend.read(&mut buf) {
            Ok(0) if expected.is_none() => return out.finish(Outcome::Complete),
            end @ (Ok(0) | Err(_)) => {
                // The group stopped mid-body (a crash, request-timeout, an abort mark left
                // unread) or went silent for Timeout: an incomplete response.
                let why = end
                    .err()
                    .map_or("connection closed".to_owned(), |e| e.to_string());
                let message =
                    format!("RW-AP018 daemon group '{group}' ended the response early: {why}");
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
