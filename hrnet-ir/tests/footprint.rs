//! `front::limits::Footprint` against the lowered graphs of every config in the corpus: the
//! parameter count is exact (backbone and pose head; an upper bound where lowering does not
//! build the head yet), and the activation bound covers the arena the memory planner makes.

use hrnet_ir::front::limits::Footprint;
use hrnet_ir::front::Task;
use hrnet_ir::memory::plan_memory;
use hrnet_ir::passes::{self, PASSES};
use std::path::{Path, PathBuf};

fn configs() -> Vec<PathBuf> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    let mut out = Vec::new();
    let mut dirs = vec![data];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("test data") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(out.len() >= 20, "found only {out:?}");
    out
}

#[test]
fn footprint_matches_the_lowered_graphs() {
    for path in configs() {
        let src = std::fs::read_to_string(&path).unwrap();
        let (net, mut g) =
            hrnet_ir::build(&src).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let f = Footprint::of(&net);
        let params: u64 = g
            .tensor_specs()
            .iter()
            .map(|t| t.shape.iter().product::<usize>() as u64)
            .sum();
        let name = path.display();
        if matches!(net.task, Task::Pose { .. }) {
            assert_eq!(f.parameters, params, "{name}");
        } else {
            assert!(
                f.parameters >= params,
                "{name}: {} < {params}",
                f.parameters
            );
        }
        let all: Vec<_> = PASSES.iter().collect();
        passes::run(&mut g, &all, false, |_, _| {}).unwrap();
        let plan = plan_memory(&g, &|s| s.len()).unwrap();
        let (h, w) = net.input_hw;
        let planned = (plan.arena_bytes + 3 * h * w) as u64;
        eprintln!(
            "{name}: bound {} planned {planned} ratio {:.2}",
            f.arena,
            f.arena as f64 / planned as f64
        );
        assert!(
            f.arena >= planned,
            "{name}: bound {} < planned {planned}",
            f.arena
        );
    }
}
