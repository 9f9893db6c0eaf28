//! Parsing one option value the way uWSGI reads it, strictly: where uWSGI warns and carries on
//! with a guess (`processes = 4x` runs 4 workers), this is an error naming what was expected.

use std::path::{Path, PathBuf};

use crate::appref::ModuleSpec;
use crate::{Address, AppSource};

/// uWSGI's flags (`uwsgi_opt_true`): false for `false`, `off`, `no` (any case) and `0`; true
/// for anything else, the empty value included (`master` alone, or `master =`).
pub fn truthy(value: &str) -> bool {
    !(["false", "off", "no"]
        .iter()
        .any(|f| value.eq_ignore_ascii_case(f))
        || value == "0")
}

/// A non-negative decimal integer.
pub fn number<T: std::str::FromStr>(value: &str) -> Result<T, String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a whole number, got {value:?}"));
    }
    value
        .parse::<T>()
        .map_err(|_| format!("{value} is too large"))
}

/// A whole number of at least 1.
pub fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(value: &str) -> Result<T, String> {
    let n: T = number(value)?;
    if n < T::from(1) {
        return Err("expected at least 1".into());
    }
    Ok(n)
}

/// A path as uWSGI uses it: relative to the directory it changed to (`chdir`), else to the
/// directory it was started in.
pub fn path(value: &str, base: &Path) -> Result<PathBuf, String> {
    if value.is_empty() {
        return Err("expected a path".into());
    }
    Ok(base.join(value))
}

/// `socket` values: `/path` or `relative.sock` (unix), `HOST:PORT`, `:PORT` (every interface,
/// as uWSGI binds it), `[V6]:PORT`. uWSGI's abstract (`@name`) and inherited (`=N`) sockets
/// have no rwsgi-worker equivalent.
pub fn address(value: &str, base: &Path) -> Result<Address, String> {
    match value.as_bytes().first() {
        None => return Err("expected a unix socket path or HOST:PORT".into()),
        Some(b'@') => {
            return Err("abstract unix sockets (@name) are not supported; use a path".into())
        }
        Some(b'=') => return Err("inherited sockets (=N) are not supported".into()),
        Some(b'/') => return Ok(Address::Unix(PathBuf::from(value))),
        Some(_) => {}
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Ok(Address::Unix(base.join(value)));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "expected HOST:PORT with a port 0..65535, got {value:?}"
        ));
    }
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    Ok(Address::Tcp(format!("{host}:{port}")))
}

/// `chmod-socket`: three octal digits, or `1` for uWSGI's default 666.
pub fn socket_mode(value: &str) -> Result<u32, String> {
    if value == "1" {
        return Ok(0o666);
    }
    if value.len() == 3 && value.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return u32::from_str_radix(value, 8).map_err(|e| e.to_string());
    }
    Err(format!(
        "expected three octal digits such as 660, got {value:?}"
    ))
}

/// `module = pkg.wsgi` or `pkg.wsgi:callable` (the shared [`ModuleSpec`] parser); returns the
/// module and the callable if given. A file name gets a hint towards `wsgi-file`.
pub fn module(value: &str) -> Result<(String, Option<String>), String> {
    match ModuleSpec::parse(value) {
        Ok(spec) => Ok((spec.module, spec.callable)),
        Err(e) if value.ends_with(".py") || value.ends_with(".wsgi") || value.contains('/') => {
            Err(format!("{e} (for a file use wsgi-file)"))
        }
        Err(e) => Err(e),
    }
}

/// `mount = /PREFIX=APP`, APP being a `.py`/`.wsgi` file or `module:callable`, as uWSGI's
/// Python plugin decides (plugins/python: `uwsgi_python_mount_app`).
pub fn mount(value: &str, base: &Path) -> Result<(String, AppSource, Option<String>), String> {
    let Some((prefix, app)) = value.split_once('=') else {
        return Err("expected /PREFIX=APP".into());
    };
    if !prefix.starts_with('/') {
        return Err(format!(
            "expected a URL prefix starting with /, got {prefix:?}"
        ));
    }
    let prefix = prefix.trim_end_matches('/');
    if app.ends_with(".py") || app.ends_with(".wsgi") {
        return Ok((prefix.to_owned(), AppSource::Script(path(app, base)?), None));
    }
    if !app.contains(':') {
        return Err(format!(
            "{app:?} is neither a .py/.wsgi file nor module:callable (uWSGI would not mount it)"
        ));
    }
    let (name, callable) = module(app)?;
    Ok((prefix.to_owned(), AppSource::Module(name), callable))
}
