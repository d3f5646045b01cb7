"""Converts an official TF1 EfficientNet / Noisy Student checkpoint into a model dir, or back.

  # official checkpoint -> model dir (EMA shadows served, model inferred from the checkpoint)
  python tools/convert_checkpoint.py --checkpoint=noisy_student_efficientnet-b0 \
      --model_dir=models/ns-b0
  # model dir -> checkpoint with the official variable names
  python tools/convert_checkpoint.py --model_dir=models/ns-b0 --export_official=out/model.ckpt

Prints the conversion report as JSON; exits non-zero with a message naming the offending
variable when the checkpoint does not fit (nothing is written then).
"""

import json
import os
import sys

os.environ.setdefault('KERAS_BACKEND', 'tensorflow')

from absl import app, flags

flags.DEFINE_string('checkpoint', None, 'Official TF1 checkpoint to convert: a prefix (DIR/model.ckpt), '
                    'its .index file, or the folder of an extracted tarball.')
flags.DEFINE_string('model_dir', None, 'Model dir to write (conversion) or to read (with '
                    '--export_official).')
flags.DEFINE_string('export_official', None, 'Reverse direction: write the weights of --model_dir as '
                    'a TF1 checkpoint with official names at this prefix (e.g. out/model.ckpt).')
flags.DEFINE_string('model', None, 'Model name (efficientnet-b0 ... -b7, efficientnet-l2, '
                    'efficientnet-l2-475); default: inferred from the checkpoint scope and shapes.')
flags.DEFINE_integer('resolution', None, 'Input resolution recorded in the model dir; default the '
                     'variant\'s (475 selects efficientnet-l2-475 for an L2 checkpoint).')
flags.DEFINE_enum('weights', 'ema', ['ema', 'raw'], 'Which checkpoint values the model dir serves: '
                  'the ExponentialMovingAverage shadows (as the official evaluation) or the raw ones.')
flags.DEFINE_string('class_names', None, 'Text file with one class name per line; default the '
                    'ImageNet synsets for 1000-class checkpoints.')
flags.DEFINE_string('scope', None, 'With --export_official: top-level scope of the written names '
                    '(default the official one, e.g. efficientnet-b0).')
flags.DEFINE_bool('overwrite', False, 'Replace an existing model dir / checkpoint.')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  if not FLAGS.model_dir:
    raise app.UsageError('--model_dir is required')
  if bool(FLAGS.checkpoint) == bool(FLAGS.export_official):
    raise app.UsageError('pass exactly one of --checkpoint (convert into --model_dir) and '
                         '--export_official (export --model_dir)')
  from noisy_student_tf import convert
  try:
    if FLAGS.export_official:
      result = convert.export_official(FLAGS.model_dir, FLAGS.export_official, scope=FLAGS.scope,
                                       overwrite=FLAGS.overwrite)
    else:
      class_names = (convert.read_class_names(FLAGS.class_names) if FLAGS.class_names else None)
      report = convert.convert_checkpoint(
          FLAGS.checkpoint, FLAGS.model_dir, model=FLAGS.model, resolution=FLAGS.resolution,
          weights=FLAGS.weights, class_names=class_names, overwrite=FLAGS.overwrite)
      result = report.to_json()
      result['ignored'] = _summarise(result['ignored'])
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f'convert_checkpoint: {e}')
  print(json.dumps(result, indent=2, sort_keys=True))


def _summarise(ignored):
  """{reason: {'count': n, 'examples': first 3 names}} for the printed report."""
  out = {}
  for name, reason in sorted(ignored.items()):
    entry = out.setdefault(reason, {'count': 0, 'examples': []})
    entry['count'] += 1
    if len(entry['examples']) < 3:
      entry['examples'].append(name)
  return out


def run():
  app.run(main)


if __name__ == '__main__':
  run()
