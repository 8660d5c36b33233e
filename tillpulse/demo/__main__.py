import sys

from tillpulse.cli import run_component

raise SystemExit(run_component("demo", sys.argv[1:]))
