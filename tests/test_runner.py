"""The stage runner on a miniature project: hand-off order, schema checks, execution, skipping, failures, TOC.

The miniature project has two stages defined in a package written into a temporary folder: a producer that
writes a table, and a consumer that reads it through a declared hand-off (its ``producer_run`` parameter).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from rmvalues.book import cli, runner
from rmvalues.book.config import load_config
from rmvalues.book.toc import chapter_pages, move_legacy_pages, toc, toc_text
from rmvalues.core.errors import ConfigError, MissingInputError

STAGES = """
from typing import ClassVar

import pandas as pd

from rmvalues.core.handoff import StageInput, input_path
from rmvalues.core.manifest import RunRecord
from rmvalues.core.params import StageParams, param


class ProducerParams(StageParams):
    STAGE: ClassVar[str] = "producer"
    n: int = param(3, help="rows to write")
    label: str = param("a", help="a label (a, b or c)")

    def promises(self):
        return {"labels": [self.label]}

    def check(self):
        problems = super().check()
        if self.label not in ("a", "b", "c"):
            problems.append(f"label {self.label!r} is not valid; valid labels: a, b, c")
        return problems


def run_producer(params):
    record = RunRecord.for_params(params)
    if params.n < 0:
        raise ValueError("negative n")
    record.write_parquet(pd.DataFrame({"i": range(params.n), "label": params.label}), "table.parquet")
    record.finish()


class ConsumerParams(StageParams):
    STAGE: ClassVar[str] = "consumer"
    scale: float = param(1.0, help="factor")
    label: str = param("a", help="the label the producer's table must carry")
    producer_run: str = param("default", help="the producer run whose table is read")

    def reads(self):
        needs = (("label", self.label),)
        return [StageInput("producer", self.producer_run, ("table.parquet",), "the table", "producer_run", needs)]

    def check_planned(self, upstream):
        labels = upstream.get(self.reads()[0].label, {}).get("labels")
        if labels is not None and self.label not in labels:
            return [f"the producer run {self.producer_run!r} will hold labels {labels}, not {self.label!r}"]
        return []

    def check(self):
        problems = super().check()
        table = self.reads()[0].folder(self.results_root) / "table.parquet"
        if not table.is_file():
            problems.append(f"{table} does not exist: run the producer stage first")
        else:
            try:
                labels = set(pd.read_parquet(table)["label"])
            except Exception as exc:  # a damaged table: the runner's integrity check names the run to redo
                labels = set()
                problems.append(f"{table} cannot be read ({type(exc).__name__})")
            if labels and self.label not in labels:
                problems.append(f"the producer run holds no rows labelled {self.label!r}")
        if self.scale < 0:
            problems.append("scale must be >= 0")
        return problems


def run_consumer(params):
    record = RunRecord.for_params(params)
    if params.scale > 100:
        raise ValueError("scale too large")
    path, digest = input_path(params.reads()[0], "table.parquet", params.results_root)
    record.add_input("producer table", digest)
    df = pd.read_parquet(path)
    record.write_parquet(pd.DataFrame({"total": [df["i"].sum() * params.scale]}), "total.parquet")
    record.finish()
"""


def _package(root: Path) -> None:
    pkg = root / "mini_stages"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(STAGES)
    for name, cls, fn in (
        ("producer", "ProducerParams", "run_producer"),
        ("consumer", "ConsumerParams", "run_consumer"),
    ):
        (pkg / f"{name}.py").write_text(f"from . import {cls} as Params, {fn} as run\n")


def _notebook(path: Path, stage: str, title: str) -> None:
    from importlib import import_module

    schema = import_module(f"mini_stages.{stage}").Params
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = nbformat.v4.new_code_cell(schema.notebook_cell())
    p.metadata["tags"] = ["parameters"]
    body = (
        f"from mini_stages import {stage} as stage\n\n"
        "params = stage.Params.from_namespace(globals())\n"
        "results = stage.run(params)"
    )
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nOverview."), p, nbformat.v4.new_code_cell(body)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    (root / "config").mkdir(parents=True)
    (root / "_config.yml").write_text("title: t\n")
    _package(tmp_path / "pkgs")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(tmp_path / "pkgs"), os.environ.get("PYTHONPATH", "")])
    )
    for mod in [m for m in sys.modules if m.startswith("mini_stages")]:
        sys.modules.pop(mod)
    _notebook(root / "notebooks" / "producer.ipynb", "producer", "Producer")
    _notebook(root / "notebooks" / "consumer.ipynb", "consumer", "Consumer")
    config = {
        "stages": {
            "consumer": {
                "notebook": "notebooks/consumer.ipynb",
                "package": "mini_stages.consumer",
                "title": "Consumer",
                "runs": {"default": {"parameters": {}}},
            },
            "producer": {
                "notebook": "notebooks/producer.ipynb",
                "package": "mini_stages.producer",
                "title": "Producer",
                "runs": {"default": {"parameters": {"n": 4}}},
            },
        },
        "profiles": {"default": {}, "tiny": {"producer": {"default": {"parameters": {"n": 2}}}}},
    }
    (root / "config" / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    monkeypatch.setenv("RMVALUES_ROOT", str(root))
    monkeypatch.delenv("RMVALUES_RESULTS", raising=False)
    return root


def _write_config(root: Path, mutate) -> None:
    path = root / "config" / "run.yaml"
    cfg = yaml.safe_load(path.read_text())
    mutate(cfg)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def test_plan_orders_by_the_declared_reads_and_merges_parameters(project):
    config = load_config()
    specs = runner.plan(config, profile="tiny")
    # the consumer is listed first in the config, but reads the producer's output: the producer runs first
    assert [s.label for s in specs] == ["producer/default", "consumer/default"]
    assert specs[0].parameters == {
        "n": 2,
        "output_dir": "results/producer/default",
        "results_root": "results",
        "run_name": "default",
    }
    assert [(r.stage, r.run) for r in specs[1].reads] == [("producer", "default")]
    # command-line overrides win; dependencies are pulled in
    specs = runner.plan(config, stages=["producer"], overrides={"n": 9, "label": "b"})
    assert specs[0].parameters["n"] == 9 and specs[0].params.label == "b"
    assert [s.label for s in runner.plan(config, stages=["consumer"])] == [
        "producer/default",
        "consumer/default",
    ]
    assert [s.label for s in runner.plan(config, stages=["consumer"], with_dependencies=False)] == [
        "consumer/default"
    ]
    # a consumer reading another producer run depends on that run, when it is configured
    _write_config(
        project,
        lambda cfg: cfg["stages"]["producer"]["runs"].update(alt={"parameters": {"n": 1}}),
    )
    specs = runner.plan(load_config(), stages=["consumer"], overrides={"producer_run": "alt"})
    assert [s.label for s in specs] == ["producer/alt", "consumer/default"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"stages": ["producer"], "overrides": {"m": 1}},
            r"unknown parameter 'm'; valid parameters of the producer stage: output_dir, results_root, run_name, n, label",
        ),
        (
            {"stages": ["producer"], "overrides": {"n": "three"}},
            r"n='three': Input should be a valid integer",
        ),
        ({"stages": ["producer"], "overrides": {"n": True}}, r"n=True: Input should be a valid integer"),
        (
            {"stages": ["producer"], "overrides": {"label": "z"}},
            r"label 'z' is not valid; valid labels: a, b, c",
        ),
        ({"stages": ["nope"]}, r"unknown stage 'nope'; valid stages: consumer, producer"),
        ({"profile": "huge"}, r"unknown profile 'huge'; valid profiles: default, tiny"),
        ({"stages": ["producer"], "overrides": {"output_dir": "x"}}, r"'output_dir' is set by the runner"),
        ({"stages": ["producer"], "overrides": {"run_name": "x"}}, r"'run_name' is set by the runner"),
    ],
)
def test_bad_parameters_fail_before_any_work(project, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        runner.run(log=lambda *_: None, **kwargs)
    assert not (project / "results").exists(), "validation must happen before any work"
    assert not (project / "book" / "generated").exists()


def test_a_missing_input_that_no_planned_run_produces_fails_before_any_work(project):
    with pytest.raises(
        MissingInputError, match=r"producer/default: manifest.json does not exist.*run stage 'producer'"
    ):
        runner.run(["consumer"], with_dependencies=False, log=lambda *_: None)
    assert not (project / "results" / "consumer").exists()


def test_float_parameter_accepts_int_and_cli_parses_yaml(project):
    assert cli.parse_overrides(["a=1", "b=0.5", "c=[x, y]", "d=true", "e=hello"]) == {
        "a": 1,
        "b": 0.5,
        "c": ["x", "y"],
        "d": True,
        "e": "hello",
    }
    # YAML 1.1 reads 1e-3 as a string: such floats become numbers at the top level and inside lists and maps
    assert cli.parse_overrides(["lr=1e-3", "lrs=[1e-8, 3e-4, none]", "m={a: 2e-1}"]) == {
        "lr": 1e-3,
        "lrs": [1e-8, 3e-4, "none"],
        "m": {"a": 0.2},
    }
    with pytest.raises(ConfigError, match="key=value"):
        cli.parse_overrides(["novalue"])
    specs = runner.plan(load_config(), stages=["consumer"], overrides={"scale": 2}, with_dependencies=False)
    assert specs[0].params.scale == 2.0


def test_execute_skip_and_rerun(project):
    logs: list[str] = []
    status = runner.run(log=logs.append)
    assert status == {"producer/default": "done", "consumer/default": "done"}
    table = pd.read_parquet(project / "results" / "producer" / "default" / "table.parquet")
    assert table["i"].tolist() == [0, 1, 2, 3]
    assert (
        pd.read_parquet(project / "results" / "consumer" / "default" / "total.parquet")["total"].item() == 6
    )
    manifest = json.loads((project / "results" / "producer" / "default" / "manifest.json").read_text())
    assert manifest["parameters"]["n"] == 4 and "table.parquet" in manifest["outputs"]
    consumer = json.loads((project / "results" / "consumer" / "default" / "manifest.json").read_text())
    assert consumer["inputs"]["producer table"] == manifest["outputs"]["table.parquet"]
    page = project / "book" / "generated" / "producer.ipynb"
    nb = nbformat.read(page, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "n = 4" in injected[0].source

    # nothing changed: both skipped
    assert runner.run(log=logs.append) == {"producer/default": "skipped", "consumer/default": "skipped"}
    # a one-off parameter for the producer's default run re-runs it; the consumer, reading a changed table,
    # is stale now
    status = runner.run(["producer"], overrides={"n": 5}, log=logs.append)
    assert status == {"producer/default": "done"}
    consumer_spec = runner.plan(load_config(), stages=["consumer"], with_dependencies=False)[0]
    assert not runner.is_up_to_date(consumer_spec, load_config())
    # running the consumer re-runs the producer with its configured n=4 (the table the consumer last read,
    # byte for byte): the consumer's inputs are those of its last run again, so it is up to date
    assert runner.run(["consumer"], log=logs.append) == {
        "producer/default": "done",
        "consumer/default": "skipped",
    }
    assert (
        pd.read_parquet(project / "results" / "consumer" / "default" / "total.parquet")["total"].item() == 6
    )
    # --force re-executes the run asked for, not its dependencies (unless --with-deps)
    assert runner.run(["consumer"], force=True, log=logs.append) == {
        "producer/default": "skipped",
        "consumer/default": "done",
    }
    assert runner.run(["consumer"], force=True, force_dependencies=True, log=logs.append) == {
        "producer/default": "done",
        "consumer/default": "done",
    }


def test_a_failure_surfaces_its_error_and_keeps_the_last_good_page_and_tables(project, capsys):
    runner.run(["producer"], log=lambda *_: None)
    out = project / "results" / "producer" / "default"
    page = project / "book" / "generated" / "producer.ipynb"
    before = {f: (out / f).read_bytes() for f in ("table.parquet", "manifest.json", "run.json")}
    page_before = page.read_bytes()
    # a failing one-off rerun: the console shows the notebook's exception, the last good state stays
    assert cli.main(["run", "producer", "--params", "n=-1"]) == 1
    printed = capsys.readouterr()
    assert "producer/default failed: ValueError: negative n" in printed.out
    assert "_build/failed/producer.ipynb" in printed.out and "did not complete" in printed.err
    assert {f: (out / f).read_bytes() for f in before} == before and page.read_bytes() == page_before
    assert not list(out.parent.glob(".default.previous"))
    assert (project / "_build" / "failed" / "producer.ipynb").is_file()
    assert runner.run(["producer"], log=lambda *_: None) == {
        "producer/default": "skipped"
    }  # still up to date


def test_a_run_that_never_succeeded_leaves_no_page_and_the_book_lists_what_exists(project):
    _write_config(
        project, lambda cfg: cfg["stages"]["producer"]["runs"]["default"]["parameters"].update(n=-1)
    )
    logs: list[str] = []
    with pytest.raises(
        runner.RunFailed, match=r"2 run\(s\) did not complete: producer/default, consumer/default"
    ):
        runner.run(["consumer"], log=logs.append)
    assert not (project / "book" / "generated" / "producer.ipynb").exists()
    assert not (project / "results" / "producer" / "default" / "manifest.json").exists()
    assert any("blocked by failed dependency producer" in line for line in logs)
    assert toc(load_config())["parts"][1]["caption"] == "Reference"  # no chapter page exists: none listed


def test_a_changed_output_is_detected_before_skipping_and_before_reading(project):
    runner.run(log=lambda *_: None)
    table = project / "results" / "producer" / "default" / "table.parquet"
    table.write_bytes(table.read_bytes()[:50])  # truncated after the run
    with pytest.raises(MissingInputError, match=r"table.parquet does not match its manifest.*NAME=producer"):
        runner.run(["consumer"], with_dependencies=False, log=lambda *_: None)
    logs: list[str] = []
    assert runner.run(log=logs.append) == {"producer/default": "done", "consumer/default": "skipped"}
    assert any(line.startswith("[redo] producer/default: table.parquet changed") for line in logs)


def test_named_runs_and_upstream_runs_that_hold_what_they_need(project):
    runner.run(log=lambda *_: None)
    logs: list[str] = []
    # a named consumer run needing label c: the producer's default run has label a, so a named producer run
    # with label c is created (the default run is never re-run with other parameters)
    status = runner.run(["consumer"], runs=["mine"], overrides={"label": "c", "scale": 2.0}, log=logs.append)
    assert status == {"producer/mine": "done", "consumer/mine": "done"}
    assert runner.run(["consumer"], runs=["mine"], log=logs.append) == {
        "producer/mine": "skipped",
        "consumer/mine": "skipped",
    }
    saved = yaml.safe_load((project / "results" / "named_runs.yaml").read_text())
    assert saved["consumer"]["mine"]["parameters"] == {"label": "c", "scale": 2.0}
    assert saved["producer"]["mine"]["parameters"] == {"label": "c"}
    produced = pd.read_parquet(project / "results" / "producer" / "mine" / "table.parquet")
    assert produced["label"].eq("c").all()
    assert (
        pd.read_parquet(project / "results" / "producer" / "default" / "table.parquet")["label"].eq("a").all()
    )
    chapters = toc(load_config())["parts"][1]["chapters"]
    assert chapters == [
        {"file": "book/generated/consumer", "sections": [{"glob": "book/generated/consumer/*"}]},
        {"file": "book/generated/producer", "sections": [{"glob": "book/generated/producer/*"}]},
    ]
    assert "mine" not in toc_text(load_config())  # the named runs' pages come through the globs
    assert chapter_pages(load_config()) == [
        "book/generated/consumer",
        "book/generated/producer",
        "book/generated/consumer/mine",
        "book/generated/producer/mine",
    ]
    nb = nbformat.read(project / "book" / "generated" / "consumer" / "mine.ipynb", as_version=4)
    assert nb.cells[0].source.startswith("# Consumer — mine (label=c, scale=2.0)")
    # promote the named run into the configuration
    assert cli.main(["promote", "consumer", "mine"]) == 0
    config = load_config()
    assert config.stages["consumer"].runs["mine"]["parameters"] == {"label": "c", "scale": 2.0}
    assert "mine" not in config.stages["consumer"].named and "mine" in config.stages["producer"].named


def test_a_named_runs_parameters_override_the_profile_whenever_it_is_planned(project):
    """`make audit MODEL=x PROFILE=tiny`: the profile sets the stage's parameters for every run ("*"), the named
    run's own parameters (its command line) still win when the run is planned again (after a dependency)."""
    _write_config(
        project,
        lambda cfg: cfg["profiles"]["tiny"].update(producer={"*": {"parameters": {"n": 2, "label": "p"}}}),
    )
    config = load_config()
    runner.plan(config, profile="tiny", stages=["producer"], runs=["mine"], overrides={"label": "c"})
    again = runner.plan(config, profile="tiny", stages=["producer"], runs=["mine"])  # no command line now
    assert (again[0].params.label, again[0].params.n) == ("c", 2)  # its own label, the profile's n
    assert runner.plan(config, profile="tiny", stages=["producer"])[0].params.label == "p"  # configured run


def test_params_strings_with_spaces_and_quotes():
    assert cli.split_params(
        "families=[gemma, llama] n=3  note='it is fine' word=don't x={a: 1, b: [2, 3]}"
    ) == [
        "families=[gemma, llama]",
        "n=3",
        "note='it is fine'",
        "word=don't",
        "x={a: 1, b: [2, 3]}",
    ]
    parsed = cli.parse_overrides(cli.split_params('families=[gemma, llama] lr=1e-3 note="it\'s"'))
    assert parsed == {"families": ["gemma", "llama"], "lr": 0.001, "note": "it's"}
    with pytest.raises(ConfigError, match="unclosed bracket"):
        cli.split_params("families=[gemma, llama")


def test_bad_config_is_rejected(project):
    _write_config(project, lambda cfg: cfg["stages"]["producer"].update(depends_on=["consumer"]))
    with pytest.raises(ConfigError, match=r"stage 'producer' has unknown keys \['depends_on'\]"):
        load_config()
    _write_config(project, lambda cfg: cfg["stages"]["producer"].pop("depends_on"))
    _write_config(project, lambda cfg: cfg["stages"]["producer"].update(package="mini_stages.ghost"))
    with pytest.raises(ConfigError, match="package mini_stages.ghost cannot be imported"):
        runner.plan(load_config(), stages=["producer"])
    _write_config(project, lambda cfg: cfg["stages"]["producer"].update(package="mini_stages.consumer"))
    with pytest.raises(ConfigError, match="Params belongs to stage 'consumer'"):
        runner.plan(load_config(), stages=["producer"])
    _write_config(project, lambda cfg: cfg["stages"]["producer"].update(notebook="x.ipynb"))
    with pytest.raises(ConfigError, match="x.ipynb, which does not exist"):
        load_config()


def test_cli_exit_code_and_message_for_bad_input(project, capsys):
    assert cli.main(["run", "producer", "-p", "n=oops"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "n='oops': Input should be a valid integer (rows to write)" in err


def test_list_shows_every_parameter_from_the_schema(project, capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "stage producer" in out and "n: int = 3" in out and "rows to write" in out
    assert "producer_run: str = 'default'" in out and "run consumer/default" in out


def test_a_check_needing_a_planned_dependency_output_is_repeated_after_the_dependency(project):
    logs: list[str] = []
    status = runner.run(log=logs.append)
    assert status == {"producer/default": "done", "consumer/default": "done"}
    assert any(line.startswith("[wait] consumer/default") for line in logs)
    # with the dependency's outputs in place, a bad parameter fails before any work, as usual
    with pytest.raises(ConfigError, match="scale must be >= 0"):
        runner.run(["consumer"], overrides={"scale": -1.0}, force=True, log=logs.append)


def test_a_named_run_page_has_its_own_figure_and_table_labels():
    """Two pages executed from one notebook (the default run and a named run or fork) must not define the same
    labels (the book refuses duplicates): the run's page gets ``<label>--<run>`` in its prose, its figure
    cells and the Markdown its cells displayed; the default page keeps the plain labels."""
    import nbformat

    from rmvalues.book.execution import own_labels, relabel_page

    assert own_labels("see {numref}`tbl-corpora-sizes` and {numref}`fig-x-y`", "My Corpus") == (
        "see {numref}`tbl-corpora-sizes--my-corpus` and {numref}`fig-x-y--my-corpus`"
    )
    assert own_labels("results/tbl-x.csv", "r") == "results/tbl-x.csv"  # a path is not a label
    nb = nbformat.v4.new_notebook()
    md = nbformat.v4.new_markdown_cell("As {numref}`fig-a-b` shows ({numref}`tbl-a-c`).")
    fig = nbformat.v4.new_code_cell(
        "plot()", metadata={"mystnb": {"figure": {"name": "fig-a-b", "caption": "C."}}}
    )
    tab = nbformat.v4.new_code_cell("show()")
    tab.outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={"text/markdown": ":::{table} T.\n:name: tbl-a-c\n\n| x |\n:::", "image/png": "AAAA"},
        )
    ]
    nb.cells = [md, fig, tab]
    relabel_page(nb, "fork-1")
    assert md.source == "As {numref}`fig-a-b--fork-1` shows ({numref}`tbl-a-c--fork-1`)."
    assert fig.metadata["mystnb"]["figure"]["name"] == "fig-a-b--fork-1"
    assert ":name: tbl-a-c--fork-1" in tab.outputs[0]["data"]["text/markdown"]
    assert tab.outputs[0]["data"]["image/png"] == "AAAA"
    # idempotent: a page relabelled twice keeps one suffix
    relabel_page(nb, "fork-1")
    assert md.source == "As {numref}`fig-a-b--fork-1` shows ({numref}`tbl-a-c--fork-1`)."


def test_the_book_build_relabels_a_page_executed_before_labels_were_its_own(project):
    """A named run's page written before pages had their own labels (plain ``fig-`` labels, which clash with
    the default page's) is relabelled before the book builds, without re-executing its run; pages already
    relabelled and the default page are left byte for byte."""
    import nbformat

    from rmvalues.book.execution import relabel_pages

    runner.run(["producer"], runs=["old"], overrides={"n": 1}, log=lambda *_: None)
    runner.run(["producer"], log=lambda *_: None)
    generated = project / "book" / "generated"
    old, default = generated / "producer" / "old.ipynb", generated / "producer.ipynb"
    nb = nbformat.read(old, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("See {numref}`fig-producer-table`."))
    nbformat.write(nb, old)  # as an older version wrote it: the plain label
    default_bytes = default.read_bytes()
    assert relabel_pages(load_config()) == ["book/generated/producer/old.ipynb"]
    assert nbformat.read(old, as_version=4).cells[-1].source == "See {numref}`fig-producer-table--old`."
    old_bytes = old.read_bytes()
    assert relabel_pages(load_config()) == []
    assert old.read_bytes() == old_bytes and default.read_bytes() == default_bytes


def test_a_planned_out_of_date_dependency_is_not_judged_by_its_old_outputs(project):
    """After a quick run with other parameters (e.g. the tiny profile), the full run re-executes the
    dependency first: a check against the dependency's old outputs waits instead of failing before any work."""
    logs: list[str] = []
    runner.run(["producer"], overrides={"label": "b"}, log=logs.append)  # producer/default now holds label b
    status = runner.run(log=logs.append)  # the configured parameters: the consumer needs label a
    assert status == {"producer/default": "done", "consumer/default": "done"}
    assert any(line.startswith("[wait] consumer/default") for line in logs)


def test_a_run_contradicting_what_a_planned_dependency_promises_fails_before_any_work(project):
    """The producer run a consumer names explicitly will write label a (its promise, known from its parameters):
    a consumer of label c is refused before the producer runs, instead of after it."""
    logs: list[str] = []
    with pytest.raises(ConfigError, match=r"the producer run 'default' will hold labels \['a'\], not 'c'"):
        runner.run(["consumer"], overrides={"label": "c", "producer_run": "default"}, log=logs.append)
    assert not (project / "results").exists() and not any(line.startswith("[run") for line in logs)
    # a consumer of the promised label waits for the producer's output and runs after it
    status = runner.run(["consumer"], overrides={"label": "a", "producer_run": "default"}, log=logs.append)
    assert status == {"producer/default": "done", "consumer/default": "done"}


def test_a_named_run_is_saved_once_it_has_run(project):
    """A new named run whose execution fails is not saved (the next full run does not repeat the failure); the
    upstream run created for it is saved once it has run, even when the run that needed it then fails."""
    logs: list[str] = []
    with pytest.raises(runner.RunFailed):
        runner.run(["producer"], runs=["broken"], overrides={"n": -1}, log=logs.append)
    assert "producer/broken: not saved as a named run" in "\n".join(logs)
    named = project / "results" / "named_runs.yaml"
    assert not named.is_file() or "broken" not in named.read_text()
    assert runner.run(log=lambda *_: None) == {"producer/default": "done", "consumer/default": "done"}
    with pytest.raises(runner.RunFailed):
        runner.run(["consumer"], runs=["big"], overrides={"label": "b", "scale": 500.0}, log=logs.append)
    saved = yaml.safe_load((project / "results" / "named_runs.yaml").read_text())
    assert saved == {"producer": {"big": {"parameters": {"label": "b"}}}}
    # the same command with a fixed parameter reuses the saved upstream run and saves the named run
    status = runner.run(["consumer"], runs=["big"], overrides={"label": "b", "scale": 5.0}, log=logs.append)
    assert status == {"producer/big": "skipped", "consumer/big": "done"}
    saved = yaml.safe_load((project / "results" / "named_runs.yaml").read_text())
    assert saved["consumer"]["big"]["parameters"] == {"label": "b", "scale": 5.0}


def test_forget_drops_a_named_run_from_the_book_and_the_full_run(project, capsys):
    runner.run(["consumer"], runs=["mine"], overrides={"label": "c"}, log=lambda *_: None)
    generated, results = project / "book" / "generated", project / "results"
    assert (generated / "producer" / "mine.ipynb").is_file() and (
        generated / "consumer" / "mine.ipynb"
    ).is_file()
    # a run that another run reads is kept; a configured run is not a named run; an unknown one is named
    assert cli.main(["forget", "producer", "mine"]) == 2
    assert "producer/mine is read by consumer/mine: forget those first" in capsys.readouterr().err
    assert cli.main(["forget", "producer", "default"]) == 2
    assert "is a run of config/run.yaml, not a named run" in capsys.readouterr().err
    assert cli.main(["forget", "consumer", "nope"]) == 2
    err = capsys.readouterr().err
    assert (
        "no named run consumer/nope; named runs:" in err and "consumer/mine" in err and "producer/mine" in err
    )
    # the reader first (its results kept), then the upstream run with its results
    assert cli.main(["forget", "consumer", "mine"]) == 0
    assert "its results stay in results/consumer/mine" in capsys.readouterr().out
    assert not (generated / "consumer" / "mine.ipynb").exists() and (results / "consumer" / "mine").is_dir()
    assert cli.main(["forget", "producer", "mine", "--results"]) == 0
    assert (
        not (generated / "producer" / "mine.ipynb").exists() and not (results / "producer" / "mine").exists()
    )
    assert yaml.safe_load((results / "named_runs.yaml").read_text()) in (
        None,
        {},
        {"consumer": {}, "producer": {}},
    )
    assert "mine" not in (project / "_toc.yml").read_text()
    assert set(runner.run(log=lambda *_: None)) == {"producer/default", "consumer/default"}


def test_the_committed_toc_covers_the_default_book():
    """``_toc.yml`` is committed: every stage's default page in its part, and a glob over its folder of other
    runs' pages (so named runs never change the file); `python -m rmvalues toc` writes it after a stage is added."""
    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "config" / "run.yaml", named=False)
    assert (root / "_toc.yml").read_text(encoding="utf-8") == toc_text(config), "run `python -m rmvalues toc`"
    parts = {p["caption"]: p["chapters"] for p in toc(config, only_existing=False)["parts"]}
    assert parts["Audits"] == [
        {"file": "book/generated/audit", "sections": [{"glob": "book/generated/audit/*"}]}
    ]
    listed = [c["file"] for chapters in parts.values() for c in chapters]
    assert all(f"book/generated/{stage}" in listed for stage in config.stages)


def test_pages_of_named_runs_written_before_their_folder_are_moved_into_it(project):
    runner.run(["producer"], runs=["old"], overrides={"n": 1}, log=lambda *_: None)
    generated = project / "book" / "generated"
    page, legacy = generated / "producer" / "old.ipynb", generated / "producer--old.ipynb"
    nb = nbformat.read(page, as_version=4)
    nb.cells.append(
        nbformat.v4.new_markdown_cell("{download}`table <../../results/producer/old/table.parquet>`")
    )
    nbformat.write(nb, legacy)  # as an older version left it: its links relative to book/generated
    page.unlink()
    assert move_legacy_pages(load_config()) == ["book/generated/producer/old.ipynb"]
    assert page.is_file() and not legacy.exists()
    moved = nbformat.read(page, as_version=4)
    assert moved.cells[-1].source == "{download}`table </results/producer/old/table.parquet>`"
    assert runner.run(["producer"], runs=["old"], log=lambda *_: None) == {"producer/old": "skipped"}
