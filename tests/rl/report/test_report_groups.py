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
