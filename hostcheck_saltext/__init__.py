"""hostcheck packaged as a Salt extension (the ``pip install .`` route)."""
