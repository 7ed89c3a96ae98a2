//! Soak: two threads share one generated model (the build.rs path) for thousands of runs.
//! Every output must equal the first, and the process's resident memory must not grow.
//! Kept out of the default run (it takes a minute or more); run it with:
//!
//! ```text
//! cargo test --release -p hrnet-tests --test soak -- --ignored --nocapture
//! ```

use hrnet_runtime::npy;

#[allow(dead_code)]
mod tiny_pose {
    include!(concat!(env!("OUT_DIR"), "/tiny_pose.rs"));
}

/// Resident set size in bytes, from `/proc/self/statm` (resident pages × 4 KiB).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

#[test]
#[ignore = "soak test, a minute or more: cargo test --release -p hrnet-tests --test soak -- --ignored"]
fn two_threads_share_one_model_for_thousands_of_runs() {
    const RUNS: usize = 4000;
    let dir = hrnet_tests::data_dir().join("tiny_pose");
    let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
    let model = tiny_pose::Model::load(dir.join("weights.safetensors")).unwrap();
    let n: usize = tiny_pose::OUTPUT_SHAPE.iter().product();
    let mut reference = vec![0f32; n];
    model
        .run(&input, &mut reference, &mut model.scratch(2))
        .unwrap();
    // Each thread: its own scratch with a two-thread pool, so the two pools also compete
    // for the two cores (and exercise the stall back-off).
    let soak = |seen_rss: &std::sync::Mutex<Vec<usize>>| {
        let mut scratch = model.scratch(2);
        let mut out = vec![0f32; n];
        for i in 0..RUNS {
            model.run(&input, &mut out, &mut scratch).unwrap();
            assert!(
                out.iter()
                    .zip(&reference)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "run {i} differs from the first"
            );
            if i % 500 == 0 || i + 1 == RUNS {
                seen_rss.lock().unwrap().push(rss());
            }
        }
    };
    let seen = std::sync::Mutex::new(Vec::new());
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| soak(&seen));
        s.spawn(|| soak(&seen));
    });
    let seen = seen.into_inner().unwrap();
    // After the first samples (both threads' scratch allocated), RSS stays flat.
    let settled = seen[2..].iter().copied().min().unwrap_or(0);
    let last = seen[seen.len() - 2..].iter().copied().max().unwrap_or(0);
    println!(
        "{} runs on 2 threads in {:.1} s; RSS samples (KiB): {:?}",
        2 * RUNS,
        start.elapsed().as_secs_f64(),
        seen.iter().map(|b| b / 1024).collect::<Vec<_>>()
    );
    assert!(
        last <= settled + (1 << 20),
        "RSS grew from {settled} to {last} bytes"
    );
}
