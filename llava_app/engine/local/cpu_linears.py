"""A decode step's linear layers on an x86 CPU (MKL): the product of a few rows, written the fast way.

A decode step multiplies every weight matrix by as many rows as there are sequences (1 to 8), and
``F.linear(x, W)`` hands MKL that product as ``x · Wᵀ``, a shape its sgemm handles badly: 4 rows cost
2-3x one row. The same product computed as ``W · xᵀ`` (the rows as 4 columns) streams the weights once:
on this project's CPU, 4 rows through a 4,864 x 896 matrix take 1.2 ms instead of 2.6 ms, through the
bench model's 152,000 x 256 output layer 7 ms instead of 33 ms. One row stays a matrix-vector product
(MKL's sgemv), which is as fast or faster, except on a tall, narrow matrix (an output layer of a
152,000-word vocabulary on a narrow model): there sgemv takes 20 ms where the row padded to 4 columns
takes 7, so on such a layer a single row is padded too. ``python -m llava_app.benchmarks.decode_step``
measures a whole step.

What stays the same: a row's result does not depend on the other rows or on its place among them, so
a sequence decodes to the same bits whoever it is batched with (the batch also keeps its fixed width,
batching.py). That needs the padding: MKL gives a column the same bits in products of 4 to 11 columns,
but a 5th column of 5 (and a column of 1 to 3) other bits, so rows are padded to 4 or 8 columns (tested
bitwise). More than 8 rows (a prompt's prefill, the vision tower) and layers with a bias go
through ``F.linear`` as before; so does everything off the CPU, in another dtype than float32, or
without MKL. The layers keep their weights (tied embeddings stay tied); ``restore`` undoes it.

torch is imported lazily: this module belongs to the local engine.
"""

from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)

FEW_ROWS = 8  # at most this many rows take the W · xᵀ path
PAD_ROWS = 4  # rows are padded to a multiple of this many columns (the kernel's bits are the same for 4 and 8)
TALL = 64  # a layer with at least TALL times more outputs than inputs pads a single row too


@functools.cache
def _few_rows_linear():
    import torch

    class FewRowsLinear(torch.nn.Linear):
        """``nn.Linear`` whose products of up to ``FEW_ROWS`` rows run as ``W · xᵀ`` (module docstring)."""

        def forward(self, x):
            width = x.shape[-1]
            rows = x.numel() // width if width else 0
            tall = self.out_features >= TALL * self.in_features
            if not 0 < rows <= FEW_ROWS or (rows == 1 and not tall):
                return torch.nn.functional.linear(x, self.weight, self.bias)
            flat = x.reshape(rows, width)
            if rows % PAD_ROWS:
                flat = torch.nn.functional.pad(flat, (0, 0, 0, PAD_ROWS - rows % PAD_ROWS))
            out = torch.mm(self.weight, flat.T).T[:rows]
            # An output layer's logits stay a transposed view (copying 4 x 152,000 costs more than reading
            # them strided); other layers' outputs are made contiguous, as later views may expect.
            if not tall:
                out = out.contiguous()
            return out.reshape(*x.shape[:-1], self.out_features)

    return FewRowsLinear


def applies(model) -> bool:
    """The model runs in float32 on a CPU whose torch has MKL (what the path was measured on)."""
    import torch

    try:
        weight = model.get_output_embeddings().weight
    except AttributeError:
        return False
    return weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkl.is_available()


def language_linears(model) -> list:
    """The plain ``nn.Linear`` layers without a bias of the text model and its output layer."""
    import torch

    head = model.get_output_embeddings()
    try:
        decoder = model.get_decoder()
    except (AttributeError, ValueError):
        decoder = None
    plain = (torch.nn.Linear, _few_rows_linear())  # not a subclass of another kind (a quantised layer, ...)
    layers = []
    for module in (head, *(decoder.modules() if decoder is not None else ())):
        if type(module) in plain and module.bias is None and module not in layers:
            layers.append(module)
    return layers


def install(model) -> int:
    """Route the model's few-row products through ``W · xᵀ`` where it applies; how many layers now do."""
    if not applies(model):
        return 0
    layers = language_linears(model)
    for layer in layers:
        layer.__class__ = _few_rows_linear()
    log.info("few-row products as W·xᵀ in %d linear layers (CPU, MKL)", len(layers))
    return len(layers)


def restore(model) -> None:
    """Back to ``F.linear`` everywhere (a benchmark's side-by-side run)."""
    import torch

    for layer in model.modules():
        if type(layer) is _few_rows_linear():
            layer.__class__ = torch.nn.Linear
