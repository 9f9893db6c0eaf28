//! One front-end connection of an ASGI worker, driven by the worker's asyncio loop: the uwsgi
//! packet is read and parsed (the same code as the WSGI threads, conn.rs), the request goes to
//! the app, the body is read from the socket only when the app's `receive()` asks for it, and
//! the response is written as the app sends it, without blocking: what the socket does not take
//! waits in a queue, and the app's `send()` pauses while that queue holds [`HIGH_WATER`] bytes.
//!
//! Two objects share the connection: the [`ConnHandler`] the loop calls when the socket is
//! ready, and the [`SocketTransport`] the ASGI host calls with the app's messages. Both run on
//! the loop thread; the mutex between them is never contended.
//!
//! The end of a response follows the front-end/worker contract (uwsgi::contract), as conn.rs
//! does for WSGI: a clean close after a complete response (after reading the front end's abort
//! mark when it sends one), a reset after an aborted one with the mark left unread.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyhost::asgi::{BodyRead, FdHandler, Flow, Handle, Io, Kind, Timeout, Transport, Waker, WsOut};
use pyhost::{Head, Outcome};
use uwsgi::{Var, EMPTY_VAR, HEADER_LEN, MAX_VARS_BLOCK};
use websocket::handshake::{check as handshake, Handshake};
use websocket::{encode_frame, Opcode, Session};

use crate::conn::{
    environ, log_refusal, parse_vars, queued_for, stuck_response, too_many_vars, Bad, FrontEnd,
    SMALL_VARS, TOO_MANY_VARS_BODY,
};
use crate::metrics::HttpRequest;
use crate::respond::Framing;
use crate::routing;
use crate::rwlog;
use crate::secret::Secret;
use crate::stream::Stream;

/// Response bytes queued for the socket before the app's `send()` pauses.
const HIGH_WATER: usize = 256 * 1024;
/// Most body bytes one `http.request` message carries.
const BODY_CHUNK: usize = 64 * 1024;
/// Largest WebSocket message a client may send (reassembled); bigger closes with 1009.
const MAX_WS_MESSAGE: usize = 16 << 20;
/// Unread request body a complete response still reads and throws away before closing, so the
/// close is not a reset that could destroy the response in flight (as conn.rs, DRAIN_LIMIT).
const DRAIN_LIMIT: u64 = 16 << 20;

/// What every connection of the worker shares.
pub struct Shared {
    /// The apps' mount prefixes, in configuration order (routing picks one per request).
    pub mounts: Vec<Option<Vec<u8>>>,
    pub queue_timeout: Option<Duration>,
    /// The group's secret: packets without it are closed unanswered (`secret.rs`).
    pub secret: Option<Secret>,
    /// Connections open: a stopping worker waits for them to end.
    pub live: AtomicUsize,
    /// The group's request-timeout (pyhost's asgi::Timeout: the task cancelled at it).
    pub request_timeout: Option<Duration>,
    /// A request's coroutine blocked the loop past its timeout (`take_over`): the worker
    /// retires.
    pub stuck: AtomicBool,
    /// Standalone with `--metrics` (this worker answers HTTP): each app's metrics slot, in
    /// configuration order; empty when the front end counts the requests.
    pub metrics: Vec<Option<::metrics::AppId>>,
    /// The group's metrics slot (its request timeouts), when metrics are kept.
    pub metrics_group: Option<::metrics::GroupId>,
}

enum Phase {
    /// Reading the uwsgi packet head.
    Head,
    /// The app has the request.
    Running,
    /// The response is out; waiting for the front end's abort mark or the end of the unread
    /// body before the close.
    Closing,
}

enum Out {
    Bytes(Vec<u8>, usize),
    File { file: File, offset: u64, left: u64 },
}

struct ConnIo {
    stream: Option<Stream>,
    fd: RawFd,
    phase: Phase,
    /// The packet head as it arrives.
    buf: Vec<u8>,
    /// Body bytes that came with the head, not yet given to the app.
    prefix: Vec<u8>,
    prefix_pos: usize,
    /// Body bytes still on the socket.
    body_left: u64,
    /// The app waits in `receive()` for the next chunk (read it when the socket has it).
    body_wanted: bool,
    handle: Option<Handle>,
    waker: Option<Waker>,
    /// The encoded response head, sent with the first body bytes.
    head: Option<Vec<u8>>,
    out: VecDeque<Out>,
    out_bytes: usize,
    paused: bool,
    /// The head had no Content-Length: the body ends at our close.
    unframed: bool,
    /// The front end sends the abort mark (RWSGI_ABORT_MARK=1).
    abort_mark: bool,
    mark_seen: bool,
    eof: bool,
    outcome: Option<Outcome>,
    /// A WebSocket handshake: the `Sec-WebSocket-Accept` value for the app's 101.
    ws_accept: Option<String>,
    /// After the 101: the WebSocket session (frames, close state).
    ws: Option<Session>,
    /// Response bytes went out on the socket (the head included).
    wrote: bool,
    /// Counted in `Shared::live` (until closed or taken over).
    counted: bool,
    shared: Arc<Shared>,
    /// The request as a standalone worker counts it (`Shared::metrics`), ended at the close.
    http: Option<HttpRequest>,
    accepted: Instant,
    /// For the metrics: the status sent, the body's declared length, body bytes queued.
    status: u16,
    length: u64,
    sent: u64,
}

fn lock(m: &Mutex<ConnIo>) -> MutexGuard<'_, ConnIo> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `recv` without waiting. WouldBlock when nothing is there.
fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for buf.len() bytes; fd is open while the connection lives.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `sendmsg` of `bufs` without waiting (and without SIGPIPE).
fn send(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    loop {
        // SAFETY: an all-zero msghdr is valid; iov points to `bufs` (IoSlice has iovec's layout
        // on unix), which outlives the call.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = bufs.len().min(64) as _;
            libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl ConnIo {
    fn new(stream: Stream, shared: Arc<Shared>) -> ConnIo {
        ConnIo {
            fd: stream.as_raw_fd(),
            stream: Some(stream),
            phase: Phase::Head,
            buf: Vec::with_capacity(4096),
            prefix: Vec::new(),
            prefix_pos: 0,
            body_left: 0,
            body_wanted: false,
            handle: None,
            waker: None,
            head: None,
            out: VecDeque::new(),
            out_bytes: 0,
            paused: false,
            unframed: false,
            abort_mark: false,
            mark_seen: false,
            eof: false,
            outcome: None,
            ws_accept: None,
            ws: None,
            wrote: false,
            counted: true,
            shared,
            http: None,
            accepted: Instant::now(),
            status: 0,
            length: 0,
            sent: 0,
        }
    }

    /// One fewer live connection, once.
    fn uncount(&mut self) {
        if std::mem::replace(&mut self.counted, false) {
            self.shared.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn closed(&self) -> bool {
        self.stream.is_none()
    }

    /// Should the loop tell us when the socket is readable?
    fn want_read(&self) -> bool {
        if let Some(ws) = &self.ws {
            let backlogged = self.handle.as_ref().is_some_and(|h| h.ws_backlogged());
            return !ws.done_reading && !backlogged;
        }
        match self.phase {
            Phase::Head => true,
            Phase::Running if self.body_left > 0 => self.body_wanted,
            // No body left: watch for the front end going away (EOF) and for its abort mark.
            Phase::Running => !self.eof,
            Phase::Closing => !self.eof,
        }
    }

    /// Registers what we wait for with the loop, and closes once everything is done.
    fn sync(&mut self) {
        if self.closed() {
            return;
        }
        if self.outcome.is_some() && self.out.is_empty() && self.head.is_none() {
            self.end();
            if self.closed() {
                return;
            }
        }
        if let Some(w) = &self.waker {
            w.watch_read(self.want_read());
            w.watch_write(!self.out.is_empty());
        }
    }

    /// Closes the connection: no more callbacks, the socket closed, one fewer live connection.
    fn close(&mut self) {
        if let Some(w) = self.waker.take() {
            w.close();
        }
        if self.stream.take().is_some() {
            self.uncount();
        }
        self.count_end();
    }

    /// The request ends for the metrics (standalone only; once).
    fn count_end(&mut self) {
        if let Some(http) = self.http.take() {
            let unread = self.body_left + (self.prefix.len() - self.prefix_pos) as u64;
            let gone = matches!(self.outcome, None | Some(Outcome::ClientGone));
            http.finish(
                self.status,
                self.length.saturating_sub(unread),
                self.sent,
                gone,
            );
        }
    }

    /// The front end is gone: tell the app (if it still runs) and close.
    fn gone(&mut self) {
        self.out.clear();
        self.out_bytes = 0;
        if self.outcome.is_none() {
            if let Some(h) = &self.handle {
                h.disconnect();
            }
        }
        self.close();
    }

    /// The response is all written: end it the way the contract says (module docs).
    fn end(&mut self) {
        let marked = self.abort_mark && self.unframed;
        match self.outcome {
            Some(Outcome::Complete | Outcome::Failed | Outcome::TimedOut) => {
                let drain = self.body_left > 0 && self.body_left <= DRAIN_LIMIT;
                if (marked && !self.mark_seen || drain) && !self.eof {
                    if !matches!(self.phase, Phase::Closing) {
                        if let Some(s) = &self.stream {
                            s.shutdown_write();
                        }
                        self.phase = Phase::Closing;
                        self.body_wanted = true;
                    }
                    return;
                }
                self.close();
            }
            Some(Outcome::Aborted) => {
                if let Some(s) = &self.stream {
                    s.set_reset_on_close();
                }
                // Leave the mark unread: closing with unread data is the error the front end
                // sees on a unix socket. Wait until it is there.
                if marked && !self.mark_arrived() && !self.eof {
                    self.phase = Phase::Closing;
                    return;
                }
                self.close();
            }
            Some(Outcome::ClientGone) | None => self.close(),
        }
    }

    fn mark_arrived(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: peeks one byte into a live local; fd is open.
        let n = unsafe {
            libc::recv(
                self.fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n == 1
    }

    /// Writes what the socket takes now.
    fn flush(&mut self) {
        while let Some(front) = self.out.front_mut() {
            let result = match front {
                Out::Bytes(data, pos) => send(self.fd, &[IoSlice::new(&data[*pos..])]).map(|n| {
                    *pos += n;
                    (n, *pos == data.len())
                }),
                Out::File { file, offset, left } => sendfile(self.fd, file, offset, left),
            };
            match result {
                Ok((n, done)) => {
                    self.wrote |= n > 0;
                    self.out_bytes = self.out_bytes.saturating_sub(n);
                    if done {
                        self.out.pop_front();
                    } else if n == 0 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return self.gone(),
            }
        }
        if self.paused && self.out_bytes < HIGH_WATER / 2 {
            self.paused = false;
            if let Some(h) = &self.handle {
                h.resume();
            }
        }
    }

    /// Queues response bytes (after the head if it is still pending) and writes what it can.
    fn queue(&mut self, item: Option<Out>) -> io::Result<Flow> {
        if self.closed() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if let Some(head) = self.head.take() {
            self.out_bytes += head.len();
            self.out.push_back(Out::Bytes(head, 0));
        }
        if let Some(item) = item {
            self.out_bytes += match &item {
                Out::Bytes(d, _) => d.len(),
                Out::File { left, .. } => *left as usize,
            };
            self.out.push_back(item);
        }
        self.flush();
        if self.closed() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.sync();
        if self.out_bytes >= HIGH_WATER {
            self.paused = true;
            return Ok(Flow::Paused);
        }
        Ok(Flow::Ready)
    }
}

/// sendfile(2) without waiting: (bytes sent, region finished).
fn sendfile(fd: RawFd, file: &File, offset: &mut u64, left: &mut u64) -> io::Result<(usize, bool)> {
    let mut off = libc::off_t::try_from(*offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
    let chunk = usize::try_from(*left).unwrap_or(usize::MAX).min(1 << 30);
    // SAFETY: both fds are open; off is a valid off_t the kernel advances. The socket is
    // non-blocking (set at accept), so this returns EAGAIN instead of waiting.
    let n = unsafe { libc::sendfile(fd, file.as_raw_fd(), &mut off, chunk) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as u64;
    *offset += n;
    *left -= n;
    // A file shorter than announced ends the region too.
    Ok((n as usize, *left == 0 || n == 0))
}

/// The loop's side: readability (head, body, EOF, the abort mark) and writability.
pub struct ConnHandler {
    io: Arc<Mutex<ConnIo>>,
}

impl ConnHandler {
    pub fn new(stream: Stream, shared: Arc<Shared>) -> ConnHandler {
        shared.live.fetch_add(1, Ordering::Relaxed);
        ConnHandler {
            io: Arc::new(Mutex::new(ConnIo::new(stream, shared))),
        }
    }
}

impl FdHandler for ConnHandler {
    fn ready(&mut self, io: &mut Io<'_>, readable: bool, writable: bool) {
        let mut c = lock(&self.io);
        if c.closed() {
            io.close();
            return;
        }
        if c.waker.is_none() {
            c.waker = Some(io.waker());
        }
        if readable {
            match c.phase {
                Phase::Head => {
                    if let Err(bad) = read_head(&mut c, io, &self.io) {
                        if let Some(bad) = bad {
                            log_refusal(&bad);
                        }
                        c.close();
                        return;
                    }
                }
                Phase::Running | Phase::Closing => on_readable(&mut c),
            }
        }
        if writable && !c.closed() {
            c.flush();
        }
        c.sync();
    }
}

/// Reads the packet head; once whole, submits the request. Err(None): the front end closed
/// before sending anything (a health check); Err(Some): a malformed packet.
fn read_head(
    c: &mut ConnIo,
    io: &Io<'_>,
    shared_io: &Arc<Mutex<ConnIo>>,
) -> Result<(), Option<Bad>> {
    loop {
        let need = if c.buf.len() < HEADER_LEN {
            HEADER_LEN
        } else {
            HEADER_LEN + usize::from(u16::from_le_bytes([c.buf[1], c.buf[2]]))
        };
        if c.buf.len() >= need {
            return start_request(c, io, shared_io).map_err(Some);
        }
        let start = c.buf.len();
        let want = (need - start).clamp(16 * 1024, HEADER_LEN + MAX_VARS_BLOCK + BODY_CHUNK);
        c.buf.resize(start + want, 0);
        let result = recv(c.fd, &mut c.buf[start..]);
        match result {
            Ok(0) => {
                c.buf.truncate(start);
                return Err(if start == 0 {
                    None
                } else {
                    Some(Bad::Eof(start))
                });
            }
            Ok(n) => c.buf.truncate(start + n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.buf.truncate(start);
                return Ok(());
            }
            Err(e) => {
                c.buf.truncate(start);
                return Err(Some(Bad::Io(e)));
            }
        }
    }
}

/// The whole head is in: parse, route, and hand the request to the app.
fn start_request(c: &mut ConnIo, io: &Io<'_>, shared_io: &Arc<Mutex<ConnIo>>) -> Result<(), Bad> {
    let packet = std::mem::take(&mut c.buf);
    let mut small: [Var<'_>; SMALL_VARS] = [EMPTY_VAR; SMALL_VARS];
    let mut large = Vec::new();
    let (vars, consumed) = match parse_vars(&packet, &mut small, &mut large) {
        Err(Bad::TooManyVars) => {
            // 431 as the WSGI threads answer (conn.rs refuse_too_many_vars); the body, if
            // any, is read away after the answer (`end`).
            let (consumed, length) = too_many_vars(&packet, c.shared.secret.as_ref())?;
            let rest = &packet[consumed..];
            let with_head = rest
                .len()
                .min(usize::try_from(length).unwrap_or(usize::MAX));
            c.body_left = length - with_head as u64;
            c.phase = Phase::Running;
            answer_plain(c, 431);
            return Ok(());
        }
        parsed => parsed?,
    };
    let front = FrontEnd::read(vars)?;
    front.check_origin(c.shared.secret.as_ref())?;
    let mounts: Vec<Option<&[u8]>> = c.shared.mounts.iter().map(|m| m.as_deref()).collect();
    let mut decoded = Vec::new();
    let routed = routing::resolve(&front.path, &mounts, &mut decoded);
    let env: Vec<(Vec<u8>, Vec<u8>)> = environ(vars, &front, &routed)
        .into_iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    let length = front.content_length.unwrap_or(0);
    if let Some(&app) = c.shared.metrics.get(routed.app) {
        c.http = Some(HttpRequest::start(true, app, c.accepted));
        c.length = length;
    }
    let rest = &packet[consumed..];
    let with_head = rest
        .len()
        .min(usize::try_from(length).unwrap_or(usize::MAX));
    c.prefix = rest[..with_head].to_vec();
    c.body_left = length - with_head as u64;
    c.abort_mark = front.abort_mark;
    c.phase = Phase::Running;
    let waited = front.request_start.and_then(queued_for);
    if let (Some(limit), Some(waited)) = (c.shared.queue_timeout, waited) {
        if waited > limit {
            rwlog!(
                "RW035",
                "request queued for {:.3}s > queue-timeout {:.3}s: answering 504",
                waited.as_secs_f64(),
                limit.as_secs_f64()
            );
            answer_plain(c, 504);
            return Ok(());
        }
    }
    let kind = match websocket_handshake(&env) {
        Handshake::No => Kind::Http,
        Handshake::Yes(accept) => {
            // After a 101 every byte is the WebSocket's: no abort mark.
            c.abort_mark = false;
            c.ws_accept = Some(accept);
            Kind::WebSocket
        }
        Handshake::Bad(status) => {
            answer_plain(c, status);
            return Ok(());
        }
    };
    let handle = io.handle();
    c.handle = Some(handle.clone());
    let transport = SocketTransport {
        io: Arc::clone(shared_io),
    };
    let timeout = c.shared.request_timeout.map(|after| {
        let io = Arc::clone(shared_io);
        Timeout {
            after,
            take_over: Box::new(move || take_over(&io)),
        }
    });
    io.submit(
        &handle,
        routed.app,
        kind,
        Box::new(env),
        Box::new(transport),
        timeout,
    );
    Ok(())
}

/// pyhost's step 2 of request-timeout (its asgi/deadline.rs), on its monitor thread: a
/// coroutine blocks the loop past the request's timeout, so this request is answered without
/// the loop: 504 if nothing of the response went out yet (else the front end sees it cut), the
/// socket shut down both ways (its descriptor stays open: the loop still watches it, and closes
/// it when it comes back), and the worker retires (asgi/mod.rs): the supervisor starts a
/// replacement at once, as for a WSGI thread stuck in C code (conn.rs `TakeOver`).
fn take_over(io: &Mutex<ConnIo>) {
    let mut c = lock(io);
    c.shared.stuck.store(true, Ordering::Release);
    if c.closed() || c.outcome.is_some() && c.out.is_empty() && c.head.is_none() {
        return;
    }
    count_timeout(&c.shared);
    let answered = !c.wrote;
    rwlog!(
        "RW043",
        "a request's coroutine blocks the asyncio loop past its request-timeout: {}; this worker \
         accepts no more and exits once its other requests are done",
        if answered {
            "answered 504"
        } else {
            "its response is cut"
        }
    );
    if answered {
        let msg = stuck_response(Framing::Http);
        // Without blocking: nothing was written yet, so the send buffer has room for it.
        let _ = send(c.fd, &[IoSlice::new(&msg)]);
        c.status = 504;
        c.sent = pyhost::TIMEOUT_BODY.len() as u64;
    }
    c.out.clear();
    c.out_bytes = 0;
    c.head = None;
    c.outcome = Some(Outcome::TimedOut);
    // Counted now: the loop may never come back to close the connection.
    c.count_end();
    // SAFETY: plain syscall on the connection's open descriptor (closed only by `close`, on
    // the loop thread, under this same lock).
    unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
    // A retiring worker waits for its live connections: this one is done for the client.
    c.uncount();
}

/// One request of the group stopped by its request-timeout (either step), for the metrics.
fn count_timeout(shared: &Shared) {
    if let Some(g) = shared.metrics_group {
        ::metrics::request_timed_out(g);
    }
}

/// A plain-text answer the app never sees: 504 for a request that queued too long and 431 for
/// one with too many vars (conn.rs does the same), 400/426 for a malformed WebSocket handshake.
fn answer_plain(c: &mut ConnIo, status: u16) {
    let (line, msg): (&[u8], &[u8]) = match status {
        504 => (
            b"504 Gateway Timeout",
            b"Request queued too long in the server.\n",
        ),
        431 => (b"431 Request Header Fields Too Large", TOO_MANY_VARS_BODY),
        426 => (
            b"426 Upgrade Required",
            b"WebSocket version 13 is required.\n",
        ),
        _ => (b"400 Bad Request", b"Malformed WebSocket handshake.\n"),
    };
    let mut head = Vec::new();
    let length = msg.len().to_string();
    let mut headers = vec![
        (&b"Content-Type"[..], &b"text/plain"[..]),
        (b"Content-Length", length.as_bytes()),
    ];
    if status == 426 {
        headers.push((b"Sec-WebSocket-Version", b"13"));
    }
    if uwsgi::encode_response_head(line, headers, &mut head).is_ok() {
        c.head = Some(head);
        c.status = status;
        c.sent = msg.len() as u64;
        let _ = c.queue(Some(Out::Bytes(msg.to_vec(), 0)));
    }
    c.outcome = Some(Outcome::Complete);
}

/// Is the request (its CGI variables, as the front end sent them) a WebSocket handshake?
fn websocket_handshake(env: &[(Vec<u8>, Vec<u8>)]) -> Handshake {
    let var = |name: &[u8]| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    };
    handshake(
        var(b"REQUEST_METHOD") == Some(b"GET"),
        var(b"SERVER_PROTOCOL") == Some(b"HTTP/1.1"),
        var(b"HTTP_UPGRADE"),
        var(b"HTTP_CONNECTION"),
        var(b"HTTP_SEC_WEBSOCKET_VERSION"),
        var(b"HTTP_SEC_WEBSOCKET_KEY"),
    )
}

/// The client's frames after the 101 (through the front end's upgrade tunnel).
fn ws_readable(c: &mut ConnIo) {
    let mut buf = [0u8; 16 * 1024];
    let n = match recv(c.fd, &mut buf) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
        Err(_) => 0,
    };
    let Some(ws) = c.ws.as_mut() else { return };
    if n == 0 {
        c.eof = true;
        if let (Some(d), Some(h)) = (ws.eof(), &c.handle) {
            h.ws_deliver(d);
        }
        return;
    }
    let reaction = ws.received(&buf[..n]);
    if let Some(h) = &c.handle {
        for d in reaction.deliveries {
            h.ws_deliver(d);
        }
    }
    if !reaction.replies.is_empty() {
        let _ = c.queue(Some(Out::Bytes(reaction.replies, 0)));
    }
}

/// The socket is readable while the app runs or the response ends.
fn on_readable(c: &mut ConnIo) {
    if c.ws.is_some() {
        return ws_readable(c);
    }
    if matches!(c.phase, Phase::Closing) && c.outcome == Some(Outcome::Aborted) {
        return; // the abort mark arrived: it stays unread (`end` closes now)
    }
    if c.body_wanted && c.body_left > 0 {
        let want = usize::try_from(c.body_left)
            .unwrap_or(usize::MAX)
            .min(BODY_CHUNK);
        let mut chunk = vec![0u8; want];
        match recv(c.fd, &mut chunk) {
            Ok(0) => {
                c.eof = true;
                c.gone();
            }
            Ok(n) => {
                chunk.truncate(n);
                c.body_left -= n as u64;
                if matches!(c.phase, Phase::Closing) {
                    return; // draining an unread body after the response
                }
                c.body_wanted = false;
                if let Some(h) = &c.handle {
                    h.body(chunk, c.body_left > 0);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => c.gone(),
        }
        return;
    }
    let mut scratch = [0u8; 64];
    match recv(c.fd, &mut scratch) {
        Ok(0) => {
            c.eof = true;
            if matches!(c.phase, Phase::Closing) {
                c.close();
            } else {
                c.gone();
            }
        }
        // The abort mark (or anything a front end sends after its request: ignored).
        Ok(_) => c.mark_seen = true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(_) => c.gone(),
    }
}

/// The host's side: the app's response, and its requests for body.
pub struct SocketTransport {
    io: Arc<Mutex<ConnIo>>,
}

impl Transport for SocketTransport {
    fn read_body(&mut self) -> BodyRead {
        let mut c = lock(&self.io);
        if c.prefix_pos < c.prefix.len() {
            let end = (c.prefix_pos + BODY_CHUNK).min(c.prefix.len());
            let chunk = c.prefix[c.prefix_pos..end].to_vec();
            c.prefix_pos = end;
            if c.prefix_pos == c.prefix.len() {
                c.prefix = Vec::new();
                c.prefix_pos = 0;
            }
            let more = c.prefix_pos < c.prefix.len() || c.body_left > 0;
            return BodyRead::Data { chunk, more };
        }
        if c.body_left == 0 || c.closed() {
            return BodyRead::Data {
                chunk: Vec::new(),
                more: false,
            };
        }
        c.body_wanted = true;
        c.sync();
        BodyRead::Pending
    }

    fn head(&mut self, head: &Head<'_>) -> io::Result<()> {
        let mut c = lock(&self.io);
        if c.closed() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let mut bytes = Vec::with_capacity(256);
        let mut extra: Vec<(&[u8], &[u8])> = Vec::new();
        let accept = if head.status == 101 {
            c.ws_accept.take()
        } else {
            None
        };
        if let Some(accept) = &accept {
            extra.push((b"Upgrade", b"websocket"));
            extra.push((b"Connection", b"Upgrade"));
            extra.push((b"Sec-WebSocket-Accept", accept.as_bytes()));
        }
        let headers = head
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .chain(extra);
        uwsgi::encode_response_head(head.status_line, headers, &mut bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        c.status = head.status;
        if accept.is_some() {
            // The 101 goes out now, and the connection is a WebSocket from here on.
            c.head = Some(bytes);
            c.ws = Some(Session::new(MAX_WS_MESSAGE));
            c.queue(None)?;
            return Ok(());
        }
        c.unframed = !head
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(b"content-length"));
        c.head = Some(bytes);
        Ok(())
    }

    fn ws_send(&mut self, msg: &WsOut<'_>) -> io::Result<Flow> {
        let mut c = lock(&self.io);
        if c.ws.as_ref().is_none_or(|w| w.close_sent) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let mut frame = Vec::new();
        match msg {
            WsOut::Text(t) => encode_frame(Opcode::Text, t.as_bytes(), &mut frame),
            WsOut::Binary(b) => encode_frame(Opcode::Binary, b, &mut frame),
        }
        c.queue(Some(Out::Bytes(frame, 0)))
    }

    fn ws_close(&mut self, code: u16, reason: &str) {
        let mut c = lock(&self.io);
        if let Some(frame) = c.ws.as_mut().and_then(|w| w.app_close(code, reason)) {
            let _ = c.queue(Some(Out::Bytes(frame, 0)));
        }
    }

    fn ws_resume_reading(&mut self) {
        lock(&self.io).sync();
    }

    fn body(&mut self, chunk: &[u8]) -> io::Result<Flow> {
        let mut c = lock(&self.io);
        c.sent += chunk.len() as u64;
        c.queue(Some(Out::Bytes(chunk.to_vec(), 0)))
    }

    fn file(&mut self, file: &File, offset: u64, len: u64) -> Option<io::Result<Flow>> {
        let file = file.try_clone().ok()?;
        let mut c = lock(&self.io);
        c.sent += len;
        Some(c.queue(Some(Out::File {
            file,
            offset,
            left: len,
        })))
    }

    fn timed_out(&mut self) {
        count_timeout(&lock(&self.io).shared);
    }

    fn finish(&mut self, outcome: Outcome) {
        let mut c = lock(&self.io);
        c.outcome = Some(outcome);
        if c.closed() {
            return;
        }
        if outcome == Outcome::ClientGone {
            c.close();
            return;
        }
        // A head without a body (an empty response) goes out now.
        let _ = c.queue(None);
        c.sync();
    }
}
