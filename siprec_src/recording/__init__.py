"""The SRC domain: calls, recordings, recording sessions toward SRSs, failover and limits.

This is the only layer where SIP, SDP, metadata and media meet (docs/architecture.md).
"""
