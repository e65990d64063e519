"""refine.mode async: triggered groups leave their step, are critiqued and refined by a real background
process with the weights that sampled them, and join a later update as complete mixed groups."""

import pytest
import torch

from critique_rl.config import ConfigError, load_config
from critique_rl.refiner import BackgroundRefiner, DelayedGroup, check_async
from critique_rl.rollout.base import Completion
from critique_rl.templates import PolicyPrompts


def test_resume_with_pending_groups_reproduces_the_uninterrupted_run(cli, tmp_path):
    # Rewards are 0 on the tiny preset, so every group is triggered and leaves its step; the entropy
    # bonus makes the loss depend on every member, so a delayed group missing after the resume shows.
    args = ["refine.mode=async", "loss.entropy_coef=0.01"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    cli.train(straight, *args, "train.steps=4")
    cli.train(resumed, *args, "train.steps=2")
    state = torch.load(resumed / "checkpoints" / "step-000002" / "trainer_state.pt", weights_only=False)
    # step 2's groups were still being refined when it ended: the checkpoint holds them, complete
    assert [g.step for g in state["delayed_groups"]] == [1] * 4
    assert all(g.refined is not None and len(g.old_logp) == len(g.samples) for g in state["delayed_groups"])
    cli("train", "--resume", str(resumed), "train.steps=4")
    a, b = cli.rows(straight), cli.rows(resumed)
    assert [r["step"] for r in b] == [0, 1, 2, 3, 4]
    assert [r["refine/joined_groups"] for r in a[1:]] == [0.0, 4.0, 4.0, 4.0]     # step 1's joined none yet
    assert all(r["refine/lag"] == 1.0 for r in a[2:])
    for x, y in zip(a[1:], b[1:]):
        for key, value in x.items():
            if not key.startswith("time/") and key != "refine/background_seconds" and isinstance(value, float):
                assert y[key] == pytest.approx(value, rel=1e-6, abs=1e-7), (x["step"], key)


def _group(cfg, tokenizer, step: int) -> DelayedGroup:
    """A real all-fail group of the tiny task: two wrong attempts at its first problem."""
    from critique_rl.tasks import build_task

    task = build_task(cfg)
    problem = task.train_batch(0, 1)[0]
    prompt_ids = tokenizer(PolicyPrompts(cfg.prompts, tokenizer).solve(problem.question), add_special_tokens=False)["input_ids"]
    samples = [Completion(prompt_ids, tokenizer(text, add_special_tokens=False)["input_ids"], text, False)
               for text in ("answer: 0", "answer: 1")]
    return DelayedGroup(step, problem, samples, [0.0, 0.0])


def test_groups_past_max_lag_are_dropped_and_the_others_join_with_their_sampling_logprobs(warm_policy, tmp_path):
    from critique_rl.modeling import load_policy

    cfg = load_config("tiny", [f"model.name_or_path={warm_policy}", "refine.mode=async", "refine.late=drop",
                               "refine.max_lag=2"])
    model, tokenizer = load_policy(warm_policy, cfg.model)
    background = BackgroundRefiner(cfg, tmp_path)
    try:
        background.submit(0, model, [_group(cfg, tokenizer, 0)])
        background.submit(1, model, [_group(cfg, tokenizer, 1)])
        background.drain()
        joining, dropped, waited = background.due(3)       # lags 3 (> max_lag 2) and 2
        assert [g.step for g in joining] == [1] and [g.step for g in dropped] == [0] and waited == 0.0
        group = joining[0]
        assert len(group.refined.targets) == 2 and len(group.refined.refinements) == 2
        # the initial samples' log-probs under the weights that sampled them (here: the model's own)
        expected = load_policy_logprobs(model, tokenizer, group, cfg)
        for got, want in zip(group.old_logp, expected):
            assert torch.allclose(got[:len(want)], want, atol=1e-5)
        assert background.due(4) == ([], [], 0.0)          # each group is handed out once
    finally:
        background.close()
    assert not background.process.is_alive()


def load_policy_logprobs(model, tokenizer, group, cfg) -> list[torch.Tensor]:
    from critique_rl.refiner import score_completions

    return [lp for lp, _ in score_completions(model, [s.prompt_ids for s in group.samples],
                                              [s.completion_ids for s in group.samples], tokenizer.pad_token_id,
                                              cfg.rollout.temperature, 10 ** 6)]


def test_late_wait_waits_for_a_group_due_now(warm_policy, tmp_path):
    from critique_rl.modeling import load_policy

    cfg = load_config("tiny", [f"model.name_or_path={warm_policy}", "refine.mode=async"])     # max_lag 1, late wait
    model, tokenizer = load_policy(warm_policy, cfg.model)
    background = BackgroundRefiner(cfg, tmp_path)
    try:
        background.submit(0, model, [_group(cfg, tokenizer, 0)])
        assert background.due(0) == ([], [], 0.0)          # a group never joins the step that sampled it
        joining, dropped, waited = background.due(1)       # submitted just now: the trainer waits for it
        assert [g.step for g in joining] == [0] and not dropped and waited > 0
    finally:
        background.close()


def test_a_delayed_groups_loss_is_its_own_mixed_group_scored_against_its_sampling_logprobs(tiny_model_dir, tmp_path):
    """Step 1 trains group A and records group B's log-probs (B is all-fail: it left for the background);
    step 2 trains A' with B joined as a mixed group: B's initial samples take the PPO ratio against their
    step-1 log-probs, its refinement the shaping weight, and the advantages are B's own group's."""
    from critique_rl.trainer import Member, Trainer

    cfg = load_config("tiny", [f"model.name_or_path={tiny_model_dir}", "method=grpo", "train.learning_rate=0.05",
                               "train.warmup_steps=0", "rollout.max_completion_length=8"])
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    tok = trainer.tokenizer
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]
    prompt = ids("1+2=")
    member = lambda group, text, reward, refinement=False: Member(group, prompt, ids(text), reward, refinement)

    b_initial = [member(1, "4", 0.0), member(1, "5", 0.0)]
    [(b0_old, _), (b1_old, _)] = trainer.score(trainer.model, b_initial)    # step 1: recorded when sampled
    for m, old in zip(b_initial, (b0_old, b1_old)):
        m.old_logp = old
    trainer.optimize([member(0, "3", 1.0), member(0, "7", 0.0)])            # step 1's update moves the weights

    step2 = [member(0, "3", 1.0), member(0, "9", 0.0), *b_initial, member(1, "3", 1.0, refinement=True)]
    now = trainer.score(trainer.model, step2)                                # the weights step 2 trains
    start = len(prompt) - 1            # the first completion token's position in the shifted (T-1) tensors
    moved = (now[2][0][start:start + 1] - b0_old[start:start + 1]).abs().max()
    assert moved > 1e-3                # B's ratio is not 1: scoring it against step 2's weights would show
    metrics = trainer.optimize(step2)

    # advantages: A' = [1, 0] - 1/2; B's mixed group = [0, 0, 1] - 1/3 (one advantage over the mixed group)
    assert [m.advantage for m in step2] == pytest.approx([0.5, -0.5, -1 / 3, -1 / 3, 2 / 3])
    gamma, L = cfg.loss.gamma, cfg.rollout.max_completion_length
    total = 0.0
    for i, m in enumerate(step2):
        logp = now[i][0][start:start + len(m.completion_ids)]
        if m.is_refinement:            # -A f(p), f(p) = p / (p + gamma): no ratio, no clip
            p = logp.exp()
            total += float((-m.advantage * p / (p + gamma)).sum())
            continue
        old = logp if m.old_logp is None else m.old_logp[start:start + len(m.completion_ids)]   # on-policy: ratio 1
        ratio = (logp - old).exp()
        clipped = ratio.clamp(1 - cfg.loss.epsilon, 1 + cfg.loss.epsilon_high)
        total += float(torch.maximum(-ratio * m.advantage, -clipped * m.advantage).sum())
    # dr_grpo: the sum over the update's tokens / (its 5 sequences x max_completion_length)
    assert metrics["loss"] == pytest.approx(total / (len(step2) * L), rel=1e-4, abs=1e-6)


def test_async_refuses_what_it_cannot_run_with_a_clear_error():
    cfg = load_config("tiny", ["refine.mode=async", "rollout.engine=vllm"])
    with pytest.raises(ConfigError, match="rollout.engine is 'vllm'"):
        check_async(cfg, world_size=1)
    with pytest.raises(ConfigError, match="single trainer process; this run has 2"):
        check_async(load_config("tiny", ["refine.mode=async"]), world_size=2)
    check_async(load_config("tiny", ["refine.mode=async", "method=grpo", "rollout.engine=vllm"]), world_size=2)


def test_a_group_already_too_stale_is_not_refined_and_counts_as_dropped(warm_policy, tmp_path):
    from critique_rl.modeling import load_policy

    cfg = load_config("tiny", [f"model.name_or_path={warm_policy}", "refine.mode=async", "refine.late=drop"])
    model, tokenizer = load_policy(warm_policy, cfg.model)
    background = BackgroundRefiner(cfg, tmp_path)
    try:
        background.trainer_step.value = 5          # the trainer is at step 5 when step 0's job comes up
        background.submit(0, model, [_group(cfg, tokenizer, 0)])
        background.drain()
        joining, dropped, _ = background.due(5)
        assert joining == [] and [g.step for g in dropped] == [0] and dropped[0].refined is None
    finally:
        background.close()


def test_a_template_error_in_the_background_is_the_same_clear_error_as_in_sync_mode(warm_policy, tmp_path):
    from critique_rl.templates import TemplateError
    from critique_rl.trainer import Trainer

    bad = tmp_path / "refine.jinja"
    bad.write_text("{{ question }}\n{{ attempt }}\n{{ critque }}\n")
    for mode in ("sync", "async"):
        cfg = load_config("tiny", [f"model.name_or_path={warm_policy}", f"refine.mode={mode}", f"prompts.refine={bad}"])
        with pytest.raises(TemplateError, match=r"refine.jinja:3: template variable 'critque' is not provided") as raised:
            Trainer(cfg, tmp_path / mode, show_progress=False)
        assert ("background refiner" in "".join(getattr(raised.value, "__notes__", []))) == (mode == "async")
