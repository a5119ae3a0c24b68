import sys

try:
    from .book.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command line loads: one line, as during a command
    print("interrupted: the command had not started; nothing was changed", file=sys.stderr)
    sys.exit(130)  # 128 + SIGINT, as for an interrupted command

sys.exit(main())
