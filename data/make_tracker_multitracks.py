"""Render tracker modules (.mod, .xm, .it, .s3m, .mptm) into multitracks: one stereo WAV per instrument and
the composer's mix.

    apt-get download pingus-data heroes-sound-tracks biniax2-data && for f in *.deb; do dpkg -x $f debs; done
    python data/make_tracker_multitracks.py --modules debs/usr/share/games    # ~/.cache/automix/tracker

A tracker module is a multitrack its composer mixed: every note's instrument, volume and pan are written
in the module. libopenmpt (Debian's `libopenmpt0`, through ctypes) renders the whole module once and each
instrument alone (the others muted; a module without instruments, each sample alone), and the song is
kept only where the instruments' renders sum to the whole render (`SUM_TOLERANCE`): the composer's mix
is then exactly the sum of the tracks, as data=multitrack expects. Instruments that never sound are not
written. The layout and the checks on each track are data/make_lmms_multitracks.py's (`write_song`,
`make_songs`): `<out>/<song>/<NNN_instrument>.wav`, `<out>/<song>/mixture.wav` and `tracker_render.json`.
A song's name is the module's path under the folders given, so two games' "menu.xm" stay two songs.

Tracker songs are training material only: the human-mix benchmark reports on LMMS's validation songs.
"""

import argparse
import ctypes
import ctypes.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_lmms_multitracks as layout  # noqa: E402  (the song layout, its checks and atomic placement)

from automix.cli import run_cli  # noqa: E402
from automix.errors import AutomixError  # noqa: E402
from automix.io import save_audio  # noqa: E402

MODULE_SUFFIXES = (".mod", ".xm", ".it", ".s3m", ".mptm")
REPORT = "tracker_render.json"
# The instruments' renders must sum to the whole render within this (RMS of the difference over RMS of
# the whole): libopenmpt's mixer is linear, so they do to float rounding (~1e-6 measured) unless muting
# changes what the others play.
SUM_TOLERANCE = 1e-4
BLOCK = 16384  # frames rendered a call
INTERACTIVE = b"interactive"
# openmpt_module_ext_interface_interactive (libopenmpt_ext.h): its function pointers in order.
INTERACTIVE_FIELDS = (
    "set_current_speed", "set_current_tempo", "set_tempo_factor", "get_tempo_factor", "set_pitch_factor",
    "get_pitch_factor", "set_global_volume", "get_global_volume", "set_channel_volume",
    "get_channel_volume", "set_channel_mute_status", "get_channel_mute_status",
    "set_instrument_mute_status", "get_instrument_mute_status", "play_note", "stop_note",
)  # fmt: skip
MUTE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int)


class _Interactive(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in INTERACTIVE_FIELDS]


def default_out() -> Path:
    """`$XDG_CACHE_HOME/automix/tracker` (default `~/.cache/automix/tracker`): outside the repository."""
    return layout.default_out().parent / "tracker"


def libopenmpt() -> ctypes.CDLL:
    """libopenmpt with the prototypes used here.

    Raises:
        AutomixError: libopenmpt is not installed.
    """
    path = ctypes.util.find_library("openmpt")
    if path is None:
        raise AutomixError("libopenmpt is not installed; install it: apt-get install libopenmpt0")
    lib = ctypes.CDLL(path)
    void_p, size_t, int_p = ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int)
    prototypes = {
        "openmpt_module_ext_create_from_memory": (
            void_p, [void_p, size_t, void_p, void_p, void_p, void_p, int_p, void_p, void_p]
        ),
        "openmpt_module_ext_get_module": (void_p, [void_p]),
        "openmpt_module_ext_get_interface": (ctypes.c_int, [void_p, ctypes.c_char_p, void_p, size_t]),
        "openmpt_module_ext_destroy": (None, [void_p]),
        "openmpt_module_get_num_instruments": (ctypes.c_int32, [void_p]),
        "openmpt_module_get_num_samples": (ctypes.c_int32, [void_p]),
        "openmpt_module_get_instrument_name": (void_p, [void_p, ctypes.c_int32]),
        "openmpt_module_get_sample_name": (void_p, [void_p, ctypes.c_int32]),
        "openmpt_free_string": (None, [void_p]),
        "openmpt_module_read_interleaved_float_stereo": (
            size_t, [void_p, ctypes.c_int32, size_t, ctypes.POINTER(ctypes.c_float)]
        ),
    }  # fmt: skip
    for name, (restype, argtypes) in prototypes.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


class Module:
    """One loaded module (a fresh playback state): its instrument names, and a render with some muted.

    Example::

        with Module(lib, data) as module:
            names = module.instrument_names()
            audio = module.render(44100, solo=0)  # [T, 2] float32, the first instrument alone
    """

    def __init__(self, lib: ctypes.CDLL, data: bytes):
        self.lib, error = lib, ctypes.c_int(0)
        self.ext = lib.openmpt_module_ext_create_from_memory(
            data, len(data), None, None, None, None, ctypes.byref(error), None, None
        )
        if not self.ext:
            raise AutomixError(f"libopenmpt cannot load it (error {error.value}); not a tracker module?")
        self.module = lib.openmpt_module_ext_get_module(self.ext)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.lib.openmpt_module_ext_destroy(self.ext)

    def _has_instruments(self) -> bool:
        return self.lib.openmpt_module_get_num_instruments(self.module) > 0

    def n_instruments(self) -> int:
        """How many instruments the module has; a module without instruments plays samples: how many."""
        if self._has_instruments():
            return self.lib.openmpt_module_get_num_instruments(self.module)
        return self.lib.openmpt_module_get_num_samples(self.module)

    def instrument_names(self) -> list[str]:
        """The instruments' names (`n_instruments`; the samples' where the module has no instruments)."""
        lib = self.lib
        get = (
            lib.openmpt_module_get_instrument_name
            if self._has_instruments()
            else lib.openmpt_module_get_sample_name
        )
        names = []
        for index in range(self.n_instruments()):
            pointer = get(self.module, index)
            names.append(ctypes.string_at(pointer).decode("latin-1").strip() if pointer else "")
            lib.openmpt_free_string(pointer)
        return names

    def render(self, sample_rate: int, solo: int | None = None, deadline: float = float("inf")) -> np.ndarray:
        """`[T, 2]` float32: the module played once, all of it or instrument `solo` alone.

        Raises:
            AutomixError: the render runs past `deadline` (`time.monotonic()`).
        """
        if solo is not None:
            interactive = _Interactive()
            if not self.lib.openmpt_module_ext_get_interface(
                self.ext, INTERACTIVE, ctypes.byref(interactive), ctypes.sizeof(interactive)
            ):
                raise AutomixError("this libopenmpt cannot mute instruments (no interactive interface)")
            mute = MUTE(interactive.set_instrument_mute_status)
            for index in range(self.n_instruments()):
                mute(self.ext, index, int(index != solo))
        blocks, buffer = [], (ctypes.c_float * (2 * BLOCK))()
        read = self.lib.openmpt_module_read_interleaved_float_stereo
        while n_frames := read(self.module, sample_rate, BLOCK, buffer):
            blocks.append(np.frombuffer(buffer, dtype=np.float32, count=2 * n_frames).copy())
            if time.monotonic() > deadline:
                raise AutomixError("the render ran past --timeout-s")
        return np.concatenate(blocks).reshape(-1, 2) if blocks else np.zeros((0, 2), np.float32)


def tracker_render(lib: ctypes.CDLL, sample_rate: int = layout.SAMPLE_RATE) -> layout.Render:
    """A `layout.Render` for modules: each sounding instrument alone into `out_dir/<index>_<name>.wav`.

    Raises (from the returned function):
        AutomixError: the module cannot be read or loaded, the instruments do not sum to the whole
            render, or the render runs past `timeout_s`.
    """

    def render(module_path: Path, out_dir: Path, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        try:
            data = module_path.read_bytes()
        except OSError as error:
            raise AutomixError(f"cannot read it ({error.strerror})") from error
        with Module(lib, data) as module:
            names = module.instrument_names()
            whole = module.render(sample_rate, deadline=deadline)
        total = np.zeros(whole.shape, np.float64)
        for index, name in enumerate(names):
            with Module(lib, data) as module:
                alone = module.render(sample_rate, solo=index, deadline=deadline)
            if len(alone) != len(whole):
                raise AutomixError(
                    f"instrument {index + 1} plays {len(alone)} frames, the module {len(whole)}"
                )
            if not alone.any():
                continue  # never plays
            total += alone
            label = layout.safe_name(name) if name else "instrument"
            save_audio(
                out_dir / f"{index + 1}_{label}.wav",
                torch.from_numpy(alone.T),
                sample_rate,
                subtype=layout.SUBTYPE,
            )
        residual = _rms(total - whole) / max(_rms(whole), 1e-12)
        if residual > SUM_TOLERANCE:
            raise AutomixError(
                f"its instruments sum to its render only within {residual:.1e} (RMS, relative; "
                f"{SUM_TOLERANCE:g} needed): muting one changes what the others play"
            )

    return render


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def find_modules(paths: list[Path]) -> list[Path]:
    """The module files among `paths` and under the folders among them, sorted.

    Raises:
        AutomixError: a path does not exist, or none is a module.
    """
    modules = set()
    for path in paths:
        if path.is_dir():
            modules.update(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MODULE_SUFFIXES)
        elif path.is_file():
            modules.add(path)
        else:
            raise AutomixError(f"{path}: no such file or folder")
    if not modules:
        raise AutomixError(
            f"no tracker module ({', '.join(MODULE_SUFFIXES)}) in {', '.join(map(str, paths))}"
        )
    return sorted(modules)


def song_namer(modules: list[Path]):
    """`name(module)`: its path under the modules' deepest common folder, made safe ("pingus/music/x.it"
    -> "pingus_music_x"), so that modules of one file name in different folders are different songs."""
    common = Path(os.path.commonpath([module.resolve().parent for module in modules]))
    return lambda module: layout.safe_name(str(module.resolve().relative_to(common).with_suffix("")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", type=Path, nargs="+", required=True, help="module files or folders")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"song folders go here (default: {default_out()})"
    )
    parser.add_argument("--timeout-s", type=float, default=300.0, help="per module (default: 300)")
    args = parser.parse_args(argv)
    lib = libopenmpt()
    modules = find_modules(args.modules)
    out = (args.out or default_out()).expanduser()
    return layout.render_songs(
        modules,
        out,
        tracker_render(lib),
        timeout_s=args.timeout_s,
        name=song_namer(modules),
        report_name=REPORT,
    )


if __name__ == "__main__":
    sys.exit(run_cli(main))
