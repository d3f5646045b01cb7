"""The serving signatures of an exported model.

- `serving_default`: `image_bytes` string [N] (encoded JPEG/PNG; REST clients send {"b64": ...})
  -> outputs below.  Each image goes through `data.preprocessing.eval_preprocess`, the function
  ns-eval and ns-label use, so a served prediction equals ns-eval's for the same bytes.
- `predict_images`: `images` float32 [N, R, R, 3], RGB on the 0-255 scale, already resized/cropped
  to the model's resolution R; the model dir's mean/std normalisation is applied inside.
Both return `probabilities` float32 [N, C], `top_k_classes` int32 [N, k], `top_k_scores` float32
[N, k] and `top_k_names` string [N, k].

Bad input (an empty string, bytes that are not an image, a truncated image anywhere in the
batch, an image with more than `max_image_pixels` pixels, pixel values outside [0, 255], NaN or
Inf) raises InvalidArgument with a message; TF Serving answers 400.  The pixel count (height x
width) is read from every image's header before anything is decoded, so one huge image (a
20,000 x 20,000 JPEG is a few MB on the wire, 1.2 GB decoded) cannot exhaust the server's memory;
the signature is stateless, so the next request is answered normally.
"""

import tensorflow as tf

from noisy_student_tf.data import preprocessing


def _check_bytes(image_bytes):
  """Asserts no string of the batch is empty, naming the batch positions that are (the decoder
  reports an unknown format or a truncated file itself, with its own message)."""
  empty = tf.where(tf.equal(tf.strings.length(image_bytes), 0))[:, 0]
  return [tf.debugging.Assert(tf.equal(tf.size(empty), 0),
                              ['image_bytes holds empty strings at batch positions', empty],
                              name='check_not_empty')]


def _check_image_sizes(image_bytes, max_image_pixels):
  """Asserts every image of the batch has at most max_image_pixels pixels by its header (images
  of unknown format pass here; the decoder rejects them), naming the batch positions that do not."""
  if not max_image_pixels:
    return []
  pixels = tf.map_fn(preprocessing.image_pixels, image_bytes,
                     fn_output_signature=tf.TensorSpec([], tf.int64))
  over = tf.where(pixels > int(max_image_pixels))[:, 0]
  return [tf.debugging.Assert(
      tf.equal(tf.size(over), 0),
      ['image_bytes holds images too large to serve at batch positions', over, 'with',
       tf.gather(pixels, over), f'pixels (height x width from the header); this model serves at '
       f'most max_image_pixels={int(max_image_pixels)} pixels'],
      name='check_image_pixels')]


def _check_pixels(images):
  """Asserts the float images are finite RGB values on the 0-255 scale."""
  return [
      tf.debugging.assert_all_finite(images, 'images holds NaN or Inf values'),
      tf.debugging.Assert(
          tf.logical_and(tf.reduce_all(images >= 0.0), tf.reduce_all(images <= 255.0)),
          ['predict_images expects RGB values on the 0-255 scale (the normalisation is applied '
           'inside); got min', tf.reduce_min(images), 'max', tf.reduce_max(images)],
          name='check_pixel_range'),
  ]


class ServingFunctions:
  """Holds the model and what the signatures need; `serve_bytes` and `serve_images` are the
  signature bodies, `bytes_spec` and `images_spec` their input signatures."""

  def __init__(self, model, *, resolution, convention, class_names, top_k, small_image=False,
               max_image_pixels=preprocessing.DEFAULT_MAX_IMAGE_PIXELS):
    """model: keras.Model from normalised images to logits; resolution: int side R; convention:
    model_dir.InputConvention; class_names: list of C strings; top_k: int in [1, C];
    max_image_pixels: serve_bytes refuses larger images before decoding (0 or None: no limit)."""
    self.model = model
    self.max_image_pixels = int(max_image_pixels or 0)
    self.resolution = int(resolution)
    self.convention = convention
    self.small_image = bool(small_image)
    self.top_k = int(top_k)
    self.class_names = tf.constant(list(class_names), dtype=tf.string)
    self.bytes_spec = tf.TensorSpec([None], tf.string, name='image_bytes')
    self.images_spec = tf.TensorSpec([None, self.resolution, self.resolution, 3], tf.float32,
                                     name='images')

  def _outputs(self, normalized):
    logits = tf.cast(self.model(normalized, training=False), tf.float32)
    probabilities = tf.nn.softmax(logits, axis=-1)
    scores, classes = tf.math.top_k(probabilities, k=self.top_k)
    classes = tf.cast(classes, tf.int32)
    return {'probabilities': probabilities, 'top_k_classes': classes, 'top_k_scores': scores,
            'top_k_names': tf.gather(self.class_names, classes)}

  def serve_bytes(self, image_bytes):
    """serving_default: encoded images string [N] -> dict of outputs."""
    with tf.control_dependencies(_check_bytes(image_bytes)):
      image_bytes = tf.identity(image_bytes)
    with tf.control_dependencies(_check_image_sizes(image_bytes, self.max_image_pixels)):
      image_bytes = tf.identity(image_bytes)
    # The pixel limit is checked above, for the whole batch before any decode.
    images = tf.map_fn(
        lambda encoded: preprocessing.eval_preprocess(encoded, self.resolution, self.convention,
                                                      small_image=self.small_image,
                                                      max_image_pixels=None),
        image_bytes, fn_output_signature=tf.TensorSpec(
            [self.resolution, self.resolution, 3], tf.float32),
        parallel_iterations=16)
    return self._outputs(images)

  def serve_images(self, images):
    """predict_images: RGB float32 [N, R, R, 3] on 0-255 -> dict of outputs."""
    with tf.control_dependencies(_check_pixels(images)):
      images = tf.identity(images)
    return self._outputs(preprocessing.normalize(images, self.convention))
