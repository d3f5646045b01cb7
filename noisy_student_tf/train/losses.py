"""How the rows of a mixed labeled + pseudo-labeled batch weigh in the student's loss.

The data pipeline gives every labeled row the weight 1/B and every pseudo-labeled row 1/U
(B labeled and U = round(ratio x B) pseudo-labeled rows a step), so that sum(weight x CE) is
mean CE(labeled) + mean CE(pseudo): the paper's text (Algorithm 1), 'per_stream'.
The official code (google-research/noisystudent main.py) computes
`lab_loss + unl_loss * unl_bsz / lab_bsz`, both terms means: every row of the combined batch
weighs 1/B, 'per_image', so the pseudo-labeled share of the loss is U / (B + U) (75% at ratio 3).
"""

import tensorflow as tf

WEIGHTINGS = ('per_image', 'per_stream')


def labeled_mask(weights, batch_size, pseudo_rows):
  """1.0 on the labeled rows of a batch whose weights the data pipeline set (1/B labeled, 1/U
  pseudo-labeled), 0.0 on the others; all ones when the two are not told apart (U == B or no
  pseudo rows, where both weightings are the same)."""
  if not pseudo_rows or pseudo_rows == batch_size:
    return tf.ones_like(weights)
  return tf.cast(tf.abs(weights - 1.0 / batch_size) < 0.5 * abs(1.0 / batch_size -
                                                                1.0 / pseudo_rows), tf.float32)


def row_weights(weights, batch_size, pseudo_rows, weighting):
  """The loss weight of every row: the pipeline's `weights` ('per_stream'), or those with the
  pseudo-labeled rows scaled by U / B so that every row weighs 1/B ('per_image').

  weights: float32 [B + U]; batch_size: B; pseudo_rows: U (0 without pseudo-labels).
  Returns float32 [B + U]; sum(result x CE) is the data loss.
  """
  if weighting not in WEIGHTINGS:
    raise ValueError(f'pseudo_loss_weighting must be one of {WEIGHTINGS}, got {weighting!r}')
  if weighting == 'per_stream' or not pseudo_rows or pseudo_rows == batch_size:
    return weights
  is_labeled = labeled_mask(weights, batch_size, pseudo_rows)
  scale = tf.constant(pseudo_rows / batch_size, weights.dtype)
  return weights * (is_labeled + (1.0 - is_labeled) * scale)
