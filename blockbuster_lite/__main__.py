"""``python -m blockbuster_lite [options] -- COMMAND ...``: see ``integrations/cli.py``."""

from __future__ import annotations

from .integrations.cli import main

if __name__ == "__main__":
    main()
