"""Configuration: one JSON Schema (``config.schema.yaml``) defines every key, its type, unit,
default and bounds. Snakemake validates the config with it at parse time (``workflow/rules/common.smk``),
and every ``mlepi`` command validates again what it is given, with the same code, so the two views cannot
drift apart. Unknown keys are errors; missing keys take the schema default.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(str(resources.files("mlepi.config") / "config.schema.yaml"))


class ConfigError(ValueError):
    """A config file or section is missing, malformed or violates the schema."""


def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


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
    return config


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


def stage_params(config: dict, sections: list[str], drop: tuple[str, ...] = ()) -> str:
    """The sections a stage needs, as the canonical JSON a Snakemake rule passes on the command line.

    Snakemake reruns a rule when this string changes, and only then (rule ``params``). ``drop`` lists
    ``section.key`` entries the rule does not read (they take their schema default when re-validated), so
    that, e.g., changing the number of inference samples does not rerun the DFT of training samples.
    """
    selected = {name: dict(config[name]) for name in sections}
    for entry in drop:
        section, key = entry.split(".")
        selected[section].pop(key)
    return json.dumps(selected, sort_keys=True)


def from_params(text: str, sections: list[str]) -> dict:
    """Parse and validate the JSON that :func:`stage_params` produced."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--params is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise ConfigError("--params must be a JSON object of config sections")
    return validate(config, sections, source="--params")


def section_defaults(name: str) -> dict:
    """The schema defaults of one section (what a stage uses when given no config)."""
    return validate({}, [name], source="defaults")[name]
