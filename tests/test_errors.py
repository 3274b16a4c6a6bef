""" Bad input and faults get one `error: ...` line, exit code 2, no traceback and no run folder (issue 16).

Each case of `CASES` is a row of the table in docs/errors.md: the test runs the row's command in-process
and checks that stderr ends with one `error:` line containing the row's message fragment (the table's
backticked text), that no run folder was left behind, and that nothing raised past the CLI. The table
and `CASES` must list the same ids.
"""
import logging
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from samix_timm.cli import run_train, run_train_ssl, run_validate
from samix_timm.engine.args import parse_train_args
from samix_timm.engine.train import train
from samix_timm.reproduce import main as reproduce_main
from samix_timm.ssl.probe import main as probe_main

from conftest import REPO, make_image_folder

DOC = REPO / 'docs' / 'errors.md'
# a 2-step CPU run on a 4-class ImageFolder of 8 training images
TRAIN = ['--model', 'test_resnet', '--num-classes', '4', '--img-size', '32', '-b', '4', '--epochs', '1',
         '--workers', '0', '--device', 'cpu', '--warmup-epochs', '0', '--lr', '0.01']
SSL = ['--model', 'test_resnet', '--img-size', '32', '-b', '4', '--epochs', '1', '--queue-size', '16',
       '--proj-hidden', '32', '--workers', '0', '--device', 'cpu', '--knn-interval', '0']


@pytest.fixture(scope='module')
def files(tmp_path_factory, tiny_data):
    """Datasets and checkpoints the rows point at, built once."""
    root = tmp_path_factory.mktemp('bad_inputs')
    f = dict(data=tiny_data, root=root)
    f['noval'] = make_image_folder(root / 'noval')
    shutil.rmtree(f['noval'] / 'val')
    f['extra_val'] = make_image_folder(root / 'extra_val', classes=4)
    shutil.copytree(f['extra_val'] / 'val' / 'class0', f['extra_val'] / 'val' / 'class9')
    f['corrupt'] = make_image_folder(root / 'corrupt', train=12)
    for png in (f['corrupt'] / 'train' / 'class1').iterdir():  # a class of which no image can be read
        png.write_bytes(b'not an image')
    args, text = parse_train_args([*TRAIN, '--data-dir', str(tiny_data), '--output', str(root / 'runs'),
                                   '--experiment', 'good'])
    f['ckpt'] = train(args, text).checkpoint
    data = f['ckpt'].read_bytes()
    (root / 'truncated.pth.tar').write_bytes(data[:len(data) // 3])
    (root / 'random.pth.tar').write_bytes(os.urandom(4096))
    (root / 'empty.pth.tar').write_bytes(b'')
    torch.save({'state_dict': {'fc.weight': torch.zeros(3, 3)}}, root / 'other_model.pth.tar')
    torch.save([1, 2, 3], root / 'a_list.pth.tar')
    torch.save({'note': 'no weights'}, root / 'no_weights.pth.tar')
    torch.save({'state_dict': {}, 'x': Path('/tmp')}, root / 'pickled_object.pth.tar')
    # a train_ssl.py checkpoint's layout: MoCo's online module as state_dict, its key encoder and queue as task state
    torch.save({'state_dict': {'encoder.backbone.fc.weight': torch.zeros(3, 3)}, 'task_state': {'moco': {}},
                'epoch': 0}, root / 'ssl_run.pth.tar')
    (root / 'bad.yaml').write_text('lr: [0.1\n')
    (root / 'list.yaml').write_text('- 1\n- 2\n')
    f['empty_class'] = make_image_folder(root / 'empty_class', classes=5)
    for png in [*(f['empty_class'] / 'train' / 'class1').iterdir(), *(f['empty_class'] / 'val' / 'class1').iterdir()]:
        png.unlink()  # an empty class folder in both splits: the labels of the classes after it shifted silently
    f['hidden'] = make_image_folder(root / 'hidden')
    shutil.copytree(f['hidden'] / 'train' / 'class0', f['hidden'] / 'train' / '.ipynb_checkpoints')
    f['nested'] = make_image_folder(root / 'nested')
    shutil.copytree(f['nested'] / 'train' / 'class0', f['nested'] / 'train' / 'class0' / 'more')
    f['one_class'] = make_image_folder(root / 'one_class', classes=1, train=8)
    f['output_inside'] = make_image_folder(root / 'output_inside')
    (root / 'dup.yaml').write_text('lr: 0.01\nepochs: 1\nlr: 0.5\n')
    (root / 'drop_kwargs.yaml').write_text('model_kwargs:\n  drop_rate: 0.1\n')
    (root / 'reversed.txt').write_text(''.join(f'class{i}\n' for i in reversed(range(4))))
    return f


@pytest.fixture(autouse=True)
def fresh_log_handlers():
    """Each CLI call adds timm's log handler on the stderr pytest captures for that test: drop it after."""
    root = logging.getLogger()
    before = list(root.handlers)
    root.handlers[:] = []  # earlier tests' handlers write to streams pytest has closed
    yield
    root.handlers[:] = before


def _out(f):
    return ['--output', str(f['root'] / 'out')]


# id -> (entry point, argv builder); the message each gets is in docs/errors.md
CASES = {
    # train.py: data
    'no-data-dir': ('train', lambda f: [*TRAIN, *_out(f)]),
    'data-dir-missing': ('train', lambda f: [*TRAIN, '--data-dir', str(f['root'] / 'nope'), *_out(f)]),
    'data-dir-is-a-file': ('train', lambda f: [*TRAIN, '--data-dir', str(f['root'] / 'bad.yaml'), *_out(f)]),
    'ssl-data-dir-is-a-file': ('ssl', lambda f: [*SSL, '--data-dir', str(f['root'] / 'bad.yaml'), *_out(f)]),
    'no-val-split': ('train', lambda f: [*TRAIN, '--data-dir', str(f['noval']), *_out(f)]),
    'no-train-split': ('train', lambda f: [*TRAIN, '--data-dir', str(f['noval'] / 'train'), *_out(f)]),
    'val-extra-class': ('train', lambda f: [*TRAIN, '--data-dir', str(f['extra_val']), *_out(f)]),
    'batch-larger-than-data': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '-b', '64', *_out(f)]),
    'num-classes-too-small': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--num-classes', '2',
                                                 *_out(f)]),
    'train-empty-class-folder': ('train', lambda f: [*TRAIN, '--data-dir', str(f['empty_class']), '--num-classes', '5',
                                                    *_out(f)]),
    'train-hidden-folder': ('train', lambda f: [*TRAIN, '--data-dir', str(f['hidden']), *_out(f)]),
    'train-nested-class-folders': ('train', lambda f: [*TRAIN, '--data-dir', str(f['nested']), *_out(f)]),
    'train-one-class': ('train', lambda f: [*TRAIN, '--data-dir', str(f['one_class']), '--num-classes', '1', *_out(f)]),
    'ssl-one-class': ('ssl', lambda f: [*SSL, '--data-dir', str(f['one_class']), '--knn-interval', '1', *_out(f)]),
    'output-inside-train-split': ('train', lambda f: [*TRAIN, '--data-dir', str(f['output_inside']), '--output',
                                                      str(f['output_inside'] / 'train' / 'runs')]),
    # train.py: numbers
    'lr-nan': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--lr', 'nan', *_out(f)]),
    'lr-zero': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--lr', '0', *_out(f)]),
    'epochs-zero': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--epochs', '0', *_out(f)]),
    'batch-zero': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '-b', '0', *_out(f)]),
    'weight-decay-negative': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--weight-decay', '-1',
                                                 *_out(f)]),
    'smoothing-above-1': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--smoothing', '1.5', *_out(f)]),
    'mixup-prob-above-1': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', '0.8',
                                              '--mixup-prob', '2', *_out(f)]),
    'mixup-alpha-negative': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', '-1', *_out(f)]),
    'std-zero': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--std', '0', '0', '0', *_out(f)]),
    'mean-wrong-length': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mean', '0.1', '0.2',
                                             *_out(f)]),
    'in-chans-without-img-mode': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--in-chans', '1',
                                                     *_out(f)]),
    # train.py: names
    'unknown-model': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--model', 'resnet5O', *_out(f)]),
    'unknown-opt': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--opt', 'sgdd', *_out(f)]),
    'unknown-sched': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--sched', 'cosin', *_out(f)]),
    'unknown-aa': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--aa', 'randaug', *_out(f)]),
    'unknown-eval-metric': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--eval-metric', 'acc',
                                               *_out(f)]),
    'config-not-yaml': ('train', lambda f: ['--config', str(f['root'] / 'bad.yaml'), *TRAIN,
                                            '--data-dir', str(f['data']), *_out(f)]),
    'config-not-mapping': ('train', lambda f: ['--config', str(f['root'] / 'list.yaml'), *TRAIN,
                                               '--data-dir', str(f['data']), *_out(f)]),
    'config-missing': ('train', lambda f: ['--config', str(f['root'] / 'nope.yaml'), *TRAIN,
                                           '--data-dir', str(f['data']), *_out(f)]),
    'config-duplicate-key': ('train', lambda f: ['--config', str(f['root'] / 'dup.yaml'), *TRAIN,
                                                 '--data-dir', str(f['data']), *_out(f)]),
    'model-kwargs-drop-rate': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--model-kwargs',
                                                   'drop_rate=0.1', *_out(f)]),
    'model-kwargs-in-recipe': ('train', lambda f: ['--config', str(f['root'] / 'drop_kwargs.yaml'), *TRAIN,
                                                   '--data-dir', str(f['data']), *_out(f)]),
    'opt-kwargs-lr': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--opt-kwargs', 'lr=0.1', *_out(f)]),
    # train.py: timm arguments that would be ignored
    'model-dtype': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--model-dtype', 'bfloat16',
                                       *_out(f)]),
    'recovery-interval': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--recovery-interval', '10',
                                             *_out(f)]),
    'tta': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--tta', '2', *_out(f)]),
    'resume-finished-run': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--resume', str(f['ckpt']),
                                               *_out(f)]),
    'timm-option-not-run': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--kd-model-name', 'resnet50',
                                               *_out(f)]),
    'drop-connect-and-drop-path': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--drop-connect', '0.1',
                                                      '--drop-path', '0.2', *_out(f)]),
    # train.py: SAMix
    'samix-pretrained-without-samix': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']),
                                                           '--samix-pretrained', 'samix_r18_cluttered_mnist', *_out(f)]),
    'samix-batch-one': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix', '-b', '1',
                                           *_out(f)]),
    'samix-feature-index': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix',
                                               '--samix-feature-index', '9', *_out(f)]),
    'samix-alpha-negative': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix',
                                                '--samix-alpha', '-1', *_out(f)]),
    'samix-mixer-lr-nan': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix',
                                              '--samix-mixer-lr', 'nan', *_out(f)]),
    'samix-unknown-preset': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix',
                                                '--samix-preset', 'fastest', *_out(f)]),
    'samix-unknown-mixer-init': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix',
                                                    '--samix-mixer-init', 'xavier', *_out(f)]),
    'samix-unknown-mixer-norm': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix',
                                                    '--samix-mixer-norm', 'layer', *_out(f)]),
    'samix-unknown-mask-area': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix',
                                                   '--samix-mask-area', 'exact', *_out(f)]),
    'samix-unknown-mask-loss': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix',
                                                   '--samix-mask-loss', 'pixel', *_out(f)]),
    'samix-unknown-mixer-upsample': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix',
                                                        '--samix-mixer-upsample', 'bicubic', *_out(f)]),
    'samix-mixer-every-zero': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix',
                                                  '--samix-mixer-every', '0', *_out(f)]),
    'samix-mixer-scale-zero': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix',
                                                  '--samix-mixer-scale', '0', *_out(f)]),
    'samix-clean-frac-one-image': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix',
                                                      '--samix-clean-frac', '0.05', *_out(f)]),
    'samix-lean-batch-four': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix',
                                                 '--samix-preset', 'lean', *_out(f)]),
    'samix-clean-frac-above-one': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix',
                                                      '--samix-clean-frac', '2', *_out(f)]),
    'clean-head-unknown': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', '1.0',
                                              '--samix-clean-weight', '1', '--samix-clean-head', 'two', *_out(f)]),
    'samix-mixer-until-zero': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix',
                                                  '--samix-mixer-until', '0', *_out(f)]),
    'clean-head-without-clean-term': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', '1.0',
                                                         '--samix-clean-head', 'own', *_out(f)]),
    'samix-torchscript': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix',
                                             '--torchscript', *_out(f)]),
    'samix-mixup-mode': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix',
                                            '--mixup-mode', 'elem', *_out(f)]),
    # train.py: files
    'initial-checkpoint-missing': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']),
                                                      '--initial-checkpoint', str(f['root'] / 'nope.pth'), *_out(f)]),
    'initial-checkpoint-other-model': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']),
                                                          '--initial-checkpoint', str(f['root'] / 'other_model.pth.tar'),
                                                          *_out(f)]),
    'resume-missing': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--resume',
                                          str(f['root'] / 'nope.pth.tar'), *_out(f)]),
    'resume-truncated': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--resume',
                                            str(f['root'] / 'truncated.pth.tar'), *_out(f)]),
    'resume-random-bytes': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--resume',
                                               str(f['root'] / 'random.pth.tar'), *_out(f)]),
    'resume-empty-file': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--resume',
                                             str(f['root'] / 'empty.pth.tar'), *_out(f)]),
    'resume-pickled-object': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--resume',
                                                 str(f['root'] / 'pickled_object.pth.tar'), *_out(f)]),
    'resume-not-a-dict': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--resume',
                                             str(f['root'] / 'a_list.pth.tar'), *_out(f)]),
    'resume-no-weights': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--resume',
                                             str(f['root'] / 'no_weights.pth.tar'), *_out(f)]),
    'resume-other-model': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--model', 'resnet10t',
                                              '--resume', str(f['ckpt']), *_out(f)]),
    'resume-other-classes': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--num-classes', '5',
                                                '--resume', str(f['ckpt']), *_out(f)]),
    'resume-other-optimizer': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--opt', 'adamw',
                                                  '--resume', str(f['ckpt']), *_out(f)]),
    'resume-other-mixer': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix',
                                              '--samix-mixer', 'automix', '--resume', str(f['samix_ckpt']), *_out(f)]),
    'output-not-writable': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']),
                                               '--output', '/proc/samix_out']),
    'output-is-a-file': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']),
                                            '--output', str(f['root'] / 'bad.yaml' / 'out')]),
    # validate.py
    'validate-no-model': ('validate', lambda f: ['--data-dir', str(f['data'])]),
    'validate-ssl-checkpoint': ('validate', lambda f: ['--data-dir', str(f['data']), '--model', 'test_resnet',
                                                      '--checkpoint', str(f['root'] / 'ssl_run.pth.tar')]),
    'validate-device-not-here': ('validate', lambda f: ['--data-dir', str(f['data']), '--checkpoint', str(f['ckpt']),
                                                        '--device', 'cuda' if not torch.cuda.is_available() else 'tpu']),
    'validate-checkpoint-missing': ('validate', lambda f: ['--data-dir', str(f['data']), '--checkpoint',
                                                          str(f['root'] / 'nope.pth.tar')]),
    'validate-checkpoint-random-bytes': ('validate', lambda f: ['--data-dir', str(f['data']), '--checkpoint',
                                                               str(f['root'] / 'random.pth.tar')]),
    'validate-checkpoint-other-model': ('validate', lambda f: ['--data-dir', str(f['data']), '--checkpoint',
                                                              str(f['ckpt']), '--model', 'resnet10t']),
    'validate-no-ema': ('validate', lambda f: ['--data-dir', str(f['data']), '--checkpoint', str(f['ckpt']),
                                              '--use-ema']),
    'validate-no-split': ('validate', lambda f: ['--data-dir', str(f['noval']), '--checkpoint', str(f['ckpt']),
                                                '--workers', '0']),
    'validate-split-other-classes': ('validate', lambda f: ['--data-dir', str(f['extra_val']), '--checkpoint',
                                                           str(f['ckpt']), '--workers', '0']),
    'validate-class-count-without-map': ('validate', lambda f: ['--data-dir', str(f['extra_val']), '--model',
                                                               'test_resnet', '--num-classes', '4', '--workers', '0']),
    'validate-class-map-disagrees': ('validate', lambda f: ['--data-dir', str(f['data']), '--checkpoint', str(f['ckpt']),
                                                            '--class-map', str(f['root'] / 'reversed.txt')]),
    'validate-model-kwargs-num-classes': ('validate', lambda f: ['--data-dir', str(f['data']), '--checkpoint',
                                                                 str(f['ckpt']), '--model-kwargs', 'num_classes=4']),
    'validate-batch-zero': ('validate', lambda f: ['--data-dir', str(f['data']), '--checkpoint', str(f['ckpt']),
                                                  '-b', '0']),
    # train_ssl.py
    'ssl-batch-one': ('ssl', lambda f: [*SSL, '--data-dir', str(f['data']), '-b', '1', *_out(f)]),
    'ssl-batch-larger-than-data': ('ssl', lambda f: [*SSL, '--data-dir', str(f['data']), '-b', '64',
                                                    '--queue-size', '128', *_out(f)]),
    'probe-knn-k-zero': ('probe', lambda f: ['--checkpoint', str(f['ckpt']), '--data-dir', str(f['data']),
                                             '--knn-k', '0']),
    'reproduce-config-missing': ('reproduce', lambda f: ['--configs', str(f['root'] / 'nope.yaml'), '--markdown']),
    'train-class-all-corrupt': ('train', lambda f: [*TRAIN, '--data-dir', str(f['corrupt']), *_out(f)]),
    'validate-class-all-corrupt': ('validate', lambda f: ['--data-dir', str(f['corrupt']), '--split', 'train',
                                                          '--checkpoint', str(f['ckpt']), '--workers', '0']),
    'validate-results-file-exists': ('validate', lambda f: ['--data-dir', str(f['data']), '--checkpoint', str(f['ckpt']),
                                                            '--results-file', str(f['ckpt'])]),
    'reproduce-nproc-zero': ('reproduce', lambda f: ['--nproc', '0', '--markdown']),
    'reproduce-cost-steps-zero': ('reproduce', lambda f: ['--measure-cost', '--cost-steps', '0']),
    'ssl-lr-nan': ('ssl', lambda f: [*SSL, '--data-dir', str(f['data']), '--lr', 'nan', *_out(f)]),
    'ssl-knn-k-zero': ('ssl', lambda f: [*SSL, '--data-dir', str(f['data']), '--knn-k', '0', *_out(f)]),
    'ssl-temperature-zero': ('ssl', lambda f: [*SSL, '--data-dir', str(f['data']), '--temperature', '0', *_out(f)]),
    'ssl-one-cluster': ('ssl', lambda f: [*SSL, '--data-dir', str(f['data']), '--num-clusters', '1', *_out(f)]),
    'seed-negative': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--seed', '-1', *_out(f)]),
    'ssl-no-val-split': ('ssl', lambda f: [*SSL, '--data-dir', str(f['noval']), '--knn-interval', '1', *_out(f)]),
    'ssl-resume-random-bytes': ('ssl', lambda f: [*SSL, '--data-dir', str(f['data']), '--resume',
                                                 str(f['root'] / 'random.pth.tar'), *_out(f)]),
    'ssl-resume-supervised-checkpoint': ('ssl', lambda f: [*SSL, '--data-dir', str(f['data']), '--resume',
                                                          str(f['ckpt']), *_out(f)]),
    # issue 44, round 3
    'resume-other-clean-head': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--mixup', 'samix',
                                                   '--samix-clean-head', 'own', '--epochs', '2',
                                                   '--resume', str(f['samix_ckpt']), *_out(f)]),
    'experiment-name-too-long': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']), '--experiment', 'x' * 300,
                                                    *_out(f)]),
    'output-path-too-long': ('train', lambda f: [*TRAIN, '--data-dir', str(f['data']),
                                                '--output', str(f['root'] / '/'.join(['y' * 200] * 25))]),
    'config-path-too-long': ('train', lambda f: ['--config', str(f['root'] / ('z' * 300 + '.yaml')), *TRAIN,
                                                '--data-dir', str(f['data']), *_out(f)]),
    'ssl-experiment-name-too-long': ('ssl', lambda f: [*SSL, '--data-dir', str(f['data']), '--experiment', 'x' * 300,
                                                      *_out(f)]),
    'ssl-output-inside-train-split': ('ssl', lambda f: [*SSL, '--data-dir', str(f['output_inside']), '--output',
                                                       str(f['output_inside'] / 'train' / 'runs')]),
    'ssl-model-kwargs-num-classes': ('ssl', lambda f: [*SSL, '--data-dir', str(f['data']), '--model-kwargs',
                                                      'num_classes=5', *_out(f)]),
    'ssl-opt-kwargs-lr': ('ssl', lambda f: [*SSL, '--data-dir', str(f['data']), '--opt-kwargs', 'lr=0.1', *_out(f)]),
    'validate-mixer-artifact': ('validate', lambda f: ['--data-dir', str(f['data']), '--checkpoint',
                                                      str(MIXER_ARTIFACT)]),
    'reproduce-collect-missing': ('reproduce', lambda f: ['--collect', str(f['root'] / 'nope')]),
    'reproduce-collect-not-a-recipe-run': ('reproduce', lambda f: ['--collect', str(f['ckpt'].parent)]),
}
MIXER_ARTIFACT = next((REPO / 'samix_timm' / 'weights').glob('samix_r18_cluttered_mnist-*.pth'))
ENTRY = {'train': run_train, 'validate': run_validate, 'ssl': run_train_ssl, 'probe': probe_main,
         'reproduce': reproduce_main}


def doc_rows():
    """id -> message fragment, from the table in docs/errors.md."""
    rows = {}
    table = DOC.read_text().split('## train.py, validate.py, train_ssl.py')[1].split('\n## ')[0]
    for line in table.splitlines():
        m = re.match(r'\|\s*`([\w-]+)`\s*\|.*\|\s*`([^`]+)`', line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


@pytest.fixture(scope='module')
def samix_checkpoint(files):
    args, text = parse_train_args([*TRAIN, '--data-dir', str(files['data']), '--mixup', 'samix',
                                   '--output', str(files['root'] / 'runs'), '--experiment', 'samix'])
    files['samix_ckpt'] = train(args, text).checkpoint
    return files


def test_table_and_cases_list_the_same_rows():
    assert sorted(doc_rows()) == sorted(CASES)
    assert len(CASES) >= 40


@pytest.mark.parametrize('case', sorted(CASES))
def test_bad_input_gets_one_line(case, samix_checkpoint, capsys, one_thread):
    f = samix_checkpoint
    out = f['root'] / 'out'
    shutil.rmtree(out, ignore_errors=True)
    entry, argv = CASES[case]
    code = ENTRY[entry](argv(f))
    err = capsys.readouterr().err
    lines = [l for l in err.strip().splitlines() if l.startswith('error:')]
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err[-2000:]
    assert 'Traceback' not in err
    assert 'weights_only=False' not in lines[0]
    assert doc_rows()[case] in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir()), f'run folder left behind: {list(out.iterdir())}'


def test_non_finite_loss_stops_before_saving(files, capsys, one_thread, monkeypatch):
    """A loss that turns NaN mid-run stops it with the epoch and update, and writes no checkpoint of it."""
    from samix_timm.task import MixTask
    calls = {'n': 0}
    real = MixTask.forward

    def poisoned(self, x, target):
        calls['n'] += 1
        result = real(self, x, target)
        if calls['n'] > 2:  # epoch 0 is fine, epoch 1 diverges
            result['loss'] = result['loss'] * float('nan')
        return result

    monkeypatch.setattr(MixTask, 'forward', poisoned)
    out = files['root'] / 'nan_out'
    code = run_train([*TRAIN, '--data-dir', str(files['data']), '--epochs', '2', '--output', str(out),
                      '--experiment', 'nan'])
    err = capsys.readouterr().err
    assert code == 2 and 'Traceback' not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith('error: the training loss is nan at epoch 1'), line
    run = out / 'nan'
    assert sorted(p.name for p in run.glob('*.pth.tar')) == ['checkpoint-0.pth.tar', 'last.pth.tar', 'model_best.pth.tar']
    assert torch.load(run / 'last.pth.tar', weights_only=False)['epoch'] == 0


def test_full_disk_leaves_no_partial_checkpoint(files, capsys, one_thread, monkeypatch):
    """torch.save failing with ENOSPC: one line, no tmp.pth.tar left, the run folder removed (nothing saved)."""
    real = torch.save

    def full_disk(obj, f, *a, **k):
        Path(f).write_bytes(b'partial')
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(torch, 'save', full_disk)
    out = files['root'] / 'full_out'
    code = run_train([*TRAIN, '--data-dir', str(files['data']), '--output', str(out), '--experiment', 'full'])
    monkeypatch.setattr(torch, 'save', real)
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert code == 2 and 'Traceback' not in err
    assert line.startswith('error: cannot write the epoch 0 checkpoint') and 'No space left' in line, line
    assert not (out / 'full').exists()


def test_validation_split_missing_a_class_keeps_training_labels(files, tmp_path, one_thread):
    """A val/ without one class: eval labels follow the training class index (timm would shift them)."""
    data = tmp_path / 'd'
    shutil.copytree(files['data'], data)
    shutil.rmtree(data / 'val' / 'class1')
    args, text = parse_train_args([*TRAIN, '--data-dir', str(data), '--output', str(tmp_path / 'o')])
    from samix_timm.engine.setup import create_datasets
    _, evals = create_datasets(args)
    labels = sorted({t for _, t in evals.reader.samples})
    assert labels == [0, 2, 3]


def test_validate_reads_with_the_training_class_index(files, tmp_path, one_thread):
    """validate.py labels a split missing one class with the class index the checkpoint trained with."""
    from timm.data import create_dataset

    from samix_timm.engine.validate import parse_validate_args, split_class_map, validate
    data = tmp_path / 'd'
    shutil.copytree(files['data'], data)
    shutil.rmtree(data / 'val' / 'class1')
    checkpoint = torch.load(files['ckpt'], weights_only=False)
    assert checkpoint['class_to_idx'] == {f'class{i}': i for i in range(4)}
    args = parse_validate_args(['--data-dir', str(data), '--checkpoint', str(files['ckpt'])])
    dataset = create_dataset('', root=str(data), split='validation', class_map=split_class_map(args, checkpoint, 4))
    assert sorted({t for _, t in dataset.reader.samples}) == [0, 2, 3]
    result = validate(parse_validate_args(['--data-dir', str(data), '--checkpoint', str(files['ckpt']),
                                           '--workers', '0', '--device', 'cpu']))
    assert result['num_images'] == 3


def test_timm_arguments_that_are_implemented(files, tmp_path, capsys, one_thread):
    """--save-images writes the logged batches, --synchronize-step and --drop-connect run (not ignored)."""
    args, text = parse_train_args([*TRAIN, '--data-dir', str(files['data']), '--output', str(tmp_path),
                                   '--save-images', '--synchronize-step', '--drop-connect', '0.1',
                                   '--log-interval', '1', '--model', 'resnet10t'])
    result = train(args, text)
    assert sorted(p.name for p in result.output_dir.glob('train-batch-*.jpg')) == ['train-batch-0.jpg',
                                                                                   'train-batch-1.jpg']
    rates = {m.drop_prob for m in result.model.modules() if type(m).__name__ == 'DropPath'}
    assert rates and max(rates) == pytest.approx(0.1)


@pytest.mark.full_disk_kib(96)
def test_a_real_full_disk_stops_training_in_one_line(files, full_disk, capsys, one_thread):
    """train.py writing into a real 96 KiB tmpfs: the checkpoint does not fit (torch raises RuntimeError from its
    zip writer there, which the OSError path missed): one line, exit 2, no partial checkpoint file left."""
    code = run_train([*TRAIN, '--data-dir', str(files['data']), '--output', str(full_disk), '--experiment', 'full'])
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert code == 2 and 'Traceback' not in err, err[-2000:]
    assert line.startswith('error: cannot write the epoch 0 checkpoint'), line
    assert not list(full_disk.rglob('*.pth.tar')), list(full_disk.rglob('*'))


def test_validate_results_file_in_a_new_folder(files, tmp_path, capsys, one_thread):
    """--results-file in a folder that does not exist yet is made after the evaluation (it passed the check and
    then failed with a traceback at the end)."""
    out = tmp_path / 'new' / 'deeper' / 'r.json'
    assert run_validate(['--data-dir', str(files['data']), '--checkpoint', str(files['ckpt']),
                         '--results-file', str(out), '--workers', '0']) == 0
    assert json.loads(out.read_text())['num_images'] > 0


def test_more_outputs_than_classes_is_warned_about(files, caplog):
    """`--num-classes 20` on 4-class data: outputs that are never a target, named before the run (issue 44: an
    info line only); as many outputs as classes: no warning."""
    from timm.data import create_dataset

    from samix_timm.engine.setup import check_num_classes
    dataset = create_dataset('', root=str(files['data']), split='train')
    with caplog.at_level(logging.WARNING):
        check_num_classes(20, dataset, 'train')
    assert "the model has 20 outputs (--num-classes) and the 'train' split 4 classes: 16 outputs are never a " \
           "target; set --num-classes 4" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        check_num_classes(4, dataset, 'train')
    assert not caplog.records


def test_images_timm_would_read_wrongly_are_warned_about_before_the_run(tmp_path, caplog):
    """16-bit PNGs (mode I;16, in a class of mixed modes) were clipped to 0/255 and RGBA images whose content is
    only in alpha trained as black, without a word (issue 44): one warning each, naming a file and the fix."""
    import numpy as np
    from PIL import Image

    from samix_timm.engine.setup import check_data_dir
    data = make_image_folder(tmp_path / 'd')
    wide = (np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40)
    Image.fromarray(wide).save(data / 'train' / 'class1' / 'wide.png')  # beside RGB images of the same class
    alpha = np.zeros((40, 40, 4), dtype=np.uint8)
    alpha[10:30, 10:30, 3] = 255  # a black square drawn in alpha only
    Image.fromarray(alpha).save(data / 'train' / 'class2' / 'alpha.png')
    args, _ = parse_train_args([*TRAIN, '--data-dir', str(data)])
    with caplog.at_level(logging.WARNING):
        check_data_dir(args)
    lines = [r.message for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 2, lines
    assert "wide.png' (mode I;16): timm's convert('RGB') clips them at 255" in lines[0]
    assert 'convert them to 8-bit images first' in lines[0]
    assert "alpha.png' (mode RGBA, colour channels flat): timm's convert('RGB') drops alpha" in lines[1]
    assert 'composite them onto a background first' in lines[1]
    caplog.clear()
    args, _ = parse_train_args([*TRAIN, '--data-dir', str(make_image_folder(tmp_path / 'plain'))])
    with caplog.at_level(logging.WARNING):
        check_data_dir(args)
    assert not caplog.records


def test_class_index_is_timms_natural_order(tmp_path):
    """class2 before class10, as timm's reader orders them: the eval split used to be read with a plain sort, so
    with 10+ numbered classes validation labels disagreed with the training ones."""
    from timm.data import create_dataset

    from samix_timm.engine.setup import folder_classes
    data = make_image_folder(tmp_path / 'd', classes=11, train=1, val=1)
    timm_index = create_dataset('', root=str(data), split='train').reader.class_to_idx
    assert folder_classes(data / 'train') == timm_index and timm_index['class2'] < timm_index['class10']


def test_a_write_failure_before_the_first_checkpoint_recommends_no_resume(files, capsys, one_thread, monkeypatch):
    """The epoch-0 write failure (full disk) removes the run folder: its line must not recommend `--resume` from the
    folder it just removed (issue 44), but running the command again."""
    def full_disk(obj, f, *a, **k):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(torch, 'save', full_disk)
    out = files['root'] / 'full0_out'
    code = run_train([*TRAIN, '--data-dir', str(files['data']), '--output', str(out), '--experiment', 'full'])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and line.startswith('error: cannot write the epoch 0 checkpoint'), line
    assert '--resume' not in line and 'run the same command again' in line, line
    assert not (out / 'full').exists()


def test_a_run_folder_that_turns_read_only_mid_run(files, capsys, one_thread, monkeypatch):
    """The run folder turns read-only after epoch 0 (as measured with a real 0o555 folder and CAP_DAC_OVERRIDE
    dropped: torch's writer raises RuntimeError "open file failed with strerror: Permission denied", a traceback
    before; creating summary.csv raises PermissionError): one line naming the fix and the checkpoint that is kept."""
    real = torch.save
    calls = {'n': 0}

    def read_only(obj, f, *a, **k):
        calls['n'] += 1
        if calls['n'] > 1:  # epoch 1's checkpoint
            raise RuntimeError('[enforce fail at inline_container.cc:747] . open file failed with strerror: '
                               'Permission denied')
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, 'save', read_only)
    out = files['root'] / 'ro_out'
    code = run_train([*TRAIN, '--data-dir', str(files['data']), '--output', str(out), '--experiment', 'ro',
                      '--epochs', '2'])
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert code == 2 and 'Traceback' not in err, err[-2000:]
    last = out / 'ro' / 'last.pth.tar'
    assert line.startswith('error: cannot write the epoch 1 checkpoint') and 'Permission denied' in line, line
    assert f'make {out / "ro"} writable again, then --resume {last}' in line, line
    assert last.is_file()


def test_logs_that_cannot_be_written_at_epoch_0_are_one_line(files, capsys, one_thread, monkeypatch):
    """A run folder that turns read-only before summary.csv is made (PermissionError, a traceback, and a second one
    from removing the folder): one line, no recommendation of a checkpoint that does not exist."""
    import timm.utils

    def denied(epoch, train_metrics, eval_metrics, filename, **kwargs):
        raise PermissionError(13, 'Permission denied', filename)

    monkeypatch.setattr(timm.utils, 'update_summary', denied)
    out = files['root'] / 'ro0_out'
    code = run_train([*TRAIN, '--data-dir', str(files['data']), '--output', str(out), '--experiment', 'ro'])
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert code == 2 and 'Traceback' not in err, err[-2000:]
    assert line.startswith('error: cannot write the epoch 0 logs (summary.csv)') and '--resume' not in line, line


def test_ssl_model_kwargs_without_a_flag_are_passed_on(files, tmp_path, capsys, one_thread):
    """train_ssl.py has no --drop: `--model-kwargs drop_rate=0.1` is not a conflict there and reaches the backbone."""
    from samix_timm.ssl.args import parse_ssl_args
    from samix_timm.ssl.engine import train_ssl
    args, text = parse_ssl_args([*SSL, '--data-dir', str(files['data']), '--output', str(tmp_path),
                                 '--model-kwargs', 'drop_rate=0.1'])
    assert train_ssl(args, text).encoder.backbone.drop_rate == pytest.approx(0.1)


@pytest.mark.parametrize('value, says', [('10', "num_classes='10' is a str, not a number"),
                                         (True, 'num_classes=True is a bool, not a number'),
                                         (float('nan'), 'num_classes=nan is not a finite number')])
def test_keyword_check_names_what_the_value_is(value, says):
    """A hub user's num_classes='10' or True is a wrong type, not 'not a finite number' (issue 44 audit)."""
    from samix_timm.errors import ConfigError
    from samix_timm.limits import check_keyword
    with pytest.raises(ConfigError) as e:
        check_keyword('num_classes', value)
    assert str(e.value).startswith(says)
