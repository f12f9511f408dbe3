"""Traced bundle modules equal eager transformers outputs, per module, for two configs.

Tolerance: 1e-4 absolute (observed: 0 on CPU; the detector is compared batched against
per-prompt eager calls, so only reduction order may differ).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sam3_tools.bundle_vision import load_vision
from sam3_tools.patches import install_roi_align

TOOLS = Path(__file__).resolve().parents[1]
ATOL = 1e-4


@pytest.fixture(scope="module", params=["tiny", "tiny-b"])
def bundle(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    subprocess.run(
        [sys.executable, str(TOOLS / "export_sam3.py"), "--tiny-random", "--seed", "3", "--preset", request.param,
         "--out", str(out)],
        check=True, capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def eager(bundle):
    from transformers import Sam3VideoModel

    install_roi_align()
    return Sam3VideoModel.from_pretrained(bundle / "hf").eval()


def load_module(bundle: Path, name: str):
    return torch.jit.load(str(bundle / f"{name}.pt"))


def test_manifest_describes_the_exported_modules(bundle, eager):
    manifest = json.loads((bundle / "manifest.json").read_text())
    config = eager.config.detector_config
    assert manifest["format"] == "sam3-bundle" and manifest["format_version"] == 4
    assert manifest["model"]["random_weights"] is True and manifest["model"]["seed"] == 3
    assert manifest["resolution"] == config.vision_config.backbone_config.image_size
    assert manifest["num_queries"] == config.detr_decoder_config.num_queries
    assert manifest["hidden_size"] == config.detr_encoder_config.hidden_size
    assert manifest["mask_size"] == 4 * manifest["feature_size"]
    assert (bundle / manifest["text"]["vocab_file"]).is_file()
    for name, module in manifest["modules"].items():
        assert (bundle / module["file"]).is_file(), name
    assert {"vision_trunk", "detector_neck", "tracker_neck"} <= set(manifest["modules"])
    assert "vision_encoder" not in manifest["modules"]


@torch.no_grad()
def test_vision_parts_equal_both_eager_necks(bundle, eager):
    manifest = json.loads((bundle / "manifest.json").read_text())
    resolution, grid = manifest["resolution"], manifest["feature_size"]
    torch.manual_seed(0)
    pixels = torch.randn(1, 3, resolution, resolution)
    features = load_module(bundle, "vision_trunk")(pixels)
    hidden = eager.detector_model.vision_encoder.backbone(pixels).last_hidden_state
    torch.testing.assert_close(features, hidden, atol=ATOL, rtol=0)
    assert manifest["modules"]["vision_trunk"]["outputs"][0]["shape"] == ["B", grid * grid, hidden.shape[-1]]
    traced = (*load_module(bundle, "detector_neck")(features), *load_module(bundle, "tracker_neck")(features))
    embeds = eager.detector_model.get_vision_features(pixel_values=pixels)
    for level in range(3):
        torch.testing.assert_close(traced[level], embeds.fpn_hidden_states[level], atol=ATOL, rtol=0)
    tracker_maps, _ = eager.get_vision_features_for_tracker(embeds)
    for level in range(2):
        expected = tracker_maps[level].permute(1, 2, 0).reshape(traced[3 + level].shape)
        torch.testing.assert_close(traced[3 + level], expected, atol=ATOL, rtol=0)
    specs = manifest["modules"]["detector_neck"]["outputs"] + manifest["modules"]["tracker_neck"]["outputs"]
    for got, spec in zip(traced, specs, strict=True):
        assert spec["shape"][0] == "B" and list(got.shape) == [1, *spec["shape"][1:]], spec["name"]


@torch.no_grad()
def test_vision_batch_equals_each_image_alone(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    resolution = manifest["resolution"]
    assert manifest["modules"]["vision_trunk"]["inputs"][0]["shape"] == ["B", 3, resolution, resolution]
    torch.manual_seed(1)
    pixels = torch.randn(3, 3, resolution, resolution)
    vision = load_vision(bundle)
    batched = vision(pixels)
    alone = [vision(pixels[i : i + 1]) for i in range(3)]
    for level, got in enumerate(batched):
        assert got.shape[0] == 3
        torch.testing.assert_close(got, torch.cat([maps[level] for maps in alone]), atol=1e-5, rtol=0)


@torch.no_grad()
def test_text_encoder_equals_eager_text_features(bundle, eager):
    torch.manual_seed(1)
    ids = torch.randint(0, 49406, (3, 32))
    mask = torch.zeros(3, 32, dtype=torch.long)
    for row, length in enumerate((2, 9, 32)):
        mask[row, :length] = 1
    expected = eager.detector_model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
    torch.testing.assert_close(load_module(bundle, "text_encoder")(ids, mask), expected, atol=ATOL, rtol=0)


@torch.no_grad()
def test_batched_detector_equals_eager_per_prompt_calls(bundle, eager):
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    manifest = json.loads((bundle / "manifest.json").read_text())
    resolution = manifest["resolution"]
    torch.manual_seed(2)
    pixels = torch.randn(1, 3, resolution, resolution)
    embeds = eager.detector_model.get_vision_features(pixel_values=pixels)
    ids = torch.randint(0, 49406, (3, 32))
    mask = torch.zeros(3, 32, dtype=torch.long)
    mask[0, :4], mask[1, :7], mask[2, :2] = 1, 1, 1
    text = eager.detector_model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
    # prompt 0: text only (one padding box); 1: a positive and a negative box; 2: a tiny box.
    boxes = torch.tensor(
        [
            [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
            [[0.5, 0.5, 0.6, 0.4], [0.2, 0.3, 0.1, 0.2]],
            [[0.7, 0.6, 0.02, 0.03], [0.0, 0.0, 0.0, 0.0]],
        ]
    )
    labels = torch.tensor([[-10, -10], [1, 0], [1, -10]])
    maps = load_vision(bundle)(pixels)
    traced = load_module(bundle, "detector")(maps[0], maps[1], maps[2], text, mask, boxes, labels)
    for row in range(3):
        valid = labels[row] != -10
        row_boxes = boxes[row : row + 1, valid] if valid.any() else boxes[row : row + 1, :1]
        row_labels = labels[row : row + 1, valid] if valid.any() else labels[row : row + 1, :1]
        out = eager.detector_model(
            vision_embeds=embeds,
            text_embeds=BaseModelOutputWithPooling(pooler_output=text[row : row + 1]),
            attention_mask=mask[row : row + 1],
            input_boxes=row_boxes,
            input_boxes_labels=row_labels,
        )
        expected = (out.pred_logits, out.pred_boxes, out.presence_logits, out.pred_masks)
        for got, want in zip(traced, expected):
            torch.testing.assert_close(got[row : row + 1], want, atol=ATOL, rtol=0)


@torch.no_grad()
def test_point_decoders_equal_the_eager_tracker_model(bundle):
    from sam3_tools.reference_pipeline import tracker_reference_model

    manifest = json.loads((bundle / "manifest.json").read_text())
    resolution = manifest["resolution"]
    tracker = tracker_reference_model(bundle / "hf")
    torch.manual_seed(4)
    pixels = torch.randn(1, 3, resolution, resolution)
    maps = load_vision(bundle)(pixels)
    click = torch.tensor([[[[0.3, 0.6]]]]) * resolution
    clicks = torch.tensor([[[[0.3, 0.6], [0.8, 0.1]]]]) * resolution
    box = torch.tensor([[[0.1, 0.2, 0.7, 0.9]]]) * resolution
    cases = [
        # (module, points, labels, HF points, HF labels, HF boxes, multimask)
        ("point_decoder_multimask", click, [[[1]]], click, [[[1]]], None, True),
        ("point_decoder", clicks, [[[1, 0]]], clicks, [[[1, 0]]], None, False),
        # the box as corner points labelled 2 and 3, against transformers' own box path
        ("point_decoder", torch.cat([click, box.view(1, 1, 2, 2)], dim=2), [[[1, 2, 3]]], click, [[[1]]], box, False),
    ]
    for name, points, labels, hf_points, hf_labels, hf_boxes, multimask in cases:
        got = load_module(bundle, name)(maps[3], maps[4], maps[5], points, torch.tensor(labels))
        want = tracker(
            pixel_values=pixels,
            input_points=hf_points,
            input_labels=torch.tensor(hf_labels),
            input_boxes=hf_boxes,
            multimask_output=multimask,
        )
        assert got[0].shape[2] == (3 if multimask else 1)
        torch.testing.assert_close(got[0], want.pred_masks, atol=ATOL, rtol=0)
        torch.testing.assert_close(got[1], want.iou_scores, atol=ATOL, rtol=0)
        torch.testing.assert_close(got[2], want.object_score_logits, atol=ATOL, rtol=0)


def test_export_from_a_local_checkpoint_reads_its_config_and_vocabulary(bundle, tmp_path):
    """--model <dir> (what save_pretrained writes, as facebook/sam3 ships it) gives the same
    graphs as the random export it came from, and converts the checkpoint's HF merges.txt
    into the bundle's open_clip vocabulary."""
    import gzip
    import shutil

    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(bundle / "hf", checkpoint)
    manifest = json.loads((bundle / "manifest.json").read_text())
    vocab = gzip.open(bundle / manifest["text"]["vocab_file"]).read().decode("utf-8").split("\n")
    # HF's CLIP merges.txt: a version header, then the merges (open_clip's header differs).
    (checkpoint / "merges.txt").write_text("#version: 0.2\n" + "\n".join(vocab[1:48895]) + "\n")
    out = tmp_path / "bundle"
    subprocess.run(
        [sys.executable, str(TOOLS / "export_sam3.py"), "--model", str(checkpoint), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    exported = json.loads((out / "manifest.json").read_text())
    assert exported["model"]["random_weights"] is False
    assert exported["model"]["checksum"] == manifest["model"]["checksum"]
    assert exported["modules"] == manifest["modules"]
    converted = gzip.open(out / exported["text"]["vocab_file"]).read().decode("utf-8").split("\n")
    assert converted[1:48895] == vocab[1:48895]
    assert not (out / "hf").exists()
    torch.manual_seed(5)
    pixels = torch.randn(1, 3, manifest["resolution"], manifest["resolution"])
    for got, want in zip(load_vision(out)(pixels), load_vision(bundle)(pixels), strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
