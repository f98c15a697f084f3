"""ClassificationTask: the auxiliary heads' weighted loss counts in training only; compiling is announced;
prediction ranks every class by its softmax probability."""

from __future__ import annotations

import logging
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from visionbench.models.inception import InceptionV1
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
