"""The stage runner on a miniature project: ordering, parameter checks, execution, skipping, failures, TOC."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from rmvalues import cli, runner


def _notebook(path: Path, params: str, body: str, title: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nOverview."), p, nbformat.v4.new_code_cell(body)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


INJECTED = 'output_dir = "results/x/default"\nresults_root = "results"\nrun_name = "default"\n'

PRODUCER = """
import pandas as pd
from rmvalues.manifest import RunRecord
from rmvalues.paths import resolve
rec = RunRecord(resolve(output_dir), stage="producer", run=run_name, parameters={"n": n, "label": label})
if n < 0:
    raise ValueError("negative n")
rec.write_parquet(pd.DataFrame({"i": range(n), "label": label}), "table.parquet")
rec.finish()
"""

CONSUMER = """
import pandas as pd
from rmvalues.manifest import RunRecord
from rmvalues.paths import resolve
src = resolve(results_root) / "producer" / "default" / "table.parquet"
rec = RunRecord(resolve(output_dir), stage="consumer", run=run_name, parameters={"scale": scale})
df = pd.read_parquet(src)
rec.write_parquet(pd.DataFrame({"total": [df["i"].sum() * scale]}), "total.parquet")
rec.finish()
"""

VALIDATOR = """
def check(params):
    if params["label"] not in ("a", "b", "c"):
        raise ValueError(f"label {params['label']!r} is not valid; valid labels: a, b, c")
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    (root / "config").mkdir(parents=True)
    (root / "_config.yml").write_text("title: t\n")
    _notebook(root / "notebooks" / "producer.ipynb", f"n = 3\nlabel = 'a'\n{INJECTED}", PRODUCER, "Producer")
    _notebook(root / "notebooks" / "consumer.ipynb", f"scale = 1.0\n{INJECTED}", CONSUMER, "Consumer")
    (tmp_path / "mini_validators.py").write_text(VALIDATOR)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = {
        "stages": {
            "consumer": {
                "notebook": "notebooks/consumer.ipynb",
                "title": "Consumer",
                "depends_on": ["producer"],
                "runs": {"default": {"parameters": {}}},
            },
            "producer": {
                "notebook": "notebooks/producer.ipynb",
                "title": "Producer",
                "validator": "mini_validators:check",
                "runs": {"default": {"parameters": {"n": 4}}},
            },
        },
        "profiles": {"default": {}, "tiny": {"producer": {"default": {"parameters": {"n": 2}}}}},
    }
    (root / "config" / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    monkeypatch.setenv("RMVALUES_ROOT", str(root))
    monkeypatch.delenv("RMVALUES_RESULTS", raising=False)
    sys.modules.pop("mini_validators", None)
    return root


def _write_config(root: Path, mutate) -> None:
    path = root / "config" / "run.yaml"
    cfg = yaml.safe_load(path.read_text())
    mutate(cfg)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def test_plan_orders_by_dependency_and_merges_parameters(project):
    config = runner.load_config()
    specs = runner.plan(config, profile="tiny")
    assert [s.label for s in specs] == ["producer/default", "consumer/default"]
    assert specs[0].parameters == {
        "n": 2,
        "output_dir": "results/producer/default",
        "results_root": "results",
        "run_name": "default",
    }
    # command-line overrides win; dependencies are pulled in
    specs = runner.plan(config, stages=["producer"], overrides={"n": 9, "label": "b"})
    assert specs[0].parameters["n"] == 9 and specs[0].parameters["label"] == "b"
    assert [s.label for s in runner.plan(config, stages=["consumer"])] == [
        "producer/default",
        "consumer/default",
    ]
    assert [s.label for s in runner.plan(config, stages=["consumer"], with_dependencies=False)] == [
        "consumer/default"
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"stages": ["producer"], "overrides": {"m": 1}},
            r"unknown parameter\(s\) m\. Valid parameters .*n, label",
        ),
        (
            {"stages": ["producer"], "overrides": {"n": "three"}},
            r"n='three' has type str.*declares n = 3 \(int\)",
        ),
        ({"stages": ["producer"], "overrides": {"n": True}}, r"n=True has type bool"),
        (
            {"stages": ["producer"], "overrides": {"label": "z"}},
            r"label 'z' is not valid; valid labels: a, b, c",
        ),
        ({"stages": ["nope"]}, r"unknown stage 'nope'; valid stages: consumer, producer"),
        ({"profile": "huge"}, r"unknown profile 'huge'; valid profiles: default, tiny"),
        ({"stages": ["producer"], "overrides": {"output_dir": "x"}}, r"'output_dir' is set by the runner"),
    ],
)
def test_bad_parameters_fail_before_any_work(project, kwargs, message):
    with pytest.raises(runner.ConfigError, match=message):
        runner.run(log=lambda *_: None, **kwargs)
    assert not (project / "results").exists(), "validation must happen before any work"
    assert not (project / "book" / "generated").exists()


def test_float_parameter_accepts_int_and_cli_parses_yaml():
    assert cli.parse_overrides(["a=1", "b=0.5", "c=[x, y]", "d=true", "e=hello"]) == {
        "a": 1,
        "b": 0.5,
        "c": ["x", "y"],
        "d": True,
        "e": "hello",
    }
    with pytest.raises(runner.ConfigError, match="key=value"):
        cli.parse_overrides(["novalue"])


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
    page = project / "book" / "generated" / "producer.ipynb"
    nb = nbformat.read(page, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "n = 4" in injected[0].source

    # nothing changed: both skipped
    assert runner.run(log=logs.append) == {"producer/default": "skipped", "consumer/default": "skipped"}
    # a new parameter for the producer re-runs it and, since its outputs changed, the consumer too
    status = runner.run(["producer"], overrides={"n": 5}, log=logs.append)
    assert status == {"producer/default": "done"}
    assert runner.run(["consumer"], log=logs.append) == {
        "producer/default": "done",
        "consumer/default": "done",
    }
    # (producer re-ran above because its configured n=4 differs from the override n=5 of the previous run)
    assert (
        pd.read_parquet(project / "results" / "consumer" / "default" / "total.parquet")["total"].item() == 6
    )


def test_failure_is_reported_and_leaves_no_page(project):
    _write_config(
        project, lambda cfg: cfg["stages"]["producer"]["runs"]["default"]["parameters"].update(n=-1)
    )
    logs: list[str] = []
    with pytest.raises(
        RuntimeError, match=r"2 run\(s\) did not complete: producer/default, consumer/default"
    ):
        runner.run(["consumer"], log=logs.append)
    assert not (project / "book" / "generated" / "producer.ipynb").exists()
    assert (project / "_build" / "failed" / "producer.ipynb").is_file()
    assert not (project / "results" / "producer" / "default" / "manifest.json").exists()
    assert not (project / "results" / "producer" / "default" / "run.json").exists()
    assert any("blocked by failed dependency producer" in line for line in logs)


def test_several_runs_become_several_pages_with_distinct_titles(project):
    def fork(cfg):
        cfg["stages"]["producer"]["runs"]["other"] = {"title": "Other model", "parameters": {"label": "c"}}

    _write_config(project, fork)
    config = runner.load_config()
    toc = runner.toc(config)
    chapters = toc["parts"][1]["chapters"]
    # reading order follows the config file (consumer is listed first), execution order the dependencies
    assert chapters[0] == {"file": "book/generated/consumer"}
    assert chapters[1] == {
        "file": "book/generated/producer--default",
        "sections": [{"file": "book/generated/producer--other"}],
    }
    runner.run(["producer"], runs=["other"], log=lambda *_: None)
    nb = nbformat.read(project / "book" / "generated" / "producer--other.ipynb", as_version=4)
    assert nb.cells[0].source.startswith("# Producer — Other model")
    assert (
        pd.read_parquet(project / "results" / "producer" / "other" / "table.parquet")["label"].eq("c").all()
    )


def test_bad_config_is_rejected(project):
    _write_config(project, lambda cfg: cfg["stages"]["producer"].update(depends_on=["consumer"]))
    with pytest.raises(runner.ConfigError, match="cycle"):
        runner.load_config()
    _write_config(project, lambda cfg: cfg["stages"]["producer"].update(depends_on=["ghost"]))
    with pytest.raises(runner.ConfigError, match="unknown stage 'ghost'"):
        runner.load_config()
    _write_config(
        project,
        lambda cfg: (
            cfg["stages"]["producer"].update(depends_on=[]),
            cfg["stages"]["producer"].update(notebook="x.ipynb"),
        ),
    )
    with pytest.raises(runner.ConfigError, match="x.ipynb, which does not exist"):
        runner.load_config()


def test_cli_exit_code_and_message_for_bad_input(project, capsys):
    assert cli.main(["run", "producer", "-p", "n=oops"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "declares n = 3 (int)" in err


CONSUMER_VALIDATOR = """
from pathlib import Path
from rmvalues import paths


def check(params):
    table = paths.resolve(params["results_root"]) / "producer" / "default" / "table.parquet"
    if not table.is_file():
        raise ValueError(f"{table} does not exist: run the producer stage first")
    if params["scale"] < 0:
        raise ValueError("scale must be >= 0")
"""


def test_validator_needing_a_dependency_output_is_checked_after_the_dependency(project, tmp_path):
    (tmp_path / "consumer_validators.py").write_text(CONSUMER_VALIDATOR)
    sys.modules.pop("consumer_validators", None)
    _write_config(
        project, lambda cfg: cfg["stages"]["consumer"].update(validator="consumer_validators:check")
    )
    logs: list[str] = []
    status = runner.run(log=logs.append)
    assert status == {"producer/default": "done", "consumer/default": "done"}
    assert any(line.startswith("[wait] consumer/default") for line in logs)
    # with the dependency's outputs in place, a bad parameter fails before any work, as usual
    with pytest.raises(runner.ConfigError, match="scale must be >= 0"):
        runner.run(["consumer"], overrides={"scale": -1.0}, force=True, log=logs.append)
