"""The shell blocks of README.md and docs/*.md, read as tests/test_doc_commands.py runs
or checks them.

A block is what sits between ```` ```sh ```` (or ```` ```sh doc-test ````, to be run) and
```` ``` ````. `steps` reads one as the few things a reader's shell does with it: a
command (``a && b`` is two), a command left running (a line ending with ``&``, whose
comment names the log line, ``event=...``, that says it is ready), ``kill %1 %2``
(SIGTERM to those jobs), and a file written with ``cat > FILE <<'EOF'`` ... ``EOF``.
Anything else a shell would do (pipes, redirections, variables) is refused, so a block
cannot quietly run differently here than for a reader.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).parents[1]
DOCS: Final = sorted([ROOT / "README.md", ROOT / "BENCHMARKS.md", *(ROOT / "docs").glob("*.md")])
MARKER: Final = "doc-test"
_HEREDOC: Final = re.compile(r"cat > (\S+) <<'(\w+)'")
_KILL: Final = re.compile(r"kill((?: %\d+)+)")
_READY: Final = re.compile(r"\bevent=(\w+)")
_SHELL_ONLY: Final = re.compile(r"[|<>;$`]")  # outside quotes: what only a shell does


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    marked: bool
    text: str

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    def commands(self) -> list[str]:
        """One command a line: continuations joined, comments and blanks dropped."""
        joined = re.sub(r"\\\n\s*", " ", self.text)
        return [line for line in joined.splitlines() if line.strip()[:1] not in ("", "#")]


@dataclass(frozen=True)
class Run:
    argv: list[str]


@dataclass(frozen=True)
class Start:
    """A service left running (``&``) until ``kill %N`` or the block's end."""

    argv: list[str]
    ready: str  # the event= of the log line that says it is ready


@dataclass(frozen=True)
class Stop:
    jobs: list[int]  # 1-based, in the order the block started them


@dataclass(frozen=True)
class Write:
    path: str
    text: str


Step = Run | Start | Stop | Write


def shell_blocks() -> list[Block]:
    """The ```sh blocks, and the commands (``$ ...`` lines) of plain ``` transcripts."""
    found = []
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        start: int | None = None
        for number, line in enumerate(lines):
            fence = line.strip()
            if start is None and fence.startswith("```"):
                start, info = number, fence[3:].split()
            elif start is not None and fence == "```":
                body = lines[start + 1 : number]
                if info[:1] != ["sh"]:  # a transcript: its commands only
                    body = [line[2:] for line in body if line.startswith("$ ")] if not info else []
                if body:
                    marked = info == ["sh", MARKER]
                    text = "\n".join(body)
                    found.append(Block(str(doc.relative_to(ROOT)), start + 1, marked, text))
                start = None
    return found


def steps(block: Block) -> list[Step]:
    """What a reader's shell does with ``block``, in order (ValueError: what it can't)."""
    out: list[Step] = []
    lines = iter(re.sub(r"\\\n\s*", " ", block.text).splitlines())
    for line in lines:
        heredoc = _HEREDOC.fullmatch(line.strip())
        if heredoc:
            body = []
            for body_line in lines:
                if body_line == heredoc.group(2):
                    break
                body.append(body_line)
            else:
                raise ValueError(f"{block.id}: no {heredoc.group(2)} ends `{line}`")
            out.append(Write(heredoc.group(1), "\n".join(body) + "\n"))
            continue
        code, _, comment = _split_comment(line)
        if not code.strip():
            continue
        if _SHELL_ONLY.search(_unquoted(code)):
            raise ValueError(f"{block.id}: `{line}` needs a shell: write it as plain commands")
        kill = _KILL.fullmatch(code.strip())
        if kill:
            out.append(Stop([int(job) for job in kill.group(1).split("%")[1:]]))
        elif code.rstrip().endswith("&") and not code.rstrip().endswith("&&"):
            ready = _READY.search(comment)
            if ready is None:
                raise ValueError(f"{block.id}: `{line}`: say when it is ready, # ... event=X")
            out.append(Start(shlex.split(code.rstrip()[:-1]), ready.group(1)))
        else:
            out.extend(Run(shlex.split(part)) for part in code.split("&&"))
    return out


def _split_comment(line: str) -> tuple[str, str, str]:
    """``line`` as (code, "#", comment): the first # outside quotes at a word's start."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i], "#", line[i + 1 :]
    return line, "", ""


def _unquoted(code: str) -> str:
    return re.sub(r"'[^']*'|\"[^\"]*\"", "''", code)
