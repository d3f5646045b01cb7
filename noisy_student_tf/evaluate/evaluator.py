"""Evaluation of a trained model: top-1, top-5 and cross-entropy on any labeled source."""

import logging
import time

import tensorflow as tf

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf import progress as progress_lib
from noisy_student_tf.data import preprocessing
from noisy_student_tf.evaluate.metrics import ClassificationMetrics

log = logging.getLogger(__name__)


def _batches(dataset):
  for batch in dataset:
    if isinstance(batch, dict):
      yield batch['image'], batch['label']
    else:
      yield batch[0], batch[1]


def make_predict_fn(model, jit_compile=False):
  """Returns a tf.function images [N, H, W, 3] -> float32 logits, in inference mode."""
  @tf.function(reduce_retracing=True, jit_compile=jit_compile, autograph=False)
  def predict(images):
    return tf.cast(model(images, training=False), tf.float32)
  return predict


def evaluate_model(model, dataset, predict_fn=None, *, total=None, progress='auto',
                   desc='eval'):
  """Evaluates `model` on `dataset`.

  dataset: batches as dicts {'image': float32 [B, R, R, 3], 'label': int [B]} (make_eval_dataset)
  or (images, labels) tuples; rows with label -1 are ignored.  predict_fn: optional, reuse one from
  make_predict_fn across calls to avoid retracing.  total: the number of images when known, for
  the progress (progress: one of noisy_student_tf.progress.MODES, named `desc`).
  Returns {'top1', 'top5', 'loss', 'num_examples'}; raises ValueError when no labeled example came.
  """
  predict_fn = predict_fn or make_predict_fn(model)
  metrics = ClassificationMetrics()
  for images, labels in progress_lib.track(_batches(dataset), desc, total, 'images', progress,
                                           size=lambda b: int(b[1].shape[0]), logger=log):
    metrics.update(predict_fn(images).numpy(), labels.numpy())
  result = metrics.result()
  if not result['num_examples']:
    raise ValueError('the evaluation data has no labeled examples (every label is -1 or it is '
                     'empty); evaluation needs a labeled source')
  return result


def evaluate_model_dir(model_dir, source_spec, *, resolution=None, weights='ema', batch_size=256,
                       data_dir=None, label_offset=0, skip_corrupt=False, image_transform=None,
                       max_image_pixels=preprocessing.DEFAULT_MAX_IMAGE_PIXELS,
                       max_examples=None, sample_seed=0, progress='auto'):
  """Evaluates the model in `model_dir` on the labeled source `source_spec`.

  max_examples: evaluate a seeded, class-stratified sample of this many images (sample_seed)
  instead of all of them.

  resolution: evaluate at this input size (default: the model's training resolution).
  weights: 'ema' (default) or 'raw'.  label_offset, data_dir: passed to open_source.
  image_transform: optional uint8 image -> uint8 image function applied before normalisation.
  max_image_pixels: images with more pixels are refused like corrupt ones (0: no limit).
  progress: one of noisy_student_tf.progress.MODES (images per second, ETA when the size of the
  source is known).
  Returns {'top1', 'top5', 'loss', 'num_examples', 'seconds', 'resolution', 'weights'}.
  Raises ValueError when the source's class count differs from the model's, or it is empty;
  FileNotFoundError when the model dir is incomplete.
  """
  from noisy_student_tf.data import order, pipeline, record_stats, sources  # imported lazily
  progress_lib.check_mode(progress)
  config = model_dir_lib.read_config(model_dir)
  if batch_size <= 0:
    raise ValueError(f'batch_size must be > 0, got {batch_size!r}')
  source = sources.open_source(source_spec, data_dir=data_dir, label_offset=label_offset)
  num_classes = config.model.num_classes
  source = record_stats.describe(source, label_offset=label_offset, num_classes=num_classes,
                                 cache_dir=record_stats.default_cache_dir())
  if source.num_classes is not None and source.num_classes != num_classes:
    raise ValueError(f'{source_spec!r} has {source.num_classes} classes but the model in '
                     f'{model_dir!r} has {num_classes}')
  if source.num_examples == 0:
    raise ValueError(f'{source_spec!r} is empty')
  if max_examples:
    source = order.sample_source(source, int(max_examples), sample_seed)
  resolution = int(resolution or config.model.resolution)
  model, _ = model_dir_lib.load_model(model_dir, weights=weights, resolution=resolution)
  dataset = pipeline.make_eval_dataset(
      source, batch_size=batch_size, resolution=resolution, convention=config.input,
      small_image=config.model.small_image, skip_corrupt=skip_corrupt,
      image_transform=image_transform, max_image_pixels=max_image_pixels)
  start = time.time()
  result = evaluate_model(model, dataset, total=source.num_examples, progress=progress,
                          desc=f'ns-eval {source_spec}')
  result.update(seconds=time.time() - start, resolution=resolution, weights=weights)
  log.info('evaluated %s (%s weights, %d px) on %s: top1 %.4f top5 %.4f loss %.4f (%d examples)',
           model_dir, weights, resolution, source_spec, result['top1'], result['top5'],
           result['loss'], result['num_examples'])
  return result
