"""A rollout engine's weights state (`rlhf.rollout.engine_state.WeightState`): what may generate when."""

import pytest

from rlhf.rollout.engine_state import StaleWeightsError, WeightState, WeightsUpdatingError


def test_an_update_blocks_generation_until_it_ends_and_a_given_up_one_until_a_whole_one_lands():
    state = WeightState()
    state.check(0)
    with pytest.raises(StaleWeightsError, match="engine holds weights version 0, the driver expects 1"):
        state.check(1)
    state.begin()
    assert state.blocked
    with pytest.raises(WeightsUpdatingError):
        state.check(None)
    state.finish(1)
    assert not state.blocked and state.version == 1
    state.check(1)
    state.begin()
    state.abandon()
    assert state.blocked and not state.updating
    with pytest.raises(StaleWeightsError, match="the weight update after version 1 stopped half-way"):
        state.check(None)
    state.abandon()  # nothing under way: no change
    state.finish(2)
    assert not state.blocked and state.version == 2
