"""A network from a file a student wrote (resnet_lab.models.files): every broken file says what is wrong, a
student-style file runs end to end from the CLI (rf, lr-find, train, check), a run keeps its own copy of the source,
and the double-softmax lesson is checked against torch itself."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from resnet_lab import assignment, models
from resnet_lab.cli import main
from resnet_lab.models import files
from resnet_lab.receptive_field import receptive_fields
from resnet_lab.runs import RunStore
from resnet_lab.training import TrainConfig

NETS = Path(__file__).resolve().parent / "data" / "student_nets"
STUDENT = f"{NETS / 'functional_style.py'}:Net"      # the assignment net, written by hand (log_softmax at the end)
SOFTMAX = f"{NETS / 'small_softmax.py'}:TinyNet"     # ends in softmax
LOGITS = f"{NETS / 'small_softmax.py'}:TinyLogits"   # the same, returning scores
TINY = ["--epochs", "1", "--batch-size", "50", "--pipeline", "torch", "--subset", "200", "--test-subset", "100"]

pytestmark = pytest.mark.usefixtures("one_thread")


def last_json(text: str):
    return json.loads(text.strip().splitlines()[-1])


@pytest.mark.parametrize("spec,words", [
    ("broken_syntax.py:Net", ["syntax error on line 7", "was never closed", "nn.Linear(3 * 32 * 32, 10"]),
    ("not_a_module.py:Net", ["not a torch.nn.Module subclass", "class Net(nn.Module)"]),
    ("needs_args.py:Net", ["constructor needs width", "--model-option width=VALUE"]),
    ("bad_forward.py:Net", ["forward fails on a batch of 32×32", "line 16", "cannot be multiplied"]),
    ("wrong_output.py:Net", ["returns shape (2, 512)", "must be (2, 10)"]),
    ("import_error.py:Net", ["running the file failed on line 2", "No module named 'torchsummary'"]),
    ("functional_style.py:Nope", ["no class Nope", "its networks are: ResBlock, Net"]),
    ("missing.py:Net", ["does not exist"]),
])
def test_every_broken_file_says_what_is_wrong(spec, words):
    problem = models.model_problem(str(NETS / spec))
    assert problem is not None
    for word in words:
        assert word in problem, (word, problem)
    with pytest.raises(models.ModelFileError):
        models.build(str(NETS / spec))


def test_a_student_style_network_builds_and_its_receptive_fields_match_custom_resnet():
    """F.relu, residual adds in forward, an nn.Sequential helper, no num_classes, a bias-less FC, log_softmax: it
    builds, and where its layers are the lab's custom_resnet's (every conv, pool and add) the RF table is the same."""
    model = models.build(STUDENT)
    assert model.output_kind == "log_probs" and model.registry_name == STUDENT
    assert models.count_params(model) == models.param_count("custom_resnet") - 10  # the FC has no bias
    mine, lab = receptive_fields(model, 32), receptive_fields("custom_resnet", 32)

    def geometry(table):
        return [(r.op, r.kernel, r.out_size, r.channels, r.jump, r.rf_max, r.rf_min) for r in table.layers
                if r.op in ("conv", "pool", "add")]

    assert geometry(mine) == geometry(lab)
    assert len(geometry(mine)) == 14  # 8 convs, 4 pools, 2 adds


def test_options_reach_the_constructor_and_num_classes_is_passed_when_taken():
    net = models.build(f"{NETS / 'needs_args.py'}:Net", width=8, depth=3)
    assert net.body[0].out_channels == 8 and len([m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]) == 3
    assert models.build(LOGITS, num_classes=7).head.out_features == 7  # TinyNet(num_classes=...) gets it
    assert "takes no argument colour" in models.model_problem(LOGITS, options={"colour": 1})
    assert files.parse_option("8") == 8 and files.parse_option("A") == "A" and files.parse_option("True") is True


def test_output_kinds_and_the_double_softmax_lesson_agree_with_torch():
    """What OUTPUT_NOTES teach, computed: log_softmax is idempotent, so cross-entropy on log-probabilities is NLL
    loss with the same gradients; cross-entropy on probabilities (softmax twice) has far smaller gradients."""
    z = torch.randn(64, 10, generator=torch.Generator().manual_seed(0)) * 3
    y = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(1))
    assert files.output_kind(z) == "logits"
    assert files.output_kind(F.log_softmax(z, 1)) == "log_probs" and files.output_kind(F.softmax(z, 1)) == "probs"

    def grad(transform, loss=F.cross_entropy):
        x = z.clone().requires_grad_(True)
        loss(transform(x), y).backward()
        return x.grad

    plain = grad(lambda x: x)
    assert torch.allclose(grad(lambda x: F.log_softmax(x, 1)), plain, atol=1e-6)
    assert torch.allclose(grad(lambda x: F.log_softmax(x, 1), F.nll_loss), plain, atol=1e-6)
    twice = grad(lambda x: F.softmax(x, 1))
    assert twice.norm() < 0.5 * plain.norm()  # the gradients shrink
    fixed = grad(lambda x: files.to_scores(F.softmax(x, 1), "probs"))  # the nll option: NLL of log(probs)
    assert torch.allclose(fixed, plain, atol=1e-5)
    assert "idempotent" in files.OUTPUT_NOTES["log_probs"] and "softmax twice" in files.OUTPUT_NOTES["probs"]


def test_nll_loss_is_offered_for_probabilities_and_refused_for_scores():
    assert TrainConfig(model=SOFTMAX, loss="nll").validate() == {}
    assert "logits" in TrainConfig(model=LOGITS, loss="nll").validate()["loss"]
    assert "logits" in TrainConfig(model="resnet20", loss="nll").validate()["loss"]
    assert "syntax error" in TrainConfig(model=f"{NETS / 'broken_syntax.py'}:Net").validate()["model"]


def test_a_student_file_end_to_end_from_the_cli(tiny_data_env, runs_dir, tmp_path, capsys):
    """rf, lr-find, train and check on a copy of the file; the run keeps the source, so it still loads after the
    file is changed, and a changed stored copy is refused."""
    net = tmp_path / "my_net.py"
    shutil.copy(NETS / "small_softmax.py", net)
    spec = f"{net}:TinyNet"
    assert main(["models", "--summary", spec]) == 0
    assert "TinyNet" in capsys.readouterr().out
    assert main(["rf", "--model", spec, "--json"]) == 0
    rf = last_json(capsys.readouterr().out)
    assert any(row["op"] == "conv" for row in rf)
    assert main(["lr-find", "--model", spec, "--iters", "8", "--subset", "100", "--batch-size", "20",
                 "--device", "cpu", "--json"]) == 0
    sweep = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(sweep)["config"]["model"] == spec
    (tmp_path / "sweep.json").write_text(sweep)
    assert main(["train", "--model", spec, *TINY, "--json"]) == 0
    captured = capsys.readouterr()
    assert "softmax twice" in captured.out + captured.err  # the note, before training starts
    run = RunStore().get(last_json(captured.out)["run_id"])
    record = run.config["model_file"]
    assert record["class"] == "TinyNet" and record["output_kind"] == "probs" and record["read_from"] == str(net)
    assert (run.path / "model_source.py").read_text() == net.read_text()
    probs = run.predictions()["probs"]
    assert abs(probs.sum(1) - 1).max() < 1e-4  # the network's own probabilities, not a softmax of them

    net.write_text("raise SystemExit('the file changed')\n")  # the student edits the file afterwards
    assert isinstance(run.load_model(), torch.nn.Module)
    assert main(["check", "--run", run.id, "--json"]) == 0
    checked = last_json(capsys.readouterr().out)
    by = {i["requirement"]: i for i in checked["items"]}
    assert by["returns scores for cross-entropy"]["status"] == "fail"
    assert by["24 epochs"]["status"] == "fail" and by["24 epochs"]["measured"] == "1"
    assert checked["failed"] >= 1 and checked["model"] == spec

    report = tmp_path / "report"
    assert main(["report", "--run", run.id, "--out", str(report), "--lr-test", str(tmp_path / "sweep.json"),
                 "--json"]) == 0
    readme = (report / "README.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert {"curves.png", "schedule.png", "confusion.png", "misclassified.png", "gradcam.png",
            "lr_test.png"} <= set(pictures)
    assert all((report / p).read_bytes()[:4] == b"\x89PNG" for p in pictures)
    for section in ("## The assignment, checked", "## Model summary (torchinfo)", "## Receptive field per layer",
                    "## One-cycle schedule", "## Training log", "## Confusion matrix", "## Misclassified images"):
        assert section in readme
    assert "| epoch | train loss |" in readme and "my_net.py:TinyNet — assignment report" in readme

    (run.path / "model_source.py").write_text("# tampered\n")
    with pytest.raises(Exception, match="changed after training"):
        run.load_model()


def test_train_with_nll_and_constructor_options(tiny_data_env, runs_dir, capsys):
    assert main(["train", "--model", SOFTMAX, "--loss", "nll", *TINY, "--json"]) == 0
    captured = capsys.readouterr()
    assert "softmax twice" not in captured.out + captured.err  # nll on a softmax net: nothing to warn about
    assert main(["train", "--model", f"{NETS / 'needs_args.py'}:Net", "--model-option", "width=4", *TINY,
                 "--json"]) == 0
    run = RunStore().get(last_json(capsys.readouterr().out)["run_id"])
    assert run.load_model().body[0].out_channels == 4
    assert main(["train", "--model", f"{NETS / 'needs_args.py'}:Net", *TINY]) == 2
    assert "--model-option width=VALUE" in capsys.readouterr().err


def test_check_a_network_alone():
    items = assignment.check_network(models.build(STUDENT))
    failed = [i.requirement for i in items if i.status == "fail"]
    assert not failed, failed
    assert {i.status for i in items} == {"pass", "info"}
    plain = assignment.check_network(models.build(LOGITS))
    assert {i.requirement for i in plain if i.status == "fail"} >= {"two residual adds in all",
                                                                    "MaxPool with kernel 4 → 1×1"}
    assert main(["check", "--model", f"{NETS / 'bad_forward.py'}:Net"]) == 2


def test_a_forward_fx_cannot_trace_is_unknown_to_the_check_and_still_trains(tiny_data_env, runs_dir, capsys):
    """Where the graph cannot be read (a data-dependent branch in forward) the architecture is *unknown*, never
    passed or failed, the reason is said, and the network still builds, trains and reports."""
    spec = f"{NETS / 'untraceable.py'}:Net"
    items = assignment.check_network(models.build(spec))
    unknown = [i for i in items if i.status == "unknown"]
    assert len(unknown) == 9 and "cannot trace" in unknown[0].note
    assert {i.requirement for i in items if i.status == "pass"} == {"FC to 10 classes",
                                                                    "returns scores for cross-entropy"}
    assert main(["rf", "--model", spec]) == 2 and "cannot trace" in capsys.readouterr().err
    assert main(["train", "--model", spec, *TINY, "--json"]) == 0
    assert main(["report", "--run", last_json(capsys.readouterr().out)["run_id"], "--out",
                 str(runs_dir / "report")]) == 0
    readme = (runs_dir / "report" / "README.md").read_text()
    assert "The receptive fields cannot be computed for this network" in readme

