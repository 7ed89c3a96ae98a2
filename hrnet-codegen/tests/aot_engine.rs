//! The AOT engine (the generated Rust, built by cargo, run as its own process) on a batch: one
//! process for the whole batch, the same bits as one run per input.

use hrnet_codegen::engine::{Aot, Engine};
use hrnet_codegen::target::Target;
use hrnet_codegen::{aot, driver, plan};
use hrnet_runtime::npy;
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
}

#[test]
fn the_aot_engine_runs_a_batch_in_one_process_as_runs() {
    let dir = data_dir().join("tiny_pose");
    let config = dir.join("config.yaml");
    let (_, opt) = driver::load_optimized(&config).unwrap();
    let p = plan::plan(&opt, &Target::runtime()).unwrap();
    let weights = dir.join("weights.safetensors");
    let (_, input) = npy::read_f32(dir.join("input.npy")).unwrap();
    let inputs: Vec<Vec<f32>> = (0..3)
        .map(|k| input.iter().map(|v| v * (1.0 + 0.2 * k as f32)).collect())
        .collect();
    let n_out = p.outputs[0].len();
    let mut quiet = |_: aot::Progress<'_>| {};
    let mut one = Aot::new(&p, "config.yaml", &weights, 1, &mut quiet).unwrap();
    let expected: Vec<Vec<f32>> = inputs
        .iter()
        .map(|x| {
            let mut y = vec![f32::NAN; n_out];
            one.run(x, &mut y).unwrap();
            y
        })
        .collect();
    let (_, fixture) = npy::read_f32(dir.join("expected.npy")).unwrap();
    let scale = fixture.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = expected[0]
        .iter()
        .zip(&fixture)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err <= 1e-4 * scale, "AOT vs PyTorch: {err}");
    for threads in [1, 2] {
        let mut e = Aot::new(&p, "config.yaml", &weights, threads, &mut quiet).unwrap();
        for n in [1, 3] {
            let xs: Vec<&[f32]> = inputs[..n].iter().map(|x| &x[..]).collect();
            let mut outs = vec![vec![f32::NAN; n_out]; n];
            let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|y| &mut y[..]).collect();
            e.run_batch(&xs, &mut ys).unwrap();
            for (k, (y, r)) in outs.iter().zip(&expected).enumerate() {
                let same = y.iter().zip(r).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{threads}t batch of {n}: output {k}");
            }
        }
        let mut y = vec![f32::NAN; n_out];
        let r = e.run_batch(&[], &mut []);
        assert!(r.unwrap_err().to_string().contains("no input"));
        let mut y1 = vec![0f32; n_out];
        let r = e.run_batch(&[&input, &input[1..]], &mut [&mut y, &mut y1]);
        assert!(r.unwrap_err().to_string().contains("input 1"), "{threads}t");
        let r = e.run_batch(&[&input, &input], &mut [&mut y, &mut y1[1..]]);
        assert!(
            r.unwrap_err().to_string().contains("output 1"),
            "{threads}t"
        );
        // A batch of the benchmark input is timed inside the binary's process.
        let x = aot::bench_input(input.len());
        let mut outs = vec![vec![0f32; n_out]; 2];
        let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|y| &mut y[..]).collect();
        let t = e.bench_batch(&[&x, &x], &mut ys, 1, 2).unwrap();
        assert!(t.min_ms > 0.0 && t.min_ms <= t.median_ms, "{t:?}");
    }
}
