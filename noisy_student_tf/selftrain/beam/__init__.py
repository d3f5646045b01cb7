"""ns-label and ns-filter as Apache Beam pipelines (`--runner=beam`, the optional extra `[beam]`).

  runner_settings.py  the runner / beam_options settings and their checks (no Beam import)
  options.py          --beam_options -> Beam PipelineOptions
  staging.py          output written to a staging folder, moved into place when whole
  sources.py          a source spec's images / records as a PCollection
  model_handler.py    a RunInference ModelHandler over a model dir (ns-label's preprocessing)
  labeling.py         the labeling pipeline: RunInference -> pseudo-label records + stats.json
  top_k.py            the per-class top-K combiner over (confidence, position)
  filtering.py        the filter pipeline: threshold, top-K, join, duplication, sharded output

Only this package imports apache_beam, and nothing outside it imports its modules except through
`runner == 'beam'` (so `import noisy_student_tf.selftrain` works without Beam installed);
runner_settings.py is the exception, Beam-free by design.
"""
