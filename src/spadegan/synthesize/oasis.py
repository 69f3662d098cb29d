"""`OASISSynthesizer`: the `Synthesizer` API over an official OASIS run (boschresearch/OASIS).

    syn = Synthesizer.from_checkpoint("checkpoints/oasis_ade20k_pretrained", which_epoch="best")
    ids = syn.label_ids("ADE_val_00000001.png")          # the dataset's own ids, 255 kept
    image = syn.synthesize("ADE_val_00000001.png", seed=1)
    x = syn.generate(torch.from_numpy(ids)[None], None, z, size=(256, 256))   # z: (1, z_dim)

`Synthesizer.from_checkpoint` (and `Synthesizer(G)` with an `OASISGenerator`) hands official
OASIS runs to this class; `load_checkpoint` reads the run (`oasis_checkpoint.load_oasis_run`:
the EMA generator of test.py, options from opt.pkl / opt.txt or the official test flags).

* Labels are the dataset's own ids (ADE20K 0..150, COCO-Stuff 0..181, Cityscapes labelIds
  0..34) with 255 = dontcare kept as 255 (`LabelSpace.dataset_ids`): ADE20K's 150 is a real
  class here, not dontcare. `generate` maps them to OASIS' channels
  (`oasis_checkpoint.oasis_label_channels`: dontcare and ADE20K's 'other' are channel 0) and
  makes the one-hot input (`oasis_semantics`). Label maps of another size are resized with
  PIL's nearest neighbour, as the official loader resizes them.
* Noise: `z` is (B, z_dim) (one vector per image, the official 3D noise), a (B, z_dim, H, W)
  noise map, or a per-class table (B, semantic_nc, z_dim) indexed by OASIS channel, which
  `generate` spreads over each class's pixels. `noise(seeds, region_seeds)` makes the table
  when `region_seeds` ({dataset id: seed}) re-roll some classes: only their pixels' vectors
  change (ids sharing a channel, ADE20K's 0 and 255, share the vector).
* Sizes: the generator is fully convolutional after its start map (crop_size / 32 wide,
  aspect ratio from the dataset class), so another output size (multiples of 32) runs a view
  of the same weights started from another map (`generator_at`).
* Engine: with `use_engine` (the default) and fp32, `engine.oasis_engine.OASISEngine` runs
  the generator (same images within ~1e-5, every noise form above; `oasis_engine`); other
  precisions run the OASIS network as it is, said once. `engine` stays None (the SPADE
  engine's stroke previews do not apply).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from ..device import resolve_device, say_once
from ..engine.oasis_engine import OASIS_ENGINE_PRECISIONS, OASISEngine
from ..errors import SpadeganError
from ..networks.oasis import OASISGenerator
from ..oasis_checkpoint import OASIS_DATASETS, oasis_data_options, oasis_label_channels, oasis_semantics
from .inputs import LabelSpace
from .synthesizer import Synthesizer, _check_precision


def resize_ids_nearest(ids: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) ids -> (h, w) int64 at `size`, with PIL's NEAREST (the official OASIS loader's
    `TF.resize(label, size, Image.NEAREST)`; torch's nearest picks other pixels)."""
    arr = ids.cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    if tuple(arr.shape) == tuple(size):
        return torch.from_numpy(np.array(arr, dtype=np.int64))
    im = Image.fromarray(np.ascontiguousarray(arr, dtype=np.int32)).resize((size[1], size[0]), Image.NEAREST)
    return torch.from_numpy(np.asarray(im).astype(np.int64))


def generator_at(G: OASISGenerator, size: tuple[int, int]) -> OASISGenerator:
    """The OASIS generator `G` producing (H, W) = `size` images: G itself at its trained size,
    else a shallow copy sharing G's modules and weights whose start map is (H, W) / 2**(blocks-1)
    (the generator is fully convolutional after that map). Sizes must be multiples of 32
    (the official 6 blocks)."""
    oopt = G.oasis_opt
    m = 2 ** (oopt.num_res_blocks - 1)
    h, w = int(size[0]), int(size[1])
    if h < m or w < m or h % m or w % m:
        raise SpadeganError(f"size {w}x{h}: an OASIS generator's output size must be a multiple of {m} both ways "
                            f"(it doubles its start map {oopt.num_res_blocks - 1} times)")
    if (h, w) == tuple(oopt.output_size):
        return G
    opt = dataclasses.replace(oopt, crop_size=w, aspect_ratio=w / h)
    if opt.latent_size != (h // m, w // m):  # float rounding in the official formula
        raise SpadeganError(f"size {w}x{h} cannot be expressed as an OASIS crop_size / aspect_ratio")
    view = copy.copy(G)  # a new module object over the same submodules and parameters
    view.oasis_opt = opt
    return view


class OASISSynthesizer(Synthesizer):
    """A `Synthesizer` running an official OASIS generator (see the module docstring).

    Beyond the Synthesizer's attributes: `oasis_opt` (the run's `OASISOptions`), `G` (the
    `OASISGenerator`), `label_channels` (the dataset's ids besides 255), `netG` "oasis".
    """

    def __init__(self, G: torch.nn.Module, E: torch.nn.Module | None = None, *,
                 device: str | torch.device | None = None, precision: str = "auto", use_engine: bool = True,
                 name: str = "", checkpoint: str | os.PathLike | None = None, consume: bool = False,
                 which_epoch: str = "best", style_bank: Any = None):
        from ..data.palettes import classes_for_dataset_mode, palette_array

        if not isinstance(G, OASISGenerator):
            raise SpadeganError(f"OASISSynthesizer needs an OASISGenerator, not {type(G).__name__}")
        if E is not None:
            raise SpadeganError("OASIS has no style encoder; pass no E")
        self.oasis_opt = oopt = G.oasis_opt
        table = OASIS_DATASETS.get(oopt.dataset_mode)
        if table is None:
            raise SpadeganError(f"dataset_mode {oopt.dataset_mode!r}: spadegan knows how the official OASIS datasets "
                                f"({', '.join(OASIS_DATASETS)}) number their labels, not this one's")
        self.opt = oasis_data_options(oopt)
        self.device = resolve_device(device)
        self.precision = _check_precision(precision, self.device)
        run = getattr(G, "oasis_run", None)
        self.name = name or (run.run_dir.name if run is not None else f"OASIS {oopt.dataset_mode}")
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.which_epoch = which_epoch
        self.weights = run.network if run is not None else "G"
        self.label_nc = oopt.label_nc
        self.label_channels = table.max_id + 1
        self.image_label, self.input_nc, self.use_vae, self.needs_instance = False, 0, False, False
        self.use_3d_noise = not oopt.no_3dnoise
        self.netG = "oasis"
        self.num_up = oopt.num_res_blocks - 1
        self.height, self.width = oopt.output_size
        self.classes = classes_for_dataset_mode(oopt.dataset_mode, self.label_channels)
        self.palette = palette_array(self.classes, self.label_channels)
        self.label_space = LabelSpace.dataset_ids(self.label_channels, self.classes)
        if style_bank is not None:
            raise SpadeganError("OASIS generators draw 3D noise, not VAE style codes: a style bank does not apply")
        self._E, self.style_bank = None, None  # no VAE
        self.engine = None  # the SPADE engine (stroke previews); OASIS runs on `oasis_engine`
        self.oasis_engine: OASISEngine | None = None
        self.G = G.to(self.device).eval()
        if use_engine and self.precision in OASIS_ENGINE_PRECISIONS:
            self.oasis_engine = OASISEngine.from_generator(self.G, precision=self.precision)
        elif use_engine:
            say_once(f"the OASIS engine runs {', '.join(OASIS_ENGINE_PRECISIONS)} only, not {self.precision}; "
                     f"running {self.network}")

    @property
    def network(self) -> str:
        """What synthesizes, in words."""
        if self.oasis_engine is not None:
            return f"the OASIS engine ({self.weights} weights, {self.precision})"
        return f"the official OASIS generator ({self.weights} weights, {self.precision})"

    @classmethod
    def from_checkpoint(cls, path_or_dir: str | os.PathLike | None = None, device: str | torch.device | None = None,
                        precision: str = "auto", use_engine: bool = True, which_epoch: str = "latest",
                        opt: Any = None, **oasis_flags: Any) -> "OASISSynthesizer":
        """An official OASIS run folder (`<run>/models/<which_epoch>_EMA.pth`), its models folder
        or one weights file; `oasis_flags`: the official test flags (dataset_mode, channels_G, ...)
        where the run has no opt.pkl / opt.txt."""
        from ..checkpoint import load_checkpoint

        if path_or_dir is None:
            raise SpadeganError("OASISSynthesizer.from_checkpoint needs the run folder")
        G = load_checkpoint(path_or_dir, "G", opt=opt, which_epoch=which_epoch, **oasis_flags)
        return cls(G, device=device, precision=precision, use_engine=use_engine, checkpoint=path_or_dir,
                   which_epoch=G.oasis_run.which_epoch)

    def encoder(self) -> torch.nn.Module:
        raise SpadeganError("OASIS has no style encoder, so it takes no style image")

    # ---- inputs -------------------------------------------------------------------------
    def label_tensor(self, label: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """Read ids (`label_ids`) at `size` (H, W), resized as the official OASIS loader does."""
        return resize_ids_nearest(label, size)

    def colorize(self, ids: np.ndarray) -> np.ndarray:
        """Dataset ids -> palette colours (H, W, 3) uint8; 255 (dontcare) is black."""
        from ..data.palettes import label_to_color
        return label_to_color(np.asarray(ids).astype(np.int64), self.palette)

    # ---- noise ----------------------------------------------------------------------------
    def noise(self, seeds: Sequence[int | None],
              region_seeds: Sequence[dict[int, int] | None] | None = None) -> torch.Tensor:
        """(B, z_dim) from the seeds (seed s: `torch.randn(z_dim, generator=manual_seed(s))`);
        with `region_seeds` ({dataset id: seed} per image) a (B, semantic_nc, z_dim) table by
        OASIS channel: every channel the image's vector, the ids listed a vector of their own."""
        base = super().noise(seeds)
        if not region_seeds or not any(region_seeds):
            return base
        table = base[:, None, :].repeat(1, self.oasis_opt.semantic_nc, 1)
        for b, regions in enumerate(region_seeds):
            for cls_id, seed in (regions or {}).items():
                try:
                    channel = int(oasis_label_channels(torch.tensor([int(cls_id)]), self.oasis_opt.dataset_mode)[0])
                except SpadeganError as e:
                    raise SpadeganError(f"region seed for class {cls_id}: {e}") from None
                table[b, channel] = torch.randn(self.oasis_opt.z_dim, generator=torch.Generator().manual_seed(int(seed)))
        return table

    @staticmethod
    def noise_map(z: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        """A per-class table (B, semantic_nc, z_dim) spread over (B, H, W) OASIS channels:
        the (B, z_dim, H, W) noise map whose vector at each pixel is its class's."""
        if z.shape[0] != channels.shape[0] or int(channels.max()) >= z.shape[1]:
            raise SpadeganError(f"per-class noise of shape {tuple(z.shape)} (B, semantic_nc, z_dim) does not fit "
                                f"{channels.shape[0]} label map(s) with channels up to {int(channels.max())}")
        return torch.stack([t[c] for t, c in zip(z, channels)]).permute(0, 3, 1, 2)

    # ---- synthesis ------------------------------------------------------------------------
    def generator_at(self, size: tuple[int, int]) -> OASISGenerator:
        """The generator producing (H, W) = `size` images (`generator_at`)."""
        return generator_at(self.G, size)

    def generate(self, lab: torch.Tensor, inst: torch.Tensor | None = None, z: torch.Tensor | None = None,
                 size: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, H, W) dataset ids (255 = dontcare) -> (B, 3, H', W') images in [-1, 1].

        `z`: (B, z_dim), a (B, z_dim, H', W') noise map, or a per-class table (B, semantic_nc,
        z_dim) (`noise`); None draws one vector per image from torch's global generator, as the
        official forward does. `size` (H', W'): default the trained size; labels of another
        size are resized to it (PIL nearest, the official loader's resize). OASIS reads no
        instance maps: `inst` must be None.
        """
        if inst is not None:
            raise SpadeganError("OASIS generators read no instance maps; pass inst=None")
        size = tuple(size or (self.height, self.width))
        if lab.dim() != 3:
            raise SpadeganError(f"labels must be (B, H, W) ids, got shape {tuple(lab.shape)}")
        if tuple(lab.shape[-2:]) != size:
            lab = torch.stack([resize_ids_nearest(one, size) for one in lab])
        channels = oasis_label_channels(lab, self.oasis_opt.dataset_mode).to(self.device)
        if z is not None:
            z = z.to(self.device, torch.float32)
        if self.oasis_engine is not None:  # every noise form, the per-class table as it is
            return self.oasis_engine.generate(channels, z, size)
        semantics = oasis_semantics(channels, self.oasis_opt.semantic_nc)
        if z is not None:
            if z.dim() == 3:
                z = self.noise_map(z, channels)
        G = self.generator_at(size)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype or torch.float32,
                                                    enabled=dtype is not None):
            return G(semantics, z).float()


Synthesizer.oasis_class = OASISSynthesizer
