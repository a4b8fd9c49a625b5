"""The loss curve's x axis grows with the run, so the first steps of a long run are readable."""

from studio.tui.widgets.loss_plot import x_axis_end


def test_early_steps_fill_the_plot_instead_of_hugging_the_left_edge():
    # step 20 of a 2000-step run: the drawn steps take 40 % of the width, not 1 %
    assert x_axis_end(20, 2000) == 50
    assert x_axis_end(0, 2000) == 10


def test_axis_never_passes_the_planned_end_and_reaches_it_late_in_the_run():
    assert x_axis_end(900, 2000) == 2000
    assert x_axis_end(1999, 2000) == 2000
    assert x_axis_end(5, 8) == 8


def test_axis_only_grows_and_always_holds_the_current_step():
    ends = [x_axis_end(step, 3000) for step in range(0, 3001, 7)]
    assert ends == sorted(ends)
    assert all(end >= step for end, step in zip(ends, range(0, 3001, 7)))
    assert len(set(ends)) <= 10  # 1-2-5 steps: it rescales about three times a decade, not at every redraw


def test_a_resumed_run_past_its_plan_still_shows_its_last_step():
    assert x_axis_end(2500, 2000) == 2500
