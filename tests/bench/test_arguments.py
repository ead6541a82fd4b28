"""The benchmarks parse their options (they are run by hand, not by the suite: only their
argument parsing is checked here, so a rename breaks the suite and not the integrator)."""

import pytest

from bench import bulk, http, latency, pg, stomp, workers, writer


@pytest.mark.parametrize("module", [http, latency, pg, stomp, workers])
def test_serve_args_pass_through_as_one_string(module):
    args = module.parse_args(["--serve-args", "--workers 2"])
    assert args.serve_args == "--workers 2"


@pytest.mark.parametrize("module", [http, latency, pg])
def test_a_running_qgate_is_given_by_url(module):
    assert module.parse_args(["--url", "http://127.0.0.1:8888"]).url == "http://127.0.0.1:8888"


def test_stomp_columns_default_to_qgate_default_transient_and_rabbitmq():
    args = stomp.parse_args(["--stomp", "127.0.0.1:61613"])
    assert args.brokers == "qgate,transient,rabbitmq"
    assert args.stomp == "127.0.0.1:61613"


def test_workers_default_to_one_and_two():
    assert workers.parse_args([]).workers == "1,2"


def test_the_stomp_scenarios_have_distinct_keys():
    keys = [s.key for s in stomp.SCENARIOS]
    assert len(set(keys)) == len(keys) == 4


def test_the_bulk_bench_compares_one_transaction_with_slices_of_a_thousand():
    args = bulk.parse_args([])
    assert (args.messages, args.slice, args.backends) == (200_000, 1000, "sqlite")


def test_the_writer_benchmark_runs_the_group_functions_it_names(capsys):
    """bench.writer calls the SQL group functions directly: a change of their arguments
    breaks it here, not in the hands of whoever measures next."""
    writer.main(["--rounds", "1"])
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(table) == 5  # the head and four scenarios


def test_the_cpu_benchmark_serves_201s_through_one_process_and_through_a_hub():
    from twisted.internet.task import Clock

    from bench import http_cpu

    assert http_cpu.parse_args([]).requests == 3000
    clock = Clock()
    for make in (http_cpu.one_process, http_cpu.worker_and_hub):
        step = make(clock)
        answers = b"".join(step() for _ in range(8))  # the hub's answers are pumped every 4
        assert answers.count(b"HTTP/1.1 201 Created\r\n") == 8


def test_the_memory_release_bench_frees_everything_it_discards(capsys):
    from bench import memory_release

    memory_release.main(["--messages", "12000", "--rounds", "1"])
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[1:]]
    turns = {row[0]: int(row[3]) for row in rows}
    assert turns["delete, at once (before)"] == 0
    assert turns["delete, a slice of 5,000 per turn"] > 1
