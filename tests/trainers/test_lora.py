from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distilld.trainers.job_spec import Hyperparameters
from distilld.trainers.lora import head_modules_for, parameter_counts, target_modules_for, wrap_with_lora


def test_target_modules_follow_the_architecture():
    assert target_modules_for("bert") == ["query", "value"]
    assert target_modules_for("distilbert") == ["q_lin", "v_lin"]
    assert target_modules_for("distilbert", ["k_lin"]) == ["k_lin"]
    assert head_modules_for("distilbert") == ["pre_classifier", "classifier"]


def test_merged_model_logits_equal_adapter_model_logits(tiny_student):
    tokenizer = AutoTokenizer.from_pretrained(tiny_student)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_student)
    peft_model = wrap_with_lora(model, Hyperparameters(lora_rank=4, lora_dropout=0.0))
    trainable, total = parameter_counts(peft_model)
    assert 0 < trainable < total
    # LoRA's B starts at zero; move every trainable weight so the merge has something to fold in
    torch.manual_seed(1)
    with torch.no_grad():
        for p in peft_model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    peft_model.eval()
    batch = tokenizer(["where is my parcel", "a plant with green leaves"], padding=True, return_tensors="pt")
    with torch.no_grad():
        adapter_logits = peft_model(**batch).logits
        base_logits = AutoModelForSequenceClassification.from_pretrained(tiny_student).eval()(**batch).logits
        merged_logits = peft_model.merge_and_unload()(**batch).logits
    assert not torch.allclose(adapter_logits, base_logits, atol=1e-4)
    torch.testing.assert_close(merged_logits, adapter_logits, atol=1e-5, rtol=1e-5)
