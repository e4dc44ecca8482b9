"""What every benchmark script does with its result: print it, and append it to the file given
with --markdown (for benchmarks/RESULTS.md drafts)."""

from __future__ import annotations

from pathlib import Path


def emit(text: str, markdown: Path | None) -> None:
    """Print `text` (a Markdown table with its notes) and append it to `markdown`, if given."""
    print(text, flush=True)
    if markdown:
        with open(markdown, "a", encoding="utf-8") as handle:
            handle.write(text + "\n")
