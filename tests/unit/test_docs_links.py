"""The front door cannot rot: every relative link in README.md and docs/*.md reaches a file
that exists, and a link to a heading reaches a heading that exists (GitHub's anchors); the
README's test command is the one CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.samples import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL)  # a code span may wrap lines
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def _prose(text: str) -> str:
    """The text outside fenced code blocks, where links and headings live."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: the rendered text in lower case, punctuation
    other than `-` and `_` dropped, each space a `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = text.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, repeated headings numbered as GitHub does."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for heading in HEADING.findall(_prose(path.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    """The relative link targets of a Markdown page (not external URLs, not code)."""
    text = INLINE_CODE.sub("", _prose(path.read_text(encoding="utf-8")))
    return [
        target
        for target in LINK.findall(text)
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


def test_slugs_follow_github() -> None:
    """The anchor rule, on headings of the kinds these pages use."""
    assert (
        slug("Running the proxy: `envelope-proxy serve`")
        == "running-the-proxy-envelope-proxy-serve"
    )
    assert slug("Helm chart `helm/envelope-proxy`") == "helm-chart-helmenvelope-proxy"
    assert (
        slug("Rule fixtures: `envelope-proxy test DIR [--rules RULES]`")
        == "rule-fixtures-envelope-proxy-test-dir---rules-rules"
    )
    assert slug("1. Put the proxy in front") == "1-put-the-proxy-in-front"
    assert slug("Every setting, with its default") == "every-setting-with-its-default"


def test_the_link_finder_skips_code_and_urls(tmp_path: Path) -> None:
    """Links in code are examples, not links; a URL is not a path; a heading in a code block
    is not a heading."""
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\nSee [a](a.md#x), [b](https://example.com), `[c](c.md)`, ``[e](e.md)\n`x` ``.\n"
        "A `code span\nwrapped` and [f](f.md).\n\n"
        "```text\n# not a heading\n[d](d.md)\n```\n",
        encoding="utf-8",
    )
    assert links(page) == ["a.md#x", "f.md"]
    assert anchors(page) == {"title"}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO_ROOT)))
def test_every_relative_link_reaches_a_file_and_heading(page: Path) -> None:
    """Each relative link names a file or directory of the repository, and its `#anchor`,
    if any, a heading of that file."""
    broken: list[str] = []
    for target in links(page):
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif REPO_ROOT.resolve() not in (resolved, *resolved.parents):
            broken.append(f"{target}: outside the repository")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(REPO_ROOT)}: " + "; ".join(broken)


def test_every_docs_page_is_linked_from_the_readme_and_the_index() -> None:
    """No manual page is an orphan: the README and docs/README.md both link each one."""
    docs = REPO_ROOT / "docs"
    pages = {page.name for page in docs.glob("*.md")} - {"README.md"}
    from_readme = {Path(t.partition("#")[0]).name for t in links(REPO_ROOT / "README.md")}
    from_index = {Path(t.partition("#")[0]).name for t in links(docs / "README.md")}
    assert pages - from_readme == set()
    assert pages - from_index == set()


def test_the_readme_test_command_is_what_ci_runs() -> None:
    """`.ci/run` runs exactly the README's test command, so the README's promise holds."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"^```sh\n(.*?)\n```$", readme, flags=re.MULTILINE | re.DOTALL)
    [test_command] = [command for command in commands if "pytest" in command]
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert ci[-1] == test_command
    assert (
        "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/envelope-proxy demo"
        in commands
    )
