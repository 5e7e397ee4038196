"""TwiML ``<Start>``/``<Stop>`` instructions, read into frozen values (sans-I/O: text in, values out).

The documents this reads are the ones Twilio's ``<Siprec>`` page shows (seed 000)::

    <?xml version="1.0" encoding="UTF-8"?>
    <Response>
      <Start>
        <Siprec name="my_stream_1" connectorName="Gridspace_1" track="outbound_track"
                statusCallback="https://example.com/siprec" statusCallbackMethod="GET">
          <Parameter name="Custom1" value="Bob"/>
        </Siprec>
      </Start>
      <Stop><Siprec name="my_stream_1"/></Stop>
    </Response>

``parse_twiml`` returns one instruction per noun, in document order: ``StartSiprec``,
``StopSiprec``, or ``Unsupported`` for a verb (``<Say>``) or a noun (``<Start><Stream>``) that
is well-formed TwiML but that this module does not turn into an instruction. Deciding what to
do with an ``Unsupported`` (refuse the document, naming it) is the executor's job, so the parser
never silently drops anything. Adding a noun (``<Stream>``) is one entry in ``_NOUNS`` and one
dataclass.

Checked here, each with the line (and attribute) at fault in ``TwimlError``: the root is
``<Response>``; ``<Start>``/``<Stop>`` hold nouns only, and at least one; only the attributes
Twilio documents for ``<Siprec>`` (``name``, ``connectorName``, ``track``, ``statusCallback``,
``statusCallbackMethod``) and ``<Parameter>`` (``name``, ``value``); ``<Stop><Siprec>`` needs
``name`` (it is how the recording to stop is found); no attribute is empty but a
``<Parameter>``'s ``value``. Values are kept as written: whether a track or a connector exists
is the recording layer's call.

Safety, as ``siprec_src.metadata.reader`` does it (its parser is private to the metadata layer,
which ``control`` may not import, so the approach is repeated here rather than shared): expat is
driven directly and refuses any ``<!DOCTYPE`` or ``<!ENTITY`` in its own handlers (no entity
expansion, no external entity, whatever the encoding), documents over ``MAX_TWIML_CHARS`` are
refused before parsing, and elements nest at most ``MAX_DEPTH`` deep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast
from xml.parsers import expat

from siprec_src.errors import LocalProtocolError

__all__ = [
    "MAX_DEPTH",
    "MAX_TWIML_CHARS",
    "Instruction",
    "StartSiprec",
    "StopSiprec",
    "TwimlError",
    "Unsupported",
    "parse_twiml",
]

# Twilio refuses a ``Twiml`` parameter over 4000 characters (its error 32018).
MAX_TWIML_CHARS = 4000
# <Response><Start><Siprec><Parameter> is four levels; anything much deeper is not TwiML.
MAX_DEPTH = 8


class TwimlError(LocalProtocolError):
    """The TwiML cannot be used. ``line`` (1-based) and ``attribute`` say where, when known.

    ``code`` is ``twiml_too_large`` for an oversized document and ``invalid_twiml`` otherwise.
    """

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        attribute: str | None = None,
        code: str = "invalid_twiml",
    ) -> None:
        where = f"line {line}" if line is not None else ""
        if attribute is not None:
            where = f"{where}, attribute {attribute!r}" if where else f"attribute {attribute!r}"
        super().__init__(
            f"TwiML {where}: {message}" if where else f"TwiML: {message}", field="Twiml", code=code
        )
        self.line = line
        self.attribute = attribute


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
class Unsupported:
    """A verb (``noun`` is ``None``) or a verb's noun that this module does not execute."""

    verb: str
    noun: str | None = None
    line: int = 0

    @property
    def element(self) -> str:
        """How TwiML writes it: ``<Say>`` or ``<Start><Stream>``."""
        return f"<{self.verb}>" if self.noun is None else f"<{self.verb}><{self.noun}>"


Instruction = StartSiprec | StopSiprec | Unsupported


@dataclass(slots=True)
class _Node:
    """One element as expat reported it, with the line of its start tag."""

    tag: str
    attributes: dict[str, str]
    line: int
    children: list[_Node] = field(default_factory=list)


_NESTING_VERBS = ("Start", "Stop")  # verbs whose children are nouns, each its own instruction
_SIPREC_ATTRIBUTES = ("name", "connectorName", "track", "statusCallback", "statusCallbackMethod")


def parse_twiml(text: str, *, max_chars: int = MAX_TWIML_CHARS) -> tuple[Instruction, ...]:
    """The instructions of a TwiML document, in order; ``TwimlError`` if it cannot be used."""
    root = _parse(text, max_chars)
    if root.tag != "Response":
        raise TwimlError(f"the root element must be <Response>, not <{root.tag}>", line=root.line)
    if root.attributes:
        raise _unknown_attribute(root)
    instructions: list[Instruction] = []
    for verb in root.children:
        if verb.tag not in _NESTING_VERBS:
            instructions.append(Unsupported(verb.tag, None, verb.line))
            continue
        if verb.attributes:
            raise _unknown_attribute(verb)
        if not verb.children:
            raise TwimlError(f"<{verb.tag}> needs a noun such as <Siprec>", line=verb.line)
        for noun in verb.children:
            reader = _NOUNS.get((verb.tag, noun.tag))
            instructions.append(reader(noun) if reader else Unsupported(verb.tag, noun.tag, noun.line))
    return tuple(instructions)


# --- the nouns ---------------------------------------------------------------------------------------


def _start_siprec(node: _Node) -> Instruction:
    _only(node, _SIPREC_ATTRIBUTES)
    parameters: list[tuple[str, str]] = []
    for child in node.children:
        if child.tag != "Parameter":
            raise TwimlError(f"<Siprec> may hold <Parameter> only, not <{child.tag}>", line=child.line)
        if child.children:
            raise TwimlError("<Parameter> holds no elements", line=child.children[0].line)
        _only(child, ("name", "value"), may_be_empty=("value",))
        name = child.attributes.get("name")
        if name is None:
            raise TwimlError("<Parameter> needs a name", line=child.line, attribute="name")
        parameters.append((name, child.attributes.get("value", "")))
    get = node.attributes.get
    return StartSiprec(
        name=get("name"),
        connector_name=get("connectorName"),
        track=get("track"),
        status_callback=get("statusCallback"),
        status_callback_method=get("statusCallbackMethod"),
        parameters=tuple(parameters),
        line=node.line,
    )


def _stop_siprec(node: _Node) -> Instruction:
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


# (verb, noun) -> reader. <Start><Stream> / <Stop><Stream> go here when WebSocket streams exist.
_NOUNS: dict[tuple[str, str], Callable[[_Node], Instruction]] = {
    ("Start", "Siprec"): _start_siprec,
    ("Stop", "Siprec"): _stop_siprec,
}


def _only(node: _Node, allowed: tuple[str, ...], may_be_empty: tuple[str, ...] = ()) -> None:
    for key, value in node.attributes.items():
        if key not in allowed:
            raise _unknown_attribute(node, allowed, key)
        if not value.strip() and key not in may_be_empty:
            raise TwimlError(f"<{node.tag}> {key} is empty", line=node.line, attribute=key)


def _unknown_attribute(node: _Node, allowed: tuple[str, ...] = (), key: str | None = None) -> TwimlError:
    key = key if key is not None else next(iter(node.attributes))
    known = ", ".join(allowed) if allowed else "none"
    return TwimlError(
        f"<{node.tag}> has no attribute {key!r} (known: {known})", line=node.line, attribute=key
    )


# --- XML -----------------------------------------------------------------------------------------------


def _parse(text: str, max_chars: int) -> _Node:
    if len(text) > max_chars:
        raise TwimlError(
            f"the document is {len(text)} characters, more than the {max_chars} accepted",
            code="twiml_too_large",
        )
    # A clear reason before parsing; expat's handlers below refuse them again in any spelling.
    lowered = text.lower()
    for marker in ("<!doctype", "<!entity"):
        if marker in lowered:
            raise TwimlError(_dtd_refusal(marker[2:].upper()))

    parser = expat.ParserCreate()
    stack: list[_Node] = []
    roots: list[_Node] = []

    def start(tag: str, attributes: dict[str, str]) -> None:
        if len(stack) >= MAX_DEPTH:
            raise TwimlError(f"elements nest deeper than {MAX_DEPTH} levels", line=parser.CurrentLineNumber)
        node = _Node(tag, dict(attributes), parser.CurrentLineNumber)
        (stack[-1].children if stack else roots).append(node)
        stack.append(node)

    def end(_tag: str) -> None:
        stack.pop()

    def refuse_doctype(*_: object) -> None:
        raise TwimlError(_dtd_refusal("DOCTYPE"), line=parser.CurrentLineNumber)

    def refuse_entity(*_: object) -> None:
        raise TwimlError(_dtd_refusal("ENTITY"), line=parser.CurrentLineNumber)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_entity
    parser.UnparsedEntityDeclHandler = refuse_entity
    parser.ExternalEntityRefHandler = cast(Callable[..., int], refuse_entity)
    try:
        parser.Parse(text, True)
    except expat.ExpatError as exc:
        reason = expat.ErrorString(exc.code) if exc.code is not None else str(exc)
        raise TwimlError(
            f"not well-formed XML: {reason} (column {exc.offset + 1})", line=exc.lineno
        ) from None
    except (ValueError, LookupError) as exc:  # an encoding expat cannot use
        raise TwimlError(f"cannot be parsed: {exc}") from None
    return roots[0]


def _dtd_refusal(what: str) -> str:
    return f"a <!{what} declaration; DTDs and entities are refused (entity expansion, external entities)"
