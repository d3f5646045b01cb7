"""A RunInference ModelHandler over a model dir: the teacher of ns-label, un-noised.

Beam's bundled TensorFlow handler loads models with tf.keras.models.load_model, which Keras 3
cannot use on our model dirs; this one loads a model dir as ns-label does (model_dir.load_model
with the chosen weights at the test resolution, evaluator.make_predict_fn), once per worker
process (RunInference shares the loaded model between the threads of a process).

Each RunInference batch of items (beam/sources.py) becomes a small Source and goes through
ns-label's own input pipeline (label.labeling_dataset: the evaluation crop, batches of
config.batch_size, corrupt and too large images skipped and counted), so the preprocessing and
the batching are ns-label's by construction.  One batch gives one LabeledChunk.
"""

import dataclasses
import threading
from typing import Any, NamedTuple, Optional

import numpy as np
import tensorflow as tf
from apache_beam.ml.inference import base

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf.data import pipeline
from noisy_student_tf.data import sources
from noisy_student_tf.evaluate import evaluator
from noisy_student_tf.selftrain import label as label_lib


class LabeledChunk(NamedTuple):
  """The teacher's output for one RunInference batch: the images it labeled (original bytes,
  source ids, the source's labels or -1, float32 logits [n, C]) and how many it skipped."""
  encoded: list
  source_ids: list
  truth: np.ndarray
  logits: np.ndarray
  corrupt_skipped: int
  too_large_skipped: int


@dataclasses.dataclass
class Teacher:
  """What a worker loads once: the model dir's config, the predict function at `resolution`,
  the record parser of record sources, and a lock (one labeling pipeline at a time)."""
  model_config: Any
  resolution: int
  predict_fn: Any
  parse: Optional[Any]
  lock: Any


class TeacherModelHandler(base.ModelHandler):
  """ModelHandler[item, PredictionResult(example=number of items, inference=LabeledChunk), Teacher].

  config: the run's LabelConfig; kind: 'files' or 'records' (beam/sources.item_kind);
  items_per_call: the RunInference batch size (a multiple of config.batch_size keeps ns-label's
  model batches whole).
  """

  def __init__(self, config, kind, items_per_call):
    if kind not in ('files', 'records'):
      raise ValueError(f"kind must be 'files' or 'records', got {kind!r}")
    super().__init__(min_batch_size=items_per_call, max_batch_size=items_per_call)
    self._config = config
    self._kind = kind
    self._items_per_call = int(items_per_call)

  def load_model(self) -> Teacher:
    """Loads the teacher of config.model_dir (its config.weights) at the labeling resolution."""
    config = self._config
    model_config = model_dir_lib.read_config(config.model_dir)
    resolution = label_lib.resolution_of(config, model_config)
    model, _ = model_dir_lib.load_model(config.model_dir, weights=config.weights,
                                        resolution=resolution)
    parse = None
    if self._kind == 'records':
      parse = sources.open_source(config.unlabeled, data_dir=config.data_dir,
                                  label_offset=config.label_offset).records.parse
    return Teacher(model_config, resolution, evaluator.make_predict_fn(model), parse,
                   threading.Lock())

  def _chunk_source(self, items, teacher):
    """The items of one batch as a sources.Source in their order."""
    if self._kind == 'files':
      paths, labels, ids, encoded = zip(*items)
      files = sources.FileList(tuple(paths), np.asarray(labels, np.int64), tuple(ids),
                               tuple(encoded) if encoded[0] is not None else None)
      dataset = sources.file_list_dataset(files)
    else:
      paths, index, serialized = zip(*items)
      dataset = tf.data.Dataset.from_tensor_slices(
          (list(paths), np.asarray(index, np.int64), list(serialized))).map(teacher.parse)
    return sources.Source(dataset, None, None, len(items), self._config.unlabeled)

  def run_inference(self, batch, model, inference_args=None):
    """Labels one batch of items with the teacher `model`; returns [PredictionResult] holding
    one LabeledChunk."""
    teacher = model
    counter = pipeline.CorruptCounter()
    encoded, ids, truth, logits = [], [], [], []
    with teacher.lock:
      dataset = label_lib.labeling_dataset(self._chunk_source(batch, teacher), self._config,
                                           teacher.model_config, teacher.resolution, counter)
      for b in dataset:
        logits.append(teacher.predict_fn(b['image']).numpy())
        encoded.extend(b['encoded'].numpy())
        ids.extend(b['source_id'].numpy())
        truth.append(b['label'].numpy())
    num_classes = teacher.model_config.model.num_classes
    chunk = LabeledChunk(
        encoded, ids, np.concatenate(truth) if truth else np.zeros(0, np.int64),
        np.concatenate(logits) if logits else np.zeros((0, num_classes), np.float32),
        counter.count - counter.too_large, counter.too_large)
    return [base.PredictionResult(example=len(batch), inference=chunk)]

  def get_num_bytes(self, batch):
    """The bytes of a batch's items (for Beam's metrics; the default pickles the batch)."""
    return sum(len(x) for item in batch for x in item if isinstance(x, (bytes, str)))

  def get_metrics_namespace(self):
    """Beam metrics go under 'ns_label'."""
    return 'ns_label'
