""" Cost of a recipe: measured training images/s of train.py's step -> device-hours of the full run. """
import time
from pathlib import Path
from typing import Optional

from .recipes import RECIPES, Recipe, read_config, split_name
from .runner import smoke_overrides


def measure_cost(path: Path, device: str = 'cpu', batch_size: Optional[int] = None, steps: int = 3,
                 img_size: Optional[int] = None, amp: Optional[bool] = None, repeats: int = 1) -> float:
    """Training images/s of one process for a config: model, loss, optimizer, mixing (SAMix trains its
    Mixer and adds its clean-batch term) and EMA as train.py wires them (`engine.train.create_mixing`, `build_task`), on random tensors (no data loading, no evaluation).
    One warm-up step is not timed; of `repeats` timings of `steps` steps the fastest counts (the least
    disturbed by other load). `amp` None keeps the recipe's setting on CUDA and turns it off on CPU
    (no fp16 there; bfloat16 autocast is slower than fp32 on most CPUs)."""
    import torch
    from timm.data import resolve_data_config

    from ..engine.args import parse_train_args
    from ..engine.loop import StepContext, train_one_epoch
    from ..engine.setup import create_amp, resolve_device
    from ..engine.train import build_model, build_task, create_mixing, create_task_optimizer, resolve_lr

    cfg = read_config(path)
    argv = ['--config', str(path), '--device', device, *smoke_overrides(cfg, img_size)]
    if batch_size:
        argv += ['--batch-size', str(batch_size)]
    if img_size:
        argv += ['--img-size', str(img_size)]
    args, _ = parse_train_args(argv)
    args.amp = (device != 'cpu' and args.amp) if amp is None else amp
    dev = resolve_device(args)
    amp_autocast, scaler = create_amp(args, dev)
    model = build_model(args, args.num_classes).to(dev)
    resolve_lr(args)
    recipe = RECIPES.get(split_name(path.stem)[0], Recipe(1, 10_000, ''))
    data_config = resolve_data_config(vars(args), model=model)
    size = data_config['input_size'][-1]
    mixup_fn, clean, loss_fn = create_mixing(args, model, data_config,
                                             max(1, recipe.train_images // (args.batch_size * recipe.gpus)),
                                             recipe.train_images, amp_autocast, scaler, dev)
    task = build_task(args, model, loss_fn, mixup_fn, clean, dev)
    optimizer = create_task_optimizer(args, task)
    ctx = StepContext(device=dev, amp_autocast=amp_autocast, loss_scaler=scaler, clip_grad=args.clip_grad,
                      clip_mode=args.clip_mode, log_interval=10 ** 9, is_primary=False)
    batch = (torch.randn(args.batch_size, 3, size, size, device=dev),
             torch.randint(0, args.num_classes, (args.batch_size,), device=dev))

    def run(n: int) -> float:
        if dev.type == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_one_epoch(0, task, [batch] * n, optimizer, ctx)
        if dev.type == 'cuda':
            torch.cuda.synchronize()
        return time.perf_counter() - start

    run(1)
    return max(steps * args.batch_size / run(steps) for _ in range(repeats))


def device_hours(images_per_s: float, epochs: int, train_images: int) -> float:
    """Device-hours of a run (summed over devices; wall time = this / devices, if scaling is linear)."""
    return epochs * train_images / images_per_s / 3600


def cost_text(path: Path, images_per_s: float, device: str, threads: Optional[int] = None) -> str:
    """`0.2 img/s (cpu, 1 thread) → 1,234 cpu-hours` for the recipe's epochs and dataset size."""
    recipe = RECIPES[split_name(path.stem)[0]]
    hours = device_hours(images_per_s, read_config(path)['epochs'], recipe.train_images)
    where = f'{device}, {threads} thread{"s" if threads != 1 else ""}' if threads else device
    return f'{images_per_s:.3g} img/s ({where}) → {hours:,.0f} {device}-hours'
