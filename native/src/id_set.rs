//! `SpanIdSet`: the span ids of one attempt, for the SQL backends' duplicate check
//! (`lightspan.store.backends.span_chunks.SpanKeyCache`).
//!
//! Why: in a Python `set` a 16-character span id costs ~115 bytes (the string object and the
//! set's slots), so the cache's default bound of 250,000 ids (~30 MB) was reached by one
//! training step of ~250 rollouts of ~1,000 spans, and past the bound ingestion fell 13-14x
//! (the attempts in flight evict each other and every batch re-reads its attempts' ids). An
//! OTLP span id is 8 bytes written as 16 lowercase hex digits: kept as a `u64` in a hash set it
//! costs ~10-20 bytes, so the same memory holds ~8x the ids. Any other id (another length,
//! upper case: a different string, so a different span) is kept as a string beside them.

use std::collections::HashSet;

use pyo3::prelude::*;
use pyo3::types::PyString;

/// The 16 lowercase hex digits of an OTLP span id as a number; `None` for any other text.
fn hex_id(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 {
        return None;
    }
    let mut value: u64 = 0;
    for &b in bytes {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        value = (value << 4) | u64::from(digit);
    }
    Some(value)
}

/// A set of span ids with `update`, `in` and `len` (what the duplicate check uses of a set).
///
/// `HashSet`'s default hasher is keyed per process, so ids chosen by a client cannot be made
/// to collide.
#[pyclass(module = "lightspan.store.intake._otlp_native")]
#[derive(Default)]
pub struct SpanIdSet {
    hex: HashSet<u64>,
    other: HashSet<String>,
}

impl SpanIdSet {
    fn insert(&mut self, text: &str) {
        match hex_id(text) {
            Some(id) => {
                self.hex.insert(id);
            }
            None => {
                if !self.other.contains(text) {
                    self.other.insert(text.to_owned());
                }
            }
        }
    }

    fn has(&self, text: &str) -> bool {
        match hex_id(text) {
            Some(id) => self.hex.contains(&id),
            None => self.other.contains(text),
        }
    }
}

#[pymethods]
impl SpanIdSet {
    #[new]
    #[pyo3(signature = (ids=None))]
    fn new(ids: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let mut set = Self::default();
        if let Some(ids) = ids {
            set.update(ids)?;
        }
        Ok(set)
    }

    /// Add every id of an iterable of strings.
    fn update(&mut self, ids: &Bound<'_, PyAny>) -> PyResult<()> {
        for item in ids.try_iter()? {
            let item = item?;
            self.insert(item.cast::<PyString>()?.to_str()?);
        }
        Ok(())
    }

    fn __contains__(&self, id: &Bound<'_, PyAny>) -> bool {
        // A non-string is never a span id (as `5 in {"5"}` is False).
        match id.cast::<PyString>() {
            Ok(text) => text.to_str().map(|t| self.has(t)).unwrap_or(false),
            Err(_) => false,
        }
    }

    fn __len__(&self) -> usize {
        self.hex.len() + self.other.len()
    }

    /// The ids as Python strings (for tests and debugging; the check never lists them).
    fn to_set(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let out = pyo3::types::PySet::empty(py)?;
        for id in &self.hex {
            out.add(format!("{id:016x}"))?;
        }
        for id in &self.other {
            out.add(id)?;
        }
        Ok(out.into_any().unbind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_round_trip_and_other_texts_stay_strings() {
        assert_eq!(hex_id("00000000000000ff"), Some(255));
        assert_eq!(hex_id("ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(hex_id("00000000000000FF"), None); // upper case: another string
        assert_eq!(hex_id("0000000000000ff"), None); // 15 digits
        assert_eq!(hex_id("s1"), None);
        let mut set = SpanIdSet::default();
        for id in ["00000000000000ff", "00000000000000FF", "s1", "s1", "00000000000000ff"] {
            set.insert(id);
        }
        assert_eq!(set.hex.len() + set.other.len(), 3);
        assert!(set.has("00000000000000ff") && set.has("00000000000000FF") && set.has("s1"));
        assert!(!set.has("00000000000000fe") && !set.has("s2"));
    }
}
