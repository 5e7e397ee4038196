"""Helpers for SIPp acting as a SIPREC SRC against our SRS: a tone as an RTP pcap, the scenario XML."""
