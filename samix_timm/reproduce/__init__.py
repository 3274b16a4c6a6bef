""" Reproduction harness of docs/reproduce.md: run recipes from configs/, collect `summary.csv`, print the table.

    python -m samix_timm.reproduce --configs configs/in1k/pt100_resnet50_samix.yaml --nproc 4 --data-dir $IMAGENET
    python -m samix_timm.reproduce --configs configs/small/cifar100_*.yaml --data-dir D --epochs 2 --img-size 32 \\
        --extra -b 4 --workers 0                  # a toy smoke run on CPU
    python -m samix_timm.reproduce --collect output/train/pt100_resnet50_samix ...   # table of finished runs
    python -m samix_timm.reproduce --measure-cost --configs ... [--device cuda]      # img/s -> device-hours
    python -m samix_timm.reproduce --markdown                                         # the docs table

One module per job: `recipes` (what a YAML cannot hold: GPU count of the reference run, dataset
size, the paper's metric; finding and reading configs), `expected` (the published numbers, spec §8,
with their source, keyed by config name `<recipe>_<model>_<method>`), `results` (run folder ->
metric), `table` (markdown), `runner` (train.py / torchrun), `cost` (images/s -> device-hours),
`cli`. Metric (OpenMixup's convention, spec §8): median top-1 of the
last 5 (≤ 100-epoch recipes) or 10 epochs for CNNs, best epoch for transformers; online and EMA.
"""
from .cost import cost_text, device_hours, measure_cost
from .expected import EXPECTED, SOURCES, Expected, format_expected
from .recipes import (IMAGENET_TRAIN, METHOD_ORDER, RECIPES, REPO, Recipe, config_path, is_transformer, list_configs,
                      read_config, split_name, table_order, variant_of)
from .results import RunResult, collect, paper_metric
from .runner import run_config, smoke_overrides, train_command
from .table import TABLE_HEADER, commands, format_table, metric_text, table_row
from .cli import create_parser, main
