"""Settings: environment first, then the YAML file, then defaults; bad values are named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from carrier_core import Settings


def test_yaml_file_then_environment_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "carrier.yaml"
    config.write_text("database_url: postgresql://db/yaml\nreflection_interval: 5\nmax_steps: 4\n")
    monkeypatch.setenv("CARRIER_CONFIG", str(config))
    monkeypatch.setenv("CARRIER_MAX_STEPS", "2")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = Settings()
    assert settings.database_url == "postgresql://db/yaml"
    assert settings.reflection_interval == 5
    assert settings.max_steps == 2
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/env")
    assert Settings().database_url == "postgresql://db/env"


def test_carrier_yaml_in_the_working_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "carrier.yaml").write_text("recent_messages: 7\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CARRIER_CONFIG", raising=False)
    assert Settings().recent_messages == 7


def test_a_bad_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARRIER_REFLECTION_INTERVAL", "0")
    with pytest.raises(ValidationError, match="reflection_interval"):
        Settings()


def test_home_expands_the_user_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARRIER_HOME", "~/somewhere")
    assert Settings().data_dir == Path.home() / "somewhere"


def test_a_missing_config_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CARRIER_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml, which is not a file"):
        Settings()


def test_empty_jwt_settings_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # The template passes its empty parameters as empty strings; "" must not become a
    # required issuer that no token has.
    for name in ("CARRIER_JWT_JWKS_URL", "CARRIER_JWT_ISSUER", "CARRIER_JWT_AUDIENCE"):
        monkeypatch.setenv(name, "")
    settings = Settings()
    assert (settings.jwt_jwks_url, settings.jwt_issuer, settings.jwt_audience) == (None,) * 3


def test_a_config_file_that_is_not_a_mapping_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "carrier.yaml"
    config.write_text("- recent_messages\n- 5\n")
    monkeypatch.setenv("CARRIER_CONFIG", str(config))
    with pytest.raises(ValueError, match=r"carrier\.yaml: the configuration must map setting"):
        Settings()
