"""worker/agent.py's pauses between session attempts."""
from __future__ import annotations

from worker.agent import RECONNECT_S, Backoff


def test_the_next_manager_is_tried_soon_and_each_failed_round_doubles_the_pause_up_to_the_cap():
    backoff = Backoff()
    short, cap = RECONNECT_S
    # three managers: two short pauses, then the round's pause, which doubles per round
    pauses = [backoff.next(round_done=(i % 3 == 2)) for i in range(18)]
    assert pauses[:3] == [short, short, short]
    assert pauses[3:6] == [short, short, 2 * short]
    assert pauses[6:9] == [short, short, 4 * short]
    assert max(pauses) == cap and pauses[-1] == cap


def test_a_registered_session_starts_the_search_short_again():
    backoff = Backoff()
    for _ in range(10):
        backoff.next(round_done=True)
    assert backoff.next(round_done=True) == RECONNECT_S[1]
    backoff.reset()
    assert backoff.next(round_done=True) == RECONNECT_S[0]
