from typing import Any

import pytest

from istiolite.model.regex import MAX_PATTERN_LENGTH, compile_re2, regex_error
from istiolite.model.validation import ValidationError
from istiolite.model.virtualservice import parse_virtual_service


def test_accepts_what_re2_accepts() -> None:
    assert regex_error(r"\pL+") is None
    assert compile_re2(r"\pL+").fullmatch("héllo") is not None


@pytest.mark.parametrize(("pattern", "reason"), [(r"(a)\1", r"\1"), ("(?=a)b", "(?=")])
def test_rejects_what_re2_rejects(pattern: str, reason: str) -> None:
    err = regex_error(pattern)
    assert err is not None and "RE2 rejects it" in err and reason in err


def test_pattern_length_and_program_size_bounded() -> None:
    assert regex_error("a" * (MAX_PATTERN_LENGTH + 1)) is not None
    # 280 characters, RE2 program of ~40k instructions: over the limit the bootstrap gives Envoy.
    err = regex_error("a{1000}" * 40)
    assert err is not None and "program size" in err
    assert regex_error("a{1000}" * 20) is None


def test_full_match_and_ignore_case() -> None:
    assert compile_re2("ab").fullmatch("abc") is None
    assert compile_re2("AB", ignore_case=True).fullmatch("ab") is not None


def _vs(match: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "r", "namespace": "ns"},
        "spec": {
            "hosts": ["api"],
            "http": [{"match": [match], "route": [{"destination": {"host": "api"}}]}],
        },
    }


def test_virtual_service_uri_regex_uses_re2() -> None:
    parse_virtual_service(_vs({"uri": {"regex": r"/\pL+"}}))  # RE2 yes, Python re no
    for bad in (r"/(a)\1", "/(?=a)"):
        with pytest.raises(ValidationError) as info:
            parse_virtual_service(_vs({"uri": {"regex": bad}}))
        assert info.value.field.endswith("uri.regex"), info.value.field
        assert "RE2 rejects it" in info.value.message
