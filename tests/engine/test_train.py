"""fit(): a real training run on tiny synthetic clips: logs, checkpoints, exact resume, learning."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from avssl.checkpoint import load_checkpoint
from avssl.engine.train import EpochSampler, fit, lr_factor, step_generator
from avssl.registry import load_method
from avssl.train_config import OptimConfig
from train_utils import tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synth(tiny_synth):
    return tiny_synth


def test_fit_logs_checkpoints_and_resumes_exactly(synth, tmp_path):
    straight = fit(tiny_cfg(synth, tmp_path / "a"))
    run = tmp_path / "a"
    assert straight["step"] == 4 and torch.isfinite(torch.tensor(straight["final_loss"]))
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "train/loss" in x and "time_s" not in x]
    epochs = [x for x in lines if "time_s" in x]
    assert [x["step"] for x in steps] == [1, 2, 3, 4] and len(epochs) == 2
    assert all(0 <= e["val/ciou_at_0.5"] <= 1 and "val/a2v_instance_R1" in e for e in epochs)
    assert (run / "config.yaml").is_file() and (run / "best.pt").is_file()
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["step"] == 4 and ckpt["config"]["ssltie"]["width"] == 8
    assert {"optimizer", "scheduler", "rng", "scaler"} <= set(ckpt)
    model, _ = load_method(run / "best.pt")
    assert model.config.width == 8 and not model.training
    with pytest.raises(FileExistsError):
        fit(tiny_cfg(synth, run))  # a fresh run never overwrites one

    # 1 epoch, then resume for the second: bit-identical weights and optimiser state.
    fit(tiny_cfg(synth, tmp_path / "b", "train.epochs=1"))
    resumed = fit(tiny_cfg(synth, tmp_path / "b"), resume=True)
    assert resumed["step"] == 4
    a, b = ckpt["model"], load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["final_loss"] == straight["final_loss"]


def test_train_crop_original_feeds_the_original_frames_to_the_moco_crop(synth, tmp_path):
    from avssl.augment.recipes import MoCoV2Transform
    from avssl.data.datasets import collate
    from avssl.data.manifest import read_manifest
    from avssl.methods.ssltie.pipeline import SSLTIEBatchTransform, ssltie_dataset

    cfg = tiny_cfg(synth, tmp_path, "data.train_crop=original", "data.load_size=32", "train.epochs=1")
    records = read_manifest(synth / "manifest.jsonl")[:4]
    train_ds, val_ds = ssltie_dataset(records, cfg, train=True), ssltie_dataset(records, cfg, train=False)
    assert "full" in train_ds[0] and "full" not in val_ds[0]
    batch = collate([train_ds[i] for i in range(4)])
    assert batch["full"].shape == (4, 3, 64, 64) and batch["image"].shape == (4, 3, 32, 32)
    tr = SSLTIEBatchTransform.from_config(cfg, "cpu")
    out = tr(batch, torch.Generator().manual_seed(3), train=True)["image"]
    expect = MoCoV2Transform(64, antialias=True)(batch["full"], torch.Generator().manual_seed(3),
                                                 sizes=batch["full_hw"])
    torch.testing.assert_close(out, expect)
    square = MoCoV2Transform(64)(batch["image"], torch.Generator().manual_seed(3))
    assert not torch.allclose(out, square, atol=1e-2)  # not the crop of the 32 px square
    result = fit(cfg)
    assert result["step"] == 2 and torch.isfinite(torch.tensor(result["final_loss"]))


def test_training_reduces_the_loss(synth, tmp_path):
    # No augmentation, no equivariance branch: one fixed batch of 8 clips, 12 Adam steps.
    cfg = tiny_cfg(synth, tmp_path, "train.batch_size=8", "train.epochs=12", "optim.lr=1e-3",
                   "ssltie.invariance=false", "ssltie.equivariance=false", "data.val_manifest=null",
                   "data.annotations=null")
    hist = fit(cfg)["history"]
    losses = [h["train/loss"] for h in hist]
    assert len(losses) == 12
    assert max(losses[-3:]) < 0.8 * losses[0], losses


def test_sampler_and_generators_are_functions_of_seed_and_epoch():
    s = EpochSampler(10, seed=4)
    s.set_epoch(3)
    first = list(s)
    assert sorted(first) == list(range(10)) and list(s) == first
    s.set_epoch(4)
    assert list(s) != first
    a = torch.rand(3, generator=step_generator(4, 1, 7))
    assert torch.equal(a, torch.rand(3, generator=step_generator(4, 1, 7)))
    assert not torch.equal(a, torch.rand(3, generator=step_generator(4, 1, 8)))


@pytest.mark.parametrize("n, drop_last", [(23, True), (23, False), (24, True), (5, False)])
def test_sharded_sampler_slices_of_ranks_concatenate_to_the_one_process_batches(n, drop_last):
    b, world = 3, 2
    one = list(EpochSampler(n, seed=1, batch_size=b * world, drop_last=drop_last))
    ranks = [list(EpochSampler(n, seed=1, batch_size=b, rank=r, world=world, drop_last=drop_last)) for r in range(world)]
    assert len({len(r) for r in ranks}) == 1  # equal step counts on every rank (else DDP hangs)
    steps = len(ranks[0]) // b if drop_last else -(-len(ranks[0]) // b)
    glued = [i for k in range(steps) for r in ranks for i in r[k * b:(k + 1) * b]]
    if drop_last:
        assert glued == one[: (n // (b * world)) * b * world]
    else:
        assert set(glued) == set(range(n)) and glued[: len(one) - n % (b * world)] == one[: len(one) - n % (b * world)]


def test_weighted_sampler_follows_the_weights():
    w = torch.tensor([0.0, 1.0, 3.0, 0.0])
    s = EpochSampler(4, seed=0, weights=w)
    draws = [i for e in range(200) for i in (s.set_epoch(e) or list(s))]
    counts = torch.bincount(torch.tensor(draws), minlength=4).float()
    assert counts[0] == 0 and counts[3] == 0
    assert 2.5 < counts[2] / counts[1] < 3.5
    with pytest.raises(ValueError):
        EpochSampler(4, seed=0, weights=torch.zeros(4))


def test_param_groups_scale_the_lr_and_follow_the_schedule():
    from avssl.engine.train import build_optimizer

    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = build_optimizer([{"params": [a]}, {"params": [b], "lr_scale": 50.0}], OptimConfig(lr=1e-3))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 5e-2])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([5e-4, 2.5e-2])
    del sched


def test_lr_schedules():
    multi = OptimConfig(milestones=(2, 4), gamma=0.1)
    assert lr_factor(0, 10, 6, multi) == 1.0 and lr_factor(19, 10, 6, multi) == 1.0
    assert lr_factor(20, 10, 6, multi) == pytest.approx(0.1) and lr_factor(45, 10, 6, multi) == pytest.approx(0.01)
    cos = OptimConfig(schedule="cosine", warmup_epochs=1.0, lr=1e-3, min_lr=1e-5)
    assert lr_factor(0, 10, 5, cos) == pytest.approx(0.1) and lr_factor(9, 10, 5, cos) == pytest.approx(1.0)
    assert lr_factor(10, 10, 5, cos) == pytest.approx(1.0) and lr_factor(50, 10, 5, cos) == pytest.approx(0.01)
    # EquiAV's released warm-up: 2e-7 at the first step, linearly to lr over the warm-up epochs
    rel = OptimConfig(lr=1e-4, schedule="cosine", warmup_epochs=2, warmup_start_lr=2e-7, min_lr=1e-6)
    assert lr_factor(0, 100, 20, rel) * 1e-4 == pytest.approx(2e-7)
    assert lr_factor(100, 100, 20, rel) * 1e-4 == pytest.approx(2e-7 + (1e-4 - 2e-7) / 2)
    assert lr_factor(200, 100, 20, rel) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="warmup_start_lr"):
        OptimConfig(lr=1e-4, warmup_start_lr=1e-3)


@pytest.mark.parametrize("preset,warmup", [("equiav/audioset", 2), ("equiav/vggsound", 2),
                                           ("equiav/finetune_audioset", 1), ("equiav/finetune_vggsound", 1)])
def test_equiav_presets_follow_the_released_per_step_schedule(preset, warmup):
    """EquiAV's released scheduler (pre-training and fine-tuning alike, stepped before every
    optimiser step from step 0): lr = 2e-7 + s / W * (1e-4 - 2e-7) over W = warm-up epochs x steps,
    then 1e-6 + (1e-4 - 1e-6) * (1 + cos(pi * (s - W) / (T - W))) / 2."""
    import math

    from avssl.config import load_config
    from avssl.train_config import TrainConfig

    cfg = load_config(TrainConfig, [preset], [])
    ipe, epochs = 50, cfg.train.epochs
    W, T = warmup * ipe, epochs * ipe

    def released(s: int) -> float:
        if s < W:
            return 2e-7 + s / W * (1e-4 - 2e-7)
        return max(1e-6, 1e-6 + (1e-4 - 1e-6) * 0.5 * (1 + math.cos(math.pi * (s - W) / (T - W))))

    for s in (0, 1, W // 2, W - 1, W, W + 7, T // 2, T - 1):
        assert lr_factor(s, ipe, epochs, cfg.optim) * cfg.optim.lr == pytest.approx(released(s), rel=1e-9), s


def test_evaluator_heatmaps_match_localise_and_retrieval_runs(synth):
    from torch.utils.data import DataLoader

    from avssl.data.manifest import read_manifest
    from avssl.engine.evaluate import (
        evaluate_localisation,
        localise_dataset,
        retrieval_scores,
        run_inference,
    )
    from avssl.registry import build_method, pipeline_for

    cfg = tiny_cfg(synth, synth / "unused")
    torch.manual_seed(0)
    model = build_method("ssltie", cfg.ssltie).eval()
    records = read_manifest(synth / "manifest.jsonl", split="test")
    pipe = pipeline_for("ssltie")
    ds = pipe.dataset(records, cfg, train=False)
    loader = DataLoader(ds, batch_size=3, collate_fn=pipe.collate)
    transform = pipe.batch_transform(cfg, "cpu")
    plain = localise_dataset(model, loader, transform, "cpu")  # model.localise
    out = run_inference(model, loader, transform, pipe.infer, "cpu")
    assert list(plain) == [r.id for r in records] == out.ids
    for k in plain:
        assert plain[k].shape == (4, 4)
        torch.testing.assert_close(torch.from_numpy(plain[k]), torch.from_numpy(out.heatmaps[k]))
    assert out.audio.shape == out.visual.shape == (len(records), 64)
    torch.testing.assert_close(out.visual.norm(dim=1), torch.ones(len(records)))
    ret = retrieval_scores(out)
    assert all(0 <= v <= 1 for d in ret.values() for k, v in d.items() if k != "MR")
    scores, _ = evaluate_localisation(model, records, cfg, synth / "annotations" / "vggss.json", "vggss",
                                      batch_size=2, num_workers=0)
    assert scores["n_scored"] == len(records) and scores["unannotated"] == 0


def test_grad_clip_amp_only_leaves_fp32_runs_unclipped(synth, tmp_path):
    """On CPU (no AMP) a tiny grad_clip changes training unless grad_clip_amp_only is set."""
    runs = {}
    for name, extra in (("free", ()), ("clip", ("train.grad_clip=1e-6",)),
                        ("amp_only", ("train.grad_clip=1e-6", "train.grad_clip_amp_only=true"))):
        cfg = tiny_cfg(synth, tmp_path / name, "train.epochs=1", "train.eval_every=0", *extra)
        fit(cfg)
        runs[name] = load_checkpoint(tmp_path / name / "last.pt")["model"]
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(runs["free"], runs["amp_only"]) and not same(runs["free"], runs["clip"])


def test_draw_keys_are_the_same_on_one_or_two_ranks_and_change_with_the_epoch():
    n, b = 12, 3
    one = EpochSampler(n, seed=7, batch_size=2 * b, drop_last=True, draw_keys=True)
    ranks = [EpochSampler(n, seed=7, batch_size=b, rank=r, world=2, drop_last=True, draw_keys=True) for r in range(2)]
    keys = list(one)
    assert [i for i, _ in keys] == list(EpochSampler(n, seed=7, batch_size=2 * b, drop_last=True))  # same order
    glued = [k for s in range(n // (2 * b)) for r in ranks for k in list(r)[s * b:(s + 1) * b]]
    assert glued == keys  # each clip of a global step draws the same number whatever the world size
    assert len({d for _, d in keys}) == n
    assert keys == list(EpochSampler(n, seed=7, batch_size=2 * b, drop_last=True, draw_keys=True))  # deterministic
    one.set_epoch(1)
    assert {d for _, d in one}.isdisjoint({d for _, d in keys})


def test_retrieval_scores_in_the_released_fp16_arithmetic():
    from avssl.engine.evaluate import InferenceOutput, retrieval_scores
    from avssl.eval import retrieval

    g = torch.Generator().manual_seed(0)
    base = F.normalize(torch.randn(40, 32, generator=g), dim=1)
    # near-duplicate keys: fp32 tells them apart, fp16 rounds many of them to ties
    visual = F.normalize(base[torch.arange(40) // 2] + 1e-4 * torch.randn(40, 32, generator=g), dim=1)
    audio = F.normalize(visual + 1e-4 * torch.randn(40, 32, generator=g), dim=1)
    out = InferenceOutput({}, [str(i) for i in range(40)], torch.full((40,), -1), audio, visual)
    fp32, fp16 = retrieval_scores(out), retrieval_scores(out, official_fp16=True)
    assert fp32["a2v_instance"] == retrieval.recall_at_k(retrieval.cosine_similarity(audio, visual))
    assert fp16["a2v_instance"] == retrieval.recall_at_k(retrieval.cosine_similarity(audio, visual, True))
    assert fp16["a2v_instance"] != fp32["a2v_instance"]


def test_amp_settings_pick_the_dtype_and_the_scaler():
    from avssl.precision import amp_settings
    from avssl.train_config import LoopConfig

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert amp_settings(LoopConfig(amp=True), cuda) == (True, torch.float16, True)
    assert amp_settings(LoopConfig(amp=True, amp_dtype="bfloat16"), cuda) == (True, torch.bfloat16, False)
    assert amp_settings(LoopConfig(amp=True, amp_dtype="bfloat16"), cpu)[::2] == (False, False)  # CUDA only
    assert amp_settings(LoopConfig(amp=False), cuda)[::2] == (False, False)
    with pytest.raises(ValueError, match="amp_dtype must be one of"):
        LoopConfig(amp_dtype="float8")


def test_fused_adam_steps_as_the_plain_loop():
    from avssl.engine.train import build_optimizer

    g = torch.Generator().manual_seed(0)
    for name in ("adam", "adamw"):
        params = {k: [torch.nn.Parameter(torch.randn(5, 7, generator=torch.Generator().manual_seed(1)))]
                  for k in ("plain", "fused")}
        opts = {k: build_optimizer(p, OptimConfig(name=name, lr=1e-2, fused=k == "fused")) for k, p in params.items()}
        assert opts["fused"].defaults["fused"] and not opts["plain"].defaults.get("fused")
        for _ in range(5):
            grad = torch.randn(5, 7, generator=g)
            for k in params:
                params[k][0].grad = grad.clone()
                opts[k].step()
        torch.testing.assert_close(params["fused"][0], params["plain"][0], rtol=1e-6, atol=1e-7)
        assert not torch.equal(params["plain"][0], torch.randn(5, 7, generator=torch.Generator().manual_seed(1)))


def test_channels_last_gives_the_same_loss_and_gradients(synth, tmp_path):
    from torch.utils.data import DataLoader

    from avssl.data.manifest import read_manifest
    from avssl.registry import build_method, pipeline_for

    cfg = tiny_cfg(synth, tmp_path)
    pipe = pipeline_for("ssltie")
    ds = pipe.dataset(read_manifest(synth / "manifest.jsonl", split="train"), cfg, train=True)
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=pipe.collate)))
    out = {}
    for name in ("plain", "channels_last"):
        torch.manual_seed(0)
        model = build_method("ssltie", cfg.ssltie)
        if name == "channels_last":
            model = model.to(memory_format=torch.channels_last)
            assert model.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        inputs = pipe.batch_transform(cfg, "cpu")(batch, step_generator(4, 0, 0), train=True)
        loss = pipe.train_module(model, cfg)(inputs, generator=step_generator(4, 0, 0))["loss"]
        loss.backward()
        out[name] = (loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(out["channels_last"][0], out["plain"][0], rtol=1e-4, atol=1e-6)
    assert out["plain"][1].keys() == out["channels_last"][1].keys() and out["plain"][1]
    # the convolutions sum in another order and SSL-TIE's tau = 0.03 sigmoid masks amplify that
    # rounding to a few % of a small layer's gradient; a layout error would decorrelate them
    flat = {k: torch.cat([g.flatten() for g in grads.values()]) for k, (_, grads) in out.items()}
    total = float((flat["channels_last"] - flat["plain"]).norm() / flat["plain"].norm())
    cosines = {k: float(F.cosine_similarity(out["channels_last"][1][k].flatten(), v.flatten(), dim=0))
               for k, v in out["plain"][1].items() if v.norm() > 0}
    print(f"channels_last: relative gradient difference {total:.2e}, lowest layer cosine {min(cosines.values()):.4f}")
    assert total < 0.05 and min(cosines.values()) > 0.99, (total, min(cosines, key=cosines.get))


@pytest.mark.slow
def test_compiled_training_matches_eager(synth, tmp_path):
    """train.compile=true: the same losses step by step (inductor reorders float sums, so to
    ~1e-6), and checkpoints of the plain module (no ``_orig_mod.`` prefix). Minutes on a CPU."""
    runs, losses = {}, {}
    for name, extra in (("eager", ()), ("compiled", ("train.compile=true",))):
        cfg = tiny_cfg(synth, tmp_path / name, "train.epochs=1", "train.eval_every=0", *extra)
        fit(cfg)
        runs[name] = load_checkpoint(tmp_path / name / "last.pt")["model"]
        rows = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        losses[name] = torch.tensor([r["train/loss"] for r in rows if "lr" in r])
    assert runs["eager"].keys() == runs["compiled"].keys()
    assert len(losses["eager"]) >= 2
    torch.testing.assert_close(losses["compiled"], losses["eager"], rtol=1e-5, atol=1e-6)
