//! The ini reader on whole files: the repository's Django deployment file, every kind of
//! problem reported at once, and each mapped option.

use std::path::{Path, PathBuf};
use std::time::Duration;

use uwsgi_ini::{
    parse, read, Address, App, AppSource, Context, IniConfig, IniError, Protocol, Socket,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ctx() -> Context {
    let mut ctx = Context::for_file("/srv/mysite/deploy/uwsgi.ini", None, "/home/deploy");
    ctx.env.insert("VENV".into(), "/srv/venv".into());
    ctx.cpus = 4;
    ctx
}

fn config(body: &str) -> IniConfig {
    parse(&format!("[uwsgi]\n{body}"), &ctx()).unwrap_or_else(|e| panic!("{e}"))
}

/// The (line, key, message) of every problem, or a panic if the file parses.
fn problems(body: &str) -> Vec<(usize, String, String)> {
    match parse(&format!("[uwsgi]\n{body}"), &ctx()) {
        Err(IniError::Unsupported { problems, .. }) => problems
            .into_iter()
            .map(|p| (p.line, p.key, p.message))
            .collect(),
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn the_django_deployment_file() {
    let file = repo().join("tests/apps/django_project/uwsgi.ini");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut ctx = Context::for_file(&file, None, "/");
    ctx.env.insert("RWSGI_TEST_VENV".into(), "/opt/venv".into());
    ctx.env
        .insert("RWSGI_TEST_SOCKET".into(), "/run/test/app.sock".into());
    let config = parse(&text, &ctx).unwrap_or_else(|e| panic!("{e}"));
    let project = file.parent().unwrap();
    assert_eq!(config.chdir.as_deref(), Some(&*project.join("")));
    assert_eq!(
        config.apps,
        [App {
            source: AppSource::Module("testsite.wsgi".into()),
            callable: "application".into(),
            mount: None
        }]
    );
    assert_eq!(config.python_home, Some(PathBuf::from("/opt/venv")));
    assert_eq!(
        config.env,
        [(
            "DJANGO_SETTINGS_MODULE".to_owned(),
            "testsite.settings".to_owned()
        )]
    );
    assert_eq!((config.processes, config.threads), (2, 2));
    assert_eq!(config.request_timeout, Some(Duration::from_secs(30)));
    assert_eq!(config.maximum_requests, 1000);
    assert_eq!(
        config.socket,
        Some(Socket {
            protocol: Protocol::Uwsgi,
            address: Address::Unix("/run/test/app.sock".into())
        })
    );
    assert_eq!(
        (config.socket_mode, config.listen_backlog),
        (Some(0o660), Some(128))
    );
    assert_eq!(
        config.accepted,
        [
            "plugins",
            "master",
            "enable-threads",
            "vacuum",
            "die-on-term"
        ]
    );
}

#[test]
fn the_conformance_file() {
    let file = repo().join("tests/apps/conformance.ini");
    let mut ctx = Context::for_file(&file, None, "/");
    ctx.env
        .insert("RWSGI_TEST_SOCKET".into(), "127.0.0.1:9999".into());
    let config =
        parse(&std::fs::read_to_string(&file).unwrap(), &ctx).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.apps[0].source,
        AppSource::Module("conformance".into())
    );
    assert_eq!(config.python_path, [file.parent().unwrap().join("")]);
    assert_eq!(
        config.socket.unwrap().address,
        Address::Tcp("127.0.0.1:9999".into())
    );
}

#[test]
fn every_problem_in_one_error() {
    let body = "socket = /run/a.sock\n\
                http-socket = :8000\n\
                pidfile = /tmp/app.pid\n\
                daemonize = /var/log/app.log\n\
                max_requests = 5000\n\
                frobnicate = 1\n\
                master = false\n\
                processes = four\n\
                logto = /var/log/uwsgi.log\n\
                need-app = true\n\
                plugins = python3,router_cache\n\
                home = $(NOT_SET)\n\
                socket = /run/b.sock\n";
    let got = problems(body);
    let lines: Vec<(usize, &str)> = got.iter().map(|(l, k, _)| (*l, k.as_str())).collect();
    assert_eq!(
        lines,
        [
            (3, "http-socket"),
            (4, "pidfile"),
            (5, "daemonize"),
            (6, "max_requests"),
            (7, "frobnicate"),
            (8, "master"),
            (9, "processes"),
            (10, "logto"),
            (11, "need-app"),
            (12, "plugins"),
            (13, "home"),
            (14, "socket"),
        ]
    );
    let message = |key: &str| &got.iter().find(|(_, k, _)| k == key).unwrap().2;
    assert!(message("http-socket").contains("speaks uwsgi, SCGI and FastCGI, not HTTP"));
    assert!(message("max_requests").contains("uWSGI spells it max-requests"));
    assert!(message("master").contains("cannot be turned off"));
    assert!(message("processes").contains("whole number"));
    assert!(message("plugins").contains("router_cache"));
    assert!(message("home").contains("NOT_SET is not set"));
    assert!(message("socket").contains("one socket"));

    // The error names the file and section and lists every line.
    let err = parse(&format!("[uwsgi]\n{body}"), &ctx())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "/srv/mysite/deploy/uwsgi.ini [uwsgi]: 12 lines rwsgi-worker cannot honour:"
        ),
        "{err}"
    );
    assert!(
        err.contains("\n  line 4: pidfile: not supported: rwsgi-worker writes no pid file"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 13);
}

#[test]
fn placeholders_are_not_problems_unless_unused() {
    let config = config(
        "project = mysite\nbase = /srv/%(project)\nchdir = %(base)\nset-ph = n=2\nprocesses = %(n)\n",
    );
    assert_eq!(
        (config.chdir, config.processes),
        (Some(PathBuf::from("/srv/mysite")), 2)
    );
    // `base` is only used by chdir; `unused` by nobody.
    let got = problems("base = /srv\nchdir = %(base)\nunused = 1\n");
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, got[0].1.as_str()), (4, "unused"));
    // A refused option stays refused even when referenced: uWSGI would act on it.
    let got = problems("pidfile = /tmp/x.pid\nchdir = %(pidfile)\n");
    assert_eq!(got[0].1, "pidfile");
}

#[test]
fn sockets() {
    let cases: [(&str, Socket); 7] = [
        (
            "socket = /run/app.sock",
            Socket {
                protocol: Protocol::Uwsgi,
                address: Address::Unix("/run/app.sock".into()),
            },
        ),
        (
            "socket = app.sock",
            Socket {
                protocol: Protocol::Uwsgi,
                address: Address::Unix("/home/deploy/app.sock".into()),
            },
        ),
        (
            "chdir = /srv/x\nsocket = app.sock",
            Socket {
                protocol: Protocol::Uwsgi,
                address: Address::Unix("/srv/x/app.sock".into()),
            },
        ),
        (
            "socket = 127.0.0.1:3031",
            Socket {
                protocol: Protocol::Uwsgi,
                address: Address::Tcp("127.0.0.1:3031".into()),
            },
        ),
        (
            "socket = :3031\nprotocol = fastcgi",
            Socket {
                protocol: Protocol::FastCgi,
                address: Address::Tcp("0.0.0.0:3031".into()),
            },
        ),
        (
            "scgi-socket = [::1]:4000",
            Socket {
                protocol: Protocol::Scgi,
                address: Address::Tcp("[::1]:4000".into()),
            },
        ),
        (
            "protocol = scgi\nuwsgi-socket = /a.sock",
            Socket {
                protocol: Protocol::Uwsgi,
                address: Address::Unix("/a.sock".into()),
            },
        ),
    ];
    for (body, expect) in cases {
        assert_eq!(config(body).socket, Some(expect), "{body}");
    }
    for body in [
        "socket = @abstract",
        "socket = =0",
        "socket = host:99999",
        "protocol = http",
        "socket =",
    ] {
        assert_eq!(problems(body).len(), 1, "{body}");
    }
    assert_eq!(config("chmod-socket = 1").socket_mode, Some(0o666));
    assert_eq!(
        config("chown-socket = www-data:www-data")
            .socket_owner
            .as_deref(),
        Some("www-data")
    );
    for body in [
        "chmod-socket =",
        "chmod-socket = 0660",
        "chmod-socket = 8",
        "chown-socket = app:www-data",
    ] {
        assert_eq!(problems(body).len(), 1, "{body}");
    }
}

#[test]
fn applications() {
    let module = |name: &str| AppSource::Module(name.into());
    let app = |source, callable: &str, mount: Option<&str>| App {
        source,
        callable: callable.into(),
        mount: mount.map(Into::into),
    };
    assert_eq!(
        config("module = mysite.wsgi").apps,
        [app(module("mysite.wsgi"), "application", None)]
    );
    assert_eq!(
        config("wsgi = mysite.wsgi:app").apps,
        [app(module("mysite.wsgi"), "app", None)]
    );
    assert_eq!(
        config("callable = app\nmodule = mysite.wsgi").apps,
        [app(module("mysite.wsgi"), "app", None)]
    );
    assert_eq!(
        config("chdir = /srv/site\nwsgi-file = wsgi.py\nmount = /api=api/wsgi.py\nmount = /adm/=admin.wsgi:app\ncallable = handler").apps,
        [
            app(AppSource::Script("/srv/site/wsgi.py".into()), "handler", None),
            app(AppSource::Script("/srv/site/api/wsgi.py".into()), "handler", Some("/api")),
            app(module("admin.wsgi"), "app", Some("/adm")),
        ]
    );
    assert_eq!(config("mount = /=root.py").apps[0].mount, None);
    // uWSGI changes directory at startup: a later chdir line still applies.
    assert_eq!(
        config("wsgi-file = app.py\nchdir = /srv/late").apps[0].source,
        AppSource::Script("/srv/late/app.py".into())
    );
    for body in [
        "module = mysite/wsgi.py",
        "module = mysite.wsgi:create_app()",
        "module = a\nwsgi-file = b.py",
        "mount = api=x.py",
        "mount = /api=mysite.views",
        "callable = not-a-name",
    ] {
        assert_eq!(problems(body).len(), 1, "{body}");
    }
}

#[test]
fn numbers_flags_and_paths() {
    let c = config(
        "workers = 3\nthreads = 8\nmax-requests = 0\nharakiri = 0\nlisten = 1024\nsocket-timeout = 10\n\
         reload-mercy = 30\nworker-reload-mercy = 20\nmaster\nvacuum = 1\nenable-threads = yes\n\
         buffer-size = 32768\nchdir = site\nhome = $(VENV)\npythonpath = lib\npythonpath = /opt/extra\n\
         uid = www-data\ngid = www-data\nenv = A=1\nenv = B=x=y\n",
    );
    assert_eq!((c.processes, c.threads, c.maximum_requests), (3, 8, 0));
    assert_eq!((c.request_timeout, c.listen_backlog), (None, Some(1024)));
    assert_eq!(
        (c.socket_timeout, c.graceful_timeout),
        (Some(Duration::from_secs(10)), Some(Duration::from_secs(20)))
    );
    assert_eq!(c.chdir, Some(PathBuf::from("/home/deploy/site")));
    assert_eq!(c.python_home, Some(PathBuf::from("/srv/venv")));
    assert_eq!(
        c.python_path,
        [
            PathBuf::from("/home/deploy/site/lib"),
            PathBuf::from("/opt/extra")
        ]
    );
    assert_eq!(
        (c.user.as_deref(), c.group.as_deref()),
        (Some("www-data"), Some("www-data"))
    );
    assert_eq!(
        c.env,
        [
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "x=y".to_owned())
        ]
    );
    assert_eq!(
        c.accepted,
        ["master", "vacuum", "enable-threads", "buffer-size"]
    );
    // uWSGI's defaults, not rwsgi-worker's: an app that ran single-threaded stays so.
    let c = config("module = m");
    assert_eq!((c.processes, c.threads), (1, 1));
    for body in [
        "processes = 0",
        "threads = -1",
        "harakiri = 1.5",
        "env = NOVALUE",
        "pythonpath = /srv/*/lib",
        "buffer-size = big",
    ] {
        assert_eq!(problems(body).len(), 1, "{body}");
    }
}

#[test]
fn reading_files_and_sections() {
    let dir = std::env::temp_dir().join(format!("protocols-uwsgi-ini-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("site.ini");
    std::fs::write(
        &file,
        "[uwsgi]\nprocesses = 2\nchdir = %d\n[prod]\nprocesses = 8\nchdir = /srv/%x\n",
    )
    .unwrap();
    let spec = file.to_str().unwrap();
    let c = read(spec).unwrap();
    assert_eq!(
        (c.processes, c.chdir),
        (2, Some(dir.canonicalize().unwrap().join("")))
    );
    let c = read(&format!("{spec}:prod")).unwrap();
    assert_eq!(
        (c.processes, c.chdir),
        (8, Some(PathBuf::from("/srv/prod")))
    );
    assert_eq!(
        read(&format!("{spec}:")).unwrap().processes,
        2,
        "an empty section name is the default"
    );
    assert!(
        matches!(read(&format!("{spec}:staging")), Err(IniError::NoSection { section, .. }) if section == "staging")
    );
    let missing = dir.join("missing.ini");
    let err = read(missing.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, IniError::Read { .. }), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
