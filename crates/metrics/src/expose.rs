//! The exposition: a [`Snapshot`] as Prometheus text format 0.0.4 or OpenMetrics 1.0.
//!
//! The two formats differ in the metadata of counters and info metrics (OpenMetrics names the
//! family without `_total` / `_info` and has `# UNIT`), and OpenMetrics ends with `# EOF`; the
//! samples are the same. docs/metrics.md lists every metric; this file is where they are named.

use std::fmt::{Display, Write};

use crate::histogram::{HistSnapshot, BOUNDS_TEXT};
use crate::layout::{Respawn, Role};
use crate::snapshot::{AppSnapshot, GroupSnapshot, Snapshot};

/// Which exposition format to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// What the scraper asked for in its `Accept` header (Prometheus asks for OpenMetrics
    /// first, text format as a fallback).
    pub fn from_accept(accept: &[u8]) -> Format {
        let accept = String::from_utf8_lossy(accept).to_ascii_lowercase();
        let wants_om = accept.split(',').any(|part| {
            let mut params = part.split(';').map(str::trim);
            params.next() == Some("application/openmetrics-text")
                && !params.any(|p| p.replace(' ', "") == "q=0")
        });
        if wants_om {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The Content-Type of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The `rwsgi_build_info` labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    /// rwsgi's version.
    pub version: String,
    /// The Python version the processes run (e.g. `3.11.2`).
    pub python: String,
    /// The server: `nginx/1.22.1`, `Apache/2.4.62`, `rwsgi-worker`.
    pub server: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Info,
}

struct Writer {
    out: String,
    om: bool,
}

impl Writer {
    /// The metadata of one family. `name` is the sample name as in text format 0.0.4
    /// (counters with `_total`, info with `_info`).
    fn family(&mut self, name: &str, kind: Kind, help: &str, unit: Option<&str>) {
        let (family, type_name) = match (kind, self.om) {
            (Kind::Counter, true) => (name.trim_end_matches("_total"), "counter"),
            (Kind::Info, true) => (name.trim_end_matches("_info"), "info"),
            (Kind::Counter, false) => (name, "counter"),
            (Kind::Gauge | Kind::Info, _) => (name, "gauge"),
            (Kind::Histogram, _) => (name, "histogram"),
        };
        let _ = writeln!(self.out, "# HELP {family} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {family} {type_name}");
        if let (true, Some(unit)) = (self.om, unit) {
            let _ = writeln!(self.out, "# UNIT {family} {unit}");
        }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistSnapshot) {
        let cumulative = h.cumulative();
        let bucket = format!("{name}_bucket");
        for (le, count) in BOUNDS_TEXT.iter().chain(["+Inf"].iter()).zip(cumulative) {
            let mut with_le = labels.to_vec();
            with_le.push(("le", le));
            self.sample(&bucket, &with_le, count);
        }
        self.sample(&format!("{name}_sum"), labels, h.sum_seconds);
        self.sample(&format!("{name}_count"), labels, h.count());
    }
}

fn app_labels(a: &AppSnapshot) -> [(&'static str, &str); 2] {
    [("app", &a.mount), ("group", &a.group)]
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Writes `snap` (and the build information) in `format`.
pub fn render(snap: &Snapshot, build: &BuildInfo, format: Format) -> String {
    let mut w = Writer {
        out: String::with_capacity(16 * 1024 + snap.apps.len() * 6 * 1024),
        om: format == Format::OpenMetrics,
    };
    build_and_start(&mut w, snap, build);
    per_app(&mut w, snap);
    per_group(&mut w, snap);
    processes(&mut w, snap);
    if w.om {
        w.out.push_str("# EOF\n");
    }
    w.out
}

fn build_and_start(w: &mut Writer, snap: &Snapshot, build: &BuildInfo) {
    w.family(
        "rwsgi_build_info",
        Kind::Info,
        "rwsgi's version, the Python it runs and the server it runs in (always 1).",
        None,
    );
    let labels = [
        ("version", build.version.as_str()),
        ("python", build.python.as_str()),
        ("server", build.server.as_str()),
    ];
    w.sample("rwsgi_build_info", &labels, 1);
    w.family(
        "rwsgi_start_time_seconds",
        Kind::Gauge,
        "When these counters started (the server's first start; reloads keep them), seconds since the Unix epoch.",
        Some("seconds"),
    );
    w.sample("rwsgi_start_time_seconds", &[], snap.start_time);
}

/// The histograms, one series per app: (name, help, which).
type PerAppHistogram = (
    &'static str,
    &'static str,
    fn(&AppSnapshot) -> &HistSnapshot,
);
const HISTOGRAMS: [PerAppHistogram; 2] = [
    (
        "rwsgi_request_duration_seconds",
        "Time from the server taking a request to the end of its response.",
        |a| &a.duration,
    ),
    (
        "rwsgi_request_queue_duration_seconds",
        "Time a request waited before a Python thread took it (embedded nginx: the job queue; daemon mode: from the front end receiving it).",
        |a| &a.queue,
    ),
];

/// The single-valued metrics with one series per app: (name, type, help, unit, value).
type PerApp = (
    &'static str,
    Kind,
    &'static str,
    Option<&'static str>,
    fn(&AppSnapshot) -> f64,
);
const PER_APP: [PerApp; 6] = [
    ("rwsgi_requests_active", Kind::Gauge, "Requests in progress.", None, |a| a.active as f64),
    (
        "rwsgi_gil_wait_seconds_total",
        Kind::Counter,
        "Time request threads waited to take the GIL at the host's own attach points.",
        Some("seconds"),
        |a| a.gil_wait_seconds,
    ),
    (
        "rwsgi_exceptions_total",
        Kind::Counter,
        "Python exceptions that reached the host (from the app call, the response iterable, close(), or loading the app).",
        None,
        |a| a.exceptions as f64,
    ),
    (
        "rwsgi_client_aborts_total",
        Kind::Counter,
        "Requests whose client went away before it had the whole response.",
        None,
        |a| a.client_aborts as f64,
    ),
    (
        "rwsgi_request_body_bytes_total",
        Kind::Counter,
        "Request body bytes read.",
        Some("bytes"),
        |a| a.body_in as f64,
    ),
    (
        "rwsgi_response_body_bytes_total",
        Kind::Counter,
        "Response body bytes sent.",
        Some("bytes"),
        |a| a.body_out as f64,
    ),
];

/// Everything labelled by app: responses by class, the histograms, the single values.
fn per_app(w: &mut Writer, snap: &Snapshot) {
    let name = "rwsgi_requests_total";
    w.family(
        name,
        Kind::Counter,
        "Responses, by status class (the status the server sent; 499 when the client left first).",
        None,
    );
    for a in &snap.apps {
        for (class, n) in CLASSES.iter().zip(a.requests) {
            let [app, group] = app_labels(a);
            w.sample(name, &[app, group, ("code_class", class)], n);
        }
    }
    for (name, help, which) in HISTOGRAMS {
        w.family(name, Kind::Histogram, help, Some("seconds"));
        for a in &snap.apps {
            w.histogram(name, &app_labels(a), which(a));
        }
    }
    for (name, kind, help, unit, value) in PER_APP {
        w.family(name, kind, help, unit);
        for a in &snap.apps {
            w.sample(name, &app_labels(a), value(a));
        }
    }
}

/// Labelled by group: Python threads and request timeouts.
fn per_group(w: &mut Writer, snap: &Snapshot) {
    let name = "rwsgi_threads";
    w.family(
        name,
        Kind::Gauge,
        "Python request threads of the live processes, busy (running a request) or idle.",
        None,
    );
    for g in &snap.groups {
        if g.threads > 0 {
            w.sample(name, &[("group", &g.name), ("state", "busy")], g.busy);
            w.sample(
                name,
                &[("group", &g.name), ("state", "idle")],
                g.threads - g.busy,
            );
        }
    }
    let name = "rwsgi_request_timeouts_total";
    w.family(
        name,
        Kind::Counter,
        "Requests stopped because they ran past their request timeout.",
        None,
    );
    for g in &snap.groups {
        w.sample(name, &[("group", &g.name)], g.request_timeouts);
    }
}

fn processes(w: &mut Writer, snap: &Snapshot) {
    let per_role = |w: &mut Writer, name: &str, value: fn(&GroupSnapshot, usize) -> u64| {
        for g in &snap.groups {
            for role in Role::ALL {
                let r = role as usize - 1;
                if g.processes[r] > 0 {
                    w.sample(
                        name,
                        &[("group", &g.name), ("role", role.label())],
                        value(g, r),
                    );
                }
            }
        }
    };
    let name = "rwsgi_processes";
    w.family(
        name,
        Kind::Gauge,
        "Live processes: the server's workers (role server), daemon supervisors and daemon workers.",
        None,
    );
    per_role(w, name, |g, r| g.processes[r]);
    let name = "rwsgi_process_resident_memory_bytes";
    w.family(
        name,
        Kind::Gauge,
        "Resident memory of the live processes, summed.",
        Some("bytes"),
    );
    per_role(w, name, |g, r| g.rss_bytes[r]);
    let name = "rwsgi_worker_respawns_total";
    w.family(
        name,
        Kind::Counter,
        "Daemon workers replaced, by reason.",
        None,
    );
    for g in snap.groups.iter().filter(|g| !g.name.is_empty()) {
        for reason in Respawn::ALL {
            let labels = [("group", g.name.as_str()), ("reason", reason.label())];
            w.sample(name, &labels, g.respawns[reason as usize]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_snapshot() -> Snapshot {
        let mut app = AppSnapshot {
            mount: "/a\"b\\".into(),
            group: "web".into(),
            requests: [0, 3, 0, 1, 0],
            active: 2,
            gil_wait_seconds: 0.25,
            ..Default::default()
        };
        app.duration.buckets[2] = 4;
        app.duration.sum_seconds = 0.008;
        Snapshot {
            start_time: 1700000000.5,
            groups: vec![GroupSnapshot {
                name: "web".into(),
                processes: [0, 1, 2],
                rss_bytes: [0, 1000, 2000],
                threads: 8,
                busy: 3,
                respawns: [1, 0, 2, 0],
                ..Default::default()
            }],
            apps: vec![app],
        }
    }

    fn build() -> BuildInfo {
        BuildInfo {
            version: "0.1.0".into(),
            python: "3.11.2".into(),
            server: "nginx/1.22.1".into(),
        }
    }

    #[test]
    fn text_format() {
        let t = render(&sample_snapshot(), &build(), Format::Text);
        assert!(t.contains("# TYPE rwsgi_requests_total counter\n"));
        assert!(t.contains(
            "rwsgi_requests_total{app=\"/a\\\"b\\\\\",group=\"web\",code_class=\"2xx\"} 3\n"
        ));
        assert!(t.contains("rwsgi_request_duration_seconds_bucket{app=\"/a\\\"b\\\\\",group=\"web\",le=\"0.001\"} 0\n"));
        assert!(t.contains("le=\"0.0025\"} 4\n"));
        assert!(t.contains("le=\"+Inf\"} 4\n"));
        assert!(t.contains(
            "rwsgi_request_duration_seconds_count{app=\"/a\\\"b\\\\\",group=\"web\"} 4\n"
        ));
        assert!(t.contains("rwsgi_threads{group=\"web\",state=\"idle\"} 5\n"));
        assert!(t.contains("rwsgi_processes{group=\"web\",role=\"worker\"} 2\n"));
        assert!(!t.contains("role=\"server\""));
        assert!(
            t.contains("rwsgi_worker_respawns_total{group=\"web\",reason=\"request-timeout\"} 2\n")
        );
        assert!(t.contains("# TYPE rwsgi_build_info gauge\n"));
        assert!(t.contains("rwsgi_start_time_seconds 1700000000.5\n"));
        assert!(!t.contains("# EOF") && !t.contains("# UNIT"));
    }

    #[test]
    fn openmetrics_format() {
        let t = render(&sample_snapshot(), &build(), Format::OpenMetrics);
        assert!(t.contains("# TYPE rwsgi_requests counter\n"));
        assert!(t.contains("# TYPE rwsgi_build info\n"));
        assert!(t.contains("# UNIT rwsgi_gil_wait_seconds seconds\n"));
        assert!(t.contains("rwsgi_gil_wait_seconds_total{app="));
        assert!(t.ends_with("# EOF\n"));
    }

    #[test]
    fn accept_negotiation() {
        let prom = b"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(prom), Format::OpenMetrics);
        assert_eq!(Format::from_accept(b"text/plain"), Format::Text);
        assert_eq!(Format::from_accept(b""), Format::Text);
        assert_eq!(
            Format::from_accept(b"application/openmetrics-text; q=0, text/plain"),
            Format::Text
        );
    }
}
