"""Training-recipe experiments behind the ``demo`` preset (docs/benchmarks.md, "What makes
the network learn").

    .venv/bin/python scripts/recipe_search.py --data COHORT --cache CACHE_DIR [options]

It trains one abdus network (``abdus.models``, the ``demo`` preset's narrow ResNet-18 at 2 mm /
128 x 128) with abdus's losses and heat-map codec, but outside the trainer: the cohort's
preprocessed samples are held in memory as tensors and augmented per batch, which is what makes
a 10-epoch run take ~5 minutes on 2 CPU cores. The split is the product's (patients: 20% test,
then 10% validation, seed 0). After every epoch it prints the validation figures (mean landmark
radial error and the share over 20 mm, the seven measurement MAEs, view accuracy); at the end the
validation and test figures. Choices were made on the validation patients only.

Examples (the rows of the table in docs/benchmarks.md)::

    --amplitude 1                 # L2 only at amplitude 1: stays at the all-zero output
    --amplitude 100               # L2 only at amplitude 100
    --amplitude 100 --location 0.1 --adversarial 0.1 --save landmarks.pt
    --load landmarks.pt --landmark-epochs 0 --view-epochs 40 --view-lr 2e-3 --view-init landmark

The view path against the single-task network ("Why the multi-task view path trails"), from a
demo model's weights (``abdus.modelfile.load_network(...)[0].state_dict()`` saved with
``torch.save``)::

    --load demo.pt --landmark-epochs 0 --view-epochs 18 --view-lr 2e-3 --view-init landmark \
        [--view-ema 0.995]
    --load demo.pt --landmark-epochs 0 --view-epochs 12 --view-lr 2e-3 --view-init landmark \
        --view-train all [--shared-lr-scale 0.1] --refit-epochs 3 --location 0.1 --adversarial 0.1
    --joint-view 1 --location 0.1 --adversarial 0.1 --view-epochs 18 --view-lr 2e-3
    --pretrain-epochs 12 --landmark-init view --location 0.1 --adversarial 0.1 --view-epochs 12

The shared stages trained in the view stage, anchored to their stage-1 features ("Anchoring
the shared stages"), from a stage-1 model saved with ``--save``::

    --load stage1.pt --landmark-epochs 0 --view-epochs 12 --view-lr 2e-3 --view-init landmark \
        --view-train all [--keep-shared 1 --anchor-bn batch] [--head-warmup 2]
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from abdus.data.dataset import IGNORE_VIEW, UltrasoundDataset
from abdus.data.heatmaps import HeatmapCodec
from abdus.data.masking import landmark_region
from abdus.data.preprocess import PreprocessConfig
from abdus.data.splits import split_by_patient
from abdus.evaluation.evaluate import compare
from abdus.io.manifest import landmark_array, load_manifest
from abdus.losses import (
    coordinate_loss,
    discriminator_loss,
    generator_adversarial_loss,
    heatmap_l2_loss,
)
from abdus.models import build_discriminator, build_model
from abdus.taxonomy import VIEW_INDEX
from abdus.training.presets import preset_config

H = W = 128
SPACING_MM = 2.0


def load_split(data: str, cache: str, seed: int) -> dict[str, dict]:
    """train / val / test as tensors: stored (N, 2, H, W) uint8, landmarks (N, 14, 2) model px,
    views (N,), spacing (N,) mm/px, and reader B's landmarks and views."""
    manifest = load_manifest(data)
    sides = split_by_patient(manifest.records, test_fraction=0.2, val_fraction=0.1, seed=seed)
    config, codec = PreprocessConfig(SPACING_MM, (H, W)), HeatmapCodec((H, W), 3.0)
    out = {}
    for name, records in sides.items():
        ds = UltrasoundDataset(manifest, records, config=config, codec=codec, cache_dir=cache,
                               build_workers=2)  # fmt: skip
        second = [r.second_read for r in records]
        out[name] = {
            "stored": torch.from_numpy(np.stack([ds.cache.load(i) for i in range(len(ds))])),
            "landmarks": torch.from_numpy(ds.landmarks).float(),
            "views": torch.from_numpy(ds.views).long(),
            "spacing": torch.tensor([t.model_spacing_mm or math.nan for t in ds.cache.transforms]),
            "b_points": np.stack([t.to_model(landmark_array(r)) if r else np.full((14, 2), np.nan)
                                  for t, r in zip(ds.cache.transforms, second, strict=True)]),
            "b_views": np.array([IGNORE_VIEW if r is None else VIEW_INDEX[r.view] for r in second]),
        }  # fmt: skip
    return out


def augment(args, stored: torch.Tensor, points: torch.Tensor, gen: torch.Generator):
    """Batched shift / zoom / rotation / gamma / gain of (B, 2, H, W) uint8 samples and their
    (B, 14, 2) model-px landmarks. Returns image (B, 1, H, W), kept (B, 1, H, W), points."""
    x = stored.float() * torch.tensor([1 / 255.0, 1.0])[None, :, None, None]
    if not args.augment:
        return x[:, :1], x[:, 1:], points
    B = stored.shape[0]
    u = lambda lo, hi, *shape: torch.empty(B, *shape).uniform_(lo, hi, generator=gen)  # noqa: E731
    zoom, angle = u(1 - args.zoom, 1 + args.zoom), u(-args.rotation, args.rotation) * math.pi / 180
    shift = u(-args.shift, args.shift, 2) * torch.tensor([W, H])
    rotation = torch.stack([torch.stack([angle.cos(), -angle.sin()], -1),
                            torch.stack([angle.sin(), angle.cos()], -1)], -2)  # fmt: skip
    forward = rotation * zoom[:, None, None]
    centre = torch.tensor([(W - 1) / 2, (H - 1) / 2])
    points = centre + torch.einsum("bij,bkj->bki", forward, points - centre) + shift[:, None]
    unit = torch.diag(torch.tensor([2 / (W - 1), 2 / (H - 1)]))
    inverse = torch.linalg.inv(forward)
    theta = torch.cat([unit @ inverse @ torch.linalg.inv(unit),
                       -(unit @ (inverse @ shift[..., None]))], -1)  # fmt: skip
    grid = F.affine_grid(theta, [B, 2, H, W], align_corners=True)
    warped = F.grid_sample(x, grid, mode="bilinear", align_corners=True)
    gamma = torch.exp(u(math.log(0.7), math.log(1.4)))[:, None, None, None]
    gain = u(0.8, 1.2)[:, None, None, None]
    image = (warped[:, :1].clamp(0, 1) ** gamma * gain).clamp(0, 1)
    return image, warped[:, 1:], points


def spatial_cross_entropy(pred, target, mask, temperature):
    """Cross entropy between per-channel spatial softmaxes (an alternative to the amplitude):
    target = the Gaussian normalised to sum 1 (temperature 0) or softmax(temperature x target)."""
    logp = F.log_softmax((temperature or 1.0) * pred.flatten(2), -1)
    tgt = target.flatten(2)
    if temperature:
        tgt = F.softmax(temperature * tgt, -1)
    else:
        tgt = tgt / tgt.sum(-1, True).clamp_min(1e-8)
    return ((-(tgt * logp).sum(-1)) * mask).sum() / mask.sum().clamp_min(1)


def landmark_loss(args, model, disc, dopt, image, heat, mask, points):
    pred = model.forward_landmarks(image)
    if disc is not None:
        for q in disc.parameters():
            q.requires_grad_(True)
        dopt.zero_grad()
        discriminator_loss(disc, image, heat, pred, mask, args.amplitude)["loss"].backward()
        dopt.step()
        for q in disc.parameters():
            q.requires_grad_(False)
    loss = args.regression * heatmap_l2_loss(pred, heat, mask)
    if args.foreground:  # L2 with the Gaussian's core weighted (1 + foreground)
        weight = 1 + args.foreground * (heat > 0.1 * args.amplitude).float()
        per = ((pred - heat) ** 2 * weight * mask[..., None, None]).sum((1, 2, 3))
        loss = loss + (per / (mask.sum(1).clamp_min(1) * H * W)).sum() / (mask.sum(1) > 0).sum()
    if args.location:
        loss = loss + args.location * coordinate_loss(pred, points, mask)
    if args.adversarial:
        loss = loss + args.adversarial * generator_adversarial_loss(disc, image, pred, mask,
                                                                    args.amplitude)  # fmt: skip
    if args.spatial:
        loss = loss + args.spatial * spatial_cross_entropy(pred, heat, mask, args.temperature)
    return loss


def schedule(step: int, total: int, base: float, warmup: float) -> float:
    w = max(1, int(warmup * total))
    if step < w:
        return base * (step + 1) / w
    return base * 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, total - w)))


@torch.no_grad()
def predict(model, d, codec, args, landmarks: bool, views: bool):
    model.eval()
    n = len(d["stored"])
    points, pred_views = torch.full((n, 14, 2), math.nan), torch.full((n,), -1)
    for s in range(0, n, 32):
        x = d["stored"][s : s + 32].float() * torch.tensor([1 / 255.0, 1.0])[None, :, None, None]
        if landmarks:
            heat = model.forward_landmarks(x[:, :1]).float()
            region = torch.from_numpy(landmark_region(x[:, 1].numpy() >= 0.5))[:, None]
            points[s : s + 32] = codec.decode(heat, region if args.region_decode else None)[0]
        if views:
            pred_views[s : s + 32] = model.forward_view(x[:, :1] * (x[:, 1:] >= 0.5)).argmax(1)
    return points, pred_views


def figures(d, points, views, classifies):
    r = compare(points.numpy(), views.numpy(), d["landmarks"].numpy(), d["views"].numpy(),
                d["spacing"].numpy(), classifies=classifies)  # fmt: skip
    errs = np.concatenate([np.asarray(v) for v in r["landmark_errors_mm"].values()] or [[np.nan]])
    out = {"mre_mm": round(float(errs.mean()), 2), "over_20mm": round(float((errs > 20).mean()), 4),
           "mae_mm": {k: round(v, 2) for k, v in r["measurement_mae_mm"].items()}}  # fmt: skip
    if classifies:
        out["view_accuracy"] = round(float(r["view_accuracy"]), 4)
    return out


def human(d):
    both = d["b_views"] != IGNORE_VIEW
    r = compare(d["b_points"], np.where(both, d["b_views"], -1), d["landmarks"].numpy(),
                np.where(both, d["views"].numpy(), IGNORE_VIEW), d["spacing"].numpy())  # fmt: skip
    return {"view_accuracy": round(r["view_accuracy"], 4),
            "mae_mm": {k: round(v, 2) for k, v in r["measurement_mae_mm"].items()}}  # fmt: skip


def train_views(args, model, data, codec, gen):
    """The view stage (or, with view_train "all", a view pre-training of every layer)."""
    train = data["train"]
    if args.view_init == "landmark":
        model.view_stages.load_state_dict(model.landmark_stages.state_dict())
    if args.new_view_head:  # as the trainer's stage 2 starts it (a loaded run's head is trained)
        torch.manual_seed(args.seed)
        fresh = build_model(args.model, model.config).view_head
        model.view_head.load_state_dict(fresh.state_dict())
    params = model.classifier_parameters()
    shared = model.shared_parameters() if args.view_train == "all" else []
    ids = {id(q) for q in params + shared}
    for q in model.parameters():
        q.requires_grad_(id(q) in ids)
    groups = [{"params": params, "scale": 1.0}]
    groups += [{"params": shared, "scale": args.shared_lr_scale}] if shared else []
    opt = torch.optim.AdamW(groups, lr=args.view_lr, weight_decay=1e-4)
    ema = (
        torch.optim.swa_utils.AveragedModel(
            model,
            multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.view_ema),
            use_buffers=True,
        )
        if args.view_ema
        else None
    )
    # --keep-shared: the trunk's features stay near those the landmark path was trained on
    # (a frozen copy of the shared stages as it entered the stage; learning without forgetting)
    anchor = copy.deepcopy(model.shared).eval() if args.keep_shared and shared else None
    if anchor is not None and args.anchor_bn == "batch":  # batch statistics, never updated
        for module in anchor.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = 0.0
    n = len(train["stored"])
    steps = n // args.view_batch
    for epoch in range(args.view_epochs):
        model.train()
        locked = args.view_train == "paper" or epoch < args.head_warmup
        if locked:
            for module in model.shared_modules() + model.landmark_modules():
                module.eval()
        began = time.time()
        order = torch.randperm(n, generator=gen)
        for s in range(steps):
            idx = order[s * args.view_batch : (s + 1) * args.view_batch]
            image, kept, _ = augment(args, train["stored"][idx], train["landmarks"][idx], gen)
            for g in opt.param_groups:
                g["lr"] = g["scale"] * schedule(epoch * steps + s, steps * args.view_epochs,
                                                args.view_lr, args.warmup)  # fmt: skip
            masked = image * (kept >= 0.5)
            features = model.forward_shared(masked)
            logits = model.forward_view(masked, features)
            loss = F.cross_entropy(logits, train["views"][idx],
                                   label_smoothing=args.label_smoothing)  # fmt: skip
            if anchor is not None and not locked:
                anchor.train(args.anchor_bn == "batch")
                with torch.no_grad():
                    targets = anchor(masked)
                loss = loss + args.keep_shared * sum(
                    F.mse_loss(f, t) / t.var().clamp_min(1e-6)
                    for f, t in zip(features, targets, strict=True)
                )
            opt.zero_grad()
            loss.backward()
            if locked:
                for q in shared:
                    q.grad = None
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
        judged = ema.module if ema is not None else model
        accuracy = {}
        for split in ("val", "test"):
            _, views = predict(judged, data[split], codec, args, False, True)
            accuracy[split] = round(float((views == data[split]["views"]).float().mean()), 4)
        print(f"views {epoch + 1}: {time.time() - began:.0f} s, accuracy {accuracy}",
              flush=True)  # fmt: skip
    if ema is not None:
        model = ema.module

    for q in model.parameters():
        q.requires_grad_(True)
    return model


def train_landmarks(args, model, disc, data, codec, gen, epochs, lr, refit=False):
    """The landmark stage (refit: the landmark path only, the shared stages frozen)."""
    train = data["train"]
    params = (model.shared_parameters() if not refit else []) + model.landmark_parameters()
    params += model.classifier_parameters() if args.joint_view else []
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    dopt = torch.optim.Adam(disc.parameters(), 2e-4, betas=(0.5, 0.999)) if disc else None
    annotated = torch.nonzero(torch.isfinite(train["landmarks"]).all(-1).any(-1))[:, 0]
    steps = len(annotated) // args.landmark_batch
    for q in model.shared_parameters() if refit else []:
        q.requires_grad_(False)
    for epoch in range(epochs):
        model.train()
        for module in model.shared_modules() + model.classifier_modules() if refit else []:
            module.eval()  # the shared stages serve the view path as they are
        began = time.time()
        order = annotated[torch.randperm(len(annotated), generator=gen)]
        for s in range(steps):
            idx = order[s * args.landmark_batch : (s + 1) * args.landmark_batch]
            image, _, points = augment(args, train["stored"][idx], train["landmarks"][idx], gen)
            inside = torch.isfinite(points).all(-1) & (points >= -0.5).all(-1)
            inside &= (points[..., 0] <= W - 0.5) & (points[..., 1] <= H - 0.5)
            points = torch.nan_to_num(points)
            heat = codec.encode_torch(points, inside)
            for g in opt.param_groups:
                total = steps * epochs
                g["lr"] = schedule(epoch * steps + s, total, lr, args.warmup)
            loss = landmark_loss(args, model, disc, dopt, image, heat, inside.float(), points)
            if args.joint_view:
                v = torch.randint(len(train["stored"]), (args.landmark_batch,), generator=gen)
                vimage, vkept, _ = augment(args, train["stored"][v], train["landmarks"][v], gen)
                logits = model.forward_view(vimage * (vkept >= 0.5))
                loss = loss + args.joint_view * F.cross_entropy(
                    logits, train["views"][v], label_smoothing=args.label_smoothing
                )
            opt.zero_grad()
            loss.backward()
            opt.step()
        pts, vws = predict(model, data["val"], codec, args, True, bool(args.joint_view))
        val = figures(data["val"], pts, vws, bool(args.joint_view))
        print(f"landmarks {epoch + 1}: {time.time() - began:.0f} s, val {val}", flush=True)

    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--cache", required=True, help="preprocessed-sample cache folder")
    p.add_argument("--model", default="mgcn_r")
    p.add_argument("--landmark-epochs", type=int, default=10)
    p.add_argument("--view-epochs", type=int, default=0)
    p.add_argument("--landmark-batch", type=int, default=16)
    p.add_argument("--view-batch", type=int, default=32)
    p.add_argument("--landmark-lr", type=float, default=1e-3)
    p.add_argument("--view-lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=float, default=0.05, help="share of a stage's steps")
    p.add_argument("--amplitude", type=float, default=100.0)
    p.add_argument("--regression", type=float, default=1.0)
    p.add_argument("--location", type=float, default=0.0)
    p.add_argument("--adversarial", type=float, default=0.0)
    p.add_argument("--foreground", type=float, default=0.0)
    p.add_argument("--spatial", type=float, default=0.0)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--joint-view", type=float, default=0.0, help="view loss weight in stage 1")
    p.add_argument("--augment", type=int, default=1)
    p.add_argument("--rotation", type=float, default=10.0)
    p.add_argument("--zoom", type=float, default=0.1)
    p.add_argument("--shift", type=float, default=0.06)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--view-init", choices=("scratch", "landmark"), default="scratch")
    p.add_argument("--view-train", choices=("paper", "all"), default="paper")
    p.add_argument("--region-decode", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--load", default="")
    p.add_argument("--save", default="")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pretrain-epochs", type=int, default=0, help="views, every layer, first")
    p.add_argument("--pretrain-lr", type=float, default=2e-3)
    p.add_argument("--refit-epochs", type=int, default=0, help="landmark path after the views")
    p.add_argument("--refit-lr", type=float, default=5e-4)
    p.add_argument("--new-view-head", type=int, default=0, help="1: a random view head")
    p.add_argument("--shared-lr-scale", type=float, default=1.0, help="with --view-train all")
    p.add_argument("--landmark-init", choices=("scratch", "view"), default="scratch")
    p.add_argument("--view-ema", type=float, default=0.0, help="EMA decay of the view weights")
    p.add_argument(
        "--keep-shared",
        type=float,
        default=0.0,
        help="with --view-train all: weight of the trunk-feature consistency",
    )
    p.add_argument(
        "--anchor-bn",
        choices=("running", "batch"),
        default="running",
        help="the frozen copy's BatchNorm: its stage-1 statistics or the batch's",
    )
    p.add_argument(
        "--head-warmup",
        type=int,
        default=0,
        help="with --view-train all: epochs with the shared stages locked first",
    )
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    data = load_split(args.data, args.cache, args.seed)
    codec = HeatmapCodec((H, W), 6.0 / SPACING_MM, amplitude=args.amplitude)
    model = build_model(args.model, preset_config("demo").model_options)
    if args.load:
        model.load_state_dict(torch.load(args.load, weights_only=True))
    disc = build_discriminator(width=16) if args.adversarial else None
    print("reader B, val:", human(data["val"]), "test:", human(data["test"]), flush=True)
    gen = torch.Generator().manual_seed(args.seed)
    classifies = bool(getattr(model, "classify", False))

    if args.pretrain_epochs and classifies:
        pre = copy.copy(args)
        pre.view_epochs, pre.view_lr, pre.view_train, pre.view_init = (
            args.pretrain_epochs,
            args.pretrain_lr,
            "all",
            "scratch",
        )
        model = train_views(pre, model, data, codec, gen)
        if args.landmark_init == "view":
            model.landmark_stages.load_state_dict(model.view_stages.state_dict())

    if args.landmark_epochs:
        model = train_landmarks(args, model, disc, data, codec, gen, args.landmark_epochs,
                                args.landmark_lr)  # fmt: skip

    if args.view_epochs and classifies:
        model = train_views(args, model, data, codec, gen)
        if args.view_train == "all":
            pts, vws = predict(model, data["val"], codec, args, True, False)
            print(f"landmarks after the views, val {figures(data['val'], pts, vws, False)}")
    if args.refit_epochs:
        model = train_landmarks(args, model, disc, data, codec, gen, args.refit_epochs,
                                args.refit_lr, refit=True)  # fmt: skip

    for split in ("val", "test"):
        points, views = predict(model, data[split], codec, args, bool(args.landmark_epochs or
                                args.load), classifies)  # fmt: skip
        print(f"final {split}: {figures(data[split], points, views, classifies)}", flush=True)
    if args.save:
        torch.save(copy.deepcopy(model.state_dict()), args.save)


if __name__ == "__main__":
    main()
