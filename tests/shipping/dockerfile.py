"""Read the repository's Dockerfile and replay its builder stage without a container engine.

`parse()` turns the Dockerfile into global ARGs and stages of instructions (continuation
lines joined, comments dropped). `FakeRoot` replays a stage's ARG/ENV/WORKDIR/COPY/RUN
instructions on this machine, with every absolute image path mapped under a temporary
directory, so a test runs the very commands the image build runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: keyword, leading --flags, and the rest of the line."""

    keyword: str
    flags: tuple[str, ...]
    value: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form instruction (ENTRYPOINT, CMD, HEALTHCHECK CMD)."""
        text = self.value
        if self.keyword == "HEALTHCHECK":
            if not text.startswith("CMD "):
                raise ValueError(f"HEALTHCHECK without CMD: {text}")
            text = text[len("CMD ") :]
        parsed = json.loads(text)
        if not isinstance(parsed, list) or not all(isinstance(a, str) for a in parsed):
            raise ValueError(f"{self.keyword} is not in exec form: {self.value}")
        return parsed

    def flag(self, name: str) -> str | None:
        """The value of `--name=value`, or None."""
        for item in self.flags:
            key, _, value = item.partition("=")
            if key == f"--{name}":
                return value
        return None


@dataclass
class Stage:
    """A FROM section: its base image, its name (AS ...) and its instructions."""

    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        if len(found) != 1:
            raise AssertionError(f"stage {self.name}: {len(found)} {keyword} instructions")
        return found[0]


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        lines.append((current + stripped).strip())
        current = ""
    if current:
        lines.append(current.strip())
    return lines


def parse(path: Path = DOCKERFILE) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults (before the first FROM) and the stages, in order."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        flags: list[str] = []
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            flags.append(flag)
            rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(base=expand(words[0], global_args), name=name))
        elif not stages:
            if keyword != "ARG":
                raise ValueError(f"{keyword} before the first FROM")
            key, _, default = rest.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, tuple(flags), rest))
    return global_args, stages


def stage(name: str, path: Path = DOCKERFILE) -> Stage:
    """The stage called `name`."""
    for found in parse(path)[1]:
        if found.name == name:
            return found
    raise KeyError(name)


def expand(text: str, variables: dict[str, str]) -> str:
    """Substitute ${NAME} and $NAME the way the Dockerfile frontend does (unknown: empty)."""
    return _VAR.sub(lambda m: variables.get(m.group(1) or m.group(2), ""), text)


def env_pairs(value: str, variables: dict[str, str]) -> dict[str, str]:
    """The NAME=value pairs of an ENV or LABEL instruction, variables expanded."""
    pairs: dict[str, str] = {}
    for word in shlex.split(value):
        key, sep, item = word.partition("=")
        if not sep:
            raise ValueError(f"only the NAME=value form is supported: {value}")
        pairs[key] = expand(item, variables)
    return pairs


def ignore_patterns(path: Path = DOCKERIGNORE) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def is_ignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `relative` (a path in the context) out of the build."""
    parts = PurePosixPath(relative).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern[1:] if negate else pattern)
        if any(regex.match(c) for c in candidates):
            ignored = not negate
    return ignored


class FakeRoot:
    """Replays a stage's instructions with the image's absolute paths under `root`."""

    def __init__(self, root: Path, context: Path = REPO, build_args: dict[str, str] | None = None):
        self.root = root
        self.context = context
        self.build_args = build_args or {}
        self.variables: dict[str, str] = {}
        self.env: dict[str, str] = {}
        self.workdir = root
        self.patterns = ignore_patterns(context / ".dockerignore")

    def path(self, image_path: str) -> Path:
        """Where an absolute image path lives under the fake root."""
        return self.root / image_path.lstrip("/")

    def replay(self, stage: Stage, global_args: dict[str, str], run_env: dict[str, str]) -> None:
        """Run ARG, ENV, WORKDIR, COPY (from the context) and RUN in order; refuse the rest."""
        self.variables = {}  # global ARGs are visible in a stage only once redeclared
        for ins in stage.instructions:
            if ins.keyword == "ARG":
                key, sep, default = ins.value.partition("=")
                if not sep:
                    default = global_args.get(key, "")
                self.variables[key] = self.build_args.get(key, expand(default, self.variables))
            elif ins.keyword == "ENV":
                pairs = env_pairs(ins.value, self.variables | {"PATH": run_env["PATH"]})
                self.variables.update(pairs)
                self.env.update(pairs)
            elif ins.keyword == "WORKDIR":
                self.workdir = self.path(expand(ins.value, self.variables))
                self.workdir.mkdir(parents=True, exist_ok=True)
            elif ins.keyword == "COPY" and ins.flag("from") is None:
                self._copy(shlex.split(expand(ins.value, self.variables)))
            elif ins.keyword == "RUN":
                env = run_env | self.variables | self.env
                subprocess.run(
                    ["sh", "-c", ins.value], cwd=self.workdir, env=env, check=True, timeout=300
                )
            else:
                raise AssertionError(f"cannot replay {ins.keyword} {ins.value}")

    def _copy(self, words: list[str]) -> None:
        *sources, dest = words
        target = self.path(dest) if dest.startswith("/") else self.workdir / dest
        for source in sources:
            src = self.context / source
            if src.is_dir():
                self._copy_tree(src, target)
            else:
                name = src.relative_to(self.context).as_posix()
                assert not is_ignored(name, self.patterns), f".dockerignore drops {name}"
                into = target / src.name if dest.endswith("/") or len(sources) > 1 else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, into)

    def _copy_tree(self, src: Path, target: Path) -> None:
        for item in sorted(src.rglob("*")):
            relative = item.relative_to(self.context).as_posix()
            if item.is_dir() or is_ignored(relative, self.patterns):
                continue
            into = target / item.relative_to(src)
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, into)


def python_shim(directory: Path) -> Path:
    """A directory whose `python` is this machine's base interpreter (the image's is 3.11)."""
    import sys

    directory.mkdir(parents=True, exist_ok=True)
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    shim = directory / "python"
    if not shim.exists():
        shim.symlink_to(base if base.exists() else Path(sys.executable))
    return directory


def search_path(*first: Path) -> str:
    """PATH with `first` in front of this process's PATH."""
    return os.pathsep.join([*(str(p) for p in first), os.environ.get("PATH", "")])
