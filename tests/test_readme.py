"""The README's two set-up commands are exactly what CI runs."""

from __future__ import annotations

import re

from conftest import REPO


def quick_start_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_them():
    commands = quick_start_commands()
    assert len(commands) == 2
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    for cmd in commands:
        assert cmd in ci, f"README command not run verbatim by .ci/run: {cmd}"
    assert "pytest" in commands[1]
