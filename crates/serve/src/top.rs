//! `rwsgi top ENDPOINT`: a terminal view of a metrics endpoint (nginx `wsgi_metrics`, Apache
//! `rwsgi-metrics`, `rwsgi-worker --metrics`), refreshed every few seconds: per app the request
//! rate, status classes, latency percentiles, requests in progress, exceptions; per process
//! group the processes, busy threads, memory, GIL wait and respawns. Rates and percentiles come
//! from the difference between two scrapes, as Prometheus' `rate()` and `histogram_quantile()`
//! compute them. `--once` prints one frame (two scrapes `--interval` apart) and exits.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use metrics::http::{fetch, Target};
use metrics::text::{parse, Sample};

/// The text printed by `rwsgi top --help`.
pub const USAGE: &str = "\
rwsgi top: watch an rwsgi metrics endpoint in the terminal

Usage: rwsgi top ENDPOINT [--interval SECS] [--once]

  ENDPOINT          http://HOST:PORT/PATH (nginx wsgi_metrics, Apache rwsgi-metrics),
                    HOST:PORT or unix:PATH (rwsgi-worker --metrics; path /metrics)
  --interval SECS   time between scrapes (default 2)
  --once            print one view (two scrapes an interval apart) and exit
";

/// What `rwsgi top` was asked.
#[derive(Debug, Clone, PartialEq)]
pub struct TopOptions {
    pub target: Target,
    pub interval: Duration,
    pub once: bool,
}

/// Parses the arguments after `top`. `Ok(None)`: `--help`.
pub fn parse_args<I: Iterator<Item = String>>(mut args: I) -> Result<Option<TopOptions>, String> {
    let (mut target, mut interval, mut once) = (None, Duration::from_secs(2), false);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "--once" => once = true,
            "--interval" => {
                let v = inline
                    .or_else(|| args.next())
                    .ok_or("--interval needs a value")?;
                interval = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.1 && *s <= 3600.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| {
                        format!("--interval: expected 0.1 to 3600 seconds, got {v:?}")
                    })?;
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s} (see --help)")),
            _ if target.is_none() => target = Some(Target::parse(&arg)?),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    let target = target.ok_or("the metrics endpoint is required, e.g. http://127.0.0.1/metrics")?;
    Ok(Some(TopOptions {
        target,
        interval,
        once,
    }))
}

/// Runs until interrupted (or one frame with `--once`).
pub fn run(opts: &TopOptions) -> Result<(), String> {
    let timeout = opts.interval.max(Duration::from_secs(5));
    let mut prev = (
        Instant::now(),
        View::from(parse(&fetch(&opts.target, timeout)?)),
    );
    loop {
        std::thread::sleep(opts.interval);
        let text = fetch(&opts.target, timeout)?;
        let now = (Instant::now(), View::from(parse(&text)));
        let elapsed = now.0.duration_since(prev.0).as_secs_f64();
        let frame = render(&prev.1, &now.1, elapsed, &opts.target);
        if opts.once {
            print!("{frame}");
            return Ok(());
        }
        // Clear the screen and draw from the top-left corner.
        print!("\x1b[H\x1b[2J{frame}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        prev = now;
    }
}

/// The counters of one app at one scrape.
#[derive(Clone, Debug, Default, PartialEq)]
struct AppView {
    classes: [f64; 5],
    buckets: Vec<(f64, f64)>,
    active: f64,
    exceptions: f64,
    aborts: f64,
    gil: f64,
}

/// The gauges and counters of one process group at one scrape.
#[derive(Clone, Debug, Default, PartialEq)]
struct GroupView {
    /// Live processes by role: server, supervisor, worker.
    processes: [f64; 3],
    rss: f64,
    busy: f64,
    idle: f64,
    respawns: [f64; 4],
    timeouts: f64,
}

/// One scrape, arranged for display.
#[derive(Clone, Debug, Default, PartialEq)]
struct View {
    build: String,
    start: f64,
    apps: BTreeMap<(String, String), AppView>,
    groups: BTreeMap<String, GroupView>,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const ROLES: [&str; 3] = ["server", "supervisor", "worker"];
const REASONS: [&str; 4] = ["crash", "maximum-requests", "request-timeout", "reload"];

fn index(list: &[&str], value: &str) -> Option<usize> {
    list.iter().position(|v| *v == value)
}

impl From<Vec<Sample>> for View {
    fn from(samples: Vec<Sample>) -> View {
        let mut v = View::default();
        for s in samples {
            let app = || (s.label("group").to_owned(), s.label("app").to_owned());
            let group = s.label("group").to_owned();
            match s.name.as_str() {
                "rwsgi_build_info" => {
                    v.build = format!("{}, Python {}", s.label("server"), s.label("python"))
                }
                "rwsgi_start_time_seconds" => v.start = s.value,
                "rwsgi_requests_total" => {
                    if let Some(i) = index(&CLASSES, s.label("code_class")) {
                        v.apps.entry(app()).or_default().classes[i] = s.value;
                    }
                }
                "rwsgi_request_duration_seconds_bucket" => {
                    let le = match s.label("le") {
                        "+Inf" => f64::INFINITY,
                        le => le.parse().unwrap_or(f64::INFINITY),
                    };
                    v.apps.entry(app()).or_default().buckets.push((le, s.value));
                }
                "rwsgi_requests_active" => v.apps.entry(app()).or_default().active = s.value,
                "rwsgi_exceptions_total" => v.apps.entry(app()).or_default().exceptions = s.value,
                "rwsgi_client_aborts_total" => v.apps.entry(app()).or_default().aborts = s.value,
                "rwsgi_gil_wait_seconds_total" => v.apps.entry(app()).or_default().gil = s.value,
                "rwsgi_processes" => {
                    if let Some(i) = index(&ROLES, s.label("role")) {
                        v.groups.entry(group).or_default().processes[i] = s.value;
                    }
                }
                "rwsgi_process_resident_memory_bytes" => {
                    v.groups.entry(group).or_default().rss += s.value
                }
                "rwsgi_threads" if s.label("state") == "busy" => {
                    v.groups.entry(group).or_default().busy = s.value
                }
                "rwsgi_threads" => v.groups.entry(group).or_default().idle = s.value,
                "rwsgi_worker_respawns_total" => {
                    if let Some(i) = index(&REASONS, s.label("reason")) {
                        v.groups.entry(group).or_default().respawns[i] = s.value;
                    }
                }
                "rwsgi_request_timeouts_total" => {
                    v.groups.entry(group).or_default().timeouts = s.value
                }
                _ => {}
            }
        }
        v
    }
}

/// The q-quantile of the observations between two scrapes (cumulative buckets), interpolated
/// within its bucket as Prometheus' `histogram_quantile` does; `None` without observations.
fn quantile(q: f64, before: &[(f64, f64)], after: &[(f64, f64)]) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, n)| {
            let old = before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, (n - old).max(0.0))
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in &delta {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0); // beyond the last bound: say the last bound
            }
            let span = count - lower.1;
            let frac = if span > 0.0 {
                (rank - lower.1) / span
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * frac);
        }
        lower = (le, count);
    }
    None
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |s| format!("{:.1}", s * 1000.0))
}

fn uptime(start: f64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let s = (now - start).max(0.0) as u64;
    format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
}

/// One frame: the change from `a` to `b` over `secs` seconds.
fn render(a: &View, b: &View, secs: f64, target: &Target) -> String {
    let secs = secs.max(1e-3);
    let endpoint = match target {
        Target::Tcp { addr, path } => format!("http://{addr}{path}"),
        Target::Unix { socket, path } => format!("unix:{socket} {path}"),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rwsgi top  {endpoint}  {}  up {}  (every {secs:.1}s)\n",
        b.build,
        uptime(b.start)
    );
    let _ = writeln!(
        out,
        "{:<20} {:<14} {:>8} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8} {:>6} {:>7} {:>8}",
        "APP",
        "GROUP",
        "REQ/S",
        "2xx%",
        "3xx%",
        "4xx%",
        "5xx%",
        "P50 ms",
        "P95 ms",
        "ACTIVE",
        "EXC/S",
        "GIL ms/r"
    );
    render_apps(&mut out, a, b, secs);
    let _ = writeln!(
        out,
        "\n{:<20} {:>7} {:>7} {:>7} {:>12} {:>9}  {:<28} {:>8}",
        "GROUP",
        "SERVER",
        "SUPERV",
        "WORKERS",
        "THREADS b/t",
        "RSS MiB",
        "RESPAWNS crash/max/tmo/rld",
        "TIMEOUTS"
    );
    render_groups(&mut out, b);
    out
}

/// The per-app rows: rates and latencies over the interval.
fn render_apps(out: &mut String, a: &View, b: &View, secs: f64) {
    let empty = AppView::default();
    for ((group, app), now) in &b.apps {
        let old = a.apps.get(&(group.clone(), app.clone())).unwrap_or(&empty);
        let by_class: Vec<f64> = (0..5)
            .map(|i| (now.classes[i] - old.classes[i]).max(0.0))
            .collect();
        let total: f64 = by_class.iter().sum();
        let pct = |i: usize| {
            if total > 0.0 {
                format!("{:.1}", 100.0 * by_class[i] / total)
            } else {
                "-".to_owned()
            }
        };
        let gil = if total > 0.0 {
            format!("{:.2}", 1000.0 * (now.gil - old.gil).max(0.0) / total)
        } else {
            "-".to_owned()
        };
        let _ = writeln!(
            out,
            "{:<20} {:<14} {:>8.1} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8} {:>6} {:>7.1} {:>8}",
            app,
            if group.is_empty() {
                "(embedded)"
            } else {
                group
            },
            total / secs,
            pct(1),
            pct(2),
            pct(3),
            pct(4),
            ms(quantile(0.5, &old.buckets, &now.buckets)),
            ms(quantile(0.95, &old.buckets, &now.buckets)),
            now.active,
            (now.exceptions - old.exceptions).max(0.0) / secs,
            gil
        );
    }
}

/// The per-group rows: process counts, threads, memory, respawns and timeouts now.
fn render_groups(out: &mut String, b: &View) {
    for (name, g) in &b.groups {
        let respawns = g.respawns.map(|n| format!("{n:.0}")).join("/");
        let _ = writeln!(
            out,
            "{:<20} {:>7.0} {:>7.0} {:>7.0} {:>12} {:>9.1}  {:<28} {:>8.0}",
            if name.is_empty() { "(embedded)" } else { name },
            g.processes[0],
            g.processes[1],
            g.processes[2],
            format!("{:.0}/{:.0}", g.busy, g.busy + g.idle),
            g.rss / (1024.0 * 1024.0),
            if name.is_empty() {
                "-".to_owned()
            } else {
                respawns
            },
            g.timeouts
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(requests: f64, slow: f64, crash: f64) -> View {
        let text = format!(
            "rwsgi_build_info{{version=\"0.1.0\",python=\"3.11.2\",server=\"nginx/1.22.1\"}} 1\n\
             rwsgi_requests_total{{app=\"/shop\",group=\"web\",code_class=\"2xx\"}} {requests}\n\
             rwsgi_requests_total{{app=\"/shop\",group=\"web\",code_class=\"5xx\"}} 0\n\
             rwsgi_request_duration_seconds_bucket{{app=\"/shop\",group=\"web\",le=\"0.001\"}} {fast}\n\
             rwsgi_request_duration_seconds_bucket{{app=\"/shop\",group=\"web\",le=\"0.1\"}} {requests}\n\
             rwsgi_request_duration_seconds_bucket{{app=\"/shop\",group=\"web\",le=\"+Inf\"}} {requests}\n\
             rwsgi_processes{{group=\"web\",role=\"worker\"}} 2\n\
             rwsgi_threads{{group=\"web\",state=\"busy\"}} 1\n\
             rwsgi_threads{{group=\"web\",state=\"idle\"}} 7\n\
             rwsgi_worker_respawns_total{{group=\"web\",reason=\"crash\"}} {crash}\n",
            fast = requests - slow
        );
        View::from(parse(&text))
    }

    #[test]
    fn a_frame_shows_rates_shares_and_percentiles() {
        let target = Target::parse("127.0.0.1:9100").unwrap();
        let frame = render(
            &view(100.0, 0.0, 0.0),
            &view(300.0, 100.0, 1.0),
            2.0,
            &target,
        );
        assert!(frame.contains("nginx/1.22.1, Python 3.11.2"), "{frame}");
        let row = frame.lines().find(|l| l.starts_with("/shop")).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        // 200 requests in 2 s; half of them under 1 ms, the rest up to 100 ms.
        assert_eq!(&cols[..4], ["/shop", "web", "100.0", "100.0"]);
        assert_eq!(cols[7], "1.0", "p50 at the first bound");
        assert_eq!(cols[8], "90.1", "p95 interpolated in (1 ms, 100 ms]");
        let group = frame.lines().find(|l| l.starts_with("web")).unwrap();
        assert!(
            group.contains("1/8") && group.contains("1/0/0/0"),
            "{group}"
        );
    }

    #[test]
    fn quantiles_without_traffic_are_unknown() {
        let b = [(0.1, 5.0), (f64::INFINITY, 5.0)];
        assert_eq!(quantile(0.5, &b, &b), None);
        let after = [(0.1, 5.0), (f64::INFINITY, 7.0)];
        assert_eq!(
            quantile(0.99, &b, &after),
            Some(0.1),
            "beyond the last bound"
        );
    }

    #[test]
    fn arguments() {
        let args = |v: &[&str]| parse_args(v.iter().map(|s| s.to_string()));
        let o = args(&["http://127.0.0.1:8080/metrics", "--interval=0.5", "--once"])
            .unwrap()
            .unwrap();
        assert_eq!((o.interval, o.once), (Duration::from_millis(500), true));
        assert_eq!(args(&["--help"]).unwrap(), None);
        assert!(args(&[]).unwrap_err().contains("endpoint is required"));
        assert!(args(&["x:1", "--interval", "0"])
            .unwrap_err()
            .contains("--interval"));
        assert!(args(&["x:1", "--bogus"])
            .unwrap_err()
            .contains("unknown option"));
    }
}
