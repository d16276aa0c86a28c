"""Generating images from text, judged exactly (chapter 8): a caption goes in, pixels come out, the
*output layer* of the book's architecture made generative. One room per part:

- ``mmlib.generate.prompts``    -- prompts and their parser, captioned 16-pixel scenes, the evaluation prompts
- ``mmlib.generate.diffusion``  -- objectives (flow matching, DDPM) and samplers (Euler, DDIM, guidance)
- ``mmlib.generate.unet``       -- the U-Net denoiser: FiLM by time and caption, cross-attention to its words
- ``mmlib.generate.model``      -- ``TextToImage``, ``generate_images``, the book's generator by its recipe
- ``mmlib.generate.judge``      -- the judge, a trained reader of generated images, and its scores
- ``mmlib.generate.exact``      -- the exact reader (analysis by synthesis) that audits the judge

Images are 16 x 16 (a quarter of the pixels of 32 x 32, and still every attribute is readable),
scaled to [-1, 1] inside the model. Chapter 4's CLIP and chapter 7b's describer read the same
images in ``mmlib.readers``. Everything here is importable from ``mmlib.generate``.
"""

from mmlib.generate.diffusion import (DDPMSchedule, check_steps, ddim, ddpm_loss, ddpm_noised, euler,
                                      flow_data_loss, flow_matching_loss, flow_path, guide, velocity_from_data)
from mmlib.generate.exact import ExactReader, degraded
from mmlib.generate.judge import (TEST_RENDERS, TEST_SEED, Judge, diversity, faithful_each, faithful_reading, faithfulness, judge_accuracy,
                                  judge_data, judge_record, judge_test_data, judged_as_asked, pretrained_judge,
                                  RETRAIN_JUDGE, train_judge)
from mmlib.generate.model import (GUIDANCE, OBJECTIVES, STEPS, TARGETS, TEXT_ENCODERS, WEIGHTS, TextToImage,
                                  generate_images, generator_data, generator_model, generator_record, pretrained_generator, retrain_hint,
                                  train_generator, weights_path)
from mmlib.generate.prompts import (IMAGE_SIZE, MARGIN, asked_pairs, clear_scenes, evaluation_prompts,
                                    free_prompts, generation_data, mixed_scenes, parse_prompt, prompt_for, prompts)
from mmlib.generate.unet import CrossAttention, FiLMBlock, UNet, time_embedding

__all__ = ["DDPMSchedule", "check_steps", "ddim", "ddpm_loss", "ddpm_noised", "euler", "flow_data_loss", "flow_matching_loss",
           "flow_path", "guide", "velocity_from_data", "ExactReader", "degraded", "Judge", "diversity", "faithful_each", "faithful_reading", "faithfulness", "judge_accuracy",
           "judge_data", "judge_test_data", "TEST_RENDERS", "TEST_SEED", "judged_as_asked", "train_judge", "RETRAIN_JUDGE", "pretrained_judge", "judge_record", "GUIDANCE", "OBJECTIVES", "STEPS", "TARGETS",
           "TEXT_ENCODERS", "WEIGHTS", "TextToImage", "generate_images", "generator_data", "generator_model", "generator_record", "pretrained_generator",
           "retrain_hint", "train_generator", "weights_path", "IMAGE_SIZE", "MARGIN", "asked_pairs",
           "clear_scenes", "evaluation_prompts", "free_prompts", "generation_data", "mixed_scenes", "parse_prompt",
           "prompt_for", "prompts", "CrossAttention", "FiLMBlock", "UNet", "time_embedding"]
