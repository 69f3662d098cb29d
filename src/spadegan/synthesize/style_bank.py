"""The style bank of a VAE model: its encoder's style codes of training photos, for random styles.

SPADE draws a random style as z ~ N(0, I). The encoder's codes of real photos (its aggregate
posterior) need not fill N(0, I): with a small KL weight the style families sit in clusters,
random z fall between them, and a map's random styles look alike. A style bank holds the
encoder's (mu, logvar) of N training photos; a random style picks one of them and draws
z ~ N(mu, exp(logvar)) around it, sampling the aggregate posterior instead of the prior
("ex-post density estimation", Ghosh et al., ICLR 2020). Seeds stay reproducible: seed s
picks entry `randint(N)` and the noise from one `torch.Generator().manual_seed(s)`.

File: `<which_epoch>_style_bank.safetensors` beside `<which_epoch>_net_G.pth`, tensors `mu`
and `logvar` (N, z_dim) float16 and metadata: the sha256 of the encoder file it was built
with (a bank whose encoder changed is not used, with a warning), the photo count and where
they came from. `spadegan style-bank` writes one (`build_main`).
"""

from __future__ import annotations

import argparse
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from ..errors import SpadeganError, SpadeganWarning
from ..fileio import files_sha256, read_safetensors_metadata, read_state_dict, write_safetensors

#: Banks hold at most this many codes (a 256-dim bank of this size is 16 MB as float16).
MAX_BANK_ENTRIES = 32768
BANK_SUFFIX = "_style_bank.safetensors"
#: Where a random style comes from: "auto" = the bank when the checkpoint has one, else N(0, I).
STYLE_PRIORS = ("auto", "bank", "normal")


@dataclass(frozen=True)
class StyleBank:
    """(N, z_dim) means and log-variances of the encoder's codes of N photos."""

    mu: torch.Tensor
    logvar: torch.Tensor
    encoder_sha256: str = ""
    source: str = ""

    def __len__(self) -> int:
        return int(self.mu.shape[0])

    @property
    def z_dim(self) -> int:
        return int(self.mu.shape[1])

    def draw(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """(count, z_dim) float32 codes: entries picked at random, then z ~ N(mu, sigma) each."""
        idx = torch.randint(len(self), (count,), generator=generator)
        eps = torch.randn(count, self.z_dim, generator=generator)
        return self.mu[idx].float() + eps * torch.exp(0.5 * self.logvar[idx].float())

    def describe(self) -> str:
        return f"the style bank ({len(self)} encoded photos{', ' + self.source if self.source else ''})"


def bank_path(weights: str | os.PathLike) -> Path:
    """Where the bank of `<epoch>_net_G.pth` (or `_net_EMA`, `.safetensors`) lives."""
    weights = Path(weights)
    return weights.parent / (weights.name.split("_net_")[0] + BANK_SUFFIX)


def save_style_bank(bank: StyleBank, path: str | os.PathLike) -> Path:
    """Write `bank` as float16 tensors with its metadata, atomically."""
    write_safetensors(path, {"mu": bank.mu.half(), "logvar": bank.logvar.half()},
                      {"format": "spadegan-style-bank", "encoder_sha256": bank.encoder_sha256,
                       "source": bank.source})
    return Path(path)


def load_style_bank(path: str | os.PathLike, z_dim: int) -> StyleBank:
    """Read and check a bank file: both tensors (N, z_dim) with 1 <= N <= MAX_BANK_ENTRIES,
    finite; anything else raises a SpadeganError naming the file and the value."""
    path = Path(path)
    meta = read_safetensors_metadata(path)
    if meta.get("format") != "spadegan-style-bank":
        raise SpadeganError(f"{path} is not a spadegan style bank (metadata format {meta.get('format')!r})")
    tensors = read_state_dict(path, "style bank")
    mu, logvar = tensors.get("mu"), tensors.get("logvar")
    for name, t in (("mu", mu), ("logvar", logvar)):
        if t is None:
            raise SpadeganError(f"style bank {path} has no tensor {name!r}")
        if t.dim() != 2 or t.shape[1] != z_dim or not 1 <= t.shape[0] <= MAX_BANK_ENTRIES:
            raise SpadeganError(f"style bank {path}: {name} has shape {tuple(t.shape)}; this model needs "
                                f"(N, {z_dim}) with 1 <= N <= {MAX_BANK_ENTRIES}")
        if not t.is_floating_point() or not torch.isfinite(t).all():
            raise SpadeganError(f"style bank {path}: {name} holds non-finite or non-float values")
    if mu.shape != logvar.shape:
        raise SpadeganError(f"style bank {path}: mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} differ")
    return StyleBank(mu.float(), logvar.float(), meta.get("encoder_sha256", ""), meta.get("source", ""))


def style_bank_for(weights: str | os.PathLike, opt: Any, prior: str = "auto") -> StyleBank | None:
    """The bank random styles of the generator `weights` (options `opt`) draw from under
    `prior`, or None for N(0, I). "auto": the bank beside the weights when the model is a VAE
    and the bank was built with its encoder (the `<epoch>_net_E` file beside the weights); one
    built with another encoder is left aside with a warning. "bank": that bank, or a
    SpadeganError saying why not. "normal": None."""
    from ..checkpoint import companion_weights

    if prior not in STYLE_PRIORS:
        raise SpadeganError(f"style prior {prior!r}: choose one of {', '.join(STYLE_PRIORS)}")
    if not opt.use_vae:
        if prior == "bank":
            raise SpadeganError(f"--style_prior bank: {weights} was trained without --use_vae (no style codes)")
        return None
    path = bank_path(weights)
    if prior == "normal" or (prior == "auto" and not path.is_file()):
        return None
    if not path.is_file():
        raise SpadeganError(f"--style_prior bank: no style bank {path}; write one with `spadegan style-bank`")
    bank = load_style_bank(path, opt.z_dim)
    encoder = companion_weights(weights, "E")
    if encoder is not None and bank.encoder_sha256 and bank.encoder_sha256 != files_sha256([encoder]):
        msg = (f"style bank {path} was built with another encoder than {encoder.name}; rebuild it with "
               "`spadegan style-bank`")
        if prior == "bank":
            raise SpadeganError(msg)
        warnings.warn(msg + "; random styles draw z ~ N(0, I)", SpadeganWarning, stacklevel=2)
        return None
    return bank


def random_styles(count: int, z_dim: int, generator: torch.Generator, bank: StyleBank | None) -> torch.Tensor:
    """(count, z_dim) random style codes from `generator`: from the bank, or N(0, I) without one."""
    if bank is None:
        return torch.randn(count, z_dim, generator=generator)
    return bank.draw(count, generator)


@torch.no_grad()
def encode_photos(encoder: torch.nn.Module, batches: Iterable[torch.Tensor], device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) float32 on the CPU of batches of (B, 3, H, W) photos in [-1, 1]."""
    mus, logvars = [], []
    for images in batches:
        mu, logvar = encoder(images.to(device))
        mus.append(mu.float().cpu())
        logvars.append(logvar.float().cpu())
    if not mus:
        raise SpadeganError("no photos to encode for the style bank")
    return torch.cat(mus), torch.cat(logvars)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spadegan style-bank", description=(
        "Encode a VAE model's training photos into <which_epoch>_style_bank.safetensors beside its weights; "
        "random styles (synthesize, paint, eval) then draw from it instead of N(0, I)."))
    p.add_argument("--checkpoint", required=True, help="checkpoint folder of a --use_vae model")
    p.add_argument("--which_epoch", default="latest")
    p.add_argument("--dataroot", default=None, help="the training data (default: the model's saved --dataroot)")
    p.add_argument("--dataset_mode", default=None, help="default: the model's")
    p.add_argument("--label_dir", default=None, help="--dataset_mode custom: training label maps")
    p.add_argument("--image_dir", default=None, help="--dataset_mode custom: training photos")
    p.add_argument("--max_photos", type=int, default=4000, help="encode at most this many photos")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    return p


def bank_source(paths: Sequence[str], dataset_mode: str) -> str:
    """Where a bank's photos came from, in words (the first and last file names)."""
    names = [Path(p).name for p in paths]
    span = names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"
    return f"{dataset_mode} train photos {span}"


def _train_photos(opt: Any, args: argparse.Namespace, paths: list[str]) -> tuple[Iterable[torch.Tensor], str]:
    """Batches of the first --max_photos training photos at the model's size, in [-1, 1] as the
    dataset gives them (read as they are encoded: never all in memory), and the dataset mode;
    `paths` receives each photo's path as it is read."""
    from ..data.datasets import create_dataset, reading_options

    mode = args.dataset_mode or ("custom" if args.label_dir else opt.dataset_mode)
    changes: dict[str, Any] = {"dataset_mode": mode, "no_instance": True}
    if args.dataroot:
        changes["dataroot"] = args.dataroot
    if args.label_dir or args.image_dir:
        changes.update(label_dir=args.label_dir or "", image_dir=args.image_dir or "")
    dataset = create_dataset(reading_options(opt, "train", opt.crop_size, **changes))
    n = min(len(dataset), args.max_photos)

    def batches() -> Iterable[torch.Tensor]:
        from tqdm.auto import tqdm

        with tqdm(total=n, desc="encoding train photos", unit="img") as bar:
            for start in range(0, n, args.batch_size):
                items = [dataset[(i, 0)] for i in range(start, min(n, start + args.batch_size))]
                paths.extend(str(item["path"]) for item in items)
                bar.update(len(items))
                yield torch.stack([item["image"] for item in items])

    return batches(), mode


def build_main(argv: list[str] | None = None) -> int:
    """`spadegan style-bank`: encode the training photos, write the bank beside the weights."""
    from ..checkpoint import checkpoint_options, companion_weights, load_checkpoint, resolve_checkpoint
    from ..device import resolve_device

    args = build_parser().parse_args(argv)
    if not 1 <= args.max_photos <= MAX_BANK_ENTRIES:
        raise SpadeganError(f"--max_photos {args.max_photos}: choose 1..{MAX_BANK_ENTRIES}")
    weights, _ = resolve_checkpoint(args.checkpoint, "G", args.which_epoch)
    opt = checkpoint_options(args.checkpoint, which_epoch=args.which_epoch)
    if not opt.use_vae:
        raise SpadeganError(f"{args.checkpoint} was trained without --use_vae: it has no style codes to bank")
    e_path = companion_weights(weights, "E")
    if e_path is None:
        raise SpadeganError(f"no {args.which_epoch}_net_E.pth beside {weights}: the bank needs the style encoder")
    device = resolve_device(args.device)
    encoder = load_checkpoint(e_path, "E", opt=opt, device=device)
    paths: list[str] = []
    batches, mode = _train_photos(opt, args, paths)
    mu, logvar = encode_photos(encoder, batches, device)
    bank = StyleBank(mu, logvar, files_sha256([e_path]), bank_source(paths, mode))
    out = save_style_bank(bank, bank_path(weights))
    print(f"wrote {out}: {len(bank)} codes of {bank.source}; mean sigma {torch.exp(0.5 * logvar).mean():.3f}, "
          f"spread of mu between photos {mu.std(0).mean():.3f} (an encoder that ignores the photo: 1 and 0)")
    return 0
