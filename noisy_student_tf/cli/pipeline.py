"""ns-pipeline: Noisy Student end to end (teacher -> label -> filter -> student, repeated).

  ns-pipeline --flagfile=flags/demo.cfg --work_dir=/tmp/ns-demo

Flags come from the settings tree (selftrain.pipeline.PipelineConfig): its own fields; every
training setting of ns-train as --X for the teacher and the students alike, --teacher.X and
--student.X for one of them (a given --student.X or --teacher.X wins over --X); the labeler's as
--label.X and the filter's as --filter.X.  Every stage is skipped when its outputs are complete,
so the same command resumes after a crash; a stage made with other settings stops the run, and
--restart_from=STAGE redoes it and what follows.  Results: W/report.json, .md and .png.
"""

import dataclasses

from absl import app
from absl import flags
from absl import logging

from noisy_student_tf.cli import config_flags
from noisy_student_tf.selftrain import filter as filter_lib
from noisy_student_tf.selftrain import label as label_lib
from noisy_student_tf.selftrain import pipeline
from noisy_student_tf.train import strategy as strategy_lib
from noisy_student_tf.train import trainer

FLAGS = flags.FLAGS
TrainConfig = trainer.TrainConfig
ROLE_EXCLUDE = pipeline.PIPELINE_OWNED + pipeline.SHARED_ONLY
LABEL_EXCLUDE = pipeline.LABEL_OWNED + ('unlabeled',)  # --unlabeled: one spelling for all binaries
_DEFAULTS = pipeline.PipelineConfig()

config_flags.define(pipeline.PipelineConfig)
config_flags.define(TrainConfig, exclude=pipeline.PIPELINE_OWNED,
                    defaults=dataclasses.asdict(_DEFAULTS.teacher),
                    help_suffix=' [teacher and students]')
config_flags.define(TrainConfig, prefix='teacher.', exclude=ROLE_EXCLUDE, unset=True,
                    help_suffix=' [teacher only; unset: the --X value]')
config_flags.define(TrainConfig, prefix='student.', exclude=ROLE_EXCLUDE, unset=True,
                    defaults=pipeline.STUDENT_DEFAULTS,
                    help_suffix=' [students only; unset: the --X value]')
config_flags.define(label_lib.LabelConfig, only=('unlabeled',),
                    help_suffix=' Unset with --labeled_per_class.')
config_flags.define(label_lib.LabelConfig, prefix='label.', exclude=LABEL_EXCLUDE,
                    defaults=dataclasses.asdict(_DEFAULTS.label), help_suffix=' [ns-label]')
config_flags.define(filter_lib.FilterConfig, prefix='filter.', exclude=pipeline.FILTER_OWNED,
                    defaults=dataclasses.asdict(_DEFAULTS.filter),
                    help_suffix=' [ns-filter; seed + generation]')
config_flags.define_num_cpu_devices()
flags.DEFINE_string('restart_from', None, 'Redo this stage and every stage after it, keeping '
                    'the ones before: split, teacher, label, filter, student, or gen<g>/train, '
                    'gen<g>/label, gen<g>/filter.')
flags.DEFINE_integer('controls_only', None, "Train only the --controls of this generation's "
                     'student, then exit: a second process (or machine, sharing the work dir) '
                     'beside the run that trains the student; that run waits for them.  Needs '
                     'the student started.')


def _student_overrides(shared, teacher_only):
  """The students' TrainConfig overrides: --student.X given (or a student default when --X was
  not given), and the shared value of whatever only the teacher changed."""
  out = {k: shared[k] for k in teacher_only}
  for name, value in config_flags.values(TrainConfig, prefix='student.', exclude=ROLE_EXCLUDE,
                                         skip_none=True).items():
    if not config_flags.is_given('student.' + name) and config_flags.is_given(name):
      value = shared[name]  # --X given, --student.X not: the given value holds for students too
    out[name] = value
  return out


def make_config():
  """Returns the PipelineConfig the flags describe."""
  shared = config_flags.values(TrainConfig, exclude=pipeline.PIPELINE_OWNED)
  teacher_only = config_flags.values(TrainConfig, prefix='teacher.', exclude=ROLE_EXCLUDE,
                                     skip_none=True)
  return pipeline.PipelineConfig(
      **config_flags.values(pipeline.PipelineConfig),
      teacher=TrainConfig(**{**shared, **teacher_only}),
      student=_student_overrides(shared, teacher_only),
      label=label_lib.LabelConfig(
          **config_flags.values(label_lib.LabelConfig, only=('unlabeled',)),
          **config_flags.values(label_lib.LabelConfig, prefix='label.', exclude=LABEL_EXCLUDE)),
      filter=filter_lib.FilterConfig(**config_flags.values(
          filter_lib.FilterConfig, prefix='filter.', exclude=pipeline.FILTER_OWNED)))


def main(argv):
  """Runs the pipeline with the flags' values; exits non-zero with the message on bad input."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  for name in ('work_dir', 'labeled', 'eval_data'):
    if not getattr(FLAGS, name):
      raise app.UsageError(f'--{name} is required')
  try:
    config = make_config()
    strategy_lib.split_cpu(FLAGS.num_cpu_devices)
    if FLAGS.controls_only is not None:
      if FLAGS.restart_from:
        raise ValueError('give --controls_only or --restart_from, not both')
      for name, ev in pipeline.run_controls(config, FLAGS.controls_only).items():
        print(f'control {name} of generation {FLAGS.controls_only}: top-1 '
              f'{100 * ev["top1"]:.2f}% after {ev["steps"]} steps')
      return
    rows = pipeline.run_pipeline(config, restart_from=FLAGS.restart_from)
  except ValueError as e:
    logging.error('%s', e)
    raise SystemExit(f'ns-pipeline: {e}') from None
  print()
  for r in rows:
    who = 'teacher' if r['generation'] == 0 else f'student {r["generation"]}'
    print(f'{who:>10} ({r["model"]}): top-1 {100 * r["top1"]:.2f}%  top-5 {100 * r["top5"]:.2f}%  '
          f'pseudo-labels {r["num_pseudo_labels"]}  {r["seconds"]:.0f} s')
  print(f'report: {FLAGS.work_dir}/report.md')


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == '__main__':
  run()
