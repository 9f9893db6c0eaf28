"""`wsgi_param NAME VALUE [if_not_empty];` through Debian's real nginx, in both modes: values
with nginx variables, `uwsgi_param`'s inheritance (a level with any wsgi_param replaces the
inherited list) across http, server and location, CGI variables overridden, request headers
replaced or hidden. The mistakes nginx -t refuses are in test_nginx_module_config.py.

mod_wsgi's nearest equivalent is Apache's SetEnv (a fixed value per directory, no variables):
the same environ keys, without nginx's variables.
"""

import json

import pytest
import requests

from harness import http
from harness.ports import free_port
from test_nginx_module_daemon import wait_for
from test_nginx_module_embedded import app_dir, rwsgi_nginx, write_app

APP = """
    import json

    def environ_json(environ, start_response, callable_name):
        body = {k: v for k, v in environ.items() if isinstance(v, str)}
        body["_callable"] = callable_name
        body["_scheme"] = environ["wsgi.url_scheme"]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    def application(environ, start_response):
        return environ_json(environ, start_response, "application")

    def other(environ, start_response):
        return environ_json(environ, start_response, "other")
"""


@pytest.fixture(scope="module", params=["embedded", "daemon"])
def site(request, new_launcher, state_dir):
    lch = new_launcher(f"wsgi-param-{request.param}")
    try:
        app = write_app(app_dir(lch), "params.py", APP)
        daemon = request.param == "daemon"
        group = "wsgi_process_group params;" if daemon else ""
        second = free_port()
        http_block = f"""
            {"wsgi_daemon_process params processes=1 threads=4;" if daemon else ""}
            wsgi_param HTTP_X_LEVEL http;
            wsgi_param HTTP_X_HTTP_ONLY yes;
            server {{
                listen 127.0.0.1:{second};
                location /app/ {{ wsgi_script {app}; {group} }}
            }}
        """
        server = f"""
            wsgi_param HTTP_X_LEVEL server;
            location /inherit/ {{ wsgi_script {app}; {group} }}
            location /replace/ {{
                wsgi_script {app}; {group}
                wsgi_param HTTP_X_LEVEL "location $request_method from $remote_addr";
                wsgi_param REMOTE_USER $arg_user if_not_empty;
                wsgi_param HTTP_X_EMPTY_KEPT $arg_nothing;
            }}
            location /cgi/ {{
                wsgi_script {app}; {group}
                wsgi_callable other;
                wsgi_param SCRIPT_NAME /public;
                wsgi_param HTTPS on;
                wsgi_param REMOTE_USER $http_x_user;
                wsgi_param myapp.setting "x=$arg_x";
            }}
            location /whole/ {{
                wsgi_script {app}; {group}
                wsgi_param SCRIPT_NAME "";
                wsgi_param PATH_INFO $uri;
            }}
            location /headers/ {{
                wsgi_script {app}; {group}
                wsgi_param HTTP_X_FORWARDED_PROTO https;
                wsgi_param HTTP_X_SECRET "";
                wsgi_param HTTP_X_MAYBE $arg_m if_not_empty;
            }}
        """
        nginx = rwsgi_nginx(lch, server, http_block, state_dir=state_dir)
        nginx.second_port = second
        nginx.mode = request.param
        if daemon:
            wait_for(lambda: requests.get(nginx.url("/inherit/"), timeout=5).status_code == 200,
                     what="the daemon group")
        yield nginx
    finally:
        lch.stop_all()


def env(site, path, port=None, **kw):
    port = port or site.port
    r = requests.get(f"http://127.0.0.1:{port}{path}", timeout=10, **kw)
    assert r.status_code == 200, (r.status_code, r.text[:300], site.error_log_text()[-2000:])
    return r.json()


def test_http_level_params_reach_a_server_without_its_own(site):
    e = env(site, "/app/x", port=site.second_port)
    assert (e["HTTP_X_LEVEL"], e["HTTP_X_HTTP_ONLY"]) == ("http", "yes")


def test_a_server_with_params_replaces_the_http_list_and_its_locations_inherit_it(site):
    e = env(site, "/inherit/x")
    assert e["HTTP_X_LEVEL"] == "server"
    assert "HTTP_X_HTTP_ONLY" not in e


def test_a_location_with_params_replaces_the_list_and_values_take_variables(site):
    e = env(site, "/replace/x")
    assert e["HTTP_X_LEVEL"] == "location GET from 127.0.0.1"
    assert "HTTP_X_HTTP_ONLY" not in e
    # if_not_empty: an empty $arg_user sets nothing; without it an empty value is set as "".
    assert "REMOTE_USER" not in e
    assert e["HTTP_X_EMPTY_KEPT"] == ""
    e = env(site, "/replace/x?user=alice")
    assert e["REMOTE_USER"] == "alice"


def test_cgi_variables_are_overridden(site):
    e = env(site, "/cgi/deep/path?x=1", headers={"X-User": "bob"})
    # SCRIPT_NAME is the operator's; PATH_INFO stays what follows the location prefix.
    assert (e["SCRIPT_NAME"], e["PATH_INFO"]) == ("/public", "/deep/path")
    assert e["HTTPS"] == "on" and e["_scheme"] == "https"
    assert e["REMOTE_USER"] == "bob"
    assert e["myapp.setting"] == "x=1"
    # In daemon mode the group serves an app per location; the operator's SCRIPT_NAME must not
    # send the request to another one (the front end names the app's mount to the worker).
    assert e["_callable"] == "other"


def test_script_name_and_path_info_both_set(site):
    e = env(site, "/whole/a/b")
    assert (e["SCRIPT_NAME"], e["PATH_INFO"]) == ("", "/whole/a/b")
    assert e["_callable"] == "application"


def test_header_params_replace_or_hide_the_clients_header(site):
    sent = {"X-Forwarded-Proto": "http", "X-Secret": "from the client", "X-Maybe": "client"}
    e = env(site, "/headers/x", headers=sent)
    assert e["HTTP_X_FORWARDED_PROTO"] == "https"
    # An empty literal only hides the header; a skipped if_not_empty param hides it too, as
    # uwsgi_param does.
    assert "HTTP_X_SECRET" not in e
    assert "HTTP_X_MAYBE" not in e
    e = env(site, "/headers/x?m=param", headers=sent)
    assert e["HTTP_X_MAYBE"] == "param"


def test_a_repeated_header_that_a_param_replaces_is_not_joined(site):
    resp = http.request(site.port, "GET", "/headers/x",
                        headers=[("X-Forwarded-Proto", "http"), ("X-Forwarded-Proto", "ftp")])
    assert resp.status == 200
    assert json.loads(resp.body)["HTTP_X_FORWARDED_PROTO"] == "https"


def test_client_filters_still_apply_next_to_params(site):
    """The operator's params do not open the client filters: a client's Proxy header and a
    header name with '_' still never reach environ."""
    e = env(site, "/headers/x", headers={"Proxy": "http://evil:3128", "X_Forwarded_Proto": "x"})
    assert "HTTP_PROXY" not in e
    assert e["HTTP_X_FORWARDED_PROTO"] == "https"
