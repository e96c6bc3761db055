//! OTLP export request -> span rows: the store's JSON document for each span plus the columns
//! the store indexes, following `lightspan/store/intake/otlp.py` rule for rule (that module is
//! the specification; `tests/store/test_native_intake.py` compares the two on every kind of
//! input).
//!
//! Where Python's semantics depend on its own conversions of unusual values (a non-string
//! rollout id goes through `str()`, a sequence id through `int(str(v))` with underscores and
//! Unicode digits), the batch is handed back (`Outcome::Punt`) and the Python converter does it:
//! exactness first, speed for the inputs real exporters send.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use crate::json::{write_f64, write_object, write_str};
use crate::wire::{self, Reader, WireError};

pub const ROLLOUT_ID_KEY: &str = "agentlightning.rollout_id";
pub const ATTEMPT_ID_KEY: &str = "agentlightning.attempt_id";
pub const SEQUENCE_ID_KEY: &str = "agentlightning.span_sequence_id";

/// The deepest an attribute value may nest: the attribute's own value is level 1, a value inside
/// an array or kvlist one level deeper than its container. A span carrying a value deeper than
/// this is rejected (``partial_success``) with [`too_deep_reason`]'s message, by this converter
/// and by `lightspan/store/intake/otlp.py` alike
/// (`lightspan.store.api.limits.MAX_NESTING_DEPTH`, the same number: a test checks it). Why
/// 32: the Python converter parses values with protobuf, whose parser refuses messages nested
/// deeper than 100 (three messages per kvlist level, plus the
/// request's envelope): 32 levels is the most every Python path parses, and it bounds this
/// converter's recursion (an unbounded one crashed the server on a 15,000-deep kvlist).
pub const MAX_NESTING_DEPTH: usize = 32;

const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;
const STATUS_CODES: [&str; 3] = ["UNSET", "OK", "ERROR"];

/// An attribute value after conversion; `Map` and `None` exist only before flattening.
#[derive(Clone, Debug)]
pub enum Val<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Int(i64),
    Float(f64),
    List(Vec<Val<'a>>),
    Map(OrderedMap<'a>),
    None,
}

/// A Python `dict` of attributes: insertion order, and a repeated key keeps its first position
/// and takes the last value.
#[derive(Clone, Debug, Default)]
pub struct OrderedMap<'a> {
    entries: Vec<(Cow<'a, str>, Val<'a>)>,
    index: Option<HashMap<Cow<'a, str>, usize>>,
}

impl<'a> OrderedMap<'a> {
    /// Past this many entries, keys are found through a hash index; below it, by a scan. The
    /// index is for hostile maps (thousands of keys): at 12, every LLM span (~15 attributes)
    /// built one and used it for two or three keys, which cost 1.2 M instructions per
    /// 512-span request in SipHash; a scan of 32 short keys costs less than hashing them, and
    /// bounds a map's scanning at 32 * 31 / 2 comparisons before the index takes over.
    const INDEX_FROM: usize = 32;

    fn position(&self, key: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.entries.iter().position(|(k, _)| k.as_ref() == key),
        }
    }

    pub fn insert(&mut self, key: Cow<'a, str>, value: Val<'a>) {
        if let Some(i) = self.position(&key) {
            self.entries[i].1 = value;
            return;
        }
        if let Some(index) = &mut self.index {
            index.insert(key.clone(), self.entries.len());
        }
        self.entries.push((key, value));
        if self.index.is_none() && self.entries.len() > Self::INDEX_FROM {
            let index = self.entries.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
            self.index = Some(index);
        }
    }

    pub fn get(&self, key: &str) -> Option<&Val<'a>> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Empty, keeping the entries' capacity (one map serves every span of a request).
    fn clear(&mut self) {
        self.entries.clear();
        self.index = None;
    }
}

/// A span, trace or parent id as lower-case hex, without a heap allocation (`N`: its digits).
#[derive(Clone, Copy)]
pub struct HexId<const N: usize>(pub(crate) [u8; N]);

impl<const N: usize> HexId<N> {
    /// The hex of `bytes`, which the caller checked to be `N / 2` long.
    fn of(bytes: &[u8]) -> Self {
        let mut out = [0u8; N];
        hex_into(&bytes[..bytes.len().min(N / 2)], &mut out);
        HexId(out)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// One span ready for the store: the indexed columns and where its JSON document lies in the
/// request's document buffer (see [`convert`]). Text fields borrow from the request body: a row
/// costs no allocation of its own.
pub struct Row<'a> {
    pub rollout_id: Cow<'a, str>,
    pub attempt_id: Cow<'a, str>,
    pub span_id: HexId<16>,
    pub trace_id: HexId<32>,
    pub parent_id: Option<HexId<16>>,
    pub name: &'a str,
    pub start_time: Option<f64>,
    pub end_time: Option<f64>,
    pub status_code: &'static str,
    pub sequence_id: Option<i64>,
    pub doc: Range<usize>,
}

/// A span that cannot be stored: (span id as hex, name, reason), as `otlp.RejectedSpan`.
pub struct Rejected {
    pub span_id: String,
    pub name: String,
    pub reason: String,
}

pub enum Outcome<'a> {
    Rows(Vec<Row<'a>>, Vec<Rejected>),
    /// The Python converter must handle this batch; the string says why (for tests and logs).
    Punt(&'static str),
}

/// Why a batch goes to the Python converter: a value needing Python's conversions, or a body
/// this reader does not take as is (malformed: Python's parser then gives the error).
enum PuntError {
    Value(&'static str),
    Wire(String),
    /// An attribute value nests deeper than [`MAX_NESTING_DEPTH`]: the span is rejected.
    TooDeep,
}

/// The rejection reason for a span with a value nested too deep; ``place`` is where the value
/// is (``span``, ``resource``, ``event`` or ``link``). `otlp.py` writes the same text.
pub fn too_deep_reason(place: &str) -> String {
    format!("a {place} attribute value nests deeper than {MAX_NESTING_DEPTH} levels (the limit)")
}

impl From<WireError> for PuntError {
    fn from(e: WireError) -> Self {
        PuntError::Wire(e.0)
    }
}

fn punt(why: &'static str) -> PuntError {
    PuntError::Value(why)
}

// ------------------------------------------------------------------------------ values

/// Lower-case hex digits of `bytes` into `out` (at least twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[(b >> 4) as usize];
        out[2 * i + 1] = DIGITS[(b & 15) as usize];
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_into(bytes, &mut out);
    // Only ASCII hex digits were written.
    String::from_utf8(out).unwrap_or_default()
}

fn rjust_zero(s: String, width: usize) -> String {
    if s.len() >= width {
        return s;
    }
    let mut out = "0".repeat(width - s.len());
    out.push_str(&s);
    out
}

/// An ``AnyValue`` message at nesting ``level`` (1: an attribute's own value) -> a value (nested
/// structures kept; see :func:`flatten_into`). Recursion stops at [`MAX_NESTING_DEPTH`].
fn any_value(buf: &[u8], level: usize) -> Result<Val<'_>, PuntError> {
    if level > MAX_NESTING_DEPTH {
        return Err(PuntError::TooDeep);
    }
    let mut out = Val::None;
    // An array or kvlist is converted after the loop, once it is known to be the only value:
    // a oneof set twice goes to Python before any nested value is looked at.
    let mut nested: Option<(u32, &[u8])> = None;
    let mut seen = 0;
    let mut r = Reader::new(buf);
    while let Some((number, v)) = r.next_field()? {
        out = match number {
            1 => Val::Str(Cow::Borrowed(wire::string(v, "AnyValue.string_value")?)),
            2 => Val::Bool(wire::varint(v, "AnyValue.bool_value")? != 0),
            3 => Val::Int(wire::varint(v, "AnyValue.int_value")? as i64),
            4 => Val::Float(f64::from_bits(wire::fixed64(v, "AnyValue.double_value")?)),
            5 => {
                nested = Some((5, wire::bytes(v, "AnyValue.array_value")?));
                Val::None
            }
            6 => {
                nested = Some((6, wire::bytes(v, "AnyValue.kvlist_value")?));
                Val::None
            }
            7 => Val::Str(Cow::Owned(hex(wire::bytes(v, "AnyValue.bytes_value")?))),
            _ => continue,
        };
        seen += 1;
    }
    if seen > 1 {
        // A oneof set twice: protobuf merges message members; leave that to Python.
        return Err(punt("AnyValue with more than one value"));
    }
    match nested {
        Some((5, bytes)) => {
            let mut items = Vec::new();
            let mut a = Reader::new(bytes);
            while let Some((n, item)) = a.next_field()? {
                if n == 1 {
                    items.push(any_value(wire::bytes(item, "ArrayValue.values")?, level + 1)?);
                }
            }
            Ok(Val::List(items))
        }
        Some((_, bytes)) => {
            let mut map = OrderedMap::default();
            let mut m = Reader::new(bytes);
            while let Some((n, kv)) = m.next_field()? {
                if n == 1 {
                    let (key, value) = key_value(wire::bytes(kv, "KeyValueList.values")?)?;
                    let value = match value {
                        Some(b) => any_value(b, level + 1)?,
                        None => Val::None,
                    };
                    map.insert(Cow::Borrowed(key), value);
                }
            }
            Ok(Val::Map(map))
        }
        None => Ok(out),
    }
}

/// A ``KeyValue`` message: its key and the bytes of its value (``None``: no value).
fn key_value(buf: &[u8]) -> Result<(&str, Option<&[u8]>), PuntError> {
    let (mut key, mut value, mut values) = ("", None, 0);
    let mut r = Reader::new(buf);
    while let Some((number, v)) = r.next_field()? {
        match number {
            1 => key = wire::string(v, "KeyValue.key")?,
            2 => {
                value = Some(wire::bytes(v, "KeyValue.value")?);
                values += 1;
            }
            _ => {}
        }
    }
    if values > 1 {
        return Err(punt("KeyValue with its value twice"));
    }
    Ok((key, value))
}

/// The primitive kind of a list element (0: not a primitive), as `otlp._primitive_kind`.
fn kind(v: &Val<'_>) -> u8 {
    match v {
        Val::Str(_) => 1,
        Val::Bool(_) => 2,
        Val::Int(_) => 3,
        Val::Float(_) => 4,
        _ => 0,
    }
}

/// `otlp._flatten_into`: dicts and non-homogeneous lists become dotted keys.
fn flatten_into<'a>(out: &mut OrderedMap<'a>, key: Cow<'a, str>, value: Val<'a>) {
    match value {
        Val::Map(map) => {
            for (k, v) in map.entries {
                flatten_into(out, Cow::Owned(format!("{key}.{k}")), v);
            }
        }
        Val::List(items) => {
            if items.is_empty() {
                out.insert(key, Val::List(items));
                return;
            }
            let first = kind(&items[0]);
            if first != 0 && items.iter().all(|v| kind(v) == first) {
                out.insert(key, Val::List(items));
                return;
            }
            for (i, v) in items.into_iter().enumerate() {
                flatten_into(out, Cow::Owned(format!("{key}.{i}")), v);
            }
        }
        Val::None => {}
        scalar => out.insert(key, scalar),
    }
}

/// `otlp.attributes_from_kvs`, over the raw ``KeyValue`` messages of a repeated field.
fn attributes<'a>(kvs: &[&'a [u8]]) -> Result<OrderedMap<'a>, PuntError> {
    let mut out = OrderedMap { entries: Vec::with_capacity(kvs.len()), index: None };
    attributes_into(&mut out, kvs)?;
    Ok(out)
}

/// [`attributes`] into `out` (emptied first), so one map's storage serves many spans.
fn attributes_into<'a>(out: &mut OrderedMap<'a>, kvs: &[&'a [u8]]) -> Result<(), PuntError> {
    out.clear();
    for kv in kvs {
        let (key, value) = key_value(kv)?;
        let Some(value) = value else { continue };
        match any_value(value, 1)? {
            Val::None => {}
            v @ (Val::Str(_) | Val::Int(_) | Val::Float(_) | Val::Bool(_)) => {
                out.insert(Cow::Borrowed(key), v)
            }
            v => flatten_into(out, Cow::Borrowed(key), v),
        }
    }
    Ok(())
}

/// Python's `str.strip()` for ASCII text (the caller punts on anything else).
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c' | '\x1c'..='\x1f'))
}

/// `otlp.parse_trace_state`, in dict order.
fn trace_state(value: &str) -> Result<Vec<(String, String)>, PuntError> {
    let mut out: Vec<(String, String)> = Vec::new();
    if value.is_empty() {
        return Ok(out);
    }
    if !value.is_ascii() {
        return Err(punt("non-ASCII trace_state"));
    }
    for member in value.split(',') {
        let member = py_strip(member);
        if let Some((key, val)) = member.split_once('=') {
            if key.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(k, _)| k == key) {
                Some(entry) => entry.1 = val.to_string(),
                None => out.push((key.to_string(), val.to_string())),
            }
        }
    }
    Ok(out)
}

/// `otlp._sequence_id`: `int(str(raw).strip())` when that is a non-negative integer.
fn sequence_id(raw: &Val<'_>) -> Result<Option<i64>, PuntError> {
    match raw {
        Val::Int(i) => Ok(if *i >= 0 { Some(*i) } else { None }),
        Val::Str(s) => {
            if !s.is_ascii() || s.contains('_') {
                return Err(punt("sequence id string needs Python's int()"));
            }
            let t = py_strip(s);
            let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Ok(None);
            }
            match t.parse::<i64>() {
                Ok(v) => Ok(if v >= 0 { Some(v) } else { None }),
                Err(_) => Err(punt("sequence id beyond 64 bits")),
            }
        }
        // bool, float, list: str() of those is never an integer literal.
        _ => Ok(None),
    }
}

/// `n / 1_000_000_000` correctly rounded, as Python's `int / int` (which is exact, unlike
/// `n as f64 / 1e9` for n above 2**53).
fn div_1e9(n: u64) -> f64 {
    let num = (n as u128) << 64;
    let q = num / 1_000_000_000u128;
    let r = num % 1_000_000_000u128;
    let bits = 128 - q.leading_zeros();
    if bits <= 53 {
        // Not reached for n > 1e12 (q has at least 74 bits); kept for completeness.
        return n as f64 / 1e9;
    }
    let shift = bits - 53;
    let mut m = q >> shift;
    let rest = q & ((1u128 << shift) - 1);
    let half = 1u128 << (shift - 1);
    if rest > half || (rest == half && (r != 0 || m & 1 == 1)) {
        m += 1;
    }
    let exp = shift as i32 - 64;
    (m as f64) * f64::from_bits(((1023 + exp) as u64) << 52)
}

/// `otlp.convert_timestamp` for OTLP's unsigned nanoseconds.
fn timestamp(n: u64) -> Option<f64> {
    if n == 0 {
        None
    } else if n > 1_000_000_000_000 {
        Some(div_1e9(n))
    } else {
        Some(n as f64)
    }
}

fn owner_problem(rollout: Option<&str>, attempt: Option<&str>) -> Option<String> {
    let missing_r = rollout.is_none_or(str::is_empty);
    let missing_a = attempt.is_none_or(str::is_empty);
    match (missing_r, missing_a) {
        (true, true) => Some(format!("missing {ROLLOUT_ID_KEY} and {ATTEMPT_ID_KEY}")),
        (true, false) => Some(format!("missing {ROLLOUT_ID_KEY}")),
        (false, true) => Some(format!("missing {ATTEMPT_ID_KEY}")),
        (false, false) => None,
    }
}

/// `id` as the row keeps it: borrowed from the request body when it was (always, but for an
/// id sent as bytes, whose hex was made here).
fn owned_id<'a>(id: Option<&Cow<'a, str>>) -> Cow<'a, str> {
    id.cloned().unwrap_or_default()
}

/// A string id attribute, `None` when absent; anything but a string goes to Python (`str()`).
fn id_attr<'m, 'a>(attrs: &'m OrderedMap<'a>, key: &str) -> Result<Option<&'m Cow<'a, str>>, PuntError> {
    match attrs.get(key) {
        None => Ok(None),
        Some(Val::Str(s)) => Ok(Some(s)),
        Some(_) => Err(punt("non-string rollout/attempt id")),
    }
}

// ------------------------------------------------------------------------------ JSON

fn write_val(buf: &mut Vec<u8>, v: &Val<'_>) {
    match v {
        Val::Str(s) => write_str(buf, s),
        Val::Bool(true) => buf.extend_from_slice(b"true"),
        Val::Bool(false) => buf.extend_from_slice(b"false"),
        Val::Int(i) => buf.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Val::Float(f) => write_f64(buf, *f),
        Val::List(items) => {
            buf.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                write_val(buf, item);
            }
            buf.push(b']');
        }
        // Not present after flattening.
        Val::Map(_) | Val::None => buf.extend_from_slice(b"null"),
    }
}

fn write_attrs(buf: &mut Vec<u8>, attrs: &OrderedMap<'_>) {
    write_object(buf, attrs.entries.iter().map(|(k, v)| (k, v)), write_val);
}

fn write_trace_state(buf: &mut Vec<u8>, state: &[(String, String)]) {
    write_object(buf, state.iter().map(|(k, v)| (k, v)), |b, v| write_str(b, v));
}

fn write_opt_f64(buf: &mut Vec<u8>, v: Option<f64>) {
    match v {
        Some(f) => write_f64(buf, f),
        None => buf.extend_from_slice(b"null"),
    }
}

fn write_opt_str(buf: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(s) => write_str(buf, s),
        None => buf.extend_from_slice(b"null"),
    }
}

fn write_context(buf: &mut Vec<u8>, trace_id: &str, span_id: &str, remote: bool, state: &[(String, String)]) {
    buf.extend_from_slice(b"{\"trace_id\":");
    write_str(buf, trace_id);
    buf.extend_from_slice(b",\"span_id\":");
    write_str(buf, span_id);
    buf.extend_from_slice(if remote { b",\"is_remote\":true" } else { b",\"is_remote\":false" });
    buf.extend_from_slice(b",\"trace_state\":");
    write_trace_state(buf, state);
    buf.push(b'}');
}

// ------------------------------------------------------------------------------ conversion

/// Decode and convert one OTLP/protobuf export body. `Err` carries a wire error (the body is
/// malformed, or uses something this reader leaves to Python's parser).
///
/// The spans' JSON documents are written one after the other into `docs` (emptied first);
/// each row says where its document lies. Why one buffer: a document per allocation cost
/// ~1 MB of fresh heap per 512-span request, and its page faults and frees were a fifth of the
/// conversion; the caller keeps `docs` from one request to the next.
pub fn convert<'a>(body: &'a [u8], docs: &mut Vec<u8>) -> Result<Outcome<'a>, String> {
    docs.clear();
    match convert_request(body, docs) {
        Ok(outcome) => Ok(outcome),
        Err(PuntError::Value(why)) => Ok(Outcome::Punt(why)),
        Err(PuntError::Wire(e)) => Err(e),
        // Caught for each span in `convert_request`; never reaches here.
        Err(PuntError::TooDeep) => Err("unexpected nesting error".into()),
    }
}

/// The fields of a ``Span`` message the conversion reads, as slices of the body.
#[derive(Default)]
struct SpanView<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    trace_state: &'a str,
    parent_span_id: &'a [u8],
    flags: u32,
    name: &'a str,
    start: u64,
    end: u64,
    attributes: Vec<&'a [u8]>,
    events: Vec<&'a [u8]>,
    links: Vec<&'a [u8]>,
    status: Option<&'a [u8]>,
}

fn span_view(buf: &[u8]) -> Result<SpanView<'_>, PuntError> {
    let mut s = SpanView { attributes: Vec::with_capacity(16), ..SpanView::default() };
    span_view_into(&mut s, buf)?;
    Ok(s)
}

/// [`span_view`] into `s` (reset first), so one view's vectors serve every span of a request.
fn span_view_into<'a>(s: &mut SpanView<'a>, buf: &'a [u8]) -> Result<(), PuntError> {
    let (mut attributes, mut events, mut links) =
        (std::mem::take(&mut s.attributes), std::mem::take(&mut s.events), std::mem::take(&mut s.links));
    attributes.clear();
    events.clear();
    links.clear();
    *s = SpanView { attributes, events, links, ..SpanView::default() };
    let mut r = Reader::new(buf);
    while let Some((number, v)) = r.next_field()? {
        match number {
            1 => s.trace_id = wire::bytes(v, "Span.trace_id")?,
            2 => s.span_id = wire::bytes(v, "Span.span_id")?,
            3 => s.trace_state = wire::string(v, "Span.trace_state")?,
            4 => s.parent_span_id = wire::bytes(v, "Span.parent_span_id")?,
            5 => s.name = wire::string(v, "Span.name")?,
            7 => s.start = wire::fixed64(v, "Span.start_time_unix_nano")?,
            8 => s.end = wire::fixed64(v, "Span.end_time_unix_nano")?,
            9 => s.attributes.push(wire::bytes(v, "Span.attributes")?),
            11 => s.events.push(wire::bytes(v, "Span.events")?),
            13 => s.links.push(wire::bytes(v, "Span.links")?),
            15 => {
                if s.status.is_some() {
                    return Err(punt("Span.status twice"));
                }
                s.status = Some(wire::bytes(v, "Span.status")?);
            }
            16 => s.flags = wire::fixed32(v, "Span.flags")?,
            _ => {}
        }
    }
    Ok(())
}

/// A ``Status``: its code (as the enum's number) and message.
fn status(buf: &[u8]) -> Result<(i32, &str), PuntError> {
    let (mut code, mut message) = (0i32, "");
    let mut r = Reader::new(buf);
    while let Some((number, v)) = r.next_field()? {
        match number {
            2 => message = wire::string(v, "Status.message")?,
            3 => code = wire::varint(v, "Status.code")? as i64 as i32,
            _ => {}
        }
    }
    Ok((code, message))
}

/// Repeated message fields numbered `field` of a message.
fn repeated<'a>(buf: &'a [u8], field: u32, what: &str) -> Result<Vec<&'a [u8]>, PuntError> {
    let mut out = Vec::new();
    let mut r = Reader::new(buf);
    while let Some((number, v)) = r.next_field()? {
        if number == field {
            out.push(wire::bytes(v, what)?);
        }
    }
    Ok(out)
}

fn write_event(doc: &mut Vec<u8>, buf: &[u8]) -> Result<(), PuntError> {
    let (mut time, mut name, mut attrs) = (0u64, "", Vec::new());
    let mut r = Reader::new(buf);
    while let Some((number, v)) = r.next_field()? {
        match number {
            1 => time = wire::fixed64(v, "Event.time_unix_nano")?,
            2 => name = wire::string(v, "Event.name")?,
            3 => attrs.push(wire::bytes(v, "Event.attributes")?),
            _ => {}
        }
    }
    doc.extend_from_slice(b"{\"name\":");
    write_str(doc, name);
    doc.extend_from_slice(b",\"attributes\":");
    write_attrs(doc, &attributes(&attrs)?);
    doc.extend_from_slice(b",\"timestamp\":");
    write_opt_f64(doc, timestamp(time));
    doc.push(b'}');
    Ok(())
}

fn write_link(doc: &mut Vec<u8>, buf: &[u8]) -> Result<(), PuntError> {
    let (mut trace_id, mut span_id, mut state, mut flags) = (&b""[..], &b""[..], "", 0u32);
    let mut attrs = Vec::new();
    let mut r = Reader::new(buf);
    while let Some((number, v)) = r.next_field()? {
        match number {
            1 => trace_id = wire::bytes(v, "Link.trace_id")?,
            2 => span_id = wire::bytes(v, "Link.span_id")?,
            3 => state = wire::string(v, "Link.trace_state")?,
            4 => attrs.push(wire::bytes(v, "Link.attributes")?),
            6 => flags = wire::fixed32(v, "Link.flags")?,
            _ => {}
        }
    }
    let remote = flags & HAS_IS_REMOTE != 0 && flags & IS_REMOTE != 0;
    doc.extend_from_slice(b"{\"context\":");
    write_context(
        doc,
        &rjust_zero(hex(trace_id), 32),
        &rjust_zero(hex(span_id), 16),
        remote,
        &trace_state(state)?,
    );
    doc.extend_from_slice(b",\"attributes\":");
    let link_attrs = attributes(&attrs)?;
    if link_attrs.is_empty() {
        doc.extend_from_slice(b"null");
    } else {
        write_attrs(doc, &link_attrs);
    }
    doc.push(b'}');
    Ok(())
}

/// One ``ResourceSpans``: its resource's attributes, schema URL and spans.
struct ResourceView<'a> {
    attributes: Vec<&'a [u8]>,
    schema_url: &'a str,
    spans: Vec<&'a [u8]>,
}

fn resource_view(buf: &[u8]) -> Result<ResourceView<'_>, PuntError> {
    let mut out = ResourceView { attributes: Vec::new(), schema_url: "", spans: Vec::new() };
    let mut resources = 0;
    let mut r = Reader::new(buf);
    while let Some((number, v)) = r.next_field()? {
        match number {
            1 => {
                resources += 1;
                out.attributes = repeated(wire::bytes(v, "ResourceSpans.resource")?, 1, "Resource.attributes")?;
            }
            2 => out.spans.extend(repeated(wire::bytes(v, "ResourceSpans.scope_spans")?, 2, "ScopeSpans.spans")?),
            3 => out.schema_url = wire::string(v, "ResourceSpans.schema_url")?,
            _ => {}
        }
    }
    if resources > 1 {
        return Err(punt("ResourceSpans.resource twice"));
    }
    Ok(out)
}

fn convert_request<'a>(body: &'a [u8], docs: &mut Vec<u8>) -> Result<Outcome<'a>, PuntError> {
    let resources = repeated(body, 1, "ExportTraceServiceRequest.resource_spans")?
        .into_iter()
        .map(resource_view)
        .collect::<Result<Vec<_>, _>>()?;
    let total_spans: usize = resources.iter().map(|r| r.spans.len()).sum();
    // A span's document is about twice its protobuf size, plus the resource's JSON.
    let per_span = 2 * body.len() / total_spans.max(1) + 256;
    let mut rows = Vec::with_capacity(total_spans);
    let mut rejected = Vec::new();
    let mut ps = SpanView::default();
    let mut attrs = OrderedMap::default();
    for resource in &resources {
        let resource_attrs = match attributes(&resource.attributes) {
            Ok(attrs) => attrs,
            Err(PuntError::TooDeep) => {
                // Every span of this resource carries the value: each is rejected.
                for raw_span in &resource.spans {
                    let ps = span_view(raw_span)?;
                    rejected.push(Rejected {
                        span_id: hex(ps.span_id),
                        name: ps.name.to_string(),
                        reason: too_deep_reason("resource"),
                    });
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut resource_json = Vec::with_capacity(128);
        resource_json.extend_from_slice(b"{\"attributes\":");
        write_attrs(&mut resource_json, &resource_attrs);
        resource_json.extend_from_slice(b",\"schema_url\":");
        write_str(&mut resource_json, resource.schema_url);
        resource_json.push(b'}');
        let res_rollout = id_attr(&resource_attrs, ROLLOUT_ID_KEY);
        let res_attempt = id_attr(&resource_attrs, ATTEMPT_ID_KEY);
        let res_seq = resource_attrs.get(SEQUENCE_ID_KEY);
        docs.reserve(resource.spans.len() * (per_span + resource_json.len()));

        for raw_span in &resource.spans {
            span_view_into(&mut ps, raw_span)?;
            match attributes_into(&mut attrs, &ps.attributes) {
                Ok(()) => {}
                Err(PuntError::TooDeep) => {
                    rejected.push(Rejected {
                        span_id: hex(ps.span_id),
                        name: ps.name.to_string(),
                        reason: too_deep_reason("span"),
                    });
                    continue;
                }
                Err(e) => return Err(e),
            };
            let rollout = match id_attr(&attrs, ROLLOUT_ID_KEY)? {
                Some(r) => Some(r),
                None => *res_rollout.as_ref().map_err(|_| punt("non-string rollout/attempt id"))?,
            };
            let attempt = match id_attr(&attrs, ATTEMPT_ID_KEY)? {
                Some(a) => Some(a),
                None => *res_attempt.as_ref().map_err(|_| punt("non-string rollout/attempt id"))?,
            };
            let seq_raw = attrs.get(SEQUENCE_ID_KEY).or(res_seq);

            let (raw_trace, raw_span_id, raw_parent) = (ps.trace_id, ps.span_id, ps.parent_span_id);
            let trace_ok = raw_trace.len() == 16 && raw_trace.iter().any(|b| *b != 0);
            let span_ok = raw_span_id.len() == 8 && raw_span_id.iter().any(|b| *b != 0);
            let parent_ok = raw_parent.len() == 8 && raw_parent.iter().any(|b| *b != 0);
            let problem = if let Some(p) = owner_problem(rollout.map(|c| c.as_ref()), attempt.map(|c| c.as_ref())) {
                Some(p)
            } else if !trace_ok {
                Some(format!("invalid trace_id '{}' (need 16 non-zero bytes)", hex(raw_trace)))
            } else if !span_ok {
                Some(format!("invalid span_id '{}' (need 8 non-zero bytes)", hex(raw_span_id)))
            } else if !raw_parent.is_empty() && !parent_ok {
                Some(format!("invalid parent_span_id '{}' (need 8 bytes)", hex(raw_parent)))
            } else {
                None
            };
            if let Some(reason) = problem {
                rejected.push(Rejected { span_id: hex(raw_span_id), name: ps.name.to_string(), reason });
                continue;
            }
            // Owned ids for the row (a borrow of the body, unless an id came from bytes), as
            // `attrs` is reused by the next span.
            let (rollout_id, attempt_id) = (owned_id(rollout), owned_id(attempt));
            let sequence_id = match seq_raw {
                None => None,
                Some(v) => sequence_id(v)?,
            };
            let trace_hex = HexId::<32>::of(raw_trace);
            let span_hex = HexId::<16>::of(raw_span_id);
            let parent_hex = if parent_ok { Some(HexId::<16>::of(raw_parent)) } else { None };
            let (trace_id, span_id) = (trace_hex.as_str(), span_hex.as_str());
            let parent_id = parent_hex.as_ref().map(HexId::as_str);
            let (code, description) = match ps.status {
                Some(b) => {
                    let (c, message) = status(b)?;
                    (
                        if (0..3).contains(&c) { STATUS_CODES[c as usize] } else { "UNSET" },
                        if message.is_empty() { None } else { Some(message) },
                    )
                }
                None => ("UNSET", None),
            };
            let state = trace_state(ps.trace_state)?;
            let start = timestamp(ps.start);
            let end = timestamp(ps.end);

            let doc_start = docs.len();
            docs.extend_from_slice(b"{\"rollout_id\":");
            write_str(docs, &rollout_id);
            docs.extend_from_slice(b",\"attempt_id\":");
            write_str(docs, &attempt_id);
            docs.extend_from_slice(b",\"sequence_id\":");
            match sequence_id {
                Some(s) => docs.extend_from_slice(itoa::Buffer::new().format(s).as_bytes()),
                None => docs.extend_from_slice(b"null"),
            }
            docs.extend_from_slice(b",\"trace_id\":");
            write_str(docs, trace_id);
            docs.extend_from_slice(b",\"span_id\":");
            write_str(docs, span_id);
            docs.extend_from_slice(b",\"parent_id\":");
            write_opt_str(docs, parent_id);
            docs.extend_from_slice(b",\"name\":");
            write_str(docs, ps.name);
            docs.extend_from_slice(b",\"status\":{\"status_code\":");
            write_str(docs, code);
            docs.extend_from_slice(b",\"description\":");
            write_opt_str(docs, description);
            docs.extend_from_slice(b"},\"attributes\":");
            write_attrs(docs, &attrs);
            docs.extend_from_slice(b",\"events\":[");
            let mut deep = None;
            for (i, e) in ps.events.iter().enumerate() {
                if i > 0 {
                    docs.push(b',');
                }
                if let Err(err) = write_event(docs, e) {
                    deep = Some((err, "event"));
                    break;
                }
            }
            docs.extend_from_slice(b"],\"links\":[");
            for (i, link) in ps.links.iter().enumerate() {
                if deep.is_some() {
                    break;
                }
                if i > 0 {
                    docs.push(b',');
                }
                if let Err(err) = write_link(docs, link) {
                    deep = Some((err, "link"));
                }
            }
            match deep {
                None => {}
                Some((PuntError::TooDeep, place)) => {
                    docs.truncate(doc_start);
                    rejected.push(Rejected {
                        span_id: span_id.to_string(),
                        name: ps.name.to_string(),
                        reason: too_deep_reason(place),
                    });
                    continue;
                }
                Some((err, _)) => return Err(err),
            }
            docs.extend_from_slice(b"],\"start_time\":");
            write_opt_f64(docs, start);
            docs.extend_from_slice(b",\"end_time\":");
            write_opt_f64(docs, end);
            docs.extend_from_slice(b",\"context\":");
            write_context(docs, trace_id, span_id, false, &state);
            docs.extend_from_slice(b",\"parent\":");
            match &parent_id {
                Some(p) => {
                    let remote = ps.flags & HAS_IS_REMOTE != 0 && ps.flags & IS_REMOTE != 0;
                    write_context(docs, trace_id, p, remote, &[]);
                }
                None => docs.extend_from_slice(b"null"),
            }
            docs.extend_from_slice(b",\"resource\":");
            docs.extend_from_slice(&resource_json);
            docs.push(b'}');

            rows.push(Row {
                rollout_id,
                attempt_id,
                span_id: span_hex,
                trace_id: trace_hex,
                parent_id: parent_hex,
                name: ps.name,
                start_time: start,
                end_time: end,
                status_code: code,
                sequence_id,
                doc: doc_start..docs.len(),
            });
        }
    }
    Ok(Outcome::Rows(rows, rejected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn division_is_correctly_rounded_like_python() {
        // Python: 1764117105123456789 / 1_000_000_000 == 1764117105.1234567
        assert_eq!(div_1e9(1_764_117_105_123_456_789), 1764117105.1234567);
        assert_eq!(div_1e9(1_000_000_000_001), 1000.000000001);
        assert_eq!(div_1e9(u64::MAX), 18446744073.709553);
    }

    #[test]
    fn sequence_ids_follow_int_of_str() {
        let s = |t: &'static str| Val::Str(Cow::Borrowed(t));
        assert_eq!(sequence_id(&s(" 12 ")).ok().flatten(), Some(12));
        assert_eq!(sequence_id(&s("-3")).ok().flatten(), None);
        assert_eq!(sequence_id(&s("+5")).ok().flatten(), Some(5));
        assert_eq!(sequence_id(&s("1.5")).ok().flatten(), None);
        assert!(sequence_id(&s("1_000")).is_err());
        assert_eq!(sequence_id(&Val::Bool(true)).ok().flatten(), None);
    }

    /// An ``AnyValue`` holding ``inner`` as its kvlist (one entry, key "k") or array.
    fn wrap(inner: &[u8], kvlist: bool) -> Vec<u8> {
        fn field(number: u8, body: &[u8]) -> Vec<u8> {
            let mut out = vec![(number << 3) | 2];
            let mut n = body.len();
            while n >= 0x80 {
                out.push((n as u8) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
            out.extend_from_slice(body);
            out
        }
        if kvlist {
            let mut kv = field(1, b"k");
            kv.extend(field(2, inner));
            field(6, &field(1, &kv))
        } else {
            field(5, &field(1, inner))
        }
    }

    fn nested(levels: usize, kvlist: bool) -> Vec<u8> {
        let mut v = vec![0x0a, 0x01, b'x']; // string_value "x"
        for _ in 1..levels {
            v = wrap(&v, kvlist);
        }
        v
    }

    #[test]
    fn nesting_is_bounded_without_deep_recursion() {
        for kvlist in [true, false] {
            assert!(any_value(&nested(MAX_NESTING_DEPTH, kvlist), 1).is_ok());
            let over = nested(MAX_NESTING_DEPTH + 1, kvlist);
            assert!(matches!(any_value(&over, 1), Err(PuntError::TooDeep)));
            // What crashed the server: 20,000 levels, on a small thread stack.
            let deep = nested(20_000, kvlist);
            let handle = std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || matches!(any_value(&deep, 1), Err(PuntError::TooDeep)))
                .unwrap();
            assert!(handle.join().unwrap());
        }
    }

    #[test]
    fn trace_state_is_a_dict() {
        let s = trace_state(" a=1 ,b=2,=x,c,a=3").ok().unwrap();
        let _ = punt("unused");
        assert_eq!(s, vec![("a".into(), "3".into()), ("b".into(), "2".into())]);
    }
}
