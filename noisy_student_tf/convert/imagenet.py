"""ImageNet-1k class names in the order of the official checkpoints' 1000 logits.

Offline, the only list in the installed packages is the WordNet synset ids that
tensorflow-datasets ships for `imagenet2012` (datasets/imagenet2012/labels.txt: n01440764 ...,
sorted, which is the official class order and also the order of an ImageNet folder tree).
Human-readable names (tench, goldfish, ...) are not shipped by any installed package.
"""

import importlib.util
import os

NUM_CLASSES = 1000
_TFDS_LABELS = os.path.join('datasets', 'imagenet2012', 'labels.txt')


def tfds_labels_path():
  """Returns the path of tensorflow-datasets' ImageNet label file, without importing tfds."""
  spec = importlib.util.find_spec('tensorflow_datasets')
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError('tensorflow-datasets is not installed: it ships the ImageNet synset '
                            'list used as class names (pass class_names explicitly instead)')
  return os.path.join(list(spec.submodule_search_locations)[0], _TFDS_LABELS)


def imagenet_class_names(num_classes=NUM_CLASSES):
  """Returns the ImageNet-1k class names (synset ids) for a classifier with `num_classes` outputs:
  the 1000 synsets, or 'background' plus the 1000 for the older 1001-way checkpoints.

  Raises ValueError for other class counts and FileNotFoundError when the list is unavailable.
  """
  if num_classes not in (NUM_CLASSES, NUM_CLASSES + 1):
    raise ValueError(f'ImageNet class names exist for 1000 or 1001 classes, got {num_classes}')
  path = tfds_labels_path()
  with open(path) as f:
    names = [line.strip() for line in f if line.strip()]
  if len(names) != NUM_CLASSES or len(set(names)) != NUM_CLASSES:
    raise ValueError(f'{path} should list 1000 distinct synsets, found {len(names)}')
  return (['background'] if num_classes == NUM_CLASSES + 1 else []) + names


def read_class_names(path):
  """Reads class names from a text file, one per line (blank lines skipped)."""
  with open(path) as f:
    return [line.strip() for line in f if line.strip()]
