"""``python -m hf_efficient_probing.cache [scan | delete FINGERPRINT ...]``: see :mod:`.listing`."""

import sys

from .listing import main

sys.exit(main())
