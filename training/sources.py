"""Converters from the shipped sources in ``data/sources/`` to the labeled format, and ``convert``.

Each converter validates through ``training.data.parse_row``, so a bad source line fails with the
same ``InvalidData`` ("file:line: ...") as a bad labeled file. Ids and groups:

* RouteLLM MMLU: id ``mmlu/<domain>/<i>``, group ``mmlu/<domain>``; GSM8K: ``gsm8k/<i>``,
  group ``gsm8k`` (``i`` is the 0-based record index in the CSV, as pandas numbers it).
* LLMRouter: id ``llmrouter/<i>`` (0-based item index); group from ``llmrouter_family``.
* MMLU-Pro: id ``mmlu_pro/<src>/<question_id>``, group ``mmlu_pro/<category>``. The ``src``
  part (``ori_mmlu-<domain>``, ``stemez-...``, ``theoremQA-...``, ``scibench-...``) is read back
  by ``source_of``; ``mmlu_origin`` maps ``ori_mmlu-<domain>`` rows to ``mmlu/<domain>`` so
  training can drop them when that MMLU domain is held out (they are rewrites of its questions).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from router_model.errors import InvalidData
from training.data import LabeledRow, data_sha256, parse_row, write_atomic, write_labeled

logger = logging.getLogger(__name__)

#: RouteLLM's two models, spelt as its CSV headers spell them.
ROUTELLM_WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
ROUTELLM_STRONG = "gpt-4-1106-preview"
#: Bump when a converter's output changes, so ``convert_all`` rewrites up-to-date-looking files.
CONVERTER_VERSION = 1

_BOOL = {"True": 1.0, "False": 0.0}
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: LLMRouter task families recognised from benchmark prompt templates, first match wins.
_FAMILY_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # MBPP ("Write a python function ...") and HumanEval (a Python signature with docstring)
    ("code", re.compile(r"\A\s*(?:Write a (?:python )?function\b|from typing import\b)"
                        r"|^\s*def \w+\(", re.MULTILINE)),
    # zebra puzzles: "Q: There are 3 houses in a row ..." / "... 2 houses next to each other"
    ("logic", re.compile(r"\AQ: There are \d+ houses\b")),
    # GSM8K with the chain-of-thought suffix "... put you final answer in \boxed{...}."
    ("math", re.compile(r"\\boxed\{")),
)


def _csv_rows(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(1-based first line, record) of a CSV whose header has ``columns``; records span lines."""
    try:
        fh = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise InvalidData(f"{path}: cannot read source ({exc})") from exc
    with fh:
        reader = csv.DictReader(fh)
        start = 1
        try:
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise InvalidData(f"{path}:1: header lacks columns {missing}")
            start = reader.line_num + 1
            for record in reader:
                yield start, record
                start = reader.line_num + 1
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InvalidData(f"{path}:{start}: bad CSV ({exc})") from exc


def _routellm_csv(path: Path, id_prefix: str, group: str) -> list[LabeledRow]:
    rows: list[LabeledRow] = []
    columns = ("prompt", ROUTELLM_WEAK, ROUTELLM_STRONG)
    for i, (line, rec) in enumerate(_csv_rows(path, columns)):
        where = f"{path}:{line}"
        if any(rec.get(c) is None for c in columns):
            raise InvalidData(f"{where}: record has fewer fields than the header")
        try:
            scores = {m: _BOOL[rec[m]] for m in (ROUTELLM_WEAK, ROUTELLM_STRONG)}
        except KeyError as exc:
            raise InvalidData(f"{where}: correctness must be True or False, got {exc}") from exc
        obj = {"prompt": rec["prompt"], "scores": scores, "id": f"{id_prefix}/{i}", "group": group}
        rows.append(parse_row(obj, where))
    return rows


def convert_routellm_mmlu(src_dir: Path) -> list[LabeledRow]:
    """RouteLLM's ``mmlu_<domain>.csv`` files: one row per question, both models scored 1/0.

    Raises:
        InvalidData: when the folder has no such file or a record is malformed.
    """
    files = sorted(src_dir.glob("mmlu_*.csv"))
    if not files:
        raise InvalidData(f"{src_dir}: no mmlu_<domain>.csv files")
    rows: list[LabeledRow] = []
    for path in files:
        domain = path.stem.removeprefix("mmlu_")
        rows.extend(_routellm_csv(path, f"mmlu/{domain}", f"mmlu/{domain}"))
    return rows


def convert_routellm_gsm8k(csv_path: Path) -> list[LabeledRow]:
    """RouteLLM's GSM8K CSV: the two correctness columns (response texts are ignored).

    Raises:
        InvalidData: when the file is missing or a record is malformed.
    """
    return _routellm_csv(csv_path, "gsm8k", "gsm8k")


def _json_array_items(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based line where it starts, item) for each item of a top-level JSON array."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidData(f"{path}: cannot read source ({exc})") from exc
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if text[pos:pos + 1] != "[":
        raise InvalidData(f"{path}:{text.count(chr(10), 0, pos) + 1}: expected a JSON array")
    pos = _skip_ws(text, pos + 1)
    line, counted = 1, 0  # newlines are counted incrementally: items are yielded in order
    while text[pos:pos + 1] != "]":
        line, counted = line + text.count("\n", counted, pos), pos
        try:
            item, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InvalidData(f"{path}:{exc.lineno}: bad JSON ({exc.msg})") from exc
        yield line, item
        pos = _skip_ws(text, end)
        if text[pos:pos + 1] == ",":
            pos = _skip_ws(text, pos + 1)
        elif text[pos:pos + 1] != "]":
            where = line + text.count("\n", counted, pos)
            raise InvalidData(f"{path}:{where}: expected ',' or ']'")


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def llmrouter_family(question: str, cluster_id: int) -> str:
    """The group of an LLMRouter query: a task family its template shows, else its cluster.

    Only templates that identify a benchmark exactly are used (code, zebra logic puzzles, GSM8K
    with the boxed-answer instruction); QA, reading and science prompts have no such marker, so
    they keep the source's own ``cluster_id`` rather than a guessed label.
    """
    for family, pattern in _FAMILY_PATTERNS:
        if pattern.search(question):
            return f"llmrouter/{family}"
    return f"llmrouter/cluster{cluster_id}"


def convert_llmrouter(train_json: Path) -> list[LabeledRow]:
    """LLMRouter's ``train.json``: each query with its nine models' scores.

    Raises:
        InvalidData: when the file is not a JSON array of {question, scores, cluster_id}.
    """
    rows: list[LabeledRow] = []
    for i, (line, item) in enumerate(_json_array_items(train_json)):
        where = f"{train_json}:{line}"
        if not isinstance(item, dict):
            raise InvalidData(f"{where}: expected an object, got {type(item).__name__}")
        cluster = item.get("cluster_id")
        if isinstance(cluster, bool) or not isinstance(cluster, int):
            raise InvalidData(f"{where}: 'cluster_id' must be an integer, got {cluster!r}")
        question = item.get("question")
        group = llmrouter_family(question, cluster) if isinstance(question, str) else None
        obj = {"prompt": question, "scores": item.get("scores"), "id": f"llmrouter/{i}",
               "group": group}
        rows.append(parse_row(obj, where))
    return rows


def mmlu_pro_prompt(question: str, options: Sequence[str]) -> str:
    """The question with lettered options, laid out as RouteLLM's MMLU prompts are."""
    lettered = "\n".join(f"{_LETTERS[i]}. {opt}" for i, opt in enumerate(options))
    return f"{question}\n{lettered}\nAnswer:"


def _mmlu_pro_row(obj: Any, where: str) -> LabeledRow:
    if not isinstance(obj, dict):
        raise InvalidData(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("category", "src", "question"):
        if not isinstance(obj.get(key), str) or not obj[key]:
            raise InvalidData(f"{where}: '{key}' must be a non-empty string")
    qid, options = obj.get("question_id"), obj.get("options")
    if isinstance(qid, bool) or not isinstance(qid, int | str):
        raise InvalidData(f"{where}: 'question_id' must be an integer or string, got {qid!r}")
    if (not isinstance(options, list) or not 2 <= len(options) <= len(_LETTERS)
            or not all(isinstance(o, str) for o in options)):
        raise InvalidData(f"{where}: 'options' must be a list of 2 to 26 strings")
    return parse_row({
        "prompt": mmlu_pro_prompt(obj["question"], options),
        "scores": obj.get("correct"),
        "id": f"mmlu_pro/{obj['src']}/{qid}",
        "group": f"mmlu_pro/{obj['category']}",
    }, where)


def convert_mmlu_pro(jsonl_gz: Path) -> list[LabeledRow]:
    """MMLU-Pro's per-question outputs: each model's ``correct`` (1/0) as its score.

    Raises:
        InvalidData: when the file is unreadable or a line is malformed.
    """
    try:
        raw = gzip.decompress(jsonl_gz.read_bytes())
    except (OSError, EOFError) as exc:
        raise InvalidData(f"{jsonl_gz}: cannot read source ({exc})") from exc
    rows: list[LabeledRow] = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{jsonl_gz}:{number}"
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidData(f"{where}: bad JSON ({exc})") from exc
        rows.append(_mmlu_pro_row(obj, where))
    return rows


def source_of(row: LabeledRow) -> str | None:
    """The MMLU-Pro ``src`` a row came from (e.g. ``ori_mmlu-anatomy``); None for other rows."""
    if row.id is None or not row.id.startswith("mmlu_pro/"):
        return None
    parts = row.id.split("/")
    return parts[1] if len(parts) == 3 else None


def mmlu_origin(row: LabeledRow) -> str | None:
    """``mmlu/<domain>`` when a row is an MMLU-Pro rewrite of an MMLU question, else None."""
    src = source_of(row)
    if src is None or not src.startswith("ori_mmlu-"):
        return None
    return "mmlu/" + src.removeprefix("ori_mmlu-")


#: output file -> (source files under the sources folder, converter over the sources folder)
_OUTPUTS: dict[str, tuple[Callable[[Path], list[Path]], Callable[[Path], list[LabeledRow]]]] = {
    "routellm_mmlu.jsonl": (
        lambda s: sorted((s / "routellm" / "mmlu").glob("mmlu_*.csv")),
        lambda s: convert_routellm_mmlu(s / "routellm" / "mmlu"),
    ),
    "routellm_gsm8k.jsonl": (
        lambda s: [s / "routellm" / "gsm8k" / "gsm8k_responses.csv"],
        lambda s: convert_routellm_gsm8k(s / "routellm" / "gsm8k" / "gsm8k_responses.csv"),
    ),
    "llmrouter.jsonl": (
        lambda s: [s / "llmrouter" / "train.json"],
        lambda s: convert_llmrouter(s / "llmrouter" / "train.json"),
    ),
    "mmlu_pro.jsonl": (
        lambda s: [s / "mmlu_pro" / "mmlu_pro_outputs.jsonl.gz"],
        lambda s: convert_mmlu_pro(s / "mmlu_pro" / "mmlu_pro_outputs.jsonl.gz"),
    ),
}


def _stamp_path(out: Path) -> Path:
    return out.with_name(out.name + ".source.json")


def _stamp(sources: list[Path]) -> dict[str, Any]:
    return {"converter_version": CONVERTER_VERSION, "source_sha256": data_sha256(sources)}


def _up_to_date(out: Path, stamp: dict[str, Any]) -> bool:
    """True when ``out`` exists, unedited, and was converted from these bytes by this version."""
    try:
        saved = json.loads(_stamp_path(out).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if not isinstance(saved, dict) or not out.is_file():
        return False
    same = all(saved.get(k) == v for k, v in stamp.items())
    return same and saved.get("output_sha256") == data_sha256([out])


def convert_all(sources_dir: Path, out_dir: Path, *, force: bool = False) -> dict[str, Path]:
    """Convert every shipped source into ``out_dir``; files already up to date are kept.

    A sidecar ``<file>.source.json`` records the sources' hash, the converter version and the
    output's hash; each file and sidecar is written atomically.

    Raises:
        InvalidData: when a source is missing or malformed.
    """
    written: dict[str, Path] = {}
    for name, (source_files, convert) in _OUTPUTS.items():
        out = out_dir / name
        stamp = _stamp(source_files(sources_dir))
        if not force and _up_to_date(out, stamp):
            logger.info("%s: up to date", out)
        else:
            count = write_labeled(convert(sources_dir), out)
            stamp["output_sha256"] = data_sha256([out])
            stamp["rows"] = count
            write_atomic(_stamp_path(out), json.dumps(stamp, indent=1, sort_keys=True).encode())
            logger.info("%s: %d rows", out, count)
        written[name.removesuffix(".jsonl")] = out
    return written


def ensure_converted(sources_dir: Path, out_dir: Path) -> dict[str, Path]:
    """The converted files, converting only what is missing or stale (``convert_all``).

    Raises:
        InvalidData: when a source is missing or malformed.
    """
    return convert_all(sources_dir, out_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tierwise convert``; returns 0, or 1 when a source is malformed."""
    from router_model.logs import configure_logging
    from router_model.settings import Settings

    settings = Settings()
    parser = argparse.ArgumentParser(prog="tierwise convert", 
                                     description="Convert data/sources into labeled JSONL.")
    parser.add_argument("--sources", type=Path, default=settings.training.sources_dir,
                        help="folder of the shipped sources (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=settings.training.labeled_dir,
                        help="folder for the labeled JSONL files (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rewrite files even if up to date")
    args = parser.parse_args(argv)
    configure_logging(settings.log_format, settings.log_level)
    try:
        convert_all(args.sources, args.out, force=args.force)
    except InvalidData as exc:
        logger.error("convert failed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
