//! A persistent fork-join thread pool with spinning workers.
//!
//! [`Pool::run`]`(n, &|task, thread| …)` runs `n` tasks on the calling thread and the workers,
//! handing out task indices dynamically from one atomic counter, and returns when all are done.
//! Workers spin on an epoch counter for [`SPIN`] after their last job (a fork-join then costs a
//! few hundred nanoseconds), and park after that (waking a parked thread costs tens of µs).
//! Nothing is allocated per call. With one thread there are no workers and `run` is a plain
//! loop. `thread` (0 = the caller) lets a task index per-thread scratch memory.
//!
//! A worker that is descheduled (the machine is oversubscribed) never delays a job it has not
//! joined yet: the caller runs all remaining tasks itself and then closes the job's open slots.
//!
//! If a worker that did join a job stalls (preempted for more than [`STALL`]), the pool runs the
//! next [`BACKOFF_JOBS`] jobs on the caller alone, so an oversubscribed machine degrades to
//! one-thread speed instead of waiting for time slices. The stall is measured with a [`Clock`]
//! ([`MonotonicClock`] unless [`Pool::with_clock`] is given another), so tests can make a worker
//! stall without depending on how the OS schedules it.
//!
//! Concurrent or nested calls to `run` on the same pool are safe: the second caller simply runs
//! its tasks serially on its own thread. A task's panic is re-raised in the caller of the job it
//! belongs to, and only there: the caller takes the panic flag of its job before it lets another
//! job start.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long an idle worker spins before parking.
pub const SPIN: Duration = Duration::from_millis(3);

/// Minimum number of spin iterations before parking (about [`SPIN`] on this machine).
const MIN_SPINS: u32 = 1 << 17;

/// A wait this long for a worker's claimed task means it was preempted: the next
/// [`BACKOFF_JOBS`] jobs then run on the caller alone (a fork-join pool on an oversubscribed
/// machine is otherwise slower than one thread).
pub const STALL: Duration = Duration::from_millis(1);
/// See [`STALL`]: about a third of a W32 inference.
pub const BACKOFF_JOBS: usize = 100;

/// Spins of the caller waiting for claimed tasks before it starts yielding its core.
const WAIT_SPINS: u32 = 1 << 12;

type Job = dyn Fn(usize, usize) + Sync;

/// A monotonic time source for the pool's stall detection (see [`STALL`]).
pub trait Clock: Send + Sync {
    /// Time since an arbitrary fixed origin; never decreases.
    fn now(&self) -> Duration;
}

/// A shared clock (the caller keeps a handle to it, e.g. to advance a test clock).
impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }
}

/// The real clock ([`Instant`]), the default of [`Pool::new`].
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> MonotonicClock {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> MonotonicClock {
        MonotonicClock::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// State shared between the caller of [`Pool::run`] and the workers.
struct Shared {
    /// The current job, lifetime-erased. Written only by the thread holding `busy`, before it
    /// bumps `epoch`; read by workers after they observe the bump.
    job: UnsafeCell<*const Job>,
    n_tasks: AtomicUsize,
    next: AtomicUsize,
    /// Bumped once per job (and once at shutdown).
    epoch: AtomicUsize,
    /// Worker slots of the current job not yet claimed; the caller closes the job by swapping
    /// it to 0, so a worker that wakes up late never blocks the caller.
    slots: AtomicUsize,
    /// Claimed slots whose worker has finished.
    done: AtomicUsize,
    busy: AtomicBool,
    /// Jobs still to run on the caller alone after a worker stalled (see [`STALL`]).
    serial_jobs: AtomicUsize,
    shutdown: AtomicBool,
    panicked: AtomicBool,
    /// Per worker: parked (or about to park).
    sleeping: Vec<AtomicBool>,
}

// SAFETY: `job` is only written by the holder of `busy` while no worker reads it (every worker
// that claimed a slot of the previous job has bumped `done`, and unclaimed slots were closed),
// and read by a worker only between claiming a slot and bumping `done`, during which the caller
// keeps the pointee alive and unchanged.
unsafe impl Sync for Shared {}
// SAFETY: the raw pointer inside is only dereferenced under the protocol above.
unsafe impl Send for Shared {}

/// A fixed-size pool of `threads - 1` worker threads plus the caller.
pub struct Pool {
    threads: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    clock: Box<dyn Clock>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads)
            .finish()
    }
}

impl Pool {
    /// A pool running tasks on `threads` threads in total (the caller included); `threads` of 0
    /// is treated as 1. With 1 thread no worker is started.
    pub fn new(threads: usize) -> Pool {
        Pool::with_clock(threads, Box::new(MonotonicClock::new()))
    }

    /// Like [`Pool::new`], with `clock` measuring how long the caller waits for a worker (the
    /// stall detection of [`STALL`]; the workers' spin-then-park timing stays on real time).
    pub fn with_clock(threads: usize, clock: Box<dyn Clock>) -> Pool {
        let threads = threads.max(1);
        let n_workers = threads - 1;
        let noop: &'static Job = &|_, _| {};
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(noop as *const Job),
            n_tasks: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            epoch: AtomicUsize::new(0),
            slots: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            serial_jobs: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            sleeping: (0..n_workers).map(|_| AtomicBool::new(false)).collect(),
        });
        let workers = (0..n_workers)
            .map(|i| {
                let s = Arc::clone(&shared);
                thread::Builder::new()
                    .name(format!("hrnet-worker-{}", i + 1))
                    .spawn(move || worker(&s, i))
                    .expect("spawning a pool thread")
            })
            .collect();
        Pool {
            threads,
            shared,
            workers,
            clock,
        }
    }

    /// Total number of threads (workers + the caller).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(task, thread)` for every `task` in `0..n_tasks`, spread over the pool, and returns
    /// when all have finished. `thread < self.threads()` identifies the executing thread; no two
    /// tasks run at the same time with the same `thread`.
    ///
    /// # Panics
    /// If a task panics (after all tasks have finished).
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize, usize) + Sync)) {
        if self.workers.is_empty() || n_tasks <= 1 {
            for t in 0..n_tasks {
                f(t, 0);
            }
            return;
        }
        let s = &*self.shared;
        // Take one back-off job, if any are left: a decrement that cannot pass zero, even when
        // several callers race for the last one.
        let serial = s
            .serial_jobs
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                #[cfg(test)]
                hook::fire(hook::Point::SerialDecision);
                left.checked_sub(1)
            })
            .is_ok();
        if serial {
            for t in 0..n_tasks {
                f(t, 0);
            }
            return;
        }
        if s.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // Nested or concurrent use: run serially on this thread.
            for t in 0..n_tasks {
                f(t, 0);
            }
            return;
        }
        // SAFETY: we hold `busy`, and every worker that claimed a slot of the previous job has
        // finished it while the other slots were closed, so nobody reads `job` now. The lifetime
        // is erased, but we do not return before every worker that claims this job is done.
        unsafe {
            *s.job.get() = std::mem::transmute::<&(dyn Fn(usize, usize) + Sync), *const Job>(f);
        }
        let n_workers = self.workers.len();
        s.n_tasks.store(n_tasks, Ordering::Relaxed);
        s.next.store(0, Ordering::Relaxed);
        s.done.store(0, Ordering::Relaxed);
        s.slots.store(n_workers, Ordering::Release);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        for (i, w) in self.workers.iter().enumerate() {
            if s.sleeping[i].load(Ordering::SeqCst) {
                w.thread().unpark();
            }
        }
        let res = catch_unwind(AssertUnwindSafe(|| loop {
            let t = s.next.fetch_add(1, Ordering::Relaxed);
            if t >= n_tasks {
                break;
            }
            f(t, 0);
        }));
        // Close the job: workers that have not claimed a slot yet never will.
        let claimed = n_workers - s.slots.swap(0, Ordering::AcqRel);
        let mut spins = 0u32;
        let mut slow_since = None;
        while s.done.load(Ordering::Acquire) != claimed {
            // A worker still busy after ~100 µs has probably been preempted (oversubscribed
            // machine): give the core away, which may be what it is waiting for.
            spins = spins.saturating_add(1);
            if spins < WAIT_SPINS {
                std::hint::spin_loop();
            } else {
                slow_since.get_or_insert_with(|| self.clock.now());
                thread::yield_now();
            }
        }
        if slow_since.is_some_and(|t| self.clock.now().saturating_sub(t) > STALL) {
            // The worker stalled: run the next jobs on this thread alone rather than wait
            // for a core the machine does not give us.
            s.serial_jobs.store(BACKOFF_JOBS, Ordering::Relaxed);
        }
        // Every worker of this job has bumped `done` after setting `panicked` (the Acquire
        // above pairs with their Release), and no other job can start before `busy` is
        // released: the flag is this job's, so take it first.
        let worker_panicked = s.panicked.swap(false, Ordering::Relaxed);
        s.busy.store(false, Ordering::Release);
        #[cfg(test)]
        hook::fire(hook::Point::Released);
        if let Err(e) = res {
            std::panic::resume_unwind(e);
        }
        assert!(!worker_panicked, "a pool task panicked on a worker thread");
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.shutdown.store(true, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        for w in &self.workers {
            w.thread().unpark();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(s: &Shared, index: usize) {
    let mut seen = 0usize;
    loop {
        // Wait for a new epoch: spin, then park.
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(256) {
                std::hint::spin_loop();
                continue;
            }
            // No `yield_now` here: on an oversubscribed machine it hands the core to another
            // process for a whole time slice, and the next job then runs without this worker.
            // Park only after both SPIN of wall time and as many spins as SPIN takes on an idle
            // core: a worker that was preempted for longer than SPIN keeps spinning a while
            // once it runs again, instead of parking right away and needing a slow wake-up.
            if start.elapsed() < SPIN || spins < MIN_SPINS {
                continue;
            }
            s.sleeping[index].store(true, Ordering::SeqCst);
            if s.epoch.load(Ordering::SeqCst) == seen {
                thread::park();
            }
            s.sleeping[index].store(false, Ordering::SeqCst);
        }
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        // Claim a slot of the current job, if it is still open.
        let mut open = s.slots.load(Ordering::Acquire);
        loop {
            if open == 0 {
                break;
            }
            match s
                .slots
                .compare_exchange_weak(open, open - 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(v) => open = v,
            }
        }
        if open == 0 {
            continue;
        }
        seen = s.epoch.load(Ordering::Acquire);
        // SAFETY: the slot we claimed was opened (Release) after the caller stored a valid job
        // pointer, and the caller keeps it alive until we bump `done` below.
        let job: &Job = unsafe { &**s.job.get() };
        let n = s.n_tasks.load(Ordering::Relaxed);
        let res = catch_unwind(AssertUnwindSafe(|| loop {
            let t = s.next.fetch_add(1, Ordering::Relaxed);
            if t >= n {
                break;
            }
            job(t, index + 1);
        }));
        if res.is_err() {
            s.panicked.store(true, Ordering::Relaxed);
        }
        s.done.fetch_add(1, Ordering::Release);
    }
}

/// Test hooks: code to run on the calling thread at a fixed point of [`Pool::run`], so a test
/// can put another caller's job exactly into a window of the protocol.
#[cfg(test)]
mod hook {
    use std::cell::RefCell;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Point {
        /// Inside the decision whether to take a back-off job: `serial_jobs` has been read,
        /// the decrement is not committed yet.
        SerialDecision,
        /// Right after `busy` is released.
        Released,
    }

    type Hook = Box<dyn FnOnce()>;

    thread_local! {
        static HOOKS: RefCell<Vec<(Point, Hook)>> = const { RefCell::new(Vec::new()) };
    }

    /// Runs `f` the next time this thread reaches `point` (once).
    pub(super) fn set(point: Point, f: impl FnOnce() + 'static) {
        HOOKS.with(|h| h.borrow_mut().push((point, Box::new(f))));
    }

    pub(super) fn fire(point: Point) {
        let f = HOOKS.with(|h| {
            let mut h = h.borrow_mut();
            let i = h.iter().position(|(p, _)| *p == point)?;
            Some(h.remove(i).1)
        });
        if let Some(f) = f {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A clock that never advances: no wait ever counts as a stall.
    struct Frozen;
    impl Clock for Frozen {
        fn now(&self) -> Duration {
            Duration::ZERO
        }
    }

    fn pool2() -> Arc<Pool> {
        Arc::new(Pool::with_clock(2, Box::new(Frozen)))
    }

    /// Runs a two-task job with one task on the caller and one (`on_worker`) on the worker:
    /// each task first waits until the other thread has started one (the job's slots stay open
    /// until the caller's own tasks are done, so the worker joins however late it is scheduled).
    fn with_worker(pool: &Pool, on_worker: &(dyn Fn() + Sync)) {
        let started = [AtomicBool::new(false), AtomicBool::new(false)];
        pool.run(2, &|_, th| {
            let me = th.min(1);
            started[me].store(true, Ordering::Release);
            let deadline = Instant::now() + Duration::from_secs(60);
            while !started[1 - me].load(Ordering::Acquire) {
                assert!(Instant::now() < deadline, "the worker never joined the job");
                thread::yield_now();
            }
            if th != 0 {
                on_worker();
            }
        });
    }

    #[test]
    fn a_worker_panic_is_reported_to_its_own_caller_only() {
        let pool = pool2();
        // As soon as the panicking job releases the pool, this thread runs another job on it
        // (in parallel, since `busy` is free): it must not inherit the first job's panic.
        let inner = Arc::new(AtomicUsize::new(0));
        let (p, i) = (Arc::clone(&pool), Arc::clone(&inner));
        hook::set(hook::Point::Released, move || {
            let ok = catch_unwind(AssertUnwindSafe(|| {
                with_worker(&p, &|| {});
            }))
            .is_ok();
            i.store(if ok { 1 } else { 2 }, Ordering::SeqCst);
        });
        let outer = catch_unwind(AssertUnwindSafe(|| {
            with_worker(&pool, &|| panic!("task on the worker fails"));
        }));
        assert_eq!(
            inner.load(Ordering::SeqCst),
            1,
            "the next job inherited the panic"
        );
        assert!(outer.is_err(), "the panicking job returned normally");
        assert!(!pool.shared.panicked.load(Ordering::SeqCst));
    }

    #[test]
    fn racing_for_the_last_back_off_job_never_wraps_the_counter() {
        let pool = pool2();
        pool.shared.serial_jobs.store(1, Ordering::Relaxed);
        // Between this caller's read of the counter and its decrement, another caller takes
        // the last back-off job.
        let other_serial = Arc::new(AtomicBool::new(false));
        let (p, o) = (Arc::clone(&pool), Arc::clone(&other_serial));
        hook::set(hook::Point::SerialDecision, move || {
            thread::scope(|sc| {
                sc.spawn(|| {
                    let on_worker = AtomicBool::new(false);
                    p.run(8, &|_, th| {
                        if th != 0 {
                            on_worker.store(true, Ordering::Relaxed);
                        }
                    });
                    o.store(!on_worker.load(Ordering::Relaxed), Ordering::SeqCst);
                });
            });
        });
        with_worker(&pool, &|| {});
        assert!(
            other_serial.load(Ordering::SeqCst),
            "the other caller ran in parallel"
        );
        assert_eq!(pool.shared.serial_jobs.load(Ordering::Relaxed), 0);
        // Still parallel afterwards.
        with_worker(&pool, &|| {});
    }

    #[test]
    fn back_off_jobs_are_counted_down_to_zero() {
        let pool = pool2();
        pool.shared.serial_jobs.store(3, Ordering::Relaxed);
        for left in (0..3).rev() {
            pool.run(8, &|_, th| assert_eq!(th, 0));
            assert_eq!(pool.shared.serial_jobs.load(Ordering::Relaxed), left);
        }
        with_worker(&pool, &|| {});
        assert_eq!(pool.shared.serial_jobs.load(Ordering::Relaxed), 0);
    }
}
