//! The request as both modes see it: the CGI variables, the request body (`wsgi.input`) and the
//! response (head and body through httpd's output filters).
//!
//! Embedded mode hands these to pyhost; daemon mode sends the same variables and body to its group
//! over uwsgi and writes the group's answer through the same [`Output`], so an app sees one
//! environ and a client one kind of response whichever mode runs it.

use std::borrow::Cow;
use std::ffi::c_int;
use std::io;

use pyhost::{Body, Head, Outcome, Responder};

use crate::conf::{collapse_slashes, DirConf, ProcessGroup};
use crate::ffi::*;

/// The CGI variables mod_wsgi gives an app: httpd's own ap_add_common_vars (see add_cgi_vars)
/// (which already refuse header names with '_' and never export Authorization), SetEnv values,
/// then mod_wsgi's adjustments.
/// The variables borrow httpd's strings in r->pool (no copies); `'r` must not outlive the
/// request, which holds as every caller drops them before its handler returns.
pub(crate) type Vars<'r> = Vec<(Cow<'r, [u8]>, Cow<'r, [u8]>)>;

pub(crate) fn build_vars<'r>(r: &mut request_rec, conf: &DirConf) -> Vars<'r> {
    // SAFETY: r is live; these fill r->subprocess_env from the request.
    unsafe {
        add_cgi_vars(r);
        ap_add_common_vars(r);
    }
    // SAFETY: subprocess_env is a live table of NUL-terminated strings in r->pool, which lives
    // (unmodified by us) until the request ends, beyond every use of the returned vars.
    let entries = unsafe { table_entries(r.subprocess_env) };
    let mut vars: Vars<'r> = Vec::with_capacity(entries.len() + 2);
    let mut has_path_info = false;
    for e in entries {
        // SAFETY: keys and values of an apr table are NUL-terminated (val may be NULL), in
        // r->pool (see above).
        let (key, value): (&'r [u8], &'r [u8]) = unsafe { (cstr_bytes(e.key), cstr_bytes(e.val)) };
        if key.is_empty() {
            continue;
        }
        let value = match key {
            b"SCRIPT_NAME" => collapse_slashes(value),
            b"PATH_INFO" => {
                has_path_info = true;
                collapse_slashes(value)
            }
            _ => Cow::Borrowed(value),
        };
        vars.push((Cow::Borrowed(key), value));
    }
    if !has_path_info {
        vars.push((Cow::Borrowed(b"PATH_INFO"), Cow::Borrowed(b"")));
    }
    // mod_wsgi's own keys that apps test to tell embedded from daemon mode.
    let group = match &conf.process_group {
        Some(ProcessGroup::Daemon(name)) => Cow::Owned(name.as_bytes().to_vec()),
        _ => Cow::Borrowed(&b""[..]),
    };
    vars.push((Cow::Borrowed(b"mod_wsgi.process_group"), group));
    vars.push((
        Cow::Borrowed(b"mod_wsgi.application_group"),
        Cow::Borrowed(b""),
    ));
    vars.push((
        Cow::Borrowed(b"mod_wsgi.callable_object"),
        Cow::Owned(conf.callable_name().as_bytes().to_vec()),
    ));
    if conf.pass_authorization == Some(true) {
        // SAFETY: headers_in is a live table; apr_table_get returns NULL or a pool string.
        let auth = unsafe { apr_table_get(r.headers_in, c"Authorization".as_ptr()) };
        if !auth.is_null() {
            // SAFETY: non-null, NUL-terminated, in r->pool.
            let value: &'r [u8] = unsafe { cstr_bytes(auth) };
            vars.push((Cow::Borrowed(b"HTTP_AUTHORIZATION"), Cow::Borrowed(value)));
        }
    }
    vars
}

/// httpd's ap_add_cgi_vars, except PATH_TRANSLATED: httpd runs a whole sub-request (URI
/// translation, a directory walk with stat calls) to map PATH_INFO as a URL, on every request,
/// for a variable WSGI apps do not use. We give DocumentRoot + PATH_INFO, which is what that
/// sub-request yields unless PATH_INFO itself matches another Alias.
///
/// # Safety
/// `r` must be the live request.
unsafe fn add_cgi_vars(r: &mut request_rec) {
    // SAFETY: every string is NUL-terminated and owned by r->pool (or 'static); apr_table_setn
    // keeps the pointers, which live as long as the request.
    unsafe {
        let e = r.subprocess_env;
        apr_table_setn(e, c"GATEWAY_INTERFACE".as_ptr(), c"CGI/1.1".as_ptr());
        apr_table_setn(e, c"SERVER_PROTOCOL".as_ptr(), r.protocol);
        apr_table_setn(e, c"REQUEST_METHOD".as_ptr(), r.method);
        let args = if r.args.is_null() {
            c"".as_ptr()
        } else {
            r.args.cast_const()
        };
        apr_table_setn(e, c"QUERY_STRING".as_ptr(), args);
        // REQUEST_URI: the target exactly as on the request line (not decoded).
        let target = request_target(cstr_bytes(r.the_request));
        apr_table_setn(e, c"REQUEST_URI".as_ptr(), pool_str(r.pool, target));
        let path_info = cstr_bytes(r.path_info);
        if path_info.is_empty() {
            apr_table_setn(e, c"SCRIPT_NAME".as_ptr(), r.uri);
            return;
        }
        let start = usize::try_from(ap_find_path_info(r.uri, r.path_info)).unwrap_or(0);
        let uri = cstr_bytes(r.uri);
        apr_table_setn(
            e,
            c"SCRIPT_NAME".as_ptr(),
            pool_str(r.pool, &uri[..start.min(uri.len())]),
        );
        apr_table_setn(e, c"PATH_INFO".as_ptr(), r.path_info);
        let mut translated = cstr_bytes(ap_document_root(r)).to_vec();
        translated.extend_from_slice(path_info);
        apr_table_setn(
            e,
            c"PATH_TRANSLATED".as_ptr(),
            pool_str(r.pool, &translated),
        );
    }
}

/// The request-target of a request line ("GET /a%20b?x HTTP/1.1" -> "/a%20b?x"), as httpd's
/// ap_add_cgi_vars takes REQUEST_URI from it.
fn request_target(line: &[u8]) -> &[u8] {
    line.split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .nth(1)
        .unwrap_or(b"")
}

/// Pool cleanup closing a descriptor duplicated for a file bucket.
///
/// # Safety
/// Called by APR once, when the request pool is cleared, with the descriptor [`Output`]'s
/// `send_file` duplicated and registered as `data`.
unsafe extern "C" fn close_fd(data: *mut std::ffi::c_void) -> apr_status_t {
    // SAFETY: registered by send_file with the dup'd descriptor as its data; runs once.
    unsafe { libc::close(data as isize as c_int) };
    APR_SUCCESS as apr_status_t
}

/// wsgi.input: httpd's client-block API, which de-chunks and enforces LimitRequestBody.
pub(crate) struct RequestBody {
    r: *mut request_rec,
    /// ap_should_client_block sends "100 Continue"; only do that once the app reads.
    started: bool,
    done: bool,
}

impl RequestBody {
    pub(crate) fn new(r: *mut request_rec) -> Self {
        Self {
            r,
            started: false,
            done: false,
        }
    }
}

impl Body for RequestBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if !self.started {
            self.started = true;
            // SAFETY: the request is live for the whole handle() call, on this thread.
            if unsafe { ap_should_client_block(self.r) } == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        // SAFETY: as above; buf is writable for buf.len() bytes.
        let n = unsafe { ap_get_client_block(self.r, buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => {
                self.done = true;
                Ok(0)
            }
            n if n > 0 => Ok(n as usize),
            _ => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "reading the request body failed",
            )),
        }
    }
}

/// The response: head into r, body through one reusable brigade down the output filters.
pub(crate) struct Output {
    r: *mut request_rec,
    bb: *mut apr_bucket_brigade,
    /// The app's Content-Length, if it gave one: once reached, no flush is needed (EOS follows).
    content_length: Option<u64>,
    sent: u64,
    /// The last bytes passed went down with a flush bucket: they are on their way to the client.
    flushed: bool,
    status: u16,
    /// A complete one-chunk 5xx body, kept back until we know whether it is pyhost's own error
    /// answer (Outcome::Failed): then httpd sends its standard error page instead (honouring
    /// ErrorDocument), exactly as under mod_wsgi. An app's own 5xx is sent unchanged.
    held: Option<Vec<u8>>,
}

impl Output {
    pub(crate) fn new(r: &mut request_rec) -> Self {
        // SAFETY: r and its connection are live; the brigade is owned by r->pool.
        let bb = unsafe { apr_brigade_create(r.pool, (*r.connection).bucket_alloc) };
        Self {
            r,
            bb,
            content_length: None,
            sent: 0,
            flushed: false,
            status: 0,
            held: None,
        }
    }

    /// The Content-Length the response head announced, if any.
    pub(crate) fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// Ends the request according to pyhost's outcome; returns the handler status.
    pub(crate) fn finish(&mut self, outcome: Outcome) -> c_int {
        match outcome {
            Outcome::Failed | Outcome::TimedOut if self.held.is_some() => {
                self.held = None;
                // SAFETY: r is live; ap_die will build the error response from the status we
                // return, with headers_out swapped out by ap_send_error_response.
                unsafe { (*self.r).status_line = std::ptr::null() };
                if outcome == Outcome::TimedOut {
                    HTTP_GATEWAY_TIME_OUT as c_int
                } else {
                    HTTP_INTERNAL_SERVER_ERROR as c_int
                }
            }
            Outcome::Complete | Outcome::Failed | Outcome::TimedOut => {
                if let Some(body) = self.held.take() {
                    // Flushed for the same reason as in write().
                    let _ = self.send(&body, true);
                }
                // SAFETY: r is live for the request.
                let r = unsafe { &*self.r };
                // A HEAD, 204 or 304 response has no body: httpd drops ours, flush included.
                let bodiless = r.header_only != 0 || matches!(self.status, 204 | 304);
                if self.flushed
                    && !bodiless
                    && self.content_length.is_some_and(|cl| self.sent >= cl)
                {
                    crate::keepalive::note_delivered(r);
                }
                OK_
            }
            Outcome::Aborted => {
                self.abort();
                OK_
            }
            // The client is gone; httpd notices the aborted connection and closes it.
            Outcome::ClientGone => OK_,
        }
    }

    /// Sends one chunk, with a flush bucket behind it if `flush`.
    fn send(&mut self, chunk: &[u8], flush: bool) -> io::Result<()> {
        // SAFETY: the transient bucket points at `chunk`, which stays valid until pass()
        // returns; any filter that keeps data beyond that sets it aside (copies) first, as the
        // transient-bucket contract requires. Buckets come from the connection's allocator.
        unsafe {
            let alloc = (*(*self.r).connection).bucket_alloc;
            brigade_insert_tail(
                self.bb,
                apr_bucket_transient_create(chunk.as_ptr().cast(), chunk.len(), alloc),
            );
            if flush {
                brigade_insert_tail(self.bb, apr_bucket_flush_create(alloc));
            }
        }
        self.flushed = flush;
        self.pass()
    }

    /// Passes the brigade down the filter chain and empties it for reuse.
    fn pass(&mut self) -> io::Result<()> {
        // SAFETY: r and bb are live for the request.
        let rv = unsafe { ap_pass_brigade((*self.r).output_filters, self.bb) };
        // SAFETY: as above.
        unsafe { apr_brigade_cleanup(self.bb.cast()) };
        // SAFETY: r->connection is live.
        if rv != APR_SUCCESS as apr_status_t || unsafe { (*(*self.r).connection).aborted } != 0 {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "client connection closed",
            ));
        }
        Ok(())
    }

    /// The response is incomplete (an error after the head went out): tell httpd's filters, as
    /// mod_proxy does for a broken backend, so a chunked response gets no terminating chunk and
    /// the connection is closed rather than reused.
    fn abort(&mut self) {
        // SAFETY: r, its connection and bb are live; the error bucket comes from the
        // connection's allocator and is linked into our (empty) brigade.
        unsafe {
            let c = (*self.r).connection;
            (*c).keepalive = ap_conn_keepalive_e_AP_CONN_CLOSE;
            let e = ap_bucket_error_create(
                HTTP_BAD_GATEWAY as c_int,
                std::ptr::null(),
                (*self.r).pool,
                (*c).bucket_alloc,
            );
            brigade_insert_tail(self.bb, e);
        }
        let _ = self.pass();
    }
}

impl Responder for Output {
    fn start(&mut self, head: &Head<'_>) -> io::Result<()> {
        // SAFETY: r is live; every string handed to httpd is copied into r->pool first.
        unsafe {
            let r = &mut *self.r;
            self.status = head.status;
            r.status = c_int::from(head.status);
            r.status_line = pool_str(r.pool, head.status_line);
            for (name, value) in head.headers {
                if name.eq_ignore_ascii_case(b"Content-Type") {
                    ap_set_content_type(r, pool_str(r.pool, value));
                    continue;
                }
                if name.eq_ignore_ascii_case(b"Content-Length") {
                    self.content_length = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok());
                }
                apr_table_addn(
                    r.headers_out,
                    pool_str(r.pool, name),
                    pool_str(r.pool, value),
                );
            }
        }
        Ok(())
    }

    /// wsgi.file_wrapper: a file bucket over a duplicate of the app's descriptor (owned by
    /// r->pool, so it stays valid however long httpd's filters keep the bucket), sent with
    /// sendfile/mmap as the server's EnableSendfile/EnableMMAP say.
    fn send_file(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: u64,
    ) -> Option<io::Result<u64>> {
        use std::os::fd::AsRawFd;
        let (Ok(start), Ok(size)) = (apr_off_t::try_from(offset), apr_size_t::try_from(len)) else {
            return None;
        };
        if let Some(body) = self.held.take() {
            if let Err(e) = self.send(&body, false) {
                return Some(Err(e));
            }
        }
        // SAFETY: dup of a descriptor the caller keeps open for this call.
        let mut fd: c_int = unsafe { libc::dup(file.as_raw_fd()) };
        if fd < 0 {
            return None; // pyhost falls back to read() + write()
        }
        // SAFETY: r is live; the apr_file_t and the cleanup that closes `fd` live in r->pool;
        // the bucket comes from the connection's allocator and joins our brigade.
        unsafe {
            let r = &mut *self.r;
            let mut handle: *mut apr_file_t = std::ptr::null_mut();
            if apr_os_file_put(&mut handle, &mut fd, APR_FOPEN_READ as i32, r.pool)
                != APR_SUCCESS as apr_status_t
            {
                libc::close(fd);
                return None;
            }
            apr_pool_cleanup_register(
                r.pool,
                fd as isize as *const std::ffi::c_void,
                Some(close_fd),
                Some(apr_pool_cleanup_null),
            );
            let alloc = (*r.connection).bucket_alloc;
            brigade_insert_tail(
                self.bb,
                apr_bucket_file_create(handle, start, size, r.pool, alloc),
            );
            self.sent += len;
            self.flushed = self.content_length.is_none_or(|cl| self.sent < cl);
            if self.flushed {
                brigade_insert_tail(self.bb, apr_bucket_flush_create(alloc));
            }
        }
        Some(self.pass().map(|()| len))
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let first = self.sent == 0;
        self.sent += chunk.len() as u64;
        let complete = self.content_length.is_some_and(|cl| self.sent >= cl);
        if first && complete && self.status >= 500 {
            self.held = Some(chunk.to_vec());
            return Ok(());
        }
        if let Some(body) = self.held.take() {
            self.send(&body, false)?;
        }
        // Every chunk is flushed, the last one included. Streamed output must reach the client
        // as produced; and a complete body left in the core filter's buffer would only be
        // written after the handler returns, by the flush httpd sends behind its keep-alive
        // check for a next (pipelined) request. That check would then always come too early
        // to see the client's next request, and every request would cost a trip through the
        // event MPM's listener (epoll add/remove, a futex wake-up, another worker thread).
        // Written here, the response is usually answered by the time httpd checks, and this
        // worker reads the next request itself, as under mod_wsgi (which flushes each write).
        self.send(chunk, true)
    }
}

#[cfg(test)]
mod tests {
    use super::request_target;

    #[test]
    fn request_target_is_the_raw_uri() {
        assert_eq!(request_target(b"GET /a%20b?x=1 HTTP/1.1"), b"/a%20b?x=1");
        assert_eq!(request_target(b"GET  /x  HTTP/1.0"), b"/x");
        assert_eq!(request_target(b"GET"), b"");
        assert_eq!(request_target(b""), b"");
    }
}
