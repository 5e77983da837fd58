"""Configuration: one JSON Schema (``config.schema.yaml``) defines every key, its type, unit, default, bounds
and the stages that read it (``x-stages``). Snakemake validates the config with it at parse time
(``workflow/rules/common.smk``) and passes each rule the keys its stage reads (:func:`stage_params`); every
stage's ``run()`` takes its config through :func:`stage_config`, with the same code, so the views cannot drift
apart. Unknown keys are errors; missing keys take the schema default.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from mlepi.errors import MlepiError

SCHEMA_PATH = Path(str(resources.files("mlepi.config") / "config.schema.yaml"))
STAGES_KEYWORD = "x-stages"  # the schema's annotation of which stages read a key
OMIT_DEFAULT_KEYWORD = "x-omit-default"  # a key left out of the params at its default (stage_params)


class ConfigError(MlepiError, ValueError):
    """A config file or section is missing, malformed or violates the schema."""


@functools.cache
def _parsed_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def schema() -> dict:
    """The config's JSON Schema (a fresh copy: callers may change it)."""
    return copy.deepcopy(_parsed_schema())


def _with_defaults(validator_class):
    """A validator that fills ``default`` values of missing properties (and of missing sub-objects)."""
    check_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, sub_schema):
        if isinstance(instance, dict):
            for key, prop in properties.items():
                if key not in instance:
                    if "default" in prop:
                        instance[key] = copy.deepcopy(prop["default"])
                    elif prop.get("type") == "object":
                        instance[key] = {}
        yield from check_properties(validator, properties, instance, sub_schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _is_strict_integer(checker, instance) -> bool:
    # JSON Schema counts 100.0 as an integer; mlepi's integers index ranges and arrays, so YAML's 100.0 must
    # be refused by name here rather than fail later as a TypeError deep inside a stage.
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = jsonschema.validators.extend(
    _with_defaults(jsonschema.Draft202012Validator),
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_strict_integer))


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that refuses a key given twice in one mapping (PyYAML silently keeps the last one, so a
    repeated ``epochs:`` or a second ``train:`` section would quietly override the first)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"key {key!r} appears twice in one section (lines {seen[key] + 1} and "
                                  f"{key_node.start_mark.line + 1}); keep one")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path):
    """Parse a YAML config file (no validation): ConfigError, naming the file, for anything unreadable."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise ConfigError(f"config file {path} {what}; start from config/config.yaml")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot be read as a UTF-8 text file ({err})") from None


def validate(config: dict, sections: list[str] | None = None, source: str = "config") -> dict:
    """Validate ``config`` in place (defaults filled) and return it.

    With ``sections``, only those top-level sections are checked (what a single stage receives).
    Raises :class:`ConfigError` naming the first offending field and what the schema expects.
    """
    full = schema()
    for name, value in config.items():
        if value is None:  # a section header with every key commented out: all defaults
            config[name] = {}
    if sections is not None:
        unknown = set(config) - set(sections)
        if unknown:
            raise ConfigError(f"{source}: unexpected sections {sorted(unknown)}; expected {sections}")
        full = {**full, "properties": {k: full["properties"][k] for k in sections}, "required": []}
        for name in sections:
            config.setdefault(name, {})
    errors = sorted(_Validator(full).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        hint = err.schema.get("description", "") if isinstance(err.schema, dict) else ""
        if err.validator == "required":  # only the top level requires anything: a section
            # (from the message: filling defaults has since put an empty section into err.instance)
            hint = f"add a '{err.message.split(chr(39))[1]}:' section; see config/config.yaml"
        raise ConfigError(f"{source}: field '{where}': {err.message}" + (f" ({hint})" if hint else ""))
    _check_relations(config, source)
    return config


def _check_relations(config: dict, source: str) -> None:
    """Bounds between keys, which a JSON Schema cannot state (the A(k, E) grid's ends are kept apart by their own
    bounds: spectral_emin_eV <= 0 < spectral_emax_eV)."""
    bands = config.get("bands") or {}
    low, high = "slope_q_min_1_A", "k_range_1_A"
    if low in bands and high in bands and bands[low] >= bands[high]:
        raise ConfigError(f"{source}: field 'bands.{low}' = {bands[low]} must be below bands.{high} = {bands[high]}")


def load(path) -> dict:
    """Read a YAML config file, validate it and fill defaults."""
    config = read_yaml(path) or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return validate(config, source=str(path))


def validate_workflow(config: dict, files=()) -> dict:
    """What the Snakemake workflow checks at parse time, before any job: each config file it read parses
    without repeated keys (Snakemake's own loader keeps the last silently), the merged config validates, and
    the settings suit the whole pipeline, not only the single stages."""
    for path in files:
        read_yaml(path)
    source = f"workflow config ({', '.join(map(str, files))})" if files else "workflow config"
    validate(config, source=source)
    if config["system"]["stacking"] != "AB":
        raise ConfigError(f"{source}: field 'system.stacking': the workflow ends in the AB bilayer's band "
                          "analysis (SWMcC fit, v_F), which AA stacking does not have; set AB, or run the "
                          "stages you need (mlepi structure, displace, dft, ...) by hand")
    checks, samples = config["bands"]["dft_check_samples"], config["thermal"]["infer_samples"]
    if checks > samples:
        raise ConfigError(f"{source}: field 'bands.dft_check_samples' = {checks} exceeds thermal.infer_samples = "
                          f"{samples}: the DFT cross-check recomputes inferred samples; lower it")
    return config


def _stage_table() -> dict[str, dict[str, list[str]]]:
    """stage -> {section: [keys it reads]}, in schema order, from the schema's ``x-stages`` annotations."""
    table: dict[str, dict[str, list[str]]] = {}
    for section, prop in schema()["properties"].items():
        for key, sub in prop["properties"].items():
            for stage in sub[STAGES_KEYWORD]:
                table.setdefault(stage, {}).setdefault(section, []).append(key)
    return table


def stage_keys(stage: str) -> dict[str, list[str]]:
    """The config keys ``stage`` reads, ``{section: [key, ...]}`` (the ``x-stages`` of every key in the schema).

    Stages are the ``mlepi`` commands that take a config (``thermal`` as ``thermal_train``, ``thermal_infer`` and
    ``thermal_special`` by purpose) and ``workflow``, the Snakefile itself.
    """
    table = _stage_table()
    if stage not in table:
        raise ConfigError(f"no config key is read by stage {stage!r}; stages that read keys: {sorted(table)}")
    return table[stage]


def stage_config(stage: str, config: dict | None = None, source: str = "config") -> dict:
    """What ``stage`` reads of ``config``: ``{section: {key: value}}`` with exactly :func:`stage_keys`, validated.

    ``config`` may be a whole config or any part of one (missing sections and keys take the schema defaults);
    every key it gives is checked, so a misspelt key is an error even where the stage would not read it. This
    is the one way every stage's ``run()`` takes its configuration.
    """
    given = {name: dict(value or {}) for name, value in (config or {}).items()}
    unknown = sorted(set(given) - set(schema()["properties"]))
    if unknown:
        raise ConfigError(f"{source}: unknown sections {unknown}; known: {sorted(schema()['properties'])}")
    keys = stage_keys(stage)
    validate(given, sorted(set(given) | set(keys)), source=source)
    return {section: {key: given[section][key] for key in names} for section, names in keys.items()}


def section_config(name: str, section: dict | None = None, source: str = "config") -> dict:
    """One section, validated and completed with the schema defaults (e.g. a model's ``model`` section)."""
    return validate({name: dict(section or {})}, [name], source=source)[name]


def stage_params(config: dict, *stages: str) -> str:
    """What the ``stages`` read of the (validated) workflow config, as the canonical JSON a Snakemake rule passes
    (several stages: the union of their keys, for a command that runs more than one, as ``train --init`` runs
    ``train`` and ``train_round``).

    Snakemake reruns a rule when its params change, and only then: the keys a stage does not read are not in
    the string, so changing them does not rerun it.

    A key marked ``x-omit-default`` in the schema (one added after results existed, whose default is what the
    stages did before it) is left out while it holds its default, which the stage fills in again: adding it
    reruns nothing, setting it reruns what reads it.
    """
    keys: dict[str, list[str]] = {}
    for stage in stages:
        for section, names in stage_keys(stage).items():
            keys.setdefault(section, []).extend(k for k in names if k not in keys[section])
    properties = schema()["properties"]

    def passed(section, key):
        prop = properties[section]["properties"][key]
        return not (prop.get(OMIT_DEFAULT_KEYWORD) and config[section][key] == prop.get("default"))

    return json.dumps({section: {key: config[section][key] for key in names if passed(section, key)}
                       for section, names in keys.items()}, sort_keys=True)


def parse_params(text: str) -> dict:
    """The JSON of :func:`stage_params` (``mlepi STAGE --params``) as a dict; validation is the stage's."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--params is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise ConfigError("--params must be a JSON object of config sections")
    return config
