"""TF Serving warm-up requests: assets.extra/tf_serving_warmup_requests.

TF Serving replays the records of this file (a TFRecord file of `tensorflow.serving.PredictionLog`
protos, at most 1000) through the model when it loads a version, before it marks the version
available, so that the first real request does not pay for graph initialisation.  If a replayed
request fails, TF Serving refuses the version: `replay` runs the same requests in-process so that a
broken export is caught before it is published.

The protos come from the `tensorflow-serving-api` package (same version as TensorFlow).
"""

import os

import numpy as np
import tensorflow as tf

WARMUP_FILE = 'tf_serving_warmup_requests'
EXTRA_DIR = 'assets.extra'


def _apis():
  try:
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
  except ImportError as e:
    raise ImportError('writing TF Serving warm-up requests needs the tensorflow-serving-api '
                      'package (pip install "tensorflow-serving-api==2.21.*")') from e
  return predict_pb2, prediction_log_pb2


def synthetic_jpeg(resolution, seed=0):
  """Returns the JPEG bytes of a deterministic smooth RGB test image of side `resolution`."""
  rng = np.random.default_rng(seed)
  y, x = np.meshgrid(np.linspace(0, 1, resolution), np.linspace(0, 1, resolution), indexing='ij')
  phase = rng.uniform(0, 2 * np.pi, size=3)
  channels = [127.5 + 127.5 * np.sin(2 * np.pi * (x + y) + p) for p in phase]
  image = np.stack(channels, axis=-1).clip(0, 255).astype(np.uint8)
  return tf.io.encode_jpeg(image, quality=95).numpy()


def predict_log(model_name, signature_name, inputs):
  """Builds one PredictionLog holding a PredictRequest.

  inputs: dict input name -> numpy array (bytes objects for string tensors).
  Returns a `tensorflow.serving.PredictionLog`.
  """
  predict_pb2, prediction_log_pb2 = _apis()
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature_name
  for name, value in inputs.items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
  return prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=request))


def make_requests(model_name, resolution, jpegs, batch_sizes=(1, 32)):
  """The default warm-up set: `serving_default` at each batch size (cycling through `jpegs`) and
  `predict_images` at batch 1 (a float batch at high resolution is large; one warms the graph).

  jpegs: non-empty list of encoded image bytes.  Returns a list of PredictionLog protos.
  """
  logs = []
  for n in batch_sizes:
    batch = np.array([jpegs[i % len(jpegs)] for i in range(n)], dtype=object)
    logs.append(predict_log(model_name, 'serving_default', {'image_bytes': batch}))
  image = tf.io.decode_image(jpegs[0], channels=3, expand_animations=False)
  image = tf.image.resize(image, (resolution, resolution), antialias=True)
  images = tf.clip_by_value(image, 0, 255).numpy()[None].astype(np.float32)
  logs.append(predict_log(model_name, 'predict_images', {'images': images}))
  return logs


def write_requests(saved_model_dir, logs):
  """Writes `logs` (PredictionLog protos) to SAVED_MODEL_DIR/assets.extra/tf_serving_warmup_requests
  and returns the file's path."""
  if not 0 < len(logs) <= 1000:
    raise ValueError(f'TF Serving replays 1 to 1000 warm-up records, got {len(logs)}')
  folder = os.path.join(saved_model_dir, EXTRA_DIR)
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, WARMUP_FILE)
  with tf.io.TFRecordWriter(path) as writer:
    for log in logs:
      writer.write(log.SerializeToString())
  return path


def read_requests(path):
  """Parses a warm-up file; returns its PredictionLog protos (raises on a malformed record)."""
  _, prediction_log_pb2 = _apis()
  return [prediction_log_pb2.PredictionLog.FromString(record.numpy())
          for record in tf.data.TFRecordDataset(path)]


def replay(loaded, logs):
  """Runs each PredictRequest in `logs` through the signatures of `loaded` (a tf.saved_model.load
  result), as TF Serving does at load time.

  Returns a list of (signature name, {output name: shape}).  Raises what the signature raises.
  """
  results = []
  for log in logs:
    request = log.predict_log.request
    name = request.model_spec.signature_name or 'serving_default'
    inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
    outputs = loaded.signatures[name](**inputs)
    results.append((name, {k: tuple(v.shape) for k, v in outputs.items()}))
  return results
