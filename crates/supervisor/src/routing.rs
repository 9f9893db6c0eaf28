//! Which app serves a request, and its SCRIPT_NAME / PATH_INFO / QUERY_STRING, from what the
//! front end sent: uWSGI's `mount` + `manage-script-name`, with the front end's own SCRIPT_NAME
//! first. No I/O; used by `conn.rs` once per request.
//!
//! The form of PATH_INFO (the whole path, or what follows SCRIPT_NAME) is part of the
//! front-end/worker contract (`uwsgi::contract`): our front ends state it, and for stock front
//! ends (nginx `uwsgi_pass`, Apache `mod_proxy_uwsgi`) it is inferred from REQUEST_URI. SCGI and
//! FastCGI front ends send the CGI view instead (SCRIPT_NAME is the whole path, no PATH_INFO),
//! which [`cgi_gateway`] turns into the uwsgi form first.

use uwsgi::contract::PathInfoForm;

/// The path parts of a request as the front end sent them.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SentPath<'a> {
    pub script_name: Option<&'a [u8]>,
    pub path_info: Option<&'a [u8]>,
    pub query_string: Option<&'a [u8]>,
    pub request_uri: Option<&'a [u8]>,
    /// `DOCUMENT_URI` (nginx's `scgi_params`/`fastcgi_params`: the decoded, rewritten path).
    pub document_uri: Option<&'a [u8]>,
    /// `RWSGI_PATH_INFO_FORM` (our front ends only).
    pub form: Option<PathInfoForm>,
    /// `RWSGI_APP_MOUNT` (our front ends only): the app's mount, when SCRIPT_NAME is not it.
    pub app_mount: Option<&'a [u8]>,
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Routed<'a> {
    /// Index into the group's apps.
    pub app: usize,
    pub script_name: &'a [u8],
    pub path_info: &'a [u8],
    pub query_string: &'a [u8],
}

/// Routes a request among `mounts` (the apps' URL prefixes, `None` = the default app).
/// `decoded` holds PATH_INFO when the front end sent none and it is derived from REQUEST_URI.
pub(crate) fn resolve<'a>(
    sent: &SentPath<'a>,
    mounts: &[Option<&'a [u8]>],
    decoded: &'a mut Vec<u8>,
) -> Routed<'a> {
    // nginx's stock uwsgi_params send PATH_INFO; other front ends may send only REQUEST_URI.
    let (uri_path, uri_query) = sent
        .request_uri
        .map(split_request_uri)
        .unwrap_or((b"", None));
    let path_info: &'a [u8] = match sent.path_info {
        Some(p) => p,
        None => {
            *decoded = percent_decode(uri_path);
            let decoded: &'a Vec<u8> = decoded;
            decoded
        }
    };
    let query_string = sent.query_string.or(uri_query).unwrap_or(b"");
    // Only a PATH_INFO the front end sent can have been split by it.
    let split = sent.path_info.is_some()
        && match sent.form {
            Some(form) => form == PathInfoForm::Split,
            None => already_split(sent.script_name, uri_path, path_info),
        };
    let (app, script_name, path_info) = match sent.app_mount {
        // The front end routed it: SCRIPT_NAME and PATH_INFO are what the app is to see.
        Some(mount) => (
            app_at(mounts, mount),
            sent.script_name.unwrap_or(b""),
            path_info,
        ),
        None => route(sent.script_name, split, mounts, path_info),
    };
    Routed {
        app,
        script_name,
        path_info,
        query_string,
    }
}

/// SCGI and FastCGI front ends send a request's path as CGI sees it: nginx's stock
/// `fastcgi_params` and both Apache modules (`mod_proxy_scgi`, `mod_proxy_fcgi`) put the whole
/// path in SCRIPT_NAME (the "script" is the URL) and send no PATH_INFO; nginx's `scgi_params`
/// send neither, only DOCUMENT_URI and REQUEST_URI. Taken as uwsgi's SCRIPT_NAME, the whole
/// path would be the mount and every app would see an empty PATH_INFO. So the path is handed to
/// [`resolve`] the way a uwsgi front end without SCRIPT_NAME sends it, and the worker's own
/// mounts (`--mount`) split it:
///
/// - a non-empty PATH_INFO means the front end split the path itself (nginx's
///   `fastcgi_split_path_info`, or SCRIPT_NAME and PATH_INFO set by hand): taken as sent, as
///   from a uwsgi front end;
/// - a SCRIPT_NAME that is a proper prefix of the request path at a segment boundary is an
///   operator's `fastcgi_param SCRIPT_NAME /app;`: kept as the mount, and the request path is
///   PATH_INFO (the prefix is removed once, as for uwsgi);
/// - otherwise SCRIPT_NAME is the path itself (or absent): PATH_INFO is the path, taken from
///   SCRIPT_NAME (decoded, and after nginx's rewrites), else DOCUMENT_URI (the same for
///   `scgi_params`), else REQUEST_URI's path, decoded; SCRIPT_NAME is the worker's mount that
///   prefixes it, or empty.
///
/// `decoded` holds REQUEST_URI's decoded path when it is needed.
pub(crate) fn cgi_gateway<'a>(sent: &SentPath<'a>, decoded: &'a mut Vec<u8>) -> SentPath<'a> {
    if sent.path_info.is_some_and(|p| !p.is_empty()) {
        return *sent;
    }
    let uri_path: &'a [u8] = match sent.request_uri {
        Some(uri) => {
            *decoded = percent_decode(split_request_uri(uri).0);
            decoded
        }
        None => b"",
    };
    let script = sent.script_name.filter(|s| !s.is_empty());
    if let Some(prefix) = script.map(trim_slashes).filter(|p| !p.is_empty()) {
        if strip_prefix(prefix, uri_path).is_some_and(|rest| !rest.is_empty()) {
            return SentPath {
                path_info: Some(uri_path),
                form: Some(PathInfoForm::Full),
                ..*sent
            };
        }
    }
    let path = script
        .or(sent.document_uri.filter(|d| !d.is_empty()))
        .unwrap_or(uri_path);
    SentPath {
        script_name: None,
        path_info: Some(path),
        form: Some(PathInfoForm::Full),
        ..*sent
    }
}

/// The app mounted at `mount` (compared without trailing slashes), else the default app (the
/// one without a mount, or the first): an empty `mount` names the default app.
fn app_at(mounts: &[Option<&[u8]>], mount: &[u8]) -> usize {
    let mount = trim_slashes(mount);
    let default = mounts.iter().position(Option::is_none).unwrap_or(0);
    if mount.is_empty() {
        return default;
    }
    mounts
        .iter()
        .position(|m| m.map(trim_slashes) == Some(mount))
        .unwrap_or(default)
}

/// Splits a REQUEST_URI into its path and query (absolute-form URIs lose scheme and authority).
fn split_request_uri(uri: &[u8]) -> (&[u8], Option<&[u8]>) {
    let mut uri = uri;
    for scheme in [&b"http://"[..], b"https://"] {
        if uri.len() > scheme.len() && uri[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &uri[scheme.len()..];
            uri = rest
                .iter()
                .position(|&b| b == b'/')
                .map_or(b"/", |i| &rest[i..]);
        }
    }
    let uri = uri.split(|&b| b == b'#').next().unwrap_or(b"");
    match uri.iter().position(|&b| b == b'?') {
        Some(i) => (&uri[..i], Some(&uri[i + 1..])),
        None => (uri, None),
    }
}

/// `%XX` -> byte; a `%` not followed by two hex digits stays as it is.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Did a stock front end send SCRIPT_NAME and PATH_INFO already split, i.e. SCRIPT_NAME +
/// PATH_INFO is the request path? Apache's mod_proxy_uwsgi does (PATH_INFO is the part after the
/// ProxyPass prefix), nginx's uwsgi_params does not (PATH_INFO is the whole path). REQUEST_URI is
/// the arbiter: it always holds the whole (percent-encoded) path. Our own front ends say which
/// form they send instead (`RWSGI_PATH_INFO_FORM`), so this guess is only for the stock ones.
fn already_split(front: Option<&[u8]>, uri_path: &[u8], path_info: &[u8]) -> bool {
    let Some(front) = front.map(trim_slashes).filter(|f| !f.is_empty()) else {
        return false;
    };
    if uri_path.is_empty() || strip_prefix(front, path_info).is_none() {
        return false; // no arbiter, or no prefix to remove twice
    }
    let full = percent_decode(uri_path);
    full.len() == front.len() + path_info.len()
        && full.starts_with(front)
        && full.ends_with(path_info)
}

/// `/app/` -> `/app`; `/` -> empty.
fn trim_slashes(p: &[u8]) -> &[u8] {
    let end = p.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    &p[..end]
}

/// The rest of `path` after `prefix`, if `prefix` matches at a path-segment boundary (`/app`
/// matches `/app` and `/app/x`, never `/application`).
fn strip_prefix<'a>(prefix: &[u8], path: &'a [u8]) -> Option<&'a [u8]> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest[0] == b'/').then_some(rest)
}

/// Picks the app and splits SCRIPT_NAME / PATH_INFO, as uWSGI's mount + manage-script-name do.
/// Returns (index into `mounts`, SCRIPT_NAME, PATH_INFO).
///
/// - A SCRIPT_NAME sent by the front end (nginx `uwsgi_param SCRIPT_NAME /app;`, our modules) is
///   authoritative: the app mounted there (else the default app) serves the request, and the
///   prefix is removed from PATH_INFO when it matches at a segment boundary; otherwise PATH_INFO
///   stays as sent. When the front end already split the path (`front_already_split`, see
///   [`already_split`]), PATH_INFO is taken as it is: removing the prefix again would turn
///   `/app/app/x` into `/x`.
/// - Without one, the longest mount that prefixes PATH_INFO at a segment boundary wins and
///   becomes SCRIPT_NAME.
/// - Else the default app (the one without a mount, or the first) with SCRIPT_NAME "".
fn route<'a>(
    front: Option<&'a [u8]>,
    front_already_split: bool,
    mounts: &[Option<&'a [u8]>],
    path_info: &'a [u8],
) -> (usize, &'a [u8], &'a [u8]) {
    let default = mounts.iter().position(Option::is_none).unwrap_or(0);
    let mount_at = |i: usize| mounts.get(i).copied().flatten().map(trim_slashes);
    if let Some(front) = front.map(trim_slashes).filter(|p| !p.is_empty()) {
        let index = (0..mounts.len())
            .find(|&i| mount_at(i) == Some(front))
            .unwrap_or(default);
        if front_already_split {
            return (index, front, path_info);
        }
        return (
            index,
            front,
            strip_prefix(front, path_info).unwrap_or(path_info),
        );
    }
    let mut best: Option<(usize, &'a [u8], &'a [u8])> = None;
    for i in 0..mounts.len() {
        let Some(m) = mount_at(i).filter(|m| !m.is_empty()) else {
            continue;
        };
        if let Some(rest) = strip_prefix(m, path_info) {
            if best.is_none_or(|(_, b, _)| m.len() > b.len()) {
                best = Some((i, m, rest));
            }
        }
    }
    best.unwrap_or((default, b"", path_info))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(
        f: Option<&'static str>,
        mounts: &[Option<&'static str>],
        p: &'static str,
    ) -> (usize, String, String) {
        let mounts: Vec<Option<&[u8]>> = mounts.iter().map(|m| m.map(str::as_bytes)).collect();
        let (i, a, b) = route(f.map(str::as_bytes), false, &mounts, p.as_bytes());
        (
            i,
            String::from_utf8_lossy(a).into_owned(),
            String::from_utf8_lossy(b).into_owned(),
        )
    }

    #[test]
    fn script_name_stripping() {
        let s = |f: Option<&'static str>, m: Option<&'static str>, p: &'static str| {
            let (_, a, b) = routed(f, &[m], p);
            (a, b)
        };
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(s(None, None, "/x"), pair("", "/x"));
        assert_eq!(s(Some("/app"), None, "/app/x"), pair("/app", "/x"));
        assert_eq!(s(Some("/app"), None, "/app"), pair("/app", ""));
        assert_eq!(s(Some("/app/"), None, "/app/x"), pair("/app", "/x"));
        assert_eq!(
            s(Some("/app"), None, "/application"),
            pair("/app", "/application")
        );
        assert_eq!(s(Some("/app"), None, "/other"), pair("/app", "/other"));
        assert_eq!(s(Some("/"), None, "/x"), pair("", "/x"));
        assert_eq!(s(None, Some("/m"), "/m/a/b"), pair("/m", "/a/b"));
        assert_eq!(s(None, Some("/m"), "/mm"), pair("", "/mm"));
        assert_eq!(s(Some("/f"), Some("/m"), "/f/z"), pair("/f", "/z"));
        assert_eq!(s(Some(""), Some("/m"), "/m/z"), pair("/m", "/z"));
    }

    #[test]
    fn several_apps_are_routed_by_mount() {
        let mounts = [None, Some("/a"), Some("/a/deep"), Some("/b")];
        let r = |f, p| routed(f, &mounts, p);
        let t = |i: usize, a: &str, b: &str| (i, a.to_owned(), b.to_owned());
        assert_eq!(r(None, "/x"), t(0, "", "/x"));
        assert_eq!(r(None, "/a/x"), t(1, "/a", "/x"));
        assert_eq!(r(None, "/a/deep/x"), t(2, "/a/deep", "/x"));
        assert_eq!(r(None, "/a/deeper"), t(1, "/a", "/deeper"));
        assert_eq!(r(None, "/b"), t(3, "/b", ""));
        assert_eq!(r(None, "/bb"), t(0, "", "/bb"));
        // The front end's SCRIPT_NAME picks the app, even over a longer PATH_INFO match.
        assert_eq!(r(Some("/a"), "/a/deep/x"), t(1, "/a", "/deep/x"));
        assert_eq!(r(Some("/b/"), "/b/y"), t(3, "/b", "/y"));
        assert_eq!(r(Some("/zzz"), "/zzz/q"), t(0, "/zzz", "/q"));
        // No default app: the first one serves what no mount matches.
        assert_eq!(
            routed(None, &[Some("/a"), Some("/b")], "/c"),
            t(0, "", "/c")
        );
    }

    #[test]
    fn path_info_split_by_the_front_end_is_not_split_again() {
        let b = |s: &'static str| Some(s.as_bytes());
        // Apache mod_proxy_uwsgi, ProxyPass /app, URL /app/app/x: PATH_INFO is already relative.
        assert!(already_split(b("/app"), b"/app/app/x", b"/app/x"));
        assert!(!already_split(b("/app"), b"/app/app%2Fx", b"/app/app/x"));
        assert!(already_split(b("/app"), b"/app/%61pp/x", b"/app/x"));
        // nginx: PATH_INFO is the whole path.
        assert!(!already_split(b("/app"), b"/app/app/x", b"/app/app/x"));
        assert!(!already_split(b("/app"), b"", b"/app/x"));
        assert!(!already_split(None, b"/app/app/x", b"/app/x"));
        let mounts = [Some(b"/app".as_slice())];
        let (_, sn, pi) = route(b("/app"), true, &mounts, b"/app/x");
        assert_eq!((sn, pi), (&b"/app"[..], &b"/app/x"[..]));
    }

    #[test]
    fn request_uri_and_decoding() {
        assert_eq!(
            split_request_uri(b"/a%20b?x=1#f"),
            (&b"/a%20b"[..], Some(&b"x=1"[..]))
        );
        assert_eq!(split_request_uri(b"/plain"), (&b"/plain"[..], None));
        assert_eq!(
            split_request_uri(b"http://h:1/p?q"),
            (&b"/p"[..], Some(&b"q"[..]))
        );
        assert_eq!(split_request_uri(b"https://h"), (&b"/"[..], None));
        assert_eq!(percent_decode(b"/a%20b%2F%zz%4"), b"/a b/%zz%4".to_vec());
        assert_eq!(percent_decode(b"%e2%82%ac"), "\u{20ac}".as_bytes().to_vec());
    }

    #[test]
    fn our_front_ends_state_the_form_and_stock_ones_are_inferred() {
        let mounts = [Some(b"/app".as_slice())];
        let mut scratch = Vec::new();
        let sent = |pi: &'static str, form| SentPath {
            script_name: Some(b"/app"),
            path_info: Some(pi.as_bytes()),
            query_string: Some(b"q=1"),
            request_uri: Some(b"/app/app/x?q=1"),
            form,
            ..SentPath::default()
        };
        let at = |r: Routed<'_>| {
            (
                r.script_name.to_vec(),
                r.path_info.to_vec(),
                r.query_string.to_vec(),
            )
        };
        let want = (b"/app".to_vec(), b"/app/x".to_vec(), b"q=1".to_vec());
        // The whole path (nginx's uwsgi_params), stripped once.
        let full = sent("/app/app/x", Some(PathInfoForm::Full));
        assert_eq!(at(resolve(&full, &mounts, &mut scratch)), want);
        // Our modules: CGI's split, taken as it is.
        let split = sent("/app/x", Some(PathInfoForm::Split));
        assert_eq!(at(resolve(&split, &mounts, &mut scratch)), want);
        // The explicit form wins over the guess: with `full`, /app/x is the whole path.
        let stated = sent("/app/x", Some(PathInfoForm::Full));
        assert_eq!(
            at(resolve(&stated, &mounts, &mut scratch)),
            (b"/app".to_vec(), b"/x".to_vec(), b"q=1".to_vec())
        );
        // Stock front ends (and our modules before they state the form): inferred, same answers.
        assert_eq!(
            at(resolve(&sent("/app/app/x", None), &mounts, &mut scratch)),
            want
        );
        assert_eq!(
            at(resolve(&sent("/app/x", None), &mounts, &mut scratch)),
            want
        );
        // No PATH_INFO: derived from REQUEST_URI, percent-decoded, and split by the mounts.
        let uri_only = SentPath {
            request_uri: Some(b"/app/a%20b?z"),
            ..SentPath::default()
        };
        assert_eq!(
            at(resolve(&uri_only, &mounts, &mut scratch)),
            (b"/app".to_vec(), b"/a b".to_vec(), b"z".to_vec())
        );
    }

    #[test]
    fn the_app_mount_picks_the_app_and_script_name_is_the_operators() {
        let mounts = [None, Some(b"/a".as_slice()), Some(b"/b".as_slice())];
        let mut scratch = Vec::new();
        let sent = |script: &'static str, mount: &'static str| SentPath {
            script_name: Some(script.as_bytes()),
            path_info: Some(b"/x"),
            form: Some(PathInfoForm::Split),
            app_mount: Some(mount.as_bytes()),
            ..SentPath::default()
        };
        let at = |r: Routed<'_>| (r.app, r.script_name.to_vec(), r.path_info.to_vec());
        // `wsgi_param SCRIPT_NAME /public;` in the location of the app at /b.
        assert_eq!(
            at(resolve(&sent("/public", "/b"), &mounts, &mut scratch)),
            (2, b"/public".to_vec(), b"/x".to_vec())
        );
        // `wsgi_param SCRIPT_NAME "";` in the location of the app at /a.
        assert_eq!(
            at(resolve(&sent("", "/a/"), &mounts, &mut scratch)),
            (1, b"".to_vec(), b"/x".to_vec())
        );
        // An empty mount is the default app; an unknown one too.
        assert_eq!(at(resolve(&sent("/a", ""), &mounts, &mut scratch)).0, 0);
        assert_eq!(at(resolve(&sent("/a", "/zz"), &mounts, &mut scratch)).0, 0);
    }

    /// The CGI view stock SCGI and FastCGI front ends send, as the captures in
    /// crates/gateway/tests/captures show it, routed by the worker's mounts.
    #[test]
    fn the_cgi_view_is_routed_by_the_mounts() {
        let route_cgi = |sent: SentPath<'_>, mounts: &[Option<&'static [u8]>]| {
            let (mut cgi, mut decoded) = (Vec::new(), Vec::new());
            let sent = cgi_gateway(&sent, &mut cgi);
            let r = resolve(&sent, mounts, &mut decoded);
            (
                r.app,
                String::from_utf8_lossy(r.script_name).into_owned(),
                String::from_utf8_lossy(r.path_info).into_owned(),
                String::from_utf8_lossy(r.query_string).into_owned(),
            )
        };
        let at = |app, s: &str, p: &str, q: &str| (app, s.to_owned(), p.to_owned(), q.to_owned());
        let app_mount = [Some(b"/app".as_slice())];
        let root = [None];
        // nginx's fastcgi_params and Apache's modules: SCRIPT_NAME is the (decoded) path.
        let fastcgi = SentPath {
            script_name: Some("/app/caf\u{e9} x".as_bytes()),
            query_string: Some(b"a=1"),
            request_uri: Some(b"/app/caf%C3%A9%20x?a=1"),
            ..SentPath::default()
        };
        assert_eq!(
            route_cgi(fastcgi, &app_mount),
            at(0, "/app", "/caf\u{e9} x", "a=1")
        );
        assert_eq!(
            route_cgi(fastcgi, &root),
            at(0, "", "/app/caf\u{e9} x", "a=1")
        );
        // The mount's own root, and a path that repeats the mount.
        let path = |p: &'static str| SentPath {
            script_name: Some(p.as_bytes()),
            request_uri: Some(p.as_bytes()),
            ..SentPath::default()
        };
        assert_eq!(route_cgi(path("/app/"), &app_mount), at(0, "/app", "/", ""));
        assert_eq!(route_cgi(path("/app"), &app_mount), at(0, "/app", "", ""));
        assert_eq!(
            route_cgi(path("/app/app/x"), &app_mount),
            at(0, "/app", "/app/x", "")
        );
        // An empty PATH_INFO ($fastcgi_path_info without fastcgi_split_path_info) is none.
        let empty_pi = SentPath {
            path_info: Some(b""),
            ..path("/app/x")
        };
        assert_eq!(route_cgi(empty_pi, &app_mount), at(0, "/app", "/x", ""));
        // nginx's scgi_params: no SCRIPT_NAME, DOCUMENT_URI (after rewrites) is the path.
        let scgi = SentPath {
            document_uri: Some(b"/app/new"),
            request_uri: Some(b"/old?z=2"),
            ..SentPath::default()
        };
        assert_eq!(route_cgi(scgi, &app_mount), at(0, "/app", "/new", "z=2"));
        // Only REQUEST_URI: its path, decoded.
        let uri = SentPath {
            request_uri: Some(b"/app/a%2Fb"),
            ..SentPath::default()
        };
        assert_eq!(route_cgi(uri, &app_mount), at(0, "/app", "/a/b", ""));
        // An operator's `fastcgi_param SCRIPT_NAME /app;` (a proper prefix) is the mount.
        let operator = SentPath {
            script_name: Some(b"/app"),
            request_uri: Some(b"/app/x/y"),
            ..SentPath::default()
        };
        assert_eq!(route_cgi(operator, &root), at(0, "/app", "/x/y", ""));
        // The front end split it (fastcgi_split_path_info): as sent, like uwsgi.
        let split = SentPath {
            script_name: Some(b"/app"),
            path_info: Some(b"/x"),
            request_uri: Some(b"/app/x"),
            ..SentPath::default()
        };
        assert_eq!(route_cgi(split, &app_mount), at(0, "/app", "/x", ""));
        // Several apps: the longest mount of the path.
        let mounts = [None, Some(b"/a".as_slice()), Some(b"/a/b".as_slice())];
        assert_eq!(route_cgi(path("/a/b/c"), &mounts), at(2, "/a/b", "/c", ""));
        assert_eq!(route_cgi(path("/a/c"), &mounts), at(1, "/a", "/c", ""));
        assert_eq!(route_cgi(path("/c"), &mounts), at(0, "", "/c", ""));
    }
}
