"""The running batch's KV: one preallocated buffer per layer, rows left-aligned, and row-wise attention.

Each running sequence owns one row of a ``[rows, kv_heads, capacity, head_dim]`` buffer per layer,
its tokens at positions ``0..length-1`` (left-aligned, so a row's positions are its own and RoPE
needs no offsets). A sequence's prefill cache is copied into its row once, when it joins; a decode
step writes one key and value per row in place, so nothing is concatenated or copied per step
(transformers' ``DynamicCache`` concatenates every layer at every step). When a sequence leaves,
the last row moves into its place, so the live rows are always ``0..n-1``.

Why the outputs are the same batched or alone: a matrix product's bits depend on its number of rows
(a one-row product takes another kernel than a four-row one), so every decode step is run at the
same width (``--max-batch`` rows, idle rows padded), and attention is computed row by row on each
row's own ``length`` keys with no mask (as a lone ``generate`` does), never on a padded, masked
block whose length depends on the other rows. With both, a sequence's logits are bit for bit the
same whatever else shares its steps.

torch and transformers are imported lazily: this module belongs to the local engine.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

#: the attention implementation name registered with transformers (``sdpa`` unless a step passes ``batch_rows``)
ROWS_ATTENTION = "llava_app_rows"
_ROUND = 64  # capacity grows in steps of this many positions


@dataclass
class BatchRows:
    """What one decode step tells the attention: which buffer rows are live and their lengths after the write."""

    rows: list[int]
    lengths: list[int]
    index: Any = None  # (rows, positions written) as tensors on the device, made once per step


@functools.lru_cache(maxsize=1)
def register_rows_attention() -> str:
    """Register ``ROWS_ATTENTION`` with transformers (attention and mask); returns the name."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def rows_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                       batch_rows: BatchRows | None = None, **kwargs):
        """``sdpa`` for every forward but the batched decode step, which attends row by row."""
        if batch_rows is None:
            return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                          scaling=scaling, is_causal=is_causal, **kwargs)
        import torch

        width, heads, _, dim = query.shape
        out = torch.zeros((width, 1, heads, dim), dtype=query.dtype, device=query.device)
        for i, (row, length) in enumerate(zip(batch_rows.rows, batch_rows.lengths, strict=False)):
            o, _ = sdpa_attention_forward(module, query[i:i + 1], key[row:row + 1, :, :length],
                                          value[row:row + 1, :, :length], None, scaling=scaling, **kwargs)
            out[i] = o[0]
        return out, None

    AttentionInterface.register(ROWS_ATTENTION, rows_attention)
    AttentionMaskInterface.register(ROWS_ATTENTION, sdpa_mask)
    return ROWS_ATTENTION


class BatchKV:
    """The buffers, and the cache object a decode step hands the model (``update`` writes in place)."""

    def __init__(self, n_layers: int, kv_heads: int, head_dim: int, dtype, device):
        self.n_layers, self.kv_heads, self.head_dim = n_layers, kv_heads, head_dim
        self.dtype, self.device = dtype, device
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self.rows = self.capacity = 0
        self.lengths: list[int] = []  # per live row
        self.devices: list[Any] = []  # each layer's device (a model split over GPUs keeps its layers apart)
        self._step: BatchRows | None = None

    # ----- sizing ------------------------------------------------------------------------------
    @property
    def token_bytes(self) -> int:
        """Bytes one position of one row takes over all layers (keys and values)."""
        import torch

        size = torch.empty((), dtype=self.dtype).element_size()
        return 2 * self.n_layers * self.kv_heads * self.head_dim * size

    @property
    def nbytes(self) -> int:
        return self.rows * self.capacity * self.token_bytes

    def bytes_for(self, rows: int, capacity: int) -> int:
        """What the buffer would hold grown to at least ``rows`` rows of ``capacity`` positions."""
        return max(rows, self.rows) * _rounded(max(capacity, self.capacity)) * self.token_bytes

    def reserve(self, rows: int, capacity: int) -> None:
        """Grow to at least ``rows`` rows and ``capacity`` positions, keeping the live rows."""
        import torch

        rows, capacity = max(rows, self.rows), _rounded(max(capacity, self.capacity))
        if rows == self.rows and capacity == self.capacity:
            return
        shape = (rows, self.kv_heads, capacity, self.head_dim)
        live, used = len(self.lengths), max(self.lengths, default=0)
        for store in (self.keys, self.values):
            for i in range(self.n_layers):
                # zeros, not empty: a padded row's keys must never be NaN
                grown = torch.zeros(shape, dtype=self.dtype, device=self._device(i))
                if i < len(store):
                    grown[:live, :, :used] = store[i][:live, :, :used]
                    store[i] = grown
                else:
                    store.append(grown)
        self.rows, self.capacity = rows, capacity

    def _device(self, layer: int):
        return self.devices[layer] if layer < len(self.devices) else self.device

    def place_like(self, cache) -> None:
        """Put each layer's buffer where the model keeps that layer's cache (before the first allocation)."""
        if not self.keys:
            self.devices = [layer.keys.device for layer in cache.layers]

    def free(self) -> None:
        """Give the buffers back (the batch is empty)."""
        self.keys, self.values, self.lengths = [], [], []
        self.rows = self.capacity = 0

    # ----- rows ----------------------------------------------------------------------------------
    def join(self, cache) -> int:
        """Copy a prefilled ``DynamicCache`` (batch of one) into the next free row; returns the row."""
        row, length = len(self.lengths), cache.get_seq_length()
        self.reserve(row + 1, length + 1)
        for i, layer in enumerate(cache.layers):
            self.keys[i][row, :, :length] = layer.keys[0]
            self.values[i][row, :, :length] = layer.values[0]
        self.lengths.append(length)
        return row

    def leave(self, row: int) -> None:
        """Drop a row; the last row moves into its place."""
        last = len(self.lengths) - 1
        if row != last:
            used = self.lengths[last]
            for store in (self.keys, self.values):
                for t in store:
                    t[row, :, :used] = t[last, :, :used]
            self.lengths[row] = self.lengths[last]
        self.lengths.pop()

    def row_cache(self, row: int, new_cache):
        """``new_cache`` (a ``DynamicCache``) holding copies of the row's positions, for its next turn."""
        length = self.lengths[row]
        for i in range(self.n_layers):
            new_cache.update(self.keys[i][row:row + 1, :, :length].clone(),
                             self.values[i][row:row + 1, :, :length].clone(), i)
        return new_cache

    # ----- one decode step -----------------------------------------------------------------------
    def begin_step(self, rows: list[int]) -> BatchRows:
        """The step that writes one position for each of ``rows`` (at its length); grows capacity first."""
        import torch

        self.reserve(0, max(self.lengths[r] for r in rows) + 1)
        index = (torch.as_tensor(rows, device=self.device),
                 torch.as_tensor([self.lengths[r] for r in rows], device=self.device))
        self._step = BatchRows(rows, [self.lengths[r] + 1 for r in rows], index)
        return self._step

    def end_step(self) -> None:
        """The step succeeded: its rows are one longer."""
        step, self._step = self._step, None
        for r, n in zip(step.rows, step.lengths, strict=False):
            self.lengths[r] = n

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        """What attention layers call: write this step's keys and values in place; the whole buffers back."""
        step = self._step
        n = len(step.rows)
        rows, pos = step.index
        if rows.device != key_states.device:
            rows, pos = rows.to(key_states.device), pos.to(key_states.device)
        self.keys[layer_idx][rows, :, pos] = key_states[:n, :, 0]
        self.values[layer_idx][rows, :, pos] = value_states[:n, :, 0]
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return max(self.lengths, default=0)


def _rounded(n: int) -> int:
    return -(-n // _ROUND) * _ROUND
