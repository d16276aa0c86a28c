"""mmlib.zeroshot: zero-shot scores and accuracy on cases whose answer is known by hand."""

import math

import pytest
import torch
from torch.nn import functional as F

import mmlib.zeroshot as zeroshot
from mmlib.data import make_dataset
from mmlib.encoders import BagOfEmbeddings, ImageCNN
from mmlib.models import DualEncoder
from mmlib.text import Tokenizer
from mmlib.zeroshot import zero_shot_accuracy, zero_shot_scores

TOK = Tokenizer.for_world()


def hand_made_clip(image_embeddings, scale=10.0):
    """A DualEncoder whose embeddings are set by hand: an image gets the given unit vector; a text
    points along x if it says 'red', along y otherwise, and leans 0.6 towards z if it says
    'large'."""
    model = DualEncoder(ImageCNN(8, channels=(4,)), BagOfEmbeddings(len(TOK), 8), embed_dim=3)
    red, large = TOK.stoi["red"], TOK.stoi["large"]

    def embed_texts(tokens):
        says_red = (tokens == red).any(1, keepdim=True).float()
        says_large = (tokens == large).any(1, keepdim=True).float()
        v = torch.cat([says_red, 1 - says_red, 0.6 * says_large], 1)
        return F.normalize(v, dim=1)

    model.embed_texts = embed_texts
    model.embed_images = lambda images: image_embeddings[:len(images)]
    with torch.no_grad():
        model.log_scale.fill_(math.log(scale))
    return model.eval()


def test_the_marginal_aggregate_is_the_log_sum_over_templates():
    images = F.normalize(torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]), dim=1)
    model = hand_made_clip(images)
    pairs, templates = [("red", "circle"), ("blue", "circle")], ("a small {}", "a large {}")
    got = zero_shot_scores(model, torch.zeros(2, 3, 32, 32), pairs, TOK, templates, aggregate="marginal")
    small_red, large_red = torch.tensor([1.0, 0, 0]), F.normalize(torch.tensor([1.0, 0, 0.6]), dim=0)
    small_blue, large_blue = torch.tensor([0, 1.0, 0]), F.normalize(torch.tensor([0, 1.0, 0.6]), dim=0)
    for i, image in enumerate(images):
        for c, (small, large) in enumerate(((small_red, large_red), (small_blue, large_blue))):
            expected = torch.logsumexp(10 * torch.stack([image @ small, image @ large]), 0)
            assert got[i, c].item() == pytest.approx(expected.item(), abs=1e-4)
    assert got.argmax(1).tolist() == [0, 1], "the red-leaning image is red, the other blue"
    mean = zero_shot_scores(model, torch.zeros(2, 3, 32, 32), pairs, TOK, templates, aggregate="mean")
    assert not torch.allclose(mean, got), "the two aggregates are different numbers"
    with pytest.raises(ValueError, match="aggregate must be"):
        zero_shot_scores(model, torch.zeros(2, 3, 32, 32), pairs, TOK, templates, aggregate="max")


def test_zero_shot_accuracy_counts_the_images_whose_pair_scores_best(monkeypatch):
    data = make_dataset("pairs", 4, seed=3)
    truth = [(data.scenes.objects(i)[0]["color"], data.scenes.objects(i)[0]["shape"]) for i in range(4)]
    pairs = sorted(set(truth) | {("pink", "ring")})
    scores = torch.zeros(4, len(pairs))
    for i, pair in enumerate(truth):
        scores[i, pairs.index(pair)] = 1.0
    scores[3] = 0.0
    scores[3, pairs.index(("pink", "ring"))] = 2.0  # the last image is misread
    monkeypatch.setattr(zeroshot, "zero_shot_scores", lambda *a, **k: scores)
    assert zero_shot_accuracy(None, data, pairs) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="not among the candidates"):
        zero_shot_accuracy(None, data, [("pink", "ring")])
