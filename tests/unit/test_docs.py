"""Every page of the README and docs/ names things that exist.

Checked on each page: each ``tierwise <command>`` (in a code block or an inline code span) is a
real subcommand and each of its ``--flags`` is in that subcommand's ``--help``; each ``make
TARGET`` is a Makefile target; each ``TIERWISE_*`` variable is a field of ``Settings``; each key
of a YAML block is accepted by the gateway config model (a block with ``tiers`` is parsed whole;
one with ``model_list`` is LiteLLM's, run by ``tests/integration/test_litellm_proxy.py``);
each relative link resolves to a file, and its ``#anchor`` to a heading of that file.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from functools import cache
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from cli.main import COMMANDS
from cli.main import main as cli_main
from router_model.settings import Settings
from service.gateway.config import GatewayConfig, parse_gateway_config

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
IDS = [str(p.relative_to(REPO)) for p in PAGES]

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
SETTING = re.compile(r"\bTIERWISE_[A-Z0-9_]*[A-Z0-9]\b")
#: Variables the docs name that are not settings: the test suite's own switch.
NOT_SETTINGS = frozenset({"TIERWISE_TEST_POSTGRES_URL"})


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced code block."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    return FENCE.sub("", text)


def command_lines(text: str) -> list[str]:
    """Shell text that may hold ``tierwise`` commands: block lines (continuations joined,
    comments dropped) and inline code spans."""
    lines: list[str] = []
    for lang, body in blocks(text):
        if lang not in {"", "bash", "sh", "console"}:
            continue
        lines += [line.split(" #")[0] for line in body.replace("\\\n", " ").splitlines()]
    lines += INLINE.findall(prose(text))
    return lines


def invocations(line: str) -> list[tuple[str, list[str]]]:
    """Each ``tierwise SUB`` in a shell line with the ``--flags`` that follow it."""
    try:
        words = shlex.split(line)
    except ValueError:
        words = line.split()
    found: list[tuple[str, list[str]]] = []
    for i, word in enumerate(words):
        if word != "tierwise" or i + 1 >= len(words) or words[i + 1].startswith("-"):
            continue
        flags = []
        for nxt in words[i + 2:]:
            if nxt in {"|", "&&", ";", "tierwise"}:
                break
            if nxt.startswith("--"):
                flags.append(nxt.split("=")[0])
        found.append((words[i + 1], flags))
    return found


@cache
def help_flags(sub: str) -> frozenset[str]:
    """The long options in ``tierwise SUB --help``."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        cli_main([sub, "--help"])
    assert exit_.value.code == 0, sub
    return frozenset(re.findall(r"--[a-z][a-z0-9-]*", out.getvalue()))


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text("utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, re.M))


def is_setting(name: str) -> bool:
    """Whether ``TIERWISE_A__B`` names a field path of ``Settings`` (case-insensitive)."""
    model: type[BaseModel] = Settings
    parts = name.removeprefix("TIERWISE_").lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        sub = field.annotation
        if i < len(parts) - 1:
            if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
                return False
            model = sub
    return True


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field's annotation holds (directly, in a list or a union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) in {list, Union, UnionType}:
        return [m for arg in get_args(annotation) for m in _models(arg)]
    return []


def unknown_keys(doc: Any, model: type[BaseModel], where: str = "") -> list[str]:
    """Keys of ``doc`` (a YAML mapping) that ``model`` has no field for, recursively."""
    if isinstance(doc, list):
        return [k for item in doc for k in unknown_keys(item, model, where)]
    if not isinstance(doc, dict):
        return []
    bad: list[str] = []
    for key, value in doc.items():
        field = model.model_fields.get(str(key))
        if field is None:
            bad.append(f"{where}{key}")
            continue
        for sub in _models(field.annotation)[:1]:
            bad += unknown_keys(value, sub, f"{where}{key}.")
    return bad


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = prose(path.read_text("utf-8"))
    return {slug(m) for m in re.findall(r"^#+ (.*)$", text, re.M)}


def test_there_are_pages_to_check() -> None:
    names = {p.name for p in PAGES}
    assert {"README.md", "router.md", "gateway.md", "training.md", "retrain.md",
            "scaling.md"} <= names
    readme = (REPO / "README.md").read_text("utf-8").splitlines()
    assert len(readme) <= 150
    assert "make serve" in readme[6] and "make test" in readme[7]


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_tierwise_commands_and_flags_exist(page: Path) -> None:
    missing = []
    for line in command_lines(page.read_text("utf-8")):
        for sub, flags in invocations(line):
            if sub not in COMMANDS:
                missing.append(f"tierwise {sub}")
                continue
            missing += [f"tierwise {sub} {f}" for f in flags if f not in help_flags(sub)]
    assert not missing, missing


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_make_targets_exist(page: Path) -> None:
    named = {m for line in command_lines(page.read_text("utf-8"))
             for m in re.findall(r"(?:^|&&|;)\s*make ([a-z][\w-]*)", line)}
    assert named <= make_targets(), named - make_targets()


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_settings_exist(page: Path) -> None:
    named = set(SETTING.findall(page.read_text("utf-8"))) - NOT_SETTINGS
    # TIERWISE_API_KEYS, upstream keys and the like are read by name; these are the settings
    assert not [n for n in sorted(named) if not is_setting(n)]


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_gateway_config_blocks_are_accepted(page: Path) -> None:
    for lang, body in blocks(page.read_text("utf-8")):
        if lang not in {"yaml", "yml"}:
            continue
        doc = yaml.safe_load(body)
        if isinstance(doc, dict) and "model_list" in doc:
            continue  # LiteLLM's proxy config (docs/litellm.md): its test runs it in the proxy
        assert not unknown_keys(doc, GatewayConfig), (page.name, body)
        if isinstance(doc, dict) and "tiers" in doc:
            parse_gateway_config(doc, source=page.name)


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(prose(page.read_text("utf-8"))):
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert not broken, broken


def test_the_checks_catch_what_they_should() -> None:
    assert invocations("tierwise train --data x --nope 1 && tierwise knob --top-share 0.3") == [
        ("train", ["--data", "--nope"]), ("knob", ["--top-share"])]
    assert "--nope" not in help_flags("train") and "--data" in help_flags("train")
    assert is_setting("TIERWISE_SERVICE__ADMIN_KEY") and is_setting("TIERWISE_LOG_FORMAT")
    assert not is_setting("TIERWISE_SERVICE__NO_SUCH") and not is_setting("TIERWISE_NOPE")
    assert unknown_keys({"budget": {"top_shar": 0.3}, "tiers": [{"nam": "x"}]},
                        GatewayConfig) == ["budget.top_shar", "tiers.nam"]
    assert slug("What the bundles have not seen") == "what-the-bundles-have-not-seen"
