"""How progress reads (blockmig.progress): percent, the moving-average rate the engine
stores, ETA and their wording. Unit: plain numbers, no database, no libvirt."""

import pytest

from blockmig import progress
from blockmig.states import State

GIB = 1024**3
MIB = 1024**2


# ---- percent ----------------------------------------------------------------------------


def test_percent_is_none_until_the_total_is_known():
    assert progress.percent(0, 0) is None
    assert progress.percent(50, 200) == 25.0
    assert progress.percent(300, 200) == 100.0


def test_percent_never_below_zero_or_above_a_hundred():
    assert progress.percent(-5, 100) == 0.0
    assert progress.percent(10**15, 1) == 100.0


def test_completed_is_a_hundred_percent_whatever_the_last_figures():
    assert progress.Progress(0, 0, 0, State.COMPLETED).percent == 100.0
    assert progress.Progress(10, GIB, 0, State.COMPLETED).percent_text == "100 %"


def test_bar_width_uses_a_dot_and_is_zero_while_unknown():
    assert progress.Progress(GIB // 3, GIB, 0, State.COPYING).bar_width == "33.3%"
    assert progress.Progress(0, 0, 0, State.REQUESTED).bar_width == "0.0%"


# ---- the rate the engine stores -----------------------------------------------------------


def samples(*points, window=progress.RATE_WINDOW):
    """The samples the engine keeps after seeing `points` (t, cur) one by one."""
    kept = ()
    for t, cur in points:
        kept = progress.add_sample(kept, t, cur, window)
    return kept


def test_one_sample_has_no_rate_yet():
    assert progress.moving_rate(samples((0.0, 0))) == 0.0
    assert progress.moving_rate(()) == 0.0


def test_rate_is_bytes_over_the_whole_window_not_the_last_burst():
    kept = samples((0, 0), (1, 100 * MIB), (2, 100 * MIB), (3, 300 * MIB), window=4)
    # The stall at t=2 and the burst at t=3 average out: 300 MiB in 3 s.
    assert progress.moving_rate(kept) == pytest.approx(100 * MIB)


def test_samples_older_than_the_window_leave_it():
    kept = samples((0, 0), (1, 10 * MIB), (3, 30 * MIB), (10, 100 * MIB), window=4)
    assert kept == ((10, 100 * MIB),)  # everything before t=6 is gone
    kept = progress.add_sample(kept, 12, 120 * MIB, 4)
    assert progress.moving_rate(kept) == pytest.approx(10 * MIB)


def test_a_sample_exactly_window_old_still_counts():
    assert samples((0, 0), (5, 50), window=5) == ((0, 0), (5, 50))


def test_rate_is_never_negative_when_cur_goes_back():
    # A job that started again reports a smaller cur: no negative rate, no negative ETA.
    assert progress.moving_rate(samples((0, 500), (1, 1000), (2, 100))) == 0.0


def test_two_samples_at_the_same_instant_have_no_rate():
    assert progress.moving_rate(samples((7.0, 0), (7.0, 10 * MIB))) == 0.0


def test_add_sample_leaves_the_samples_it_was_given_alone():
    kept = samples((0, 0), (1, 10))
    progress.add_sample(kept, 2, 20)
    assert kept == ((0, 0), (1, 10))


# ---- ETA ---------------------------------------------------------------------------------


def test_eta_from_remaining_bytes_and_rate():
    assert progress.eta_seconds(GIB // 2, GIB, 64 * MIB) == 8.0
    assert progress.eta_seconds(10, 100, 0) is None
    assert progress.eta_seconds(0, 0, 100) is None


def test_eta_is_zero_once_done_passed_a_total_that_grew_late():
    assert progress.eta_seconds(GIB + 1, GIB, 64 * MIB) == 0


def test_eta_of_the_stored_rate_follows_the_moving_average():
    rate = progress.moving_rate(samples((0, 0), (2, 128 * MIB)))
    assert progress.Progress(128 * MIB, GIB, rate, State.COPYING).eta == pytest.approx(14.0)


@pytest.mark.parametrize(
    "seconds, text",
    [
        (None, "—"),
        (0.2, "< 1 s"),
        (0.5, "< 1 s"),
        (0.6, "1 s"),
        (42, "42 s"),
        (59.6, "1 min 00 s"),
        (185, "3 min 05 s"),
        (3599, "59 min 59 s"),
        (3600, "1 h 00 min"),
        (3725, "1 h 02 min"),
        (90000, "25 h 00 min"),
    ],
)
def test_eta_wording(seconds, text):
    assert progress.format_eta(seconds) == text


def test_progress_eta_only_while_copying():
    assert progress.Progress(0, GIB, 64 * MIB, State.COPYING).eta_text == "16 s"
    assert progress.Progress(GIB, GIB, 64 * MIB, State.READY).eta_text == "mirror in sync"
    assert progress.Progress(0, GIB, 0, State.COPYING).eta_text == "—"
    assert progress.Progress(0, GIB, 64 * MIB, State.PIVOTING).eta_text == "—"


def test_rate_is_shown_only_while_a_copy_runs():
    assert progress.Progress(0, GIB, 64 * MIB, State.COPYING).rate_text == "64.0 MiB/s"
    assert progress.Progress(0, GIB, 64 * MIB, State.ABORTED).rate_text == "—"


# ---- wording --------------------------------------------------------------------------------


def test_rate_and_bytes_wording():
    assert progress.format_rate(0) == "—"
    assert progress.format_rate(1.5 * MIB) == "1.5 MiB/s"
    assert progress.format_bytes(512) == "512 B"
    assert progress.format_bytes(3 * GIB // 2) == "1.5 GiB"
    assert progress.format_bytes(None) == "—"


def test_growth_note_wording():
    assert progress.growth_note(total_grew=False, synchronous_writes=False, host_supports_sync=True) == ""
    assert "synchronous writes" in progress.growth_note(total_grew=True, synchronous_writes=False, host_supports_sync=True)
    assert "cannot do synchronous writes" in progress.growth_note(
        total_grew=True, synchronous_writes=False, host_supports_sync=False
    )
    assert "will still converge" in progress.growth_note(total_grew=True, synchronous_writes=True, host_supports_sync=True)


def test_phase_wording():
    assert progress.phase_label("copying") == "Copying"
    assert progress.phase_label("ready") == "Ready — awaiting approval"
    assert progress.phase_label("ready", auto_pivot=True).startswith("Ready — pivoting automatically")
