import sys

from cloud.cli import main

raise SystemExit(main(sys.argv[1:]))
