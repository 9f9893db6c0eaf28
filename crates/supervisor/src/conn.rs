//! One front-end connection: read the request head, run the app through pyhost, send the
//! response, close. Every front end (nginx `uwsgi_pass`/`scgi_pass`/`fastcgi_pass`, Apache
//! `mod_proxy_uwsgi`/`mod_proxy_scgi`/`mod_proxy_fcgi`, our modules) sends one request per
//! connection. What differs between uwsgi, SCGI and FastCGI is the wire (`proto/`: the head,
//! the body's framing, the response's framing); everything here is the same for the three.
//!
//! A malformed head (parse error, uwsgi modifier1 other than 0, FastCGI records out of order,
//! EOF or timeout inside the head, bad CONTENT_LENGTH) closes that connection only: the app is
//! never called and nothing is answered. So does a request without the group's secret, when it
//! has one (`secret.rs`). A well-formed head with more vars than the worker takes
//! ([`uwsgi::MAX_VARS`]) is answered 431 (Request Header Fields Too Large), so that any front
//! end gives its client a clear status. The lines for these go through the log's rate limit: an
//! outsider can send them at will.
//!
//! The request body is `body.rs`, the response `respond.rs`. A request stuck past the group's
//! request-timeout is pyhost's watchdog's; if its thread is stuck in C code the watchdog
//! answers 504 on the connection itself ([`TakeOver`]) and the worker retires (worker.rs).

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pyhost::{App, ErrorLog, Head, Mode, Outcome, Responder, Stuck, Timeout};
use uwsgi::contract::{self, PathInfoForm};
use uwsgi::{Var, EMPTY_VAR, MAX_VARS};

use crate::body::{Inbound, SocketBody};
use crate::config::Protocol;
pub(crate) use crate::proto::Bad;
use crate::proto::{self, abort_record};
use crate::respond::{Framing, SocketResponder};
use crate::routing::{self, Routed, SentPath};
use crate::scoreboard::Scoreboard;
use crate::secret::Secret;
use crate::signals::monotonic_ms;
use crate::stream::Stream;
use crate::{rwlog, rwlog_limited};

/// Vars parsed into stack storage before falling back to the heap (a browser request through
/// nginx has ~30).
pub(crate) const SMALL_VARS: usize = 96;

/// One app of the group and the URL prefix it is mounted at (`None` = the default app).
pub struct MountedApp<'a> {
    pub mount: Option<&'a [u8]>,
    pub app: &'a App,
}

/// What a worker thread needs to serve connections.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// The group's apps (at least one), in configuration order.
    pub apps: &'a [MountedApp<'a>],
    pub mode: Mode,
    pub socket_timeout: Duration,
    pub queue_timeout: Option<Duration>,
    /// The group's request-timeout (pyhost's watchdog enforces it in this process).
    pub request_timeout: Option<Duration>,
    /// Called (on pyhost's watchdog thread) when a request's thread is stuck past its
    /// request-timeout: the worker stops accepting and exits once its other requests are done.
    pub retire: &'a (dyn Fn() + Sync),
    pub log: &'a dyn ErrorLog,
    pub board: &'a Scoreboard,
    pub slot: usize,
    pub thread: usize,
    /// The group's secret: packets without it are refused.
    pub secret: Option<&'a Secret>,
    /// What the socket speaks.
    pub protocol: Protocol,
}

/// Per-thread buffers, reused from one connection to the next.
pub struct Scratch {
    /// Request head and the first body bytes.
    buf: Vec<u8>,
    /// FastCGI: the PARAMS stream.
    params: Vec<u8>,
    /// The encoded response head.
    head: Vec<u8>,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            buf: vec![0; 8192],
            params: Vec::new(),
            head: Vec::with_capacity(512),
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves one connection to the end and closes it (by dropping `stream`).
pub fn serve(stream: Stream, ctx: &Ctx<'_>, scratch: &mut Scratch) {
    stream.set_timeouts(ctx.socket_timeout);
    let Scratch { buf, params, head } = scratch;
    let bufs = proto::Buffers { read: buf, params };
    let request = match proto::read_head(ctx.protocol, &stream, bufs) {
        Ok(Some(request)) => request,
        Ok(None) => return, // connected and closed without a byte: a health check
        Err(bad) => return log_refusal(&bad),
    };
    if let Err(bad) = run_request(&stream, &request, ctx, head) {
        log_refusal(&bad);
    }
}

/// Logs why a connection was closed unanswered, through the log's rate limit (an outsider can
/// send such packets at will). The ASGI worker's connections use it too.
pub(crate) fn log_refusal(bad: &Bad) {
    match bad {
        Bad::Origin => rwlog_limited!(
            "RW051",
            "refusing a request that does not carry the group's secret (RWSGI_SECRET): connection closed"
        ),
        _ => rwlog_limited!("RW030", "closing connection: {bad}"),
    }
}

/// Parses the head's vars, runs the app and sends the response: the stages below, in order.
fn run_request(
    stream: &Stream,
    request: &proto::Head<'_>,
    ctx: &Ctx<'_>,
    head_buf: &mut Vec<u8>,
) -> Result<(), Bad> {
    let mut small: [Var<'_>; SMALL_VARS] = [EMPTY_VAR; SMALL_VARS];
    let mut large = Vec::new();
    let vars = match request.parse_vars(&mut small, &mut large) {
        Err(Bad::TooManyVars) => return refuse_too_many_vars(stream, request, ctx, head_buf),
        parsed => parsed?,
    };
    let front = FrontEnd::read(vars)?;
    front.check_origin(ctx.secret)?;
    let mounts: Vec<Option<&[u8]>> = ctx.apps.iter().map(|a| a.mount).collect();
    let (mut decoded, mut cgi_path) = (Vec::new(), Vec::new());
    let sent = match request.protocol() {
        Protocol::Uwsgi => front.path,
        // SCGI and FastCGI front ends send the CGI view of the path (routing.rs).
        Protocol::Scgi | Protocol::FastCgi => routing::cgi_gateway(&front.path, &mut cgi_path),
    };
    let routed = routing::resolve(&sent, &mounts, &mut decoded);
    let Some(app) = ctx.apps.get(routed.app) else {
        return Err(Bad::NoApp);
    };
    let env = environ(vars, &front, &routed);
    let length = front.content_length.unwrap_or(0);
    let inbound = RefCell::new(Inbound::from_source(stream, request.body(length)));
    // Who writes the response head: this thread (the app's response), or pyhost's watchdog
    // thread (a 504 for a request stuck past its timeout); whoever comes first.
    let head_claim = AtomicBool::new(false);
    let mut out = SocketResponder::new(stream, &inbound, head_buf, request.framing(), &head_claim);
    if queued_too_long(ctx, front.request_start) {
        let msg = b"Request queued too long in the server.\n";
        if answer(&mut out, b"504 Gateway Timeout", msg).is_ok() {
            finish_clean(stream, &inbound, false);
        }
        return Ok(());
    }
    let mut body = SocketBody { inbound: &inbound };
    let stuck = TakeOver {
        fd: stream.as_raw_fd(),
        framing: request.framing(),
        head_claim: &head_claim,
        ctx,
    };
    let outcome = run_app(ctx, app.app, &env, &mut body, &mut out, &stuck);
    // The abort mark is our own front ends' addition to uwsgi (uwsgi::contract).
    let abort_mark = front.abort_mark && request.protocol() == Protocol::Uwsgi;
    end_response(stream, &inbound, &mut out, outcome, abort_mark);
    Ok(())
}

/// A head with more vars than [`MAX_VARS`]: 431, without running the app ("a request too
/// large for the daemon answers 431", as the front ends answer when they cannot encode one).
/// Only the vars this needs are looked up, without storing the others.
fn refuse_too_many_vars(
    stream: &Stream,
    request: &proto::Head<'_>,
    ctx: &Ctx<'_>,
    head_buf: &mut Vec<u8>,
) -> Result<(), Bad> {
    let length = too_many_vars_length(
        |name| request.find_var(name),
        ctx.secret,
        request.protocol(),
    )?;
    let inbound = RefCell::new(Inbound::from_source(stream, request.body(length)));
    let head_claim = AtomicBool::new(false);
    let mut out = SocketResponder::new(stream, &inbound, head_buf, request.framing(), &head_claim);
    if answer(
        &mut out,
        b"431 Request Header Fields Too Large",
        TOO_MANY_VARS_BODY,
    )
    .is_ok()
    {
        finish_clean(stream, &inbound, false);
    }
    Ok(())
}

/// The body of the 431 for a request with too many vars.
pub(crate) const TOO_MANY_VARS_BODY: &[u8] =
    b"Request header fields too large for the application server.\n";

/// A uwsgi packet with more vars than [`MAX_VARS`], before the ASGI loop's 431: refused as any
/// packet when the modifier is wrong, else as [`too_many_vars_length`]; returns (bytes of the
/// packet head, body length) so the caller can read the body away.
pub(crate) fn too_many_vars(packet: &[u8], secret: Option<&Secret>) -> Result<(usize, u64), Bad> {
    if let [m1, _, _, m2, ..] = *packet {
        if m1 != 0 {
            return Err(Bad::Modifier(m1, m2));
        }
    }
    let length = too_many_vars_length(
        |name| uwsgi::find_var(packet, name),
        secret,
        Protocol::Uwsgi,
    )?;
    let consumed = uwsgi::packet_len(packet).map_or(packet.len(), |n| n.min(packet.len()));
    Ok((consumed, length))
}

/// A head with more vars than [`MAX_VARS`] (WSGI threads and ASGI loop alike): refused as any
/// request when the group's secret is missing or wrong; else logged, and its body length
/// returned. Only the vars this needs are looked up.
fn too_many_vars_length<'p>(
    find_var: impl Fn(&[u8]) -> Option<&'p [u8]>,
    secret: Option<&Secret>,
    protocol: Protocol,
) -> Result<u64, Bad> {
    if let Some(secret) = secret {
        if !find_var(contract::SECRET).is_some_and(|s| secret.matches(s)) {
            return Err(Bad::Origin);
        }
    }
    let length = match find_var(b"CONTENT_LENGTH") {
        Some(v) => parse_content_length(v).ok_or(Bad::ContentLength)?,
        None => 0,
    };
    rwlog_limited!(
        "RW030",
        "answering 431: the request has more than {MAX_VARS} {protocol} vars (headers), the most a worker takes"
    );
    Ok(length)
}

/// A short plain-text answer of the worker's own (the app does not run).
fn answer(out: &mut SocketResponder<'_, '_>, status_line: &[u8], msg: &[u8]) -> io::Result<()> {
    let status = std::str::from_utf8(&status_line[..3])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let headers = [
        (b"Content-Type".to_vec(), b"text/plain".to_vec()),
        (
            b"Content-Length".to_vec(),
            msg.len().to_string().into_bytes(),
        ),
    ];
    let head = Head {
        status,
        status_line,
        headers: &headers,
    };
    out.start(&head)?;
    out.write(msg)?;
    out.finish()
}

/// A uwsgi packet's vars and the length of its head (the body starts there), for the ASGI
/// connection (`asgi/conn.rs`), which reads uwsgi only.
pub(crate) fn parse_vars<'p, 's>(
    packet: &'p [u8],
    small: &'s mut [Var<'p>],
    large: &'s mut Vec<Var<'p>>,
) -> Result<(&'s [Var<'p>], usize), Bad> {
    if let [m1, _, _, m2, ..] = *packet {
        if (m1, m2) != (0, 0) {
            return Err(Bad::Modifier(m1, m2));
        }
    }
    let consumed = uwsgi::packet_len(packet)
        .filter(|n| *n <= packet.len())
        .ok_or(Bad::Uwsgi(uwsgi::Error::Truncated))?;
    let head = proto::Head::Uwsgi {
        packet: &packet[..consumed],
        rest: &packet[consumed..],
    };
    Ok((head.parse_vars(small, large)?, consumed))
}

/// The vars this layer interprets itself (a first pass over the packet).
pub(crate) struct FrontEnd<'p> {
    pub(crate) path: SentPath<'p>,
    pub(crate) content_length: Option<u64>,
    /// `RWSGI_REQUEST_START` (uwsgi::contract), for queue-timeout.
    pub(crate) request_start: Option<&'p [u8]>,
    /// `RWSGI_ABORT_MARK=1`: the front end sends the mark byte (uwsgi::contract).
    pub(crate) abort_mark: bool,
    /// `UWSGI_SCHEME`, when it says http or https.
    scheme: Option<&'p [u8]>,
    /// `RWSGI_SECRET` (uwsgi::contract), the first one sent.
    secret: Option<&'p [u8]>,
}

impl<'p> FrontEnd<'p> {
    /// `Err(Bad::Origin)` unless the packet carries the group's secret (when it has one).
    pub(crate) fn check_origin(&self, secret: Option<&Secret>) -> Result<(), Bad> {
        match secret {
            Some(secret) if !self.secret.is_some_and(|s| secret.matches(s)) => Err(Bad::Origin),
            _ => Ok(()),
        }
    }

    pub(crate) fn read(vars: &[Var<'p>]) -> Result<FrontEnd<'p>, Bad> {
        let mut front = FrontEnd {
            path: SentPath::default(),
            content_length: None,
            request_start: None,
            abort_mark: false,
            scheme: None,
            secret: None,
        };
        for v in vars {
            match v.key {
                b"SCRIPT_NAME" => front.path.script_name = Some(v.value),
                b"PATH_INFO" => front.path.path_info = Some(v.value),
                b"QUERY_STRING" => front.path.query_string = Some(v.value),
                b"REQUEST_URI" => front.path.request_uri = Some(v.value),
                b"DOCUMENT_URI" => front.path.document_uri = Some(v.value),
                contract::REQUEST_START => front.request_start = Some(v.value),
                contract::ABORT_MARK => front.abort_mark = v.value == contract::ABORT_MARK_ON,
                contract::PATH_INFO_FORM => front.path.form = PathInfoForm::parse(v.value),
                contract::APP_MOUNT => front.path.app_mount = Some(v.value),
                contract::SECRET if front.secret.is_none() => front.secret = Some(v.value),
                // UWSGI_SCHEME is the one UWSGI_* var that loads no code: operators set it
                // (`uwsgi_param UWSGI_SCHEME https;`, `SetEnv UWSGI_SCHEME https`) to say the
                // client used TLS. It wins over HTTPS/REQUEST_SCHEME, as in uWSGI.
                b"UWSGI_SCHEME" if matches!(v.value, b"http" | b"https") => {
                    front.scheme = Some(v.value)
                }
                b"CONTENT_LENGTH" => {
                    let n = parse_content_length(v.value).ok_or(Bad::ContentLength)?;
                    if front.content_length.is_some_and(|prev| prev != n) {
                        return Err(Bad::ContentLength);
                    }
                    front.content_length = Some(n);
                }
                _ => {}
            }
        }
        Ok(front)
    }
}

/// environ as pyhost gets it: the vars as sent, minus uWSGI's code-loading `UWSGI_*` vars and
/// the contract's own, with the scheme and the routed SCRIPT_NAME / PATH_INFO / QUERY_STRING.
pub(crate) fn environ<'p>(
    vars: &[Var<'p>],
    front: &FrontEnd<'p>,
    routed: &Routed<'p>,
) -> Vec<(&'p [u8], &'p [u8])> {
    let mut env: Vec<(&[u8], &[u8])> = Vec::with_capacity(vars.len() + 5);
    for v in vars {
        let k = v.key;
        if k.len() >= 6 && k[..6].eq_ignore_ascii_case(b"UWSGI_") {
            continue;
        }
        match k {
            b"SCRIPT_NAME" | b"PATH_INFO" | b"QUERY_STRING" => {}
            _ if contract::is_contract_var(k) => {}
            b"HTTPS" | b"REQUEST_SCHEME" if front.scheme.is_some() => {}
            _ => env.push((k, v.value)),
        }
    }
    if let Some(scheme) = front.scheme {
        env.push((b"REQUEST_SCHEME", scheme));
        if scheme == b"https" {
            env.push((b"HTTPS", b"on"));
        }
    }
    env.push((b"SCRIPT_NAME", routed.script_name));
    env.push((b"PATH_INFO", routed.path_info));
    env.push((b"QUERY_STRING", routed.query_string));
    env
}

/// queue-timeout: did the request wait longer than the group allows since the front end
/// received it? (Logged when so.)
fn queued_too_long(ctx: &Ctx<'_>, request_start: Option<&[u8]>) -> bool {
    let Some(limit) = ctx.queue_timeout else {
        return false;
    };
    let Some(waited) = request_start.and_then(queued_for).filter(|w| *w > limit) else {
        return false;
    };
    rwlog_limited!(
        "RW035",
        "request queued for {:.3}s > queue-timeout {:.3}s: answering 504",
        waited.as_secs_f64(),
        limit.as_secs_f64()
    );
    true
}

/// Runs the app, with this thread marked busy on the scoreboard (for request-timeout).
fn run_app(
    ctx: &Ctx<'_>,
    app: &App,
    env: &[(&[u8], &[u8])],
    body: &mut SocketBody<'_, '_>,
    out: &mut SocketResponder<'_, '_>,
    stuck: &TakeOver<'_>,
) -> Outcome {
    let request = pyhost::Request {
        vars: env,
        mode: ctx.mode,
        timeout: ctx.request_timeout.map(|after| Timeout {
            after,
            log: &crate::log::WorkerLog,
            stuck,
        }),
    };
    ctx.board
        .set_busy(ctx.slot, ctx.thread, monotonic_ms().max(1));
    let outcome = pyhost::handle(app, &request, body, out, ctx.log);
    ctx.board.set_busy(ctx.slot, ctx.thread, 0);
    outcome
}

/// The 504 the watchdog sends for a request whose thread is stuck past its request-timeout:
/// pyhost's own 504, whole, in the connection's protocol (FastCGI: STDOUT records and
/// END_REQUEST, so the front end takes it as a complete response).
pub(crate) fn stuck_response(framing: Framing) -> Vec<u8> {
    let body = pyhost::TIMEOUT_BODY;
    let length = body.len().to_string();
    let headers: [(&[u8], &[u8]); 3] = [
        (b"Content-Type", b"text/plain"),
        (b"Content-Length", length.as_bytes()),
        (b"Connection", b"close"),
    ];
    let (protocol, request_id) = match framing {
        Framing::Http => (Protocol::Uwsgi, 0),
        Framing::Cgi => (Protocol::Scgi, 0),
        Framing::FastCgi { request_id } => (Protocol::FastCgi, request_id),
    };
    proto::own_answer(protocol, request_id, b"504 Gateway Timeout", &headers, body)
}

/// pyhost's last resort for a request whose thread did not come back from the interrupt (stuck
/// in C code): answer 504 on its connection if the app had not started the response (else the
/// front end sees it cut), end the connection so the stuck thread can neither write to it nor
/// wait on it, and retire this worker: the supervisor starts a replacement at once, and this
/// process exits once its other requests are done (worker.rs).
struct TakeOver<'a> {
    /// The connection's descriptor: open while the request's thread is inside `handle`, which is
    /// when pyhost calls `stuck` (a `Stream` is not `Sync`, its descriptor is).
    fd: RawFd,
    /// How the 504 goes on the wire.
    framing: Framing,
    head_claim: &'a AtomicBool,
    ctx: &'a Ctx<'a>,
}

impl Stuck for TakeOver<'_> {
    fn stuck(&self) {
        let answered = !self.head_claim.swap(true, Ordering::AcqRel);
        // Logged first: once the client has its answer, the log already says why.
        rwlog!(
            "RW041",
            "request on thread {} is stuck in C code past its request-timeout: {}; this worker accepts no more and exits once its other requests are done",
            self.ctx.thread,
            if answered { "answered 504" } else { "its response is cut" }
        );
        let msg = match self.framing {
            _ if answered => stuck_response(self.framing),
            // A started FastCGI response would end at our EOF as if whole (nginx takes a bare
            // EOF for the end): the record both front ends refuse cuts it (proto::abort_record).
            // Should the stuck thread have stopped inside a record, the record's bytes land in
            // its content and the EOF comes mid-record: cut as well.
            Framing::FastCgi { request_id } => abort_record(request_id).to_vec(),
            // uwsgi and SCGI bodies end at EOF: a reset is the only cut a front end sees (TCP;
            // a unix socket has none, so the EOF below ends the response there).
            Framing::Http | Framing::Cgi => {
                // SAFETY: fd is open (see the field).
                unsafe { Stream::reset_now(self.fd) };
                Vec::new()
            }
        };
        if !msg.is_empty() {
            // Without blocking: the 504 goes before anything else was written, so the send
            // buffer has room for it; the abort record is best effort.
            // SAFETY: fd is open (see the field); msg is a live buffer of msg.len() bytes.
            unsafe {
                libc::send(
                    self.fd,
                    msg.as_ptr().cast(),
                    msg.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
        }
        // Both directions: a thread waiting for request body bytes wakes up with EOF.
        // SAFETY: fd is open (see the field); shutdown does not close it, the owner does.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        // The supervisor's request-timeout backstop must not kill this worker for it now.
        self.ctx.board.set_busy(self.ctx.slot, self.ctx.thread, 0);
        (self.ctx.retire)();
    }
}

/// Ends the response the way the front end can tell complete from aborted: a clean close after
/// a complete one, a reset (and the abort mark left unread) after an aborted one.
fn end_response(
    stream: &Stream,
    inbound: &RefCell<Inbound<'_>>,
    out: &mut SocketResponder<'_, '_>,
    outcome: Outcome,
    abort_mark: bool,
) {
    // Our own front ends (RWSGI_ABORT_MARK=1) send one byte once they have read a head without
    // Content-Length, whose body only EOF can end: left unread, it turns our close into an
    // error for them, over a unix socket as over TCP.
    let marked = abort_mark && out.unframed;
    match outcome {
        Outcome::Complete | Outcome::Failed | Outcome::TimedOut => {
            if out.finish().is_ok() {
                finish_clean(stream, inbound, marked);
            }
        }
        // FastCGI's ABORT_REQUEST is answered with END_REQUEST (spec 5.4).
        Outcome::ClientGone if out.front_end_aborted() => {
            let _ = out.finish();
        }
        // A failed write is not always the front end going away: it can be ours (no room for
        // the body stash, a write that timed out), and the front end must then see the
        // response cut too. When it has gone, the cut costs nothing.
        Outcome::Aborted | Outcome::ClientGone => abort(stream, inbound, out, marked),
    }
}

/// Ends a response the app failed in the middle of, so that the front end cuts it:
///
/// - uwsgi and SCGI end a body at EOF, so a clean close would pass a truncated body off as
///   whole: the connection is reset (over a unix socket, which has no reset, our own front ends'
///   abort mark is left unread, which makes the close an error for them);
/// - FastCGI over TCP: the same reset (nginx takes a bare EOF without END_REQUEST as the end);
/// - FastCGI over a unix socket: a record the front end refuses (`proto::abort_record`).
///
/// SCGI and FastCGI front ends are let finish sending the request first: Apache's proxies
/// that are still writing when the reset comes fail that write and answer 503 instead of
/// passing on what the app sent.
fn abort(
    stream: &Stream,
    inbound: &RefCell<Inbound<'_>>,
    out: &mut SocketResponder<'_, '_>,
    marked: bool,
) {
    if out.framing() != Framing::Http {
        inbound.borrow_mut().discard_rest(0);
    }
    if matches!(out.framing(), Framing::FastCgi { .. }) && stream.is_unix() {
        if out.abort().is_ok() {
            stream.shutdown_write();
        }
        return;
    }
    stream.set_reset_on_close();
    if marked {
        stream.wait_for_unread_byte();
    }
}

/// After a complete response: signal the end (FIN), then take in what the front end still
/// sends of the body (and its abort mark, if one is coming), so that the close does not turn
/// into a reset that could destroy the response in flight. Bounded in time (`body.rs`).
fn finish_clean(stream: &Stream, inbound: &RefCell<Inbound<'_>>, marked: bool) {
    let mut inbound = inbound.borrow_mut();
    if !inbound.pending() && !marked {
        return; // the close itself ends the response
    }
    stream.shutdown_write();
    inbound.discard_rest(u64::from(marked));
}

/// CONTENT_LENGTH: empty means 0 (nginx sends it empty for bodiless requests); digits only.
fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return Some(0);
    }
    if !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// How long ago the front end received the request, from its `RWSGI_REQUEST_START` value
/// (`uwsgi::contract::parse_request_start` says which forms are accepted).
pub(crate) fn queued_for(v: &[u8]) -> Option<Duration> {
    let started = contract::parse_request_start(v)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    now.checked_sub(started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_values() {
        assert_eq!(parse_content_length(b""), Some(0));
        assert_eq!(parse_content_length(b"12"), Some(12));
        assert_eq!(parse_content_length(b"-1"), None);
        assert_eq!(parse_content_length(b"+1"), None);
        assert_eq!(parse_content_length(b"1 "), None);
        assert_eq!(parse_content_length(b"99999999999999999999999"), None);
    }

    #[test]
    fn queue_start_values() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        let two_s_ago = (now - 2_000_000).to_string();
        assert!(queued_for(two_s_ago.as_bytes()).unwrap() >= Duration::from_secs(2));
        assert!(queued_for(format!("t={two_s_ago}").as_bytes()).is_some());
        assert_eq!(queued_for(b"soon"), None);
        let msec = format!("{:.3}", (now - 3_000_000) as f64 / 1e6);
        // Rounded to milliseconds, and f64 seconds-since-epoch keep ~0.2 us of precision.
        let waited = queued_for(msec.as_bytes()).unwrap();
        assert!(
            waited > Duration::from_millis(2990) && waited < Duration::from_secs(4),
            "{waited:?}"
        );
        assert_eq!(queued_for(b"-1.5"), None);
    }
}
