"""siprec_src: a SIPREC Session Recording Client (SRC) media engine.

See README.md for the two commands (``make demo``, ``make test``) and docs/architecture.md
for the layering.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
