"""PEFT LoRA on a sequence-classification student.

Target modules are picked by architecture because PEFT has no default for
DistilBERT, and the classifier head must be trained in full (``modules_to_save``):
a new traffic mix moves the decision boundaries, which low-rank updates of
attention alone reach slowly. PEFT's ``hotswap_adapter`` fails on sequence
classifiers (peft issue #3581), so candidates are exported merged instead.
"""

from __future__ import annotations

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from torch import nn

from distilld.trainers.job_spec import Hyperparameters

TARGET_MODULES_BY_MODEL_TYPE: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
}
HEAD_MODULES_BY_MODEL_TYPE: dict[str, list[str]] = {
    "bert": ["classifier"],
    "roberta": ["classifier"],
    "xlm-roberta": ["classifier"],
    "distilbert": ["pre_classifier", "classifier"],
}


class UnsupportedArchitecture(ValueError):
    pass


def target_modules_for(model_type: str, override: list[str] | None = None) -> list[str]:
    if override:
        return list(override)
    try:
        return list(TARGET_MODULES_BY_MODEL_TYPE[model_type])
    except KeyError:
        raise UnsupportedArchitecture(
            f"no default LoRA target modules for model_type {model_type!r}; set hyperparameters.target_modules"
        ) from None


def head_modules_for(model_type: str, override: list[str] | None = None) -> list[str]:
    if override is not None:
        return list(override)
    return list(HEAD_MODULES_BY_MODEL_TYPE.get(model_type, ["classifier"]))


def lora_config_for(model: nn.Module, hp: Hyperparameters) -> LoraConfig:
    model_type = model.config.model_type
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=hp.lora_rank,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=target_modules_for(model_type, hp.target_modules),
        modules_to_save=head_modules_for(model_type, hp.modules_to_save),
    )


def wrap_with_lora(model: nn.Module, hp: Hyperparameters) -> PeftModel:
    """Freeze ``model`` and add LoRA adapters plus a trainable copy of its head."""
    return get_peft_model(model, lora_config_for(model, hp))


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; LoRA's frozen base weights count in the total."""
    if isinstance(model, PeftModel):
        return model.get_nb_trainable_parameters()
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
