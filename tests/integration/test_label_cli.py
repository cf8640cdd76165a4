"""``tierwise label`` against the fake upstreams with a fake judge answering ``Rating: [[N]]``:
rows of the labeled format, resumable, the cost bound first, and bad input refused before any
call."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from gateway_support import (  # noqa: F401  (fixtures)
    KEY_ENV,
    STRONG,
    UPSTREAM_KEY,
    WEAK,
    Upstreams,
    config_doc,
    upstreams_fixture,
)

from cli.main import main as tierwise

ANSWER_MARK = "[The Start of Assistant's Answer]"


def judge(body: dict[str, Any]) -> str:
    """The strong upstream: grades weak answers 4 and strong ones 10, answers other prompts;
    an answer saying "vague" gets no rating."""
    text = str(body["messages"][-1]["content"])
    if not text.startswith("[Instruction]"):
        return "strong answer"
    answer = text.split(ANSWER_MARK)[1]
    if "vague" in answer:
        return "It is fine, I think."
    return "Rating: [[4]]" if "weak answer" in answer else "Rating: [[10]]"


@pytest.fixture(autouse=True)
def _root_handlers() -> Iterator[None]:
    """``main`` configures logging on the captured stderr: undo it before the capture closes."""
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)


@pytest.fixture(name="setup")
def setup_fixture(upstreams: Upstreams, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    upstreams.reset()
    upstreams.weak.content, upstreams.strong.reply = "weak answer", judge
    monkeypatch.setenv(KEY_ENV, UPSTREAM_KEY)  # the key the config names
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(config_doc(upstreams, tmp_path)))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "What is 6 x 7?"}) + "\n" + json.dumps(
        {"messages": [{"role": "user", "content": "Name a prime."}]}) + "\n")
    yield config, prompts
    upstreams.reset()


def test_label_writes_rows_and_resumes(
    setup: tuple[Path, Path], tmp_path: Path, upstreams: Upstreams,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, prompts = setup
    out = tmp_path / "labeled.jsonl"
    argv = ["label", "--prompts", str(prompts), "--config", str(config), "--judge", "strong",
            "--out", str(out)]
    assert tierwise(argv) == 0
    assert "2 prompts to label (0 already" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["prompt"] for r in rows) == ["Name a prime.", "What is 6 x 7?"]
    for r in rows:
        assert r["scores"] == {WEAK: 3 / 9, STRONG: 1.0}
        assert r["cost"][STRONG] > r["cost"][WEAK] > 0
    calls = len(upstreams.weak.requests) + len(upstreams.strong.requests)
    assert tierwise(argv) == 0  # a rerun: nothing left to do, no call made
    assert "0 prompts to label (2 already" in capsys.readouterr().out
    assert len(upstreams.weak.requests) + len(upstreams.strong.requests) == calls


def test_unparseable_judge_reply_skips_the_row(
    setup: tuple[Path, Path], tmp_path: Path, upstreams: Upstreams,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, prompts = setup
    upstreams.weak.content = "vague"
    out = tmp_path / "labeled.jsonl"
    assert tierwise(["label", "--prompts", str(prompts), "--config", str(config), "--judge",
                     STRONG, "--out", str(out)]) == 0
    assert "unparseable judge reply 2" in capsys.readouterr().out
    assert out.read_text() == ""


def test_bad_input_exits_2_before_any_call(
    setup: tuple[Path, Path], tmp_path: Path, upstreams: Upstreams,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, prompts = setup
    out = tmp_path / "labeled.jsonl"
    base = ["label", "--config", str(config), "--out", str(out)]
    assert tierwise([*base, "--prompts", str(prompts), "--judge", "gpt-9"]) == 2
    assert "--judge 'gpt-9' is not a tier" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "ok"}) + "\n{not json\n")
    assert tierwise([*base, "--prompts", str(bad), "--judge", "strong"]) == 2
    assert f"{bad}:2: not JSON" in capsys.readouterr().err
    assert tierwise([*base, "--prompts", str(prompts), "--judge", "strong",
                     "--max-usd", "0.0000001"]) == 2
    assert "exceeds --max-usd" in capsys.readouterr().err
    assert upstreams.weak.requests == upstreams.strong.requests == []
    assert not out.exists() or out.read_text() == ""
