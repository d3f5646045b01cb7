"""What the training loop reports: a progress bar on a terminal or plain log lines, TensorBoard
scalars, and a JSON-lines log (MODEL_DIR/train_log.jsonl) that scripts and tests can read."""

import json
import logging
import os
import sys
import time

import tensorflow as tf

log = logging.getLogger('noisy_student_tf.train')

PROGRESS_MODES = ('auto', 'bar', 'log', 'none')


class Reporter:
  """Writes one record per logging interval to the log, TensorBoard and train_log.jsonl.

  model_dir: where tensorboard/{train,eval} and train_log.jsonl go; write: False on non-chief
  workers (they only log).  total_steps: for the progress bar.  mode: one of PROGRESS_MODES
  ('auto' = a bar when stderr is a terminal, log lines otherwise).
  """

  def __init__(self, model_dir, total_steps, *, write=True, mode='auto'):
    if mode not in PROGRESS_MODES:
      raise ValueError(f'progress must be one of {PROGRESS_MODES}, got {mode!r}')
    self.total_steps = total_steps
    self.write = write
    self.bar = mode == 'bar' or (mode == 'auto' and sys.stderr.isatty())
    self.quiet = mode == 'none'
    self._writers = {}
    self._jsonl = os.path.join(model_dir, 'train_log.jsonl')
    self._tb_root = os.path.join(model_dir, 'tensorboard')
    self._started = time.time()

  def _writer(self, name):
    if name not in self._writers:
      self._writers[name] = tf.summary.create_file_writer(os.path.join(self._tb_root, name))
    return self._writers[name]

  def scalars(self, kind, step, values):
    """Records a dict of floats at `step` under `kind` ('train' or 'eval')."""
    if self.write:
      with self._writer(kind).as_default(step=step):
        for name, value in values.items():
          tf.summary.scalar(name, value)
      self._writer(kind).flush()
      with open(self._jsonl, 'a') as f:
        f.write(json.dumps({'kind': kind, 'step': int(step), **values}) + '\n')
    if self.quiet:
      return
    text = ' '.join(f'{k} {v:.4g}' for k, v in values.items())
    if self.bar and kind == 'train':
      done = step / max(1, self.total_steps)
      filled = int(30 * done)
      sys.stderr.write(f'\r[{"=" * filled}{"." * (30 - filled)}] {step}/{self.total_steps} {text}')
      sys.stderr.flush()
      if step >= self.total_steps:
        sys.stderr.write('\n')
    else:
      log.info('%s step %d/%d: %s', kind, step, self.total_steps, text)

  def close(self):
    """Flushes and closes the TensorBoard writers."""
    for writer in self._writers.values():
      writer.close()
