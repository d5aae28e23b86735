"""The one harness of the benchmarks that run figway beside the system underneath it.

A benchmark (``bench.rq_path``, ``bench.prefect_path``, ``bench.etl``) is a
:class:`BenchPath` or, for ``bench.etl``, its own ``run``; the harness owns
what they share:

- the command line: the options every path takes, the full and ``--quick``
  presets (an explicit option wins over both), ``--parts``;
- ``main()``: SIGTERM handled as Ctrl-C (the stack tears down either way), the
  results written as JSON with the Markdown report printed;
- the run: its stack entered and left, the environment recorded, the
  workflows registered, each part timed;
- part (a), submission: every submitter of the path, interleaved (one
  submission of each in turn), then the sustained rate of the path's
  sustained submitters;
- part (b), end to end: every DAG through figway and natively, in rounds
  whose order alternates (:func:`interleave`), on each worker mode in turn.

A path supplies only what differs between backends: how its stack starts
(:meth:`BenchPath.stack`), how its baseline submits
(:meth:`BenchPath.submitters`), how its workers start and one DAG runs
natively (:meth:`BenchPath.workers`, :meth:`BenchPath.runner`), how its
samples are summed up, and its report's own tables.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx

from bench.report import (
    environment,
    latency_tables,
    run_header,
    stop_on_sigterm,
    verdict,
    write_results,
)
from bench.stack import BenchStack, StackConfig
from bench.submit import SubmitTarget, SubmitterFactory, measure_latency, measure_sustained
from bench.workflows import BenchDag, chain, layered, small

__all__ = [
    "BASELINE",
    "FIGWAY",
    "RESULTS_DIR",
    "SYSTEMS",
    "BenchPath",
    "PathReport",
    "Runner",
    "add_service_arguments",
    "choices",
    "command",
    "finish_results",
    "interleave",
    "main",
    "new_results",
    "parse_args",
    "register",
    "say",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: The submitters whose p50 ratio is the submit target (figway's POST over the baseline).
FIGWAY = "figway_http"
BASELINE = "baseline"
#: The two systems of part (b), in the order of the first round.
SYSTEMS = ("figway", "native")

Sample = TypeVar("Sample")
Item = TypeVar("Item")


def say(message: str) -> None:
    print(message, flush=True)


class PathReport(Protocol):
    """A path's own report tables (a module: ``bench.rq_report``, ``bench.prefect_report``)."""

    def sections(self, results: dict[str, Any]) -> list[str]: ...

    def target_lines(self, targets: dict[str, Any]) -> list[str]: ...


class Runner(Protocol[Sample]):
    """Runs one DAG through figway or natively, with the workers already started."""

    def run(self, system: str, dag: BenchDag, repeat: int) -> Sample: ...

    def line(self, sample: Sample, repeats: int) -> str: ...

    def close(self) -> None: ...


def rotation(systems: Sequence[str], repeat: int) -> list[str]:
    """The systems in round ``repeat``'s order: each round starts with the next one.

    >>> rotation(["figway", "native"], 1), rotation(["figway", "native"], 2)
    (['figway', 'native'], ['native', 'figway'])
    """
    shift = (repeat - 1) % len(systems)
    return [*systems[shift:], *systems[:shift]]


def interleave(
    measure: Callable[[str, Item, int], Sample],
    *,
    systems: Sequence[str],
    items: Sequence[Item],
    repeats: int,
    progress: Callable[[Sample], None],
) -> list[Sample]:
    """``repeats`` rounds; each measures every item on every system, in rotating order.

    So every system meets the machine's noise at every position of a round.
    """
    samples: list[Sample] = []
    for repeat in range(1, repeats + 1):
        for item in items:
            for system in rotation(systems, repeat):
                sample = measure(system, item, repeat)
                samples.append(sample)
                progress(sample)
    return samples


# -- the command line --------------------------------------------------------------------


def sustained_ratios(sustained: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """figway's sustained rate over the baseline's, per number of clients."""
    rates: dict[int, dict[str, float]] = {}
    for item in sustained:
        rates.setdefault(item["clients"], {})[item["name"]] = item["per_second"]
    return [
        {"clients": clients, "ratio": by_name[FIGWAY] / by_name[BASELINE]}
        for clients, by_name in sorted(rates.items())
        if FIGWAY in by_name and by_name.get(BASELINE)
    ]


def positive_ints(text: str) -> list[int]:
    """An argparse type: comma-separated counts, each at least 1.

    >>> positive_ints("1,4,16")
    [1, 4, 16]
    """
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated whole numbers, not {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"each count must be at least 1: {text!r}")
    return counts


def choices(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated subset of ``allowed``."""

    def parse(text: str) -> list[str]:
        chosen = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [part for part in chosen if part not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}: not {unknown}")
        return chosen

    return parse


def add_service_arguments(parser: argparse.ArgumentParser, *, redis_help: str) -> None:
    """--pg-admin-url, --redis-url and --output, which every service benchmark takes."""
    parser.add_argument(
        "--pg-admin-url",
        default=StackConfig.pg_admin_url,
        help="PostgreSQL URL allowed to CREATE/DROP the benchmark's own databases "
        "(default: %(default)s)",
    )
    parser.add_argument("--redis-url", default=StackConfig.redis_url, help=redis_help)
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS_DIR,
        help="folder for the JSON results (default: bench/results)",
    )


def parse_args(path: BenchPath, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m bench.{path.name}",
        description=path.doc,
        epilog=path.epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    full, quick = path.presets["full"], path.presets["quick"]
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"end-to-end runs per DAG, system and mode, after a warm-up run of each "
        f"(full: {full['repeats']})",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help=f"measured sequential submissions per submitter (full: {full['requests']})",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help=f"warm-up submissions per submitter (full: {full['warmup']})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small, fast smoke run: "
        + ", ".join(f"{value:g} {name.replace('_', ' ')}" for name, value in quick.items()),
    )
    parser.add_argument(
        "--parts",
        type=choices(path.parts),
        default=list(path.default_parts),
        help=f"parts to run, comma-separated, from {', '.join(path.parts)} "
        f"(default: {','.join(path.default_parts)})",
    )
    add_service_arguments(
        parser, redis_help="Redis server, without a db number (default: %(default)s)"
    )
    parser.add_argument(
        "--redis-db",
        type=int,
        default=path.redis_db,
        help="Redis logical db, flushed before and after (default: %(default)s)",
    )
    path.add_arguments(parser)
    args = parser.parse_args(argv)
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not args.parts:
        parser.error(f"--parts: choose from {', '.join(path.parts)}")
    if args.repeats < 1 or args.requests < 1 or args.warmup < 0:
        parser.error("--repeats and --requests must be at least 1, --warmup at least 0")
    path.check(parser, args)
    return args


# -- the run -----------------------------------------------------------------------------


def new_results(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A run's results before its first figure: when it started and with what settings."""
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": dict(settings),
    }


def finish_results(results: dict[str, Any], began: float) -> None:
    """The run's length and the machine's load at its end."""
    results["elapsed_seconds"] = time.perf_counter() - began
    results.setdefault("environment", {})["load_average_at_end"] = os.getloadavg()


def register(api_url: str, dags: Sequence[BenchDag], backend: str) -> None:
    """PUT every workflow, routed to ``backend``."""
    with httpx.Client(base_url=api_url, timeout=30.0) as client:
        for dag in dags:
            response = client.put(
                f"/workflows/{dag.workflow_id}", json=dag.definition(backend=backend)
            )
            if response.status_code not in (200, 201):
                raise RuntimeError(
                    f"PUT /workflows/{dag.workflow_id}: {response.status_code} {response.text}"
                )


class BenchPath(ABC):
    """One backend's benchmark: what the harness cannot know about it."""

    #: The module under bench/ and the results' file name prefix ("rq_path").
    name: str
    #: The backend the workflows are routed to ("rq", "prefect").
    backend: str
    doc: str
    epilog: str
    #: "full" and "quick": requests, warmup, repeats and any option of the path's own.
    presets: Mapping[str, Mapping[str, Any]]
    #: Every part it can run; "submit" and "e2e" are the harness's, others the path's.
    parts: tuple[str, ...] = ("submit", "e2e")
    #: The parts run without --parts.
    default_parts: tuple[str, ...] = ("submit", "e2e")
    redis_db: int
    #: Packages whose versions the environment records beside figway's.
    packages: tuple[str, ...] = ()
    #: Submitters whose sustained rate part (a) measures after their latency.
    sustained: tuple[str, ...] = ()
    #: What was running during part (a), for the report's title.
    submit_note: str = "no workers running"
    #: Said after the results are written: the targets.
    closing: str = ""
    #: The path's own report tables: ``sections(results)`` after the submit latency,
    #: ``target_lines(targets)`` after the submit target.
    report: PathReport
    #: figway's submit p50 over the baseline's: the target, or None where none is set.
    submit_target: float | None = None
    #: What the baseline does, for the submit target's line.
    baseline: str = "baseline"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The path's own options."""
        return None

    def check(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        """Refuse the path's own options' bad values with ``parser.error``."""
        return None

    def settings(self, args: argparse.Namespace) -> dict[str, Any]:
        """The path's own options, as its results record them."""
        return {}

    @abstractmethod
    def stack(self, args: argparse.Namespace) -> contextlib.AbstractContextManager[Any]:
        """The running services: the value has ``figway``, a running :class:`BenchStack`."""

    def prepare(self, stack: Any, args: argparse.Namespace, results: dict[str, Any]) -> None:
        """After the stack started, before any part: environment extras, deployments."""
        return None

    @abstractmethod
    def submitters(self, stack: Any) -> dict[str, tuple[str, SubmitterFactory]]:
        """Part (a)'s submitters: name -> (what it does, how to make one)."""

    def after_submit(self, stack: Any) -> dict[str, Any]:
        """Drop what part (a) left queued; returns figures for the results."""
        return {}

    def modes(self, args: argparse.Namespace) -> list[str]:
        """Part (b)'s worker modes, run one after the other."""
        return ["default"]

    @abstractmethod
    def workers(
        self, stack: Any, args: argparse.Namespace, mode: str
    ) -> contextlib.AbstractContextManager[dict[str, Any]]:
        """The workers of ``mode`` running for the block; the dict takes figures about them."""

    @abstractmethod
    def runner(self, stack: Any, mode: str) -> Runner[Any]:
        """Runs single DAGs through figway and natively on ``mode``'s workers."""

    @abstractmethod
    def summarise(self, samples: Sequence[Any]) -> list[dict[str, Any]]:
        """Part (b)'s summary rows."""

    @abstractmethod
    def e2e_targets(self, summary: Sequence[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
        """(key, rows) of part (b)'s targets in the results."""

    def part(
        self, name: str, stack: Any, args: argparse.Namespace, dags: Sequence[BenchDag]
    ) -> dict[str, Any]:
        """A part of the path's own (not submit or e2e); merged into the results."""
        raise NotImplementedError(name)

    def finish(self, args: argparse.Namespace, results: dict[str, Any]) -> None:
        """After the stack stopped: figures from elsewhere (another path's results)."""
        return None

    @abstractmethod
    def software(self, results: dict[str, Any]) -> str:
        """The report's first line names these packages' versions."""

    # -- what the harness does with it ---------------------------------------------------

    def render(self, results: dict[str, Any]) -> str:
        """The one report: header, submit latency, the path's tables, the targets."""
        settings = results["settings"]
        parts = [run_header(results, self.software(results))]
        latency = results.get("submit_latency")
        if latency:
            parts.append(
                f"### Submit latency, {self.backend} route: {settings['submit_dag']} "
                f"({settings['requests']} sequential submissions each after "
                f"{settings['warmup']} warm-up, interleaved; {self.submit_note})"
            )
            parts += latency_tables(latency)
        parts += self.report.sections(results)
        targets = results.get("targets", {})
        lines = []
        if "submit_p50_ratio" in targets:
            ratio = targets["submit_p50_ratio"]
            lines.append(
                f"- submit p50, figway POST / {self.baseline}: "
                + (
                    verdict(ratio, self.submit_target)
                    if self.submit_target is not None
                    else f"{ratio:.2f}x (no target set for this path)"
                )
            )
        lines += self.report.target_lines(targets)
        if lines:
            parts.append("\n".join(["### Targets", *lines]))
        return "\n\n".join(parts) + "\n"


def part_submit(
    path: BenchPath, stack: Any, args: argparse.Namespace, dag: BenchDag
) -> dict[str, Any]:
    """(a): sequential latency of every submitter, then the sustained rate of some."""
    figway: BenchStack = stack.figway
    factories = path.submitters(stack)
    target = SubmitTarget(figway.api_url, figway.database_url, figway.redis_url, dag)
    say(f"(a) submit latency: {args.requests} x {len(factories)} submitters, {path.submit_note}")
    latency = measure_latency(
        target,
        list(factories),
        requests=args.requests,
        warmup=args.warmup,
        progress=say,
        factories=factories,
    )
    for result in latency:
        say(
            f"  {result.label:<60} p50 {result.summary.p50:7.2f} ms  "
            f"p99 {result.summary.p99:7.2f} ms"
        )
    sustained = []
    client_counts = getattr(args, "clients", []) if path.sustained else []
    for clients in client_counts:
        for name in path.sustained:  # the submitters of one count side by side
            say(f"(a) sustained: {name}, {clients} clients for {args.sustain_seconds:g} s")
            rate = measure_sustained(
                target,
                name,
                clients=clients,
                seconds=args.sustain_seconds,
                max_submissions=args.max_sustained,
                factories=factories,
            )
            say(f"  {rate.submissions} submissions, {rate.per_second:.1f}/s")
            sustained.append(dataclasses.asdict(rate))
    by_name = {result.name: result for result in latency}
    figures: dict[str, Any] = {
        "submit_latency": [dataclasses.asdict(result) for result in latency],
        **({"sustained": sustained} if sustained else {}),
        **path.after_submit(stack),
    }
    figures["submit_p50_ratio"] = by_name[FIGWAY].summary.p50 / by_name[BASELINE].summary.p50
    return figures


def _say_line(runner: Runner[Any], repeats: int, sample: Any) -> None:
    say(runner.line(sample, repeats))


def part_end_to_end(
    path: BenchPath, stack: Any, args: argparse.Namespace, dags: Sequence[BenchDag]
) -> dict[str, Any]:
    """(b): every DAG through figway and natively, on each worker mode in turn."""
    samples: list[Any] = []
    about_workers: dict[str, dict[str, Any]] = {}
    for mode in path.modes(args):
        say(f"(b) end to end: starting the workers ({mode})")
        with path.workers(stack, args, mode) as about:
            runner = path.runner(stack, mode)
            try:
                # Warm-up, not kept: fresh workers pay imports and connection setup.
                for system in SYSTEMS:
                    say(runner.line(runner.run(system, dags[0], 0), args.repeats))
                samples += interleave(
                    runner.run,
                    systems=SYSTEMS,
                    items=dags,
                    repeats=args.repeats,
                    progress=functools.partial(_say_line, runner, args.repeats),
                )
            finally:
                runner.close()
        about_workers[mode] = about
    figures: dict[str, Any] = {
        "samples": [dataclasses.asdict(sample) for sample in samples],
        "summary": path.summarise(samples),
    }
    for mode, about in about_workers.items():
        for key, value in about.items():
            figures.setdefault(key, {})[mode] = value
    return figures


def run(path: BenchPath, args: argparse.Namespace) -> dict[str, Any]:
    submit_dag, chain_dag, layered_dag = small(), chain(20), layered(20, 10)
    dags = [submit_dag, chain_dag, layered_dag]
    results = new_results(
        {
            "repeats": args.repeats,
            "requests": args.requests,
            "warmup": args.warmup,
            "parts": args.parts,
            "quick": args.quick,
            **path.settings(args),
            "submit_dag": f"{submit_dag.workflow_id} ({submit_dag.description})",
            "chain_dag": f"{chain_dag.workflow_id} ({chain_dag.description})",
            "layered_dag": f"{layered_dag.workflow_id} ({layered_dag.description})",
        }
    )
    results["part_seconds"] = {}
    results["targets"] = {}
    began = time.perf_counter()
    say(f"starting the {path.backend} stack: databases, Redis db {args.redis_db}, figway")
    with path.stack(args) as stack:
        figway: BenchStack = stack.figway
        say(f"  database {figway.database}, gateway {figway.api_url}, logs in {figway.workdir}")
        results["environment"] = environment(
            figway.database_url, figway.redis, extra_packages=path.packages
        )
        path.prepare(stack, args, results)
        register(figway.api_url, dags, path.backend)
        for part in args.parts:
            part_began = time.perf_counter()
            if part == "submit":
                submitted = part_submit(path, stack, args, submit_dag)
                results["targets"]["submit_p50_ratio"] = submitted.pop("submit_p50_ratio")
                results["targets"]["sustained"] = sustained_ratios(submitted.get("sustained", []))
                results.update(submitted)
            elif part == "e2e":
                results["end_to_end"] = part_end_to_end(path, stack, args, [chain_dag, layered_dag])
                key, rows = path.e2e_targets(results["end_to_end"]["summary"])
                results["targets"][key] = rows
            else:
                for key, value in path.part(part, stack, args, dags).items():
                    if isinstance(value, dict) and isinstance(results.get(key), dict):
                        results[key].update(value)
                    else:
                        results[key] = value
            results["part_seconds"][part] = time.perf_counter() - part_began
    path.finish(args, results)
    finish_results(results, began)
    parts = ", ".join(f"{part} {sec:.0f} s" for part, sec in results["part_seconds"].items())
    say(
        f"done in {results['elapsed_seconds']:.0f} s ({parts}); processes stopped, "
        "databases dropped, Redis db flushed"
    )
    return results


def command(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
    *,
    name: str,
) -> int:
    """Run, write the results and print the report; SIGTERM and Ctrl-C tear down alike."""
    stop_on_sigterm()
    try:
        results = run(args)
    except KeyboardInterrupt:
        say("interrupted: processes stopped, databases dropped")
        return 130
    path = write_results(results, render(results), output=args.output, name=name)
    say(f"raw results: {path}")
    return 0


def main(path: BenchPath, argv: list[str] | None = None) -> int:
    args = parse_args(path, argv)
    name = f"{path.name}{'-quick' if args.quick else ''}"
    code = command(args, lambda parsed: run(path, parsed), path.render, name=name)
    if code == 0 and path.closing:
        say(path.closing)
    return code
