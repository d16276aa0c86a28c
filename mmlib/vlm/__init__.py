"""A multimodal large language model at toy scale: a vision encoder, a
connector that turns image features into tokens, and a decoder-only language model that writes
the answer (chapters 7 to 9). The recipe of LLaVA, BLIP-2, Flamingo and their successors, one room per part, in
the order the chapters build it:

- ``mmlib.vlm.chat``        -- chat data: visual questions and descriptions as exchanges, the test sets
- ``mmlib.vlm.connectors``  -- connectors: linear, MLP, resampler, instruction-aware, gated cross-attention
- ``mmlib.vlm.model``       -- ``VisionLanguageModel`` (frozen tower -> connector -> LM) and ``chat``
- ``mmlib.vlm.lora``        -- low-rank adapters
- ``mmlib.vlm.evaluation``  -- against the world's exact truth: accuracy, POPE, object F1, CHAIR
- ``mmlib.vlm.tuning``      -- training by recipe (``mmlib.recipes.VisionLanguageRecipe``), the shipped describer
- ``mmlib.vlm.preference``  -- preference tuning against hallucination (chapter 9b): pairs scored by the world, DPO
- ``mmlib.vlm.decoding``    -- visual contrastive decoding (chapter 9)
- ``mmlib.vlm.causes``      -- co-occurrence made a knob (chapter 9)
- ``mmlib.vlm.negatives``   -- negative instructions, a cure by data (chapter 9)
- ``mmlib.vlm.overoptimisation`` -- reward hacking: best-of-n against a learned reward (chapter 9b)

The language model itself is ``mmlib.lm.LanguageModel``. Everything above ``preference`` is importable
from ``mmlib.vlm``; import chapter 9's modules by name.
"""

from mmlib.vlm.chat import (CHAT_TOKENS, DESCRIBE, QUESTION_KINDS, TEST_SIZES, chat_sequences, chat_tokenizer,
                            description_data, descriptions_of, instruction_data, mix, question_type, test_sets)
from mmlib.vlm.connectors import (CONNECTORS, Connector, CrossAttentionConnector, GatedCrossAttention,
                                  InstructionResampler, LinearConnector, MLPConnector, Resampler, make_connector)
from mmlib.vlm.evaluation import (POPE_STRATEGIES, POPULAR_TOP_K, PROBE_SEED, accuracy_by_type, answer_cost, chair,
                                  chair_by_position,
                                  crossed_share, describe, pope_by_pair,
                                  description_scores, f1_by_count, majority_baseline, mentioned, ask_pope, pope_probes, pope_scores,
                                  popular_pairs, sampling_generator, vqa_accuracy)
from mmlib.vlm.lora import LoRALinear, add_lora, merge_lora
from mmlib.vlm.model import REGIONS, VisionLanguageModel, chat
from mmlib.vlm.tuning import (SHIPPED, align, alignment_data, describer_of, describer_record, language_model, pretrain_language_model,
                              pretrained_describer, pretrained_language_model, pretrained_vision_language_model,
                              retrain_hint, shipped_record, text_data, train_describer, train_vision_language_model, tune,
                              tuning_data, vision_language_model)

__all__ = ["align", "alignment_data", "answer_cost", "POPULAR_TOP_K", "crossed_share", "pope_by_pair", "CHAT_TOKENS", "DESCRIBE", "QUESTION_KINDS", "TEST_SIZES", "chat_sequences", "chat_tokenizer",
           "description_data", "descriptions_of", "instruction_data", "mix", "question_type", "test_sets",
           "CONNECTORS", "Connector", "CrossAttentionConnector", "GatedCrossAttention", "InstructionResampler",
           "LinearConnector", "MLPConnector", "Resampler", "make_connector", "POPE_STRATEGIES", "PROBE_SEED",
           "accuracy_by_type", "chair", "chair_by_position", "describe", "description_scores", "f1_by_count", "majority_baseline", "mentioned", "ask_pope", "pope_probes",
           "pope_scores", "popular_pairs", "sampling_generator", "vqa_accuracy", "LoRALinear", "add_lora", "merge_lora", "REGIONS", "VisionLanguageModel",
           "chat", "SHIPPED", "retrain_hint", "shipped_record", "pretrained_vision_language_model",
           "pretrained_language_model", "describer_of", "describer_record", "language_model", "pretrain_language_model", "pretrained_describer",
           "text_data", "train_describer", "train_vision_language_model", "tune", "tuning_data",
           "vision_language_model"]
