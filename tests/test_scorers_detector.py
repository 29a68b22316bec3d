"""detector scorer: T2V-CompBench's spatial / numeracy rules on hand-made boxes; the scorer's
plumbing with a stubbed detector; a tiny random OWLv2 loaded through from_pretrained."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from cvg_bench import registry
from cvg_bench.scorers import detector as det
from cvg_bench.scorers._common import MODELS_ENV, ScorerNotReady
from cvg_bench.scorers._detection import Detections, dedup_frame, iou
from cvg_bench.shapes.grammar import parse
from cvg_bench.types import Entity, PromptSpec

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "scorer"


def D(*boxes_and_scores) -> Detections:
    """Detections from (cx, cy, w, h, score) tuples."""
    if not boxes_and_scores:
        return Detections()
    arr = np.array(boxes_and_scores, dtype=float)
    return Detections(arr[:, :4], arr[:, 4])


def test_config_file_is_a_scorer_package_and_builds():
    text = (CONFIGS / "detector.yaml").read_text()
    assert text.splitlines()[0] == "# @package scorer.detector"
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / "detector.yaml"))
    assert cfg.pop("name") == det.DetectorScorer.registered_name
    registry.check_kwargs("scorer 'detector'", det.DetectorScorer, cfg)
    scorer = det.DetectorScorer(**cfg)  # nothing is loaded before check_ready
    assert scorer.detector.model is None and scorer.detector.box_threshold == 0.35
    assert scorer.numeracy_box_threshold == 0.4 and scorer.num_frames == 16


# ---- rules ------------------------------------------------------------------------------------
def test_relation_of_box_centres():
    assert det.relation_2d((0.2, 0.5), (0.8, 0.5)) == "left"
    assert det.relation_2d((0.8, 0.5), (0.2, 0.5)) == "right"
    assert det.relation_2d((0.5, 0.2), (0.5, 0.8)) == "above"  # image y points down
    assert det.relation_2d((0.5, 0.8), (0.5, 0.2)) == "under"
    assert det.relation_2d((0.3, 0.3), (0.5, 0.5)) == ""  # |dw| == |dh|: no relation
    assert det.relation_2d((0.3, 0.45), (0.5, 0.5)) == "left"  # the larger offset decides
    assert det.relation_holds("above", "on") and det.relation_holds("under", "below")
    assert not det.relation_holds("above", "below") and not det.relation_holds("left", "right")
    assert det.canonical_spatial("on the left of") == "left"
    assert det.canonical_spatial(" In  front of ") == "in front of"


def test_iou_of_centre_boxes():
    # overlap 0.1 x 0.2 = 0.02; union 0.04 + 0.04 - 0.02 = 0.06
    assert iou((0.45, 0.5, 0.2, 0.2), (0.55, 0.5, 0.2, 0.2)) == pytest.approx((1 / 3, 0.5))
    assert iou((0.1, 0.1, 0.1, 0.1), (0.9, 0.9, 0.1, 0.1)) == (0.0, 0.0)


def test_spatial_frame_codes_and_mapping():
    a, b = D((0.25, 0.5, 0.2, 0.2, 0.9)), D((0.75, 0.5, 0.2, 0.2, 0.8))
    assert det.spatial_frame_2d(a, b, "left")[0] == pytest.approx(1.0)  # IoU 0
    code, info = det.spatial_frame_2d(a, b, "right")
    assert code == 0.0 and info["relation"] == "left"
    near1, near2 = D((0.45, 0.5, 0.2, 0.2, 0.9)), D((0.55, 0.5, 0.2, 0.2, 0.9))
    assert det.spatial_frame_2d(near1, near2, "left")[0] == pytest.approx(2 / 3)  # 1 - IoU
    assert det.spatial_frame_2d(a, D(), "left")[0] == -1.0
    assert det.spatial_frame_2d(D(), D(), "left")[0] == -2.0
    assert [det.frame_code_to_unit(c) for c in (-2, -1, 0, 2 / 3, 1)] == pytest.approx(
        [0.0, 0.2, 0.4, 0.8, 1.0])


def test_spatial_picks_pair_by_combined_score_and_reports_its_iou():
    d2 = D((0.5, 0.5, 0.2, 0.2, 0.5))
    # far, unsure: 0.5 * 1 + 0.5 * (0.1 + 0.25) = 0.675; close, sure: 0.5 * 2/3 + 0.5 * (0.5 + 0.25) = 0.708
    d1 = D((0.1, 0.5, 0.2, 0.2, 0.2), (0.4, 0.5, 0.2, 0.2, 1.0))
    code, info = det.spatial_frame_2d(d1, d2, "left")
    assert info["pair"] == [1, 0] and code == pytest.approx(2 / 3)
    # a box in the wrong place is never chosen, whatever its score
    d1 = D((0.1, 0.5, 0.1, 0.1, 0.3), (0.9, 0.5, 0.1, 0.1, 0.99))
    assert det.spatial_frame_2d(d1, d2, "left")[1]["pair"] == [0, 0]


def test_spatial_3d_uses_depth_order_of_overlapping_boxes():
    depth = np.ones((100, 100))
    depth[:, :50] = 10.0  # left half near (disparity)
    front, back = D((0.4, 0.5, 0.4, 0.4, 0.9)), D((0.6, 0.5, 0.4, 0.4, 0.9))
    # overlap 0.2 x 0.4 = 0.08; union 0.16 + 0.16 - 0.08 = 0.24 -> IoU 1/3
    assert det.spatial_frame_3d(front, back, depth, "in front of")[0] == pytest.approx(1 / 3)
    assert det.spatial_frame_3d(front, back, depth, "behind")[0] == 0.0
    assert det.spatial_frame_3d(front, back, depth, "behind", disparity=False)[0] == pytest.approx(1 / 3)
    apart = D((0.9, 0.5, 0.1, 0.1, 0.9))
    assert det.spatial_frame_3d(front, apart, depth, "in front of")[0] == 0.0  # no overlap
    assert det.spatial_frame_3d(D(), back, depth, "behind")[0] == -1.0
    assert det.box_depth(depth, (0.4, 0.5, 0.4, 0.4)) == 10.0  # central half: x in [0.3, 0.5)


def test_dedup_merges_one_blob_claimed_by_two_phrases():
    a = D((0.5, 0.5, 0.2, 0.2, 0.6), (0.1, 0.1, 0.1, 0.1, 0.7))
    b = D((0.501, 0.5, 0.2, 0.2, 0.9))
    out = dedup_frame([a, b], iou_threshold=0.9)
    assert len(out[0]) == 1 and out[0].scores[0] == pytest.approx(0.7)
    assert len(out[1]) == 1 and out[1].scores[0] == pytest.approx(0.9)
    out = dedup_frame([a, b], iou_threshold=0.999)  # below the threshold nothing merges
    assert [len(d) for d in out] == [2, 1]


def test_numeracy_rule():
    assert det.numeracy_frame([3], [3]) == 1.0
    assert det.numeracy_frame([2], [3]) == 0.0
    assert det.numeracy_frame([2, 1], [2, 3]) == 0.5
    assert det.numeracy_frame([2, 3], [2, 3]) == 1.0


# ---- the scorer with a stub detector ------------------------------------------------------------
class StubDetector:
    """Returns prepared detections; records the queries and threshold it was asked for."""

    def __init__(self, frames: list[list[Detections]]):
        self.frames, self.calls = frames, []
        self.identity, self.model = "stub@0", object()

    def load(self):
        pass

    def detect(self, frames, queries, box_threshold=None):
        self.calls.append((len(frames), list(queries), box_threshold))
        return self.frames[: len(frames)]


def _video(frames: int = 4, size: int = 16) -> np.ndarray:
    return np.zeros((frames, size, size, 3), dtype=np.uint8)


def test_spatial_video_score_is_the_mean_mapped_frame_code():
    scorer = det.DetectorScorer(model_id="unused", num_frames=4)
    left, right = D((0.2, 0.5, 0.2, 0.2, 0.9)), D((0.8, 0.5, 0.2, 0.2, 0.9))
    scorer.detector = StubDetector([[left, right]] * 3 + [[left, D()]])
    spec = parse("a red circle on the left of a blue square")
    result = scorer.score(_video(), spec)
    assert scorer.detector.calls == [(4, ["red circle", "blue square"], None)]
    assert result.raw["score"] == pytest.approx((1 + 1 + 1 + 0.2) / 4)
    assert result.raw["frame_accuracy"] == pytest.approx(0.75)
    assert result.raw["detection_rate"] == pytest.approx(0.75)
    assert result.normalised == result.raw
    assert result.details["frame_codes"] == [1.0, 1.0, 1.0, -1.0]
    # the same boxes judged against the opposite relation
    scorer.detector = StubDetector([[left, right]] * 4)
    wrong = scorer.score(_video(), parse("a red circle on the right of a blue square"))
    assert wrong.raw["score"] == pytest.approx(0.4) and wrong.raw["frame_accuracy"] == 0.0


def test_metadata_objects_are_the_queries():
    scorer = det.DetectorScorer(model_id="unused", num_frames=2)
    top, bottom = D((0.5, 0.2, 0.2, 0.2, 0.9)), D((0.5, 0.8, 0.2, 0.2, 0.9))
    scorer.detector = StubDetector([[top, bottom]] * 2)
    spec = PromptSpec(prompt_id="spatial_relationships-0001", prompt="A dog on a table",
                      category="spatial_relationships", label="on",
                      entities=(Entity("dog", "dog"), Entity("table", "table")),
                      meta={"metadata": {"object_1": "dog", "object_2": "wooden table", "spatial": "on"}})
    result = scorer.score(_video(6), spec)
    assert scorer.detector.calls[0] == (2, ["dog", "wooden table"], None)  # 6 frames -> 2 sampled
    assert result.raw["score"] == pytest.approx(1.0)


def test_numeracy_counts_after_dedup_with_its_own_threshold():
    scorer = det.DetectorScorer(model_id="unused", num_frames=2)
    two = D((0.1, 0.1, 0.1, 0.1, 0.9), (0.3, 0.1, 0.1, 0.1, 0.9))
    three = D((0.1, 0.8, 0.1, 0.1, 0.9), (0.3, 0.8, 0.1, 0.1, 0.9), (0.5, 0.8, 0.1, 0.1, 0.9))
    dup = D((0.1, 0.8, 0.1, 0.1, 0.9), (0.1005, 0.8, 0.1, 0.1, 0.8), (0.5, 0.8, 0.1, 0.1, 0.9))
    scorer.detector = StubDetector([[two, three], [two, dup]])
    spec = parse("two red circles and three blue squares")
    result = scorer.score(_video(2), spec)
    assert scorer.detector.calls[0] == (2, ["red circles", "blue squares"], 0.4)
    assert result.details["targets"] == [2, 3]
    assert result.details["frame_counts"] == [[2, 3], [2, 2]]  # the duplicate box is merged
    assert result.raw["score"] == pytest.approx((1.0 + 0.5) / 2)
    assert result.raw["frame_accuracy"] == pytest.approx(0.5)


def test_unscored_categories_are_nan_with_a_reason():
    scorer = det.DetectorScorer(model_id="unused")
    scorer.detector = StubDetector([])
    result = scorer.score(_video(), parse("a green square moving left"))
    assert all(math.isnan(v) for v in result.raw.values())
    assert set(result.raw) == set(det.METRICS) == set(result.normalised)
    assert "spatial_relationships" in result.details["skipped"]
    spec = PromptSpec(prompt_id="s", prompt="a cat in front of a dog", category="spatial_relationships",
                      label="in front of", entities=(Entity("cat", "cat"), Entity("dog", "dog")))
    result = scorer.score(_video(), spec)
    assert math.isnan(result.raw["score"]) and "depth_model_id" in result.details["skipped"]
    assert scorer.detector.calls == []


# ---- a tiny random OWLv2 through the real loading path -----------------------------------------
def _tiny_owlv2(folder: Path) -> None:
    import torch
    from transformers import (CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection,
                              Owlv2ImageProcessor, Owlv2Processor)

    # as CLIP's: bos/eos last (OWL treats a query whose first id is 0 as padding)
    vocab = {"!": 0}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16, pad_token="!",
                        unk_token="<|endoftext|>", bos_token="<|startoftext|>", eos_token="<|endoftext|>")
    small = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2)
    cfg = Owlv2Config(text_config=dict(**small, vocab_size=len(vocab), max_position_embeddings=16,
                                       bos_token_id=bos, eos_token_id=eos, pad_token_id=0),
                      vision_config=dict(**small, image_size=32, patch_size=8), projection_dim=32)
    torch.manual_seed(0)
    Owlv2ForObjectDetection(cfg).save_pretrained(folder)
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 32, "width": 32}),
                   tokenizer=tok).save_pretrained(folder)


@pytest.fixture(scope="module")
def owl_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    _tiny_owlv2(root / "tiny-owlv2")
    return root


def test_tiny_owlv2_loads_and_scores(owl_root, monkeypatch):
    monkeypatch.setenv(MODELS_ENV, str(owl_root))  # a relative id is found under $CVG_BENCH_MODELS
    scorer = det.DetectorScorer(model_id="tiny-owlv2", box_threshold=0.0, numeracy_box_threshold=0.0,
                                num_frames=2, batch_size=2)
    scorer.check_ready()
    assert scorer.detector.family == "owl"
    assert scorer.version().startswith("detector-v1:tiny-owlv2@local-")
    video = np.random.default_rng(0).integers(0, 256, (3, 32, 48, 3), dtype=np.uint8)
    dets = scorer.detector.detect(list(video[:2]), ["red", "blue"])
    assert len(dets) == 2 and all(len(per_q) == 2 for per_q in dets)
    assert all(len(d) == 16 for per_q in dets for d in per_q)  # threshold 0: all (32/8)^2 boxes
    spatial = scorer.score(video, parse("a red circle on the left of a blue square"))
    numeracy = scorer.score(video, parse("two red circles"))
    for r in (spatial, numeracy):
        assert set(r.raw) == set(det.METRICS)
        assert all(0.0 <= v <= 1.0 for v in r.normalised.values())
    assert numeracy.details["targets"] == [2]


def test_check_ready_names_the_model_and_how_to_fix_it(tmp_path):
    missing = str(tmp_path / "no-such-detector")
    scorer = det.DetectorScorer(model_id=missing)
    with pytest.raises(ScorerNotReady) as err:
        scorer.check_ready()
    msg = str(err.value)
    for needle in (missing, "huggingface-cli download", "scorer.detector.model_id=", MODELS_ENV):
        assert needle in msg


# ---- the two model families' output handling, on fixed model outputs --------------------------
class _Inputs(dict):
    def to(self, device):
        return self


class _FakeModel:
    def __init__(self, model_type, **outputs):
        import torch

        self.config = type("C", (), {"model_type": model_type})()
        self.device = torch.device("cpu")
        self.outputs = type("O", (), outputs)()

    def __call__(self, **inputs):
        return self.outputs


def test_owlv2_boxes_are_mapped_from_the_padded_square_to_the_frame():
    import torch

    from cvg_bench.scorers._detection import ZeroShotDetector

    d = ZeroShotDetector("fake", box_threshold=0.5, text_threshold=0.25)
    d.family = "owl"
    d.processor = lambda **kw: _Inputs()
    # one frame 32 (h) x 48 (w): OWLv2 pads it to 48 x 48 at the bottom
    boxes = torch.tensor([[[0.5, 0.25, 0.2, 0.1], [0.1, 0.1, 0.1, 0.1]]])
    logits = torch.tensor([[[5.0, -5.0], [-5.0, -5.0]]])  # box 0 is query 0's, nothing for query 1
    d.model = _FakeModel("owlv2", logits=logits, pred_boxes=boxes)
    out = d.detect([np.zeros((32, 48, 3), np.uint8)], ["red circle", "blue square"])
    np.testing.assert_allclose(out[0][0].boxes, [[0.5, 0.25 * 48 / 32, 0.2, 0.1 * 48 / 32]])
    assert len(out[0][1]) == 0 and out[0][0].scores[0] == pytest.approx(1 / (1 + math.exp(-5)))


def test_grounding_dino_keeps_boxes_labelled_with_the_whole_phrase():
    import torch

    from cvg_bench.scorers._detection import ZeroShotDetector

    class Proc:
        captions = []

        def __call__(self, images, text, return_tensors):
            self.captions.append(text)
            return _Inputs(input_ids=None)

        def post_process_grounded_object_detection(self, outputs, input_ids, threshold, text_threshold):
            assert threshold == 0.35 and text_threshold == 0.25
            xyxy = torch.tensor([[0.1, 0.1, 0.3, 0.5], [0.5, 0.5, 0.7, 0.7], [0.0, 0.0, 1.0, 1.0]])
            return [{"boxes": xyxy, "scores": torch.tensor([0.9, 0.8, 0.7]),
                     "text_labels": ["red car", "car", "red  car."]}]

    d = ZeroShotDetector("fake", box_threshold=0.35, text_threshold=0.25)
    d.family, d.processor, d.model = "grounding-dino", Proc(), _FakeModel("grounding-dino")
    out = d.detect([np.zeros((8, 8, 3), np.uint8)], ["Red car"])
    assert Proc.captions == [["red car."]]  # lower-cased, with the final period, as the scripts
    np.testing.assert_allclose(out[0][0].boxes, [[0.2, 0.3, 0.2, 0.4], [0.5, 0.5, 1.0, 1.0]])
    d.require_full_phrase = False
    assert len(d.detect([np.zeros((8, 8, 3), np.uint8)], ["red car"])[0][0]) == 3


def _tiny_depth_anything(folder: Path) -> None:
    import torch
    from transformers import (DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config,
                              DPTImageProcessor)

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=37, image_size=28, patch_size=14,
                            out_features=["stage1", "stage2"], reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32,
                              neck_hidden_sizes=[8, 16], fusion_hidden_size=16, head_hidden_size=8,
                              reassemble_factors=[2, 1])
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(cfg).save_pretrained(folder)
    DPTImageProcessor(size={"height": 28, "width": 28}, keep_aspect_ratio=False,
                      ensure_multiple_of=14).save_pretrained(folder)


def test_3d_relations_with_a_tiny_depth_model(owl_root, tmp_path):
    _tiny_depth_anything(tmp_path / "tiny-depth")
    scorer = det.DetectorScorer(model_id=str(owl_root / "tiny-owlv2"), box_threshold=0.0,
                                depth_model_id=str(tmp_path / "tiny-depth"), num_frames=2)
    scorer.check_ready()
    assert "+depth:" in scorer.version()
    depth = scorer.depth(list(np.zeros((2, 20, 30, 3), np.uint8)))
    assert [d.shape for d in depth] == [(20, 30), (20, 30)]  # back at the frame's size
    spec = PromptSpec(prompt_id="s", prompt="a cat in front of a dog", category="spatial_relationships",
                      label="in front of", entities=(Entity("cat", "cat"), Entity("dog", "dog")))
    result = scorer.score(np.random.default_rng(0).integers(0, 256, (2, 20, 30, 3), dtype=np.uint8), spec)
    assert 0.0 <= result.normalised["score"] <= 1.0 and result.details["label"] == "in front of"
    with pytest.raises(ScorerNotReady, match="scorer.detector.depth_model_id="):
        det.DetectorScorer(model_id=str(owl_root / "tiny-owlv2"),
                           depth_model_id=str(tmp_path / "absent")).check_ready()


def test_detector_and_motion_share_one_loaded_model(owl_root):
    from cvg_bench.scorers.motion import MotionScorer

    a = det.DetectorScorer(model_id=str(owl_root / "tiny-owlv2"), device="cpu")
    b = MotionScorer(model_id=str(owl_root / "tiny-owlv2"), device="cpu")
    a.check_ready()
    b.check_ready()
    assert a.detector.model is b.detector.model
    assert b.version().startswith("motion-v1:") and b.version().split(":", 1)[1] == a.detector.identity
