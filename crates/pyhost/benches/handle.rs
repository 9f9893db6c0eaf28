//! Cost of one hello-world request through `pyhost::handle`, without any transport: what the
//! host itself adds per request. Run: `cargo bench -p pyhost --bench handle`.
//! `PYHOST_BENCH_TIMEOUT=SECS` gives every request a request timeout (the watchdog's cost).

use std::io;
use std::time::Instant;

use pyhost::{
    App, AppSpec, Body, ErrorLog, Head, Level, Mode, Outcome, PythonConfig, Request, Responder,
    Stuck, Timeout,
};

struct Sink(usize);

impl Responder for Sink {
    fn start(&mut self, head: &Head<'_>) -> io::Result<()> {
        self.0 += head.headers.len();
        Ok(())
    }
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.0 += chunk.len();
        Ok(())
    }
}

struct Empty;

impl Body for Empty {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
}

struct Quiet;

impl ErrorLog for Quiet {
    fn log(&self, _: Level, msg: &str) {
        eprintln!("{msg}");
    }
}

struct Ignore;

impl Stuck for Ignore {
    fn stuck(&self) {}
}

/// What nginx's stock uwsgi_params plus a typical browser sends.
const VARS: [(&str, &str); 22] = [
    ("QUERY_STRING", ""),
    ("REQUEST_METHOD", "GET"),
    ("CONTENT_TYPE", ""),
    ("CONTENT_LENGTH", ""),
    ("REQUEST_URI", "/hello"),
    ("PATH_INFO", "/hello"),
    ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
    ("SERVER_PROTOCOL", "HTTP/1.1"),
    ("REQUEST_SCHEME", "http"),
    ("REMOTE_ADDR", "127.0.0.1"),
    ("REMOTE_PORT", "51234"),
    ("SERVER_PORT", "8080"),
    ("SERVER_NAME", "localhost"),
    ("HTTP_HOST", "localhost:8080"),
    ("HTTP_USER_AGENT", "Mozilla/5.0 (X11; Linux x86_64)"),
    ("HTTP_ACCEPT", "text/html,application/xhtml+xml"),
    ("HTTP_ACCEPT_LANGUAGE", "en-US,en;q=0.5"),
    ("HTTP_ACCEPT_ENCODING", "gzip, deflate"),
    ("HTTP_CONNECTION", "keep-alive"),
    ("HTTP_COOKIE", "session=abc123"),
    ("HTTP_CACHE_CONTROL", "max-age=0"),
    ("SCRIPT_NAME", ""),
];

fn main() {
    pyhost::initialize(&PythonConfig::default()).expect("python starts");
    let _thread = pyhost::register_thread();
    let dir = std::env::temp_dir().join(format!("pyhost-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let script = dir.join("hello.py");
    std::fs::write(&script, "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '13')])\n    return [b'Hello, World!']\n").expect("script");
    let app = App::new(AppSpec::script(script, "application"));
    // Heap copies, as a transport has them: the strings' alignment then does not depend on
    // where the linker put this binary's constants (CPython's latin-1 decoder reads words).
    let owned: Vec<(Vec<u8>, Vec<u8>)> = VARS
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    let vars: Vec<(&[u8], &[u8])> = owned
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    let req = Request {
        vars: &vars,
        mode: Mode {
            multithread: true,
            multiprocess: true,
            run_once: false,
        },
        timeout: std::env::var("PYHOST_BENCH_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(|secs| Timeout {
                after: std::time::Duration::from_secs(secs),
                log: &Quiet,
                stuck: &Ignore,
            }),
    };
    let mut sink = Sink(0);
    // PYHOST_BENCH_N lowers the count for instruction counting under valgrind.
    let n: usize = std::env::var("PYHOST_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    for _ in 0..n.min(10_000) {
        assert_eq!(
            pyhost::handle(&app, &req, &mut Empty, &mut sink, &Quiet),
            Outcome::Complete
        );
    }
    let start = Instant::now();
    for _ in 0..n {
        pyhost::handle(&app, &req, &mut Empty, &mut sink, &Quiet);
    }
    let per = start.elapsed().as_secs_f64() / n as f64 * 1e6;
    println!(
        "pyhost::handle hello world: {per:.2} us/request ({n} requests, {} vars)",
        VARS.len()
    );
}
