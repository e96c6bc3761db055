"""The error messages lightspan can show a user, read from the source, for troubleshooting.md.

Why from the source: docs/troubleshooting.md promises every user-facing error message with its
meaning; a test (``test_troubleshooting.py``) compares that list with what this module finds,
so a new or reworded message fails the build until the guide says what it means.

What counts: ``raise C(<literal or f-string>, ...)`` in ``src/lightspan/`` where ``C`` is one
of ``USER_FACING``, and the message a ``USER_FACING`` class formats itself in its
``super().__init__(...)`` (errors that reach a person: command-line messages, run results, HTTP
answers, exceptions of the public API). ``ValueError``/``TypeError``/``RuntimeError`` raised
for programming mistakes are not listed. An f-string's values become ``{…}``; a message built
elsewhere (a variable) cannot be read and is reported by ``unreadable()`` instead.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "lightspan"

USER_FACING = {
    # configuration and workflow definitions
    "ConfigError",
    "WorkflowDefinitionError",
    "ResourceError",
    "EvaluationError",
    "LLMCallError",
    "InputError",
    "WorkflowRolloutError",
    # command lines (printed and exit 1/2)
    "SystemExit",
    # local model
    "ServerStartError",
    "ModelFetchError",
    # exporter, store, client
    "SpoolError",
    "SendError",
    "HttpError",
    "InvalidRequestError",
    "NotFoundError",
    "PayloadTooLarge",
    "BodyTooDeep",
    "OtlpDecodeError",
    "StoreClientError",
    "StoreUnavailableError",
    "RemoteNotFoundError",
    "RemoteInvalidRequestError",
    "SpanRowError",
    "DashboardFetchError",
    # local model, engine (raised by the loader / run results)
    "UnknownModelError",
    "ModelNotFetchedError",
    "ChecksumMismatchError",
    "StepFailed",
    "StepTimeout",
    "JoinFailed",
    "IntegerOutOfRange",
    # trainer
    "TaskFileError",
    "PublishError",
    "OptimizerUnavailable",
    "BudgetExhausted",
}


INTERNAL = {
    # control flow or programming errors, never shown as such to a person
    "_Stop": "the runner's internal stop signal",
    "ExchangeUnsupported": "the runner falls back to the v0.3 calls (agl store)",
    "UpdateRefused": "carries the store's own error, which the runner logs",
    "_Unscannable": "the OTLP fast path falls back to the full decoder",
    "_Fallback": "the exporter's OTLP encoder hands a span to the SDK's encoder",
    "NestingTooDeep": "re-raised as OtlpDecodeError / BodyTooDeep with a message",
    # base classes: their subclasses carry the messages
    "EngineError": "base class",
    "StoreError": "base class",
}


@dataclass(frozen=True)
class Message:
    error: str
    text: str
    where: str


def _text(node: ast.expr) -> str | None:
    """A literal message: constants kept, interpolated values as ``{…}``; else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{…}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        return left + right if left is not None and right is not None else None
    return None


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _raises(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    return [
        (_name(node.exc.func), node.exc)
        for node in ast.walk(tree)
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
    ]


def _message_arg(call: ast.Call) -> ast.expr | None:
    """The message argument: the first string-like positional one (``HttpError(400, msg)``)."""
    for arg in call.args:
        if _text(arg) is not None:
            return arg
    for kw in call.keywords:
        if kw.arg in ("message", "msg", "detail") and _text(kw.value) is not None:
            return kw.value
    return call.args[0] if call.args else None


def _own_messages(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """``super().__init__(<message>)`` in user-facing classes that format their own message
    (``StepFailed(step, attempts, error)`` -> ``step {…} failed after {…} attempt(s): {…}``)."""
    found = []
    for cls in ast.walk(tree):
        if not isinstance(cls, ast.ClassDef) or cls.name not in USER_FACING:
            continue
        for node in ast.walk(cls):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "__init__"
                and isinstance(node.func.value, ast.Call)
                and _name(node.func.value.func) == "super"
                and node.args
            ):
                found.append((cls.name, node))
    return found


def _scan() -> tuple[list[Message], list[str]]:
    found: list[Message] = []
    unreadable: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parents[1]).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name, call in _raises(tree) + _own_messages(tree):
            if name not in USER_FACING:
                continue
            arg = _message_arg(call)
            text = _text(arg) if arg is not None else None
            where = f"{rel}:{call.lineno}"
            if text is None:
                if arg is not None:
                    unreadable.append(f"{where}: {name}({ast.unparse(arg)})")
                continue
            found.append(Message(name, " ".join(text.split()), where))
    return found, unreadable


def informative(text: str) -> bool:
    """Whether a message says something by itself: two words outside its ``{…}`` values.

    ``{…}: {…}`` (a wrapper adding a prefix) or a bare operation name (``export_otlp``, the
    store client's errors format it themselves) is not listed; its class is described instead.
    """
    words = [w for w in text.replace("{…}", " ").split() if re.search(r"[A-Za-z]{2,}", w)]
    return len(words) >= 2


def messages() -> list[Message]:
    """Every readable, informative user-facing message, in file order (duplicates kept)."""
    return [m for m in _scan()[0] if informative(m.text)]


def exception_classes() -> dict[str, str]:
    """Every exception class defined in ``src/lightspan/`` (name -> ``file:line``): each must be
    in ``USER_FACING`` or ``INTERNAL``, so a new one is classified when it is added."""
    found: dict[str, str] = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parents[1]).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                re.search(r"(Error|Exception|Exit|Interrupt)$", ast.unparse(b)) for b in node.bases
            ):
                found[node.name] = f"{rel}:{node.lineno}"
    return found


def unreadable() -> list[str]:
    """Raises of user-facing errors whose message is not a literal (``file:line: code``)."""
    return _scan()[1]


if __name__ == "__main__":  # print the catalogue skeleton (to start a new section)
    for m in messages():
        print(f"- ``{m.text}`` ({m.error}, {m.where})")
