"""The training loop of one experiment: schedule, AMP, checkpoints, resume and the loss log.

Outputs under ``out_dir``:
  checkpoints/epoch-NNNN.pt   after every epoch (atomic): model, optimizer, scheduler, grad scaler,
                              k-means queues and centroids, RNG states, epoch and step, meta
  log.tsv.journal             the loss log while training runs (appended and flushed per step)
  log.tsv                     the complete log, written atomically at the end
  model.pt                    the final weights with their meta (atomic); read by mcnflow.model.load_model

A rerun resumes from the latest checkpoint and redoes the interrupted epoch. Every random draw is
a function of the seed, the epoch and the checkpointed state, so an interrupted and resumed run ends
with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import csv
import logging
import math
import random
import re
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mcnflow import __version__
from mcnflow.core.atomic import atomic_path, atomic_write, remove_stale_temps
from mcnflow.core.config import ConfigError, canonical_json, load_schema
from mcnflow.core.device import resolve_device
from mcnflow.core.frozen import thaw
from mcnflow.features.store import raise_descriptor_limit
from mcnflow.model.davenet import DAVENET_WIDTHS
from mcnflow.model.losses import LOSS_TERMS, MCNObjective
from mcnflow.model.mcn import MCN, PAIRS, SPACE_KINDS, modalities_of
from mcnflow.model.inputs import flatten_pairs
from mcnflow.training.dataset import ClipDataset, EpochPermutation, collate_videos, input_fingerprint, seed_worker

log = logging.getLogger(__name__)

TRAINING_KEYS = ("embd_dim", "video_dim", "video_features", "word_dim", "n_pair", "min_time", "max_words", "audio_frames",
                 "batch_size", "epochs", "lr", "optimizer", "warmup_steps", "schedule", "margin", "clusters",
                 "queue_batches", "kmeans_iters", "recon_size", "num_workers", "device", "amp", "seed",
                 "tensorboard")
# training.departures: where mcnflow knowingly departs from MCN's code; every one false = MCN
# (docs/fidelity.md). The first three go to the k-means (mcnflow.model.kmeans), the fourth to the
# reconstruction loss, the last two to the model (they are stored with it, in meta["model"]).
DEPARTURES = ("unit_centroids", "keep_empty_clusters", "keep_centroids_across_epochs",
              "detach_reconstruction_targets", "mask_text_padding", "mask_audio_padding")
# Keys that change how a run executes but not what it computes (x-operational in the schema, the
# same marks that keep them out of the workflow's rerun trigger): a resume may change them.
OPERATIONAL_KEYS = frozenset(key for key, node in load_schema()["properties"]["training"]["properties"].items()
                             if node.get("x-operational"))
# MMS of a pair whose similarities do not depend on which clip goes with which (all equal) is
# 2 ln(clips per step); a last epoch whose mean is within this fraction of it means the pair did not learn.
MMS_CHANCE_TOLERANCE = 0.01
CHECKPOINT_NAME = re.compile(r"^epoch-(\d{4,})\.pt$")
JOURNAL_SUFFIX = ".journal"


# --- settings ---------------------------------------------------------------------------------

def check_settings(settings: Mapping[str, Any]) -> dict:
    """The experiment settings {pairs, space, losses, training} with every key present, or ConfigError."""
    for key in ("pairs", "space", "losses", "training"):
        if key not in settings:
            raise ConfigError(f"experiment settings: key '{key}' is missing")
    pairs = list(settings["pairs"])
    if not pairs or any(p not in PAIRS for p in pairs) or len(set(pairs)) != len(pairs):
        raise ConfigError(f"experiment settings 'pairs': {pairs!r}; allowed: distinct items of {', '.join(PAIRS)}")
    if settings["space"] not in SPACE_KINDS:
        raise ConfigError(f"experiment settings 'space': {settings['space']!r}; allowed: {', '.join(SPACE_KINDS)}")
    for term in LOSS_TERMS:
        spec = settings["losses"].get(term)
        if not isinstance(spec, Mapping) or "enabled" not in spec:
            raise ConfigError(f"experiment settings 'losses.{term}' needs 'enabled' (and 'weight' when enabled)")
        if spec["enabled"] and "weight" not in spec:
            raise ConfigError(f"experiment settings 'losses.{term}' is enabled but has no 'weight'")
    missing = [k for k in TRAINING_KEYS if k not in settings["training"]]
    if missing:
        raise ConfigError(f"experiment settings 'training': missing key(s) {', '.join(missing)}")
    training = settings["training"]
    if training["optimizer"] != "adam":
        raise ConfigError(f"training.optimizer {training['optimizer']!r}; allowed: 'adam'")
    if training["schedule"] not in ("warmup_cosine", "constant"):
        raise ConfigError(f"training.schedule {training['schedule']!r}; allowed: 'warmup_cosine', 'constant'")
    va_space = settings.get("va_space", "fine")
    if va_space not in ("fine", "coarse"):
        raise ConfigError(f"experiment settings 'va_space': {va_space!r}; allowed: 'fine', 'coarse'")
    return {"pairs": pairs, "space": settings["space"], "va_space": va_space, "losses": dict(settings["losses"]),
            "training": {**training, "departures": check_departures(training.get("departures"))}}


def check_departures(given: Any) -> dict[str, bool]:
    """``training.departures`` with every switch present (absent ones false, i.e. MCN), or ConfigError."""
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise ConfigError(f"training.departures must be a mapping of switches, got {given!r}; "
                          f"allowed keys: {', '.join(DEPARTURES)}")
    unknown = sorted(set(given) - set(DEPARTURES))
    if unknown:
        raise ConfigError(f"training.departures: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"allowed keys: {', '.join(DEPARTURES)}")
    for key, value in given.items():
        if not isinstance(value, bool):
            raise ConfigError(f"training.departures.{key}: {value!r} is not allowed; allowed values: true, false")
    return {key: bool(given.get(key, False)) for key in DEPARTURES}


def queue_clips(n_pair: int) -> int:
    """Clips of each video that enter the k-means queue: MCN's first half (16 of 32, train_tri_kmeans.py:239)."""
    return max(1, n_pair // 2)


def build_objective(model: MCN, settings: Mapping[str, Any]) -> MCNObjective:
    """The loss of checked experiment settings (check_settings), k-means and departures included."""
    training = settings["training"]
    departures = training["departures"]
    return MCNObjective(
        model, settings["losses"], margin=training["margin"], clusters=training["clusters"],
        kmeans_iters=training["kmeans_iters"], queue_batches=training["queue_batches"], seed=training["seed"],
        clips_per_video=training["n_pair"], queue_clips=queue_clips(training["n_pair"]),
        unit_centroids=departures["unit_centroids"], keep_empty_clusters=departures["keep_empty_clusters"],
        keep_centroids_across_epochs=departures["keep_centroids_across_epochs"],
        detach_targets=departures["detach_reconstruction_targets"])


def lr_factor(step: int, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """MCN's schedule: linear warm-up from 0, then half a cosine down to 0 at the last step."""
    if schedule == "constant":
        return 1.0
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every global generator's state, as plain values and tensors (loadable with weights_only=True)."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "key": key.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], np.array(numpy_state["key"], dtype=np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# What a checkpoint's weights depend on (with the training section minus OPERATIONAL_KEYS).
COMPUTED_KEYS = ("pairs", "space", "va_space", "losses", "training")


def _computed_settings(settings: Mapping) -> dict:
    training = {k: v for k, v in settings["training"].items() if k not in OPERATIONAL_KEYS}
    computed = {k: settings.get(k) for k in COMPUTED_KEYS}
    computed["va_space"] = computed["va_space"] or "fine"  # checkpoints from before space: fac
    return {**computed, "training": training}


# --- checkpoints ------------------------------------------------------------------------------

def mms_chance(clips_per_step: int) -> float:
    """MMS (rows + columns CE) when every similarity of a step's clips is the same: 2 ln(clips)."""
    return 2 * math.log(clips_per_step)


def pairs_at_chance(epoch_means: Mapping[str, float], pairs: list[str], clips_per_step: int) -> list[str]:
    """The pairs whose epoch-mean MMS is still within MMS_CHANCE_TOLERANCE of chance."""
    chance = mms_chance(clips_per_step)
    return [pair for pair in pairs
            if f"mms_{pair}" in epoch_means and epoch_means[f"mms_{pair}"] >= (1 - MMS_CHANCE_TOLERANCE) * chance]


def checkpoint_path(directory: Path, epoch: int) -> Path:
    return directory / f"epoch-{epoch:04d}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CHECKPOINT_NAME.match(p.name))]
    return sorted(found)


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be resumed from: training stops instead of silently starting over."""


def load_latest_checkpoint(directory: Path) -> dict | None:
    """The newest checkpoint, or None when there is none.

    Checkpoints are written atomically, so one that does not load (or does not say it is complete) is
    not a killed write: it is damage, a torch incompatibility or a bug, and hours of training are at
    stake. It stops training with the file and the reason; ``mcnflow train --restart`` starts over.
    """
    checkpoints = list_checkpoints(directory)
    if not checkpoints:
        return None
    epoch, path = checkpoints[-1]
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} cannot be loaded ({type(exc).__name__}: {exc}); fix or remove "
                              "it, or rerun `mcnflow train` with --restart to train from scratch") from exc
    if not (isinstance(payload, dict) and payload.get("complete") and payload.get("epoch") == epoch):
        raise CheckpointError(f"checkpoint {path} is not a complete epoch-{epoch} checkpoint; fix or remove it, "
                              "or rerun `mcnflow train` with --restart to train from scratch")
    payload["path"] = str(path)
    return payload


# --- loss log ---------------------------------------------------------------------------------

class LossLog:
    """The TSV loss log: a journal appended per step while training, the final file written atomically."""

    def __init__(self, path: Path, terms: list[str]):
        self.path = path
        self.journal = path.with_name(path.name + JOURNAL_SUFFIX)
        self.columns = ["kind", "epoch", "step", "lr", "total", *terms, "kmeans_fits", "seconds"]
        self._handle = None

    def start(self, resume_step: int, resume_epoch: int) -> None:
        """Open the journal, keeping only rows the resumed state has (the redone epoch's rows go)."""
        kept: list[dict] = []
        # The journal while a run is under way; the published log when a finished run is redone.
        source = next((p for p in (self.journal, self.path) if p.exists()), None)
        if resume_step > 0 and source is not None:
            with open(source, encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle, delimiter="\t")
                if reader.fieldnames == self.columns:
                    kept = [row for row in reader if int(row["epoch"]) <= resume_epoch and int(row["step"]) <= resume_step]
        if resume_step > 0 and not kept:
            log.warning("no earlier loss log found: %s starts at step %d", self.path, resume_step + 1)
        with atomic_write(self.journal) as handle:
            handle.write("\t".join(self.columns) + "\n")
            for row in kept:
                handle.write("\t".join(row[c] for c in self.columns) + "\n")
        self._handle = open(self.journal, "a", encoding="utf-8")

    @staticmethod
    def _format(value: Any) -> str:
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    def write(self, row: Mapping[str, Any]) -> None:
        assert self._handle is not None
        self._handle.write("\t".join(self._format(row.get(c, "")) for c in self.columns) + "\n")
        self._handle.flush()

    def finish(self) -> None:
        """Publish the complete log atomically and drop the journal."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        with open(self.journal, encoding="utf-8") as source, atomic_write(self.path) as target:
            target.write(source.read())
        self.journal.unlink()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


# --- the trainer ------------------------------------------------------------------------------

class Trainer:
    def __init__(self, settings: Mapping[str, Any], dataset: ClipDataset, out_dir: str | Path,
                 experiment: str = "experiment"):
        self.settings = check_settings(settings)
        self.training = self.settings["training"]
        self.experiment = experiment
        self.dataset = dataset
        self.out_dir = Path(out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.device = resolve_device(self.training["device"], "training.device")
        self.amp = bool(self.training["amp"]) and self.device.type == "cuda"
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        if len(dataset) == 0:
            raise ValueError("no usable training videos (every video lacks a needed modality)")

        seed_everything(self.training["seed"])
        self.model = MCN(self.settings["pairs"], self.settings["space"], **self._model_arguments()).to(self.device)
        self.objective = build_objective(self.model, self.settings)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.training["lr"])

        self.videos_per_step = self.training["batch_size"]
        if len(dataset) < self.videos_per_step:
            log.warning("only %d usable videos, fewer than batch_size %d: each step uses all of them",
                        len(dataset), self.videos_per_step)
            self.videos_per_step = len(dataset)
        self.steps_per_epoch = len(dataset) // self.videos_per_step
        self.total_steps = self.steps_per_epoch * self.training["epochs"]
        schedule, warmup = self.training["schedule"], self.training["warmup_steps"]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, schedule, warmup, self.total_steps))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.sampler = EpochPermutation(len(dataset), self.training["seed"])
        self.loader_generator = torch.Generator()
        self.loader = DataLoader(
            dataset, batch_size=self.videos_per_step, sampler=self.sampler, drop_last=True,
            collate_fn=collate_videos, num_workers=self.training["num_workers"], worker_init_fn=seed_worker, generator=self.loader_generator,
            pin_memory=self.device.type == "cuda")
        self.epoch = 0
        self.step = 0
        self.last_epoch_losses: dict[str, float] = {}   # the latest epoch's mean terms (checkpointed in meta)
        self.log = LossLog(self.out_dir / "log.tsv", self.objective.term_names())
        self.tensorboard = None

    def _model_arguments(self) -> dict:
        training = self.training
        arguments = {"embd_dim": training["embd_dim"], "video_dim": training["video_dim"],
                     "word_dim": training["word_dim"], "recon_size": training["recon_size"],
                     "reconstruction": bool(self.settings["losses"]["reconstruction"]["enabled"]),
                     "audio_widths": list(training.get("audio_widths", DAVENET_WIDTHS)),
                     "mask_text_padding": training["departures"]["mask_text_padding"],
                     "mask_audio_padding": training["departures"]["mask_audio_padding"],
                     "va_space": self.settings.get("va_space", "fine")}
        dims = self.dataset.feature_dims()
        for key in ("video_dim", "word_dim"):
            if key in dims and dims[key] != training[key]:
                raise ConfigError(f"training.{key} is {training[key]} but the features have {dims[key]}")
        if "n_mels" in dims:
            arguments["n_mels"] = dims["n_mels"]
        return arguments

    def meta(self) -> dict:
        return {**self.settings, "experiment": self.experiment, "model": dict(self.model.config),
                "modalities": list(self.model.modalities), "spaces": list(self.model.spaces),
                "word2vec": dict(self.dataset.word2vec_info), "videos": len(self.dataset),
                "skipped": dict(self.dataset.skipped), "videos_per_step": self.videos_per_step,
                "clips_per_step": self.videos_per_step * self.training["n_pair"],
                "steps_per_epoch": self.steps_per_epoch, "epochs_done": self.epoch, "steps_done": self.step,
                "last_epoch_losses": dict(self.last_epoch_losses), "mms_at_chance": self.pairs_at_chance(),
                "inputs": input_fingerprint(self.dataset.input_files),
                "mcnflow_version": __version__}

    def pairs_at_chance(self) -> list[str]:
        return pairs_at_chance(self.last_epoch_losses, self.settings["pairs"],
                               self.videos_per_step * self.training["n_pair"])

    def warn_if_at_chance(self) -> None:
        """Say so when a pair ended training where it started: its MMS at 2 ln(clips), i.e. its
        similarities do not tell the step's clips apart (e.g. one branch gives every input the same
        embedding). Evaluation notes it next to the pair's scores."""
        clips = self.videos_per_step * self.training["n_pair"]
        for pair in self.pairs_at_chance():
            log.warning("%s: mms_%s ended training at %.4g, within %g%% of chance (2 ln %d = %.4g): the %s "
                        "similarities do not tell clips apart, so %s did not learn (a collapsed branch gives "
                        "every input the same embedding)", self.experiment, pair,
                        self.last_epoch_losses[f"mms_{pair}"], 100 * MMS_CHANCE_TOLERANCE, clips,
                        mms_chance(clips), pair, pair)

    # --- state -------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        path = checkpoint_path(self.checkpoint_dir, self.epoch)
        payload = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                   "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                   "kmeans": self.objective.state_dict(), "rng": rng_state(), "epoch": self.epoch,
                   "step": self.step, "meta": self.meta(), "complete": True}
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        keep = self.training.get("keep_checkpoints")
        if keep:
            for _, old in list_checkpoints(self.checkpoint_dir)[:-int(keep)]:
                old.unlink()
        return path

    def resume(self) -> bool:
        """Load the latest checkpoint, if any; False when starting from scratch."""
        remove_stale_temps(self.checkpoint_dir)
        payload = load_latest_checkpoint(self.checkpoint_dir)
        if payload is None:
            return False
        theirs = _computed_settings(payload["meta"])
        same_inputs = payload["meta"].get("inputs") == input_fingerprint(self.dataset.input_files)
        if not same_inputs:
            log.warning("%s was trained on other input files: removing the stale checkpoints of %s and "
                        "training from scratch", payload["path"], self.checkpoint_dir)
            for _, old in list_checkpoints(self.checkpoint_dir):
                old.unlink()
            return False
        if canonical_json(theirs) != canonical_json(_computed_settings(self.settings)):
            # Snakemake reruns a branch whose settings changed: its old checkpoints belong to another
            # experiment and must not be resumed. Start from scratch.
            log.warning("%s was written with other settings: removing the stale checkpoints of %s and "
                        "training from scratch", payload["path"], self.checkpoint_dir)
            for _, old in list_checkpoints(self.checkpoint_dir):
                old.unlink()
            return False
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        self.objective.load_state_dict(payload["kmeans"], self.device)
        set_rng_state(payload["rng"])
        self.epoch, self.step = int(payload["epoch"]), int(payload["step"])
        self.last_epoch_losses = dict(payload["meta"].get("last_epoch_losses", {}))
        log.info("resumed from %s (epoch %d, step %d)", payload["path"], self.epoch, self.step)
        return True

    # --- loop --------------------------------------------------------------------------------
    def train_step(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        batch = {k: v.to(self.device, non_blocking=True) for k, v in flatten_pairs(batch).items()}
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            output = self.model(batch)
        # The losses run outside autocast, in float32 (see model.losses).
        total, terms = self.objective(output, self.step + 1)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.step += 1
        return {"lr": lr, "total": total.item(), **{name: value.item() for name, value in terms.items()}}

    def _kmeans_fits(self) -> int:
        return sum(km.fits for km in self.objective.kmeans.values())

    def _open_tensorboard(self) -> None:
        if not self.training["tensorboard"]:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError("training.tensorboard is true but the tensorboard package is not installed") from exc
        self.tensorboard = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=self.step + 1)

    def run(self) -> Path:
        """Train (resuming if possible) to the configured epochs; return the path of model.pt."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.out_dir)
        self.resume()
        log.info("experiment %s: pairs %s, space %s, modalities %s; %d videos (%d skipped: %s); "
                 "%d steps/epoch of %d videos x %d clips on %s%s",
                 self.experiment, ",".join(self.settings["pairs"]), self.settings["space"],
                 ",".join(self.model.modalities), len(self.dataset), sum(self.dataset.skipped.values()),
                 dict(self.dataset.skipped) or "none", self.steps_per_epoch, self.videos_per_step,
                 self.training["n_pair"], self.device, " with AMP" if self.amp else "")
        self.log.start(self.step, self.epoch)
        self._open_tensorboard()
        try:
            self.model.train()
            while self.epoch < self.training["epochs"]:
                self._run_epoch()
                self.save_checkpoint()
            self.warn_if_at_chance()
            model_path = self._write_model()
            self.log.finish()
        finally:
            self.log.close()
            if self.tensorboard is not None:
                self.tensorboard.close()
        return model_path

    def _run_epoch(self) -> None:
        epoch = self.epoch + 1
        self.dataset.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch)
        self.loader_generator.manual_seed(self.training["seed"] * 1_000_003 + self.epoch)
        self.objective.start_epoch()   # MCN resets the k-means centroids at every epoch's start
        rows: list[dict] = []
        started = time.perf_counter()
        progress = tqdm(self.loader, total=self.steps_per_epoch, desc=f"{self.experiment} epoch {epoch}",
                        unit="step", mininterval=5.0, dynamic_ncols=True)
        for batch in progress:
            step_started = time.perf_counter()
            values = self.train_step(batch)
            row = {"kind": "step", "epoch": epoch, "step": self.step, **values,
                   "kmeans_fits": self._kmeans_fits(), "seconds": time.perf_counter() - step_started}
            rows.append(row)
            self.log.write(row)
            if self.tensorboard is not None:
                for name, value in values.items():
                    self.tensorboard.add_scalar(f"train/{name}", value, self.step)
            progress.set_postfix(loss=f"{values['total']:.4g}", refresh=False)
        progress.close()
        self.epoch = epoch
        numeric = [c for c in self.log.columns if c not in ("kind", "epoch", "step", "lr", "kmeans_fits", "seconds")]
        means = {c: float(np.mean([r[c] for r in rows])) for c in numeric}
        self.last_epoch_losses = means
        summary = {"kind": "epoch", "epoch": epoch, "step": self.step, "lr": rows[-1]["lr"], **means,
                   "kmeans_fits": self._kmeans_fits(), "seconds": time.perf_counter() - started}
        self.log.write(summary)
        if self.tensorboard is not None:
            for name, value in means.items():
                self.tensorboard.add_scalar(f"epoch/{name}", value, self.step)
        log.info("epoch %d/%d: %s", epoch, self.training["epochs"],
                 ", ".join(f"{k} {v:.4g}" for k, v in means.items()))

    def _write_model(self) -> Path:
        path = self.out_dir / "model.pt"
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        with atomic_path(path) as tmp:
            torch.save({"model": state, "meta": self.meta()}, tmp)
        return path


def max_open_files(training: Mapping[str, Any]) -> int | None:
    """training.max_open_files, or the schema's default where the settings predate it."""
    if "max_open_files" in training:
        return training["max_open_files"]
    return load_schema()["properties"]["training"]["properties"]["max_open_files"]["default"]


def open_files_limit() -> None:
    """Raise the soft descriptor limit to the hard one (the DataLoader workers inherit it) and log it."""
    before, after, hard = raise_descriptor_limit()
    if after != before:
        log.info("open files: soft limit (ulimit -n) raised from %s to %s, the hard limit", before, after)
    else:
        log.info("open files: soft limit (ulimit -n) %s; hard limit %s", before, hard)


def train(settings: Mapping[str, Any], *, shards: Mapping[str, Sequence], out_dir: str | Path, experiment: str,
          restart: bool = False) -> Path:
    """Build the dataset for the experiment's modalities and train; return the path of model.pt.

    ``shards``: stream name -> HDF5 shards (mcnflow.core.streams); only the streams the experiment
    reads are opened.

    ``restart``: delete the branch's checkpoints first and train from scratch (the explicit way past a
    checkpoint that cannot be resumed)."""
    if restart:
        for _, old in list_checkpoints(Path(out_dir) / "checkpoints"):
            log.warning("--restart: removing %s", old)
            old.unlink()
    settings = check_settings(thaw(settings))  # plain data: the checkpoint's meta loads with weights_only
    training = settings["training"]
    modalities = modalities_of(settings["pairs"])
    open_files_limit()
    dataset = ClipDataset(shards=shards, video_features=training["video_features"], modalities=modalities,
                          n_pair=training["n_pair"], min_time=training["min_time"], max_words=training["max_words"],
                          audio_frames=training["audio_frames"], seed=training["seed"],
                          max_open_files=max_open_files(training))
    try:
        return Trainer(settings, dataset, out_dir, experiment).run()
    finally:
        dataset.close()
