"""A source spec's images as a Beam PCollection of small items, read by model_handler.py.

Two kinds of item, by what the source is made of (data/sources.py):
  'files'    (path, label, source_id, encoded or None): one per image of folder:, images: and
             digits: (digits: carries its in-memory bytes); the file itself is read inside the
             model handler's tf.data pipeline, as ns-label reads it.
  'records'  (file, index in file, serialized record): one per record of tfrecord: and pseudo:
             files, parsed in the model handler by the source's own parser, so that source ids
             (image/source_id, image/filename or `file:index`) are ns-label's.
tfds: sources are refused before any work (runner_settings.check_source_kind).
"""

import apache_beam as beam
import tensorflow as tf


def item_kind(source):
  """'files' or 'records': what the items of `source` (a sources.Source) are."""
  if source.files is not None:
    return 'files'
  if source.records is not None:
    return 'records'
  raise ValueError(f'source {source.spec!r} has neither a file list nor record files')


def _records_of(path):
  """Yields (path, index, serialized) for every record of the TFRecord file `path`."""
  for index, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
    yield path, index, record


def read_items(pipeline, source):
  """The items (see the module docstring) of every image of `source` as a PCollection of
  `pipeline`, spread over the workers."""
  if item_kind(source) == 'files':
    files = source.files
    encoded = files.encoded if files.encoded is not None else [None] * len(files.paths)
    items = [(p, int(l), i, e) for p, l, i, e in zip(files.paths, files.labels, files.ids,
                                                     encoded)]
    return pipeline | 'ListImages' >> beam.Create(items)
  return (pipeline
          | 'ListRecordFiles' >> beam.Create(list(source.records.files))
          | 'ReadRecords' >> beam.FlatMap(_records_of)
          | 'SpreadRecords' >> beam.Reshuffle())
