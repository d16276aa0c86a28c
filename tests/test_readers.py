"""mmlib.readers: the book's CLIP and describer read generated images (chapter 8)."""

import pytest
import torch

from mmlib import world
from mmlib.readers import clip_reading, described_as_asked, upsample


def test_upsample_repeats_each_pixel():
    x = torch.rand(2, 3, 16, 16)
    up = upsample(x)
    assert up.shape == (2, 3, 32, 32)
    for dy in (0, 1):
        for dx in (0, 1):
            assert torch.equal(up[..., dy::2, dx::2], x)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        upsample(torch.rand(3, 16, 16))


def test_described_as_asked_reads_the_description_back():
    class Describer:
        def answer(self, images, questions, max_new):
            self.seen = images.shape
            return ["a small red circle", "the red circle is left of the blue square", "a blue circle",
                    "nothing at all"]

    describer = Describer()
    ok, said = described_as_asked(describer, torch.zeros(4, 3, 16, 16), ["a red circle"] * 4)
    assert describer.seen == (4, 3, 32, 32), "the describer reads upsampled images"
    assert ok.tolist() == [True, False, False, False] and said[1].startswith("the red circle")


def test_clip_reading_names_and_retrieves_from_the_scores(monkeypatch):
    """With known zero-shot scores: image 0 and 1 were drawn for 'red circle', image 2 for 'blue
    square'. CLIP names image 0 and 2 right; for 'red circle' its two best images are 0 and 2
    (precision 1/2), for 'blue square' 2 and 1 (1/2)."""
    import mmlib.readers

    rc, bs = world.PAIRS.index(("red", "circle")), world.PAIRS.index(("blue", "square"))
    scores = torch.zeros(3, len(world.PAIRS))
    scores[0, rc], scores[1, bs], scores[2, bs] = 5.0, 2.0, 4.0
    scores[1, rc], scores[2, rc] = 1.0, 3.0
    monkeypatch.setattr(mmlib.readers, "zero_shot_scores", lambda *a, **k: scores)
    read = clip_reading(None, torch.zeros(3, 3, 16, 16), ["a red circle", "a small red circle", "a blue square"],
                          k=2)
    assert read["named"].tolist() == [True, False, True]
    assert read["retrieved"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one-object prompt"):
        clip_reading(None, torch.zeros(1, 3, 16, 16), ["a red circle and a blue square"])
