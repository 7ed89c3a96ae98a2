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
