# SPDX-License-Identifier: BSD-3-Clause
"""A griffe extension for psycogreen's API reference.

- The docstrings use Sphinx field lists (``:param x:``, ``:raises E:``), which mkdocstrings'
  ``sphinx`` style parses, plus inline roles (``:func:`timeout```) and ``.. versionadded::``
  directives, which it would print literally. Those two are rewritten before parsing: a role
  becomes inline code, the directive a sentence.
- The wait callbacks are built at import time (``gevent_wait_callback = register_backend(...)``),
  so static analysis sees an attribute without a docstring. They are documented as the
  functions they are, with the signature and docstring of the imported object.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from collections.abc import Iterator
from typing import Any

import griffe

# The API reference imports psycogreen.eventlet, hence eventlet, which announces its deprecation
# on import; the build log is no place for it.
warnings.filterwarnings("ignore", "(?s).*Eventlet is deprecated")

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|exc|data|obj|const):`~?([^`]+)`")
_VERSION = re.compile(
    r"^(?P<indent>[ \t]*)\.\. (?P<kind>versionadded|versionchanged|deprecated)::[ \t]*(?P<rest>.*)$",
    re.MULTILINE,
)
_WORDS = {
    "versionadded": "Added in version",
    "versionchanged": "Changed in version",
    "deprecated": "Deprecated since version",
}


def _role(match: re.Match[str]) -> str:
    target = match.group(1)
    # ":func:`~a.b.c`" shows "c" in Sphinx; keep the full dotted name, it reads fine as code.
    return f"`{target}`"


def _version(match: re.Match[str]) -> str:
    words = _WORDS[match.group("kind")]
    rest = match.group("rest").strip()
    version, _, note = rest.partition(" ")
    text = f"*{words} {version}.*"
    if note:
        text = f"{text} {note}"
    return f"{match.group('indent')}{text}"


def rewrite(text: str) -> str:
    """Return ``text`` with inline roles and version directives turned into Markdown."""
    return _VERSION.sub(_version, _ROLE.sub(_role, text))


def _modules(module: griffe.Module) -> Iterator[griffe.Module]:
    yield module
    for member in module.modules.values():
        if not member.is_alias:
            yield from _modules(member)


def _as_function(module: griffe.Module, attribute: griffe.Attribute) -> griffe.Function | None:
    """The runtime callable behind a ``register_backend(...)`` attribute, as a griffe Function."""
    try:
        runtime = getattr(importlib.import_module(module.path), attribute.name)
        signature = inspect.signature(runtime)
    except (ImportError, AttributeError, TypeError, ValueError):
        return None
    parameters = griffe.Parameters(
        *(
            griffe.Parameter(
                p.name,
                annotation=None if p.annotation is p.empty else str(p.annotation),
                kind=griffe.ParameterKind(p.kind.description),
                default=None if p.default is p.empty else repr(p.default),
            )
            for p in signature.parameters.values()
        )
    )
    returns = None if signature.return_annotation is signature.empty else "None"
    function = griffe.Function(
        attribute.name,
        lineno=attribute.lineno,
        endlineno=attribute.endlineno,
        parameters=parameters,
        returns=returns,
    )
    if runtime.__doc__:
        function.docstring = griffe.Docstring(
            rewrite(inspect.cleandoc(runtime.__doc__)), parent=function, parser="sphinx"
        )
    return function


class RstToMarkdown(griffe.Extension):
    """Rewrite docstrings and document the wait callbacks as functions."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: ARG002
        # Docstrings are parsed lazily, after the tree is built: rewriting here is in time.
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:  # noqa: ARG002
        for module in _modules(pkg):
            for name, member in list(module.members.items()):
                if member.is_alias or not isinstance(member, griffe.Attribute):
                    continue
                if not str(member.value).startswith(("make_wait_callback(", "register_backend(")):
                    continue
                function = _as_function(module, member)
                if function is not None:
                    module.set_member(name, function)
