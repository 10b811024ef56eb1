import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from captum_cfx import runner
from captum_cfx.runner import RunConfig, open_data, run_sharded


def _fn(calls):
    def compute(x, y, seed):
        calls.append(seed)
        g = torch.Generator().manual_seed(seed)
        return {"success": torch.ones(len(x), dtype=torch.bool), "noise": torch.rand(len(x), generator=g),
                "mean": x.flatten(1).mean(1)}

    return compute


def test_shards_are_fixed_by_size_and_resume_skips_done(tmp_path):
    cfg = RunConfig(data="mnist-test", shard_size=30, limit=100)
    calls = []
    s = run_sharded(cfg, tmp_path / "a", _fn(calls), progress=False)
    assert s["n"] == 100 and s["n_shards"] == 4 and calls == [0, 1, 2, 3]
    # a crashed shard (data written, sidecar missing) and a corrupted one are recomputed on resume
    (tmp_path / "a" / "shard_00001.json").unlink()
    (tmp_path / "a" / "shard_00002.safetensors").write_bytes(b"garbage")
    calls.clear()
    run_sharded(cfg, tmp_path / "a", _fn(calls), resume=True, progress=False)
    assert calls == [1, 2]
    # without resume, a folder with results is refused; another configuration cannot resume it
    with pytest.raises(ValueError, match="pass resume"):
        run_sharded(cfg, tmp_path / "a", _fn([]), progress=False)
    with pytest.raises(ValueError, match="cannot resume"):
        run_sharded(RunConfig(data="mnist-test", shard_size=50, limit=100), tmp_path / "a", _fn([]), resume=True,
                    progress=False)


def test_ranks_split_shards_and_give_the_same_bits(tmp_path, monkeypatch):
    cfg = RunConfig(data="mnist-test", shard_size=16, limit=64)
    run_sharded(cfg, tmp_path / "one", _fn([]), progress=False)
    # simulate two ranks one after the other (no process group needed to test the split)
    for rank in (1, 0):
        monkeypatch.setattr(runner, "rank_info", lambda r=rank: (r, 2))
        monkeypatch.setattr(runner, "_init_distributed", lambda: False)
        calls = []
        run_sharded(cfg, tmp_path / "two", _fn(calls), progress=False, resume=True)
        assert calls == [k for k in range(4) if k % 2 == rank]
    for k in range(4):
        a = (tmp_path / "one" / f"shard_{k:05d}.safetensors").read_bytes()
        assert a == (tmp_path / "two" / f"shard_{k:05d}.safetensors").read_bytes()
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert [s["shard"] for s in manifest["shards"]] == [0, 1, 2, 3]
    assert {s["rank"] for s in manifest["shards"]} == {0, 1}


def test_tensor_files_and_folders(tmp_path):
    x = np.random.RandomState(0).rand(5, 1, 28, 28).astype(np.float32)
    np.savez(tmp_path / "d.npz", images=x, labels=np.arange(5))
    xs, ys, _ = open_data(str(tmp_path / "d.npz")).get(1, 3)
    assert xs.shape == (2, 1, 28, 28) and ys.tolist() == [1, 2]
    save_file({"images": torch.from_numpy(x)}, str(tmp_path / "d.safetensors"))
    assert len(open_data(str(tmp_path / "d.safetensors"))) == 5
    torch.save({"images": torch.from_numpy(x)}, tmp_path / "d.pt")
    assert len(open_data(str(tmp_path / "d.pt"))) == 5
    # folder: one unreadable file and one of the wrong size are reported and skipped (NaN rows)
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((x[i, 0] * 255).astype(np.uint8)).save(folder / f"{i}.png")
    (folder / "3.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(folder / "4.png")
    xs, _, problems = open_data(str(folder)).get(0, 5)
    assert len(problems) == 2 and "3.png" in problems[0] and "expected 28x28" in problems[1]
    assert torch.isfinite(xs[:3]).all() and torch.isnan(xs[3:]).all()
    assert torch.allclose(xs[0, 0], torch.from_numpy(np.round(x[0, 0] * 255) / 255), atol=1 / 255)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("evil.pt", pickle.dumps(_Evil()), "cannot read"),
        ("evil.npz", pickle.dumps(_Evil()), "cannot read"),
        ("bad.npz", None, "must hold an 'images'"),
        ("x.csv", b"1,2", "must be .npz"),
    ],
)
def test_bad_data_files(tmp_path, name, content, match):
    p = tmp_path / name
    if content is None:
        np.savez(p, pixels=np.zeros(3))
    else:
        p.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        open_data(str(p))


def test_missing_data_and_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="is none of these"):
        open_data(str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="holds no images"):
        open_data(str(tmp_path))


def test_explain_over_folder_reports_unreadable_and_completes(tmp_path, capsys):
    from PIL import Image

    from captum_cfx.cli import main
    from captum_cfx.datasets import load_mnist

    x, _ = load_mnist("test")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        Image.fromarray((x[i * 100, 0].numpy() * 255).astype(np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    code = main(["explain", "--data", str(folder), "--shard-size", "4", "--max-steps", "50", "--out",
                 str(tmp_path / "out"), "--no-progress"])
    assert code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n"] == 6 and summary["n_valid"] == 5 and len(summary["problems"]) == 1
    assert "1 skipped or unreadable" in capsys.readouterr().out
    assert (tmp_path / "out" / "grid.png").stat().st_size > 1000


@pytest.mark.parametrize("kills", [2, pytest.param(5, marks=pytest.mark.slow)])
def test_kill_and_resume_two_processes_bit_identical(tmp_path, kills):
    """SIGKILL a 2-rank torchrun run at random moments; the resumed result equals an uninterrupted run. Every
    attempt starts three interpreters, so the fast suite kills twice (``benchmarks/kill_resume.py`` 5 times)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from kill_resume import main as kill_resume

    from captum_cfx.datasets import load_mnist

    x, y = load_mnist("train")  # 80 digits in a file: each of the ~10 processes would parse all of mnist-train
    np.savez(tmp_path / "digits.npz", images=x[:80].numpy(), labels=y[:80].numpy())
    r = kill_resume(["--data", str(tmp_path / "digits.npz"), "--n", "80", "--shard-size", "20", "--max-steps", "60",
                     "--kills", str(kills), "--min-delay", "1", "--max-delay", "4", "--work", str(tmp_path / "kr")])
    assert len(r["kills"]) == kills
    assert r["identical_to_uninterrupted"]
    assert not r["duplicate_shards"] and r["partial_files_left"] == []
    assert r["summary"]["n"] == 80


def test_squares_source_is_generated_on_demand_and_consistent():
    src = open_data("squares-32:2500")
    assert len(src) == 2500
    x, y, _ = src.get(998, 1003)  # crosses a generation block
    x2, y2, _ = src.get(1000, 1001)
    assert x.shape == (5, 3, 32, 32) and torch.equal(x[2], x2[0]) and torch.equal(y[2], y2[0])
    with pytest.raises(ValueError, match="squares-<size>:<n>"):
        open_data("squares-big:10")


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, (0, 1)),
        ({"RANK": "1", "WORLD_SIZE": "2"}, (1, 2)),  # torchrun, accelerate launch --multi_gpu
        ({"PMI_RANK": "2", "PMI_SIZE": "3"}, (2, 3)),  # mpirun (MPICH, Intel MPI) under accelerate launch --cpu
        ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4"}, (1, 4)),  # Open MPI
        ({"MV2_COMM_WORLD_RANK": "0", "MV2_COMM_WORLD_SIZE": "2"}, (0, 2)),  # MVAPICH
        ({"RANK": "0", "WORLD_SIZE": "2", "PMI_RANK": "1", "PMI_SIZE": "2"}, (0, 2)),  # torchrun's pair wins
    ],
)
def test_rank_info_reads_every_launcher(monkeypatch, env, expected):
    for var in [v for pair in runner._RANK_ENV for v in pair]:
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert runner.rank_info() == expected


def test_rank_info_refuses_a_rank_outside_the_world(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK must be in 0..WORLD_SIZE-1"):
        runner.rank_info()


def test_multi_machine_mpi_ranks_without_master_addr_are_refused(monkeypatch):
    for var in [v for pair in runner._RANK_ENV for v in pair] + list(runner._LOCAL_SIZE_ENV) + ["MASTER_ADDR"]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2")  # 2 of the 4 ranks on this machine
    with pytest.raises(ValueError, match="need `MASTER_ADDR`"):
        runner._init_distributed()


def test_accelerate_cpu_without_mpirun_warns_it_runs_one_rank(monkeypatch):
    for var in [v for pair in runner._RANK_ENV for v in pair]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with pytest.warns(UserWarning, match="starts one process"):
        assert runner._init_distributed() is False


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("mode", ["multi_gpu", "mpirun"])
def test_accelerate_launch_two_cpu_ranks_identical_to_one_process(tmp_path, mode):
    """`accelerate launch` with 2 CPU processes gives the same shard bytes as one process.

    ``multi_gpu``: accelerate runs torchrun's launcher (RANK/WORLD_SIZE; gloo, as there is no GPU).
    ``mpirun``: accelerate's own multi-CPU launch (PMI_* variables); needs `mpirun` on PATH (`pip install mpich`).
    """
    pytest.importorskip("accelerate")
    if mode == "mpirun" and shutil.which("mpirun") is None:
        pytest.skip("mpirun is not on PATH (pip install mpich)")
    from captum_cfx.cli import main
    from captum_cfx.datasets import load_mnist

    x, y = load_mnist("test")  # 16 digits in a tensor file: each rank would spend seconds parsing mnist-test
    np.savez(tmp_path / "digits.npz", images=x[::60][:16].numpy(), labels=y[::60][:16].numpy())
    cli = ["explain", "--data", str(tmp_path / "digits.npz"), "--shard-size", "4", "--max-steps", "10",
           "--no-progress"]
    assert main([*cli, "--out", str(tmp_path / "one")]) == 0
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    if mode == "multi_gpu":
        launch.append("--multi_gpu")
    else:
        (tmp_path / "hostfile").write_text("localhost\n")
        launch += ["--cpu", "--mpirun_hostfile", str(tmp_path / "hostfile")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([*launch, "-m", "captum_cfx.cli", *cli, "--out", str(tmp_path / "two")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert [s["rank"] for s in manifest["shards"]] == [0, 1, 0, 1]  # two ranks really ran
    for k in range(4):
        a = (tmp_path / "one" / f"shard_{k:05d}.safetensors").read_bytes()
        assert a == (tmp_path / "two" / f"shard_{k:05d}.safetensors").read_bytes()
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["flip_rate"] == json.loads(
        (tmp_path / "two" / "summary.json").read_text())["flip_rate"]


@pytest.mark.parametrize(
    ("env", "device", "expected"),
    [
        ({}, "cuda", "cuda"),  # one process: unchanged
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, "cuda", "cuda:1"),  # torchrun
        ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1"}, "cuda", "cuda:1"),  # mpirun (MPICH)
        ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, "cuda:0", "cuda:0"),  # an explicit index wins
        ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, "cpu", "cpu"),
    ],
)
def test_local_device_gives_each_local_rank_its_own_gpu(monkeypatch, env, device, expected):
    from captum_cfx.runner import local_device

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID",
                "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert local_device(device) == torch.device(expected)


def test_local_device_rejects_a_non_integer_local_rank(monkeypatch):
    from captum_cfx.runner import local_device

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "one")
    with pytest.raises(ValueError, match="local rank"):
        local_device("cuda")


def test_tensor_files_are_streamed_not_loaded_whole(tmp_path):
    """.npy, .npz (np.savez), .safetensors and .pt are read shard by shard; np.savez_compressed is read whole."""
    x = np.random.default_rng(0).random((10, 1, 28, 28), dtype=np.float32)
    y = np.arange(10) % 10
    np.savez(tmp_path / "a.npz", images=x, labels=y)
    np.savez_compressed(tmp_path / "c.npz", images=x, labels=y)
    save_file({"images": torch.from_numpy(x), "labels": torch.from_numpy(y)}, str(tmp_path / "a.safetensors"))
    torch.save({"images": torch.from_numpy(x), "labels": torch.from_numpy(y)}, tmp_path / "a.pt")
    srcs = {name: open_data(str(tmp_path / name)) for name in ("a.npz", "c.npz", "a.safetensors", "a.pt")}
    assert isinstance(srcs["a.npz"].images, np.memmap)
    assert isinstance(srcs["a.safetensors"].images, runner._SafetensorsRows)
    assert not isinstance(srcs["c.npz"].images, np.memmap)
    for src in srcs.values():
        xs, ys, problems = src.get(3, 7)
        assert torch.equal(xs, torch.from_numpy(x[3:7])) and ys.tolist() == [3, 4, 5, 6] and problems == []


def test_explain_a_folder_of_rgb_images_with_five_classes(tmp_path):
    """No MNIST shape or class count in the CLI: 3x8x8 PNGs, a 5-class model, targets over its 5 classes."""
    from PIL import Image
    from safetensors.torch import load_file

    from captum_cfx.cli import main

    folder = tmp_path / "rgb"
    folder.mkdir()
    rng = np.random.RandomState(0)
    for i in range(6):
        Image.fromarray((rng.rand(8, 8, 3) * 255).astype(np.uint8), mode="RGB").save(folder / f"{i}.png")
    out = tmp_path / "out"
    user = ["--model", "tests.factories:rgb_model", "--generator", "tests.factories:rgb_generator"]
    code = main(["explain", "--data", str(folder), "--shard-size", "3", "--max-steps", "20", "--out", str(out),
                 "--no-progress", *user])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 6 and summary["n_valid"] == 6 and summary["problems"] == []
    assert np.isnan(summary["oracle_agreement"])  # the MNIST oracle is not wired for non-MNIST data
    shards = [load_file(str(out / f"shard_{k:05d}.safetensors")) for k in range(2)]
    cf = torch.cat([s["counterfactuals"] for s in shards])
    targets = torch.cat([s["targets"] for s in shards])
    preds0 = torch.cat([s["labels"] for s in shards])
    assert cf.shape == (6, 3, 8, 8)
    assert targets.min() >= 0 and targets.max() <= 4 and len(set(targets.tolist())) > 2
    assert (preds0 == -1).all()  # a folder has no labels: targets differ from the model's own prediction
    assert main(["explain", "--data", str(folder), "--out", str(tmp_path / "o2"), "--no-progress", "--target", "5",
                 *user]) == 2
