"""``python -m nimrank``: the same command line as the ``nimrank`` script."""

from nimrank.cli import main

raise SystemExit(main())
