"""TwiML ``<Start>``/``<Stop>``/``<Connect>`` instructions, read into frozen values (sans-I/O).

The documents this reads are the ones Twilio's ``<Siprec>`` page shows (seed 000) and its
``<Stream>`` page::

    <?xml version="1.0" encoding="UTF-8"?>
    <Response>
      <Start>
        <Siprec name="my_stream_1" connectorName="Gridspace_1" track="outbound_track"
                statusCallback="https://example.com/siprec" statusCallbackMethod="GET">
          <Parameter name="Custom1" value="Bob"/>
        </Siprec>
        <Stream name="bot" url="wss://bot.example.com/media" track="both_tracks">
          <Parameter name="CustomerId" value="42"/>
        </Stream>
      </Start>
      <Stop><Siprec name="my_stream_1"/><Stream name="bot"/></Stop>
    </Response>

``parse_twiml`` returns one instruction per noun, in document order: ``StartSiprec``,
``StopSiprec``, ``StartStream`` (``<Start><Stream>``, or ``<Connect><Stream>`` with
``bidirectional``), ``StopStream``, or ``Unsupported`` for a verb (``<Say>``) or a noun
(``<Connect><Room>``) that is well-formed TwiML but that this module does not turn into an
instruction. Deciding what to do with an ``Unsupported`` (refuse the document, naming it) is
the executor's job, so the parser never silently drops anything. Adding a noun is one entry in
``_NOUNS`` and one dataclass.

Checked here, each with the line (and attribute) at fault in ``TwimlError``: the root is
``<Response>``; ``<Start>``/``<Stop>``/``<Connect>`` hold nouns only, and at least one; only
the attributes Twilio documents for ``<Siprec>`` (``name``, ``connectorName``, ``track``,
``statusCallback``, ``statusCallbackMethod``), ``<Stream>`` (``url``, ``name``, ``track``,
``statusCallback``, ``statusCallbackMethod``) and ``<Parameter>`` (``name``, ``value``);
``<Stop><Siprec>`` and ``<Stop><Stream>`` need ``name`` (it is how the thing to stop is found);
no attribute is empty but a ``<Parameter>``'s ``value``. Attributes Twilio documents but that
are not done here (``<Stream connectorName audioFormat sampleRate>``, ``<Connect action
method>``) are refused with ``code="unsupported_twiml"`` rather than ignored. Values are kept
as written: whether a track, a URL or a connector is right is the executor's call.

**The safe XML reader** (``parse_xml``, shared with the Plivo XML shape in ``plivo.py``), as
``siprec_src.metadata.reader`` does it (its parser is private to the metadata layer, which
``control`` may not import): expat is driven directly and refuses any ``<!DOCTYPE`` or
``<!ENTITY`` in its own handlers (no entity expansion, no external entity, whatever the
encoding), documents over ``max_chars`` are refused before parsing, and elements nest at most
``MAX_DEPTH`` deep. Errors are raised as the caller's ``XmlDocumentError`` subclass, so each
shape names itself ("TwiML line 3: ...", "Plivo XML line 3: ...").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, cast
from xml.parsers import expat

from siprec_src.errors import LocalProtocolError

__all__ = [
    "MAX_DEPTH",
    "MAX_TWIML_CHARS",
    "Instruction",
    "StartSiprec",
    "StartStream",
    "StopSiprec",
    "StopStream",
    "TwimlError",
    "Unsupported",
    "XmlDocumentError",
    "XmlElement",
    "parse_twiml",
    "parse_xml",
]

# Twilio refuses a ``Twiml`` parameter over 4000 characters (its error 32018).
MAX_TWIML_CHARS = 4000
# <Response><Start><Siprec><Parameter> is four levels; anything much deeper is not TwiML.
MAX_DEPTH = 8


class XmlDocumentError(LocalProtocolError):
    """An XML document of an API shape cannot be used. ``line`` (1-based) and ``attribute``
    say where, when known. Subclasses name the shape (``shape``), the request field the
    document came in (``document_field``; without one ``field`` is the attribute) and their codes."""

    shape: ClassVar[str] = "XML"
    document_field: ClassVar[str | None] = None
    invalid_code: ClassVar[str] = "invalid_xml"
    too_large_code: ClassVar[str] = "xml_too_large"

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        attribute: str | None = None,
        code: str | None = None,
    ) -> None:
        where = f"line {line}" if line is not None else ""
        if attribute is not None:
            where = f"{where}, attribute {attribute!r}" if where else f"attribute {attribute!r}"
        text = f"{self.shape} {where}: {message}" if where else f"{self.shape}: {message}"
        # The field at fault: the request field the document came in when the shape has one
        # (Twilio's ``Twiml``), else the attribute (a Plivo XML document is the whole body).
        field = self.document_field or attribute
        super().__init__(text, field=field, code=code or self.invalid_code)
        self.line = line
        self.attribute = attribute


class TwimlError(XmlDocumentError):
    """The TwiML cannot be used. ``line`` (1-based) and ``attribute`` say where, when known.

    ``code`` is ``twiml_too_large`` for an oversized document, ``unsupported_twiml`` for an
    attribute Twilio documents but that is not done here, and ``invalid_twiml`` otherwise.
    """

    shape = "TwiML"
    document_field = "Twiml"
    invalid_code = "invalid_twiml"
    too_large_code = "twiml_too_large"


@dataclass(frozen=True, slots=True)
class StartSiprec:
    """``<Start><Siprec>``: start a SIPREC recording. ``None`` means the attribute was absent."""

    name: str | None = None
    connector_name: str | None = None
    track: str | None = None
    status_callback: str | None = None
    status_callback_method: str | None = None
    parameters: tuple[tuple[str, str], ...] = ()  # (name, value) of each <Parameter>, in order
    line: int = 0


@dataclass(frozen=True, slots=True)
class StopSiprec:
    """``<Stop><Siprec name="...">``: stop the recording with that name (or SID)."""

    name: str
    line: int = 0


@dataclass(frozen=True, slots=True)
class StartStream:
    """``<Start><Stream>`` (one-way) or ``<Connect><Stream>`` (``bidirectional``): start a
    WebSocket stream. ``attributes`` are the ``<Stream>`` attributes as written, in order."""

    attributes: tuple[tuple[str, str], ...] = ()
    parameters: tuple[tuple[str, str], ...] = ()  # (name, value) of each <Parameter>, in order
    bidirectional: bool = False
    line: int = 0

    @property
    def name(self) -> str | None:
        return dict(self.attributes).get("name")


@dataclass(frozen=True, slots=True)
class StopStream:
    """``<Stop><Stream name="...">``: stop the stream with that name (or SID)."""

    name: str
    line: int = 0


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A verb (``noun`` is ``None``) or a verb's noun that this module does not execute."""

    verb: str
    noun: str | None = None
    line: int = 0

    @property
    def element(self) -> str:
        """How TwiML writes it: ``<Say>`` or ``<Connect><Room>``."""
        return f"<{self.verb}>" if self.noun is None else f"<{self.verb}><{self.noun}>"


Instruction = StartSiprec | StopSiprec | StartStream | StopStream | Unsupported


@dataclass(slots=True)
class XmlElement:
    """One element as expat reported it: its start tag's line, and the text directly inside it
    (the character data between its children, joined)."""

    tag: str
    attributes: dict[str, str]
    line: int
    children: list[XmlElement] = field(default_factory=list)
    text: str = ""


_NESTING_VERBS = ("Start", "Stop", "Connect")  # verbs whose children are nouns, each an instruction
# Attributes Twilio documents on a verb, that this module does not do: refused as unsupported.
_UNSUPPORTED_VERB_ATTRIBUTES = {"Connect": ("action", "method")}
_SIPREC_ATTRIBUTES = ("name", "connectorName", "track", "statusCallback", "statusCallbackMethod")
_STREAM_ATTRIBUTES = ("url", "name", "track", "statusCallback", "statusCallbackMethod")
# What the helper libraries can write on <Stream> (Stream connectors, other audio formats).
_UNSUPPORTED_STREAM_ATTRIBUTES = ("connectorName", "audioFormat", "sampleRate")


def parse_twiml(text: str, *, max_chars: int = MAX_TWIML_CHARS) -> tuple[Instruction, ...]:
    """The instructions of a TwiML document, in order; ``TwimlError`` if it cannot be used."""
    root = parse_xml(text, max_chars=max_chars, error=TwimlError)
    if root.tag != "Response":
        raise TwimlError(f"the root element must be <Response>, not <{root.tag}>", line=root.line)
    if root.attributes:
        raise _unknown_attribute(root)
    instructions: list[Instruction] = []
    for verb in root.children:
        if verb.tag not in _NESTING_VERBS:
            instructions.append(Unsupported(verb.tag, None, verb.line))
            continue
        unsupported = _UNSUPPORTED_VERB_ATTRIBUTES.get(verb.tag, ())
        for key in verb.attributes:
            if key in unsupported:
                raise TwimlError(
                    f"<{verb.tag} {key}> is not supported by siprec-src (it does not fetch TwiML)",
                    line=verb.line,
                    attribute=key,
                    code="unsupported_twiml",
                )
        if verb.attributes:
            raise _unknown_attribute(verb)
        if not verb.children:
            raise TwimlError(f"<{verb.tag}> needs a noun such as <Siprec> or <Stream>", line=verb.line)
        for noun in verb.children:
            reader = _NOUNS.get((verb.tag, noun.tag))
            instructions.append(reader(noun) if reader else Unsupported(verb.tag, noun.tag, noun.line))
    return tuple(instructions)


# --- the nouns ---------------------------------------------------------------------------------------


def _parameters(node: XmlElement) -> tuple[tuple[str, str], ...]:
    """The ``<Parameter name value/>`` children of ``<Siprec>``/``<Stream>``, in order."""
    parameters: list[tuple[str, str]] = []
    for child in node.children:
        if child.tag != "Parameter":
            raise TwimlError(f"<{node.tag}> may hold <Parameter> only, not <{child.tag}>", line=child.line)
        if child.children:
            raise TwimlError("<Parameter> holds no elements", line=child.children[0].line)
        _only(child, ("name", "value"), may_be_empty=("value",))
        name = child.attributes.get("name")
        if name is None:
            raise TwimlError("<Parameter> needs a name", line=child.line, attribute="name")
        parameters.append((name, child.attributes.get("value", "")))
    return tuple(parameters)


def _start_siprec(node: XmlElement) -> Instruction:
    _only(node, _SIPREC_ATTRIBUTES)
    parameters = _parameters(node)
    get = node.attributes.get
    return StartSiprec(
        name=get("name"),
        connector_name=get("connectorName"),
        track=get("track"),
        status_callback=get("statusCallback"),
        status_callback_method=get("statusCallbackMethod"),
        parameters=parameters,
        line=node.line,
    )


def _stop_siprec(node: XmlElement) -> Instruction:
    # The start attributes are tolerated on a stop (the same element is often pasted back),
    # but only ``name`` means anything: it is how the recording to stop is found.
    _only(node, _SIPREC_ATTRIBUTES)
    if node.children:
        raise TwimlError("<Stop><Siprec> holds no elements", line=node.children[0].line)
    name = node.attributes.get("name")
    if name is None:
        raise TwimlError(
            "<Stop><Siprec> needs the name of the recording to stop", line=node.line, attribute="name"
        )
    return StopSiprec(name, node.line)


def _stream_attributes(node: XmlElement) -> None:
    for key in node.attributes:
        if key in _UNSUPPORTED_STREAM_ATTRIBUTES:
            raise TwimlError(
                f"<Stream {key}> is not supported by siprec-src (streams carry the call's G.711 "
                "audio to the url given)",
                line=node.line,
                attribute=key,
                code="unsupported_twiml",
            )
    _only(node, _STREAM_ATTRIBUTES)


def _start_stream(node: XmlElement, *, bidirectional: bool) -> Instruction:
    _stream_attributes(node)
    parameters = _parameters(node)
    if "url" not in node.attributes:
        raise TwimlError("<Stream> needs the url of the WebSocket service", line=node.line, attribute="url")
    return StartStream(tuple(node.attributes.items()), parameters, bidirectional, node.line)


def _stop_stream(node: XmlElement) -> Instruction:
    _stream_attributes(node)  # as for <Siprec>: a pasted-back start element is fine
    if node.children:
        raise TwimlError("<Stop><Stream> holds no elements", line=node.children[0].line)
    name = node.attributes.get("name")
    if name is None:
        raise TwimlError(
            "<Stop><Stream> needs the name of the stream to stop", line=node.line, attribute="name"
        )
    return StopStream(name, node.line)


# (verb, noun) -> reader.
_NOUNS: dict[tuple[str, str], Callable[[XmlElement], Instruction]] = {
    ("Start", "Siprec"): _start_siprec,
    ("Stop", "Siprec"): _stop_siprec,
    ("Start", "Stream"): lambda node: _start_stream(node, bidirectional=False),
    # Twilio: <Connect><Stream> is the bidirectional stream (inbound track only).
    ("Connect", "Stream"): lambda node: _start_stream(node, bidirectional=True),
    ("Stop", "Stream"): _stop_stream,
}


def _only(node: XmlElement, allowed: tuple[str, ...], may_be_empty: tuple[str, ...] = ()) -> None:
    for key, value in node.attributes.items():
        if key not in allowed:
            raise _unknown_attribute(node, allowed, key)
        if not value.strip() and key not in may_be_empty:
            raise TwimlError(f"<{node.tag}> {key} is empty", line=node.line, attribute=key)


def _unknown_attribute(node: XmlElement, allowed: tuple[str, ...] = (), key: str | None = None) -> TwimlError:
    key = key if key is not None else next(iter(node.attributes))
    known = ", ".join(allowed) if allowed else "none"
    return TwimlError(
        f"<{node.tag}> has no attribute {key!r} (known: {known})", line=node.line, attribute=key
    )


# --- XML -----------------------------------------------------------------------------------------------


def parse_xml(text: str, *, max_chars: int, error: type[XmlDocumentError]) -> XmlElement:
    """The root element of ``text``, read safely (see the module doc); problems are ``error``s."""
    if len(text) > max_chars:
        raise error(
            f"the document is {len(text)} characters, more than the {max_chars} accepted",
            code=error.too_large_code,
        )
    # A clear reason before parsing; expat's handlers below refuse them again in any spelling.
    lowered = text.lower()
    for marker in ("<!doctype", "<!entity"):
        if marker in lowered:
            raise error(_dtd_refusal(marker[2:].upper()))

    parser = expat.ParserCreate()
    stack: list[tuple[XmlElement, list[str]]] = []  # open elements and their text pieces
    roots: list[XmlElement] = []

    def start(tag: str, attributes: dict[str, str]) -> None:
        if len(stack) >= MAX_DEPTH:
            raise error(f"elements nest deeper than {MAX_DEPTH} levels", line=parser.CurrentLineNumber)
        node = XmlElement(tag, dict(attributes), parser.CurrentLineNumber)
        (stack[-1][0].children if stack else roots).append(node)
        stack.append((node, []))

    def end(_tag: str) -> None:
        node, pieces = stack.pop()
        node.text = "".join(pieces)

    def characters(data: str) -> None:
        if stack:
            stack[-1][1].append(data)

    def refuse_doctype(*_: object) -> None:
        raise error(_dtd_refusal("DOCTYPE"), line=parser.CurrentLineNumber)

    def refuse_entity(*_: object) -> None:
        raise error(_dtd_refusal("ENTITY"), line=parser.CurrentLineNumber)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_entity
    parser.UnparsedEntityDeclHandler = refuse_entity
    parser.ExternalEntityRefHandler = cast(Callable[..., int], refuse_entity)
    try:
        parser.Parse(text, True)
    except expat.ExpatError as exc:
        reason = expat.ErrorString(exc.code) if exc.code is not None else str(exc)
        raise error(f"not well-formed XML: {reason} (column {exc.offset + 1})", line=exc.lineno) from None
    except (ValueError, LookupError) as exc:  # an encoding expat cannot use
        raise error(f"cannot be parsed: {exc}") from None
    return roots[0]


def _dtd_refusal(what: str) -> str:
    return f"a <!{what} declaration; DTDs and entities are refused (entity expansion, external entities)"
