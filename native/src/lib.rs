//! `lightspan.store.intake._otlp_native`: the OTLP/protobuf intake's conversion in Rust.
//!
//! Why: converting a span in Python (protobuf field access, dicts, JSON) costs 20-40 us on the
//! machines we measure on, which caps one store process at a few ten thousand spans per second;
//! this does the same work in ~3 us (realistic spans). `lightspan/store/intake/otlp.py` remains the
//! specification and the fallback (`lightspan.store.intake.convert.convert` uses this module when
//! it is built).

mod conversion;
mod id_set;
mod json;
mod wire;

use std::cell::RefCell;
use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyList, PyString, PyTuple};

pub use conversion::{convert as convert_body, Outcome, Rejected, Row, MAX_NESTING_DEPTH};

/// Python strings made for a few row fields, reused while a value repeats in the batch.
///
/// Why a few per field, not only the last one: a runner's batch interleaves the spans of
/// several attempts (8 in the benchmark's realistic workload), so the rollout, attempt, trace
/// and name of consecutive spans differ while the batch holds only a handful of each.
#[derive(Default)]
struct StringCache<'py> {
    seen: [Vec<(String, Bound<'py, PyString>)>; 5],
}

impl<'py> StringCache<'py> {
    const PER_FIELD: usize = 16; // beyond it (a batch of many traces), new strings as before

    fn get(&mut self, py: Python<'py>, field: usize, value: &str) -> Bound<'py, PyString> {
        let seen = &mut self.seen[field];
        if let Some((_, obj)) = seen.iter().find(|(text, _)| text == value) {
            return obj.clone();
        }
        let obj = PyString::new(py, value);
        if seen.len() < Self::PER_FIELD {
            seen.push((value.to_string(), obj.clone()));
        }
        obj
    }
}

thread_local! {
    /// The documents buffer of [`conversion::convert`], kept per thread from one request to
    /// the next (its pages stay mapped: see there).
    static DOCS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The most a thread keeps of its documents buffer between requests (a rare huge request
/// should not hold its memory for the life of the server).
const DOCS_KEPT: usize = 16 << 20;

/// Convert an ``ExportTraceServiceRequest`` body.
///
/// Returns ``(rows, rejected, groups, clean)``: each row a tuple ``(rollout_id, attempt_id,
/// span_id, trace_id, parent_id, name, start_time, end_time, status_code, sequence_id, doc)``
/// with ``doc`` the span's JSON (bytes; ``"sequence_id":null`` when the store must issue one),
/// each rejection ``(span_id_hex, name, reason)``; ``groups`` the rows per attempt, what
/// ``span_row.group_rows`` computes: ``(rollout_id, attempt_id, indices, pending,
/// max_carried)`` in the order the attempts first appear, ``clean`` whether every row names
/// its rollout and attempt and no (rollout, attempt, span id) comes twice. Returns ``None`` when the batch needs the Python converter
/// (values whose conversion follows Python's ``str()``/``int()``). Raises ``ValueError`` for a
/// body that is not a valid request.
#[pyfunction]
fn convert<'py>(py: Python<'py>, body: &[u8]) -> PyResult<Option<Bound<'py, PyTuple>>> {
    DOCS.with(|cell| {
        // A thread converting (the GIL released) cannot enter again: the borrow always succeeds.
        let mut docs = cell.try_borrow_mut().map_err(|_| PyValueError::new_err("convert: re-entered"))?;
        let result = rows_to_python(py, body, &mut docs);
        if docs.capacity() > DOCS_KEPT {
            *docs = Vec::new();
        }
        result
    })
}

fn rows_to_python<'py>(
    py: Python<'py>,
    body: &[u8],
    docs: &mut Vec<u8>,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let outcome = py.detach(|| conversion::convert(body, docs)).map_err(PyValueError::new_err)?;
    let (rows, rejected) = match outcome {
        Outcome::Rows(rows, rejected) => (rows, rejected),
        Outcome::Punt(_) => return Ok(None),
    };
    // Values repeated across a batch (rollout, attempt, trace, name, status) become one Python
    // string each, not one per span: fewer allocations, and equal keys are the same object.
    let mut strings = StringCache::default();
    let out_rows = PyList::empty(py);
    let groups = group_rows(&rows);
    for r in rows {
        let doc = PyBytes::new(py, &docs[r.doc.clone()]);
        let parent = r.parent_id.map(|p| PyString::new(py, p.as_str()));
        let item = (
            strings.get(py, 0, &r.rollout_id),
            strings.get(py, 1, &r.attempt_id),
            PyString::new(py, r.span_id.as_str()),
            strings.get(py, 2, r.trace_id.as_str()),
            parent,
            strings.get(py, 3, r.name),
            r.start_time,
            r.end_time,
            strings.get(py, 4, r.status_code),
            r.sequence_id,
            doc,
        )
            .into_pyobject(py)?;
        out_rows.append(item)?;
    }
    let out_rejected = PyList::empty(py);
    for j in rejected {
        out_rejected.append((j.span_id, j.name, j.reason).into_pyobject(py)?)?;
    }
    let out_groups = PyList::empty(py);
    for g in groups.groups {
        let item = (
            strings.get(py, 0, &g.rollout_id),
            strings.get(py, 1, &g.attempt_id),
            PyList::new(py, &g.indices)?,
            g.pending,
            g.max_carried,
        );
        out_groups.append(item.into_pyobject(py)?)?;
    }
    let clean = PyBool::new(py, groups.clean).to_owned();
    Ok(Some(PyTuple::new(
        py,
        [out_rows.into_any(), out_rejected.into_any(), out_groups.into_any(), clean.into_any()],
    )?))
}

/// The rows of one attempt (see [`group_rows`]).
struct Group {
    rollout_id: String,
    attempt_id: String,
    indices: Vec<usize>,
    /// Rows whose sequence id the store issues.
    pending: usize,
    /// The highest sequence id the other rows carry (`None`: every row is pending).
    max_carried: Option<i64>,
}

struct Groups {
    groups: Vec<Group>,
    clean: bool,
}

/// The batch's rows per attempt, in the order the attempts first appear, and whether it is
/// clean (every row owned, no span twice in an attempt): one pass here instead of the store's
/// Python passes over every span (`span_row.group_rows` is the same in Python).
fn group_rows(rows: &[Row<'_>]) -> Groups {
    let mut at: HashMap<(&str, &str), usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    // (group, span id): a span twice in an attempt shows as equal neighbours once sorted
    // (cheaper than hashing every span id, and as safe against chosen ids).
    let mut keys: Vec<(usize, [u8; 16])> = Vec::with_capacity(rows.len());
    let mut clean = true;
    for (i, r) in rows.iter().enumerate() {
        let (rollout, attempt) = (r.rollout_id.as_ref(), r.attempt_id.as_ref());
        let g = *at.entry((rollout, attempt)).or_insert_with(|| {
            groups.push(Group {
                rollout_id: rollout.to_string(),
                attempt_id: attempt.to_string(),
                indices: Vec::new(),
                pending: 0,
                max_carried: None,
            });
            groups.len() - 1
        });
        clean &= !rollout.is_empty() && !attempt.is_empty();
        keys.push((g, r.span_id.0));
        let group = &mut groups[g];
        group.indices.push(i);
        match r.sequence_id {
            None => group.pending += 1,
            Some(seq) => group.max_carried = Some(group.max_carried.map_or(seq, |m| m.max(seq))),
        }
    }
    if clean {
        keys.sort_unstable();
        clean = keys.windows(2).all(|w| w[0] != w[1]);
    }
    Groups { groups, clean }
}

/// Why the Python converter must take a batch, or ``None`` when this module converts it (for
/// tests and diagnostics).
#[pyfunction]
fn punt_reason(py: Python<'_>, body: &[u8]) -> PyResult<Option<&'static str>> {
    let mut docs = Vec::new();
    match py.detach(|| conversion::convert(body, &mut docs)).map_err(PyValueError::new_err)? {
        Outcome::Punt(why) => Ok(Some(why)),
        Outcome::Rows(..) => Ok(None),
    }
}

/// A chunk's documents and its range of sequence ids, in one pass over its rows (``SpanRow``
/// objects): ``(docs, seq_lo, seq_hi, ordered)``, ``docs`` the documents joined by newlines with
/// the sequence id the store issued spliced into each that carries the ``"sequence_id":null``
/// placeholder (a row whose ``sequence_id_pending`` is set), ``ordered`` whether the ids ascend.
///
/// What ``span_row.chunk_docs`` computes in Python, without a Python list per field. Raises
/// ``OverflowError`` for a sequence id beyond 64 bits (the caller then takes the Python path).
#[pyfunction]
fn chunk_docs<'py>(py: Python<'py>, rows: &Bound<'py, PyList>) -> PyResult<(Bound<'py, PyBytes>, i64, i64, bool)> {
    const PLACEHOLDER: &[u8] = b"\"sequence_id\":null";
    if rows.is_empty() {
        return Err(PyValueError::new_err("chunk_docs: a chunk holds at least one span"));
    }
    let mut out: Vec<u8> = Vec::new();
    let (mut lo, mut hi, mut ordered, mut prev) = (i64::MAX, i64::MIN, true, i64::MIN);
    for (i, row) in rows.iter().enumerate() {
        let doc_obj = row.getattr(intern!(py, "_doc"))?;
        let doc = doc_obj.cast::<PyBytes>()?.as_bytes();
        let seq: i64 = row.getattr(intern!(py, "sequence_id"))?.extract()?;
        let pending = row.getattr(intern!(py, "sequence_id_pending"))?.is_truthy()?;
        (lo, hi) = (lo.min(seq), hi.max(seq));
        ordered &= prev <= seq;
        prev = seq;
        if i == 0 {
            out.reserve(doc.len() * rows.len() + rows.len() * 21);
        } else {
            out.push(b'\n');
        }
        let at = if pending { doc.windows(PLACEHOLDER.len()).position(|w| w == PLACEHOLDER) } else { None };
        match at {
            Some(at) => {
                out.extend_from_slice(&doc[..at]);
                out.extend_from_slice(b"\"sequence_id\":");
                out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
                out.extend_from_slice(&doc[at + PLACEHOLDER.len()..]);
            }
            None => out.extend_from_slice(doc),
        }
    }
    Ok((PyBytes::new(py, &out), lo, hi, ordered))
}

#[pymodule]
fn _otlp_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(convert, m)?)?;
    m.add_function(wrap_pyfunction!(chunk_docs, m)?)?;
    m.add_function(wrap_pyfunction!(punt_reason, m)?)?;
    m.add_class::<id_set::SpanIdSet>()?;
    m.add("MAX_NESTING_DEPTH", conversion::MAX_NESTING_DEPTH)?;
    Ok(())
}
