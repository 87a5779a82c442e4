"""The pseudo-label utility estimator: kernels, HSIC, segments, and what the estimate means."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_speech.eval.utility import (
    Segments,
    centre_kernel,
    conditional_dependence,
    cosine_kernel,
    downsample_segments,
    format_table,
    hsic,
    phone_segments,
    plot_estimates,
    rank_pseudo_labels,
    rbf_kernel,
    segment_means,
    speaker_segments,
    write_table,
)


def synthetic_segments(num_classes: int = 6, per_class: int = 40, dim: int = 12, seed: int = 0):
    """Segment inputs ``X`` = class prototype + a within-class factor ``u`` + noise; returns
    ``(x (S, dim), labels (S,), u (S,))``."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(num_classes, dim, generator=g) * 3.0
    direction = torch.randn(dim, generator=g)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    u = torch.randn(labels.shape[0], generator=g)
    x = prototypes[labels] + u[:, None] * direction + 0.3 * torch.randn(labels.shape[0], dim,
                                                                         generator=g)
    return x, labels, u


# ------------------------------------------------------------------------------ kernels and HSIC


def naive_hsic(K: np.ndarray, L: np.ndarray) -> float:
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(K @ H @ L @ H) / (n - 1) ** 2)


@pytest.mark.parametrize("variance", [1.0, 0.05, "median"])
def test_kernels_are_positive_semidefinite(variance):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 30, 8, generator=g, dtype=torch.float64)
    z = torch.randn(3, 30, 2, generator=g, dtype=torch.float64)
    for kernel in (cosine_kernel(x), rbf_kernel(z, variance)):
        assert torch.allclose(kernel, kernel.mT)
        assert torch.linalg.eigvalsh(kernel).min() > -1e-9
        assert torch.linalg.eigvalsh(centre_kernel(kernel)).min() > -1e-9
    assert torch.allclose(torch.diagonal(cosine_kernel(x), dim1=-2, dim2=-1),
                          torch.ones(3, 30, dtype=torch.float64))


def test_batched_masked_hsic_equals_the_textbook_formula():
    g = torch.Generator().manual_seed(2)
    sizes = [7, 12, 4]
    width = max(sizes)
    x = torch.randn(3, width, 5, generator=g, dtype=torch.float64)
    z = torch.randn(3, width, 1, generator=g, dtype=torch.float64)
    mask = torch.arange(width)[None] < torch.tensor(sizes)[:, None]
    batched = hsic(cosine_kernel(x, mask), rbf_kernel(z, 1.0, mask), mask)
    for c, n in enumerate(sizes):
        K = cosine_kernel(x[c, :n]).numpy()
        L = rbf_kernel(z[c, :n], 1.0).numpy()
        assert batched[c].item() == pytest.approx(naive_hsic(K, L), rel=1e-10, abs=1e-14)
        # the median heuristic too: each matrix gets its own bandwidth
        median = hsic(cosine_kernel(x, mask), rbf_kernel(z, "median", mask), mask)[c]
        assert median.item() == pytest.approx(
            naive_hsic(K, rbf_kernel(z[c, :n], "median").numpy()), rel=1e-10, abs=1e-14)


def test_hsic_is_zero_for_a_constant_kernel_and_positive_for_dependence():
    x, _, u = synthetic_segments(num_classes=1, per_class=50)
    K = cosine_kernel(x.double())
    assert hsic(K, torch.ones(50, 50, dtype=torch.float64)).abs().item() < 1e-12
    dependent = hsic(K, rbf_kernel(u[:, None].double()))
    independent = hsic(K, rbf_kernel(torch.randn(50, 1, dtype=torch.float64,
                                                 generator=torch.Generator().manual_seed(9))))
    assert dependent > 5 * independent > 0


def test_bad_variance_is_rejected():
    with pytest.raises(ValueError, match="variance"):
        rbf_kernel(torch.randn(4, 1), variance=-1.0)
    with pytest.raises(ValueError, match="variance"):
        rbf_kernel(torch.randn(4, 1), variance="mean")


# ------------------------------------------------------------------------------ the estimate


@pytest.mark.parametrize("variance", [1.0, "median"])
def test_a_function_of_the_class_is_at_the_minimum(variance):
    x, labels, u = synthetic_segments()
    of_class = conditional_dependence(x, (labels.float() * 2.5 - 4.0) ** 2, labels,
                                      variance=variance)
    noise = torch.randn(labels.shape[0], generator=torch.Generator().manual_seed(5))
    independent = conditional_dependence(x, noise, labels, variance=variance)
    informative = conditional_dependence(x, u, labels, variance=variance)
    # HSIC >= 0, and exactly 0 when Z is constant inside every class
    assert abs(of_class.uniform) < 1e-9 and abs(of_class.weighted) < 1e-9
    assert of_class.uniform < independent.uniform < informative.uniform
    assert informative.uniform > 5 * independent.uniform
    assert informative.weighted > 5 * independent.weighted


def test_more_information_beyond_the_class_means_a_larger_estimate():
    x, labels, u = synthetic_segments(per_class=60)
    noise = torch.randn(u.shape, generator=torch.Generator().manual_seed(3))
    estimates = [conditional_dependence(x, u + scale * noise, labels).uniform
                 for scale in (0.0, 1.0, 3.0, 100.0)]
    assert estimates == sorted(estimates, reverse=True)


def test_the_estimate_ignores_the_order_of_segments():
    x, labels, u = synthetic_segments(num_classes=5, per_class=30)
    keys = torch.arange(labels.shape[0]) * 7919 % 1009
    permutation = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(4))
    for cap in (500, 12):  # uncapped, and capped with identity keys choosing the subsample
        a = conditional_dependence(x, u, labels, keys, max_per_class=cap)
        b = conditional_dependence(x[permutation], u[permutation], labels[permutation],
                                   keys[permutation], max_per_class=cap)
        assert a.uniform == pytest.approx(b.uniform, rel=1e-9)
        assert a.weighted == pytest.approx(b.weighted, rel=1e-9)
        assert a.per_class == pytest.approx(b.per_class, rel=1e-9)
    # without keys the draw follows the input order, which only matters under a cap
    a = conditional_dependence(x, u, labels)
    b = conditional_dependence(x[permutation], u[permutation], labels[permutation])
    assert a.uniform == pytest.approx(b.uniform, rel=1e-9)


def test_undefined_targets_small_classes_and_the_cap_are_counted():
    x, labels, u = synthetic_segments(num_classes=4, per_class=30)
    z = u.clone()
    z[:10] = float("nan")  # 10 segments of class 0 undefined
    z[30:57] = float("nan")  # class 1 keeps 3 segments: too few
    result = conditional_dependence(x, z, labels, max_per_class=25, min_class_size=4)
    assert result.num_dropped == 37
    assert result.skipped_classes == [1]
    assert result.class_sizes == {0: 20, 2: 30, 3: 30}
    assert result.num_segments == 20 + 25 + 25
    weights = np.array([20, 30, 30])
    values = np.array([result.per_class[c] for c in (0, 2, 3)])
    assert result.uniform == pytest.approx(values.mean())
    assert result.weighted == pytest.approx((values * weights).sum() / weights.sum())


def test_classes_done_in_chunks_give_the_same_estimate():
    x, labels, u = synthetic_segments(num_classes=7, per_class=25)
    whole = conditional_dependence(x, u, labels)
    chunked = conditional_dependence(x, u, labels, max_elements=25 * 25)
    assert whole.per_class == pytest.approx(chunked.per_class, rel=1e-9)


def test_all_undefined_targets_give_nan_not_an_error():
    x, labels, _ = synthetic_segments(num_classes=2, per_class=5)
    result = conditional_dependence(x, torch.full((10,), float("nan")), labels)
    assert np.isnan(result.uniform) and result.num_dropped == 10
    with pytest.raises(ValueError, match="number of segments"):
        conditional_dependence(x, torch.zeros(9), labels)


# ------------------------------------------------------------------------------ segments


def test_phone_segments_are_runs_in_canonical_order():
    alignments = {"b": np.array([3, 3, 0, 0, 0, 5]), "a": np.array([-100, 2, 2, 7])}
    segments = phone_segments(alignments)
    assert segments.utts == ["a", "b"]
    assert segments.label.tolist() == [2, 7, 3, 0, 5]
    assert segments.start.tolist() == [1, 3, 0, 2, 5]
    assert segments.end.tolist() == [3, 4, 2, 5, 6]
    assert phone_segments(alignments, ignore=(-100, 0)).label.tolist() == [2, 7, 3, 5]
    cut = phone_segments(alignments, num_frames={"a": 4, "b": 3})
    assert cut.end.max() <= 4 and cut.label.tolist() == [2, 7, 3, 0]


def test_speaker_segments_are_chunks_or_utterances():
    frames = {"u1": 450, "u2": 120}
    chunks = speaker_segments(frames, {"u1": 0, "u2": 1}, chunk_frames=200)
    assert chunks.start.tolist() == [0, 200] and chunks.label.tolist() == [0, 0]
    whole = speaker_segments(frames, {"u1": 0, "u2": 1}, chunk_frames=None)
    assert whole.end.tolist() == [450, 120] and whole.label.tolist() == [0, 1]
    with pytest.raises(KeyError, match="speaker"):
        speaker_segments(frames, {"u1": 0})


def test_segment_keys_depend_only_on_the_segment():
    segments = phone_segments({"a": np.array([1, 1, 2, 3, 3, 3]), "b": np.array([4, 4])})
    keys = segments.keys(seed=0)
    keep = np.array([True, False, True, True])
    assert segments.select(keep).keys(seed=0).tolist() == keys[keep].tolist()
    assert segments.keys(seed=1).tolist() != keys.tolist()


def test_gaussian_downsampling():
    ramp = np.arange(100, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    segments = Segments(["u"], np.array([0, 0, 0]), np.array([0, 10, 50]),
                        np.array([100, 11, 80]), np.array([0, 1, 2]))
    out = downsample_segments({"u": ramp}, segments, num_points=5, standardize=False)
    assert out.shape == (3, 5, 3)
    assert (out[0, 1:, 0] > out[0, :-1, 0]).all()  # a ramp stays increasing
    assert out[0, 2, 0].item() == pytest.approx(49.5, abs=0.5)  # middle point, middle frame
    assert torch.allclose(out[1], torch.full((5, 3), 10.0))  # one frame: its value everywhere
    assert out[2, :, 0].min() >= 50 and out[2, :, 0].max() <= 79
    # standardising first is the same affine map on every point (the weights sum to one)
    used = np.concatenate([ramp[0:100], ramp[10:11], ramp[50:80]])
    mean, std = used.mean(axis=0), used.std(axis=0)
    standardized = downsample_segments({"u": ramp}, segments, num_points=5)
    assert torch.allclose(standardized, (out - torch.from_numpy(mean)) / torch.from_numpy(std),
                          atol=1e-5)


def test_segment_means_skip_nan_frames():
    values = {"u": np.array([1.0, np.nan, 3.0, np.nan, np.nan, 5.0])}
    segments = Segments(["u"], np.array([0, 0, 0]), np.array([0, 3, 5]), np.array([3, 5, 6]),
                        np.array([0, 0, 0]))
    means = segment_means(values, segments)
    assert means.shape == (3, 1)
    assert means[0, 0].item() == 2.0 and np.isnan(means[1, 0].item()) and means[2, 0] == 5.0
    with pytest.raises(ValueError, match="runs past"):
        segment_means(values, Segments(["u"], np.array([0]), np.array([4]), np.array([9]),
                                       np.array([0])))


# ------------------------------------------------------------------------------ on a corpus


@pytest.fixture(scope="module")
def tiny_utterances(tiny_corpus):
    from ssl_speech.data.corpus import load_corpus
    from ssl_speech.data.labels import read_alignments

    corpus = load_corpus(root=tiny_corpus, split="train")
    return list(corpus)[:8], read_alignments(tiny_corpus / "alignments.txt")


@pytest.mark.slow
@pytest.mark.parametrize("task", ["phone", "speaker"])
def test_rank_pseudo_labels_on_the_embedded_corpus(tiny_utterances, task, tmp_path):
    utterances, alignments = tiny_utterances
    candidates = ["f0", "rms", "mfcc", "spectral_centroid"]
    estimates = rank_pseudo_labels(utterances, candidates, task=task, alignments=alignments,
                                   chunk_frames=100, min_class_size=3)
    assert sorted(e.name for e in estimates) == sorted(candidates)
    uniform = [e.uniform for e in estimates]
    assert uniform == sorted(uniform) and all(np.isfinite(uniform))
    assert all(e.uniform >= 0 for e in estimates)
    by_name = {e.name: e for e in estimates}
    if task == "phone":
        assert by_name["f0"].num_dropped > 0  # some unvoiced phones have no F0 at all
    assert by_name["rms"].num_dropped == 0
    assert len(by_name["rms"].per_class) >= (10 if task == "phone" else 2)
    table = write_table(estimates, tmp_path / "table.tsv").read_text().splitlines()
    assert table[0].split("\t")[:3] == ["rank", "pseudo_label", "hsic_uniform"]
    assert len(table) == 1 + len(candidates)
    assert format_table(estimates).count("\n") == 1 + len(candidates)


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    x, labels, u = synthetic_segments(num_classes=3, per_class=10)
    estimates = [conditional_dependence(x, u, labels, name="u"),
                 conditional_dependence(x, labels.float(), labels, name="class")]
    path = plot_estimates(estimates, tmp_path / "plot.png", title="test")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rank_rejects_a_task_without_its_labels(tiny_utterances):
    utterances, _ = tiny_utterances
    with pytest.raises(ValueError, match="alignments"):
        rank_pseudo_labels(utterances, ["rms"], task="phone")
    with pytest.raises(ValueError, match="task"):
        rank_pseudo_labels(utterances, ["rms"], task="emotion")
    with pytest.raises(ValueError, match="unknown pseudo-label"):
        rank_pseudo_labels(utterances, ["pitch"], task="speaker")


# ------------------------------------------------------------------------------ the validation


def test_spearman_rank_correlation_and_its_exact_p_value():
    from ssl_speech.studies.pseudo_label_study import spearman

    rho, p = spearman([1, 2, 3, 4, 5, 6], [0.9, 0.8, 0.5, 0.4, 0.2, 0.1])
    assert rho == pytest.approx(-1.0) and p == pytest.approx(2 / 720)  # both extreme orders
    rho, p = spearman([1, 2, 3, 4], [1, 3, 2, 4])
    assert rho == pytest.approx(0.8) and p == pytest.approx(8 / 24)
    rho, _ = spearman([1, 2, 2, 3], [1, 2, 3, 4])  # ties take their average rank
    assert rho == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])
    scipy_stats = pytest.importorskip("scipy.stats")
    x, y = np.random.default_rng(0).normal(size=(2, 12))
    assert spearman(x, y)[0] == pytest.approx(scipy_stats.spearmanr(x, y)[0])
    with pytest.raises(ValueError, match="length"):
        spearman([1, 2], [1, 2])


@pytest.mark.slow
def test_study_runs_and_continues_where_it_stopped(tiny_corpus, tmp_path):
    from ssl_speech.studies.pseudo_label_study import StudySettings, run_study

    settings = StudySettings(
        candidates=("rms", "zcr", "spectral_centroid"), steps=2, encoder_dim=16,
        context_dim=16, window=3200, batch_size=4, warmup_steps=1, probe_train_utterances=4,
        probe_test_utterances=2, probe_epochs=1, estimate_utterances=4,
    )
    lines: list[str] = []
    study = run_study(tmp_path, settings, corpus_root=tiny_corpus, log=lines.append)
    assert [r.name for r in study.rows] == list(settings.candidates)
    assert all(0.0 <= r.probe_accuracy <= 1.0 and r.train_seconds > 0 for r in study.rows)
    assert -1.0 <= study.spearman_uniform[0] <= 1.0
    assert (tmp_path / "study.md").read_text().count("Spearman") == 2
    assert (tmp_path / "runs" / "zcr" / "metrics.jsonl").is_file()
    again = run_study(tmp_path, settings, corpus_root=tiny_corpus, log=lines.append)
    assert sum("read back" in line for line in lines) == 3
    assert [r.probe_accuracy for r in again.rows] == [r.probe_accuracy for r in study.rows]


@pytest.mark.slow
def test_the_ranking_script_writes_its_table_plot_and_json(tiny_corpus, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "pseudo_label_utility.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "--root", str(tiny_corpus), "--task",
         "speaker", "--candidates", "rms", "zcr", "--chunk-seconds", "1", "--min-class-size",
         "3", "--threads", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(figures) == {"rms", "zcr"} and all(v >= 0 for v in figures.values())
    assert (tmp_path / "utility_speaker.tsv").read_text().count("\n") == 3
