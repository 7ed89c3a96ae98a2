//! A pickle reader that is not Python's: a small stack machine for tensor state_dicts.
//!
//! It implements only the opcodes that `torch.save` writes for a state_dict or a training
//! checkpoint (protocols 2–5), and knows only the globals such a pickle needs
//! ([`Global`]), plus the numpy-scalar globals of training checkpoints as inert placeholders.
//! Any other global is refused with [`PickleErrorKind::RefusedGlobal`] the moment its
//! `GLOBAL` / `STACK_GLOBAL` opcode is read, before anything could "call" it.
//!
//! **Nothing is ever executed.** A `REDUCE` of an allowed global only builds a value: a
//! `_rebuild_tensor_v2` call becomes a [`TensorRef`] describing a view of a storage, a persistent
//! id becomes a [`StorageRef`], `OrderedDict()` becomes an empty dict.
//!
//! Hostile input is expected: every read is bounds-checked, every stack pop and memo lookup is
//! checked, nesting is bounded by [`MAX_DEPTH`], and the memory the reader holds (stack and memo
//! entries by their bytes — slot, heap data and every copy made by `BINGET`/`DUP` — and marks)
//! is counted as it is taken and given back, against a limit proportional to the input size
//! ([`LIMIT_PER_INPUT_BYTE`]), so a small file cannot make it hold much memory.
//!
//! One deliberate difference from Python: containers are values, not shared references. A
//! memoized list that is appended to afterwards is not updated in the memo. Tensor state_dicts
//! never rely on that (they memoize containers only before filling them, and never fetch them
//! again), and it keeps the reader free of reference cycles.

use std::collections::HashMap;
use std::fmt;

use super::DType;

/// Deepest nesting of containers accepted in a pickle (a checkpoint needs about 6).
pub const MAX_DEPTH: u32 = 64;

/// The fixed part of the memory limit, in bytes; the rest is proportional to the input.
pub const LIMIT_BASE: usize = 1 << 20;
/// Memory the reader may hold at once per byte of pickle input. A `torch.save` state_dict
/// pickle needs about 19 (its values, and the memo's copies of nearly every one of them).
pub const LIMIT_PER_INPUT_BYTE: usize = 32;
/// Bytes `BINGET` and `DUP` may copy in all per byte of pickle input (plus [`LIMIT_BASE`]).
/// A `torch.save` pickle copies about 2 (the globals it fetches from the memo per tensor).
pub const COPY_PER_INPUT_BYTE: usize = 8;
/// Longest module or attribute name accepted in a `GLOBAL` opcode.
const MAX_GLOBAL_LINE: usize = 256;
/// Bytes counted for one value node, on top of its heap bytes: a stack slot, twice over for
/// the stack's (or a container's) spare capacity.
const NODE_COST: usize = std::mem::size_of::<Item>();
/// Bytes counted for one MARK: a slot of the mark stack, twice over.
const MARK_COST: usize = 2 * std::mem::size_of::<usize>();
/// Bytes counted for one memo entry on top of its value: a hash table slot, twice over.
const MEMO_SLOT: usize = 2 * (std::mem::size_of::<(u64, Item)>() + 1);

/// The globals a tensor state_dict pickle may name. Everything else is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    /// `collections.OrderedDict`: calling it with no arguments builds an empty dict.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor(storage, offset, size, stride)`.
    RebuildTensor,
    /// `torch._utils._rebuild_parameter(tensor, requires_grad, hooks)`.
    RebuildParameter,
    /// A typed storage class such as `torch.FloatStorage`; only used inside persistent ids.
    Storage(DType),
    /// A global that training checkpoints use for values no network reads — numpy scalars
    /// (`perf`), their dtypes, and `_codecs.encode` for their bytes. "Calling" one builds an
    /// inert [`Value::Opaque`]; nothing is looked up or run.
    Inert(&'static str),
}

impl Global {
    /// Looks up an allowed global by module and name; `None` means "refuse it".
    pub fn lookup(module: &str, name: &str) -> Option<Global> {
        match (module, name) {
            ("collections", "OrderedDict") => Some(Global::OrderedDict),
            ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
            ("torch._utils", "_rebuild_tensor") => Some(Global::RebuildTensor),
            ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
            ("numpy.core.multiarray", "scalar") | ("numpy._core.multiarray", "scalar") => {
                Some(Global::Inert("numpy scalar"))
            }
            ("numpy", "dtype") => Some(Global::Inert("numpy.dtype")),
            ("_codecs", "encode") => Some(Global::Inert("_codecs.encode")),
            ("torch", storage) => {
                let dtype = match storage {
                    "FloatStorage" => DType::F32,
                    "DoubleStorage" => DType::F64,
                    "HalfStorage" => DType::F16,
                    "BFloat16Storage" => DType::BF16,
                    "LongStorage" => DType::I64,
                    "IntStorage" => DType::I32,
                    "ShortStorage" => DType::I16,
                    "CharStorage" => DType::I8,
                    "ByteStorage" => DType::U8,
                    "BoolStorage" => DType::Bool,
                    _ => return None,
                };
                Some(Global::Storage(dtype))
            }
            _ => None,
        }
    }
}

/// A storage named by a persistent id `('storage', StorageType, key, location, numel[, view])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    /// Element type, from the storage class.
    pub dtype: DType,
    /// The storage key: the record name in a zip `.pth`, an id in a legacy `.pth`.
    pub key: String,
    /// Where the storage lived when saved (`cpu`, `cuda:0`, …); ignored when loading.
    pub location: String,
    /// Number of elements of the storage.
    pub numel: usize,
}

/// A tensor described by a `_rebuild_tensor*` call: a strided view of a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    /// The storage the view reads.
    pub storage: StorageRef,
    /// Offset of element 0 in the storage, in elements.
    pub offset: usize,
    /// Shape of the tensor.
    pub size: Vec<usize>,
    /// Stride of each dimension, in elements.
    pub stride: Vec<usize>,
}

/// A value built by the reader.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A larger integer, as little-endian two's-complement bytes (e.g. the legacy magic number).
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// A text string.
    Str(String),
    /// A byte string (or a protocol-1 string that is not UTF-8).
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict or OrderedDict, in insertion order (duplicate keys kept; the last one wins).
    Dict(Vec<(Value, Value)>),
    /// An allowed global (class or function), not called.
    Global(Global),
    /// A storage from a persistent id.
    Storage(Box<StorageRef>),
    /// A tensor view of a storage.
    Tensor(Box<TensorRef>),
    /// The result of "calling" a [`Global::Inert`]: a value no network reads (a numpy
    /// scalar such as a training checkpoint's `perf`), kept only as a placeholder.
    Opaque(&'static str),
}

impl Value {
    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
            Value::Opaque(_) => "opaque",
        }
    }

    /// The string, if this is a text string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// What went wrong while reading a pickle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickleErrorKind {
    /// The input ended inside an opcode, or before `STOP`.
    Truncated,
    /// An opcode this reader does not implement.
    UnsupportedOpcode(u8),
    /// A protocol outside 0–5.
    UnsupportedProtocol(u8),
    /// A global that is not on the allow-list.
    RefusedGlobal {
        /// Module part, e.g. `posix`.
        module: String,
        /// Attribute part, e.g. `system`.
        name: String,
    },
    /// An opcode needed more values than the stack holds.
    StackUnderflow,
    /// An opcode needed a MARK and there is none.
    NoMark,
    /// A memo lookup of an index never stored.
    MissingMemo(u64),
    /// Containers nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// The pickle would make the reader hold more memory than its size justifies.
    TooLarge,
    /// A value of the wrong type for an opcode, call or persistent id.
    Invalid(String),
    /// `STOP` left extra values on the stack (or none).
    BadStop,
}

/// An error while reading a pickle, with the byte offset of the opcode that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleError {
    /// Offset of the failing opcode from the start of the pickle.
    pub offset: usize,
    /// What went wrong.
    pub kind: PickleErrorKind,
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            PickleErrorKind::RefusedGlobal { module, name } => write!(
                f,
                "refusing pickle global {module}.{name} (byte {}); only tensor state_dict globals are allowed",
                self.offset
            ),
            kind => {
                write!(f, "invalid pickle at byte {}: ", self.offset)?;
                match kind {
                    PickleErrorKind::Truncated => write!(f, "truncated"),
                    PickleErrorKind::UnsupportedOpcode(op) => {
                        write!(f, "unsupported opcode 0x{op:02x}")
                    }
                    PickleErrorKind::UnsupportedProtocol(p) => {
                        write!(f, "unsupported protocol {p}")
                    }
                    PickleErrorKind::StackUnderflow => write!(f, "stack underflow"),
                    PickleErrorKind::NoMark => write!(f, "no MARK on the stack"),
                    PickleErrorKind::MissingMemo(i) => write!(f, "memo entry {i} was never stored"),
                    PickleErrorKind::TooDeep => {
                        write!(f, "containers nested deeper than {MAX_DEPTH}")
                    }
                    PickleErrorKind::TooLarge => {
                        write!(f, "it would need more memory than its size justifies")
                    }
                    PickleErrorKind::Invalid(msg) => write!(f, "{msg}"),
                    PickleErrorKind::BadStop => {
                        write!(f, "STOP must leave exactly one value on the stack")
                    }
                    PickleErrorKind::RefusedGlobal { .. } => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for PickleError {}

/// A successfully read pickle.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The value left by `STOP`.
    pub value: Value,
    /// How many bytes the pickle took, `STOP` included (the next pickle, if any, starts there).
    pub len: usize,
}

/// A value on the stack or in the memo, with its nesting depth and allocation cost.
#[derive(Debug, Clone)]
struct Item {
    value: Value,
    depth: u32,
    cost: usize,
}

impl Item {
    fn leaf(value: Value) -> Item {
        let heap = match &value {
            Value::Str(s) => s.len(),
            Value::Bytes(b) | Value::BigInt(b) => b.len(),
            Value::Storage(s) => s.key.len() + s.location.len(),
            Value::Tensor(t) => {
                t.storage.key.len() + t.storage.location.len() + 16 * (t.size.len() + 1)
            }
            _ => 0,
        };
        Item {
            value,
            depth: 1,
            cost: NODE_COST + heap,
        }
    }
}

/// Reads one pickle from the start of `data` and returns its value and length.
///
/// Bytes after `STOP` are not looked at. The memory held is bounded by [`LIMIT_BASE`] +
/// [`LIMIT_PER_INPUT_BYTE`] × `data.len()`.
pub fn parse(data: &[u8]) -> Result<Parsed, PickleError> {
    parse_metered(data).0
}

/// [`parse`], also returning the most memory it held at once and how much it copied, by its
/// count.
fn parse_metered(data: &[u8]) -> (Result<Parsed, PickleError>, usize, usize) {
    let limit = LIMIT_BASE.saturating_add(data.len().saturating_mul(LIMIT_PER_INPUT_BYTE));
    let mut m = Machine {
        data,
        pos: 0,
        op_start: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        held: 0,
        peak: 0,
        limit,
        copied: 0,
        copy_limit: LIMIT_BASE.saturating_add(data.len().saturating_mul(COPY_PER_INPUT_BYTE)),
    };
    let result = m.run().map(|value| Parsed { value, len: m.pos });
    (result, m.peak, m.copied)
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    op_start: usize,
    stack: Vec<Item>,
    marks: Vec<usize>,
    memo: HashMap<u64, Item>,
    /// Bytes held now (stack, memo, marks), by the items' costs.
    held: usize,
    /// The most ever held.
    peak: usize,
    /// What `held` may not exceed.
    limit: usize,
    /// Bytes copied by `BINGET` and `DUP` so far.
    copied: usize,
    /// What `copied` may not exceed.
    copy_limit: usize,
}

fn invalid(msg: impl Into<String>) -> PickleErrorKind {
    PickleErrorKind::Invalid(msg.into())
}

impl<'a> Machine<'a> {
    fn err(&self, kind: PickleErrorKind) -> PickleError {
        PickleError {
            offset: self.op_start,
            kind,
        }
    }

    /// Counts `cost` more bytes held, failing past the limit.
    fn charge(&mut self, cost: usize) -> Result<(), PickleError> {
        match self.held.checked_add(cost).filter(|&h| h <= self.limit) {
            Some(held) => {
                self.held = held;
                self.peak = self.peak.max(held);
                Ok(())
            }
            None => Err(self.err(PickleErrorKind::TooLarge)),
        }
    }

    /// Counts `cost` bytes given back (items dropped).
    fn release(&mut self, cost: usize) {
        self.held = self.held.saturating_sub(cost);
    }

    /// Drops items taken off the stack, giving their bytes back.
    fn discard(&mut self, items: impl IntoIterator<Item = Item>) {
        for item in items {
            self.release(item.cost);
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| self.err(PickleErrorKind::Truncated))?;
        let bytes = self
            .data
            .get(self.pos..end)
            .ok_or_else(|| self.err(PickleErrorKind::Truncated))?;
        self.pos = end;
        Ok(bytes)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take_array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(self.take_array()?))
    }

    /// Reads a length and checks it against the bytes that remain.
    fn len_of(&mut self, n: u64) -> Result<usize, PickleError> {
        let n = usize::try_from(n).map_err(|_| self.err(PickleErrorKind::Truncated))?;
        if n > self.data.len().saturating_sub(self.pos) {
            return Err(self.err(PickleErrorKind::Truncated));
        }
        Ok(n)
    }

    /// Reads a newline-terminated line of at most `max` bytes (newline excluded).
    fn line(&mut self, max: usize) -> Result<&'a [u8], PickleError> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let limit = rest.len().min(max.saturating_add(1));
        let window = rest.get(..limit).unwrap_or_default();
        match window.iter().position(|&b| b == b'\n') {
            Some(n) => {
                let line = self.take(n)?;
                self.take(1)?;
                Ok(line)
            }
            None if limit < rest.len() => Err(self.err(invalid("line too long"))),
            None => Err(self.err(PickleErrorKind::Truncated)),
        }
    }

    fn push(&mut self, item: Item) -> Result<(), PickleError> {
        if item.depth > MAX_DEPTH {
            return Err(self.err(PickleErrorKind::TooDeep));
        }
        self.charge(item.cost)?;
        self.stack.push(item);
        Ok(())
    }

    fn push_leaf(&mut self, value: Value) -> Result<(), PickleError> {
        self.push(Item::leaf(value))
    }

    fn pop(&mut self) -> Result<Item, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err(PickleErrorKind::StackUnderflow));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.err(PickleErrorKind::StackUnderflow))
    }

    fn top_mut(&mut self) -> Result<&mut Item, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err(PickleErrorKind::StackUnderflow));
        }
        let offset = self.op_start;
        self.stack.last_mut().ok_or(PickleError {
            offset,
            kind: PickleErrorKind::StackUnderflow,
        })
    }

    /// Pops everything above the topmost MARK, and the MARK.
    fn pop_mark(&mut self) -> Result<Vec<Item>, PickleError> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.err(PickleErrorKind::NoMark))?;
        if mark > self.stack.len() {
            return Err(self.err(PickleErrorKind::StackUnderflow));
        }
        self.release(MARK_COST);
        Ok(self.stack.split_off(mark))
    }

    /// Builds a container item from parts, computing depth and cost (already charged parts are
    /// not charged again: only the container node is).
    fn container(&mut self, parts: Vec<Item>, make: impl FnOnce(Vec<Value>) -> Value) -> Item {
        let depth = 1 + parts.iter().map(|i| i.depth).max().unwrap_or(0);
        let cost = NODE_COST
            + parts
                .iter()
                .map(|i| i.cost)
                .fold(0usize, usize::saturating_add);
        let value = make(parts.into_iter().map(|i| i.value).collect());
        Item { value, depth, cost }
    }

    fn push_container(&mut self, item: Item) -> Result<(), PickleError> {
        if item.depth > MAX_DEPTH {
            return Err(self.err(PickleErrorKind::TooDeep));
        }
        // The parts were charged when they were pushed; charge only the new node.
        self.charge(NODE_COST)?;
        self.stack.push(item);
        Ok(())
    }

    fn memo_put(&mut self, index: u64) -> Result<(), PickleError> {
        let cost = self.top_mut()?.cost;
        // Counted before the copy is made.
        self.charge(cost.saturating_add(MEMO_SLOT))?;
        let item = self.top_mut()?.clone();
        if let Some(old) = self.memo.insert(index, item) {
            self.release(old.cost.saturating_add(MEMO_SLOT));
        }
        Ok(())
    }

    fn memo_get(&mut self, index: u64) -> Result<(), PickleError> {
        let cost = self
            .memo
            .get(&index)
            .map(|item| item.cost)
            .ok_or_else(|| self.err(PickleErrorKind::MissingMemo(index)))?;
        self.copy(cost)?;
        let item = self.memo.get(&index).cloned();
        self.stack.extend(item);
        Ok(())
    }

    /// Counts a copy of `cost` bytes (`BINGET`, `DUP`), before it is made: against the
    /// memory limit, and against the copy limit, which keeps a pickle that fetches a large
    /// value over and over (a memo bomb) from getting far.
    fn copy(&mut self, cost: usize) -> Result<(), PickleError> {
        match self
            .copied
            .checked_add(cost)
            .filter(|&c| c <= self.copy_limit)
        {
            Some(c) => self.copied = c,
            None => return Err(self.err(PickleErrorKind::TooLarge)),
        }
        self.charge(cost)
    }

    fn run(&mut self) -> Result<Value, PickleError> {
        loop {
            self.op_start = self.pos;
            let op = self.u8()?;
            match op {
                // PROTO
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(self.err(PickleErrorKind::UnsupportedProtocol(p)));
                    }
                }
                // FRAME: an 8-byte length hint; the frame's opcodes follow inline.
                0x95 => {
                    let n = self.u64()?;
                    self.len_of(n)?;
                }
                // STOP
                b'.' => {
                    if self.stack.len() != 1 || !self.marks.is_empty() {
                        return Err(self.err(PickleErrorKind::BadStop));
                    }
                    let item = self.pop()?;
                    return Ok(item.value);
                }
                // MARK
                b'(' => {
                    self.charge(MARK_COST)?;
                    self.marks.push(self.stack.len());
                }
                // POP
                b'0' => {
                    let item = self.pop()?;
                    self.discard([item]);
                }
                // POP_MARK
                b'1' => {
                    let items = self.pop_mark()?;
                    self.discard(items);
                }
                // DUP
                b'2' => {
                    let cost = self.top_mut()?.cost;
                    self.copy(cost)?;
                    let item = self.top_mut()?.clone();
                    self.stack.push(item);
                }
                // NONE, NEWTRUE, NEWFALSE
                b'N' => self.push_leaf(Value::None)?,
                0x88 => self.push_leaf(Value::Bool(true))?,
                0x89 => self.push_leaf(Value::Bool(false))?,
                // BININT, BININT1, BININT2
                b'J' => {
                    let v = i32::from_le_bytes(self.take_array()?);
                    self.push_leaf(Value::Int(v.into()))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push_leaf(Value::Int(v.into()))?;
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take_array()?);
                    self.push_leaf(Value::Int(v.into()))?;
                }
                // LONG1, LONG4
                0x8a => {
                    let n = self.u8()?;
                    let n = self.len_of(n.into())?;
                    let bytes = self.take(n)?;
                    self.push_leaf(long_value(bytes))?;
                }
                0x8b => {
                    let n = self.u32()?;
                    let n = self.len_of(n.into())?;
                    let bytes = self.take(n)?;
                    self.push_leaf(long_value(bytes))?;
                }
                // INT, LONG (text forms, protocol 0)
                b'I' | b'L' => {
                    let line = self.line(64)?;
                    let text = std::str::from_utf8(line)
                        .map_err(|_| self.err(invalid("integer literal is not ASCII")))?;
                    let text = text.strip_suffix('L').unwrap_or(text);
                    let value = match (op, text) {
                        (b'I', "00") => Value::Bool(false),
                        (b'I', "01") => Value::Bool(true),
                        _ => Value::Int(text.parse().map_err(|_| {
                            self.err(invalid(format!("bad integer literal {text:?}")))
                        })?),
                    };
                    self.push_leaf(value)?;
                }
                // BINFLOAT (big-endian), FLOAT (text)
                b'G' => {
                    let v = f64::from_be_bytes(self.take_array()?);
                    self.push_leaf(Value::Float(v))?;
                }
                b'F' => {
                    let line = self.line(64)?;
                    let v = std::str::from_utf8(line)
                        .ok()
                        .and_then(|t| t.parse::<f64>().ok())
                        .ok_or_else(|| self.err(invalid("bad float literal")))?;
                    self.push_leaf(Value::Float(v))?;
                }
                // SHORT_BINSTRING, BINSTRING (protocol-1 strings)
                b'U' | b'T' => {
                    let n = if op == b'U' {
                        self.u8()?.into()
                    } else {
                        self.u32()?.into()
                    };
                    let n = self.len_of(n)?;
                    let bytes = self.take(n)?;
                    let value = match std::str::from_utf8(bytes) {
                        Ok(s) => Value::Str(s.to_owned()),
                        Err(_) => Value::Bytes(bytes.to_vec()),
                    };
                    self.push_leaf(value)?;
                }
                // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
                0x8c | b'X' | 0x8d => {
                    let n = match op {
                        0x8c => self.u8()?.into(),
                        b'X' => self.u32()?.into(),
                        _ => self.u64()?,
                    };
                    let n = self.len_of(n)?;
                    let bytes = self.take(n)?;
                    let s = std::str::from_utf8(bytes)
                        .map_err(|_| self.err(invalid("string is not valid UTF-8")))?;
                    self.push_leaf(Value::Str(s.to_owned()))?;
                }
                // SHORT_BINBYTES, BINBYTES, BINBYTES8, BYTEARRAY8
                b'C' | b'B' | 0x8e | 0x96 => {
                    let n = match op {
                        b'C' => self.u8()?.into(),
                        b'B' => self.u32()?.into(),
                        _ => self.u64()?,
                    };
                    let n = self.len_of(n)?;
                    let bytes = self.take(n)?;
                    self.push_leaf(Value::Bytes(bytes.to_vec()))?;
                }
                // EMPTY_TUPLE, EMPTY_LIST, EMPTY_DICT
                b')' => self.push_leaf(Value::Tuple(Vec::new()))?,
                b']' => self.push_leaf(Value::List(Vec::new()))?,
                b'}' => self.push_leaf(Value::Dict(Vec::new()))?,
                // TUPLE, LIST (from MARK)
                b't' | b'l' => {
                    let parts = self.pop_mark()?;
                    let item = if op == b't' {
                        self.container(parts, Value::Tuple)
                    } else {
                        self.container(parts, Value::List)
                    };
                    self.push_container(item)?;
                }
                // TUPLE1, TUPLE2, TUPLE3
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut parts = Vec::with_capacity(n);
                    for _ in 0..n {
                        parts.push(self.pop()?);
                    }
                    parts.reverse();
                    let item = self.container(parts, Value::Tuple);
                    self.push_container(item)?;
                }
                // DICT (from MARK)
                b'd' => {
                    let parts = self.pop_mark()?;
                    let item = self.dict_from(Item::leaf(Value::Dict(Vec::new())), parts)?;
                    self.charge(NODE_COST)?;
                    self.stack.push(item);
                }
                // APPEND, APPENDS
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' => {
                    let parts = self.pop_mark()?;
                    self.append(parts)?;
                }
                // SETITEM, SETITEMS
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.setitems(vec![k, v])?;
                }
                b'u' => {
                    let parts = self.pop_mark()?;
                    self.setitems(parts)?;
                }
                // GLOBAL
                b'c' => {
                    let module = self.line(MAX_GLOBAL_LINE)?;
                    let name = self.line(MAX_GLOBAL_LINE)?;
                    let module = String::from_utf8_lossy(module).into_owned();
                    let name = String::from_utf8_lossy(name).into_owned();
                    self.global(module, name)?;
                }
                // STACK_GLOBAL
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    self.release(name.cost.saturating_add(module.cost));
                    match (module.value, name.value) {
                        (Value::Str(module), Value::Str(name)) => self.global(module, name)?,
                        _ => return Err(self.err(invalid("STACK_GLOBAL needs two strings"))),
                    }
                }
                // REDUCE
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.release(args.cost.saturating_add(callable.cost));
                    let value = self.call(callable.value, args.value)?;
                    self.push_leaf(value)?;
                }
                // BUILD: setting state on an object. Nothing is called; for the values this
                // reader builds (dicts, tensors, opaque placeholders) the state is dropped.
                b'b' => {
                    let state = self.pop()?;
                    self.discard([state]);
                    let target = self.top_mut()?.value.type_name();
                    if !matches!(target, "dict" | "tensor" | "opaque") {
                        return Err(self.err(invalid(format!("BUILD on a {target}"))));
                    }
                }
                // BINPERSID
                b'Q' => {
                    let pid = self.pop()?;
                    self.release(pid.cost);
                    let storage = self.persistent_load(pid.value)?;
                    self.push_leaf(Value::Storage(Box::new(storage)))?;
                }
                // BINGET, LONG_BINGET
                b'h' => {
                    let i = self.u8()?;
                    self.memo_get(i.into())?;
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i.into())?;
                }
                // BINPUT, LONG_BINPUT, MEMOIZE
                b'q' => {
                    let i = self.u8()?;
                    self.memo_put(i.into())?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i.into())?;
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?;
                }
                other => return Err(self.err(PickleErrorKind::UnsupportedOpcode(other))),
            }
        }
    }

    fn global(&mut self, module: String, name: String) -> Result<(), PickleError> {
        match Global::lookup(&module, &name) {
            Some(g) => self.push_leaf(Value::Global(g)),
            None => Err(self.err(PickleErrorKind::RefusedGlobal { module, name })),
        }
    }

    fn append(&mut self, parts: Vec<Item>) -> Result<(), PickleError> {
        let added_cost = parts
            .iter()
            .map(|i| i.cost)
            .fold(0usize, usize::saturating_add);
        let added_depth = 1 + parts.iter().map(|i| i.depth).max().unwrap_or(0);
        let offset = self.op_start;
        let target = self.top_mut()?;
        match &mut target.value {
            Value::List(items) => items.extend(parts.into_iter().map(|i| i.value)),
            other => {
                let msg = format!("APPEND to a {}", other.type_name());
                return Err(PickleError {
                    offset,
                    kind: invalid(msg),
                });
            }
        }
        target.cost = target.cost.saturating_add(added_cost);
        target.depth = target.depth.max(added_depth);
        if target.depth > MAX_DEPTH {
            return Err(self.err(PickleErrorKind::TooDeep));
        }
        Ok(())
    }

    fn setitems(&mut self, parts: Vec<Item>) -> Result<(), PickleError> {
        let target = self.pop()?;
        let item = self.dict_from(target, parts)?;
        self.stack.push(item);
        Ok(())
    }

    fn dict_from(&mut self, target: Item, parts: Vec<Item>) -> Result<Item, PickleError> {
        if parts.len() % 2 == 1 {
            return Err(self.err(invalid("odd number of items for a dict")));
        }
        let mut target = target;
        let added_cost = parts
            .iter()
            .map(|i| i.cost)
            .fold(0usize, usize::saturating_add);
        let added_depth = 1 + parts.iter().map(|i| i.depth).max().unwrap_or(0);
        let Value::Dict(entries) = &mut target.value else {
            let msg = format!("SETITEM on a {}", target.value.type_name());
            return Err(self.err(invalid(msg)));
        };
        let mut it = parts.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            entries.push((k.value, v.value));
        }
        target.cost = target.cost.saturating_add(added_cost);
        target.depth = target.depth.max(added_depth);
        if target.depth > MAX_DEPTH {
            return Err(self.err(PickleErrorKind::TooDeep));
        }
        Ok(target)
    }

    /// "Calls" an allowed global: builds the value the call would return, runs nothing.
    fn call(&self, callable: Value, args: Value) -> Result<Value, PickleError> {
        let Value::Global(g) = callable else {
            let msg = format!("REDUCE of a {}, not a global", callable.type_name());
            return Err(self.err(invalid(msg)));
        };
        let Value::Tuple(args) = args else {
            return Err(self.err(invalid("REDUCE arguments are not a tuple")));
        };
        match g {
            Global::OrderedDict => {
                if args.is_empty() {
                    Ok(Value::Dict(Vec::new()))
                } else {
                    Err(self.err(invalid("OrderedDict called with arguments")))
                }
            }
            Global::RebuildTensorV2 | Global::RebuildTensor => {
                let ok_arity = match g {
                    Global::RebuildTensorV2 => (6..=7).contains(&args.len()),
                    _ => args.len() == 4,
                };
                if !ok_arity {
                    let msg = format!("tensor rebuild called with {} arguments", args.len());
                    return Err(self.err(invalid(msg)));
                }
                let mut args = args.into_iter();
                let (storage, offset, size, stride) =
                    match (args.next(), args.next(), args.next(), args.next()) {
                        (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
                        _ => return Err(self.err(invalid("tensor rebuild arguments"))),
                    };
                let Value::Storage(storage) = storage else {
                    let msg = format!("tensor rebuilt from a {}", storage.type_name());
                    return Err(self.err(invalid(msg)));
                };
                let offset = self.usize_of(&offset, "storage offset")?;
                let size = self.usize_tuple(size, "size")?;
                let stride = self.usize_tuple(stride, "stride")?;
                if size.len() != stride.len() {
                    return Err(self.err(invalid(format!(
                        "tensor size has {} dimensions but stride has {}",
                        size.len(),
                        stride.len()
                    ))));
                }
                Ok(Value::Tensor(Box::new(TensorRef {
                    storage: *storage,
                    offset,
                    size,
                    stride,
                })))
            }
            Global::RebuildParameter => match args.into_iter().next() {
                Some(Value::Tensor(t)) => Ok(Value::Tensor(t)),
                _ => Err(self.err(invalid("_rebuild_parameter needs a tensor"))),
            },
            Global::Storage(dtype) => {
                let msg = format!("storage class {dtype} cannot be called");
                Err(self.err(invalid(msg)))
            }
            Global::Inert(name) => Ok(Value::Opaque(name)),
        }
    }

    fn usize_of(&self, v: &Value, what: &str) -> Result<usize, PickleError> {
        match v {
            Value::Int(i) => usize::try_from(*i)
                .map_err(|_| self.err(invalid(format!("{what} {i} is negative")))),
            other => Err(self.err(invalid(format!(
                "{what} is a {}, not an int",
                other.type_name()
            )))),
        }
    }

    fn usize_tuple(&self, v: Value, what: &str) -> Result<Vec<usize>, PickleError> {
        match v {
            Value::Tuple(items) | Value::List(items) => {
                items.iter().map(|i| self.usize_of(i, what)).collect()
            }
            other => Err(self.err(invalid(format!(
                "tensor {what} is a {}, not a tuple",
                other.type_name()
            )))),
        }
    }

    /// Turns a torch persistent id `('storage', StorageType, key, location, numel[, view])`
    /// into a [`StorageRef`].
    fn persistent_load(&self, pid: Value) -> Result<StorageRef, PickleError> {
        let Value::Tuple(parts) = pid else {
            return Err(self.err(invalid("persistent id is not a tuple")));
        };
        if !(5..=6).contains(&parts.len()) {
            return Err(self.err(invalid(format!(
                "persistent id has {} fields, expected 5 or 6",
                parts.len()
            ))));
        }
        let mut it = parts.into_iter();
        let (tag, ty, key, location, numel, view) = (
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
        );
        if tag.as_ref().and_then(Value::as_str) != Some("storage") {
            return Err(self.err(invalid("persistent id is not a ('storage', …) tuple")));
        }
        let dtype = match ty {
            Some(Value::Global(Global::Storage(d))) => d,
            _ => return Err(self.err(invalid("persistent id does not name a storage type"))),
        };
        let key = match key {
            Some(Value::Str(s)) => s,
            Some(Value::Int(i)) => i.to_string(),
            _ => return Err(self.err(invalid("storage key is not a string"))),
        };
        let location = match location {
            Some(Value::Str(s)) => s,
            _ => return Err(self.err(invalid("storage location is not a string"))),
        };
        let numel = match numel {
            Some(v) => self.usize_of(&v, "storage size")?,
            None => return Err(self.err(invalid("storage size missing"))),
        };
        match view {
            None | Some(Value::None) => {}
            Some(_) => {
                return Err(self.err(invalid(format!(
                    "storage '{key}' is a view of another storage (legacy view metadata), which is not supported"
                ))))
            }
        }
        Ok(StorageRef {
            dtype,
            key,
            location,
            numel,
        })
    }
}

/// Decodes a LONG1/LONG4 payload (little-endian two's complement).
fn long_value(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Int(0);
    }
    if bytes.len() <= 8 {
        let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
        let mut buf = if negative { [0xffu8; 8] } else { [0u8; 8] };
        for (dst, src) in buf.iter_mut().zip(bytes) {
            *dst = *src;
        }
        Value::Int(i64::from_le_bytes(buf))
    } else {
        Value::BigInt(bytes.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(bytes: &[u8]) -> Value {
        match parse(bytes) {
            Ok(p) => p.value,
            Err(e) => panic!("parse failed: {e}"),
        }
    }

    fn kind(bytes: &[u8]) -> PickleErrorKind {
        match parse(bytes) {
            Ok(p) => panic!("expected an error, got {:?}", p.value),
            Err(e) => e.kind,
        }
    }

    #[test]
    fn small_values() {
        assert_eq!(parse_ok(b"\x80\x02K\x07."), Value::Int(7));
        assert_eq!(parse_ok(b"\x80\x02J\xff\xff\xff\xff."), Value::Int(-1));
        assert_eq!(parse_ok(b"\x80\x02\x8a\x01\xff."), Value::Int(-1));
        assert_eq!(parse_ok(b"\x80\x02\x8a\x00."), Value::Int(0));
        assert_eq!(parse_ok(b"I01\n."), Value::Bool(true));
        assert_eq!(parse_ok(b"I-12\n."), Value::Int(-12));
        assert_eq!(
            parse_ok(b"\x80\x02G?\xf0\x00\x00\x00\x00\x00\x00."),
            Value::Float(1.0)
        );
        assert_eq!(
            parse_ok(b"\x80\x04\x8c\x02ab\x94."),
            Value::Str("ab".to_owned())
        );
        assert_eq!(
            parse_ok(b"\x80\x02(K\x01K\x02l."),
            Value::List(vec![Value::Int(1), Value::Int(2)])
        );
        assert_eq!(
            parse_ok(b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01u."),
            Value::Dict(vec![(Value::Str("a".to_owned()), Value::Int(1))])
        );
    }

    #[test]
    fn magic_number_is_a_big_int() {
        let bytes = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.";
        assert_eq!(
            parse_ok(bytes),
            Value::BigInt(vec![
                0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19
            ])
        );
    }

    /// What `pickle.dumps({'perf': np.float64(0.5), 'epoch': 3}, protocol=2)` writes (made
    /// once with Python and numpy): the official training checkpoints store `perf` like this.
    #[test]
    fn numpy_scalars_are_inert_placeholders() {
        let v = parse_ok(b"\x80\x02\x7d\x71\x00\x28\x58\x04\x00\x00\x00\x70\x65\x72\x66\x71\x01\x63\x6e\x75\x6d\x70\x79\x2e\x5f\x63\x6f\x72\x65\x2e\x6d\x75\x6c\x74\x69\x61\x72\x72\x61\x79\x0a\x73\x63\x61\x6c\x61\x72\x0a\x71\x02\x63\x6e\x75\x6d\x70\x79\x0a\x64\x74\x79\x70\x65\x0a\x71\x03\x58\x02\x00\x00\x00\x66\x38\x71\x04\x89\x88\x87\x71\x05\x52\x71\x06\x28\x4b\x03\x58\x01\x00\x00\x00\x3c\x71\x07\x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x71\x08\x62\x63\x5f\x63\x6f\x64\x65\x63\x73\x0a\x65\x6e\x63\x6f\x64\x65\x0a\x71\x09\x58\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00\xc3\xa0\x3f\x71\x0a\x58\x06\x00\x00\x00\x6c\x61\x74\x69\x6e\x31\x71\x0b\x86\x71\x0c\x52\x71\x0d\x86\x71\x0e\x52\x71\x0f\x58\x05\x00\x00\x00\x65\x70\x6f\x63\x68\x71\x10\x4b\x03\x75\x2e");
        let Value::Dict(items) = v else {
            panic!("not a dict: {v:?}")
        };
        assert_eq!(
            items[0],
            (Value::Str("perf".into()), Value::Opaque("numpy scalar"))
        );
        assert_eq!(items[1], (Value::Str("epoch".into()), Value::Int(3)));
        // Other numpy and codecs globals stay refused.
        assert!(matches!(
            kind(b"\x80\x02cnumpy\nload\n."),
            PickleErrorKind::RefusedGlobal { .. }
        ));
        assert!(matches!(
            kind(b"\x80\x02c_codecs\ndecode\n."),
            PickleErrorKind::RefusedGlobal { .. }
        ));
    }

    #[test]
    fn refuses_unknown_globals_by_name() {
        let k = kind(b"\x80\x02cposix\nsystem\nq\x00.");
        assert_eq!(
            k,
            PickleErrorKind::RefusedGlobal {
                module: "posix".to_owned(),
                name: "system".to_owned()
            }
        );
        let k = kind(b"\x80\x04\x8c\x02os\x8c\x06system\x93.");
        assert!(matches!(k, PickleErrorKind::RefusedGlobal { ref module, .. } if module == "os"));
    }

    #[test]
    fn stack_and_memo_errors() {
        assert_eq!(kind(b"\x80\x02t."), PickleErrorKind::NoMark);
        assert_eq!(kind(b"\x80\x02\x85."), PickleErrorKind::StackUnderflow);
        assert_eq!(kind(b"\x80\x02h\x05."), PickleErrorKind::MissingMemo(5));
        assert_eq!(kind(b"\x80\x02K\x01K\x02."), PickleErrorKind::BadStop);
        // A pop may not reach below the topmost MARK.
        assert_eq!(kind(b"\x80\x02K\x01(0."), PickleErrorKind::StackUnderflow);
        assert_eq!(kind(b"\x80\x02K\x01"), PickleErrorKind::Truncated);
        assert_eq!(
            kind(b"\x80\x02X\xff\xff\xff\x7fab."),
            PickleErrorKind::Truncated
        );
        assert_eq!(kind(b"\x80\x09."), PickleErrorKind::UnsupportedProtocol(9));
        assert_eq!(
            kind(b"\x80\x02\x81."),
            PickleErrorKind::UnsupportedOpcode(0x81)
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut p = b"\x80\x02".to_vec();
        for _ in 0..200 {
            p.extend_from_slice(b"]q\x00");
        }
        p.extend(std::iter::repeat_n(b'a', 199));
        p.push(b'.');
        assert_eq!(kind(&p), PickleErrorKind::TooDeep);
        // The same with tuples.
        let mut p = b"\x80\x02)".to_vec();
        p.extend(std::iter::repeat_n(0x85u8, 100));
        p.push(b'.');
        assert_eq!(kind(&p), PickleErrorKind::TooDeep);
    }

    #[test]
    fn memo_copies_are_charged() {
        // A 1000-byte string, memoized, then fetched a million times: the copies would need
        // 1 GB; the reader must stop at its copy limit instead, long before its end.
        let mut p = b"\x80\x02X\xe8\x03\x00\x00".to_vec();
        p.extend(std::iter::repeat_n(b'x', 1000));
        p.extend_from_slice(b"q\x00(");
        for _ in 0..1_000_000 {
            p.extend_from_slice(b"h\x00");
        }
        p.extend_from_slice(b"l.");
        let (result, peak, copied) = parse_metered(&p);
        assert_eq!(
            result.map(|_| ()).unwrap_err().kind,
            PickleErrorKind::TooLarge
        );
        assert!(
            copied <= LIMIT_BASE + COPY_PER_INPUT_BYTE * p.len(),
            "{copied}"
        );
        assert!(
            peak <= LIMIT_BASE + (COPY_PER_INPUT_BYTE + 2) * p.len(),
            "{peak}"
        );
    }

    #[test]
    fn small_values_are_counted_by_their_bytes() {
        // Four million `None`s on the stack: one byte of input each, a whole stack slot of
        // memory each. The reader stops at its limit, having held no more than it.
        let mut p = b"\x80\x02(".to_vec();
        p.extend(std::iter::repeat_n(b'N', 4_000_000));
        p.extend_from_slice(b"l.");
        let (result, peak, _) = parse_metered(&p);
        assert_eq!(
            result.map(|_| ()).unwrap_err().kind,
            PickleErrorKind::TooLarge
        );
        assert!(peak <= LIMIT_BASE + LIMIT_PER_INPUT_BYTE * p.len());
        assert!(NODE_COST >= std::mem::size_of::<Item>());
    }

    #[test]
    fn popped_values_are_given_back() {
        // Pushing and popping a 1000-byte string over and over holds one copy at a time.
        let mut p = b"\x80\x02".to_vec();
        for _ in 0..10_000 {
            p.extend_from_slice(b"X\xe8\x03\x00\x00");
            p.extend(std::iter::repeat_n(b'x', 1000));
            p.push(b'0');
        }
        p.extend_from_slice(b"N.");
        let (result, peak, _) = parse_metered(&p);
        assert!(result.is_ok());
        assert!(peak < 2 * (1000 + NODE_COST), "{peak}");
    }

    #[test]
    #[cfg(feature = "pth")]
    fn real_checkpoints_use_a_small_part_of_the_budget() {
        // The fixture's training checkpoint pickle (380 tensors): what it holds and copies
        // must stay well below the limits, so that checkpoints of any size load.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/tiny_pose/weights_checkpoint.pth"
        );
        let file = std::fs::File::open(path).expect("fixture");
        let mut archive = zip::ZipArchive::new(file).expect("zip");
        let mut pkl = Vec::new();
        std::io::Read::read_to_end(
            &mut archive
                .by_name("weights_checkpoint/data.pkl")
                .expect("data.pkl"),
            &mut pkl,
        )
        .expect("read");
        let (result, peak, copied) = parse_metered(&pkl);
        assert!(result.is_ok());
        let n = pkl.len();
        assert!(
            peak * 3 < LIMIT_PER_INPUT_BYTE * n * 2,
            "held {peak} for a {n}-byte pickle"
        );
        assert!(
            copied * 3 < COPY_PER_INPUT_BYTE * n,
            "copied {copied} for a {n}-byte pickle"
        );
    }

    #[test]
    fn rebuild_tensor_builds_a_view() {
        // _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', 6), 0, (2, 3), (3, 1), False, OrderedDict())
        let p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQK\x00K\x02K\x03\x86K\x03K\x01\x86\x89ccollections\nOrderedDict\n)RtR.";
        let v = parse_ok(p);
        let Value::Tensor(t) = v else {
            panic!("not a tensor: {v:?}")
        };
        assert_eq!(t.size, vec![2, 3]);
        assert_eq!(t.stride, vec![3, 1]);
        assert_eq!(t.storage.numel, 6);
        assert_eq!(t.storage.dtype, DType::F32);
        assert_eq!(t.storage.key, "0");
    }
}
