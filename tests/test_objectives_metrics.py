"""mmlib.objectives, mmlib.metrics and DualEncoder: losses equal their formulas; metrics on hand-made inputs."""

import math

import pytest
import torch
from torch.nn import functional as F

from mmlib.encoders import BagOfEmbeddings, ImageCNN
from mmlib.metrics import class_embeddings, linear_probe, modality_gap, recall_at_k, zero_shot_logits
from mmlib.models import CaptioningModel, DualEncoder
from mmlib.text import Tokenizer
from mmlib.checkpoint import load_checkpoint, save_checkpoint
from mmlib.objectives import (bag_of_words_loss, captioning_loss, clip_loss, itm_loss, sample_hard_negatives,
                              siglip_loss)


def clip_by_formula(a, b, scale):
    """The CLIP loss written element by element, independently of the library."""
    a = [x / x.norm() for x in a]
    b = [y / y.norm() for y in b]
    n = len(a)
    s = [[scale * float(a[i] @ b[j]) for j in range(n)] for i in range(n)]
    rows = sum(-s[i][i] + math.log(sum(math.exp(s[i][j]) for j in range(n))) for i in range(n)) / n
    cols = sum(-s[j][j] + math.log(sum(math.exp(s[i][j]) for i in range(n))) for j in range(n)) / n
    return (rows + cols) / 2


def test_clip_loss_equals_its_formula_and_its_gradient():
    torch.manual_seed(0)
    a, b = torch.randn(5, 8, dtype=torch.float64, requires_grad=True), torch.randn(5, 8, dtype=torch.float64)
    loss = clip_loss(a, b, scale=3.0)
    assert loss.item() == pytest.approx(clip_by_formula(a.detach(), b, 3.0), rel=1e-9)
    loss.backward()
    numeric = torch.zeros_like(a)
    for i in range(5):
        for j in range(8):
            e = torch.zeros_like(a); e[i, j] = 1e-6
            numeric[i, j] = (clip_loss(a.detach() + e, b, 3.0) - clip_loss(a.detach() - e, b, 3.0)) / 2e-6
    assert torch.allclose(a.grad, numeric, atol=1e-6)


def test_clip_loss_is_symmetric_and_minimal_for_aligned_pairs():
    torch.manual_seed(1)
    a, b = torch.randn(6, 16), torch.randn(6, 16)
    assert clip_loss(a, b).item() == pytest.approx(clip_loss(b, a).item(), rel=1e-6)
    aligned = torch.eye(6, 16)
    assert clip_loss(aligned, aligned, 100.0) < 1e-3 < clip_loss(aligned, aligned.roll(1, 0), 100.0)
    assert clip_loss(aligned, aligned, 100.0) < clip_loss(a, b, 100.0)


def test_siglip_loss_equals_its_formula():
    torch.manual_seed(2)
    a, b = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
    an, bn = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    total = 0.0
    for i in range(4):
        for j in range(4):
            z = 1 if i == j else -1
            total += -math.log(1 / (1 + math.exp(-z * (10.0 * float(an[i] @ bn[j]) - 10.0))))
    assert siglip_loss(a, b, 10.0, -10.0).item() == pytest.approx(total / 4, rel=1e-9)
    aligned = torch.eye(4, 8)
    assert siglip_loss(aligned, aligned, 100.0, -10.0) < siglip_loss(a.float(), b.float(), 100.0, -10.0)


@pytest.mark.parametrize("a,b,match", [
    (torch.randn(4, 8), torch.randn(5, 8), "pair up one to one"),
    (torch.randn(4, 8), torch.randn(4, 6), "pair up one to one"),
    (torch.randn(4, 2, 8), torch.randn(4, 2, 8), r"\(batch, dim\)"),
    (torch.randn(0, 8), torch.randn(0, 8), "empty batch"),
])
def test_losses_reject_bad_embeddings(a, b, match):
    for loss in (clip_loss, siglip_loss):
        with pytest.raises(ValueError, match=match):
            loss(a, b)


def test_hard_negatives_are_never_the_partner_and_follow_similarity():
    logits = torch.tensor([[5.0, 4.0, -9.0], [0.0, 5.0, 0.0], [-9.0, 9.0, 1.0]])
    picks = torch.stack([sample_hard_negatives(logits, torch.Generator().manual_seed(s)) for s in range(200)])
    assert (picks != torch.arange(3)).all()
    assert (picks[:, 0] == 1).float().mean() > 0.95 and (picks[:, 2] == 1).float().mean() > 0.95
    with pytest.raises(ValueError, match="square"):
        sample_hard_negatives(torch.zeros(1, 1))


def test_itm_bag_of_words_and_captioning_losses():
    assert itm_loss(torch.tensor([10.0, -10.0]), torch.tensor([1, 0])) < 1e-3
    tokens = torch.tensor([[4, 5, 0], [6, 6, 7]])
    perfect = torch.full((2, 10), -30.0)
    perfect[0, 4] = perfect[0, 5] = 0.0
    perfect[1, 6], perfect[1, 7] = math.log(2), 0.0
    specials = (0, 1, 2, 3)
    best = bag_of_words_loss(perfect, tokens, specials)
    entropy = lambda *p: -sum(q * math.log(q) for q in p)  # noqa: E731  the loss of a perfect prediction
    assert best == pytest.approx((entropy(0.5, 0.5) + entropy(2 / 3, 1 / 3)) / 2, abs=1e-4)
    assert best < bag_of_words_loss(torch.zeros(2, 10), tokens, specials)
    # ignore word 6: caption 2's only target is then word 7, predicted with probability 1/3
    assert bag_of_words_loss(perfect, tokens, (0, 6)) == pytest.approx((math.log(2) + math.log(3)) / 2, abs=1e-4)
    logits = torch.zeros(2, 3, 10)
    logits[0, 0, 4] = logits[0, 1, 5] = 50.0
    logits[1, 0, 6] = logits[1, 1, 6] = logits[1, 2, 7] = 50.0
    assert captioning_loss(logits, tokens, pad_id=0) < 1e-6  # the padding position is ignored
    # with pad id 7, the 0 at the end of caption 1 counts (uniform: log 10) and the final 7 does not
    assert captioning_loss(logits, tokens, pad_id=7) == pytest.approx(math.log(10) / 5, abs=1e-4)
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        captioning_loss(torch.zeros(2, 10), tokens, pad_id=0)


def test_recall_at_k_on_a_hand_made_matrix():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.7, 0.0], [0.1, 0.2, 0.3]])
    assert recall_at_k(sim, 1) == pytest.approx(2 / 3)
    assert recall_at_k(sim, 2) == 1.0 and recall_at_k(sim.T, 1) == 1.0  # text 1 finds image 1
    for k in (0, 4, 1.5):
        with pytest.raises(ValueError, match="k must be"):
            recall_at_k(sim, k)


def test_zero_shot_with_prompt_ensembling_on_hand_made_embeddings():
    table = {"a red thing": [1.0, 0.0], "a red shape": [0.8, 0.6], "a blue thing": [0.0, 1.0], "a blue shape": [0.6, 0.8]}
    embed = lambda texts: torch.tensor([table[t] for t in texts])  # noqa: E731
    classes = class_embeddings(embed, ["red", "blue"], ["a {} thing", "a {} shape"])
    assert torch.allclose(classes[0], F.normalize(torch.tensor([0.9, 0.3]), dim=0))
    logits = zero_shot_logits(torch.tensor([[1.0, 0.1], [0.0, 2.0]]), classes)
    assert logits.argmax(1).tolist() == [0, 1]
    with pytest.raises(ValueError, match="'\\{\\}'"):
        class_embeddings(embed, ["red"], ["a red thing"])


def test_modality_gap_and_linear_probe():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert modality_gap(a, b) == pytest.approx(math.sqrt(2)) and modality_gap(a, a) == 0
    torch.manual_seed(3)
    x = torch.randn(200, 5)
    y = (x[:, 0] > 0).long()
    probe = linear_probe(x, y, 2)
    assert (probe(x).argmax(1) == y).float().mean() > 0.97


def test_dual_encoder_embeddings_and_scale_clamp():
    model = DualEncoder(ImageCNN(16, channels=(8,)), BagOfEmbeddings(20, 16), embed_dim=8)
    img, txt = model({"image": torch.rand(3, 3, 32, 32), "tokens": torch.tensor([[4, 5], [6, 0], [7, 8]])})
    assert img.shape == txt.shape == (3, 8) and torch.allclose(img.norm(dim=1), torch.ones(3))
    assert model.scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.log_scale.fill_(10.0)
    assert model.scale.item() == 100.0
    model.clamp_scale()
    assert model.log_scale.item() == pytest.approx(math.log(100))
    with pytest.raises(ValueError, match=r"needs the batch entries \['image', 'tokens'\]"):
        model({"image": torch.rand(3, 3, 32, 32)})


def test_checkpoints_round_trip_and_fail_clearly(tmp_path):
    model = DualEncoder(ImageCNN(16, channels=(8,)), BagOfEmbeddings(20, 16), embed_dim=8)
    optimizer = torch.optim.AdamW(model.parameters())
    model.loss({"image": torch.rand(4, 3, 32, 32), "tokens": torch.randint(4, 20, (4, 3))})["loss"].backward()
    optimizer.step()
    path = save_checkpoint(model, tmp_path / "m.pt", optimizer=optimizer, step=5, note="x")
    other = DualEncoder(ImageCNN(16, channels=(8,)), BagOfEmbeddings(20, 16), embed_dim=8)
    other_opt = torch.optim.AdamW(other.parameters())
    assert load_checkpoint(other, path, other_opt) == {"note": "x", "step": 5}
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), other.state_dict().values()))
    moments = [s["exp_avg"] for s in other_opt.state.values()]
    assert moments and all(torch.equal(a, s["exp_avg"]) for a, s in zip(moments, optimizer.state.values()))
    with pytest.raises(ValueError, match="does not fit this model"):
        load_checkpoint(DualEncoder(ImageCNN(16, channels=(8,)), BagOfEmbeddings(20, 16), embed_dim=4), path)
    save_checkpoint(model, tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="no optimiser state"):
        load_checkpoint(other, tmp_path / "weights.pt", other_opt)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(other, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="no checkpoint"):
        load_checkpoint(other, tmp_path / "missing.pt")


def test_few_shot_indices_are_balanced_seeded_and_checked():
    from mmlib.data import few_shot_indices

    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    idx = few_shot_indices(labels, 2, seed=1)
    assert sorted(labels[idx].tolist()) == [0, 0, 1, 1, 2, 2]
    assert torch.equal(idx, few_shot_indices(labels, 2, seed=1))
    with pytest.raises(ValueError, match="only 2 examples, fewer than k=3"):
        few_shot_indices(labels, 3)
    with pytest.raises(ValueError, match="positive integer"):
        few_shot_indices(labels, 0)


def test_pretraining_objectives_run_and_zero_shot_scores_have_the_right_shape():
    from mmlib.data import make_dataset
    from mmlib.pretrain import OBJECTIVES, make_pretraining_model, pretrain
    from mmlib.zeroshot import zero_shot_scores

    data = make_dataset("pairs", 64, seed=0)
    pairs = [("red", "circle"), ("blue", "square"), ("green", "star")]
    for objective in OBJECTIVES:
        model = make_pretraining_model(objective, ImageCNN(16, channels=(8,)), data.tokenizer,
                                       text_encoder=BagOfEmbeddings(len(data.tokenizer), 16), embed_dim=8)
        history = pretrain(model, data, epochs=1, batch_size=16, progress=False, device="cpu",
                           evaluate=lambda m: 0.5, eval_every=2)
        assert len(history.loss) == 4 and all(math.isfinite(v) for v in history.loss)
        assert [seen for seen, _ in history.evals] == [32, 64]
        scores = zero_shot_scores(model, torch.rand(5, 3, 32, 32), pairs, data.tokenizer, templates=("a {}", "a small {}"))
        assert scores.shape == (5, 3) and torch.isfinite(scores).all()
    with pytest.raises(ValueError, match="unknown objective"):
        make_pretraining_model("masking", ImageCNN(16, channels=(8,)), data.tokenizer)
    with pytest.raises(ValueError, match="needs image-caption pairs"):
        pretrain(model, make_dataset("attributes", 8), progress=False)


@pytest.mark.parametrize("objective,options", [("contrastive", {}), ("contrastive", {"loss": "siglip"}),
                                               ("bag_of_words", {}), ("captioning", {})])
def test_every_objective_lowers_its_loss_on_a_tiny_batch(objective, options):
    """Ten steps on one batch of 16 pairs: a model that owns a wrong loss (or none) would not learn."""
    from mmlib.data import make_dataset
    from mmlib.pretrain import make_pretraining_model
    from mmlib.train import Optimisation, fit_steps

    data = make_dataset("pairs", 16, seed=0)
    torch.manual_seed(0)
    model = make_pretraining_model(objective, ImageCNN(16, channels=(8,)), data.tokenizer,
                                   text_encoder=BagOfEmbeddings(len(data.tokenizer), 16), embed_dim=8, **options)
    history = fit_steps(model, data, steps=10, batch_size=16, optim=Optimisation(lr=1e-2, warmup=0.0), device="cpu",
                        progress=False)
    assert history.loss[-1] < 0.95 * history.loss[0], history.loss


def test_siglip_starts_at_scale_10_and_bias_minus_10_and_clip_never_trains_the_bias():
    siglip = DualEncoder(ImageCNN(16, channels=(8,)), BagOfEmbeddings(20, 16), embed_dim=8, loss="siglip")
    assert siglip.scale.item() == pytest.approx(10.0) and siglip.bias.item() == -10.0 and siglip.bias.requires_grad
    clip = DualEncoder(ImageCNN(16, channels=(8,)), BagOfEmbeddings(20, 16), embed_dim=8)
    assert clip.scale.item() == pytest.approx(1 / 0.07, rel=1e-5) and not clip.bias.requires_grad
    with pytest.raises(ValueError, match="unknown contrastive loss 'infonce'"):
        DualEncoder(ImageCNN(16, channels=(8,)), BagOfEmbeddings(20, 16), loss="infonce")
    with pytest.raises(ValueError, match="needs the batch entries"):
        clip.loss({"image": torch.rand(2, 3, 32, 32)})


def test_captioning_model_shifts_and_scores_captions():
    tokenizer = Tokenizer.for_world()
    tokens = torch.tensor([[5, 6, 0], [7, 8, 9]])
    model = CaptioningModel(ImageCNN(16, channels=(8,)), tokenizer, dim=8).eval()
    inputs, targets = model.shift(tokens)
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    assert inputs.tolist() == [[bos, 5, 6, 0], [bos, 7, 8, 9]]
    assert targets.tolist() == [[5, 6, eos, 0], [7, 8, 9, eos]]
    ll = model.log_likelihood(torch.rand(2, 3, 32, 32), tokens)
    assert ll.shape == (2,) and (ll < 0).all()


def test_local_losses_average_to_the_global_batch_loss_and_gradients():
    """OpenCLIP's local_loss: N shards, each scoring its own rows against the whole batch."""
    from mmlib.objectives import clip_loss_local, siglip_loss_local

    torch.manual_seed(0)
    image = torch.randn(12, 8, requires_grad=True)
    text = torch.randn(12, 8, requires_grad=True)
    for full, local in ((lambda i, t: clip_loss(i, t, 5.0),
                         lambda s, i, t: clip_loss_local(i[s], t[s], i, t, s.start, 5.0)),
                        (lambda i, t: siglip_loss(i, t, 5.0, -2.0),
                         lambda s, i, t: siglip_loss_local(i[s], t, s.start, 5.0, -2.0))):
        expected = full(image, text)
        g_expected = torch.autograd.grad(expected, (image, text), allow_unused=True)
        shards = [slice(0, 4), slice(4, 8), slice(8, 12)]
        mean = sum(local(s, image, text) for s in shards) / len(shards)
        g_mean = torch.autograd.grad(mean, (image, text), allow_unused=True)
        assert torch.allclose(mean, expected, atol=1e-5)
        for a, b in zip(g_mean, g_expected):
            assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="offset"):
        clip_loss_local(image[:4], text[:4], image, text, offset=10)
