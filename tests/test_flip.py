"""--flip: with flip off no training image is mirrored (an asymmetric image tells), and the flag
reaches the training pipeline from TrainConfig and from the pipeline's recipes."""

import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf.data import pipeline, sources
from noisy_student_tf.selftrain import label as label_lib
from noisy_student_tf.selftrain import pipeline as selftrain_pipeline
from noisy_student_tf.train import trainer


@pytest.fixture(scope='module')
def ramp_folder(tmp_path_factory):
  """Two classes of 32x32 PNGs whose brightness rises from left to right (never symmetric)."""
  root = tmp_path_factory.mktemp('ramp')
  ramp = np.tile(np.linspace(0, 255, 32).astype(np.uint8)[None, :, None], (32, 1, 3))
  for cls in ('a', 'b'):
    (root / cls).mkdir()
    for i in range(8):
      (root / cls / f'{i}.png').write_bytes(tf.io.encode_png(ramp).numpy())
  return str(root)


def _left_to_right_slopes(folder, flip, small_image):
  ds = pipeline.make_train_dataset(
      sources.open_source(f'folder:{folder}'), batch_size=16, resolution=32, num_classes=2,
      convention=model_dir_lib.InputConvention(), small_image=small_image, seed=0, flip=flip)
  slopes = []
  for images, _, _ in ds.take(8).as_numpy_iterator():
    columns = images.mean(axis=(1, 3))  # [B, W]
    slopes.extend(np.polyfit(np.arange(32), columns.T, 1)[0])
  return np.asarray(slopes)


@pytest.mark.parametrize('small_image', [True, False])
def test_no_image_is_mirrored_without_flip(ramp_folder, small_image):
  assert (_left_to_right_slopes(ramp_folder, False, small_image) > 0).all()
  with_flip = _left_to_right_slopes(ramp_folder, True, small_image)
  assert 0.3 < (with_flip < 0).mean() < 0.7  # about half are mirrored with flip on


def test_flip_reaches_the_training_pipeline(monkeypatch):
  seen = {}

  def fake(*args, **kwargs):
    seen.update(kwargs)
    raise StopIteration
  monkeypatch.setattr(pipeline, 'make_train_dataset', fake)
  config = trainer.TrainConfig(model_dir='/tmp/x', labeled='digits', train_steps=1, flip=False)
  data = trainer._Data(None, None, None, 10, None)  # pylint: disable=protected-access
  fn = trainer._train_dataset_fn(config, data, model_dir_lib.InputConvention(), 16, True,  # pylint: disable=protected-access
                                 tf.distribute.get_strategy(), 0)
  with pytest.raises(StopIteration):
    fn(tf.distribute.InputContext())
  assert seen['flip'] is False
  pipeline_config = selftrain_pipeline.PipelineConfig(
      work_dir='/tmp/w', label=label_lib.LabelConfig(unlabeled='digits'),
      student={'train_steps': 1},
      teacher=trainer.TrainConfig(labeled='digits', eval_data='digits:test', train_steps=1,
                                  flip=False))
  for generation in (0, 1):
    assert pipeline_config.train_config(generation).flip is False
