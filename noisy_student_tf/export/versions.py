"""The TF Serving export layout: EXPORT_DIR/<version>/ with integer versions, published atomically.

TF Serving watches EXPORT_DIR and loads the numerically highest version folder.  It ignores names
that are not integers, so an export is written to EXPORT_DIR/.tmp-<version>-XXXX first and renamed
when whole: a server never sees a half-written SavedModel.
"""

import os
import shutil
import tempfile


def existing_versions(export_dir):
  """Returns the sorted integer version folders in `export_dir` ([] if it does not exist)."""
  if not os.path.isdir(export_dir):
    return []
  return sorted(int(name) for name in os.listdir(export_dir)
                if name.isdigit() and os.path.isdir(os.path.join(export_dir, name)))


def choose_version(export_dir, version=None):
  """Returns the version to write: `version` if given (a positive int not yet in `export_dir`),
  else one more than the highest existing version (1 for an empty or new folder).

  Raises ValueError naming the version when it is not a positive integer or already exists.
  """
  versions = existing_versions(export_dir)
  if version is None:
    return (versions[-1] + 1) if versions else 1
  if isinstance(version, bool) or not isinstance(version, int) or version < 1:
    raise ValueError(f'version must be a positive integer, got {version!r}')
  if version in versions:
    raise ValueError(f'version {version} already exists in {export_dir!r} '
                     f'(existing versions: {versions}); pick another or leave it unset')
  return version


def make_staging_dir(export_dir, version):
  """Creates and returns an empty temporary folder inside `export_dir` for `version`, with the
  permissions of an ordinary new folder (mkdtemp's 0700 would hide the version from a server
  running as another user)."""
  os.makedirs(export_dir, exist_ok=True)
  path = tempfile.mkdtemp(dir=export_dir, prefix=f'.tmp-{version}-')
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(path, 0o777 & ~umask)
  return path


def publish(staging_dir, export_dir, version):
  """Renames `staging_dir` to EXPORT_DIR/<version> and returns that path.

  Raises FileExistsError (and removes the staging folder) when another export took the version
  meanwhile.
  """
  final = os.path.join(export_dir, str(version))
  if os.path.exists(final):
    discard(staging_dir)
    raise FileExistsError(f'{final} appeared while exporting (a concurrent export?); nothing '
                          'was overwritten')
  os.rename(staging_dir, final)
  return final


def discard(staging_dir):
  """Removes a staging folder left by a failed export (no error if it is gone)."""
  shutil.rmtree(staging_dir, ignore_errors=True)
