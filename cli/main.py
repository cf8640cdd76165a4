"""``tierwise <command>``: one subcommand per job, each a part's ``main(argv)``.

Each runner imports its part only when its subcommand runs, so ``tierwise train`` never loads the
web stack and ``tierwise serve`` never loads scikit-learn or MLflow. This is also the one place
that joins the parts: ``serve`` gets the training side's registry client from here, since the
service never imports training.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from service.router.registry_watch import RegistryClient

#: Packages that only ``pip install 'tierwise[train]'`` brings.
TRAINING_PACKAGES = frozenset({"sklearn", "skl2onnx", "onnx", "mlflow", "matplotlib", "pandas"})
TRAIN_EXTRA_HINT = "pip install 'tierwise[train]'"


def _convert(argv: Sequence[str]) -> int:
    from training.sources import main

    return main(argv)


def _train(argv: Sequence[str]) -> int:
    from training.train import main

    return main(argv)


def _evaluate(argv: Sequence[str]) -> int:
    from training.evaluate_cli import main

    return main(argv)


def _knob(argv: Sequence[str]) -> int:
    from training.knob import main

    return main(argv)


def _retrain(argv: Sequence[str]) -> int:
    from training.retrain import main

    return main(argv)


def _ab_report(argv: Sequence[str]) -> int:
    from training.ab_report import main

    return main(argv)


def registry_client() -> RegistryClient:
    """The MLflow registry client of the training side (only for ``models:/`` references).

    Raises:
        ModuleNotFoundError: when the training extra is not installed.
    """
    from training import registry

    return cast("RegistryClient", registry)


def _serve(argv: Sequence[str]) -> int:
    from service.router.main import main

    return main(argv, registry=registry_client)


def _gateway(argv: Sequence[str]) -> int:
    from service.gateway.main import main

    return main(argv)


def _label(argv: Sequence[str]) -> int:
    from service.gateway.labeling import main

    return main(argv)


#: subcommand -> (runner, one-line help)
COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "convert": (_convert, "convert the shipped data sources into labeled JSONL"),
    "train": (_train, "train, calibrate, export and register router bundles"),
    "evaluate": (_evaluate, "evaluate a bundle on a labeled file against fixed routing"),
    "knob": (_knob, "fit the quality knob to a budget on a sample of your prompts"),
    "serve": (_serve, "serve routing decisions over HTTP and gRPC"),
    "gateway": (_gateway, "run the OpenAI-compatible forwarding gateway"),
    "retrain": (_retrain, "retrain on labeled traffic and gate promotion"),
    "ab-report": (_ab_report, "compare A/B arms recorded by the gateway"),
    "label": (_label, "label prompts with every tier's answer graded by an LLM judge"),
}


def _usage() -> str:
    lines = ["usage: tierwise <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    lines.append("\nRun 'tierwise <command> --help' for a command's options.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the subcommand's ``main``; returns its exit code (2 for a usage error)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        sys.stdout.write(_usage() + "\n")
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"tierwise: unknown command {name!r}\n\n{_usage()}\n")
        return 2
    try:
        return COMMANDS[name][0](rest)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TRAINING_PACKAGES:
            raise
        sys.stderr.write(
            f"tierwise {name}: needs the training packages ({exc.name} is missing): "
            f"{TRAIN_EXTRA_HINT}\n"
        )
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
