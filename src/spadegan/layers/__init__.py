"""Reusable layer blocks: spectral norm, parameter-free norms, SPADE, residual blocks."""

from .spectral import spectral_norm, remove_spectral_norm
from .norms import nonspade_norm_layer, param_free_norm
from .spade import SPADE, parse_spade_config
from .blocks import SPADEResnetBlock, ResnetBlock

__all__ = ["spectral_norm", "remove_spectral_norm", "nonspade_norm_layer", "param_free_norm",
           "SPADE", "parse_spade_config", "SPADEResnetBlock", "ResnetBlock"]
