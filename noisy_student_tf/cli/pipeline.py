"""ns-pipeline: not yet implemented (filled in by its issue)."""

import sys


def run():
  """Console-script entry point."""
  sys.exit('ns-pipeline is not implemented yet')
