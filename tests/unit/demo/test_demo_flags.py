"""The demo's flags: `--config-dir DIR` (repeatable) names extra config directories; the old
`--mesh-config DIR` still works but warns, since serve's `--mesh-config` is a mesh config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from istiolite.demo.__main__ import _loopback_flags, build_parser


def test_config_dir_is_repeatable_and_warns_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["--config-dir", "a", "--config-dir=b"])
    assert args.config_dir == [Path("a"), Path("b")]
    assert capsys.readouterr().err == ""


def test_the_old_mesh_config_flag_still_adds_a_directory_with_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(["--config-dir", "a", "--mesh-config", "b"])
    assert args.config_dir == [Path("a"), Path("b")]
    err = capsys.readouterr().err
    assert "--mesh-config is deprecated, use --config-dir" in err


def test_config_dir_is_a_mesh_demo_flag_not_a_loopback_one() -> None:
    parser = build_parser()
    assert _loopback_flags(parser, ["--config-dir", "x", "--mesh-config", "y"]) == []
    assert _loopback_flags(parser, ["--config-dir", "x", "--workdir", "w"]) == ["--workdir"]
