"""The weights' moving average (mlepi.ml.ema, train.ema_decay): against the warmed-up formula on a toy model, the
model's own weights back after the average is applied; and in training: validation and model.pt see the average,
the raw weights go on training, and a killed run resumes to the uninterrupted run's average."""

import pytest
import torch
from test_train import dataset, interrupt_after, read_metrics, with_train  # noqa: F401  (the fixture)

from mlepi.ml import train
from mlepi.ml.ema import EMA
from mlepi.ml.model import HedgeNet


def test_the_average_follows_the_warmed_up_formula():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, 0.9)
    expected = {name: p.detach().double().clone() for name, p in model.named_parameters()}
    for n in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape))
        ema.update(model)
        d = min(0.9, (1 + n) / (10 + n))
        for name, p in model.named_parameters():
            expected[name] = d * expected[name] + (1 - d) * p.detach().double()
    for name, value in expected.items():
        torch.testing.assert_close(ema.average[name].double(), value, rtol=1e-5, atol=1e-6)
    own = {name: p.detach().clone() for name, p in model.named_parameters()}
    with ema.applied(model):
        for name, p in model.named_parameters():
            assert torch.equal(p, ema.average[name])
    for name, p in model.named_parameters():
        assert torch.equal(p, own[name])
    with pytest.raises(ValueError, match="decay"):
        EMA(model, 1.0)


def test_training_keeps_the_average_and_resumes_it(dataset, tmp_path, monkeypatch):  # noqa: F811
    cfg = with_train(epochs=4, ema_decay=0.9)
    train.run(dataset, tmp_path / "whole", cfg, seed=1)
    state = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    assert state["best_epoch"] == 4 and state["ema"]["steps"] == 4 * 2  # 4 training frames, batches of 2
    saved = HedgeNet.load(tmp_path / "whole" / "model.pt").state_dict()
    raw, average = state["model"], state["ema"]["average"]
    for name, value in average.items():  # model.pt holds the average, the checkpoint the weights that train on
        torch.testing.assert_close(saved[name], value)
    assert any(not torch.allclose(raw[name], value) for name, value in average.items())

    with monkeypatch.context() as patch:
        interrupt_after(2, patch)
        with pytest.raises(KeyboardInterrupt):
            train.run(dataset, tmp_path / "killed", cfg, seed=1)
    train.run(dataset, tmp_path / "killed", cfg, seed=1)
    for a, b in zip(read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "killed"), strict=True):
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=1e-5)
    resumed = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["ema"]
    assert resumed["steps"] == 8
    for name, value in average.items():
        torch.testing.assert_close(resumed["average"][name], value, rtol=1e-5, atol=1e-6)
