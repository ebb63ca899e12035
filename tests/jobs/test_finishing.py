"""Work that leaves the rest of a batch to another thread, which finishes it meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from aistack.documents.models import Document
from aistack.jobs.kinds import JobStatus
from aistack.jobs.models import Job
from aistack.jobs.runner import jobs_work_through
from aistack.jobs.services import JobRun
from harness import wait_for
from tests.jobs.test_worker import FLAKY, _flaky_work


def _waiting(alice: User, titles: list[str]) -> list[int]:
    documents = [Document.objects.create(workspace=alice.personal_workspace, title=title,
                                         content="x", author=alice) for title in titles]
    for document in documents:
        Job.objects.create(kind=FLAKY.name, object_id=document.pk,
                           enqueued_at=document.created_at)
    return [document.pk for document in documents]


def _no_finisher() -> bool:
    return not any(thread.name == "jobs-finisher" for thread in threading.enumerate())


class Stop(BaseException):
    """Not an error of the work's: nothing catches it on its way."""


@pytest.mark.django_db(transaction=True)
def test_a_batch_is_finished_while_the_next_is_worked_on(alice: User) -> None:
    ids = _waiting(alice, ["0 transient"] * 4)
    next_started = threading.Event()
    finishers: set[int] = set()
    seen: list[int] = []

    def work(runs: list[JobRun]) -> Callable[[], None]:
        first = runs[0].object_id == ids[0]
        if not first:
            next_started.set()

        def finish() -> None:
            finishers.add(threading.get_ident())
            # Finished in this thread, the first batch would wait here in vain and fail.
            if first and not next_started.wait(30):
                raise RuntimeError("the next batch was not worked on meanwhile")
            for run in runs:
                _flaky_work(run)
        return finish

    jobs_work_through(kind=FLAKY, object_ids=ids, work=work, progress=seen.append, batch=2)

    jobs = Job.objects.filter(kind=FLAKY.name)
    assert set(jobs.values_list("status", flat=True)) == {JobStatus.COMPLETE}
    assert set(jobs.values_list("attempts", flat=True)) == {1}  # each claimed once
    assert len(finishers) == 1 and threading.get_ident() not in finishers
    assert sum(seen) == 4


@pytest.mark.django_db(transaction=True)
def test_a_finish_that_fails_fails_its_jobs_with_the_reason_and_the_rest_go_on(
    alice: User,
) -> None:
    ids = _waiting(alice, ["0 permanent", "0 transient", "0 transient"])

    def work(runs: list[JobRun]) -> Callable[[], None]:
        def finish() -> None:
            for run in runs:
                _flaky_work(run)

        return finish

    jobs_work_through(kind=FLAKY, object_ids=ids, work=work, progress=lambda n: None,
                      batch=1)

    jobs = dict(Job.objects.filter(kind=FLAKY.name).values_list("object_id", "status"))
    assert [jobs[pk] for pk in ids] == [JobStatus.FAILED, JobStatus.COMPLETE,
                                        JobStatus.COMPLETE]
    assert Document.objects.get(pk=ids[0]).summary_error == "The text could not be parsed."


@pytest.mark.django_db(transaction=True)
def test_when_the_finishing_thread_dies_the_caller_hears_of_it_and_stops(alice: User) -> None:
    ids = _waiting(alice, ["0 transient"] * 12)

    def work(runs: list[JobRun]) -> Callable[[], None]:
        def finish() -> None:
            raise Stop

        return finish

    with pytest.raises(Stop):
        jobs_work_through(kind=FLAKY, object_ids=ids, work=work, progress=lambda n: None,
                          batch=1)

    # It stops at its next batch or two: most jobs were never started.
    assert Job.objects.filter(kind=FLAKY.name, status=JobStatus.PENDING).count() >= 8
    # And no thread is left behind, waiting for batches.
    wait_for(_no_finisher, message="the finishing thread to end")


@pytest.mark.django_db(transaction=True)
def test_a_caller_stopped_by_an_error_leaves_no_thread_behind(alice: User) -> None:
    ids = _waiting(alice, ["0 transient"] * 6)

    def work(runs: list[JobRun]) -> Callable[[], None]:
        if runs[0].object_id == ids[3]:
            raise Stop  # as Ctrl-C would, in the calling thread

        def finish() -> None:
            for run in runs:
                _flaky_work(run)

        return finish

    with pytest.raises(Stop):
        jobs_work_through(kind=FLAKY, object_ids=ids, work=work, progress=lambda n: None,
                          batch=1)

    wait_for(_no_finisher, message="the finishing thread to end")



def test_inside_a_transaction_this_thread_finishes_each_batch(alice: User) -> None:
    # Other connections would not see these uncommitted jobs and documents.
    ids = _waiting(alice, ["0 transient"] * 4)
    finishers: set[int] = set()

    def work(runs: list[JobRun]) -> Callable[[], None]:
        def finish() -> None:
            finishers.add(threading.get_ident())
            for run in runs:
                _flaky_work(run)

        return finish

    jobs_work_through(kind=FLAKY, object_ids=ids, work=work, progress=lambda n: None,
                      batch=1)

    assert finishers == {threading.get_ident()}
    assert set(Job.objects.filter(kind=FLAKY.name).values_list("status", flat=True)) == {
        JobStatus.COMPLETE}


def _no_reader() -> bool:
    return not any(thread.name == "jobs-ahead" for thread in threading.enumerate())


@pytest.mark.django_db(transaction=True)
def test_ahead_the_next_batch_is_read_while_this_one_is_worked_on_and_the_last_stored(
    alice: User,
) -> None:
    ids = _waiting(alice, ["0 transient"] * 6)
    threads: dict[str, set[int]] = {"read": set(), "work": set(), "store": set()}
    read: list[int] = []
    next_read = [threading.Event() for _ in ids]

    def work(runs: list[JobRun]) -> Callable[[], Callable[[], None]]:
        threads["read"].add(threading.get_ident())
        batch = ids.index(runs[0].object_id) // 2
        read.append(batch)
        next_read[batch].set()

        def model() -> Callable[[], None]:
            threads["work"].add(threading.get_ident())
            # Read in this thread, the next batch would never be read while this one waits.
            if batch < 2 and not next_read[batch + 1].wait(30):
                raise RuntimeError("the next batch was not read meanwhile")

            def store() -> None:
                threads["store"].add(threading.get_ident())
                for run in runs:
                    _flaky_work(run)

            return store

        return model

    seen: list[int] = []
    jobs_work_through(kind=FLAKY, object_ids=ids, work=work, progress=seen.append, batch=2,
                      ahead=True)

    jobs = Job.objects.filter(kind=FLAKY.name)
    assert set(jobs.values_list("status", flat=True)) == {JobStatus.COMPLETE}
    assert set(jobs.values_list("attempts", flat=True)) == {1}  # each claimed once
    assert read == [0, 1, 2] and sum(seen) == 6
    assert threads["work"] == {threading.get_ident()}
    # Three threads, one for each step.
    assert all(len(found) == 1 for found in threads.values())
    assert len(set().union(*threads.values())) == 3
    wait_for(_no_reader, message="the reading thread to end")


@pytest.mark.django_db(transaction=True)
def test_ahead_a_read_that_fails_fails_its_jobs_with_the_reason_and_the_rest_go_on(
    alice: User,
) -> None:
    ids = _waiting(alice, ["0 permanent", "0 transient", "0 transient"])

    def work(runs: list[JobRun]) -> Callable[[], None]:
        if runs[0].object_id == ids[0]:
            raise ValueError("The text could not be parsed.")

        def model() -> None:
            for run in runs:
                _flaky_work(run)

        return model

    jobs_work_through(kind=FLAKY, object_ids=ids, work=work, progress=lambda n: None,
                      batch=1, ahead=True)

    jobs = dict(Job.objects.filter(kind=FLAKY.name).values_list("object_id", "status"))
    assert [jobs[pk] for pk in ids] == [JobStatus.FAILED, JobStatus.COMPLETE,
                                        JobStatus.COMPLETE]
    assert Document.objects.get(pk=ids[0]).summary_error == "The text could not be parsed."


@pytest.mark.django_db(transaction=True)
def test_ahead_when_the_reading_thread_dies_the_caller_hears_of_it_and_stops(
    alice: User,
) -> None:
    ids = _waiting(alice, ["0 transient"] * 8)

    def work(runs: list[JobRun]) -> Callable[[], None]:
        if runs[0].object_id == ids[2]:
            raise Stop

        def model() -> None:
            for run in runs:
                _flaky_work(run)

        return model

    with pytest.raises(Stop):
        jobs_work_through(kind=FLAKY, object_ids=ids, work=work, progress=lambda n: None,
                          batch=1, ahead=True)

    assert Job.objects.filter(kind=FLAKY.name, status=JobStatus.PENDING).count() == 5
    wait_for(lambda: _no_reader() and _no_finisher(), message="the threads to end")


@pytest.mark.django_db(transaction=True)
def test_ahead_a_batch_read_ahead_keeps_its_lease_while_the_one_before_is_worked_on(
    alice: User, settings: Any,
) -> None:
    settings.JOB_LEASE_SECONDS = 1.5
    ids = _waiting(alice, ["0 transient"] * 2)
    margins: list[float] = []

    def work(runs: list[JobRun]) -> Callable[[], None]:
        def model() -> None:
            if runs[0].object_id == ids[0]:
                # Twice a lease: the next batch, read meanwhile, waits all that time.
                until = time.monotonic() + 3 * settings.JOB_LEASE_SECONDS
                while time.monotonic() < until:
                    time.sleep(0.2)
                    job = Job.objects.get(kind=FLAKY.name, object_id=ids[1])
                    if job.status == JobStatus.PROCESSING:
                        margins.append((job.lease_expires_at - timezone.now()).total_seconds())
            for run in runs:
                _flaky_work(run)

        return model

    jobs_work_through(kind=FLAKY, object_ids=ids, work=work, progress=lambda n: None,
                      batch=1, ahead=True)

    assert len(margins) > 5 and min(margins) > 0, margins  # never lapsed
    jobs = Job.objects.filter(kind=FLAKY.name)
    assert set(jobs.values_list("status", flat=True)) == {JobStatus.COMPLETE}
    assert set(jobs.values_list("attempts", flat=True)) == {1}


def test_ahead_inside_a_transaction_this_thread_does_every_step(alice: User) -> None:
    ids = _waiting(alice, ["0 transient"] * 4)
    steps: list[tuple[str, int]] = []

    def work(runs: list[JobRun]) -> Callable[[], Callable[[], None]]:
        steps.append(("read", threading.get_ident()))

        def model() -> Callable[[], None]:
            steps.append(("model", threading.get_ident()))

            def store() -> None:
                steps.append(("store", threading.get_ident()))
                for run in runs:
                    _flaky_work(run)

            return store

        return model

    jobs_work_through(kind=FLAKY, object_ids=ids, work=work, progress=lambda n: None,
                      batch=1, ahead=True)

    me = threading.get_ident()
    assert steps == [(step, me) for _ in ids for step in ("read", "model", "store")]
    assert set(Job.objects.filter(kind=FLAKY.name).values_list("status", flat=True)) == {
        JobStatus.COMPLETE}
