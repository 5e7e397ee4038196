"""The tests' PKI is the demo's (``siprec_src.pki``); kept here so tests import it from one place."""

from siprec_src.pki import Pki, make_pki

__all__ = ["Pki", "make_pki"]
