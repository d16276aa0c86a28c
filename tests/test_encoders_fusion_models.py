"""mmlib.encoders, mmlib.fusion, mmlib.models and mmlib.train.fit: shapes, masks, gradients, errors."""

import pytest
import torch

from mmlib.data import make_dataset
from mmlib.encoders import AudioCNN, BagOfEmbeddings, Features, ImageCNN, TextGRU, TextTransformer, TinyViT
from mmlib.fusion import FUSIONS, LowRankFusion, make_fusion
from mmlib.models import MultimodalModel
from mmlib.train import evaluate, fit

V = 40
torch.manual_seed(0)
IMAGES = torch.rand(5, 3, 32, 32)
TOKENS = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12], [3, 0, 0, 0, 0], [4, 5, 0, 0, 0], [6, 6, 6, 6, 0]])
SOUNDS = torch.randn(5, 4000) * 0.1

ENCODERS = {
    "cnn": (lambda: ImageCNN(32), IMAGES, 64),
    "vit": (lambda: TinyViT(32, patch=8), IMAGES, 16),
    "bag": (lambda: BagOfEmbeddings(V, 32), TOKENS, 5),
    "gru": (lambda: TextGRU(V, 32), TOKENS, 5),
    "transformer": (lambda: TextTransformer(V, 32), TOKENS, 5),
    "audio": (lambda: AudioCNN(32), SOUNDS, 32),
}


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_interface_shapes(name):
    make, x, n_tokens = ENCODERS[name]
    enc = make().eval()
    f = enc.encode(x)
    assert f.pooled.shape == (5, 32) and f.tokens.shape == (5, n_tokens, 32) and f.mask.shape == (5, n_tokens)
    assert torch.allclose(enc(x), f.pooled)


@pytest.mark.parametrize("name", ["bag", "gru", "transformer"])
def test_text_encoders_ignore_padding(name):
    enc = ENCODERS[name][0]().eval()
    short = torch.tensor([[5, 6, 7]])
    padded = torch.tensor([[5, 6, 7, 0, 0, 0]])
    assert torch.allclose(enc(short), enc(padded), atol=1e-5)


def test_word_order_matters_to_the_gru_not_to_the_bag():
    a, b = torch.tensor([[5, 6, 7]]), torch.tensor([[7, 6, 5]])
    bag, gru = BagOfEmbeddings(V, 16), TextGRU(V, 16)
    assert torch.allclose(bag(a), bag(b), atol=1e-6)
    assert not torch.allclose(gru(a), gru(b), atol=1e-4)


@pytest.mark.parametrize("x,match", [
    (torch.rand(3, 32, 32), "forget the batch dimension"),
    (torch.rand(2, 1, 32, 32), r"\(B, 3, H, W\)"),
    (torch.rand(2, 3, 16, 16), r"\(B, 3, 32, 32\)"),
    ((torch.rand(2, 3, 32, 32) * 255).to(torch.uint8), "divide uint8 images by 255"),
    (torch.rand(0, 3, 32, 32), "empty batch"),
])
def test_image_encoders_reject_bad_images(x, match):
    for enc in (ImageCNN(16), TinyViT(16, patch=8)):
        with pytest.raises(ValueError, match=match):
            enc(x)


@pytest.mark.parametrize("x,match", [
    (torch.rand(2, 5), "integer tensor"), (torch.tensor([1, 2, 3]), r"\(B, L\)"),
    (torch.tensor([[1, 2, 99]]), "outside the vocabulary of 40"), (torch.zeros(2, 0, dtype=torch.long), "empty"),
])
def test_text_encoders_reject_bad_tokens(x, match):
    for enc in (BagOfEmbeddings(V, 16), TextGRU(V, 16), TextTransformer(V, 16)):
        with pytest.raises(ValueError, match=match):
            enc(x)


def test_audio_encoder_rejects_images():
    with pytest.raises(ValueError, match=r"\(B, samples\)"):
        AudioCNN(16)(IMAGES)


def feats(dims, batch=4, n=6):
    return [Features(torch.randn(batch, d), torch.randn(batch, n, d), torch.ones(batch, n, dtype=torch.bool)) for d in dims]


@pytest.mark.parametrize("name", FUSIONS + ("single",))
@pytest.mark.parametrize("dims", [[16, 24], [16, 24, 8]])
def test_every_fusion_parameter_receives_a_gradient(name, dims):
    fusion = make_fusion(name, dims, 12)
    out = fusion(feats(dims))
    assert out.shape == (4, 12)
    (out ** 2).sum().backward()
    for pname, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: {pname} gets no gradient"


@pytest.mark.parametrize("name", FUSIONS + ("single",))
def test_every_fusion_copes_with_a_missing_modality(name):
    dims = [16, 24, 8]
    fusion = make_fusion(name, dims, 12)
    f = feats(dims)
    for missing in range(3):
        g = list(f)
        g[missing] = None
        out = fusion(g)
        assert out.shape == (4, 12) and torch.isfinite(out).all()


def test_late_fusion_with_one_modality_left_is_that_modality_alone():
    fusion = make_fusion("late", [16, 24], 5)
    f = feats([16, 24])
    alone = fusion.heads[0](f[0].pooled).log_softmax(-1)
    assert torch.allclose(fusion([f[0], None]), alone, atol=1e-5)


def test_gmu_is_the_papers_per_dimension_gate():
    """Arevalo et al. (2017), eq. 1-4: h = z * tanh(W_v x_v) + (1 - z) * tanh(W_t x_t),
    z = sigmoid(W_z [x_v; x_t]), one gate value per output dimension."""
    fusion = make_fusion("gmu", [16, 24], 12)
    f = feats([16, 24])
    x_v, x_t = f[0].pooled, f[1].pooled
    h_v, h_t = torch.tanh(fusion.proj[0](x_v)), torch.tanh(fusion.proj[1](x_t))
    z = torch.sigmoid(x_v @ fusion.gate.weight[:, :16].T + x_t @ fusion.gate.weight[:, 16:].T
                      + fusion.gate.bias)
    assert z.shape == (4, 12)  # per dimension, not one weight per modality
    assert torch.allclose(fusion(f), z * h_v + (1 - z) * h_t, atol=1e-6)
    # one modality missing: the other passes through whole
    assert torch.allclose(fusion([f[0], None]), h_v, atol=1e-6)


def test_lowrank_factors_are_registered_parameters():
    fusion = LowRankFusion([16, 24], 12, rank=4)
    n_params = sum(p.numel() for p in fusion.parameters())
    assert n_params == 4 * 17 * 12 + 4 * 25 * 12 + 4 + 12


def test_tensor_fusion_size_grows_as_the_product():
    fusion = make_fusion("tensor", [16, 24, 8], 12, proj=5)
    assert fusion.out[0].in_features == 6 ** 3


def test_cross_attention_weights_are_distributions_over_the_other_tokens():
    fusion = make_fusion("xattn", [16, 16], 12)
    f = feats([16, 16])
    f[1].mask[:, 4:] = False  # the last two tokens of modality 1 are padding
    fusion(f)
    w = fusion.last_attention[0]  # modality 0 attending to modality 1
    assert w.shape == (4, 6, 6) and torch.allclose(w.sum(-1), torch.ones(4, 6), atol=1e-5)
    assert w[..., 4:].abs().max() == 0


@pytest.mark.parametrize("bad,match", [
    (lambda f: f[:1], "list of 2 modalities"),
    (lambda f: [f[0], torch.randn(4, 7)], r"modality 1: expected features of shape \(4, 24\)"),
    (lambda f: [None, None], "every modality is missing"),
    (lambda f: [f[0], torch.randn(4, 3, 24)], "Features or"),
])
def test_fusion_bad_input(bad, match):
    fusion = make_fusion("concat", [16, 24], 12)
    with pytest.raises(ValueError, match=match):
        fusion(bad(feats([16, 24])))


def test_fusion_bad_construction():
    with pytest.raises(ValueError, match="unknown fusion 'sum'"):
        make_fusion("sum", [8, 8], 4)
    with pytest.raises(ValueError, match="at least two"):
        make_fusion("concat", [8], 4)


# --- the four-layer model -------------------------------------------------------------------

def small_model(fusion="concat", modalities=("image", "text", "audio"), **kw):
    encoders = {"image": ImageCNN(16, channels=(8, 16)), "text": BagOfEmbeddings(V, 16), "audio": AudioCNN(16)}
    return MultimodalModel({m: encoders[m] for m in modalities}, n_classes=3, fusion=fusion, fused_dim=16, **kw)


BATCH = {"image": IMAGES, "tokens": TOKENS, "sound": SOUNDS}


@pytest.mark.parametrize("fusion", FUSIONS)
def test_model_with_three_modalities_and_one_missing(fusion):
    """A missing modality's values never reach the output: replace them by anything, or leave
    them out of the batch, and the prediction is the same; the present modalities still count."""
    model = small_model(fusion).eval()
    assert model(BATCH).shape == (5, 3)
    noise = {"image": torch.rand_like(IMAGES), "tokens": TOKENS.flip(0), "sound": torch.randn_like(SOUNDS)}
    key = {"image": "image", "text": "tokens", "audio": "sound"}
    for missing in ("image", "text", "audio"):
        out = model(BATCH, missing=[missing])
        scrambled = {**BATCH, key[missing]: noise[key[missing]]}
        assert torch.allclose(model(scrambled, missing=[missing]), out, atol=1e-6), f"{missing} leaked"
        present = next(m for m in ("image", "text", "audio") if m != missing)
        changed = {**BATCH, key[present]: noise[key[present]]}
        assert not torch.allclose(model(changed, missing=[missing]), out), f"{present} ignored"
    assert torch.allclose(model({"image": IMAGES, "tokens": TOKENS}, missing=["audio"]),
                          model(BATCH, missing=["audio"]), atol=1e-6), "absent from the batch = missing"


def test_model_trace_names_the_four_layers():
    shapes = small_model("xattn", ("image", "text")).trace(BATCH)
    assert shapes["input: image"] == (5, 3, 32, 32) and shapes["input: text"] == (5, 5)
    assert shapes["features: image (pooled)"] == (5, 16) and shapes["features: image (tokens)"] == (5, 64, 16)
    assert shapes["fusion"] == (5, 16) and shapes["output"] == (5, 3)


def test_unimodal_model_works():
    assert small_model(modalities=("text",))(BATCH).shape == (5, 3)


@pytest.mark.parametrize("call,match", [
    (lambda m: m({"image": IMAGES}), "no 'tokens' entry for the text modality"),
    (lambda m: m(BATCH, missing=["video"]), "cannot leave out"),
    (lambda m: m(BATCH, missing=["image", "text"]), "every modality is missing"),
])
def test_model_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(small_model(modalities=("image", "text")))


def test_model_bad_construction():
    with pytest.raises(ValueError, match="unknown modality 'smell'"):
        MultimodalModel({"smell": BagOfEmbeddings(V, 8)}, 2)
    with pytest.raises(ValueError, match="at least one encoder"):
        MultimodalModel({}, 2)
    with pytest.raises(ValueError, match="probability"):
        small_model(modality_dropout=1.0)


def test_modality_dropout_hides_one_modality_at_a_time_and_only_while_training():
    torch.manual_seed(0)
    model = small_model("late", ("image", "text"), modality_dropout=0.6).train()
    alone = {m: model(BATCH, missing=[m]) for m in ("image", "text")}
    with torch.no_grad():
        seen = [next((m for m, out in alone.items() if torch.allclose(model(BATCH), out)), "both")
                for _ in range(60)]
    assert {"image", "text", "both"} <= set(seen), "each modality is sometimes hidden, sometimes neither"
    model.eval()
    assert all(torch.equal(model(BATCH), model(BATCH)) for _ in range(5)), "no dropout at evaluation"


@pytest.mark.parametrize("fusion", ["film", "xattn"])
def test_cached_features_of_a_locked_encoder_give_the_same_outputs(fusion):
    """with_features computes a locked encoder's features once; a model fed them computes what it
    computes from the pixels, in training mode too (the locked BatchNorm does not move), with the
    image still removable; an encoder that trains, or a modality the model lacks, is refused."""
    from mmlib.freezing import lock

    qa = make_dataset("qa", 40, seed=2, question_types=("color",))
    torch.manual_seed(0)
    model = MultimodalModel({"image": lock(ImageCNN(16, channels=(8,))), "text": BagOfEmbeddings(len(qa.tokenizer), 8)},
                            n_classes=7, fusion=fusion, fused_dim=16).train()
    cached = model.with_features(qa, batch_size=16)
    index = torch.tensor([3, 0, 17, 39])
    plain, fast = qa.batch(index), cached.batch(index)
    assert torch.allclose(model(fast), model(plain), atol=1e-6)
    fast["image"] = torch.rand_like(fast["image"])  # the pixels are not read again
    assert torch.allclose(model(fast), model(plain), atol=1e-6)
    assert torch.allclose(model(fast, missing=["image"]), model(plain, missing=["image"]), atol=1e-6)
    with pytest.raises(ValueError, match="no 'audio' encoder"):
        model.with_features(qa, "audio")
    trainable = MultimodalModel({"image": ImageCNN(16, channels=(8,)), "text": BagOfEmbeddings(len(qa.tokenizer), 8)},
                                n_classes=7)
    with pytest.raises(ValueError, match="locked image encoder"):
        trainable.with_features(qa)


# --- training -------------------------------------------------------------------------------

def test_fit_learns_colour_from_images_and_is_deterministic():
    train = make_dataset("attributes", 2000, seed=1)
    test = make_dataset("attributes", 300, split="test", seed=1)

    def run():
        torch.manual_seed(0)
        model = MultimodalModel({"image": ImageCNN(16, channels=(8, 16))}, n_classes=8, fused_dim=32)
        history = fit(model, train, "color", epochs=3, batch_size=64, lr=3e-3, val_data=test, progress=False, device="cpu")
        return model, history

    model, h1 = run()
    _, h2 = run()
    assert h1.loss == h2.loss
    assert h1.loss[-1] < h1.loss[0]
    assert evaluate(model, test, "color") == h1.val_acc[-1] > 0.8


def test_fit_and_evaluate_bad_arguments():
    data = make_dataset("attributes", 20)
    model = MultimodalModel({"image": ImageCNN(8, channels=(8,))}, n_classes=8)
    with pytest.raises(ValueError, match="no label 'answer'"):
        fit(model, data, "answer", progress=False)
    with pytest.raises(ValueError, match="epochs"):
        fit(model, data, "color", epochs=0, progress=False)
    with pytest.raises(ValueError, match="no label 'match'"):
        evaluate(model, data, "match")


def test_single_stream_sees_across_modalities_and_ignores_padding():
    fusion = make_fusion("single", [16, 16], 12).eval()
    f = feats([16, 16])
    base = fusion(f)
    changed = [f[0], Features(f[1].pooled, f[1].tokens + 1.0, f[1].mask)]
    assert not torch.allclose(fusion(changed), base)  # modality 1's tokens reach the output
    f[1].mask[:, 4:] = False
    padded = [f[0], Features(f[1].pooled, torch.cat([f[1].tokens[:, :4], torch.randn(4, 2, 16)], 1), f[1].mask)]
    assert torch.allclose(fusion(f), fusion(padded), atol=1e-5)  # padding tokens do not
