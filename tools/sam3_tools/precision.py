"""Reduced-precision bundles (export_sam3.py --dtype bfloat16 | float16).

Every module of the bundle is traced under torch.autocast, as the official SAM3 runs its models
under bf16 autocast: matrix products and convolutions run in the reduced dtype, while what
autocast keeps in fp32 (normalizations, softmax, reductions, position encodings computed from
fp32 inputs) stays in fp32. The trace records the casts autocast makes, so the graph runs the
same arithmetic in C++, where no autocast is active.

The bundle's interface does not change with its precision: every module takes and returns the
tensors of the fp32 bundle, in the same dtypes (fp32, and bf16 for the memory encoder's
memories), so the core, its caches and the manifest's specs are the same at every precision;
`manifest.dtype` says what the modules compute in.

The traced modules are then frozen (torch.jit.freeze): the weights become constants, and the
casts of the weights to the reduced dtype, which autocast makes on every call, are folded into
reduced-precision constants once (about half the file size for bf16; 23 % faster than the
unfrozen trace on 4 ViT-L layers on this CPU).
"""

from __future__ import annotations

import torch
from torch import nn

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# The export's check of each traced graph against its eager module: the largest absolute
# difference for fp32; for reduced precision the mean difference relative to the output's mean
# magnitude. Eager autocast and the traced graph run the same operations, and most modules trace
# to the same bits, but the detector's kernels round some values one bf16 step apart, and
# through its layers single values drift far (15.8 % of the largest magnitude at full size with
# random weights, whose query logits are differences of large terms), so a largest-difference
# bar would refuse sound graphs; on average the drift is 1-2 % (the query logits: 1.8 % at full
# size, 1.2 % on tiny-b; the mask logits 0.6 % on tiny-b). A wrong graph (a frozen shape, a misplaced input) is off by
# about the values' own magnitude. float16 is offered for GPUs; it is not tested here.
TRACE_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.05, "float16": 0.02}

# Attributes the core reads from a module (bundle.cpp; the manifest's "attributes"): kept on the
# top-level module by Autocast and through freezing.
PRESERVED_ATTRIBUTES = ("no_memory_embedding",)


class Autocast(nn.Module):
    """Runs `module` under torch.autocast(device_type, dtype) and casts its floating outputs to
    `output_dtype` (the dtype the fp32 module returns them in); `attributes` of the module are
    exposed on this one too."""

    def __init__(
        self, module: nn.Module, device_type: str, dtype: torch.dtype, output_dtype=torch.float32, attributes=()
    ):
        super().__init__()
        self.inner = module
        self.device_type = device_type
        self.dtype = dtype
        self.output_dtype = output_dtype
        for name in attributes:
            setattr(self, name, getattr(module, name))

    def forward(self, *inputs):
        with torch.autocast(self.device_type, dtype=self.dtype):
            outputs = self.inner(*inputs)
        if isinstance(outputs, torch.Tensor):
            return self._cast(outputs)
        return tuple(self._cast(output) for output in outputs)

    def _cast(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.output_dtype) if tensor.is_floating_point() else tensor


def at_precision(module: nn.Module, dtype: str, device: torch.device, output_dtype=torch.float32) -> nn.Module:
    """`module` itself for float32, else its Autocast wrapper (eval mode)."""
    if dtype == "float32":
        return module
    attributes = [name for name in PRESERVED_ATTRIBUTES if hasattr(module, name)]
    return Autocast(module, device.type, DTYPES[dtype], output_dtype, attributes).eval()


def freeze(traced: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """A frozen copy of a traced reduced-precision module. optimize_numerics=False leaves out the
    passes that fold convolutions with the operations around them; freezing still inlines the
    weights, folds what depends on them alone (the casts autocast recorded) and may pre-transpose
    or merge linear layers, so the frozen graph computes what the traced one does up to the
    rounding of other kernels (the export checks it against eager)."""
    names = [name for name in PRESERVED_ATTRIBUTES if hasattr(traced, name)]
    return torch.jit.freeze(traced.eval(), preserved_attrs=names, optimize_numerics=False)
