"""Training: AdamW (wd 0.05), timm CosineLRScheduler with warmup, label smoothing, AMP, DDP, resume, EMA.

On a CPU the hot path is kept lean: in-memory datasets (digits, Fashion-MNIST, CIFAR) are
batched straight from their uint8 tensors with batch-wise augmentation (:class:`BatchLoader`),
QCFS has a fused backward, and bf16 autocast is on where the CPU multiplies bf16 natively
(AVX512-BF16 or AMX); ``--compile`` adds ``torch.compile`` (training step and test evaluation)
(benchmarks/results/train_speed.md has the measurements).

Launched under ``torchrun`` (WORLD_SIZE > 1) it trains with DistributedDataParallel;
rank 0 evaluates, prints and writes checkpoints. A checkpoint is written atomically
after every epoch with the optimizer state, so ``--resume`` continues an interrupted run.
"""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from mst_lava.checkpoint import load_checkpoint, model_from_checkpoint, read_checkpoint, save_checkpoint
from mst_lava.data import DEFAULT_PRESET, as_images, get_dataset
from mst_lava.data.static import BatchLoader, TensorImages
from mst_lava.errors import MSTError
from mst_lava.model import PRESETS, build_model, set_ann_masks
from mst_lava.model.qcfs import iter_sites, set_levels
from mst_lava.model.rsm import parse_mask_spec

TRAIN_ARCHS = ("mst", "resnet18", "vgg16")


def _baseline_presets() -> dict:
    from mst_lava.model.baselines import BASELINE_PRESETS
    return BASELINE_PRESETS


def _baseline_config(arch: str, preset: str):
    from mst_lava.model.baselines import BaselineConfig
    return BaselineConfig.from_dict({**_baseline_presets()[preset], "arch": arch, "preset": preset})


@dataclass
class TrainConfig:
    dataset: str | None = None       # None: the checkpoint's (--resume, --init), else the preset's
    data: str | None = None
    preset: str | None = None
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    label_smoothing: float = 0.1
    mask: dict = field(default_factory=dict)
    seed: int = 0
    out: str = "mst.pt"
    resume: bool = False
    init: str | None = None
    device: str = "auto"
    workers: int = 0
    frames: int | None = None
    precision: str = "auto"          # auto: bf16 autocast on CUDA and on CPUs with native bf16; else fp32
    compile: bool = False            # torch.compile the training forward/backward
    threads: int | None = None       # torch intra-op threads on a CPU (None: torch's default)
    progress: bool = True
    limit_train: int | None = None   # use only the first N training images (smoke tests)
    arch: str | None = None          # mst, resnet18 or vgg16 (None: the checkpoint's, else mst)
    levels: int | None = None        # QCFS levels L of a fresh model, or of an --init model re-quantized
    ema: float = 0.0                 # decay of an exponential moving average of the weights (0: off)
    eval_from: int = 1               # evaluate the test set after epochs eval_from … epochs (and the last)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with timm's parameter groups: no decay on biases, norm weights (1-D) and the
    relative-position bias tables. The decayed group comes first, as in the optimizer states of
    checkpoints written before (``--resume`` maps groups by index)."""
    from timm.optim import param_groups_weight_decay
    groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=("*bias_table",))
    groups.sort(key=lambda g: g["weight_decay"] == 0.0)
    return torch.optim.AdamW(groups, lr=lr)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MSTError("--device cuda asked for, but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises AVX512-BF16 or AMX-BF16 (Linux /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for training (None: plain fp32)."""
    if precision not in ("auto", "bf16", "fp32"):
        raise MSTError(f"--precision must be auto, bf16 or fp32, not {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16" or device.type == "cuda" or cpu_has_native_bf16():
        return torch.bfloat16
    return None


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device, progress: bool = False, desc: str = "eval") -> float:
    """Top-1 accuracy of the ANN over a loader."""
    model.eval()
    correct = total = 0
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress):
        x, y = as_images(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x)
        correct += (logits.argmax(1) == y).sum().item()
        total += y.numel()
    return correct / max(total, 1)


def _worker_init(worker_id: int) -> None:
    s = torch.initial_seed() % 2 ** 32
    np.random.seed(s)
    random.seed(s)


def _rng_state(loader, model) -> dict:
    """Every random state the next epoch draws from, so ``--resume`` repeats the uninterrupted run."""
    _, keys, pos, *_ = np.random.get_state()
    st = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(keys.astype(np.int64)), "numpy_pos": int(pos),
          "sites": {n: m.mask_generator.get_state() for n, m in iter_sites(model) if m.mask_generator is not None}}
    if isinstance(loader, BatchLoader):
        st["loader"] = loader.generator.get_state()
    return st


def _restore_rng(st: dict | None, loader, model) -> None:
    if not st:
        return
    torch.set_rng_state(st["torch"])
    np.random.set_state(("MT19937", st["numpy"].numpy().astype(np.uint32), st["numpy_pos"], 0, 0.0))
    if isinstance(loader, BatchLoader) and "loader" in st:
        loader.generator.set_state(st["loader"])
    sites = dict(iter_sites(model))
    for n, state in st.get("sites", {}).items():
        if n in sites:
            g = torch.Generator()
            g.set_state(state)
            sites[n].mask_generator = g


def train(cfg: TrainConfig) -> dict:
    """Train (or fine-tune / resume) and return the final metrics."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    if distributed:
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank = torch.distributed.get_rank()
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            cfg.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    main = rank == 0
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    from timm.scheduler import CosineLRScheduler
    from timm.utils import random_seed
    random_seed(cfg.seed, rank)                 # python, numpy and torch from seed + rank
    mask = parse_mask_spec(cfg.mask)

    start_epoch, train_state, history = 0, None, []
    arch = cfg.arch or "mst"
    if arch not in TRAIN_ARCHS:
        raise MSTError(f"unknown architecture {arch!r}; choose from {', '.join(TRAIN_ARCHS)}")
    if cfg.levels is not None and cfg.resume:
        raise MSTError("--qcfs-levels cannot change a --resume run; it keeps its own L")
    if not 0.0 <= cfg.ema < 1.0:
        raise MSTError(f"--ema must be a decay in [0, 1) (e.g. 0.999), not {cfg.ema}")
    model, ema_state = None, None
    if cfg.resume:
        ckpt = read_checkpoint(cfg.out)
        if "train_state" not in ckpt:
            raise MSTError(f"{cfg.out} holds no training state to resume from")
        model = model_from_checkpoint(ckpt)
        train_state = ckpt["train_state"]
        if "ema_decay" in train_state:   # the checkpoint's weights are the average; the raw ones train on
            cfg.ema = float(train_state["ema_decay"])
            ema_state = {k: v.clone() for k, v in model.state_dict().items()}   # not views of what loads next
            try:
                model.load_state_dict(train_state["model"])
            except (RuntimeError, TypeError, AttributeError) as e:
                raise MSTError(f"{cfg.out}: the training weights saved beside the average do not fit the model "
                               f"({str(e).splitlines()[0]}); start the run again without --resume") from None
        elif cfg.ema:
            raise MSTError(f"--ema: {cfg.out} was trained without an average of the weights; resume it without --ema")
        start_epoch = int(train_state["epoch"]) + 1
        history = list(ckpt["metrics"].get("history", []))
        mask = dict(ckpt.get("mask") or mask)
        cfg.dataset = ckpt.get("dataset") or cfg.dataset
    elif cfg.init:
        model, ckpt = load_checkpoint(cfg.init)
        if cfg.levels is not None:      # re-quantize a trained model to L levels and fine-tune it
            set_levels(model, cfg.levels)
    if cfg.resume or cfg.init:
        if cfg.arch and cfg.arch != ckpt["arch"]:
            raise MSTError(f"--arch {cfg.arch}: the {'--resume' if cfg.resume else '--init'} checkpoint is "
                           f"{ckpt['arch']!r}")
        arch = ckpt["arch"]
    if cfg.init and not cfg.resume:
        if cfg.preset and cfg.preset != model.cfg.preset:
            raise MSTError(f"--init checkpoint is preset {model.cfg.preset!r}, not {cfg.preset!r}")
        cfg.dataset = cfg.dataset or ckpt.get("dataset")      # fine-tune on what it was trained on
    if cfg.dataset is None:
        by_preset = {v: k for k, v in reversed(list(DEFAULT_PRESET.items()))}
        cfg.dataset = by_preset.get(cfg.preset or (model.cfg.preset if model is not None else "digits"), "digits")
    if model is None:   # a fresh model: the preset, with the head sized for the dataset
        preset = cfg.preset or DEFAULT_PRESET.get(cfg.dataset, "digits")
        presets = PRESETS if arch == "mst" else _baseline_presets()
        if preset not in presets:
            raise MSTError(f"unknown preset {preset!r} for {arch}; choose from {', '.join(presets)}")
        mcfg = PRESETS[preset] if arch == "mst" else _baseline_config(arch, preset)
    else:
        mcfg = model.cfg
    ds_kw = dict(img_size=mcfg.img_size, in_chans=mcfg.in_chans, frames=cfg.frames)
    train_ds = get_dataset(cfg.dataset, cfg.data, "train", augment=True, **ds_kw)
    test_ds = get_dataset(cfg.dataset, cfg.data, "test", augment=False, **ds_kw)
    n_cls = getattr(train_ds, "num_classes", None)
    if model is None:
        over = {**({"num_classes": n_cls} if n_cls else {}), **({"L": cfg.levels} if cfg.levels else {})}
        if arch == "mst":
            model = build_model(mcfg, **over)
        else:
            from mst_lava.model.baselines import build_baseline
            model = build_baseline(arch, preset=mcfg.preset, **over)
    elif n_cls is not None and n_cls > mcfg.num_classes:
        raise MSTError(f"dataset {cfg.dataset} has {n_cls} classes but the model head has {mcfg.num_classes}")
    set_ann_masks(model, mask, seed=cfg.seed)
    model.to(device)

    world = torch.distributed.get_world_size() if distributed else 1
    sampler = None
    if isinstance(train_ds, TensorImages):   # in memory: batch-wise, no per-sample work
        train_dl = BatchLoader(train_ds, cfg.batch_size, shuffle=True, drop_last=True, seed=cfg.seed,
                               rank=rank, world=world, limit=cfg.limit_train)
    else:
        if cfg.limit_train:
            train_ds = torch.utils.data.Subset(train_ds, range(min(cfg.limit_train, len(train_ds))))
        sampler = torch.utils.data.distributed.DistributedSampler(train_ds) if distributed else None
        g = torch.Generator().manual_seed(cfg.seed)
        train_dl = DataLoader(train_ds, cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                              drop_last=len(train_ds) > cfg.batch_size, num_workers=cfg.workers,
                              pin_memory=device.type == "cuda", generator=g, worker_init_fn=_worker_init,
                              persistent_workers=cfg.workers > 0)
    if isinstance(test_ds, TensorImages):
        test_dl = BatchLoader(test_ds, max(cfg.batch_size, 256))
    else:
        test_dl = DataLoader(test_ds, max(cfg.batch_size, 256), num_workers=cfg.workers)

    net = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(model,
                                                        device_ids=[device.index] if device.type == "cuda" else None)
    ema = None
    if cfg.ema:   # timm's average of the weights and BatchNorm statistics: what is evaluated and saved
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(model, decay=cfg.ema)
        if ema_state is not None:
            ema.module.load_state_dict(ema_state)
    kept = model if ema is None else ema.module          # the model that is evaluated and saved
    eval_net = kept
    if cfg.compile:
        net = torch.compile(net)
        # the test set is evaluated through a compiled copy too (fp32 as before): 9.8 s instead of 28.1 s per
        # pass over the 10,000 Fashion-MNIST test images on 2 cores (benchmarks/results/train_speed.md)
        eval_net = torch.compile(kept)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    steps_per_epoch = max(len(train_dl), 1)
    sched = CosineLRScheduler(opt, t_initial=cfg.epochs * steps_per_epoch, lr_min=cfg.lr * 0.01,
                              warmup_t=cfg.warmup_epochs * steps_per_epoch, warmup_lr_init=cfg.lr * 0.01,
                              t_in_epochs=False)
    if train_state is not None:
        opt.load_state_dict(train_state["optimizer"])
        _restore_rng(train_state.get("rng"), train_dl, model)
    amp_dtype = autocast_dtype(device, cfg.precision)

    t0 = time.time() - (history[-1]["time_s"] if history else 0.0)   # time_s counts across --resume
    metrics: dict = {}
    acc = float("nan")
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
        tot_loss = n_seen = 0
        bar = tqdm(train_dl, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, mininterval=2.0,
                   disable=not (main and cfg.progress))
        for it, (x, y) in enumerate(bar):
            sched.step_update(epoch * steps_per_epoch + it)
            x, y = as_images(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                loss = F.cross_entropy(net(x), y, label_smoothing=cfg.label_smoothing)
            if not math.isfinite(loss.item()):
                raise MSTError(f"training diverged at epoch {epoch + 1} (loss {loss.item()}); lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update(model)
            tot_loss += loss.item() * len(y)
            n_seen += len(y)
            bar.set_postfix(loss=f"{tot_loss / n_seen:.3f}")
        if main:
            # epochs before --eval-from are not evaluated (ann_acc None in the history): time to accuracy
            # then counts no evaluation passes that nobody reads
            evaluated = epoch + 1 >= cfg.eval_from or epoch + 1 == cfg.epochs
            if evaluated:
                acc = evaluate(eval_net, test_dl, device)
            history.append({"epoch": epoch, "loss": tot_loss / max(n_seen, 1),
                            "ann_acc": acc if evaluated else None, "time_s": round(time.time() - t0, 2)})
            if cfg.progress:
                shown = f"test acc {100 * acc:.2f}%" if evaluated else "not evaluated"
                print(f"epoch {epoch + 1}/{cfg.epochs}  loss {tot_loss / max(n_seen, 1):.4f}  "
                      f"{shown}  ({time.time() - t0:.0f}s)", flush=True)
            metrics = {"epoch": epoch, "history": history, **({} if math.isnan(acc) else {"ann_acc": acc})}
            state = {"epoch": epoch, "optimizer": opt.state_dict(), "rng": _rng_state(train_dl, model)}
            if ema is not None:
                state.update(ema_decay=cfg.ema, model=model.state_dict())
            save_checkpoint(cfg.out, kept, arch=arch, mask=mask, metrics=metrics, dataset=cfg.dataset,
                            train_state=state)
    if start_epoch >= cfg.epochs and main:
        acc = evaluate(eval_net, test_dl, device)
        metrics = {"ann_acc": acc, "epoch": cfg.epochs - 1, "history": history}
    if distributed:
        torch.distributed.destroy_process_group()
    metrics["train_time_s"] = round(time.time() - t0, 2)
    return metrics
