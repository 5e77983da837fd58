"""Config schema: defaults, bounds, unknown keys, and that the shipped configs validate."""

import copy
import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from mlepi import config
from mlepi.cli import STAGE_MODULES
from mlepi.config.bands import BandsConfig
from mlepi.ml import train
from mlepi.vibrations import thermal

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_configs_validate(name):
    cfg = config.load(ROOT / "config" / name)
    assert set(config.stage_keys("dft")) <= set(cfg)


def test_the_science_config_changes_only_what_it_names():
    """config/science.yaml goes on top of config.yaml (snakemake --configfile): merged as Snakemake merges, it is a
    valid workflow config in its own results folder with more training, test and inference samples."""
    from snakemake.utils import update_config

    base = config.read_yaml(ROOT / "config" / "config.yaml")
    science = config.read_yaml(ROOT / "config" / "science.yaml")
    merged = copy.deepcopy(base)
    update_config(merged, science)
    config.validate_workflow(merged, [ROOT / "config" / "config.yaml", ROOT / "config" / "science.yaml"])
    assert merged["system"]["name"] != base["system"]["name"]
    for key in ("train_samples", "infer_samples", "test_samples"):
        assert merged["thermal"][key] > base["thermal"][key]
    assert merged["active"]["rounds"] >= 1 and merged["dft"] == base["dft"] and merged["model"] == base["model"]


def test_a_key_added_at_its_default_reruns_nothing():
    """An x-omit-default key at its default is not in the params a rule passes (so adding it to the schema
    changes no finished job's params); the stage fills it in, and a changed value is passed."""
    cfg = config.load(ROOT / "config" / "config.yaml")
    assert cfg["thermal"]["force_constants"] == "finite_difference"
    for stage in ("thermal_train", "supercell_bands"):
        params = config.parse_params(config.stage_params(cfg, stage))
        assert "force_constants" not in params["thermal"] and "soft_modes" in params["thermal"]
        assert config.stage_config(stage, params)["thermal"]["force_constants"] == "finite_difference"
    cfg["thermal"]["force_constants"] = "invariant"
    assert config.parse_params(config.stage_params(cfg, "thermal_train"))["thermal"]["force_constants"] == "invariant"


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


def test_every_key_names_the_stages_that_read_it():
    """The schema's x-stages is the one table of which keys each stage reads: every key has one, and every stage
    it names is a command of the CLI (the thermal stage by purpose) or the Snakefile itself."""
    known = {*STAGE_MODULES, *thermal.STAGES.values(), train.ROUND_STAGE, "workflow"} - {"thermal"}
    for section, props in config.schema()["properties"].items():
        for key, prop in props["properties"].items():
            stages = prop.get(config.STAGES_KEYWORD)
            assert stages and set(stages) <= known, f"{section}.{key}: x-stages {stages}"
            for stage in stages:
                assert key in config.stage_keys(stage)[section]


def test_stage_config_holds_exactly_the_keys_the_stage_reads():
    cfg = config.load(ROOT / "config" / "config.yaml")
    for stage in ("dft", "thermal_train", "thermal_special", "bands", "train"):
        keys = config.stage_keys(stage)
        mine = config.stage_config(stage, cfg)
        assert {s: list(v) for s, v in mine.items()} == keys
        # what a rule passes is what the stage keeps, and it survives the command line
        assert config.stage_config(stage, config.parse_params(config.stage_params(cfg, stage))) == mine
    assert "infer_samples" not in config.stage_config("thermal_train", cfg)["thermal"]
    assert "relax_fmax" not in config.stage_config("dft", cfg)["dft"]
    # missing keys take the defaults; a misspelt key is an error even where the stage would not read it
    assert config.stage_config("dft", {})["system"]["a"] == 2.46
    with pytest.raises(config.ConfigError, match="field 'dft'"):
        config.stage_config("dft", {"dft": {"relax_fmx": 0.01}})
    with pytest.raises(config.ConfigError, match="unknown sections"):
        config.stage_config("dft", {"dtf": {}})
    with pytest.raises(config.ConfigError, match="not valid JSON"):
        config.parse_params("{")


def test_relations_between_keys():
    with pytest.raises(config.ConfigError, match="field 'bands.slope_q_min_1_A' = 0.2 must be below"):
        config.stage_config("bands", {"bands": {"slope_q_min_1_A": 0.2}})


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


def test_bands_view_has_the_keys_the_band_stages_read():
    """BandsConfig only types the keys; which ones, with their defaults and bounds, is the schema's."""
    names = [f.name for f in fields(BandsConfig)]
    for stage in ("bands", "renormalization", "supercell_bands", "accuracy"):
        assert names == config.stage_keys(stage)["bands"], stage
    view = BandsConfig.from_section({"broadening_eV": 1})
    assert isinstance(view.broadening_eV, float) and view.n_k == 21
    with pytest.raises(config.ConfigError, match="field 'bands.n_k'"):
        BandsConfig.from_section({"n_k": 1})
