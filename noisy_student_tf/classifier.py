"""A trained model dir as a Python object for notebooks: `load(model_dir).predict(images)`.

  import noisy_student_tf as ns
  clf = ns.load('/work/gen1')                       # EMA weights, the training resolution
  result = clf.predict(['cat.jpg', png_bytes, uint8_array])
  result.names, result.indices, result.probabilities   # [N], [N], float32 [N, C]
  indices, probabilities, names = clf.top_k('cat.jpg', k=5)

Images may be encoded bytes (JPEG, PNG, GIF, BMP, WebP), file paths (str or os.PathLike), RGB
uint8 arrays [H, W, 3], a batch array [N, H, W, 3], or a list mixing them.  Each one goes
through the model dir's own evaluation preprocessing, the functions of data/preprocessing.py that
ns-eval's pipeline (data/pipeline.make_eval_dataset) applies: decode (grayscale and RGBA become
RGB), the center crop of the input convention (small-image models: the whole image resized),
the convention's mean/std normalisation; then the model in inference mode.  So a prediction here
is ns-eval's prediction for the same image.  Arrays are taken as decoded already: they give
ns-eval's prediction when they hold what tf.io.decode_image makes of the file; other JPEG decoders
(PIL, OpenCV) differ from it by a few levels in most pixels (up to 5 of 255 on the CIFAR-10
JPEGs), so for ns-eval's exact numbers pass the file or its bytes.  PIL images are taken as arrays (other modes converted to RGB first).

Checks run on every input before any decoding or model work and raise ValueError naming the
input (its position and path, or its kind): unsupported types, arrays of the wrong rank, channel
count, dtype or an empty side, paths that do not exist or are folders, empty bytes, bytes that are
none of the formats above, headers that cannot be read, and encoded images over
`max_image_pixels` (height x width from the header, as everywhere in the package; default
data.preprocessing.DEFAULT_MAX_IMAGE_PIXELS, 0 or None: no limit; arrays are already decoded and
have no limit).  An image damaged past its header fails when its batch is decoded, before that
batch reaches the model, with the same kind of ValueError.
"""

import dataclasses
import os
import re
from typing import List, Optional

import numpy as np
import tensorflow as tf

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf.data import preprocessing
from noisy_student_tf.evaluate import evaluator

DEFAULT_BATCH_SIZE = 64
# Leading bytes of the formats tf.io.decode_image reads (what preprocessing.decode accepts).
_SIGNATURES = (('JPEG', 0, b'\xff\xd8\xff'), ('PNG', 0, b'\x89PNG\r\n\x1a\n'), ('GIF', 0, b'GIF8'),
               ('BMP', 0, b'BM'), ('WebP', 8, b'WEBP'))
_FORMATS = 'JPEG, PNG, GIF, BMP or WebP'


@dataclasses.dataclass(frozen=True, eq=False)
class Prediction:
  """What `Classifier.predict` returns for N images, in input order.

  indices: int64 [N] top-1 class indices (argmax of the logits, as ns-eval's top-1); names: the
  N top-1 class names; probabilities: float32 [N, C] softmax; logits: float32 [N, C];
  class_names: the C names of the model dir; sources: one short description per input (its path,
  or 'bytes[i]' / 'array[i]').
  """
  indices: np.ndarray
  names: List[str]
  probabilities: np.ndarray
  logits: np.ndarray
  class_names: List[str]
  sources: List[str]

  def __len__(self):
    return len(self.indices)

  @property
  def confidences(self) -> np.ndarray:
    """float32 [N]: the probability of each image's top-1 class."""
    return self.probabilities[np.arange(len(self.indices)), self.indices]

  def top_k(self, k=5):
    """The k most probable classes of each image, most probable first (ties: lower index first).

    Takes k in [1, C].  Returns (indices int64 [N, k], probabilities float32 [N, k], names: N
    lists of k class names).  Raises ValueError for k outside [1, C].
    """
    return _top_k(self.logits, self.probabilities, self.class_names, k)

  def to_rows(self) -> List[dict]:
    """One dict per image, {'source', 'index', 'name', 'confidence'}: ready for
    pandas.DataFrame(result.to_rows())."""
    return [{'source': s, 'index': int(i), 'name': n, 'confidence': float(c)}
            for s, i, n, c in zip(self.sources, self.indices, self.names, self.confidences)]

  def __repr__(self):
    shown = ', '.join(f'{n} ({c:.3f})' for n, c in zip(self.names[:5], self.confidences[:5]))
    more = ', ...' if len(self) > 5 else ''
    return f'Prediction({len(self)} images: {shown}{more})'


def _check_k(k, num_classes):
  """Raises ValueError unless k is an integer in [1, num_classes]."""
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= num_classes:
    raise ValueError(f'k must be an integer in [1, {num_classes}] (the number of classes), '
                     f'got {k!r}')


def _top_k(logits, probabilities, class_names, k):
  """(indices, probabilities, names) of the k largest logits of each row; see Prediction.top_k."""
  _check_k(k, logits.shape[1])
  order = np.argsort(-logits, axis=1, kind='stable')[:, :int(k)].astype(np.int64)
  return (order, np.take_along_axis(probabilities, order, axis=1),
          [[class_names[j] for j in row] for row in order])


@dataclasses.dataclass(frozen=True)
class _Item:
  """One checked input: encoded bytes (`encoded`, or `path` to read them from) or an array."""
  source: str
  encoded: Optional[bytes] = None
  path: Optional[str] = None
  array: Optional[np.ndarray] = None


def _image_format(data):
  """The name of the image format `data` (bytes) starts like, or None."""
  for name, offset, signature in _SIGNATURES:
    if data[offset:offset + len(signature)] == signature and (name != 'WebP' or
                                                              data[:4] == b'RIFF'):
      return name
  return None


def _check_array(array, where):
  """Returns `array` as a C-contiguous uint8 [H, W, 3] numpy array, or raises ValueError."""
  if array.ndim != 3:
    raise ValueError(f'{where} is an array of shape {array.shape}: images as arrays must be RGB '
                     '[H, W, 3] (or one batch array [N, H, W, 3] as the whole argument)')
  if array.shape[-1] != 3:
    hint = (' (grayscale: np.repeat(a, 3, axis=-1); RGBA: a[..., :3])'
            if array.shape[-1] in (1, 4) else '')
    raise ValueError(f'{where} has {array.shape[-1]} channels (shape {array.shape}): images as '
                     f'arrays must be RGB [H, W, 3]{hint}')
  if min(array.shape[:2]) < 1:
    raise ValueError(f'{where} is empty (shape {array.shape})')
  if array.dtype != np.uint8:
    raise ValueError(f'{where} has dtype {array.dtype}: images as arrays must be uint8 RGB on the '
                     '0-255 scale (values in [0, 1]: (a * 255).round().astype(np.uint8))')
  return np.ascontiguousarray(array)


def _check_encoded(data, where):
  """Raises ValueError unless `data` (bytes) is non-empty and starts like a supported format."""
  if not data:
    raise ValueError(f'{where} is empty (0 bytes)')
  if _image_format(data) is None:
    raise ValueError(f'{where} is not an image this model can decode: {len(data)} bytes '
                     f'starting {bytes(data[:12])!r}, expected {_FORMATS}')


def _is_array_like(x):
  """True for numpy arrays and what np.asarray takes as one (tensors, PIL images)."""
  return (isinstance(x, np.ndarray) or hasattr(x, '__array__') or
          hasattr(x, '__array_interface__'))


def _as_array(x):
  """np.asarray(x), PIL images in another mode than RGB converted to RGB first."""
  if not isinstance(x, np.ndarray) and isinstance(getattr(x, 'mode', None), str) and \
      hasattr(x, 'convert') and x.mode != 'RGB':
    x = x.convert('RGB')
  return np.asarray(x)


def _as_items(images) -> List[_Item]:
  """Checks the `images` argument of the Classifier methods; returns one _Item per image."""
  if isinstance(images, (bytes, bytearray, memoryview, str, os.PathLike)):
    images = [images]
  elif isinstance(images, dict):
    raise ValueError('images must be an image, a list of images or a batch array, got a dict '
                     '(pass list(d.values()) to classify its values)')
  elif _is_array_like(images) and not isinstance(images, (list, tuple)):
    array = _as_array(images)
    if array.dtype.kind in 'OSU' and array.ndim == 1:  # e.g. a pandas column of paths
      images = list(array)
    elif array.ndim == 4:
      images = list(array)
    elif array.ndim == 3:
      images = [array]
    else:
      raise ValueError(f'images is an array of shape {array.shape}: expected one RGB image '
                       '[H, W, 3] or a batch [N, H, W, 3]')
  else:
    try:
      images = list(images)
    except TypeError:
      raise ValueError(f'images must be bytes, a path, a uint8 array or a list of them, got '
                       f'{type(images).__name__}') from None
  items = []
  for i, image in enumerate(images):
    if isinstance(image, (bytes, bytearray, memoryview)):
      data = bytes(image)
      _check_encoded(data, f'images[{i}] (bytes)')
      items.append(_Item(f'bytes[{i}]', encoded=data))
    elif isinstance(image, (str, os.PathLike)):
      path = os.path.expanduser(os.fspath(image))
      where = f'images[{i}] ({path!r})'
      if not os.path.exists(path):
        raise ValueError(f'{where} does not exist' +
                         (' (URLs are not fetched: download the file first)'
                          if '://' in path else ''))
      if os.path.isdir(path):
        raise ValueError(f'{where} is a folder: pass its image files, e.g. '
                         'sorted(pathlib.Path(folder).glob("*.jpg"))')
      _check_encoded(_read(path, where, 16), where)
      items.append(_Item(path, path=path))
    elif _is_array_like(image):
      items.append(_Item(f'array[{i}]', array=_check_array(_as_array(image), f'images[{i}]')))
    else:
      raise ValueError(f'images[{i}] is a {type(image).__name__}: expected bytes, a path (str or '
                       'os.PathLike) or a uint8 array [H, W, 3]')
  return items


class Classifier:
  """A trained model dir ready to classify images (see the module docstring for the inputs).

  Attributes: model_dir, model (the keras.Model, normalised images -> logits), config
  (model_dir.ModelDirConfig), class_names (C strings; '0'..'C-1' when the model dir has none),
  num_classes, resolution (input side in pixels), weights ('ema' or 'raw'), input_convention,
  small_image, max_image_pixels, batch_size (the default of the methods).
  """

  def __init__(self, model_dir, weights='ema', resolution=None, *,
               max_image_pixels=preprocessing.DEFAULT_MAX_IMAGE_PIXELS,
               batch_size=DEFAULT_BATCH_SIZE):
    """Loads the model; same arguments as `load`, which is the documented way in."""
    if max_image_pixels is not None and (isinstance(max_image_pixels, bool) or
                                         not isinstance(max_image_pixels, (int, np.integer)) or
                                         max_image_pixels < 0):
      raise ValueError(f'max_image_pixels must be an integer >= 0 (0 or None: no limit), got '
                       f'{max_image_pixels!r}')
    if resolution is not None and (isinstance(resolution, bool) or
                                   not isinstance(resolution, (int, np.integer)) or resolution < 1):
      raise ValueError(f'resolution must be a positive integer or None, got {resolution!r}')
    self.batch_size = _check_batch_size(batch_size)
    self.model_dir = os.fspath(model_dir)
    self.model, self.config = model_dir_lib.load_model(self.model_dir, weights=weights,
                                                       resolution=resolution)
    self.weights = weights
    self.num_classes = int(self.config.model.num_classes)
    self.class_names = ([str(n) for n in self.config.class_names] if self.config.class_names
                        else [str(i) for i in range(self.num_classes)])
    self.resolution = int(resolution or self.config.model.resolution)
    self.input_convention = self.config.input
    self.small_image = bool(self.config.model.small_image)
    self.max_image_pixels = int(max_image_pixels or 0)
    self._predict_fn = evaluator.make_predict_fn(self.model)
    r, convention, small = self.resolution, self.input_convention, self.small_image
    limit = self.max_image_pixels or None
    self._pixels_fn = tf.function(preprocessing.image_pixels,
                                  input_signature=[tf.TensorSpec([], tf.string)])
    self._crop_encoded = tf.function(
        lambda encoded: preprocessing.eval_crop(encoded, r, convention, small, limit),
        input_signature=[tf.TensorSpec([], tf.string)])
    self._crop_array = tf.function(
        lambda image: preprocessing.center_crop(image, r, convention, small),
        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])

  def __repr__(self):
    return (f'Classifier({self.model_dir!r}, weights={self.weights!r}, resolution='
            f'{self.resolution}, {self.num_classes} classes)')

  # Checks and preprocessing.

  def _check(self, images) -> List[_Item]:
    """All the checks of the module docstring that need no decoding, header sizes included."""
    items = _as_items(images)
    for i, item in enumerate(items):
      if item.array is not None:
        continue
      where = f'images[{i}] ({item.path!r})' if item.path else f'images[{i}] (bytes)'
      encoded = item.encoded if item.encoded is not None else _read(item.path, where)
      try:
        pixels = int(self._pixels_fn(tf.constant(encoded)))
      except tf.errors.InvalidArgumentError as e:
        raise ValueError(f'{where}: cannot read the image header ({_tf_error_text(e)})') from None
      if self.max_image_pixels and pixels > self.max_image_pixels:
        raise ValueError(f'{where} is too large: it has {pixels} ' +
                         preprocessing.pixel_limit_message(self.max_image_pixels).replace(
                             '--max_image_pixels', 'load(..., max_image_pixels=...)'))
    return items

  def _crops(self, items, offset=0):
    """uint8 [len(items), R, R, 3]: the evaluation crops (before normalisation)."""
    crops = []
    for i, item in enumerate(items, offset):
      if item.array is not None:
        crops.append(self._crop_array(tf.constant(item.array)))
        continue
      where = f'images[{i}] ({item.path!r})' if item.path else f'images[{i}] (bytes)'
      encoded = item.encoded if item.encoded is not None else _read(item.path, where)
      try:
        crops.append(self._crop_encoded(tf.constant(encoded)))
      except tf.errors.InvalidArgumentError as e:
        raise ValueError(f'{where} cannot be decoded: {_tf_error_text(e)}') from None
    if not crops:
      return np.zeros([0, self.resolution, self.resolution, 3], np.uint8)
    return np.stack([c.numpy() for c in crops])

  def preprocess(self, images, normalize=True) -> np.ndarray:
    """The model inputs of `images` (any input form), exactly as predict makes them.

    normalize=True: float32 [N, R, R, 3] after the convention's (x - mean) / std; False: the
    uint8 [N, R, R, 3] crops (to look at).  Raises ValueError for bad inputs.
    """
    crops = self._crops(self._check(images))
    if not normalize:
      return crops
    return preprocessing.normalize(crops, self.input_convention).numpy()

  # Predictions.

  def predict(self, images, batch_size=None) -> Prediction:
    """Classifies `images` (an image, a list of images or a batch array [N, H, W, 3]).

    batch_size: images per model call (default: self.batch_size).  Returns a Prediction of N
    rows in input order (N = 1 for a single image, 0 for an empty list).  Raises ValueError naming
    the first bad input before any model work (see the module docstring).
    """
    batch_size = _check_batch_size(self.batch_size if batch_size is None else batch_size)
    items = self._check(images)
    logits = []
    for start in range(0, len(items), batch_size):
      crops = self._crops(items[start:start + batch_size], offset=start)
      inputs = preprocessing.normalize(crops, self.input_convention)
      logits.append(self._predict_fn(inputs).numpy())
    logits = (np.concatenate(logits) if logits else
              np.zeros([0, self.num_classes], np.float32)).astype(np.float32)
    probabilities = tf.nn.softmax(logits, axis=-1).numpy()
    indices = np.argmax(logits, axis=1).astype(np.int64)
    return Prediction(indices=indices, names=[self.class_names[i] for i in indices],
                      probabilities=probabilities, logits=logits,
                      class_names=list(self.class_names), sources=[it.source for it in items])

  __call__ = predict

  def predict_proba(self, images, batch_size=None) -> np.ndarray:
    """float32 [N, C] class probabilities (softmax) of `images`; see predict."""
    return self.predict(images, batch_size).probabilities

  def top_k(self, images, k=5, batch_size=None):
    """The k most probable classes of each image, most probable first.

    Returns (indices int64 [N, k], probabilities float32 [N, k], names: N lists of k class
    names).  Raises ValueError for k outside [1, C] (before any model work) or bad inputs.
    """
    _check_k(k, self.num_classes)
    return self.predict(images, batch_size).top_k(k)


def _check_batch_size(batch_size):
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or \
      batch_size < 1:
    raise ValueError(f'batch_size must be a positive integer, got {batch_size!r}')
  return int(batch_size)


def _read(path, where, size=-1):
  """The first `size` bytes (all: -1) of the file `path`; ValueError naming `where` when it
  cannot be read."""
  try:
    with open(path, 'rb') as f:
      return f.read(size)
  except OSError as e:
    raise ValueError(f'{where} cannot be read: {e.strerror or e}') from None


def _tf_error_text(error):
  """The op's own words in a TensorFlow error message, without the graph trace around them."""
  text = str(getattr(error, 'message', error)).split('\n\t [[')[0].split(' [Op:')[0]
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  return re.sub(r'\{\{function_node [^}]*\}\}\s*', '', lines[-1] if lines else text)


def load(model_dir, weights='ema', resolution=None, *,
         max_image_pixels=preprocessing.DEFAULT_MAX_IMAGE_PIXELS,
         batch_size=DEFAULT_BATCH_SIZE) -> Classifier:
  """Loads the trained model in `model_dir` (written by ns-train, ns-pipeline or the checkpoint
  converter) as a Classifier.

  weights: 'ema' (default, what ns-eval, ns-label and ns-export use) or 'raw'.  resolution:
  classify at this input size (default: the model's training resolution, as ns-eval).
  max_image_pixels: encoded images with more pixels (by their header) are refused before decoding
  (default data.preprocessing.DEFAULT_MAX_IMAGE_PIXELS, as ns-eval; 0 or None: no limit).
  batch_size: the default images per model call.
  Returns a Classifier.  Raises FileNotFoundError naming a missing config.json or weights file,
  ValueError for a bad argument.
  """
  return Classifier(model_dir, weights, resolution, max_image_pixels=max_image_pixels,
                    batch_size=batch_size)
