"""Pictures of a mix: spectrum against the target centroid, loudness over time, the stems' balance."""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from automix import metrics  # noqa: E402
from automix.balance import stem_balance_db  # noqa: E402
from automix.io import write_atomically  # noqa: E402

SPECTRUM_N_FFT = 4096
PLOT_DPI = 110
STEM_AXIS_FLOOR_DB = -40.0


def plot_mix(
    path: Path,
    mix: torch.Tensor,
    sample_rate: int,
    analysis: dict,
    stem_names: list[str],
    protect=(),
) -> None:
    """Write a three-panel PNG of `mix` `[2, T]` and its analysis (one song, not a batch)."""
    mid = mix.mean(dim=0)
    window = torch.hann_window(SPECTRUM_N_FFT)
    frames = torch.stft(mid, SPECTRUM_N_FFT, SPECTRUM_N_FFT // 4, window=window, return_complex=True)
    spectrum_db = 20 * torch.log10(frames.abs().mean(-1).clamp_min(1e-9))
    freqs = torch.fft.rfftfreq(SPECTRUM_N_FFT, 1 / sample_rate)
    short_term = metrics.short_term_loudness(mix, sample_rate)
    seconds = torch.arange(short_term.shape[-1]) * 0.1

    fig, (ax_spec, ax_loud, ax_stems) = plt.subplots(3, 1, figsize=(9, 10))
    ax_spec.semilogx(freqs[1:], spectrum_db[1:], lw=0.8, label="mix (mid), long-term average")
    ax_spec.axvline(float(analysis["spectral_centroid"]), color="C1", label="measured centroid")
    ax_spec.axvline(
        float(analysis["targets"]["spectral_centroid"]), color="C2", ls="--", label="target centroid"
    )
    ax_spec.set(xlabel="Hz", ylabel="dB", title="Spectrum", xlim=(20, sample_rate / 2))
    ax_spec.legend(loc="lower left", fontsize=8)

    ax_loud.plot(seconds, short_term, lw=0.8, label="short-term loudness (3 s)")
    ax_loud.axhline(
        float(analysis["lufs"]), color="C1", label=f"integrated {float(analysis['lufs']):.1f} LUFS"
    )
    ax_loud.axhline(float(analysis["targets"]["lufs"]), color="C2", ls="--", label="target")
    ax_loud.set(xlabel="s", ylabel="LUFS", title="Loudness over time", ylim=(-40, 0))
    ax_loud.legend(loc="lower right", fontsize=8)

    # Each stem against the stems together; a silent stem sits at the axis floor.
    floor = STEM_AXIS_FLOOR_DB
    stem_balance = analysis.get("stem_balance_db")
    if stem_balance is None:  # an analysis from the chain's parts (training media) rather than its forward
        stem_balance = stem_balance_db(analysis["stem_lufs"].detach())
    balance = [max(float(v), floor) if math.isfinite(float(v)) else floor for v in stem_balance]
    ax_stems.barh(stem_names, [v - floor for v in balance], left=floor, color="C0", label="in the mix")
    start = analysis.get("balance_start_db")
    if start is not None:
        shown = [(i, float(v)) for i, v in enumerate(start) if math.isfinite(float(v))]
        budget = analysis.get("balance_budget_db")
        ax_stems.errorbar(
            [v for _, v in shown],
            [i for i, _ in shown],
            xerr=budget,
            fmt="|",
            color="C1",
            capsize=4,
            label="start" + (f" ± {budget:g} dB budget" if budget is not None else ""),
        )
    ax_stems.set(xlabel="dB", title="Stem balance: each stem's loudness against the stems together")
    ax_stems.set_xlim(floor, 0)
    ax_stems.legend(fontsize=8)
    fig.tight_layout()
    try:
        write_atomically(Path(path), lambda file: fig.savefig(file, format="png", dpi=PLOT_DPI), protect)
    finally:
        plt.close(fig)
