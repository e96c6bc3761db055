"""``verl``: Agent Lightning's VERL needs agentlightning[verl] and a CUDA GPU; say what is missing.

Why only a check here: VERL trains model weights with vLLM and FSDP on GPUs (verl >= 0.5,
vLLM >= 0.10.2, torch >= 2.8, flash-attn); there is no CPU path, so on a machine without them
the useful output is the exact list of what to install or provide.
"""

from __future__ import annotations

import importlib.util


def verl_unavailable() -> str | None:
    """``None`` when VERL can run here, else a message naming every missing piece."""
    missing = []
    for mod, what in (
        ("agentlightning", "agentlightning[verl]"),
        ("verl", "verl>=0.5"),
        ("vllm", "vllm>=0.10.2"),
        ("torch", "torch>=2.8"),
        ("flash_attn", "flash-attn"),
    ):
        if importlib.util.find_spec(mod) is None:
            missing.append(what)
    gpu = False
    if importlib.util.find_spec("torch") is not None:
        try:
            import torch

            gpu = bool(torch.cuda.is_available())
        except Exception:
            gpu = False
    if not gpu:
        missing.append("a CUDA GPU (torch.cuda.is_available() is False)")
    if not missing:
        return None
    return (
        "the verl algorithm cannot run here; missing: "
        + ", ".join(missing)
        + ". Install `pip install 'agentlightning[verl]'` on a GPU machine, or use "
        "--algorithm apo|cost|both; `lightspan train export` writes the stored rollouts "
        "as fine-tuning data for training elsewhere."
    )
