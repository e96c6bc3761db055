"""``apo``: textual-gradient beam search over every prompt template of the workflow.

In the spirit of Agent Lightning 0.3's APO (critique from low-reward rollouts, apply the
critique with an editor, keep a beam scored on val batches), with what that version lacks:
every prompt template is optimized (round-robin), an edit that drops or adds a placeholder, no
longer formats or copies the editor prompt's markup is rejected before any rollout is spent,
candidate ids never collide (content hashes), the best set (not the last one evaluated) is
returned, and the score can include a cost term (``reward - cost_lambda * cost``). The
critic's and editor's prompts are short, so a small local model fits.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable
from typing import Any

from lightspan.trainer.data import Task
from lightspan.trainer.evaluation.evaluate import Evaluator, Result
from lightspan.trainer.resmap import ResourcesMap, check_template_edit, prompt_names
from lightspan.trainer.search.cost import Candidate, SearchOutcome, figures
from lightspan.trainer.search.optimizer_llm import trace_text

CRITIC_TEMPLATES = [
    "A prompt template was used by an AI workflow. Some runs got a low reward.\n"
    "Template:\n<<<{template}>>>\n\nRuns (prompt, answer, reward):\n{runs}\n\n"
    "In at most 3 short bullet points, say what in the template causes the low rewards "
    "and how to change it.",
    "You review prompts. This template:\n<<<{template}>>>\nproduced these poor results:\n"
    "{runs}\n\nGive 2-3 concrete, brief suggestions to improve the template.",
    "Template:\n<<<{template}>>>\nFailures:\n{runs}\n\nWhat is the single most important "
    "fix to the template? Answer in two sentences.",
]
EDIT_TEMPLATES = [
    "Rewrite the prompt template below following the feedback. Keep every placeholder in "
    "curly braces exactly as it is ({placeholders}), add no new ones. Return only the new "
    "template, nothing else.\n\nTemplate:\n<<<{template}>>>\n\nFeedback:\n{critique}",
    "Improve this template using the feedback. It must still contain {placeholders} and no "
    "other braces. Output only the improved template.\n\nTemplate:\n<<<{template}>>>\n\n"
    "Feedback:\n{critique}",
]


def clean_edit(text: str, original: str | None = None) -> str:
    """The edited template in an editor's answer, without what small editors wrap around it
    (code fences, <<< >>>, "New template:", quotes).

    An editor may quote the original template before its rewrite ("The template
    <<<...>>> can be improved: <<<...>>>"), so with ``original`` given the answer's last block
    that differs from it is the edit; only when every block repeats the original is the edit
    the original (reported as unchanged, not tried)."""
    t = text.strip()
    blocks = [_inner(m.group(1) or m.group(2) or "") for m in _BLOCK.finditer(t)]
    cleaned = [_unwrap(b) for b in blocks] or [_unwrap(t)]
    if original is not None:
        changed = [b for b in cleaned if b and b != original.strip()]
        if changed:
            return changed[-1]
    return cleaned[0]


_MARKUP = ("<<<", ">>>", "\n---\n", "] prompt: ", "] answer: ", "status=", "reward=")
"""What the critic's and editor's prompts wrap around templates and runs (``trace_text``, the
runs joined by ``---`` lines)."""


def copied_markup(edited: str, original: str = "") -> str | None:
    """Why an edit that carries the editor prompt's own markup is rejected (``None``: it does
    not): a ``<<<`` or ``>>>`` left inside it (a lone one at either end is stripped first,
    ``_unwrap``), or a run transcript copied in. A small editor answered an unclosed ``<<<``,
    the template, a ``---`` line and a train task's prompt and answer (the APO probe,
    docs/performance.md 1o); it kept the placeholders, so the placeholder check let a
    template with a train task's text in it through to rollouts. Markup the original
    template itself holds (a doctest's ``>>>``) is allowed."""
    found = [m for m in _MARKUP if m in edited and m not in original]
    if not found:
        return None
    return f"the edit copies the editor prompt's markup ({', '.join(repr(m) for m in found)})"


_BLOCK = re.compile(r"```(?:[a-zA-Z]*)\n(.*?)```|<<<(.*?)>>>?", re.S)
"""A code fence or a <<< >>> block, in the order they appear. A block may close with ``>>``:
a small editor answered "<<<Text: {text} What is the {field} of the text?>> Feedback: ..."
(extraction x organizer_worker, ``both`` seed 5, docs/performance.md 1p)."""


def _inner(block: str) -> str:
    """A fenced block that itself wraps the template in <<< >>> gives what is inside."""
    m = re.search(r"<<<(.*?)>>>", block, re.S)
    return (m.group(1) if m else block).strip()


def _excerpt(text: str, limit: int = 200) -> str:
    one_line = " ".join(text.split())
    return repr(one_line if len(one_line) <= limit else one_line[: limit - 3] + "...")


def _unwrap(t: str) -> str:
    for prefix in ("New template:", "Improved template:", "Template:"):
        if t.startswith(prefix):
            t = t[len(prefix) :].strip()
    # An unpaired <<< or >>> around the whole answer is the editor's half of the wrapper
    # (extraction x organizer_worker, downshift seed 3: '<<<Text: {text} ... address?').
    if t.startswith("<<<") and ">>>" not in t:
        t = t[3:].strip()
    if t.endswith(">>>") and "<<<" not in t:
        t = t[:-3].strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'":
        t = t[1:-1]
    return t


class APOSearch:
    """Beam search; parameter names follow agl 0.3's APO."""

    def __init__(
        self,
        evaluator: Evaluator,
        optimizer: Any,
        *,
        beam_width: int = 4,
        branch_factor: int = 4,
        beam_rounds: int = 3,
        gradient_batch_size: int = 4,
        val_batch_size: int = 16,
        cost_lambda: float = 0.0,
        seed: int = 0,
        on_candidate: Callable[[Candidate], None] | None = None,
    ) -> None:
        self.evaluator = evaluator
        self.optimizer = optimizer
        self.beam_width = max(1, beam_width)
        self.branch_factor = max(1, branch_factor)
        self.beam_rounds = max(0, beam_rounds)
        self.gradient_batch_size = max(1, gradient_batch_size)
        self.val_batch_size = max(1, val_batch_size)
        self.cost_lambda = cost_lambda
        self.rng = random.Random(seed)
        self.on_candidate = on_candidate or (lambda c: None)
        self.outcome = SearchOutcome(best={})
        self.rejected_edits = 0

    def score(self, results: list[Result]) -> float:
        reward, cost, _ = figures(results)
        return reward - self.cost_lambda * cost

    async def _eval(
        self, label: str, res: ResourcesMap, tasks: list[Task], rnd: int
    ) -> tuple[float, Candidate]:
        results = await self.evaluator.evaluate(res, tasks)
        reward, cost, lat = figures(results)
        cand = Candidate(label, res, rnd, None, len(tasks), reward, cost, lat)
        self.outcome.candidates.append(cand)
        self.on_candidate(cand)
        return self.score(results), cand

    async def propose(
        self, parent: ResourcesMap, name: str, batch: list[Task]
    ) -> ResourcesMap | None:
        """Critique ``name`` from the parent's low-reward runs on ``batch`` and apply it."""
        results = await self.evaluator.evaluate(parent, batch)
        worst = sorted(results, key=lambda r: r.reward)[: max(1, len(results) // 2)]
        original = parent[name]["template"]
        runs = "\n---\n".join(trace_text(r, 600) for r in worst)
        critique = await self.optimizer.chat(
            self.rng.choice(CRITIC_TEMPLATES).format(template=original, runs=runs)
        )
        try:
            from lightspan.trainer.resmap import placeholders

            ph = ", ".join("{" + p + "}" for p in sorted(placeholders(original))) or "none"
        except ValueError:
            ph = "none"
        answer = await self.optimizer.chat(
            self.rng.choice(EDIT_TEMPLATES).format(
                template=original, critique=critique[:800], placeholders=ph
            )
        )
        edited = clean_edit(answer, original)
        # The editor's own words in the report: why APO found nothing is otherwise invisible.
        said = f"(the editor answered {_excerpt(answer)})"
        why = copied_markup(edited, original) or check_template_edit(
            original, edited, parent[name].get("engine", "f-string")
        )
        if why is not None:
            self.rejected_edits += 1
            self.outcome.notes.append(f"rejected edit of {name}: {why} {said}")
            return None
        if edited == original:
            self.outcome.notes.append(f"edit of {name} left it unchanged {said}")
            return None
        child = copy.deepcopy(parent)
        child[name] = {**parent[name], "template": edited}
        return child

    async def run(self, seed: ResourcesMap, train: list[Task], val: list[Task]) -> SearchOutcome:
        names = prompt_names(seed)
        self.outcome = SearchOutcome(best=seed)
        if not names:
            self.outcome.notes.append("apo: the workflow has no prompt template")
            return self.outcome
        full, cand = await self._eval("apo seed", seed, val, 0)
        cand.accepted = True
        best, best_score = seed, full
        self.outcome.best_per_round.append(
            {
                "round": 0,
                "label": "apo seed",
                "reward": cand.reward,
                "cost": cand.cost,
                "latency_s": cand.latency_s,
            }
        )
        beam: list[ResourcesMap] = [seed]
        cursor = 0
        turn = 0
        for rnd in range(1, self.beam_rounds + 1):
            children: list[tuple[str, ResourcesMap]] = []
            for parent in beam:
                for _ in range(self.branch_factor):
                    batch = [
                        train[(cursor + i) % len(train)]
                        for i in range(min(self.gradient_batch_size, len(train)))
                    ]
                    cursor += len(batch)
                    name = names[turn % len(names)]
                    turn += 1
                    child = await self.propose(parent, name, batch)
                    if child is not None:
                        children.append((f"apo r{rnd}: edit of {name}", child))
            vb = self.rng.sample(val, min(self.val_batch_size, len(val)))
            pool = [("apo beam", b) for b in beam] + children
            scored = []
            for label, res in pool:
                s, _c = await self._eval(label, res, vb, rnd)
                scored.append((s, res))
            scored.sort(key=lambda x: -x[0])
            beam = [r for _, r in scored[: self.beam_width]]
            leader = beam[0]
            s, c = await self._eval(f"apo r{rnd} leader", leader, val, rnd)
            if s > best_score:
                best, best_score = leader, s
                c.accepted = True
            self.outcome.best_per_round.append(
                {
                    "round": rnd,
                    "label": f"apo r{rnd}",
                    "reward": c.reward,
                    "cost": c.cost,
                    "latency_s": c.latency_s,
                }
            )
        self.outcome.best = best
        if self.rejected_edits:
            self.outcome.notes.append(f"apo: {self.rejected_edits} edit(s) rejected")
        return self.outcome
