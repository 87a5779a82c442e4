"""Context networks: latent frames ``z`` ``(B, T, D)`` -> context frames ``c`` ``(B, T, H)``.

Interface shared by every context network:

- ``forward(z, padding_mask=None) -> c``; ``padding_mask`` is ``(B, T)`` bool, ``True`` on
  padding frames.
- ``forward_layers(z, padding_mask=None) -> list`` of every layer's output ``(B, T, H)`` in
  order; the last one is ``forward``'s output.
- attributes ``input_dim`` (D), ``dim`` (H), ``causal`` (output ``t`` reads no frame after
  ``t``), ``num_layers``, ``recurrent``.
- recurrent networks also have ``forward_with_state(z, state=None) -> (c, state)`` and
  ``forward_layers_with_state``: feeding a sequence in consecutive chunks with the returned state
  gives the same output as one pass, for streaming extraction of long recordings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_speech.nn.positional import ConvPositionalEmbedding, RotaryEmbedding, sinusoidal_positions


def _check_input(z: Tensor, input_dim: int, owner: str) -> None:
    if z.dim() != 3 or z.shape[-1] != input_dim:
        raise ValueError(
            f"{owner} expects z of shape (batch, frames, {input_dim}), got {tuple(z.shape)}"
        )


def _check_mask(padding_mask: Tensor | None, z: Tensor, owner: str) -> None:
    if padding_mask is None:
        return
    if padding_mask.shape != z.shape[:2] or padding_mask.dtype != torch.bool:
        raise ValueError(
            f"{owner}: padding_mask must be bool of shape {tuple(z.shape[:2])}, got "
            f"{padding_mask.dtype} {tuple(padding_mask.shape)}"
        )


class RecurrentContext(nn.Module):
    """A stack of unidirectional LSTM or GRU layers (causal).

    Each layer is its own single-layer RNN so that every layer's output is available; dropout
    is applied to the input of every layer but the first, as ``nn.LSTM(dropout=...)`` does.
    A ``padding_mask`` is accepted for the interface and has no effect on the valid frames:
    trailing padding can never reach earlier frames of a causal network.

    Args:
        input_dim: D.
        dim: hidden size H.
        num_layers: stacked layers.
        dropout: dropout between layers.
        cell: ``"lstm"`` or ``"gru"``.
    """

    CELLS = ("lstm", "gru")

    def __init__(
        self,
        input_dim: int,
        dim: int = 256,
        num_layers: int = 1,
        dropout: float = 0.0,
        cell: str = "lstm",
    ) -> None:
        super().__init__()
        if cell not in self.CELLS:
            raise ValueError(f"RecurrentContext: unknown cell {cell!r}; choose one of lstm, gru")
        if input_dim < 1 or dim < 1 or num_layers < 1:
            raise ValueError(
                f"RecurrentContext: input_dim, dim and num_layers must be >= 1, got "
                f"{input_dim}, {dim}, {num_layers}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"RecurrentContext: dropout must be in [0, 1), got {dropout}")
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.layers = nn.ModuleList(
            rnn(input_dim if i == 0 else dim, dim, batch_first=True) for i in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.cell = cell
        self.input_dim = input_dim
        self.dim = dim
        self.num_layers = num_layers
        self.causal = True
        self.recurrent = True

    def forward_layers_with_state(
        self, z: Tensor, state: list | None = None
    ) -> tuple[list[Tensor], list]:
        """``z``: ``(B, T, D)``; ``state``: ``None`` or a previous call's state.

        Returns every layer's output ``(B, T, H)`` and the state after frame ``T - 1`` (one entry
        per layer: ``(h, c)`` each ``(1, B, H)`` for LSTM, ``h`` for GRU).
        """
        _check_input(z, self.input_dim, type(self).__name__)
        if state is None:
            state = [None] * self.num_layers
        elif len(state) != self.num_layers:
            raise ValueError(f"state has {len(state)} layers, this network {self.num_layers}")
        if z.shape[1] == 0:
            return [z.new_zeros(z.shape[0], 0, self.dim) for _ in self.layers], list(state)
        outputs, new_state = [], []
        x = z
        for i, (rnn, layer_state) in enumerate(zip(self.layers, state)):
            if i > 0:
                x = self.dropout(x)
            x, layer_state = rnn(x, layer_state)
            outputs.append(x)
            new_state.append(layer_state)
        return outputs, new_state

    def forward_with_state(self, z: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        """``z``: ``(B, T, D)`` -> ``(c (B, T, H), state)``; see ``forward_layers_with_state``."""
        outputs, state = self.forward_layers_with_state(z, state)
        return outputs[-1], state

    def forward_layers(self, z: Tensor, padding_mask: Tensor | None = None) -> list[Tensor]:
        """``z``: ``(B, T, D)`` -> every layer's output ``(B, T, H)``."""
        _check_mask(padding_mask, z, type(self).__name__)
        return self.forward_layers_with_state(z)[0]

    def forward(self, z: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """``z``: ``(B, T, D)`` -> ``c``: ``(B, T, H)``."""
        return self.forward_layers(z, padding_mask)[-1]


class LSTMContext(RecurrentContext):
    """``RecurrentContext`` with LSTM cells (CPC: one layer of 256)."""

    def __init__(self, input_dim: int, dim: int = 256, num_layers: int = 1, dropout: float = 0.0):
        super().__init__(input_dim, dim, num_layers, dropout, cell="lstm")


class GRUContext(RecurrentContext):
    """``RecurrentContext`` with GRU cells."""

    def __init__(self, input_dim: int, dim: int = 256, num_layers: int = 1, dropout: float = 0.0):
        super().__init__(input_dim, dim, num_layers, dropout, cell="gru")


class _SelfAttention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None,
        is_causal: bool,
        rotary: tuple[Tensor, Tensor] | None,
    ) -> Tensor:
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, T, head_dim)
        if rotary is not None:
            q = RotaryEmbedding.rotate(q, *rotary)
            k = RotaryEmbedding.rotate(k, *rotary)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class _TransformerBlock(nn.Module):
    """Pre-LN block: ``x + attn(LN(x))`` then ``x + FFN(LN(x))``, dropout on both branches."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = _SelfAttention(dim, num_heads, dropout)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None,
        is_causal: bool,
        rotary: tuple[Tensor, Tensor] | None,
    ) -> Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), attn_mask, is_causal, rotary))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class TransformerContext(nn.Module):
    """A pre-LN Transformer encoder over the latent frames, causal or bidirectional.

    ``z`` -> linear projection to ``dim`` (if ``input_dim != dim``) -> positional encoding ->
    dropout -> ``num_layers`` pre-LN blocks -> final LayerNorm. ``forward_layers`` returns the
    residual stream after each block, the last one after the final LayerNorm (it equals
    ``forward``'s output); the inner ones are un-normalised.

    Positional encodings (all work for any length; see ``positional.py``): ``"rotary"`` on the
    queries and keys of every layer (relative; the default), ``"sinusoidal"`` added to the input
    (absolute), ``"conv"`` a wav2vec 2.0 convolutional embedding of ``conv_pos_kernel`` frames
    added to the input (relative; left-padded when causal).

    Attention is ``F.scaled_dot_product_attention`` with ``is_causal`` when there is no padding
    mask; with one, padding keys are masked out (every query still sees itself, so padding
    queries stay finite).

    Args:
        input_dim: D.
        dim: model width H (divisible by ``num_heads``).
        num_layers: blocks.
        num_heads: attention heads.
        ffn_dim: feed-forward hidden size.
        dropout: on the input, attention weights, feed-forward hidden and residual branches.
        causal: mask attention to frames ``<= t``.
        positional: ``"rotary"``, ``"sinusoidal"`` or ``"conv"``.
        conv_pos_kernel: span in frames of the ``"conv"`` encoding (128 in wav2vec 2.0).
        conv_pos_groups: groups of the ``"conv"`` encoding.
    """

    POSITIONAL = ("rotary", "sinusoidal", "conv")

    def __init__(
        self,
        input_dim: int,
        dim: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        causal: bool = True,
        positional: str = "rotary",
        conv_pos_kernel: int = 128,
        conv_pos_groups: int = 16,
    ) -> None:
        super().__init__()
        if positional not in self.POSITIONAL:
            raise ValueError(
                f"TransformerContext: unknown positional {positional!r}; choose one of "
                f"{', '.join(self.POSITIONAL)}"
            )
        if input_dim < 1 or num_layers < 1 or num_heads < 1 or ffn_dim < 1:
            raise ValueError(
                "TransformerContext: input_dim, num_layers, num_heads and ffn_dim must be >= 1, "
                f"got {input_dim}, {num_layers}, {num_heads}, {ffn_dim}"
            )
        if dim < 1 or dim % num_heads:
            raise ValueError(
                f"TransformerContext: dim {dim} must be a positive multiple of num_heads "
                f"{num_heads}"
            )
        if positional == "rotary" and (dim // num_heads) % 2:
            raise ValueError(
                f"TransformerContext: rotary needs an even head size, got dim {dim} / num_heads "
                f"{num_heads} = {dim // num_heads}"
            )
        if positional == "sinusoidal" and dim % 2:
            raise ValueError(f"TransformerContext: sinusoidal needs an even dim, got {dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"TransformerContext: dropout must be in [0, 1), got {dropout}")
        self.proj = nn.Linear(input_dim, dim) if input_dim != dim else nn.Identity()
        self.rotary = RotaryEmbedding(dim // num_heads) if positional == "rotary" else None
        self.pos_conv = (
            ConvPositionalEmbedding(dim, conv_pos_kernel, conv_pos_groups, causal=causal)
            if positional == "conv"
            else None
        )
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            _TransformerBlock(dim, num_heads, ffn_dim, dropout) for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(dim)
        self.input_dim = input_dim
        self.dim = dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.causal = causal
        self.positional = positional
        self.recurrent = False

    def _attention_mask(self, padding_mask: Tensor | None, T: int) -> Tensor | None:
        """Boolean ``(B, 1, T, T)`` mask, ``True`` where query ``q`` may attend to key ``k``."""
        if padding_mask is None:
            return None
        keys = ~padding_mask[:, None, None, :]
        eye = torch.eye(T, dtype=torch.bool, device=padding_mask.device)
        allowed = keys | eye
        if self.causal:
            allowed = allowed & torch.ones_like(eye).tril()
        return allowed

    def forward_layers(self, z: Tensor, padding_mask: Tensor | None = None) -> list[Tensor]:
        """``z``: ``(B, T, D)`` -> every block's output ``(B, T, H)``; see the class docstring."""
        _check_input(z, self.input_dim, type(self).__name__)
        _check_mask(padding_mask, z, type(self).__name__)
        B, T, _ = z.shape
        if T == 0:
            return [z.new_zeros(B, 0, self.dim) for _ in self.blocks]
        x = self.proj(z)
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
        if self.positional == "sinusoidal":
            x = x + sinusoidal_positions(T, self.dim, x.device).to(x.dtype)
        elif self.pos_conv is not None:
            x = self.pos_conv(x)
        x = self.input_dropout(x)
        rotary = self.rotary.angles(T, x.device) if self.rotary is not None else None
        attn_mask = self._attention_mask(padding_mask, T)
        is_causal = self.causal and attn_mask is None
        outputs = []
        for block in self.blocks:
            x = block(x, attn_mask, is_causal, rotary)
            outputs.append(x)
        outputs[-1] = self.final_norm(outputs[-1])
        return outputs

    def forward(self, z: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """``z``: ``(B, T, D)`` -> ``c``: ``(B, T, H)``."""
        return self.forward_layers(z, padding_mask)[-1]


class CausalTransformerContext(TransformerContext):
    """``TransformerContext`` with ``causal=True`` (CPC-style predictive objectives)."""

    def __init__(self, input_dim: int, **kwargs) -> None:
        if "causal" in kwargs:
            raise ValueError("CausalTransformerContext is always causal; do not pass causal")
        super().__init__(input_dim, causal=True, **kwargs)


class BidirectionalTransformerContext(TransformerContext):
    """``TransformerContext`` with ``causal=False`` (masked objectives: MGF, TriNet)."""

    def __init__(self, input_dim: int, **kwargs) -> None:
        if "causal" in kwargs:
            raise ValueError("BidirectionalTransformerContext is never causal; do not pass causal")
        super().__init__(input_dim, causal=False, **kwargs)


class IdentityContext(nn.Module):
    """No context network: ``c = z``. One layer (its output is ``z``), no parameters, causal.

    Args:
        input_dim: D (= H).
        dim: optional, must equal ``input_dim``; accepted so that every context config can
            state its ``dim``.
    """

    def __init__(self, input_dim: int, dim: int | None = None) -> None:
        super().__init__()
        if input_dim < 1:
            raise ValueError(f"IdentityContext: input_dim must be >= 1, got {input_dim}")
        if dim is not None and dim != input_dim:
            raise ValueError(
                f"IdentityContext: dim {dim} must equal input_dim {input_dim} (c = z); "
                "leave dim unset"
            )
        self.input_dim = input_dim
        self.dim = input_dim
        self.num_layers = 1
        self.causal = True
        self.recurrent = False

    def forward_layers(self, z: Tensor, padding_mask: Tensor | None = None) -> list[Tensor]:
        """``z``: ``(B, T, D)`` -> ``[z]``."""
        _check_input(z, self.input_dim, type(self).__name__)
        _check_mask(padding_mask, z, type(self).__name__)
        return [z]

    def forward(self, z: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """``z``: ``(B, T, D)`` -> ``z``."""
        return self.forward_layers(z, padding_mask)[-1]
