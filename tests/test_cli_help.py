"""The CLI explains itself: --version, a help line for every flag, choices listed, defaults
shown as typed; errors give CLI advice."""
from __future__ import annotations

import argparse
import re

import pytest

import gpunet as gn
from gpunet.cli import COMMANDS, build_parser, main

DOCUMENTED = ("train", "evaluate", "info", "launch", "experiment", "summary", "export", "compare", "doctor")


def _sub(name):
    parser = build_parser(name)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"gpunet {gn.__version__}"


@pytest.mark.parametrize("name", DOCUMENTED)
def test_every_flag_has_a_help_line(name):
    assert "--help" in _sub(name).format_help()  # argparse formats every help line (a bare % breaks it)
    missing = [a.option_strings for a in _sub(name)._actions
               if a.option_strings and a.help in (None, "", argparse.SUPPRESS)]
    assert missing == []


def test_train_help_lists_choices_and_typed_defaults():
    helps = {a.dest: a.help for a in _sub("train")._actions}
    assert "one of: mlp, resnet20, resnet8, small_cnn, softmax_regression, tf_cifar10_cnn" in helps["model"]
    assert "one of: sgd, adagrad, rmsprop, adam, adamw, nadam, radam" in helps["optimizer"]
    assert "one of: float32, float64" in helps["dtype"] and "he_normal" in helps["init"]
    assert "(default <dataset>-<model>)" in helps["name"]
    assert "(default 256,128)" in helps["hidden"] and "''" not in " ".join(h or "" for h in helps.values())


def test_device_means_the_same_in_every_command():
    for name in ("train", "compare", "evaluate"):
        action = next(a for a in _sub(name)._actions if "--device" in a.option_strings)
        assert "cpu, cuda, cuda:N or auto" in action.help and action.default in (None, "auto"), name
    exp = next(a for a in _sub("experiment")._actions if "--device" in a.option_strings)
    assert "cpu, cuda, cuda:N or auto" in exp.help and exp.default == "cpu" and "recorded on the CPU" in exp.help
    helps = [a.help for a in _sub("compare")._actions if a.option_strings and a.dest != "help"]
    assert len(helps) > 10 and not any(h.startswith("(default") or "''" in h for h in helps)


def test_a_bad_choice_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--optimizer", "lamb"])
    assert e.value.code == 2 and "invalid choice: 'lamb'" in capsys.readouterr().err


def test_command_list_is_complete():
    assert set(DOCUMENTED) <= set(COMMANDS)


def test_config_errors_name_the_flag(tmp_path, capsys):
    assert main(["train", "--lr", "-1", "--out", str(tmp_path)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "error: --lr expected a value > 0 and finite, got -1.0" in out and "TrainConfig" not in out
    assert main(["train", "--val-fraction", "0", "--early-stopping", "2", "--out", str(tmp_path)]) == 2
    assert "--early-stopping expected a validation split" in " ".join(capsys.readouterr().out.split())


def test_experiment_says_where_it_wrote(tmp_path, capsys):
    assert main(["experiment", "zero-init-softmax", "--quick", "--out", str(tmp_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"wrote {tmp_path / 'result.json'}" in out
    assert (tmp_path / "result.json").is_file()


def test_json_is_a_switch_in_every_command():
    for name in COMMANDS:
        for a in _sub(name)._actions:
            if "--json" in a.option_strings:
                assert isinstance(a, argparse._StoreTrueAction), name
            if "--json-out" in a.option_strings:
                assert a.nargs is None and not isinstance(a, argparse._StoreTrueAction), name


def _flag_helps():
    """{flag: {command: help}} over every gpunet command and every benchmark's own flags."""
    from gpunet.cli import bench
    seen = {}
    for name in COMMANDS:
        for a in _sub(name)._actions:
            for flag in a.option_strings:
                seen.setdefault(flag, {})[name] = (a.help or "") + f" [default={a.default}]"
    for name in bench.BENCHMARKS:
        parser = bench.load(name).build_parser()
        for a in parser._actions:
            for flag in a.option_strings:
                seen.setdefault(flag, {})[f"bench {name}"] = (a.help or "") + f" [default={a.default}]"
    return seen


def test_one_meaning_per_flag_name():
    seen = _flag_helps()
    # --out is always a folder; a JSON file is --json-out, in doctor and every benchmark
    assert set(seen["--out"]) == {"train", "compare", "experiment"}
    assert all("folder" in h for h in seen["--out"].values()), seen["--out"]
    from gpunet.cli import bench
    assert {f"bench {n}" for n in bench.BENCHMARKS} | {"doctor"} <= set(seen["--json-out"])
    assert all("JSON" in h for h in seen["--json-out"].values()), seen["--json-out"]
    # --devices: a device list, one replica each; --replicas: a count
    assert set(seen["--devices"]) == {"train", "compare"}
    assert all("one replica per" in h for h in seen["--devices"].values()), seen["--devices"]
    assert set(seen["--replicas"]) == {"compare", "doctor", "bench parallel"}
    counts = [re.search(r"\[default=(.*)\]$", h).group(1) for h in seen["--replicas"].values()]
    assert all(re.fullmatch(r"None|[0-9,]+", c) for c in counts) and "1,2,4" in counts, seen["--replicas"]
