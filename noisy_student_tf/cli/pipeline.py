"""ns-pipeline: Noisy Student end to end (teacher -> label -> filter -> student, repeated).

  ns-pipeline --flagfile=flags/demo.cfg --work_dir=/tmp/ns-demo

Every stage is skipped when its outputs are complete, so the same command resumes after a crash.
Results: W/report.json, W/report.md and W/report.png.
"""

import dataclasses

from absl import app
from absl import flags
from absl import logging

from noisy_student_tf.data import preprocessing

FLAGS = flags.FLAGS
# Data.
flags.DEFINE_string('work_dir', None, 'Where every generation\'s model, pseudo-labels and the '
                    'report go (rerun the same command to resume).')
flags.DEFINE_string('labeled', None, 'Labeled source spec, e.g. folder:PATH, tfds:cifar10:train, '
                    'digits:train.')
flags.DEFINE_string('unlabeled', None, 'Unlabeled source spec (labels ignored). Unset with '
                    '--labeled_per_class.')
flags.DEFINE_string('eval_data', None, 'Labeled test source spec every generation is scored on.')
flags.DEFINE_integer('labeled_per_class', None, 'Keep the labels of only this many images per '
                     'class of --labeled; the rest of it becomes the unlabeled data.')
flags.DEFINE_integer('split_seed', 0, 'Seed of the labeled/unlabeled split.')
flags.DEFINE_string('data_dir', None, 'tensorflow-datasets data dir (tfds: sources).')
flags.DEFINE_integer('label_offset', 0, 'Subtracted from stored labels of tfrecord: sources.')
flags.DEFINE_integer('num_classes', None, 'Class count of tfrecord: sources (default: from one '
                     'scan of their labels).')
flags.DEFINE_boolean('scan_records', True, 'Read the labels of tfrecord: sources once (cached in '
                     'W/data/source_stats) to count examples and classes and check the labels.')
flags.DEFINE_boolean('flip', True, 'Random horizontal flips of training images (off for digits).')
# Models.
flags.DEFINE_list('models', ['efficientnet-b0'], 'Model per generation, teacher first (e.g. '
                  'b0,b0,b1); one name is used for all.')
flags.DEFINE_integer('generations', 1, 'Student rounds after the teacher.')
flags.DEFINE_list('widths', None, 'Width multiplier per generation (or one for all); default: '
                  'the named model\'s.')
flags.DEFINE_list('depths', None, 'Depth multiplier per generation (or one for all); default: '
                  'the named model\'s.')
flags.DEFINE_integer('resolution', None, 'Input resolution of every model (default: the named '
                     'model\'s).')
flags.DEFINE_boolean('small_image', False, 'Small-image strides (32 px images: CIFAR, SVHN).')
flags.DEFINE_string('teacher_model_dir', None, 'Use this trained model dir as the generation-0 '
                    'teacher instead of training one.')
# Training, both.
flags.DEFINE_integer('batch_size', 64, 'Labeled images per step (global).')
flags.DEFINE_integer('eval_batch_size', 256, 'Images per evaluation batch.')
flags.DEFINE_enum('optimizer', 'momentum', ['rmsprop', 'momentum', 'adam'], 'Optimizer.')
flags.DEFINE_float('base_learning_rate', 0.1, 'Learning rate per 256 labeled images.')
flags.DEFINE_enum('lr_schedule', 'cosine', ['exponential', 'cosine', 'constant'], 'LR schedule.')
flags.DEFINE_float('lr_decay_epochs', 2.4, 'Exponential schedule: decay interval in epochs over '
                   'the labeled data (paper: 2.4 for 350-epoch runs, 4.8 for 700).')
flags.DEFINE_float('lr_decay_factor', 0.97, 'Exponential schedule: factor per interval.')
flags.DEFINE_float('warmup_epochs', 1.0, 'Linear warmup, in epochs over the labeled data.')
flags.DEFINE_float('weight_decay', 1e-5, 'L2 weight decay on kernels.')
flags.DEFINE_float('label_smoothing', 0.1, 'Label smoothing of the labeled one-hot targets.')
flags.DEFINE_float('ema_decay', 0.999, 'Decay of the weights\' moving average (used to label and '
                   'evaluate).')
flags.DEFINE_enum('precision', 'float32', ['float32', 'mixed_bfloat16', 'mixed_float16'],
                  'Training precision.')
flags.DEFINE_boolean('jit_compile', False, 'XLA-compile the training step.')
flags.DEFINE_enum('strategy', 'default', ['default', 'mirrored', 'multi_worker', 'tpu'],
                  'tf.distribute strategy.')
flags.DEFINE_integer('seed', 0, 'Random seed.')
flags.DEFINE_integer('checkpoint_every', 500, 'Training checkpoint interval in steps.')
flags.DEFINE_enum('progress', 'log', ['auto', 'bar', 'log'], 'Training progress display.')
# Teacher.
flags.DEFINE_integer('teacher_steps', None, 'Teacher training steps (or --teacher_epochs).')
flags.DEFINE_float('teacher_epochs', None, 'Teacher training epochs over the labeled data.')
flags.DEFINE_float('teacher_dropout', None, 'Teacher dropout (default: the model\'s).')
flags.DEFINE_float('teacher_drop_path_rate', None, 'Teacher stochastic depth (default 0.2).')
flags.DEFINE_integer('teacher_randaug_layers', 0, 'Teacher RandAugment ops per image.')
flags.DEFINE_float('teacher_randaug_magnitude', 0, 'Teacher RandAugment magnitude.')
# Student.
flags.DEFINE_integer('student_steps', None, 'Student training steps (or --student_epochs).')
flags.DEFINE_float('student_epochs', None, 'Student training epochs over the filtered '
                   'pseudo-labeled set.')
flags.DEFINE_float('unlabeled_ratio', 1.0, 'Pseudo-labeled rows per labeled row in each batch '
                   '(paper: 1 for B0, 3 for larger).')
flags.DEFINE_float('student_dropout', None, 'Student dropout (default: the model\'s; paper 0.5).')
flags.DEFINE_float('student_drop_path_rate', None, 'Student stochastic depth (default 0.2).')
flags.DEFINE_integer('student_randaug_layers', 2, 'Student RandAugment ops per image (paper 2).')
flags.DEFINE_float('student_randaug_magnitude', 27, 'Student RandAugment magnitude (paper 27).')
flags.DEFINE_float('student_learning_rate', None, 'Student learning rate per 256 labeled images '
                   '(default: --base_learning_rate).')
flags.DEFINE_boolean('student_init_from_teacher', False, 'Start each student from its teacher\'s '
                     'weights instead of from scratch.')
# Labels and filter.
flags.DEFINE_enum('label_type', 'soft', ['soft', 'hard'], 'Soft (probabilities) or hard labels.')
flags.DEFINE_float('temperature', 1.0, 'Softmax temperature of soft labels.')
flags.DEFINE_integer('top_k', None, 'Store only the k most probable classes per image.')
flags.DEFINE_integer('label_shards', 4, 'Pseudo-label record shards (the labeler resumes by shard).')
flags.DEFINE_integer('label_batch_size', 256, 'Images per labeling batch.')
flags.DEFINE_float('threshold', 0.3, 'Keep pseudo-labels with confidence >= this (paper 0.3).')
flags.DEFINE_integer('per_class', None, 'Balance to K images per class (paper 130000); unset: no '
                     'balancing.')
flags.DEFINE_boolean('duplicate', True, 'Duplicate images of classes with fewer than K.')
flags.DEFINE_integer('filter_shards', 4, 'Balanced output shards.')
# Images.
flags.DEFINE_integer('max_image_pixels', preprocessing.DEFAULT_MAX_IMAGE_PIXELS, 'Images with '
                     'more pixels (height x width from the header, before decoding) are skipped '
                     'by the labeler and stop a training run, like corrupt ones. 0: no limit.')


def _floats(values, name):
  if values is None:
    return None
  try:
    return tuple(float(v) for v in values)
  except ValueError:
    raise ValueError(f'--{name} must be numbers separated by commas, got {",".join(values)!r}') from None


def make_config():
  """Returns the PipelineConfig the flags describe."""
  from noisy_student_tf.selftrain import pipeline  # pylint: disable=g-import-not-at-top
  values = {}
  for field in dataclasses.fields(pipeline.PipelineConfig):
    if field.name in FLAGS:
      values[field.name] = FLAGS[field.name].value
  values['models'] = tuple(FLAGS.models)
  values['widths'] = _floats(FLAGS.widths, 'widths')
  values['depths'] = _floats(FLAGS.depths, 'depths')
  return pipeline.PipelineConfig(**values)


def main(argv):
  """Runs the pipeline with the flags' values; exits non-zero with the message on bad input."""
  del argv
  from noisy_student_tf.selftrain import pipeline  # pylint: disable=g-import-not-at-top
  for name in ('work_dir', 'labeled', 'eval_data'):
    if not getattr(FLAGS, name):
      raise app.UsageError(f'--{name} is required')
  try:
    rows = pipeline.run_pipeline(make_config())
  except ValueError as e:
    logging.error('%s', e)
    raise SystemExit(f'ns-pipeline: {e}') from None
  print()
  for r in rows:
    who = 'teacher' if r['generation'] == 0 else f'student {r["generation"]}'
    print(f'{who:>10} ({r["model"]}): top-1 {100 * r["top1"]:.2f}%  top-5 {100 * r["top5"]:.2f}%  '
          f'pseudo-labels {r["num_pseudo_labels"]}  {r["seconds"]:.0f} s')
  print(f'report: {FLAGS.work_dir}/report.md')


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == '__main__':
  run()
