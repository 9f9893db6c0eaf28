//! The `rwsgi serve` command line, turned into [`Options`].
//!
//! Hand-written like `rwsgi-worker`'s (no argument-parsing dependency): a value option is given as
//! `--name VALUE` or `--name=VALUE`, a flag as `--name`. Errors are sentences naming the option;
//! `main` prints them and exits with status 2.

use std::path::PathBuf;

/// The text printed by `rwsgi --help` and `rwsgi serve --help`.
pub const USAGE: &str = "\
rwsgi serve: serve a WSGI app inside nginx (the rwsgi module), in the foreground

Usage: rwsgi serve APP.py [options]
       rwsgi serve --module PACKAGE.MODULE[:CALLABLE] [options]

Writes a complete nginx configuration into a private directory, checks it with `nginx -t`, runs
the system nginx in the foreground and prints the URL. Ctrl-C stops everything.

Application:
  APP.py                       the WSGI script (its directory goes first on sys.path)
  --module NAME[:CALLABLE]     import the app by module name, e.g. mysite.wsgi (the current
                               directory goes first on sys.path)
  --callable NAME              the WSGI callable (default: application)
  --python-home DIR            virtualenv to run in (default: $VIRTUAL_ENV when set)
  --python-path DIR[:DIR]      extra sys.path entries (repeatable)

Server:
  --host ADDR                  address to listen on (default 127.0.0.1; 0.0.0.0 for every one)
  --port N                     port to listen on (default 8000)
  --processes N                processes running Python (default 1)
  --threads N                  Python threads per process (default 5)
  --daemon                     run Python in a daemon process group supervised by nginx instead
                               of inside nginx's worker processes (embedded mode)
  --request-timeout SECS       a request running longer is interrupted and answered 504
  --static URL=DIR             nginx serves the files of DIR under URL (repeatable),
                               e.g. --static /static=./static
  --limit-request-body BYTES   largest request body accepted (default 10485760)
  --access-log                 log every request (to the terminal; with --setup-only to a file)
  --reload-on-change           restart the Python side when a .py file of the app changes
                               (development; nginx keeps listening)
  --user USER                  user nginx's workers and the app run as when started as root
                               (default www-data)

Setup:
  --setup-only DIR             write the configuration and an `nginxctl` start/stop script into
                               DIR instead of running (for systemd or an init script)
  --nginx PATH                 the nginx binary (default /usr/sbin/nginx)
  --nginx-module PATH          the module (default: next to this program, else
                               /usr/lib/nginx/modules/ngx_http_wsgi_module.so)

  -h, --help                   this text
  -V, --version                the version
";

/// Where the app comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSource {
    /// A WSGI script file, executed as a module the way mod_wsgi does.
    Script(PathBuf),
    /// A module imported by its dotted name (`mysite.wsgi`).
    Module(String),
}

/// The options that go into the configuration as they are (no path to resolve).
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub processes: u32,
    pub threads: u32,
    pub daemon: bool,
    pub request_timeout: Option<f64>,
    pub limit_request_body: u64,
    pub access_log: bool,
    pub reload_on_change: bool,
}

/// Everything the command line says, as written (paths not yet resolved).
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub app: AppSource,
    pub callable: String,
    pub python_home: Option<PathBuf>,
    pub python_path: Vec<PathBuf>,
    pub server: Server,
    /// `(URL prefix, directory)` pairs, as written.
    pub statics: Vec<(String, PathBuf)>,
    pub user: Option<String>,
    pub setup_only: Option<PathBuf>,
    pub nginx: Option<PathBuf>,
    pub nginx_module: Option<PathBuf>,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Serve(Box<Options>),
    Help,
    Version,
}

const VALUE_OPTIONS: &[&str] = &[
    "module",
    "callable",
    "python-home",
    "python-path",
    "host",
    "port",
    "processes",
    "threads",
    "request-timeout",
    "static",
    "limit-request-body",
    "user",
    "setup-only",
    "nginx",
    "nginx-module",
];
const FLAGS: &[&str] = &["daemon", "access-log", "reload-on-change"];

/// The most processes or threads (the module's own limit for both).
const MAX_COUNT: u32 = 1024;

/// Parses the arguments after the program name (`serve ...`).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut it = args.into_iter();
    match it.next().as_deref() {
        None | Some("-h") | Some("--help") | Some("help") => return Ok(Command::Help),
        Some("-V") | Some("--version") => return Ok(Command::Version),
        Some("serve") => {}
        Some(other) => {
            return Err(format!(
                "unknown command {other:?}: the command is `rwsgi serve` (see --help)"
            ))
        }
    }
    let mut values: Vec<(String, String)> = Vec::new();
    let mut flags: Vec<String> = Vec::new();
    let mut scripts: Vec<String> = Vec::new();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        if arg == "-V" || arg == "--version" {
            return Ok(Command::Version);
        }
        let Some(body) = arg.strip_prefix("--") else {
            if arg.starts_with('-') {
                return Err(format!("unknown option {arg} (see --help)"));
            }
            scripts.push(arg);
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        if FLAGS.contains(&name) {
            if inline.is_some() {
                return Err(format!("--{name} takes no value"));
            }
            flags.push(name.to_owned());
        } else if VALUE_OPTIONS.contains(&name) {
            let value = match inline {
                Some(v) => v,
                None => it.next().ok_or(format!("--{name} needs a value"))?,
            };
            values.push((name.to_owned(), value));
        } else {
            return Err(format!("unknown option --{name} (see --help)"));
        }
    }
    build(values, flags, scripts).map(|o| Command::Serve(Box::new(o)))
}

/// Turns the collected words into [`Options`], checking each value and the combinations.
fn build(
    values: Vec<(String, String)>,
    flags: Vec<String>,
    scripts: Vec<String>,
) -> Result<Options, String> {
    let mut o = Options {
        app: AppSource::Module(String::new()),
        callable: "application".to_owned(),
        python_home: None,
        python_path: Vec::new(),
        server: Server {
            host: "127.0.0.1".to_owned(),
            port: 8000,
            processes: 1,
            threads: 5,
            daemon: flags.iter().any(|f| f == "daemon"),
            request_timeout: None,
            limit_request_body: 10 * 1024 * 1024,
            access_log: flags.iter().any(|f| f == "access-log"),
            reload_on_change: flags.iter().any(|f| f == "reload-on-change"),
        },
        statics: Vec::new(),
        user: None,
        setup_only: None,
        nginx: None,
        nginx_module: None,
    };
    let mut module: Option<String> = None;
    let mut callable: Option<String> = None;
    for (name, value) in values {
        let once = |o: bool| {
            if o {
                Err(format!("--{name} is given twice"))
            } else {
                Ok(())
            }
        };
        match name.as_str() {
            "module" => {
                once(module.is_some())?;
                module = Some(value);
            }
            "callable" => {
                once(callable.is_some())?;
                callable = Some(identifier("callable", &value)?);
            }
            "python-home" => {
                once(o.python_home.is_some())?;
                o.python_home = Some(non_empty_path(&name, value)?);
            }
            "python-path" => {
                for part in value.split(':').filter(|p| !p.is_empty()) {
                    o.python_path.push(PathBuf::from(part));
                }
            }
            "host" => o.server.host = host(&value)?,
            "port" => o.server.port = number(&name, &value, 1, 65535)? as u16,
            "processes" => o.server.processes = number(&name, &value, 1, MAX_COUNT as u64)? as u32,
            "threads" => o.server.threads = number(&name, &value, 1, MAX_COUNT as u64)? as u32,
            "request-timeout" => o.server.request_timeout = Some(seconds(&name, &value)?),
            "static" => o.statics.push(static_mapping(&value)?),
            "limit-request-body" => {
                o.server.limit_request_body = number(&name, &value, 0, u64::MAX)?;
            }
            "user" => o.user = Some(value),
            "setup-only" => o.setup_only = Some(non_empty_path(&name, value)?),
            "nginx" => o.nginx = Some(non_empty_path(&name, value)?),
            "nginx-module" => o.nginx_module = Some(non_empty_path(&name, value)?),
            _ => unreachable!("VALUE_OPTIONS and this match list the same names"),
        }
    }
    let (app, callable) = app_source(&scripts, module, callable)?;
    o.app = app;
    if let Some(c) = callable {
        o.callable = c;
    }
    check_combinations(&o)?;
    Ok(o)
}

/// The app (one script argument, or --module) and the callable the command line names, if any.
fn app_source(
    scripts: &[String],
    module: Option<String>,
    callable: Option<String>,
) -> Result<(AppSource, Option<String>), String> {
    match (scripts, module) {
        ([], None) => {
            Err("name the app: rwsgi serve APP.py, or --module PACKAGE.MODULE".to_owned())
        }
        ([script], None) => Ok((AppSource::Script(PathBuf::from(script)), callable)),
        ([], Some(m)) => {
            let (name, from_module) = module_spec(&m)?;
            if let (Some(a), Some(b)) = (&from_module, &callable) {
                if a != b {
                    return Err(format!(
                        "--module {m} names the callable {a:?} but --callable says {b:?}"
                    ));
                }
            }
            Ok((AppSource::Module(name), callable.or(from_module)))
        }
        ([_], Some(_)) => Err("give either APP.py or --module, not both".to_owned()),
        (many, _) => Err(format!(
            "one app per server: got {} script arguments ({})",
            many.len(),
            many.join(" ")
        )),
    }
}

/// Options that are fine alone but not together.
fn check_combinations(o: &Options) -> Result<(), String> {
    if o.server.reload_on_change && o.setup_only.is_some() {
        return Err(
            "--reload-on-change is for the foreground server, not --setup-only \
             (reload a set-up server with `nginxctl reload`)"
                .to_owned(),
        );
    }
    Ok(())
}

fn non_empty_path(name: &str, value: String) -> Result<PathBuf, String> {
    if value.is_empty() {
        return Err(format!("--{name} needs a path"));
    }
    Ok(PathBuf::from(value))
}

fn number(name: &str, value: &str, min: u64, max: u64) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ if max == u64::MAX => Err(format!("--{name}: expected a whole number, got {value:?}")),
        _ => Err(format!(
            "--{name}: expected a whole number from {min} to {max}, got {value:?}"
        )),
    }
}

fn seconds(name: &str, value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(s),
        _ => Err(format!(
            "--{name}: expected a number of seconds above 0, got {value:?}"
        )),
    }
}

fn host(value: &str) -> Result<String, String> {
    let bare = value.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() || bare == "localhost" {
        return Ok(bare.to_owned());
    }
    Err(format!(
        "--host: expected an IP address (127.0.0.1, 0.0.0.0, ::1) or localhost, got {value:?}"
    ))
}

fn identifier(name: &str, value: &str) -> Result<String, String> {
    if uwsgi_ini::is_identifier(value) {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "--{name}: expected a Python identifier, got {value:?}"
        ))
    }
}

/// `pkg.mod` or `pkg.mod:callable`, by the parser every rwsgi configuration shares.
fn module_spec(value: &str) -> Result<(String, Option<String>), String> {
    let spec = uwsgi_ini::ModuleSpec::parse(value).map_err(|e| format!("--module: {e}"))?;
    Ok((spec.module, spec.callable))
}

/// `URL=DIR`: URL is a path prefix other than `/` (that is the app).
fn static_mapping(value: &str) -> Result<(String, PathBuf), String> {
    let Some((url, dir)) = value.split_once('=') else {
        return Err(format!(
            "--static: expected URL=DIR such as /static=./static, got {value:?}"
        ));
    };
    if !url.starts_with('/') || url.trim_end_matches('/').is_empty() || dir.is_empty() {
        return Err(format!(
            "--static: expected URL=DIR with a URL prefix below / (the app has /), got {value:?}"
        ));
    }
    Ok((url.to_owned(), PathBuf::from(dir)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<Options, String> {
        let all = std::iter::once("serve").chain(args.iter().copied());
        match parse(all.map(str::to_owned))? {
            Command::Serve(o) => Ok(*o),
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn defaults_follow_mod_wsgi_express() {
        let o = serve(&["app.py"]).unwrap();
        assert_eq!(o.app, AppSource::Script("app.py".into()));
        assert_eq!((o.server.host.as_str(), o.server.port), ("127.0.0.1", 8000));
        assert_eq!(
            (o.server.processes, o.server.threads, o.server.daemon),
            (1, 5, false)
        );
        assert_eq!(o.callable, "application");
        assert_eq!(o.server.limit_request_body, 10 * 1024 * 1024);
    }

    #[test]
    fn every_option_both_spellings() {
        let o = serve(&[
            "--module=mysite.wsgi:app",
            "--port",
            "9000",
            "--host=0.0.0.0",
            "--processes=2",
            "--threads",
            "8",
            "--daemon",
            "--request-timeout=2.5",
            "--static",
            "/static=./static",
            "--static=/media/=/srv/media",
            "--python-home=/venv",
            "--python-path=/a:/b",
            "--python-path",
            "/c",
            "--reload-on-change",
            "--access-log",
            "--user=app",
            "--limit-request-body=0",
        ])
        .unwrap();
        assert_eq!(o.app, AppSource::Module("mysite.wsgi".into()));
        assert_eq!(o.callable, "app");
        assert_eq!((o.server.port, o.server.host.as_str()), (9000, "0.0.0.0"));
        assert_eq!(
            (o.server.processes, o.server.threads, o.server.daemon),
            (2, 8, true)
        );
        assert_eq!(o.server.request_timeout, Some(2.5));
        assert_eq!(o.statics.len(), 2);
        assert_eq!(o.python_path, ["/a", "/b", "/c"].map(PathBuf::from));
        assert!(o.server.reload_on_change && o.server.access_log);
        assert_eq!(o.server.limit_request_body, 0);
    }

    #[test]
    fn mistakes_are_named() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "name the app"),
            (&["a.py", "b.py"], "one app per server"),
            (&["a.py", "--module", "m"], "not both"),
            (&["--module", "my-site.wsgi"], "dotted module name"),
            (&["--module", "m:a", "--callable", "b"], "--callable says"),
            (
                &["a.py", "--port", "0"],
                "--port: expected a whole number from 1 to 65535",
            ),
            (&["a.py", "--threads", "x"], "--threads"),
            (&["a.py", "--static", "static"], "URL=DIR"),
            (&["a.py", "--static", "/=./s"], "below /"),
            (&["a.py", "--host", "example.org"], "--host"),
            (&["a.py", "--bogus"], "unknown option --bogus"),
            (&["a.py", "--daemon=1"], "takes no value"),
            (&["a.py", "--port"], "--port needs a value"),
            (
                &["a.py", "--setup-only", "/d", "--reload-on-change"],
                "foreground",
            ),
        ];
        for (args, needle) in cases {
            let err = serve(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn help_and_version_anywhere() {
        for args in [&["--help"][..], &["serve", "-h"], &[]] {
            let c = parse(args.iter().map(|s| s.to_string())).unwrap();
            assert!(matches!(c, Command::Help));
        }
        let c = parse(["serve", "app.py", "-V"].map(String::from)).unwrap();
        assert!(matches!(c, Command::Version));
        assert!(parse(["start".to_owned()])
            .unwrap_err()
            .contains("rwsgi serve"));
    }
}
