"""How the trainer looks for better resources: the ``cost`` search (model, ``max_tokens`` and
prompt per step), ``apo`` (textual gradients, with its optimizer LLM), and what VERL needs."""
