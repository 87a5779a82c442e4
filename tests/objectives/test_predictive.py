"""The predictive core shared by CPC, aligned CPC and RPC."""

from __future__ import annotations

import pytest
import torch

from ssl_speech.objectives.aligned_cpc import ACPC
from ssl_speech.objectives.cpc import CPC
from ssl_speech.objectives.predictive import PredictiveCore
from ssl_speech.objectives.rpc import RPC

SHARED = dict(num_negatives=7, head="transformer", head_heads=2, head_ffn_dim=16,
              negatives="sequence", exclude_positive=True, score_scale=0.5, dropout=0.1,
              score_method="gather", negatives_across_ranks=True)


@pytest.mark.parametrize("make", [
    lambda: CPC(dim=8, num_steps=3, **SHARED),
    lambda: RPC(dim=8, num_steps=3, **SHARED),
    lambda: ACPC(dim=8, num_predictions=3, num_matched=5, **SHARED),
])
def test_every_predictive_objective_takes_the_shared_options(make) -> None:
    core = make().core
    assert isinstance(core, PredictiveCore)
    assert (core.num_negatives, core.negatives, core.exclude_positive, core.score_scale,
            core.score_method, core.negatives_across_ranks) == (7, "sequence", True, 0.5,
                                                                "gather", True)
    assert type(core.heads).__name__ == "TransformerHeads"


def test_unknown_option_is_named() -> None:
    with pytest.raises(TypeError, match="num_negative"):
        RPC(dim=8, num_negative=3)


def test_horizon_is_the_excluded_window() -> None:
    assert CPC(dim=8, num_steps=3).core.horizon == 3
    assert ACPC(dim=8, num_predictions=3, num_matched=5).core.horizon == 5


def test_state_dict_of_older_checkpoints_loads() -> None:
    """Before the core, the heads were ``heads.*`` of the objective itself."""
    torch.manual_seed(0)
    trained = CPC(dim=8, num_steps=3)
    old = {k.replace("core.heads.", "heads."): v for k, v in trained.state_dict().items()}
    assert any(k.startswith("heads.") for k in old)
    fresh = CPC(dim=8, num_steps=3)
    fresh.load_state_dict(old)
    for got, want in zip(fresh.parameters(), trained.parameters(), strict=True):
        assert torch.equal(got, want)


def test_sample_negatives_excludes_the_horizon() -> None:
    torch.manual_seed(0)
    core = ACPC(dim=4, num_predictions=2, num_matched=4, num_negatives=200, negatives="sequence",
                exclude_positive=True).core
    z = torch.zeros(1, 10, 4)
    index = core.sample_negatives(z, 6)  # (1, 6, 200), frames of sequence 0
    for t in range(6):
        drawn = set(index[0, t].tolist())
        assert not drawn & set(range(t + 1, t + 5)), t
        assert drawn - set(range(t + 1, t + 5))
