"""Pictures of a mix: spectrum against the target centroid, loudness over time, the stems' balance and how
hard the master's dynamics worked."""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from automix import metrics  # noqa: E402
from automix.balance import stem_balance_db  # noqa: E402
from automix.errors import AutomixError  # noqa: E402
from automix.io import write_atomically  # noqa: E402

SPECTRUM_N_FFT = 4096
PLOT_DPI = 110
STEM_AXIS_FLOOR_DB = -40.0
SHOWN_COMPRESSION_DB = 0.5  # a strip's compressor is written beside its stem from this much reduction
PLOT_FORMATS = ("png", "svg", "pdf")  # the file's suffix chooses


def plot_format(path: Path) -> str:
    """The image format a plot path names by its suffix.

    Raises:
        AutomixError: a suffix that is not one of `PLOT_FORMATS`.
    """
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        raise AutomixError(
            f"{path}: a plot is written as {', '.join('.' + name for name in PLOT_FORMATS)}; "
            "name the file with one of those"
        )
    return suffix


def plot_mix(
    path: Path,
    mix: torch.Tensor,
    sample_rate: int,
    analysis: dict,
    stem_names: list[str],
    protect=(),
) -> None:
    """Write a picture of `mix` `[2, T]` and its analysis (one song, not a batch), as the suffix of `path`
    says (`PLOT_FORMATS`): spectrum, loudness, stem balance and, where the analysis has it, the master's
    gain reduction against the limiting budget. A mix shorter than the spectrum's frame is zero-padded."""
    image_format = plot_format(path)
    mid = mix.detach().float().cpu().mean(dim=0)
    mid = torch.nn.functional.pad(mid, (0, max(0, SPECTRUM_N_FFT - mid.shape[-1])))
    window = torch.hann_window(SPECTRUM_N_FFT)
    frames = torch.stft(mid, SPECTRUM_N_FFT, SPECTRUM_N_FFT // 4, window=window, return_complex=True)
    spectrum_db = 20 * torch.log10(frames.abs().mean(-1).clamp_min(1e-9))
    freqs = torch.fft.rfftfreq(SPECTRUM_N_FFT, 1 / sample_rate)
    short_term = metrics.short_term_loudness(mix.detach().float().cpu(), sample_rate)
    seconds = torch.arange(short_term.shape[-1]) * 0.1

    reduction = analysis.get("gain_reduction")
    n_panels = 3 if reduction is None else 4
    fig, axes = plt.subplots(n_panels, 1, figsize=(9, 10 / 3 * n_panels))
    ax_spec, ax_loud, ax_stems = axes[:3]
    ax_spec.semilogx(freqs[1:], spectrum_db[1:], lw=0.8, label="mix (mid), long-term average")
    ax_spec.axvline(float(analysis["spectral_centroid"]), color="C1", label="measured centroid")
    ax_spec.axvline(
        float(analysis["targets"]["spectral_centroid"]), color="C2", ls="--", label="target centroid"
    )
    ax_spec.set(xlabel="Hz", ylabel="dB", title="Spectrum", xlim=(20, sample_rate / 2))
    ax_spec.legend(loc="lower left", fontsize=8)

    ax_loud.plot(seconds, short_term, lw=0.8, label="short-term loudness (3 s)")
    integrated = float(analysis["lufs"])
    if math.isfinite(integrated):  # undefined under one 400 ms gating block
        ax_loud.axhline(integrated, color="C1", label=f"integrated {integrated:.1f} LUFS")
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
    compression = analysis.get("strip_compression_db")
    for i, taken in enumerate([] if compression is None else compression.tolist()):
        if taken >= SHOWN_COMPRESSION_DB:
            ax_stems.text(balance[i], i, f" compressor −{taken:.1f} dB", va="center", fontsize=7)
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
    if reduction is not None:
        _plot_gain_reduction(axes[3], analysis, reduction)
    fig.tight_layout()
    try:
        write_atomically(
            Path(path), lambda file: fig.savefig(file, format=image_format, dpi=PLOT_DPI), protect
        )
    finally:
        plt.close(fig)


def _plot_gain_reduction(ax, analysis: dict, reduction: dict) -> None:
    """The limiter's and the bus compressor's deepest and mean gain reduction, the limiting budget, and the
    true peak by both meters in the title."""
    names = [("limiter", "limiter"), ("bus_compressor", "bus compressor")]
    for offset, (stat, label) in ((-0.2, ("max_db", "deepest")), (0.2, ("mean_db", "mean"))):
        values = [float(reduction[key][stat]) for key, _ in names]
        ax.barh([i + offset for i in range(len(names))], values, height=0.4, label=label)
    budget = analysis.get("max_limiting_db")
    if budget is not None:
        label = f"limiting budget {float(budget):g} dB"
        ax.axvline(float(budget), ymax=0.5, color="C3", ls="--", label=label)
    ax.set_yticks(range(len(names)), [label for _, label in names])
    title = "Master: gain reduction (dB)"
    if "reconstructed_peak_dbtp" in analysis:
        title += (
            f"; true peak {float(analysis['true_peak_dbtp']):.2f} dBTP (4x), "
            f"{float(analysis['reconstructed_peak_dbtp']):.2f} dBTP (16x reconstruction)"
        )
    ax.set(xlabel="dB", title=title)
    ax.legend(fontsize=8, loc="upper right")
