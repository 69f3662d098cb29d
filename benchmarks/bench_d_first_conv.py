"""D's first conv on [one-hot label map, image]: by lookup of the codes against the dense conv.

    python benchmarks/bench_d_first_conv.py

Forward + backward with the weight gradient (the D step), median of 6 runs, for label
counts and widths around the crossover that `networks.discriminator.first_conv_lookup_pays`
encodes (label channels x ndf >= FIRST_CONV_LOOKUP_MIN). Maps of 8x8-pixel blocks; the dense
column includes building the one-hot tensor. Prints a table and one JSON line.
"""

from __future__ import annotations

import json
import statistics
import time

import torch
import torch.nn as nn

from spadegan.device import describe_hardware, keep_freed_cpu_memory
from spadegan.layers.label_codes import LabelCodes
from spadegan.networks.discriminator import first_conv_by_lookup, first_conv_lookup_pays

CASES = [  # label channels, batch (fake + real), size, ndf
    (11, 16, 64, 16), (11, 16, 128, 16), (71, 16, 64, 16), (121, 16, 64, 16),
    (36, 2, 256, 64), (71, 2, 256, 64), (101, 2, 256, 64), (151, 2, 256, 64), (151, 2, 128, 64),
]


def _median_ms(fn, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]) * 1e3  # the first run warms up


def main() -> None:
    keep_freed_cpu_memory()  # as training does
    torch.manual_seed(0)
    rows = []
    for nlab, batch, size, ndf in CASES:
        code = torch.randint(0, nlab, (batch, size // 8, size // 8)).repeat_interleave(8, 1).repeat_interleave(8, 2)
        codes = LabelCodes(code, nlab, False)
        conv = nn.Conv2d(nlab + 3, ndf, 4, 2, 2)
        image = torch.randn(batch, 3, size, size)

        def lookup() -> None:
            conv.zero_grad()
            out = first_conv_by_lookup(conv, codes, image)
            out.backward(torch.ones_like(out))

        def dense() -> None:
            conv.zero_grad()
            fresh = LabelCodes(code, nlab, False)  # its one-hot tensor is built once per iteration in training
            out = conv(torch.cat([fresh.semantics(), image], 1))
            out.backward(torch.ones_like(out))
        row = {"label_channels": nlab, "batch": batch, "size": size, "ndf": ndf,
               "lookup_ms": round(_median_ms(lookup), 1), "dense_ms": round(_median_ms(dense), 1),
               "rule_chooses": "lookup" if first_conv_lookup_pays(nlab, ndf) else "dense"}
        rows.append(row)
        print(f"{nlab:4d} labels  batch {batch:2d}  {size:3d} px  ndf {ndf:2d}:  lookup {row['lookup_ms']:7.1f} ms  "
              f"dense {row['dense_ms']:7.1f} ms  -> rule: {row['rule_chooses']}")
    hw = describe_hardware("cpu")
    print(json.dumps({"bench": "d_first_conv", "cpu_features": hw["features"], "threads": hw["threads"],
                      "torch": torch.__version__, "rows": rows}))


if __name__ == "__main__":
    main()
