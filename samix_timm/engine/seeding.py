""" Per-sample seeding of data augmentation, so that persistent loader workers keep `--resume` exact.

A sample's augmentation is drawn from its own seed, a function of (run seed, epoch, dataset index), instead
of from the RNG stream of whichever worker loads it. What a batch holds then no longer depends on how long
a worker has lived, how many workers there are (0 included) or how many ranks share the data, so workers
can stay alive across epochs (timm's `persistent_workers`) and a resumed run still sees the images the
uninterrupted run saw. The epoch reaches live workers through timm's `SharedCount` (a shared int).
"""
import random

import numpy as np
import torch
from timm.data.readers.shared_count import SharedCount
from torch.utils.data import Dataset, IterableDataset, RandomSampler, get_worker_info

__all__ = ['SampleSeededDataset', 'sample_seed', 'seed_sample', 'set_loader_epoch']


_MASK64 = 2 ** 64 - 1


def _splitmix64(x: int) -> int:
    """One step of the SplitMix64 finaliser: a 64-bit integer hash that spreads every input bit."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """64-bit seed of one sample's augmentation in one epoch (a few µs: it runs for every sample)."""
    h = _splitmix64(seed & _MASK64)
    h = _splitmix64(h ^ (epoch & _MASK64))
    return _splitmix64(h ^ (index & _MASK64))


def seed_sample(seed: int) -> None:
    """Seed the three RNGs transforms draw from: python's `random`, numpy's global one and torch's CPU one
    (`torch.manual_seed` would also queue every accelerator's, ~0.6 ms a sample)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.default_generator.manual_seed(seed)


class SampleSeededDataset(Dataset):
    """A map-style dataset whose item `index` is loaded under `sample_seed(seed, epoch, index)`.

    Call `set_epoch` before iterating an epoch's loader. In the main process (`num_workers=0`) the global
    RNG states are restored after each item, so the training loop's own draws (mixing, λ) stay what they
    would be without the wrapper. `transform` forwards to the wrapped dataset (timm's `create_loader` sets it).
    """

    def __init__(self, dataset: Dataset, seed: int):
        if isinstance(dataset, IterableDataset):
            raise TypeError('SampleSeededDataset needs a map-style dataset (an index per sample)')
        self.dataset = dataset
        self.seed = seed
        self._epoch = SharedCount(0)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = epoch

    @property
    def transform(self):
        return self.dataset.transform

    @transform.setter
    def transform(self, transform) -> None:
        self.dataset.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        seed = sample_seed(self.seed, self._epoch.value, index)
        if get_worker_info() is not None:  # a worker's RNGs serve only its samples
            seed_sample(seed)
            return self.dataset[index]
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            seed_sample(seed)
            return self.dataset[index]
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])

    def __getattr__(self, name: str):  # timm helpers read e.g. `reader` or `class_to_idx` of the dataset
        if name in ('dataset', '_epoch'):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


def set_loader_epoch(loader, epoch: int) -> None:
    """Start epoch `epoch` of a loader (a DataLoader or timm's PrefetchLoader): tell its dataset and its
    DDP sampler, and, over a `SampleSeededDataset`, draw the shuffle order and the workers' base seed from
    generators seeded by (seed, epoch). Iterating then consumes nothing of the main RNG: a persistent
    loader skips the base-seed draw after its first epoch, which would shift every later draw of the loop
    (mixing, λ) between an uninterrupted and a resumed run."""
    dataset, sampler = loader.dataset, loader.sampler
    for part in (loader, dataset, sampler):  # the loader itself: e.g. ssl.device_aug.DeviceTwoViewLoader
        if hasattr(part, 'set_epoch'):
            part.set_epoch(epoch)
    if isinstance(dataset, SampleSeededDataset):
        epoch_seed = sample_seed(dataset.seed, epoch, -1)  # index -1: no sample's seed
        getattr(loader, 'loader', loader).generator = torch.Generator().manual_seed(epoch_seed)
        if isinstance(sampler, RandomSampler):
            sampler.generator = torch.Generator().manual_seed(epoch_seed + 1)
