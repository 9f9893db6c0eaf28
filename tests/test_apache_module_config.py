"""mod_rwsgi's configuration contract, checked with the real `apache2 -t`: the module loads
under the event, worker and prefork MPMs; mod_wsgi's directives are accepted with their syntax;
anything mod_rwsgi does not support fails the config test with a message naming it.
"""

import re

import pytest

from harness import paths
from test_apache_module_embedded import MPMS, config_test, make_apache

ROOT = paths.ROOT


def check(launcher, config: str, **kw):
    return config_test(make_apache(launcher, config, **kw))


@pytest.mark.parametrize("mpm", MPMS)
def test_module_loads_under_each_mpm(launcher, mpm):
    rc, err = check(launcher, "WSGIScriptAlias /app /srv/app.wsgi", mpm=mpm)
    assert rc == 0, err
    assert "Syntax OK" in err


def test_full_directive_set_is_accepted(launcher):
    config = """
        WSGIPythonHome /usr
        WSGIPythonPath /srv/a:/srv/b
        WSGISocketPrefix /var/run/wsgi
        WSGIRestrictEmbedded Off
        WSGIImportScript /srv/app.wsgi process-group=%{GLOBAL} application-group=%{GLOBAL}
        WSGIScriptAlias /app /srv/app.wsgi process-group=%{GLOBAL} application-group=%{GLOBAL} callable-object=app pass-authorization=On request-timeout=30
        WSGIApplicationGroup %{GLOBAL}
        WSGIProcessGroup %{GLOBAL}
        WSGICallableObject application
        WSGIPassAuthorization On
        WSGIChunkedRequest On
        WSGIRequestTimeout 60
        <Location /app>
            WSGICallableObject other
            WSGIApplicationGroup ""
            WSGIRequestTimeout Off
        </Location>
        <VirtualHost 127.0.0.1:*>
            WSGIScriptAlias /v /srv/v.wsgi
        </VirtualHost>
    """
    rc, err = check(launcher, config)
    assert rc == 0, err


@pytest.mark.parametrize("line, needle", [
    ("WSGIScriptAlias /app /srv/app.wsgi script-reloading=Off", "option 'script-reloading' is not supported"),
    ("WSGIScriptAlias /app /srv/app.wsgi application-group=site1", "application group 'site1' is not supported"),
    ("WSGIApplicationGroup %{SERVER}", "application group '%{SERVER}' is not supported"),
    ("WSGIApplicationGroup site1", "application group 'site1' is not supported"),
    ("WSGIProcessGroup %{ENV:GROUP}", "'%{ENV:GROUP}' is not supported"),
    ("WSGIScriptReloading Off", "WSGIScriptReloading is a mod_wsgi directive that mod_rwsgi does not support"),
    ("WSGILazyInitialization On", "WSGILazyInitialization is a mod_wsgi directive"),
    ("WSGIDaemonProcess web stack-size=524288", "option 'stack-size' is not supported"),
    ("WSGIDaemonProcess web threads=zero", 'invalid value "zero" for "threads": expected a number from 1 to 1024'),
    ("WSGIPassAuthorization Maybe", "expected On or Off"),
    ("WSGIRequestTimeout soon", 'WSGIRequestTimeout: invalid value "soon" for "request-timeout": expected a number of seconds'),
    ("WSGIDaemonProcess web\nWSGIScriptAlias /app /srv/app.wsgi process-group=web request-timeout=5",
     "request-timeout= applies to embedded mode; requests here go to daemon group 'web'"),
    ("WSGIScriptAlias /app", "takes a URL path and a script path"),
    ("<VirtualHost *:80>\nWSGIPythonHome /usr\n</VirtualHost>", "WSGIPythonHome cannot occur within"),
    ("WSGIScriptAlias /app /srv/app.wsgi process-group=nosuch", "no WSGIDaemonProcess group of that name"),
])
def test_unsupported_or_invalid_config_fails_naming_it(launcher, line, needle):
    rc, err = check(launcher, line)
    assert rc != 0, f"apache2 -t accepted: {line}"
    assert needle in err, err


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "conf-examples").glob("apache-*.conf")))
def test_conf_examples_pass_config_test(launcher, tmp_path, name):
    """Each conf-examples/apache-*.conf passes `apache2 -t` with the built module swapped in."""
    text = (ROOT / "conf-examples" / name).read_text()
    text = re.sub(r"(?m)^LoadModule rwsgi_module .*$",
                  f"LoadModule rwsgi_module {paths.TARGET / 'release' / 'libmod_rwsgi.so'}", text)
    conf = tmp_path / name
    conf.write_text(text)
    import subprocess
    from harness.apache import _apache_env
    r = subprocess.run([str(paths.APACHE_BIN), "-t", "-f", str(conf)], capture_output=True, text=True,
                       env=_apache_env())
    assert r.returncode == 0, r.stderr
