"""Parametric EQ: RBJ biquads applied exactly by frequency sampling (see `automix.dsp.filters`)."""

import torch

from automix.dsp import filters

# The 4-band EQ of every channel strip and of the master, in this order.
EQ_BANDS = ("low_shelf", "low_mid", "high_mid", "high_shelf")
BUTTERWORTH_Q = 2**-0.5


def four_band_eq(
    x: torch.Tensor,
    sample_rate: int,
    *,
    gain_db: torch.Tensor,
    freq_hz: torch.Tensor,
    q: torch.Tensor,
    highpass_hz: float | None = None,
) -> torch.Tensor:
    """Low shelf, two peaking bands and a high shelf in cascade (`four_band_sections`), applied exactly
    by `automix.dsp.filters.apply_biquads`.

    Args:
        x: `[..., C, T]` signal.
        sample_rate: Hz.
        gain_db, freq_hz, q: `[..., 4]` per band in `EQ_BANDS` order; the leading dimensions broadcast
            against x's leading dimensions (without C), so each stem of a batch has its own EQ.
        highpass_hz: a fixed Butterworth high-pass (Q 1/sqrt(2)) in the same cascade, at no extra FFT
            cost; None for none.

    Returns:
        `[..., C, T]` filtered signal; 0 dB in every band is the identity.
    """
    b, a = four_band_sections(sample_rate, gain_db=gain_db, freq_hz=freq_hz, q=q, highpass_hz=highpass_hz)
    return filters.apply_biquads(x, b, a, sample_rate)


def four_band_sections(
    sample_rate: int, *, gain_db, freq_hz, q, highpass_hz: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The biquads of `four_band_eq`: `(b, a)`, each `[..., 4 or 5, 3]` float64 (see
    `automix.dsp.filters.apply_biquads`); the gradient flows through the cast."""
    gain_db, freq_hz, q = torch.broadcast_tensors(
        *(torch.as_tensor(value).double() for value in (gain_db, freq_hz, q))
    )
    designs = (filters.low_shelf, filters.peaking, filters.peaking, filters.high_shelf)
    sections = [
        design(gain_db[..., band], freq_hz[..., band], q[..., band], sample_rate)
        for band, design in enumerate(designs)
    ]
    if highpass_hz is not None:
        b_hp, a_hp = filters.high_pass(
            torch.tensor(highpass_hz, dtype=torch.float64, device=gain_db.device), BUTTERWORTH_Q, sample_rate
        )
        sections.append((b_hp.expand_as(sections[0][0]), a_hp.expand_as(sections[0][1])))
    return torch.stack([b for b, _ in sections], dim=-2), torch.stack([a for _, a in sections], dim=-2)


def biquad_eq(
    x: torch.Tensor,
    sample_rate: int,
    *,
    kind: str,
    freq_hz: torch.Tensor | float,
    q: torch.Tensor | float = 0.7071,
    gain_db: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """One RBJ biquad of the given kind on `[..., C, T]`.

    Args:
        kind: "low_shelf", "peaking", "high_shelf", "low_pass" or "high_pass".
        freq_hz, q, gain_db: `[...]` or scalars; gain_db is ignored by the pass filters. The biquad is
            designed in float64 whatever x's dtype (see `automix.dsp.filters.apply_biquads`).
    """
    freq_hz, q, gain_db = (
        torch.as_tensor(value, device=x.device).double() for value in (freq_hz, q, gain_db)
    )
    if kind in ("low_pass", "high_pass"):
        b, a = getattr(filters, kind)(freq_hz, q, sample_rate)
    elif kind in ("low_shelf", "peaking", "high_shelf"):
        b, a = getattr(filters, kind)(gain_db, freq_hz, q, sample_rate)
    else:
        raise ValueError(f"unknown biquad kind {kind!r}")
    return filters.apply_biquads(x, b.unsqueeze(-2), a.unsqueeze(-2), sample_rate)
