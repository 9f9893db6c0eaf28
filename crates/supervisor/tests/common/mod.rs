//! Test harness: start the real `rwsgi-worker` binary on a temp unix socket (or a free TCP port)
//! with a small Python app, talk raw uwsgi to it, read its log.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The test app: routes on PATH_INFO.
pub const APP: &str = r#"
import os, sys, time, json
calls = 0
def application(environ, start_response):
    global calls
    calls += 1
    path = environ.get('PATH_INFO', '')
    if path == '/echo':
        inp = environ['wsgi.input']
        chunks = []
        while True:
            d = inp.read(65536)
            if not d:
                break
            chunks.append(d)
        body = b''.join(chunks)
    elif path == '/env':
        body = json.dumps({k: v for k, v in environ.items() if isinstance(v, (str, bool, int))}).encode()
    elif path == '/calls':
        body = str(calls).encode()
    elif path == '/pid':
        body = str(os.getpid()).encode()
    elif path == '/die':
        os._exit(1)
    elif path == '/spin':
        while True:
            pass
    elif path.startswith('/sleep/'):
        time.sleep(float(path[7:]))
        body = b'slept'
    elif path == '/file':
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return environ['wsgi.file_wrapper'](open(os.path.join(os.path.dirname(__file__), 'data.bin'), 'rb'))
    else:
        body = ('hello path=%s script=%s query=%s' % (path, environ['SCRIPT_NAME'], environ.get('QUERY_STRING'))).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
"#;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A temp directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("rwsgi-sup-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running rwsgi-worker, stopped (by pid) on drop.
pub struct Server {
    pub dir: TempDir,
    pub socket: PathBuf,
    pub child: Child,
    pub log: Arc<Mutex<String>>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rwsgi-worker")
}

impl Server {
    /// Starts the binary with the test app on a unix socket plus `extra` options and waits until
    /// `processes` workers are ready.
    pub fn start(extra: &[&str], processes: usize) -> Server {
        Server::start_with(TempDir::new(), APP, extra, processes)
    }

    pub fn start_with(dir: TempDir, app: &str, extra: &[&str], processes: usize) -> Server {
        Server::start_speaking("", dir, app, extra, processes)
    }

    /// As [`Server::start_with`], with `protocol` (`scgi:`, `fcgi:` or empty for uwsgi) in
    /// front of the socket.
    pub fn start_speaking(
        protocol: &str,
        dir: TempDir,
        app: &str,
        extra: &[&str],
        processes: usize,
    ) -> Server {
        std::fs::write(dir.path("app.py"), app).unwrap();
        let socket = dir.path("s.sock");
        let mut args = vec![
            "--socket".to_string(),
            format!("{protocol}unix:{}", socket.display()),
            "--script".to_string(),
            dir.path("app.py").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = Command::new(bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rwsgi-worker");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if std::env::var_os("RWSGI_TEST_LOG").is_some() {
                    eprint!("{text}");
                }
                sink.lock().unwrap().push_str(&text);
            }
        });
        let server = Server {
            dir,
            socket,
            child,
            log,
        };
        if processes > 0 {
            server.wait_log_count("RW022", processes, Duration::from_secs(20));
        }
        server
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self, code: &str) -> usize {
        self.log().matches(code).count()
    }

    /// How many times `code` was logged, counting the repeats that the rate limit folded into
    /// `CODE suppressed N similar lines` summaries.
    pub fn events(&self, code: &str) -> usize {
        let log = self.log();
        let summary = format!("{code} suppressed ");
        log.lines()
            .filter(|l| l.contains(code))
            .map(|l| match l.split_once(&summary) {
                Some((_, rest)) => rest
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
                None => 1,
            })
            .sum()
    }

    /// Waits until `code` was logged `n` times, rate-limited repeats included.
    pub fn wait_log_events(&self, code: &str, n: usize, timeout: Duration) {
        self.wait_log(code, n, timeout, Server::events);
    }

    /// Waits until the log holds at least `n` lines with `code`.
    pub fn wait_log_count(&self, code: &str, n: usize, timeout: Duration) {
        self.wait_log(code, n, timeout, Server::count);
    }

    fn wait_log(&self, code: &str, n: usize, timeout: Duration, seen: fn(&Server, &str) -> usize) {
        let start = Instant::now();
        while seen(self, code) < n {
            if start.elapsed() > timeout {
                panic!("timed out waiting for {n} x {code}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: the pid is our own child, not yet reaped.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for the supervisor to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn get(&self, path: &str) -> Response {
        request(&self.socket, &vars("GET", path), b"").unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGTERM);
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// The usual vars of a request as nginx's uwsgi_params would send them.
pub fn vars(method: &str, path: &str) -> Vec<(String, String)> {
    vec![
        ("REQUEST_METHOD".into(), method.into()),
        ("PATH_INFO".into(), path.into()),
        ("REQUEST_URI".into(), path.into()),
        ("QUERY_STRING".into(), String::new()),
        ("SERVER_NAME".into(), "localhost".into()),
        ("SERVER_PORT".into(), "80".into()),
        ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
        ("REMOTE_ADDR".into(), "127.0.0.1".into()),
        ("CONTENT_LENGTH".into(), String::new()),
    ]
}

/// A packet as any front end could send it, without the encoder's checks (a var count over
/// `uwsgi::MAX_VARS`, for instance).
pub fn raw_packet(vars: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    for (k, v) in vars {
        block.extend_from_slice(&(k.len() as u16).to_le_bytes());
        block.extend_from_slice(k.as_bytes());
        block.extend_from_slice(&(v.len() as u16).to_le_bytes());
        block.extend_from_slice(v.as_bytes());
    }
    let mut out = vec![0];
    out.extend_from_slice(&(block.len() as u16).to_le_bytes());
    out.push(0);
    out.extend_from_slice(&block);
    out.extend_from_slice(body);
    out
}

pub fn packet(vars: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut vs: Vec<(String, String)> = vars.to_vec();
    if !body.is_empty() {
        vs.retain(|(k, _)| k != "CONTENT_LENGTH");
        vs.push(("CONTENT_LENGTH".into(), body.len().to_string()));
    }
    uwsgi::encode_request(
        0,
        0,
        vs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        &mut out,
    )
    .unwrap();
    out.extend_from_slice(body);
    out
}

#[derive(Debug)]
pub struct Response {
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request and reads the response to EOF.
pub fn request(socket: &Path, vars: &[(String, String)], body: &[u8]) -> std::io::Result<Response> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(&packet(vars, body))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad(&format!("no response head in {} bytes", raw.len())))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("").to_string();
    let headers = lines
        .filter_map(|l| {
            l.split_once(": ")
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    Ok(Response {
        status_line,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

/// Sends raw bytes, then reads until EOF; returns what came back (Err on reset or timeout).
pub fn raw_exchange(
    socket: &Path,
    bytes: &[u8],
    then_close_write: bool,
) -> std::io::Result<Vec<u8>> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(bytes)?;
    if then_close_write {
        s.shutdown(std::net::Shutdown::Write)?;
    }
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}
