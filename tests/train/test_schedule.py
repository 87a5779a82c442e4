import math

import pytest
import torch

from ssl_speech.train.schedule import build_scheduler, lr_factor


def test_warmup_then_cosine_reaches_min_ratio():
    assert lr_factor(0, 10, 110, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 10, 110, "cosine") == pytest.approx(1.0)
    assert lr_factor(60, 10, 110, "cosine", 0.0) == pytest.approx(0.5)
    assert lr_factor(110, 10, 110, "cosine", 0.2) == pytest.approx(0.2)
    assert lr_factor(500, 0, 100, "constant") == 1.0


def test_scheduler_drives_optimizer_lr():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, "cosine", warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:2] == [0.5, 1.0]
    assert lrs[2] == pytest.approx(1.0)
    assert lrs[4] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_bad_kind_is_named():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="optim.schedule='linear'"):
        build_scheduler(opt, "linear")
