"""Semi-supervised splits written to disk: N labeled images per class, the rest as unlabeled.

Recipes such as CIFAR-10 with 4000 labels take one labeled source and hide the labels of most of
it.  The split (data.sources.split_per_class, deterministic by seed) is written once as two
folders of the original encoded images, `labeled/<class>/...` and `unlabeled/<class>/...`, so
that every later stage (ns-train, ns-label, a rerun, another worker) reads plain `folder:` specs.
The unlabeled folder keeps the true class as its sub-folder so that the labeler can report how
often the teacher agrees with the hidden labels; ns-label never reads them otherwise.
The whole folder is built under a temporary name and renamed when complete.
"""

import os
import re
import shutil

from noisy_student_tf.selftrain import shards

SPLIT_FILE = 'split.json'
_MAGIC = ((b'\x89PNG', '.png'), (b'\xff\xd8', '.jpg'), (b'GIF8', '.gif'), (b'BM', '.bmp'),
          (b'RIFF', '.webp'))


def _extension(encoded):
  for magic, ext in _MAGIC:
    if encoded.startswith(magic):
      return ext
  return '.jpg'  # tf.io.decode_image sniffs the content; the name only has to be an image name


def _safe(text):
  return re.sub(r'[^A-Za-z0-9._-]+', '_', text)[-80:]


def is_complete(out_dir):
  """True when `out_dir` holds a finished split."""
  return os.path.exists(os.path.join(out_dir, SPLIT_FILE))


def labeled_spec(out_dir):
  """The source spec of the labeled part."""
  return 'folder:' + os.path.join(out_dir, 'labeled')


def unlabeled_spec(out_dir):
  """The source spec of the unlabeled part (its labels are hidden from the method)."""
  return 'folder:' + os.path.join(out_dir, 'unlabeled')


def write_split(spec, out_dir, n_per_class, seed=0, data_dir=None, label_offset=0):
  """Writes the split of the labeled source `spec` into `out_dir` (skipped when already there).

  Returns the split.json dict: counts per part and class.  Raises ValueError when the source has
  no labels or a class has fewer than n_per_class images (before writing anything).
  """
  if is_complete(out_dir):
    return shards.read_json(os.path.join(out_dir, SPLIT_FILE))
  if not (isinstance(n_per_class, int) and n_per_class >= 1):
    raise ValueError(f'labeled_per_class must be an integer >= 1, got {n_per_class!r}')
  from noisy_student_tf.data import sources  # pylint: disable=g-import-not-at-top
  source = sources.open_source(spec, data_dir=data_dir, label_offset=label_offset)
  if not source.num_classes:
    raise ValueError(f'cannot split {spec!r} per class: the source does not say its classes')
  labeled, rest = sources.split_per_class(source, n_per_class, seed)
  names = [_safe(n) for n in (source.class_names or [str(i) for i in range(source.num_classes)])]
  if sorted(names) != names or len(set(names)) != len(names):
    # folder: sources number classes in sorted folder order: keep the source's order.
    names = [f'{i:05d}_{n}' for i, n in enumerate(names)]
  tmp = out_dir.rstrip('/') + '.tmp'
  shutil.rmtree(tmp, ignore_errors=True)
  counts = {}
  for part, part_source in (('labeled', labeled), ('unlabeled', rest)):
    per_class = [0] * len(names)
    for n in names:  # every class folder, even an empty one, keeps the class numbering
      os.makedirs(os.path.join(tmp, part, n), exist_ok=True)
    for i, d in enumerate(part_source.dataset.as_numpy_iterator()):
      label = int(d['label'])
      folder = os.path.join(tmp, part, names[label])
      sid = d['source_id'].decode('utf-8', 'replace')
      name = f'{i:07d}_{_safe(os.path.splitext(sid)[0])}{_extension(d["encoded"])}'
      with open(os.path.join(folder, name), 'wb') as f:
        f.write(d['encoded'])
      per_class[label] += 1
    counts[part] = per_class
  info = {'source': spec, 'labeled_per_class': n_per_class, 'seed': seed, 'class_names': names,
          'num_labeled': sum(counts['labeled']), 'num_unlabeled': sum(counts['unlabeled']),
          'class_counts': counts}
  shards.write_json(os.path.join(tmp, SPLIT_FILE), info)
  shutil.rmtree(out_dir, ignore_errors=True)
  os.replace(tmp, out_dir)
  return info
