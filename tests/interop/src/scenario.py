"""A SIPp UAC scenario that behaves like a vendor SRC (Acme Packet / Oracle SBC shape).

INVITE with ``Require: siprec``, a Contact with ``+sip.src``, ``Session-Expires`` and a
``multipart/mixed`` body: an SDP of two ``a=sendonly`` m-lines labelled as the SBC labels
them, and the vendor's own metadata document, passed in as read from the fixture. Then ACK,
the pcap's RTP toward the first m-line of our answer (``play_pcap_audio``), a pause, BYE.
Each received message is checked with ``check_it`` regexps, so SIPp fails the call (exit 1)
when the SRS answers something else.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

BOUNDARY = "unique-boundary-1"


def siprec_uac_scenario(
    metadata: str,
    pcap: Path,
    *,
    labels: Sequence[str],
    hold_ms: int,
) -> str:
    """The scenario XML; ``metadata`` is the XML document of the recording-session part."""
    if "]]>" in metadata or "[" in metadata:
        raise ValueError("the metadata would break the CDATA section or SIPp's [keywords]")
    media = []
    for index, label in enumerate(labels):
        port = "[media_port]" if index == 0 else f"[media_port+{2 * index}]"
        media += [
            f"m=audio {port} RTP/AVP 0",
            "a=rtpmap:0 PCMU/8000",
            f"a=label:{label}",
            "a=sendonly",
        ]
    sdp = "\n".join(
        ["v=0", "o=- 20076 595552 IN IP4 [media_ip]", "s=-", "c=IN IP4 [media_ip]", "t=0 0", *media]
    )
    body = "\n".join(
        [
            f"--{BOUNDARY}",
            "Content-Type: application/sdp",
            "",
            sdp,
            "",
            f"--{BOUNDARY}",
            "Content-Type: application/rs-metadata+xml",
            "Content-Disposition: recording-session",
            "",
            metadata.strip(),
            f"--{BOUNDARY}--",
        ]
    )
    # One check per fact (SIPp's regexps are POSIX extended, without multi-line tricks).
    checks = ["a=recvonly", "m=audio [1-9][0-9]* RTP/AVP 0", *(f"a=label:{label}" for label in labels)]
    body_checks = "\n".join(
        f'      <ereg regexp="{regexp}" search_in="body" check_it="true" assign_to="b{index}" />'
        for index, regexp in enumerate(checks)
    )
    variables = ",".join(["se", *(f"b{index}" for index in range(len(checks)))])
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="vendor-style SIPREC SRC">
  <send retrans="500">
    <![CDATA[
      INVITE sip:srs@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "SBC" <sip:sbc@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:srs@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sbc@[local_ip]:[local_port]>;+sip.src
      Max-Forwards: 70
      Require: siprec
      Supported: timer
      Session-Expires: 1800;refresher=uac
      Accept: application/sdp, application/rs-metadata
      Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, UPDATE
      User-Agent: SIPp vendor-style SRC
      Content-Type: multipart/mixed;boundary={BOUNDARY}
      Content-Length: [len]

{body}
    ]]>
  </send>

  <recv response="100" optional="true" />

  <recv response="200" rtd="true" rrs="true">
    <action>
      <ereg regexp="Session-Expires: 1800;refresher=uac" search_in="msg" check_it="true" assign_to="se" />
{body_checks}
    </action>
  </recv>

  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "SBC" <sip:sbc@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:srs@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:sbc@[local_ip]:[local_port]>;+sip.src
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>

  <nop>
    <action>
      <exec play_pcap_audio="{pcap}" />
    </action>
  </nop>

  <pause milliseconds="{hold_ms}" />

  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "SBC" <sip:sbc@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:srs@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Reason: SIP;cause=200;text="call ended"
      Content-Length: 0
    ]]>
  </send>

  <recv response="200" crlf="true" />

  <!-- the check_it variables are only checked, never read: tell SIPp so -->
  <Reference variables="{variables}" />
</scenario>
"""
