"""Every group's configuration checked before any run of a study starts.

The gin syntax of each binding is checked here (`check_binding_syntax`);
each group's whole configuration (settings, configurables' values, the
agent built on its environment) in one child process that imports
TensorFlow (`check_configs`), so the sweep's own process stays free of it.
A refused group is one line naming it and the training script's error.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
import tokenize
from typing import Dict, List, Sequence

from rigl.rl.study.runs import Run
from rigl.rl.study.spec import PACKAGE_ROOT

CHECK_MARKER = 'sweep-config-check: '


def config_errors(script: str, configs: Sequence[Dict[str, List[str]]]
                  ) -> List[str]:
    """What the training script would say of each configuration, checked in
    this process (TensorFlow is imported): gin syntax and names, every
    setting, and the agent built on its environment (the configurables'
    values), writing nothing.

    Args:
        script: a training script name (`SCRIPTS`).
        configs: {'gin_files': [...], 'bindings': [...]} each.

    Returns:
        Per configuration, '' or the script's one-line error.
    """
    # TensorFlow only in the checking process.
    # pylint: disable=import-outside-toplevel
    import rigl  # noqa: F401  (before TensorFlow: picks the Keras)
    import gin
    from tf_agents.specs import tensor_spec

    from rigl.rl.tfagents import envs
    from rigl.rl.tfagents import train
    from rigl.rl.tfagents.run import console
    from rigl.rl.tfagents.run import settings as settings_lib

    console.quiet_libraries()
    algorithm_class = train.ALGORITHMS[script]

    def build(root_dir: str, allow_config_change: bool) -> None:
        del root_dir, allow_config_change
        params = dict(gin.get_bindings(train.train_eval))
        for name in ('root_dir', 'algorithm', 'allow_config_change'):
            params.pop(name, None)
        settings = settings_lib.build(algorithm_class.Settings, params,
                                      script.upper())
        env = envs.create_environment(env_name=settings.env_name, seed=0)
        try:
            algorithm_class(settings,
                            tensor_spec.from_spec(env.observation_spec()),
                            tensor_spec.from_spec(env.action_spec()),
                            settings.seed or 0)
        finally:
            env.close()

    errors = []
    for config in configs:
        gin.clear_config()
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said), \
                    contextlib.redirect_stdout(io.StringIO()):
                code = console.run_cli(build, config['gin_files'],
                                       config['bindings'], '')
        except Exception as error:  # pylint: disable=broad-except
            lines = str(error).strip().splitlines()
            errors.append(f'{type(error).__name__}: '
                          f'{lines[0] if lines else ""}')
            continue
        lines = [line for line in said.getvalue().splitlines()
                 if line.startswith('error: ')]
        errors.append(lines[-1][len('error: '):] if code and lines else
                      f'exit {code}' if code else '')
    gin.clear_config()
    return errors


def check_binding_syntax(bindings: Sequence[str]) -> None:
    """Parses each gin binding alone (syntax only: names are checked with
    the configurations), so an unclosed bracket is named as itself rather
    than as the binding after it.

    Raises:
        ValueError: naming the binding.
    """
    import gin  # pylint: disable=import-outside-toplevel
    from gin import config_parser  # pylint: disable=import-outside-toplevel

    for binding in dict.fromkeys(bindings):
        try:
            list(config_parser.ConfigParser(
                binding, gin.config.ParserDelegate(skip_unknown=True)))
        except tokenize.TokenError:
            raise ValueError(f'cannot parse the gin binding {binding!r}: an '
                             'unclosed bracket or quote.') from None
        except SyntaxError as error:
            name, _, value = binding.partition('=')
            if 'ast.Name object' in str(error) and value.strip():
                raise ValueError(
                    f'cannot parse the gin binding {binding!r}: quote '
                    f"strings, e.g. {name.strip()}='{value.strip()}'."
                    ) from None
            first = (str(error).strip().splitlines() or [''])[0]
            raise ValueError(f'cannot parse the gin binding {binding!r}: '
                             f'{first}') from None


def main() -> None:
    """The checking process: a JSON request on stdin, the answer on one
    stdout line after CHECK_MARKER."""
    request = json.load(sys.stdin)
    errors = config_errors(request['script'], request['configs'])
    print(CHECK_MARKER + json.dumps(errors), flush=True)


def check_configs(script: str, runs: Sequence[Run]) -> int:
    """Checks each group's configuration, as its training script would, in
    one child process (so this one stays free of TensorFlow).

    Returns:
        The number of configurations checked.

    Raises:
        ValueError: naming the first refused group and the script's one-line
            error, or the checker's own failure.
    """
    configs: Dict[str, Dict[str, List[str]]] = {}
    for run in runs:
        configs.setdefault(run.group, {'gin_files': run.gin_files,
                                       'bindings': run.bindings})
    if not configs:
        return 0
    done = subprocess.run(
        [sys.executable, '-c',
         'from rigl.rl.study import config_check; config_check.main()'],
        input=json.dumps({'script': script,
                          'configs': list(configs.values())}),
        capture_output=True, text=True, cwd=PACKAGE_ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    answers = [line[len(CHECK_MARKER):] for line in done.stdout.splitlines()
               if line.startswith(CHECK_MARKER)]
    if not answers:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise ValueError(f'checking the configurations failed (exit '
                         f'{done.returncode}): '
                         f'{lines[-1].strip() if lines else "no output"}')
    refused = [(group, error) for group, error in
               zip(configs, json.loads(answers[-1])) if error]
    if refused:
        group, error = refused[0]
        more = (f'; {len(refused) - 1} more group'
                f'{"s" * (len(refused) > 2)} refused too'
                if len(refused) > 1 else '')
        raise ValueError(f'{group}: {error.rstrip(".")} (no run was '
                         f'started{more}).')
    return len(configs)
