"""tools/make_tfrecords.py and data/imagenet_records.py: a folder tree -> ImageNet-style shards."""

import io
import json
import pathlib
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from noisy_student_tf.data import imagenet_records, sources

REPO = pathlib.Path(__file__).resolve().parents[1]
TOOL = REPO / 'tools' / 'make_tfrecords.py'

def _records(path):
  """The serialized records of a TFRecord file, read without TensorFlow's reader (which costs
  ~0.3 s a file to set up): uint64 length, uint32 crc, data, uint32 crc."""
  data = pathlib.Path(path).read_bytes()
  pos = 0
  while pos < len(data):
    (length,) = struct.unpack('<Q', data[pos:pos + 8])
    yield data[pos + 12:pos + 12 + length]
    pos += 12 + length + 4


def _read_shard(path):
  """The records of one shard as dicts {key: the feature's single value}, in file order."""
  out = []
  for record in _records(path):
    feature = tf.train.Example.FromString(record).features.feature
    out.append({k: (f.bytes_list.value or f.int64_list.value or f.float_list.value)[0]
                for k, f in feature.items()})
  return out


def _shards(out, prefix='train'):
  return sorted(p for p in pathlib.Path(out).iterdir() if p.name.startswith(prefix + '-0'))


def _filenames(out, prefix='train'):
  return [[r['image/filename'].decode() for r in _read_shard(p)] for p in _shards(out, prefix)]


def test_every_image_one_record_with_the_official_keys(cifar10_small, tmp_path):
  root = cifar10_small / 'test'
  classes = sorted(p.name for p in root.iterdir())
  summary = imagenet_records.write_imagenet_records(root, tmp_path, num_shards=3, num_workers=1)
  names = [p.name for p in _shards(tmp_path)]
  assert names == [f'train-{i:05d}-of-00003' for i in range(3)]
  assert summary['class_names'] == classes and summary['num_examples'] == 1000
  assert summary['examples_per_class'] == {c: 100 for c in classes}
  assert [s['name'] for s in summary['shards']] == names
  records = [r for p in _shards(tmp_path) for r in _read_shard(p)]
  files = sorted(str(p.relative_to(root)) for p in root.rglob('*.jpg'))
  assert sorted(r['image/filename'].decode() for r in records) == files  # each image exactly once
  for r in records:
    rel = r['image/filename'].decode()
    synset = r['image/class/synset'].decode()
    assert synset == rel.split('/')[0]
    assert r['image/class/label'] == classes.index(synset) + 1
    assert (r['image/height'], r['image/width'], r['image/channels']) == (32, 32, 3)
    assert r['image/format'] == b'JPEG' and r['image/colorspace'] == b'RGB'
    assert r['image/encoded'] == (root / rel).read_bytes()
  assert not [p for p in tmp_path.iterdir() if p.name.startswith('.tmp-')]


def test_shuffle_mixes_classes_balances_sizes_and_follows_the_seed(cifar10_small, tmp_path):
  root = cifar10_small / 'test'
  imagenet_records.write_imagenet_records(root, tmp_path / 'a', num_shards=7, num_workers=1)
  a = _filenames(tmp_path / 'a')
  sizes = [len(s) for s in a]
  assert sum(sizes) == 1000 and max(sizes) - min(sizes) <= 1
  for shard in a:
    assert len({f.split('/')[0] for f in shard}) >= 8  # ~143 images of 10 classes
  imagenet_records.write_imagenet_records(root, tmp_path / 'b', num_shards=7, num_workers=1)
  assert _filenames(tmp_path / 'b') == a
  for pa, pb in zip(_shards(tmp_path / 'a'), _shards(tmp_path / 'b')):
    assert pa.read_bytes() == pb.read_bytes()
  imagenet_records.write_imagenet_records(root, tmp_path / 'c', num_shards=7, num_workers=1,
                                          seed=1)
  c = _filenames(tmp_path / 'c')
  assert c != a and sorted(sum(c, [])) == sorted(sum(a, []))


def test_no_shuffle_keeps_class_order_in_contiguous_slices(cifar10_small, tmp_path):
  root = cifar10_small / 'test'
  imagenet_records.write_imagenet_records(root, tmp_path, num_shards=4, num_workers=1,
                                          shuffle=False)
  shards = _filenames(tmp_path)
  assert [len(s) for s in shards] == [250] * 4
  folder_order = [e['source_id'].decode() for e in
                  sources.open_source(f'folder:{root}').dataset.as_numpy_iterator()]
  assert sum(shards, []) == folder_order
  assert {f.split('/')[0] for f in shards[0]} == {'airplane', 'automobile', 'bird'}


def test_tfrecord_source_reads_back_the_folder_sources_labels(cifar10_small, tmp_path):
  root = cifar10_small / 'test'
  imagenet_records.write_imagenet_records(root, tmp_path, num_shards=5, num_workers=1)
  folder = {e['source_id']: (e['label'], e['encoded']) for e in
            sources.open_source(f'folder:{root}').dataset.as_numpy_iterator()}
  records = {e['source_id']: (e['label'], e['encoded']) for e in
             sources.open_source(f'tfrecord:{tmp_path}/train-*', label_offset=1)
             .dataset.as_numpy_iterator()}
  assert len(records) == 1000 and records == folder


def test_resume_rewrites_only_missing_shards_and_refuses_another_plan(cifar10_small, tmp_path):
  root = cifar10_small / 'test'
  kwargs = dict(num_shards=4, num_workers=1)
  imagenet_records.write_imagenet_records(root, tmp_path, **kwargs)
  shards = _shards(tmp_path)
  before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in shards}
  shards[2].unlink()
  # What a killed writer leaves behind: a partial file under the temporary name only.
  (tmp_path / ('.tmp-' + shards[2].name)).write_bytes(b'partial')
  summary = imagenet_records.write_imagenet_records(root, tmp_path, **kwargs)
  assert summary['written'] == [shards[2].name]
  assert summary['skipped'] == [p.name for i, p in enumerate(shards) if i != 2]
  after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in _shards(tmp_path)}
  assert after.keys() == before.keys()
  for i, p in enumerate(shards):
    assert after[p.name][1] == before[p.name][1]
    if i != 2:
      assert after[p.name][0] == before[p.name][0]
  assert not [p for p in tmp_path.iterdir() if p.name.startswith('.tmp-')]
  # A complete rerun writes nothing.
  assert imagenet_records.write_imagenet_records(root, tmp_path, **kwargs)['written'] == []

  with pytest.raises(ValueError, match=r'num_shards: 4 there, 5 now'):
    imagenet_records.write_imagenet_records(root, tmp_path, num_shards=5, num_workers=1)
  with pytest.raises(ValueError, match=r'seed: 0 there, 3 now'):
    imagenet_records.write_imagenet_records(root, tmp_path, seed=3, **kwargs)
  smaller = tmp_path / 'smaller'
  shutil.copytree(root, smaller)
  (smaller / 'cat' / '0000.jpg').unlink()
  with pytest.raises(ValueError, match='fingerprint'):
    imagenet_records.write_imagenet_records(smaller, tmp_path, **kwargs)
  # Another prefix in the same folder is independent.
  imagenet_records.write_imagenet_records(root, tmp_path, prefix='validation', num_shards=2,
                                          num_workers=1)
  assert len(_shards(tmp_path, 'validation')) == 2


def test_a_failing_run_leaves_no_partial_shard_and_resumes(cifar10_small, tmp_path):
  root = tmp_path / 'images'
  shutil.copytree(cifar10_small / 'test', root)
  bad = root / 'dog' / 'broken.jpg'
  bad.write_bytes(b'this is not an image')
  out = tmp_path / 'out'
  with pytest.raises(ValueError, match='broken.jpg'):
    imagenet_records.write_imagenet_records(root, out, num_shards=4, num_workers=1, shuffle=False)
  # Shards before the one holding the bad file are complete; nothing else is there.
  names = sorted(p.name for p in out.iterdir())
  assert names == ['train-00000-of-00004', 'train-00001-of-00004', 'train.manifest.json']
  assert len(_read_shard(out / names[0])) == 251  # 1001 images in 4 slices
  bad.write_bytes((root / 'dog' / '0000.jpg').read_bytes())
  summary = imagenet_records.write_imagenet_records(root, out, num_shards=4, num_workers=1,
                                                    shuffle=False)
  assert summary['written'] == ['train-00002-of-00004', 'train-00003-of-00004']
  assert sum(len(_read_shard(p)) for p in _shards(out)) == 1001


def test_bad_input_is_refused_before_any_work(cifar10_small, tmp_path):
  root = cifar10_small / 'test'
  write = imagenet_records.write_imagenet_records
  out = tmp_path / 'out'
  with pytest.raises(FileNotFoundError, match='nowhere'):
    write(tmp_path / 'nowhere', out)
  (tmp_path / 'flat').mkdir()
  (tmp_path / 'flat' / 'a.jpg').write_bytes((root / 'cat' / '0000.jpg').read_bytes())
  with pytest.raises(FileNotFoundError, match='no class sub-folders'):
    write(tmp_path / 'flat', out)
  (tmp_path / 'empty' / 'cat').mkdir(parents=True)
  (tmp_path / 'empty' / 'cat' / 'notes.txt').write_text('no images here')
  with pytest.raises(FileNotFoundError, match='no image files'):
    write(tmp_path / 'empty', out)
  with pytest.raises(ValueError, match='num_shards must be >= 1, got 0'):
    write(root, out, num_shards=0)
  with pytest.raises(ValueError, match=r'num_shards=1001 is more than the 1000 images'):
    write(root, out, num_shards=1001)
  with pytest.raises(ValueError, match='num_workers'):
    write(root, out, num_workers=-2)
  with pytest.raises(ValueError, match='prefix'):
    write(root, out, prefix='a/b')
  assert not out.exists()
  out.mkdir()
  (out / 'train-00000-of-00002').write_bytes(b'')
  with pytest.raises(ValueError, match='no manifest'):
    write(root, out, num_shards=2)


def _encode(fmt, mode):
  """(bytes, channels) of a small image of width 7 and height 5 in PIL format `fmt`."""
  image = Image.fromarray(np.random.RandomState(0).randint(0, 255, (5, 7, 4), np.uint8), 'RGBA')
  buf = io.BytesIO()
  image.convert(mode).save(buf, fmt, **({'lossless': True} if mode == 'RGBA' and
                                                    fmt == 'WEBP' else {}))
  return buf.getvalue()


@pytest.mark.parametrize('fmt, mode, channels', [
    ('PNG', 'RGB', 3), ('PNG', 'L', 1), ('PNG', 'RGBA', 4), ('PNG', 'P', 3), ('JPEG', 'L', 1),
    ('GIF', 'P', 3), ('BMP', 'RGB', 3), ('WEBP', 'RGB', 3), ('WEBP', 'RGBA', 4)])
def test_image_info_reads_shapes_from_headers(fmt, mode, channels):
  data = _encode(fmt, mode)
  assert imagenet_records.image_info(data) == (fmt, 5, 7, channels)


def test_format_comes_from_the_bytes_not_the_name(tmp_path):
  (tmp_path / 'a').mkdir()
  (tmp_path / 'a' / 'really_a_png.jpg').write_bytes(_encode('PNG', 'RGB'))
  (tmp_path / 'a' / 'x.png').write_bytes(_encode('PNG', 'L'))
  imagenet_records.write_imagenet_records(tmp_path, tmp_path / 'out', num_shards=1)
  records = _read_shard(tmp_path / 'out' / 'train-00000-of-00001')
  got = {r['image/filename']: (r['image/format'], r['image/channels'], r['image/colorspace'])
         for r in records}
  assert got == {b'a/really_a_png.jpg': (b'PNG', 3, b'RGB'), b'a/x.png': (b'PNG', 1, b'Grayscale')}


def _run_tool(*args):
  return subprocess.run([sys.executable, str(TOOL), *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300)


def test_spawned_workers_write_the_same_shards_as_one_process(cifar10_small, tmp_path,
                                                             monkeypatch):
  root = cifar10_small / 'test'
  monkeypatch.setattr(imagenet_records, '_MAIN_PROCESS_WRITES', False)  # workers write them all
  parallel = imagenet_records.write_imagenet_records(root, tmp_path / 'par', num_shards=4,
                                                     num_workers=2, seed=5)
  assert sorted(parallel['written']) == [f'train-{i:05d}-of-00004' for i in range(4)]
  monkeypatch.setattr(imagenet_records, '_MAIN_PROCESS_WRITES', True)
  imagenet_records.write_imagenet_records(root, tmp_path / 'one', num_shards=4, num_workers=1,
                                          seed=5)
  par, one = _shards(tmp_path / 'par'), _shards(tmp_path / 'one')
  assert [p.name for p in par] == [p.name for p in one] and len(par) == 4
  for a, b in zip(par, one):
    assert a.read_bytes() == b.read_bytes()


def test_tool_runs_and_prints_the_summary(cifar10_small, tmp_path):
  root = cifar10_small / 'test'
  out = tmp_path / 'out'
  proc = _run_tool(f'--input_dir={root}', f'--output_dir={out}', '--num_shards=3',
                   '--num_workers=1', '--noshuffle', '--label_offset=0', '--prefix=validation')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'images/s' in proc.stderr  # the per-shard progress lines
  summary = json.loads(proc.stdout)
  assert summary['num_examples'] == 1000 and summary['label_offset'] == 0
  assert [s['name'] for s in summary['shards']] == [p.name for p in _shards(out, 'validation')]
  assert json.loads((out / 'validation.manifest.json').read_text())['complete']
  first = _read_shard(out / 'validation-00000-of-00003')[0]
  assert first['image/class/label'] == 0 and first['image/filename'] == b'airplane/0000.jpg'


def test_tool_fails_naming_a_bad_input_dir(tmp_path):
  missing = tmp_path / 'no_such_folder'
  proc = _run_tool(f'--input_dir={missing}', f'--output_dir={tmp_path / "out"}')
  assert proc.returncode != 0
  assert str(missing) in proc.stderr
