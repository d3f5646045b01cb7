"""PNG figures of the self-training stages (matplotlib, Agg backend, written through a rename)."""

import os

import numpy as np


def _figure(nrows, ncols, size):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(nrows, ncols, figsize=size)
  return plt, fig, axes


def _save(plt, fig, path):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp.png'
  fig.tight_layout()
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)


def filter_plot(stats, path):
  """Writes ns-filter's figure to `path`: per-class counts (all pseudo-labels, above the threshold,
  after balancing) and the confidence histogram before and after filtering."""
  plt, fig, (ax1, ax2) = _figure(1, 2, (12, 4))
  classes = np.arange(stats['num_classes'])
  for key, label in (('class_counts_input', 'pseudo-labeled'),
                     ('class_counts_above_threshold', f'confidence >= {stats["threshold"]}'),
                     ('class_counts_output', 'after balancing')):
    ax1.plot(classes, stats[key], label=label, drawstyle='steps-mid')
  ax1.set_xlabel('class')
  ax1.set_ylabel('records')
  ax1.set_title('records per class')
  ax1.legend()
  hist = stats['confidence_histogram']
  edges = np.asarray(hist['bin_edges'])
  centers = (edges[:-1] + edges[1:]) / 2
  width = edges[1] - edges[0]
  ax2.bar(centers, hist['input'], width=width, alpha=0.5, label='input')
  ax2.bar(centers, hist['output'], width=width, alpha=0.5, label='output (with copies)')
  ax2.axvline(stats['threshold'], color='k', linestyle='--', label='threshold')
  ax2.set_xlabel('teacher confidence')
  ax2.set_ylabel('records')
  ax2.set_title('confidence histogram')
  ax2.legend()
  _save(plt, fig, path)


def label_plot(stats, path):
  """Writes ns-label's figure to `path`: pseudo-labels per class and the confidence histogram."""
  plt, fig, (ax1, ax2) = _figure(1, 2, (12, 4))
  ax1.bar(np.arange(len(stats['class_counts'])), stats['class_counts'])
  ax1.set_xlabel('class (teacher argmax)')
  ax1.set_ylabel('images')
  hist = stats['confidence_histogram']
  edges = np.asarray(hist['bin_edges'])
  ax2.bar((edges[:-1] + edges[1:]) / 2, hist['counts'], width=edges[1] - edges[0])
  ax2.set_xlabel('teacher confidence')
  ax2.set_ylabel('images')
  _save(plt, fig, path)


def pipeline_plot(report, path):
  """Writes ns-pipeline's figure to `path`: top-1 (and top-5) test accuracy by generation."""
  plt, fig, ax = _figure(1, 1, (6, 4))
  gens = [r['generation'] for r in report]
  ax.plot(gens, [100 * r['top1'] for r in report], 'o-', label='top-1')
  if any(r.get('top5') is not None for r in report):
    ax.plot(gens, [100 * (r.get('top5') or 0) for r in report], 's--', label='top-5')
  for r in report:
    ax.annotate(r['model'], (r['generation'], 100 * r['top1']), textcoords='offset points',
                xytext=(0, 8), ha='center', fontsize=8)
  ax.set_xticks(gens)
  ax.set_xlabel('generation (0 = teacher trained on labels only)')
  ax.set_ylabel('test accuracy (%)')
  ax.legend()
  ax.grid(alpha=0.3)
  _save(plt, fig, path)
