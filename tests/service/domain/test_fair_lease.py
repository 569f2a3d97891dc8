"""A worker that asks for several trials at once (`hpo worker --fuse K`) takes a fair share of
a study, not every trial it may have in flight, so the other workers get work too."""

from __future__ import annotations

from datetime import timedelta

from service.api.deps import Services
from tests.conftest import spec_doc
from tests.support.clock import Clock


def budget(max_trials: int, parallel: int) -> dict:
    return {"max_trials": max_trials, "parallel_trials": parallel, "epochs": 2}


def worker(services: Services, name: str) -> int:
    return services.protocol.leasing.register(name, "host", 1, "cpu", {}).id


def test_two_fusing_workers_split_a_study_between_them(services: Services) -> None:
    services.studies.create(spec_doc(budget=budget(8, 8)))
    first, second = worker(services, "a"), worker(services, "b")
    assert len(services.protocol.leasing.lease(first, count=8)) == 4
    assert len(services.protocol.leasing.lease(second, count=8)) == 4


def test_a_lone_worker_takes_what_the_study_may_run_at_once(services: Services) -> None:
    services.studies.create(spec_doc(budget=budget(16, 8)))
    alone = worker(services, "a")
    assert len(services.protocol.leasing.lease(alone, count=16)) == 8  # parallel_trials


def test_the_share_divides_parallel_trials_and_what_is_left_of_the_study(
    services: Services,
) -> None:
    services.studies.create(spec_doc(budget=budget(64, 6)))
    workers = [worker(services, name) for name in "abc"]
    assert [len(services.protocol.leasing.lease(w, count=8)) for w in workers] == [2, 2, 2]
    services.studies.create(spec_doc("s2", budget=budget(3, 64)))
    # Three trials left for three workers: one each, whoever asks first.
    assert [len(services.protocol.leasing.lease(w, count=8)) for w in workers] == [1, 1, 1]


def test_stale_and_departed_workers_do_not_count(services: Services, clock: Clock) -> None:
    services.studies.create(spec_doc(budget=budget(8, 8)))
    gone, stale = worker(services, "gone"), worker(services, "stale")
    services.protocol.leasing.deregister(gone)
    clock.now += timedelta(seconds=61)  # "stale" has not been seen for a minute
    active = worker(services, "active")
    assert len(services.protocol.leasing.lease(active, count=8)) == 8
    assert services.protocol.leasing.lease(stale, count=8) == []


def test_one_trial_at_a_time_is_leased_as_before(services: Services) -> None:
    services.studies.create(spec_doc(budget=budget(8, 8)))
    first = worker(services, "a")
    worker(services, "b")
    assert [len(services.protocol.leasing.lease(first)) for _ in range(6)] == [1] * 6
