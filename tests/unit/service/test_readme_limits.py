"""docs/router.md's service section states the service's limits as the settings define them."""

from __future__ import annotations

from pathlib import Path

from router_model.settings import ServiceSettings

ROUTER_DOC = Path(__file__).resolve().parents[3] / "docs" / "router.md"


def router_service_section() -> str:
    text = ROUTER_DOC.read_text("utf-8")
    start = text.index("# The router service")
    return " ".join(text[start : text.index("\n## ", start + 1)].split())


def test_the_limits_and_what_happens_past_them_are_documented() -> None:
    section, limits = router_service_section(), ServiceSettings()
    assert limits.max_body_bytes == 2**20 and "a body over 1 MiB" in section
    assert f"a scored text over {limits.max_prompt_chars:,} characters" in section
    assert f"a batch of more than {limits.max_batch_items} requests" in section
    for name in ("max_body_bytes", "max_prompt_chars", "max_batch_items"):
        assert f"__{name.upper()}" in section
    # past the character limit a prompt is refused, unlike the encoder's window, which cuts
    assert "Past the limits nothing is cut, the request is refused" in section
    assert "413 `prompt_too_large`" in section
