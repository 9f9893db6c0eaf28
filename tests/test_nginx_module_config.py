"""Configuration of ngx_http_wsgi_module: every mistake fails `nginx -t` with the file, the line
and what is expected; a complete valid configuration passes. Only `nginx -t` runs here.
"""

import re
import subprocess

import pytest

from harness import paths
from test_nginx_module_embedded import make_nginx, write_app, app_dir


def nginx_t(nginx):
    r = subprocess.run([str(paths.NGINX_BIN), "-t", "-p", str(nginx.prefix), "-e", str(nginx.error_log),
                        "-c", str(nginx.conf_path)], capture_output=True, text=True)
    return r.returncode, r.stderr


def line_of(nginx, needle: str) -> int:
    """The line number of the LAST line containing `needle` (the one a duplicate is reported at)."""
    found = [i for i, line in enumerate(nginx.conf_path.read_text().splitlines(), 1) if needle in line]
    assert found, f"{needle!r} not in the config"
    return found[-1]


@pytest.fixture(scope="module")
def app(launcher):
    return write_app(app_dir(launcher), "app.py", """
        def application(environ, start_response):
            start_response("200 OK", [])
            return [b"ok"]
    """)


BAD = [
    # (http snippet, server snippet, the directive line to point at, expected message regex)
    ("wsgi_threads 0;", "", "wsgi_threads", r'invalid value "0": expected a number of threads from 1 to 1024'),
    ("wsgi_threads many;", "", "wsgi_threads", r'invalid value "many"'),
    ("wsgi_threads 2;\nwsgi_threads 3;", "", "wsgi_threads 3", r'"wsgi_threads" directive is duplicate'),
    ("wsgi_daemon_process site bogus=1;", "", "wsgi_daemon_process",
     r'"wsgi_daemon_process" directive: unknown option "bogus": expected one of processes, threads, python-home'),
    ("wsgi_daemon_process site processes=zero;", "", "wsgi_daemon_process",
     r'invalid value "zero" for "processes": expected a number from 1 to 1024'),
    ("wsgi_daemon_process site threads;", "", "wsgi_daemon_process", r'invalid option "threads": expected key=value'),
    ("wsgi_daemon_process site user=root;", "", "wsgi_daemon_process", r'daemons never run as root'),
    ("wsgi_daemon_process site socket=nowhere;", "", "wsgi_daemon_process", r'expected unix:PATH or HOST:PORT'),
    ("wsgi_daemon_process site socket=127.0.0.1:0;", "", "wsgi_daemon_process", r'port 0 is not allowed'),
    ("wsgi_daemon_process site;", "location / {{ wsgi_script {app}; wsgi_process_group site; }}\n"
     "location ~ \\.x$ {{ wsgi_script /other.py; wsgi_process_group site; }}", "location ~",
     r'process group "site" already serves .*app.py \(application\) at "/"; another script at the same location prefix is ambiguous'),
    ("wsgi_daemon_process site;\nwsgi_daemon_process site;", "", "wsgi_daemon_process site;", r'duplicate process group "site"'),
    ("wsgi_daemon_process 'bad name';", "", "wsgi_daemon_process", r'invalid process group name "bad name"'),
    ("wsgi_python_home /nonexistent/venv;", "", "wsgi_python_home", r'"/nonexistent/venv" is not a directory'),
    ("", "location / {{ wsgi_callable 1app; wsgi_script {app}; }}", "wsgi_callable",
     r'invalid value "1app": expected a Python identifier'),
    ("", "location / {{ wsgi_script {app}; wsgi_process_group nope; }}", "wsgi_process_group",
     r'wsgi_process_group "nope" is not declared: add "wsgi_daemon_process nope \.\.\.;" to the http block'),
    ("wsgi_script /x.py;", "", "wsgi_script", r'"wsgi_script" directive is not allowed here'),
    # Found once the whole configuration is read (the group's socket), still at `nginx -t`: a
    # unix socket path over 107 bytes would only fail when the group starts.
    (f"wsgi_daemon_process {'g' * 100};", f"location / {{{{ wsgi_script {{app}}; wsgi_process_group {'g' * 100}; }}}}",
     "wsgi_daemon_process", r"RW-NG060 .*unix socket path longer than 107 bytes: the default socket .* lives in "
     r"the directory of nginx's pid file; use a shorter pid path, or socket=unix:PATH with a shorter PATH"),
    (f"wsgi_daemon_process site socket=unix:/tmp/{'s' * 100}.sock;",
     "location / {{ wsgi_script {app}; wsgi_process_group site; }}", "wsgi_daemon_process",
     r'invalid value for "socket": unix socket path longer than 107 bytes'),
    ("wsgi_daemon_process a socket=unix:/tmp/same.sock;\nwsgi_daemon_process b socket=unix:/tmp/same.sock;",
     "location /a {{ wsgi_script {app}; wsgi_process_group a; }}\nlocation /b {{ wsgi_script {app}; wsgi_process_group b; }}",
     "wsgi_daemon_process b", r"socket unix:/tmp/same.sock is already the socket of group a"),
    ("", "location / {{ wsgi_script {app} extra; }}", "wsgi_script", r'invalid number of arguments in "wsgi_script"'),
    # wsgi_param: what an operator may not set, and the syntax.
    ("wsgi_param HTTP_PROXY http://proxy:3128;", "", "wsgi_param",
     r'"wsgi_param" directive: cannot set "HTTP_PROXY": HTTP_PROXY never reaches an app \(httpoxy'),
    ("", "location / {{ wsgi_script {app}; wsgi_param CONTENT_LENGTH 0; }}", "wsgi_param",
     r'cannot set "CONTENT_LENGTH": the length of the request body is nginx\'s to say'),
    ("wsgi_param HTTP_CONTENT_TYPE text/plain;", "", "wsgi_param", r'content headers are CONTENT_TYPE and CONTENT_LENGTH'),
    ("wsgi_param wsgi.url_scheme https;", "", "wsgi_param", r'wsgi\.\* keys are PEP 3333\'s'),
    ("wsgi_param UWSGI_SCHEME https;", "", "wsgi_param", r'never honoured .*"wsgi_param HTTPS on;"'),
    ("wsgi_param RWSGI_APP_MOUNT /x;", "", "wsgi_param", r'front end/worker contract'),
    ("wsgi_param 'BAD NAME' x;", "", "wsgi_param", r'invalid name "BAD NAME": expected a variable name'),
    ("wsgi_param HTTP_x_forwarded_for x;", "", "wsgi_param", r'a request header is HTTP_ and the header name in upper case'),
    ("wsgi_param REMOTE_USER $remote_user if_empty;", "", "wsgi_param", r'invalid parameter "if_empty": expected if_not_empty'),
    ("wsgi_param REMOTE_USER;", "", "wsgi_param", r'invalid number of arguments in "wsgi_param"'),
    ("wsgi_param REMOTE_USER \"${bad\";", "", "wsgi_param", r'the closing bracket in "bad" variable is missing'),
    # Daemon mode's upstream knobs.
    ("wsgi_read_timeout soon;", "", "wsgi_read_timeout", r'invalid value "soon": expected a time such as 30s'),
    ("wsgi_read_timeout 1s;\nwsgi_read_timeout 2s;", "", "wsgi_read_timeout 2s", r'"wsgi_read_timeout" directive is duplicate'),
    ("wsgi_buffering maybe;", "", "wsgi_buffering", r'invalid value "maybe": expected on or off'),
    ("wsgi_buffer_size lots;", "", "wsgi_buffer_size", r'invalid value "lots": expected a size'),
    ("wsgi_buffers 1 4k;", "", "wsgi_buffers", r'invalid number of buffers "1": expected at least 2'),
    ("wsgi_hide_header X-A:b;", "", "wsgi_hide_header", r'invalid header name "X-A:b"'),
    ("wsgi_next_upstream error timeout;", "", "wsgi_next_upstream",
     r'only "off" is possible: a daemon group listens on one socket'),
    ("wsgi_temp_path wsgi-temp 0;", "", "wsgi_temp_path", r'"wsgi_temp_path" directive invalid value'),
    ("wsgi_daemon_process g;", "location / {{ wsgi_script {app}; wsgi_process_group g;\n wsgi_buffers 2 4k; }}",
     "wsgi_buffers", r'"wsgi_buffers 2 4096" leave 4096 bytes for buffers being sent, less than the largest buffer'),
    ("wsgi_daemon_process g;", "location / {{ wsgi_script {app}; wsgi_process_group g;\n wsgi_max_temp_file_size 1k; }}",
     "wsgi_max_temp_file_size", r'"wsgi_max_temp_file_size" must be 0 \(no temporary files\) or at least'),
    # ... and written in the block of an embedded location, where nothing can apply them.
    ("", "location / {{ wsgi_script {app};\n wsgi_buffering on; }}", "wsgi_buffering",
     r'"wsgi_buffering" applies to daemon mode only \(a location with wsgi_process_group\), but this '
     r'location runs its app embedded in nginx'),
    ("", "location / {{ wsgi_script {app};\n wsgi_hide_header X-A;\n wsgi_read_timeout 5s; }}", "wsgi_hide_header",
     r'"wsgi_hide_header" applies to daemon mode only'),
    ("wsgi_request_timeout 0;", "", "wsgi_request_timeout", r'invalid value "0": expected a time such as 30s or 2m, or off'),
    ("wsgi_request_timeout soon;", "", "wsgi_request_timeout", r'invalid value "soon"'),
    ("", "location / {{ wsgi_request_timeout 5s; wsgi_request_timeout 6s; }}", "wsgi_request_timeout 6s",
     r'"wsgi_request_timeout" directive is duplicate'),
    ("wsgi_daemon_process site;", "location / {{ wsgi_script {app}; wsgi_process_group site; wsgi_request_timeout 5s; }}",
     "wsgi_process_group site", r'"wsgi_request_timeout" applies to embedded mode, and this level sends requests to '
     r'daemon group "site" .*: set request-timeout= on its wsgi_daemon_process'),
]


@pytest.mark.parametrize("http,server,directive,message", BAD, ids=[b[3][:40] for b in BAD])
def test_mistakes_fail_nginx_t_with_file_line_and_expectation(launcher, app, http, server, directive, message):
    nginx = make_nginx(launcher, server.format(app=app), http)
    rc, err = nginx_t(nginx)
    assert rc != 0, err
    assert re.search(message, err), err
    # The error names the config file and the line of the offending directive.
    assert f"{nginx.conf_path}:{line_of(nginx, directive)}" in err, err


def test_full_valid_configuration_passes(launcher, app):
    http = """
        wsgi_python_path /srv/lib:/srv/other;
        wsgi_threads 16;
        wsgi_callable application;
        wsgi_request_timeout 30s;
        wsgi_daemon_process site processes=2 threads=8 python-home=/usr python-path=/srv/a:/srv/b
            user=nobody group=nogroup maximum-requests=1000 request-timeout=30 graceful-timeout=10
            queue-timeout=5 listen-backlog=128 socket=unix:/tmp/rwsgi-site.sock display-name=site-wsgi;
        wsgi_daemon_process tcp socket=127.0.0.1:9999;
        wsgi_param REMOTE_USER $remote_user if_not_empty;
        wsgi_read_timeout 30s;
        wsgi_hide_header X-Powered-By;
    """
    server = f"""
        wsgi_connect_timeout 5s;
        location /embedded/ {{ wsgi_script {app}; wsgi_callable application; wsgi_param HTTPS on; }}
        location = /exact {{ wsgi_script {app}; }}
        location ~ ^/re/ {{ wsgi_script {app}; wsgi_request_timeout off; }}
        location /daemon/ {{
            wsgi_script {app}; wsgi_process_group site;
            wsgi_param SCRIPT_NAME /public; wsgi_param HTTP_X_FORWARDED_PROTO $scheme;
            wsgi_send_timeout 10s; wsgi_read_timeout 2m;
            wsgi_buffering on; wsgi_request_buffering off; wsgi_buffer_size 32k; wsgi_buffers 16 8k;
            wsgi_max_temp_file_size 0; wsgi_temp_path {launcher.base}/wsgi-temp 1 2;
            wsgi_intercept_errors on; wsgi_hide_header X-Internal; wsgi_pass_header X-Accel-Expires;
            wsgi_next_upstream off;
        }}
    """
    nginx = make_nginx(launcher, server, http)
    rc, err = nginx_t(nginx)
    assert rc == 0, err


@pytest.mark.parametrize("name", ["nginx-embedded.conf", "nginx-daemon.conf"])
def test_conf_examples_pass_nginx_t(launcher, name):
    """Each conf-examples/nginx-*.conf passes `nginx -t` with the built module and a stand-in
    /srv/app tree (a venv directory and the scripts) swapped in."""
    from test_nginx_module_embedded import module_path
    srv = launcher._prefix("srv-app")
    for sub in ("venv", "src", "static"):
        (srv / sub).mkdir()
    for script in ("app.py", "admin.py", "health.py"):
        (srv / "src" / script).write_text("def application(e, s):\n    s('200 OK', [])\n    return [b'']\n")
    text = (paths.ROOT / "conf-examples" / name).read_text()
    text = text.replace("/usr/lib/nginx/modules/ngx_http_wsgi_module.so", str(module_path()))
    text = text.replace("/srv/app", str(srv)).replace("/tmp/rwsgi-example", str(srv / "rwsgi-example"))
    conf = srv / name
    conf.write_text(text)
    r = subprocess.run([str(paths.NGINX_BIN), "-t", "-p", str(srv), "-e", str(srv / "error.log"),
                        "-c", str(conf)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
