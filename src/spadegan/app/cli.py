"""`spadegan paint`: start the painting app for a checkpoint, an official OASIS run or the built-in model.

An OASIS run (`--checkpoint checkpoints/<name> --which_epoch best`, plus its official test
flags where it has no opt.pkl) is painted in its dataset's own ids; the page can re-roll one
class's appearance (the `region_seeds` field of `spadegan.app.server`)."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import SpadeganError
from ..oasis_checkpoint import add_oasis_flags, oasis_flags
from ..synthesize.style_bank import STYLE_PRIORS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spadegan paint",
                                description="The GauGAN painting app in your browser.")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint folder or *_net_G.pth, or an official OASIS run folder (models/<tag>_EMA.pth; "
                        "--which_epoch best) (default: the built-in landscapes model)")
    p.add_argument("--which_epoch", default="latest", help="which saved epoch to load")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 exposes the app to the network")
    p.add_argument("--port", type=int, default=7860, help="port (0 picks a free one)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="inference precision of the fast engine")
    p.add_argument("--style_prior", default="auto", choices=STYLE_PRIORS,
                   help="VAE models: random styles from the checkpoint's style bank, N(0, I) (normal), or "
                        "auto: the bank when there is one")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    p.add_argument("--queue_size", type=int, default=8, help="requests allowed to wait before 503")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds a request may wait for the model before it gets 504 (0: no limit)")
    p.add_argument("--paint_cache_mb", type=float, default=512,
                   help="memory for the painters' stroke-preview caches (one per open page, least recently "
                        "used dropped first; a dropped painter's next stroke is a full pass); 0 disables previews")
    add_oasis_flags(p)
    return p


def build_backend(checkpoint: str | None, device: str | None = None, precision: str = "auto",
                  which_epoch: str = "latest", cache_bytes: int | None = None, style_prior: str = "auto",
                  **oasis_flags: Any):
    """The app's model adapter for a checkpoint, or for the built-in model when None;
    `oasis_flags`: an official OASIS run's test flags (where it has no opt.pkl)."""
    from ..synthesize import Synthesizer
    from .adapter import AppBackend
    try:
        syn = Synthesizer.from_checkpoint(checkpoint, device=device, precision=precision,
                                          which_epoch=which_epoch, style_prior=style_prior, **oasis_flags)
    except SpadeganError as e:
        if checkpoint is None:
            raise SpadeganError(f"{e}. Pass a model with --checkpoint DIR_OR_FILE "
                                "(a checkpoints/<name> folder or a latest_net_G.pth)") from None
        raise
    return AppBackend(syn) if cache_bytes is None else AppBackend(syn, cache_bytes=cache_bytes)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .server import serve
    if args.paint_cache_mb < 0:
        raise SpadeganError(f"--paint_cache_mb must be >= 0, got {args.paint_cache_mb}")
    backend = build_backend(args.checkpoint, args.device, args.precision, args.which_epoch,
                            cache_bytes=int(args.paint_cache_mb * 2**20), style_prior=args.style_prior,
                            **oasis_flags(args))
    serve(backend, host=args.host, port=args.port, open_browser=args.open, queue_size=args.queue_size,
          timeout_s=args.timeout or None)
    return 0
