//! The spinning fork-join pool: every task runs exactly once, thread ids are in range and
//! exclusive, nested and concurrent use degrade to serial, panics propagate, and it parks/wakes.

use hrnet_runtime::kernels::Pool;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

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
    let pool = Pool::new(2);
    let count = AtomicUsize::new(0);
    for _ in 0..3 {
        std::thread::sleep(hrnet_runtime::kernels::pool::SPIN + Duration::from_millis(5));
        pool.run(64, &|_, _| {
            count.fetch_add(1, Ordering::Relaxed);
        });
    }
    assert_eq!(count.load(Ordering::Relaxed), 192);
}

#[test]
fn panics_propagate_and_pool_survives() {
    let pool = Pool::new(2);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.run(16, &|t, _| assert!(t != 11, "task 11 fails"));
    }));
    assert!(r.is_err());
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
    let pool = Pool::new(2);
    // Until the worker joins a job and stalls in it (> STALL) while the caller waits.
    let mut stalled = false;
    for _ in 0..50 {
        let worker_ran = AtomicBool::new(false);
        pool.run(2, &|_, th| {
            if th == 1 {
                worker_ran.store(true, Ordering::SeqCst);
                std::thread::sleep(hrnet_runtime::kernels::pool::STALL * 10);
            } else {
                // Leave the worker time to take the other task.
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        if worker_ran.load(Ordering::SeqCst) {
            stalled = true;
            break;
        }
    }
    assert!(stalled, "the worker never joined a job");
    for _ in 0..hrnet_runtime::kernels::pool::BACKOFF_JOBS {
        pool.run(4, &|_, th| {
            assert_eq!(th, 0, "a job ran on the worker during the back-off")
        });
    }
    // Afterwards the worker is used again (eventually).
    let mut worker_used = false;
    for _ in 0..1000 {
        let used = AtomicBool::new(false);
        pool.run(64, &|_, th| {
            if th == 1 {
                used.store(true, Ordering::Relaxed);
            }
            std::hint::black_box((0..200).sum::<u64>());
        });
        if used.load(Ordering::Relaxed) {
            worker_used = true;
            break;
        }
    }
    assert!(worker_used, "the worker was never used again");
}
