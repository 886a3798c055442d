"""An estimator-like image classifier: ``Classifier(config).fit(X, y).predict(X)``.

``X`` is uint8 RGB pixels ``(N, H, W, 3)`` (what the preprocessing cache returns), or a
callable ``epoch -> pixels`` when every epoch sees a fresh augmentation of the same
images in the same order. The model is fed through ``core.training.model.to_input``.

Reproducible on the CPU: a fixed ``TrainConfig.seed`` fixes the initial weights, the batch
order and dropout. With a ``checkpoint_dir`` the classifier writes ``last.safetensors``
after every epoch (model, optimizer, RNG states, history) and ``best.safetensors`` when the
validation loss improves; ``fit`` finds them and resumes where a killed process stopped.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from core.training.checkpoint import (BEST_FILE, LAST_FILE, Checkpoint, CheckpointWriter,
                                      checkpoint_snapshot, load_checkpoint, save_checkpoint)
from core.training.model import ModelSpec, build_from_spec, initialise, to_input
from core.training.protocols import INIT_SCHEMES, OPTIMIZERS, SELECT_RULES
from core.training.speed import cpu_settings, load_optimizer_state, make_fast_optimizer

# The numbers a training run may take. The Train page's inputs use these bounds and
# TrainConfig refuses anything outside them (NaN and infinities included), so the page, the
# CLI and a stored run agree.
EPOCHS_MAX = 500
LR_MIN, LR_MAX = 1e-6, 1.0
BATCH_SIZE_MAX = 1024
WEIGHT_DECAY_MAX = 1.0
IMAGE_SIZE_MIN, IMAGE_SIZE_MAX = 16, 512
PATIENCE_MAX = 100
# Images per forward pass when evaluating on the CPU (validation, test sets, predictions).
EVAL_BATCH_CPU = 32

PixelSource = np.ndarray | Callable[[int], np.ndarray]
EpochCallback = Callable[[dict[str, Any], list[dict[str, Any]]], None]
BatchCallback = Callable[[int, int], None]


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run; stored with the run and its checkpoints."""

    model: str = "small"  # small (the reference CNN) | deep
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 1e-4
    # Stop when the validation loss has not improved for this many epochs (0: never).
    patience: int = 3
    seed: int = 0
    device: str = "auto"  # auto | cuda | mps | cpu
    mixed_precision: bool = True  # autocast on CUDA only; the CPU always trains in float32
    image_size: int = 64
    widths: dict[str, Any] = field(default_factory=dict)  # passed to build_model
    # Epochs of the second phase of pretrain-finetune (the first phase uses ``epochs``).
    finetune_epochs: int | None = None
    finetune_lr: float | None = None
    optimizer: str = "adamw"  # adamw | adam (the original study: plain Adam, no weight decay)
    init: str = "default"  # default (PyTorch's) | xavier (uniform weights, zero biases)
    # Which weights the run keeps: those of the best validation epoch, or the last epoch's.
    select: str = "best-val"  # best-val | last
    # Deterministic kernels (torch.use_deterministic_algorithms, cuDNN without autotuning):
    # the same seed gives the same weights on a GPU too, at some cost in speed.
    deterministic: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.init not in INIT_SCHEMES:
            raise ValueError(f"unknown init {self.init!r}; choose one of {', '.join(INIT_SCHEMES)}")
        if self.select not in SELECT_RULES:
            raise ValueError(f"unknown weight selection {self.select!r}; choose one of "
                             f"{', '.join(SELECT_RULES)}")
        # Always, a stored run included: numbers that are numbers (NaN or an infinity can
        # only train a model of NaNs) at or above the lower bounds runs have always had.
        self._check_numbers(within_limits=False)

    def check_limits(self) -> None:
        """Refuse numbers outside the Train page's bounds, with one clear sentence.

        Every new request is held to them (``ExperimentRequest`` calls this); a stored run
        is not, as it may predate them and must still load (resume, Explain).
        """
        self._check_numbers(within_limits=True)

    def _check_numbers(self, *, within_limits: bool) -> None:
        # name, value, the page's bounds, whole number?, the lowest value a stored run has
        checks: list[tuple[str, Any, float, float, bool, float]] = [
            ("epochs", self.epochs, 1, EPOCHS_MAX, True, 1),
            ("lr", self.lr, LR_MIN, LR_MAX, False, math.ulp(0.0)),  # lr > 0
            ("batch_size", self.batch_size, 1, BATCH_SIZE_MAX, True, 1),
            ("weight_decay", self.weight_decay, 0.0, WEIGHT_DECAY_MAX, False, 0.0),
            ("patience", self.patience, 0, PATIENCE_MAX, True, 0),
            ("image_size", self.image_size, IMAGE_SIZE_MIN, IMAGE_SIZE_MAX, True, 8)]
        if self.finetune_epochs is not None:
            checks.append(("finetune_epochs", self.finetune_epochs, 1, EPOCHS_MAX, True, 1))
        if self.finetune_lr is not None:
            checks.append(("finetune_lr", self.finetune_lr, LR_MIN, LR_MAX, False, math.ulp(0.0)))
        for name, value, low, high, whole, lowest in checks:
            if not _is_number(value, whole) or not (
                    low <= value <= high if within_limits else value >= lowest):
                kind = "a whole number" if whole else "a number"
                raise ValueError(f"{name} must be {kind} from {low:g} to {high:g}, not {value!r}")
        # No upper bound: repeats use seed, seed + 1, ...; negative seeds break numpy's RNG.
        if not _is_number(self.seed, whole=True) or (within_limits and self.seed < 0):
            raise ValueError(f"seed must be a whole number >= 0, not {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


def _is_number(value: Any, whole: bool) -> bool:
    """A whole number (bools excluded), or a finite real."""
    if isinstance(value, bool):
        return False
    if whole:
        return isinstance(value, numbers.Integral)
    return isinstance(value, numbers.Real) and math.isfinite(value)


def resolve_device(wanted: str) -> torch.device:
    if wanted in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if wanted in ("auto", "mps") and getattr(torch.backends, "mps", None) \
            and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _rng_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "shuffle": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _restore_rng(state: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "shuffle" in state:
        generator.set_state(state["shuffle"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def make_optimizer(name: str, parameters: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """``adamw`` (decoupled weight decay) or ``adam`` (plain Adam; its weight decay, if any,
    is the classic L2 term added to the gradient), in their fused implementation."""
    if name == "adamw":
        return make_fast_optimizer(torch.optim.AdamW, parameters, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return make_fast_optimizer(torch.optim.Adam, parameters, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the duration of a fit, restored afterwards (the switches are
    process-wide and a worker runs other jobs after this one)."""
    if not enabled:
        yield
        return
    # cuBLAS reads this when its first handle is made; set before any CUDA matmul runs.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[2], previous[3]


class Classifier:
    """A CNN image classifier with scikit-learn's fit/predict_proba/predict."""

    def __init__(self, config: TrainConfig | None = None, *, class_names: list[str] | None = None,
                 checkpoint_dir: Path | None = None, info: dict[str, Any] | None = None,
                 on_epoch: EpochCallback | None = None, on_batch: BatchCallback | None = None,
                 tmp_dir: Path | None = None, threads: int | None = None) -> None:
        self.config = config or TrainConfig()
        self.class_names = list(class_names or [])
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.info = dict(info or {})  # stored in every checkpoint (pipelines, data spec, ...)
        self.on_epoch = on_epoch
        self.on_batch = on_batch
        self.tmp_dir = tmp_dir
        # torch threads during fit (None: as they are; core.training.speed.choose_threads).
        self.threads = threads
        self.device = resolve_device(self.config.device)
        self.model_: nn.Module | None = None
        self.history_: list[dict[str, Any]] = []
        self.phases_done_: list[str] = []
        self.resumed_from_: dict[str, int] | None = None
        self.best_: dict[str, Any] = {}  # {"val_loss", "epoch"} of the weights kept, last phase

    @property
    def random_state(self) -> int:
        return self.config.seed

    # --- fitting ---------------------------------------------------------------------

    def _spec(self, num_classes: int) -> ModelSpec:
        return ModelSpec(self.config.model, num_classes, self.config.image_size, dict(self.config.widths))

    def _checkpoint_info(self, phase: str, epoch: int, best: dict[str, Any]) -> dict[str, Any]:
        return {**self.info, "model_spec": self._spec(len(self.class_names)).to_dict(),
                "class_names": self.class_names, "train_config": self.config.to_dict(),
                "phase": phase, "epoch": epoch, "phases_done": list(self.phases_done_),
                "history": self.history_, "best": best}

    def _load_last(self) -> Checkpoint | None:
        if self.checkpoint_dir is None or not (self.checkpoint_dir / LAST_FILE).is_file():
            return None
        checkpoint = load_checkpoint(self.checkpoint_dir / LAST_FILE)
        saved = checkpoint.info.get("train_config", {})
        if saved.get("seed") != self.config.seed or saved.get("model") != self.config.model:
            raise ValueError(f"{self.checkpoint_dir} holds a checkpoint of a different run "
                             f"(seed {saved.get('seed')}, model {saved.get('model')})")
        return checkpoint

    def fit(self, X: PixelSource, y: np.ndarray | list[int], *,
            validation: tuple[np.ndarray, np.ndarray | list[int]] | None = None,
            phase: str = "train", epochs: int | None = None, lr: float | None = None,
            warm_start: bool = False) -> "Classifier":
        """Train on ``X``/``y``; early-stop on ``validation`` loss; keep the best weights.

        ``phase`` names this call (``pretrain`` then ``finetune`` for two-phase training,
        with ``warm_start=True`` on the second so it continues from the first's weights).
        """
        with deterministic_algorithms(self.config.deterministic), cpu_settings(self.threads):
            return self._fit(X, y, validation=validation, phase=phase, epochs=epochs, lr=lr,
                             warm_start=warm_start)

    def _fit(self, X: PixelSource, y: np.ndarray | list[int], *,
             validation: tuple[np.ndarray, np.ndarray | list[int]] | None,
             phase: str, epochs: int | None, lr: float | None, warm_start: bool) -> "Classifier":
        y = np.asarray(y, dtype=np.int64)
        if len(y) == 0:
            raise ValueError("no training images")
        if not self.class_names:
            self.class_names = [str(k) for k in range(int(y.max()) + 1)]
        num_classes = len(self.class_names)
        if y.min() < 0 or y.max() >= num_classes:
            raise ValueError("labels must be in [0, number of classes)")
        epochs = epochs or self.config.epochs
        lr = lr or self.config.lr
        config = self.config

        torch.manual_seed(config.seed)
        if self.model_ is None or not warm_start:
            self.model_ = initialise(build_from_spec(self._spec(num_classes)), config.init)
        # Channels-last: max-pooling cost more than the convolutions in NCHW (issue 14).
        model = self.model_.to(self.device, memory_format=torch.channels_last)
        optimizer = make_optimizer(config.optimizer, model.parameters(), lr, config.weight_decay)
        shuffle = torch.Generator().manual_seed(config.seed + 7919 * len(self.phases_done_))
        best = {"val_loss": math.inf, "epoch": 0}
        start_epoch = 1

        checkpoint = self._load_last()
        if checkpoint is not None:
            self.phases_done_ = list(checkpoint.info.get("phases_done", []))
            self.history_ = list(checkpoint.info.get("history", []))
            if phase in self.phases_done_:
                # This phase already finished before a restart: take its final weights.
                model.load_state_dict(checkpoint.model_state)
                self.resumed_from_ = {"phase_done": 1}
                self.best_ = dict(checkpoint.info.get("best", {}))
                return self
            if checkpoint.info.get("phase") == phase:
                model.load_state_dict(checkpoint.model_state)
                if checkpoint.optimizer_state:
                    load_optimizer_state(optimizer, checkpoint.optimizer_state)
                _restore_rng(checkpoint.rng_state, shuffle)
                best = dict(checkpoint.info.get("best", best))
                start_epoch = checkpoint.epoch + 1
                self.resumed_from_ = {"epoch": checkpoint.epoch}

        pixels_cache: dict[str, Any] = {}
        has_validation = validation is not None and len(validation[1]) > 0
        if has_validation:  # made a tensor once, not every epoch
            validation = (torch.from_numpy(np.ascontiguousarray(validation[0])),
                          torch.as_tensor(np.asarray(validation[1], dtype=np.int64)))
        # best-val needs validation images; without them the last epoch's weights are kept
        # (choosing by training loss would reward overfitting).
        keep_best = config.select == "best-val" and has_validation
        best_state = self._load_best_state(phase, best) if keep_best else None
        patience = config.patience
        stale = 0 if best["epoch"] == 0 else (start_epoch - 1 - best["epoch"])
        n = len(y)
        batches_per_epoch = math.ceil(n / config.batch_size)
        use_amp = config.mixed_precision and self.device.type == "cuda"
        amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
        # Loss scaling only where float16 gradients can underflow: never on the CPU.
        scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype == torch.float16 else None
        labels = torch.as_tensor(y, device=self.device)
        writer = CheckpointWriter()
        try:
            for epoch in range(start_epoch, epochs + 1):
                started = time.perf_counter()
                pixels = self._epoch_pixels(X, epoch, pixels_cache)
                if len(pixels) != n:
                    raise ValueError(f"{len(pixels)} images but {n} labels")
                model.train()
                order = torch.randperm(n, generator=shuffle).to(self.device)
                # Summed on the device and read once per epoch: no per-batch sync (MPS has
                # no float64).
                loss_sum = torch.zeros((), device=self.device, dtype=torch.float32
                                       if self.device.type == "mps" else torch.float64)
                correct_sum = torch.zeros((), dtype=torch.int64, device=self.device)
                for b in range(batches_per_epoch):
                    index = order[b * config.batch_size:(b + 1) * config.batch_size]
                    inputs = to_input(pixels[index], channels_last=True)
                    target = labels[index]
                    with torch.autocast(self.device.type, dtype=amp_dtype, enabled=use_amp):
                        logits = model(inputs)
                        loss = F.cross_entropy(logits, target)
                    optimizer.zero_grad(set_to_none=True)
                    if scaler is None:
                        loss.backward()
                        optimizer.step()
                    else:
                        scaler.scale(loss).backward()
                        scaler.step(optimizer)
                        scaler.update()
                    loss_sum += loss.detach().to(loss_sum.dtype) * len(index)
                    correct_sum += (logits.detach().argmax(1) == target).sum()
                    if self.on_batch is not None:
                        self.on_batch((epoch - 1) * batches_per_epoch + b + 1, epochs * batches_per_epoch)
                total_loss, correct = float(loss_sum), int(correct_sum)
                if not math.isfinite(total_loss):
                    raise FloatingPointError(f"training diverged in epoch {epoch} (the loss is not a "
                                             f"number); lower the learning rate (now {lr})")
                row: dict[str, Any] = {"phase": phase, "epoch": epoch, "loss": total_loss / n,
                                       "acc": correct / n, "lr": lr}
                if has_validation:
                    val_loss, val_acc = self._loss_and_accuracy(validation[0], validation[1])
                    row.update(val_loss=val_loss, val_acc=val_acc)
                improved = False
                if keep_best:
                    improved = row["val_loss"] < best["val_loss"] - 1e-6
                    if improved:
                        best = {"val_loss": row["val_loss"], "epoch": epoch}
                        best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                        stale = 0
                    else:
                        stale += 1
                else:
                    best = {"val_loss": row.get("val_loss"), "epoch": epoch}
                row["seconds"] = round(time.perf_counter() - started, 3)
                row["images_per_s"] = round(n / max(row["seconds"], 1e-9), 1)
                self.history_.append(row)
                stop = keep_best and bool(patience) and stale >= patience
                row["early_stop"] = stop
                self._save_in_background(writer, phase, epoch, best, model, optimizer, shuffle,
                                         improved, row)
                if stop:
                    break
        except BaseException:
            # No write outlives the fit, even one stopped by an error or a cancel (whose
            # exception is the one to raise, not a failed write's).
            with contextlib.suppress(Exception):
                writer.wait()
            raise
        writer.wait()

        if keep_best and best_state is not None:
            model.load_state_dict(best_state)
        self.best_ = {**best, "select": "best-val" if keep_best else "last"}
        self.phases_done_.append(phase)
        self._save(phase, epochs, best, model, None, shuffle, improved=False)
        model.eval()
        return self

    def _load_best_state(self, phase: str, best: dict[str, Any]) -> dict[str, torch.Tensor] | None:
        if best["epoch"] == 0 or self.checkpoint_dir is None:
            return None
        path = self.checkpoint_dir / BEST_FILE
        if not path.is_file():
            return None
        checkpoint = load_checkpoint(path)
        if checkpoint.info.get("phase") != phase:
            return None
        return checkpoint.model_state

    def _save(self, phase: str, epoch: int, best: dict[str, Any], model: nn.Module,
              optimizer: torch.optim.Optimizer | None, shuffle: torch.Generator,
              improved: bool) -> None:
        if self.checkpoint_dir is None:
            return
        info = self._checkpoint_info(phase, epoch, best)
        if improved:
            save_checkpoint(self.checkpoint_dir / BEST_FILE, model, info, tmp_dir=self.tmp_dir)
        save_checkpoint(self.checkpoint_dir / LAST_FILE, model, info, optimizer=optimizer,
                        rng_state=_rng_state(shuffle), tmp_dir=self.tmp_dir)

    def _save_in_background(self, writer: CheckpointWriter, phase: str, epoch: int,
                            best: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                            shuffle: torch.Generator, improved: bool, row: dict[str, Any]) -> None:
        """This epoch's checkpoints, written while the next epoch trains; then ``on_epoch``
        (in the writer's thread: what it publishes is never ahead of the files on disk)."""
        history = list(self.history_)
        publish = None if self.on_epoch is None else (lambda: self.on_epoch(row, history))
        if self.checkpoint_dir is None:
            if publish is not None:
                publish()
            return
        info = self._checkpoint_info(phase, epoch, best)
        files = []
        if improved:
            files.append((self.checkpoint_dir / BEST_FILE, checkpoint_snapshot(model, info)))
        files.append((self.checkpoint_dir / LAST_FILE, checkpoint_snapshot(
            model, info, optimizer=optimizer, rng_state=_rng_state(shuffle))))
        writer.submit(files, self.tmp_dir, then=publish)

    def _epoch_pixels(self, X: PixelSource, epoch: int, cache: dict[str, Any]) -> torch.Tensor:
        """This epoch's uint8 images as a tensor on the training device (moved once for a
        fixed array: a few MB at 64 px, so the GPU never waits for host copies)."""
        if callable(X):
            return torch.from_numpy(np.ascontiguousarray(X(epoch))).to(self.device)
        if "fixed" not in cache:
            cache["fixed"] = torch.from_numpy(np.ascontiguousarray(X)).to(self.device)
        return cache["fixed"]

    # --- prediction --------------------------------------------------------------------

    def _check_fitted(self) -> nn.Module:
        if self.model_ is None:
            raise RuntimeError("this Classifier is not fitted yet; call fit() first")
        return self.model_

    def _logits(self, X: np.ndarray | torch.Tensor) -> torch.Tensor:
        model = self._check_fitted().to(self.device).eval()
        pixels = X if isinstance(X, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(X))
        use_amp = self.config.mixed_precision and self.device.type == "cuda"
        out = []
        # On the CPU, batches of 32 keep a batch's activations in the caches: 1.4 to 2x faster
        # per image than 256 here (validation runs every epoch; issue 14).
        step = EVAL_BATCH_CPU if self.device.type == "cpu" else max(self.config.batch_size, 256)
        # inference_mode: no autograd bookkeeping at all (cheaper than no_grad).
        with torch.inference_mode():
            for start in range(0, len(pixels), step):
                with torch.autocast(self.device.type, enabled=use_amp) if use_amp else contextlib.nullcontext():
                    batch = to_input(pixels[start:start + step], self.device, channels_last=True)
                    out.append(model(batch).float().cpu())
        if not out:
            return torch.zeros((0, len(self.class_names)))
        return torch.cat(out)

    def _loss_and_accuracy(self, X: np.ndarray | torch.Tensor,
                           y: np.ndarray | list[int] | torch.Tensor) -> tuple[float, float]:
        logits = self._logits(X)
        target = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y, dtype=np.int64))
        return float(F.cross_entropy(logits, target)), float((logits.argmax(1) == target).float().mean())

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return torch.softmax(self._logits(X), dim=1).numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    def score(self, X: np.ndarray, y: np.ndarray | list[int]) -> float:
        return float((self.predict(X) == np.asarray(y)).mean())
