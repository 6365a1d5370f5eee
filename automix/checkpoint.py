"""Checkpoints of a chain's predictor: weights, the configuration to rebuild it as plain dicts, and
versions, so that a checkpoint loads with `torch.load(weights_only=True)` (nothing pickled but tensors
and plain values). A Lightning checkpoint written by training carries the same dict under "automix".
"""

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from automix import __version__
from automix.dsp.console import DEFAULT_CEILING_DBTP
from automix.errors import AutomixError
from automix.params import ParameterSpace

DEFAULT_SAMPLE_RATE = 44100


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
        AutomixError: naming the file, when it is missing, a folder, or not an automix checkpoint.
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
        chain.predictor.load_state_dict(state["state_dict"])
    except AutomixError as error:
        raise AutomixError(f"{path}: {error}") from None
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError, pickle.UnpicklingError) as error:
        raise AutomixError(
            f"{path}: not an automix checkpoint ({type(error).__name__}: {error}); give one written by "
            "train.py or AutoMixChain.checkpoint()"
        ) from None
    return chain
