"""The evaluation report: ``report.md`` (tables), ``report.json`` (figures) and PNG plots.

Written from the :class:`~ssl_speech.eval.evaluation.EvalRecord` of each model and baseline:

- ``report.md``: one row per model, then the baseline rows: objective, layer, phone accuracy on
  held-out utterances (and held-out speakers), ABX error within and across speakers, speaker
  accuracy; then the time each stage took, and the plots.
- ``scores.png``: per-checkpoint bars of each figure, baselines hatched.
- ``confusion.png``: the row-normalised phone confusion matrix (held-out utterances) of the
  model with the best phone accuracy.
- ``training_curves.png``: training (and validation) loss and accuracy against step, from
  each run's ``metrics.jsonl``.

Plots need matplotlib (``pip install 'ssl_speech[plots]'``), imported only here and only when
plots are asked for; without it the report is written with a note instead of the images. The
figures are drawn with matplotlib's object API (no pyplot), so no global state changes.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssl_speech.eval.evaluation import EvalRecord
from ssl_speech.eval.probing import best_baseline
from ssl_speech.runs.metrics_log import read_metrics

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
SCORES_PNG = "scores.png"
CONFUSION_PNG = "confusion.png"
CURVES_PNG = "training_curves.png"
MIN_ABX_GROUPS = 30  # fewer (A, B, X) groups than this: the report warns that ABX is noisy

# (figure key, column title, higher is better, shown as percent of a fraction)
_COLUMNS = (
    ("phone_acc", "phone acc (%)", True, True),
    ("phone_acc_heldout_speakers", "phone acc, held-out speakers (%)", True, True),
    ("abx_within", "ABX within (%)", False, False),
    ("abx_across", "ABX across (%)", False, False),
    ("speaker_acc", "speaker acc (%)", True, True),
)


def _cell(value: float | None, as_percent: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{100 * value:.2f}" if as_percent else f"{value:.2f}"


def _columns(records: Sequence[EvalRecord]) -> list[tuple[str, str, bool, bool]]:
    """The columns some record has a figure for."""
    present = {key for r in records for key, v in r.figures().items() if v is not None}
    return [c for c in _COLUMNS if c[0] in present]


def results_table(records: Sequence[EvalRecord]) -> str:
    """The markdown table: models first, then baselines; the best model figure in bold."""
    columns = _columns(records)
    header = ["model", "objective", "layer", *[title for _, title, _, _ in columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    models = [r for r in records if not r.is_baseline]
    best = {}
    for key, _, higher, _ in columns:
        values = [r.figures().get(key) for r in models]
        values = [v for v in values if v is not None]
        if len(values) > 1:
            best[key] = max(values) if higher else min(values)
    for record in [*models, *[r for r in records if r.is_baseline]]:
        figures = record.figures()
        cells = [record.name if not record.is_baseline else f"baseline: {record.name}",
                 record.objective, record.layer or "—"]
        for key, _, _, as_percent in columns:
            text = _cell(figures.get(key), as_percent)
            bold = not record.is_baseline and key in best and figures.get(key) == best[key]
            cells.append(f"**{text}**" if bold else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def timings_table(records: Sequence[EvalRecord]) -> str:
    stages = [s for s in ("export", "phone_probe", "abx", "speaker_probe")
              if any(s in r.seconds for r in records)]
    header = ["model", *[f"{s} (s)" for s in stages], "total (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        cells = [r.name, *[f"{r.seconds[s]:.1f}" if s in r.seconds else "—" for s in stages],
                 f"{sum(r.seconds.values()):.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _details(records: Sequence[EvalRecord]) -> list[str]:
    lines = []
    for r in records:
        parts = []
        for name, res in r.phone.items():
            stop = (f", best epoch {res.best_epoch}, held-out training accuracy "
                    f"{100 * res.validation_accuracy:.1f} %"
                    + ("" if res.converged else ", NOT converged")
                    if res.validation_accuracy is not None else "")
            parts.append(f"phone probe `{name}` ({res.protocol or 'custom'} protocol): "
                         f"{res.num_frames} frames scored, chance {100 * res.chance:.1f} %, "
                         f"train accuracy {100 * res.train_accuracy:.1f} % ({res.train_frames} "
                         f"frames, {res.epochs} epochs{stop})")
        for name, res in r.abx.items():
            groups = ", ".join(f"{m} {s.num_groups}" for m, s in res.scores.items())
            parts.append(f"ABX `{name}`: {res.num_tokens} tokens of {res.num_items} items "
                         f"({res.num_dropped} without frames), groups: {groups}")
        if r.speaker is not None:
            s = r.speaker
            parts.append(f"speaker probe: {s.num_utterances} held-out utterances of "
                         f"{s.num_speakers} speakers, chance {100 * s.chance:.1f} %")
        lines.append(f"- **{r.name}** ({r.source}, frame step {r.frame_step * 1000:g} ms): "
                     + "; ".join(parts))
    return lines


def baseline_comparison(records: Sequence[EvalRecord]) -> list[str]:
    """Each model's phone accuracy against the best spectral baseline, and unconverged probes.

    The comparison is with the stronger of log-mel and MFCC on each held-out set: a model that
    only beats the weaker one has not shown much.
    """
    baselines = [r for r in records if r.is_baseline and r.phone]
    lines = []
    for set_name in dict.fromkeys(s for r in records for s in r.phone):
        found = best_baseline({r.name: r.phone[set_name].accuracy for r in baselines
                               if set_name in r.phone}, [r.name for r in baselines])
        if found is None:
            continue
        name, best = found
        for r in records:
            if not r.is_baseline and set_name in r.phone:
                gap = 100 * (r.phone[set_name].accuracy - best)
                lines.append(f"- `{r.name}` on `{set_name}`: {gap:+.2f} points against the best "
                             f"baseline ({name}, {100 * best:.2f} %)")
    for r in records:
        for res in r.phone.values():
            if res.protocol == "converged" and not res.converged:
                lines.append(f"- **not converged**: the phone probe of `{r.name}` ran its "
                             f"{res.epochs} epochs without reaching the plateau; raise --epochs")
                break
    return lines


def _few_groups(records: Sequence[EvalRecord], minimum: int = MIN_ABX_GROUPS) -> list[str]:
    """Warnings for ABX conditions that rest on too few (A, B, X) groups to be stable."""
    notes = {}
    for r in records:
        for name, result in r.abx.items():
            for mode, score in result.scores.items():
                if 0 < score.num_groups < minimum:
                    notes[(name, mode)] = (f"ABX {mode} speaker on `{name}` rests on only "
                                           f"{score.num_groups} (A, B, X) groups: a noisy figure.")
    return list(notes.values())


def write_report(
    records: Sequence[EvalRecord],
    out_dir: str | Path,
    phones: Sequence[str] | None = None,
    settings: dict[str, Any] | None = None,
    plots: bool = True,
    title: str = "Evaluation",
) -> Path:
    """Write ``report.md``, ``report.json`` and (with ``plots``) the PNGs; returns the .md path.

    Args:
        records: models and baselines (``objective == "baseline"``), in table order.
        phones: phone names of the label indices (confusion-matrix ticks).
        settings: protocol settings to print under the table (probe epochs, lr, ...).
    """
    if not records:
        raise ValueError("write_report needs at least one record")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images: list[tuple[str, str]] = []
    note = None
    if plots:
        try:
            images = draw_plots(records, out_dir, phones)
        except ImportError:
            note = ("Plots need matplotlib: `pip install 'ssl_speech[plots]'`, then run the "
                    "evaluation again.")
            warnings.warn(note, stacklevel=2)
    lines = [f"# {title}", "", results_table(records), "",
             "Phone accuracy: frame accuracy of the linear probe on held-out utterances; ABX: "
             "error rate (chance 50 %); speaker accuracy: held-out utterances of the training "
             "speakers. Best model figure in bold.", ""]
    comparison = baseline_comparison(records)
    if comparison:
        lines += ["Phone accuracy against the best baseline:", "", *comparison, ""]
    lines += [f"**Note:** {note}" for note in _few_groups(records)]
    lines += [""] if lines[-1] != "" else []
    if settings:
        lines += ["Settings: " + ", ".join(f"{k} = {v}" for k, v in settings.items()), ""]
    lines += ["## Details", "", *_details(records), "", "## Time per stage", "",
              timings_table(records), ""]
    if images or note:
        lines += ["## Plots", ""]
    lines += [f"![{caption}]({name})\n" for name, caption in images]
    if note:
        lines += [note, ""]
    path = out_dir / REPORT_MD
    path.write_text("\n".join(lines))
    summary = {r.name: {"objective": r.objective, "layer": r.layer, "source": r.source,
                        **r.figures(), "seconds": r.seconds} for r in records}
    (out_dir / REPORT_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def draw_plots(records: Sequence[EvalRecord], out_dir: Path,
               phones: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Draw the PNGs that the records support; returns ``[(file name, caption)]``.

    Raises:
        ImportError: matplotlib is not installed.
    """
    from matplotlib.figure import Figure  # noqa: F401  (fails early without matplotlib)

    images = []
    if _columns(records):
        _save(_scores_figure(records), out_dir / SCORES_PNG)
        images.append((SCORES_PNG, "scores per model"))
    best = _best_phone_model(records)
    if best is not None:
        _save(_confusion_figure(best, phones), out_dir / CONFUSION_PNG)
        images.append((CONFUSION_PNG, f"phone confusion of {best.name}"))
    curves = {r.name: read_metrics(r.run_dir / "metrics.jsonl") for r in records
              if r.run_dir is not None and (r.run_dir / "metrics.jsonl").is_file()}
    curves = {k: v for k, v in curves.items() if v}
    if curves:
        _save(_curves_figure(curves), out_dir / CURVES_PNG)
        images.append((CURVES_PNG, "training curves"))
    return images


def _save(figure: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110)


def _scores_figure(records: Sequence[EvalRecord]) -> Any:
    from matplotlib.figure import Figure

    columns = _columns(records)
    names = [r.name for r in records]
    figure = Figure(figsize=(3.2 * len(columns), 0.35 * len(names) + 2.2),
                    layout="constrained")
    axes = figure.subplots(1, len(columns), sharey=True, squeeze=False)[0]
    y = np.arange(len(names))
    for ax, (key, title, higher, as_percent) in zip(axes, columns):
        values = [r.figures().get(key) for r in records]
        shown = [np.nan if v is None else (100 * v if as_percent else v) for v in values]
        colors = ["0.7" if r.is_baseline else f"C{i % 10}" for i, r in enumerate(records)]
        bars = ax.barh(y, np.nan_to_num(shown), color=colors)
        for bar, r in zip(bars, records):
            if r.is_baseline:
                bar.set_hatch("//")
        for yi, v in zip(y, shown):
            label = " n/a" if np.isnan(v) else f" {v:.1f}"
            ax.text(0.0 if np.isnan(v) else v, yi, label, va="center", fontsize=8)
        ax.set_title(f"{title}\n({'higher' if higher else 'lower'} is better)", fontsize=9)
        ax.set_xlim(0, max(100.0 if as_percent else 50.0,
                           np.nanmax(shown) * 1.15 if np.isfinite(shown).any() else 1.0))
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, names, fontsize=8)
    axes[0].invert_yaxis()
    return figure


def _best_phone_model(records: Sequence[EvalRecord]) -> EvalRecord | None:
    candidates = [r for r in records if "test" in r.phone] or []
    models = [r for r in candidates if not r.is_baseline] or candidates
    if not models:
        return None
    return max(models, key=lambda r: r.phone["test"].accuracy)


def _confusion_figure(record: EvalRecord, phones: Sequence[str] | None) -> Any:
    from matplotlib.figure import Figure

    result = record.phone["test"]
    confusion = result.confusion.astype(np.float64)
    present = np.flatnonzero(confusion.sum(axis=1) + confusion.sum(axis=0))
    confusion = confusion[np.ix_(present, present)]
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    labels = [phones[i] if phones is not None and i < len(phones) else str(i) for i in present]
    size = max(5.0, 0.18 * len(present) + 2.0)
    figure = Figure(figsize=(size + 1.2, size), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(normalised, cmap="viridis", vmin=0.0, vmax=1.0)
    ticks = np.arange(len(present))
    fontsize = 7 if len(present) > 30 else 8
    ax.set_xticks(ticks, labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, labels, fontsize=fontsize)
    ax.set_xlabel("predicted phone")
    ax.set_ylabel("true phone")
    ax.set_title(f"{record.name}: phone confusion on held-out utterances "
                 f"(accuracy {100 * result.accuracy:.1f} %)", fontsize=9)
    figure.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true phone's frames")
    return figure


def _curves_figure(curves: dict[str, list[dict[str, Any]]]) -> Any:
    from matplotlib.figure import Figure

    keys = [k for k in ("loss", "acc") if any(k in r for rs in curves.values() for r in rs)]
    figure = Figure(figsize=(5.0 * len(keys), 3.6), layout="constrained")
    axes = figure.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        for i, (name, rows) in enumerate(curves.items()):
            for split, style in (("train", "-"), ("val", "o--")):
                points = [(r["step"], r[key]) for r in rows
                          if r.get("split") == split and key in r and "step" in r]
                if points:
                    steps, values = zip(*points)
                    ax.plot(steps, values, style, color=f"C{i % 10}", markersize=3,
                            label=f"{name} ({split})")
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.set_title(f"training {key}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return figure
