"""Reduced-precision bundles (export_sam3.py --dtype bfloat16, sam3_tools/precision.py): the
interface of the fp32 bundle of the same weights, arithmetic in bf16, and accuracy within the
bars of precision_report.py on the parity photos. Also export_sam3.py --from-bundle, which
exports a random bundle's weights again (here at bf16)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import precision_report

TOOLS = Path(__file__).resolve().parents[1]
DTYPES = ("float32", "bfloat16")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    # The bf16 bundle is exported again from the fp32 one (--from-bundle: its hf/ copy).
    out = {dtype: tmp_path_factory.mktemp(dtype) for dtype in DTYPES}
    export = [sys.executable, str(TOOLS / "export_sam3.py")]
    subprocess.run(
        [*export, "--tiny-random", "--seed", "3", "--preset", "tiny-b", "--out", str(out["float32"])],
        check=True, capture_output=True,
    )
    subprocess.run(
        [*export, "--from-bundle", str(out["float32"]), "--dtype", "bfloat16", "--out", str(out["bfloat16"])],
        check=True, capture_output=True,
    )
    return out


def manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


def test_the_manifest_states_the_precision_and_keeps_the_interface(bundles):
    fp32, bf16 = manifest(bundles["float32"]), manifest(bundles["bfloat16"])
    assert (fp32["dtype"], bf16["dtype"]) == DTYPES
    assert bf16["modules"] == fp32["modules"]
    # The same random model: id, seed, checksum (--from-bundle checked the weights against it).
    assert bf16["model"] == fp32["model"] and fp32["model"]["random_weights"] is True
    assert (bundles["bfloat16"] / fp32["text"]["vocab_file"]).read_bytes() == (
        bundles["float32"] / fp32["text"]["vocab_file"]
    ).read_bytes()
    assert bf16["tracker"] == fp32["tracker"] and bf16["concept"] == fp32["concept"]


def example_inputs(spec: dict, m: dict) -> list[torch.Tensor]:
    """Valid inputs for a module, from its manifest spec (symbols: 2, masks at the resolution)."""
    generator = torch.Generator().manual_seed(7)
    sizes = {"H": m["resolution"], "W": m["resolution"], "NB": 1}
    tensors = []
    for item in spec["inputs"]:
        shape = [d if isinstance(d, int) else sizes.get(d, 2) for d in item["shape"]]
        name = item["name"]
        if name == "input_ids":
            tensor = torch.full(shape, m["text"]["pad_id"], dtype=torch.long)
            tensor[:, 0], tensor[:, 1] = m["text"]["bos_id"], 14115
        elif name in ("attention_mask", "text_mask"):
            tensor = torch.zeros(shape, dtype=torch.long)
            tensor[:, :3] = 1
        elif item["dtype"] == "int64":  # labels, memory temporal positions
            tensor = torch.ones(shape, dtype=torch.long)
        elif name in ("memory_valid", "pointer_valid", "binarize"):
            tensor = torch.ones(shape)
        elif name == "boxes":
            tensor = torch.rand(shape, generator=generator) * 0.4 + 0.3
        elif name == "points":
            tensor = torch.rand(shape, generator=generator) * m["resolution"]
        elif name == "mask_inputs":
            tensor = (torch.rand(shape, generator=generator) > 0.5).float()
        else:
            tensor = torch.randn(shape, generator=generator)
        tensors.append(tensor)
    return tensors


@torch.no_grad()
def test_every_module_computes_in_bf16_behind_the_fp32_interface(bundles):
    m = manifest(bundles["float32"])
    for name, spec in m["modules"].items():
        fp32, bf16 = (torch.jit.load(str(bundles[d] / spec["file"])) for d in DTYPES)
        inputs = example_inputs(spec, m)
        want, got = fp32(*inputs), bf16(*inputs)
        want, got = ((want,), (got,)) if isinstance(want, torch.Tensor) else (want, got)
        assert len(got) == len(want) == len(spec["outputs"]), name
        # Rounding to bf16 shows in the module's outputs.
        assert any(not torch.equal(a, b) for a, b in zip(want, got)), name
        for a, b, out in zip(want, got, spec["outputs"]):
            assert b.dtype == a.dtype == getattr(torch, out["dtype"]), (name, out["name"])
            assert b.shape == a.shape, (name, out["name"])
            # Not a measure of accuracy (the photos' test below is): random inputs, and random
            # detector weights whose query logits are differences of large terms. A wrong graph
            # would be off by about the values' own size (1.4 for independent values).
            error = (a.float() - b.float()).abs().mean() / a.float().abs().mean().clamp_min(1e-6)
            assert error < 0.2, (name, out["name"], error.item())
        # Frozen: the weights the matrix products take are bf16 constants of the graph.
        assert [key for key, _ in bf16.named_parameters()] in ([], ["no_memory_embedding"]), name
        constants = [node.t("value").dtype for node in bf16.graph.nodes()
                     if node.hasAttribute("value") and node.kindOf("value") == "t"]
        assert torch.bfloat16 in constants, name


def test_the_core_reads_the_no_memory_embedding_of_a_frozen_module(bundles):
    fp32, bf16 = (torch.jit.load(str(bundles[d] / "memory_attention.pt")) for d in DTYPES)
    assert torch.equal(bf16.no_memory_embedding, fp32.no_memory_embedding)


def test_accuracy_on_the_parity_photos_is_within_the_bars(bundles):
    """The bars (README, "Reduced precision"): the masks agree on every pixel where the fp32
    logit is confident (|logit| >= 1); mask logits within 5 % of their mean magnitude on
    average; detection scores within 0.02 on average and 0.15 at most (the random detector's
    query logits are differences of large terms, which bf16 rounds coarsely: real weights are
    better conditioned), the clicks' IoU predictions within 0.01; boxes
    within 0.5 % of the image; at least 90 % of the fp32 detections kept."""
    report = precision_report.compare(
        precision_report.Bundle(bundles["float32"]), precision_report.Bundle(bundles["bfloat16"]), 0.5, 1.0
    )
    assert report["masks"] >= 20 and report["detections"]["reference"] >= 10, report
    assert report["confident_iou"]["min"] >= 0.99, report
    assert report["mask_logit_relative"]["mean"] <= 0.05, report
    assert 0 < report["mask_logit_error"]["max"], report
    assert report["score_error"]["max"] <= 0.15 and report["score_error"]["mean"] <= 0.02, report
    assert report["score_error"]["clicks"] <= 0.01, report
    assert report["box_error"] <= 0.005, report
    assert report["detections"]["candidate_too"] >= 0.9 * report["detections"]["reference"], report
