"""What the teacher taught, as pictures: per class, the pseudo-labeled images worth looking at.

The images: the most confident, those nearest the filter threshold and, where true labels are
known, the confidently wrong ones, chosen in one bounded streaming pass (gallery_selection.py);
with true labels also the accuracy of every class's pseudo-labels, their confusion matrix and the
teacher's reliability (accuracy by confidence bin).  A record's true label comes
from the source that was labeled, looked up by `image/source_id` (`source_labels`): with
ns-pipeline's `--labeled_per_class` that is W/data/unlabeled/<class>/..., whose folder is the
hidden class.  Class names come from the teacher's model dir (config.json).

`write_gallery` draws the figures (gallery_figures.py) into OUT_DIR:
  pseudo_gallery.png    rows: classes; column groups: most confident | nearest the threshold |
                        confidently wrong; captions: confidence and, when known, the true label
  pseudo_accuracy.png   per-class pseudo-label accuracy (only with true labels)
  pseudo_confusion.png  true labels against pseudo-labels, each true class's row in percent of its
                        records (only with true labels; the classes shown)
  pseudo_reliability.png  pseudo-label accuracy by the teacher's confidence, against the diagonal,
                        with the records per bin and the threshold (only with true labels)
  confusion.npy         the whole confusion matrix, int64 [C, C] (rows: true label; columns:
                        pseudo-label; only with true labels)
  tensorboard/          the same images as TensorBoard image summaries (step: the generation)
  gallery.json          what was selected and what from; written last: the completion marker
"""

import io
import logging
import os
import shutil
from typing import Sequence

import numpy as np
import tensorflow as tf

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf.data import records as records_lib
from noisy_student_tf.data import sources
from noisy_student_tf.selftrain import gallery_figures
from noisy_student_tf.selftrain import gallery_selection
from noisy_student_tf.selftrain import shards
from noisy_student_tf.selftrain.gallery_selection import CATEGORIES, DEFAULT_PER_CLASS, UNKNOWN

CATEGORY_TITLES = {'confident': 'most confident', 'near_threshold': 'nearest the threshold',
                   'wrong': 'confidently wrong'}
GALLERY_PNG = 'pseudo_gallery.png'
ACCURACY_PNG = 'pseudo_accuracy.png'
CONFUSION_PNG = 'pseudo_confusion.png'
RELIABILITY_PNG = 'pseudo_reliability.png'
CONFUSION_NPY = 'confusion.npy'
TENSORBOARD_DIR = 'tensorboard'
GALLERY_JSON = 'gallery.json'
GALLERY_TAG = 'pseudo_labels/gallery'
ACCURACY_TAG = 'pseudo_labels/accuracy'
CONFUSION_TAG = 'pseudo_labels/confusion'
RELIABILITY_TAG = 'pseudo_labels/reliability'
PNG_FILES = {GALLERY_TAG: GALLERY_PNG, ACCURACY_TAG: ACCURACY_PNG, CONFUSION_TAG: CONFUSION_PNG,
             RELIABILITY_TAG: RELIABILITY_PNG}
DEFAULT_MAX_CLASSES = 20


def source_labels(spec, *, num_classes=None, data_dir=None, label_offset=0):
  """The true labels of the labeled source `spec`, by source id: {source_id (str): label}.

  Returns None when the source has no labels (images:), is a pseudo: source (its labels are
  pseudo-labels, not truth) or has another class count than `num_classes`.  A folder: or digits:
  source costs nothing to read (its file list is in memory); other kinds (tfds:, tfrecord:) are
  read once, labels and ids only kept.  Memory: one entry per image of the source.  Raises
  ValueError when the spec is bad or names no files.
  """
  kind, _ = sources.parse_spec(spec)
  if kind == 'pseudo':
    return None
  try:
    source = sources.open_source(spec, data_dir=data_dir, label_offset=label_offset)
  except FileNotFoundError as e:
    raise ValueError(f'the source of the true labels: {e}') from None
  if not source.labeled or (num_classes is not None and source.num_classes is not None and
                            source.num_classes != num_classes):
    logging.info('pseudo gallery: %r gives no true labels for %s classes (its classes: %s)',
                 spec, num_classes, source.num_classes)
    return None
  if source.files is not None:
    return dict(zip(source.files.ids, source.files.labels.tolist()))
  pairs = source.dataset.map(lambda d: (d['source_id'], d['label']))
  return {gallery_selection.text(sid): int(label) for sid, label in pairs.as_numpy_iterator()
          if label >= 0}


def class_names_of(model_dir, num_classes):
  """The class names in `model_dir`'s config.json (the teacher's), else '0' ... 'C-1'.

  Raises ValueError when the model dir names another number of classes than num_classes."""
  names = None
  if model_dir:
    try:
      names = model_dir_lib.read_config(model_dir).class_names
    except FileNotFoundError as e:
      raise ValueError(f'model_dir {model_dir!r} for the class names: {e}') from None
  if names is None:
    return [str(i) for i in range(num_classes)]
  if len(names) != num_classes:
    raise ValueError(f'model_dir {model_dir!r} names {len(names)} classes but the pseudo-labels '
                     f'have {num_classes}')
  return list(names)


def _decode(tile):
  try:
    return tf.io.decode_image(tile.encoded, channels=3, expand_animations=False).numpy()
  except (tf.errors.InvalidArgumentError, ValueError) as e:
    raise ValueError(f'pseudo-label record {tile.source_id!r} holds no decodable image: '
                     f'{e}') from None


def shown_classes(num_classes, max_classes):
  """The classes a gallery shows: the first max_classes (all when max_classes is None)."""
  return list(range(num_classes if max_classes is None else min(num_classes, max_classes)))


def gallery_png(selection, class_names, classes, title=''):
  """The gallery of `selection` as PNG bytes: one row per class of `classes`, one column group
  per category (the 'wrong' group only when true labels are known), captions with confidence
  and, when known, the true label."""
  categories = [c for c in CATEGORIES if c != 'wrong' or selection.has_truth]
  rows = []
  for c in classes:
    groups = []
    for category in categories:
      groups.append([gallery_figures.TileImage(
          _decode(t), f'{t.confidence:.2f}' + (
              '' if t.true_label == UNKNOWN else f'\ntrue: {_short(class_names[t.true_label])}'),
          None if t.true_label == UNKNOWN else t.true_label == t.label)
          for t in selection.tiles[category][c]])
    rows.append(groups)
  headers = [CATEGORY_TITLES[c] + (f' ({selection.threshold:g})' if c == 'near_threshold' else '')
             for c in categories]
  return gallery_figures.tile_grid_png(rows, [_short(class_names[c], 20) for c in classes],
                                       headers, selection.per_class, title)


def _short(name, length=14):
  """A class name cut to `length` characters (an ImageNet synset's first words), to fit a tile."""
  return name if len(name) <= length else name[:length - 1] + '…'


def accuracy_png(selection, class_names, classes, title=''):
  """Per-class pseudo-label accuracy of `selection` (all records, and those >= the threshold)
  as PNG bytes, or None without true labels."""
  if not selection.has_truth:
    return None
  series = {'all pseudo-labels': selection.accuracy()[classes],
            f'confidence >= {selection.threshold:g}': selection.accuracy(True)[classes]}
  return gallery_figures.accuracy_bars_png([class_names[c] for c in classes], series, title)


def confusion_png(selection, class_names, classes, title=''):
  """The confusion matrix of `selection` over `classes` (rows: true label, in percent of all
  that class's records; columns: pseudo-label) as PNG bytes, or None without true labels."""
  if not selection.has_truth:
    return None
  rows = selection.confusion_rates()[np.ix_(classes, classes)]
  shown = len(classes) < selection.num_classes
  note = (f'the first {len(classes)} of {selection.num_classes} classes; rows in % of all the '
          'true class\'s records' if shown else 'rows: % of the true class\'s records')
  return gallery_figures.confusion_png(
      [_short(class_names[c], 20) for c in classes], rows,
      selection.confusion.sum(axis=1)[classes], title or 'pseudo-labels against true labels',
      note)


def reliability_png(selection, title=''):
  """The teacher's reliability diagram over `selection`'s records with true labels (accuracy by
  confidence bin, the threshold marked) as PNG bytes, or None without true labels."""
  if not selection.has_truth:
    return None
  accuracy, confidence = selection.reliability()
  ece = selection.calibration_error()
  heading = f'pseudo-label reliability: calibration error {100 * ece:.1f}%'
  return gallery_figures.reliability_png(selection.bin_edges(), accuracy, confidence,
                                         selection.bin_compared, selection.threshold,
                                         f'{title}\n{heading}' if title else heading)


def write_summaries(log_dir, images, step):
  """Writes each PNG of {tag: PNG bytes} as a TensorBoard image summary into log_dir."""
  writer = tf.summary.create_file_writer(log_dir)
  with writer.as_default():
    for tag, png in images.items():
      tf.summary.image(tag, tf.io.decode_png(png, channels=4)[None], step=step)
  writer.close()


def made_from(records, threshold, per_class, max_classes, truth_spec):
  """What a gallery depends on, as JSON values: the settings and the labeler's stats.json next to
  the records (rewritten by every labeling), so that a stale gallery is redone."""
  files = shards.list_record_files(records)
  stats_path = os.path.join(os.path.dirname(files[0]), shards.STATS_FILE)
  stamp = os.stat(stats_path).st_mtime_ns if os.path.exists(stats_path) else None
  return {'records': records, 'files': [os.path.basename(f) for f in files],
          'sizes': [os.path.getsize(f) for f in files], 'label_stats_mtime_ns': stamp,
          'threshold': threshold, 'per_class': per_class, 'max_classes': max_classes,
          'truth': truth_spec, 'figures': list(PNG_FILES.values())}


def is_complete(out_dir, inputs):
  """True when OUT_DIR holds a finished gallery made from `inputs` (a `made_from` dict)."""
  done = shards.read_json(os.path.join(out_dir, GALLERY_JSON))
  return bool(done) and done.get('made_from') == inputs


def gallery_images(records, threshold, *, model_dir=None, truth_spec=None,
                   per_class=DEFAULT_PER_CLASS, max_classes=DEFAULT_MAX_CLASSES, title='',
                   data_dir=None, label_offset=0, require_truth=False):
  """Selects and draws the gallery of the pseudo-label records `records`.

  model_dir: the teacher, for the class names.  truth_spec: the source spec that was labeled, for
  the true labels (None: none).  max_classes: the first classes shown (None: all).
  require_truth: raise ValueError when truth_spec gives no record a true label.
  Returns (Selection, class names, classes shown, {TensorBoard tag: PNG bytes}) with the tags
  GALLERY_TAG and, with true labels, ACCURACY_TAG, CONFUSION_TAG and RELIABILITY_TAG.  Raises
  ValueError for bad records, settings or class names.
  """
  if max_classes is not None and not (isinstance(max_classes, int) and max_classes > 0):
    raise ValueError(f'max_classes must be a positive integer or None (all), got {max_classes!r}')
  num_classes = records_lib.peek_num_classes(shards.list_record_files(records)[0])
  names = class_names_of(model_dir, num_classes)
  truth = None
  if truth_spec:
    truth = source_labels(truth_spec, num_classes=num_classes, data_dir=data_dir,
                          label_offset=label_offset)
  selection = gallery_selection.select_from_records(
      records, threshold, per_class=per_class, truth=truth, num_classes=num_classes)
  if require_truth and not selection.has_truth:
    raise ValueError(f'the true labels {truth_spec!r} give no record a true label (no labels, '
                     f'not {num_classes} classes, or none of the records\' source ids)')
  classes = shown_classes(num_classes, max_classes)
  images = {GALLERY_TAG: gallery_png(selection, names, classes, title)}
  for tag, png in ((ACCURACY_TAG, accuracy_png(selection, names, classes, title)),
                   (CONFUSION_TAG, confusion_png(selection, names, classes, title)),
                   (RELIABILITY_TAG, reliability_png(selection, title))):
    if png is not None:
      images[tag] = png
  return selection, names, classes, images


def write_gallery(records, out_dir, threshold, *, step=0, **options):
  """Writes the gallery of the pseudo-label records `records` into out_dir (see the module
  docstring), unless a finished one made from the same inputs is there.

  options: those of `gallery_images` (model_dir, truth_spec, per_class, max_classes, title,
  data_dir, label_offset).  step: the TensorBoard step (the generation).  Returns the
  gallery.json dict.  Raises ValueError for bad records, settings or class names, before writing
  anything.
  """
  inputs = made_from(records, threshold, options.get('per_class', DEFAULT_PER_CLASS),
                     options.get('max_classes', DEFAULT_MAX_CLASSES), options.get('truth_spec'))
  if is_complete(out_dir, inputs):
    return shards.read_json(os.path.join(out_dir, GALLERY_JSON))
  selection, names, classes, images = gallery_images(records, threshold, **options)
  shards.remove_if_exists(os.path.join(out_dir, GALLERY_JSON))
  for tag, name in PNG_FILES.items():
    if tag in images:
      gallery_figures.write_bytes(os.path.join(out_dir, name), images[tag])
    else:
      shards.remove_if_exists(os.path.join(out_dir, name))
  log_dir = os.path.join(out_dir, TENSORBOARD_DIR)
  shutil.rmtree(log_dir, ignore_errors=True)  # a redrawn gallery replaces the old images
  write_summaries(log_dir, images, step)
  npy = os.path.join(out_dir, CONFUSION_NPY)
  if selection.has_truth:
    buffer = io.BytesIO()
    np.save(buffer, selection.confusion)
    gallery_figures.write_bytes(npy, buffer.getvalue())
  else:
    shards.remove_if_exists(npy)
  info = {'made_from': inputs, 'num_records': selection.num_records,
          'num_classes': selection.num_classes, 'classes_shown': [names[c] for c in classes],
          'pngs': [name for tag, name in PNG_FILES.items() if tag in images],
          'accuracy': _accuracy_json(selection, names),
          'reliability': _reliability_json(selection),
          'confusion': _confusion_json(selection, names, classes),
          'selected': {c: {names[k]: [t.source_id for t in selection.tiles[c][k]] for k in classes}
                       for c in CATEGORIES}}
  shards.write_json(os.path.join(out_dir, GALLERY_JSON), info)
  logging.info('pseudo gallery: %d records, %d classes shown -> %s', selection.num_records,
               len(classes), os.path.join(out_dir, GALLERY_PNG))
  return info


def _accuracy_json(selection, names):
  if not selection.has_truth:
    return None
  return {'all': _rounded(selection.accuracy(), names),
          'above_threshold': _rounded(selection.accuracy(True), names)}


def _reliability_json(selection):
  if not selection.has_truth:
    return None
  accuracy, confidence = selection.reliability()
  return {'bin_edges': [round(float(e), 6) for e in selection.bin_edges()],
          'records': selection.bin_compared.tolist(), 'agreeing': selection.bin_correct.tolist(),
          'accuracy': [None if np.isnan(a) else round(float(a), 4) for a in accuracy],
          'mean_confidence': [None if np.isnan(c) else round(float(c), 4) for c in confidence],
          'calibration_error': round(selection.calibration_error(), 4)}


def _confusion_json(selection, names, classes):
  """The confusion counts among the classes shown (rows: true label), the shown classes' record
  totals, and the file holding the whole matrix."""
  if not selection.has_truth:
    return None
  return {'classes': [names[c] for c in classes],
          'counts': selection.confusion[np.ix_(classes, classes)].tolist(),
          'true_class_records': selection.confusion.sum(axis=1)[classes].tolist(),
          'whole_matrix': CONFUSION_NPY}


def _rounded(values, names):
  return {n: (None if np.isnan(v) else round(float(v), 4)) for n, v in zip(names, values)}


def png_paths(out_dir) -> Sequence[str]:
  """The PNGs a finished gallery in out_dir holds (relative names), [] when none is finished."""
  done = shards.read_json(os.path.join(out_dir, GALLERY_JSON))
  return list(done.get('pngs', [])) if done else []
