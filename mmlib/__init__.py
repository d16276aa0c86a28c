"""mmlib: the small, tested library behind *Multimodal Large Models: Principles and Practice*.

Each module is named after the concept the book teaches with it, and holds that one concept;
lower layers never import higher ones (``tests/test_architecture.py`` keeps it so):

- ``mmlib.spectrogram`` -- sound as an image: the log-mel spectrogram
- ``mmlib.algorithms`` -- convolution, GRU cell and attention by hand (chapter 3)
- ``mmlib.objectives`` -- CLIP, SigLIP, matching, bag-of-words and captioning losses (chapter 4)
- ``mmlib.alignment`` -- preference tuning: DPO's loss on sequence log-probabilities, best-of-n (chapter 9b)
- ``mmlib.metrics``  -- recall@k, zero-shot logits, linear probe, modality gap
- ``mmlib.distributed`` -- all-gather with gradients, joining a process group, launching (chapter 6)
- ``mmlib.lm``       -- a decoder-only language model with a key-value cache (chapter 7)
- ``mmlib.checkpoint`` -- saving and loading weights; the cache of trained weights
- ``mmlib.freezing`` -- which weights learn: freeze, lock, count
- ``mmlib.world``    -- the procedural world: scenes as images, captions and sounds (chapter *world*)
- ``mmlib.plot``     -- the book's colours, figure style and figures
- ``mmlib.timeline`` -- the timeline of multimodal models as validated data (chapter 1)
- ``mmlib.text``     -- the tokenizer for the world's captions
- ``mmlib.data``     -- datasets per task, with i.i.d. and compositional splits; the batch contract
- ``mmlib.encoders`` -- feature extraction: image CNN, tiny ViT, text GRU/Transformer/bag, audio CNN
- ``mmlib.fusion``   -- seven fusion layers with one interface (chapter 3 compares them)
- ``mmlib.train``    -- the one training loop (``fit_steps``), its optimiser settings, History, EMA
- ``mmlib.recipes``  -- every trained model and every compared setting, as values: written once
- ``mmlib.shipped``  -- weights shipped with mmlib, for recipes longer than a chapter
- ``mmlib.notebook`` -- the setup every chapter starts with, ``glue``, tables
- ``mmlib.models``   -- the four-layer MultimodalModel (chapters 2-3) and the pretraining models
- ``mmlib.zeroshot`` -- zero-shot classification from prompts (chapter 4)
- ``mmlib.transfer`` -- linear probes, fine-tuning, LP-FT, new domains (chapter 5)
- ``mmlib.pretrain`` -- the book's CLIP, its cache, chapter 4b's and LiT's comparisons, the command line
- ``mmlib.vlm``      -- a vision-language model from parts (chapters 7, 7b, 7c)
- ``mmlib.generate`` -- text to image: flow matching, samplers, guidance, the judge (chapter 8)
- ``mmlib.readers``  -- the book's other models read generated images (chapter 8)
- ``mmlib.claims``   -- every ranked claim: its recipes, its measurement, its seed spread
"""

__version__ = "0.1.0"

REPOSITORY = "https://github.com/multimodal-book/multimodal-large-models"
"""The book's repository: the README, the Colab launch button and each notebook's install cell
use this URL (a test keeps them in step)."""

__all__ = ["REPOSITORY", "setup", "__version__"]


def setup(seed: int = 0, verbose: bool = True, chapter: str | None = None):
    """Seed everything, choose the device, set the book's figure style; return the device.

    The first line of every chapter (``device = mmlib.setup(seed=0, chapter="05_transfer")``); see
    ``mmlib.notebook``.
    Imported here on first call, so that ``import mmlib.world`` stays light."""
    from mmlib.notebook import setup as _setup

    return _setup(seed, verbose, chapter)
