"""``python -m aimesh_cli``: the same as the ``aimesh`` command."""

import sys

from aimesh_cli.main import main

sys.exit(main())
