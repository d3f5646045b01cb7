"""The pseudo-label gallery: the selection (most confident, nearest the threshold, confidently
wrong) is exact on real CIFAR-10 JPEGs with known probabilities, the PNG has the grid's size and
layout, the confusion matrix and the reliability bins are the direct counts and their figures name
the classes, TensorBoard gets the same images, a finished gallery is not redone, memory stays
bounded by classes x per_class, and the standalone tool writes its PNGs."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf import models
from noisy_student_tf.data import records
from noisy_student_tf.data import sources
from noisy_student_tf.selftrain import gallery_figures
from noisy_student_tf.selftrain import gallery_selection
from noisy_student_tf.selftrain import pseudo_gallery

NUM_CLASSES = 10
PER_CLASS = 8
PER_FOLDER = 40  # images per class folder pseudo-labeled here
THRESHOLD = 0.5
NO_WRONG_CLASS = 9  # no record is (wrongly) pseudo-labeled as this class
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _probabilities(label, confidence):
  p = np.full(NUM_CLASSES, (1.0 - confidence) / (NUM_CLASSES - 1), np.float32)
  p[label] = confidence
  return p


@pytest.fixture(scope='module')
def labeled(cifar10_small, tmp_path_factory):
  """Pseudo-label records of the first PER_FOLDER real CIFAR-10 training JPEGs of every class, in
  2 shards, with known labels and confidences: (records glob, truth spec, folder source, the
  records as a list of dicts in stream order, model dir with class names)."""
  folder = cifar10_small / 'train'
  source = sources.open_source(f'folder:{folder}')
  rng = np.random.default_rng(0)
  rows, taken = [], np.zeros(NUM_CLASSES, int)
  for path, sid, truth in zip(source.files.paths, source.files.ids, source.files.labels):
    if taken[truth] < PER_FOLDER:
      taken[truth] += 1
      rows.append({'path': path, 'source_id': sid, 'truth': int(truth)})
  for r in rows:
    wrong = rng.random() < 0.3 and r['truth'] != NO_WRONG_CLASS
    label = r['truth']
    if wrong:
      label = int(rng.choice([c for c in range(NUM_CLASSES - 1) if c != r['truth']]))
    # Confidences on a 0.01 grid from 0.15: ties that the earlier record must win.
    r.update(label=label, confidence=np.float32(0.15 + 0.01 * rng.integers(0, 86)))
  out = tmp_path_factory.mktemp('pseudo')
  half = len(rows) // 2
  for shard, part in enumerate((rows[:half], rows[half:])):
    with records.PseudoLabelWriter(str(out), shard_index=shard, num_shards=2) as writer:
      for r in part:
        with open(r['path'], 'rb') as f:
          writer.write(f.read(), r['source_id'], _probabilities(r['label'], r['confidence']))
  teacher = tmp_path_factory.mktemp('teacher')
  model_dir_lib.write_config(str(teacher), model_dir_lib.ModelDirConfig(
      model=models.make_config('efficientnet-b0', NUM_CLASSES, width=0.25, depth=0.25),
      class_names=list(source.class_names)))
  return str(out / '*.tfrecord'), f'folder:{folder}', source, rows, str(teacher)


def _expected(rows, key, keep=lambda r: True):
  """{class: source ids of the PER_CLASS best rows by `key` (smaller first), ties: earlier}."""
  out = {}
  for c in range(NUM_CLASSES):
    chosen = [(key(r), i, r['source_id']) for i, r in enumerate(rows)
              if r['label'] == c and keep(r)]
    out[c] = [sid for _, _, sid in sorted(chosen)[:PER_CLASS]]
  return out


def test_selection_is_exact(labeled):
  glob, truth_spec, _, rows, _ = labeled
  truth = pseudo_gallery.source_labels(truth_spec, num_classes=NUM_CLASSES)
  assert len(truth) == NUM_CLASSES * 200  # the whole folder, by source id
  selection = gallery_selection.select_from_records(glob, THRESHOLD, per_class=PER_CLASS,
                                                 truth=truth)
  assert selection.num_records == len(rows) == NUM_CLASSES * PER_FOLDER
  got = {cat: {c: [t.source_id for t in selection.tiles[cat][c]] for c in range(NUM_CLASSES)}
         for cat in gallery_selection.CATEGORIES}
  assert got['confident'] == _expected(rows, lambda r: -float(r['confidence']))
  assert got['near_threshold'] == _expected(
      rows, lambda r: abs(float(r['confidence']) - THRESHOLD))
  wrong = _expected(rows, lambda r: -float(r['confidence']), lambda r: r['label'] != r['truth'])
  assert got['wrong'] == wrong and not wrong[NO_WRONG_CLASS]
  assert sum(map(len, wrong.values())) > 20
  for tiles in selection.tiles['wrong']:
    for t in tiles:  # wrong against the hidden label the folder keeps
      assert t.true_label == truth[t.source_id] != t.label
      assert t.source_id.split('/')[0] != selection_class_name(labeled, t.label)
  for c in range(NUM_CLASSES):
    mine = [r for r in rows if r['label'] == c]
    above = [r for r in mine if r['confidence'] >= THRESHOLD]
    assert selection.compared[c] == len(mine)
    assert selection.correct[c] == sum(r['label'] == r['truth'] for r in mine)
    assert selection.correct_above[c] == sum(r['label'] == r['truth'] for r in above)
  assert selection.accuracy()[NO_WRONG_CLASS] == 1.0

  confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
  for r in rows:
    confusion[r['truth'], r['label']] += 1
  assert np.array_equal(selection.confusion, confusion)
  assert np.array_equal(np.diag(selection.confusion), selection.correct)
  assert not selection.confusion[:, NO_WRONG_CLASS].sum() - selection.correct[NO_WRONG_CLASS]
  rates = selection.confusion_rates()
  assert np.allclose(rates.sum(axis=1), 1.0) and rates[3, 3] == confusion[3, 3] / PER_FOLDER
  # Reliability: bin b holds b/10 <= confidence < (b+1)/10 (confidences on a 0.01 grid, so the
  # edges themselves occur: 0.3 and 0.7 belong to bins 3 and 7).
  conf = np.array([float(r['confidence']) for r in rows])
  right = np.array([r['label'] == r['truth'] for r in rows])
  index = np.minimum(np.round(conf * 100).astype(int) // 10, 9)  # 1.0 is in the last bin
  assert np.array_equal(selection.bin_compared, np.bincount(index, minlength=10))
  assert np.array_equal(selection.bin_correct, np.bincount(index[right], minlength=10))
  assert selection.bin_compared[:1].sum() == 0 and selection.bin_compared[1] > 0  # from 0.15
  accuracy, mean_conf = selection.reliability()
  full = selection.bin_compared > 0
  assert np.isnan(accuracy[0]) and np.isnan(mean_conf[0])
  expected_conf = np.bincount(index, conf, 10)[full] / selection.bin_compared[full]
  assert np.allclose(mean_conf[full], expected_conf, atol=1e-6)
  ece = sum(np.sum(index == b) / len(rows) * abs(right[index == b].mean() - conf[index == b].mean())
            for b in range(10) if np.any(index == b))
  assert selection.calibration_error() == pytest.approx(ece, abs=1e-6)


def selection_class_name(labeled, label):
  return labeled[2].class_names[label]


def _events(log_dir):
  """{tag: (width, height, PNG bytes)} of the image summaries in log_dir's event files."""
  out = {}
  for name in os.listdir(log_dir):
    for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, name)):
      for value in event.summary.value:
        assert value.metadata.plugin_data.plugin_name == 'images'
        width, height, png = tf.make_ndarray(value.tensor)
        out[value.tag] = (int(width), int(height), png)
  return out


def test_write_gallery_png_layout_tensorboard_and_resume(labeled, tmp_path):
  glob, truth_spec, source, rows, teacher = labeled
  out = tmp_path / 'gallery'
  info = pseudo_gallery.write_gallery(glob, str(out), THRESHOLD, model_dir=teacher,
                                      truth_spec=truth_spec, per_class=PER_CLASS, step=3,
                                      title='generation 3')
  assert info['classes_shown'] == list(source.class_names)
  assert info['pngs'] == [pseudo_gallery.GALLERY_PNG, pseudo_gallery.ACCURACY_PNG,
                          pseudo_gallery.CONFUSION_PNG, pseudo_gallery.RELIABILITY_PNG]
  truth = pseudo_gallery.source_labels(truth_spec, num_classes=NUM_CLASSES)
  selection = gallery_selection.select_from_records(glob, THRESHOLD, truth=truth)
  whole = np.load(out / pseudo_gallery.CONFUSION_NPY)
  assert np.array_equal(whole, selection.confusion) and whole.sum() == len(rows)
  assert info['confusion']['counts'] == selection.confusion.tolist()
  assert info['confusion']['classes'] == list(source.class_names)
  assert info['confusion']['true_class_records'] == [PER_FOLDER] * NUM_CLASSES
  assert info['reliability']['records'] == selection.bin_compared.tolist()
  assert sum(info['reliability']['agreeing']) == sum(r['label'] == r['truth'] for r in rows)
  assert len(info['reliability']['bin_edges']) == 11
  png = Image.open(out / pseudo_gallery.GALLERY_PNG)
  size = gallery_figures.grid_pixel_size(NUM_CLASSES, 3, PER_CLASS, 'generation 3')
  assert png.size == size
  pixels = np.asarray(png.convert('RGB')).astype(int)

  def tile(row, group, slot):
    x, y = gallery_figures.tile_origin(row, group, slot, PER_CLASS, 'generation 3')
    return pixels[y:y + gallery_figures.TILE_PX, x:x + gallery_figures.TILE_PX]

  # The most confident image of class 0 is the first tile of its row, 32 px scaled to the tile.
  best = info['selected']['confident'][source.class_names[0]][0]
  image = Image.open(os.path.join(truth_spec[len('folder:'):], best)).convert('RGB')
  scaled = np.asarray(image.resize((gallery_figures.TILE_PX,) * 2, Image.NEAREST)).astype(int)
  assert np.abs(tile(0, 0, 0) - scaled).mean() < 3
  assert tile(NO_WRONG_CLASS, 2, PER_CLASS - 1).min() == 255  # no wrong ones: blank
  assert tile(NO_WRONG_CLASS, 1, PER_CLASS - 1).std() > 10  # 40 records: every slot filled

  events = _events(out / pseudo_gallery.TENSORBOARD_DIR)
  assert set(events) == set(pseudo_gallery.PNG_FILES)
  width, height, encoded = events[pseudo_gallery.GALLERY_TAG]
  assert (width, height) == size
  assert np.array_equal(np.asarray(Image.open(io.BytesIO(encoded)).convert('RGB')),
                        pixels)  # the same picture (tf.summary.image re-encodes it)
  assert Image.open(io.BytesIO(events[pseudo_gallery.ACCURACY_TAG][2])).size == Image.open(
      out / pseudo_gallery.ACCURACY_PNG).size

  mtime = (out / pseudo_gallery.GALLERY_JSON).stat().st_mtime_ns
  again = pseudo_gallery.write_gallery(glob, str(out), THRESHOLD, model_dir=teacher,
                                       truth_spec=truth_spec, per_class=PER_CLASS, step=3,
                                       title='generation 3')
  assert again == info and (out / pseudo_gallery.GALLERY_JSON).stat().st_mtime_ns == mtime
  redone = pseudo_gallery.write_gallery(glob, str(out), 0.9, model_dir=teacher, per_class=2,
                                        max_classes=3)
  assert redone['made_from']['threshold'] == 0.9 and redone['accuracy'] is None
  assert redone['pngs'] == [pseudo_gallery.GALLERY_PNG]
  assert redone['confusion'] is None and redone['reliability'] is None
  for name in (pseudo_gallery.ACCURACY_PNG, pseudo_gallery.CONFUSION_PNG,
               pseudo_gallery.RELIABILITY_PNG, pseudo_gallery.CONFUSION_NPY):
    assert not (out / name).exists(), name
  assert set(_events(out / pseudo_gallery.TENSORBOARD_DIR)) == {pseudo_gallery.GALLERY_TAG}
  assert Image.open(out / pseudo_gallery.GALLERY_PNG).size == gallery_figures.grid_pixel_size(
      3, 2, 2)


def test_confusion_and_reliability_figures_name_the_classes(labeled):
  glob, truth_spec, source, _, teacher = labeled
  selection, names, classes, _ = pseudo_gallery.gallery_images(
      glob, THRESHOLD, model_dir=teacher, truth_spec=truth_spec, max_classes=4)
  rates = selection.confusion_rates()[np.ix_(classes, classes)]
  fig = gallery_figures.confusion_figure([names[c] for c in classes], rates,
                                         selection.confusion.sum(axis=1)[classes], 'g0', 'note')
  ax = fig.axes[0]
  assert [t.get_text() for t in ax.get_xticklabels()] == list(source.class_names[:4])
  assert [t.get_text() for t in ax.get_yticklabels()] == [
      f'{n} ({PER_FOLDER})' for n in source.class_names[:4]]
  cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
           for t in ax.texts}
  assert cells[(0, 0)] == f'{100 * rates[0, 0]:.0f}'
  assert ax.images[0].get_array().shape == (4, 4)
  fig.clf()
  accuracy, confidence = selection.reliability()
  fig = gallery_figures.reliability_figure(selection.bin_edges(), accuracy, confidence,
                                           selection.bin_compared, THRESHOLD)
  ax = fig.axes[0]
  heights = [p.get_height() for p in ax.patches]
  assert np.allclose(heights, 100 * np.nan_to_num(accuracy))
  assert [t.get_text() for t in ax.texts] == [
      f'{c:,}' for c in selection.bin_compared if c > 0]
  fig.clf()


def test_selector_memory_is_bounded_by_classes_times_per_class():
  rng = np.random.default_rng(1)
  selector = gallery_selection.GallerySelector(NUM_CLASSES, THRESHOLD, PER_CLASS)
  bound = len(gallery_selection.CATEGORIES) * NUM_CLASSES * PER_CLASS
  labels, confs, truths = [], [], []
  for start in range(0, 20000, 500):
    label = rng.integers(0, NUM_CLASSES, 500)
    conf = rng.random(500).astype(np.float32)
    truth = np.where(rng.random(500) < 0.5, label, rng.integers(0, NUM_CLASSES, 500))
    ids = np.array([b'id%d' % i for i in range(start, start + 500)], object)
    selector.add(label, conf, ids, np.full(500, b'', object), truth)
    assert selector.num_kept() <= bound
    labels.append(label), confs.append(conf), truths.append(truth)
  assert selector.num_kept() == bound and selector.num_records == 20000
  labels, confs, truths = map(np.concatenate, (labels, confs, truths))
  result = selector.result()
  for c in range(NUM_CLASSES):
    mine = np.flatnonzero((labels == c) & (labels != truths))
    best = mine[np.lexsort((mine, -confs[mine]))][:PER_CLASS]
    assert [t.position for t in result.tiles['wrong'][c]] == best.tolist()


def test_duplicated_records_are_shown_once():
  selector = gallery_selection.GallerySelector(2, 0.3, 3)
  selector.add([0, 0, 0, 0], [0.9, 0.9, 0.8, 0.7], [b'a', b'a', b'b', b'c'], [b''] * 4)
  assert [t.source_id for t in selector.result().tiles['confident'][0]] == ['a', 'b', 'c']


def test_bad_input_is_refused_with_clear_errors(labeled, tmp_path):
  glob, truth_spec, _, _, teacher = labeled
  with pytest.raises(ValueError, match='no pseudo-label record files match'):
    gallery_selection.select_from_records(str(tmp_path / '*.tfrecord'), 0.3)
  with pytest.raises(ValueError, match='names 10 classes but the pseudo-labels have 5'):
    pseudo_gallery.class_names_of(teacher, 5)
  with pytest.raises(ValueError, match=r'threshold must be in \[0, 1\], got 1.5'):
    gallery_selection.select_from_records(glob, 1.5)
  with pytest.raises(ValueError, match=r'pseudo/label out of range \[0, 2\)'):
    gallery_selection.GallerySelector(2, 0.3).add([2], [0.5], [b'x'], [b''])
  assert pseudo_gallery.source_labels('pseudo:' + glob) is None  # pseudo-labels are no truth
  assert pseudo_gallery.source_labels('digits:test', num_classes=3) is None
  unlabeled = f'images:{truth_spec[len("folder:"):]}/*/*.jpg'  # the same images, no labels
  with pytest.raises(ValueError, match='give no record a true label'):
    pseudo_gallery.gallery_images(glob, 0.3, truth_spec=unlabeled, require_truth=True)


def test_tool_writes_the_pngs_and_summaries(labeled, tmp_path):
  glob, truth_spec, _, _, teacher = labeled
  out = tmp_path / 'g.png'
  run = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'pseudo_gallery.py'),
                        f'--records={glob}', f'--out={out}', f'--model_dir={teacher}',
                        f'--truth={truth_spec}', '--threshold=0.5', '--per_class=4',
                        '--max_classes=5', f'--tensorboard_dir={tmp_path / "tb"}'],
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  assert Image.open(out).size == gallery_figures.grid_pixel_size(5, 3, 4)
  for suffix in ('accuracy', 'confusion', 'reliability'):
    assert (tmp_path / f'g_{suffix}.png').exists(), suffix
  assert set(_events(tmp_path / 'tb')) == set(pseudo_gallery.PNG_FILES)
