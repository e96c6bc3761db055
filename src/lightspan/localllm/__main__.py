"""``python -m lightspan.localllm fetch|serve|list`` (same as ``lightspan llm ...``)."""

import sys

from lightspan.localllm.cli import main

if __name__ == "__main__":
    sys.exit(main())
