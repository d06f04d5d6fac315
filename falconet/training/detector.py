"""A compact single-stage, anchor-free detector on a registered backbone.

Design (FCOS family, sized for 15-300 training images and a CPU):

- input: float32 RGB 0-255, NCHW, square ``input_size`` (a multiple of 32), dynamic batch. The
  backbone's mean/std are buffers inside the module, so the exported graph takes plain pixels.
- backbone stride 8/16/32 maps -> 1x1 laterals to ``width`` channels, top-down nearest-upsample
  and add, one depthwise-separable 3x3 per level (a light FPN).
- head: depthwise-separable blocks whose convolutions are shared by the three levels while each
  level keeps its own BatchNorm (as in EfficientDet), so BN folds into the convolutions on export:
  one shared block, then one block for the classification branch and one for the box branch.
  Outputs per location: class logits (C), distances left/top/right/bottom
  (``exp(scale_level * x) * stride``) and a localisation-quality logit (trained to predict the
  IoU of the location's box with its ground-truth box; the location's centreness, as FCOS does,
  is an option of :func:`detection_loss`). With ``box_bins`` > 0 (an option, not the default)
  each side is instead a softmax over ``box_bins + 1`` distances of 0, 1, ... strides whose mean
  is the distance (the distribution head of Generalized Focal Loss).
- training target assignment (:func:`assign_targets`): FCOS centre sampling for the first 30 %
  of the schedule, then task-aligned (the locations inside a box whose current prediction best
  matches it learn it); ATSS is an option.
- decoding is part of the graph and uses only constants: the location centres and strides for the
  fixed input size are buffers. ``forward`` returns ``(boxes, scores)``: boxes (B, N, 4) normalised
  x1, y1, x2, y2 clipped to [0, 1]; scores (B, N, C) = sqrt(sigmoid(cls) * sigmoid(quality)).
  No NMS in the graph: the runtime (and :func:`falconet.training.detection_trainer.predict_detector`)
  applies class-aware NMS to these outputs.
- the optional test-time mirror view (``flip_tta``, the accuracy-first ``general`` domain) is also
  in the graph: the image and its mirror image run as one batch of two, the mirror's per-location
  outputs are mapped back onto the same location grid (the grid is symmetric, left and right
  distances swap), and each location's distances and scores are the mean of the two views. One
  dense output per location, as without it, so NMS, voting and every runtime stay as they are.
  It costs a second pass. Measured after the fact on three compact raccoon detectors (40 test
  images): mAP@0.5:0.95 0.562 -> 0.586, 0.554 -> 0.552, 0.547 -> 0.577 (mean +0.017), mAP@0.5
  -0.003 to -0.008; fruit (60 images) 0.873 / 0.537 -> 0.876 / 0.548. The detectors of the
  earlier ``general`` domain (EfficientNet-Lite2 at 416 px): raccoon 0.977 / 0.568 -> 0.980 /
  0.570, fruit 0.859 / 0.515 -> 0.848 / 0.533. Later paired figures are in
  :mod:`falconet.training.domains`.

Everything is Conv2d / BatchNorm2d / ReLU / nearest Resize / Reshape / Transpose / Concat / Exp /
Sigmoid / Sqrt / Clip (the bin head: Softmax and a MatMul with a constant instead of Exp; the
mirror view: reversing Slices, a Gather per view and a MatMul with a constant), so it exports to
ONNX opset 17-20 and converts to TFLite, OpenVINO and Core ML.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from falconet.training.backbones import BACKBONES, Backbone, create_backbone

STRIDES = (8, 16, 32)
#: Distance bins per box side when a distribution head is asked for (``box_bins``; the default
#: head regresses one exponential distance). Bins trained with the distribution focal loss (Li et
#: al., Generalized Focal Loss, 2020) and GIoU weight 4 gave tighter boxes on a GPU at the CPU
#: schedule's step count (raccoon, 280 steps, four seeds: test mAP@0.5:0.95 0.545 -> 0.560), but on
#: this project's CPU (torch 2.13) the same recipe learned fruit far more slowly (138 steps, same
#: seed: mAP@0.5 0.62-0.64 against 0.83 for the default head), for reasons not yet found; see
#: benchmarks/results/detector_ab. So it stays an option until that is understood.
BOX_BINS = 16
#: Clamp for the box-regression exponent: exp(8) * 32 px is far beyond any input size.
_EXP_CLAMP = 8.0


class _SepConv(nn.Module):
    """Depthwise 3x3 + pointwise 1x1, with per-level BatchNorm after the pointwise conv."""

    def __init__(self, c_in: int, c_out: int, levels: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c_in, c_in, 3, 1, 1, groups=c_in, bias=False)
        self.pw = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bns = nn.ModuleList(nn.BatchNorm2d(c_out) for _ in range(levels))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, level: int) -> torch.Tensor:
        return self.act(self.bns[level](self.pw(self.dw(x))))


class Detector(nn.Module):
    def __init__(
        self,
        backbone_name: str,
        num_classes: int,
        input_size: int,
        pretrained: bool = True,
        width: int = 96,
        box_bins: int = 0,
        flip_tta: bool = False,
    ) -> None:
        super().__init__()
        if backbone_name not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone_name!r}; known: {', '.join(BACKBONES)}")
        if input_size % 32 or input_size < 64:
            raise ValueError(f"input_size must be a multiple of 32 and at least 64, got {input_size}")
        if box_bins and box_bins * STRIDES[-1] < input_size:
            raise ValueError(f"box_bins={box_bins} cannot reach across a {input_size} px input "
                             f"(needs at least {math.ceil(input_size / STRIDES[-1])})")
        if num_classes < 1:
            raise ValueError("num_classes must be at least 1")
        self.backbone_name = backbone_name
        self.num_classes = int(num_classes)
        self.input_size = int(input_size)
        self.width = int(width)
        self.box_bins = int(box_bins)
        self.flip_tta = bool(flip_tta)
        spec = BACKBONES[backbone_name]
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1))
        self.backbone: Backbone = create_backbone(backbone_name, pretrained=pretrained)
        levels = len(STRIDES)
        self.laterals = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, width, 1, bias=False), nn.BatchNorm2d(width))
            for c in self.backbone.feature_channels
        )
        self.smooth = nn.ModuleList(_SepConv(width, width, 1) for _ in range(levels))
        self.shared = _SepConv(width, width, levels)
        self.cls_block = _SepConv(width, width, levels)
        self.reg_block = _SepConv(width, width, levels)
        self.cls_out = nn.Conv2d(width, num_classes, 1)
        self.reg_out = nn.Conv2d(width, 4 * (self.box_bins + 1) if self.box_bins else 4, 1)
        self.quality_out = nn.Conv2d(width, 1, 1)
        if self.box_bins:  # the distance (in strides) each bin stands for
            self.register_buffer("bin_values", torch.arange(self.box_bins + 1, dtype=torch.float32).view(-1, 1),
                                 persistent=False)
        else:  # the exponential head's per-level scale
            self.scales = nn.Parameter(torch.ones(levels))
        self._init_head()

        sizes = [input_size // s for s in STRIDES]
        self.level_sizes = tuple(sizes)
        centres, strides = [], []
        for s, n in zip(STRIDES, sizes):
            coords = (torch.arange(n, dtype=torch.float32) + 0.5) * s
            yy, xx = torch.meshgrid(coords, coords, indexing="ij")
            centres.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1))
            strides.append(torch.full((n * n, 1), float(s)))
        # (N, 4) = (cx, cy, cx, cy) in pixels, and (N, 1) stride per location
        centre = torch.cat(centres)
        self.register_buffer("centres", torch.cat([centre, centre], dim=1))
        self.register_buffer("anchor_strides", torch.cat(strides))
        self.register_buffer("ltrb_sign", torch.tensor([-1.0, -1.0, 1.0, 1.0]), persistent=False)
        # seen in a mirror, a location's left and right distances trade places (a MatMul with a
        # constant: the bin head already uses one, so no new op for converters); unused, and so
        # absent from the exported graph, without the mirror view
        self.register_buffer("swap_left_right", torch.eye(4)[[2, 1, 0, 3]], persistent=False)
        self.num_anchors = int(self.centres.shape[0])

    # ------------------------------------------------------------------ construction helpers

    def _init_head(self) -> None:
        for module in [self.laterals, self.smooth, self.shared, self.cls_block, self.reg_block]:
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for conv in (self.cls_out, self.reg_out, self.quality_out):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.cls_out.bias, -math.log((1 - 0.01) / 0.01))
        # exponential head: start with boxes about 8 strides wide, the middle of what each level
        # is responsible for (the bin head starts uniform: every side at half its reach)
        if not self.box_bins:
            nn.init.constant_(self.reg_out.bias, math.log(4.0))

    def config(self) -> dict[str, Any]:
        return {
            "architecture": "falconet-fcos-v1",
            "backbone": self.backbone_name,
            "num_classes": self.num_classes,
            "input_size": self.input_size,
            "width": self.width,
            **({"box_bins": self.box_bins} if self.box_bins else {}),
            **({"flip_tta": True} if self.flip_tta else {}),
            "strides": list(STRIDES),
            "outputs": {
                "boxes": "(batch, N, 4) normalised x1, y1, x2, y2 in [0, 1]",
                "scores": "(batch, N, num_classes) per-class probability in [0, 1]",
            },
            "num_anchors": self.num_anchors,
        }

    def set_mirror_view(self, on: bool) -> None:
        """Switch the test-time mirror view on or off: it needs no weights of its own, so one trained
        detector can be scored both ways (benchmarks/detector_ab.py does, paired)."""
        self.flip_tta = bool(on)

    @classmethod
    def from_config(cls, cfg: dict[str, Any], pretrained: bool = False) -> "Detector":
        return cls(cfg["backbone"], int(cfg["num_classes"]), int(cfg["input_size"]),
                   pretrained=pretrained, width=int(cfg.get("width", 96)), box_bins=int(cfg.get("box_bins", 0)),
                   flip_tta=bool(cfg.get("flip_tta", False)))

    # ------------------------------------------------------------------ forward

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """0-255 RGB to the backbone's input scale (inside the graph, so apps feed plain pixels)."""
        return (x - self.mean) * self.inv_std

    def _levels(self, z: torch.Tensor) -> list[torch.Tensor]:
        feats = self.backbone(z)
        lat = [layer(f) for layer, f in zip(self.laterals, feats)]
        p5 = lat[2]
        p4 = lat[1] + F.interpolate(p5, scale_factor=2.0, mode="nearest")
        p3 = lat[0] + F.interpolate(p4, scale_factor=2.0, mode="nearest")
        return [self.smooth[i](p, 0) for i, p in enumerate((p3, p4, p5))]

    def forward_raw(self, x: torch.Tensor, with_bins: bool = False) -> tuple[torch.Tensor, ...]:
        """Training outputs: class logits (B, N, C), distances l,t,r,b in pixels (B, N, 4) and
        quality logits (B, N, 1); with ``with_bins``, also the distance-bin logits (B, N, 4, R+1)
        that the distribution loss needs (None for a head without bins). One view: training never
        uses the mirror view."""
        return self._head_outputs(self.normalise(x), with_bins)

    def _head_outputs(self, z: torch.Tensor, with_bins: bool = False) -> tuple[torch.Tensor, ...]:
        cls_all, reg_all, q_all, bins_all = [], [], [], []
        for level, p in enumerate(self._levels(z)):
            hw = self.level_sizes[level] ** 2
            f = self.shared(p, level)
            c = self.cls_block(f, level)
            r = self.reg_block(f, level)
            # reshape with constant sizes (-1 = batch): no Shape ops in the exported graph
            cls_all.append(self.cls_out(c).permute(0, 2, 3, 1).reshape(-1, hw, self.num_classes))
            if self.box_bins:
                # (B, hw*4, R+1): softmax over the last axis, then the expected bin (in strides)
                logits = self.reg_out(r).permute(0, 2, 3, 1).reshape(-1, hw * 4, self.box_bins + 1)
                dist = torch.matmul(torch.softmax(logits, dim=-1), self.bin_values) * float(STRIDES[level])
                reg_all.append(dist.reshape(-1, hw, 4))
                bins_all.append(logits.reshape(-1, hw, 4, self.box_bins + 1))
            else:
                reg = torch.clamp(self.reg_out(r) * self.scales[level], -_EXP_CLAMP, _EXP_CLAMP)
                reg_all.append((torch.exp(reg) * STRIDES[level]).permute(0, 2, 3, 1).reshape(-1, hw, 4))
            q_all.append(self.quality_out(r).permute(0, 2, 3, 1).reshape(-1, hw, 1))
        out = (torch.cat(cls_all, 1), torch.cat(reg_all, 1), torch.cat(q_all, 1))
        if with_bins:
            return out + (torch.cat(bins_all, 1) if bins_all else None,)
        return out

    def decode(self, ltrb: torch.Tensor) -> torch.Tensor:
        """Distances (B, N, 4) in pixels -> boxes x1, y1, x2, y2 in pixels (unclipped)."""
        return self.centres + ltrb * self.ltrb_sign

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.normalise(x)
        if self.flip_tta:
            # mirrored after the normalisation, so the image input still feeds the model's own
            # mean subtraction first (what the Core ML export checks)
            z = torch.cat([z, torch.flip(z, dims=[3])])
        cls, ltrb, quality = self._head_outputs(z)
        scores = torch.sqrt(torch.sigmoid(cls) * torch.sigmoid(quality))
        if not self.flip_tta:
            return self._boxes(ltrb), scores
        # the batch of 2B split by a reshape of constants: no shape arithmetic for converters to trace
        scores = scores.reshape(2, -1, self.num_anchors, self.num_classes)
        ltrb = ltrb.reshape(2, -1, self.num_anchors, 4)
        mirror_ltrb = torch.matmul(self._mirror_grid(ltrb[1], 4), self.swap_left_right)
        mirror_scores = self._mirror_grid(scores[1], self.num_classes)
        return self._boxes((ltrb[0] + mirror_ltrb) * 0.5), (scores[0] + mirror_scores) * 0.5

    def _boxes(self, ltrb: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.decode(ltrb) * (1.0 / self.input_size), 0.0, 1.0)

    def _mirror_grid(self, t: torch.Tensor, channels: int) -> torch.Tensor:
        """Per-location outputs (B, N, K) of a mirrored image, moved to the locations they mirror:
        each level's grid reversed along x (its centres sit symmetrically, at (i + 0.5) strides)."""
        parts, start = [], 0
        for n in self.level_sizes:
            grid = t[:, start:start + n * n].reshape(-1, n, n, channels)
            parts.append(torch.flip(grid, dims=[2]).reshape(-1, n * n, channels))
            start += n * n
        return torch.cat(parts, 1)

    # ------------------------------------------------------------------ training helpers

    def frozen_prefix(self, max_stride: int = 8) -> list[nn.Module]:
        """Backbone stage modules whose output stride is <= ``max_stride`` (in order).

        Found by probing: the stride of a stage is the stride of the last convolution inside it.
        Works for every registered backbone without knowing its layout.
        """
        stages = self.backbone.stage_modules()
        strides: dict[int, int] = {}
        hooks = []
        size = 64
        for index, stage in enumerate(stages):
            for m in stage.modules():
                if isinstance(m, nn.Conv2d):
                    def hook(_m, _inp, out, index=index):  # noqa: ANN001
                        strides[index] = size // out.shape[-1]
                    hooks.append(m.register_forward_hook(hook))
        was_training = self.backbone.training
        self.backbone.eval()
        with torch.no_grad():
            self.backbone(torch.zeros(1, 3, size, size))
        self.backbone.train(was_training)
        for h in hooks:
            h.remove()
        prefix = []
        for index, stage in enumerate(stages):
            if index not in strides or strides[index] > max_stride:
                break
            prefix.append(stage)
        return prefix


def build_detector(backbone: str, num_classes: int, input_size: int, pretrained: bool = True,
                   box_bins: int = 0, flip_tta: bool = False) -> Detector:
    """A detector for ``num_classes`` classes at a square ``input_size`` (multiple of 32).

    ``box_bins`` > 0 builds the distance-distribution head (see :data:`BOX_BINS`); it must reach
    across the input on the coarsest level (``box_bins * 32 >= input_size``). ``flip_tta`` adds
    the test-time mirror view to ``forward`` (twice the inference cost; training is unchanged).
    """
    return Detector(backbone, num_classes, input_size, pretrained=pretrained, box_bins=box_bins, flip_tta=flip_tta)


# ---------------------------------------------------------------------- losses

def box_iou_pairs(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and GIoU of paired boxes (..., 4) x1y1x2y2."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    union = area_a + area_b - inter + eps
    iou = inter / union
    elt = torch.minimum(a[..., :2], b[..., :2])
    erb = torch.maximum(a[..., 2:], b[..., 2:])
    enclose = (erb - elt).clamp(min=0).prod(-1) + eps
    return iou, iou - (enclose - union) / enclose


#: Object size (max distance from a location to a box side, in pixels) each level is responsible
#: for, as multiples of its stride. The ranges overlap, so a box near a boundary trains two levels:
#: more positives per box, which matters when there are only a few dozen boxes per tag.
_RANGE_IN_STRIDES = ((0.0, 10.0), (3.0, 10.0), (3.0, math.inf))
_CENTRE_RADIUS = 1.5


#: Target assignment methods (``detection_loss(assigner=...)``).
ASSIGNERS = ("fcos", "atss", "task")
#: ATSS: candidate locations per level for each box, and the side of the square "anchor" a
#: location stands for, in strides (Zhang et al., Bridging the Gap Between Anchor-based and
#: Anchor-free Detection, 2020: k = 9, one anchor of scale 8).
_ATSS_TOPK = 9
_ATSS_ANCHOR = 8.0
#: Task-aligned assignment: positives per box, and the exponents of the alignment score
#: class probability ** alpha * IoU ** beta (Feng et al., TOOD, 2021).
_TASK_TOPK = 16
_TASK_ALPHA = 1.0
_TASK_BETA = 6.0


def _pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box in a (..., N, 4) with every box in b (..., M, 4): (..., N, M)."""
    return box_iou_pairs(a.unsqueeze(-2), b.unsqueeze(-3))[0]


def _fcos_candidates(model: Detector, gt_boxes: torch.Tensor, ltrb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Locations near a box's centre, on the levels whose size range holds it; ties go to the
    smaller box (FCOS)."""
    b, n, m = ltrb.shape[:3]
    cx = model.centres[:, 0].view(1, n, 1)
    cy = model.centres[:, 1].view(1, n, 1)
    stride = model.anchor_strides.view(1, n, 1)
    x1, y1, x2, y2 = (gt_boxes[..., i].unsqueeze(1) for i in range(4))  # (B, 1, M)
    radius = _CENTRE_RADIUS * stride
    near_centre = ((cx - (x1 + x2) / 2).abs() < radius) & ((cy - (y1 + y2) / 2).abs() < radius)
    lo = torch.cat([torch.full((s_n * s_n,), lo_r * s) for s, s_n, (lo_r, _) in
                    zip(STRIDES, model.level_sizes, _RANGE_IN_STRIDES)]).view(1, n, 1)
    hi = torch.cat([torch.full((s_n * s_n,), hi_r * s) for s, s_n, (_, hi_r) in
                    zip(STRIDES, model.level_sizes, _RANGE_IN_STRIDES)]).view(1, n, 1)
    reach = ltrb.max(-1).values
    area = ((x2 - x1) * (y2 - y1)).expand(b, n, m)
    return near_centre & (reach >= lo) & (reach <= hi), area


def _atss_candidates(model: Detector, gt_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ATSS: on each level the k locations nearest a box's centre are candidates; those whose
    square anchor overlaps the box by more than the candidates' mean + std IoU are kept. The
    threshold adapts to each box, so small and large boxes get a similar number of positives
    without hand-set size ranges; ties go to the higher anchor IoU."""
    b, m = gt_boxes.shape[:2]
    n = model.num_anchors
    centres = model.centres[:, :2]
    half = model.anchor_strides * (_ATSS_ANCHOR / 2)
    anchors = torch.cat([centres - half, centres + half], dim=1)  # (N, 4)
    anchor_iou = _pairwise_iou(anchors.unsqueeze(0).expand(b, n, 4), gt_boxes)  # (B, N, M)
    gt_centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2  # (B, M, 2)
    distance = (centres.view(1, n, 1, 2) - gt_centre.unsqueeze(1)).pow(2).sum(-1)  # (B, N, M)
    candidate = torch.zeros((b, n, m), dtype=torch.bool, device=gt_boxes.device)
    first = 0
    for size in model.level_sizes:
        level = size * size
        nearest = distance[:, first:first + level].topk(min(_ATSS_TOPK, level), dim=1, largest=False).indices
        candidate.scatter_(1, nearest + first, True)
        first += level
    picked = torch.where(candidate, anchor_iou, torch.zeros_like(anchor_iou))
    count = candidate.sum(1).clamp(min=1)
    mean = picked.sum(1) / count
    std = ((picked - mean.unsqueeze(1)).pow(2) * candidate).sum(1).div(count).sqrt()
    ok = candidate & (anchor_iou >= (mean + std).unsqueeze(1))
    return ok, -anchor_iou


def _task_candidates(model: Detector, gt_boxes: torch.Tensor, gt_labels: torch.Tensor, inside: torch.Tensor,
                     cls: torch.Tensor, ltrb_pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Task-aligned assignment (TOOD): among the locations inside a box, the k whose current
    prediction is best aligned with it (class probability ** alpha * IoU ** beta) are positives,
    so the locations that already score and localise the box well are the ones trained, and the
    class score learns to rank by localisation; ties go to the higher predicted IoU. (Where fewer
    than k lie inside, outside ones fill the top k; the caller keeps only locations inside.)"""
    b, n, m = inside.shape
    pred_iou = _pairwise_iou(model.decode(ltrb_pred.detach()), gt_boxes).clamp(min=0)  # (B, N, M)
    prob = torch.sigmoid(cls.detach())  # (B, N, C)
    index = gt_labels.clamp(min=0).unsqueeze(1).expand(b, n, m)
    class_prob = prob.gather(2, index)  # (B, N, M)
    align = class_prob.pow(_TASK_ALPHA) * pred_iou.pow(_TASK_BETA)
    align = torch.where(inside, align, torch.full_like(align, -1.0))
    k = min(_TASK_TOPK, n)
    top = align.topk(k, dim=1).indices  # (B, k, M)
    chosen = torch.zeros((b, n, m), dtype=torch.bool, device=gt_boxes.device).scatter_(1, top, True)
    return chosen, -pred_iou


@torch.no_grad()
def assign_targets(
    model: Detector, gt_boxes: torch.Tensor, gt_labels: torch.Tensor, method: str = "fcos",
    cls: torch.Tensor | None = None, ltrb_pred: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which ground-truth box each location learns, by ``method`` (:data:`ASSIGNERS`): FCOS
    centre sampling with overlapping size ranges, ATSS, or task-aligned (which needs the current
    class logits ``cls`` and distances ``ltrb_pred``). Only locations inside a box can learn it.

    gt_boxes (B, M, 4) in pixels, gt_labels (B, M) with -1 for padding.
    Returns matched ground-truth index per location (B, N), -1 for background, and the
    foreground mask (B, N).
    """
    if method not in ASSIGNERS:
        raise ValueError(f"assigner must be one of {', '.join(ASSIGNERS)}, got {method!r}")
    b, m = gt_labels.shape
    n = model.num_anchors
    if m == 0:
        return torch.full((b, n), -1, dtype=torch.long), torch.zeros((b, n), dtype=torch.bool)
    cx = model.centres[:, 0].view(1, n, 1)
    cy = model.centres[:, 1].view(1, n, 1)
    x1, y1, x2, y2 = (gt_boxes[..., i].unsqueeze(1) for i in range(4))  # (B, 1, M)
    ltrb = torch.stack([cx - x1, cy - y1, x2 - cx, y2 - cy], -1)  # (B, N, M, 4)
    inside = ltrb.min(-1).values > 0
    if method == "fcos":
        ok, cost = _fcos_candidates(model, gt_boxes, ltrb)
    elif method == "atss":
        ok, cost = _atss_candidates(model, gt_boxes)
    else:
        if cls is None or ltrb_pred is None:
            raise ValueError("task-aligned assignment needs the class logits and distances")
        ok, cost = _task_candidates(model, gt_boxes, gt_labels, inside, cls, ltrb_pred)
    ok = ok & inside & (gt_labels >= 0).unsqueeze(1)
    cost = torch.where(ok, cost, torch.full_like(cost, math.inf))
    best_cost, best = cost.min(-1)
    fg = torch.isfinite(best_cost)
    match = torch.where(fg, best, torch.full_like(best, -1))
    # a box that no location claimed (very small or thin): give it the nearest location centre
    # among those inside it, or the nearest overall on the finest level
    claimed = (match.unsqueeze(-1) == torch.arange(m).view(1, 1, m)).any(1)  # (B, M)
    gcx, gcy = (x1 + x2) / 2, (y1 + y2) / 2
    for bi in range(b):
        for gi in range(m):
            if gt_labels[bi, gi] < 0 or claimed[bi, gi]:
                continue
            d = (cx[0, :, 0] - gcx[bi, 0, gi]) ** 2 + (cy[0, :, 0] - gcy[bi, 0, gi]) ** 2
            d = d + torch.where(inside[bi, :, gi], 0.0, 1e6)
            j = int(d.argmin())
            match[bi, j] = gi
            fg[bi, j] = True
    return match, fg


def detection_loss(
    model: Detector,
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    box_weight: float = 2.0,
    quality_target: str = "iou",
    centre_weighted: bool = False,
    dfl_weight: float = 1.0,
    assigner: str = "task",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Sigmoid focal loss (classes), GIoU (boxes), BCE of the quality branch to each positive's
    predicted box's IoU (``quality_target="centreness"``: to its centreness instead) and, for a
    head with distance bins (``outputs`` from ``forward_raw(..., with_bins=True)``), the
    distribution focal loss: cross-entropy of each side's bins to the two bins around the true
    distance, weighted by nearness, summed over the four sides.

    Weights measured on raccoon on a GPU, 280 steps (the advanced 10-minute schedule), test
    mAP@0.5:0.95, same seeds: GIoU weight 2 without bins 0.553, with bins 0.557, bins and weight 4
    0.571 (seeds 0-2); with bins, 3, 5 and 6 did worse than 4; without bins (the default head) 4
    did worse than 2 (0.516 vs 0.555, one seed), so 2 is the default.

    The quality target: until 2026-11-27 the option was shadowed by the quality tensor, so every
    run above and every benchmark row learned centreness whatever was asked. On the 2-core CPU,
    seeds 0-1 (raccoon 280 steps, fruit 275), IoU against centreness gave mean test mAP@0.5
    0.954 vs 0.962 and 0.879 vs 0.866, mAP@0.5:0.95 0.547 vs 0.552 and 0.543 vs 0.537: no
    consistent gain with FCOS assignment. A joint class-IoU score (quality focal loss, no quality
    branch; commit 2648f50; seed 0) gave 0.977/0.541 and 0.878/0.538, not kept.

    The assignment (``assigner``, see :func:`assign_targets`; the trainer uses FCOS for the first
    part of the schedule, ``assign_warmup``). On a GPU at the CPU schedule's step count (test
    mAP@0.5 / mAP@0.5:0.95, means over seeds; benchmarks/results/detector_ab): FCOS with
    centreness raccoon 0.968 / 0.546 (5 seeds), fruit 0.864 / 0.523 (4); task-aligned with the IoU
    quality, top 10: 0.953 / 0.570 and 0.853 / 0.523; top 16: 0.955 / 0.571 (3) and 0.854 / 0.533
    (4); task-aligned with centreness, ATSS, and probability exponent 0.5 did no better. Tighter
    boxes, at a price in mAP@0.5 that the CPU showed larger on fruit (0.836 / 0.518 against
    0.873 / 0.537, one run each) until the first 30 % of the schedule assigned as FCOS does, as
    TOOD does while the predictions are still poor: fruit 0.873 / 0.543, raccoon 0.964 / 0.581
    (against 0.972 / 0.562 before, and 0.961 / 0.596 without the warm-up; two later raccoon runs
    of this recipe gave 0.944 / 0.556 and 0.975 / 0.579).
    """
    if quality_target not in ("centreness", "iou"):
        raise ValueError(f"quality_target must be 'centreness' or 'iou', got {quality_target!r}")
    cls, ltrb, q_logit = outputs[:3]
    bins = outputs[3] if len(outputs) > 3 else None
    # without positives the box terms are zeros that still reach every output (a graph for backward)
    loss_box = loss_dfl = ltrb.sum() * 0.0
    loss_q = q_logit.sum() * 0.0
    mean_iou = 0.0
    match, fg = assign_targets(model, gt_boxes, gt_labels, assigner, cls, ltrb)
    num_pos = max(1.0, float(fg.sum()))
    target = torch.zeros_like(cls)
    if fg.any():
        bi, ai = fg.nonzero(as_tuple=True)
        target[bi, ai, gt_labels[bi, match[bi, ai]]] = 1.0
    p = torch.sigmoid(cls)
    ce = F.binary_cross_entropy_with_logits(cls, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = 0.25 * target + 0.75 * (1 - target)
    loss_cls = (alpha_t * ce * (1 - p_t) ** 2).sum() / num_pos
    if fg.any():
        pred = model.decode(ltrb)[bi, ai]
        gt = gt_boxes[bi, match[bi, ai]]
        iou, giou = box_iou_pairs(pred, gt)
        cx, cy = model.centres[ai, 0], model.centres[ai, 1]
        l, t, r, b = cx - gt[:, 0], cy - gt[:, 1], gt[:, 2] - cx, gt[:, 3] - cy
        centreness = torch.sqrt((torch.minimum(l, r) / torch.maximum(l, r).clamp(min=1e-6)).clamp(0, 1)
                                * (torch.minimum(t, b) / torch.maximum(t, b).clamp(min=1e-6)).clamp(0, 1))
        if centre_weighted:
            loss_box = ((1 - giou) * centreness).sum() / centreness.sum().clamp(min=1e-6)
        else:
            loss_box = (1 - giou).mean()
        if bins is not None:
            # true distances in strides, between bin `below` and the next one
            target_d = torch.stack([l, t, r, b], -1) / model.anchor_strides[ai]
            target_d = target_d.clamp(0, model.box_bins - 0.01)
            below = target_d.floor().long()
            w_above = target_d - below.float()
            log_p = torch.log_softmax(bins[bi, ai], -1)  # (P, 4, R+1)
            nll = -(log_p.gather(-1, below.unsqueeze(-1)).squeeze(-1) * (1 - w_above)
                    + log_p.gather(-1, (below + 1).unsqueeze(-1)).squeeze(-1) * w_above)
            loss_dfl = nll.sum(-1).mean()
        q_target = iou.detach().clamp(0, 1) if quality_target == "iou" else centreness
        loss_q = F.binary_cross_entropy_with_logits(q_logit[bi, ai, 0], q_target)
        mean_iou = float(iou.detach().mean())
    total = loss_cls + box_weight * loss_box + loss_q + dfl_weight * loss_dfl
    return total, {"cls": float(loss_cls.detach()), "box": float(loss_box.detach()), "quality": float(loss_q.detach()),
                   "dfl": float(loss_dfl.detach()), "iou": mean_iou, "positives": num_pos}
