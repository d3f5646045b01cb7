"""RandAugment noise: the official level scaling (levels above 10 included) on keras-cv layers."""

import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf.data import augment


def _image(size=32, seed=0):
  rng = np.random.RandomState(seed)
  base = np.linspace(0, 255, size, dtype=np.float32)
  img = base[None, :, None] * 0.5 + base[:, None, None] * 0.3 + rng.rand(size, size, 3) * 50
  return np.clip(img, 0, 255).round().astype(np.uint8)


def test_official_arguments_at_m27():
  a = augment.op_arguments(27)
  assert a['Rotate'] == pytest.approx(81.0)
  assert a['ShearX'] == pytest.approx(0.81)
  assert a['Color'] == pytest.approx(4.96) and a['Brightness'] == pytest.approx(4.96)
  assert (a['Posterize'], a['Solarize'], a['SolarizeAdd'], a['Cutout']) == (10, 691, 297, 108)
  assert a['TranslateX'] == pytest.approx(270.0)
  assert augment.op_arguments(5)['Posterize'] == 2


def test_ops_apply_the_official_arguments_exactly():
  img = _image()
  x = tf.constant(img, tf.float32)
  ops = augment.build_ops(27, 32)
  assert list(ops) == list(augment.OP_NAMES)
  np.testing.assert_array_equal(ops['Invert'](x).numpy(), 255.0 - img)
  np.testing.assert_allclose(ops['Brightness'](x).numpy(), np.clip(img * 4.96, 0, 255), atol=1e-3)
  np.testing.assert_array_equal(ops['SolarizeAdd'](x).numpy(),
                                np.where(img < 128, np.minimum(img + 297.0, 255), img))
  np.testing.assert_array_equal(ops['Solarize'](x).numpy(), img)  # threshold 691: no-op
  np.testing.assert_array_equal(ops['Posterize'](x).numpy(), img)  # 10 bits: no-op
  gray = img.astype(np.float32) @ np.array([0.2989, 0.587, 0.114], np.float32)
  color = ops['Color'](x).numpy()
  np.testing.assert_allclose(color, np.clip(gray[..., None] + 4.96 * (img - gray[..., None]),
                                            0, 255), atol=1.0)
  # geometric ops move pixels by the fixed official amount, one sign or the other
  rot = augment.build_ops(10, 32)['Rotate']
  for _ in range(3):
    out = rot(x).numpy()
    assert not np.array_equal(out, img) and (out == 128).any()
  # the small-image constant R // 8 = 4 px at level 10: a shift of exactly 4 px
  shift = augment.build_ops(10, 32, translate_const=4)['TranslateX']
  out = shift(x).numpy()
  left = np.array_equal(out[:, :-4], img[:, 4:])
  right = np.array_equal(out[:, 4:], img[:, :-4])
  assert left or right


def test_randaugment_m27_runs_in_tf_data_and_keeps_uint8_range():
  aug = augment.make_randaugment(2, 27, 32)
  assert augment.make_randaugment(0, 27, 32) is None
  with pytest.raises(ValueError, match='randaug_layers'):
    augment.make_randaugment(-1, 10, 32)
  img = _image(seed=1)
  ds = tf.data.Dataset.from_tensors(img).repeat(24).map(aug)
  outs = list(ds.as_numpy_iterator())
  assert all(o.dtype == np.uint8 and o.shape == (32, 32, 3) for o in outs)
  changed = [not np.array_equal(o, img) for o in outs]
  assert sum(changed) >= 18  # identities: only Posterize/Solarize picked twice (or rare no-ops)
  assert len({o.tobytes() for o in outs}) > 12
  small = augment.make_randaugment(1, 9, 32, small_image=True)
  out = small(tf.constant(img)).numpy()
  assert (out == 128).all(-1).sum() >= 16 * 16 // 4  # the extra 16x16 cutout (partly clipped)
