//! Giving freed malloc memory back to the kernel in a process that hosts Python threads.
//!
//! glibc keeps what a process frees for reuse. After the first freed 1 MiB block it also raises
//! its mmap threshold (up to 32 MiB) and trim threshold (twice that), so later request bodies (the
//! web server's body buffer, the copy a transport hands us, the `bytes` of `wsgi.input.read()`)
//! come from the heaps and stay there once freed: a burst of large requests leaves the process
//! at the burst's high-water mark for good. Measured on the bench suite (nginx embedded, 2 x 16
//! threads, `echo1m` at c=64): the main heap of nginx's event thread kept 9-25 MiB per worker
//! after the burst, 88-93% of it free chunks, and the tree's PSS after the suite's workloads
//! varied from 115 to 243 MiB between runs (mod_wsgi embedded: 110).
//!
//! Fixing glibc's mmap threshold instead (every large block its own mapping, unmapped on free)
//! would bound memory, but each such block then costs fresh zeroed pages on every request: on the
//! bench machine (page faults ~10 us each) that made `echo1m` use 4-5x the CPU per request
//! (docs/architecture.md, "Memory"). So we leave the allocator's fast path alone and trim behind
//! it: one small thread per process calls `malloc_trim(0)`, which returns the free pages of the
//! main heap and of the free chunks inside every arena (not the free top of a thread arena) to
//! the kernel, once the process has gone quiet after doing work, and at most every
//! [`BUSY_TRIM_EVERY`] ticks while it stays busy. A trim while busy costs what the next requests
//! fault back in: at most ~30 MiB per 10 s, under 1% of a core on that machine.
//!
//! [`limit_arenas`] caps glibc at [`ARENA_MAX`] malloc arenas instead of 8 per core (16 on the
//! bench machine, one per request thread). Python runs one thread at a time under the GIL, so
//! per-thread arenas buy Python's allocations no parallelism, while each arena keeps its own free
//! memory (a freed body, a free top that `malloc_trim` cannot return) and its own fragments of
//! long-lived objects. The few arenas left serve the allocations made outside the GIL (transport
//! copies, nginx's event thread). An operator's own setting wins: if `GLIBC_TUNABLES` names
//! `glibc.malloc.arena_max` or `MALLOC_ARENA_MAX` is set, we leave the limit alone (nginx clears
//! its workers' environment, but glibc applied the setting at exec, before nginx forked; pass it
//! with `env MALLOC_ARENA_MAX;` so that we see it too).

use std::sync::Once;
use std::time::Duration;

/// How often the trimmer looks at the process's CPU time.
const TICK: Duration = Duration::from_secs(1);

/// A tick in which the whole process used less CPU than this counts as quiet (1% of a core).
const QUIET_CPU: Duration = Duration::from_millis(10);

/// A trim only after at least this much CPU since the last one: an idle process is not trimmed
/// again and again, and a trickle of small requests does not trim every second.
const WORK_BEFORE_TRIM: Duration = Duration::from_millis(50);

/// While the process stays busy, trim at most this often.
const BUSY_TRIM_EVERY: u32 = 10; // ticks

/// Most malloc arenas a Python-hosting process gets (glibc's default: 8 per core).
pub(crate) const ARENA_MAX: usize = 4;

/// Cap the malloc arenas, unless the operator set the cap. Call before the request threads
/// start: a thread picks its arena at its first allocation. Returns whether the cap was applied.
pub(crate) fn limit_arenas() -> bool {
    let tunables = std::env::var("GLIBC_TUNABLES").ok();
    let env_set = std::env::var_os("MALLOC_ARENA_MAX").is_some();
    if operator_set("glibc.malloc.arena_max", tunables.as_deref(), env_set) {
        return false;
    }
    set_arena_max(ARENA_MAX)
}

/// True when the operator set this malloc parameter through the environment.
fn operator_set(tunable: &str, tunables: Option<&str>, env_var_set: bool) -> bool {
    // GLIBC_TUNABLES=name=value:name=value...
    env_var_set
        || tunables.is_some_and(|t| {
            t.split(':')
                .any(|item| item.split('=').next() == Some(tunable))
        })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_arena_max(n: usize) -> bool {
    let Ok(n) = libc::c_int::try_from(n) else {
        return false;
    };
    // SAFETY: mallopt updates malloc's parameters under its own lock; it may be called from any
    // thread at any time and affects later arena choices only.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_n: usize) -> bool {
    false
}

/// What the trimmer decides at the end of one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Wait,
    Trim,
}

/// The trimmer's state between ticks; pure, so the policy is testable without a clock.
#[derive(Debug, Default)]
struct Policy {
    /// Process CPU time used since the last trim.
    work_since_trim: Duration,
    /// Ticks since the last trim.
    ticks_since_trim: u32,
}

impl Policy {
    /// Account one tick in which the process used `cpu`; say whether to trim now.
    fn tick(&mut self, cpu: Duration) -> Decision {
        self.work_since_trim += cpu;
        self.ticks_since_trim = self.ticks_since_trim.saturating_add(1);
        let worked = self.work_since_trim >= WORK_BEFORE_TRIM;
        let went_quiet = cpu < QUIET_CPU;
        if worked && (went_quiet || self.ticks_since_trim >= BUSY_TRIM_EVERY) {
            *self = Policy::default();
            Decision::Trim
        } else {
            Decision::Wait
        }
    }
}

/// Start the trimmer thread, once per process. Called by `initialize` in the worker process
/// (after any fork: a thread does not survive fork).
pub(crate) fn start_trimmer() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        if !trim_supported() {
            return;
        }
        // The server's signals must reach the thread that waits for them, not this one, which
        // would leave them unnoticed until that thread wakes for another reason (thread.rs).
        // A failed spawn only costs the trimming; the server works as before.
        let _ = crate::thread::spawn_with_signals_blocked(
            std::thread::Builder::new()
                .name("rwsgi-trim".into())
                .stack_size(64 * 1024),
            run_trimmer,
        );
    });
}

fn run_trimmer() {
    let mut policy = Policy::default();
    let Some(mut last) = process_cpu() else {
        return;
    };
    loop {
        std::thread::sleep(TICK);
        let Some(now) = process_cpu() else {
            return;
        };
        if policy.tick(now.saturating_sub(last)) == Decision::Trim {
            trim();
        }
        // The trim's own CPU is not the app's work.
        last = process_cpu().unwrap_or(now);
    }
}

/// CPU time used by all threads of this process so far.
fn process_cpu() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer to a local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u32::try_from(ts.tv_nsec).ok()?;
    Some(Duration::new(secs, nanos))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_supported() -> bool {
    true
}

/// Other C libraries have other allocators (and no malloc_trim): nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_supported() -> bool {
    false
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim takes each arena's lock while it works and may be called from any
    // thread at any time; it only releases pages of free chunks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    const BUSY: Duration = Duration::from_millis(900);
    const IDLE: Duration = Duration::from_millis(0);

    #[test]
    fn operator_arena_setting_wins() {
        let name = "glibc.malloc.arena_max";
        assert!(operator_set(
            name,
            Some("glibc.malloc.mmap_threshold=4096:glibc.malloc.arena_max=2"),
            false
        ));
        assert!(operator_set(name, None, true));
        assert!(!operator_set(
            name,
            Some("glibc.malloc.mmap_threshold=4096"),
            false
        ));
        assert!(!operator_set(
            name,
            Some("glibc.malloc.arena_max_x=1"),
            false
        ));
        assert!(!operator_set(name, None, false));
    }

    /// With the cap, many threads share a few arenas: count distinct arenas via malloc_info.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn threads_share_at_most_arena_max_arenas() {
        if std::env::var_os("GLIBC_TUNABLES").is_some()
            || std::env::var_os("MALLOC_ARENA_MAX").is_some()
        {
            return;
        }
        // Arenas made before the cap (this test binary's own threads) stay; count from there.
        let before = arena_count();
        assert!(limit_arenas());
        // Threads that each allocate, all alive at once, so none hands its arena to the next.
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(17));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let v = std::hint::black_box(vec![1u8; 4096]);
                    barrier.wait();
                    barrier.wait();
                    drop(v);
                })
            })
            .collect();
        barrier.wait();
        let arenas = arena_count();
        barrier.wait();
        for t in threads {
            t.join().expect("thread");
        }
        assert!(
            arenas <= before.max(ARENA_MAX),
            "{arenas} arenas for 16 more threads ({before} before)"
        );
    }

    /// Number of arenas malloc_info reports (`<heap nr=` elements).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn arena_count() -> usize {
        let mut buf: *mut libc::c_char = std::ptr::null_mut();
        let mut len: libc::size_t = 0;
        // SAFETY: open_memstream allocates a growing buffer that buf/len describe after fclose;
        // malloc_info writes to the stream; we free the buffer once read.
        unsafe {
            let f = libc::open_memstream(&mut buf, &mut len);
            assert!(!f.is_null());
            assert_eq!(libc::malloc_info(0, f), 0);
            libc::fclose(f);
            let text = std::slice::from_raw_parts(buf.cast::<u8>(), len).to_vec();
            libc::free(buf.cast());
            String::from_utf8_lossy(&text).matches("<heap nr=").count()
        }
    }

    #[test]
    fn trims_once_when_the_process_goes_quiet_after_work() {
        let mut p = Policy::default();
        assert_eq!(p.tick(BUSY), Decision::Wait);
        assert_eq!(p.tick(BUSY), Decision::Wait);
        assert_eq!(p.tick(IDLE), Decision::Trim);
        for _ in 0..100 {
            assert_eq!(
                p.tick(IDLE),
                Decision::Wait,
                "an idle process is trimmed once"
            );
        }
    }

    #[test]
    fn trims_every_few_seconds_while_busy() {
        let mut p = Policy::default();
        let trims = (0..100).filter(|_| p.tick(BUSY) == Decision::Trim).count();
        assert_eq!(trims, 100 / BUSY_TRIM_EVERY as usize);
    }

    #[test]
    fn a_trickle_of_light_requests_is_not_trimmed_every_tick() {
        let mut p = Policy::default();
        let light = Duration::from_millis(5); // quiet, but it adds up
        let trims = (0..100).filter(|_| p.tick(light) == Decision::Trim).count();
        assert_eq!(trims, 10, "one trim per 50 ms of work");
    }

    #[test]
    fn process_cpu_moves_forward() {
        let a = process_cpu().expect("CLOCK_PROCESS_CPUTIME_ID");
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let b = process_cpu().expect("CLOCK_PROCESS_CPUTIME_ID");
        assert!(b > a, "{a:?} -> {b:?} ({x})");
    }

    /// Pages of `[start, start + len)` that are resident, by mincore(2).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn resident_pages(start: usize, len: usize) -> usize {
        const PAGE: usize = 4096;
        let first = start.div_ceil(PAGE) * PAGE;
        let end = (start + len) / PAGE * PAGE;
        let pages = (end - first) / PAGE;
        let mut vec = vec![0u8; pages];
        // SAFETY: the range lies inside a heap mapping of this process (the block was freed but
        // its arena keeps the memory mapped); mincore writes one byte per page into vec.
        let rc =
            unsafe { libc::mincore(first as *mut libc::c_void, end - first, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|b| **b & 1 == 1).count()
    }

    /// The cause, on this process's allocator: once one freed 1 MiB block has raised glibc's
    /// mmap threshold, later freed 1 MiB blocks stay in the heap with their pages resident; a
    /// trim is what hands those pages back.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_large_blocks_stay_resident_until_trimmed() {
        const MIB: usize = 1 << 20;
        if std::env::var_os("GLIBC_TUNABLES").is_some() {
            return; // an operator's malloc settings change glibc's defaults
        }
        // The first large block is mmap'd; freeing it raises the threshold, as a server's first
        // large request does.
        drop(std::hint::black_box(vec![1u8; MIB]));
        // Blocks kept between the freed ones, so these are not merged into the heap's top.
        let mut kept = Vec::new();
        let mut freed = Vec::new();
        for _ in 0..8 {
            freed.push(std::hint::black_box(vec![1u8; MIB]));
            kept.push(std::hint::black_box(vec![1u8; 256]));
        }
        let blocks: Vec<usize> = freed.iter().map(|v| v.as_ptr() as usize).collect();
        drop(freed);
        let resident = |blocks: &[usize]| -> usize {
            blocks
                .iter()
                .map(|b| resident_pages(b + 64, MIB - 128))
                .sum()
        };
        let before = resident(&blocks);
        assert!(
            before >= 8 * 250,
            "freed 1 MiB blocks stay resident: {before} pages"
        );
        trim();
        let after = resident(&blocks);
        assert!(
            after < before / 4,
            "malloc_trim released them: {before} -> {after} pages"
        );
        drop(kept);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_trimmer_thread_blocks_the_servers_signals() {
        start_trimmer();
        let blocked = (0..200)
            .find_map(|_| {
                let found = std::fs::read_dir("/proc/self/task").ok()?.find_map(|t| {
                    let dir = t.ok()?.path();
                    let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
                    (comm.trim() == "rwsgi-trim")
                        .then(|| std::fs::read_to_string(dir.join("status")).ok())
                        .flatten()
                });
                if found.is_none() {
                    std::thread::sleep(Duration::from_millis(10));
                }
                found
            })
            .and_then(|status| {
                let line = status
                    .lines()
                    .find(|l| l.starts_with("SigBlk:"))?
                    .to_owned();
                u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
            })
            .expect("the rwsgi-trim thread and its SigBlk line");
        for sig in [
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGCHLD,
        ] {
            assert!(blocked & (1 << (sig - 1)) != 0, "signal {sig} not blocked");
        }
        assert!(
            blocked & (1 << (libc::SIGSEGV - 1)) == 0,
            "faults must stay deliverable"
        );
        // The calling thread got its own mask back.
        // SAFETY: reads the current mask into a local set.
        let mine = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut set);
            libc::sigismember(&set, libc::SIGTERM)
        };
        assert_eq!(mine, 0, "the caller's mask must be restored");
    }
}
