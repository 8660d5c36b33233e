import sys

from tillpulse.cli import run_component

raise SystemExit(run_component("cloud", sys.argv[1:]))
