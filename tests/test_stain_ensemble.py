"""StainEnsemble: StainNets trained apart, sharing their frozen ImageNet blocks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from test_stains import _clean_folder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import train_mercury  # noqa: E402

from herbscan.errors import ParameterError  # noqa: E402
from herbscan.models import create_model  # noqa: E402
from herbscan.stainnet import StainEnsemble, StainNet  # noqa: E402


def _members(n: int = 3, frozen: int = 5) -> list[StainNet]:
    """ImageNet StainNets whose trained parts differ, as seeds would make them."""
    nets = []
    for seed in range(n):
        torch.manual_seed(seed)
        net = create_model("stainnet", 2, pretrained=True)
        net.freeze(frozen)
        with torch.no_grad():
            for p in net.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn_like(p))
        nets.append(net.eval())
    return nets


def test_an_ensemble_runs_the_shared_blocks_once_and_averages_its_members():
    nets = _members()
    ens = StainEnsemble.from_members(nets).eval()
    assert ens.shared_blocks == 5 and ens.frozen_blocks == 5
    x = torch.rand(2, 3, 96, 64)
    with torch.no_grad():
        each = torch.stack([n.cell_logits(x) for n in nets])
        assert torch.allclose(ens.member_cells(x), each, atol=1e-6)
        assert torch.allclose(ens.cell_logits(x), each.mean(0), atol=1e-6)
        assert torch.allclose(ens(x)[:, 1], ens.pool(each.mean(0)), atol=1e-6)
        assert (ens(x)[:, 0] == 0).all()
        # what the members share is stored once: 3 members cost less than 3 nets
        own = sum(p.numel() for p in nets[0].parameters() if p.requires_grad)
        shared = sum(p.numel() for p in nets[0].parameters()) - own
        assert sum(p.numel() for p in ens.parameters()) == shared + 3 * own
        # a run's weights load into the registry's ensemble of the same size
        again = create_model("stainnet", 2, members=3, shared_blocks=5)
        again.load_state_dict(ens.state_dict())
        assert torch.allclose(again.eval()(x), ens(x))
        ens.shift_logits(-1.25)
        assert torch.allclose(ens.cell_logits(x), each.mean(0) - 1.25, atol=1e-5)


def test_members_must_share_their_frozen_blocks():
    nets = _members(2)
    with torch.no_grad():
        nets[1]._blocks[2]._project_conv.weight.add_(0.01)
    with pytest.raises(ParameterError, match="differ in their frozen blocks"):
        StainEnsemble.from_members(nets)
    with pytest.raises(ParameterError, match="2 or more StainNets"):
        StainEnsemble.from_members(nets[:1])
    with pytest.raises(ParameterError, match="trained members, not from ImageNet"):
        create_model("stainnet", 2, pretrained=True, members=3)
    with pytest.raises(ParameterError, match="at least 2 members"):
        StainEnsemble(members=1)


def test_freezing_an_ensemble_keeps_the_shared_blocks_and_trains_each_member():
    ens = StainEnsemble.from_members(_members(2))
    ens.freeze(6)  # the 5 shared blocks and each member's first own block
    before = {k: v.clone() for k, v in ens.state_dict().items()}
    ens.train()
    assert not ens._blocks[4].training and not ens.members[0].blocks[0].training
    assert ens.members[0].blocks[1].training
    opt = torch.optim.SGD([p for p in ens.parameters() if p.requires_grad], lr=0.1)
    ens.member_cells(torch.rand(2, 3, 64, 64)).sigmoid().mean().backward()
    opt.step()
    after = ens.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed
    assert not any(k.startswith(("_conv_stem", "_bn0", "_blocks.")) for k in changed)
    assert not any(".blocks.0." in k for k in changed)
    assert any(k.startswith("members.0.") for k in changed)
    assert any(k.startswith("members.1.") for k in changed)


def test_joined_stain_runs_screen_adapt_and_fine_tune_as_one_run(tmp_path, tiny_collection):
    from herbscan.learn_stains import learn_stains
    from herbscan.manifest import split
    from herbscan.predict import Predictor
    from herbscan.runs import load_run
    from herbscan.train import train

    folder = _clean_folder(tmp_path)
    kw = dict(size=256, crop=64, steps=1, batch_size=2, validation_sheets=2, init="imagenet",
              freeze_blocks=5, precision="fp32", progress=False)  # fmt: skip
    runs = [learn_stains([folder], tmp_path / f"seed{s}", seed=s, **kw) for s in (0, 1)]
    ens_run = train_mercury.join(runs, tmp_path / "ensemble")
    cfg = json.loads((ens_run / "run.json").read_text())
    assert cfg["architecture"]["kwargs"] == {"members": 2, "shared_blocks": 5}
    assert [m["seed"] for m in cfg["metrics"]["members"]] == [0, 1]
    ens = load_run(ens_run).build_model()
    nets = [load_run(r).build_model() for r in runs]
    x = torch.rand(1, 3, 96, 64)
    with torch.no_grad():
        mean = torch.stack([n.cell_logits(x) for n in nets]).mean(0)
        assert torch.allclose(ens.cell_logits(x), mean, atol=1e-5)
    preds = Predictor(load_run(ens_run), precision="fp32").predict(
        sorted(folder.glob("*.jpg")), progress=False
    )
    assert all(p.probs is not None and p.probs.shape == (2,) for p in preds)

    # learn-stains adapts every member (a loss each), and the run stays an ensemble
    adapted = learn_stains([folder], tmp_path / "adapted", **{**kw, "init": ens_run, "steps": 2})
    a_cfg = json.loads((adapted / "run.json").read_text())
    assert a_cfg["architecture"]["kwargs"] == cfg["architecture"]["kwargs"]
    before, after = ens.state_dict(), load_run(adapted).build_model().state_dict()
    for m in (0, 1):
        head = f"members.{m}.stain_head.0.weight"
        assert not torch.equal(before[head], after[head])
    trunk = "_blocks.0._depthwise_conv.weight"
    assert torch.equal(before[trunk], after[trunk])  # the shared blocks stayed frozen

    # train --init keeps the ensemble too (epoch 0: the weights as they came)
    data, _ = split(tiny_collection, tmp_path / "split.csv", seed=1)
    ft = train(data, tmp_path / "ft", init=ens_run, epochs=0, workers=1, progress=False,
               precision="fp32")  # fmt: skip
    assert json.loads((ft / "run.json").read_text())["architecture"]["kwargs"] == {
        "members": 2,
        "shared_blocks": 5,
    }
    assert load_run(ft).build_model() is not None
