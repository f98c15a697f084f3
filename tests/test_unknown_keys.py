"""A command-line key the composed config does not have is answered with one paragraph listing the
keys its node has (Hydra alone says "Key 'x' is not in struct"), before any work starts."""

from __future__ import annotations

import pytest

from visionbench.cli import check_override_keys
from visionbench.errors import ConfigError


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["scheduler=cosine", "scheduler.step_size=1"],
            ["scheduler.step_size is not a key of scheduler", "warmup_epochs, warmup_start_factor, eta_min", "scheduler=torch"],
        ),
        (["trainer.max_epoch=1"], ["Did you mean trainer.max_epochs?", "+trainer.max_epoch="]),
        (["-m", "model=cnn,resnet_small", "task.data.augment.zom=0.2"], ["Did you mean task.data.augment.zoom?"]),
        (
            ["experiment=simpsons_fast", "model.net.widht=16"],
            ["model.net.widht is not a key of model.net", "Did you mean model.net.width?"],
        ),
        (["model=cnn", "sede=3"], ["sede is not a key of the train config", "Did you mean seed?", "+sede="]),
    ],
)
def test_an_unknown_key_is_one_paragraph_listing_the_keys_its_node_has(argv: list[str], expected: list[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        check_override_keys("train", argv)
    assert all(text in str(raised.value) for text in expected), str(raised.value)


@pytest.mark.parametrize(
    "argv",
    [
        ["task=shapes", "trainer.max_epochs=2", "optimizer.lr=0.01"],
        ["scheduler=torch", "scheduler._target_=torch.optim.lr_scheduler.StepLR", "+scheduler.step_size=1"],
        ["-m", "experiment=seed_cnn,seed_resnet_small", "model.net.init=he", "seed=1,2"],
        ["model=fcn", "task=voc", "model.net.pretrained=true", "hydra.run.dir=/tmp/x"],
        ["seed=3", "ema_decay=0.99", "channels_last=true", "debug=fdr"],
    ],
)
def test_keys_the_config_has_added_or_of_hydra_pass(argv: list[str]) -> None:
    check_override_keys("train", argv)


@pytest.mark.parametrize(
    ("config_name", "argv", "expected"),
    [
        ("export", ["tolerence=1"], "Did you mean tolerance?"),
        ("predict", ["tok_k=1"], "Did you mean top_k?"),
        (
            "eval",
            ["ckpt_path=x.ckpt", "task.data.num_workers=1"],
            r"task.data is not set in the eval config.*\+task.data.num_workers=\.\.\.",
        ),
    ],
)
def test_a_misspelt_or_unset_key_of_any_entry_point_is_one_paragraph(config_name: str, argv: list[str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        check_override_keys(config_name, argv)
