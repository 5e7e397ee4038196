"""SIPp playing a SIPREC SRS, for interop tests of the recording client.

- ``scenarios/``: the SIPp XML scenarios (accept, 422, silent, SRS BYE, 503, digest auth);
- ``harness``: ``SippSrs``, an async context manager that runs one scenario on a free loopback
  port (UDP, TCP or TLS) and returns SIPp's exit status, message trace and error log, bounded
  in time;
- ``capture``: ``Capture``, dumpcap on ``lo`` for the test's ports, and the SIP messages read
  back from the pcap with tshark, to check what SIPp cannot (XML well formed, labels match).
"""
