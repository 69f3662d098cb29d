"""Label maps -> images with a trained generator: the `Synthesizer` API and `spadegan synthesize`.

    from spadegan.synthesize import Synthesizer
    syn = Synthesizer.from_checkpoint("checkpoints/coco_pretrained")   # or None: built-in model
    image = syn.synthesize("label.png", instance="inst.png", seed=1)    # PIL image

The checkpoint's saved options (spadegan's opt.json or the official opt.txt / opt.pkl) say
how many classes, whether there is a dontcare class or instance maps, and the image size,
so nothing needs repeating. Label maps are 8/16-bit id images (255 = dontcare, mapped to
the extra class `label_nc` when the model has one, as in the datasets) or colour images in
the dataset's palette (`spadegan.data.palettes`); a colour not in the palette, an id the
model does not know or a missing file raises `SpadeganError` naming the file and value.
By default synthesis runs on the fast engine (`spadegan.engine`), which gives the faithful
network's results (max abs error <= 1e-4 in fp32); `use_engine=False` runs the faithful
network itself.

Models trained with `--label_nc 0` read a label *image* (a sketch, edge map, depth or colour
layout; `input_nc` channels) instead of class ids: the label is then a greyscale/RGB file,
a PIL image, an (H, W[, C]) array (uint8, uint16 or float in [0, 1]) or a (C, H, W) tensor,
resized bilinearly as the datasets do; a file with another channel count raises
`SpadeganError` naming the file and both counts. The engine's per-class shortcuts do not
apply to them, so such models run the faithful network (with one warning when the engine
was asked for).

Also here: `AppBackend`, the adapter the paint app (`spadegan.app`) talks to, and the
`spadegan synthesize` command (`main`), including `--demo`, a gallery made with the built-in
landscapes model.
"""

from __future__ import annotations

import argparse
import html
import os
import secrets
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .device import PRECISIONS, precision_policy, resolve_device
from .errors import SpadeganError, SpadeganWarning, UnsafeFileError
from .data.transforms import image_to_tensor
from .layers.label_codes import LabelCodes, use_sparse_spade
from .visuals import image_to_numpy, save_png

#: The built-in model (trained on the procedural landscapes), shipped inside the package.
BUILTIN_DIR = Path(__file__).resolve().parent / "pretrained" / "landscapes"
IMAGE_EXTS = {".png", ".bmp", ".gif", ".tif", ".tiff", ".jpg", ".jpeg", ".webp"}
DONTCARE = 255

LabelLike = Union[str, os.PathLike, np.ndarray, torch.Tensor, Image.Image]
ImageLike = Union[str, os.PathLike, np.ndarray, torch.Tensor, Image.Image]


def builtin_checkpoint() -> Path:
    """The built-in model's folder, or a SpadeganError saying there is none."""
    if (BUILTIN_DIR / "latest_net_G.pth").is_file():
        return BUILTIN_DIR
    raise SpadeganError(
        f"no built-in model is available in this installation ({BUILTIN_DIR} has no "
        "latest_net_G.pth); pass --checkpoint DIR_OR_FILE (a checkpoint folder with opt.txt or "
        "opt.json and latest_net_G.pth, e.g. checkpoints/<name>/, or the .pth file itself)")


def _open_image(path: Path, what: str) -> Image.Image:
    if not path.exists():
        raise SpadeganError(f"{what} {path} does not exist")
    if path.is_dir():
        raise SpadeganError(f"{what} {path} is a folder, not an image file")
    try:
        im = Image.open(path)
        im.load()
    except Image.DecompressionBombError as e:  # Pillow's pixel limit: a tiny file may declare a huge image
        raise SpadeganError(f"{what} {path} is refused: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise SpadeganError(f"{what} {path} cannot be read as an image ({e}); is it a PNG?") from None
    return im


def _array_label_image(label: np.ndarray | torch.Tensor, where: str, channels: int) -> np.ndarray:
    """An (H, W[, C]) array or (C, H, W) tensor image label -> (H, W, C) float32 in [0, 1]."""
    from .data.transforms import channels_message

    is_tensor = isinstance(label, torch.Tensor)
    arr = label.detach().cpu().numpy() if is_tensor else np.asarray(label)
    if is_tensor and arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3, 4):
        arr = arr.transpose(1, 2, 0)
    arr = arr[..., None] if arr.ndim == 2 else arr
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise SpadeganError(f"{where}: a label image must be H x W (greyscale) or H x W x 3 (RGB), "
                            f"got shape {tuple(arr.shape)}")
    arr = arr[..., :3]  # alpha is not part of the label
    if arr.shape[-1] != channels:
        raise SpadeganError(channels_message(where, arr.shape[-1], channels, "this model's input_nc"))
    if arr.dtype in (np.uint8, np.uint16):
        return arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 65535.0)
    if arr.dtype.kind != "f":
        raise SpadeganError(f"{where}: label image arrays must be uint8, uint16 or float in [0, 1], not {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise SpadeganError(f"{where}: a float label image must hold values in [0, 1] (uint8: 0..255), "
                            f"got {float(arr.min()):.3g}..{float(arr.max()):.3g}")
    return arr.astype(np.float32)


def _ids_from_image(im: Image.Image, where: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(ids, None) for id images, (None, rgb) for colour images."""
    mode = im.mode
    if mode in ("L", "P", "I", "1") or mode.startswith("I;16"):
        return np.asarray(im if mode != "1" and not mode.startswith("I;16") else im.convert("I")).astype(np.int64), None
    if mode in ("LA", "PA"):
        return np.asarray(im.getchannel(0)).astype(np.int64), None
    if mode == "F":
        arr = np.asarray(im)
        if not np.all(arr == np.round(arr)):
            raise SpadeganError(f"{where}: a float image with non-integer values is not a label map")
        return arr.astype(np.int64), None
    if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr"):
        return None, np.asarray(im.convert("RGB"))
    raise SpadeganError(f"{where}: unsupported image mode {mode}; save label maps as 8-bit PNGs")


class Synthesizer:
    """A trained generator ready to turn label maps into images (see the module docstring).

    Attributes: `opt` (the checkpoint's options), `label_nc` (classes without dontcare),
    `label_channels` (ids accepted after dontcare mapping), `image_label` (a --label_nc 0
    model reading label images of `input_nc` channels), `width`/`height` (default output
    size), `use_vae`, `needs_instance`, `classes` (the palette: list of ClassInfo; empty for
    image labels), `device`, `precision`, `engine` (the SynthesisEngine or None when running
    the faithful network).
    """

    def __init__(self, G: torch.nn.Module, E: torch.nn.Module | None = None, *,
                 device: str | torch.device | None = None, precision: str = "auto",
                 use_engine: bool = True, name: str = "", checkpoint: str | os.PathLike | None = None,
                 consume: bool = False):
        """Wrap a generator with its options `G.opt` (as `networks.define_G` and `load_checkpoint` give it).

        `consume=True` lets the engine free G's weights as it converts them (lower peak
        memory; G is unusable afterwards); `from_checkpoint` does that with its own G.
        """
        from .data.palettes import classes_for_dataset_mode, palette_array
        from .engine import SynthesisEngine

        if not hasattr(G, "opt"):
            raise SpadeganError("the generator carries no options (G.opt); build it with networks.define_G, "
                                "load it with spadegan.load_checkpoint or use Synthesizer.from_checkpoint")
        self.opt = G.opt
        self.device = resolve_device(device)
        policy = precision_policy(self.device)
        if precision in (None, "", "auto"):
            precision = policy.name
        if precision not in PRECISIONS:
            raise SpadeganError(f"--precision must be fp32, bf16, fp16 or auto, not {precision!r}")
        if precision not in ("fp32", policy.name):
            warnings.warn(f"--precision {precision} is likely slower than {policy.name} here: {policy.reason}",
                          SpadeganWarning, stacklevel=2)
        self.precision = precision
        self.name = name or self.opt.name
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        opt = self.opt
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
        self._E = E
        self.engine = None
        self.G = None
        if use_engine and opt.netG == "spade" and not self.image_label and not opt.use_3d_noise:
            G = G.to(self.device)
            self.engine = SynthesisEngine.from_generator(G, precision=precision, consume=consume)
        else:
            if use_engine:
                if opt.use_3d_noise:
                    why = ("does not serve 3D-noise (OASIS) generators; running the faithful generator "
                           f"({'sparse' if use_sparse_spade(opt, self.device) else 'dense'} SPADE)")
                elif self.image_label:
                    why = ("needs class-id label maps and this model reads label images (--label_nc 0); running "
                           "the faithful network")
                else:
                    why = f"supports --netG spade only; running the faithful {opt.netG} generator"
                warnings.warn(f"the fast engine {why}", SpadeganWarning, stacklevel=2)
            self.G = G.to(self.device).eval()
        if self._E is not None:
            self._E = self._E.to(self.device).eval()

    # ---- construction -----------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path_or_dir: str | os.PathLike | None = None, device: str | torch.device | None = None,
                        precision: str = "auto", use_engine: bool = True, which_epoch: str = "latest",
                        opt: Any = None) -> "Synthesizer":
        """Load `<dir>/<which_epoch>_net_G.pth` (or a .pth file) with its saved options.

        `path_or_dir=None` uses the built-in landscapes model. `opt` overrides the saved
        options (for a bare .pth without opt.txt). The VAE encoder (`_net_E.pth`) is loaded
        lazily, the first time a style image is given.
        """
        from .checkpoint import load_checkpoint

        path = builtin_checkpoint() if path_or_dir is None else Path(path_or_dir)
        G = load_checkpoint(path, "G", opt=opt, which_epoch=which_epoch)
        syn = cls(G, device=device, precision=precision, use_engine=use_engine,
                  name="built-in landscapes" if path_or_dir is None else "", checkpoint=path, consume=True)
        syn._which_epoch = which_epoch
        return syn

    def encoder(self) -> torch.nn.Module:
        """The VAE style encoder, loaded from the checkpoint on first use."""
        if not self.use_vae:
            raise SpadeganError("this model was trained without --use_vae, so it takes no style image")
        if self._E is None:
            from .checkpoint import load_checkpoint
            if self.checkpoint is None:
                raise SpadeganError("a style image needs the VAE encoder (E); pass it to Synthesizer(G, E)")
            self._E = load_checkpoint(self.checkpoint, "E", opt=self.opt,
                                      which_epoch=getattr(self, "_which_epoch", "latest")).to(self.device).eval()
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
        from .data.transforms import label_image_array

        if not self.image_label:
            raise SpadeganError(f"this model reads class-id label maps (label_nc={self.label_nc}), not label "
                                "images; use label_ids")
        if isinstance(label, (str, os.PathLike)):
            where = where or str(label)
            label = _open_image(Path(label), "label image")
        where = where or "label image"
        if isinstance(label, Image.Image):
            return label_image_array(label, where, self.input_nc, source="this model's input_nc")
        return _array_label_image(label, where, self.input_nc)

    def label_ids(self, label: LabelLike, where: str | None = None) -> np.ndarray:
        """Any label input -> (H, W) int64 model ids (dontcare mapped), validated."""
        from .data.palettes import color_to_label, grey_ids

        if self.image_label:
            raise SpadeganError("this model reads label images (--label_nc 0), not class ids; use label_image")
        if isinstance(label, (str, os.PathLike)):
            where = where or str(label)
            label = _open_image(Path(label), "label map")
        where = where or "label map"
        if isinstance(label, Image.Image):
            ids, rgb = _ids_from_image(label, where)
        else:
            arr = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
            arr = np.squeeze(arr) if arr.ndim > 2 and arr.shape[0] == 1 else arr
            if arr.ndim == 3 and arr.shape[-1] in (3, 4):
                ids, rgb = None, arr[..., :3].astype(np.uint8)
            elif arr.ndim == 2:
                if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
                    raise SpadeganError(f"{where}: label values must be integer class ids")
                ids, rgb = arr.astype(np.int64), None
            else:
                raise SpadeganError(f"{where}: a label map must be H x W ids or H x W x 3 colours, "
                                    f"got shape {arr.shape}")
        if rgb is not None:
            # palette colours first (as the paint app reads RGB maps), else a grey id map
            # saved as RGB, else the palette error naming the unknown colours
            try:
                ids = color_to_label(rgb, self.classes, where).astype(np.int64)
            except SpadeganError:
                grey = grey_ids(rgb)
                if grey is None:
                    raise
                ids = grey.astype(np.int64)
        if self.opt.contain_dontcare_label:
            ids = np.where(ids == DONTCARE, self.label_nc, ids)
        bad = (ids < 0) | (ids >= self.label_channels)
        if bad.any():
            vals, counts = np.unique(ids[bad], return_counts=True)
            listed = ", ".join(f"{int(v)} ({int(c)} px)" for v, c in zip(vals[:5], counts[:5]))
            if self.opt.contain_dontcare_label:
                top = self.label_nc if self.opt.dataset_mode == "ade20k" else self.label_nc - 1
                rule = f"0..{top} and 255 (dontcare)"
            else:
                rule = f"0..{self.label_channels - 1} (label_nc={self.label_nc}, no dontcare class)"
            raise SpadeganError(f"{where}: label id(s) {listed} not known to this model, which accepts "
                                f"{rule}; use the ids of the dataset it was trained on")
        return ids

    def instance_ids(self, instance: LabelLike, where: str | None = None) -> np.ndarray:
        if isinstance(instance, (str, os.PathLike)):
            where = where or str(instance)
            instance = _open_image(Path(instance), "instance map")
        where = where or "instance map"
        if isinstance(instance, Image.Image):
            ids, rgb = _ids_from_image(instance, where)
            if rgb is not None:  # colour-coded instances: any distinct colour is an instance
                ids = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
            return ids
        arr = instance.detach().cpu().numpy() if isinstance(instance, torch.Tensor) else np.asarray(instance)
        arr = np.squeeze(arr)
        if arr.ndim != 2:
            raise SpadeganError(f"{where}: an instance map must be H x W ids, got shape {arr.shape}")
        return arr.astype(np.int64)

    def style_tensor(self, style: ImageLike, size: tuple[int, int], where: str | None = None) -> torch.Tensor:
        """A photo -> (3, H, W) in [-1, 1] at the model size (bicubic, as the datasets)."""
        if isinstance(style, (str, os.PathLike)):
            where = where or str(style)
            style = _open_image(Path(style), "style image")
        if isinstance(style, torch.Tensor):
            style = style.detach().cpu().numpy()
        if isinstance(style, np.ndarray):
            arr = style if style.dtype == np.uint8 else np.clip(style, 0, 255).astype(np.uint8)
            if arr.ndim == 2:
                arr = np.stack([arr] * 3, -1)
            if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
                raise SpadeganError(f"{where or 'style image'}: expected H x W x 3 uint8, got shape {arr.shape}")
            style = Image.fromarray(np.ascontiguousarray(arr[..., :3]))
        im = style.convert("RGB")
        if im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.BICUBIC)
        return image_to_tensor(im)  # normalised as the datasets normalise photos

    @staticmethod
    def _resize_ids(ids: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(ids))
        if tuple(t.shape) == tuple(size):
            return t
        # nearest, as the datasets resize labels (float64 holds any id exactly)
        return F.interpolate(t[None, None].double(), size=size, mode="nearest")[0, 0].long()

    def _label_tensor(self, label: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """A read label (`read_label`) at `size` (H, W): ids resized nearest, or for image labels the
        (input_nc, H, W) image in [-1, 1] resized bilinearly (as the datasets)."""
        from .data.transforms import resize_label_image

        return resize_label_image(label, size) if self.image_label else self._resize_ids(label, size)

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

    def _z(self, seeds: Sequence[int | None], styles: Sequence[Any], size: tuple[int, int],
           wheres: Sequence[str | None], region_seeds: Sequence[dict[int, int] | None] | None = None
           ) -> torch.Tensor | None:
        from .networks import sample_z

        if not self.use_vae:
            if any(s is not None for s in styles):
                raise SpadeganError("this model was trained without --use_vae, so it takes no style image")
            if region_seeds and any(region_seeds) and not self.use_3d_noise:
                raise SpadeganError("region seeds need a model trained with 3D noise (--use_3d_noise / --netD oasis)")
            return self.noise(seeds, region_seeds) if self.use_3d_noise else None
        zs = []
        for seed, style, where in zip(seeds, styles, wheres):
            g = torch.Generator().manual_seed(int(seed) if seed is not None else secrets.randbits(63))
            if style is None:
                zs.append(torch.randn(1, self.opt.z_dim, generator=g))
            else:
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
        ids = [self.read_label(lab) for lab in labels]
        size = self.output_size(width, ids[0].shape[:2] if width is not None else None)
        return self._synthesize_ids(ids, instances, styles, seeds, size, output, region_seeds)

    def _synthesize_ids(self, ids: Sequence[np.ndarray], instances: Sequence[Any], styles: Sequence[Any],
                        seeds: Sequence[int | None], size: tuple[int, int], output: str = "pil",
                        region_seeds: Sequence[dict[int, int] | None] | None = None) -> list:
        """Validated model ids (or label images, see `read_label`) -> images at `size` (H, W)."""
        lab = torch.stack([self._label_tensor(a, size) for a in ids])
        inst = None
        if self.needs_instance:
            # without an instance map, class boundaries serve as instance boundaries
            inst = torch.stack([self._resize_ids(self.instance_ids(i) if i is not None else a, size)
                                for i, a in zip(instances, ids)])
        wheres = [str(s) if isinstance(s, (str, os.PathLike)) else None for s in styles]
        z = self._z(seeds, styles, size, wheres, region_seeds)
        arrs = image_to_numpy(self.generate(lab, inst, z, size))
        if output == "numpy":
            return list(arrs)
        return [Image.fromarray(a) for a in arrs]

    def synthesize(self, label: LabelLike, instance: LabelLike | None = None, style: ImageLike | None = None,
                   seed: int | None = None, width: int | None = None, output: str = "pil",
                   region_seeds: dict[int, int] | None = None):
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
        `size` (H', W'): the output size, default the model's (the faithful network then
        reads label maps of any size, as in the official test). Runs under inference_mode
        in the Synthesizer's precision.
        """
        size = size or (self.height, self.width)
        if self.engine is not None:
            return self.engine.generate(lab, inst, z, size)
        from .networks import at_size
        G = at_size(self.G, size) if self.netG == "spade" else self.G
        if self.image_label:
            seg = lab.to(self.device, torch.float32)
        else:
            codes = LabelCodes.from_label(lab.to(self.device), None if inst is None else inst.to(self.device),
                                          self.opt)
            seg = codes if use_sparse_spade(self.opt, self.device) else codes.semantics()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype or torch.float32,
                                                    enabled=dtype is not None):
            return G(seg, None if z is None else z.to(self.device)).float()

    # ---- helpers for galleries ---------------------------------------------------------
    def colorize(self, ids: np.ndarray) -> np.ndarray:
        """Model ids -> palette colours (H, W, 3) uint8; the dontcare class is black."""
        from .data.palettes import label_to_color
        ids = np.asarray(ids).astype(np.int64)
        shown = np.where((ids == self.label_nc) & bool(self.opt.contain_dontcare_label)
                         & (self.opt.dataset_mode != "ade20k"), DONTCARE, ids)
        return label_to_color(shown, self.palette)

    def label_picture(self, label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """A read label (`read_label`) as an (H, W, 3) uint8 picture at `size`: palette colours, or the
        label image itself."""
        if self.image_label:
            return image_to_numpy(self._label_tensor(label, size))[0]
        return self.colorize(self._resize_ids(label, size).numpy())


class AppBackend:
    """The paint app's model adapter (`spadegan.app.server.SynthesisBackend`) over a Synthesizer.

    For a --label_nc 0 model `label_nc` is 0, `classes` empty and `input_nc` the channels of
    the label images the app sends ((H, W) or (H, W, 3) uint8 at the model size).
    """

    def __init__(self, synthesizer: Synthesizer, name: str | None = None):
        self.synthesizer = synthesizer
        self.label_nc = synthesizer.label_channels  # ids the app may send: 0..label_nc-1
        self.input_nc = synthesizer.input_nc
        self.width, self.height = synthesizer.width, synthesizer.height
        self.use_vae = synthesizer.use_vae
        self.name = name or synthesizer.name
        self.classes = [{"id": c.id, "name": c.name, "color": [int(v) for v in c.color]}
                        for c in synthesizer.classes if c.id < self.label_nc]

    def synthesize_batch(self, labels: list[np.ndarray], seeds: list[int | None],
                         styles: list[np.ndarray | None]) -> list[np.ndarray]:
        """(H, W) id maps (or label images) + seeds + optional (H, W, 3) style photos -> (H, W, 3) uint8 images."""
        syn = self.synthesizer
        size = (self.height, self.width)
        if syn.image_label:
            lab = torch.stack([syn._label_tensor(syn.label_image(a, "label"), size) for a in labels])
            inst = None
        else:
            lab, inst = self._id_batch(labels, size)
        z = syn._z(seeds, styles, size, [None] * len(labels))
        return list(image_to_numpy(syn.generate(lab, inst, z, size)))

    def _id_batch(self, labels: list[np.ndarray], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        # the app sends model ids: 255 means class 255 here, not dontcare
        for lab in labels:
            lab = np.asarray(lab)
            if lab.size and (lab.min() < 0 or lab.max() >= self.label_nc):
                raise SpadeganError(f"label id {int(lab.max())} is outside 0..{self.label_nc - 1}")
        ids = [torch.from_numpy(np.asarray(lab).astype(np.int64)) for lab in labels]
        lab = torch.stack([Synthesizer._resize_ids(a.numpy(), size) for a in ids])
        return lab, (lab.clone() if self.synthesizer.needs_instance else None)


# ---- the command line ---------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spadegan synthesize",
        description="Turn label maps into images with a trained SPADE/GauGAN generator. Options the "
                    "model was trained with are read from the checkpoint folder (opt.json / opt.txt); "
                    "official flags such as --label_nc may be added to override them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", help="checkpoint folder (latest_net_G.pth + opt.txt) or a _net_G.pth file; "
                                        "default: the built-in landscapes model")
    p.add_argument("--which_epoch", default="latest", help="which <epoch>_net_G.pth of a folder")
    p.add_argument("--label", nargs="+", default=[], help="label map files and/or folders of them")
    p.add_argument("--instance", nargs="+", default=[],
                   help="instance maps: one per label file, or a folder with files named like the labels")
    p.add_argument("--style_image", default=None, help="VAE models: copy the style of this photo")
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument("--seed", type=int, default=None, help="VAE models: seed of the random styles")
    p.add_argument("--num_samples", type=int, default=1, help="VAE models: random styles per label map")
    p.add_argument("--size", type=int, default=None,
                   help="output width (height from the label's aspect ratio); default the training size")
    p.add_argument("--batch_size", type=int, default=1, help="label maps per forward pass")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto: bf16 on AMX CPUs and GPUs of compute capability >= 8.0, fp16 on older "
                        "GPUs, else fp32 (see spadegan.device)")
    p.add_argument("--engine", dest="engine", action="store_true", default=True,
                   help="use the fast inference engine")
    p.add_argument("--no_engine", dest="engine", action="store_false", help="run the faithful network")
    p.add_argument("--demo", action="store_true",
                   help="write a gallery (index.html) of procedural landscape label maps synthesized "
                        "with the built-in model (or --checkpoint, a landscapes model)")
    p.add_argument("--demo_count", type=int, default=4, help="--demo: number of label maps")
    p.add_argument("--palette_labels", action="store_true",
                   help="also write each label map in palette colours next to the result")
    return p


def _collect(paths: Sequence[str], what: str) -> tuple[list[Path], bool]:
    """Files from file/folder arguments; also whether a folder was given (for the progress bar)."""
    files: list[Path] = []
    folder = False
    for s in paths:
        p = Path(s)
        if p.is_dir():
            folder = True
            found = sorted(x for x in p.iterdir() if x.is_file() and x.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise SpadeganError(f"{what} folder {p} holds no images")
            files += found
        else:
            files.append(p)  # a missing file is reported (and skipped) when read
    return files, folder


def _override_options(opt, extra: list[str]):
    """Apply official flags given on the command line over the checkpoint's saved options.

    Train-only flags (e.g. a copy of the training command's `--ndf 16`) are accepted and
    only matter where they change the generator; test-only ones likewise.
    """
    from .options import FIELDS, TRAIN, parse

    if not extra:
        return opt
    given = [t[2:].split("=")[0] for t in extra if t.startswith("--")]
    unknown = [g for g in given if g not in FIELDS]
    if unknown:
        raise SpadeganError(f"spadegan synthesize: unknown flag --{unknown[0]} (see --help)")
    train = any(FIELDS[g].metadata.get("phase") == TRAIN for g in given)
    parsed = parse(extra + ([] if "gpu_ids" in given else ["--gpu_ids", "-1"]), train=train)
    if opt is None:
        return parsed.replace(isTrain=False)
    return opt.replace(**{g: getattr(parsed, g) for g in given})


def _flag_device(device: str | None, extra: list[str], opt) -> str | torch.device | None:
    """--device, else the official --gpu_ids when given (several ids: the first, saying so once)."""
    if device or opt is None or not any(t == "--gpu_ids" or t.startswith("--gpu_ids=") for t in extra):
        return device
    return resolve_device(None, opt.gpu_ids)


def _load_synthesizer(args, extra: list[str]) -> Synthesizer:
    from .checkpoint import checkpoint_options, load_checkpoint

    path = builtin_checkpoint() if args.checkpoint is None else Path(args.checkpoint)
    opt = None
    if extra:
        try:
            base = checkpoint_options(path, which_epoch=args.which_epoch)
        except UnsafeFileError:
            raise
        except SpadeganError:  # no options file: the flags given must say it all
            base = None
        opt = _override_options(base, extra)
    G = load_checkpoint(path, "G", opt=opt, which_epoch=args.which_epoch)
    device = _flag_device(args.device, extra, opt)
    syn = Synthesizer(G, device=device, precision=args.precision, use_engine=args.engine,
                      name="built-in landscapes" if args.checkpoint is None else "", checkpoint=path, consume=True)
    syn._which_epoch = args.which_epoch
    return syn


def _pair_instances(labels: list[Path], inst_args: list[str]) -> list[Path | None]:
    if not inst_args:
        return [None] * len(labels)
    if len(inst_args) == 1 and Path(inst_args[0]).is_dir():
        folder = Path(inst_args[0])
        by_stem = {x.stem: x for x in folder.iterdir() if x.is_file()}
        return [by_stem.get(lab.stem, folder / (lab.stem + ".png")) for lab in labels]
    files, _ = _collect(inst_args, "instance")
    if len(files) != len(labels):
        raise SpadeganError(f"--instance gives {len(files)} file(s) for {len(labels)} label map(s); "
                            "give one per label map, or a folder with files named like the labels")
    return files


def _save(img: Image.Image, path: Path) -> None:
    save_png(np.asarray(img), path)


def _check_args(args: argparse.Namespace, extra: list[str]) -> None:
    if extra and not extra[0].startswith("--"):
        raise SpadeganError(f"spadegan synthesize: unexpected argument {extra[0]!r} (see --help)")
    if args.out is None:
        raise SpadeganError("spadegan synthesize: --out DIR is required (where the images are written)")
    for name in ("num_samples", "batch_size", "demo_count"):
        if getattr(args, name) < 1:
            raise SpadeganError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not args.demo and not args.label:
        raise SpadeganError("spadegan synthesize: give --label FILE [FILE | FOLDER ...] (or --demo)")


def _check_model_args(args: argparse.Namespace, syn: Synthesizer) -> None:
    if args.style_image and not syn.use_vae:
        raise SpadeganError("--style_image needs a model trained with --use_vae; this one was not")
    if args.style_image:
        _open_image(Path(args.style_image), "style image")  # fail early on a bad path
    if not syn.use_vae and (args.num_samples > 1):
        raise SpadeganError("--num_samples needs a model trained with --use_vae (other models are deterministic)")


class _Job:
    """`spadegan synthesize` over label files: read, synthesize in batches, write, count failures.

    A label map that cannot be read or synthesized is reported (one line) and skipped; the
    others are still written.
    """

    def __init__(self, args: argparse.Namespace, syn: Synthesizer, labels: list[Path], out: Path,
                 total: int, progress: bool):
        from tqdm import tqdm

        self.args, self.syn, self.out = args, syn, out
        self.base_seed = args.seed if args.seed is not None else secrets.randbits(31)
        stems = [lab.stem for lab in labels]
        self.dup = {s for s in stems if stems.count(s) > 1}
        self.failed: list[str] = []  # one message per label map that could not be synthesized
        self.bad: set[Path] = set()
        self.written = 0
        self.bar = tqdm(total=total, desc="synthesize", unit="img", disable=not progress)
        self._last: tuple[Path | None, tuple | None] = (None, None)  # the samples of one map are consecutive

    def report(self, lab: Path | None, e: SpadeganError) -> None:
        from tqdm import tqdm

        if lab is not None:
            self.bad.add(lab)
        self.failed.append(str(e))
        tqdm.write(f"spadegan synthesize: error: {e}", file=sys.stderr)

    def read(self, batch: list[tuple[Path, Path | None, int]]) -> list[tuple]:
        """(label file, sample, ids, instance ids) of the batch's readable label maps."""
        ok = []
        for lab, inst, k in batch:
            if lab in self.bad:
                self.bar.update(1)
                continue
            try:
                if self._last[0] != lab:
                    ids = self.syn.read_label(lab)
                    iid = self.syn.instance_ids(inst) if (inst is not None and self.syn.needs_instance) else None
                    self._last = (lab, (ids, iid))
                ok.append((lab, k) + self._last[1])
            except SpadeganError as e:
                self.report(lab, e)
                self.bar.update(1)
        return ok

    def run_batch(self, batch: list[tuple[Path, Path | None, int]]) -> None:
        """Synthesize and write a batch: one forward pass per output size."""
        args, syn = self.args, self.syn
        groups: dict[tuple, list] = {}
        for item in self.read(batch):
            size = syn.output_size(args.size, item[2].shape[:2] if args.size else None)
            groups.setdefault(size, []).append(item)
        for size, items in groups.items():
            try:
                imgs = syn._synthesize_ids([ids for _, _, ids, _ in items], [iid for _, _, _, iid in items],
                                           [args.style_image] * len(items),
                                           [self.base_seed + k for _, k, _, _ in items], size)
            except SpadeganError as e:
                for lab, *_ in items:
                    self.bad.add(lab)
                self.report(None, e)
                self.bar.update(len(items))
                continue
            for (lab, k, ids, _), img in zip(items, imgs):
                self.write(lab, k, ids, img)

    def write(self, lab: Path, k: int, ids: np.ndarray, img: Image.Image) -> None:
        stem = lab.stem if lab.stem not in self.dup else f"{lab.parent.name}_{lab.stem}"
        name = f"{stem}.png" if self.args.num_samples == 1 else f"{stem}_sample{k}.png"
        _save(img, self.out / name)
        if self.args.palette_labels and k == 0:
            _save(Image.fromarray(self.syn.label_picture(ids, (img.height, img.width))),
                  self.out / f"{stem}_label.png")
        self.written += 1
        self.bar.update(1)


def main(argv: list[str] | None = None) -> int:
    """`spadegan synthesize`: see `--help`. Returns 0, or 1 when some label maps failed."""
    args, extra = _parser().parse_known_args(argv)
    _check_args(args, extra)
    out = Path(args.out)
    if args.demo:
        return _demo(args, extra, out)
    labels, folder = _collect(args.label, "label")
    instances = _pair_instances(labels, args.instance)
    syn = _load_synthesizer(args, extra)
    _check_model_args(args, syn)
    out.mkdir(parents=True, exist_ok=True)
    # jobs: (label file, instance, sample index)
    jobs = [(lab, inst, k) for lab, inst in zip(labels, instances) for k in range(args.num_samples)]
    job = _Job(args, syn, labels, out, total=len(jobs), progress=folder or len(jobs) > 1)
    for i in range(0, len(jobs), args.batch_size):
        job.run_batch(jobs[i:i + args.batch_size])
    job.bar.close()
    print(f"spadegan synthesize: wrote {job.written} image(s) to {out}"
          + (f" (seeds from {job.base_seed})" if syn.use_vae and not args.style_image else "")
          + (f"; {len(job.bad) or len(job.failed)} label map(s) failed (see above)" if job.failed else ""))
    return 1 if job.failed else 0


# ---- --demo -------------------------------------------------------------------------------------
def _demo(args, extra: list[str], out: Path) -> int:
    from tqdm import tqdm

    from .data.landscapes import generate_scene
    from .data.palettes import label_to_color, load_classes

    syn = _load_synthesizer(args, extra)
    classes = load_classes("landscapes")
    if syn.label_channels < 10:
        raise SpadeganError("--demo draws procedural landscapes; it needs a landscapes model "
                            "(the built-in one, or --checkpoint of a model trained with "
                            "--dataset_mode landscapes)")
    out.mkdir(parents=True, exist_ok=True)
    h, w = syn.height, syn.width
    n_styles = 3 if syn.use_vae else 1
    base_seed = args.seed if args.seed is not None else 0
    rows = []
    for i in tqdm(range(args.demo_count), desc="demo", unit="scene"):
        label, photo, style_name = generate_scene(1000 + i, size=h, width=w)
        _save(Image.fromarray(label_to_color(label, classes)), out / f"scene{i}_label.png")
        _save(Image.fromarray(photo), out / f"scene{i}_procedural.png")
        seeds = [base_seed + 7919 * i + k for k in range(n_styles)]
        imgs = syn.synthesize_batch([label] * n_styles, seeds=seeds)
        cells = []
        for k, img in enumerate(imgs):
            _save(img, out / f"scene{i}_style{k}.png")
            cells.append((f"scene{i}_style{k}.png", f"random style, seed {seeds[k]}" if syn.use_vae else "result"))
        if syn.use_vae:  # the style of another scene's procedural photo
            _, other, other_style = generate_scene(2000 + i, size=h, width=w)
            _save(Image.fromarray(other), out / f"scene{i}_stylesource.png")
            img = syn.synthesize(label, style=other, seed=base_seed + i)
            _save(img, out / f"scene{i}_styled.png")
            cells.append((f"scene{i}_stylesource.png", f"style photo ({other_style})"))
            cells.append((f"scene{i}_styled.png", "result in that style"))
        rows.append((i, style_name, cells))
    _write_index(out, syn, rows, classes)
    print(f"spadegan synthesize: demo gallery with {len(rows)} scenes in {out / 'index.html'}")
    return 0


def _write_index(out: Path, syn: Synthesizer, rows: list, classes: list) -> None:
    from .fileio import atomic_write_bytes

    legend = "".join(
        f'<span class="sw" style="background:rgb{tuple(c.color)}"></span>{html.escape(c.name)} '
        for c in classes)
    body = []
    for i, style_name, cells in rows:
        tds = [f'<td><img src="scene{i}_label.png"><br>label map</td>',
               f'<td><img src="scene{i}_procedural.png"><br>procedural photo ({html.escape(style_name)})</td>']
        tds += [f'<td><img src="{html.escape(f)}"><br>{html.escape(cap)}</td>' for f, cap in cells]
        body.append("<tr>" + "".join(tds) + "</tr>")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>spadegan demo</title>
<style>body{{font-family:sans-serif;margin:1em}} td{{text-align:center;font-size:12px;padding:4px}}
img{{width:{syn.width}px;image-rendering:pixelated}} .sw{{display:inline-block;width:12px;height:12px;margin:0 3px 0 10px}}</style>
</head><body>
<h1>spadegan demo: {html.escape(syn.name)}</h1>
<p>Label maps drawn by the procedural landscapes generator, synthesized by the model
({syn.width}x{syn.height}, {'VAE: several random styles and one copied from a photo' if syn.use_vae else 'one image per map'},
{'engine ' + syn.precision if syn.engine is not None else 'faithful network'} on {syn.device}).</p>
<p>{legend}</p>
<table>{''.join(body)}</table>
</body></html>
"""
    atomic_write_bytes(out / "index.html", page.encode())


if __name__ == "__main__":
    sys.exit(main())
