//! The job queue between nginx's event loop and the Python threads of one worker process.
//!
//! Two properties matter for speed, both found by profiling (bench/results, issue 5): every
//! hand-off that wakes a sleeping thread costs a futex call and, on a virtual machine, an
//! inter-processor interrupt; and a request served by a thread that ran a moment ago finds its
//! stack, its Python thread state and the interpreter's data still in cache.
//!
//! So the queue wakes a thread only when one is actually asleep (a `Condvar` makes a system call
//! on every notify), and it wakes the thread that went to sleep *last*. Under a light load a few
//! hot threads then serve everything while the others stay asleep; under a load that needs every
//! thread (slow or blocking requests) all of them work, as before.
//!
//! Measured against the `Condvar` queue it replaces (nginx embedded, 2 workers x 16 threads, wrk
//! c=16, quiet machine, interleaved runs): hello 35-41k -> 45-49k req/s and 33-40 -> 30-31 us of
//! server CPU per request; the Django page +23%; the 10 ms sleep unchanged. Rejected after the
//! same measurement: yielding the processor a few times before sleeping (fewer sleeps, but more
//! involuntary switches and lower throughput), and pinning nginx workers to CPUs
//! (`worker_cpu_affinity`), which did not help reliably.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::thread::Thread;

/// A multi-producer, multi-consumer queue with last-in-first-out wake-ups.
pub struct Dispatch<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    tasks: VecDeque<T>,
    stopping: bool,
    /// Every consumer thread, by slot number (see [`Dispatch::join`]).
    threads: Vec<Thread>,
    /// Slots of the consumers asleep in [`Dispatch::next`], most recent last.
    asleep: Vec<usize>,
}

impl<T> Default for Dispatch<T> {
    fn default() -> Self {
        Dispatch {
            state: Mutex::new(State {
                tasks: VecDeque::new(),
                stopping: false,
                threads: Vec::new(),
                asleep: Vec::new(),
            }),
        }
    }
}

impl<T> Dispatch<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every update under this lock is a single push/pop: a panic cannot leave it half done.
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Registers the calling thread as a consumer; returns its slot for [`Dispatch::next`].
    pub fn join(&self) -> usize {
        let mut st = self.lock();
        st.threads.push(std::thread::current());
        st.threads.len() - 1
    }

    /// Queues `task` and wakes the most recently sleeping consumer, if one sleeps.
    pub fn push(&self, task: T) {
        let mut st = self.lock();
        if st.stopping {
            return;
        }
        st.tasks.push_back(task);
        let wake = st
            .asleep
            .pop()
            .and_then(|slot| st.threads.get(slot).cloned());
        drop(st);
        if let Some(thread) = wake {
            thread.unpark();
        }
    }

    /// For a thread waiting to be admitted into Python: do tasks wait, or is the queue stopping?
    pub fn demand(&self) -> pyhost::Demand {
        let st = self.lock();
        if st.stopping {
            pyhost::Demand::Stop
        } else if st.tasks.is_empty() {
            pyhost::Demand::Idle
        } else {
            pyhost::Demand::Waiting
        }
    }

    /// Consumer `slot`: the next task, sleeping while there is none. None once stopping.
    pub fn next(&self, slot: usize) -> Option<T> {
        let mut st = self.lock();
        loop {
            if st.stopping {
                return None;
            }
            if let Some(task) = st.tasks.pop_front() {
                return Some(task);
            }
            st.asleep.push(slot);
            drop(st);
            // An unpark that came before this park makes it return at once, so no wake-up is
            // lost between the unlock and the park.
            std::thread::park();
            st = self.lock();
            // A spurious wake-up leaves the slot on the list: take it off, so that it is never
            // there twice. (After a real wake-up push already took it off.)
            if let Some(i) = st.asleep.iter().rposition(|&s| s == slot) {
                st.asleep.remove(i);
            }
        }
    }

    /// Drops queued tasks and makes every consumer's [`Dispatch::next`] return None.
    pub fn stop(&self) {
        let mut st = self.lock();
        st.stopping = true;
        st.tasks.clear();
        let asleep = std::mem::take(&mut st.asleep);
        let sleepers: Vec<Thread> = asleep
            .iter()
            .filter_map(|&s| st.threads.get(s).cloned())
            .collect();
        drop(st);
        for thread in sleepers {
            thread.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    /// Starts `n` consumers that report (their slot, the task) for every task they take.
    fn consumers(
        d: &Arc<Dispatch<u32>>,
        n: usize,
    ) -> (
        mpsc::Receiver<(usize, u32)>,
        Vec<std::thread::JoinHandle<()>>,
    ) {
        let (tx, rx) = mpsc::channel();
        let joined = Arc::new(AtomicUsize::new(0));
        let handles = (0..n)
            .map(|_| {
                let (d, tx, joined) = (Arc::clone(d), tx.clone(), Arc::clone(&joined));
                std::thread::spawn(move || {
                    let slot = d.join();
                    joined.fetch_add(1, Ordering::SeqCst);
                    while let Some(task) = d.next(slot) {
                        tx.send((slot, task)).unwrap();
                    }
                })
            })
            .collect();
        while joined.load(Ordering::SeqCst) < n {
            std::thread::yield_now();
        }
        (rx, handles)
    }

    fn wait_until_all_asleep(d: &Dispatch<u32>, n: usize) {
        for _ in 0..2000 {
            if d.lock().asleep.len() == n {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("consumers did not go to sleep");
    }

    #[test]
    fn every_task_is_taken_exactly_once() {
        let d = Arc::new(Dispatch::default());
        let (rx, handles) = consumers(&d, 4);
        for i in 0..10_000 {
            d.push(i);
        }
        let mut seen: Vec<u32> = (0..10_000).map(|_| rx.recv().unwrap().1).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10_000).collect::<Vec<_>>());
        d.stop();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn the_thread_that_slept_last_is_woken_first() {
        let d = Arc::new(Dispatch::default());
        let (rx, handles) = consumers(&d, 4);
        wait_until_all_asleep(&d, 4);
        // One task at a time, each finished before the next: the same (hot) thread takes all.
        d.push(0);
        let (first, _) = rx.recv().unwrap();
        for i in 1..50 {
            wait_until_all_asleep(&d, 4);
            d.push(i);
            assert_eq!(
                rx.recv().unwrap().0,
                first,
                "task {i} went to a cold thread"
            );
        }
        d.stop();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn stop_wakes_sleepers_and_refuses_new_tasks() {
        let d = Arc::new(Dispatch::default());
        let (rx, handles) = consumers(&d, 3);
        wait_until_all_asleep(&d, 3);
        d.stop();
        for h in handles {
            h.join().unwrap();
        }
        d.push(7);
        assert!(rx.try_recv().is_err());
        assert!(d.lock().tasks.is_empty());
    }
}
