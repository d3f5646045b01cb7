"""Draws the pseudo-label gallery of any ns-label output: per class the most confident images, those
nearest the filter threshold and, with true labels, the confidently wrong ones.

Usage:
  python tools/pseudo_gallery.py --records='W/gen0/pseudo/*.tfrecord' --out=/tmp/gallery.png \
    [--model_dir=W/gen0/model] [--truth=folder:W/data/unlabeled] [--threshold=0.3] \
    [--per_class=8] [--max_classes=20] [--tensorboard_dir=/tmp/tb]

Writes OUT (the grid) and, when --truth gives true labels, beside it OUT's name with `_accuracy`
(per-class pseudo-label accuracy), `_confusion` (true labels against pseudo-labels) and
`_reliability` (accuracy by the teacher's confidence) before the extension; with --tensorboard_dir,
the same images as TensorBoard image summaries.  ns-pipeline draws the same figures for every
generation into W/gen<g>/gallery/.
"""

import os

from absl import app, flags

from noisy_student_tf.selftrain import gallery_figures
from noisy_student_tf.selftrain import pseudo_gallery

FLAGS = flags.FLAGS


def define_flags():
  """Defines the tool's flags (only when run as a script)."""
  flags.DEFINE_string('records', None, 'Pseudo-label records: a folder written by ns-label, a glob '
                      "such as 'W/gen0/pseudo/*.tfrecord', or pseudo:GLOB.")
  flags.DEFINE_string('out', None, 'The grid PNG to write; with --truth the accuracy chart, the '
                      'confusion matrix and the reliability diagram go beside it as '
                      '<name>_accuracy.png, <name>_confusion.png and <name>_reliability.png.')
  flags.DEFINE_string('model_dir', None, "The teacher's model dir, for its class names "
                      "(config.json); unset: class numbers.")
  flags.DEFINE_string('truth', None, 'Source spec of the labeled images that were pseudo-labeled '
                      '(e.g. folder:W/data/unlabeled), for the true labels; unset: none.')
  flags.DEFINE_float('threshold', 0.3, 'The filter threshold the near-threshold images are '
                     'closest to.')
  flags.DEFINE_integer('per_class', pseudo_gallery.DEFAULT_PER_CLASS,
                       'Images per class in each category.')
  flags.DEFINE_integer('max_classes', pseudo_gallery.DEFAULT_MAX_CLASSES,
                       'Show the first this many classes; 0: all.')
  flags.DEFINE_string('tensorboard_dir', None, 'Also write the images as TensorBoard image '
                      'summaries here; unset: no summaries.')
  flags.DEFINE_string('title', '', 'Title above the figures.')


def companion_path(out, suffix):
  """'X_<suffix>.png' for out 'X.png'."""
  stem, ext = os.path.splitext(out)
  return f'{stem}_{suffix}' + (ext or '.png')


def main(argv):
  """Selects, draws and writes the gallery the flags describe; exits non-zero on bad input."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  for name in ('records', 'out'):
    if not getattr(FLAGS, name):
      raise app.UsageError(f'--{name} is required')
  try:
    _, _, _, images = pseudo_gallery.gallery_images(
        FLAGS.records, FLAGS.threshold, model_dir=FLAGS.model_dir, truth_spec=FLAGS.truth,
        per_class=FLAGS.per_class, max_classes=FLAGS.max_classes or None, title=FLAGS.title,
        require_truth=bool(FLAGS.truth))
  except ValueError as e:
    raise SystemExit(f'pseudo_gallery: {e}') from None
  paths = {pseudo_gallery.GALLERY_TAG: FLAGS.out,
           pseudo_gallery.ACCURACY_TAG: companion_path(FLAGS.out, 'accuracy'),
           pseudo_gallery.CONFUSION_TAG: companion_path(FLAGS.out, 'confusion'),
           pseudo_gallery.RELIABILITY_TAG: companion_path(FLAGS.out, 'reliability')}
  for tag, png in images.items():
    gallery_figures.write_bytes(paths[tag], png)
    print(paths[tag])
  if FLAGS.tensorboard_dir:
    pseudo_gallery.write_summaries(FLAGS.tensorboard_dir, images, step=0)
    print(FLAGS.tensorboard_dir)


if __name__ == '__main__':
  define_flags()
  app.run(main)
