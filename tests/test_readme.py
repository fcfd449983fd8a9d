"""The README's examples, run as written, in order, against a server started as `make run`
starts it: so they cannot drift from what the service does.

Which blocks run: fenced blocks in `sh`, `bash` or `shell` (run by bash), `python` (the
project's Python) and `js` or `javascript` (Node, as an ES module). A block whose first line
is `# not run: <reason>` (`// not run: <reason>` in JavaScript) is left out, visibly, for that
reason; every other language (json, text, nginx, yaml, ...) is never run, and a fence must
name its language.

How they run, as a reader's second shell would: in the quickstart's directory (its
`apikeys.quickstart.env` beside the database, `.venv` standing for the project's virtual
environment), one block after another, each shell block's variables carried to every later
block, with `http://127.0.0.1:8000` pointed at the test's own port. A block passes when it
exits 0 and the status lines it prints (lines that start with a three-digit code) are the
`→ NNN` its comments show, in order.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import servers

README = Path(__file__).resolve().parents[1] / "README.md"
LANGUAGES = {
    "sh": "shell",
    "bash": "shell",
    "shell": "shell",
    "python": "python",
    "js": "javascript",
    "javascript": "javascript",
}
NOT_RUN = re.compile(r"^\s*(?:#|//)\s*not run:\s*(?P<reason>\S.*)$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
EXPECTED_STATUS = re.compile(r"→ (\d{3})\b")
PRINTED_STATUS = re.compile(r"^(\d{3})\b", re.MULTILINE)
SECRET = re.compile(r"\b(cvsk_|cvrs_)[0-9A-Za-z]{20,}")
DEFAULT_ORIGIN = "http://127.0.0.1:8000"
BLOCK_TIMEOUT = 120


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    info: str
    code: str

    @property
    def language(self) -> str | None:
        return LANGUAGES.get(self.info.lower())

    @property
    def not_run_reason(self) -> str | None:
        first = self.code.split("\n", 1)[0]
        match = NOT_RUN.match(first)
        return match["reason"].strip() if match else None

    @property
    def runs(self) -> bool:
        return self.language is not None and self.not_run_reason is None

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.info})"


def blocks(text: str) -> Iterator[Block]:
    """Every fenced block, its indentation (inside a list item) taken off."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        start, indent, fence = index, len(opening["indent"]), opening["fence"]
        body: list[str] = []
        index += 1
        while index < len(lines) and not lines[index].strip().startswith(fence):
            body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index])
            index += 1
        yield Block(start + 1, opening["info"], "\n".join(body))
        index += 1


def readme_blocks() -> list[Block]:
    return list(blocks(README.read_text()))


def redacted(text: str) -> str:
    return SECRET.sub(lambda match: f"{match[1]}<redacted>", text)


def test_every_fence_names_its_language_and_every_left_out_block_says_why() -> None:
    found = readme_blocks()

    unnamed = [str(block) for block in found if not block.info]
    marked = [block for block in found if NOT_RUN.match(block.code.split("\n", 1)[0])]

    assert unnamed == []
    assert all(block.language for block in marked), [str(b) for b in marked if not b.language]
    assert sum(block.runs for block in found) >= 10
    # Left out only where an example needs what this test cannot give it.
    assert len(marked) <= 12, [f"{block}: {block.not_run_reason}" for block in marked]


def test_the_block_reader_takes_indented_fences_and_the_not_run_marker() -> None:
    text = (
        "- a list item\n\n"
        "  ```bash\n  echo one\n  ```\n\n"
        "```js\n// not run: needs a browser\nalert(1)\n```\n\n"
        "```nginx\nlocation / {}\n```\n"
    )

    found = list(blocks(text))

    assert [(block.info, block.code) for block in found] == [
        ("bash", "echo one"),
        ("js", "// not run: needs a browser\nalert(1)"),
        ("nginx", "location / {}"),
    ]
    assert [block.runs for block in found] == [True, False, False]
    assert found[1].not_run_reason == "needs a browser"
    assert [block.line for block in found] == [3, 7, 12]


class Reader:
    """A reader's second shell: the state the blocks so far have left behind."""

    def __init__(self, directory: Path, origin: str) -> None:
        self.directory = directory
        self.origin = origin
        self.env = servers.bare_environment()
        self.count = 0

    def run(self, block: Block) -> subprocess.CompletedProcess[str]:
        self.count += 1
        code = block.code.replace(DEFAULT_ORIGIN, self.origin)
        state = self.directory / f".block-{self.count}.env"
        if block.language == "shell":
            # set -a: what a reader's shell keeps between blocks, exported to the next ones.
            script = f"set -a\nset -euo pipefail\n{code}\nenv -0 > {state}\n"
            command = ["bash", "-c", script]
        elif block.language == "python":
            path = self.directory / f"block-{self.count}.py"
            path.write_text(code + "\n")
            command = [sys.executable, str(path)]
        else:
            path = self.directory / f"block-{self.count}.mjs"
            path.write_text(code + "\n")
            command = ["node", str(path)]
        done = subprocess.run(
            command,
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )
        if state.exists():
            pairs = (item.partition("=") for item in state.read_text().split("\0") if item)
            self.env = {name: value for name, _, value in pairs}
            state.unlink()
        return done


def failure(block: Block, done: subprocess.CompletedProcess[str], why: str) -> str:
    return redacted(
        f"{block}: {why}\n--- code\n{block.code}\n--- stdout\n{done.stdout[-3000:]}"
        f"\n--- stderr\n{done.stderr[-3000:]}"
    )


@pytest.mark.full
def test_every_readme_example_runs_as_written_against_make_run(tmp_path: Path) -> None:
    # The project's virtual environment, where the clone has it.
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    quickstart = servers.start_quickstart(tmp_path, servers.bare_environment())
    try:
        servers.wait_ready(quickstart.server, timeout=90)
        reader = Reader(tmp_path, quickstart.server.base_url)
        ran = []
        for block in readme_blocks():
            if not block.runs:
                continue
            done = reader.run(block)
            ran.append(str(block))
            # Compared as a plain number: pytest would show the whole result, secrets and all.
            exit_code = done.returncode
            assert exit_code == 0, failure(block, done, f"exited {exit_code}")
            expected = EXPECTED_STATUS.findall(block.code)
            printed = PRINTED_STATUS.findall(done.stdout)
            assert printed == expected, failure(block, done, f"printed {printed}, shows {expected}")
    finally:
        servers.stop(quickstart.server)
        quickstart.server.process.wait(timeout=30)

    assert len(ran) >= 10
    assert os.path.exists(tmp_path / "docs.png")
