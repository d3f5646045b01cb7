"""The pseudo-label gallery's figures (matplotlib, Agg backend) as PNG bytes; their atomic write.

`tile_grid_png` lays images out on a pixel grid: one row per class (its name on the left), column
groups (a header above each), every tile fitted into a TILE_PX square with a caption below it.
The tiles are pasted into one canvas shown by one axes (hundreds of small axes would be slow), so
the PNG's size is exactly `grid_pixel_size(...)`.
"""

import dataclasses
import io
import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image

DPI = 100
TILE_PX = 80
CAPTION_PX = 26
LABEL_PX = 120
GAP_PX = 16
HEADER_PX = 24
TITLE_PX = 30
MARGIN_PX = 8
_COLORS = {None: 'black', True: 'tab:green', False: 'tab:red'}


@dataclasses.dataclass(frozen=True)
class TileImage:
  """One tile: an image (uint8 [H, W, 3]), its caption, and whether its label is right (True,
  False, or None when unknown: the caption's color)."""
  image: np.ndarray
  caption: str
  correct: Optional[bool] = None


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def grid_pixel_size(num_rows, num_groups, per_group, title=''):
  """(width, height) in pixels of a `tile_grid_png` of num_rows rows and num_groups column
  groups of per_group tiles."""
  width = 2 * MARGIN_PX + LABEL_PX + num_groups * per_group * TILE_PX + (num_groups - 1) * GAP_PX
  height = (2 * MARGIN_PX + (TITLE_PX if title else 0) + HEADER_PX +
            num_rows * (TILE_PX + CAPTION_PX))
  return width, height


def tile_origin(row, group, slot, per_group, title=''):
  """(x, y) in pixels of the top-left corner of the TILE_PX square of tile `slot` of column group
  `group` in row `row` (the caption is below it)."""
  x = MARGIN_PX + LABEL_PX + group * (per_group * TILE_PX + GAP_PX) + slot * TILE_PX
  y = MARGIN_PX + (TITLE_PX if title else 0) + HEADER_PX + row * (TILE_PX + CAPTION_PX)
  return x, y


def _fit(image):
  """The image scaled (aspect kept) to fit TILE_PX x TILE_PX, centered on white: uint8 [T, T, 3]."""
  pil = Image.fromarray(np.asarray(image, np.uint8))
  scale = TILE_PX / max(pil.size)
  size = (max(1, round(pil.size[0] * scale)), max(1, round(pil.size[1] * scale)))
  pil = pil.resize(size, Image.NEAREST if scale >= 2 else Image.BILINEAR)
  square = Image.new('RGB', (TILE_PX, TILE_PX), 'white')
  square.paste(pil, ((TILE_PX - size[0]) // 2, (TILE_PX - size[1]) // 2))
  return np.asarray(square)


def _png_bytes(plt, fig):
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=DPI)
  plt.close(fig)
  return buffer.getvalue()


def tile_grid_png(rows: Sequence[Sequence[Sequence[TileImage]]], row_names: Sequence[str],
                  headers: Sequence[str], per_group: int, title: str = '') -> bytes:
  """Draws rows[r][g] (at most per_group TileImages of row r, column group g) as PNG bytes.

  row_names: one per row, written left of it.  headers: one per column group.  Missing tiles stay
  blank; an empty group says 'none'.  Raises ValueError when the lengths disagree or a group holds more than per_group tiles.
  """
  if len(rows) != len(row_names) or any(len(r) != len(headers) for r in rows):
    raise ValueError(f'need one name per row ({len(rows)} rows, {len(row_names)} names) and one '
                     f'header per column group ({len(headers)} headers)')
  if any(len(tiles) > per_group for r in rows for tiles in r):
    raise ValueError(f'a column group holds more than per_group={per_group} tiles')
  width, height = grid_pixel_size(len(rows), len(headers), per_group, title)
  texts = []  # (x, y, text, options)
  for g, header in enumerate(headers):
    x, y = tile_origin(0, g, 0, per_group, title)
    texts.append((x + per_group * TILE_PX / 2, y - HEADER_PX / 2, header,
                  dict(ha='center', va='center', fontsize=10, weight='bold')))
  canvas = np.full((height, width, 3), 255, np.uint8)
  for r, (name, groups) in enumerate(zip(row_names, rows)):
    x, y = tile_origin(r, 0, 0, per_group, title)
    texts.append((x - 6, y + TILE_PX / 2, name, dict(ha='right', va='center', fontsize=9)))
    for g, tiles in enumerate(groups):
      if not tiles:
        x, y = tile_origin(r, g, 0, per_group, title)
        texts.append((x + per_group * TILE_PX / 2, y + TILE_PX / 2, 'none', dict(
            ha='center', va='center', fontsize=8, color='gray')))
      for s, tile in enumerate(tiles):
        x, y = tile_origin(r, g, s, per_group, title)
        canvas[y:y + TILE_PX, x:x + TILE_PX] = _fit(tile.image)
        texts.append((x + TILE_PX / 2, y + TILE_PX + 1, tile.caption,
                      dict(ha='center', va='top', fontsize=6, color=_COLORS[tile.correct],
                           linespacing=1.0)))
  if title:
    texts.append((width / 2, MARGIN_PX + TITLE_PX / 2, title,
                  dict(ha='center', va='center', fontsize=12)))
  plt = _pyplot()
  fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
  ax = fig.add_axes([0, 0, 1, 1])
  ax.imshow(canvas, interpolation='nearest', extent=(0, width, height, 0))
  ax.set_xlim(0, width)
  ax.set_ylim(height, 0)
  ax.axis('off')
  for x, y, text, options in texts:
    ax.text(x, y, text, **options)
  return _png_bytes(plt, fig)


def accuracy_bars_png(class_names: Sequence[str], series, title: str = '') -> bytes:
  """A bar chart of per-class accuracies as PNG bytes: series is {legend: float [C] in [0, 1]
  (NaN: no bar)}, one bar group per class, class names on the x axis."""
  plt = _pyplot()
  n = len(class_names)
  fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * n * max(1, len(series)) + 1.5), 4.5), dpi=DPI)
  width = 0.8 / max(1, len(series))
  positions = np.arange(n)
  for i, (label, values) in enumerate(series.items()):
    values = 100 * np.asarray(values, np.float64)
    ax.bar(positions + (i - (len(series) - 1) / 2) * width, np.nan_to_num(values), width,
           label=label)
  ax.set_xticks(positions)
  ax.set_xticklabels(class_names, rotation=45 if n > 6 else 0, ha='right' if n > 6 else 'center')
  ax.set_xlabel('pseudo-label (the teacher\'s class)')
  ax.set_ylabel('pseudo-labels agreeing with the true label (%)')
  ax.set_ylim(0, 105)
  ax.grid(axis='y', alpha=0.3)
  ax.legend(loc='lower right')
  if title:
    ax.set_title(title)
  fig.tight_layout()
  return _png_bytes(plt, fig)


def confusion_figure(class_names: Sequence[str], rates, counts, title: str = '', note: str = ''):
  """The matplotlib figure of a confusion matrix: rates float [C, C] (rows: true class, each
  normalised over all its records; NaN: no record), counts int [C] (records per true class, shown
  beside the row names); class names on both axes, cells annotated in percent up to 25 classes.
  note: a line under the title (e.g. which classes are shown).  The caller closes it."""
  plt = _pyplot()
  rates = np.asarray(rates, np.float64)
  n = len(class_names)
  side = min(max(5.0, 0.5 * n + 2.5), 30.0)
  fig, ax = plt.subplots(figsize=(side + 1.5, side), dpi=DPI)
  image = ax.imshow(100 * rates, cmap='Blues', vmin=0, vmax=100)
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label='% of the true class\'s records')
  ax.set_xticks(np.arange(n))
  ax.set_xticklabels(class_names, rotation=45, ha='right')
  ax.set_yticks(np.arange(n))
  ax.set_yticklabels([f'{name} ({int(c)})' for name, c in zip(class_names, counts)])
  ax.set_xlabel('pseudo-label (the teacher\'s class)')
  ax.set_ylabel('true (hidden) label (records)')
  if n <= 25:
    for i in range(n):
      for j in range(n):
        if not np.isnan(rates[i, j]) and rates[i, j] >= 0.005:
          ax.text(j, i, f'{100 * rates[i, j]:.0f}', ha='center', va='center', fontsize=8,
                  color='white' if rates[i, j] > 0.5 else 'black')
  ax.set_title('\n'.join(t for t in (title, note) if t))
  fig.tight_layout()
  return fig


def confusion_png(class_names: Sequence[str], rates, counts, title: str = '',
                  note: str = '') -> bytes:
  """`confusion_figure` as PNG bytes."""
  return _png_bytes(_pyplot(), confusion_figure(class_names, rates, counts, title, note))


def reliability_figure(edges, accuracy, confidence, counts, threshold=None, title: str = ''):
  """The matplotlib figure of a reliability diagram: per confidence bin (edges float [B + 1]) the
  share of pseudo-labels that agree with the true label (bars, accuracy float [B], NaN: empty)
  against the diagonal of perfect calibration, the bins' mean confidence (points), the records
  per bin (counts, above the bars) and the filter threshold (a dashed line).  The caller closes
  it."""
  plt = _pyplot()
  edges = np.asarray(edges, np.float64)
  accuracy, confidence = (np.asarray(a, np.float64) for a in (accuracy, confidence))
  counts = np.asarray(counts, np.int64)
  centers, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
  fig, ax = plt.subplots(figsize=(6.5, 5), dpi=DPI)
  ax.bar(100 * centers, 100 * np.nan_to_num(accuracy), 100 * widths * 0.9, color='tab:blue',
         label='pseudo-labels agreeing with the true label')
  ax.plot([0, 100], [0, 100], color='gray', linestyle=':', label='perfect calibration')
  full = counts > 0
  ax.plot(100 * confidence[full], 100 * accuracy[full], 'o', color='tab:orange',
          label='at the bin\'s mean confidence')
  for x, a, c in zip(centers[full], accuracy[full], counts[full]):
    ax.text(100 * x, 100 * a + 1.5, f'{c:,}', ha='center', va='bottom', fontsize=7)
  if threshold is not None:
    ax.axvline(100 * threshold, color='tab:red', linestyle='--',
               label=f'filter threshold {threshold:g}')
  ax.set_xlim(0, 100)
  ax.set_ylim(0, 108)
  ax.set_xlabel('teacher\'s confidence (%), bins; above each bar its records')
  ax.set_ylabel('pseudo-label accuracy (%)')
  ax.legend(loc='upper left', fontsize='small')
  ax.grid(alpha=0.3)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  return fig


def reliability_png(edges, accuracy, confidence, counts, threshold=None,
                    title: str = '') -> bytes:
  """`reliability_figure` as PNG bytes."""
  return _png_bytes(_pyplot(), reliability_figure(edges, accuracy, confidence, counts, threshold,
                                                  title))


def write_bytes(path, data: bytes):
  """Writes `data` (a PNG, an .npy) to `path` through a temporary name in the same folder and a
  rename."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'  # a crash leaves at most this, overwritten by the next write
  with open(tmp, 'wb') as f:
    f.write(data)
  os.replace(tmp, path)
