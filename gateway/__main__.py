import sys

from tillpulse.cli import run_component

raise SystemExit(run_component("gateway", sys.argv[1:]))
