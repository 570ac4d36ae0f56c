"""RE2 checks for regexes istiolite passes to Envoy or runs on client input.

Envoy compiles every `safe_regex` with RE2, so validation must accept exactly what RE2
accepts (`\\pL` yes, backreferences and lookaheads no), and istiolite's own matching of
client-supplied patterns must never use a backtracking engine on the event loop.
"""

from __future__ import annotations

import re2  # no stubs published (pyproject: ignore_missing_imports)

# The bootstrap's runtime layer sets re2.max_program_size.error_level to this; Envoy rejects
# (NACKs) a regex whose compiled program is larger.
MAX_PROGRAM_SIZE = 32768
# Client-supplied patterns (CSDS) are bounded before compiling at all.
MAX_PATTERN_LENGTH = 1024


def compile_re2(pattern: str, *, ignore_case: bool = False) -> re2._Regexp:
    """Compile `pattern` as Envoy would; raises ValueError with RE2's reason."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"regex is {len(pattern)} characters, over the {MAX_PATTERN_LENGTH} limit")
    options = re2.Options()
    options.case_sensitive = not ignore_case
    options.log_errors = False  # the reason goes in the error, not to stderr
    try:
        compiled = re2.compile(pattern, options)
    except re2.error as err:
        reason = err.args[0] if err.args else err
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"RE2 rejects it: {reason}") from None
    if compiled.programsize > MAX_PROGRAM_SIZE:
        raise ValueError(
            f"RE2 program size {compiled.programsize} is over Envoy's limit {MAX_PROGRAM_SIZE}"
        )
    return compiled


def regex_error(pattern: str) -> str | None:
    """Why Envoy would reject `pattern`, or None."""
    try:
        compile_re2(pattern)
    except ValueError as err:
        return str(err)
    return None
