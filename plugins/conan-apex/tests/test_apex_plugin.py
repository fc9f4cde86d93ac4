"""conan-apex: the components satisfy the core contracts, are discovered through entry points,
and fail with install instructions (never `pip install apex`) when NVIDIA apex is missing."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch
from conan_apex.fused_adam import FusedAdam
from conan_apex.fused_rmsnorm import FusedRMSNorm
from conan_apex.requirements import ApexMissingError

from conan_core.errors import ConanError
from conan_core.ops.norms.base import NormFactory, rms_norm_reference
from conan_core.optimizers.base import OptimizerFactory
from conan_core.registry import ComponentConfig, _import_target

PLUGIN_ROOT = Path(__file__).resolve().parents[1]
HAVE_APEX = importlib.util.find_spec("apex") is not None
ENTRY_POINTS = tomllib.loads((PLUGIN_ROOT / "pyproject.toml").read_text())["project"]["entry-points"]


def test_classes_satisfy_the_base_classes():
    assert issubclass(FusedRMSNorm, NormFactory) and issubclass(FusedAdam, OptimizerFactory)
    for cls in (FusedRMSNorm, FusedAdam):
        assert issubclass(cls.Config, ComponentConfig)
        conf = cls.Config()
        assert conf.model_config["extra"] == "forbid" and conf.model_config["frozen"]
    assert FusedAdam.Config().betas == (0.9, 0.999)
    with pytest.raises(ValueError):
        FusedAdam.Config(betas=(0.9, 1.5))


def test_entry_points_name_these_classes():
    assert ENTRY_POINTS["conan_core.norms"] == {"apex/fused_rmsnorm": "conan_apex.fused_rmsnorm:FusedRMSNorm"}
    assert ENTRY_POINTS["conan_core.optimizers"] == {"apex/fused_adam": "conan_apex.fused_adam:FusedAdam"}
    assert _import_target(ENTRY_POINTS["conan_core.norms"]["apex/fused_rmsnorm"]) is FusedRMSNorm
    assert _import_target(ENTRY_POINTS["conan_core.optimizers"]["apex/fused_adam"]) is FusedAdam


def test_importing_the_plugin_does_not_import_apex():
    code = ("import sys, conan_apex.fused_rmsnorm, conan_apex.fused_adam;"
            "print('apex' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(PLUGIN_ROOT)))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


@pytest.mark.skipif(HAVE_APEX, reason="an apex package is installed")
@pytest.mark.parametrize("cls,key,fallback", [(FusedRMSNorm, "apex/fused_rmsnorm", "'compiled'"),
                                              (FusedAdam, "apex/fused_adam", "'adamw'")])
def test_missing_apex_error_says_how_to_install(cls, key, fallback):
    with pytest.raises(ApexMissingError) as info:
        cls(cls.Config())
    text = str(info.value)
    assert isinstance(info.value, ConanError)
    assert key in text and "not installed" in text
    assert "not on PyPI" in text and "unrelated" in text and "never `pip install apex`" in text
    assert "git clone https://github.com/NVIDIA/apex" in text and "--cuda_ext" in text
    assert fallback in text


def write_dist(root: Path, name: str, module_files: dict, entry_points: dict) -> None:
    """A minimal installed distribution (module files + .dist-info with entry points) under ``root``."""
    for rel, text in module_files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    info = root / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    lines = []
    for group, items in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{k} = {v}" for k, v in items.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def run_python(code: str, *paths: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in paths))
    env.pop("CONAN_DISABLE_PLUGINS", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.skipif(HAVE_APEX, reason="an apex package is installed")
def test_discovered_through_entry_points_and_fails_only_when_built(tmp_path):
    write_dist(tmp_path, "conan-apex", {}, ENTRY_POINTS)
    code = (
        "import json; from conan_core.registries import REGISTRIES;"
        "from conan_core.registry import ConanError;"
        "out = {};"
        "out['norm_keys'] = REGISTRIES['norms'].keys(); out['opt_keys'] = REGISTRIES['optimizers'].keys();"
        "out['origin'] = REGISTRIES['norms'].origin('apex/fused_rmsnorm');"
        "REGISTRIES['norms'].get('apex/fused_rmsnorm'); REGISTRIES['optimizers'].get('apex/fused_adam');\n"
        "try:\n    REGISTRIES['norms'].build({'type': 'apex/fused_rmsnorm'})\n"
        "except ConanError as exc:\n    out['error'] = str(exc)\n"
        "print(json.dumps(out))"
    )
    res = run_python(code, tmp_path, PLUGIN_ROOT)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert "apex/fused_rmsnorm" in out["norm_keys"] and "torch" in out["norm_keys"]
    assert "apex/fused_adam" in out["opt_keys"] and "adamw" in out["opt_keys"]
    assert out["origin"] == "plugin conan-apex 0.1.0"
    assert "not on PyPI" in out["error"]


def test_unrelated_apex_package_is_named_as_such(tmp_path):
    """A package called ``apex`` without NVIDIA's modules (what `pip install apex` gives)."""
    (tmp_path / "apex").mkdir()
    (tmp_path / "apex" / "__init__.py").write_text('"""An unrelated project that happens to be called apex."""\n')
    code = (
        "from conan_apex.fused_rmsnorm import FusedRMSNorm\n"
        "try:\n    FusedRMSNorm(FusedRMSNorm.Config())\n"
        "except ImportError as exc:\n    print(type(exc).__name__, '|', exc)\n"
    )
    res = run_python(code, tmp_path, PLUGIN_ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ApexMissingError |")
    assert "unrelated PyPI 'apex'" in res.stdout and "apex.normalization.FusedRMSNorm" in res.stdout


@pytest.mark.skipif(not HAVE_APEX, reason="NVIDIA apex is not installed")
def test_fused_rmsnorm_matches_reference():
    norm = FusedRMSNorm(FusedRMSNorm.Config()).make(64, 1e-6)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    norm = norm.to(device)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(64) + 0.5)
    x = torch.randn(4, 7, 64, device=device)
    ref = rms_norm_reference(x, norm.weight, 1e-6)
    assert torch.allclose(norm(x).double(), ref, atol=1e-5)
    assert set(dict(norm.named_parameters())) == {"weight"}


@pytest.mark.skipif(not (HAVE_APEX and torch.cuda.is_available()), reason="needs NVIDIA apex and CUDA")
def test_fused_adam_matches_torch_adamw():
    torch.manual_seed(0)
    a = torch.nn.Linear(8, 8).cuda()
    b = torch.nn.Linear(8, 8).cuda()
    b.load_state_dict(a.state_dict())
    ours = FusedAdam(FusedAdam.Config()).build(a.named_parameters(), 1e-2, weight_decay=0.1)
    ref = torch.optim.AdamW([{"params": [b.weight], "weight_decay": 0.1},
                             {"params": [b.bias], "weight_decay": 0.0}], lr=1e-2)
    x = torch.randn(4, 8, device="cuda")
    for _ in range(3):
        for model, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-5) and torch.allclose(a.bias, b.bias, atol=1e-5)
