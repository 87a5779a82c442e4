"""The reference code's resampling of a segment's log-mel frames to a fixed number of points.

Zaiem, Parcollet and Essid's selection code (salah-zaiem/Multitask-pretext-task-selection, its
K-matrix scripts) summarises each segment by a Gaussian down-sampling of its raw log-mel frames
(the Zero Resource challenge's "relative, non-uniform" variant), described here in formulas:
for a segment of ``n`` frames ``x_0 … x_{n-1}`` and ``P`` points ``p = 0 … P-1``

- centres ``c_p = p (n - 1) / (P - 1)`` frames (``linspace(0, n - 1, P)``; ``c_0 = 0`` for
  ``P = 1``);
- widths ``s_p = std_ratio * n + std_slope * min(p, P - 1 - p)``: wider towards the middle;
- weights ``w_pi = Phi((i + 1 - c_p) / s_p) - Phi((i - c_p) / s_p)`` (the Gaussian mass over
  ``[i, i + 1)``, ``Phi`` the standard normal CDF), normalised to sum to one over ``i``;
- point ``p = sum_i w_pi x_i``.

The reference uses ``P = 10`` for phones and words and ``P = 30`` for speakers, ``std_ratio =
0.07`` and ``std_slope = 0.1``. (Its tent of widths is written for an even ``P``; the
``min(p, P - 1 - p)`` form equals it there and extends it to odd ``P``.)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from ssl_speech.eval.utility_segments import Segments, flat_frames

REFERENCE_STD_RATIO = 0.07
REFERENCE_STD_SLOPE = 0.1


def reference_downsample_segments(
    features: Mapping[str, np.ndarray | Tensor],
    segments: Segments,
    num_points: int = 10,
    std_ratio: float = REFERENCE_STD_RATIO,
    std_slope: float = REFERENCE_STD_SLOPE,
) -> Tensor:
    """Each segment's frames resampled to ``num_points`` as the reference code does (module
    docstring): ``{utt: (T, F)}`` frames and ``S`` segments give ``(S, num_points, F)``
    float32. No standardisation: the reference feeds raw log-mel."""
    if num_points < 1 or std_ratio <= 0 or std_slope < 0:
        raise ValueError(f"need num_points >= 1, std_ratio > 0 and std_slope >= 0, got "
                         f"{num_points}, {std_ratio}, {std_slope}")
    rows, which, position = flat_frames(features, segments)
    n = torch.from_numpy(segments.lengths).double()[which, None]  # (N, 1)
    p = torch.arange(num_points, dtype=torch.float64)
    centre = p * (n - 1.0) / max(num_points - 1, 1)  # (N, P)
    std = std_ratio * n + std_slope * torch.minimum(p, num_points - 1 - p)  # (N, P)
    i = position.double()[:, None]
    weight = torch.special.ndtr((i + 1.0 - centre) / std) - torch.special.ndtr((i - centre) / std)
    total = torch.zeros(len(segments), num_points, dtype=torch.float64).index_add_(0, which,
                                                                                   weight)
    out = torch.zeros(len(segments), num_points, rows.shape[1], dtype=torch.float64)
    rows = rows.double()
    for point in range(num_points):  # one scatter per point bounds memory to (N, F)
        out[:, point].index_add_(0, which, weight[:, point : point + 1] * rows)
    return (out / total[..., None].clamp_min(1e-300)).float()
