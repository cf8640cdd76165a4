"""The LLM judge's prompt and verdict: ``Rating: [[N]]`` (N in 1..10) mapped to (N - 1) / 9.

Pure (no HTTP): shared by the gateway's shadow labels and ``tierwise label``, which each make the
calls their own way. Single-answer grading as MT-Bench's judge does it: the judge sees the
question, a reference answer (the top tier's) when the graded answer is not the reference
itself, and the answer, and ends its reply with ``Rating: [[N]]``. A template file may replace
the default; it must contain ``{question}``, ``{answer}`` and ``{reference}``.
"""

from __future__ import annotations

import re
from pathlib import Path

from router_model.errors import InvalidData

DEFAULT_TEMPLATE = (
    "[Instruction]\n"
    "Please act as an impartial judge and evaluate the quality of the response provided by an "
    "AI assistant to the user question displayed below. Your evaluation should consider "
    "correctness and helpfulness.{reference}Begin your evaluation by providing a short "
    "explanation. Be as objective as possible. After providing your explanation, you must rate "
    "the response on a scale of 1 to 10 by strictly following this format: \"[[rating]]\", for "
    "example: \"Rating: [[5]]\".\n\n"
    "[Question]\n{question}\n\n"
    "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
)

#: How the reference answer enters the template's ``{reference}`` slot.
REFERENCE_BLOCK = (
    " You will be given a reference answer and the assistant's answer. Compare the assistant's "
    "answer with the reference answer; the reference may itself be imperfect.\n\n"
    "[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]\n\n"
)

_FIELDS = ("{question}", "{answer}", "{reference}")
_RATING = re.compile(r"Rating:\s*\[\[\s*(\d{1,2})(?:\.\d+)?\s*\]\]", re.IGNORECASE)
#: The lowest and highest rating; a rating maps to a score in [0, 1].
MIN_RATING, MAX_RATING = 1, 10


def load_template(path: Path | None) -> str:
    """The judge template from ``path`` (None: ``DEFAULT_TEMPLATE``).

    Raises:
        InvalidData: when the file cannot be read or lacks one of the three fields.
    """
    if path is None:
        return DEFAULT_TEMPLATE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidData(f"judge template {path}: cannot read ({exc})") from exc
    missing = [f for f in _FIELDS if f not in text]
    if missing:
        raise InvalidData(f"judge template {path}: lacks {', '.join(missing)}")
    return text


def judge_prompt(question: str, answer: str, reference: str | None,
                 template: str = DEFAULT_TEMPLATE) -> str:
    """The judge's prompt for one answer (``reference`` None: graded without one).

    Fields are replaced one by one, so braces in the texts are kept as they are.
    """
    ref = "" if reference is None else REFERENCE_BLOCK.replace("{reference}", reference)
    return (template.replace("{reference}", ref).replace("{question}", question)
            .replace("{answer}", answer))


def parse_rating(reply: str) -> int | None:
    """The last ``Rating: [[N]]`` in a judge's reply with N in 1..10, None when there is none."""
    found = [int(m) for m in _RATING.findall(reply)]
    valid = [n for n in found if MIN_RATING <= n <= MAX_RATING]
    return valid[-1] if valid else None


def rating_score(rating: int) -> float:
    """A rating as a score in [0, 1]: (N - 1) / 9.

    Raises:
        InvalidData: when the rating is outside 1..10.
    """
    if not MIN_RATING <= rating <= MAX_RATING:
        raise InvalidData(f"rating {rating} is outside {MIN_RATING}..{MAX_RATING}")
    return (rating - MIN_RATING) / (MAX_RATING - MIN_RATING)
