//! Micro-benchmark of single JIT convolutions against hrnet-runtime's kernels: one-conv plans
//! with W32 shapes, GFLOP/s (direct count) at one thread.
//!
//! `cargo run --release -p hrnet-codegen --example jit_kernels`

use hrnet_codegen::exec;
use hrnet_codegen::jit::{JitModel, JitOptions};
use hrnet_codegen::plan::{Addend, ConvLayer, Plan, PlanValue, Step, StepNote};
use hrnet_codegen::target::Target;
use hrnet_ir::ir::Shape;
use hrnet_runtime::kernels::{ActShape, ConvSpec};
use hrnet_runtime::weights::{BindOptions, Checkpoint, DType, Format, Tensor, TensorData};
use std::time::Instant;

/// A plan of one conv, its algorithm chosen for `target`.
fn one_conv(spec: ConvSpec, target: Target) -> Plan {
    let spec = spec.with_algo(target.conv_algo(&spec));
    let (i, o) = (spec.in_shape(), spec.out_shape());
    let a = ActShape::len(&i).div_ceil(16) * 16;
    let values = vec![
        PlanValue {
            shape: i,
            offset: 0,
            storage: 0,
            sub: 0,
        },
        PlanValue {
            shape: o,
            offset: a,
            storage: 1,
            sub: 0,
        },
    ];
    Plan {
        name: "one".into(),
        target,
        input: Shape {
            c: i.c(),
            h: i.h(),
            w: i.w(),
        },
        outputs: vec![Shape {
            c: o.c(),
            h: o.h(),
            w: o.w(),
        }],
        values,
        steps: vec![
            Step::Input { dst: 0 },
            Step::Conv {
                layer: 0,
                src: 0,
                dst: 1,
                add: Addend::None,
                acc: None,
                upsample_log2: 0,
                relu: true,
            },
            Step::Output { src: 1, index: 0 },
        ],
        convs: vec![ConvLayer {
            key: "c".into(),
            label: "c".into(),
            bias: true,
            bn: None,
            spec,
            packed_offset: 0,
            linear: false,
            concat: None,
        }],
        arena_len: a + o.len(),
        scratch_per_thread: spec.scratch_len(1),
        head_scratch: 0,
        packed_len: spec.packed_len(),
        notes: vec![
            StepNote {
                group: "one".into(),
                text: String::new()
            };
            3
        ],
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shapes = [
        (32, 32, 64, 48, 3, 1),
        (64, 64, 32, 24, 3, 1),
        (128, 128, 16, 12, 3, 1),
        (256, 256, 8, 6, 3, 1),
        (256, 64, 64, 48, 1, 1),
        (64, 64, 64, 48, 3, 1),
        (32, 64, 64, 48, 3, 2),
    ];
    for (cin, cout, h, w, k, s) in shapes {
        let spec = ConvSpec::new(cin, cout, h, w, k, s, k / 2);
        let p = one_conv(spec, Target::runtime());
        let n = cout * cin * k * k;
        let ckpt = Checkpoint::new(
            Format::Safetensors,
            false,
            vec![
                (
                    "c.weight".into(),
                    Tensor {
                        shape: vec![cout, cin, k, k],
                        dtype: DType::F32,
                        data: TensorData::F32(
                            (0..n)
                                .map(|i| ((i * 7919) % 13) as f32 * 0.01 - 0.06)
                                .collect(),
                        ),
                    },
                ),
                (
                    "c.bias".into(),
                    Tensor {
                        shape: vec![cout],
                        dtype: DType::F32,
                        data: TensorData::F32(vec![0.1; cout]),
                    },
                ),
            ],
        )?;
        let input: Vec<f32> = (0..p.input.len())
            .map(|i| ((i * 31) % 17) as f32 * 0.1 - 0.8)
            .collect();
        let mut out = vec![0f32; p.outputs[0].len()];
        let flops = 2.0 * spec.macs() as f64;
        let rt = p.pack_weights(&ckpt, BindOptions::default())?;
        let mut sc = p.scratch(1);
        let time = |f: &mut dyn FnMut()| {
            f();
            let t = Instant::now();
            let mut n = 0;
            while t.elapsed().as_secs_f64() < 0.3 {
                f();
                n += 1;
            }
            t.elapsed().as_secs_f64() / n as f64
        };
        let te = time(&mut || exec::execute(&p, &rt, &input, &mut [&mut out], &mut sc).unwrap());
        let mut line = format!(
            "{cin:>3}->{cout:<3} {h}x{w} k{k} s{s}: exec {:6.1} GF/s",
            flops / te * 1e-9
        );
        for wino in [false, true] {
            let pj = one_conv(spec, Target::jit().with_winograd(wino));
            let jit = JitModel::compile_with(&pj, JitOptions { verify: false })?;
            let packed = jit.pack(&ckpt, BindOptions::default())?;
            let mut sj = jit.scratch(1);
            let tj = time(&mut || jit.run(&packed, &input, &mut [&mut out], &mut sj).unwrap());
            line += &format!(", jit(wino {wino}) {:6.1} GF/s", flops / tj * 1e-9);
        }
        println!("{line}");
    }
    Ok(())
}
