"""Every command in README.md and the docs pages runs as written.

The test reads the fenced code blocks of the README, of every page in
docs/ and of each study's own page (docs/studies/<study>/README.md, not the
generated report beside it) and checks, without running anything, in this
process:

* Shell blocks (```bash, ```sh, ```shell, ```console). Each command (lines
  joined at a trailing backslash, split at &&, ||, ;, | and &, leading
  VAR=value assignments dropped) must be one of:
  - `python rigl/rl/tfagents/<algo>_train_eval.py ...`: its flags parse with
    the script's own absl flags, every --gin_file exists, and the gin files
    and bindings pass what the script checks before it builds networks:
    gin syntax and names, every `train_eval` setting, the sparse method,
    the mask updater's and noise features' arguments, the environment
    (milliseconds each). Once per script and set of gin files the whole
    agent is built on its environment, as the sweep's check does
    (`config_check.config_errors`);
  - `python -m rigl.rl.distributed ...`: the same, for its --algo;
  - `python -m rigl.rl.sweep ...`: flags parse, the study file and gin files
    exist, the study expands into runs, every binding parses, and every
    group's configuration passes the checks above;
  - `python -m rigl.rl.report`, `python -m rigl.rl.make_histograms`: flags
    parse (absl);
  - `python -m rigl.rl.view ...`: its argparse options parse;
  - any other `python X.py` (benchmarks/, experiments/): the file exists and
    each --flag is one its argparse parser or absl flags define;
  - any other `python -m M`: M is importable; `python -c CODE`: CODE compiles;
  - `bash X.sh`: the file exists; `pip install -r F`: F exists;
  - a program outside this repository (`EXTERNAL`): not checked.
  Anything else fails, so a new kind of command gets a rule here.
  Paths an earlier command writes (absolute ones, e.g. /tmp/...) are not
  required to exist; relative ones (pretrained/..., studies/...) are.
* ```python blocks compile; `>>>` examples run as doctests.
* Every inline `configurable.parameter` span whose configurable is one of
  this package's gin configurables names a parameter it has
  (`train_eval.<name>`: a field of some algorithm's settings), every
  inline `*.gin` name is a config file, and every inline repository path
  exists.
* Relative links and images point to files that exist, and `#anchors` to
  headings of the linked page.
* The README carries the test command CI runs (.ci/run).

All of it runs in this process (TensorFlow is imported once) in seconds.

Marker for illustrative blocks: a fenced block directly preceded by the line
`<!-- docs-test: skip -->` (an HTML comment, invisible when rendered) is not
checked. Use it only for commands with placeholders a reader must fill in
(CONFIG, HOST:PORT, <the token>) or for shell loops; every other command
must run as written.
"""

import contextlib
import dataclasses
import doctest
import functools
import glob
import importlib.util
import inspect
import os
import re
import runpy
import shlex
from typing import Dict, List, NamedTuple, Optional, Tuple
from unittest import mock

import numpy as np
import pytest

from helpers import REPO

DOCS = ['README.md'] + sorted(
    os.path.relpath(path, REPO)
    for pattern in ('*.md', os.path.join('studies', '*', 'README.md'))
    for path in glob.glob(os.path.join(REPO, 'docs', pattern)))
SKIP_MARKER = '<!-- docs-test: skip -->'
SHELL_LANGUAGES = ('bash', 'sh', 'shell', 'console')
# Programs from outside this repository: documented, not checked here.
EXTERNAL = {'ray', 'tensorboard', 'kubectl', 'export', 'cd', 'git', '.',
            'source', 'tmux', 'screen'}
TRAIN_SCRIPT = re.compile(r'^rigl/rl/tfagents/(\w+)_train_eval\.py$')
# Flags naming inputs that must exist when given as relative paths.
INPUT_FLAGS = ('gin_file', 'study', 'policy_dir')
# Top-level entries of the repository an inline path may start with.
REPO_ENTRIES = tuple(sorted(name for name in os.listdir(REPO)
                            if not name.startswith('.')))
OWN_PACKAGES = ('rigl', 'micronet_counting')
# Our config files: rigl/rl/tfagents/configs/*_config.gin and
# sac_anf_settings.gin (other .gin names in the docs cite the originals or
# a run's operative_config.gin).
OUR_GIN = re.compile(r'(?<![\w{}/-])((?:rigl/rl/tfagents/configs/)?'
                     r'\w+_(?:config|settings)\.gin)\b')


# Reading the documents ------------------------------------------------------

class Block(NamedTuple):
    doc: str
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    skipped: bool


class Command(NamedTuple):
    doc: str
    line: int
    text: str  # as written, continuation lines joined
    argv: Tuple[str, ...]


def read(doc: str) -> str:
    with open(os.path.join(REPO, doc), encoding='utf-8') as f:
        return f.read()


def blocks(doc: str) -> List[Block]:
    """The fenced code blocks of a markdown file."""
    found, lines = [], read(doc).splitlines()
    index = 0
    while index < len(lines):
        opening = re.match(r'^(\s*)(```+|~~~+)\s*([\w+-]*)', lines[index])
        if not opening:
            index += 1
            continue
        fence, language = opening.group(2), opening.group(3).lower()
        start = index
        body = []
        index += 1
        while index < len(lines) and not lines[index].strip().startswith(
                fence):
            body.append(lines[index])
            index += 1
        previous = next((lines[i].strip() for i in range(start - 1, -1, -1)
                         if lines[i].strip()), '')
        found.append(Block(doc, start + 1, language, '\n'.join(body),
                           previous == SKIP_MARKER))
        index += 1
    return found


def shell_commands(block: Block) -> List[Command]:
    """The simple commands of a shell block."""
    commands = []
    lines = block.text.split('\n')
    index = 0
    while index < len(lines):
        first = index
        text = lines[index]
        while text.rstrip().endswith('\\') and index + 1 < len(lines):
            index += 1
            text = text.rstrip()[:-1] + ' ' + lines[index].strip()
        index += 1
        lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = '#'
        try:
            tokens = list(lexer)
        except ValueError as error:  # an unclosed quote
            tokens = ['<unparsable>', str(error)]
        current: List[str] = []
        for token in tokens + [';']:
            if token in ('&&', '||', ';', '|', '&', ';;'):
                while current and re.match(r'^[A-Za-z_]\w*=', current[0]):
                    current.pop(0)  # VAR=value before the program
                if current:
                    commands.append(Command(block.doc, block.line + 1 + first,
                                            text.strip(), tuple(current)))
                current = []
            else:
                current.append(token)
    return commands


def all_blocks() -> List[Block]:
    return [block for doc in DOCS for block in blocks(doc)]


def all_commands() -> List[Command]:
    return [command for block in all_blocks()
            if block.language in SHELL_LANGUAGES and not block.skipped
            for command in shell_commands(block)]


def inline_spans(doc: str) -> List[Tuple[int, str]]:
    """(line, text) of every inline code span outside fenced blocks."""
    spans, in_fence = [], False
    for number, line in enumerate(read(doc).splitlines(), 1):
        if re.match(r'^\s*(```|~~~)', line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        for match in re.finditer(r'(`+)(.+?)\1', line):
            spans.append((number, match.group(2).strip()))
    return spans


# What the package defines ---------------------------------------------------

@functools.lru_cache(maxsize=None)
def package():
    """The package's modules (TensorFlow is imported once, here)."""
    # pylint: disable=import-outside-toplevel
    import rigl  # noqa: F401  (before TensorFlow: picks the Keras)
    from rigl.rl import sweep
    from rigl.rl import view
    from rigl.rl.study import config_check
    from rigl.rl.tfagents import train
    from rigl.rl.tfagents.run import console
    return dict(sweep=sweep, view=view, train=train, console=console,
                config_check=config_check)


def absl_flags(path: str):
    """The absl flags a script or module defines, in a fresh FlagValues:
    its module body runs with absl's DEFINE functions bound to it, then its
    `define_flags()` (or the train scripts' `console.define_flags()`)."""
    # pylint: disable=import-outside-toplevel
    from absl import app  # noqa: F401  (its own flags stay global)
    from absl import flags

    package()  # likewise the flags TensorFlow and absl.logging define
    values = flags.FlagValues()
    with contextlib.ExitStack() as stack:
        for name in dir(flags):
            if name.startswith('DEFINE'):
                stack.enter_context(mock.patch.object(
                    flags, name, functools.partial(getattr(flags, name),
                                                   flag_values=values)))
        stack.enter_context(mock.patch.object(
            flags, 'mark_flag_as_required', lambda *args, **kwargs: None))
        namespace = runpy.run_path(path, run_name='__docs_check__')
        if callable(namespace.get('define_flags')):
            namespace['define_flags']()
        elif 'console.define_flags()' in read(os.path.relpath(path, REPO)):
            package()['console'].define_flags()
    return values


def parse_absl(path: str, args: List[str]):
    """The parsed flags, or raises naming the problem."""
    values = absl_flags(path)
    values(['prog'] + list(args))
    return values


def argparse_options(path: str) -> List[str]:
    return re.findall(r"add_argument\(\s*['\"](--[\w-]+)['\"]",
                      read(os.path.relpath(path, REPO)))


def settings_fields() -> set:
    """Every `train_eval.<name>` any algorithm takes."""
    algorithms = package()['train'].ALGORITHMS.values()
    return {field.name for algorithm in algorithms
            for field in dataclasses.fields(algorithm.Settings)}


def own_configurable(name: str):
    """The gin configurable `name` of this package, or None."""
    import gin  # pylint: disable=import-outside-toplevel

    package()
    # gin has no public registry lookup (train.py reads it the same way).
    match = gin.config._REGISTRY.get_match(  # pylint: disable=protected-access
        name)
    if match is None or not match.module.startswith('rigl.'):
        return None
    return match


def parameter_problem(configurable: str, parameter: str) -> Optional[str]:
    match = own_configurable(configurable)
    if match is None:
        return None
    if configurable == 'train_eval':
        if parameter in ('root_dir', 'algorithm', 'allow_config_change') or (
                parameter in settings_fields()):
            return None
        return (f'train_eval.{parameter} is not a setting of any algorithm')
    target = match.wrapped
    function = target.__init__ if inspect.isclass(target) else target
    parameters = inspect.signature(function).parameters
    if parameter in parameters or any(
            p.kind == p.VAR_KEYWORD for p in parameters.values()):
        return None
    return f'{configurable} has no parameter {parameter!r}'


# Checking one command -------------------------------------------------------

def resolve(path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(REPO, path)


def missing_inputs(parsed: Dict[str, object]) -> List[str]:
    """Relative input paths (gin files, study files, policies) that do not
    exist; absolute ones are written by earlier commands."""
    problems = []
    for name in INPUT_FLAGS:
        value = parsed.get(name)
        for path in (value if isinstance(value, list) else [value]):
            if not path:
                continue
            if name == 'gin_file' or not os.path.isabs(path):
                if not os.path.exists(resolve(path)):
                    problems.append(f'--{name}={path} does not exist')
    return problems


def quick_config_check(script: str, gin_files, bindings) -> None:
    """What a training script checks before it builds networks: gin syntax
    and names, every `train_eval` setting, the sparse method, the mask
    updater's and the noise features' arguments, the environment (its id
    and noise options). Milliseconds; raises naming the problem."""
    # pylint: disable=import-outside-toplevel
    import gin
    from rigl.rl.tfagents import envs
    from rigl.rl.tfagents.sparsity import updaters
    from rigl.rl.tfagents import anf as noise_features
    from rigl.rl.tfagents.run import settings as settings_lib
    from rigl.rl.tfagents.sparsity import spec

    train = package()['train']
    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings(list(gin_files), list(bindings))
        params = dict(gin.get_bindings(train.train_eval))
        for name in ('root_dir', 'algorithm', 'allow_config_change'):
            params.pop(name, None)
        settings = settings_lib.build(train.ALGORITHMS[script].Settings,
                                      params, script.upper())
        spec.from_gin(settings)
        updaters.mask_updater()
        env = envs.create_environment(env_name=settings.env_name, seed=0)
        try:
            size = int(np.prod(env.observation_spec().shape))
        finally:
            env.close()
        noise_features.NetworkNoise()
        if script in ('sac', 'td3'):  # the agents with network-side noise
            noise_features.make_layout(size, 0)
    finally:
        gin.clear_config()


@functools.lru_cache(maxsize=None)
def full_config_problems(script: str, gin_files: Tuple[str, ...],
                         bindings: Tuple[str, ...]) -> Tuple[str, ...]:
    """The training script's whole check, the agent built on its
    environment (`config_check.config_errors`; a few tenths of a
    second)."""
    errors = package()['config_check'].config_errors(
        script, [{'gin_files': list(gin_files), 'bindings': list(bindings)}])
    return (f'{script} config: {errors[0]}',) if errors[0] else ()


_BUILT = set()


def config_problems(script: str, gin_files, bindings) -> List[str]:
    """The quick check for every configuration; the agent is built once per
    script and set of gin files (bindings rarely change what is built)."""
    try:
        quick_config_check(script, gin_files, bindings)
    except (ValueError, TypeError, SyntaxError, OSError) as error:
        return [f'{script} config: {" ".join(str(error).split())}']
    key = (script, tuple(sorted(gin_files)))
    if key in _BUILT:
        return []
    _BUILT.add(key)
    return list(full_config_problems(script, tuple(gin_files),
                                     tuple(bindings)))


def flag_dict(values) -> Dict[str, object]:
    return {name: values[name].value for name in values}


def check_train(script: str, path: str, args: List[str]) -> List[str]:
    values = parse_absl(path, args)
    problems = missing_inputs(flag_dict(values))
    return problems or config_problems(script, values.gin_file,
                                       values.gin_bindings)


def check_distributed(path: str, args: List[str]) -> List[str]:
    values = parse_absl(path, args)
    problems = missing_inputs(flag_dict(values))
    return problems or config_problems(values.algo, values.gin_file,
                                       values.gin_bindings)


def check_sweep(path: str, args: List[str], monkeypatch) -> List[str]:
    sweep = package()['sweep']
    values = parse_absl(path, args)
    problems = missing_inputs(flag_dict(values))
    if problems:
        return problems
    monkeypatch.setattr(sweep, 'FLAGS', values)
    sweep.check_flags()
    study = sweep.study_from_flags()
    runs = sweep.expand(study, os.path.abspath(values.root_dir),
                        values.gin_bindings)
    sweep.check_binding_syntax([b for run in runs for b in run.bindings])
    # Every group (seed 0), as its training script would see it.
    problems = []
    for run in runs[:len({r.group for r in runs})]:
        problems += [f'{run.group}: {problem}' for problem in config_problems(
            study.script, run.gin_files, run.bindings)]
    return problems


def check_view(args: List[str]) -> List[str]:
    try:
        parsed = package()['view'].parse_args(args)
    except SystemExit:
        return [f'view does not accept {args}']
    return missing_inputs(vars(parsed))


def check_python(argv: Tuple[str, ...], monkeypatch) -> List[str]:
    args = list(argv[1:])
    if not args:
        return ['python without a script or module']
    if args[0] == '-c':
        compile(args[1], '<python -c>', 'exec')
        return []
    if args[0] == '-m':
        module, rest = args[1], args[2:]
        if module == 'rigl.rl.view':
            return check_view(rest)
        spec = importlib.util.find_spec(module)
        if spec is None:
            return [f'no module {module}']
        if module.split('.')[0] not in OWN_PACKAGES:
            return []  # pytest, venv, pip: not ours
        path = spec.origin
        if module == 'rigl.rl.sweep':
            return check_sweep(path, rest, monkeypatch)
        if module == 'rigl.rl.distributed':
            return check_distributed(path, rest)
        return check_script_flags(path, rest)
    script, rest = args[0], args[1:]
    path = resolve(script)
    if not os.path.isfile(path):
        return [f'{script} does not exist']
    train = TRAIN_SCRIPT.match(os.path.relpath(path, REPO))
    if train:
        return check_train(train.group(1), path, rest)
    return check_script_flags(path, rest)


def check_script_flags(path: str, args: List[str]) -> List[str]:
    """A script's --flags against its argparse options or absl flags."""
    source = read(os.path.relpath(path, REPO))
    if 'argparse' in source:
        known = argparse_options(path)
        given = [arg.split('=')[0] for arg in args if arg.startswith('--')]
        return [f'{os.path.relpath(path, REPO)} has no option {flag}'
                for flag in given if flag not in known]
    if 'from absl import flags' in source:
        return missing_inputs(flag_dict(parse_absl(path, args)))
    if any(arg.startswith('-') for arg in args):
        return [f'{os.path.relpath(path, REPO)} takes no flags']
    return []


def check_command(command: Command, monkeypatch) -> List[str]:
    argv = command.argv
    program = os.path.basename(argv[0])
    if program.startswith('python'):
        return check_python(argv, monkeypatch)
    if program == 'bash':
        return ([] if os.path.isfile(resolve(argv[1])) else
                [f'{argv[1]} does not exist'])
    if program == 'pip':
        files = [argv[i + 1] for i, arg in enumerate(argv[:-1])
                 if arg == '-r']
        return [f'{name} does not exist' for name in files
                if not os.path.isfile(resolve(name))]
    if program in EXTERNAL:
        return []
    return [f'no rule for {argv[0]!r}: add one to '
            f'tests/docs/test_docs_commands.py or mark the block with '
            f'{SKIP_MARKER}']


COMMANDS = all_commands()


@pytest.mark.parametrize(
    'command', COMMANDS,
    ids=[f'{c.doc}:{c.line}:{os.path.basename(c.argv[0])}'
         f'{"-" + c.argv[2] if c.argv[1:2] == ("-m",) else ""}'
         for c in COMMANDS])
def test_command_runs_as_written(command, monkeypatch):
    monkeypatch.chdir(REPO)
    try:
        problems = check_command(command, monkeypatch)
    except (ValueError, SyntaxError, OSError) as error:
        problems = [f'{type(error).__name__}: {error}']
    # absl's flag errors
    except Exception as error:  # pylint: disable=broad-except
        problems = [f'{type(error).__name__}: {error}']
    assert not problems, (f'{command.doc}:{command.line}: {command.text}\n  '
                          + '\n  '.join(problems))


# The rest of the documents --------------------------------------------------

def test_there_are_commands_to_check():
    scripts = {os.path.basename(c.argv[1]) for c in COMMANDS
               if c.argv[0].startswith('python') and len(c.argv) > 1}
    for script in ('sac_train_eval.py', 'td3_train_eval.py',
                   'dqn_train_eval.py', 'ppo_train_eval.py'):
        assert script in scripts, f'no document trains with {script}'


@pytest.mark.parametrize('doc', DOCS)
def test_python_blocks_compile_and_examples_run(doc, monkeypatch):
    monkeypatch.chdir(REPO)
    for block in blocks(doc):
        if block.language not in ('python', 'py') or block.skipped:
            continue
        where = f'{doc}:{block.line}'
        if block.text.lstrip().startswith('>>>'):
            package()
            test = doctest.DocTestParser().get_doctest(
                block.text, {}, where, doc, block.line)
            runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
            runner.run(test)
            assert not runner.failures, f'{where}: the example fails'
        else:
            compile(block.text, where, 'exec')


@pytest.mark.parametrize('doc', DOCS)
def test_every_block_says_its_language(doc):
    """A block without a language is output; one that holds commands must
    say `bash` so that the commands are checked."""
    for block in blocks(doc):
        if block.language:
            continue
        starts = [line.split()[0] for line in block.text.splitlines()
                  if line.strip()]
        assert not any(word.startswith('python') or word in ('pip', 'bash')
                       for word in starts), (
            f'{doc}:{block.line}: a block of commands without ```bash')


@pytest.mark.parametrize('doc', DOCS)
def test_inline_names_exist(doc):
    """Inline gin parameters, config files and repository paths exist."""
    configs = set(os.listdir(os.path.join(REPO, 'rigl', 'rl', 'tfagents',
                                          'configs')))
    problems = []
    for line, span in inline_spans(doc):
        for match in re.finditer(
                r'(?<![\w./-])([A-Za-z_]\w*)\.([a-z_]\w*)\b(?!\.\w|/|\()',
                span):
            problem = parameter_problem(match.group(1), match.group(2))
            if problem:
                problems.append(f'{doc}:{line}: `{span}`: {problem}')
        for name in OUR_GIN.findall(span):
            if (os.path.basename(name) not in configs and
                    name != 'operative_config.gin'):
                problems.append(f'{doc}:{line}: no gin file {name}')
        path = span.split()[0].rstrip('.,;:') if span else ''
        if (path.split('/')[0] in REPO_ENTRIES and '/' in path and
                not re.search(r'[<>{}*\[\]]|\.\.\.|=', path) and
                not os.path.exists(os.path.join(REPO, path))):
            problems.append(f'{doc}:{line}: no file {path}')
    assert not problems, '\n'.join(problems)


def anchors(path: str) -> set:
    """GitHub's anchors of a markdown file's headings."""
    with open(path, encoding='utf-8') as f:
        text = re.sub(r'```.*?```', '', f.read(), flags=re.S)
    return {re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')
            for heading in re.findall(r'^#+\s+(.*)$', text, flags=re.M)}


@pytest.mark.parametrize('doc', DOCS)
def test_relative_links_exist(doc):
    """Relative links and images point to files (and headings) that
    exist."""
    problems = []
    directory = os.path.dirname(os.path.join(REPO, doc))
    text = re.sub(r'```.*?```', '', read(doc), flags=re.S)
    text = re.sub(r'`[^`\n]*`', '', text)
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
        if re.match(r'^[a-z]+:', target):
            continue
        name, _, anchor = target.partition('#')
        path = os.path.normpath(os.path.join(directory, name)) if name else (
            os.path.join(REPO, doc))
        if not os.path.exists(path):
            problems.append(f'{doc}: link to {target}: no such file')
        elif anchor and path.endswith('.md') and anchor not in anchors(path):
            problems.append(f'{doc}: link to {target}: no such heading')
    assert not problems, '\n'.join(problems)


def test_readme_has_the_ci_test_command():
    with open(os.path.join(REPO, '.ci', 'run'), encoding='utf-8') as f:
        ci = [line.strip() for line in f if line.strip()
              and not line.lstrip().startswith('#')]
    test_command = ci[-1]
    assert test_command == 'python -m pytest -q', ci
    readme = [' '.join(command.argv) for block in blocks('README.md')
              if block.language in SHELL_LANGUAGES
              for command in shell_commands(block)]
    assert test_command in readme
