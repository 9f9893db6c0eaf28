//! What the ASGI tests share: the interpreter (build/venv, where Starlette and FastAPI are),
//! app scripts in temp dirs, a recording transport, and a log.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyhost::asgi::{
    AsgiConfig, AsgiHost, BodyRead, Flow, Handle, Kind, LoopKind, Transport, WsOut,
};
use pyhost::{AppSpec, ErrorLog, Head, Level, Outcome, PythonConfig};

/// The project's virtualenv (scripts/setup.sh makes it; the frameworks are pinned in
/// scripts/requirements-test.txt).
pub fn venv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../build/venv")
}

pub fn init() {
    pyhost::initialize(&PythonConfig {
        python_home: Some(venv()),
        python_path: Vec::new(),
    })
    .expect("python starts with build/venv");
}

/// A script in its own temp dir.
pub fn script(name: &str, source: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pyhost-asgi-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.py"));
    std::fs::write(&path, source).unwrap();
    path
}

#[derive(Default)]
pub struct Log(Mutex<Vec<(Level, String)>>);

impl ErrorLog for Log {
    fn log(&self, level: Level, msg: &str) {
        self.0.lock().unwrap().push((level, msg.to_string()));
    }
}

impl Log {
    pub fn all(&self) -> String {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(l, m)| format!("[{}] {m}", l.as_str()))
            .collect::<Vec<_>>()
            .join("\n")
    }
    pub fn has(&self, needle: &str) -> bool {
        self.all().contains(needle)
    }

    /// Waits (at most 10 s) for `needle`: what the app logs after its response is complete
    /// comes after the transport's finish.
    pub fn wait(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.has(needle) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

pub struct Host {
    pub host: AsgiHost,
    pub log: Arc<Log>,
}

/// A host for one app script, on the given loop.
pub fn host_with(name: &str, source: &str, cfg: AsgiConfig) -> Host {
    init();
    let log = Arc::new(Log::default());
    let spec = AppSpec::script(script(name, source), "app");
    let host = AsgiHost::start(vec![spec], cfg, log.clone()).expect("loop starts");
    Host { host, log }
}

pub fn host(name: &str, source: &str) -> Host {
    host_with(
        name,
        source,
        AsgiConfig {
            loop_kind: LoopKind::Asyncio,
            ..AsgiConfig::default()
        },
    )
}

/// What a connection's transport received.
#[derive(Default, Debug)]
pub struct Record {
    pub status: Option<u16>,
    pub status_line: Vec<u8>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
    pub body_calls: usize,
    pub file_calls: usize,
    pub reads: usize,
    pub ws_sent: Vec<Result<String, Vec<u8>>>,
    pub ws_closed: Option<(u16, String)>,
    pub resume_reading: usize,
    pub outcome: Option<Outcome>,
    pub finish_calls: usize,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Default)]
pub struct Shared {
    rec: Mutex<Record>,
    changed: Condvar,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Record> {
        self.rec.lock().unwrap()
    }

    /// Waits (at most 10 s) until `cond` holds; panics with the record otherwise.
    pub fn wait(&self, what: &str, cond: impl Fn(&Record) -> bool) -> MutexGuard<'_, Record> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut rec = self.lock();
        while !cond(&rec) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {what}: {rec:?}");
            rec = self.changed.wait_timeout(rec, left).unwrap().0;
        }
        rec
    }

    pub fn finished(&self) -> MutexGuard<'_, Record> {
        self.wait("finish", |r| r.outcome.is_some())
    }

    fn update(&self, f: impl FnOnce(&mut Record)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }
}

/// A transport over memory: the body as a list of chunks (or `Pending` answers), output recorded.
pub struct TestTransport {
    pub shared: Arc<Shared>,
    pub chunks: VecDeque<Vec<u8>>,
    /// Answer `Pending` to reads (the test feeds the body through the handle).
    pub pending_body: bool,
    /// Answer `Paused` to every body/ws write (the test resumes through the handle).
    pub pause: bool,
    /// Support `file()` (sendfile) instead of answering None.
    pub files: bool,
}

impl TestTransport {
    pub fn new(chunks: &[&[u8]]) -> (TestTransport, Arc<Shared>) {
        let shared = Arc::new(Shared::default());
        (
            TestTransport {
                shared: shared.clone(),
                chunks: chunks.iter().map(|c| c.to_vec()).collect(),
                pending_body: false,
                pause: false,
                files: true,
            },
            shared,
        )
    }

    fn flow(&self) -> Flow {
        if self.pause {
            Flow::Paused
        } else {
            Flow::Ready
        }
    }
}

impl Transport for TestTransport {
    fn read_body(&mut self) -> BodyRead {
        self.shared.update(|r| r.reads += 1);
        if self.pending_body {
            return BodyRead::Pending;
        }
        let chunk = self.chunks.pop_front().unwrap_or_default();
        BodyRead::Data {
            chunk,
            more: !self.chunks.is_empty(),
        }
    }
    fn head(&mut self, head: &Head<'_>) -> io::Result<()> {
        self.shared.update(|r| {
            assert!(r.status.is_none(), "head sent twice");
            r.status = Some(head.status);
            r.status_line = head.status_line.to_vec();
            r.headers = head.headers.to_vec();
        });
        Ok(())
    }
    fn body(&mut self, chunk: &[u8]) -> io::Result<Flow> {
        self.shared.update(|r| {
            r.body.extend_from_slice(chunk);
            r.body_calls += 1;
        });
        Ok(self.flow())
    }
    fn file(&mut self, file: &std::fs::File, offset: u64, len: u64) -> Option<io::Result<Flow>> {
        if !self.files {
            return None;
        }
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0; len as usize];
        if let Err(e) = file.read_exact_at(&mut buf, offset) {
            return Some(Err(e));
        }
        self.shared.update(|r| {
            r.body.extend_from_slice(&buf);
            r.file_calls += 1;
        });
        Some(Ok(self.flow()))
    }
    fn ws_send(&mut self, msg: &WsOut<'_>) -> io::Result<Flow> {
        let m = match msg {
            WsOut::Text(t) => Ok(t.to_string()),
            WsOut::Binary(b) => Err(b.to_vec()),
        };
        self.shared.update(|r| r.ws_sent.push(m));
        Ok(self.flow())
    }
    fn ws_resume_reading(&mut self) {
        self.shared.update(|r| r.resume_reading += 1);
    }
    fn ws_close(&mut self, code: u16, reason: &str) {
        self.shared
            .update(|r| r.ws_closed = Some((code, reason.to_string())));
    }
    fn finish(&mut self, outcome: Outcome) {
        self.shared.update(|r| {
            r.outcome = Some(outcome);
            r.finish_calls += 1;
        });
    }
}

/// CGI vars for a request.
pub fn vars(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"REQUEST_METHOD".to_vec(), method.as_bytes().to_vec()),
        (b"SCRIPT_NAME".to_vec(), Vec::new()),
        (b"PATH_INFO".to_vec(), path.as_bytes().to_vec()),
        (b"QUERY_STRING".to_vec(), Vec::new()),
        (b"REQUEST_URI".to_vec(), path.as_bytes().to_vec()),
        (b"SERVER_PROTOCOL".to_vec(), b"HTTP/1.1".to_vec()),
        (b"SERVER_NAME".to_vec(), b"localhost".to_vec()),
        (b"SERVER_PORT".to_vec(), b"80".to_vec()),
        (b"REMOTE_ADDR".to_vec(), b"127.0.0.1".to_vec()),
        (b"REMOTE_PORT".to_vec(), b"5555".to_vec()),
        (b"HTTP_HOST".to_vec(), b"localhost".to_vec()),
    ];
    for (k, val) in extra {
        if let Some(slot) = v.iter_mut().find(|(kk, _)| kk == k.as_bytes()) {
            slot.1 = val.as_bytes().to_vec();
        } else {
            v.push((k.as_bytes().to_vec(), val.as_bytes().to_vec()));
        }
    }
    v
}

/// Submits one HTTP request with `body` chunks and waits for its end.
pub fn request(h: &Host, method: &str, path: &str, body: &[&[u8]]) -> Arc<Shared> {
    let (t, shared) = TestTransport::new(body);
    submit(h, Kind::Http, vars(method, path, &[]), t);
    drop(shared.finished());
    shared
}

/// Submits with a prepared transport; returns the handle.
pub fn submit(h: &Host, kind: Kind, v: Vec<(Vec<u8>, Vec<u8>)>, t: TestTransport) -> Handle {
    submit_timed(h, kind, v, t, None)
}

/// Submits with a prepared transport and a request timeout; returns the handle.
pub fn submit_timed(
    h: &Host,
    kind: Kind,
    v: Vec<(Vec<u8>, Vec<u8>)>,
    t: TestTransport,
    timeout: Option<pyhost::asgi::Timeout>,
) -> Handle {
    let handle = h.host.handle();
    h.host
        .submit(&handle, 0, kind, Box::new(v), Box::new(t), timeout);
    handle
}
