//! The spinning fork-join pool: every task runs exactly once, thread ids are in range and
//! exclusive, nested and concurrent use degrade to serial, panics propagate, it parks and wakes,
//! and a stalled worker makes the next jobs serial.
//!
//! No assertion depends on how the OS schedules the worker: a job that needs the worker has its
//! caller's task wait until a task has started on the worker (the job's slots stay open until
//! the caller's own tasks are done, so a worker scheduled late still joins), and stalls are
//! made with a clock the test advances ([`Pool::with_clock`]).

use hrnet_runtime::kernels::pool::{Clock, BACKOFF_JOBS, SPIN, STALL};
use hrnet_runtime::kernels::Pool;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs a two-task job with one task certainly on the caller (`on_caller`) and one on the
/// worker (`on_worker`): each task first waits until the other thread has started one.
/// Fails (after a minute) if the worker never joins, e.g. because the pool runs jobs serially.
fn both(pool: &Pool, on_caller: &(dyn Fn() + Sync), on_worker: &(dyn Fn() + Sync)) {
    let started = [AtomicBool::new(false), AtomicBool::new(false)];
    pool.run(2, &|_, th| {
        let (me, other) = if th == 0 { (0, 1) } else { (1, 0) };
        started[me].store(true, Ordering::Release);
        wait_until("the other thread to start a task", || {
            started[other].load(Ordering::Acquire)
        });
        if th == 0 {
            on_caller()
        } else {
            on_worker()
        }
    });
}

/// [`both`] with nothing for the caller to do.
fn with_worker(pool: &Pool, on_worker: &(dyn Fn() + Sync)) {
    both(pool, &|| {}, on_worker);
}

/// Waits for `cond`; a minute without it is a failure (a hang, not a slow machine).
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "waited a minute for {what}");
        std::thread::yield_now();
    }
}

/// A clock that moves only when the test says so, and counts how often it was read.
#[derive(Default)]
struct ManualClock {
    nanos: AtomicU64,
    reads: AtomicUsize,
}

impl ManualClock {
    fn advance(&self, d: Duration) {
        self.nanos.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        self.reads.fetch_add(1, Ordering::SeqCst);
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// A pool of two threads on a [`ManualClock`].
fn manual_pool() -> (Pool, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::default());
    (Pool::with_clock(2, Box::new(Arc::clone(&clock))), clock)
}

/// Runs a job in which the worker keeps the caller waiting for `wait` of clock time: the
/// worker's task ends only after the caller has started timing its wait (read the clock) and
/// the clock has been advanced by `wait`.
fn worker_keeps_caller_waiting(pool: &Pool, clock: &ManualClock, wait: Duration) {
    let reads = clock.reads.load(Ordering::SeqCst);
    with_worker(pool, &|| {
        wait_until("the caller to time its wait", || {
            clock.reads.load(Ordering::SeqCst) > reads
        });
        clock.advance(wait);
    });
}

#[test]
fn every_task_once_with_valid_thread_ids() {
    for threads in [1, 2, 3] {
        let pool = Pool::new(threads);
        assert_eq!(pool.threads(), threads);
        for n in [0, 1, 2, 7, 100, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            let busy: Vec<AtomicBool> = (0..threads).map(|_| AtomicBool::new(false)).collect();
            pool.run(n, &|t, th| {
                assert!(th < threads);
                assert!(
                    !busy[th].swap(true, Ordering::SeqCst),
                    "two tasks on thread {th}"
                );
                hits[t].fetch_add(1, Ordering::Relaxed);
                busy[th].store(false, Ordering::SeqCst);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "threads={threads} n={n}"
            );
        }
    }
}

#[test]
fn nested_run_is_serial_and_complete() {
    let pool = Pool::new(2);
    let total = AtomicUsize::new(0);
    pool.run(4, &|_, _| {
        pool.run(5, &|_, th| {
            assert_eq!(th, 0);
            total.fetch_add(1, Ordering::Relaxed);
        });
    });
    assert_eq!(total.load(Ordering::Relaxed), 20);
}

#[test]
fn wakes_after_parking() {
    let (pool, _clock) = manual_pool();
    let count = AtomicUsize::new(0);
    for _ in 0..3 {
        // Long enough for the worker to park (if it was scheduled at all); either way the
        // next job must get it.
        std::thread::sleep(SPIN + Duration::from_millis(5));
        with_worker(&pool, &|| {
            count.fetch_add(1, Ordering::Relaxed);
        });
    }
    assert!(count.load(Ordering::Relaxed) >= 3);
}

#[test]
fn panics_propagate_and_pool_survives() {
    let (pool, _clock) = manual_pool();
    // On the worker.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        with_worker(&pool, &|| panic!("the worker's task fails"));
    }));
    assert!(r.is_err());
    // On the caller.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        both(&pool, &|| panic!("the caller's task fails"), &|| {});
    }));
    assert!(r.is_err());
    // Both still work, and no panic is left over for the next job.
    with_worker(&pool, &|| {});
    let count = AtomicUsize::new(0);
    pool.run(16, &|_, _| {
        count.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(count.load(Ordering::Relaxed), 16);
}

#[test]
fn concurrent_callers_share_one_pool() {
    let pool = Pool::new(2);
    let count = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..200 {
                    pool.run(8, &|_, _| {
                        count.fetch_add(1, Ordering::Relaxed);
                    });
                }
            });
        }
    });
    assert_eq!(count.load(Ordering::Relaxed), 3 * 200 * 8);
}

#[test]
fn a_stalled_worker_makes_the_next_jobs_serial() {
    let (pool, clock) = manual_pool();
    worker_keeps_caller_waiting(&pool, &clock, STALL * 2);
    for _ in 0..BACKOFF_JOBS {
        pool.run(4, &|_, th| {
            assert_eq!(th, 0, "a job ran on the worker during the back-off")
        });
    }
    // Afterwards the worker is used again.
    with_worker(&pool, &|| {});
}

#[test]
fn a_wait_shorter_than_a_stall_keeps_the_worker() {
    let (pool, clock) = manual_pool();
    worker_keeps_caller_waiting(&pool, &clock, STALL / 2);
    // Not serial: the very next job gets the worker.
    with_worker(&pool, &|| {});
}
