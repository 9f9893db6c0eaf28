//! Loading an app by module name (`mysite.wsgi:application`, uWSGI's `module =`), against a real
//! embedded CPython: found from the working directory, errors answered 500 with the traceback,
//! and retried, the fixed code imported afresh. A test binary of its own: it changes the
//! process's working directory.

use std::io;
use std::sync::Mutex;

use pyhost::{
    App, AppSource, AppSpec, ErrorLog, Head, Level, Mode, NoBody, Outcome, PythonConfig, Request,
    Responder,
};

#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl ErrorLog for Log {
    fn log(&self, _level: Level, msg: &str) {
        self.0.lock().unwrap().push(msg.to_string());
    }
}

impl Log {
    fn all(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

#[derive(Default)]
struct Recorder {
    status: Option<u16>,
    body: Vec<u8>,
}

impl Responder for Recorder {
    fn start(&mut self, head: &Head<'_>) -> io::Result<()> {
        self.status = Some(head.status);
        Ok(())
    }
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.body.extend_from_slice(chunk);
        Ok(())
    }
}

fn get(app: &App) -> (Outcome, Recorder, Log) {
    let vars: [(&[u8], &[u8]); 4] = [
        (b"REQUEST_METHOD", b"GET"),
        (b"PATH_INFO", b"/"),
        (b"SERVER_NAME", b"localhost"),
        (b"SERVER_PORT", b"80"),
    ];
    let req = Request {
        vars: &vars,
        mode: Mode::default(),
    };
    let (mut rec, log) = (Recorder::default(), Log::default());
    let out = pyhost::handle(app, &req, &mut NoBody, &mut rec, &log);
    (out, rec, log)
}

#[test]
fn a_module_is_imported_from_the_working_directory_and_retried_until_it_loads() {
    let dir = std::env::temp_dir().join(format!("pyhost-module-{}", std::process::id()));
    let pkg = dir.join("rwsgi_modtest");
    std::fs::create_dir_all(&dir).unwrap();
    // The only test of this binary: nothing else depends on the working directory.
    std::env::set_current_dir(&dir).unwrap();
    pyhost::initialize(&PythonConfig::default()).expect("python starts");
    let app = App::new(AppSpec::module("rwsgi_modtest.wsgi", "application"));
    assert_eq!(
        app.spec().source,
        AppSource::Module("rwsgi_modtest.wsgi".into())
    );

    // Not there yet: a 500, the import error in the log with the module's name.
    let (out, rec, log) = get(&app);
    assert_eq!((out, rec.status), (Outcome::Failed, Some(500)));
    let text = log.all();
    assert!(
        text.contains("RW-PY001 failed to load WSGI module rwsgi_modtest.wsgi")
            && text.contains("ModuleNotFoundError"),
        "{text}"
    );

    // There, without the callable: named in the error.
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("__init__.py"), "").unwrap();
    std::fs::write(pkg.join("wsgi.py"), "app = None\n").unwrap();
    let (_, rec, log) = get(&app);
    assert_eq!(rec.status, Some(500));
    assert!(
        log.all()
            .contains("module rwsgi_modtest.wsgi has no callable named \"application\""),
        "{}",
        log.all()
    );

    // Fixed: the next request imports the new code (the module without the callable was
    // dropped from sys.modules), and serves from then on.
    std::fs::write(
        pkg.join("wsgi.py"),
        "import sys\n\
         def application(environ, start_response):\n\
         \x20   start_response('200 OK', [])\n\
         \x20   return [('first on sys.path: ' + sys.path[0]).encode()]\n",
    )
    .unwrap();
    let (out, rec, log) = get(&app);
    assert_eq!(out, Outcome::Complete, "{}", log.all());
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        String::from_utf8(rec.body).unwrap(),
        format!("first on sys.path: {}", cwd.display())
    );
    let _ = std::fs::remove_dir_all(&dir);
}
