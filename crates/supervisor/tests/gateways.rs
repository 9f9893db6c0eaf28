//! The SCGI and FastCGI sides of rwsgi-worker (`--socket scgi:...`, `--socket fcgi:...`): what
//! nginx's `scgi_pass`/`fastcgi_pass` and Apache's `mod_proxy_scgi`/`mod_proxy_fcgi` send
//! (their captured requests replayed), the CGI response head, FastCGI's records and management
//! answers, bodies with and without a length, aborts from either side, malformed heads.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Server, TempDir};
use gateway::fastcgi::{self, kind, role, ProtocolStatus};

/// Routes on PATH_INFO; the default answer names the path, SCRIPT_NAME, query and body length.
const APP: &str = r#"
import os, json, time
def application(environ, start_response):
    path = environ.get('PATH_INFO', '')
    if path == '/echo':
        body = environ['wsgi.input'].read()
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return [body]
    if path == '/env':
        body = json.dumps({k: v for k, v in environ.items() if isinstance(v, str)}).encode()
        start_response('200 OK', [('Content-Type', 'application/json')])
        return [body]
    if path == '/abort':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        def gen():
            yield b'partial;'
            raise RuntimeError('gateway abort test')
        return gen()
    if path == '/status-header':
        start_response('201 Created', [('Status', '500 Oops'), ('X-A', '1')])
        return [b'created']
    if path == '/big':
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return [bytes(range(256)) * 40000, b'end']
    if path == '/ignore':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'x' * 4000000]
    if path == '/file':
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return environ['wsgi.file_wrapper'](open(os.path.join(os.path.dirname(__file__), 'data.bin'), 'rb'))
    if path == '/slow':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        def gen():
            for i in range(200):
                yield b'tick;'
                time.sleep(0.05)
        return gen()
    n = len(environ['wsgi.input'].read())
    body = ('hello path=%s script=%s query=%s body=%d' % (
        path, environ['SCRIPT_NAME'], environ.get('QUERY_STRING'), n)).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
"#;

fn start(protocol: &str, extra: &[&str]) -> Server {
    let dir = TempDir::new();
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path("data.bin"), data).unwrap();
    let mut args = vec![
        "--processes",
        "1",
        "--threads",
        "2",
        "--socket-timeout",
        "5",
    ];
    args.extend_from_slice(extra);
    Server::start_speaking(protocol, dir, APP, &args, 1)
}

/// The CGI vars of a request as Apache's modules send them: SCRIPT_NAME is the whole path, no
/// PATH_INFO.
fn cgi_vars(method: &str, uri: &str) -> Vec<(String, String)> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    vec![
        ("REQUEST_METHOD".into(), method.into()),
        ("SCRIPT_NAME".into(), path.into()),
        ("REQUEST_URI".into(), uri.into()),
        ("QUERY_STRING".into(), query.into()),
        ("SERVER_NAME".into(), "localhost".into()),
        ("SERVER_PORT".into(), "80".into()),
        ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
        ("REMOTE_ADDR".into(), "127.0.0.1".into()),
    ]
}

fn pairs(vars: &[(String, String)]) -> impl Iterator<Item = (&[u8], &[u8])> {
    vars.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))
}

/// A CGI response: `Status:` line and headers, then the body.
#[derive(Debug)]
struct Cgi {
    status: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Cgi {
    fn parse(raw: &[u8]) -> Cgi {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no CGI head in {:?}", String::from_utf8_lossy(raw)));
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().to_owned();
        assert!(status.starts_with("Status: "), "{head}");
        let headers = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Cgi {
            status: status["Status: ".len()..].to_owned(),
            headers,
            body: raw[end + 4..].to_vec(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn exchange(socket: &Path, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut c = UnixStream::connect(socket)?;
    c.set_read_timeout(Some(Duration::from_secs(20)))?;
    c.write_all(bytes)?;
    let mut out = Vec::new();
    c.read_to_end(&mut out)?;
    Ok(out)
}

/// Each of `cases` is closed without an answer, and logged (RW030, rate limit included).
fn each_closed_without_answer(s: &Server, cases: &[(&str, Vec<u8>)]) {
    for (name, bytes) in cases {
        let out = exchange(&s.socket, bytes);
        assert!(
            out.as_ref().map_or(true, |b| b.is_empty()),
            "{name}: {out:?}"
        );
    }
    s.wait_log_events("RW030", cases.len(), Duration::from_secs(5));
}

// ---- SCGI ---------------------------------------------------------------------------------

fn scgi(vars: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    gateway::scgi::encode_request(body.len() as u64, pairs(vars), &mut out).unwrap();
    out.extend_from_slice(body);
    out
}

#[test]
fn scgi_requests_get_a_cgi_head_and_the_path_as_a_wsgi_app_routes_it() {
    let s = start("scgi:", &["--mount", "/app"]);
    let r = Cgi::parse(&exchange(&s.socket, &scgi(&cgi_vars("GET", "/app/x/y?q=1"), b"")).unwrap());
    assert_eq!(r.status, "200 OK");
    assert!(r
        .headers
        .contains(&("Content-Type".into(), "text/plain".into())));
    assert_eq!(r.text(), "hello path=/x/y script=/app query=q=1 body=0");
    // Outside the mount: the default app sees the whole path.
    let r = Cgi::parse(&exchange(&s.socket, &scgi(&cgi_vars("GET", "/other"), b"")).unwrap());
    assert_eq!(r.text(), "hello path=/other script= query= body=0");
    // A body, streamed in.
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = Cgi::parse(&exchange(&s.socket, &scgi(&cgi_vars("POST", "/app/echo"), &body)).unwrap());
    assert!(r.body == body, "echoed {} bytes", r.body.len());
    // A response bigger than the socket buffers, without Content-Length: ends at the close.
    let r = Cgi::parse(&exchange(&s.socket, &scgi(&cgi_vars("GET", "/app/big"), b"")).unwrap());
    assert_eq!(r.body.len(), 256 * 40000 + 3);
    // sendfile for wsgi.file_wrapper.
    let r = Cgi::parse(&exchange(&s.socket, &scgi(&cgi_vars("GET", "/app/file"), b"")).unwrap());
    assert_eq!(r.body.len(), 700_000);
}

#[test]
fn scgi_repeated_headers_are_joined_and_the_apps_status_header_dropped() {
    let s = start("scgi:", &[]);
    let mut v = cgi_vars("GET", "/env");
    v.push(("HTTP_COOKIE".into(), "a=1".into()));
    v.push(("HTTP_COOKIE".into(), "b=2".into()));
    v.push(("HTTP_X_FORWARDED_FOR".into(), "1.1.1.1".into()));
    v.push(("HTTP_X_FORWARDED_FOR".into(), "2.2.2.2".into()));
    v.push(("HTTP_PROXY".into(), "http://evil".into()));
    let env = Cgi::parse(&exchange(&s.socket, &scgi(&v, b"")).unwrap()).text();
    assert!(env.contains(r#""HTTP_COOKIE": "a=1; b=2""#), "{env}");
    assert!(
        env.contains(r#""HTTP_X_FORWARDED_FOR": "1.1.1.1, 2.2.2.2""#),
        "{env}"
    );
    assert!(env.contains(r#""SCGI": "1""#), "{env}");
    assert!(!env.contains("HTTP_PROXY"), "{env}");
    let r =
        Cgi::parse(&exchange(&s.socket, &scgi(&cgi_vars("GET", "/status-header"), b"")).unwrap());
    assert_eq!(r.status, "201 Created");
    assert_eq!(r.headers, vec![("X-A".to_owned(), "1".to_owned())]);
}

fn capture(name: &str) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/tests/captures");
    std::fs::read(dir.join(name)).unwrap()
}

/// What Debian's nginx 1.22 and Apache 2.4 really sent (crates/gateway/tests/captures).
#[test]
fn captured_scgi_requests_from_nginx_and_apache() {
    let s = start("scgi:", &["--mount", "/scgi"]);
    for front in ["nginx", "apache"] {
        let r =
            Cgi::parse(&exchange(&s.socket, &capture(&format!("{front}-scgi-get.bin"))).unwrap());
        assert_eq!(
            r.text(),
            "hello path=/get script=/scgi query=a=1&b=%20x body=0",
            "{front}"
        );
        let r =
            Cgi::parse(&exchange(&s.socket, &capture(&format!("{front}-scgi-post.bin"))).unwrap());
        assert_eq!(
            r.text(),
            "hello path=/post script=/scgi query= body=15",
            "{front}"
        );
    }
}

#[test]
fn scgi_malformed_heads_close_only_that_connection() {
    let s = start("scgi:", &[]);
    let no_scgi = {
        let block = b"CONTENT_LENGTH\x000\x00REQUEST_METHOD\x00GET\x00";
        let mut v = format!("{}:", block.len()).into_bytes();
        v.extend_from_slice(block);
        v.push(b',');
        v
    };
    let cases: [(&str, Vec<u8>); 5] = [
        ("leading zero", b"01:x,".to_vec()),
        ("not a netstring", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("too large", b"99999999:".to_vec()),
        ("no comma", b"3:a\x00b;".to_vec()),
        ("without SCGI=1", no_scgi),
    ];
    each_closed_without_answer(&s, &cases);
    assert!(s.log().contains("malformed SCGI request"), "{}", s.log());
    let r = Cgi::parse(&exchange(&s.socket, &scgi(&cgi_vars("GET", "/ok"), b"")).unwrap());
    assert_eq!(r.status, "200 OK");
}

#[test]
fn scgi_too_many_vars_is_431() {
    let s = start("scgi:", &[]);
    let mut v = cgi_vars("POST", "/echo");
    for i in 0..600 {
        v.push((format!("HTTP_X_H{i}"), "v".into()));
    }
    let r = Cgi::parse(&exchange(&s.socket, &scgi(&v, &vec![b'b'; 300_000])).unwrap());
    assert_eq!(r.status, "431 Request Header Fields Too Large");
    s.wait_log_count(
        "RW030 answering 431: the request has more than 512 scgi vars",
        1,
        Duration::from_secs(5),
    );
}

#[test]
fn scgi_requests_need_the_secret_when_the_worker_has_one() {
    let dir = TempDir::new();
    let secret = dir.path("secret");
    std::fs::write(&secret, "0123456789abcdef-secret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = start("scgi:", &["--secret-file", secret.to_str().unwrap()]);
    let out = exchange(&s.socket, &scgi(&cgi_vars("GET", "/x"), b"")).unwrap();
    assert!(out.is_empty());
    s.wait_log_events("RW051", 1, Duration::from_secs(5));
    let mut v = cgi_vars("GET", "/env");
    v.push(("RWSGI_SECRET".into(), "0123456789abcdef-secret".into()));
    let env = Cgi::parse(&exchange(&s.socket, &scgi(&v, b"")).unwrap()).text();
    assert!(
        env.contains(r#""PATH_INFO": "/env""#) && !env.contains("RWSGI_SECRET"),
        "{env}"
    );
}

// ---- FastCGI ------------------------------------------------------------------------------

/// BEGIN_REQUEST, the PARAMS stream, and the body as STDIN records of `chunk` bytes.
fn fcgi(id: u16, vars: &[(String, String)], body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    fastcgi::encode_begin_request(id, role::RESPONDER, false, &mut out);
    fastcgi::encode_params(id, pairs(vars), &mut out).unwrap();
    for piece in body.chunks(chunk) {
        fastcgi::encode_stream(kind::STDIN, id, piece, &mut out);
    }
    fastcgi::encode_record(kind::STDIN, id, b"", &mut out).unwrap();
    out
}

fn with_length(mut vars: Vec<(String, String)>, body: &[u8]) -> Vec<(String, String)> {
    vars.push(("CONTENT_LENGTH".into(), body.len().to_string()));
    vars
}

/// The records of a response, taken apart.
#[derive(Debug, Default)]
struct Reply {
    /// STDOUT content of request 1.
    stdout: Vec<u8>,
    /// END_REQUESTs: (request id, protocol status).
    ends: Vec<(u16, u8)>,
    /// Every other record: (type, request id, content).
    others: Vec<(u8, u16, Vec<u8>)>,
    /// An empty STDOUT record came before the first END_REQUEST.
    stdout_closed: bool,
    /// The worker's abort record (version 0) ended the stream.
    abort_record: bool,
}

impl Reply {
    fn parse(mut raw: &[u8]) -> Reply {
        let mut r = Reply::default();
        while !raw.is_empty() {
            let (rec, n) = match fastcgi::parse_record(raw) {
                Ok(uwsgi::Status::Complete(done)) => done,
                Ok(uwsgi::Status::Partial) => panic!("a partial record at the end: {raw:?}"),
                Err(fastcgi::Error::BadVersion) if raw.len() == 8 && raw[0] == 0 => {
                    r.abort_record = true;
                    break;
                }
                Err(e) => panic!("{e}: {raw:?}"),
            };
            let (k, id) = (rec.header.kind, rec.header.request_id);
            match k {
                kind::STDOUT if id == 1 && rec.content.is_empty() => r.stdout_closed = true,
                kind::STDOUT if id == 1 => r.stdout.extend_from_slice(rec.content),
                kind::END_REQUEST => r.ends.push((id, rec.content[4])),
                _ => r.others.push((k, id, rec.content.to_vec())),
            }
            raw = &raw[n..];
        }
        r
    }

    fn cgi(&self) -> Cgi {
        Cgi::parse(&self.stdout)
    }

    fn completed(&self) -> bool {
        self.stdout_closed && self.ends == [(1, ProtocolStatus::RequestComplete as u8)]
    }
}

#[test]
fn fastcgi_requests_are_answered_in_stdout_records_then_end_request() {
    let s = start("fcgi:", &["--mount", "/app"]);
    let r = Reply::parse(
        &exchange(&s.socket, &fcgi(1, &cgi_vars("GET", "/app/x?q=1"), b"", 1)).unwrap(),
    );
    assert!(r.completed(), "{r:?}");
    assert!(r.others.is_empty(), "{r:?}");
    assert_eq!(r.cgi().status, "200 OK");
    assert_eq!(r.cgi().text(), "hello path=/x script=/app query=q=1 body=0");
    // A body in many records, with CONTENT_LENGTH, and a response over many records.
    let body: Vec<u8> = (0..2_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let req = fcgi(
        1,
        &with_length(cgi_vars("POST", "/app/echo"), &body),
        &body,
        8192,
    );
    let r = Reply::parse(&exchange(&s.socket, &req).unwrap());
    assert!(r.completed());
    assert!(r.cgi().body == body, "echoed {} bytes", r.cgi().body.len());
    // Without CONTENT_LENGTH (mod_proxy_fcgi's chunked upload): the stream's end ends it.
    let req = fcgi(1, &cgi_vars("POST", "/app/echo"), &body[..100_001], 65_535);
    let r = Reply::parse(&exchange(&s.socket, &req).unwrap());
    assert!(r.cgi().body == body[..100_001]);
    // wsgi.file_wrapper: no sendfile inside records, the file is copied into them.
    let r = Reply::parse(
        &exchange(&s.socket, &fcgi(1, &cgi_vars("GET", "/app/file"), b"", 1)).unwrap(),
    );
    assert!(r.completed());
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    assert!(r.cgi().body == data);
    // The app's Status header cannot replace the status.
    let r = Reply::parse(
        &exchange(
            &s.socket,
            &fcgi(1, &cgi_vars("GET", "/app/status-header"), b"", 1),
        )
        .unwrap(),
    );
    assert_eq!(r.cgi().status, "201 Created");
    assert_eq!(r.cgi().headers, vec![("X-A".to_owned(), "1".to_owned())]);
}

#[test]
fn captured_fastcgi_requests_from_nginx_and_apache() {
    let s = start("fcgi:", &["--mount", "/fcgi"]);
    for front in ["nginx", "apache"] {
        let get = Reply::parse(
            &exchange(&s.socket, &capture(&format!("{front}-fastcgi-get.bin"))).unwrap(),
        );
        assert!(get.completed(), "{front}: {get:?}");
        assert_eq!(
            get.cgi().text(),
            "hello path=/get script=/fcgi query=a=1&b=%20x body=0",
            "{front}"
        );
        let post = Reply::parse(
            &exchange(&s.socket, &capture(&format!("{front}-fastcgi-post.bin"))).unwrap(),
        );
        assert_eq!(
            post.cgi().text(),
            "hello path=/post script=/fcgi query= body=15",
            "{front}"
        );
    }
    // mod_proxy_fcgi's chunked upload: no CONTENT_LENGTH, the STDIN stream is the framing.
    let r = Reply::parse(&exchange(&s.socket, &capture("apache-fastcgi-chunked.bin")).unwrap());
    assert_eq!(
        r.cgi().text(),
        "hello path=/chunked script=/fcgi query= body=21700"
    );
}

#[test]
fn fastcgi_management_records_and_refused_requests() {
    let s = start("fcgi:", &[]);
    let mut req = Vec::new();
    fastcgi::encode_get_values([&b"FCGI_MPXS_CONNS"[..], b"FCGI_MAX_CONNS"], &mut req).unwrap();
    fastcgi::encode_record(20, 0, b"", &mut req).unwrap(); // a type FastCGI 1.0 does not have
    fastcgi::encode_begin_request(7, role::AUTHORIZER, false, &mut req);
    fastcgi::encode_begin_request(1, role::RESPONDER, false, &mut req);
    fastcgi::encode_params(1, pairs(&cgi_vars("POST", "/x")), &mut req).unwrap();
    // A second request while the first is active: refused, the first goes on.
    fastcgi::encode_begin_request(2, role::RESPONDER, false, &mut req);
    fastcgi::encode_stream(kind::STDIN, 1, b"abc", &mut req);
    fastcgi::encode_record(kind::STDIN, 1, b"", &mut req).unwrap();
    let r = Reply::parse(&exchange(&s.socket, &req).unwrap());
    let mut values = Vec::new();
    fastcgi::encode_pair(b"FCGI_MPXS_CONNS", b"0", &mut values).unwrap();
    assert_eq!(
        r.others,
        vec![
            (kind::GET_VALUES_RESULT, 0, values),
            (kind::UNKNOWN_TYPE, 0, vec![20, 0, 0, 0, 0, 0, 0, 0]),
        ]
    );
    assert_eq!(
        r.ends,
        vec![
            (7, ProtocolStatus::UnknownRole as u8),
            (2, ProtocolStatus::CantMpxConn as u8),
            (1, ProtocolStatus::RequestComplete as u8),
        ]
    );
    assert_eq!(r.cgi().text(), "hello path=/x script= query= body=3");
}

#[test]
fn fastcgi_keep_conn_still_closes_after_end_request() {
    let s = start("fcgi:", &[]);
    let mut req = Vec::new();
    fastcgi::encode_begin_request(1, role::RESPONDER, true, &mut req);
    fastcgi::encode_params(1, pairs(&cgi_vars("GET", "/k")), &mut req).unwrap();
    fastcgi::encode_record(kind::STDIN, 1, b"", &mut req).unwrap();
    let started = Instant::now();
    let r = Reply::parse(&exchange(&s.socket, &req).unwrap());
    assert!(r.completed());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed at once, not after a timeout"
    );
}

#[test]
fn an_app_that_fails_mid_response_sends_no_end_request() {
    let s = start("fcgi:", &[]);
    let raw = exchange(&s.socket, &fcgi(1, &cgi_vars("GET", "/abort"), b"", 1));
    // A unix socket cannot reset: END_REQUEST never comes, a record every front end refuses
    // does (proto/fastcgi.rs, abort_record), after what the app sent.
    let r = Reply::parse(&raw.unwrap());
    assert!(r.ends.is_empty() && !r.stdout_closed, "{r:?}");
    assert!(r.abort_record, "{r:?}");
    assert!(r.cgi().text() == "partial;", "{r:?}");
    s.wait_log_count("gateway abort test", 1, Duration::from_secs(5));
}

#[test]
fn abort_request_from_the_front_end_ends_the_request() {
    let s = start("fcgi:", &[]);
    let mut c = UnixStream::connect(&s.socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(&fcgi(1, &cgi_vars("GET", "/slow"), b"", 1))
        .unwrap();
    let mut first = [0u8; 64];
    let _ = c.read(&mut first).unwrap();
    let mut abort = Vec::new();
    fastcgi::encode_record(kind::ABORT_REQUEST, 1, b"", &mut abort).unwrap();
    let started = Instant::now();
    c.write_all(&abort).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the generator ran on"
    );
    let tail = &rest[rest.len().saturating_sub(16)..];
    assert!(
        tail.ends_with(&[
            1,
            kind::END_REQUEST,
            0,
            1,
            0,
            8,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0
        ]),
        "{tail:?}"
    );
}

#[test]
fn a_body_the_app_does_not_read_costs_neither_side_a_wait() {
    let s = start("fcgi:", &[]);
    let body = vec![b'q'; 4 << 20];
    let req = fcgi(
        1,
        &with_length(cgi_vars("POST", "/ignore"), &body),
        &body,
        16 << 10,
    );
    let mut c = UnixStream::connect(&s.socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reader = c.try_clone().unwrap();
    // The whole request is written before anything is read, as a front end that sends
    // before it reads does: the worker must take the body in while it answers.
    let writer = std::thread::spawn(move || c.write_all(&req).map(|()| c));
    let mut raw = Vec::new();
    reader.read_to_end(&mut raw).unwrap();
    let _ = writer.join().unwrap().unwrap();
    let r = Reply::parse(&raw);
    assert!(r.completed(), "{:?}", r.ends);
    assert_eq!(r.cgi().body.len(), 4_000_000);
}

#[test]
fn fastcgi_malformed_records_close_only_that_connection() {
    let s = start("fcgi:", &[]);
    let mut stdin_first = Vec::new();
    fastcgi::encode_begin_request(1, role::RESPONDER, false, &mut stdin_first);
    fastcgi::encode_stream(kind::STDIN, 1, b"x", &mut stdin_first);
    let mut stdout_record = Vec::new();
    fastcgi::encode_stream(kind::STDOUT, 1, b"x", &mut stdout_record);
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "version 2",
            vec![2, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
        ),
        ("STDIN before PARAMS ended", stdin_first),
        ("a record only an application sends", stdout_record),
        (
            "BEGIN_REQUEST of 3 bytes",
            vec![1, 1, 0, 1, 0, 3, 0, 0, 0, 1, 0],
        ),
    ];
    each_closed_without_answer(&s, &cases);
    assert!(s.log().contains("malformed FastCGI request"), "{}", s.log());
    let r = Reply::parse(&exchange(&s.socket, &fcgi(1, &cgi_vars("GET", "/ok"), b"", 1)).unwrap());
    assert!(r.completed());
}

#[test]
fn fastcgi_too_many_vars_is_431() {
    let s = start("fcgi:", &[]);
    let mut v = cgi_vars("GET", "/x");
    for i in 0..600 {
        v.push((format!("HTTP_X_H{i}"), "v".into()));
    }
    let r = Reply::parse(&exchange(&s.socket, &fcgi(1, &v, b"", 1)).unwrap());
    assert!(r.completed());
    assert_eq!(r.cgi().status, "431 Request Header Fields Too Large");
}

/// While no worker lives (an app that exits at import), the supervisor answers 503 itself, in
/// the socket's protocol: a CGI head over SCGI; STDOUT records and END_REQUEST for the
/// request's own id over FastCGI.
#[test]
fn the_supervisors_own_503_speaks_the_sockets_protocol() {
    for protocol in ["scgi:", "fcgi:"] {
        let s = Server::start_speaking(
            protocol,
            TempDir::new(),
            "import os\nos._exit(3)\n",
            &["--processes", "1", "--threads", "1"],
            0,
        );
        s.wait_log_count("exited with status 3", 1, Duration::from_secs(20));
        let (status, headers) = if protocol == "scgi:" {
            let r = Cgi::parse(&exchange(&s.socket, &scgi(&cgi_vars("GET", "/"), b"")).unwrap());
            (r.status, r.headers)
        } else {
            let mut req = Vec::new();
            fastcgi::encode_get_values([&b"FCGI_MPXS_CONNS"[..]], &mut req).unwrap();
            req.extend(fcgi(3, &cgi_vars("POST", "/"), &[b'x'; 100_000], 8192));
            let raw = exchange(&s.socket, &req).unwrap();
            let mut records = &raw[..];
            let mut stdout = Vec::new();
            let mut end = None;
            while let Ok(uwsgi::Status::Complete((rec, n))) = fastcgi::parse_record(records) {
                assert_eq!(rec.header.request_id, 3, "the request's own id");
                match rec.header.kind {
                    kind::STDOUT => stdout.extend_from_slice(rec.content),
                    kind::END_REQUEST => end = Some(rec.content[4]),
                    other => panic!("record type {other}"),
                }
                records = &records[n..];
            }
            assert_eq!(end, Some(ProtocolStatus::RequestComplete as u8));
            let r = Cgi::parse(&stdout);
            (r.status, r.headers)
        };
        assert_eq!(status, "503 Service Unavailable", "{protocol}");
        assert!(
            headers.iter().any(|(k, _)| k == "Retry-After"),
            "{headers:?}"
        );
        s.wait_log_count("RW052", 1, Duration::from_secs(5));
    }
}
