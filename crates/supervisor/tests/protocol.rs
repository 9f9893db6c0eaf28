//! The uwsgi side of rwsgi-worker: requests, bodies, malformed packets, vars handling.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{parse_response, raw_exchange, request, vars, Server};

#[test]
fn hello_with_http11_status_line() {
    let s = Server::start(&["--processes", "1", "--threads", "2"], 1);
    let r = s.get("/hello");
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert!(r
        .headers
        .contains(&("Content-Type".into(), "text/plain".into())));
    assert_eq!(r.text(), "hello path=/hello script= query=");
    let env = s.get("/env").text();
    assert!(env.contains(r#""wsgi.multithread": true"#), "{env}");
    assert!(env.contains(r#""wsgi.multiprocess": false"#), "{env}");
    assert!(env.contains(r#""wsgi.run_once": false"#), "{env}");
}

#[test]
fn post_body_is_echoed_whole_and_streamed_in() {
    let s = Server::start(&["--processes", "1", "--threads", "2"], 1);
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = request(&s.socket, &vars("POST", "/echo"), &body).unwrap();
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "echoed body differs");

    // Head and body dribbled in small pieces with pauses: the worker must assemble them.
    let small = b"0123456789abcdefghij".repeat(50);
    let bytes = common::packet(&vars("POST", "/echo"), &small);
    let mut c = UnixStream::connect(&s.socket).unwrap();
    for piece in bytes.chunks(97) {
        c.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    assert_eq!(parse_response(&raw).unwrap().body, small);
}

#[test]
fn unread_body_does_not_break_the_response() {
    let s = Server::start(&["--processes", "1", "--threads", "1"], 1);
    // /hello never reads wsgi.input; the worker drains it so the close is clean.
    let body = vec![b'x'; 500_000];
    let r = request(&s.socket, &vars("POST", "/hello"), &body).unwrap();
    assert_eq!(r.text(), "hello path=/hello script= query=");
}

fn le16(n: usize) -> [u8; 2] {
    (n as u16).to_le_bytes()
}

#[test]
fn malformed_packets_close_only_that_connection() {
    let s = Server::start(
        &[
            "--processes",
            "1",
            "--threads",
            "1",
            "--socket-timeout",
            "1",
        ],
        1,
    );
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    cases.push(("two header bytes", vec![0, 10]));
    let mut short = vec![0];
    short.extend_from_slice(&le16(100));
    short.push(0);
    short.extend_from_slice(b"only ten b");
    cases.push(("block shorter than declared", short));
    let mut empty_key = vec![0];
    empty_key.extend_from_slice(&le16(5));
    empty_key.push(0);
    empty_key.extend_from_slice(&[0, 0, 1, 0, b'v']);
    cases.push(("empty key", empty_key));
    let mut past_end = vec![0];
    past_end.extend_from_slice(&le16(6));
    past_end.push(0);
    past_end.extend_from_slice(&[4, 0, b'K', b'E', b'Y', b'S']);
    cases.push(("key length past the end", past_end));
    let mut value_past = vec![0];
    value_past.extend_from_slice(&le16(7));
    value_past.push(0);
    value_past.extend_from_slice(&[1, 0, b'K', 0xff, 0xff, b'v', b'v']);
    cases.push(("value length past the end", value_past));
    let mut huge = vec![0, 0xff, 0xff, 0];
    huge.extend(std::iter::repeat_n(0xAB, 65_535));
    cases.push(("65,535 bytes of garbage vars", huge));
    let mut modifier = common::packet(&vars("GET", "/hello"), b"");
    modifier[0] = 5;
    cases.push(("modifier1 5", modifier));
    cases.push((
        "text garbage",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ));
    let mut bad_cl = vars("POST", "/echo");
    bad_cl.retain(|(k, _)| k != "CONTENT_LENGTH");
    bad_cl.push(("CONTENT_LENGTH".into(), "-5".into()));
    cases.push(("negative CONTENT_LENGTH", common::packet(&bad_cl, b"")));

    for (name, bytes) in &cases {
        let started = Instant::now();
        let out = raw_exchange(&s.socket, bytes, true);
        assert!(
            out.as_ref().map_or(true, |b| b.is_empty()),
            "{name}: expected a bare close, got {out:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{name}: took {:?}",
            started.elapsed()
        );
        assert_eq!(
            s.get("/hello").status_line,
            "HTTP/1.1 200 OK",
            "after {name}"
        );
    }
    // A head that never completes: closed after --socket-timeout, not held forever.
    let started = Instant::now();
    let out = raw_exchange(&s.socket, &[0, 50, 0, 0, 3], false);
    assert!(out.map_or(true, |b| b.is_empty()));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    // The app ran only for the valid requests: one /hello after each case, plus this /calls.
    assert_eq!(s.get("/calls").text(), (cases.len() + 1).to_string());
    // One line per case (and one for the head that never completed), the rate limit's
    // summaries included.
    s.wait_log_events("RW030", cases.len() + 1, Duration::from_secs(5));
}

/// More vars than the worker takes (a request with 600 headers through stock nginx): 431, not a
/// bare close, so any front end gives its client a clear status; the body is read away so the
/// answer is not reset away; the app does not run.
#[test]
fn too_many_vars_answer_431() {
    let s = Server::start(&["--processes", "1", "--threads", "1"], 1);
    let mut many = vars("POST", "/echo");
    for i in 0..600 {
        many.push((format!("HTTP_X_H{i}"), "v".into()));
    }
    let body = vec![b'b'; 1 << 20];
    many.retain(|(k, _)| k != "CONTENT_LENGTH");
    many.push(("CONTENT_LENGTH".into(), body.len().to_string()));
    let raw = raw_exchange(&s.socket, &common::raw_packet(&many, &body), false).unwrap();
    let r = common::parse_response(&raw).unwrap();
    assert_eq!(
        r.status_line,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    s.wait_log_count("RW030 answering 431", 1, Duration::from_secs(5));
    assert_eq!(s.get("/calls").text(), "1", "only this request ran the app");
}

#[test]
fn uwsgi_code_loading_vars_are_ignored() {
    let s = Server::start(&["--processes", "1", "--threads", "1"], 1);
    std::fs::write(
        s.dir.path("evil.py"),
        "def application(e, s):\n    s('200 OK', [])\n    return [b'evil']\n",
    )
    .unwrap();
    let mut v = vars("GET", "/env");
    let evil = s.dir.path("evil.py").display().to_string();
    v.push(("UWSGI_FILE".into(), evil.clone()));
    v.push(("UWSGI_SCRIPT".into(), "evil".into()));
    v.push(("UWSGI_CHDIR".into(), s.dir.0.display().to_string()));
    v.push(("uwsgi_module".into(), "evil".into()));
    let r = request(&s.socket, &v, b"").unwrap();
    let env = r.text();
    assert!(env.starts_with('{'), "{env}");
    assert!(!env.to_ascii_uppercase().contains("UWSGI_"), "{env}");
}

#[test]
fn script_name_is_stripped_from_path_info() {
    let s = Server::start(&["--processes", "1", "--threads", "1"], 1);
    let with = |script: &str, path: &str| {
        let mut v = vars("GET", path);
        v.push(("SCRIPT_NAME".into(), script.into()));
        request(&s.socket, &v, b"").unwrap().text()
    };
    assert_eq!(
        with("/app", "/app/x/y"),
        "hello path=/x/y script=/app query="
    );
    assert_eq!(with("/app/", "/app/x"), "hello path=/x script=/app query=");
    assert_eq!(with("/app", "/app"), "hello path= script=/app query=");
    // Not at a segment boundary: left alone.
    assert_eq!(
        with("/app", "/application"),
        "hello path=/application script=/app query="
    );
}

#[test]
fn mount_prefix_and_request_uri_fallback() {
    let s = Server::start(&["--processes", "1", "--threads", "1", "--mount", "/m/"], 1);
    assert_eq!(s.get("/m/a").text(), "hello path=/a script=/m query=");
    assert_eq!(s.get("/mm").text(), "hello path=/mm script= query=");
    // No PATH_INFO: derived from REQUEST_URI, percent-decoded, query split off.
    let mut v = vars("GET", "");
    v.retain(|(k, _)| k != "PATH_INFO" && k != "QUERY_STRING" && k != "REQUEST_URI");
    v.push(("REQUEST_URI".into(), "/m/a%20b?q=1".into()));
    assert_eq!(
        request(&s.socket, &v, b"").unwrap().text(),
        "hello path=/a b script=/m query=q=1"
    );
}

#[test]
fn file_wrapper_goes_out_whole() {
    let dir = common::TempDir::new();
    let data: Vec<u8> = (0..1_500_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.path("data.bin"), &data).unwrap();
    let s = Server::start_with(dir, common::APP, &["--processes", "1", "--threads", "1"], 1);
    let r = s.get("/file");
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.body.len(), data.len());
    assert!(r.body == data);
}

#[test]
fn tcp_socket_on_a_free_port() {
    let dir = common::TempDir::new();
    std::fs::write(dir.path("app.py"), common::APP).unwrap();
    let mut child = std::process::Command::new(common::bin())
        .args(["--socket", "127.0.0.1:0", "--script"])
        .arg(dir.path("app.py"))
        .args(["--processes", "1", "--threads", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0,
            "no RW001 line"
        );
        if let Some(rest) = line.split("RW001 listening on ").nth(1) {
            break rest.split(':').take(2).collect::<Vec<_>>().join(":");
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.write_all(&common::packet(&vars("GET", "/t"), b""))
        .unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    assert_eq!(
        parse_response(&raw).unwrap().text(),
        "hello path=/t script= query="
    );
    // SAFETY: our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn uwsgi_scheme_sets_the_url_scheme() {
    let s = Server::start(&["--processes", "1", "--threads", "1"], 1);
    let scheme = |extra: &[(&str, &str)]| {
        let mut v = vars("GET", "/env");
        v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let env = request(&s.socket, &v, b"").unwrap().text();
        let at = env
            .find(r#""wsgi.url_scheme": ""#)
            .expect("url_scheme in environ")
            + 20;
        env[at..].split('"').next().unwrap_or("").to_string()
    };
    assert_eq!(scheme(&[]), "http");
    assert_eq!(scheme(&[("HTTPS", "on")]), "https");
    assert_eq!(scheme(&[("UWSGI_SCHEME", "https")]), "https");
    assert_eq!(scheme(&[("HTTPS", "on"), ("UWSGI_SCHEME", "http")]), "http");
    assert_eq!(scheme(&[("UWSGI_SCHEME", "gopher")]), "http");
}

#[test]
fn several_scripts_in_one_group() {
    let dir = common::TempDir::new();
    for name in ["a", "b"] {
        let app = format!(
            "def application(environ, start_response):\n    body = ('{name} path=%s script=%s' % (environ['PATH_INFO'], environ['SCRIPT_NAME'])).encode()\n    start_response('200 OK', [('Content-Length', str(len(body)))])\n    return [body]\n"
        );
        std::fs::write(dir.path(&format!("{name}.py")), app).unwrap();
    }
    let a = format!("/a={}", dir.path("a.py").display());
    let b = format!("/b/deeper={}", dir.path("b.py").display());
    let s = Server::start_with(
        dir,
        common::APP,
        &[
            "--processes",
            "1",
            "--threads",
            "2",
            "--mount",
            &a,
            "--mount",
            &b,
        ],
        1,
    );
    assert_eq!(s.get("/x").text(), "hello path=/x script= query=");
    assert_eq!(s.get("/a/q").text(), "a path=/q script=/a");
    assert_eq!(s.get("/a").text(), "a path= script=/a");
    assert_eq!(s.get("/ab").text(), "hello path=/ab script= query=");
    assert_eq!(s.get("/b/deeper/z").text(), "b path=/z script=/b/deeper");
    assert_eq!(s.get("/b/z").text(), "hello path=/b/z script= query=");
    // The front end's SCRIPT_NAME selects the app.
    let mut v = vars("GET", "/a/q");
    v.push(("SCRIPT_NAME".into(), "/a".into()));
    assert_eq!(
        request(&s.socket, &v, b"").unwrap().text(),
        "a path=/q script=/a"
    );
}

#[test]
fn a_path_that_repeats_the_mount_is_stripped_once() {
    let s = Server::start(
        &["--processes", "1", "--threads", "1", "--mount", "/app"],
        1,
    );
    let send = |path_info: &str| {
        let mut v = vars("GET", path_info);
        v.retain(|(k, _)| k != "REQUEST_URI");
        v.push(("REQUEST_URI".into(), "/app/app/x?q=1".into()));
        v.push(("SCRIPT_NAME".into(), "/app".into()));
        request(&s.socket, &v, b"").unwrap().text()
    };
    // nginx (uwsgi_params + uwsgi_param SCRIPT_NAME /app): PATH_INFO is the whole path.
    assert_eq!(send("/app/app/x"), "hello path=/app/x script=/app query=");
    // Apache mod_proxy_uwsgi (ProxyPass /app): PATH_INFO is already the part after /app.
    assert_eq!(send("/app/x"), "hello path=/app/x script=/app query=");
}

#[test]
fn our_front_ends_state_the_path_info_form() {
    let s = Server::start(
        &["--processes", "1", "--threads", "1", "--mount", "/app"],
        1,
    );
    let send = |path_info: &str, form: &str| {
        let mut v = vars("GET", path_info);
        // A REQUEST_URI that cannot arbitrate (an internal redirect): only the form can tell.
        v.retain(|(k, _)| k != "REQUEST_URI");
        v.push(("REQUEST_URI".into(), "/elsewhere".into()));
        v.push(("SCRIPT_NAME".into(), "/app".into()));
        v.push(("RWSGI_PATH_INFO_FORM".into(), form.into()));
        request(&s.socket, &v, b"").unwrap().text()
    };
    // Our nginx module: the whole path, stripped once.
    assert_eq!(
        send("/app/app/x", "full"),
        "hello path=/app/x script=/app query="
    );
    // Our Apache module: httpd's PATH_INFO, the part after the alias, taken as it is.
    assert_eq!(
        send("/app/x", "split"),
        "hello path=/app/x script=/app query="
    );
    assert_eq!(send("/x", "split"), "hello path=/x script=/app query=");
    // The contract's vars are the worker's, never the app's.
    let mut v = vars("GET", "/env");
    v.push(("RWSGI_REQUEST_START".into(), "1700000000000000".into()));
    v.push(("RWSGI_ABORT_MARK".into(), "1".into()));
    v.push(("RWSGI_PATH_INFO_FORM".into(), "full".into()));
    let env = request(&s.socket, &v, b"").unwrap().text();
    assert!(env.starts_with('{') && !env.contains("RWSGI_"), "{env}");
}

#[test]
fn no_descriptor_leaks_into_the_apps_subprocesses() {
    let dir = common::TempDir::new();
    let out = dir.path("fds.txt");
    let app = format!(
        "import os\ndef application(environ, start_response):\n    os.system('ls -l /proc/self/fd/ > {}')\n    start_response('200 OK', [('Content-Length', '2')])\n    return [b'ok']\n",
        out.display()
    );
    let s = Server::start_with(dir, &app, &["--processes", "1", "--threads", "2"], 1);
    assert_eq!(s.get("/").text(), "ok");
    let listing = std::fs::read_to_string(&out).unwrap();
    // ls's own directory fd aside, only stdin/stdout/stderr: no listening socket, no client
    // connection, no pipes of the supervisor or the worker.
    let leaked: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains("socket:") || l.contains("pipe:") || l.contains("anon_inode"))
        .filter(|l| !l.contains(" 0 -> ") && !l.contains(" 1 -> ") && !l.contains(" 2 -> "))
        .collect();
    assert!(leaked.is_empty(), "{listing}");
}
