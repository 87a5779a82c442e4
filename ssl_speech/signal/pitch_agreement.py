"""Agreement of two pitch tracks: gross pitch error and voicing decision error.

The usual figures for comparing a pitch tracker with a reference track (e.g. Nakatani et al.,
2008; Chu and Alwan, 2009), frame by frame on the same grid, with NaN meaning unvoiced:

- gross pitch error (GPE): the share of the frames voiced in both tracks where the estimate is
  more than ``threshold`` (20 %) off the reference;
- voicing decision error (VDE): the share of all frames whose voiced/unvoiced decisions differ;
- fine pitch error: the median absolute deviation in cents on the voiced-in-both frames without
  a gross error.

:func:`pitch_agreement` scores one pair of tracks; :func:`pooled` adds several up (frame counts,
not utterance means). On real speech, where the truth is unknown, a low figure against Praat says
the two trackers agree, not which is right.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from torch import Tensor


@dataclass(frozen=True)
class PitchAgreement:
    """Counts behind the figures, so that several recordings can be pooled.

    Attributes:
        frames: frames compared.
        both_voiced: frames voiced in both tracks.
        gross: of those, frames more than the threshold off.
        voicing_mismatch: frames whose voicing decisions differ.
        fine_cents: absolute deviations in cents of the voiced-in-both frames without a gross
            error.
    """

    frames: int
    both_voiced: int
    gross: int
    voicing_mismatch: int
    fine_cents: tuple[float, ...] = ()

    @property
    def gross_pitch_error(self) -> float:
        return self.gross / self.both_voiced if self.both_voiced else float("nan")

    @property
    def voicing_decision_error(self) -> float:
        return self.voicing_mismatch / self.frames if self.frames else float("nan")

    @property
    def fine_pitch_error_cents(self) -> float:
        return float(np.median(self.fine_cents)) if self.fine_cents else float("nan")


def pitch_agreement(estimate: Tensor | np.ndarray, reference: Tensor | np.ndarray,
                    threshold: float = 0.2) -> PitchAgreement:
    """Compare two ``(T,)`` F0 tracks in Hz (NaN where unvoiced) on the same frame grid.

    A track one frame longer or shorter than the other (a different end convention) is cut to
    the shorter; a larger difference is an error: the tracks are not on the same grid.
    """
    est = np.asarray(estimate.cpu() if isinstance(estimate, Tensor) else estimate, dtype=float)
    ref = np.asarray(reference.cpu() if isinstance(reference, Tensor) else reference,
                     dtype=float)
    if est.ndim != 1 or ref.ndim != 1:
        raise ValueError(f"expected two (frames,) tracks, got {est.shape} and {ref.shape}")
    if abs(est.shape[0] - ref.shape[0]) > 1:
        raise ValueError(f"the tracks have {est.shape[0]} and {ref.shape[0]} frames: not the "
                         "same frame grid (use the same hop for both)")
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0 (a relative deviation), got {threshold}")
    if np.any(est <= 0) or np.any(ref <= 0):
        raise ValueError("F0 values must be > 0 Hz, with NaN for unvoiced frames")
    T = min(est.shape[0], ref.shape[0])
    est, ref = est[:T], ref[:T]
    voiced_est, voiced_ref = np.isfinite(est), np.isfinite(ref)
    both = voiced_est & voiced_ref
    deviation = np.abs(est[both] / ref[both] - 1.0)
    gross = deviation > threshold
    cents = np.abs(1200.0 * np.log2(est[both][~gross] / ref[both][~gross]))
    return PitchAgreement(frames=T, both_voiced=int(both.sum()), gross=int(gross.sum()),
                          voicing_mismatch=int((voiced_est != voiced_ref).sum()),
                          fine_cents=tuple(float(c) for c in cents))


def pooled(agreements: Iterable[PitchAgreement]) -> PitchAgreement:
    """The agreement over several recordings: their frame counts added up."""
    items = list(agreements)
    return PitchAgreement(
        frames=sum(a.frames for a in items), both_voiced=sum(a.both_voiced for a in items),
        gross=sum(a.gross for a in items),
        voicing_mismatch=sum(a.voicing_mismatch for a in items),
        fine_cents=tuple(c for a in items for c in a.fine_cents))
