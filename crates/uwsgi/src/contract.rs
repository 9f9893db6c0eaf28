//! The contract between rwsgi's own front ends and the worker, defined once.
//!
//! In daemon mode the nginx module (`wsgi_process_group`) and the Apache module
//! (`WSGIProcessGroup`) forward each request to a worker of the group (crates/supervisor, the
//! same code as the standalone `rwsgi-worker`) as a uwsgi packet. The packet carries the CGI
//! variables a stock front end would send, plus the vars below, which only our front ends send
//! and the worker consumes (they never reach the app's environ):
//!
//! | var | value | meaning |
//! |---|---|---|
//! | [`REQUEST_START`] | integer microseconds since the Unix epoch | when the front end received the request (the group's `queue-timeout`) |
//! | [`ABORT_MARK`] | `1` | the front end sends [`ABORT_MARK_BYTE`] after a head without Content-Length (see below) |
//! | [`PATH_INFO_FORM`] | `full` or `split` ([`PathInfoForm`]) | whether `PATH_INFO` still holds `SCRIPT_NAME` |
//! | [`APP_MOUNT`] | the mount of the app that serves the request (empty: the group's default app) | sent when `SCRIPT_NAME` is not that mount (an operator's `wsgi_param SCRIPT_NAME`, a rewritten URI): the worker picks the app by it and passes `SCRIPT_NAME` and `PATH_INFO` as sent |
//! | [`SECRET`] | the group's secret | proof that the packet comes from the group's own front end |
//!
//! **The secret.** Anyone who can connect to a group's socket (every local user, for a TCP
//! socket) could otherwise send a packet that sets `REMOTE_USER` or `HTTPS`. The modules make a
//! random secret per group and send it in every packet; the worker refuses a packet without it
//! and compares it in constant time. A stock front end sends it by hand
//! (`uwsgi_param RWSGI_SECRET "...";` for `rwsgi-worker --secret-file`).
//!
//! **Aborted responses.** uwsgi ends a response body at EOF, so "the app failed half-way" needs a
//! signal of its own. Over TCP the worker resets the connection. A unix socket has no reset, but
//! closing one with unread data is an error (`ECONNRESET`) for the reader: so a front end that
//! sent `RWSGI_ABORT_MARK=1` sends one more byte, [`ABORT_MARK_BYTE`], once the whole request is
//! out and a head without Content-Length came back. The worker reads that byte before a clean
//! close and leaves it unread when the app failed, and the front end sees the difference.
//!
//! **PATH_INFO.** Stock front ends disagree: nginx's `uwsgi_params` send the whole path as
//! `PATH_INFO` (with `SCRIPT_NAME` at its front), Apache's `mod_proxy_uwsgi` sends what follows
//! the `ProxyPass` prefix, as CGI does. Our front ends say which with [`PATH_INFO_FORM`]; for the
//! stock ones the worker infers it from `REQUEST_URI`.
//!
//! Stock front ends may set [`REQUEST_START`] by hand (`uwsgi_param RWSGI_REQUEST_START $msec;`),
//! so [`parse_request_start`] also takes nginx's `$msec` (seconds with a fraction) and the
//! `t=` prefix of the common `X-Request-Start` header (docs/rwsgi-worker.md, `--queue-timeout`).
//!
//! ```
//! use uwsgi::contract::{self, FrontEndVars, PathInfoForm};
//!
//! // Front end: add the contract vars to the CGI ones.
//! let ours = FrontEndVars::new(1_700_000_000_123_456, PathInfoForm::Full);
//! let pairs = ours.pairs();
//! assert_eq!(pairs[0], (contract::REQUEST_START, &b"1700000000123456"[..]));
//!
//! // Worker: read them back.
//! let start = contract::parse_request_start(b"1700000000123456").unwrap();
//! assert_eq!(start.as_micros(), 1_700_000_000_123_456);
//! assert_eq!(PathInfoForm::parse(b"full"), Some(PathInfoForm::Full));
//! assert!(contract::is_contract_var(b"RWSGI_ABORT_MARK"));
//! ```

use std::time::Duration;

/// `RWSGI_REQUEST_START`: when the front end received the request, as integer microseconds
/// since the Unix epoch (our front ends' one format; see [`parse_request_start`] for what the
/// worker also accepts).
pub const REQUEST_START: &[u8] = b"RWSGI_REQUEST_START";

/// `RWSGI_ABORT_MARK`: with the value [`ABORT_MARK_ON`], the front end promises the mark byte
/// (module docs, "Aborted responses").
pub const ABORT_MARK: &[u8] = b"RWSGI_ABORT_MARK";

/// The value of [`ABORT_MARK`] that turns the mark on (any other value: no mark is coming).
pub const ABORT_MARK_ON: &[u8] = b"1";

/// The byte a front end sends as the abort mark. The worker reads any one byte as the mark.
pub const ABORT_MARK_BYTE: u8 = b'!';

/// `RWSGI_PATH_INFO_FORM`: which form `PATH_INFO` has, [`PathInfoForm::as_bytes`].
pub const PATH_INFO_FORM: &[u8] = b"RWSGI_PATH_INFO_FORM";

/// `RWSGI_APP_MOUNT`: the URL prefix of the app that serves the request, as the front end
/// routed it (empty: the group's default app). Without it the worker routes by `SCRIPT_NAME`,
/// which an operator may have set to something else for the app to see.
pub const APP_MOUNT: &[u8] = b"RWSGI_APP_MOUNT";

/// `RWSGI_SECRET`: the group's secret (module docs, "The secret").
pub const SECRET: &[u8] = b"RWSGI_SECRET";

/// Every contract var: the worker consumes them and never passes them to the app.
pub const VARS: [&[u8]; 5] = [REQUEST_START, ABORT_MARK, PATH_INFO_FORM, APP_MOUNT, SECRET];

/// True for a var of this contract (exact, case-sensitive match: uwsgi keys are bytes).
pub fn is_contract_var(key: &[u8]) -> bool {
    VARS.contains(&key)
}

/// How `PATH_INFO` relates to `SCRIPT_NAME` in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathInfoForm {
    /// `full`: `PATH_INFO` is the whole request path, `SCRIPT_NAME` included (nginx's way). The
    /// worker removes `SCRIPT_NAME` from its front, once.
    Full,
    /// `split`: `PATH_INFO` is what follows `SCRIPT_NAME`, as CGI defines it (httpd's way). The
    /// worker takes it as it is.
    Split,
}

impl PathInfoForm {
    /// The var's value for this form.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            PathInfoForm::Full => b"full",
            PathInfoForm::Split => b"split",
        }
    }

    /// Reads the var's value; `None` for anything else (the worker then infers the form).
    pub fn parse(value: &[u8]) -> Option<PathInfoForm> {
        match value {
            b"full" => Some(PathInfoForm::Full),
            b"split" => Some(PathInfoForm::Split),
            _ => None,
        }
    }
}

/// When the front end received the request (since the Unix epoch), from a
/// [`REQUEST_START`] value: integer microseconds (our front ends), optionally with the `t=`
/// prefix of the common `X-Request-Start` header, or seconds with a fraction (nginx's `$msec`,
/// set by hand with `uwsgi_param`). `None` for anything else, negative values included.
pub fn parse_request_start(value: &[u8]) -> Option<Duration> {
    let value = value.strip_prefix(b"t=").unwrap_or(value);
    // Our front ends' form, every request when metrics are kept: up to 19 digits (no u64
    // overflow possible), read directly rather than through a UTF-8 check and str::parse.
    if (1..=19).contains(&value.len()) && value.iter().all(u8::is_ascii_digit) {
        let micros = value
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        return Some(Duration::from_micros(micros));
    }
    let text = std::str::from_utf8(value).ok()?;
    if text.contains('.') {
        Duration::try_from_secs_f64(text.parse::<f64>().ok()?).ok()
    } else {
        Some(Duration::from_micros(text.parse().ok()?))
    }
}

/// The contract vars one request of our front ends carries, ready to append to the CGI vars
/// (no allocation: the number is formatted into the struct).
#[derive(Debug, Clone, Copy)]
pub struct FrontEndVars {
    /// Decimal digits of the start time, right-aligned.
    digits: [u8; 20],
    /// Index of the first digit in `digits`.
    first: usize,
    form: PathInfoForm,
}

impl FrontEndVars {
    /// `received_at_micros`: when the front end received the request, in microseconds since the
    /// Unix epoch; `form`: the form of the `PATH_INFO` it sends.
    pub fn new(received_at_micros: u64, form: PathInfoForm) -> FrontEndVars {
        let mut digits = [0u8; 20]; // u64::MAX has 20 digits
        let mut first = digits.len();
        let mut n = received_at_micros;
        loop {
            first -= 1;
            digits[first] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        FrontEndVars {
            digits,
            first,
            form,
        }
    }

    /// `(key, value)` pairs: [`REQUEST_START`], [`ABORT_MARK`] = `1`, [`PATH_INFO_FORM`].
    pub fn pairs(&self) -> [(&'static [u8], &[u8]); 3] {
        [
            (REQUEST_START, &self.digits[self.first..]),
            (ABORT_MARK, ABORT_MARK_ON),
            (PATH_INFO_FORM, self.form.as_bytes()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_end_vars_format_the_start_as_integer_microseconds() {
        for (micros, text) in [
            (0u64, "0"),
            (7, "7"),
            (1_700_000_000_123_456, "1700000000123456"),
            (u64::MAX, "18446744073709551615"),
        ] {
            let vars = FrontEndVars::new(micros, PathInfoForm::Split);
            let pairs = vars.pairs();
            assert_eq!(pairs[0], (REQUEST_START, text.as_bytes()));
            assert_eq!(pairs[1], (ABORT_MARK, &b"1"[..]));
            assert_eq!(pairs[2], (PATH_INFO_FORM, &b"split"[..]));
            // What the front end writes, the worker reads back.
            assert_eq!(
                parse_request_start(pairs[0].1),
                Some(Duration::from_micros(micros))
            );
        }
    }

    #[test]
    fn request_start_values_the_worker_accepts() {
        let us = |n: u64| Some(Duration::from_micros(n));
        assert_eq!(
            parse_request_start(b"1700000000123456"),
            us(1_700_000_000_123_456)
        );
        assert_eq!(
            parse_request_start(b"t=1700000000123456"),
            us(1_700_000_000_123_456)
        );
        // nginx's $msec, as a stock nginx user sets it by hand.
        let msec = parse_request_start(b"1700000000.123").unwrap();
        assert!(msec.abs_diff(Duration::from_millis(1_700_000_000_123)) < Duration::from_micros(1));
        for bad in [
            &b""[..],
            b"soon",
            b"-1",
            b"-1.5",
            b"1e400.",
            b"t=",
            b"12 ",
            b"99999999999999999999",
        ] {
            assert_eq!(
                parse_request_start(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn path_info_forms_round_trip() {
        for form in [PathInfoForm::Full, PathInfoForm::Split] {
            assert_eq!(PathInfoForm::parse(form.as_bytes()), Some(form));
        }
        assert_eq!(PathInfoForm::parse(b"FULL"), None);
        assert_eq!(PathInfoForm::parse(b""), None);
    }

    #[test]
    fn contract_vars_are_exactly_ours() {
        for key in VARS {
            assert!(is_contract_var(key));
        }
        assert!(is_contract_var(b"RWSGI_SECRET"));
        assert!(!is_contract_var(b"RWSGI_OTHER"));
        assert!(!is_contract_var(b"rwsgi_abort_mark"));
        assert!(!is_contract_var(b"PATH_INFO"));
    }
}
