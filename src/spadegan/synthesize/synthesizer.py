"""`Synthesizer`: a trained generator turning label maps into images.

    from spadegan.synthesize import Synthesizer
    syn = Synthesizer.from_checkpoint("checkpoints/coco_pretrained")   # or None: built-in model
    image = syn.synthesize("label.png", instance="inst.png", seed=1)    # PIL image

The checkpoint's saved options (spadegan's opt.json or the official opt.txt / opt.pkl) say
how many classes, whether there is a dontcare class or instance maps, and the image size,
so nothing needs repeating. Label maps are decoded by `spadegan.synthesize.inputs` (8/16-bit
id images, 255 = dontcare, or colour images in the dataset's palette). By default synthesis
runs on the fast engine (`spadegan.engine`), which gives the training network's results (max
abs error <= 1e-4 in fp32); `use_engine=False` runs the training network itself (the
`networks` generator, with its SPADE implementation: `Synthesizer.network` says which).

Two levels: `synthesize` / `synthesize_batch` take any label input and decode it;
`synthesize_decoded` takes labels already decoded (`read_label`, or the paint app's decoder)
and only turns them into tensors, once.

Models trained with `--label_nc 0` read a label *image* (a sketch, edge map, depth or colour
layout; `input_nc` channels) instead of class ids, resized bilinearly as the datasets do.
The engine's per-class shortcuts do not apply to them, so such models run the training
network (with one warning when the engine was asked for).
"""

from __future__ import annotations

import os
import secrets
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..device import PRECISIONS, precision_policy, resolve_device
from ..errors import SpadeganError, SpadeganWarning
from ..layers.label_codes import LabelCodes
from ..visuals import image_to_numpy
from .inputs import (DONTCARE, ImageLike, LabelLike, LabelSpace, read_instance_ids, read_label_ids,
                     read_label_image, style_tensor)
from .style_bank import StyleBank, bank_path, random_styles, style_bank_for

#: The built-in model (trained on the procedural landscapes), shipped inside the package.
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "pretrained" / "landscapes"


def builtin_checkpoint() -> Path:
    """The built-in model's folder, or a SpadeganError saying there is none."""
    if (BUILTIN_DIR / "latest_net_G.pth").is_file():
        return BUILTIN_DIR
    raise SpadeganError(
        f"no built-in model is available in this installation ({BUILTIN_DIR} has no "
        "latest_net_G.pth); pass --checkpoint DIR_OR_FILE (a checkpoint folder with opt.txt or "
        "opt.json and latest_net_G.pth, e.g. checkpoints/<name>/, or the .pth file itself)")


def checkpoint_style_bank(path: Path, opt: Any, which_epoch: str, prior: str) -> StyleBank | None:
    """The style bank a checkpoint's random styles draw from (`style_bank_for`), said once."""
    from ..checkpoint import resolve_checkpoint
    from ..device import say_once

    weights, _ = resolve_checkpoint(path, "G", which_epoch)
    bank = style_bank_for(weights, opt, prior)
    if bank is not None:
        say_once(f"random styles draw from {bank.describe()} in {bank_path(weights)}; "
                 "--style_prior normal for z ~ N(0, I)")
    return bank


def ids_to_tensor(ids: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) ids -> (h, w) int64 tensor at `size`, resized nearest as the datasets resize labels."""
    t = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))
    if tuple(t.shape) == tuple(size):
        return t
    # float64 holds any id exactly
    return F.interpolate(t[None, None].double(), size=size, mode="nearest")[0, 0].long()


def _check_precision(precision: str | None, device: torch.device) -> str:
    policy = precision_policy(device)
    if precision in (None, "", "auto"):
        return policy.name
    if precision not in PRECISIONS:
        raise SpadeganError(f"--precision must be fp32, bf16, fp16 or auto, not {precision!r}")
    if precision not in ("fp32", policy.name):
        warnings.warn(f"--precision {precision} is likely slower than {policy.name} here: {policy.reason}",
                      SpadeganWarning, stacklevel=3)
    return precision


class Synthesizer:
    """A trained generator ready to turn label maps into images (see the module docstring).

    Attributes: `opt` (the checkpoint's options), `label_nc` (classes without dontcare),
    `label_channels` (ids accepted after dontcare mapping), `label_space` (the ids accepted
    and how label maps become them; None for image labels), `image_label` (a --label_nc 0
    model reading label images of `input_nc` channels), `width`/`height` (default output
    size), `use_vae`, `needs_instance`, `classes` (the palette: list of ClassInfo; empty for
    image labels), `device`, `precision`, `engine` (the SynthesisEngine or None when running
    the training network), `network` (which of the two runs, in words).

    An official OASIS generator (`networks.oasis.OASISGenerator`, or an OASIS run folder given
    to `from_checkpoint`) gives an `OASISSynthesizer` (`spadegan.synthesize.oasis`): the same
    API over the dataset's own label ids.
    """

    #: The Synthesizer of official OASIS generators; `spadegan.synthesize.oasis` registers
    #: `OASISSynthesizer` here when imported (the package's __init__ imports it).
    oasis_class: type | None = None

    def __new__(cls, G: Any = None, *args: Any, **kwargs: Any) -> "Synthesizer":
        from ..networks.oasis import OASISGenerator

        if cls is Synthesizer and isinstance(G, OASISGenerator):
            return super().__new__(cls._oasis())
        return super().__new__(cls)

    @classmethod
    def _oasis(cls) -> type:
        if Synthesizer.oasis_class is None:
            raise SpadeganError("spadegan.synthesize.oasis is not imported; import spadegan.synthesize")
        return Synthesizer.oasis_class

    def __init__(self, G: torch.nn.Module, E: torch.nn.Module | None = None, *,
                 device: str | torch.device | None = None, precision: str = "auto",
                 use_engine: bool = True, name: str = "", checkpoint: str | os.PathLike | None = None,
                 consume: bool = False, which_epoch: str = "latest", style_bank: StyleBank | None = None):
        """Wrap a generator with its options `G.opt` (as `networks.define_G` and `load_checkpoint` give it).

        Without the engine, G runs as it was built: its SPADE implementation (`G.spade_impl`)
        decides the form it is fed (`from_checkpoint` builds it for the device: --spade_impl
        auto is sparse on the CPU, dense on CUDA; `networks.define_G(opt)` builds dense there).
        `consume=True` lets the engine free G's weights as it converts them (lower peak
        memory; G is unusable afterwards); `from_checkpoint` does that with its own G.
        `checkpoint`/`which_epoch`: where the VAE encoder is loaded from on first use.
        `style_bank`: VAE models' random styles draw from it (`style_bank.StyleBank`), not N(0, I).
        """
        from ..data.palettes import classes_for_dataset_mode, palette_array
        from ..engine import SynthesisEngine

        if not hasattr(G, "opt"):
            raise SpadeganError("the generator carries no options (G.opt); build it with networks.define_G, "
                                "load it with spadegan.load_checkpoint or use Synthesizer.from_checkpoint")
        self.opt = opt = G.opt
        self.device = resolve_device(device)
        self.precision = _check_precision(precision, self.device)
        self.name = name or opt.name
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.which_epoch = which_epoch
        self.label_nc = opt.label_nc
        self.label_channels = opt.label_channels
        self.image_label = opt.image_label
        self.input_nc = opt.input_nc if self.image_label else 0
        self.use_vae = bool(opt.use_vae)
        self.use_3d_noise = bool(opt.use_3d_noise)
        self.needs_instance = not opt.no_instance
        self.netG = opt.netG
        if opt.netG == "spade":
            self.num_up = opt.num_up_layers
            self.height, self.width = G.sh * 2 ** self.num_up, G.sw * 2 ** self.num_up
        else:
            self.num_up = opt.resnet_n_downsample
            self.height, self.width = round(opt.crop_size / opt.aspect_ratio), opt.crop_size
        mode = opt.dataset_mode if opt.dataset_mode in ("ade20k", "coco", "cityscapes", "landscapes") else "custom"
        self.classes = [] if self.image_label else classes_for_dataset_mode(mode, opt.label_nc)
        self.palette = palette_array(self.classes, max(self.label_channels, 1))
        self.label_space = None if self.image_label else LabelSpace.for_options(opt, self.classes)
        self._E = E
        if style_bank is not None and (not self.use_vae or style_bank.z_dim != opt.z_dim):
            raise SpadeganError(f"a style bank of {style_bank.z_dim}-dim codes does not fit this model "
                                f"(use_vae={self.use_vae}, z_dim={opt.z_dim})")
        self.style_bank = style_bank
        self.engine = None
        self.G = None
        if use_engine and opt.netG == "spade" and not self.image_label and not opt.use_3d_noise:
            self.engine = SynthesisEngine.from_generator(G.to(self.device), precision=self.precision, consume=consume)
        else:
            self.G = G.to(self.device).eval()
            if use_engine:
                warnings.warn(f"the fast engine {self._no_engine_reason()}; running {self.network}",
                              SpadeganWarning, stacklevel=2)
        if self._E is not None:
            self._E = self._E.to(self.device).eval()

    def _no_engine_reason(self) -> str:
        if self.use_3d_noise:
            return "does not serve 3D-noise (OASIS) generators"
        if self.image_label:
            return "needs class-id label maps and this model reads label images (--label_nc 0)"
        return "supports --netG spade only"

    @property
    def network(self) -> str:
        """What synthesizes, in words: "the fast engine (bf16)", or the training network and
        its implementation, e.g. "the training network (sparse SPADE, fp32)"."""
        if self.engine is not None:
            return f"the fast engine ({self.precision})"
        if self.netG != "spade":
            return f"the training network ({self.netG} generator, {self.precision})"
        return f"the training network ({self.G.spade_impl} SPADE, {self.precision})"

    @property
    def sparse(self) -> bool:
        """Whether the training network runs the sparse SPADE: the implementation G was built
        with (`G.spade_impl`, see `networks.define_G`), which decides the form it is fed."""
        return self.G is not None and self.netG == "spade" and self.G.spade_impl == "sparse"

    # ---- construction -----------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path_or_dir: str | os.PathLike | None = None, device: str | torch.device | None = None,
                        precision: str = "auto", use_engine: bool = True, which_epoch: str = "latest",
                        opt: Any = None, style_prior: str = "auto", **oasis_flags: Any) -> "Synthesizer":
        """Load `<dir>/<which_epoch>_net_G.pth` (or a .pth file) with its saved options.

        `path_or_dir=None` uses the built-in landscapes model. `opt` overrides the saved
        options (for a bare .pth without opt.txt). The VAE encoder (`_net_E.pth`) is loaded
        lazily, the first time a style image is given. An official OASIS run
        (`<run>/models/<which_epoch>_EMA.pth`, e.g. which_epoch="best") gives an
        `OASISSynthesizer`; `oasis_flags` are its official test flags (dataset_mode,
        channels_G, ...) where the run has no opt.pkl / opt.txt. `style_prior` (VAE models):
        where random styles come from, "auto" (the checkpoint's style bank when it has one,
        saying so once, else N(0, I)), "bank" or "normal" (`style_bank.style_bank_for`).
        """
        from ..checkpoint import load_checkpoint
        from ..oasis_checkpoint import is_oasis_run

        if path_or_dir is not None and is_oasis_run(path_or_dir):
            return cls._oasis().from_checkpoint(path_or_dir, device, precision, use_engine, which_epoch, opt,
                                                    **oasis_flags)
        if oasis_flags:
            raise SpadeganError(f"{path_or_dir} is not an official OASIS run, so the OASIS flag(s) "
                                f"{', '.join(sorted(oasis_flags))} do not apply")

        path = builtin_checkpoint() if path_or_dir is None else Path(path_or_dir)
        device = resolve_device(device)  # --spade_impl auto: G's implementation for this device
        G = load_checkpoint(path, "G", opt=opt, which_epoch=which_epoch, impl="auto", device=device)
        return cls(G, device=device, precision=precision, use_engine=use_engine,
                   name="built-in landscapes" if path_or_dir is None else "", checkpoint=path, consume=True,
                   which_epoch=which_epoch, style_bank=checkpoint_style_bank(path, G.opt, which_epoch, style_prior))

    def encoder(self) -> torch.nn.Module:
        """The VAE style encoder, loaded from the checkpoint on first use."""
        if not self.use_vae:
            raise SpadeganError("this model was trained without --use_vae, so it takes no style image")
        if self._E is None:
            from ..checkpoint import load_checkpoint
            if self.checkpoint is None:
                raise SpadeganError("a style image needs the VAE encoder (E); pass it to Synthesizer(G, E)")
            self._E = load_checkpoint(self.checkpoint, "E", opt=self.opt,
                                      which_epoch=self.which_epoch).to(self.device).eval()
        return self._E

    # ---- inputs -------------------------------------------------------------------------
    def output_size(self, width: int | None = None, label_shape: tuple[int, int] | None = None) -> tuple[int, int]:
        """(H, W) of the output: the model's size, or `width` wide with the label's aspect ratio."""
        if width is None:
            return self.height, self.width
        m = 2 ** self.num_up
        if self.use_vae and width != self.width:
            raise SpadeganError(f"--size {width}: this VAE model's output size is fixed at "
                                f"{self.width}x{self.height} by its fc layer; leave --size out")
        if width < m or width % m:
            lo, hi = max(m, width // m * m), (width // m + 1) * m
            raise SpadeganError(f"--size {width} must be a multiple of {m} (the generator doubles the "
                                f"size {self.num_up} times); try {lo} or {hi}")
        ratio = (label_shape[0] / label_shape[1]) if label_shape else self.height / self.width
        h = max(m, int(round(width * ratio / m)) * m)
        return h, width

    def read_label(self, label: LabelLike, where: str | None = None) -> np.ndarray:
        """Any label input -> what the model reads: (H, W) int64 ids (`label_ids`), or for a
        --label_nc 0 model the (H, W, input_nc) float32 label image in [0, 1] (`label_image`)."""
        return self.label_image(label, where) if self.image_label else self.label_ids(label, where)

    def label_image(self, label: LabelLike, where: str | None = None) -> np.ndarray:
        """An image label (path, PIL image, (H, W[, C]) array, (C, H, W) tensor) -> (H, W, input_nc)
        float32 in [0, 1]; another channel count raises SpadeganError naming the file and both counts."""
        if not self.image_label:
            raise SpadeganError(f"this model reads class-id label maps (label_nc={self.label_nc}), not label "
                                "images; use label_ids")
        return read_label_image(label, self.input_nc, where)

    def label_ids(self, label: LabelLike, where: str | None = None) -> np.ndarray:
        """Any label input -> (H, W) int64 model ids (dontcare mapped), validated
        (`inputs.read_label_ids` under `label_space`)."""
        if self.label_space is None:
            raise SpadeganError("this model reads label images (--label_nc 0), not class ids; use label_image")
        return read_label_ids(label, self.label_space, where)

    def instance_ids(self, instance: LabelLike, where: str | None = None) -> np.ndarray:
        """An instance map (path, PIL image, array, tensor) -> (H, W) int64 instance ids."""
        return read_instance_ids(instance, where)

    def style_tensor(self, style: ImageLike, size: tuple[int, int], where: str | None = None) -> torch.Tensor:
        """A photo -> (3, H, W) in [-1, 1] at the model size (bicubic, as the datasets)."""
        return style_tensor(style, size, where)

    def label_tensor(self, label: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """A read label (`read_label`) at `size` (H, W): int64 ids resized nearest, or for image
        labels the (input_nc, H, W) image in [-1, 1] resized bilinearly (as the datasets)."""
        from ..data.transforms import resize_label_image

        return resize_label_image(label, size) if self.image_label else ids_to_tensor(label, size)

    # ---- synthesis ------------------------------------------------------------------------
    def noise(self, seeds: Sequence[int | None],
              region_seeds: Sequence[dict[int, int] | None] | None = None) -> torch.Tensor:
        """The 3D noise of a --use_3d_noise (OASIS) model: one vector per image from its seed
        (B, z_dim); with `region_seeds` ({class id: seed} per image) the classes listed get
        vectors of their own, (B, label_channels, z_dim), restyling just those regions."""
        if not self.use_3d_noise:
            raise SpadeganError("this model was trained without --use_3d_noise, so it takes no noise")
        zd = self.opt.z_dim
        base = [torch.randn(zd, generator=torch.Generator().manual_seed(
            int(s) if s is not None else secrets.randbits(63))) for s in seeds]
        if not region_seeds or not any(region_seeds):
            return torch.stack(base)
        table = torch.stack(base)[:, None, :].repeat(1, self.label_channels, 1)
        for b, regions in enumerate(region_seeds):
            for cls, seed in (regions or {}).items():
                if not 0 <= int(cls) < self.label_channels:
                    raise SpadeganError(f"region seed for class {cls}: this model knows classes "
                                        f"0..{self.label_channels - 1}")
                table[b, int(cls)] = torch.randn(zd, generator=torch.Generator().manual_seed(int(seed)))
        return table

    def latent(self, seeds: Sequence[int | None], styles: Sequence[ImageLike | None], size: tuple[int, int],
               region_seeds: Sequence[dict[int, int] | None] | None = None) -> torch.Tensor | None:
        """What G draws besides the labels, one per image: a VAE model's style code (random from
        the seed: from the style bank when there is one, else N(0, I); or sampled around the
        encoding of the style photo), a 3D-noise model's noise
        (`noise`), else None. A style or region seed the model cannot use raises SpadeganError."""
        from ..networks import sample_z

        if not self.use_vae:
            if any(s is not None for s in styles):
                raise SpadeganError("this model was trained without --use_vae, so it takes no style image")
            if region_seeds and any(region_seeds) and not self.use_3d_noise:
                raise SpadeganError("region seeds need a model trained with 3D noise (--use_3d_noise / --netD oasis)")
            return self.noise(seeds, region_seeds) if self.use_3d_noise else None
        zs = []
        for seed, style in zip(seeds, styles):
            g = torch.Generator().manual_seed(int(seed) if seed is not None else secrets.randbits(63))
            if style is None:
                zs.append(random_styles(1, self.opt.z_dim, g, self.style_bank))
            else:
                where = str(style) if isinstance(style, (str, os.PathLike)) else None
                mu, logvar = self.encode_style(self.style_tensor(style, size, where)[None])
                # the official test draws z ~ N(mu, sigma) from the encoded photo
                zs.append(sample_z(mu.cpu(), logvar.cpu(), generator=g))
        return torch.cat(zs)

    def encode_style(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), float32 on the device, of the style code of (B, 3, H, W) photos in [-1, 1]."""
        with torch.inference_mode():
            mu, logvar = self.encoder()(images.to(self.device))
        return mu.float(), logvar.float()

    def synthesize_batch(self, labels: Sequence[LabelLike], instances: Sequence[LabelLike | None] | None = None,
                         styles: Sequence[ImageLike | None] | None = None, seeds: Sequence[int | None] | None = None,
                         width: int | None = None, output: str = "pil",
                         region_seeds: Sequence[dict[int, int] | None] | None = None) -> list:
        """Several label maps at once (one forward pass); returns PIL images or (H,W,3) uint8 arrays.

        `region_seeds` (3D-noise models): per image, {class id: seed} for classes that get
        noise of their own (see `noise`)."""
        n = len(labels)
        if n == 0:
            return []
        instances = list(instances) if instances is not None else [None] * n
        styles = list(styles) if styles is not None else [None] * n
        seeds = list(seeds) if seeds is not None else [None] * n
        if not (len(instances) == len(styles) == len(seeds) == n):
            raise SpadeganError("labels, instances, styles and seeds must be equally long")
        read = [self.read_label(lab) for lab in labels]
        size = self.output_size(width, read[0].shape[:2] if width is not None else None)
        inst = [None if i is None else self.instance_ids(i) for i in instances]
        return self.synthesize_decoded(read, inst, styles, seeds, size, output, region_seeds)

    def synthesize_decoded(self, labels: Sequence[np.ndarray], instances: Sequence[np.ndarray | None] | None = None,
                           styles: Sequence[ImageLike | None] | None = None,
                           seeds: Sequence[int | None] | None = None, size: tuple[int, int] | None = None,
                           output: str = "pil", region_seeds: Sequence[dict[int, int] | None] | None = None
                           ) -> list:
        """Labels already decoded -> images at `size` (H, W), default the model's, in one forward pass.

        `labels`: what `read_label` returns ((H, W) ids of `label_space`, or (H, W, input_nc)
        float32 label images), or what the paint app's decoder returns; they are not checked
        again, only made tensors (once) and resized. `instances`: (H, W) instance ids or None
        (class boundaries then serve as instance boundaries). `styles`/`seeds`/`region_seeds`:
        as in `synthesize`. Returns PIL images, or (H, W, 3) uint8 arrays with output='numpy'.
        """
        n = len(labels)
        size = size or (self.height, self.width)
        instances = list(instances) if instances is not None else [None] * n
        styles = list(styles) if styles is not None else [None] * n
        seeds = list(seeds) if seeds is not None else [None] * n
        lab = torch.stack([self.label_tensor(a, size) for a in labels])
        inst = None
        if self.needs_instance and not self.image_label:
            # without an instance map, class boundaries serve as instance boundaries
            inst = torch.stack([ids_to_tensor(i, size) if i is not None else t for i, t in zip(instances, lab)])
        z = self.latent(seeds, styles, size, region_seeds)
        arrs = image_to_numpy(self.generate(lab, inst, z, size))
        return list(arrs) if output == "numpy" else [Image.fromarray(a) for a in arrs]

    def synthesize(self, label: LabelLike, instance: LabelLike | None = None, style: ImageLike | None = None,
                   seed: int | None = None, width: int | None = None, output: str = "pil",
                   region_seeds: dict[int, int] | None = None) -> Image.Image | np.ndarray:
        """One label map -> a PIL image (or (H, W, 3) uint8 with output='numpy').

        `instance`: instance ids (models trained with instance maps; class boundaries are
        used when omitted). `style`: a photo whose style a VAE model copies. `seed`: the
        random style of a VAE model or the 3D noise of an OASIS-style model (ignored
        otherwise). `region_seeds` ({class id: seed}, 3D-noise models): restyle just those
        classes' regions. `width`: output width (height from the label's aspect ratio),
        default the training size.
        """
        return self.synthesize_batch([label], [instance], [style], [seed], width=width, output=output,
                                     region_seeds=[region_seeds])[0]

    def generate(self, lab: torch.Tensor, inst: torch.Tensor | None = None, z: torch.Tensor | None = None,
                 size: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, H, W) model ids (+ instance ids, + VAE codes) -> (B, 3, H', W') float images in [-1, 1].
        For --label_nc 0 models `lab` is the (B, input_nc, H, W) label image in [-1, 1].

        The tensor-level step under `synthesize`: no validation or resizing of the inputs.
        `size` (H', W'): the output size, default the model's (the training network then
        reads label maps of any size, as in the official test). Runs under inference_mode
        in the Synthesizer's precision.
        """
        size = size or (self.height, self.width)
        if self.engine is not None:
            with torch.inference_mode():
                return self.engine(lab, inst, z, size).float()
        from ..networks import at_size
        G = at_size(self.G, size) if self.netG == "spade" else self.G
        if self.image_label:
            seg = lab.to(self.device, torch.float32)
        else:
            codes = LabelCodes.from_label(lab.to(self.device), None if inst is None else inst.to(self.device),
                                          self.opt)
            seg = codes if self.sparse else codes.semantics()  # the form G was built to read
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype or torch.float32,
                                                    enabled=dtype is not None):
            return G(seg, None if z is None else z.to(self.device)).float()

    def session(self, seed: int | None = None, style: ImageLike | None = None, **kwargs: Any) -> Any:
        """A `synthesize.session.PaintSession`: fast previews of edited label maps (`update`),
        then the exact image (`refine`, what `synthesize` gives with this seed and style)."""
        from .session import PaintSession
        return PaintSession(self, seed, style, **kwargs)

    # ---- helpers for galleries ---------------------------------------------------------
    def colorize(self, ids: np.ndarray) -> np.ndarray:
        """Model ids -> palette colours (H, W, 3) uint8; the dontcare class is black."""
        from ..data.palettes import label_to_color
        ids = np.asarray(ids).astype(np.int64)
        shown = np.where((ids == self.label_nc) & bool(self.opt.contain_dontcare_label)
                         & (self.opt.dataset_mode != "ade20k"), DONTCARE, ids)
        return label_to_color(shown, self.palette)

    def label_picture(self, label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """A read label (`read_label`) as an (H, W, 3) uint8 picture at `size`: palette colours, or the
        label image itself."""
        if self.image_label:
            return image_to_numpy(self.label_tensor(label, size))[0]
        return self.colorize(ids_to_tensor(label, size).numpy())
