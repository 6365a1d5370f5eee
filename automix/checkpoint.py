"""Checkpoints of a chain's predictor: weights, the configuration to rebuild it as plain dicts, and
versions, so that a checkpoint loads with `torch.load(weights_only=True)` (nothing pickled but tensors
and plain values). A Lightning checkpoint written by training carries the same dict under "automix".
"""

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from automix import __version__
from automix.dsp.console import DEFAULT_CEILING_DBTP
from automix.errors import AutomixError
from automix.params import ParameterSpace

DEFAULT_SAMPLE_RATE = 44100
MESSAGE_LIMIT = 300  # characters of a foreign error quoted in a one-line message
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def chain_checkpoint(chain) -> dict:
    """The checkpoint dict of an `AutoMixChain`: `{"state_dict", "config", "versions"}`."""
    return {
        "state_dict": chain.predictor.state_dict(),
        "config": {
            "model": dict(chain.model_config),
            "dsp": chain.space.to_config(),
            "sample_rate": chain.sample_rate,
            "ceiling_dbtp": chain.ceiling_dbtp,
        },
        "versions": {"automix": __version__, "torch": str(torch.__version__)},
    }


def load_chain(chain_class, path, style_targets: Mapping | None = None, **kwargs):
    """A `chain_class` (an `AutoMixChain`) rebuilt from the checkpoint file `path`, its predictor's weights
    loaded; `kwargs` go to the constructor (over the checkpoint's own sample rate, ranges and ceiling).

    Raises:
        AutomixError: naming the file, when it is missing, a folder, not an automix checkpoint, or holds
            weights of another shape than its config describes.
    """
    path = Path(path)
    if path.is_dir():
        raise AutomixError(f"{path}: a folder, not a checkpoint file; give a .ckpt file")
    if not path.is_file():
        raise AutomixError(f"{path}: no such checkpoint file; check the path")
    # torch.save writes a zip archive; anything else would reach the unpickler and fail in many ways.
    if not zipfile.is_zipfile(path):
        raise AutomixError(
            f"{path}: not a PyTorch checkpoint; give one written by train.py or AutoMixChain.checkpoint()"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("automix", state)
        config = state["config"]
        options = {
            "style_targets": style_targets,
            "sample_rate": int(config.get("sample_rate", DEFAULT_SAMPLE_RATE)),
            "space": ParameterSpace.from_config(config["dsp"]),
            "ceiling_dbtp": float(config.get("ceiling_dbtp", DEFAULT_CEILING_DBTP)),
        }
        chain = chain_class(**(options | dict(config["model"]) | kwargs))
        weights = state["state_dict"]
    except AutomixError as error:
        raise AutomixError(f"{path}: {error}") from None
    except pickle.UnpicklingError:
        raise AutomixError(
            f"{path}: not an automix checkpoint: it holds objects other than tensors and plain values (numpy "
            "arrays, classes), which are not loaded for safety; give one written by train.py or "
            "AutoMixChain.checkpoint()"
        ) from None
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as error:
        raise AutomixError(
            f"{path}: not an automix checkpoint ({type(error).__name__}: {one_line(error)}); give one "
            "written by train.py or AutoMixChain.checkpoint()"
        ) from None
    try:
        chain.predictor.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise AutomixError(
            f"{path}: its weights do not fit the predictor its config describes ({one_line(error)}); the "
            "file is damaged or edited"
        ) from None
    return chain


def one_line(error: BaseException, limit: int = MESSAGE_LIMIT) -> str:
    """An exception's message as one line of plain text: its lines joined, terminal colour codes removed,
    and at most `limit` characters."""
    text = ANSI_ESCAPE.sub("", str(error))
    text = "; ".join(line.strip().rstrip(".:") for line in text.splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 1] + "…"
