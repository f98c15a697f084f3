"""ClassificationTask: the auxiliary heads' weighted loss counts in training only; compiling is announced;
prediction ranks every class by its softmax probability; evaluation reports the plain cross-entropy and,
on request, flip TTA beside the plain scores; the small networks' head init starts near chance."""

from __future__ import annotations

import logging
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from visionbench.errors import ConfigError
from visionbench.models.cnn import PlainCNN
from visionbench.models.inception import InceptionV1
from visionbench.models.resnet_small import SmallResNet
from visionbench.tasks.classification import ClassificationTask


def test_inception_training_loss_adds_the_aux_heads_weighted_0_3_and_eval_sees_none() -> None:
    torch.manual_seed(0)
    net = InceptionV1(num_classes=5)
    task = ClassificationTask(net, num_classes=5, optimizer=partial(torch.optim.SGD, lr=0.1))
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 3])
    task.train()
    torch.manual_seed(1)
    logits, loss = task.training_loss(x, y)
    torch.manual_seed(1)  # same dropout masks
    out = net(x)
    expected = F.cross_entropy(out.logits, y) + 0.3 * (F.cross_entropy(out.aux[0], y) + F.cross_entropy(out.aux[1], y))
    assert out.aux_weight == 0.3 and len(out.aux) == 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() > F.cross_entropy(logits, y).item()
    task.eval()
    assert isinstance(task(x), torch.Tensor)  # no auxiliary outputs outside training


def test_compile_says_that_the_first_steps_will_be_slow(caplog: pytest.LogCaptureFixture) -> None:
    task = ClassificationTask(torch.nn.Linear(4, 2), num_classes=2, optimizer=partial(torch.optim.SGD, lr=0.1), compile=True)
    with caplog.at_level(logging.INFO, logger="visionbench.tasks.base"):
        task.configure_model()
    assert "compile=true: the first training and evaluation steps compile the network" in caplog.text


def test_predict_step_ranks_every_class_by_probability_ties_in_class_order() -> None:
    task = ClassificationTask(torch.nn.Identity(), num_classes=4, optimizer=partial(torch.optim.SGD, lr=0.1))
    logits = torch.tensor([[0.0, 2.0, 1.0, 2.0], [3.0, 0.0, 0.0, 1.0]])
    ranking = task.predict_step((logits,), 0)
    assert ranking.classes.tolist() == [[1, 3, 2, 0], [0, 3, 1, 2]]
    torch.testing.assert_close(ranking.probabilities, logits.softmax(1).sort(dim=1, descending=True).values)


def _evaluated(task: ClassificationTask, x: torch.Tensor, y: torch.Tensor) -> ClassificationTask:
    task.eval()
    with torch.no_grad(), pytest.warns(UserWarning, match="self.log"):  # no Trainer: the metrics are read directly
        task.validation_step((x, y), 0)
    return task


def test_validation_loss_is_the_plain_cross_entropy_whatever_the_label_smoothing() -> None:
    """Recipes with and without smoothing report losses on one scale."""
    torch.manual_seed(0)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    task = _evaluated(ClassificationTask(torch.nn.Linear(4, 3), num_classes=3, optimizer=torch.optim.SGD, label_smoothing=0.1), x, y)
    plain = F.cross_entropy(task.net(x), y)
    assert task.val_loss.compute().item() == pytest.approx(plain.item(), rel=1e-5)
    assert plain.item() != pytest.approx(F.cross_entropy(task.net(x), y, label_smoothing=0.1).item(), rel=1e-3)


class LeftHalf(torch.nn.Module):
    """Logits that differ between an image and its mirror: class 0 when the left half is brighter."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        left, right = x[..., :half].mean(dim=(1, 2, 3)), x[..., half:].mean(dim=(1, 2, 3))
        return torch.stack([4 * (left - right), torch.zeros_like(left), 3 * left], dim=1)


def test_flip_tta_scores_the_mean_softmax_of_the_image_and_its_mirror_beside_the_plain_scores() -> None:
    torch.manual_seed(0)
    x, y = torch.rand(8, 3, 4, 6), torch.randint(0, 3, (8,))
    task = _evaluated(ClassificationTask(LeftHalf(), num_classes=3, optimizer=torch.optim.SGD, tta="flip"), x, y)
    net = LeftHalf()
    expected = (net(x).softmax(1) + net(x.flip(-1)).softmax(1)) / 2
    torch.testing.assert_close(task.flip_tta_probabilities(x, net(x)), expected)
    assert task.val_tta_metrics["acc"].compute().item() == pytest.approx((expected.argmax(1) == y).float().mean().item())
    assert task.val_metrics["acc"].compute().item() == pytest.approx((net(x).argmax(1) == y).float().mean().item())
    assert set(task.val_tta_metrics.keys(keep_base=False)) >= {"val/acc_tta", "val/acc_macro_tta"}


def test_an_unknown_tta_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"task\.module\.tta"):
        ClassificationTask(torch.nn.Identity(), num_classes=3, optimizer=torch.optim.SGD, tta="five_crop")


@pytest.mark.parametrize("model", [SmallResNet, PlainCNN])
def test_a_zero_initialised_head_starts_at_chance_and_keras_init_near_it(model: type[torch.nn.Module]) -> None:
    """He-normal with a wide flatten starts the small networks' logits at a standard deviation of ~5 (a
    first loss of ~10 with 22 classes); the article's Keras init starts near ln(classes)."""
    torch.manual_seed(0)
    x, y = torch.rand(8, 3, 64, 64), torch.randint(0, 22, (8,))
    chance = math.log(22)
    zero = F.cross_entropy(model(22, image_size=64, zero_head=True)(x), y).item()
    keras = F.cross_entropy(model(22, image_size=64, init="keras")(x), y).item()
    he = F.cross_entropy(model(22, image_size=64, init="he")(x), y).item()
    assert zero == pytest.approx(chance, abs=1e-5)
    assert abs(keras - chance) < 1.0 < he - chance
