//! The admission policy: how many requests of this process are let into Python at once.
//!
//! Python runs one thread at a time. A request thread that waits for the GIL is worse than one
//! that waits in [`crate::admit`]'s line: every release of the GIL (the app's SQLite calls and
//! I/O, the 5 ms switch interval) hands it to another waiting thread, and the releasing thread
//! then queues to get it back, so with many requests admitted every GIL release becomes a pair
//! of context switches and a cold cache. Admitted requests that wait outside Python (a sleep, a
//! remote database) are the opposite case: the more of them, the better.
//!
//! So the limit follows what the GIL can serve, judged from what pyhost measures itself
//! (stats.rs), per window of finished requests (at least [`WINDOW_REQUESTS`] and [`WINDOW`]):
//!
//! - `busy`: the share of the requests' admitted time spent on a CPU. A request that only
//!   computes is busy all the time when it runs alone; `n` of them admitted together share the
//!   GIL and are each busy `1/n` of the time. A request that waits on I/O is busy a small share
//!   however many run.
//! - `cost`: CPU of the whole process per request. It also sees what more threads cost outside
//!   the GIL: waking and switching between them, which short requests pay even when they never
//!   meet in Python (a single admitted thread serves a queue of them back to back, asleep never).
//! - `contention`: the share of admitted time spent waiting for the GIL at pyhost's own attach
//!   points (waits inside the app are invisible; this is the visible part of the convoy).
//!
//! Every change of the limit is a probe, judged one window later (after a window for the change
//! to settle): going from `L` to `M` threads, compute-bound requests change their busy share by
//! `L/M`, requests blocked outside Python keep it. More threads are kept when the measured change
//! is nearer "blocked" and the cost rose by at most [`COST_TOLERANCE`]; fewer threads when it is
//! nearer "compute-bound" or the cost fell by that much. A probe taken back doubles the wait
//! before the next one in that direction (up to [`HOLD_MAX`] windows); a kept one halves it. So a
//! compute-bound app settles at one thread and probes every few seconds, an app that waits
//! outside Python keeps all its threads and tries a quarter fewer as rarely.
//!
//! - up (one more thread, or twice as many when requests are on a CPU under a quarter of their
//!   time; without a verdict when even then the GIL would be idle most of the time): when work
//!   waited for admission and contention is below [`UNCONTENDED`];
//! - down (a quarter fewer, at least one): whenever the hold-off allows; at once and by half,
//!   without waiting for a verdict, when contention is above [`CONVOY`];
//! - a stall: work has waited for [`STALL`] and the whole process used under a quarter of a core
//!   meanwhile without being preempted (the admitted requests all wait on something outside
//!   Python and none finishes to close a window, e.g. an app calling its own server): one more
//!   thread, every [`STALL`], for as long as that lasts.
//!
//! Nothing to configure: `RWSGI_ADMISSION=N` fixes the limit and `RWSGI_ADMISSION=off` turns
//! admission off, for diagnosis and A/B measurements only (bench/README.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::stats::{self, Field};

/// Diagnosis only: a fixed limit (`N`) or no admission at all (`off`).
pub const ADMISSION_ENV: &str = "RWSGI_ADMISSION";

/// Contention (GIL wait at the attach points / admitted time) below which more threads may be
/// tried, when work waits.
pub(crate) const UNCONTENDED: f64 = 0.01;
/// A probe that changes the process's CPU per request by more than this share is judged on it.
const COST_TOLERANCE: f64 = 0.10;
/// Contention above which the limit is halved at once.
pub(crate) const CONVOY: f64 = 0.5;
/// Busy share under which a probe doubles the threads instead of adding one.
const MOSTLY_BLOCKED: f64 = 0.25;
/// A raise that keeps (new limit x busy share) under this is kept without a verdict: the GIL
/// would still be idle most of the time. (Low, because a busy share is also low when the
/// process gets little CPU: then more threads would only queue for it.)
const ROOMY: f64 = 0.1;
/// Longest wait between two probes in one direction, in windows.
const HOLD_MAX: u32 = 64;
/// A window closes after this long, once it holds [`WINDOW_REQUESTS`] requests...
const WINDOW: Duration = Duration::from_millis(50);
const WINDOW_REQUESTS: u64 = 16;
/// ... or after this long with fewer requests (but at least one).
const WINDOW_MAX: Duration = Duration::from_millis(200);
/// Work waiting this long, with the process nearly idle, raises the limit.
pub(crate) const STALL: Duration = Duration::from_millis(100);
/// "Nearly idle": the process used less than this share of one core...
const STALL_CPU: f64 = 0.25;
/// ... and its threads were preempted fewer times than this meanwhile (a process starved of
/// CPU by others also uses little, but its runnable threads keep being preempted).
const STALL_PREEMPTED: u64 = 10;

/// What the requests that finished in one window cost, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Window {
    pub requests: u64,
    pub admitted: Duration,
    pub cpu: Duration,
    pub gil_wait: Duration,
    /// CPU the whole process used during the window (request threads, the server's own
    /// threads, waking and switching between them).
    pub process_cpu: Duration,
    /// Work (a request) waited for an admitted thread during the window.
    pub waited: bool,
}

/// What a probe is judged on, measured at one limit (smoothed over its windows).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Measure {
    /// Share of admitted time the requests spent on a CPU.
    busy: f64,
    /// CPU of the whole process per request, seconds.
    cost: f64,
}

impl Measure {
    fn blend(self, other: Measure) -> Measure {
        Measure {
            busy: (self.busy + other.busy) / 2.0,
            cost: (self.cost + other.cost) / 2.0,
        }
    }
}

/// A change of the limit waiting for its verdict.
#[derive(Clone, Copy, Debug)]
struct Probe {
    from: usize,
    before: Measure,
}

/// Windows to wait before the next probe in each direction.
#[derive(Clone, Copy, Debug)]
struct Hold {
    up: u32,
    down: u32,
}

/// The limit and the memory of past probes; pure, so that it is testable without threads.
#[derive(Debug)]
pub(crate) struct Policy {
    pub limit: usize,
    hold: Hold,
    /// Windows since the limit last changed (the first one after a change only settles).
    since_change: u32,
    probe: Option<Probe>,
    /// Measured at the current limit.
    measured: Option<Measure>,
}

impl Policy {
    pub(crate) fn new(limit: usize) -> Policy {
        Policy {
            limit: limit.max(1),
            hold: Hold { up: 1, down: 1 },
            since_change: 0,
            probe: None,
            measured: None,
        }
    }

    fn change(&mut self, to: usize, probe: Option<Probe>) -> usize {
        self.limit = to.max(1);
        self.probe = probe;
        self.since_change = 0;
        self.limit
    }

    /// The limit after window `w`; `wanting` = threads holding or waiting for a permit (more
    /// permits than that would not be used).
    pub(crate) fn decide(&mut self, w: &Window, wanting: usize) -> usize {
        let admitted = w.admitted.as_secs_f64();
        if w.requests == 0 || admitted <= 0.0 {
            return self.limit;
        }
        let contention = (w.gil_wait.as_secs_f64() / admitted).min(1.0);
        let now = Measure {
            busy: (w.cpu.as_secs_f64() / admitted).clamp(1e-6, 1.0),
            cost: (w.process_cpu.as_secs_f64() / w.requests as f64).max(1e-9),
        };
        self.since_change += 1;
        if self.since_change == 1 {
            return self.limit; // the window a change happened in: mixed, not a measurement
        }
        if let Some(p) = self.probe.take() {
            return self.verdict(p, now);
        }
        let before = self.measured.map_or(now, |m| m.blend(now));
        self.measured = Some(before);
        let limit = self.limit.min(wanting.max(1));
        if contention > CONVOY && limit > 1 {
            self.measured = None;
            return self.change(limit / 2, None);
        }
        if w.waited
            && contention < UNCONTENDED
            && limit < wanting
            && self.since_change > self.hold.up
        {
            let to = if now.busy < MOSTLY_BLOCKED {
                limit * 2
            } else {
                limit + 1
            };
            let to = to.min(wanting);
            // Far from what the GIL can serve even if every new thread were as busy: nothing to
            // judge (and a change by a few percent could not be judged on a noisy busy share).
            if to as f64 * before.busy < ROOMY {
                self.change(to, None);
                // Nothing to judge, so no window to settle either: the next one may raise again.
                self.since_change = 1;
                return self.limit;
            }
            return self.change(
                to,
                Some(Probe {
                    from: limit,
                    before,
                }),
            );
        }
        if limit > 1 && self.since_change > self.hold.down {
            // A quarter fewer (at least one): a step an app that needs its threads hardly
            // notices for the two windows of the probe.
            let to = limit - (limit / 4).max(1);
            return self.change(
                to,
                Some(Probe {
                    from: limit,
                    before,
                }),
            );
        }
        self.limit
    }

    /// Keep or take back a probe.
    ///
    /// Busy share: going from `from` to `limit` threads, compute-bound requests change it by
    /// `from/limit`, requests blocked outside Python keep it; the verdict takes whichever the
    /// measured change is nearer. Cost: CPU of the whole process per request, which also sees
    /// what more threads cost outside the GIL (waking and switching between them: short
    /// requests that a single thread serves back to back pay it although they never wait for
    /// the GIL). More threads are kept when the requests are not compute-bound and cost no more
    /// than [`COST_TOLERANCE`] extra; fewer when they are compute-bound or cost that much less.
    fn verdict(&mut self, p: Probe, now: Measure) -> usize {
        let up = self.limit > p.from;
        let compute_bound = p.from as f64 / self.limit as f64; // busy ratio if compute-bound
        let nearer_compute_bound = if up {
            now.busy / p.before.busy < (1.0 + compute_bound) / 2.0
        } else {
            now.busy / p.before.busy >= (1.0 + compute_bound) / 2.0
        };
        let cost = now.cost / p.before.cost;
        let keep = if up {
            !nearer_compute_bound && cost <= 1.0 + COST_TOLERANCE
        } else {
            nearer_compute_bound || cost <= 1.0 - COST_TOLERANCE
        };
        let hold = if up {
            &mut self.hold.up
        } else {
            &mut self.hold.down
        };
        if keep {
            *hold = (*hold / 2).max(1);
            self.measured = Some(now);
            self.since_change = 1;
            self.limit
        } else {
            *hold = (*hold * 2).min(HOLD_MAX);
            self.measured = Some(p.before);
            self.change(p.from, None)
        }
    }

    /// A stall (see the module docs): one more.
    pub(crate) fn stalled(&mut self) -> usize {
        self.hold.up = 1;
        self.measured = None;
        self.change(self.limit + 1, None)
    }
}

/// The process's controller: the policy, and where the current window started.
struct Controller {
    policy: Policy,
    start: Instant,
    /// The stats counters and the process's CPU time at the start of the window.
    base: stats::Stats,
    base_cpu: Duration,
    /// Since when work has waited for a thread (as the first waiter saw it), and the process's
    /// CPU and preemptions then.
    streak: Option<Sample>,
}

static CONTROLLER: Mutex<Option<Controller>> = Mutex::new(None);
/// Nanoseconds since START at which the current window may close (cheap check per request).
static DUE_NS: AtomicU64 = AtomicU64::new(u64::MAX);
static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn since_start() -> u64 {
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// What `RWSGI_ADMISSION` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Setting {
    /// No admission control (`off`).
    Off,
    /// A fixed limit (`N`).
    Fixed(usize),
    /// The policy of this file (unset, or anything else).
    Adaptive,
}

fn setting(value: Option<&str>) -> Setting {
    match value.map(str::trim) {
        Some("off") => Setting::Off,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => Setting::Fixed(n),
            _ => Setting::Adaptive,
        },
        None => Setting::Adaptive,
    }
}

/// Called once per process (by admit.rs, from `initialize`): reads `RWSGI_ADMISSION` and, unless
/// it says otherwise, starts the controller.
pub(crate) fn init() -> Setting {
    let setting = setting(std::env::var(ADMISSION_ENV).ok().as_deref());
    if setting == Setting::Adaptive {
        *lock() = Some(Controller {
            // Start unlimited (every thread admitted, as without admission): the first windows
            // bring it down to what the GIL serves.
            policy: Policy::new(usize::MAX / 2),
            start: Instant::now(),
            base: stats::stats(),
            base_cpu: process_cpu(),
            streak: None,
        });
        DUE_NS.store(since_start() + WINDOW.as_nanos() as u64, Ordering::Relaxed);
    }
    setting
}

fn lock() -> std::sync::MutexGuard<'static, Option<Controller>> {
    CONTROLLER.lock().unwrap_or_else(|e| e.into_inner())
}

/// A change of the limit: (before, after), for the gate to apply.
pub(crate) type Change = (usize, usize);

/// One request ended (its costs are already in the stats counters): close the window if due.
/// `gate` tells (permits held, threads waiting for one, whether work waited since it was last
/// asked).
pub(crate) fn on_request(gate: &dyn Fn() -> (usize, usize, bool)) -> Option<Change> {
    if since_start() < DUE_NS.load(Ordering::Relaxed) {
        return None;
    }
    // Another thread may be deciding right now: this one goes on.
    let mut guard = CONTROLLER.try_lock().ok()?;
    let c = guard.as_mut()?;
    let now = stats::stats();
    let requests = now.requests - c.base.requests;
    let span = c.start.elapsed();
    if requests == 0 || (requests < WINDOW_REQUESTS && span < WINDOW_MAX) {
        return None;
    }
    let (held, waiting, waited) = gate();
    let cpu = process_cpu();
    let w = Window {
        requests,
        admitted: Duration::from_nanos(now.admitted_ns - c.base.admitted_ns),
        cpu: Duration::from_nanos(now.cpu_ns - c.base.cpu_ns),
        gil_wait: Duration::from_nanos(now.gil_wait_ns - c.base.gil_wait_ns),
        process_cpu: cpu.saturating_sub(c.base_cpu),
        waited,
    };
    let before = c.policy.limit;
    let limit = c.policy.decide(&w, held + waiting);
    c.base = now;
    c.base_cpu = cpu;
    c.start = Instant::now();
    DUE_NS.store(since_start() + WINDOW.as_nanos() as u64, Ordering::Relaxed);
    changed(before, limit)
}

fn changed(before: usize, after: usize) -> Option<Change> {
    if before == after {
        return None;
    }
    let field = if after > before {
        Field::LimitRaised
    } else {
        Field::LimitLowered
    };
    stats::add(field, 1);
    Some((before, after))
}

/// The first thread waiting for admission looks at the demand: `work` says whether work waits
/// for a thread right now. One more thread on a stall: work has waited all along for [`STALL`]
/// while the process used under [`STALL_CPU`] of a core and was hardly ever preempted (so it
/// was not starved of CPU by other processes, it had nothing to run).
pub(crate) fn on_wait(work: bool) -> Option<Change> {
    let mut guard = CONTROLLER.try_lock().ok()?;
    let c = guard.as_mut()?;
    if !work {
        c.streak = None;
        return None;
    }
    let now = Sample::now();
    let Some(since) = c.streak else {
        c.streak = Some(now);
        return None;
    };
    let span = since.at.elapsed();
    if span < STALL {
        return None;
    }
    c.streak = Some(now);
    let used = now.cpu.saturating_sub(since.cpu).as_secs_f64() / span.as_secs_f64();
    let preempted = now.preempted.saturating_sub(since.preempted);
    if used >= STALL_CPU || preempted >= STALL_PREEMPTED {
        return None;
    }
    let before = c.policy.limit;
    let limit = c.policy.stalled();
    changed(before, limit)
}

/// The process's CPU time and involuntary context switches at an instant.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    cpu: Duration,
    preempted: u64,
}

impl Sample {
    fn now() -> Sample {
        // SAFETY: getrusage fills the rusage struct we pass; zeroed is a valid initial value.
        let preempted = unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            if libc::getrusage(libc::RUSAGE_SELF, &mut ru) == 0 {
                ru.ru_nivcsw.max(0) as u64
            } else {
                0
            }
        };
        Sample {
            at: Instant::now(),
            cpu: process_cpu(),
            preempted,
        }
    }
}

/// CPU time of the whole process.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which ts is.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model app: each request needs `cpu` seconds on the GIL and waits `io` seconds outside
    /// Python; `limit` of them admitted at once on one free core. Every thread beyond the first
    /// adds `switch` seconds of CPU per request (waking, switching, cold caches).
    fn window(limit: usize, cpu: f64, io: f64, switch: f64) -> Window {
        let alone = cpu / (cpu + io);
        // Admitted requests share the GIL once they ask for more than it has.
        let demand = limit as f64 * alone;
        let busy = if demand > 1.0 {
            1.0 / limit as f64
        } else {
            alone
        };
        // A tenth of the waiting for the GIL is at pyhost's attach points (the rest is inside
        // the app), as measured for Django.
        let contention = (1.0 - busy - (1.0 - alone) * busy / alone).max(0.0) * 0.1;
        let requests = 50;
        let cost = cpu + switch * (limit.min(16) - 1) as f64;
        Window {
            requests,
            admitted: Duration::from_secs(1),
            cpu: Duration::from_secs_f64(busy),
            gil_wait: Duration::from_secs_f64(contention),
            process_cpu: Duration::from_secs_f64(cost * requests as f64),
            waited: true,
        }
    }

    /// The limits over `n` windows of a model app, starting from `start`.
    fn run(start: usize, cpu: f64, io: f64, n: usize) -> Vec<usize> {
        run_with(start, cpu, io, 0.0, n)
    }

    fn run_with(start: usize, cpu: f64, io: f64, switch: f64, n: usize) -> Vec<usize> {
        let mut p = Policy::new(start);
        (0..n)
            .map(|_| p.decide(&window(p.limit, cpu, io, switch), 16))
            .collect()
    }

    #[test]
    fn a_compute_bound_app_comes_down_to_one_thread_and_stays() {
        let limits = run(16, 1e-3, 0.0, 200);
        let settled = &limits[40..];
        let at_one = settled.iter().filter(|&&l| l == 1).count();
        assert!(at_one * 10 >= settled.len() * 9, "{limits:?}");
        assert!(settled.iter().all(|&l| l <= 2), "{limits:?}");
    }

    #[test]
    fn an_io_bound_app_keeps_or_gets_all_its_threads() {
        for start in [16, 1] {
            let limits = run(start, 30e-6, 10e-3, 200);
            let settled = &limits[20..];
            // All 16, but for the rare probe of a quarter fewer (two windows each).
            let all = settled.iter().filter(|&&l| l == 16).count();
            assert!(all * 10 >= settled.len() * 9, "{limits:?}");
            assert!(settled.iter().all(|&l| l >= 12), "{limits:?}");
        }
    }

    #[test]
    fn short_requests_that_cost_more_on_more_threads_get_one() {
        // 5 us of Python, and every extra thread adds 2 us of waking and switching: they never
        // meet in Python (no contention, busy unchanged), but one thread serves them cheapest.
        let limits = run_with(16, 5e-6, 2e-6, 2e-6, 300);
        let settled = &limits[100..];
        let at_one = settled.iter().filter(|&&l| l == 1).count();
        assert!(at_one * 10 >= settled.len() * 8, "{limits:?}");
    }

    #[test]
    fn a_mixed_app_settles_near_what_the_gil_serves() {
        // 0.4 ms on the GIL, 0.6 ms on a database: 2.5 requests keep the GIL busy.
        let limits = run(16, 0.4e-3, 0.6e-3, 300);
        let settled = &limits[100..];
        let mean = settled.iter().sum::<usize>() as f64 / settled.len() as f64;
        assert!((1.5..=4.0).contains(&mean), "mean {mean}: {limits:?}");
    }

    #[test]
    fn a_convoy_halves_at_once() {
        let mut p = Policy::new(16);
        let convoy = Window {
            requests: 50,
            admitted: Duration::from_secs(1),
            cpu: Duration::from_millis(60),
            gil_wait: Duration::from_millis(800),
            process_cpu: Duration::from_millis(60),
            waited: true,
        };
        p.decide(&convoy, 16); // settling window
        assert_eq!(p.decide(&convoy, 16), 8);
    }

    #[test]
    fn no_waiting_work_means_no_probe_up() {
        let mut p = Policy::new(2);
        let mut idle = window(2, 30e-6, 10e-3, 0.0);
        idle.waited = false;
        for _ in 0..40 {
            assert!(p.decide(&idle, 16) <= 2);
        }
        // (A probe down may run, and is taken back: the requests were not compute-bound.)
        assert_eq!(p.limit, 2);
    }

    #[test]
    fn the_limit_does_not_grow_past_the_threads_that_want_permits() {
        let mut p = Policy::new(4);
        for _ in 0..20 {
            let w = window(p.limit, 30e-6, 10e-3, 0.0);
            assert!(p.decide(&w, 6) <= 6);
        }
        assert_eq!(p.limit, 6);
    }

    #[test]
    fn the_diagnosis_setting() {
        assert_eq!(setting(None), Setting::Adaptive);
        assert_eq!(setting(Some("off")), Setting::Off);
        assert_eq!(setting(Some(" 3 ")), Setting::Fixed(3));
        assert_eq!(setting(Some("0")), Setting::Adaptive);
        assert_eq!(setting(Some("many")), Setting::Adaptive);
    }

    #[test]
    fn a_stall_raises_by_one() {
        let mut p = Policy::new(2);
        assert_eq!(p.stalled(), 3);
        assert_eq!(p.stalled(), 4);
    }
}
