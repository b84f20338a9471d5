"""``python -m pytest_mlscope.cli``: the ``mlscope`` command without its console script."""

from pytest_mlscope.cli import main

raise SystemExit(main())
