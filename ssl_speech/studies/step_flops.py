"""FLOPs of a training step, counted from the shapes of one forward and backward pass.

``torch.utils.flop_counter`` counts matrix products, convolutions and attention; the formulas
here add the kernels it does not know (the CPU attention and the oneDNN and cuDNN recurrent
layers). Elementwise work and the optimizer are not counted. Scores are counted in their gather
form (each prediction times its own candidates: the arithmetic the loss needs), whichever
scoring method runs, so the dense method's extra products never inflate an achieved fraction.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def _rnn_flops(input_shape, weight_shapes) -> int:
    """Forward FLOPs of a recurrent layer: every 2-D weight multiplies one vector per frame
    (input ``(T, B, I)`` or ``(B, T, I)``, or ``(frames, I)`` when packed)."""
    frames = input_shape[0] * input_shape[1] if len(input_shape) == 3 else input_shape[0]
    return sum(2 * frames * shape[0] * shape[1] for shape in weight_shapes if len(shape) == 2)


def _mkldnn_rnn_flops(input_shape, w0, w1, *args, out_shape=None, **kwargs) -> int:
    return _rnn_flops(input_shape, [w0, w1])


def _mkldnn_rnn_backward_flops(input_shape, w0, w1, *args, out_shape=None, **kwargs) -> int:
    return 2 * _rnn_flops(input_shape, [w0, w1])


def _cudnn_rnn_flops(input_shape, weights, *args, out_shape=None, **kwargs) -> int:
    return _rnn_flops(input_shape, weights)


def _cudnn_rnn_backward_flops(input_shape, weights, *args, out_shape=None, **kwargs) -> int:
    return 2 * _rnn_flops(input_shape, weights)


def _cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward_flops(grad_out, query, key, value, *args, out_shape=None,
                                  **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, query, key, value)


def extra_flop_formulas() -> dict:
    aten = torch.ops.aten
    formulas = {
        aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward_flops,
        aten.mkldnn_rnn_layer: _mkldnn_rnn_flops,
        aten.mkldnn_rnn_layer_backward: _mkldnn_rnn_backward_flops,
    }
    if hasattr(aten, "_cudnn_rnn"):
        formulas[aten._cudnn_rnn] = _cudnn_rnn_flops
        formulas[aten._cudnn_rnn_backward] = _cudnn_rnn_backward_flops
    return formulas


def count_step_flops(module: torch.nn.Module, batch: Any,
                     autocast: contextlib.AbstractContextManager | None = None) -> int:
    """FLOPs of one forward and backward pass of ``module(batch) -> (loss, metrics)``.

    Counted from operand shapes (module docstring); an objective with a ``score_method`` is
    counted with ``"gather"``. Gradients are left in the parameters' ``.grad``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    objectives = [m for m in module.modules() if hasattr(m, "score_method")]
    saved = [m.score_method for m in objectives]
    try:
        for m in objectives:
            m.score_method = "gather"
        with FlopCounterMode(display=False, custom_mapping=extra_flop_formulas()) as counter:
            with autocast or contextlib.nullcontext():
                loss, _ = module(batch)
            loss.float().backward()
    finally:
        for m, method in zip(objectives, saved):
            m.score_method = method
    return int(counter.get_total_flops())
