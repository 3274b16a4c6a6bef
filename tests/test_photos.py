""" The photo-objects builder on generated stamps and backgrounds (no Debian package needed). """
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samix_timm.data import EmbeddedDataError, PhotoObjectsConfig, build_photo_objects
from samix_timm.data.__main__ import main as data_main
from samix_timm.data.photos import MANIFEST, _object_key, build_id, object_mask_path

COLOURS = {'reds': (220, 30, 30), 'greens': (30, 200, 40), 'blues': (30, 60, 220)}
CLASSES = {name: (f'things/{name}',) for name in COLOURS}
TINY = PhotoObjectsConfig(seed=1, canvas=32, num_train=30, num_val=15, max_rotation=0.0, brightness=0.0)


@pytest.fixture(scope='module')
def sources(tmp_path_factory):
    """Opaque coloured discs on transparent stamps (3 classes x 3 objects, one `_mirror` copy and one cartoon
    drawing that must be left out), and two striped grey backgrounds."""
    root = tmp_path_factory.mktemp('sources')
    yy, xx = np.mgrid[:40, :60]
    disc = ((yy - 20) ** 2 / 18 ** 2 + (xx - 30) ** 2 / 28 ** 2) <= 1
    for name, rgb in COLOURS.items():
        folder = root / 'stamps' / 'things' / name
        (folder / 'cartoon').mkdir(parents=True)
        for i in range(3):
            px = np.zeros((40, 60, 4), np.uint8)
            px[disc] = (*rgb, 255)
            px[disc, 0] = min(255, rgb[0] + 10 * i)
            Image.fromarray(px, 'RGBA').save(folder / f'thing{i}.png')
        Image.open(folder / 'thing0.png').transpose(Image.FLIP_LEFT_RIGHT).save(folder / 'thing0_mirror.png')
        Image.fromarray(np.full((40, 60, 4), 255, np.uint8), 'RGBA').save(folder / 'cartoon' / 'drawing.png')
    (root / 'backgrounds').mkdir()
    for i in range(2):
        stripes = np.zeros((80, 100, 3), np.uint8)
        stripes[::4] = 90 + 40 * i
        Image.fromarray(stripes, 'RGB').save(root / 'backgrounds' / f'bg{i}.jpg')
    return root


def _build(out, sources, cfg=TINY):
    return build_photo_objects(out, cfg, stamps_dir=sources / 'stamps', backgrounds_dir=sources / 'backgrounds',
                               classes=CLASSES)


def test_build_is_an_image_folder_with_object_masks(sources, tmp_path):
    root = _build(tmp_path / 'photos', sources)
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest['counts'] == {'train': 30, 'val': 15}
    assert all('cartoon' not in s for stamps in manifest['stamps'].values() for s in stamps)
    for split, n in (('train', 10), ('val', 5)):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(COLOURS)  # masks are not a class
        for name, rgb in COLOURS.items():
            files = sorted((root / split / name).glob('*.png'))
            assert len(files) == n
            for f in files:
                img = np.asarray(Image.open(f)).astype(int)
                mask = np.asarray(Image.open(object_mask_path(root, f)))
                assert img.shape == (32, 32, 3) and mask.shape == (32, 32)
                assert set(np.unique(mask)) <= {0, 128, 255} and (mask == 255).sum() >= 20
                # the labelled object is where the mask says: its class colour inside, the grey background outside
                inside = img[mask == 255].mean(0)
                assert np.argmax(inside) == np.argmax(rgb), (f, inside)
                near = np.zeros_like(mask, dtype=bool)  # object edges are soft: 2 px around an object left out
                padded = np.pad(mask > 0, 2)
                for dy in range(5):
                    for dx in range(5):
                        near |= padded[dy:dy + 32, dx:dx + 32]
                outside = img[~near]
                assert np.abs(outside - outside.mean(1, keepdims=True)).max() <= 2  # grey stripes only


def test_same_config_is_reused_and_another_refused(sources, tmp_path):
    root = _build(tmp_path / 'photos', sources)
    first = sorted((p.name, p.stat().st_mtime_ns) for p in root.rglob('*.png'))
    assert sorted((p.name, p.stat().st_mtime_ns) for p in _build(root, sources).rglob('*.png')) == first
    again = _build(tmp_path / 'again', sources)
    a, b = (sorted(r.rglob('*.png')) for r in (root, again))
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]  # deterministic for a seed
    assert build_id(root) == build_id(again) and build_id(root).startswith('photo_objects:')
    with pytest.raises(EmbeddedDataError, match='another --out'):
        _build(root, sources, PhotoObjectsConfig(seed=2, canvas=32, num_train=30, num_val=15))


def test_stamp_split_holds_out_whole_objects(sources, tmp_path):
    cfg = PhotoObjectsConfig(seed=0, canvas=32, num_train=30, num_val=15, split='stamp', val_stamp_frac=0.4)
    manifest = json.loads((_build(tmp_path / 'photos', sources, cfg) / MANIFEST).read_text())
    train, val = ({c: {_object_key(sources / 'stamps' / p) for p in v} for c, v in manifest['split_stamps'][s].items()}
                  for s in ('train', 'val'))
    for c in COLOURS:  # every class on both sides, no object on both (its _mirror copy included)
        assert train[c] and val[c] and not train[c] & val[c], (c, train[c], val[c])
    assert _object_key(sources / 'a' / 'thing0_mirror.png') == _object_key(sources / 'a' / 'thing0.png')
    assert _object_key(sources / 'a' / 'cep-2.png') == _object_key(sources / 'a' / 'cep.png')
    assert _object_key(sources / 'a' / 'flower1.png') != _object_key(sources / 'a' / 'flower2.png')




def test_test_split_adds_images_of_the_val_objects_and_changes_nothing_else(sources, tmp_path):
    kw = dict(seed=0, canvas=32, num_train=30, num_val=15, split='stamp', val_stamp_frac=0.4, max_rotation=0.0,
              brightness=0.0)
    plain, with_test = (_build(tmp_path / n, sources, PhotoObjectsConfig(**kw, num_test=t))
                        for n, t in (('plain', 0), ('test', 30)))
    assert 'num_test' not in json.loads((plain / MANIFEST).read_text())['config']  # older builds keep their id
    manifest = json.loads((with_test / MANIFEST).read_text())
    assert manifest['counts'] == {'train': 30, 'val': 15, 'test': 30} and build_id(plain) != build_id(with_test)
    for split in ('train', 'val'):  # drawn after them: the train and val images are the same bytes
        a, b = (sorted(r.glob(f'{split}/*/*.png')) for r in (plain, with_test))
        assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b] and a
    # each stamp's red channel is its class's + 10 x its number: a test object shows a held-out (val) stamp
    val_reds = {c: {min(255, COLOURS[c][0] + 10 * int(Path(p).name[len('thing')])) for p in v}
                for c, v in manifest['split_stamps']['val'].items()}
    for c in COLOURS:
        files = sorted((with_test / 'test' / c).glob('*.png'))
        assert len(files) == 10
        for f in files:
            mask = np.asarray(Image.open(object_mask_path(with_test, f))) == 255
            red = int(np.median(np.asarray(Image.open(f))[..., 0][mask]))
            assert red in val_reds[c], (f, red, val_reds[c])


@pytest.mark.parametrize('missing, line', [('stamps', 'apt-get install tuxpaint-stamps-default'),
                                           ('backgrounds', 'apt-get install tuxpaint-data')])
def test_missing_package_is_one_line_naming_it(missing, line, sources, tmp_path, monkeypatch, capsys):
    """The package's folder missing names the apt-get line; a folder the user passed names the flag instead
    (it said apt-get install for an empty --backgrounds folder, issue 44 audit)."""
    import samix_timm.data.__main__ as cli
    import samix_timm.data.photos as photos
    default = str(tmp_path / 'not_installed')
    monkeypatch.setattr(photos, f'{missing.upper()}_DIR', default)
    monkeypatch.setattr(cli, f'{missing.upper()}_DIR', default)
    given = {'stamps': str(sources / 'stamps'), 'backgrounds': str(sources / 'backgrounds')}
    given.pop(missing)
    flags = [x for k, v in given.items() for x in (f'--{k}', v)]
    assert data_main(['--photos', '--out', str(tmp_path / 'out'), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and line in err[0], err
    (tmp_path / 'empty').mkdir()
    assert data_main(['--photos', '--out', str(tmp_path / 'out'), *flags, f'--{missing}', str(tmp_path / 'empty')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f'pass --{missing} a folder' in err[0] and 'apt-get' not in err[0], err
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('flags, line', [(['--lams', '1.5'], '--lams 1.5 is not in (0, 1)'),
                                         (['--images', '0'], '--images 0 must be at least 1'),
                                         (['--batch', '1'], '--batch 1 must be at least 2')])
def test_object_retention_refuses_bad_values_in_one_line(flags, line, tmp_path, capsys):
    """--lams 1.5 ended in a NaN traceback, --images 0 blamed the data (issue 44 audit)."""
    from conftest import load_bench
    bench = load_bench('object_retention')
    assert bench.main(['--data-dir', str(tmp_path), '--mixer', 'x', *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f'error: {line}'] or (len(err) == 1 and err[0].startswith(f'error: {line}')), err


def test_options_of_the_other_dataset_are_refused(tmp_path, capsys):
    assert data_main(['--out', str(tmp_path / 'x'), '--split', 'stamp']) == 2
    assert data_main(['--photos', '--out', str(tmp_path / 'x'), '--fragment-size', '4']) == 2
    assert data_main(['--out', str(tmp_path / 'x'), '--backgrounds', str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith('error: --') for line in err)
    assert data_main(['--photos', '--out', str(tmp_path / 'x'), '--split', 'pixels']) == 2


def test_object_retention_by_hand():
    """bench/object_retention.py: retention = share of the object left visible / share of the image, 1 for a
    mask that ignores where the object is."""
    import torch
    from conftest import load_bench
    bench = load_bench('object_retention')
    obj = torch.zeros(2, 1, 8, 8)
    obj[:, :, :, :4] = 1  # every object on the left half
    s = torch.zeros(2, 1, 8, 8)
    s[:, :, :, 4:] = 1  # the partner pasted on the right half: a keeps its object, b loses its own
    r = bench.retention(s, obj, torch.tensor([1, 0]))
    assert r['a'] == pytest.approx(2.0) and r['b'] == pytest.approx(0.0) and r['share_a'] == pytest.approx(0.5)
    r = bench.retention(torch.full((2, 1, 8, 8), 0.3), obj, torch.tensor([1, 0]))  # a blend keeps both at 1
    assert r['a'] == pytest.approx(1.0) and r['b'] == pytest.approx(1.0)
    boxes = bench.cutmix_masks(400, 32, 0.5, np.random.default_rng(0))
    assert set(boxes.unique().tolist()) == {0.0, 1.0} and 0.3 < float(boxes.mean()) < 0.5  # clipped at borders


@pytest.mark.parametrize('photos', [False, True])
def test_fewer_images_than_classes_is_one_line(photos, sources, tmp_path, capsys):
    """--num-train 5 over 10 classes built an empty training split without a word (5 // 10 = 0 per class)."""
    argv = ['--out', str(tmp_path / 'out'), '--num-train', '5', '--num-val', '50']
    if photos:
        argv = ['--photos', *argv, '--stamps', str(sources / 'stamps'), '--backgrounds', str(sources / 'backgrounds')]
        with pytest.raises(EmbeddedDataError, match='num_train=2, num_val=15: each must be at least the 3 classes'):
            _build(tmp_path / 'lib', sources, PhotoObjectsConfig(canvas=32, num_train=2, num_val=15))
    assert data_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'num_train=5' in err[0] and 'classes' in err[0], err
    assert not (tmp_path / 'out').exists()


def test_negative_test_split_is_one_line(tmp_path, capsys):
    assert data_main(['--photos', '--out', str(tmp_path / 'out'), '--num-test', '-1']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'num_test >= 0' in err[0], err
    assert not (tmp_path / 'out').exists()
