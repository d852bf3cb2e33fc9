"""3D ResNeXt-101 features (``features.video3d``), 1.5 rows per second: settings, the recipe they
name, and what the shard file says about them.

``mcnflow media`` (:class:`mcnflow.media.consumers.Clips3D`) decodes the frames (24 fps, short side
112 by ffmpeg) and runs :class:`.resnext3d.ClipEncoder` on them.

Rows: a constant-rate video of ``d`` seconds decodes to ``T = floor(24 d + 0.5)`` frames (what the
``fps`` filter gives; at least 1, see :mod:`.frames`) and gives ``ceil(T / 16)`` rows: a partial last
clip is completed with black frames and counts. Row ``k`` covers frames ``16k .. 16k + 15``, i.e.
seconds ``[k / 1.5, (k + 1) / 1.5)``. Example: 4 s -> 96 frames -> 6 rows; 4.3 s -> 103 frames -> 7 rows.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from mcnflow.core.config import ConfigError, canonical_json

STAGE = "features.video3d"
SETTINGS_KEYS = ("weights", "blocks", "fps", "short_side", "crop", "clip_frames", "batch_size", "device",
                 "decode_workers", "seed", "l2_normalize", "compression")


# --- settings --------------------------------------------------------------------------------------

def check_settings(settings: Mapping[str, Any]) -> dict:
    """The settings must be exactly features.video3d plus features.compression (no silent defaults)."""
    missing = [k for k in SETTINGS_KEYS if k not in settings]
    unknown = sorted(set(settings) - set(SETTINGS_KEYS))
    if missing:
        raise ConfigError(f"video3d settings: missing key(s) {', '.join(missing)} "
                          "(features.video3d plus features.compression)")
    if unknown:
        raise ConfigError(f"video3d settings: unknown key(s) {', '.join(unknown)}; allowed keys: "
                          + ", ".join(SETTINGS_KEYS))
    if not settings["fps"] > 0:
        raise ConfigError(f"config key '{STAGE}.fps': {settings['fps']!r} must be > 0")
    for key in ("batch_size", "clip_frames", "crop", "short_side"):
        if int(settings[key]) < 1:
            raise ConfigError(f"config key '{STAGE}.{key}': {settings[key]!r} must be >= 1")
    from mcnflow.features.resnext3d import LAYERS_101

    if len(settings["blocks"]) != 4 or min(settings["blocks"]) < 1:
        raise ConfigError(f"config key '{STAGE}.blocks': {list(settings['blocks'])}: four stages of >= 1 block each")
    if str(settings["weights"]) != "none" and tuple(settings["blocks"]) != LAYERS_101:
        raise ConfigError(f"config key '{STAGE}.blocks': {list(settings['blocks'])} is not ResNeXt-101's "
                          f"{list(LAYERS_101)}; a checkpoint ({settings['weights']}) holds ResNeXt-101")
    if int(settings["crop"]) > int(settings["short_side"]):
        raise ConfigError(f"config key '{STAGE}.crop': {settings['crop']!r} is larger than "
                          f"'{STAGE}.short_side' {settings['short_side']!r} (the crop is taken from the scaled frame)")
    return dict(settings)


def recipe_from_settings(settings: Mapping[str, Any]):
    from mcnflow.features.resnext3d import Recipe3D

    return Recipe3D(fps=float(settings["fps"]), short_side=int(settings["short_side"]),
                    crop=int(settings["crop"]), clip_frames=int(settings["clip_frames"]))


# --- the shard file's attributes ----------------------------------------------------------------

def root_attrs(settings: Mapping[str, Any], encoder) -> dict:
    """What every 3D shard file says about how its features were made."""
    from mcnflow.features.resnext3d import FEATURE_DIM, MODEL_NAME

    weights, recipe = encoder.weights, encoder.recipe
    attrs = {key: settings[key] for key in SETTINGS_KEYS if key != "weights"}
    attrs.update({
        "features": "3d",
        "weights": weights.description,   # e.g. "none (random init, ...): NOT pretrained features"
        "weights_setting": settings["weights"],
        "pretrained": weights.pretrained,
        "model": MODEL_NAME,
        "feature_dim": FEATURE_DIM,
        "rows_per_second": float(recipe.rows_per_second),
        "sampling": f"ffmpeg fps={settings['fps']} filter, then non-overlapping clips of {recipe.clip_frames} "
                    f"frames: row k = frames {recipe.clip_frames}k .. {recipe.clip_frames}k+{recipe.clip_frames - 1}, "
                    f"seconds [k/{recipe.rows_per_second:g}, (k+1)/{recipe.rows_per_second:g})",
        "padding": "the last clip is completed with black frames (0 on the 0-255 scale, before normalization); "
                   f"rows = ceil(frames / {recipe.clip_frames})",
        "resize": f"short side {recipe.short_side}, long side int(long*{recipe.short_side}/short), then centre "
                  f"crop {recipe.crop}x{recipe.crop} at (int((w-{recipe.crop})/2), int((h-{recipe.crop})/2))",
        "preprocess": "(x - preprocess_mean) / preprocess_std per RGB channel on 0-255 values",
        "preprocess_mean": np.asarray(recipe.mean, dtype=np.float64),
        "preprocess_std": np.asarray(recipe.std, dtype=np.float64),
        "stored_dtype": "float16",
        "compute_device": encoder.device.type,
        "precision": encoder.precision,
        "settings": canonical_json(dict(settings)),
    })
    return attrs


def build_encoder(settings: Mapping[str, Any]):
    """The :class:`.resnext3d.ClipEncoder` of checked ``features.video3d`` settings."""
    from mcnflow.core.device import resolve_device
    from mcnflow.features.resnext3d import ClipEncoder, ResNeXt3DWeights

    weights = ResNeXt3DWeights.resolve(str(settings["weights"]), int(settings["seed"]), tuple(settings["blocks"]))
    return ClipEncoder(weights, resolve_device(str(settings["device"]), f"{STAGE}.device"),
                       bool(settings["l2_normalize"]), int(settings["batch_size"]), recipe_from_settings(settings))
