"""Analysis frames: centred on their span, reflected at the edges."""

from __future__ import annotations

import torch

from ssl_speech.signal.short_time import frames


def test_frames_are_centred_on_their_span():
    x = torch.arange(1600, dtype=torch.float32)[None]
    framed = frames(x, hop=160, length=400)
    assert framed.shape == (1, 10, 400)
    # frame t covers [160 t + 80 - 200, 160 t + 80 + 200): frame 3 starts at sample 360
    assert framed[0, 3, 0].item() == 360.0 and framed[0, 3, -1].item() == 759.0
    # reflection at the start: sample -120 mirrors sample 120
    assert framed[0, 0, 0].item() == 120.0
