"""Cross-check of ABX against the reference implementation, ``zerospeech-libriabx2``.

Runs only where the reference is importable (``zrc_abx2``, which builds a Cython extension);
keep it in a separate environment, e.g.::

    python -m venv /tmp/abxref && echo "$PWD/.venv/lib/python3.11/site-packages" \\
        > /tmp/abxref/lib/python3.11/site-packages/base.pth
    /tmp/abxref/bin/pip install cython setuptools setuptools_scm pandas typing_extensions
    /tmp/abxref/bin/pip install --no-build-isolation --no-deps zerospeech-libriabx2
    PYTHONPATH=$PWD /tmp/abxref/bin/python -m pytest tests/eval/test_abx_reference.py

The reference reads the same ``.npy`` files and item file. Its feature list is given in the
item file's utterance order, which is the order our token ties follow, so even the random
subsets of capped groups are the same: the figures agree up to the float32 sums of the
reference.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from ssl_speech.eval.abx import abx_error

zrc_eval = pytest.importorskip("zrc_abx2.eval_ABX")
zrc_models = pytest.importorskip("zrc_abx2.ABX_src.models")

STEP = 0.01


def _corpus(seed: int, separation: float, speakers: int = 7, phones: int = 3, utts: int = 2,
            length: int = 24, dim: int = 12):
    """Random phone sequences; frame = separation * (phone mean + speaker mean) + noise."""
    rng = np.random.default_rng(seed)
    phone_mean, speaker_mean = rng.normal(size=(phones, dim)), rng.normal(size=(speakers, dim))
    feats, items = {}, []
    for s in range(speakers):
        for u in range(utts):
            utt = f"s{s}_u{u}"
            seq = rng.integers(0, phones, length)
            ends = np.cumsum(rng.integers(1, 14, length))  # some tokens select no frame
            starts = ends - np.diff(ends, prepend=0)
            mean = separation * (phone_mean[seq] + 0.5 * speaker_mean[s])
            frames = np.repeat(mean, ends - starts, axis=0)
            feats[utt] = (frames + rng.normal(size=frames.shape)).astype(np.float32)
            items += [(utt, round(starts[k] * STEP, 4), round(ends[k] * STEP, 4), f"p{seq[k]}",
                       f"p{seq[k - 1]}", f"p{seq[k + 1]}", f"spk{s}")
                      for k in range(1, length - 1)]
    return feats, items


def _reference(feat_dir, item_file, items, context, max_size_group, max_x_across, seed):
    order = list(dict.fromkeys(it[0] for it in items))
    seq_list = [(utt, str(feat_dir / f"{utt}.npy")) for utt in order]
    with contextlib.redirect_stdout(io.StringIO()):
        scores = zrc_eval.EvalABX()._ABX(
            zrc_models.Pooling.NONE, seed, zrc_eval._load_npy, str(item_file), seq_list,
            "cosine", 1 / STEP, ["within", "across"], [context], cuda=False,
            max_x_across=max_x_across, max_size_group=max_size_group)
    return {key.split("-")[0]: 100 * value for key, value in scores.items()}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("separation", [0.0, 1.0], ids=["random", "structured"])
@pytest.mark.parametrize("context", ["within", "any"])
@pytest.mark.parametrize("caps", [(10, 5), (3, 2), (1000, 1000)],
                         ids=["default-caps", "small-caps", "no-caps"])
def test_agrees_with_the_reference(tmp_path, separation, context, caps):
    feats, items = _corpus(0, separation)
    for utt, array in feats.items():
        np.save(tmp_path / f"{utt}.npy", array)
    item_file = tmp_path / "dev.item"
    item_file.write_text("#file onset offset #phone prev next speaker\n"
                         + "".join(" ".join(map(str, it)) + "\n" for it in items))
    max_size_group, max_x_across = caps
    want = _reference(tmp_path, item_file, items, context, max_size_group, max_x_across, 3459)
    got = abx_error(tmp_path, item_file, STEP, context=context, max_size_group=max_size_group,
                    max_x_across=max_x_across, seed=3459)
    assert got == pytest.approx(want, abs=1e-4), (got, want)
