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
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import load_settings
from ..errors import ConfigError
from .arch_util import build_network
from .data import PatchSampler
from .ecnet_arch import RainAutoencoder
from .losses import attention_loss, embedding_loss, rain_mask, ssim
from .scale import predict
from .weights import save_weights


@dataclass(frozen=True)
class DataSettings:
    clean_dirs: list[str] = field(default_factory=lambda: ["../shared/data/clean_corpus"])
    paired: list[list[str]] = field(default_factory=list)  # [[rain_dir, clean_dir], ...], train_* sets
    paired_fraction: float = 0.5
    patch: int = 96
    rain_mix: dict = field(default_factory=lambda: {"light": 0.35, "medium": 0.35, "heavy": 0.3})

    def problems(self) -> list[str]:
        out = []
        if self.patch < 16 or self.patch % 8:
            out.append(f"data.patch: must be a multiple of 8 >= 16 (got {self.patch})")
        if not self.clean_dirs and not self.paired:
            out.append("data: needs clean_dirs or paired")
        return out


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

    def problems(self) -> list[str]:
        out = []
        if self.iters < 0 or self.batch < 1:
            out.append(f"iters must be >= 0 and batch >= 1 (got {self.iters}, {self.batch})")
        if any(not 0 < m < 1 for m in self.milestones):
            out.append(f"milestones: fractions of iters in (0, 1) (got {self.milestones})")
        return out


@dataclass(frozen=True)
class LossWeights:
    embed: float = 0.02
    att: float = 0.1
    image: float = 1.0
    # L1 between derained and clean. Not in the thesis (0 there): SSIM barely sees a global
    # offset, so a short run leaves the rain layer's mean loose; this pins it.
    pixel: float = 0.0


@dataclass(frozen=True)
class TrainSettings:
    network: dict = field(default_factory=lambda: {"type": "DerainNet", "width": 32})
    scale: float = 1.0  # < 1: the network sees a downscaled image (the fast profile)
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

    def problems(self) -> list[str]:
        return [] if 0 < self.scale <= 1 else [f"scale: must be in (0, 1] (got {self.scale})"]


class Trainer:
    """Owns the models, optimizers and sampler of one run; `run()` trains both stages."""

    def __init__(self, settings: TrainSettings, resume: bool = False, progress: bool = True):
        self.s = settings
        self.out = Path(settings.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if settings.threads:
            torch.set_num_threads(settings.threads)
        torch.manual_seed(settings.seed)
        random.seed(settings.seed)
        self.rng = np.random.default_rng(settings.seed)
        self.progress = progress
        self.net = build_network(settings.network).to(self.device)
        width = getattr(self.net, "width", 32)
        self.ae = RainAutoencoder(width).to(self.device)
        d = settings.data
        self.sampler = PatchSampler(d.clean_dirs, [tuple(p) for p in d.paired], d.patch, d.rain_mix,
                                    d.paired_fraction, self.rng)
        self.stage, self.step = "autoencoder", 0
        self._new_optim(self.ae, settings.autoencoder)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda")
        if resume:
            self._load(self.out / "last.pt")

    # -- state -------------------------------------------------------------
    def _new_optim(self, model: nn.Module, st: StageSettings) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        self.optim = torch.optim.Adam(params, lr=st.lr)

    def _set_lr(self, st: StageSettings) -> float:
        """The step schedule in closed form (lr x gamma per milestone passed), so a resumed
        run, even one asking for a different length, is always on the right step."""
        passed = sum(self.step >= max(1, int(m * st.iters)) for m in st.milestones)
        lr = st.lr * st.gamma**passed
        for group in self.optim.param_groups:
            group["lr"] = lr
        return lr

    def _save(self) -> None:
        state = {
            "stage": self.stage, "step": self.step, "settings": asdict(self.s),
            "net": self.net.state_dict(), "ae": self.ae.state_dict(),
            "optim": self.optim.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": self.rng.bit_generator.state,
                    "python": random.getstate()},
        }
        tmp = self.out / "last.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.out / "last.pt")  # atomic: a crash mid-save keeps the previous checkpoint

    def _load(self, path: Path) -> None:
        if not path.is_file():
            raise ConfigError(f"{path}: no checkpoint to resume from")
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.net.load_state_dict(state["net"])
        self.ae.load_state_dict(state["ae"])
        self.stage, self.step = state["stage"], state["step"]
        if self.stage == "derain":
            self._enter_derain_stage(init_decoder=False)
        self.optim.load_state_dict(state["optim"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        self.rng.bit_generator.state = state["rng"]["numpy"]
        random.setstate(state["rng"]["python"])

    def _enter_derain_stage(self, init_decoder: bool) -> None:
        if init_decoder:
            # The two decoders share their layout, so the autoencoder's weights fit one-to-one.
            self.net.decoder.load_state_dict(self.ae.decoder.state_dict())
        self.ae.eval().requires_grad_(False)
        self.stage = "derain"
        self._new_optim(self.net, self.s.train)

    # -- loop ----------------------------------------------------------------
    def _batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        rainy, clean = self.sampler.batch(n)
        return (torch.from_numpy(rainy).to(self.device, non_blocking=True),
                torch.from_numpy(clean).to(self.device, non_blocking=True))

    def _ae_loss(self, rainy: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        rain = self._small(rainy - clean)
        return {"loss": torch.nn.functional.mse_loss(self.ae(rain), rain)}

    def _small(self, x: torch.Tensor) -> torch.Tensor:
        if self.s.scale == 1.0:
            return x
        return torch.nn.functional.interpolate(x, scale_factor=self.s.scale, mode="bilinear",
                                               align_corners=False, antialias=True)

    def _derain_loss(self, rainy: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        w = self.s.loss
        out = predict(self.net, rainy, self.s.scale)
        with torch.no_grad():
            z_ideal = self.ae.encode(self._small(rainy - clean))
        derained = (rainy - out.rain.float()).clamp(0, 1)
        l_image = -ssim(derained, clean, valid=False).mean()
        l_embed = embedding_loss(out.embedding, z_ideal)
        l_att = attention_loss(out.attention, rain_mask(self._small(rainy), self._small(clean)))
        loss = w.embed * l_embed + w.att * l_att + w.image * l_image
        if w.pixel:
            loss = loss + w.pixel * torch.nn.functional.l1_loss(derained, clean)
        return {"loss": loss, "ssim": -l_image, "embed": l_embed, "att": l_att}

    def _stage_settings(self) -> StageSettings:
        return self.s.autoencoder if self.stage == "autoencoder" else self.s.train

    def run(self) -> Path:
        from tqdm import tqdm

        log_path = self.out / "log.csv"
        new_log = not log_path.exists()
        with open(log_path, "a", newline="") as fh:
            log = csv.writer(fh)
            if new_log:
                log.writerow(["time", "stage", "step", "lr", "loss", "ssim", "embed", "att"])
            while True:
                st = self._stage_settings()
                if self.step >= st.iters:
                    if self.stage == "derain":
                        break
                    self._enter_derain_stage(init_decoder=True)
                    self.step = 0
                    continue
                model = self.ae if self.stage == "autoencoder" else self.net
                model.train()
                loss_fn = self._ae_loss if self.stage == "autoencoder" else self._derain_loss
                bar = tqdm(total=st.iters, initial=self.step, desc=self.stage, disable=not self.progress,
                           dynamic_ncols=True)
                running = None
                while self.step < st.iters:
                    if self.step >= st.freeze_bn_from * st.iters:
                        for m in model.modules():
                            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                                m.eval()
                    lr = self._set_lr(st)
                    rainy, clean = self._batch(st.batch)
                    with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
                        terms = loss_fn(rainy, clean)
                    self.optim.zero_grad(set_to_none=True)
                    self.scaler.scale(terms["loss"]).backward()
                    self.scaler.unscale_(self.optim)
                    nn.utils.clip_grad_norm_(model.parameters(), st.clip)
                    self.scaler.step(self.optim)
                    self.scaler.update()
                    self.step += 1
                    vals = {k: float(v.detach()) for k, v in terms.items()}
                    running = vals["loss"] if running is None else 0.95 * running + 0.05 * vals["loss"]
                    bar.update(1)
                    bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.1e}")
                    log.writerow([f"{time.time():.1f}", self.stage, self.step, lr,
                                  *(f"{vals.get(k, float('nan')):.5f}" for k in ("loss", "ssim", "embed", "att"))])
                    if self.step % self.s.checkpoint_every == 0 or self.step == st.iters:
                        fh.flush()
                        self._save()
                bar.close()
        export = Path(self.s.export) if self.s.export else self.out / f"{self.s.profile}.pt"
        save_weights(self.net, export, profile=self.s.profile, scale=self.s.scale,
                     network=self.s.network, meta={"iters": self.s.train.iters, "seed": self.s.seed})
        return export


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the fp16 weights of a training checkpoint (`last.pt`), e.g. to evaluate a run mid-way."""
    path = Path(checkpoint)
    if not path.is_file():
        raise ConfigError(f"{path}: checkpoint not found")
    state = torch.load(path, map_location="cpu", weights_only=False)
    s = state["settings"]
    net = build_network(s["network"])
    net.load_state_dict(state["net"])
    save_weights(net, out, profile=s["profile"], scale=s["scale"], network=s["network"],
                 meta={"step": state["step"], "stage": state["stage"], "seed": s["seed"]})
    return Path(out)


def train(config: str, resume: bool = False, overrides: dict | None = None, progress: bool = True) -> Path:
    """Train from a YAML config; returns the path of the exported weights."""
    settings = load_settings(TrainSettings, config, overrides)
    return Trainer(settings, resume=resume, progress=progress).run()
