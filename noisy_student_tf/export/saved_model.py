"""Model dir -> TF Serving SavedModel: EXPORT_DIR/<version>/ with the signatures of signatures.py,
the warm-up requests of warmup.py and assets.extra/export.json (what was exported, for clients).

Written to a staging folder, loaded back and warmed up there (TF Serving refuses a version whose
warm-up fails), then renamed into place.
"""

import dataclasses
import json
import logging
import os
import time
from typing import Optional, Tuple

import keras
import tensorflow as tf

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf.data import preprocessing
from noisy_student_tf.export import signatures, versions, warmup
from noisy_student_tf.settings import setting

EXPORT_INFO = 'export.json'
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """Every ns-export setting (each field's help: settings.help_of)."""
  model_dir: str = setting('', 'A complete model dir (config.json + final/*.weights.h5) '
                           'written by ns-train or tools/convert_checkpoint.py.')
  export_dir: str = setting('', 'TF Serving base path: the export goes to EXPORT_DIR/<version>/.')
  version: Optional[int] = setting(None, 'Version folder to write (a positive integer not yet '
                                   'used). Unset: one more than the highest existing version.')
  weights: str = setting('ema', 'Which final weights to export.', choices=('ema', 'raw'))
  top_k: int = setting(5, 'Classes per image in the top_k_* outputs (capped at the number of '
                       'classes).')
  labels_file: Optional[str] = setting(None, 'Text file with one class name per line for '
                                       "top_k_names. Unset: the class names of the model dir's "
                                       'config.json, else the class indices.')
  resolution: Optional[int] = setting(None, "Input size to serve at. Unset: the model's own.")
  model_name: str = setting('noisy_student', 'Model name in the warm-up requests (use the name '
                            'models.config entry TF Serving serves it under).')
  warmup_images: Tuple[str, ...] = setting((), 'Encoded image files to use in the warm-up '
                                           'requests. Unset: a synthetic image.')
  warmup_batch_sizes: Tuple[int, ...] = setting((1, 32), 'serving_default batch sizes TF Serving '
                                                'replays at load time.')
  verify: bool = setting(True, 'Load the staged export and replay the warm-up requests before '
                         'publishing it.')
  max_image_pixels: Optional[int] = setting(
      preprocessing.DEFAULT_MAX_IMAGE_PIXELS, 'serving_default answers InvalidArgument for images '
      'with more pixels (height x width read from the header, before decoding; recorded in '
      'export.json). 0: no limit.')


@dataclasses.dataclass(frozen=True)
class ExportResult:
  """Where the export went: path (EXPORT_DIR/<version>), version, seconds, and the export.json
  contents (info)."""
  path: str
  version: int
  seconds: float
  info: dict


def read_labels_file(path):
  """Reads one class name per line (trailing whitespace stripped, blank lines kept out)."""
  with open(path) as f:
    return [line.rstrip() for line in f if line.strip()]


def resolve_class_names(config: model_dir_lib.ModelDirConfig, labels_file=None):
  """Returns the C class names the export serves: the labels file's, else config.json's, else the
  class indices as strings.  Raises ValueError when their count is not the model's class count."""
  num_classes = config.model.num_classes
  if labels_file:
    names, origin = read_labels_file(labels_file), f'labels file {labels_file!r}'
  elif config.class_names:
    names, origin = list(config.class_names), 'config.json class_names'
  else:
    return [str(i) for i in range(num_classes)]
  if len(names) != num_classes:
    raise ValueError(f'{origin} holds {len(names)} class names, but the model has {num_classes} '
                     'classes')
  return names


def _validate(cfg: ExportConfig):
  """Checks the settings before any expensive work; returns the model dir's config."""
  if cfg.weights not in model_dir_lib.WEIGHT_FILES:
    raise ValueError(f'weights must be one of {sorted(model_dir_lib.WEIGHT_FILES)}, '
                     f'got {cfg.weights!r}')
  if not isinstance(cfg.top_k, int) or cfg.top_k < 1:
    raise ValueError(f'top_k must be a positive integer, got {cfg.top_k!r}')
  if cfg.resolution is not None and (not isinstance(cfg.resolution, int) or cfg.resolution < 8):
    raise ValueError(f'resolution must be an integer >= 8 (or unset), got {cfg.resolution!r}')
  if not cfg.warmup_batch_sizes or any(b < 1 for b in cfg.warmup_batch_sizes):
    raise ValueError(f'warmup_batch_sizes must be positive integers, got '
                     f'{list(cfg.warmup_batch_sizes)}')
  if cfg.max_image_pixels is not None and not (isinstance(cfg.max_image_pixels, int) and
                                                cfg.max_image_pixels >= 0):
    raise ValueError(f'max_image_pixels must be an integer >= 0 (0: no limit), got '
                     f'{cfg.max_image_pixels!r}')
  for path in cfg.warmup_images:
    if not os.path.isfile(path):
      raise ValueError(f'warm-up image {path!r} does not exist')
  if cfg.labels_file and not os.path.isfile(cfg.labels_file):
    raise ValueError(f'labels file {cfg.labels_file!r} does not exist')
  config = model_dir_lib.read_config(cfg.model_dir)
  weights = model_dir_lib.weights_path(cfg.model_dir, cfg.weights)
  if not os.path.exists(weights):
    raise FileNotFoundError(f'{weights} not found: training in {cfg.model_dir!r} has not finished')
  versions.choose_version(cfg.export_dir, cfg.version)  # raises for a taken or bad version
  return config


def _write_saved_model(functions: signatures.ServingFunctions, path):
  archive = keras.export.ExportArchive()
  # No archive.track(model): it would save every weight twice (the Keras variables and the
  # tf.Variables the endpoints capture); the captured ones are tracked by add_endpoint.
  # serving_default first: TF Serving's REST/gRPC default and ExportArchive's alias for it.
  archive.add_endpoint('serving_default', functions.serve_bytes,
                       input_signature=[functions.bytes_spec])
  archive.add_endpoint('predict_images', functions.serve_images,
                       input_signature=[functions.images_spec])
  archive.write_out(path, verbose=False)


def _export_info(cfg, config, class_names, resolution, top_k, version, num_warmup):
  """The contents of assets.extra/export.json: what was exported, for clients and operators."""
  return {
      'model_dir': os.path.abspath(cfg.model_dir), 'weights': cfg.weights,
      'model': config.model.to_json(), 'resolution': resolution,
      'num_classes': config.model.num_classes, 'class_names': class_names, 'top_k': top_k,
      'input_convention': config.input.to_json(), 'model_name': cfg.model_name,
      'version': version,
      'signatures': {
          'serving_default': {'inputs': {'image_bytes': 'string [N] encoded JPEG/PNG/GIF/BMP/'
                                                        'WebP, at most max_image_pixels pixels'}},
          'predict_images': {'inputs': {'images': f'float32 [N, {resolution}, {resolution}, 3] '
                                                  'RGB 0-255, already at the resolution'}},
          'outputs': {'probabilities': 'float32 [N, C]', 'top_k_classes': 'int32 [N, k]',
                      'top_k_scores': 'float32 [N, k]', 'top_k_names': 'string [N, k]'}},
      'warmup_requests': num_warmup,
      # serving_default answers InvalidArgument for larger images (0: no limit).
      'max_image_pixels': int(cfg.max_image_pixels or 0),
  }


def export(cfg: ExportConfig) -> ExportResult:
  """Exports the model dir `cfg.model_dir` to `cfg.export_dir`/<version>/ for TF Serving.

  Returns an ExportResult.  Raises ValueError / FileNotFoundError naming a bad setting before any
  expensive work, and whatever loading or warm-up raises (nothing is published then).
  """
  start = time.time()
  config = _validate(cfg)
  class_names = resolve_class_names(config, cfg.labels_file)
  model, config = model_dir_lib.load_model(cfg.model_dir, weights=cfg.weights,
                                           resolution=cfg.resolution)
  resolution = int(cfg.resolution or config.model.resolution)
  top_k = min(cfg.top_k, config.model.num_classes)
  functions = signatures.ServingFunctions(
      model, resolution=resolution, convention=config.input, class_names=class_names,
      top_k=top_k, small_image=config.model.small_image, max_image_pixels=cfg.max_image_pixels)
  version = versions.choose_version(cfg.export_dir, cfg.version)
  staging = versions.make_staging_dir(cfg.export_dir, version)
  try:
    log.info('writing SavedModel of %s (%s weights) to %s', cfg.model_dir, cfg.weights,
                 staging)
    _write_saved_model(functions, staging)
    jpegs = ([open(p, 'rb').read() for p in cfg.warmup_images] or
             [warmup.synthetic_jpeg(resolution)])
    logs = warmup.make_requests(cfg.model_name, resolution, jpegs, cfg.warmup_batch_sizes)
    warmup.write_requests(staging, logs)
    if cfg.verify:
      log.info('replaying %d warm-up requests on the staged export', len(logs))
      warmup.replay(tf.saved_model.load(staging), logs)
    info = _export_info(cfg, config, class_names, resolution, top_k, version, len(logs))
    # A plain write: the whole staging folder is published by one rename.
    with open(os.path.join(staging, warmup.EXTRA_DIR, EXPORT_INFO), 'w') as f:
      json.dump(info, f, indent=2)
    path = versions.publish(staging, cfg.export_dir, version)
  except BaseException:
    versions.discard(staging)
    raise
  seconds = time.time() - start
  log.info('exported version %d to %s in %.1f s', version, path, seconds)
  return ExportResult(path=path, version=version, seconds=seconds, info=info)
