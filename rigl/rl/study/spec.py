"""What a study runs: its file, grid axes and methods (`docs/studies.md`).

A study is a training script, base gin files and bindings, a grid and a
number of seeds. Grid axes are either gin bindings (a name with a dot,
bound as is) or variables (a name without a dot) that bind nothing
themselves and are filled into the `{name}` placeholders of the study's
methods; a method is a named set of gin files and bindings, the values of
the `method` axis. `runs.expand` turns a study into its runs.
"""

import ast
import dataclasses
import os
import re
from typing import Any, Dict, List, Tuple

try:  # Python 3.11+
    import tomllib
except ImportError:  # Python 3.9-3.10: the same parser as a package
    import tomli as tomllib

# The repository root: gin files and the configs' `include` paths start here.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
SCRIPTS_DIR = os.path.join(PACKAGE_ROOT, 'rigl', 'rl', 'tfagents')
SCRIPTS = tuple(sorted(name[:-len('_train_eval.py')]
                       for name in os.listdir(SCRIPTS_DIR)
                       if name.endswith('_train_eval.py')))  # dqn ppo sac td3
METHOD_AXIS = 'method'


@dataclasses.dataclass
class Method:
    """A named set of gin files and bindings (one value of the method axis)."""
    gin_files: List[str] = dataclasses.field(default_factory=list)
    bindings: List[str] = dataclasses.field(default_factory=list)

    def variables(self) -> List[str]:
        """The `{name}` placeholders its bindings use."""
        names = []
        for binding in self.bindings:
            for name in re.findall(r'\{(\w+)\}', binding):
                if name not in names:
                    names.append(name)
        return names


@dataclasses.dataclass
class Study:
    """What to run: a script, base config, grid axes, methods and seeds."""
    script: str
    gin_files: List[str] = dataclasses.field(default_factory=list)
    bindings: List[str] = dataclasses.field(default_factory=list)
    grid: Dict[str, List[Any]] = dataclasses.field(default_factory=dict)
    methods: Dict[str, Method] = dataclasses.field(default_factory=dict)
    seeds: int = 1


def parse_grid_flag(text: str) -> Tuple[str, List[Any]]:
    """'name=[v1, v2]' -> (name, [v1, v2]); values are Python literals."""
    name, sep, values = text.partition('=')
    name = name.strip()
    if not sep or not name:
        raise ValueError(f'--grid={text!r}: expected NAME=[VALUE, ...], e.g. '
                         "--grid=\"mask_updater.update_alg=['set','rigl']\".")
    try:
        parsed = ast.literal_eval(values.strip())
    except (ValueError, SyntaxError):
        raise ValueError(
            f'--grid={text!r}: {values.strip()!r} is not a Python list '
            "literal (quote strings: ['set','rigl']).") from None
    if not isinstance(parsed, (list, tuple)) or not parsed:
        raise ValueError(f'--grid={text!r}: give a non-empty list of values.')
    return name, list(parsed)


def _string_list(value: Any, where: str) -> List[str]:
    """`value` if it is a list of strings (a lone string is not split)."""
    if not isinstance(value, list) or not all(
            isinstance(item, str) for item in value):
        raise ValueError(f'{where} must be a list of strings, e.g. '
                         f'["a", "b"]; got {value!r}.')
    return list(value)


GRID_VALUE_TYPES = (str, int, float, bool, list)


def load_study(path: str) -> Study:
    """Reads a TOML study file (format: `docs/studies.md`).

    Raises:
        ValueError: naming the file and the key for an unknown key or a
            value of the wrong type.
    """
    with open(path, 'rb') as f:
        data = tomllib.load(f)
    known = {'script', 'gin_files', 'bindings', 'grid', 'methods', 'seeds',
             'description'}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f'{path}: unknown keys {unknown}; allowed: '
                         f'{sorted(known)}.')
    if 'script' not in data:
        raise ValueError(f'{path}: missing script = '
                         f'{" | ".join(repr(x) for x in SCRIPTS)}.')
    for key in ('script', 'description'):
        if key in data and not isinstance(data[key], str):
            raise ValueError(f'{path}: {key} must be a string; got '
                             f'{data[key]!r}.')
    seeds = data.get('seeds', 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int):
        raise ValueError(f'{path}: seeds must be a whole number >= 1; got '
                         f'{seeds!r}.')
    methods_table = data.get('methods', {})
    if not isinstance(methods_table, dict):
        raise ValueError(f'{path}: methods must be tables, e.g. '
                         '[methods.rigl] with gin_files and bindings; got '
                         f'{methods_table!r}.')
    methods = {}
    for name, spec in methods_table.items():
        if not isinstance(spec, dict):
            raise ValueError(f'{path}: method {name!r} must be a table '
                             f'([methods.{name}]) with gin_files and '
                             f'bindings; got {spec!r}.')
        extra = sorted(set(spec) - {'gin_files', 'bindings'})
        if extra:
            raise ValueError(f'{path}: method {name!r} has unknown keys '
                             f'{extra}; allowed: gin_files, bindings.')
        methods[name] = Method(
            _string_list(spec.get('gin_files', []),
                         f'{path}: methods.{name}.gin_files'),
            _string_list(spec.get('bindings', []),
                         f'{path}: methods.{name}.bindings'))
    grid_table = data.get('grid', {})
    if not isinstance(grid_table, dict):
        raise ValueError(f'{path}: grid must be a table ([grid] with NAME = '
                         f'[VALUE, ...] lines); got {grid_table!r}.')
    grid = {}
    for name, values in grid_table.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f'{path}: grid {name!r} must be a non-empty '
                             f'list; got {values!r}.')
        wrong = [v for v in values if not isinstance(v, GRID_VALUE_TYPES)]
        if wrong:
            raise ValueError(f'{path}: grid {name!r} has {wrong[0]!r}; '
                             'allowed values: strings, numbers, booleans '
                             'and lists.')
        grid[name] = values
    return Study(script=data['script'],
                 gin_files=_string_list(data.get('gin_files', []),
                                        f'{path}: gin_files'),
                 bindings=_string_list(data.get('bindings', []),
                                       f'{path}: bindings'),
                 grid=grid, methods=methods, seeds=seeds)


def resolve_gin_file(path: str) -> str:
    """An absolute path: as given, from the working directory, or from the
    package root (where the configs' `include` paths start)."""
    for candidate in (path, os.path.join(PACKAGE_ROOT, path)):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise ValueError(f'gin file {path!r} not found (looked in the working '
                     f'directory and in {PACKAGE_ROOT}).')


def check_study(study: Study) -> None:
    """Refuses an unknown script, no seeds, and grid axes or methods
    that do not fit together (ValueError naming them)."""
    if study.script not in SCRIPTS:
        raise ValueError(f'script {study.script!r}: allowed '
                         f'{", ".join(SCRIPTS)}.')
    if study.seeds < 1:
        raise ValueError(f'seeds must be >= 1, got {study.seeds}.')
    used = {name for method in study.methods.values()
            for name in method.variables()}
    for name in study.grid:
        if name == METHOD_AXIS:
            wrong = [v for v in study.grid[name] if not isinstance(v, str)]
            if wrong:
                raise ValueError(f'grid method={wrong}: methods are named '
                                 'by strings.')
            missing = [v for v in study.grid[name] if v not in study.methods]
            if missing:
                defined = ', '.join(study.methods) or 'none'
                raise ValueError(f'grid method={missing}: no such method; '
                                 f'defined: {defined}.')
        elif '.' not in name and name not in used:
            raise ValueError(
                f'grid axis {name!r} is neither a gin binding (a name with a '
                'dot, e.g. init_masks.sparsity) nor a {placeholder} of a '
                'method.')
    for method_name, method in study.methods.items():
        for name in method.variables():
            if name not in study.grid:
                raise ValueError(f'method {method_name!r} uses {{{name}}} but '
                                 f'the grid has no axis {name!r}.')
