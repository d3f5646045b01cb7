"""What the training loop reports: progress (a bar on a terminal, or log lines, with rate and ETA:
noisy_student_tf.progress), TensorBoard scalars, and a JSON-lines log (MODEL_DIR/train_log.jsonl)
that scripts and tests can read."""

import json
import logging
import os

import tensorflow as tf

from noisy_student_tf import progress

log = logging.getLogger('noisy_student_tf.train')

PROGRESS_MODES = progress.MODES


class Reporter:
  """Writes one record per logging interval to the log, TensorBoard and train_log.jsonl.

  model_dir: where tensorboard/{train,eval} and train_log.jsonl go; write: False on non-chief
  workers (they only log).  total_steps: for the progress display.  mode: one of PROGRESS_MODES
  ('auto' = a bar when stderr is a terminal, log lines otherwise; 'log' adds lines with the step
  rate and ETA to the metric lines).  initial_step: the step training starts (or resumes) from.
  """

  def __init__(self, model_dir, total_steps, *, write=True, mode='auto', initial_step=0):
    self.total_steps = total_steps
    self.write = write
    self.mode = progress.resolve(mode)
    self.bar = self.mode == 'bar'
    self.quiet = self.mode == 'none'
    self._writers = {}
    self._jsonl = os.path.join(model_dir, 'train_log.jsonl')
    self._tb_root = os.path.join(model_dir, 'tensorboard')
    self._progress = None
    if not self.quiet and initial_step < total_steps:
      self._progress = progress.Progress('train', total_steps, 'steps', self.mode,
                                         initial=initial_step, logger=log)

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
    if not (self.bar and kind == 'train'):  # on a bar, the train metrics go into the bar
      log.info('%s step %d/%d: %s', kind, step, self.total_steps, text)
    if self._progress is not None and kind == 'train':
      if self.bar:
        self._progress.set_postfix(text)
      self._progress.update_to(step)
      if step >= self.total_steps:
        self._progress.close()

  def close(self):
    """Ends the progress display; flushes and closes the TensorBoard writers."""
    if self._progress is not None:
      self._progress.close()
    for writer in self._writers.values():
      writer.close()
