import random

import numpy as np
import torch

from ssl_speech.train.rng import capture_rng_state, restore_rng_state


def test_capture_restore_replays_every_stream(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = capture_rng_state()
    first = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    # Through a weights_only checkpoint round trip, as the trainer does.
    torch.save(state, tmp_path / "rng.pt")
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    second = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])
    assert first[2] == second[2]
