"""Depth degradation suites: one shared recipe, a tiny end-to-end suite, Fig. 6/7 data, stop, CLI, shipped result."""

from __future__ import annotations

import json

import pytest
import torch

from resnet_lab.data import load_dataset
from resnet_lab.events import Collector
from resnet_lab.experiments import degradation as D
from resnet_lab.models import build
from resnet_lab.runs import RunStore

# Tiny runs: 100 training / 50 test images, batches of 25 (4 steps per epoch).
TINY = dict(epochs=1, subset=100, test_subset=50, batch_size=25)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_cpu_suite_is_narrow_unaugmented_and_seeded():
    cfgs = D.suite_configs("cpu", seed=3)
    assert [c.model for c in cfgs] == ["plain8", "resnet8", "plain32", "resnet32"]
    assert all(c.seed == 3 and c.augment is False and c.subset == 1000 for c in cfgs)
    assert cfgs[0].model_options == {"width": 8}
    assert cfgs[1].model_options == {"shortcut": "A", "width": 8}
    zi = D.suite_configs("cpu", zero_init=True)
    assert zi[1].model_options == {"shortcut": "A", "width": 8, "zero_init_residual": True}
    assert zi[0].model_options == {"width": 8}  # plain nets have no residual branch to zero
    # the paper's width keeps the options old results were made with
    assert D.suite_configs("quick")[1].model_options == {"shortcut": "A"}
    with pytest.raises(D.DegradationError, match="seed"):
        D.suite_configs("cpu", seed=-1)


def test_zero_init_makes_every_residual_block_the_identity():
    torch.manual_seed(0)
    model = build("resnet8", width=8, zero_init_residual=True).eval()
    x = torch.randn(4, 8, 32, 32)
    block = model.layer1[0]
    assert torch.equal(block(x), torch.relu(x))  # relu(0 + x): the branch adds nothing
    plain = build("resnet8", width=8)  # the default keeps gamma = 1
    assert all(float(m.bn2.weight.detach().min()) == 1.0 for m in [plain.layer1[0], plain.layer3[0]])
    with pytest.raises(ValueError, match="residual"):
        from resnet_lab.models.cifar_resnet import CifarResNet
        CifarResNet(8, shortcut=None, zero_init_residual=True)


def test_init_profile_shows_the_plain_gradient_exploding_and_the_residual_one_not():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    prof = D.init_profile(x, y, depths=(8, 32), seeds=(0, 1), width=4)
    by = {n["model"]: n for n in prof["nets"]}
    assert list(by) == ["plain8", "resnet8", "plain32", "resnet32"]
    for n in prof["nets"]:
        assert len(n["grad_norm"]["median"]) == n["depth"] - 1  # every 3x3 conv
        assert len(n["act_std"]["median"]) == 1 + (n["depth"] - 2) // 2  # stem + every block
        per_seed = n["grad_norm"]["per_seed"]
        assert len(per_seed) == 2 and n["grad_norm"]["low"] <= n["grad_norm"]["median"] <= n["grad_norm"]["high"]
    assert by["plain32"]["grad_first_over_last"] > 10 * by["resnet32"]["grad_first_over_last"]
    # residual streams grow block by block; BN+ReLU keeps a plain stack's output size level
    assert by["resnet32"]["act_last_over_first"] > 1.5 > by["plain32"]["act_last_over_first"]
    flat = D.init_profile(x, y, depths=(32,), seeds=(0,), width=4, zero_init=True)["nets"][1]
    assert flat["act_last_over_first"] < by["resnet32"]["act_last_over_first"]


def test_every_net_of_a_suite_shares_one_recipe():
    cfgs = D.suite_configs("mini")
    assert [c.model for c in cfgs] == ["plain20", "resnet20", "plain56", "resnet56"]
    first = cfgs[0].to_dict()
    for c in cfgs[1:]:
        d = c.to_dict()
        differing = {k for k in d if d[k] != first[k]}
        assert differing <= {"model", "model_options"}, differing  # same schedule, data, seed, augmentation
    assert all(c.model_options == {"shortcut": "A"} for c in cfgs if c.model.startswith("resnet"))
    assert first["optimizer"] == "sgd" and first["weight_decay"] == 1e-4 and first["cutout"] == 0
    assert [c.model for c in D.suite_configs("paper", include_110=True)][-2:] == ["plain110", "resnet110"]
    assert len(D.suite_configs("paper")) == 8
    with pytest.raises(D.DegradationError, match="unknown suite"):
        D.suite_configs("huge")
    with pytest.raises(D.DegradationError, match="epochs"):
        D.suite_configs("quick", epochs=0)
    with pytest.raises(D.DegradationError, match="no model 'plain21'"):
        D.suite_configs("quick", depths=[21])


@pytest.mark.parametrize("name,options,n_layers", [("plain20", {}, 19), ("resnet20", {"shortcut": "B"}, 19),
                                                   ("plain56", {}, 55)])
def test_fig7_statistics_cover_every_3x3_layer(name, options, n_layers):
    torch.manual_seed(0)
    model = build(name, **options)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    st = D.layer_stats(model, x, y, responses_in_eval=False)
    # stem + 2 per block; the 1x1 projection's BN (shortcut B) is not a 3x3 layer's response
    assert len(st["layers"]) == len(st["convs"]) == len(st["response_std"]) == len(st["grad_norm"]) == n_layers
    assert st["layers"][0] == "stem.bn" and st["convs"][0] == "stem.conv"
    assert not any("shortcut" in layer for layer in st["layers"])
    # with batch statistics and gamma = 1 every channel has std ~1 right after BN (before the ReLU)
    assert all(0.9 < v < 1.1 for v in st["response_std"])
    assert all(g > 0 and g == g for g in st["grad_norm"])
    eval_st = D.layer_stats(model, x, y, responses_in_eval=True)  # running stats, as at test time
    assert eval_st["layers"] == st["layers"] and eval_st["response_std"] != st["response_std"]


def test_tiny_suite_end_to_end(tiny_data_env, runs_dir):
    data = load_dataset(str(tiny_data_env))
    events = Collector()
    result = D.run_suite("mini", dataset=data, callback=events, stats_images=20, command="test", **TINY)
    assert result["status"] == "done" and result["command"] == "test"
    assert [n["model"] for n in result["nets"]] == ["plain20", "resnet20", "plain56", "resnet56"]
    store = RunStore()
    for net in result["nets"]:
        assert net["status"] == "done" and len(net["history"]) == 1
        h = net["history"][0]
        assert 0 <= h["train_error"] <= 1 and 0 <= h["test_error"] <= 1
        run = store.get(net["run_id"])  # a normal run in the runs store, same numbers
        assert run.status == "done" and run.config["model"] == net["model"]
        assert h["train_error"] == pytest.approx(1 - run.history[-1]["train_acc"])
        assert net["final_test_error"] == pytest.approx(1 - run.metrics["top1"])
        n_layers = net["depth"] - 1
        for when in ("init", "trained"):
            assert len(net["stats"][when]["response_std"]) == n_layers
    # saved, and read back the same
    saved = D.load_result(result["path"])
    assert saved["nets"] == result["nets"] and saved["status"] == "done"
    assert [r["id"] for r in D.list_results(include_shipped=False)] == [result["id"]]
    # Fig. 6 data: plain nets left, residual right; dashed thin train, solid bold test; percent of the history
    series = D.fig6_series(saved)
    assert len(series) == 8
    for sr in series:
        net = next(n for n in saved["nets"] if n["model"] == sr["model"])
        assert sr["panel"] == ("plain" if sr["model"].startswith("plain") else "resnet")
        assert sr["dash"] == ("dash" if sr["kind"] == "train" else "solid")
        assert (sr["width"] > 2) == (sr["kind"] == "test")
        assert sr["epochs"] == [1]
        assert sr["error_pct"] == pytest.approx([100 * net["history"][0][f"{sr['kind']}_error"]])
    f7 = D.fig7_series(saved)
    assert [len(s["values"]) for s in f7] == [19, 19, 55, 55]
    assert all(s["sorted_values"] == sorted(s["values"], reverse=True) for s in f7)
    assert set(saved["effect"]) >= {"plain_degrades", "residual_ok", "shows"}
    # progress: per net, rescaled to the whole suite, never backwards, ending at 1
    prog = [e["progress"] for e in events.events if e.get("progress") is not None]
    assert prog == sorted(prog) and prog[-1] == 1.0
    assert {e["net"] for e in events.of("epoch")} == {"plain20", "resnet20", "plain56", "resnet56"}


def test_stop_ends_the_suite_and_keeps_finished_nets(tiny_data_env, runs_dir):
    import threading

    stop = threading.Event()

    def callback(event):
        if event["type"] == "end" and event.get("net") == "plain20":
            stop.set()  # Stop pressed while the first net finishes

    result = D.run_suite("mini", data=str(tiny_data_env), depths=[20], stats_images=10, callback=callback,
                         stop_event=stop, **TINY)
    assert result["status"] == "stopped"
    assert [n["model"] for n in result["nets"]] == ["plain20"]
    assert D.load_result(result["path"])["status"] == "stopped"


def test_two_worker_processes_give_the_serial_suites_numbers(tiny_data_env, runs_dir, tmp_path, monkeypatch):
    """On a CPU each net trains with one thread, so two nets at a time in worker processes reproduce the serial
    suite exactly: the shipped CPU result does not depend on the threads or workers that made it."""
    import sys
    import types

    # Under Streamlit, __main__ is the page script (it imports the app's helpers): the workers must not re-run it.
    page = tmp_path / "page.py"
    page.write_text("import a_module_only_the_app_has\n")
    main = types.ModuleType("__main__")
    main.__file__ = str(page)
    monkeypatch.setitem(sys.modules, "__main__", main)
    data = load_dataset(str(tiny_data_env))
    kw = dict(dataset=data, stats_images=10, epochs=2, subset=100, test_subset=50, batch_size=25, device="cpu")
    serial = D.run_suite("cpu", workers=1, **kw)
    events = Collector()
    parallel = D.run_suite("cpu", workers=2, callback=events, **kw)
    assert parallel["status"] == "done" and "2 nets at a time" in parallel["device"]
    assert [n["model"] for n in parallel["nets"]] == ["plain8", "resnet8", "plain32", "resnet32"]
    for a, b in zip(serial["nets"], parallel["nets"]):
        assert a["history"] == [] or [
            {k: v for k, v in r.items() if k != "seconds"} for r in a["history"]] == [
            {k: v for k, v in r.items() if k != "seconds"} for r in b["history"]]
        assert (a["final_train_error"], a["final_test_error"]) == (b["final_train_error"], b["final_test_error"])
        assert a["stats"] == b["stats"] and b["run_id"] and a["run_id"] != b["run_id"]
    # live events from the workers, labelled with their net; progress for the whole suite ends at 1
    assert {e["net"] for e in events.of("epoch")} == {"plain8", "resnet8", "plain32", "resnet32"}
    prog = [e["progress"] for e in events.events if e.get("progress") is not None]
    assert prog[-1] == 1.0 and max(prog) == 1.0
    assert torch.get_num_threads() == 1  # the caller's thread count is left as it was
    with pytest.raises(D.DegradationError, match="workers"):
        D.run_suite("cpu", workers=0, **kw)


def test_suite_progress_takes_worker_messages_in_any_order(tmp_path):
    """A worker's events travel on a queue, its result on the pool's pipe: the result can overtake its last
    events, or even its "begins" message. The record ends up the same, and late events do not add rows."""
    from resnet_lab.events import Collector

    configs = D.suite_configs("cpu")
    events = Collector()
    progress = D._SuiteProgress({"nets": []}, configs, tmp_path / "r.json", events)
    row = {"type": "epoch", "epoch": 1, "train_acc": 0.5, "train_loss": 1.0, "seconds": 1.0, "progress": 1.0}
    outcome = {"status": "done", "history": [D._history_row(row)], "final_train_error": 0.5, "run_id": "x",
               "seconds": 1.0, "params": 10, "stats": {}}
    progress.end(3, outcome)  # the result first
    progress.event(3, dict(row))  # then its last epoch event
    progress.begin(3)  # then its "begins" message
    net = progress.result["nets"][0]
    assert net["model"] == "resnet32" and net["status"] == "done" and len(net["history"]) == 1
    assert progress.fraction[3] == 1.0
    assert [e["net"] for e in events.of("epoch")] == ["resnet32"]  # still passed on, for the live view


def test_stop_reaches_the_worker_processes(tiny_data_env, runs_dir):
    import threading

    stop = threading.Event()

    def callback(event):
        if event["type"] == "epoch":
            stop.set()  # Stop pressed after the first epoch of whichever net gets there first

    result = D.run_suite("cpu", data=str(tiny_data_env), stats_images=10, callback=callback, stop_event=stop,
                         workers=2, epochs=3, subset=100, test_subset=50, batch_size=25, device="cpu")
    assert result["status"] == "stopped"
    ran = result["nets"]
    assert 1 <= len(ran) <= 3 and any(n["status"] == "stopped" for n in ran)  # queued nets never started
    assert D.load_result(result["path"])["status"] == "stopped"
    store = RunStore()
    assert all(store.get(n["run_id"]).status in ("stopped", "done") for n in ran if n["run_id"])


def test_effect_compares_shallow_and_deep_train_error():
    def net(model, err):
        return {"model": model, "depth": D.depth_of(model), "status": "done", "final_train_error": err}

    shows = {"nets": [net("plain20", .1), net("resnet20", .1), net("plain56", .2), net("resnet56", .08)]}
    eff = D.effect(shows)
    assert {k: eff[k] for k in ("shallow", "deep", "plain_degrades", "residual_ok", "shows")} == \
        {"shallow": 20, "deep": 56, "plain_degrades": True, "residual_ok": True, "shows": True}
    assert eff["plain_gap"] == pytest.approx(.1) and eff["residual_gap"] == pytest.approx(-.02)
    no = {"nets": [net("plain20", .2), net("resnet20", .1), net("plain56", .1), net("resnet56", .12)]}
    assert D.effect(no)["plain_degrades"] is False and D.effect(no)["residual_ok"] is False
    partial = {"nets": [net("plain20", .2), net("resnet20", .1), net("plain56", .3)]}
    assert D.effect(partial)["residual_ok"] is None and D.effect(partial)["shows"] is None
    # "clearly higher": a deeper plain net a hair above the shallow one is not degradation; level ResNets are fine
    hair = {"nets": [net("plain8", .50), net("resnet8", .40), net("plain32", .50 + D.PLAIN_MARGIN / 2),
                     net("resnet32", .40)]}
    eff = D.effect(hair)
    assert (eff["shallow"], eff["deep"]) == (8, 32)
    assert eff["plain_degrades"] is False and eff["residual_ok"] is True
    # the verdict lines say the same, with the numbers
    lines = D.verdict(shows)
    assert "10.0 points above plain-20" in lines[0] and "**shown**" in lines[0]
    assert "2.0 points below ResNet-20" in lines[1] and "at least as well" in lines[1]
    assert "**not shown**" in D.verdict(hair)[0] and "level with" in D.verdict(hair)[1]


def test_cli_json_last_line(tiny_data_env, runs_dir, capsys):
    from resnet_lab.cli import main

    rc = main(["degradation", "--suite", "mini", "--epochs", "1", "--batch-size", "25", "--subset", "100",
               "--test-subset", "50", "--depths", "20", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out["nets"]) == {"plain20", "resnet20"}
    for v in out["nets"].values():
        assert 0 <= v["train_error"] <= 1 and 0 <= v["test_error"] <= 1 and v["seconds"] > 0
    assert out["seconds"] > 0 and "--suite mini" in out["command"]
    # the data came from $RESNET_LAB_DATA: recorded in the result, not spelled as this machine's path
    assert "--data" not in out["command"] and str(tiny_data_env) not in out["command"]
    assert str(tiny_data_env) in D.load_result(out["path"])["data_source"]
    assert out["effect"]["plain_gap"] is None  # one depth: nothing to compare
    assert main(["degradation", "--suite", "mini", "--depths", "x"]) == 2
    with pytest.raises(SystemExit) as exit_:  # argparse's own error, exit status 2 like every bad argument
        main(["degradation", "--seed", "-1"])
    assert exit_.value.code == 2


def test_cli_command_names_repository_relative_paths(tiny_data_env, runs_dir, capsys, tmp_path):
    from resnet_lab.cli import main

    out_file = D.ASSETS_DIR.parent.parent / "test-artifacts" / "deg-cli-test.json"
    try:
        rc = main(["degradation", "--suite", "cpu", "--epochs", "1", "--batch-size", "25", "--subset", "100",
                   "--test-subset", "50", "--seed", "2", "--zero-init", "--output", str(out_file), "--json"])
        assert rc == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert "--output test-artifacts/deg-cli-test.json" in out["command"]
        assert "--seed 2 --zero-init" in out["command"] and "/work" not in out["command"]
        saved = D.load_result(out_file)
        assert saved["settings"]["seed"] == 2 and saved["settings"]["zero_init"] is True
        assert saved["settings"]["width"] == 8 and saved["settings"]["augment"] is False
        assert [n["model"] for n in saved["nets"]] == ["plain8", "resnet8", "plain32", "resnet32"]
    finally:
        out_file.unlink(missing_ok=True)


def finished_shipped_result(suite: str) -> dict:
    """assets/degradation/<suite>.json, which must ship, read and be a finished run of that suite."""
    path = D.ASSETS_DIR / f"{suite}.json"
    if not path.exists():
        pytest.fail(f"{path} is missing: produce it with the command in docs/experiments.md")
    result = D.load_result(path)
    assert result["suite"] == suite and result["status"] == "done"
    return result


def test_shipped_mini_result_is_complete_and_labelled():
    result = finished_shipped_result("mini")
    assert result["command"].startswith("python -m resnet_lab degradation --suite mini")
    assert result["device"] and result["created"] and result["seconds_total"] > 0
    assert [n["model"] for n in result["nets"]] == ["plain20", "resnet20", "plain56", "resnet56"]
    for n in result["nets"]:
        assert len(n["history"]) == result["settings"]["epochs"]
        assert n["stats"]["init"]["response_std"] and n["stats"]["trained"]["grad_norm"]


def test_shipped_cpu_result_shows_both_halves_and_names_a_portable_command():
    result = finished_shipped_result("cpu")
    assert result["command"] == ("python -m resnet_lab degradation --suite cpu --device cpu "
                                 "--output assets/degradation/cpu.json")
    assert [n["model"] for n in result["nets"]] == ["plain8", "resnet8", "plain32", "resnet32"]
    s = D.SUITES["cpu"]
    assert result["settings"]["epochs"] == s.epochs and result["settings"]["subset"] == s.subset
    assert result["settings"]["width"] == s.width and result["settings"]["augment"] is s.augment
    eff = D.effect(result)
    assert eff["plain_degrades"] is True and eff["residual_ok"] is True and eff["shows"] is True
    assert all("**shown**" in line or "at least as well" in line for line in D.verdict(result))


def test_every_shipped_result_reads_and_old_formats_keep_working():
    results = [r for r in D.list_results(root=D.ASSETS_DIR / "none-here") if r.get("shipped")]
    names = {r["path"].rsplit("/", 1)[-1] for r in results}
    assert {"cpu.json", "mini.json"} <= names
    for r in results:
        eff = D.effect(r)  # recomputed from the nets: the stored "effect" of an old file is not trusted
        assert eff["plain_gap"] is not None and eff["residual_gap"] is not None
        assert r["command"].startswith("python ") and "/work/" not in r["command"].split("--data")[0]
        assert D.fig6_series(r) and D.table(r)
