"""Audmix (docs/methods.md §1.4): nearest-audio search, the probability/alpha schedule, the batched mixing,
the option off leaving the SSL-TIE transform untouched, and a 2-epoch fit with the hook."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from avssl.methods.ssltie.audmix import (
    AudmixState,
    audmix_on_epoch_end,
    draw_queue,
    mix_schedule,
    mix_waves,
    nearest_neighbours,
)
from avssl.methods.ssltie.pipeline import SSLTIEBatchTransform
from train_utils import tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def test_nearest_neighbours_equal_brute_force():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(57, 6, generator=g) * torch.rand(57, 1, generator=g) * 5  # not normalised
    queue = draw_queue(57, 20, seed=3, epoch=2)
    assert len(queue) == 20 and len(set(queue.tolist())) == 20
    nbr, sim = nearest_neighbours(emb, queue, chunk=8)  # several chunks
    e = torch.nn.functional.normalize(emb, dim=1)
    for i in range(57):
        best, best_j = -2.0, -1
        for j in queue.tolist():
            if j != i and float(e[i] @ e[j]) > best:
                best, best_j = float(e[i] @ e[j]), j
        assert int(nbr[i]) == best_j and float(sim[i]) == pytest.approx(best, abs=1e-5)
        assert int(nbr[i]) != i


def test_queue_is_seeded_by_seed_and_epoch():
    assert torch.equal(draw_queue(100, 10, 1, 4), draw_queue(100, 10, 1, 4))
    assert not torch.equal(draw_queue(100, 10, 1, 4), draw_queue(100, 10, 1, 5))
    assert torch.equal(draw_queue(5, 4000, 1, 0), torch.arange(5))  # queue capped at N
    with pytest.raises(ValueError):
        draw_queue(1, 10, 0, 0)


def test_schedule():
    assert mix_schedule(0) == (0.1, 0.0)
    p, a = mix_schedule(5)
    assert p == pytest.approx(0.15) and a == pytest.approx(0.05)
    assert mix_schedule(200)[0] == 1.0


def _state(k: int, n: int = 6, length: int = 10, p0: float = 0.1) -> tuple[AudmixState, list[dict]]:
    g = torch.Generator().manual_seed(1)
    data = [{"wave": torch.randn(length, generator=g)} for _ in range(n)]
    nbr = torch.tensor([(i + 1) % n for i in range(n)])
    return AudmixState(neighbour=nbr, similarity=torch.zeros(n), k=k, index={f"c{i}": i for i in range(n)},
                       dataset=data, p0=p0), data


def test_mixed_wave_is_the_convex_combination():
    state, data = _state(k=30, p0=1.0)  # p = 1: every row mixes, a = 0.3
    ids = ["c3", "c0", "c5"]
    wave = torch.stack([data[3]["wave"], data[0]["wave"], data[5]["wave"]])
    out = mix_waves(wave, ids, state, torch.Generator().manual_seed(0))
    expect = torch.stack([0.7 * data[3]["wave"] + 0.3 * data[4]["wave"], 0.7 * data[0]["wave"] + 0.3 * data[1]["wave"],
                          0.7 * data[5]["wave"] + 0.3 * data[0]["wave"]])
    torch.testing.assert_close(out, expect)
    assert state.alpha == pytest.approx(0.3)


def test_mixing_probability_and_untouched_rows():
    state, data = _state(k=20)  # p = 0.3, a = 0.2
    n = 3000
    ids = [f"c{i % 6}" for i in range(n)]
    wave = torch.stack([data[i % 6]["wave"] for i in range(n)])
    out = mix_waves(wave, ids, state, torch.Generator().manual_seed(5))
    mixed = (out != wave).any(1)
    assert abs(mixed.float().mean().item() - 0.3) < 0.03
    nb = torch.stack([data[(i + 1) % 6]["wave"] for i in range(n)])
    torch.testing.assert_close(out[mixed], 0.8 * wave[mixed] + 0.2 * nb[mixed])
    assert torch.equal(out[~mixed], wave[~mixed])
    # same generator seed, same draw
    assert torch.equal(out, mix_waves(wave, ids, state, torch.Generator().manual_seed(5)))
    with pytest.raises(KeyError, match="not in the training set"):
        mix_waves(wave[:2], ["c0", "zz"], _state(k=20, p0=1.0)[0], torch.Generator().manual_seed(0))


def _batch(n: int = 3) -> dict:
    g = torch.Generator().manual_seed(2)
    return {"id": [f"c{i}" for i in range(n)], "image": torch.randint(0, 255, (n, 3, 40, 40), generator=g,
                                                                       dtype=torch.uint8),
            "wave": torch.randn(n, 16000, generator=g), "sample_rate": 16000}


def test_option_off_changes_nothing():
    cfg = SimpleNamespace(ssltie=SimpleNamespace(audmix=False), train=SimpleNamespace(epochs=5))
    tf = SSLTIEBatchTransform(image_size=32, seconds=1.0)
    assert audmix_on_epoch_end(None, None, tf, cfg, 0, "cpu") == {} and tf.audmix is None
    a = tf(_batch(), torch.Generator().manual_seed(7), train=True)
    b = SSLTIEBatchTransform(image_size=32, seconds=1.0)(_batch(), torch.Generator().manual_seed(7), train=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # with a table, the spectrogram of a mixed clip changes
    tf.audmix, _ = _state(k=50, n=3, length=16000, p0=1.0)
    c = tf(_batch(), torch.Generator().manual_seed(7), train=True)
    assert not torch.equal(c["spec"], a["spec"])
    # evaluation batches are never mixed
    plain = SSLTIEBatchTransform(image_size=32, seconds=1.0)(_batch(), train=False)["spec"]
    assert torch.equal(tf(_batch(), train=False)["spec"], plain)


def test_fit_with_audmix_logs_the_hook(tiny_synth, tmp_path):
    from avssl.engine.train import fit

    cfg = tiny_cfg(tiny_synth, tmp_path / "run", "ssltie.audmix=true", "ssltie.audmix_queue=5")
    hist = fit(cfg)["history"]
    assert len(hist) == 2
    first, last = hist
    assert first["train/audmix_k"] == 1  # the table for the second epoch
    assert first["train/audmix_alpha"] == pytest.approx(0.01)
    assert first["train/audmix_p"] == pytest.approx(0.11)
    assert -1.0 <= first["train/audmix_nn_cos"] <= 1.0
    assert not any(k.startswith("train/audmix") for k in last)  # no epoch left to mix in
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum("train/audmix_nn_cos" in x for x in lines) == 1


def test_resumed_audmix_run_mixes_as_the_uninterrupted_one(tiny_synth, tmp_path):
    """1 epoch, then resume for the second: the resumed run rebuilds the table the uninterrupted
    run built after epoch 1, so its mixed epoch and final weights are bit-identical."""
    from avssl.checkpoint import load_checkpoint
    from avssl.engine.train import fit

    opts = ("ssltie.audmix=true", "ssltie.audmix_queue=5", "ssltie.audmix_p0=1.0")
    straight = fit(tiny_cfg(tiny_synth, tmp_path / "a", *opts))
    fit(tiny_cfg(tiny_synth, tmp_path / "b", *opts, "train.epochs=1"))
    resumed = fit(tiny_cfg(tiny_synth, tmp_path / "b", *opts), resume=True)
    assert resumed["final_loss"] == straight["final_loss"]
    a, b = (load_checkpoint(tmp_path / r / "last.pt")["model"] for r in "ab")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # without the rebuilt table the second epoch would differ: a run that never mixes
    plain = fit(tiny_cfg(tiny_synth, tmp_path / "c", "ssltie.audmix=false"))
    assert plain["final_loss"] != straight["final_loss"]


def test_hook_table_matches_a_direct_search(tiny_synth):
    """The hook's table on the real training set is the brute-force search over the evaluation
    audio embeddings (``ssltie_infer``'s ``audio``) within the seeded queue."""
    from avssl.data.datasets import collate
    from avssl.data.manifest import read_manifest
    from avssl.methods.ssltie.pipeline import ssltie_dataset, ssltie_infer
    from avssl.registry import build_method

    cfg = tiny_cfg(tiny_synth, "unused", "ssltie.audmix=true", "ssltie.audmix_queue=6", "train.epochs=5")
    ds = ssltie_dataset(read_manifest(tiny_synth / "manifest.jsonl", split="train"), cfg, train=True)
    torch.manual_seed(0)
    model = build_method("ssltie", cfg.ssltie).train()
    tf = SSLTIEBatchTransform.from_config(cfg, "cpu")
    logged = audmix_on_epoch_end(model, ds, tf, cfg, 2, "cpu")
    assert model.training  # mode restored
    state = tf.audmix
    assert state.k == 3 and logged["audmix_k"] == 3 and state.index[ds.records[1].id] == 1
    model.eval()
    emb = ssltie_infer(model, tf(collate([ds[i] for i in range(len(ds))])))["audio"]
    queue = draw_queue(len(ds), 6, cfg.train.seed, 2).tolist()
    for i in range(len(ds)):
        sims = {j: float(emb[i] @ emb[j]) for j in queue if j != i}
        assert int(state.neighbour[i]) == max(sims, key=sims.get)
    assert logged["audmix_nn_cos"] == pytest.approx(float(state.similarity.mean()))


@pytest.mark.distributed
def test_audmix_under_torchrun(tiny_synth, tmp_path):
    """2 gloo processes: every rank builds the table, rank 0's is broadcast, the run logs it."""
    import os
    import subprocess
    import sys

    m, run = tiny_synth / "manifest.jsonl", tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "avssl",
           "-q", "train", "synthetic/ssltie", f"data.train_manifest={m}", f"data.val_manifest={m}",
           f"data.annotations={tiny_synth / 'annotations' / 'vggss.json'}", "data.seconds=1", "data.num_workers=0",
           "ssltie.width=8", "ssltie.image_size=64", "ssltie.heatmap_size=4", "train.batch_size=2",
           "train.epochs=2", "train.tensorboard=false", "train.threads=1", "ssltie.audmix=true",
           "ssltie.audmix_queue=5", f"--out={run}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [x for x in lines if "time_s" in x]
    assert len(epochs) == 2 and epochs[0]["train/audmix_k"] == 1 and "train/audmix_k" not in epochs[1]
