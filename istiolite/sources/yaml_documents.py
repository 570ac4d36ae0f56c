"""Manifest text → the Kubernetes objects it holds, each with the line where it starts.

A manifest is multi-document YAML (`---` separated), possibly with `kind: List` documents (as
kubectl writes them); JSON is read as YAML, so the same line numbers come out of it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

# libyaml is ~7x faster; the pure-Python loader gives the same results.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# libyaml's composer recurses in C with no depth limit: a few tens of thousands of nested
# collections overflow the stack and kill the process, so deeper input is refused beforehand.
# Below PyYAML's own limit (1,000 since 6.0.4), so the message is ours whichever PyYAML runs.
MAX_DEPTH = 500

# What YAML refuses to read (PyYAML's Reader.NON_PRINTABLE), to point at the offending character.
_NON_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
# Aliases let a few KB of YAML stand for a tree of billions of nodes ("billion laughs"); PyYAML
# shares the aliased objects, but everything downstream (validation, generation, the xDS
# message) expands them. A document's aliases may add at most this many nodes, counting an
# aliased subtree again at every reference; `<<: *defaults`-style sharing stays far below it.
MAX_ALIAS_NODES = 100_000
# No Kubernetes or Istio field holds more than an int64 (19 digits); Python refuses to convert
# decimal text past 4,300 digits (sys.int_max_str_digits, which the environment can lift), and
# converting is quadratic in the length. Longer integers are refused with their position.
MAX_INT_DIGITS = 4300
_SATURATE = 1 << 62  # expanded sizes stop growing here: past any limit, and cheap to add

# JSON read by the fallback: strings are skipped whole, brackets and digit runs looked at.
_JSON_TOKEN = re.compile(rf'"(?:[^"\\]|\\.)*"|[\[{{]|[\]}}]|\d{{{MAX_INT_DIGITS + 1},}}')
# An anchor (`&name`) where YAML allows one; also found in some quoted text, which only costs
# the alias check.
_ANCHOR = re.compile(r"(?:^|[\s\[{,])&[^\s\[\]{},]")
_FIELD_PART = re.compile(r"([^.\[\]]+)|\[([^\]]*)\]")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


# Plain scalars are typed as Kubernetes reads them (sigs.k8s.io/yaml), not as YAML 1.1 does:
# no base-60 numbers (`12:30` and `1:20` stay text), no timestamps (`2024-01-01` stays text),
# `=` is text, `0o17` is octal and `1e3` a float. `yes`/`on` stay booleans, as for kubectl.
_INT = re.compile(
    r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0o?[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""",
    re.X,
)
_FLOAT = re.compile(
    r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_DROPPED_TAGS = ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value", "tag:yaml.org,2002:yaml")


def _kubernetes_resolvers() -> dict[Any, list[tuple[str, re.Pattern[str]]]]:
    resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}
    for first, entries in yaml.resolver.Resolver.yaml_implicit_resolvers.items():
        kept = [(t, r) for t, r in entries if t not in _NUMBER_TAGS + _DROPPED_TAGS]
        if kept:
            resolvers[first] = kept
    for first in "-+0123456789.":
        numbers = resolvers.setdefault(first, [])
        numbers.append(("tag:yaml.org,2002:int", _INT))
        numbers.append(("tag:yaml.org,2002:float", _FLOAT))
    return resolvers


class _Typing:
    """What both loaders share: Kubernetes' plain scalar types, bounded integers."""

    yaml_implicit_resolvers = _kubernetes_resolvers()

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        digits = sum(c.isdigit() for c in node.value)
        if digits > MAX_INT_DIGITS:
            raise yaml.constructor.ConstructorError(
                None, None, _too_many_digits(digits), node.start_mark
            )
        return yaml.constructor.SafeConstructor.construct_yaml_int(self, node)  # type: ignore[arg-type]


class _Loader(_Typing, _BaseLoader):  # type: ignore[misc]  # the base is chosen at run time
    """The fast (libyaml) loader; its scanner refuses a `:` right before a flow indicator."""


class _FlowColonLoader(_Typing, yaml.SafeLoader):
    """The pure-Python loader, for text where a plain scalar in a flow collection has a `:`
    right before `,` `]` `}` (`[1.2.3.4, 001:db8::]`): as for Kubernetes, the `:` belongs to
    the scalar (YAML 1.1 readers refuse it, or end the scalar before it)."""

    def scan_plain(self) -> Any:
        token = super().scan_plain()
        if self.flow_level and self.peek() == ":" and self.peek(1) in ",[]{}":
            self.forward()
            token = yaml.ScalarToken(token.value + ":", True, token.start_mark, self.get_mark())
        return token


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_FlowColonLoader.add_constructor(
    "tag:yaml.org,2002:int",
    _FlowColonLoader.construct_yaml_int,  # type: ignore[type-var]
)
# libyaml's complaint about such a `:`: only text it refuses so takes the slower loader (~10x:
# about 0.1 MB/s), and only up to this size, so a file's read stays within seconds.
_FLOW_COLON_PROBLEM = "found unexpected ':'"
MAX_FLOW_COLON_BYTES = 1024 * 1024


def _too_many_digits(digits: int) -> str:
    return f"integer of {digits} digits is too long (at most {MAX_INT_DIGITS})"


class ManifestSyntaxError(ValueError):
    """The text is not YAML (nor JSON); `line` and `column` are 1-based, None when unknown."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        where = ""
        if line is not None:
            where = f" (line {line}, column {column})" if column is not None else f" (line {line})"
        super().__init__(f"{message}{where}")
        self.message = message
        self.line = line
        self.column = column


@dataclass(frozen=True, slots=True)
class RawObject:
    """One object as written in the file, before the model has looked at it."""

    raw: Any
    line: int  # 1-based line of the object's first key
    # A fault in the YAML itself that makes the object unreliable (field, message), e.g. a key
    # given twice: PyYAML silently keeps the last, kubectl refuses the object.
    problem: tuple[str, str] | None = None
    node: yaml.Node | None = field(default=None, repr=False, compare=False)

    def line_of(self, field_path: str) -> int:
        """The line of a field named as ValidationError names it (spec.ports[0].port), or of the
        deepest part of that path that exists (the object's line when none does)."""
        node = self.node
        line = self.line
        for match in _FIELD_PART.finditer(field_path):
            part = match.group(1) if match.group(1) is not None else match.group(2)
            if isinstance(node, yaml.MappingNode):
                found = [(k, v) for k, v in node.value if _scalar(k) == part]
                if not found:
                    break
                key_node, node = found[-1]
                line = key_node.start_mark.line + 1
            elif isinstance(node, yaml.SequenceNode) and part.isdigit():
                if int(part) >= len(node.value):
                    break
                node = node.value[int(part)]
                line = node.start_mark.line + 1
            else:
                break
        return line


def read_objects(text: str, *, json_fallback: bool = False) -> list[RawObject]:
    """All objects of a manifest, in file order; raises ManifestSyntaxError for the whole text.

    `json_fallback`: when YAML cannot read the text, try strict JSON (YAML 1.1 refuses some valid
    JSON, such as tab indentation); objects read that way carry line 1.
    """
    try:
        documents = _load_documents(text)
    except ManifestSyntaxError:
        if not json_fallback:
            raise
        _check_json(text)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestSyntaxError(exc.msg, exc.lineno, exc.colno) from None
        except (ValueError, RecursionError) as exc:  # _check_json should have caught these
            raise ManifestSyntaxError(f"not valid JSON: {str(exc)[:200]}") from None
        documents = [(data, None)]
    objects: list[RawObject] = []
    for data, annotated in documents:
        objects.extend(_expand(data, annotated))
    return objects


def _load_documents(text: str) -> list[tuple[Any, _Annotated | None]]:
    _check_depth(text)
    try:
        return _compose(text, _Loader)
    except ManifestSyntaxError as err:
        if not err.message.startswith(_FLOW_COLON_PROBLEM) or len(text) > MAX_FLOW_COLON_BYTES:
            raise
    return _compose(text, _FlowColonLoader)


def _compose(text: str, loader_class: type[Any]) -> list[tuple[Any, _Annotated | None]]:
    may_alias = _ANCHOR.search(text) is not None  # no anchor, no alias: nothing to expand
    loader = loader_class(text)
    documents: list[tuple[Any, _Annotated | None]] = []
    node: yaml.Node | None = None
    try:
        while loader.check_node():
            node = loader.get_node()
            # Before construction: constructing flattens `<<` merges into the node, which would
            # make legitimate overrides look like repeated keys.
            if may_alias:
                _check_aliases(node)
            duplicates = _duplicate_keys(node)
            data = loader.construct_document(node)
            documents.append((data, _Annotated(node, duplicates)))
    except ManifestSyntaxError:
        raise  # ours, already placed (a ValueError: the tagged-value clause must not take it)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = str(exc.problem or exc.context or exc)
        if exc.context and exc.problem:
            # The problem is often found far from its cause (an unclosed bracket is reported at
            # the end of the file), so say where the construct began too.
            start = exc.context_mark
            where = f" at line {start.line + 1}, column {start.column + 1}" if start else ""
            message = f"{exc.problem} ({exc.context}{where})"
        if mark is None:
            raise ManifestSyntaxError(message) from None
        raise ManifestSyntaxError(message, mark.line + 1, mark.column + 1) from None
    except yaml.YAMLError as exc:  # ReaderError: a character YAML does not allow
        raise _reader_error(text, exc) from None
    except RecursionError:  # only the pure-Python loader gets here, below MAX_DEPTH
        raise ManifestSyntaxError("nested too deeply") from None
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        # An explicit tag whose value does not convert (`!!int abc`, `!!timestamp x`).
        line = node.start_mark.line + 1 if node is not None else None
        raise ManifestSyntaxError(f"cannot read a tagged value: {exc}", line) from None
    finally:
        loader.dispose()
    return documents


def _check_depth(text: str) -> None:
    # Every collection needs at least one of these characters of its own, so their count bounds
    # the depth; only text that could be deep pays for the event walk.
    if sum(text.count(c) for c in "[{-?:") <= MAX_DEPTH:
        return
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark  # the parser always sets it; the stubs allow None
                    line, column = (
                        (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
                    )
                    raise ManifestSyntaxError(
                        f"nested more than {MAX_DEPTH} levels deep", line, column
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return  # a syntax error: composing reports it with its position


def _check_json(text: str) -> None:
    """The YAML reader's depth and integer limits, applied to JSON the YAML reader refused."""
    if sum(text.count(c) for c in "[{") <= MAX_DEPTH and len(text) <= MAX_INT_DIGITS:
        return
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        first = token.group()[0]
        if first in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise _json_error(text, token.start(), f"nested more than {MAX_DEPTH} levels deep")
        elif first in "]}":
            depth -= 1
        elif first != '"':
            digits = token.end() - token.start()
            raise _json_error(text, token.start(), _too_many_digits(digits))


def _json_error(text: str, pos: int, message: str) -> ManifestSyntaxError:
    line = text.count("\n", 0, pos) + 1
    return ManifestSyntaxError(message, line, pos - (text.rfind("\n", 0, pos) + 1) + 1)


def _check_aliases(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand it by more than MAX_ALIAS_NODES nodes, or that
    contains itself; computed on the composed nodes, so nothing is expanded to find out."""
    # Only collections are tracked: a scalar counts 1 wherever it appears (an aliased scalar
    # adds one node per reference, which the file size already bounds).
    sizes: dict[int, int] = {}  # expanded size of each collection finished, saturating
    open_nodes: set[int] = set()  # on the current path: meeting one again is a cycle
    written = 0  # nodes as written: each collection once, with its scalar children
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children = _children(node)
        if children_done:
            open_nodes.discard(key)
            sizes[key] = min(_SATURATE, 1 + sum(sizes.get(id(c), 1) for c in children))
            continue
        if key in sizes:
            continue
        open_nodes.add(key)
        written += 1
        stack.append((node, True))
        for child in children:
            if isinstance(child, yaml.ScalarNode):
                written += 1
            elif id(child) in open_nodes:
                anchor = child.start_mark.line + 1
                raise _alias_error(
                    root, f"contains itself (an alias of the anchor at line {anchor})"
                )
            elif id(child) not in sizes:
                stack.append((child, False))
    expanded = sizes.get(id(root), 1)
    if expanded - written > MAX_ALIAS_NODES:
        shown = "more than 10^18" if expanded >= _SATURATE else f"{expanded:,}"
        raise _alias_error(
            root,
            f"aliases expand it to {shown} nodes from {written:,} written "
            f"(they may add at most {MAX_ALIAS_NODES:,})",
        )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _alias_error(root: yaml.Node, message: str) -> ManifestSyntaxError:
    return ManifestSyntaxError(f"document {message}", root.start_mark.line + 1)


def _reader_error(text: str, exc: yaml.YAMLError) -> ManifestSyntaxError:
    found = _NON_PRINTABLE.search(text)
    if found is None:
        return ManifestSyntaxError(str(exc))
    pos = found.start()
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return ManifestSyntaxError(f"character #x{ord(found.group()):04x} is not allowed", line, column)


@dataclass(frozen=True, slots=True)
class _Annotated:
    node: yaml.Node
    duplicates: list[tuple[str, str]]  # (field path, message), in file order


def _expand(data: Any, annotated: _Annotated | None) -> list[RawObject]:
    node = annotated.node if annotated else None
    duplicates = annotated.duplicates if annotated else []
    line = node.start_mark.line + 1 if node is not None else 1
    if data is None:
        return []  # an empty document (a stray `---`, or only comments)
    if not _is_list(data):
        return [RawObject(data, line, duplicates[0] if duplicates else None, node)]
    items = data.get("items")
    outside_items = [d for d in duplicates if not d[0].startswith("items[")]
    if outside_items:
        return [RawObject(data, line, outside_items[0], node)]
    if items is None:
        return []
    if not isinstance(items, list):
        return [RawObject(data, line, ("items", f"must be a list, got {type(items).__name__}"))]
    item_nodes = _items_nodes(node)
    if len(item_nodes) != len(items):
        item_nodes = [None] * len(items)  # e.g. items from a `<<` merge: no node per item
    objects: list[RawObject] = []
    for i, (item, item_node) in enumerate(zip(items, item_nodes, strict=True)):
        prefix = f"items[{i}]"
        problem = next(
            (
                (path[len(prefix) :].lstrip("."), message)
                for path, message in duplicates
                if path.startswith((f"{prefix}.", f"{prefix}["))
            ),
            None,
        )
        item_line = item_node.start_mark.line + 1 if item_node is not None else line
        objects.append(RawObject(item, item_line, problem, item_node))
    return objects


def _is_list(data: Any) -> bool:
    """`kind: List` (kubectl's), or a typed list such as ServiceList as the API returns it."""
    if not isinstance(data, dict):
        return False
    kind = data.get("kind")
    return kind == "List" or (isinstance(kind, str) and kind.endswith("List") and "items" in data)


def _items_nodes(node: yaml.Node | None) -> list[yaml.Node | None]:
    if not isinstance(node, yaml.MappingNode):
        return []
    for key_node, value_node in reversed(node.value):  # the last `items` wins, as in the data
        if _scalar(key_node) == "items":
            return list(value_node.value) if isinstance(value_node, yaml.SequenceNode) else []
    return []


def _duplicate_keys(root: yaml.Node) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    seen: set[int] = set()  # aliases share nodes; visiting each once keeps this linear
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        children: list[tuple[yaml.Node, str]] = []
        if isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = _scalar(key_node)
                if key is None or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                child = _join(path, key)
                line = key_node.start_mark.line + 1
                if key in first_line:
                    found.append((child, f"is given twice (lines {first_line[key]} and {line})"))
                else:
                    first_line[key] = line
                children.append((value_node, child))
        elif isinstance(node, yaml.SequenceNode):
            children = [(child, f"{path}[{i}]") for i, child in enumerate(node.value)]
        stack.extend(reversed(children))  # depth-first in file order
    return found


def _scalar(node: yaml.Node) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _join(path: str, key: str) -> str:
    if _PLAIN_KEY.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{key}]"
