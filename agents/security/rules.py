"""Rule files: one YAML file per rule, named by its id, loaded and validated with errors that name file and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from insight_mcp.agents.core.yaml_errors import yaml_problem
from insight_mcp.agents.security.model import Rollup, Rule
from insight_mcp.agents.settings import DetectionSettings

SECURITY_RULES = Path(__file__).parent / "rules"
ROLLUPS = Path(__file__).parent / "rollups"
SEQUENCES = Path(__file__).parent / "sequences"


M = TypeVar("M", bound=BaseModel)

CASES_SUFFIXES = (".cases.yaml", ".cases.yml")  # a rule's test cases, beside it: <id>.cases.yaml


class RuleFileError(ValueError):
    """A rule file that cannot be used; the message names the file and the field."""


def builtin_rule_dirs() -> list[Path]:
    """The rule folders shipped with the suite: security, network, and the sequences."""
    from insight_mcp.agents.network import RULES_DIR as NETWORK_RULES

    return [SECURITY_RULES, NETWORK_RULES, SEQUENCES]


def is_cases_file(path: Path) -> bool:
    """A rule's test cases sit beside it as <id>.cases.yaml: data for `rules test`, never a rule."""
    return path.name.endswith(CASES_SUFFIXES)


def rule_files(folder: Path) -> list[Path]:
    """The rule (or rollup) files of a folder, by name, without the case files beside them."""
    return [path for path in sorted(folder.glob("*.y*ml")) if not is_cases_file(path)]


def read_yaml(path: Path) -> Any:
    """One YAML file through libyaml when present: engines and case runs read every rule file, often."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path.read_text(encoding="utf-8"), Loader=loader)


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        data = read_yaml(path)
    except yaml.YAMLError as exc:
        raise RuleFileError(f"{path.name}: {yaml_problem(exc)}") from None
    except OSError as exc:
        raise RuleFileError(f"{path}: cannot read: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise RuleFileError(f"{path.name}: a rule file must hold a mapping of fields")
    return data


def _validated(model: type[M], path: Path, data: dict[str, Any] | None = None) -> M:
    try:
        item = model.model_validate(_read_mapping(path) if data is None else data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(file)"
        raise RuleFileError(f"{path.name}: field '{field}': {err['msg']}") from None
    named = getattr(item, "id", None)
    if named != path.stem:
        raise RuleFileError(f"{path.name}: field 'id' is {named!r} but the file must be named after it")
    return item


# Rules read, by file and the file's time and size: engines and rule cases read every file, often (a case run builds
# an engine per scenario), and parsing the YAML is most of that. Callers get their own copy of the rule; its lists
# and mappings are shared, and nothing changes a loaded rule in place (a changed rule is a new model).
_LOADED: dict[tuple[str, int, int], Rule] = {}
MAX_LOADED = 2000


def load_rule_file(path: Path) -> Rule:
    """Read and validate one rule file; a sequence file (steps instead of a query) becomes the rule it compiles to."""
    from insight_mcp.agents.security.sequence_compiler import Sequence, is_sequence, to_rule

    try:
        stat = path.stat()
    except OSError as exc:
        raise RuleFileError(f"{path}: cannot read: {exc.strerror}") from None
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    rule = _LOADED.get(key)
    if rule is None:
        data = _read_mapping(path)
        rule = to_rule(_validated(Sequence, path, data)) if is_sequence(data) else _validated(Rule, path, data)
        if len(_LOADED) >= MAX_LOADED:
            _LOADED.clear()
        _LOADED[key] = rule
    return rule.model_copy()


def load_rollups(folder: Path = ROLLUPS) -> list[tuple[Rollup, Path]]:
    """The shared rollups rules may read by name."""
    return [(_validated(Rollup, path), path) for path in rule_files(folder)]


def load_rules(folders: list[Path]) -> list[tuple[Rule, Path]]:
    """Every rule in the folders; a later folder may not reuse an id (user rules add, they do not shadow)."""
    seen: dict[str, Path] = {}
    out: list[tuple[Rule, Path]] = []
    for folder in folders:
        if not folder.is_dir():
            raise RuleFileError(f"rule folder {folder} does not exist")
        for path in rule_files(folder):
            rule = load_rule_file(path)
            if rule.id in seen:
                raise RuleFileError(f"{path.name}: id {rule.id!r} is already defined in {seen[rule.id]}")
            seen[rule.id] = path
            out.append((rule, path))
    return out


def configured_rules(rules_dir: Path | None, disabled: list[str]) -> list[tuple[Rule, Path]]:
    """Built-in rules plus the user's folder, minus the disabled ones."""
    folders = builtin_rule_dirs() + ([rules_dir] if rules_dir else [])
    return [(rule, path) for rule, path in load_rules(folders) if rule.id not in disabled]


def rule_set_version(settings: DetectionSettings) -> str:
    """A short hash of every rule, rollup and reference file that runs, and of the settings that change them."""
    import hashlib
    import json

    digest = hashlib.sha256()
    folders = [*builtin_rule_dirs(), ROLLUPS, *([settings.rules_dir] if settings.rules_dir else [])]
    for folder in folders:
        if not folder.is_dir():
            continue
        # Case files are left out: they test a rule and change nothing it finds.
        for path in sorted(p for p in folder.rglob("*")
                           if p.suffix in {".yaml", ".yml", ".txt"} and not is_cases_file(p)):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(json.dumps({"disabled": sorted(settings.disabled_rules), "parameters": settings.parameters},
                             sort_keys=True, default=str).encode())
    return digest.hexdigest()[:12]
