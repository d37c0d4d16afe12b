import pytest
import torch

from herbscan.errors import ParameterError
from herbscan.models import create_model, list_models


@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_backward_all_params_get_gradients(name):
    torch.manual_seed(0)
    size = 96
    k = 2 if name == "stainnet" else 3  # the stain detector answers stain / clean only
    model = create_model(name, num_classes=k, input_size=size)
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, k)
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_smithsonian2017_matches_the_paper_layout():
    m = create_model("smithsonian2017", num_classes=2)
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(10, (5, 5)), (40, (5, 5))]
    assert sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules()) == 2
    assert sum(isinstance(x, torch.nn.MaxPool2d) for x in m.modules()) == 2
    linears = [x for x in m.modules() if isinstance(x, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [
        (40 * 61 * 61, 500),
        (500, 2),
    ]
    assert any(isinstance(x, torch.nn.Dropout) and x.p == 0.5 for x in m.modules())


def test_unknown_model_and_bad_classes():
    with pytest.raises(ParameterError, match="model must be one of .*'herbnet'"):
        create_model("resnet9000", 2)
    with pytest.raises(ParameterError, match="num_classes must be at least 2"):
        create_model("herbnet", 1)
