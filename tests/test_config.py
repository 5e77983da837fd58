"""Config schema: defaults, bounds, unknown keys, and that the shipped configs validate."""

import json
import re
from pathlib import Path

import pytest
import yaml

from mlepi import config
from mlepi.cli import STAGE_SECTIONS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_configs_validate(name):
    cfg = config.load(ROOT / "config" / name)
    assert set(STAGE_SECTIONS["dft"]) <= set(cfg)


def test_every_schema_key_has_description_and_default():
    def walk(node, path):
        for key, prop in node.get("properties", {}).items():
            where = f"{path}.{key}"
            assert prop.get("description"), f"{where} lacks a description"
            if "properties" in prop:  # a section: strict; free-form dicts (GPAW mixers) have a default
                assert prop.get("additionalProperties") is False, f"{where} accepts unknown keys"
                walk(prop, where)
            else:
                assert "default" in prop, f"{where} lacks a default"

    walk(config.schema(), "config")


def test_defaults_fill_missing_sections():
    cfg = config.validate({"system": {}})
    assert cfg["system"]["supercell"] == [3, 3]
    assert cfg["thermal"]["antithetic"] is True


@pytest.mark.parametrize("bad, field", [
    ({"system": {"nme": "x"}}, "system"),
    ({"system": {}, "thermal": {"temperatures": [-5]}}, "thermal.temperatures.0"),
    ({"system": {"name": "a/b"}}, "system.name"),
    ({"system": {"name": "x; rm -rf ~"}}, "system.name"),
    ({"system": {"supercell": [3]}}, "system.supercell"),
    ({"system": {"supercell": [0, 3]}}, "system.supercell.0"),
    ({"system": {"a": "2.46"}}, "system.a"),
    ({"system": {}, "phonons": {"displacement": 0}}, "phonons.displacement"),
    ({"system": {}, "bogus": {}}, "(top level)"),
])
def test_bad_values_name_the_field(bad, field):
    with pytest.raises(config.ConfigError, match=re.escape(f"field '{field}'")):
        config.validate(bad)


def test_load_reports_file_problems(tmp_path):
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("system: [unclosed\n")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load(broken)


def test_stage_params_round_trip_and_drop():
    cfg = config.load(ROOT / "config" / "config.yaml")
    text = config.stage_params(cfg, ["thermal"], drop=("thermal.infer_samples",))
    assert "infer_samples" not in json.loads(text)["thermal"]
    back = config.from_params(text, ["thermal"])
    assert back["thermal"]["seed"] == cfg["thermal"]["seed"]
    with pytest.raises(config.ConfigError, match="unexpected sections"):
        config.from_params(json.dumps({"dft": {}}), ["thermal"])


def test_config_yaml_documents_every_key():
    """Every key of the schema appears in config/config.yaml with a comment (its unit or meaning)."""
    text = (ROOT / "config" / "config.yaml").read_text()
    shipped = yaml.safe_load(text)
    for section, props in config.schema()["properties"].items():
        for key in props.get("properties", {}):
            assert key in shipped.get(section, {}), f"config.yaml lacks {section}.{key}"
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "#" in line, f"uncommented config line: {line!r}"


def test_bands_dataclass_agrees_with_schema():
    """The bands section is defined by mlepi.electrons.bands.BandsConfig; the YAML schema must say the same."""
    from mlepi.electrons.bands import config_schema

    assert config.schema()["properties"]["bands"]["properties"] == config_schema()["properties"]
