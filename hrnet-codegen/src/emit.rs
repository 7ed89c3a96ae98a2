//! The Rust emitter: a [`Plan`] → the source of a specialized model crate module.
//!
//! Tokens are built with `quote!`, parsed into a `syn::File` and printed by `prettyplease`,
//! so the output is deterministic and formatted. The emitter renders the plan and decides
//! nothing: shapes, algorithms, offsets and epilogues all come from it. The generated code is
//! meant to be `include!`d (so it has no inner attributes) and depends on hrnet-runtime only.
//!
//! Layout of the output: a header, the shapes and sizes as constants, one `ConvSpec` constant
//! per distinct convolution shape (reused wherever the shape repeats), the table of
//! convolutions with their checkpoint keys, the `Model` type and its API, then one function
//! per section of the network (`stem`, `layer1`, `transition1`, `stage2_m0`, …, `head`)
//! whose body is the section's kernel calls, each under a comment naming the IR node.

use crate::plan::{Addend, Plan, Step};
use hrnet_runtime::kernels::{Algo, ConvSpec};
use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};
use std::collections::BTreeMap;

/// What the emitter needs besides the plan.
#[derive(Debug, Clone, Default)]
pub struct EmitOptions {
    /// Shown in the header: the config the code came from.
    pub source: String,
    /// File name (relative to the generated file) of a safetensors file to embed with
    /// `include_bytes!`, which adds `Model::embedded()`.
    pub embed_weights: Option<String>,
}

/// The plan cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// Something the generated API does not cover yet.
    #[error("{0}")]
    Unsupported(String),
    /// The generated tokens did not parse: a bug in the emitter.
    #[error("internal error: generated code does not parse: {0}")]
    Parse(String),
}

fn lit(n: usize) -> Literal {
    Literal::usize_unsuffixed(n)
}

/// `Algo::<Variant>`: every variant is a unit variant named as its `Debug` form.
fn algo_tokens(a: Algo) -> TokenStream {
    let v = proc_macro2::Ident::new(&format!("{a:?}"), proc_macro2::Span::call_site());
    quote!(Algo::#v)
}

/// Renders `plan` as Rust source.
pub fn emit(plan: &Plan, opts: &EmitOptions) -> Result<String, EmitError> {
    let [out] = plan.outputs[..] else {
        return Err(EmitError::Unsupported(format!(
            "the network has {} outputs: only single-output (pose) networks can be compiled yet",
            plan.outputs.len()
        )));
    };
    let i = plan.input;
    let (ic, ih, iw) = (lit(i.c), lit(i.h), lit(i.w));
    let (oc, oh, ow) = (lit(out.c), lit(out.h), lit(out.w));
    let (arena, tiles, packed_len) = (
        lit(plan.arena_len),
        lit(plan.scratch_per_thread),
        lit(plan.packed_len),
    );

    // One constant per distinct conv shape, numbered in order of first use.
    let mut spec_ids: BTreeMap<SpecKey, usize> = BTreeMap::new();
    let mut spec_order: Vec<ConvSpec> = Vec::new();
    for c in &plan.convs {
        spec_ids.entry(SpecKey::of(&c.spec)).or_insert_with(|| {
            spec_order.push(c.spec);
            spec_order.len() - 1
        });
    }
    let spec_name = |s: &ConvSpec| format_ident!("S{}", spec_ids[&SpecKey::of(s)]);
    let specs = spec_order.iter().map(|s| {
        let name = spec_name(s);
        let (a, b, c, d, e, f, g) = (
            lit(s.cin),
            lit(s.cout),
            lit(s.h_in),
            lit(s.w_in),
            lit(s.k),
            lit(s.stride),
            lit(s.pad),
        );
        let algo = algo_tokens(s.algo);
        let doc = format!(
            " {}x{} s{} {}->{} on {}x{} ({:?}).",
            s.k, s.k, s.stride, s.cin, s.cout, s.h_in, s.w_in, s.algo
        );
        quote! {
            #[doc = #doc]
            const #name: ConvSpec = ConvSpec::new(#a, #b, #c, #d, #e, #f, #g).with_algo(#algo);
        }
    });
    let n_convs = lit(plan.convs.len());
    let conv_rows = plan.convs.iter().map(|c| {
        let key = &c.key;
        let bias = c.bias;
        let bn = match &c.bn {
            Some(b) => quote!(Some(#b)),
            None => quote!(None),
        };
        let spec = spec_name(&c.spec);
        let off = lit(c.packed_offset);
        quote!(ConvParams::new(#key, #bias, #bn, #spec, #off))
    });

    // Sections: consecutive steps of the same group become one function.
    let mut sections: Vec<(String, Vec<usize>)> = Vec::new();
    for (k, note) in plan.notes.iter().enumerate() {
        match sections.last_mut() {
            Some((g, steps)) if *g == note.group => steps.push(k),
            _ => {
                let mut name = note.group.clone();
                let mut n = 2;
                while sections.iter().any(|(g, _)| *g == name) {
                    name = format!("{}_{n}", note.group);
                    n += 1;
                }
                sections.push((name, vec![k]));
            }
        }
    }
    let range = |v: usize| {
        let (a, b) = (
            lit(plan.values[v].offset),
            lit(plan.values[v].offset + plan.values[v].len()),
        );
        quote!(#a..#b)
    };
    let shape = |v: usize| {
        let s = plan.values[v].shape;
        let (c, h, w) = (lit(s.c), lit(s.h), lit(s.w));
        quote!(ActShape::new(#c, #h, #w))
    };
    let mut calls = Vec::new();
    let mut fns = Vec::new();
    for (name, steps) in &sections {
        let fname = format_ident!("{}", name);
        let mut needs_input = false;
        let mut needs_output = false;
        let body = steps.iter().map(|&k| {
            let note = plan.notes[k].text.clone();
            let call = match plan.steps[k] {
                Step::Input { dst } => {
                    needs_input = true;
                    let (r, s) = (range(dst), shape(dst));
                    quote!(kernels::from_nchw(#s, input, &mut a[#r]);)
                }
                Step::Conv {
                    layer,
                    src,
                    dst,
                    add,
                    upsample_log2,
                    relu,
                    ..
                } => {
                    let spec = spec_name(&plan.convs[layer].spec);
                    let l = lit(layer);
                    let u = Literal::u32_unsuffixed(upsample_log2);
                    match add {
                        Addend::None | Addend::InPlace => {
                            let epi = match (add, upsample_log2) {
                                (Addend::None, _) => quote!(Epilogue::plain(#relu)),
                                (_, 0) => quote!(Epilogue::accumulate(#relu)),
                                _ => quote!(Epilogue::upsample_accumulate(#u, #relu)),
                            };
                            let (x, y) = (range(src), range(dst));
                            quote! {
                                let (x, y) = split2(a, #x, #y);
                                kernels::conv(ctx, &#spec, x, CONVS[#l].packed(w), y, #epi, t);
                            }
                        }
                        Addend::Value(r) => {
                            let epi = if upsample_log2 == 0 {
                                quote!(Epilogue::residual(r, #relu))
                            } else {
                                quote!(Epilogue::upsample_residual(r, #u, #relu))
                            };
                            let (x, rr, y) = (range(src), range(r), range(dst));
                            quote! {
                                let (x, r, y) = split3(a, #x, #rr, #y);
                                kernels::conv(ctx, &#spec, x, CONVS[#l].packed(w), y, #epi, t);
                            }
                        }
                    }
                }
                Step::Add {
                    a: p,
                    b: q,
                    dst,
                    relu,
                } => {
                    let (x, y, z, s) = (range(p), range(q), range(dst), shape(dst));
                    quote! {
                        let (x, y, z) = split3(a, #x, #y, #z);
                        eltwise::add(ctx, #s, x, y, z, #relu);
                    }
                }
                Step::AddUpsampled {
                    low,
                    dst,
                    log2,
                    relu,
                    ..
                } => {
                    let (lo, acc, s) = (range(low), range(dst), shape(dst));
                    let u = Literal::u32_unsuffixed(log2);
                    quote! {
                        let (lo, acc) = split2(a, #lo, #acc);
                        eltwise::add_upsampled(ctx, #s, acc, lo, #u, #relu);
                    }
                }
                Step::Copy { src, dst } => {
                    let (x, y) = (range(src), range(dst));
                    quote! {
                        let (x, y) = split2(a, #x, #y);
                        y.copy_from_slice(x);
                    }
                }
                Step::Output { src, .. } => {
                    needs_output = true;
                    let (r, s) = (range(src), shape(src));
                    quote!(kernels::to_nchw(#s, &a[#r], output);)
                }
            };
            quote! {
                hrnet_note!(#note);
                #call
            }
        });
        let body: Vec<TokenStream> = body.collect();
        let mut params = vec![
            quote!(ctx: &Ctx),
            quote!(w: &[f32]),
            quote!(a: &mut [f32]),
            quote!(t: &mut [f32]),
        ];
        let mut args = vec![quote!(ctx), quote!(w), quote!(arena), quote!(tiles)];
        if needs_input {
            params.push(quote!(input: &[f32]));
            args.push(quote!(input));
        }
        if needs_output {
            params.push(quote!(output: &mut [f32]));
            args.push(quote!(output));
        }
        let uses_t = steps
            .iter()
            .any(|&k| matches!(plan.steps[k], Step::Conv { .. }));
        if !uses_t {
            params[3] = quote!(_t: &mut [f32]);
        }
        let uses_w = uses_t;
        if !uses_w {
            params[1] = quote!(_w: &[f32]);
        }
        let uses_ctx = steps.iter().any(|&k| {
            !matches!(
                plan.steps[k],
                Step::Input { .. } | Step::Output { .. } | Step::Copy { .. }
            )
        });
        if !uses_ctx {
            params[0] = quote!(_ctx: &Ctx);
        }
        let doc = format!(
            " Section `{name}` of the network: {} kernel calls.",
            steps.len()
        );
        fns.push(quote! {
            #[doc = #doc]
            fn #fname(#(#params),*) {
                #(#body)*
            }
        });
        calls.push(quote!(#fname(#(#args),*);));
    }

    let embedded = opts.embed_weights.as_ref().map(|file| {
        quote! {
            /// The model with the weights embedded at compile time (`--embed-weights`).
            pub fn embedded() -> Result<Model, LoadError> {
                static BYTES: &[u8] = include_bytes!(#file);
                let ckpt = hrnet_runtime::weights::load_bytes(BYTES)?;
                Ok(Self::from_checkpoint(&ckpt, BindOptions::default())?)
            }
        }
    });
    let name_doc = format!(
        " `{}` compiled for a 1x{}x{}x{} input (NCHW), making 1x{}x{}x{} outputs.",
        plan.name, i.c, i.h, i.w, out.c, out.h, out.w
    );

    let tokens = quote! {
        use hrnet_runtime::kernels::{self, eltwise, ActShape, Algo, ConvSpec, Ctx, Epilogue};
        use hrnet_runtime::model::{split2, split3, ConvParams, LoadError, RunError, Scratch};
        use hrnet_runtime::weights::{BindError, BindOptions, Checkpoint, TensorSpec};

        /// Input shape, NCHW.
        pub const INPUT_SHAPE: [usize; 4] = [1, #ic, #ih, #iw];
        /// Output shape, NCHW.
        pub const OUTPUT_SHAPE: [usize; 4] = [1, #oc, #oh, #ow];
        /// Activation arena, in floats.
        const ARENA_LEN: usize = #arena;
        /// Winograd scratch per thread, in floats.
        const TILES_PER_THREAD: usize = #tiles;
        /// Packed weights, in floats.
        const PACKED_LEN: usize = #packed_len;

        #(#specs)*

        /// Every convolution in execution order: checkpoint keys, shape, packed offset.
        static CONVS: [ConvParams<'static>; #n_convs] = [#(#conv_rows),*];

        #[doc = #name_doc]
        ///
        /// Holds the folded, packed weights; `Send + Sync`, so one `Model` serves many threads,
        /// each with its own [`Scratch`].
        #[derive(Debug, Clone)]
        pub struct Model {
            packed: Vec<f32>,
        }

        impl Model {
            /// Loads a checkpoint (safetensors, `.pth` zip or legacy, training checkpoint),
            /// strictly: every tensor must be present with its shape, and none may be extra.
            pub fn load(path: impl AsRef<std::path::Path>) -> Result<Model, LoadError> {
                Self::load_with(path, BindOptions::default())
            }

            /// Like [`Model::load`], with binding options (e.g. `ignore_extra`).
            pub fn load_with(path: impl AsRef<std::path::Path>, opts: BindOptions) -> Result<Model, LoadError> {
                let packed = hrnet_runtime::model::load_packed(path.as_ref(), &CONVS, PACKED_LEN, opts)?;
                Ok(Model { packed })
            }

            /// Builds the model from an already-read checkpoint.
            pub fn from_checkpoint(ckpt: &Checkpoint, opts: BindOptions) -> Result<Model, BindError> {
                let packed = hrnet_runtime::model::pack_weights(ckpt, &CONVS, PACKED_LEN, opts)?;
                Ok(Model { packed })
            }

            #embedded

            /// Every checkpoint tensor this network reads, with its shape.
            pub fn tensors() -> Vec<TensorSpec> {
                hrnet_runtime::model::tensor_specs(&CONVS)
            }

            /// Working memory for one calling thread, running kernels on `threads` threads.
            /// Make it once; [`Model::run`] then allocates nothing.
            pub fn scratch(&self, threads: usize) -> Scratch {
                Scratch::new(ARENA_LEN, TILES_PER_THREAD, threads)
            }

            /// Runs the network: `input` is 1x3xHxW NCHW ([`INPUT_SHAPE`]), `output` receives
            /// [`OUTPUT_SHAPE`].
            pub fn run(&self, input: &[f32], output: &mut [f32], scratch: &mut Scratch) -> Result<(), RunError> {
                if input.len() != INPUT_SHAPE.iter().product::<usize>() {
                    return Err(RunError::Input { expected: INPUT_SHAPE, actual: input.len() });
                }
                if output.len() != OUTPUT_SHAPE.iter().product::<usize>() {
                    return Err(RunError::Output { expected: OUTPUT_SHAPE, actual: output.len() });
                }
                if scratch.arena.len() != ARENA_LEN || scratch.tiles.len() < TILES_PER_THREAD * scratch.ctx.threads() {
                    return Err(RunError::Scratch { expected: ARENA_LEN, actual: scratch.arena.len() });
                }
                let Scratch { arena, tiles, ctx } = scratch;
                let w = &self.packed[..];
                #(#calls)*
                Ok(())
            }
        }

        /// A model with one caller's working memory: what
        /// `hrnet_runtime::pose::PoseEstimator` drives (crop, run, decode).
        #[derive(Debug)]
        pub struct Session<'m> {
            model: &'m Model,
            scratch: Scratch,
        }

        impl Model {
            /// A session running kernels on `threads` threads.
            pub fn session(&self, threads: usize) -> Session<'_> {
                Session { model: self, scratch: self.scratch(threads) }
            }
        }

        impl hrnet_runtime::pose::HeatmapModel for Session<'_> {
            fn input_size(&self) -> (usize, usize) {
                (INPUT_SHAPE[3], INPUT_SHAPE[2])
            }
            fn num_joints(&self) -> usize {
                OUTPUT_SHAPE[1]
            }
            fn heatmap_size(&self) -> (usize, usize) {
                (OUTPUT_SHAPE[3], OUTPUT_SHAPE[2])
            }
            fn run(&mut self, input: &[f32], heatmaps: &mut [f32]) -> Result<(), hrnet_runtime::pose::ModelError> {
                Ok(self.model.run(input, heatmaps, &mut self.scratch)?)
            }
        }

        #(#fns)*
    };
    let file: syn::File = syn::parse2(tokens).map_err(|e| EmitError::Parse(e.to_string()))?;
    let body = prettyplease::unparse(&file);
    let mut out = String::with_capacity(body.len() + 512);
    out.push_str(&format!(
        "// @generated by hrnetc {} from {} — do not edit.\n// {} steps, {} convolutions ({} distinct shapes), arena {} KiB, packed weights {} KiB.\n\n",
        env!("CARGO_PKG_VERSION"),
        opts.source,
        plan.steps.len(),
        plan.convs.len(),
        spec_order.len(),
        plan.arena_len * 4 / 1024,
        plan.packed_len * 4 / 1024
    ));
    // `hrnet_note!("…");` markers (possibly wrapped over three lines) become comments.
    let mut lines = body.lines();
    let mut prev_doc = false;
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let note = if let Some(rest) = trimmed.strip_prefix("hrnet_note!(") {
            let mut text = rest.to_string();
            while !text.trim_end().ends_with(");") {
                match lines.next() {
                    Some(more) => text.push_str(more.trim()),
                    None => break,
                }
            }
            let text = text.trim_end().trim_end_matches(");").trim();
            Some(text.trim_matches('"').replace("\\\"", "\""))
        } else {
            None
        };
        if trimmed.starts_with("ConvParams::new(") && !trimmed.ends_with("),") {
            let mut row = trimmed.to_string();
            for more in lines.by_ref() {
                let m = more.trim();
                row.push_str(m);
                if !m.ends_with(',') || m == ")," {
                    break;
                }
                row.push(' ');
            }
            out.push_str(indent);
            out.push_str(&row.replace("( ", "(").replace(", )", ")"));
            out.push('\n');
            continue;
        }
        let top_level_item = indent.is_empty()
            && (trimmed.starts_with("///")
                || trimmed.starts_with("#[")
                || trimmed.starts_with("impl"))
            && !out.ends_with("\n\n")
            && !prev_doc;
        prev_doc = indent.is_empty() && (trimmed.starts_with("///") || trimmed.starts_with("#["));
        if top_level_item {
            out.push('\n');
        }
        match note {
            Some(n) => {
                out.push_str(indent);
                out.push_str("// ");
                out.push_str(&n);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    Ok(out)
}

/// A conv shape with its algorithm, ordered, for numbering the spec constants.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SpecKey([usize; 7], String);

impl SpecKey {
    fn of(s: &ConvSpec) -> SpecKey {
        SpecKey(
            [s.cin, s.cout, s.h_in, s.w_in, s.k, s.stride, s.pad],
            format!("{:?}", s.algo),
        )
    }
}
