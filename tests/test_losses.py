"""The student's loss weighting (issue 15): per_stream = mean CE(labeled) + mean CE(pseudo) (the
paper's text), per_image = lab_loss + ratio x unl_loss (google-research/noisystudent main.py)."""

import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf.train import losses

B, U = 4, 12  # ratio 3


def _batch():
  """Pipeline weights (1/B labeled, 1/U pseudo, shuffled rows) and hand-made CE values."""
  rng = np.random.default_rng(0)
  is_labeled = np.array([1] * B + [0] * U, bool)
  ce = np.array([0.5, 1.0, 1.5, 2.0] + [0.25, 0.5, 0.75, 1.0] * 3, np.float32)
  order = rng.permutation(B + U)
  weights = np.where(is_labeled, 1.0 / B, 1.0 / U).astype(np.float32)
  return weights[order], ce[order], is_labeled[order]


def test_per_stream_is_mean_plus_mean():
  weights, ce, is_labeled = _batch()
  w = losses.row_weights(tf.constant(weights), B, U, 'per_stream').numpy()
  assert float(np.sum(w * ce)) == pytest.approx(ce[is_labeled].mean() + ce[~is_labeled].mean())


def test_per_image_is_lab_plus_ratio_times_unl_exactly():
  weights, ce, is_labeled = _batch()
  w = losses.row_weights(tf.constant(weights), B, U, 'per_image').numpy()
  lab_loss, unl_loss = ce[is_labeled].mean(), ce[~is_labeled].mean()
  assert np.all(w == np.float32(1.0 / B))  # every row of the combined batch weighs the same
  assert float(np.sum(w * ce)) == lab_loss + unl_loss * U / B  # 1.25 + 0.625 x 3 = 3.125
  assert float(np.sum(w * ce)) == 3.125
  np.testing.assert_array_equal(losses.labeled_mask(tf.constant(weights), B, U).numpy(),
                                is_labeled.astype(np.float32))


def test_equal_streams_and_bad_names():
  weights = tf.fill([2 * B], 1.0 / B)
  for weighting in losses.WEIGHTINGS:
    np.testing.assert_array_equal(losses.row_weights(weights, B, B, weighting).numpy(),
                                  weights.numpy())
  with pytest.raises(ValueError, match="pseudo_loss_weighting must be one of"):
    losses.row_weights(weights, B, U, 'mean')
