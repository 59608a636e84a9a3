"""Training with rain embedding consistency, as the thesis describes.

Stage 1 pre-trains the rain autoencoder on ground-truth rain layers R_gt = O - B (MSE).
Stage 2 freezes it, initialises the deraining decoder from its decoder, and trains
    L = 0.02 * L_embed + 0.1 * L_att + 1.0 * (-SSIM)
with Adam, a step schedule (x0.2 at 25/50/75 % of the iterations), gradient clipping
and a seed. Every `checkpoint_every` iterations `last.pt` holds the models, optimizer,
schedule and RNG states, so `--resume` continues exactly; the run's final weights are
exported (fp16) for the inference core.
"""
from __future__ import annotations

import csv
import inspect
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import load_settings, short
from ..errors import ConfigError, OutputError, WeightsError
from .arch_util import ARCH_REGISTRY, build_network
from .ecnet_arch import RainAutoencoder
from .losses import attention_loss, embedding_loss, rain_mask, ssim
from .prefetch import BatchStream
from .scale import UPSAMPLERS, predict
from .synth import STYLES
from .valset import HELD_OUT, validation_batches, validation_psnr
from .weights import load_weights, save_weights, save_whole

log = logging.getLogger(__name__)
STAGES = ("autoencoder", "derain")  # in the order a run trains them
# What a trainer's last.pt holds (_save); a file without them is something else (exported weights).
CHECKPOINT_KEYS = ("stage", "step", "settings", "net", "ae", "optim", "scaler", "rng")


@dataclass(frozen=True)
class DataSettings:
    clean_dirs: list[str] = field(default_factory=lambda: ["../shared/data/clean_corpus"])
    paired: list[list[str]] = field(default_factory=list)  # [[rain_dir, clean_dir], ...], train_* sets
    paired_fraction: float = 0.5
    patch: int = 96
    rain_mix: dict = field(default_factory=lambda: {"light": 0.35, "medium": 0.35, "heavy": 0.3})
    workers: int = 0  # processes synthesising batches ahead (0: in the training process)
    jpeg: float = 0.0  # fraction of synthetic rainy patches passed through JPEG
    jpeg_quality: list[int] = field(default_factory=lambda: [60, 95])  # its quality range
    # > 1: train on synthetic clips of this many frames (motion.py), for a temporal network
    frames: int = 1
    # Every clip (or crop) rained twice (data.py), for loss.consistency
    twins: bool = False

    def problems(self) -> list[str]:
        out = []
        if self.twins and self.paired:
            out.append("twins: rains clean photos twice; a paired set has one rainy image each, drop data.paired")
        elif self.frames > 1 and self.paired:  # its clips are drawn from clean photos only: the pairs sat unused
            out.append(f"frames: {self.frames} rains clips made from clean photos; a paired set has single images, "
                       "drop data.paired")
        if self.patch < 16 or self.patch % 8:
            out.append(f"patch: must be a multiple of 8 >= 16 (got {self.patch})")
        if not self.clean_dirs and not self.paired:
            out.append("clean_dirs: empty, and no paired sets either: nothing to train on")
        unknown = sorted(set(self.rain_mix) - set(STYLES))
        if unknown:
            out.append(f"rain_mix: unknown style(s) {', '.join(unknown)}; known: {', '.join(STYLES)}")
        out += self._rain_mix_problems()
        out += [f"paired[{i}]: must be two folders, [rain_dir, clean_dir] (got {short(pair)})"
                for i, pair in enumerate(self.paired) if len(pair) != 2]
        for key in ("paired_fraction", "jpeg"):
            if not 0 <= getattr(self, key) <= 1:
                out.append(f"{key}: a fraction, must be in [0, 1] (got {getattr(self, key)})")
        q = self.jpeg_quality
        if len(q) != 2 or not 0 <= q[0] <= q[1] <= 100:
            out.append(f"jpeg_quality: must be [low, high] with 0 <= low <= high <= 100 (got {short(q)})")
        if self.workers < 0:
            out.append(f"workers: must be >= 0 (0: batches made in the training process; got {self.workers})")
        if self.frames < 1:
            out.append(f"frames: must be >= 1 (got {self.frames})")
        return out

    def _rain_mix_problems(self) -> list[str]:
        """The mix is drawn from with its weights as probabilities: they must be numbers, none
        negative, not all zero."""
        weights = list(self.rain_mix.values())
        if not weights:
            return ["rain_mix: empty; give at least one style a weight, e.g. {light: 1.0}"]
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
                   for w in weights):
            return [f"rain_mix: weights must be numbers >= 0 (got {short(self.rain_mix)})"]
        if not sum(weights) > 0:
            return [f"rain_mix: the weights sum to 0; give a style a weight > 0 (got {short(self.rain_mix)})"]
        return []


@dataclass(frozen=True)
class StageSettings:
    iters: int = 1000
    batch: int = 16
    lr: float = 1e-3
    milestones: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])  # fractions of iters
    gamma: float = 0.2
    clip: float = 5.0
    # From this fraction of the run on, BatchNorm uses its running statistics while training,
    # so the network is trained exactly as it runs at inference (1.0: never).
    freeze_bn_from: float = 1.0
    # > 0: a time budget. The stage trains for this many seconds (summed over resumes) and
    # milestones and freeze_bn_from are fractions of it; iters is then ignored. For leased
    # machines, where the time is known and the speed is not.
    seconds: float = 0.0

    def problems(self) -> list[str]:
        out = []
        if self.iters < 0 or self.batch < 1:
            out.append(f"iters must be >= 0 and batch >= 1 (got {self.iters}, {self.batch})")
        if any(not 0 < m < 1 for m in self.milestones):
            out.append(f"milestones: fractions of iters in (0, 1) (got {self.milestones})")
        for key in ("lr", "gamma", "clip"):
            if not getattr(self, key) > 0:
                out.append(f"{key}: must be > 0 (got {getattr(self, key)})")
        if self.seconds < 0:
            out.append(f"seconds: must be >= 0 (0: train for iters steps; got {self.seconds})")
        return out


@dataclass(frozen=True)
class LossWeights:
    embed: float = 0.02
    att: float = 0.1
    image: float = 1.0
    # L1 between derained and clean. Not in the thesis (0 there): SSIM barely sees a global
    # offset, so a short run leaves the rain layer's mean loose; this pins it.
    pixel: float = 0.0
    # L1 between the derained targets of one clip rained twice (data.twins): the rain, not the
    # scene, differs between them, so any difference is what a video shows as flicker. Not in
    # the thesis; the flicker it judges frame by frame is what the deflicker removes after the
    # network (MODEL.md "What is left" 2).
    consistency: float = 0.0


@dataclass(frozen=True)
class TrainSettings:
    network: dict = field(default_factory=lambda: {"type": "DerainNet", "width": 32})
    scale: float = 1.0  # < 1: the network sees a downscaled image (the fast profile)
    upsample: str = "bilinear"  # how R reaches full size when scale < 1: bilinear or guided
    profile: str = "full"
    data: DataSettings = field(default_factory=DataSettings)
    autoencoder: StageSettings = field(default_factory=lambda: StageSettings(iters=300))
    train: StageSettings = field(default_factory=StageSettings)
    loss: LossWeights = field(default_factory=LossWeights)
    seed: int = 0
    threads: int = 0  # 0: torch's default
    checkpoint_every: int = 100
    out_dir: str = "runs/train"
    export: str = ""  # where to write the final fp16 weights ("" = OUT_DIR/<profile>.pt)
    # Fine-tuning: start the deraining network from these weights (set autoencoder.iters: 0;
    # the decoder then keeps its weights instead of copying the autoencoder's).
    init: str = ""
    # Score the validation set (valset.py: held-out photos, every rain style) every this many
    # derain steps, and export the best-scoring weights as well (0: never). The held-out
    # photos are never trained on either way.
    val_every: int = 0
    # A run's autoencoder.pt to start from (with init:, keeps the embedding loss in a fine-tune).
    init_autoencoder: str = ""

    def problems(self) -> list[str]:
        problems = [] if 0 < self.scale <= 1 else [f"scale: must be in (0, 1] (got {self.scale})"]
        if self.upsample not in UPSAMPLERS:
            problems.append(f"upsample: must be one of {', '.join(UPSAMPLERS)} (got {self.upsample!r})")
        if self.loss.embed and not self.init_autoencoder and not (self.autoencoder.iters or self.autoencoder.seconds):
            # The embedding target would be an untrained autoencoder's code: noise to pull toward.
            problems.append("loss.embed: no autoencoder to embed with (autoencoder.iters: 0 and no init_autoencoder);"
                            " give init_autoencoder the run's autoencoder.pt, or set loss.embed: 0")
        if self.loss.consistency and not self.data.twins:
            problems.append("loss.consistency: compares a clip's two rain draws; set data.twins: true")
        if self.network.get("frames", 1) != self.data.frames:
            problems.append(f"data.frames: {self.data.frames} but the network sees {self.network.get('frames', 1)}"
                            " frames; make them equal")
        if self.checkpoint_every < 1:
            problems.append(f"checkpoint_every: must be >= 1 (got {self.checkpoint_every})")
        if self.threads < 0:
            problems.append(f"threads: must be >= 0 (0: torch's default; got {self.threads})")
        if self.val_every < 0:
            problems.append(f"val_every: must be >= 0 (0: never; got {self.val_every})")
        return problems + self._path_problems()

    def _path_problems(self) -> list[str]:
        """Outputs that could not be written, found now rather than when the run ends (the export)
        or at its first checkpoint; Trainer tries writing them too (permissions, full disks)."""
        out, export = Path(self.out_dir), export_path(self)
        problems = []
        for key, path in (("out_dir", out / "last.pt"), *((("export", export),) if self.export else ())):
            try:
                problems += [f"{key}: {problem}" for problem in _unwritable(path)]
                if key == "export" and path.resolve() in {(out / n).resolve() for n in ("last.pt", "autoencoder.pt")}:
                    problems.append(f"export: {path} is where the run keeps its {path.name}; give another file")
            except OSError as exc:  # a name too long, a loop of links
                problems.append(f"{key}: cannot write {path} ({exc.strerror or exc})")
        return problems


def export_path(s: TrainSettings) -> Path:
    """Where the run's final weights go: `export`, else OUT_DIR/<profile>.pt."""
    return Path(s.export) if s.export else Path(s.out_dir) / f"{s.profile}.pt"


def _unwritable(path: Path) -> list[str]:
    """Why a file could not be saved at `path`: a file where one of its folders would be, or a
    folder where it would be."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return [f"{parent} is a file, so {path} cannot be written"]
            break
    return [f"{path} is a folder; give the weights file's name, e.g. {path / 'weights.pt'}"] if path.is_dir() else []


def _try_writing(path: Path) -> None:
    """Make `path`'s folder and a file there, as saving it will (its .tmp), and leave nothing new."""
    tmp = path.with_name(path.name + ".tmp")
    existed = tmp.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "ab"):
        pass
    if not existed:
        tmp.unlink()


class Trainer:
    """Owns the models, optimizers and sampler of one run; `run()` trains both stages."""

    def __init__(self, settings: TrainSettings, resume: bool = False, progress: bool = True,
                 source: str = "<settings>"):
        self.s = settings
        self.out = Path(settings.out_dir)
        # `source` (the config file) is what a ConfigError names.
        export_key = "export" if settings.export else "out_dir"
        for key, path in (("out_dir", self.out / "last.pt"), (export_key, export_path(settings))):
            try:
                _try_writing(path)
            except OSError as exc:
                raise ConfigError(f"{source}: {key}: cannot write {path} ({exc.strerror or exc})") from None
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if settings.threads:
            torch.set_num_threads(settings.threads)
        torch.manual_seed(settings.seed)
        random.seed(settings.seed)
        self.progress = progress
        self.net = build_network(settings.network).to(self.device)
        width = getattr(self.net, "width", 32)
        if settings.init:
            self.net.load_state_dict(load_weights(settings.init).net.state_dict())
        self.ae = RainAutoencoder(width)
        if settings.init_autoencoder:
            if not Path(settings.init_autoencoder).is_file():
                # runs/ is not kept with the repository: a fine-tune written for one machine's run
                raise WeightsError(f"{settings.init_autoencoder}: init_autoencoder file not found"
                                   " (a run's autoencoder.pt; without one, set loss.embed: 0 and drop the key)")
            state = torch.load(settings.init_autoencoder, map_location="cpu", weights_only=True)
            self.ae.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        self.ae.to(self.device)
        d = settings.data
        self.batches = BatchStream((d.clean_dirs, [tuple(p) for p in d.paired], d.patch, d.rain_mix,
                                    d.paired_fraction, d.jpeg, tuple(d.jpeg_quality), d.frames, HELD_OUT, d.twins),
                                   settings.seed, d.workers)
        self._say_skipped(self.batches.sampler)
        if not resume and (self.out / "last.pt").exists():  # hours of training, written over by a typo
            self.batches.close()
            raise ConfigError(f"{source}: out_dir: {self.out} holds a run's last.pt; pass --resume to go on with "
                              "it, give another out_dir, or remove that run to start over")
        self.val = validation_batches(d.clean_dirs, d.frames) if settings.val_every else []
        self.best = -float("inf")
        self.stage, self.step, self.elapsed = "autoencoder", 0, 0.0
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch size: let cuDNN pick its fastest convs
            self.net.to(memory_format=torch.channels_last)
            self.ae.to(memory_format=torch.channels_last)
        self._new_optim(self.ae, settings.autoencoder)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda")
        if resume:
            self._load(self.out / "last.pt")

    def _say_skipped(self, sampler) -> None:
        kept = {"clean": len(sampler.clean), "paired": len(sampler.pairs)}
        for key, what in (("clean", "clean_dirs: %d of %d photos"), ("paired", "paired: %d of %d pairs")):
            if sampler.skipped[key]:
                log.warning("data." + what + " are smaller than data.patch %d and left out", sampler.skipped[key],
                            sampler.skipped[key] + kept[key], self.s.data.patch)

    # -- state -------------------------------------------------------------
    def _new_optim(self, model: nn.Module, st: StageSettings) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        self.optim = torch.optim.Adam(params, lr=st.lr, fused=self.device.type == "cuda")

    def _progress(self, st: StageSettings) -> float:
        """How far the stage is, 0..1: by seconds trained when it has a time budget, else by steps."""
        if st.seconds:
            return self.elapsed / st.seconds
        return self.step / st.iters if st.iters else 1.0

    def _set_lr(self, st: StageSettings) -> float:
        """The step schedule in closed form (lr x gamma per milestone passed), so a resumed
        run, even one asking for a different length, is always on the right step."""
        if st.seconds:
            passed = sum(self._progress(st) >= m for m in st.milestones)
        else:
            passed = sum(self.step >= max(1, int(m * st.iters)) for m in st.milestones)
        lr = st.lr * st.gamma**passed
        for group in self.optim.param_groups:
            group["lr"] = lr
        return lr

    def _save(self) -> None:
        state = {
            "stage": self.stage, "step": self.step, "elapsed": self.elapsed, "settings": asdict(self.s),
            "net": self.net.state_dict(), "ae": self.ae.state_dict(),
            "optim": self.optim.state_dict(), "best": self.best,
            "scaler": self.scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        }
        save_whole(state, self.out / "last.pt")

    def _load(self, path: Path) -> None:
        if not path.is_file():
            raise ConfigError(f"{path}: no checkpoint to resume from")
        state = read_checkpoint(path, self.device)
        made, asked = _network_spec(state["settings"].get("network", {})), _network_spec(self.s.network)
        if made != asked:
            raise WeightsError(f"{path}: made for network {_describe(made, asked)}, the config asks "
                               f"{_describe(asked, made)}; resume with the network it was made with")
        try:
            self.net.load_state_dict(state["net"])
            self.ae.load_state_dict(state["ae"])
            self.stage, self.step, self.elapsed = state["stage"], state["step"], state.get("elapsed", 0.0)
            self.best = max(state.get("best", -float("inf")), self._best_on_disk())
            if self.stage == "derain":
                self._enter_derain_stage(init_decoder=False)
            self.optim.load_state_dict(state["optim"])
            self.scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng"]["torch"].cpu())  # map_location moved it
            random.setstate(state["rng"]["python"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise WeightsError(f"{path}: does not fit network {self.s.network}"
                               f" ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]})") from None
        _trim_logs(self.out, self.stage, self.step)

    def _enter_derain_stage(self, init_decoder: bool) -> None:
        if init_decoder:
            # The two decoders share their layout, so the autoencoder's weights fit one-to-one.
            self.net.decoder.load_state_dict(self.ae.decoder.state_dict())
        self.ae.eval().requires_grad_(False)
        self.stage = "derain"
        self._new_optim(self.net, self.s.train)

    # -- loop ----------------------------------------------------------------
    def _batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        rainy, clean = self.batches.next(int(self.stage == "derain"), self.step, n)
        fmt = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format

        def put(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a).to(self.device, non_blocking=True).contiguous(memory_format=fmt)

        return put(rainy), put(clean)

    def _autocast(self):
        """fp16 for the networks on CUDA; the losses stay fp32 (SSIM's variances need it)."""
        return torch.autocast(self.device.type, enabled=self.device.type == "cuda")

    def _ae_loss(self, rainy: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        rain = self._small(rainy[:, :3] - clean)
        with self._autocast():
            rebuilt = self.ae(rain)
        return {"loss": torch.nn.functional.mse_loss(rebuilt.float(), rain)}

    def _small(self, x: torch.Tensor) -> torch.Tensor:
        if self.s.scale == 1.0:
            return x
        return torch.nn.functional.interpolate(x, scale_factor=self.s.scale, mode="bilinear",
                                               align_corners=False, antialias=True)

    def _derain_loss(self, rainy: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        w = self.s.loss
        target = rainy[:, :3]  # a temporal window's target frame comes first
        with self._autocast():
            out = predict(self.net, rainy, self.s.scale, self.s.upsample)
            with torch.no_grad():
                z_ideal = self.ae.encode(self._small(target - clean))
        derained = (target - out.rain.float()).clamp(0, 1)
        l_image = -ssim(derained, clean, valid=False).mean()
        l_embed = embedding_loss(out.embedding, z_ideal)
        l_att = attention_loss(out.attention, rain_mask(self._small(target), self._small(clean)))
        loss = w.embed * l_embed + w.att * l_att + w.image * l_image
        if w.pixel:
            loss = loss + w.pixel * torch.nn.functional.l1_loss(derained, clean)
        terms = {"loss": loss, "ssim": -l_image, "embed": l_embed, "att": l_att}
        if self.s.data.twins:
            first, second = derained.chunk(2)  # one clip's two rain draws (data.py)
            terms["consist"] = torch.nn.functional.l1_loss(first, second)
            terms["loss"] = loss + w.consistency * terms["consist"]
        return terms

    def _logged(self) -> tuple[str, ...]:
        """log.csv's columns after the lr: the twins' distance only where there are twins, so a
        run resumed from before it was logged keeps the columns its header has."""
        return ("loss", "ssim", "embed", "att", *(("consist",) if self.s.data.twins else ()))

    def _stage_settings(self) -> StageSettings:
        return self.s.autoencoder if self.stage == "autoencoder" else self.s.train

    def _done(self, st: StageSettings) -> bool:
        return self.elapsed >= st.seconds if st.seconds else self.step >= st.iters

    def run(self, max_seconds: float | None = None) -> Path:
        """Train to the end, or until this call has run `max_seconds` (then checkpoint and stop:
        `--resume` goes on). Either way the current weights are exported; returns their path."""
        from tqdm import tqdm

        started = time.monotonic()
        try:
            self._loop(tqdm, started, max_seconds)
        finally:
            self.batches.close()
        export = export_path(self.s)
        self._export(export)
        # The autoencoder too (fp16, small), so a later fine-tune elsewhere keeps the embedding loss.
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in self.ae.state_dict().items()},
                   self.out / "autoencoder.pt")
        return export

    def _export(self, path: Path, **meta) -> None:
        save_weights(self.net, path, profile=self.s.profile, scale=self.s.scale, upsample=self.s.upsample,
                     network=self.s.network, meta={"iters": self.step, "stage": self.stage,
                                                   "seconds": round(self.elapsed), "seed": self.s.seed, **meta})

    def _best_on_disk(self) -> float:
        """The score of the best weights already written: a run stopped after writing them and
        before its next checkpoint, whose score then went back to the checkpoint's (a worse one
        was kept as best after the resume)."""
        try:
            blob = torch.load(self.out / f"{self.s.profile}-best.pt", map_location="cpu", weights_only=True)
            return float(blob["meta"]["val_psnr"])
        except Exception:  # noqa: BLE001 - none, or unreadable: the checkpoint's score stands
            return -float("inf")

    def _validate(self) -> None:
        """Score the held-out set; keep the best weights as <profile>-best.pt (the ones to ship)."""
        score = validation_psnr(self.net, self.val, self.device, self.s.scale, self.s.upsample)
        with open(self.out / "val.csv", "a") as fh:
            fh.write(f"{self.step},{round(self.elapsed)},{score:.4f}\n")
        if score > self.best:
            self.best = score
            self._export(self.out / f"{self.s.profile}-best.pt", val_psnr=round(score, 4))

    def _loop(self, tqdm, started: float, max_seconds: float | None) -> None:
        log_path = self.out / "log.csv"
        new_log = not log_path.exists()
        with open(log_path, "a", newline="") as fh:
            log = csv.writer(fh)
            if new_log:
                log.writerow(["time", "stage", "step", "lr", *self._logged()])
            while True:
                st = self._stage_settings()
                if self._done(st):
                    if self.stage == "derain":
                        break
                    self._enter_derain_stage(init_decoder=not self.s.init)
                    self.step, self.elapsed = 0, 0.0
                    continue
                model = self.ae if self.stage == "autoencoder" else self.net
                model.train()
                loss_fn = self._ae_loss if self.stage == "autoencoder" else self._derain_loss
                bar = tqdm(total=None if st.seconds else st.iters, initial=self.step, desc=self.stage,
                           disable=not self.progress, dynamic_ncols=True)
                running = None
                if self.val and self.stage == "derain" and self.step == 0 and self.s.init:
                    # A fine-tune's starting weights are its step 0: a checkpoint it exports as best
                    # has beaten them on the validation set (else the best is the start itself).
                    self._validate()
                while not self._done(st):
                    tick = time.monotonic()
                    if self._progress(st) >= st.freeze_bn_from:
                        for m in model.modules():
                            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                                m.eval()
                    lr = self._set_lr(st)
                    rainy, clean = self._batch(st.batch)
                    terms = loss_fn(rainy, clean)
                    self.optim.zero_grad(set_to_none=True)
                    self.scaler.scale(terms["loss"]).backward()
                    self.scaler.unscale_(self.optim)
                    nn.utils.clip_grad_norm_(model.parameters(), st.clip)
                    self.scaler.step(self.optim)
                    self.scaler.update()
                    self.step += 1
                    # One device sync per step for all the logged terms, not one per term.
                    vals = dict(zip(terms, torch.stack([v.detach().float() for v in terms.values()]).tolist()))
                    self.elapsed += time.monotonic() - tick
                    running = vals["loss"] if running is None else 0.95 * running + 0.05 * vals["loss"]
                    bar.update(1)
                    bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.1e}",
                                    **({"done": f"{self._progress(st):.1%}"} if st.seconds else {}))
                    log.writerow([f"{time.time():.1f}", self.stage, self.step, lr,
                                  *(f"{vals.get(k, float('nan')):.5f}" for k in self._logged())])
                    out_of_time = max_seconds is not None and time.monotonic() - started >= max_seconds
                    if self.val and self.stage == "derain" and (self.step % self.s.val_every == 0 or self._done(st)):
                        self._validate()
                    if self.step % self.s.checkpoint_every == 0 or self._done(st) or out_of_time:
                        fh.flush()
                        self._save()
                    if out_of_time:
                        bar.close()
                        return
                bar.close()


def read_checkpoint(path: Path, device: str | torch.device = "cpu") -> dict:
    """A trainer's last.pt, unpickled with weights_only: it holds tensors, numbers, strings and
    plain containers only (the settings as a mapping, Python's RNG state as a tuple), so that
    is all a file is allowed to hold, and a crafted one runs no code here."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt zip, a foreign pickle: the same to the user
        raise WeightsError(f"{path}: not a training checkpoint (a run's last.pt; {type(exc).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and "format" in state:
        raise WeightsError(f"{path}: exported weights, not a training checkpoint (a run's last.pt)")
    missing = [k for k in CHECKPOINT_KEYS if k not in state] if isinstance(state, dict) else ["all of it"]
    if missing or not isinstance(state["settings"], dict):
        missing = ", ".join(missing) or "settings"
        raise WeightsError(f"{path}: not a training checkpoint (a run's last.pt; no {missing})")
    return state


def _network_spec(spec: dict) -> dict:
    """A network spec with its class's defaults filled in: {type: DerainNet} is DerainNet width 32."""
    spec = dict(spec)
    cls = ARCH_REGISTRY.get(spec.get("type"))
    for name, param in (inspect.signature(cls).parameters.items() if cls else ()):
        if param.default is not inspect.Parameter.empty:
            spec.setdefault(name, param.default)
    return spec


def _describe(spec: dict, other: dict) -> str:
    """"DerainNet width 32", and where the types agree the other keys that differ ("frames 5")."""
    same_type = spec.get("type") == other.get("type")
    extra = [f"{k} {v}" for k, v in spec.items() if same_type and k not in ("type", "width") and other.get(k) != v]
    return " ".join([str(spec.get("type")), f"width {spec.get('width')}", *extra])


def _trim_logs(out: Path, stage: str, step: int) -> None:
    """Keep the log rows up to the checkpoint being resumed: an interrupted run logged steps past
    it, which the resumed run trains and logs again. Rows cut short by a kill go too."""
    at = (STAGES.index(stage), step)

    def logged(row: list[str]) -> bool:
        return row[1] in STAGES and row[2].isdigit() and (STAGES.index(row[1]), int(row[2])) <= at

    _keep_rows(out / "log.csv", lambda i, row: i == 0 or (len(row) >= 4 and logged(row)), "\r\n")
    # val.csv: step,seconds,psnr of the derain stage
    _keep_rows(out / "val.csv", lambda i, row: len(row) == 3 and row[0].isdigit() and
               (STAGES.index("derain"), int(row[0])) <= at, "\n")


def _keep_rows(path: Path, keep, newline: str) -> None:
    if not path.is_file():
        return
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    kept = [row for i, row in enumerate(rows) if keep(i, row)]
    if len(kept) < len(rows):
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as fh:
            csv.writer(fh, lineterminator=newline).writerows(kept)
        tmp.replace(path)


def _check_output(out: Path, checkpoint: Path, overwrite: bool) -> None:
    if out.exists() and os.path.samefile(out, checkpoint):
        raise OutputError(f"{out}: is the checkpoint being exported; write the weights to another file")
    if why := _unwritable(out):
        raise OutputError(why[0])
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: exists; pass --overwrite to replace it")


def export_checkpoint(checkpoint: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the fp16 weights of a training checkpoint (`last.pt`), e.g. to evaluate a run mid-way.
    Never over the checkpoint itself, nor over another file unless `overwrite`."""
    path, out = Path(checkpoint), Path(out)
    if not path.is_file():
        raise ConfigError(f"{path}: checkpoint not found")
    try:
        _check_output(out, path, overwrite)
    except OutputError:
        raise
    except OSError as exc:  # a name too long, a loop of links
        raise OutputError(f"{out}: cannot write the weights ({exc.strerror or exc})") from None
    state = read_checkpoint(path)
    s = state["settings"]
    try:
        net = build_network(s["network"])
        net.load_state_dict(state["net"])
    except (ConfigError, RuntimeError, KeyError, TypeError) as exc:
        raise WeightsError(f"{path}: not a training checkpoint (a run's last.pt; {type(exc).__name__})") from None
    try:
        save_weights(net, out, profile=s["profile"], scale=s["scale"], upsample=s.get("upsample", "bilinear"),
                     network=s["network"], meta={"step": state["step"], "stage": state["stage"], "seed": s["seed"]})
    except OSError as exc:
        raise OutputError(f"{out}: cannot write the weights ({exc.strerror or exc})") from None
    return out


def train(config: str, resume: bool = False, overrides: dict | None = None, progress: bool = True,
          max_seconds: float | None = None) -> Path:
    """Train from a YAML config (dotted-key `overrides` win); returns the exported weights' path."""
    settings = load_settings(TrainSettings, config, overrides)
    source = str(config) if isinstance(config, (str, Path)) and config else "<flags>"
    return Trainer(settings, resume=resume, progress=progress, source=source).run(max_seconds)
