"""Tests of siprec_src.streams."""
