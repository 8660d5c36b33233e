import sys

from firmware_sim.cli import main

raise SystemExit(main(sys.argv[1:]))
