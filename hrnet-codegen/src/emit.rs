//! The Rust emitter: a [`Plan`] → the source of a specialized model crate module.
//!
//! Tokens are built with `quote!`, parsed into a `syn::File` and printed by `prettyplease`,
//! so the output is deterministic and formatted. The emitter renders the plan and decides
//! nothing: shapes, algorithms, offsets and epilogues all come from it. The generated code is
//! meant to be `include!`d (so it has no inner attributes) and depends on hrnet-runtime only.
//!
//! Layout of the output, one `Emitter` method per item: a header, the shapes and sizes as
//! constants, one `ConvSpec` constant per distinct convolution shape (reused wherever the
//! shape repeats), the table of convolutions with their checkpoint keys, the `Model` type and
//! its API (`run` checks its buffers with one runtime call), then one function per section of
//! the network (`stem`, `layer1`, `transition1`, `stage2_m0`, …, `head`) whose body is the
//! section's kernel calls, each under a comment naming the IR node. prettyplease prints no
//! comments, so `layout` is the one, separately tested, edit of its output.

use crate::plan::{Addend, Plan, Step};
use crate::target::Packing;
use hrnet_ir::ir::Shape;
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

/// The one door for outside text (file names, `MODEL.NAME`, IR names) into a comment or doc
/// comment of generated source: printable ASCII and alphanumeric characters of any script
/// pass; every other character (newlines, control characters, NUL, bidirectional overrides,
/// zero-width and other invisible characters) becomes its `\u{…}` escape, and `/*` and `*/`
/// are broken up, so the text can neither end its comment nor look different from what it is.
/// Data that must stay exact goes into string literals, which `quote!` escapes.
pub fn comment_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ' '..='~') || (!c.is_ascii() && c.is_alphanumeric()) {
            out.push(c);
        } else {
            out.extend(c.escape_unicode());
        }
    }
    while out.contains("*/") || out.contains("/*") {
        out = out.replace("*/", "*\\u{2f}").replace("/*", "\\u{2f}*");
    }
    out
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
    if plan.packing() != Packing::RuntimeGroups {
        return Err(EmitError::Unsupported(format!(
            "the plan was made for {:?} kernels: generated Rust calls hrnet-runtime's (plan with Target::runtime())",
            plan.target.kernels
        )));
    }
    let Some(&output) = plan.outputs.first() else {
        return Err(EmitError::Unsupported("the network has no output".into()));
    };
    let e = Emitter::new(plan, opts, output);
    let file: syn::File = syn::parse2(e.file()).map_err(|e| EmitError::Parse(e.to_string()))?;
    let body = prettyplease::unparse(&file);
    let mut out = e.header();
    out.push_str(&layout(&body));
    Ok(out)
}

/// One pass over a plan, one method per generated item.
struct Emitter<'p> {
    plan: &'p Plan,
    opts: &'p EmitOptions,
    /// The network's first output (pose heatmaps, class logits, segmentation logits).
    output: Shape,
    /// The distinct conv shapes in order of first use (`S0`, `S1`, …) and their numbers.
    specs: Vec<ConvSpec>,
    spec_ids: BTreeMap<SpecKey, usize>,
    /// Sections: runs of consecutive steps of one group, each a function, with unique names.
    sections: Vec<(String, Vec<usize>)>,
}

impl<'p> Emitter<'p> {
    fn new(plan: &'p Plan, opts: &'p EmitOptions, output: Shape) -> Self {
        let mut spec_ids: BTreeMap<SpecKey, usize> = BTreeMap::new();
        let mut specs: Vec<ConvSpec> = Vec::new();
        for c in &plan.convs {
            spec_ids.entry(SpecKey::of(&c.spec)).or_insert_with(|| {
                specs.push(c.spec);
                specs.len() - 1
            });
        }
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
        Emitter {
            plan,
            opts,
            output,
            specs,
            spec_ids,
            sections,
        }
    }

    /// The `// @generated` lines (prettyplease cannot print comments).
    fn header(&self) -> String {
        let p = self.plan;
        format!(
            "// @generated by hrnetc {} from {} — do not edit.\n// {} steps, {} convolutions ({} distinct shapes), arena {} KiB, packed weights {} KiB.\n\n",
            env!("CARGO_PKG_VERSION"),
            comment_text(&self.opts.source),
            p.steps.len(),
            p.convs.len(),
            self.specs.len(),
            p.arena_len * 4 / 1024,
            p.packed_len * 4 / 1024
        )
    }

    /// Every item, in order.
    fn file(&self) -> TokenStream {
        let items = [
            self.imports(),
            self.constants(),
            self.spec_consts(),
            self.conv_table(),
            self.model(),
            self.session(),
            self.section_fns(),
        ];
        quote!(#(#items)*)
    }

    /// Whether any step satisfies `f`.
    fn any_step(&self, f: impl Fn(&Step) -> bool) -> bool {
        self.plan.steps.iter().any(f)
    }

    /// Exactly the names the file uses (generated code is `include!`d: no unused imports).
    fn imports(&self) -> TokenStream {
        let p = self.plan;
        let mut kernels = vec![quote!(self)];
        if self.any_step(|s| matches!(s, Step::Add { .. } | Step::AddUpsampled { .. })) {
            kernels.push(quote!(eltwise));
        }
        if self.any_step(|s| {
            matches!(
                s,
                Step::GlobalAvgPool { .. }
                    | Step::SpatialGather { .. }
                    | Step::ObjectAttention { .. }
            )
        }) {
            kernels.push(quote!(head));
        }
        kernels.extend([quote!(ActShape), quote!(Algo)]);
        if p.convs.iter().any(|c| c.concat.is_some()) {
            kernels.push(quote!(Concat));
        }
        kernels.extend([quote!(ConvSpec), quote!(Ctx), quote!(Epilogue)]);
        let mut model = vec![quote!(split2)];
        if self.any_step(|s| {
            matches!(
                s,
                Step::Add { .. }
                    | Step::SpatialGather { .. }
                    | Step::Conv {
                        add: Addend::Value(_),
                        ..
                    }
            )
        }) {
            model.push(quote!(split3));
        }
        if self.any_step(|s| matches!(s, Step::ObjectAttention { .. })) {
            model.push(quote!(split4));
        }
        model.push(quote!(ConvParams));
        if p.convs.iter().any(|c| c.bn.is_some()) {
            model.push(quote!(FoldedBn));
        }
        model.extend([quote!(LoadError), quote!(RunError), quote!(Scratch)]);
        quote! {
            use hrnet_runtime::kernels::{#(#kernels),*};
            use hrnet_runtime::model::{#(#model),*};
            use hrnet_runtime::weights::{BindError, BindOptions, Checkpoint, TensorSpec};
        }
    }

    /// Shapes and sizes.
    fn constants(&self) -> TokenStream {
        let (i, o, p) = (self.plan.input, self.output, self.plan);
        let (ic, ih, iw) = (lit(i.c), lit(i.h), lit(i.w));
        let (oc, oh, ow) = (lit(o.c), lit(o.h), lit(o.w));
        let (arena, tiles, packed_len) = (
            lit(p.arena_len),
            lit(p.scratch_per_thread),
            lit(p.packed_len),
        );
        let extra = (p.outputs.len() > 1).then(|| {
            let n = lit(p.outputs.len());
            let shapes = p.outputs.iter().map(|o| {
                let (c, h, w) = (lit(o.c), lit(o.h), lit(o.w));
                quote!([1, #c, #h, #w])
            });
            quote! {
                /// Every output's shape, NCHW ([`Model::run_outputs`]).
                pub const OUTPUT_SHAPES: [[usize; 4]; #n] = [#(#shapes),*];
            }
        });
        let out_doc = if p.outputs.len() > 1 {
            " Output shape, NCHW (the first output's)."
        } else {
            " Output shape, NCHW."
        };
        quote! {
            /// Input shape, NCHW.
            pub const INPUT_SHAPE: [usize; 4] = [1, #ic, #ih, #iw];
            #[doc = #out_doc]
            pub const OUTPUT_SHAPE: [usize; 4] = [1, #oc, #oh, #ow];
            #extra
            /// Activation arena, in floats.
            const ARENA_LEN: usize = #arena;
            /// Winograd scratch per thread, in floats.
            const TILES_PER_THREAD: usize = #tiles;
            /// Packed weights, in floats.
            const PACKED_LEN: usize = #packed_len;
        }
    }

    /// The name of the constant of `s`'s shape.
    fn spec_name(&self, s: &ConvSpec) -> proc_macro2::Ident {
        format_ident!("S{}", self.spec_ids[&SpecKey::of(s)])
    }

    /// One `ConvSpec` constant per distinct conv shape.
    fn spec_consts(&self) -> TokenStream {
        let specs = self.specs.iter().map(|s| {
            let name = self.spec_name(s);
            let (a, b, c, d, e, f, g) = (
                lit(s.cin()),
                lit(s.cout()),
                lit(s.h_in()),
                lit(s.w_in()),
                lit(s.k()),
                lit(s.stride()),
                lit(s.pad()),
            );
            let algo = algo_tokens(s.algo());
            let doc = format!(
                " {}x{} s{} {}->{} on {}x{} ({:?}).",
                s.k(),
                s.k(),
                s.stride(),
                s.cin(),
                s.cout(),
                s.h_in(),
                s.w_in(),
                s.algo()
            );
            quote! {
                #[doc = #doc]
                const #name: ConvSpec = ConvSpec::new(#a, #b, #c, #d, #e, #f, #g).with_algo(#algo);
            }
        });
        quote!(#(#specs)*)
    }

    /// The table of convolutions: checkpoint keys, folded BatchNorm, shape, packed offset.
    fn conv_table(&self) -> TokenStream {
        let n_convs = lit(self.plan.convs.len());
        let rows = self.plan.convs.iter().map(|c| {
            let key = &c.key;
            let bias = c.bias;
            let bn = match &c.bn {
                Some(b) => {
                    let (prefix, eps) = (&b.prefix, Literal::f32_unsuffixed(b.eps));
                    quote!(Some(FoldedBn::new(#prefix, #eps)))
                }
                None => quote!(None),
            };
            let spec = self.spec_name(&c.spec);
            let off = lit(c.packed_offset);
            if !c.linear && c.concat.is_none() {
                return quote!(ConvParams::new(#key, #bias, #bn, #spec, #off));
            }
            let linear = c.linear;
            let concat = match &c.concat {
                Some(cat) => {
                    let parts = cat.parts().iter().map(|&n| lit(n));
                    quote!(Some(Concat::new(&[#(#parts),*])))
                }
                None => quote!(None),
            };
            quote!(ConvParams::full(#key, #bias, #bn, #spec, #off, #linear, #concat))
        });
        quote! {
            /// Every convolution in execution order: checkpoint keys, shape, packed offset.
            static CONVS: [ConvParams<'static>; #n_convs] = [#(#rows),*];
        }
    }

    /// `Model`: the type, loading, and `run`.
    fn model(&self) -> TokenStream {
        let (i, o) = (self.plan.input, self.output);
        let name_doc = format!(
            " `{}` compiled for a 1x{}x{}x{} input (NCHW), making 1x{}x{}x{} outputs.",
            comment_text(&self.plan.name),
            i.c,
            i.h,
            i.w,
            o.c,
            o.h,
            o.w
        );
        let embedded = self.embedded();
        let run = self.run_fn();
        quote! {
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

                /// Working memory for [`Model::run_batch`] on `threads` threads: one arena per
                /// thread. Make it once; `run_batch` then allocates nothing.
                pub fn batch_scratch(&self, threads: usize) -> hrnet_runtime::model::BatchScratch {
                    hrnet_runtime::model::BatchScratch::new(ARENA_LEN, TILES_PER_THREAD, threads)
                }

                /// Runs the network on every input: `outputs[i]` receives what [`Model::run`]
                /// makes of `inputs[i]`, bit for bit. With two inputs or more and two threads or
                /// more, whole inputs run side by side, one per thread; otherwise one after the
                /// other, each on all threads.
                pub fn run_batch(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], scratch: &mut hrnet_runtime::model::BatchScratch) -> Result<(), RunError> {
                    hrnet_runtime::model::run_batch(
                        INPUT_SHAPE, OUTPUT_SHAPE, ARENA_LEN, TILES_PER_THREAD,
                        inputs, outputs, scratch, |x, y, s| self.run(x, y, s),
                    )
                }

                #run
            }
        }
    }

    /// `Model::embedded`, with `--embed-weights`.
    fn embedded(&self) -> Option<TokenStream> {
        self.opts.embed_weights.as_ref().map(|file| {
            quote! {
                /// The model with the weights embedded at compile time (`--embed-weights`).
                pub fn embedded() -> Result<Model, LoadError> {
                    static BYTES: &[u8] = include_bytes!(#file);
                    let ckpt = hrnet_runtime::weights::load_bytes(BYTES)?;
                    Ok(Self::from_checkpoint(&ckpt, BindOptions::default())?)
                }
            }
        })
    }

    /// `Model::run`: one runtime check of the buffers, then one call per section; with
    /// several outputs, `run` writes the first and `run_outputs` any prefix of them.
    fn run_fn(&self) -> TokenStream {
        let calls = self.sections.iter().map(|(name, steps)| {
            let f = format_ident!("{}", name);
            let args = self.section_signature(steps).1;
            quote!(#f(#(#args),*);)
        });
        if self.plan.outputs.len() == 1 {
            return quote! {
                /// Runs the network: `input` is 1x3xHxW NCHW ([`INPUT_SHAPE`]), `output` receives
                /// [`OUTPUT_SHAPE`].
                pub fn run(&self, input: &[f32], output: &mut [f32], scratch: &mut Scratch) -> Result<(), RunError> {
                    hrnet_runtime::model::check_buffers(
                        INPUT_SHAPE, [OUTPUT_SHAPE], ARENA_LEN, TILES_PER_THREAD,
                        input, [output.len()], scratch,
                    )?;
                    let Scratch { arena, tiles, ctx } = scratch;
                    let w = &self.packed[..];
                    #(#calls)*
                    Ok(())
                }
            };
        }
        quote! {
            /// Runs the network: `input` is 1x3xHxW NCHW ([`INPUT_SHAPE`]), `output` receives
            /// the first output ([`OUTPUT_SHAPE`]).
            pub fn run(&self, input: &[f32], output: &mut [f32], scratch: &mut Scratch) -> Result<(), RunError> {
                self.run_outputs(input, &mut [output], scratch)
            }

            /// Runs the network into `outputs[k]` ([`OUTPUT_SHAPES`]`[k]`) for every `k` it
            /// holds: any prefix of the outputs (the others are not written).
            pub fn run_outputs(&self, input: &[f32], outputs: &mut [&mut [f32]], scratch: &mut Scratch) -> Result<(), RunError> {
                hrnet_runtime::model::check_buffers(
                    INPUT_SHAPE, OUTPUT_SHAPES, ARENA_LEN, TILES_PER_THREAD,
                    input, outputs.iter().map(|o| o.len()), scratch,
                )?;
                let Scratch { arena, tiles, ctx } = scratch;
                let w = &self.packed[..];
                #(#calls)*
                Ok(())
            }
        }
    }

    /// `Session` and its `HeatmapModel` implementation.
    fn session(&self) -> TokenStream {
        let head = self.any_step(|s| {
            matches!(
                s,
                Step::Resize { .. }
                    | Step::AddResized { .. }
                    | Step::GlobalAvgPool { .. }
                    | Step::SpatialGather { .. }
                    | Step::ObjectAttention { .. }
            )
        });
        if head || self.plan.outputs.len() != 1 {
            // Classification and segmentation: a session is a model with its scratch.
            return quote! {
                /// A model with one caller's working memory.
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

                impl Session<'_> {
                    /// [`Model::run`] with this session's scratch.
                    pub fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), RunError> {
                        self.model.run(input, output, &mut self.scratch)
                    }
                }
            };
        }
        quote! {
            /// A model with one caller's working memory: what
            /// `hrnet_runtime::pose::PoseEstimator` drives (crop, run, decode); it runs a batch
            /// of people side by side ([`Model::run_batch`]).
            #[derive(Debug)]
            pub struct Session<'m> {
                model: &'m Model,
                scratch: hrnet_runtime::model::BatchScratch,
            }

            impl Model {
                /// A session running kernels on `threads` threads (one arena per thread).
                pub fn session(&self, threads: usize) -> Session<'_> {
                    Session { model: self, scratch: self.batch_scratch(threads) }
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
                    Ok(self.model.run(input, heatmaps, self.scratch.single())?)
                }
                fn run_batch(&mut self, inputs: &[f32], heatmaps: &mut [f32]) -> Result<(), hrnet_runtime::pose::ModelError> {
                    let (model, scratch) = (self.model, &mut self.scratch);
                    hrnet_runtime::pose::run_in_batches(
                        inputs, heatmaps, INPUT_SHAPE.iter().product(), OUTPUT_SHAPE.iter().product(),
                        |xs, ys| model.run_batch(xs, ys, scratch),
                    )
                }
            }
        }
    }

    /// The parameters of a section function and the arguments `run` passes; unused ones are
    /// `_`-prefixed.
    fn section_signature(&self, steps: &[usize]) -> (Vec<TokenStream>, Vec<TokenStream>) {
        let kind = |k: usize| &self.plan.steps[k];
        let mut params = vec![
            quote!(ctx: &Ctx),
            quote!(w: &[f32]),
            quote!(a: &mut [f32]),
            quote!(t: &mut [f32]),
        ];
        let mut args = vec![quote!(ctx), quote!(w), quote!(arena), quote!(tiles)];
        if steps.iter().any(|&k| matches!(kind(k), Step::Input { .. })) {
            params.push(quote!(input: &[f32]));
            args.push(quote!(input));
        }
        if steps
            .iter()
            .any(|&k| matches!(kind(k), Step::Output { .. }))
        {
            if self.plan.outputs.len() == 1 {
                params.push(quote!(output: &mut [f32]));
                args.push(quote!(output));
            } else {
                params.push(quote!(outputs: &mut [&mut [f32]]));
                args.push(quote!(outputs));
            }
        }
        if !steps.iter().any(|&k| matches!(kind(k), Step::Conv { .. })) {
            params[1] = quote!(_w: &[f32]);
        }
        if !steps.iter().any(|&k| {
            matches!(
                kind(k),
                Step::Conv { .. } | Step::SpatialGather { .. } | Step::ObjectAttention { .. }
            )
        }) {
            params[3] = quote!(_t: &mut [f32]);
        }
        let uses_ctx = steps.iter().any(|&k| {
            !matches!(
                kind(k),
                Step::Input { .. } | Step::Output { .. } | Step::Copy { .. }
            )
        });
        if !uses_ctx {
            params[0] = quote!(_ctx: &Ctx);
        }
        (params, args)
    }

    /// One function per section, its body the section's kernel calls.
    fn section_fns(&self) -> TokenStream {
        let fns = self.sections.iter().map(|(name, steps)| {
            let fname = format_ident!("{}", name);
            let params = self.section_signature(steps).0;
            let body = steps.iter().map(|&k| self.step(k));
            let doc = format!(
                " Section `{name}` of the network: {} kernel calls.",
                steps.len()
            );
            quote! {
                #[doc = #doc]
                fn #fname(#(#params),*) {
                    #(#body)*
                }
            }
        });
        quote!(#(#fns)*)
    }

    /// The arena range of value `v`.
    fn range(&self, v: usize) -> TokenStream {
        let value = &self.plan.values[v];
        let (a, b) = (lit(value.offset), lit(value.offset + value.len()));
        quote!(#a..#b)
    }

    /// The blocked shape of value `v`.
    fn shape(&self, v: usize) -> TokenStream {
        let s = self.plan.values[v].shape;
        let (c, h, w) = (lit(s.c()), lit(s.h()), lit(s.w()));
        quote!(ActShape::new(#c, #h, #w))
    }

    /// Step `k`: its note (a comment after [`layout`]) and its kernel call.
    fn step(&self, k: usize) -> TokenStream {
        let note = comment_text(&self.plan.notes[k].text);
        let call = match self.plan.steps[k] {
            Step::Input { dst } => {
                let (r, s) = (self.range(dst), self.shape(dst));
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
                let spec = self.spec_name(&self.plan.convs[layer].spec);
                let l = lit(layer);
                let u = Literal::u32_unsuffixed(upsample_log2);
                match add {
                    Addend::None | Addend::InPlace => {
                        let epi = match (add, upsample_log2) {
                            (Addend::None, _) => quote!(Epilogue::plain(#relu)),
                            (_, 0) => quote!(Epilogue::accumulate(#relu)),
                            _ => quote!(Epilogue::upsample_accumulate(#u, #relu)),
                        };
                        let (x, y) = (self.range(src), self.range(dst));
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
                        let (x, rr, y) = (self.range(src), self.range(r), self.range(dst));
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
                let (x, y, z) = (self.range(p), self.range(q), self.range(dst));
                let s = self.shape(dst);
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
                let (lo, acc, s) = (self.range(low), self.range(dst), self.shape(dst));
                let u = Literal::u32_unsuffixed(log2);
                quote! {
                    let (lo, acc) = split2(a, #lo, #acc);
                    eltwise::add_upsampled(ctx, #s, acc, lo, #u, #relu);
                }
            }
            Step::Copy { src, dst } => {
                let (x, y) = (self.range(src), self.range(dst));
                quote! {
                    let (x, y) = split2(a, #x, #y);
                    y.copy_from_slice(x);
                }
            }
            Step::AddResized {
                low,
                dst,
                align_corners,
                relu,
                ..
            } => {
                let (lo, acc) = (self.range(low), self.range(dst));
                let (ls, ds) = (self.shape(low), self.shape(dst));
                quote! {
                    let (lo, acc) = split2(a, #lo, #acc);
                    kernels::add_resized_bilinear(ctx, #ls, lo, #ds, acc, #align_corners, #relu);
                }
            }
            Step::Resize {
                src,
                dst,
                align_corners,
            } => {
                let (x, y) = (self.range(src), self.range(dst));
                let (xs, ys) = (self.shape(src), self.shape(dst));
                quote! {
                    let (x, y) = split2(a, #x, #y);
                    kernels::resize_bilinear(ctx, #xs, x, #ys, y, #align_corners);
                }
            }
            Step::GlobalAvgPool { src, dst } => {
                let (x, y, xs) = (self.range(src), self.range(dst), self.shape(src));
                quote! {
                    let (x, y) = split2(a, #x, #y);
                    head::global_avg_pool_blocked(ctx, #xs, x, y);
                }
            }
            Step::SpatialGather { logits, feats, dst } => {
                let (l, f, y) = (self.range(logits), self.range(feats), self.range(dst));
                let (ls, fs) = (self.shape(logits), self.shape(feats));
                quote! {
                    let (l, f, y) = split3(a, #l, #f, #y);
                    head::softmax_spatial_gather(ctx, #ls, l, #fs, f, y, t);
                }
            }
            Step::ObjectAttention {
                query,
                key,
                value,
                dst,
            } => {
                let (q, k, v, y) = (
                    self.range(query),
                    self.range(key),
                    self.range(value),
                    self.range(dst),
                );
                let qs = self.shape(query);
                let regions = lit(self.plan.values[key].shape.h());
                quote! {
                    let (q, k, v, y) = split4(a, #q, #k, #v, #y);
                    head::object_attention(ctx, #qs, q, #regions, k, v, y, t);
                }
            }
            Step::Output { src, index } => {
                let (r, s) = (self.range(src), self.shape(src));
                if self.plan.outputs.len() == 1 {
                    quote!(kernels::to_nchw(#s, &a[#r], output);)
                } else {
                    let i = lit(index);
                    quote! {
                        if let Some(o) = outputs.get_mut(#i) {
                            kernels::to_nchw(#s, &a[#r], o);
                        }
                    }
                }
            }
        };
        quote! {
            hrnet_note!(#note);
            #call
        }
    }
}

/// The one edit of prettyplease's output, which cannot print comments or choose line breaks.
/// Contract, line by line:
/// 1. A statement `hrnet_note!("…");` (possibly wrapped over several lines) becomes the line
///    comment `// …` at the statement's indentation; the literal is unescaped (`\\`, `\"`),
///    and its text came through [`comment_text`], so it holds no control characters.
/// 2. A row `ConvParams::new(…),` or `ConvParams::full(…),` that prettyplease wrapped is
///    joined back onto one line, so the convolution table reads as a table.
/// 3. A blank line separates top-level items: one is inserted before a top-level `///`, `#[`
///    or `impl` line unless the previous line is blank or is itself a top-level doc line or
///    attribute.
///
/// Every other line is copied unchanged.
fn layout(body: &str) -> String {
    let mut out = String::with_capacity(body.len() + body.len() / 8);
    let mut lines = body.lines();
    let mut prev_doc = false;
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if let Some(rest) = trimmed.strip_prefix("hrnet_note!(") {
            let mut text = rest.to_string();
            while !text.trim_end().ends_with(");") {
                match lines.next() {
                    Some(more) => text.push_str(more.trim()),
                    None => break,
                }
            }
            let text = text.trim_end().trim_end_matches(");").trim();
            out.push_str(indent);
            out.push_str("// ");
            out.push_str(&unescape_literal(text));
            out.push('\n');
            prev_doc = false;
            continue;
        }
        if (trimmed.starts_with("ConvParams::new(") || trimmed.starts_with("ConvParams::full("))
            && !trimmed.ends_with("),")
        {
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
            && !out.is_empty()
            && !prev_doc;
        prev_doc = indent.is_empty() && (trimmed.starts_with("///") || trimmed.starts_with("#["));
        if top_level_item {
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The content of a string literal as `quote!` escapes [`comment_text`]'s output (which has
/// no control characters): `\\` and `\"` only.
fn unescape_literal(lit: &str) -> String {
    let inner = lit
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(lit);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// A conv shape with its algorithm, ordered, for numbering the spec constants.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SpecKey([usize; 7], String);

impl SpecKey {
    fn of(s: &ConvSpec) -> SpecKey {
        SpecKey(
            [
                s.cin(),
                s.cout(),
                s.h_in(),
                s.w_in(),
                s.k(),
                s.stride(),
                s.pad(),
            ],
            format!("{:?}", s.algo()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::layout;

    #[test]
    fn layout_makes_notes_comments_joins_rows_and_separates_items() {
        let body = "use a::b;\n/// Doc.\nconst X: u8 = 1;\n#[doc = \"x\"]\nfn f() {\n    hrnet_note!(\"stem: conv \\\"q\\\" \\\\u{a}\");\n    g();\n}\nstatic T: [P; 1] = [\n    ConvParams::new(\n        \"k\",\n        false,\n        None,\n        S0,\n        0,\n    ),\n];\nimpl A {}\n";
        let want = "use a::b;\n\n/// Doc.\nconst X: u8 = 1;\n\n#[doc = \"x\"]\nfn f() {\n    // stem: conv \"q\" \\u{a}\n    g();\n}\nstatic T: [P; 1] = [\n    ConvParams::new(\"k\", false, None, S0, 0),\n];\n\nimpl A {}\n";
        assert_eq!(layout(body), want);
    }

    #[test]
    fn layout_copies_other_lines_unchanged() {
        let body = "fn f() {\n    let x = \"hrnet_note!(\";\n    // a comment\n}\n";
        assert_eq!(layout(body), body);
    }
}
