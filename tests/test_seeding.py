""" Per-sample seeding (engine/seeding.py): augmentations independent of workers, their lifetime and resume. """
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from samix_timm.engine.seeding import SampleSeededDataset, sample_seed, set_loader_epoch


class RandomDraws(Dataset):
    """Item i: one draw from each RNG a transform may use, plus i (what an augmentation would consume)."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int):
        return torch.tensor([random.random(), float(np.random.rand()), torch.rand(()).item(), index])


def _epochs(loader, epochs):
    out = []
    for epoch in epochs:
        set_loader_epoch(loader, epoch)
        torch.manual_seed(epoch)  # the shuffle order comes from the main RNG, reseeded per epoch as train.py does
        out.append(torch.cat(list(loader)))
    return out


def _loader(dataset, workers, persistent):
    return DataLoader(dataset, batch_size=4, shuffle=True, num_workers=workers, persistent_workers=persistent)


def test_item_depends_on_seed_epoch_and_index_only():
    ds = SampleSeededDataset(RandomDraws(), seed=3)
    a = ds[5]
    torch.manual_seed(123); random.seed(9); np.random.seed(1)  # global state does not matter
    torch.testing.assert_close(ds[5], a)
    assert not torch.equal(ds[6][:3], a[:3])
    ds.set_epoch(1)
    assert not torch.equal(ds[5][:3], a[:3])
    assert not torch.equal(SampleSeededDataset(RandomDraws(), seed=4)[5][:3], a[:3])
    grid = [(s, e, i) for s in (0, 1, 42) for e in (-1, 0, 1, 2) for i in range(2000)]
    assert len({sample_seed(*g) for g in grid}) == len(grid)  # no two samples share a seed


def test_main_process_rng_is_left_as_it_was():
    ds = SampleSeededDataset(RandomDraws(), seed=0)
    torch.manual_seed(7); random.seed(7); np.random.seed(7)
    expected = (torch.rand(2), random.random(), np.random.rand())
    torch.manual_seed(7); random.seed(7); np.random.seed(7)
    ds[0], ds[1]
    torch.testing.assert_close(torch.rand(2), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]


@pytest.mark.parametrize('workers', [0, 2])
def test_persistent_workers_resume_like_a_fresh_loader(workers):
    epochs = range(3)
    reference = _epochs(_loader(SampleSeededDataset(RandomDraws(), seed=0), 0, False), epochs)
    persistent = _epochs(_loader(SampleSeededDataset(RandomDraws(), seed=0), workers, workers > 0), epochs)
    resumed = _epochs(_loader(SampleSeededDataset(RandomDraws(), seed=0), 1, True), [2])
    for ref, got in zip(reference, persistent):
        torch.testing.assert_close(got, ref)  # any number of workers, alive across epochs: same items
    torch.testing.assert_close(resumed[0], reference[2])
    assert not torch.equal(reference[1][:, :3], reference[2][:, :3])  # epochs differ


def test_without_per_sample_seeds_a_resumed_persistent_loader_differs():
    # the failure the wrapper removes: a persistent worker's RNG carries on from earlier epochs while the
    # worker of a resumed run starts afresh, and the persistent loader skips a draw of the main RNG after
    # its first epoch, so a resumed run's epoch 2 holds other augmentations in another order
    full = _epochs(_loader(RandomDraws(), 1, True), range(3))[2]
    resumed = _epochs(_loader(RandomDraws(), 1, True), [2])[0]
    assert not torch.equal(full[:, 3], resumed[:, 3])  # order
    by_index = lambda batch: batch[batch[:, 3].argsort()]
    assert not torch.equal(by_index(full)[:, :3], by_index(resumed)[:, :3])  # augmentations of each image


def test_transform_and_attributes_reach_the_wrapped_dataset():
    inner = RandomDraws()
    inner.transform, inner.class_to_idx = None, {'a': 0}
    ds = SampleSeededDataset(inner, seed=0)
    ds.transform = abs
    assert inner.transform is abs and ds.class_to_idx == {'a': 0} and len(ds) == 12
