"""The `spadegan` command: one subcommand per job, each implemented in its own module.

Subcommand modules are imported only when used, so `spadegan --help` stays fast and a
missing optional extra (e.g. fastapi for `paint`) only matters for that command. Errors a
user can cause (SpadeganError) are printed as one line, exit code 2; Ctrl-C exits 130
(`errors.run_command`).
"""

from __future__ import annotations

import sys
from typing import Callable

from .errors import run_command


def _train(argv: list[str]) -> int:
    from .train.cli import train_main
    return train_main(argv)


def _test(argv: list[str]) -> int:
    from .train.cli import test_main
    return test_main(argv)


def _synthesize(argv: list[str]) -> int:
    from .synthesize import main
    return main(argv)


def _paint(argv: list[str]) -> int:
    from .app.cli import main
    return main(argv)


def _eval(argv: list[str]) -> int:
    from .evaluation.cli import main
    return main(argv)


def _export(argv: list[str]) -> int:
    from .engine.export import main
    return main(argv)


def _check_dataset(argv: list[str]) -> int:
    from .data.check import check_main
    return check_main(argv)


def _convert_labels(argv: list[str]) -> int:
    from .data.check import convert_main
    return convert_main(argv)


def _style_bank(argv: list[str]) -> int:
    from .synthesize.style_bank import build_main
    return build_main(argv)


def _make_landscapes(argv: list[str]) -> int:
    from .data.landscapes import main
    return main(argv)


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "train": (_train, "train a model (official train.py flags)"),
    "test": (_test, "synthesize a dataset's test split with a checkpoint (official test.py flags)"),
    "synthesize": (_synthesize, "turn label maps into images with a checkpoint or the built-in model"),
    "paint": (_paint, "the GauGAN painting app in your browser"),
    "eval": (_eval, "mIoU / accuracy / FID / KID of a trained model"),
    "export": (_export, "export a generator to ONNX, TorchScript or safetensors"),
    "style-bank": (_style_bank, "encode a VAE model's training photos for its random styles"),
    "check-dataset": (_check_dataset, "validate a dataset and summarise its classes"),
    "convert-labels": (_convert_labels, "turn colour label maps into id maps"),
    "make-landscapes": (_make_landscapes, "write the procedural landscapes dataset"),
}


def _usage() -> str:
    lines = ["usage: spadegan <command> [flags]   (spadegan <command> --help for its flags)", "",
             "commands:"]
    lines += [f"  {name:<16} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__
        print(__version__)
        return 0
    cmd = COMMANDS.get(argv[0])
    if cmd is None:
        print(f"spadegan: unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return run_command(argv[0], cmd[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
