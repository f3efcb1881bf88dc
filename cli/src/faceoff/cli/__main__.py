"""``python -m faceoff.cli``: the ``faceoff`` command."""

from faceoff.cli.main import main

raise SystemExit(main())
