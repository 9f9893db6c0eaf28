//! One front-end connection: read the uwsgi packet, run the app through pyhost, send the response,
//! close. The front ends (nginx `uwsgi_pass`, Apache `mod_proxy_uwsgi`, our modules) send one
//! request per connection and read the response until EOF, so the end of the body is the close.
//!
//! A malformed packet (parse error, modifier1 other than 0, EOF or timeout inside the head, bad
//! CONTENT_LENGTH) closes that connection only: the app is never called and nothing is answered.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pyhost::{App, Body, ErrorLog, Head, Mode, Outcome, Responder};
use uwsgi::{Var, EMPTY_VAR, HEADER_LEN, MAX_VARS_BLOCK};

use crate::listener::Stream;
use crate::rwlog;
use crate::scoreboard::Scoreboard;
use crate::signals::monotonic_ms;

/// Vars one packet may carry (uWSGI's default is 64; a browser request through nginx has ~30).
const MAX_VARS: usize = 512;
/// Vars parsed into stack storage before falling back to the heap.
const SMALL_VARS: usize = 96;

/// Body bytes read and thrown away after the response when the app did not read them: closing a
/// socket with unread input makes Linux send a reset, which can destroy the response still in
/// flight to the front end. Beyond this, we close anyway.
const DRAIN_LIMIT: u64 = 16 << 20;

/// One app of the group and the URL prefix it is mounted at (`None` = the default app).
pub struct MountedApp<'a> {
    pub mount: Option<&'a [u8]>,
    pub app: &'a App,
}

/// What a worker thread needs to serve connections.
pub struct Ctx<'a> {
    /// The group's apps (at least one), in configuration order.
    pub apps: &'a [MountedApp<'a>],
    pub mode: Mode,
    pub socket_timeout: Duration,
    pub queue_timeout: Option<Duration>,
    pub log: &'a dyn ErrorLog,
    pub board: &'a Scoreboard,
    pub slot: usize,
    pub thread: usize,
}

/// Per-thread buffers, reused from one connection to the next.
pub struct Scratch {
    /// Packet head and the first body bytes.
    buf: Vec<u8>,
    /// The encoded response head.
    head: Vec<u8>,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            buf: vec![0; 8192],
            head: Vec::with_capacity(512),
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a packet was refused.
#[derive(Debug)]
enum Bad {
    Eof(usize),
    Timeout(usize),
    Io(io::Error),
    Parse(uwsgi::Error),
    Modifier(u8, u8),
    ContentLength,
    NoApp,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Eof(n) => write!(f, "connection closed after {n} bytes of the packet head"),
            Bad::Timeout(n) => write!(f, "timed out reading the packet head ({n} bytes so far)"),
            Bad::Io(e) => write!(f, "reading the packet head: {e}"),
            Bad::Parse(e) => write!(f, "malformed uwsgi packet: {e}"),
            Bad::Modifier(m1, m2) => {
                write!(f, "unsupported uwsgi modifiers {m1}/{m2} (only 0 = WSGI)")
            }
            Bad::ContentLength => f.write_str("invalid or conflicting CONTENT_LENGTH"),
            Bad::NoApp => f.write_str("no application configured"),
        }
    }
}

/// Serves one connection to the end and closes it (by dropping `stream`).
pub fn serve(stream: Stream, ctx: &Ctx<'_>, scratch: &mut Scratch) {
    stream.set_timeouts(ctx.socket_timeout);
    let filled = match read_packet(&stream, &mut scratch.buf) {
        Ok(Some(n)) => n,
        Ok(None) => return, // connected and closed without a byte: a health check
        Err(bad) => {
            rwlog!("RW030", "closing connection: {bad}");
            return;
        }
    };
    let Scratch { buf, head } = scratch;
    if let Err(bad) = run_request(&stream, &buf[..filled], ctx, head) {
        rwlog!("RW030", "closing connection: {bad}");
    }
}

/// Reads until `buf` holds the whole packet head (4 bytes + vars block); returns the bytes read,
/// which may include the start of the body. `None`: EOF before the first byte.
fn read_packet(mut stream: &Stream, buf: &mut Vec<u8>) -> Result<Option<usize>, Bad> {
    let mut filled = 0;
    loop {
        let need = if filled < HEADER_LEN {
            HEADER_LEN
        } else {
            HEADER_LEN + usize::from(u16::from_le_bytes([buf[1], buf[2]]))
        };
        if filled >= need {
            return Ok(Some(filled));
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
            Err(e) if is_timeout(&e) => return Err(Bad::Timeout(filled)),
            Err(e) => return Err(Bad::Io(e)),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Parses the packet in `packet`, runs the app and sends the response.
fn run_request(
    stream: &Stream,
    packet: &[u8],
    ctx: &Ctx<'_>,
    head_buf: &mut Vec<u8>,
) -> Result<(), Bad> {
    // Room for a typical request on the stack; a packet with more vars is parsed again into
    // heap storage of the full limit.
    let mut small: [Var<'_>; SMALL_VARS] = [EMPTY_VAR; SMALL_VARS];
    let mut large: Vec<Var<'_>>;
    let mut req = uwsgi::Request::new(&mut small);
    let mut parsed = req.parse(packet);
    if parsed == Err(uwsgi::Error::TooManyVars) {
        large = vec![EMPTY_VAR; MAX_VARS];
        req = uwsgi::Request::new(&mut large);
        parsed = req.parse(packet);
    }
    let consumed = match parsed.map_err(Bad::Parse)? {
        uwsgi::Status::Complete(n) => n,
        // read_packet already holds the whole declared block, so this cannot be short.
        uwsgi::Status::Partial => return Err(Bad::Parse(uwsgi::Error::Truncated)),
    };
    if req.modifier1 != 0 {
        return Err(Bad::Modifier(req.modifier1, req.modifier2));
    }
    let vars: &[Var<'_>] = req.vars;

    // First pass: the vars this layer interprets.
    let mut front_script_name = None;
    let mut path_info = None;
    let mut query_string = None;
    let mut request_uri = None;
    let mut content_length: Option<u64> = None;
    let mut request_start = None;
    let mut abort_mark = false;
    // UWSGI_SCHEME is the one UWSGI_* var that loads no code: operators set it (`uwsgi_param
    // UWSGI_SCHEME https;`, `SetEnv UWSGI_SCHEME https`) to say the client used TLS. It wins over
    // HTTPS/REQUEST_SCHEME, as in uWSGI.
    let mut scheme: Option<&[u8]> = None;
    for v in vars {
        match v.key {
            b"SCRIPT_NAME" => front_script_name = Some(v.value),
            b"PATH_INFO" => path_info = Some(v.value),
            b"QUERY_STRING" => query_string = Some(v.value),
            b"REQUEST_URI" => request_uri = Some(v.value),
            b"RWSGI_REQUEST_START" => request_start = Some(v.value),
            b"RWSGI_ABORT_MARK" => abort_mark = v.value == b"1",
            b"UWSGI_SCHEME" if matches!(v.value, b"http" | b"https") => scheme = Some(v.value),
            b"CONTENT_LENGTH" => {
                let n = parse_content_length(v.value).ok_or(Bad::ContentLength)?;
                if content_length.is_some_and(|prev| prev != n) {
                    return Err(Bad::ContentLength);
                }
                content_length = Some(n);
            }
            _ => {}
        }
    }
    // nginx's stock uwsgi_params sends PATH_INFO; other front ends may send only REQUEST_URI.
    let (uri_path, uri_query) = request_uri.map(split_request_uri).unwrap_or((b"", None));
    let decoded;
    let path_info_given = path_info.is_some();
    let path_info = match path_info {
        Some(p) => p,
        None => {
            decoded = percent_decode(uri_path);
            &decoded[..]
        }
    };
    let query_string = query_string.or(uri_query).unwrap_or(b"");
    let split = path_info_given && already_split(front_script_name, uri_path, path_info);
    let mounts: Vec<Option<&[u8]>> = ctx.apps.iter().map(|a| a.mount).collect();
    let (app_index, script_name, path_info) = route(front_script_name, split, &mounts, path_info);
    let Some(app) = ctx.apps.get(app_index) else {
        return Err(Bad::NoApp);
    };

    // Second pass: environ as pyhost gets it. UWSGI_* (uWSGI's code-loading vars) never pass.
    let mut env: Vec<(&[u8], &[u8])> = Vec::with_capacity(vars.len() + 5);
    for v in vars {
        let k = v.key;
        if k.len() >= 6 && k[..6].eq_ignore_ascii_case(b"UWSGI_") {
            continue;
        }
        match k {
            b"SCRIPT_NAME"
            | b"PATH_INFO"
            | b"QUERY_STRING"
            | b"RWSGI_REQUEST_START"
            | b"RWSGI_ABORT_MARK" => {}
            b"HTTPS" | b"REQUEST_SCHEME" if scheme.is_some() => {}
            _ => env.push((k, v.value)),
        }
    }
    if let Some(scheme) = scheme {
        env.push((b"REQUEST_SCHEME", scheme));
        if scheme == b"https" {
            env.push((b"HTTPS", b"on"));
        }
    }
    env.push((b"SCRIPT_NAME", script_name));
    env.push((b"PATH_INFO", path_info));
    env.push((b"QUERY_STRING", query_string));

    let body_len = content_length.unwrap_or(0);
    let mut body = SocketBody {
        stream,
        prefix: &packet[consumed..],
        remaining: body_len,
    };
    let mut out = SocketResponder {
        stream,
        head: head_buf,
        head_pending: false,
        unframed: false,
    };
    out.head.clear();

    if let Some(limit) = ctx.queue_timeout {
        if let Some(waited) = request_start.and_then(queued_for).filter(|w| *w > limit) {
            rwlog!(
                "RW035",
                "request queued for {:.3}s > queue-timeout {:.3}s: answering 504",
                waited.as_secs_f64(),
                limit.as_secs_f64()
            );
            let msg = b"Request queued too long in the server.\n";
            let len = msg.len().to_string();
            let head = [
                (b"Content-Type".to_vec(), b"text/plain".to_vec()),
                (b"Content-Length".to_vec(), len.into_bytes()),
            ];
            let head = Head {
                status: 504,
                status_line: b"504 Gateway Timeout",
                headers: &head,
            };
            if out.start(&head).and_then(|_| out.write(msg)).is_ok() {
                finish_clean(stream, &mut body, false);
            }
            return Ok(());
        }
    }

    let request = pyhost::Request {
        vars: &env,
        mode: ctx.mode,
    };
    ctx.board
        .set_busy(ctx.slot, ctx.thread, monotonic_ms().max(1));
    let outcome = pyhost::handle(app.app, &request, &mut body, &mut out, ctx.log);
    ctx.board.set_busy(ctx.slot, ctx.thread, 0);
    // Our own front ends (RWSGI_ABORT_MARK=1) send one byte once they have read a head without
    // Content-Length, whose body only EOF can end: left unread, it turns our close into an
    // error for them, over a unix socket as over TCP.
    let marked = abort_mark && out.unframed;
    match outcome {
        Outcome::Complete | Outcome::Failed => {
            if out.flush_head().is_ok() {
                finish_clean(stream, &mut body, marked);
            }
        }
        Outcome::ClientGone => {}
        // uwsgi ends a body at EOF, so a clean close would pass a truncated body off as whole.
        Outcome::Aborted => {
            stream.set_reset_on_close();
            if marked {
                stream.wait_for_unread_byte();
            }
        }
    }
    Ok(())
}

/// After a complete response: signal the end (FIN), then consume the unread body (and the
/// front end's abort mark, if one is coming) so that the close does not turn into a reset that
/// could destroy the response in flight.
fn finish_clean(stream: &Stream, body: &mut SocketBody<'_>, marked: bool) {
    if (body.remaining == 0 && !marked) || body.remaining > DRAIN_LIMIT {
        return; // the close itself ends the response
    }
    stream.shutdown_write();
    let mut sink = [0u8; 16 * 1024];
    while let Ok(n) = body.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    if marked {
        let mut mark = [0u8; 1];
        let mut s = stream;
        let _ = s.read(&mut mark);
    }
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

/// How long ago the front end received the request, from `RWSGI_REQUEST_START`: microseconds
/// since the epoch (`t=` prefix allowed, as in the common X-Request-Start header), or seconds with
/// a fraction, which is what nginx's `$msec` gives.
fn queued_for(v: &[u8]) -> Option<Duration> {
    let v = std::str::from_utf8(v.strip_prefix(b"t=").unwrap_or(v)).ok()?;
    let started = if v.contains('.') {
        Duration::try_from_secs_f64(v.parse::<f64>().ok()?).ok()?
    } else {
        Duration::from_micros(v.parse().ok()?)
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    now.checked_sub(started)
}

/// Splits a REQUEST_URI into its path and query (absolute-form URIs lose scheme and authority).
pub(crate) fn split_request_uri(uri: &[u8]) -> (&[u8], Option<&[u8]>) {
    let mut uri = uri;
    for scheme in [&b"http://"[..], b"https://"] {
        if uri.len() > scheme.len() && uri[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &uri[scheme.len()..];
            uri = rest
                .iter()
                .position(|&b| b == b'/')
                .map_or(b"/", |i| &rest[i..]);
        }
    }
    let uri = uri.split(|&b| b == b'#').next().unwrap_or(b"");
    match uri.iter().position(|&b| b == b'?') {
        Some(i) => (&uri[..i], Some(&uri[i + 1..])),
        None => (uri, None),
    }
}

/// `%XX` -> byte; a `%` not followed by two hex digits stays as it is.
pub(crate) fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Did the front end send SCRIPT_NAME and PATH_INFO already split, i.e. SCRIPT_NAME + PATH_INFO
/// is the request path? Apache's mod_proxy_uwsgi does (PATH_INFO is the part after the ProxyPass
/// prefix), nginx's uwsgi_params does not (PATH_INFO is the whole path). REQUEST_URI is the
/// arbiter: it always holds the whole (percent-encoded) path.
fn already_split(front: Option<&[u8]>, uri_path: &[u8], path_info: &[u8]) -> bool {
    let Some(front) = front.map(trim_slashes).filter(|f| !f.is_empty()) else {
        return false;
    };
    if uri_path.is_empty() || strip_prefix(front, path_info).is_none() {
        return false; // no arbiter, or no prefix to remove twice
    }
    let full = percent_decode(uri_path);
    full.len() == front.len() + path_info.len()
        && full.starts_with(front)
        && full.ends_with(path_info)
}

/// `/app/` -> `/app`; `/` -> empty.
fn trim_slashes(p: &[u8]) -> &[u8] {
    let end = p.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    &p[..end]
}

/// The rest of `path` after `prefix`, if `prefix` matches at a path-segment boundary (`/app`
/// matches `/app` and `/app/x`, never `/application`).
fn strip_prefix<'a>(prefix: &[u8], path: &'a [u8]) -> Option<&'a [u8]> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest[0] == b'/').then_some(rest)
}

/// Picks the app and splits SCRIPT_NAME / PATH_INFO, as uWSGI's mount + manage-script-name do.
/// Returns (index into `mounts`, SCRIPT_NAME, PATH_INFO).
///
/// - A SCRIPT_NAME sent by the front end (nginx `uwsgi_param SCRIPT_NAME /app;`, our modules) is
///   authoritative: the app mounted there (else the default app) serves the request, and the
///   prefix is removed from PATH_INFO when it matches at a segment boundary; otherwise PATH_INFO
///   stays as sent. When the front end already split the path (`front_already_split`, see
///   [`already_split`]), PATH_INFO is taken as it is: removing the prefix again would turn
///   `/app/app/x` into `/x`.
/// - Without one, the longest mount that prefixes PATH_INFO at a segment boundary wins and
///   becomes SCRIPT_NAME.
/// - Else the default app (the one without a mount, or the first) with SCRIPT_NAME "".
pub(crate) fn route<'a>(
    front: Option<&'a [u8]>,
    front_already_split: bool,
    mounts: &[Option<&'a [u8]>],
    path_info: &'a [u8],
) -> (usize, &'a [u8], &'a [u8]) {
    let default = mounts.iter().position(Option::is_none).unwrap_or(0);
    let mount_at = |i: usize| mounts.get(i).copied().flatten().map(trim_slashes);
    if let Some(front) = front.map(trim_slashes).filter(|p| !p.is_empty()) {
        let index = (0..mounts.len())
            .find(|&i| mount_at(i) == Some(front))
            .unwrap_or(default);
        if front_already_split {
            return (index, front, path_info);
        }
        return (
            index,
            front,
            strip_prefix(front, path_info).unwrap_or(path_info),
        );
    }
    let mut best: Option<(usize, &'a [u8], &'a [u8])> = None;
    for i in 0..mounts.len() {
        let Some(m) = mount_at(i).filter(|m| !m.is_empty()) else {
            continue;
        };
        if let Some(rest) = strip_prefix(m, path_info) {
            if best.is_none_or(|(_, b, _)| m.len() > b.len()) {
                best = Some((i, m, rest));
            }
        }
    }
    best.unwrap_or((default, b"", path_info))
}

/// `wsgi.input`: exactly CONTENT_LENGTH bytes, the ones already read with the head first.
struct SocketBody<'s> {
    stream: &'s Stream,
    prefix: &'s [u8],
    remaining: u64,
}

impl Body for SocketBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        if !self.prefix.is_empty() {
            let n = want.min(self.prefix.len());
            buf[..n].copy_from_slice(&self.prefix[..n]);
            self.prefix = &self.prefix[n..];
            self.remaining -= n as u64;
            return Ok(n);
        }
        let mut stream = self.stream;
        loop {
            match stream.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("request body ended {} bytes early", self.remaining),
                    ))
                }
                Ok(n) => {
                    self.remaining -= n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "timed out reading the request body",
                    ))
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The response: `HTTP/1.1 <status>` head, then the body as the app produces it. The head is held
/// back until the first body bytes (or the end), so that both leave in one `writev`.
struct SocketResponder<'s> {
    stream: &'s Stream,
    head: &'s mut Vec<u8>,
    head_pending: bool,
    /// The head has no Content-Length: the body ends at our close.
    unframed: bool,
}

impl SocketResponder<'_> {
    fn flush_head(&mut self) -> io::Result<()> {
        if self.head_pending {
            self.head_pending = false;
            write_all_vectored(self.stream, &mut [IoSlice::new(self.head)])?;
        }
        Ok(())
    }
}

impl Responder for SocketResponder<'_> {
    fn start(&mut self, head: &Head<'_>) -> io::Result<()> {
        self.head.clear();
        let headers = head
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()));
        uwsgi::encode_response_head(head.status_line, headers, self.head)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        self.head_pending = true;
        self.unframed = !head
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(b"content-length"));
        Ok(())
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        if self.head_pending {
            self.head_pending = false;
            write_all_vectored(
                self.stream,
                &mut [IoSlice::new(self.head), IoSlice::new(chunk)],
            )
        } else {
            write_all_vectored(self.stream, &mut [IoSlice::new(chunk)])
        }
    }

    fn send_file(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: u64,
    ) -> Option<io::Result<u64>> {
        Some(
            self.flush_head()
                .and_then(|_| sendfile_all(self.stream, file, offset, len)),
        )
    }
}

fn write_all_vectored(mut stream: &Stream, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match stream.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// sendfile(2) until `len` bytes went out or the file ended; returns the bytes sent.
fn sendfile_all(stream: &Stream, file: &std::fs::File, offset: u64, len: u64) -> io::Result<u64> {
    stream.prepare_blocking()?;
    let mut off = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
    let mut sent = 0u64;
    while sent < len {
        let chunk = usize::try_from(len - sent)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        // SAFETY: both fds are open for the duration of the call; `off` is a valid off_t that the
        // kernel advances by the bytes sent.
        let n = unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut off, chunk) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break; // the file is shorter than announced
        }
        sent += n as u64;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(
        f: Option<&'static str>,
        mounts: &[Option<&'static str>],
        p: &'static str,
    ) -> (usize, String, String) {
        let mounts: Vec<Option<&[u8]>> = mounts.iter().map(|m| m.map(str::as_bytes)).collect();
        let (i, a, b) = route(f.map(str::as_bytes), false, &mounts, p.as_bytes());
        (
            i,
            String::from_utf8_lossy(a).into_owned(),
            String::from_utf8_lossy(b).into_owned(),
        )
    }

    #[test]
    fn script_name_stripping() {
        let s = |f: Option<&'static str>, m: Option<&'static str>, p: &'static str| {
            let (_, a, b) = routed(f, &[m], p);
            (a, b)
        };
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(s(None, None, "/x"), pair("", "/x"));
        assert_eq!(s(Some("/app"), None, "/app/x"), pair("/app", "/x"));
        assert_eq!(s(Some("/app"), None, "/app"), pair("/app", ""));
        assert_eq!(s(Some("/app/"), None, "/app/x"), pair("/app", "/x"));
        assert_eq!(
            s(Some("/app"), None, "/application"),
            pair("/app", "/application")
        );
        assert_eq!(s(Some("/app"), None, "/other"), pair("/app", "/other"));
        assert_eq!(s(Some("/"), None, "/x"), pair("", "/x"));
        assert_eq!(s(None, Some("/m"), "/m/a/b"), pair("/m", "/a/b"));
        assert_eq!(s(None, Some("/m"), "/mm"), pair("", "/mm"));
        assert_eq!(s(Some("/f"), Some("/m"), "/f/z"), pair("/f", "/z"));
        assert_eq!(s(Some(""), Some("/m"), "/m/z"), pair("/m", "/z"));
    }

    #[test]
    fn several_apps_are_routed_by_mount() {
        let mounts = [None, Some("/a"), Some("/a/deep"), Some("/b")];
        let r = |f, p| routed(f, &mounts, p);
        let t = |i: usize, a: &str, b: &str| (i, a.to_owned(), b.to_owned());
        assert_eq!(r(None, "/x"), t(0, "", "/x"));
        assert_eq!(r(None, "/a/x"), t(1, "/a", "/x"));
        assert_eq!(r(None, "/a/deep/x"), t(2, "/a/deep", "/x"));
        assert_eq!(r(None, "/a/deeper"), t(1, "/a", "/deeper"));
        assert_eq!(r(None, "/b"), t(3, "/b", ""));
        assert_eq!(r(None, "/bb"), t(0, "", "/bb"));
        // The front end's SCRIPT_NAME picks the app, even over a longer PATH_INFO match.
        assert_eq!(r(Some("/a"), "/a/deep/x"), t(1, "/a", "/deep/x"));
        assert_eq!(r(Some("/b/"), "/b/y"), t(3, "/b", "/y"));
        assert_eq!(r(Some("/zzz"), "/zzz/q"), t(0, "/zzz", "/q"));
        // No default app: the first one serves what no mount matches.
        assert_eq!(
            routed(None, &[Some("/a"), Some("/b")], "/c"),
            t(0, "", "/c")
        );
    }

    #[test]
    fn path_info_split_by_the_front_end_is_not_split_again() {
        let b = |s: &'static str| Some(s.as_bytes());
        // Apache mod_proxy_uwsgi, ProxyPass /app, URL /app/app/x: PATH_INFO is already relative.
        assert!(already_split(b("/app"), b"/app/app/x", b"/app/x"));
        assert!(!already_split(b("/app"), b"/app/app%2Fx", b"/app/app/x"));
        assert!(already_split(b("/app"), b"/app/%61pp/x", b"/app/x"));
        // nginx: PATH_INFO is the whole path.
        assert!(!already_split(b("/app"), b"/app/app/x", b"/app/app/x"));
        assert!(!already_split(b("/app"), b"", b"/app/x"));
        assert!(!already_split(None, b"/app/app/x", b"/app/x"));
        let mounts = [Some(b"/app".as_slice())];
        let (_, sn, pi) = route(b("/app"), true, &mounts, b"/app/x");
        assert_eq!((sn, pi), (&b"/app"[..], &b"/app/x"[..]));
    }

    #[test]
    fn request_uri_and_decoding() {
        assert_eq!(
            split_request_uri(b"/a%20b?x=1#f"),
            (&b"/a%20b"[..], Some(&b"x=1"[..]))
        );
        assert_eq!(split_request_uri(b"/plain"), (&b"/plain"[..], None));
        assert_eq!(
            split_request_uri(b"http://h:1/p?q"),
            (&b"/p"[..], Some(&b"q"[..]))
        );
        assert_eq!(split_request_uri(b"https://h"), (&b"/"[..], None));
        assert_eq!(percent_decode(b"/a%20b%2F%zz%4"), b"/a b/%zz%4".to_vec());
        assert_eq!(percent_decode(b"%e2%82%ac"), "\u{20ac}".as_bytes().to_vec());
    }

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
