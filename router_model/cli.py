"""The ``tierwise`` console command: one subcommand per job, each a module's ``main(argv)``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

#: subcommand -> (module whose ``main(argv)`` runs it, one-line help). Modules are imported only
#: when their subcommand runs, so ``tierwise train`` never loads the web stack and vice versa.
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("training.sources", "convert the shipped data sources into labeled JSONL"),
    "train": ("training.train", "train, calibrate, export and register router bundles"),
    "evaluate": (
        "training.evaluate_cli",
        "evaluate a bundle on a labeled file against fixed routing",
    ),
    "knob": ("training.knob", "fit the quality knob to a budget on a sample of your prompts"),
    "serve": ("service.__main__", "serve routing decisions over HTTP and gRPC"),
    "gateway": ("service.gateway_main", "run the OpenAI-compatible forwarding gateway"),
    "retrain": ("training.retrain", "retrain on labeled traffic and gate promotion"),
    "ab-report": ("training.ab_report", "compare A/B arms recorded by the gateway"),
}


def _usage() -> str:
    lines = ["usage: tierwise <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    lines.append("\nRun 'tierwise <command> --help' for a command's options.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the subcommand's ``main``; returns its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        sys.stdout.write(_usage() + "\n")
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"tierwise: unknown command {name!r}\n\n{_usage()}\n")
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    code: int = module.main(rest)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
