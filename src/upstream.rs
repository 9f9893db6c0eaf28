//! Daemon mode's upstream settings: the knobs nginx users know from the uwsgi module
//! (`wsgi_connect_timeout`, `wsgi_read_timeout`, `wsgi_buffering`, ...), typed, inherited and
//! checked here; `daemon.rs` copies the result into the `ngx_http_upstream_conf_t` nginx's
//! upstream machinery reads. Plain Rust, unit-tested without nginx.
//!
//! Inheritance is nginx's: a value set at a level wins, an unset one comes from the enclosing
//! level; the header lists (`wsgi_hide_header`, `wsgi_pass_header`) follow
//! `ngx_conf_set_str_array_slot`, where a level that names any header has its own list. The
//! defaults are the uwsgi module's (ngx_http_uwsgi_merge_loc_conf in nginx 1.22.1), except where
//! [`Resolved`] says why not.
//!
//! These settings only mean something where nginx talks to a daemon group. Set in the block of
//! an embedded `wsgi_script` location they are a configuration error
//! ([`Upstream::first_local`]); inherited from `http` or `server` they apply to the daemon
//! locations below and are ignored by the embedded ones.

use std::time::Duration;

/// A value and where its directive was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At<T> {
    pub value: T,
    pub directive: &'static str,
    pub file: String,
    pub line: usize,
}

impl<T> At<T> {
    /// " in FILE:LINE", for messages found after parsing.
    pub fn place(&self) -> String {
        format!(" in {}:{}", self.file, self.line)
    }
}

/// `wsgi_hide_header` / `wsgi_pass_header` names of one level.
pub type HeaderList = Option<At<Vec<Vec<u8>>>>;

/// The daemon-mode directives as written at one level (`None`: not set here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upstream {
    pub connect_timeout: Option<At<Duration>>,
    pub send_timeout: Option<At<Duration>>,
    pub read_timeout: Option<At<Duration>>,
    pub buffering: Option<At<bool>>,
    pub request_buffering: Option<At<bool>>,
    pub buffer_size: Option<At<usize>>,
    /// `wsgi_buffers NUMBER SIZE`.
    pub buffers: Option<At<(usize, usize)>>,
    pub max_temp_file_size: Option<At<usize>>,
    /// `wsgi_temp_path`: an `ngx_path_t` made by nginx's own path slot (registered for creation
    /// at start-up), kept as an opaque pointer into the configuration pool.
    pub temp_path: Option<At<std::ptr::NonNull<std::ffi::c_void>>>,
    pub intercept_errors: Option<At<bool>>,
    pub hide_headers: HeaderList,
    pub pass_headers: HeaderList,
    /// `wsgi_next_upstream off;`, the only value a daemon group allows (its page says why).
    pub next_upstream: Option<At<()>>,
}

/// Runs `$body` once per field of [`Upstream`], with `$field` bound to its name: the one list of
/// the knobs, so merging and the embedded-location check can never miss one.
macro_rules! for_each_knob {
    ($field:ident => $body:block) => {
        for_each_knob!(@ $field $body; connect_timeout, send_timeout, read_timeout, buffering,
            request_buffering, buffer_size, buffers, max_temp_file_size, temp_path,
            intercept_errors, hide_headers, pass_headers, next_upstream)
    };
    (@ $field:ident $body:block; $($name:ident),*) => {
        $( { macro_rules! $field { ($e:expr) => { $e.$name }; } $body } )*
    };
}

impl Upstream {
    /// nginx's merge: a value set at this level wins.
    pub fn merge(&mut self, prev: &Upstream) {
        for_each_knob!(knob => {
            if knob!(self).is_none() {
                knob!(self).clone_from(&knob!(prev));
            }
        });
    }

    /// The first directive written at this level, with its file and line (call before
    /// [`Upstream::merge`]): an embedded location's block must have none.
    pub fn first_local(&self) -> Option<(&'static str, String, usize)> {
        let mut first: Option<(&'static str, String, usize)> = None;
        for_each_knob!(knob => {
            if let Some(at) = &knob!(self) {
                if first.as_ref().is_none_or(|(_, _, line)| *line > at.line) {
                    first = Some((at.directive, at.file.clone(), at.line));
                }
            }
        });
        first
    }

    /// The values nginx's upstream conf gets, defaults applied and sizes checked as the uwsgi
    /// module checks them. `read_timeout` is the default read timeout (the group's, see
    /// daemon.rs).
    pub fn resolve(&self, read_timeout: Duration) -> Result<Resolved, String> {
        let get =
            |v: &Option<At<Duration>>, default: Duration| v.as_ref().map_or(default, |a| a.value);
        let flag = |v: &Option<At<bool>>, default: bool| v.as_ref().map_or(default, |a| a.value);
        let buffer_size = self.buffer_size.as_ref().map_or(HEAD_BUFFER, |a| a.value);
        let (num, size) = match &self.buffers {
            Some(a) => a.value,
            // Unset: nginx's 8 pages, and more if a larger wsgi_buffer_size needs them (below).
            None => {
                let (num, size) = DEFAULT_BUFFERS;
                (num.max(buffer_size.div_ceil(size) + 1), size)
            }
        };
        let largest = buffer_size.max(size);
        // nginx's uwsgi module: busy buffers (those being sent to the client) default to twice
        // the largest buffer and must leave one buffer for reading. With no
        // wsgi_busy_buffers_size to set, they take as much of that as the buffers allow; only
        // buffers that cannot hold one largest buffer while another is read are refused.
        let busy = (2 * largest).min((num - 1) * size);
        if busy < largest {
            return Err(format!(
                "\"wsgi_buffers {num} {size}\" leave {} bytes for buffers being sent, less than \
                 the largest buffer ({largest} bytes, wsgi_buffer_size or one of wsgi_buffers): \
                 expected (NUMBER - 1) x SIZE >= {largest}{}",
                (num - 1) * size,
                self.buffers.as_ref().map(At::place).unwrap_or_default()
            ));
        }
        let max_temp = self
            .max_temp_file_size
            .as_ref()
            .map_or(MAX_TEMP_FILE, |a| a.value);
        if max_temp != 0 && max_temp < largest {
            let at = self.max_temp_file_size.as_ref();
            return Err(format!(
                "\"wsgi_max_temp_file_size\" must be 0 (no temporary files) or at least the largest \
                 buffer ({largest} bytes, wsgi_buffer_size or one of wsgi_buffers){}",
                at.map(At::place).unwrap_or_default()
            ));
        }
        Ok(Resolved {
            connect_timeout: get(&self.connect_timeout, Duration::from_secs(60)),
            send_timeout: get(&self.send_timeout, Duration::from_secs(60)),
            read_timeout: get(&self.read_timeout, read_timeout),
            buffering: flag(&self.buffering, false),
            request_buffering: flag(&self.request_buffering, true),
            intercept_errors: flag(&self.intercept_errors, false),
            buffer_size,
            buffers: (num, size),
            busy_buffers_size: busy,
            temp_file_write_size: 2 * largest,
            max_temp_file_size: max_temp,
        })
    }
}

/// Room for the worker's response head (status line + headers). The uwsgi module's default is
/// one page (4 KiB); ours is 16 KiB because a head an app can send in embedded mode should not
/// become a 502 when the same app moves to a daemon group, and session cookies, CSP and CORS
/// headers pass 4 KiB more often than nginx's static-content defaults expect.
pub const HEAD_BUFFER: usize = 16 * 1024;
/// `wsgi_buffers` default: the uwsgi module's `8 4k|8k` (one memory page each).
pub const DEFAULT_BUFFERS: (usize, usize) = (8, 4096);
/// `wsgi_max_temp_file_size` default: the uwsgi module's 1 GiB.
pub const MAX_TEMP_FILE: usize = 1024 * 1024 * 1024;

/// Every value `daemon.rs` puts into `ngx_http_upstream_conf_t`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub connect_timeout: Duration,
    pub send_timeout: Duration,
    pub read_timeout: Duration,
    /// Off by default, unlike the uwsgi module: see docs/nginx/wsgi_buffering.md. Responses then
    /// stream as the app produces them, as they do in embedded mode.
    pub buffering: bool,
    pub request_buffering: bool,
    pub intercept_errors: bool,
    pub buffer_size: usize,
    pub buffers: (usize, usize),
    pub busy_buffers_size: usize,
    pub temp_file_write_size: usize,
    pub max_temp_file_size: usize,
}

/// `wsgi_buffers NUMBER SIZE`: at least two buffers, as nginx requires.
pub fn check_buffers(num: usize, size: usize) -> Result<(usize, usize), String> {
    if num < 2 {
        return Err(format!(
            "invalid number of buffers \"{num}\": expected at least 2 (as uwsgi_buffers)"
        ));
    }
    if size == 0 {
        return Err("invalid buffer size \"0\": expected a size such as 4k or 8k".to_string());
    }
    Ok((num, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at<T>(value: T, directive: &'static str, line: usize) -> Option<At<T>> {
        Some(At {
            value,
            directive,
            file: "/etc/nginx/nginx.conf".into(),
            line,
        })
    }

    const GROUP_READ: Duration = Duration::from_secs(300);

    #[test]
    fn defaults_are_the_uwsgi_modules_except_buffering_and_the_head_buffer() {
        let r = Upstream::default().resolve(GROUP_READ).unwrap();
        assert_eq!(r.connect_timeout, Duration::from_secs(60));
        assert_eq!(r.send_timeout, Duration::from_secs(60));
        assert_eq!(r.read_timeout, GROUP_READ);
        assert!(!r.buffering && r.request_buffering && !r.intercept_errors);
        assert_eq!((r.buffer_size, r.buffers), (HEAD_BUFFER, (8, 4096)));
        // 2 x 16 KiB is more than 7 of the 4 KiB buffers: busy buffers take what they can.
        assert_eq!(r.busy_buffers_size, 7 * 4096);
        // A larger head buffer alone gets enough default buffers to pass nginx's rule.
        let big_head = Upstream {
            buffer_size: at(64 * 1024, "wsgi_buffer_size", 5),
            ..Default::default()
        };
        let r = big_head.resolve(GROUP_READ).unwrap();
        assert_eq!(r.buffers, (17, 4096));
        assert_eq!(r.busy_buffers_size, 64 * 1024);
        assert_eq!(r.max_temp_file_size, MAX_TEMP_FILE);
    }

    #[test]
    fn a_level_inherits_what_it_does_not_set() {
        let http = Upstream {
            read_timeout: at(Duration::from_secs(5), "wsgi_read_timeout", 3),
            hide_headers: at(vec![b"X-A".to_vec()], "wsgi_hide_header", 4),
            ..Default::default()
        };
        let mut location = Upstream {
            hide_headers: at(vec![b"X-B".to_vec()], "wsgi_hide_header", 9),
            buffering: at(true, "wsgi_buffering", 10),
            ..Default::default()
        };
        assert_eq!(location.first_local().unwrap().0, "wsgi_hide_header");
        location.merge(&http);
        let r = location.resolve(GROUP_READ).unwrap();
        assert_eq!(r.read_timeout, Duration::from_secs(5));
        assert!(r.buffering);
        // A level that names headers has its own list (ngx_conf_set_str_array_slot).
        assert_eq!(location.hide_headers.unwrap().value, vec![b"X-B".to_vec()]);
        assert_eq!(Upstream::default().first_local(), None);
    }

    #[test]
    fn buffer_sizes_are_checked_like_the_uwsgi_module() {
        let small = Upstream {
            buffers: at((2, 4096), "wsgi_buffers", 7),
            ..Default::default()
        };
        let err = small.resolve(GROUP_READ).unwrap_err();
        assert!(
            err.contains("wsgi_buffers 2 4096") && err.contains("nginx.conf:7"),
            "{err}"
        );
        let ok = Upstream {
            buffer_size: at(4096, "wsgi_buffer_size", 6),
            buffers: at((2, 4096), "wsgi_buffers", 7),
            ..Default::default()
        };
        assert_eq!(ok.resolve(GROUP_READ).unwrap().busy_buffers_size, 4096);
        let temp = Upstream {
            max_temp_file_size: at(1000, "wsgi_max_temp_file_size", 8),
            ..Default::default()
        };
        assert!(temp.resolve(GROUP_READ).unwrap_err().contains("must be 0"));
        let none = Upstream {
            max_temp_file_size: at(0, "wsgi_max_temp_file_size", 8),
            ..Default::default()
        };
        assert_eq!(none.resolve(GROUP_READ).unwrap().max_temp_file_size, 0);
        assert!(check_buffers(1, 4096).is_err());
        assert!(check_buffers(2, 0).is_err());
    }
}
