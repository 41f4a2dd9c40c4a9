"""``python -m musrec.cli``: the same as the ``musrec`` command."""

from musrec.cli import main

raise SystemExit(main())
