"""A setting that only some runs record (written by another version of the
suite) does not split a group; one they all record with other values does."""

from rigl.rl import report
from test_report import metadata, write_run


def test_a_setting_recorded_by_some_runs_only_does_not_split_them(tmp_path):
    root = str(tmp_path)
    # The same method; seed 0 records an updater setting, seed 1 not.
    write_run(f'{root}/rigl/seed_0', metadata('rigl', 0.9, 0), [0, 10],
              settings={'mask_updater.begin_step': 0, 'train_eval.seed': 0})
    write_run(f'{root}/rigl/seed_1', metadata('rigl', 0.9, 1), [0, 20],
              settings={'train_eval.seed': 1})
    # Another setting both record with different values: two groups.
    for width in (1.0, 2.0):
        write_run(f'{root}/set_w{width}/seed_0', metadata('set', 0.9, 0),
                  [0, 30], settings={'train_eval.width': width,
                                     'train_eval.seed': 0})
    groups = report.make_groups(report.read_runs(root, lambda _: None))
    by_method = {}
    for group in groups:
        by_method.setdefault(group.dims['method'], []).append(group)
    assert [len(g.runs) for g in by_method['rigl']] == [2]
    assert sorted(g.dims['train_eval.width'] for g in by_method['set']) == [
        1.0, 2.0]


def test_line_names_tell_dense_from_sparse_groups_with_equal_settings(
        tmp_path):
    """Dense lines are drawn in each sparsity's panel, so a dense and a
    sparse group that differ from others only by a setting (n_step) still
    get their own names and colours."""
    root = str(tmp_path)
    for name, method, sparsity, n_step in (('dense', 'dense', 0.0, 1),
                                           ('ds', 'rigl', 0.95, 1),
                                           ('rlx2', 'rigl', 0.95, 3)):
        write_run(f'{root}/{name}/seed_0', metadata(method, sparsity, 0),
                  [0, 10], settings={'train_eval.n_step': n_step,
                                     'train_eval.seed': 0})
    groups = report.make_groups(report.read_runs(root, lambda _: None))
    style = report.Style(groups)
    names = sorted(style.name(group) for group in groups)
    assert names == ['dense, n_step=1', 'rigl, n_step=1', 'rigl, n_step=3']
    assert len({str(style.color(group)) for group in groups}) == 3


def test_a_sweeps_method_names_label_its_lines_and_anf_input_sparsity(
        tmp_path):
    """A sweep's run directories carry the study's method names (ANF's
    'anf_sac' is a SET run, 'sac' a dense one): the report names its
    groups and lines by them, keeps each its method's colour, and says
    how sparse ANF's networks are (a sparse input layer on networks whose
    `sparsity` is 0) instead of '0% sparse'."""
    root = str(tmp_path)
    anf_method = {'input_layer_sparsity': 0.8}
    for name, method in (('sac', 'dense'), ('static_sac', 'static'),
                         ('anf_sac', 'set')):
        for noise in (0.9, 0.98):
            run_metadata = metadata(method, 0.0, 0, noise=noise)
            if method != 'dense':
                run_metadata['sparse_method'] = anf_method
            write_run(f'{root}/method={name},noise={noise}/seed_0',
                      run_metadata, [0, 10], connectivity=True)
    groups = report.make_groups(report.read_runs(root, lambda _: None))
    assert [g.label for g in groups] == [
        'sac, 90% noise', 'sac, 98% noise', 'static_sac, 90% noise',
        'static_sac, 98% noise', 'anf_sac, 90% noise', 'anf_sac, 98% noise']
    assert [g.method for g in groups[::2]] == ['dense', 'static', 'set']
    style = report.Style(groups)
    assert [style.name(g) for g in groups[::2]] == [
        'sac', 'static_sac', 'anf_sac']
    assert [style.color(g) for g in groups[::2]] == [
        report.METHOD_COLORS[m] for m in ('dense', 'static', 'set')]
    assert [report.group_sparsity_text(g) for g in groups[::2]] == [
        '', 'input layer 80% sparse', 'input layer 80% sparse']
    assert style.legend(groups[4], sparsity=True) == (
        'anf_sac, input layer 80% sparse')
    # Runs outside a sweep's directories keep the metadata's names.
    assert report.STUDY_METHOD_DIM not in report.make_groups(
        report.read_runs(f'{root}/method=sac,noise=0.9', lambda _: None)
    )[0].dims


def test_method_of_reads_the_sweeps_directory_names():
    from rigl.rl.study.runs import method_of
    assert method_of('method=anf_sac,noise=0.9/seed_0') == 'anf_sac'
    assert method_of('/a/env_name=CartPole-v0,method=rigl,sparsity=0.9/'
                     'seed_2') == 'rigl'
    assert method_of('width=1.0,update_alg=set/seed_0') is None
    assert method_of('dense/seed_0') is None


def test_report_title_shows_a_study_in_the_working_dir_by_relative_path(
        tmp_path, monkeypatch):
    """A report committed with its study must not carry this machine's
    paths; a study elsewhere is named in full."""
    write_run(f'{tmp_path}/studies/s/dense/seed_0', metadata('dense', 0.0, 0),
              [0, 10])
    not_drawn = {name: 'not asked' for name in report.FIGURES}
    monkeypatch.chdir(tmp_path)
    for given, shown in (('studies/s', 'studies/s'),
                         (f'{tmp_path}/studies/s', 'studies/s')):
        runs = report.read_runs(given, lambda _: None)
        groups = report.make_groups(runs)
        report.compute_stats(groups, reps=10)
        text = report.report_markdown(given, runs, groups, {}, not_drawn,
                                      'method=dense', [], 10)
        assert text.splitlines()[0] == f'# Study report: {shown}'
    monkeypatch.chdir(tmp_path / 'studies' / 's' / 'dense')
    text = report.report_markdown(f'{tmp_path}/studies/s', runs, groups, {},
                                  not_drawn, 'method=dense', [], 10)
    assert text.splitlines()[0] == f'# Study report: {tmp_path}/studies/s'
