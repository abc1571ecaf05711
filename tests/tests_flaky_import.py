"""A reward module that stops importing once FLAG exists: an actor restarted after that cannot be built again."""

import tempfile
from pathlib import Path

FLAG = Path(tempfile.gettempdir()) / "rlhf-tests-break-import"
if FLAG.exists():
    raise ImportError(f"tests_flaky_import is broken while {FLAG} exists")


def zero(prompts, completions, **_):
    return [0.0] * len(completions)
