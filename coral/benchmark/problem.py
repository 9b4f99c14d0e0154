"""The in-memory shape of one benchmark problem (QuixBugs layout).

Loader (`coral.benchmark.loader`) produces these; the runner and the prompts consume them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class JsonCase:
    """One line of json_testcases/NAME.json: positional args and the expected value."""

    index: int
    args: list[Any]
    expected: Any
    bare: bool = False  # the file wrote a single argument bare (`[127, 7]`), not as a list


@dataclass(frozen=True)
class Problem:
    name: str
    buggy_source: str  # python_programs/NAME.py
    correct_source: str  # correct_python_programs/NAME.py
    # JSON cases, or None for problems tested only by their pytest file (graph / linked list).
    json_cases: tuple[JsonCase, ...] | None
    # python_testcases/test_NAME.py, when present (used only where json_cases is None).
    pytest_source: str | None = None
    # Extra files the pytest file needs, by file name (e.g. {"node.py": "..."}).
    support_files: dict[str, str] = field(default_factory=dict)

    @property
    def uses_json_cases(self) -> bool:
        return self.json_cases is not None
