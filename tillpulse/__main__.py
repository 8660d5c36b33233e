import sys

try:
    from tillpulse.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python imports us: "interrupted" all the same
    sys.stderr.write("tillpulse: interrupted\n")
    raise SystemExit(130) from None

raise SystemExit(main())
