"""``tierwise knob``: the knob for a budget, by hand-computed examples and served decisions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from router_model.chat import ChatMessage, ContentPart, scored_text
from router_model.errors import InvalidData
from router_model.policy import Policy, choose_tiers
from router_model.router import ComplexityRouter
from training.knob import knob_for_cost_share, knob_for_top_share, main, read_prompts

REPO = Path(__file__).resolve().parents[3]
FIXTURE = REPO / "data" / "fixtures" / "routellm_small.jsonl"


def two_tier(p_weak: list[float]) -> np.ndarray:
    weak = np.array(p_weak)
    return np.stack([weak, 1.0 - weak], axis=1)


@pytest.mark.parametrize(
    ("p_weak", "share", "knob", "top"),
    [
        ([0.9, 0.8, 0.7, 0.6, 0.5], 0.4, 0.7, 2),  # the two least adequate go to the top tier
        ([0.9, 0.8, 0.7, 0.6, 0.5], 0.0, 0.5, 0),
        ([0.9, 0.8, 0.7, 0.6, 0.5], 1.0, 1.0, 5),
        ([0.5, 0.5, 0.5, 0.9], 0.5, 0.5, 0),  # a tie cannot be split: under the budget
    ],
)
def test_top_share(p_weak: list[float], share: float, knob: float, top: int) -> None:
    proba = two_tier(p_weak)
    assert knob_for_top_share(proba, share) == pytest.approx(knob)
    assert int((choose_tiers(proba, knob) == 1).sum()) == top


@pytest.mark.parametrize(
    ("budget", "knob"),
    [
        (0.35, 0.7),  # all weak costs 4 of 40; one top-tier call (+9) fits in 14, two do not
        (0.05, 0.0),  # not even the cheapest decisions fit: every row to the cheapest tier
        (1.0, 1.0),
    ],
)
def test_cost_share(budget: float, knob: float) -> None:
    proba = two_tier([0.9, 0.8, 0.7, 0.6])
    costs = np.tile([1.0, 10.0], (4, 1))
    assert knob_for_cost_share(proba, costs, budget) == pytest.approx(knob)


@pytest.mark.parametrize("seed", range(5))
def test_cost_share_is_the_largest_knob_within_budget(seed: int) -> None:
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(3), size=200)
    costs = np.sort(rng.uniform(0.1, 10.0, size=(200, 3)), axis=1)

    def spend(q: float) -> float:
        return float(costs[np.arange(200), choose_tiers(proba, q)].sum() / costs[:, -1].sum())

    budget = spend(0.0) + float(rng.uniform(0.05, 0.9)) * (1.0 - spend(0.0))
    knob = knob_for_cost_share(proba, costs, budget)
    assert spend(knob) <= budget + 1e-12
    assert spend(min(knob + 1e-9, 1.0)) > budget  # the next knob up is over the budget


def test_cli_knob_matches_the_served_decisions(
    fast_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--model", str(fast_bundle), "--prompts", str(FIXTURE), "--top-share", "0.3"]) == 0
    report = json.loads(capsys.readouterr().out)
    fitted = report["fitted"]
    assert report["prompts"] == 120 and fitted["shares"]["strong"] <= 0.3
    # the router as served, request by request, makes the decisions the fit counted
    router = ComplexityRouter.from_artifact(fast_bundle)
    prompts = [json.loads(line)["prompt"] for line in FIXTURE.read_text("utf-8").splitlines()]
    served = [router.route(p, policy=Policy(quality=fitted["quality"])).tier for p in prompts]
    assert served.count("strong") / len(served) == pytest.approx(fitted["shares"]["strong"])
    assert report["bundle_default"]["quality"] == router.manifest.threshold


def test_cli_refuses_bad_input(
    fast_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": "  "}\n', "utf-8")
    assert main(["--model", str(fast_bundle), "--prompts", str(bad), "--top-share", "0.3"]) == 2
    assert f"{bad}:2: 'prompt' is empty" in capsys.readouterr().err
    args = ["--model", str(fast_bundle), "--prompts", str(FIXTURE), "--top-share", "1.5"]
    assert main(args) == 2
    assert "within [0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: the budgets exclude each other
        main([*args[:4], "--top-share", "0.3", "--cost-share", "0.3"])


def test_chat_lines_are_scored_as_the_service_scores_a_chat(tmp_path: Path) -> None:
    chat = [
        {"role": "system", "content": "You are a careful proof assistant."},
        {"role": "user", "content": "Is 91 prime?"},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "user", "content": [{"type": "text", "text": "Prove it."},
                                     {"type": "image_url", "image_url": {"url": "x"}}]},
    ]
    path = tmp_path / "chats.jsonl"
    lines = [{"messages": chat, "model": "tierwise-auto"}, {"prompt": "hi", "scores": {}}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), "utf-8")
    expected = scored_text([
        ChatMessage("system", (ContentPart("text", "You are a careful proof assistant."),)),
        ChatMessage("user", (ContentPart("text", "Is 91 prime?"),)),
        ChatMessage("assistant", ()),
        ChatMessage("user", (ContentPart("text", "Prove it."), ContentPart("image_url", ""))),
    ])
    assert read_prompts(path) == [expected, "hi"]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ('{"messages": [{"role": "assistant", "content": "hello"}]}', "user message with text"),
        ('{"messages": [{"content": "hi"}]}', "string 'role'"),
        ('{"messages": [{"role": "user", "content": 3}]}', "string or a list of parts"),
        ('{"text": "hi"}', "a string 'prompt' or a 'messages' list"),
    ],
)
def test_bad_chat_lines_name_file_and_line(tmp_path: Path, line: str, error: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "fine"}\n' + line + "\n", "utf-8")
    with pytest.raises(InvalidData, match=f"{path}:2: .*{error}"):
        read_prompts(path)
