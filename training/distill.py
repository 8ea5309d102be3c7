"""The distillation stage: a trained SimpleGVR (the teacher) becomes a 1-4 step student, in
`training/train.py`.

    python training/train.py --config training/configs/demo_distill.toml --export
        student.safetensors

A `[distill]` table with `method` set turns the flow-matching loop into a distillation run;
everything else (data, condition noise, EMA, checkpoints, resume and its kill-and-resume guarantee,
DDP/FSDP, export) is the trainer's own. The student starts from `model.init` (the teacher's weights)
and is trained only at the sigmas its Euler sampler visits (`flow_sigmas(distill.steps,
distill.shift)` without the final 0), with the flow target of a straight line from the noise to
`target`:

    x_σ = (1 - σ) target + σ ε,    v* = ε - target,    loss = |v(x_σ, c_s, σ) - v*|²

so `steps` Euler steps from ε land on the target (at σ = 1, the loss is the x0 error). Methods:

- `regress_hr`: target = the HR latent (one-step regression, as DOVE; the student predicts the
  conditional mean: highest PSNR, least generated detail).
- `regress_teacher`: target = the teacher's own ODE solution from the same ε and condition
  (`teacher_steps` Euler steps at `teacher_shift`, cfg 1; Luhman & Luhman's knowledge distillation /
  reflow): the student learns the teacher's deterministic noise-to-output map, detail included, at
  1/teacher_steps of the cost.

The exported student records how to sample it (`student_recipe`: a `SamplingRecipe` - steps, shift,
no r-embedding - and `distill_method`); `simplegvr upscale` and the Sampler node use it when steps
are left at "auto".
"""

from __future__ import annotations

import torch

METHODS = ("regress_hr", "regress_teacher")
DEFAULTS = {
    "method": "",
    "teacher": "",
    "steps": 1,
    "shift": 1.0,
    "teacher_steps": 20,
    "teacher_shift": 3.0,
}
INT_RANGES = {"distill.steps": (1, 8), "distill.teacher_steps": (1, 1000)}
FLOAT_RANGES = {"distill.shift": (0.0, 100.0, True), "distill.teacher_shift": (0.0, 100.0, True)}


def check(config: dict) -> None:
    """ValueError naming the key for a distillation table that cannot run (types and ranges are
    checked with the other sections by `train.validate_config`)."""
    d = config["distill"]
    if d["method"] and d["method"] not in METHODS:
        raise ValueError(
            f"config key distill.method={d['method']!r}: expected one of {METHODS} (or '' for "
            f"flow training)"
        )
    if d["method"] == "regress_teacher" and not (d["teacher"] or config["model"]["init"]):
        raise ValueError(
            "config key distill.teacher='': expected the teacher checkpoint for distill.method="
            "'regress_teacher' (or model.init, which is then the teacher too)"
        )
    if d["method"] and not (config["model"]["init"] or config["model"]["wan"]):
        raise ValueError(
            "config key model.init='': a distillation run starts the student from the teacher's "
            "weights; set model.init to the teacher checkpoint"
        )


class StudentSchedule:
    """The sigmas a `steps`-step Euler student is evaluated at, drawn uniformly (a `TimestepSampler`
    stand-in for `train.sample_draws`)."""

    def __init__(self, steps: int, shift: float):
        from simplegvr_core.sampling import flow_sigmas

        self.sigmas = flow_sigmas(steps, shift)[:-1].double()  # [steps]: 1.0 first

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        i = torch.randint(0, len(self.sigmas), (n,), generator=generator)
        return self.sigmas[i].float()


def load_teacher(config: dict, device):
    """The frozen teacher (float32, eval) for `regress_teacher`; None for `regress_hr`."""
    from simplegvr_core import load_checkpoint

    d = config["distill"]
    if d["method"] != "regress_teacher":
        return None
    teacher = load_checkpoint(d["teacher"] or config["model"]["init"]).float().to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def teacher_solution(
    teacher,
    eps: torch.Tensor,
    c_s: torch.Tensor,
    ctx: torch.Tensor,
    s: torch.Tensor,
    steps: int,
    shift: float,
) -> torch.Tensor:
    """The teacher's Euler ODE solution from noise `eps` against the noise-augmented LR latents
    `c_s` (normalised model space, cfg 1): what `pipeline.sample` computes, batched over the
    training samples."""
    from simplegvr_core.sampling import flow_sigmas

    c = teacher.upsampler(c_s, size=tuple(eps.shape[-2:]))
    sig = flow_sigmas(steps, shift).to(eps.device)
    x = eps.float()
    for i in range(steps):
        t = sig[i].expand(x.shape[0]) * 1000.0
        x = x + (sig[i + 1] - sig[i]) * teacher.velocity(x, c, t, ctx, s).float()
    return x


def targets(
    config: dict, teacher, hr: torch.Tensor, lr: torch.Tensor, ctx: torch.Tensor, draws: list[dict]
) -> torch.Tensor:
    """What the student's straight line from ε leads to, per sample: HR, or the teacher's solution
    from the same ε, condition noise and prompt (the null prompt where the draw dropped it, as the
    student sees)."""
    if teacher is None:
        return hr
    from simplegvr_core.sampling import add_condition_noise

    d = config["distill"]
    dev = hr.device
    s = torch.cat([x["s"] for x in draws]).to(dev)
    c_s = add_condition_noise(lr, s, noise=torch.stack([x["cond_eps"] for x in draws]).to(dev))
    eps = torch.stack([x["eps"] for x in draws]).to(dev)
    drop = torch.cat([x["drop"] for x in draws]).to(dev)
    ctx = ctx * (~drop).view(-1, 1, 1).to(ctx.dtype)
    return teacher_solution(
        teacher, eps, c_s, ctx, s, int(d["teacher_steps"]), float(d["teacher_shift"])
    )


def student_recipe(config: dict):
    """(sampling recipe, extra metadata) of the exported model - how to sample it
    (`checkpoint.save_checkpoint`'s `sampling`) and `distill_method` - or None for flow training
    that fixed nothing (a teacher: the defaults). A student records its steps and shift. Either
    records what its training fixed, so "auto" samples it as trained: the condition noise when
    `train.noise_level` is one value (an Ultra Flash fine-tune: 0), and guidance 1 (one pass) when
    no prompt was ever dropped (`train.null_prompt_prob = 0`: no unconditional branch learnt)."""
    from simplegvr_core.sampling import SamplingRecipe

    d, t = config["distill"], config["train"]
    lo, hi = t["noise_level"]
    fixed = {
        "noise_level": float(lo) if lo == hi else None,
        "guidance": 1.0 if t["null_prompt_prob"] == 0 else None,
    }
    if d["method"]:
        return SamplingRecipe(steps=int(d["steps"]), shift=float(d["shift"]), **fixed), {
            "distill_method": d["method"]
        }
    if any(v is not None for v in fixed.values()):
        return SamplingRecipe(**fixed), {}
    return None
