"""The model directory: the one on-disk form every binary reads and writes.

```
MODEL_DIR/
  config.json              what the model is (EfficientNetConfig fields), its class names, the
                           input convention its weights expect, and free-form training metadata
  final/ema.weights.h5     exponential-moving-average weights (used by eval, label, export)
  final/raw.weights.h5     the raw (last step) weights
  ckpt/                    training checkpoints, owned by the trainer
```
Keras-only (no TensorFlow import) so that models load under any Keras backend.
"""

import dataclasses
import json
import os
import tempfile
from typing import List, Optional, Sequence

from noisy_student_tf import models

CONFIG_FILE = 'config.json'
FINAL_DIR = 'final'
WEIGHT_FILES = {'ema': 'ema.weights.h5', 'raw': 'raw.weights.h5'}
FORMAT_VERSION = 1

# RGB mean and standard deviation of ImageNet on the 0-255 scale: what the official EfficientNet /
# Noisy Student checkpoints expect, and the default for models trained here.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


RESIZE_METHODS = ('bilinear', 'bicubic', 'bicubic_tf1', 'nearest', 'area', 'lanczos3', 'lanczos5',
                  'gaussian', 'mitchellcubic')


@dataclasses.dataclass(frozen=True)
class InputConvention:
  """How raw RGB pixels (0-255) become model inputs: (x - mean) / std per channel, images resized
  with `resize_method` (a tf.image.resize method, or 'bicubic_tf1': TF1's resize_bicubic, what
  converted official checkpoints expect; see data/preprocessing.resize_float), evaluation center
  crop of side resolution / (resolution + crop_padding)."""
  mean: Sequence[float] = IMAGENET_MEAN
  std: Sequence[float] = IMAGENET_STD
  resize_method: str = 'bilinear'
  crop_padding: int = 32

  def __post_init__(self):
    if self.resize_method not in RESIZE_METHODS:
      raise ValueError(f'input convention: resize_method must be one of {RESIZE_METHODS}, got '
                       f'{self.resize_method!r}')

  def to_json(self):
    return {'mean': list(self.mean), 'std': list(self.std), 'resize_method': self.resize_method,
            'crop_padding': self.crop_padding}

  @classmethod
  def from_json(cls, d):
    return cls(mean=tuple(d['mean']), std=tuple(d['std']), resize_method=d['resize_method'],
               crop_padding=int(d['crop_padding']))


@dataclasses.dataclass(frozen=True)
class ModelDirConfig:
  """Contents of config.json: the architecture, class names, input convention, training metadata."""
  model: models.EfficientNetConfig
  class_names: Optional[List[str]] = None
  input: InputConvention = InputConvention()
  training: dict = dataclasses.field(default_factory=dict)

  def to_json(self):
    return {'format_version': FORMAT_VERSION, 'model': self.model.to_json(),
            'class_names': self.class_names, 'input': self.input.to_json(),
            'training': self.training}

  @classmethod
  def from_json(cls, d):
    return cls(model=models.EfficientNetConfig(**d['model']), class_names=d.get('class_names'),
               input=InputConvention.from_json(d['input']), training=d.get('training', {}))


def atomic_write_text(path, text):
  """Writes `text` to `path` through a temporary file in the same folder and a rename."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-', suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, 'w') as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_config(model_dir, config: ModelDirConfig):
  """Writes MODEL_DIR/config.json atomically."""
  atomic_write_text(os.path.join(model_dir, CONFIG_FILE),
                    json.dumps(config.to_json(), indent=2, sort_keys=True))


def read_config(model_dir) -> ModelDirConfig:
  """Reads MODEL_DIR/config.json; raises FileNotFoundError saying what is missing."""
  path = os.path.join(model_dir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: {model_dir!r} is not a model dir written by '
                            'ns-train or tools/convert_checkpoint.py')
  with open(path) as f:
    return ModelDirConfig.from_json(json.load(f))


def weights_path(model_dir, which='ema'):
  """Returns the path of the final `which` ('ema' or 'raw') weights file."""
  if which not in WEIGHT_FILES:
    raise ValueError(f'weights must be one of {sorted(WEIGHT_FILES)}, got {which!r}')
  return os.path.join(model_dir, FINAL_DIR, WEIGHT_FILES[which])


def save_weights(model_dir, model, which):
  """Saves `model`'s current weights as the final `which` weights, atomically."""
  path = weights_path(model_dir, which)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path[:-len('.weights.h5')] + '.tmp.weights.h5'
  model.save_weights(tmp, overwrite=True)
  os.replace(tmp, path)


def is_complete(model_dir):
  """True when the model dir has its config and both final weight files."""
  return (os.path.exists(os.path.join(model_dir, CONFIG_FILE)) and
          all(os.path.exists(weights_path(model_dir, w)) for w in WEIGHT_FILES))


def build(config: ModelDirConfig, resolution=None, **overrides):
  """Builds the (untrained) keras model a model dir describes, optionally at another resolution."""
  model_config = config.model
  if resolution is not None:
    model_config = dataclasses.replace(model_config, resolution=int(resolution))
  if overrides:
    model_config = dataclasses.replace(model_config, **overrides)
  return models.build_from_config(model_config)


def load_model(model_dir, weights='ema', resolution=None, **overrides):
  """Loads a trained model from `model_dir`.

  weights: 'ema' (default, what evaluation uses) or 'raw'.  resolution: build the network for
  another input size (the weights do not depend on it).  overrides: EfficientNetConfig fields such
  as dropout or drop_path_rate for fine-tuning.
  Returns (keras.Model, ModelDirConfig).  Raises FileNotFoundError naming a missing file.
  """
  config = read_config(model_dir)
  path = weights_path(model_dir, weights)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: training in {model_dir!r} has not finished')
  model = build(config, resolution, **overrides)
  model.load_weights(path)
  return model, config
