import sys

from tillpulse.demo.cli import main

raise SystemExit(main(sys.argv[1:]))
