"""Per-song targets, named: what the loss, the predictor and the optimiser compare a mix with.

A batch of songs carries one `Targets` (each field `[B]`, the bands `[B, 3]`). Where a tensor is needed,
for a network's input or a training batch, `Targets.tensor()` and `Targets.from_tensor()` convert to and
from the vector layout `[..., 6]`: lufs, centroid Hz, M/S ratio, band fractions low/mid/high (NaN where a
style gives no frequency balance).
"""

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from automix.errors import AutomixError
from automix.styles import StyleTarget, get_style

TARGET_SIZE = 6  # lufs, centroid_hz, ms_ratio, bands low/mid/high


@dataclass(frozen=True)
class Targets:
    """Targets of a batch of songs.

    Attributes:
        lufs: `[B]` integrated loudness, LUFS.
        centroid_hz: `[B]` spectral centroid of the mid signal, Hz.
        ms_ratio: `[B]` RMS(side) / RMS(mid).
        bands: `[B, 3]` energy fractions below 250 Hz, 250-4000 Hz and above (NaN: no target).
        spectrum_db: `[B, K]` references' long-term spectra (`StyleTarget.spectrum_db`; a row of NaN for a
            song without one), or None where no song has one. Not part of `tensor()`.
    """

    lufs: torch.Tensor
    centroid_hz: torch.Tensor
    ms_ratio: torch.Tensor
    bands: torch.Tensor
    spectrum_db: torch.Tensor | None = None

    @classmethod
    def from_tensor(cls, vectors: torch.Tensor) -> "Targets":
        """From target vectors `[..., 6]` (the layout of `tensor()`)."""
        if vectors.shape[-1] != TARGET_SIZE:
            raise AutomixError(
                f"target vectors must be [..., {TARGET_SIZE}], got shape {tuple(vectors.shape)}"
            )
        return cls(vectors[..., 0], vectors[..., 1], vectors[..., 2], vectors[..., 3:])

    @classmethod
    def of_styles(cls, styles: Sequence[StyleTarget]) -> "Targets":
        """The targets of one style per song (float32), with the references' spectra."""
        targets = cls.from_tensor(torch.stack([style_vector(style) for style in styles]))
        return targets.replace(spectrum_db=_spectra(styles))

    def tensor(self) -> torch.Tensor:
        """`[..., 6]`: lufs, centroid Hz, M/S ratio, bands."""
        fields = (self.lufs, self.centroid_hz, self.ms_ratio)
        return torch.cat([torch.stack(fields, dim=-1), self.bands], dim=-1)

    @property
    def batch_size(self) -> int:
        return self.lufs.shape[0] if self.lufs.ndim else 1

    @property
    def has_bands(self) -> torch.Tensor:
        """`[B]` bool: whether a frequency balance is targeted."""
        return torch.isfinite(self.bands).all(dim=-1)

    @property
    def has_reference(self) -> torch.Tensor:
        """`[B]` bool: whether a song is mixed to a reference (its `spectrum_db` row is known)."""
        if self.spectrum_db is None:
            return torch.zeros(self.batch_size, dtype=torch.bool, device=self.lufs.device)
        return ~self.spectrum_db.isnan().all(dim=-1)

    def map(self, fn) -> "Targets":
        """`fn` applied to every field (indexing, devices, repeats); None stays None."""
        values = (getattr(self, field.name) for field in dataclasses.fields(self))
        return Targets(*(None if value is None else fn(value) for value in values))

    def to(self, device=None, dtype=None) -> "Targets":
        return self.map(lambda value: value.to(device=device, dtype=dtype))

    def __getitem__(self, index) -> "Targets":
        """The targets of the songs `index` selects along the batch."""
        return self.map(lambda value: value[index])

    def repeat_interleave(self, repeats: int) -> "Targets":
        """Each song's targets `repeats` times in a row (for K excerpts of each song)."""
        return self.map(lambda value: value.repeat_interleave(repeats, dim=0))

    def replace(self, **fields: torch.Tensor) -> "Targets":
        return dataclasses.replace(self, **fields)


def style_vector(style: StyleTarget) -> torch.Tensor:
    """`[6]` float32 target vector of one style (bands NaN when the style has no frequency balance)."""
    bands = style.balance_fractions() if style.frequency_balance is not None else (float("nan"),) * 3
    return torch.tensor([style.lufs, style.spectral_centroid_hz, style.stereo_ms_ratio, *bands])


def _spectra(styles: Sequence[StyleTarget]) -> torch.Tensor | None:
    """`[B, K]` the styles' `spectrum_db` (NaN rows for those without, cut to the shortest), or None."""
    spectra = [style.spectrum_db for style in styles]
    if all(spectrum is None for spectrum in spectra):
        return None
    n_bands = min(len(spectrum) for spectrum in spectra if spectrum is not None)
    rows = [spectrum[:n_bands] if spectrum is not None else (float("nan"),) * n_bands for spectrum in spectra]
    return torch.tensor(rows, dtype=torch.float32)


def resolve_targets(
    style: "str | StyleTarget | Sequence | torch.Tensor | Targets",
    styles: Mapping[str, StyleTarget],
    batch_size: int,
) -> Targets:
    """Targets of `batch_size` songs from a style name, a StyleTarget, one of those per song, target
    vectors `[6]` / `[B, 6]`, or `Targets`; one style is repeated for every song.

    Raises:
        AutomixError: an unknown style name, or a count of styles that is not 1 or the batch's.
    """
    spectra = None
    if isinstance(style, Targets):
        vectors, spectra = style.tensor().reshape(-1, TARGET_SIZE), style.spectrum_db
    elif isinstance(style, torch.Tensor):
        vectors = style.reshape(-1, TARGET_SIZE).float()
    else:
        chosen = [style] if isinstance(style, str | StyleTarget) else list(style)
        chosen = [_as_style(s, styles) for s in chosen]
        vectors, spectra = torch.stack([style_vector(s) for s in chosen]), _spectra(chosen)
    if vectors.shape[0] == 1:
        vectors = vectors.expand(batch_size, -1)
        spectra = None if spectra is None else spectra.expand(batch_size, -1)
    if vectors.shape[0] != batch_size:
        raise AutomixError(f"got {vectors.shape[0]} styles for a batch of {batch_size} songs")
    # A style is checked when made; vectors come as they are (NaN bands: no band target).
    values = vectors[:, :3].detach()
    valid = torch.isfinite(values).all(-1) & (values[:, 1] > 0) & (values[:, 2] >= 0)
    if not bool(valid.all()):
        song = int((~valid).nonzero()[0])
        raise AutomixError(
            "target vectors need a finite lufs, spectral centroid > 0 Hz and M/S ratio >= 0 (columns 0-2); "
            f"song {song} has {values[song].tolist()}"
        )
    return Targets.from_tensor(vectors).replace(spectrum_db=spectra)


def _as_style(style: "str | StyleTarget", styles: Mapping[str, StyleTarget]) -> StyleTarget:
    return style if isinstance(style, StyleTarget) else get_style(styles, style)
