"""``python -m tests.portal [serve] --data DIR`` / ``python -m tests.portal make-pki DIR``."""

import sys

from .server import main

sys.exit(main())
