"""The validation suite behind `validate.py`: mix a matrix of signals to every style, judge the results
with independent meters, and check the loudness meter against the EBU conformance signals.

Two sections:
- mix: signal families (white and pink noise, synthetic songs of several tempi and arrangements, sparse
  and mono stems, 1 to 12 stems, 2-second and 3-minute material, 44.1 and 48 kHz) x styles x modes.
  Each mix is measured on the full returned mix: loudness by pyloudnorm, true peak on the band-limited
  reconstruction by 16x `scipy.signal.resample` (both independent of the mixer), centroid and M/S ratio by
  `automix.metrics`; then judged with the tolerances of the public contract (`automix.loss.TOLERANCES`)
  and quality score (`automix.analysis.report`).
- conformance: EBU Tech 3341 cases 1-5 (integrated loudness) and Tech 3342 cases 1-4 (loudness range)
  read by `automix.metrics`, at both sample rates.
"""

import importlib.metadata
import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial

import numpy as np
import pyloudnorm
import scipy.signal
import torch
from tqdm.auto import tqdm

from automix import __version__, metrics
from automix.analysis import json_ready, report
from automix.conformance import (
    TECH_3341_INTEGRATED_CASES,
    TECH_3341_TOLERANCE_LU,
    TECH_3342_CASES,
    TECH_3342_TOLERANCE_LU,
    sine_sequence,
)
from automix.dsp.oversample import RECONSTRUCTION_OVERSAMPLING
from automix.loss import TOLERANCES
from automix.styles import StyleTarget
from automix.synth import STEM_NAMES, pink_noise, synth_stems, white_noise
from automix.targets import Targets

SAMPLE_RATES = (44100, 48000)
SONG_S = 20.0
SHORT_S = 2.0
LONG_S = 180.0
NOISE_S = 10.0
# --quick: short material: nine mixes in minutes
QUICK_NOISE_STEMS = 2
QUICK_NOISE_S = 3.0
QUICK_SONG_S = 4.0
QUICK_TEMPO_BPM = 120.0
STEM_COUNTS = (1, 2, 8, 12)  # 4 stems is every song case
ARRANGEMENTS = {
    "full": STEM_NAMES,
    "rhythm": ("drums", "bass"),
    "band": ("drums", "bass", "chords"),
    "no_drums": ("bass", "chords", "lead"),
}
# (tempo BPM, arrangement); each its own song
SONG_VARIANTS = ((80.0, "no_drums"), (100.0, "full"), (128.0, "rhythm"), (160.0, "band"))
SPARSE_ACTIVE_S = 2.0  # each sparse stem plays this long, one after another, and is silent otherwise
SPARSE_SPACING_S = 5.0

METERS = {
    "lufs": "pyloudnorm.Meter.integrated_loudness (ITU-R BS.1770-4)",
    "spectral_centroid": "automix.metrics.spectral_centroid",
    "stereo_ms_ratio": "automix.metrics.stereo_ms_ratio",
    "true_peak_dbtp": f"scipy.signal.resample {RECONSTRUCTION_OVERSAMPLING}x (band-limited reconstruction)",
}
UNITS = {"lufs": "LUFS", "spectral_centroid": "Hz", "stereo_ms_ratio": "", "true_peak_dbtp": "dBTP"}
CONFORMANCE_METERS = {
    "integrated_loudness": metrics.integrated_loudness,
    "loudness_range": metrics.loudness_range,
}


@dataclass(frozen=True)
class MixCase:
    """A set of stems for the mix section.

    Attributes:
        name: unique, `family-NxDs-Rk` (stems x seconds, sample rate in kHz); what `--test-filter` matches.
        family: the kind of signal.
        n_stems, duration_s, sample_rate: the stems' count, length (s) and rate (Hz).
        make: `seed -> [N, C, T]` stems.
    """

    name: str
    family: str
    n_stems: int
    duration_s: float
    sample_rate: int
    make: Callable[[int], torch.Tensor]


@dataclass(frozen=True)
class ConformanceCase:
    """An EBU test signal and the reading the standard expects of `metric` (a `CONFORMANCE_METERS` key)."""

    name: str
    metric: str
    sample_rate: int
    levels_dbfs: Sequence[float]
    durations_s: Sequence[float]
    expected: float
    tolerance: float
    unit: str


# ------------------------------------------------------------------------------------------- the stems


def song_stems(
    n_stems: int,
    duration_s: float,
    sample_rate: int,
    seed: int,
    *,
    tempo_bpm: float | None = None,
    stems: tuple[str, ...] = STEM_NAMES,
) -> torch.Tensor:
    """`[n_stems, 2, T]` from as many synthetic songs (seeds `seed`, `seed + 1`, ...) as the count needs."""
    n_songs = -(-n_stems // len(stems))
    songs = [
        synth_stems(duration_s, sample_rate, tempo_bpm=tempo_bpm, seed=seed + i, stems=stems)[0]
        for i in range(n_songs)
    ]
    return torch.cat(songs)[:n_stems]


def sparse_stems(n_stems: int, duration_s: float, sample_rate: int, seed: int) -> torch.Tensor:
    """Song stems `[N, 2, T]` each silent but for `SPARSE_ACTIVE_S`, the stems taking turns."""
    stems = song_stems(n_stems, duration_s, sample_rate, seed)
    time_s = torch.arange(stems.shape[-1]) / sample_rate
    starts_s = torch.arange(n_stems)[:, None] * SPARSE_SPACING_S
    active = (time_s >= starts_s) & (time_s < starts_s + SPARSE_ACTIVE_S)
    return stems * active[:, None, :]


def mono_stems(n_stems: int, duration_s: float, sample_rate: int, seed: int) -> torch.Tensor:
    """Song stems folded to one channel, `[N, 1, T]` (the mixer makes them dual-mono)."""
    return song_stems(n_stems, duration_s, sample_rate, seed).mean(dim=-2, keepdim=True)


def _case(family: str, n_stems: int, duration_s: float, sample_rate: int, make) -> MixCase:
    name = f"{family}-{n_stems}x{duration_s:g}s-{sample_rate / 1000:g}k"
    return MixCase(name, family, n_stems, duration_s, sample_rate, make)


def _noise(kind, n_stems: int, duration_s: float, sample_rate: int) -> Callable[[int], torch.Tensor]:
    return lambda seed: kind(n_stems, duration_s, sample_rate, seed=seed)


def _song(n_stems, duration_s, sample_rate, offset=0, **kwargs) -> Callable[[int], torch.Tensor]:
    return lambda seed: song_stems(n_stems, duration_s, sample_rate, seed + offset, **kwargs)


def mix_cases(quick: bool = False) -> list[MixCase]:
    """The mix section's stems: the full matrix, or (quick) noise and one short song at 44.1 kHz."""
    rate, n_noise = SAMPLE_RATES[0], QUICK_NOISE_STEMS
    if quick:
        return [
            _case(
                "white_noise", n_noise, QUICK_NOISE_S, rate, _noise(white_noise, n_noise, QUICK_NOISE_S, rate)
            ),
            _case(
                "pink_noise", n_noise, QUICK_NOISE_S, rate, _noise(pink_noise, n_noise, QUICK_NOISE_S, rate)
            ),
            _case("song", 4, QUICK_SONG_S, rate, _song(4, QUICK_SONG_S, rate, tempo_bpm=QUICK_TEMPO_BPM)),
        ]
    cases = [
        _case("white_noise", 4, NOISE_S, rate, _noise(white_noise, 4, NOISE_S, rate)),
        _case("pink_noise", 4, NOISE_S, rate, _noise(pink_noise, 4, NOISE_S, rate)),
    ]
    for offset, (tempo_bpm, arrangement) in enumerate(SONG_VARIANTS):
        stems = ARRANGEMENTS[arrangement]
        make = _song(len(stems), SONG_S, rate, offset, tempo_bpm=tempo_bpm, stems=stems)
        cases.append(_case(f"song_{tempo_bpm:g}bpm_{arrangement}", len(stems), SONG_S, rate, make))
    cases += [
        _case("sparse", 4, SONG_S, rate, partial(sparse_stems, 4, SONG_S, rate)),
        _case("mono", 4, SONG_S, rate, partial(mono_stems, 4, SONG_S, rate)),
        *(_case("stems", n, SONG_S, rate, _song(n, SONG_S, rate)) for n in STEM_COUNTS),
        _case("song", 4, SHORT_S, rate, _song(4, SHORT_S, rate)),
        _case("song", 4, LONG_S, rate, _song(4, LONG_S, rate)),
        _case("song", 4, SONG_S, SAMPLE_RATES[1], _song(4, SONG_S, SAMPLE_RATES[1])),
    ]
    return cases


def conformance_cases() -> list[ConformanceCase]:
    """EBU Tech 3341 cases 1-5 and Tech 3342 cases 1-4, at each of `SAMPLE_RATES`."""
    documents = (
        ("ebu3341", "integrated_loudness", TECH_3341_INTEGRATED_CASES, TECH_3341_TOLERANCE_LU, "LUFS"),
        ("ebu3342", "loudness_range", TECH_3342_CASES, TECH_3342_TOLERANCE_LU, "LU"),
    )
    return [  # a table's rows are (levels, durations, expected), as ConformanceCase's fields
        ConformanceCase(f"{document}_case{number}-{rate / 1000:g}k", metric, rate, *row, tolerance, unit)
        for rate in SAMPLE_RATES
        for document, metric, table, tolerance, unit in documents
        for number, row in table.items()
    ]


# ------------------------------------------------------------------------------------------ judgement


def reconstructed_peak(data: np.ndarray, block: int = 2**16, context: int = 2**15) -> float:
    """The largest magnitude of the band-limited reconstruction of `data` `(T, C)`, linear: each block
    with `context` samples each side (zeros outside the signal) FFT-interpolated
    `RECONSTRUCTION_OVERSAMPLING` times by `scipy.signal.resample`, its own part kept."""
    factor, n_samples = RECONSTRUCTION_OVERSAMPLING, data.shape[0]
    padded = np.pad(data, ((context, context + block), (0, 0)))
    peak = 0.0
    for start in range(0, n_samples, block):
        segment = padded[start : start + block + 2 * context]
        dense = scipy.signal.resample(segment, segment.shape[0] * factor, axis=0)
        kept = dense[context * factor : (context + min(block, n_samples - start)) * factor]
        peak = max(peak, float(np.abs(kept).max()))
    return peak


def measure_mix(mix: torch.Tensor, sample_rate: int) -> dict[str, float]:
    """The judged measurements of a stereo mix `[2, T]`, with the meters named in `METERS`."""
    samples = mix.detach().cpu().double()
    data = samples.T.numpy()  # pyloudnorm and scipy take (T, C)
    peak = reconstructed_peak(data)
    return {
        "lufs": float(pyloudnorm.Meter(sample_rate).integrated_loudness(data)),
        "spectral_centroid": float(metrics.spectral_centroid(samples, sample_rate)),
        "stereo_ms_ratio": float(metrics.stereo_ms_ratio(samples)),
        "true_peak_dbtp": 20 * math.log10(peak) if peak > 0 else -math.inf,
    }


def judge(measured: Mapping[str, float], style: StyleTarget, ceiling_dbtp: float) -> dict:
    """Measured vs the style's targets with `automix.analysis.report`'s rule (`automix.loss.TOLERANCES`;
    the true peak at or under the ceiling) and its quality score.

    Returns:
        `{"metrics": {name: {measured, target, error, tolerance, passed, unit, meter}}, "passed",
        "quality_score"}`; the true peak's target is the ceiling and its tolerance None (one-sided).
    """
    as_tensor = {name: torch.tensor([value], dtype=torch.float64) for name, value in measured.items()}
    as_tensor["band_energy"] = torch.full((1, 3), math.nan, dtype=torch.float64)  # not judged here
    verdict = report(as_tensor, Targets.of_styles([style]).to(dtype=torch.float64), ceiling_dbtp)
    entries = {}
    for name, tolerance in TOLERANCES.items():
        entries[name] = {
            "measured": measured[name],
            "target": float(verdict["targets"][name]),
            "error": float(verdict["errors"][name]),
            "tolerance": tolerance,
            "passed": bool(verdict["passed"][name]),
        }
    entries["true_peak_dbtp"] = {
        "measured": measured["true_peak_dbtp"],
        "target": ceiling_dbtp,
        "error": measured["true_peak_dbtp"] - ceiling_dbtp,
        "tolerance": None,
        "passed": bool(verdict["passed"]["true_peak"]),
    }
    for name, entry in entries.items():
        entry |= {"unit": UNITS[name], "meter": METERS[name]}
    return {
        "metrics": entries,
        "passed": all(entry["passed"] for entry in entries.values()),
        "quality_score": float(verdict["quality_score"]),
    }


def run_mix_case(chain, case: MixCase, style: StyleTarget, mode: str, seed: int) -> dict:
    """Synthesise the case's stems, mix them with `chain` in `mode`, measure and judge the full mix."""
    started = time.perf_counter()
    stems = case.make(seed)
    synthesised = time.perf_counter()
    torch.manual_seed(seed)
    chain.sample_rate = case.sample_rate
    with torch.no_grad() if mode == "predict" else torch.enable_grad():
        mix, analysis = chain(stems, style=style, mode=mode)
    mixed = time.perf_counter()
    verdict = judge(measure_mix(mix, case.sample_rate), style, chain.ceiling_dbtp)
    finished = time.perf_counter()
    for name, entry in verdict["metrics"].items():
        entry["chain_reading"] = float(analysis[name])  # the mixer's own meters, for comparison
    return {
        "id": f"{case.name} {style.name} {mode}",
        "name": case.name,
        "section": "mix",
        "family": case.family,
        "style": style.name,
        "mode": mode,
        "n_stems": case.n_stems,
        "duration_s": case.duration_s,
        "sample_rate": case.sample_rate,
        **verdict,
        "time_s": finished - started,
        "detail": {
            "stage_s": {
                "synthesis": synthesised - started,
                "mixing": mixed - synthesised,
                "measuring": finished - mixed,
            },
            "chain_quality_score": float(analysis["quality_score"]),
            "master_trim_db": float(analysis.get("master_trim_db", 0.0)),
            "master_params": json_ready(analysis["master_params"]),
            "stem_params": json_ready(analysis["stem_params"]),
        },
    }


def run_conformance_case(case: ConformanceCase) -> dict:
    """Read the case's signal with `automix.metrics` and compare with the standard's expected value."""
    started = time.perf_counter()
    signal = sine_sequence(case.levels_dbfs, case.durations_s, case.sample_rate)
    measured = float(CONFORMANCE_METERS[case.metric](signal, case.sample_rate))
    error = measured - case.expected
    passed = abs(error) <= case.tolerance
    return {
        "id": case.name,
        "name": case.name,
        "section": "conformance",
        "style": None,
        "mode": None,
        "sample_rate": case.sample_rate,
        "metrics": {
            case.metric: {
                "measured": measured,
                "target": case.expected,
                "error": error,
                "tolerance": case.tolerance,
                "passed": passed,
                "unit": case.unit,
                "meter": f"automix.metrics.{case.metric}",
            }
        },
        "passed": passed,
        "quality_score": None,
        "time_s": time.perf_counter() - started,
    }


# ---------------------------------------------------------------------------------------- the run


def summarize(results: Sequence[Mapping]) -> dict:
    """Counts (overall and per section), the mean and lowest quality score of the mixes, the failures."""
    scores = [r["quality_score"] for r in results if r["quality_score"] is not None]
    sections = {}
    for section in ("mix", "conformance"):
        chosen = [r for r in results if r["section"] == section]
        n_passed = sum(r["passed"] for r in chosen)
        sections[section] = {"total": len(chosen), "passed": n_passed, "failed": len(chosen) - n_passed}
    n_passed = sum(r["passed"] for r in results)
    return {
        "total": len(results),
        "passed": n_passed,
        "failed": len(results) - n_passed,
        "quality_score_mean": sum(scores) / len(scores) if scores else None,
        "quality_score_min": min(scores) if scores else None,
        "time_s": sum(r["time_s"] for r in results),
        "sections": sections,
        "failures": [r["id"] for r in results if not r["passed"]],
    }


def environment(sample_rates: Iterable[int], checkpoints: Mapping[str, str | None]) -> dict:
    """Versions, the machine and each mode's checkpoint file (None: the neutral console), so that a report
    can be compared with another."""
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "automix": __version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pyloudnorm": importlib.metadata.version("pyloudnorm"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": "cpu",
        "sample_rates": sorted(set(sample_rates)),
        "checkpoint": dict(checkpoints),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def run_validation(
    chain,
    mix_cases: Sequence[MixCase],
    styles: Sequence[StyleTarget],
    modes: Sequence[str],
    conformance: Sequence[ConformanceCase],
    *,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Every mix case x style x mode with `chain` (or `chain[mode]`, a mapping of one per mode), then every
    conformance case; one result each."""
    chains = chain if isinstance(chain, Mapping) else dict.fromkeys(modes, chain)
    jobs = [
        partial(run_mix_case, chains[mode], case, style, mode, seed)
        for case in mix_cases
        for style in styles
        for mode in modes
    ]
    jobs += [partial(run_conformance_case, case) for case in conformance]
    return [job() for job in tqdm(jobs, desc="validating", unit="check", disable=not progress)]
