"""Exact LoRA fusing (nodes/diffusion/lora_fuse.py) on the tiny random-weight SD 1.5 model."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from graph_runtime.tasks import TaskStatus
from nodes.diffusion.model_value import LoraUse
from nodes.diffusion.parts import apply_parts, resolve_parts
from nodes.diffusion.requests import GenerationRequest
from stores.home import TakeflowHome
from tests.nodes import test_lora
from tests.nodes.conftest import service_for
from tests.nodes.test_diffusion import run
from tests.nodes.test_lora import _gen, _graph

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning",
)
A = (LoraUse("style/a.safetensors", 0.8, 0.6),)
B = (LoraUse("b.safetensors", 1.0, 1.0), LoraUse("style/a.safetensors", 0.3, 0.0))
ZERO = (LoraUse("style/a.safetensors", 0.0, 0.0),)
kohya_files = test_lora.kohya_files  # the fixtures of tests/nodes/test_lora.py
lora_home = test_lora.lora_home


def _weights(pipe: Any) -> dict[str, Any]:
    return {f"{name}.{key}": value.detach().clone()
            for name in ("unet", "text_encoder")
            for key, value in getattr(pipe, name).state_dict().items()}  # fmt: skip


def _same(before: dict[str, Any], after: dict[str, Any]) -> bool:
    import torch

    return before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def _wrapped(pipe: Any) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(isinstance(m, BaseTunerLayer) for c in ("unet", "text_encoder")
               for m in getattr(pipe, c).modules())  # fmt: skip


def test_fuse_then_restore_is_bit_exact(lora_home: TakeflowHome) -> None:
    service = service_for(lora_home, lora_fuse="never")
    try:
        _gen(service, loras=B)  # both adapters loaded, peft path
        entry = service.cache.loaded()[0]
        assert entry.parts.fuse.stack is None and _wrapped(entry.pipe) > 0
        before = _weights(entry.pipe)

        def apply(loras: tuple[LoraUse, ...], mode: str) -> None:
            request = GenerationRequest(prompt="", loras=loras)
            parts = resolve_parts(service.models.folders, request)[0]
            with entry.lock:
                apply_parts(entry, entry.pipeline_for("text_to_image", "euler"), [parts], mode)

        apply(A, "always")
        state = entry.parts.fuse
        assert state.fused and _wrapped(entry.pipe) == 0  # peft's wrappers are out
        fused = _weights(entry.pipe)
        import torch

        patched = {k: k.removesuffix("weight") + "base_layer.weight" for k in fused}
        patched = {k: b for k, b in patched.items() if b in before}
        assert len(patched) > 10  # each patched layer's weight now holds W + s * B @ A
        assert all(not torch.equal(fused[k], before[b]) for k, b in patched.items())
        assert all(torch.equal(fused[k], before[k]) for k in fused if k in before)
        assert state.saved_bytes() > 0
        for loras in (B, A, ZERO, (), A):  # switching between fused stacks
            apply(loras, "always")
        apply(A, "never")  # back to the peft path: the original weights copied back
        assert state.stack is None and state.restores >= 4
        assert _same(before, _weights(entry.pipe))
        apply((), "always")  # no LoRA: wrappers out, weights untouched
        assert _wrapped(entry.pipe) == 0 and state.saved_bytes() == 0
        apply(B, "never")
        assert _same(before, _weights(entry.pipe))
    finally:
        service.close()


def test_fused_pixels_strength_zero_reproducibility_and_switching(
    lora_home: TakeflowHome, kohya_files: dict[str, Path], tiny_model_dir: Path
) -> None:
    from nodes.diffusion.demo_lora import random_kohya_lora, save_lora
    from tests.nodes.test_lora import _fresh

    # A LoRA of a trained one's magnitude (the random a and b outweigh the base weights).
    mild_lora = random_kohya_lora(_fresh(tiny_model_dir), seed=9, rank=16, scale=0.1)
    save_lora(mild_lora, kohya_files["root"] / "mild.safetensors")
    mild = (LoraUse("mild.safetensors", 1.0, 1.0),)
    fused = service_for(lora_home, lora_fuse="always")
    peft = service_for(lora_home, lora_fuse="never")
    try:
        none = _gen(fused)
        a1 = _gen(fused, loras=A)
        zero = _gen(fused, loras=ZERO)
        b1 = _gen(fused, loras=B)
        a2 = _gen(fused, loras=A)  # A -> B -> A
        a3 = _gen(fused, loras=A)  # the same stack again (stays fused)
        b2 = _gen(fused, loras=B)
        none2 = _gen(fused)
        mild_fused = _gen(fused, loras=mild)
        entry = fused.cache.loaded()[0]
        assert entry.parts.fuse.fuses >= 4 and fused.cache.loads == 1
        unfused_a = _gen(peft, loras=A)
        unfused_b = _gen(peft, loras=B)
        unfused_zero = _gen(peft, loras=ZERO)
        mild_unfused = _gen(peft, loras=mild)
    finally:
        fused.close()
        peft.close()
    assert np.array_equal(zero, none) and np.array_equal(none2, none)  # strength 0 = none
    assert np.array_equal(a1, a2) and np.array_equal(a1, a3) and np.array_equal(b1, b2)
    assert np.abs(a1 - none).max() > 10 and np.abs(b1 - a1).max() > 10
    assert np.array_equal(unfused_zero, none)
    # Fused vs peft's extra matmuls: the same model up to float rounding (fp32 on CPU here).
    # Measured: the mild LoRA (changing pixels by up to 104 of 255) max 1, mean 8e-5; the
    # random a and b (which swamp the base weights, so rounding grows over the steps) max 17
    # and 5, mean 1.5 and 0.5. One patched layer alone differs by ~1e-7 relative.
    assert np.abs(mild_fused - none).max() > 10
    assert np.abs(mild_fused - mild_unfused).max() <= 1
    assert np.abs(mild_fused - mild_unfused).mean() < 0.01
    for mine, theirs in ((a1, unfused_a), (b1, unfused_b)):
        assert np.abs(mine - theirs).mean() < 3 and not np.array_equal(mine, theirs)


def test_auto_fuses_a_repeated_stack_and_not_a_switching_one(lora_home: TakeflowHome) -> None:
    service = service_for(lora_home, lora_fuse="auto")
    request = lambda loras: GenerationRequest(prompt="x", seed=1, loras=loras, width=64,  # noqa: E731
                                              height=64, steps=2, scheduler="euler")  # fmt: skip
    from tests.nodes.test_diffusion import RecordingReporter

    try:
        runs = [(loras, service.generate(request(loras), RecordingReporter()))
                for loras in (A, B, A, A, A, B)]  # fmt: skip
    finally:
        service.close()
    assert [r.parts.metadata()["lora_fused"] for _, r in runs] == [
        False, False, False, True, True, False]  # fmt: skip
    assert np.array_equal(np.asarray(runs[3][1].image), np.asarray(runs[4][1].image))


def test_take_records_loras_and_whether_they_ran_fused(
    lora_home: TakeflowHome, kohya_files: dict[str, Path], diffusion_runtime: Any, project: Any
) -> None:
    graph = _graph({"lora": "style/a.safetensors", "strength_model": 0.7, "strength_clip": 0.3})
    record, _ = run(diffusion_runtime, graph, project_id="demo", shot="ch01/sc01/sh020")
    assert record.status == TaskStatus.COMPLETED, record.error
    take = project.takes.list("ch01/sc01/sh020")[0]
    sha = "sha256:" + hashlib.sha256(kohya_files["a"].read_bytes()).hexdigest()
    assert take.metadata["loras"] == [{"name": "style/a.safetensors", "sha256": sha,
                                       "strength_model": 0.7, "strength_clip": 0.3}]  # fmt: skip
    assert take.metadata["lora_fused"] is True  # the default policy: always


def test_a_bad_lora_fuse_value_names_the_key() -> None:
    from pydantic import ValidationError

    from nodes.diffusion.config import DiffusionConfig

    assert DiffusionConfig.model_validate({}).diffusion.lora_fuse == "always"
    with pytest.raises(ValidationError) as bad:
        DiffusionConfig.model_validate({"diffusion": {"lora_fuse": "sometimes"}})
    assert bad.value.errors()[0]["loc"] == ("diffusion", "lora_fuse")
    assert "'auto', 'always' or 'never'" in str(bad.value)


def test_a_fuse_failing_halfway_leaves_the_base_weights_exact(
    tiny_model_dir: Path, kohya_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nodes.diffusion import lora_fuse
    from nodes.diffusion.folders import load_weights
    from tests.nodes.test_lora import _fresh

    pipe = _fresh(tiny_model_dir)
    pipe.load_lora_weights(dict(load_weights(kohya_files["a"])), adapter_name="a")
    before = _weights(pipe)
    calls = {"n": 0}
    real = lora_fuse._delta

    def failing(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("device lost")
        return real(*args)

    monkeypatch.setattr(lora_fuse, "_delta", failing)
    state = lora_fuse.FuseState()
    with pytest.raises(RuntimeError, match="device lost"):
        lora_fuse.fuse(lora_fuse.lora_components(pipe), state, (("a", 1.0, 1.0),))
    assert state.stack is None and not state.patches and calls["n"] == 5
    assert _same(before, _weights(pipe))
