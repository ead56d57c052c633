"""How far behind a standby is, in time, from the primary's sampled WAL positions."""

from villager_shop.core.wal import WalHistory


def test_the_lag_counts_from_the_first_sample_past_the_replayed_position_and_keeps_growing() -> None:
    history = WalHistory()
    for at, position in ((0.0, 100), (1.0, 200), (2.0, 300)):
        history.add(at, position)
    assert history.lag_s(replayed=300, now=2.5) == 0.0
    assert history.lag_s(replayed=150, now=2.5) == 1.5  # the primary was past 150 from t=1.0 on
    assert history.lag_s(replayed=150, now=9.0) == 8.0  # stuck: the lag grows with the clock
    assert history.rate_per_s(now=2.0) == 100.0
    assert WalHistory().rate_per_s(now=0.0) is None
