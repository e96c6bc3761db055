"""docs/troubleshooting.md lists every user-facing error message of the code, and no other."""

from __future__ import annotations

import re

from tests.docs.conftest import substitutions
from tests.docs.error_messages import (
    INTERNAL,
    USER_FACING,
    exception_classes,
    messages,
    unreadable,
)
from tests.docs.harness import REPO, Guide, marked_blocks, run_guide

DOC = REPO / "docs" / "troubleshooting.md"
ENTRY = re.compile(r"^- ``(?P<text>.+?)``: (?P<meaning>.+)$")


def _documented() -> dict[str, str]:
    section = DOC.read_text(encoding="utf-8").split("## Every error message", 1)[1]
    return {m["text"]: m["meaning"] for m in map(ENTRY.match, section.splitlines()) if m}


def test_every_user_facing_error_message_is_explained():
    documented = _documented()
    missing = [
        f"{m.where}: {m.error}: ``{m.text}``" for m in messages() if m.text not in documented
    ]
    assert not missing, (
        "error messages missing from docs/troubleshooting.md (add '- ``text``: meaning'):\n"
        + "\n".join(missing)
    )


def test_no_stale_or_empty_entries():
    code = {m.text for m in messages()}
    documented = _documented()
    stale = sorted(set(documented) - code)
    assert not stale, (
        "docs/troubleshooting.md lists messages the code no longer has:\n" + "\n".join(stale)
    )
    empty = [t for t, meaning in documented.items() if len(meaning.split()) < 4]
    assert not empty, f"entries without a meaning: {empty}"


def test_the_scan_finds_the_messages_it_should():
    """Guards the scanner itself: known messages of several kinds are found, f-strings too."""
    texts = {m.text for m in messages()}
    assert "--tls-cert and --tls-key go together: give both, or neither" in texts  # SystemExit
    assert "prompt template needs variable {…}; the input provides {…}" in texts  # f-string
    assert "{…}: unknown step kind {…}; allowed: {…}" in texts
    assert len(texts) > 100
    # wrappers whose message is built elsewhere are few and described in "Wrapping errors"
    assert len(unreadable()) < 35


def test_troubleshooting_blocks(arith_model, tmp_path):
    guide = Guide.create(tmp_path, substitutions(arith_model.base_url))
    out = run_guide(guide, marked_blocks(DOC))
    assert "unknown step kind 'tsk'" in out
    assert ".otlp" in out  # the run's spans waited in the spool ...
    assert "spool drained: True" in out  # ... and reached the store once it was up
    assert "resources qa-own: 1 runs" in out


def test_every_exception_class_is_classified():
    """A new exception class must be listed as user-facing (its messages then need entries)
    or internal (with a reason), so the catalogue cannot silently miss a kind of error."""
    unclassified = {
        name: where
        for name, where in exception_classes().items()
        if name not in USER_FACING and name not in INTERNAL
    }
    assert not unclassified, (
        f"classify in tests/docs/error_messages.py (USER_FACING or INTERNAL): {unclassified}"
    )
